//! Hold expiry under a backlog: the contract publishes an expired hold's
//! release within a few seconds, also while batches keep coming.

mod support;

use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::producer::FutureRecord;
use serde_json::json;
use support::kafka::{config, producer, send, Reader};
use support::stack::Stack;
use support::uid;
use support::worker::{event, InProcess};

const T: Duration = Duration::from_secs(120);

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A hold that expires while the worker is working off a backlog (it was
/// stopped while the backlog was produced, and restarts just before the
/// hold expires): the release is published within seconds, before the
/// backlog is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_hold_is_released_and_published_while_a_backlog_is_applied() {
    let stack = Stack::start().await;
    let mut cfg = config(&stack.bootstrap, &stack.redis_url, 6).await;
    // The consumer's other events (statistics, commit results) give the
    // loop an idle moment now and then; without them only the loop's own
    // order makes room for the sweep.
    cfg.kafka_consumer_options.insert("statistics.interval.ms".into(), "0".into());
    cfg.kafka_consumer_options.insert("auto.commit.interval.ms".into(), "60000".into());
    let worker = InProcess::start(cfg.clone());
    let p = producer(&stack.bootstrap);
    let t = &cfg.topics;
    let u = uid();
    let (ch, loc, hot) = (format!("ch-{u}"), format!("L-{u}"), format!("H-{u}"));
    send(&p, &t.stock, &ch, &event(&format!("c-{u}"), "inventory.channel.configured", json!({"channel": ch, "locations": [loc]}))).await;
    send(&p, &t.stock, &hot, &event(&format!("h-{u}"), "inventory.level.set", json!({"sku": hot, "location": loc, "on_hand": 10}))).await;
    let key = format!("{ch}/{hot}");
    let mut avail = Reader::new(&stack.bootstrap, &t.availability);
    avail.until(T, "the hot sku's availability", |s| s.iter().any(|r| r.key == key)).await;

    let expires = now_ms() + 30_000;
    let expires_at = time::OffsetDateTime::from_unix_timestamp_nanos(expires as i128 * 1_000_000).unwrap().format(&time::format_description::well_known::Rfc3339).unwrap();
    send(&p, &t.carts, "cart-1", &event(&format!("hold-{u}"), "cart.line.held", json!({"cart_id": "cart-1", "channel": ch, "sku": hot, "quantity": 4, "expires_at": expires_at}))).await;
    avail.until(T, "the hold's availability", |s| s.iter().any(|r| r.key == key && r.value["data"]["available"] == json!(6))).await;
    worker.stop().await;

    let backlog = 150_000;
    let mut pending = FuturesUnordered::new();
    let p = &p;
    for i in 0..backlog {
        let sku = format!("B{}-{u}", i % 3000);
        let v = event(&format!("b{i}-{u}"), "inventory.level.set", json!({"sku": sku, "location": loc, "on_hand": i % 7 + 1}));
        pending.push(async move {
            let rec = FutureRecord::to(&t.stock).key(&sku).payload(&v);
            p.send(rec, Duration::from_secs(60)).await.expect("delivered");
        });
        if pending.len() >= 1000 {
            pending.next().await;
        }
    }
    while pending.next().await.is_some() {}
    // The backlog's last event by its id: its sku's first event had the same on_hand.
    let last = format!("{ch}/B{}-{u}", (backlog - 1) % 3000);
    let last_cause = format!("b{}-{u}", backlog - 1);
    assert!(now_ms() < expires - 1000, "producing the backlog took too long for this test; its hold expired meanwhile");
    // Back a second before the hold expires, with the whole backlog to apply.
    tokio::time::sleep(Duration::from_millis((expires - 1000 - now_ms()) as u64)).await;
    let worker = InProcess::start(cfg.clone());

    let released = |r: &support::kafka::Received| r.key == key && r.value["data"]["caused_by"] == "reservoir.hold-expiry";
    let seen = avail.until(T, "the expired hold's release", |s| s.iter().any(released)).await.to_vec();
    let release = seen.iter().find(|r| released(r)).unwrap();
    assert_eq!(release.value["data"]["available"], json!(10), "{}", release.value);
    let at = release.timestamp.unwrap();
    let backlog_done = seen.iter().find(|r| r.key == last && r.value["data"]["caused_by"] == json!(last_cause)).and_then(|r| r.timestamp);
    eprintln!("release {} ms after expiry; backlog done {:?} ms after expiry", at - expires, backlog_done.map(|d| d - expires));
    if let Some(d) = backlog_done {
        assert!(d > expires, "the backlog was applied {} ms before the hold expired: too small to show anything on this machine", expires - d);
        assert!(at < d, "the release was published only after the backlog (at {at}, the backlog's last at {d})");
    }
    assert!(at - expires < 5000, "the release was published {} ms after the hold expired", at - expires);
    worker.stop().await;
    stack.audit().await;
}

/// Sets the availability topic's configs (the whole set: AlterConfigs
/// replaces them).
async fn availability_topic_max_bytes(bootstrap: &str, topic: &str, max: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    let change = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("cleanup.policy", "compact").set("max.message.bytes", max);
    let r = admin.alter_configs(&[change], &AdminOptions::new().request_timeout(Some(Duration::from_secs(30)))).await.unwrap();
    assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
}

/// Kafka refuses the sweep's availability for good (here the topic's
/// max.message.bytes): the worker stops and says so, rather than warn at
/// every tick with the release never published; once the topic is fixed,
/// the next worker's sweep publishes the release it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_whose_messages_kafka_refuses_stops_the_worker_and_the_next_publishes_them() {
    let stack = Stack::start().await;
    let cfg = config(&stack.bootstrap, &stack.redis_url, 1).await;
    let worker = InProcess::start(cfg.clone());
    let p = producer(&stack.bootstrap);
    let t = &cfg.topics;
    let u = uid();
    let (ch, loc, sku) = (format!("ch-{u}"), format!("L-{u}"), format!("S-{u}"));
    send(&p, &t.stock, &ch, &event(&format!("c-{u}"), "inventory.channel.configured", json!({"channel": ch, "locations": [loc]}))).await;
    send(&p, &t.stock, &sku, &event(&format!("l-{u}"), "inventory.level.set", json!({"sku": sku, "location": loc, "on_hand": 10}))).await;
    let key = format!("{ch}/{sku}");
    let mut avail = Reader::new(&stack.bootstrap, &t.availability);
    // Other topic than the hold's: applied first, so the hold finds its channel.
    avail.until(T, "the sku's availability", |s| s.iter().any(|r| r.key == key)).await;
    let expires = now_ms() + 6_000;
    let expires_at = time::OffsetDateTime::from_unix_timestamp_nanos(expires as i128 * 1_000_000).unwrap().format(&time::format_description::well_known::Rfc3339).unwrap();
    send(&p, &t.carts, "cart-1", &event(&format!("hold-{u}"), "cart.line.held", json!({"cart_id": "cart-1", "channel": ch, "sku": sku, "quantity": 4, "expires_at": expires_at}))).await;
    avail.until(T, "the hold's availability", |s| s.iter().any(|r| r.key == key && r.value["data"]["available"] == json!(6))).await;
    availability_topic_max_bytes(&stack.bootstrap, &t.availability, "64").await;
    assert!(now_ms() < expires, "the topic was changed only after the hold expired");

    let e = worker.ended(T).await.expect_err("the worker stops when Kafka refuses the sweep's messages for good");
    let text = e.to_string();
    assert!(text.contains("hold sweep") && text.contains(&t.availability), "the error says what failed and where: {text}");

    availability_topic_max_bytes(&stack.bootstrap, &t.availability, "1048588").await;
    let worker = InProcess::start(cfg.clone());
    let released = |r: &support::kafka::Received| r.key == key && r.value["data"]["caused_by"] == "reservoir.hold-expiry";
    let seen = avail.until(T, "the release the stopped worker's sweep left", |s| s.iter().any(released)).await.to_vec();
    assert_eq!(seen.iter().find(|r| released(r)).unwrap().value["data"]["available"], json!(10));
    worker.stop().await;
    stack.audit().await;
}
