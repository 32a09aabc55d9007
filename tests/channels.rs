//! Availability after a channel changes: a redelivered change republishes
//! skus left only at removed locations, a worker whose channel list is
//! older computes over the list in force, and a channel's recompute misses
//! no sku stocked at the same moment (with one worker and with two).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use reservoir::domain::{BeyondStock, ItemConfig, Status, Tracking};
use reservoir::qty::Qty;
use reservoir::store::keys;
use serde_json::json;
use support::kafka::{config, producer, send, Reader};
use support::stack::Stack;
use support::worker::{event, InProcess};
use support::{uid, RedisServer};

fn units(n: i64) -> Qty {
    Qty::units(n)
}

/// The channel's availability of `sku` in an effect's updates.
fn update<'a>(ups: &'a [reservoir::domain::AvailabilityUpdate], channel: &str, sku: &str) -> Option<&'a reservoir::domain::AvailabilityUpdate> {
    ups.iter().find(|u| u.channel == channel && u.sku == sku)
}

/// A crash right after the channel's locations were written, before any
/// sku was recomputed: the redelivery must still recompute the skus that
/// were only at the locations the change removed, with a newer version.
#[tokio::test]
async fn a_redelivered_channel_change_republishes_skus_left_only_at_removed_locations() {
    let r = RedisServer::start();
    let (e, _) = support::engine(&r.url).await;
    let u = uid();
    let (ch, a, b, only_b) = (format!("ch-{u}"), format!("A-{u}"), format!("B-{u}"), format!("S-{u}"));
    e.configure_channel(&format!("c1-{u}"), &ch, &[a.clone(), b.clone()]).await.unwrap();
    e.set_level(&format!("l1-{u}"), &only_b, &b, units(5), true).await.unwrap();
    let before = e.sku_state(&only_b).await.unwrap().version;

    // The first delivery of the change to [A] wrote the locations, then the worker died.
    let event_id = format!("c2-{u}");
    let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/lua/channel_set.lua")).unwrap();
    let mut conn = r.conn();
    // The generation key (in the channels' slot) is written from this change on.
    let k = [keys::channel(&ch), keys::CHANNELS.to_string(), keys::channel_event(&event_id), "rv:ch:{ch}:gen".to_string()];
    let _: redis::Value = redis::cmd("EVAL").arg(&script).arg(k.len()).arg(&k).arg(&ch).arg(json!([a]).to_string()).arg(600_000).arg("g1").query(&mut conn).unwrap();

    let redelivered = e.configure_channel(&event_id, &ch, &[a.clone()]).await.unwrap();
    let up = update(&redelivered.updates, &ch, &only_b).expect("the sku only at the removed location is recomputed on redelivery");
    assert!(up.changed, "{up:?}");
    assert_eq!((up.availability.status, up.availability.available), (Status::OutOfStock, Some(Qty::ZERO)), "{up:?}");
    assert!(up.version > before, "the recomputed availability must be newer than the one before the change ({} <= {before})", up.version);
}

/// A replay long after the change (a sku stocked at the channel's location
/// since) changes nothing: the change had recomputed every sku it found,
/// and the sku stocked later was published by its own level.
#[tokio::test]
async fn a_replayed_channel_change_bumps_no_sku_stocked_after_it() {
    let r = RedisServer::start();
    let (e, _) = support::engine(&r.url).await;
    let u = uid();
    let (ch, a, sku) = (format!("ch-{u}"), format!("A-{u}"), format!("S-{u}"));
    e.configure_channel(&format!("c1-{u}"), &ch, &[a.clone()]).await.unwrap();
    e.set_level(&format!("l1-{u}"), &sku, &a, units(5), true).await.unwrap();
    let before = e.sku_state(&sku).await.unwrap().version;
    let replayed = e.configure_channel(&format!("c1-{u}"), &ch, &[a.clone()]).await.unwrap();
    assert_eq!(e.sku_state(&sku).await.unwrap().version, before, "a replay bumped the sku's version");
    if let Some(up) = update(&replayed.updates, &ch, &sku) {
        assert_eq!(up.version, before, "{up:?}");
    }
}

/// Two workers: one changes the channel, the other, whose channel list
/// was read just before, applies an event of a sku at once: its
/// availability is over the new locations.
#[tokio::test]
async fn a_worker_with_an_older_channel_list_computes_over_the_list_in_force() {
    let r = RedisServer::start();
    let (first, _) = support::engine(&r.url).await;
    let (second, _) = support::engine(&r.url).await;
    let u = uid();
    let (ch, a, b, sku) = (format!("ch-{u}"), format!("A-{u}"), format!("B-{u}"), format!("S-{u}"));
    first.configure_channel(&format!("c1-{u}"), &ch, &[a.clone(), b.clone()]).await.unwrap();
    first.set_level(&format!("la-{u}"), &sku, &a, units(5), true).await.unwrap();
    // The second worker reads the channel list [A, B] now.
    let seen = second.set_level(&format!("lb-{u}"), &sku, &b, units(5), true).await.unwrap();
    assert_eq!(update(&seen.updates, &ch, &sku).unwrap().availability.available, Some(units(10)));

    first.configure_channel(&format!("c2-{u}"), &ch, &[a.clone()]).await.unwrap();
    let after = second.set_level(&format!("la2-{u}"), &sku, &a, units(6), true).await.unwrap();
    let up = update(&after.updates, &ch, &sku).expect("an update for the channel");
    assert_eq!(up.availability.available, Some(units(6)), "computed over the channel's old locations: {up:?}");
}

/// Two workers: one adds a channel, the other stocks a new sku at its
/// location right after, with the channel list it read just before: the
/// channel's recompute did not see the sku, so the sku's own update must
/// include the new channel.
#[tokio::test]
async fn a_sku_stocked_right_after_a_new_channel_gets_its_availability_there() {
    let r = RedisServer::start();
    let (first, _) = support::engine(&r.url).await;
    let (second, _) = support::engine(&r.url).await;
    let u = uid();
    let (ch, loc, sku) = (format!("ch-{u}"), format!("L-{u}"), format!("S-{u}"));
    second.set_level(&format!("warm-{u}"), &format!("W-{u}"), &format!("W-{u}"), units(1), true).await.unwrap();
    let added = first.configure_channel(&format!("c-{u}"), &ch, &[loc.clone()]).await.unwrap();
    assert!(update(&added.updates, &ch, &sku).is_none(), "the sku did not exist when the channel was recomputed");
    let stocked = second.set_level(&format!("l-{u}"), &sku, &loc, units(3), true).await.unwrap();
    let up = update(&stocked.updates, &ch, &sku).expect("the new channel's availability of a sku stocked at its location");
    assert_eq!(up.availability.available, Some(units(3)));
}

/// A new channel, and at once a new sku at its location (tracking none,
/// or backorders allowed, so its availability is not plain out of stock):
/// every such sku gets the channel's availability published.
async fn new_channels_and_skus_at_once(workers: usize) {
    let stack = Stack::start().await;
    let cfg = config(&stack.bootstrap, &stack.redis_url, 3).await;
    let running: Vec<InProcess> = (0..workers).map(|_| InProcess::start(cfg.clone())).collect();
    let p = producer(&stack.bootstrap);
    let t = &cfg.topics;
    let u = uid();
    let n = 150;
    let mut sends = Vec::new();
    for i in 0..n {
        let (ch, loc, sku) = (format!("ch{i}-{u}"), format!("L{i}-{u}"), format!("S{i}-{u}"));
        let item = if i % 2 == 0 { json!({"sku": sku, "tracking": "none"}) } else { json!({"sku": sku, "backorders": {"allowed": true}}) };
        sends.push((ch.clone(), event(&format!("ch-{i}-{u}"), "inventory.channel.configured", json!({"channel": ch, "locations": [loc]}))));
        sends.push((sku.clone(), event(&format!("it-{i}-{u}"), "inventory.item.configured", item)));
        sends.push((sku.clone(), event(&format!("lv-{i}-{u}"), "inventory.level.set", json!({"sku": sku, "location": loc, "on_hand": 0}))));
    }
    futures::future::join_all(sends.iter().map(|(k, v)| send(&p, &t.stock, k, v))).await;
    let want: BTreeSet<String> = (0..n).map(|i| format!("ch{i}-{u}/S{i}-{u}")).collect();
    let mut avail = Reader::new(&stack.bootstrap, &t.availability);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let missing = loop {
        avail.drain(Duration::from_secs(2)).await;
        let got: BTreeSet<String> = avail.seen.iter().map(|r| r.key.clone()).collect();
        let missing: Vec<&String> = want.iter().filter(|k| !got.contains(*k)).collect();
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break missing.into_iter().cloned().collect::<Vec<_>>();
        }
    };
    let seen: Vec<&String> = avail.seen.iter().map(|r| &r.key).take(10).collect();
    assert!(missing.is_empty(), "{} of {n} new skus never got their new channel's availability ({workers} worker(s)): {:?}; saw {} messages, e.g. {seen:?}", missing.len(), &missing[..missing.len().min(10)], avail.seen.len());
    for r in &avail.seen {
        if want.contains(&r.key) {
            let status = r.value["data"]["status"].as_str().unwrap();
            assert!(status == "in_stock" || status == "backorder", "{}: {}", r.key, r.value);
        }
    }
    for w in running {
        w.stop().await;
    }
    stack.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_channel_misses_no_sku_stocked_at_the_same_moment_one_worker() {
    new_channels_and_skus_at_once(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_channel_misses_no_sku_stocked_at_the_same_moment_two_workers() {
    new_channels_and_skus_at_once(2).await;
}

/// New channels and new skus at their locations, each pair at once in
/// one engine (one worker's concurrent calls): every sku's availability in
/// its channel is published by one of the two calls. A sku whose first
/// level leaves its (status, available) as it was before it had one (tracking
/// none, or backorders allowed) is new to the channel all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_new_channels_and_skus_publish_every_pair() {
    let r = RedisServer::start();
    let (e, _) = support::engine(&r.url).await;
    let u = uid();
    let pairs = (0..150).map(|i| {
        let (e, u) = (e.clone(), u.clone());
        async move {
            let (ch, loc, sku) = (format!("ch{i}-{u}"), format!("L{i}-{u}"), format!("S{i}-{u}"));
            let config = if i % 2 == 0 {
                ItemConfig { tracking: Tracking::None, ..Default::default() }
            } else {
                ItemConfig { backorders: BeyondStock { enabled: true, limit: None }, ..Default::default() }
            };
            let channel = async { e.configure_channel(&format!("c{i}-{u}"), &ch, &[loc.clone()]).await.unwrap() };
            let stocked = async {
                e.configure_item(&format!("i{i}-{u}"), &sku, &config).await.unwrap();
                e.set_level(&format!("l{i}-{u}"), &sku, &loc, units(0), true).await.unwrap()
            };
            let (x, y) = tokio::join!(channel, stocked);
            let published = [&x.updates, &y.updates].iter().any(|ups| update(ups, &ch, &sku).is_some_and(|up| up.changed));
            (sku, published)
        }
    });
    let missing: Vec<String> = futures::future::join_all(pairs).await.into_iter().filter(|(_, p)| !p).map(|(s, _)| s).collect();
    assert!(missing.is_empty(), "{} of 150 skus got no availability to publish in their new channel: {:?}", missing.len(), &missing[..missing.len().min(5)]);
}
