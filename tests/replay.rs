//! `reservoir replay` against a real broker (Apache Kafka by default): it refuses
//! while a worker runs, rewinds a stopped group, the worker re-reads and
//! nothing changes; `--from-time` picks the first message at that time;
//! old events are refused unless forced.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use reservoir::config::Config;
use reservoir::ops::replay::{replay, ReplayArgs, ReplayError};
use serde_json::json;
use support::kafka::{config, latest, producer, send, Reader};
use support::stack::Stack;
use support::uid;
use support::worker::{event, InProcess};

const T: Duration = Duration::from_secs(60);

fn args(topic: &str, from_time: Option<i64>) -> ReplayArgs {
    ReplayArgs { topic: topic.into(), from_beginning: from_time.is_none(), from_time, dry_run: false, force: false }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A client of the worker group that only reads and commits its offsets.
fn group_client(cfg: &Config) -> BaseConsumer {
    ClientConfig::new().set("bootstrap.servers", &cfg.kafka_bootstrap).set("group.id", &cfg.group_id).set("enable.auto.commit", "false").create().unwrap()
}

fn committed(cfg: &Config, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = tokio::task::block_in_place(|| reservoir::kafka::committed_offsets(&group_client(cfg), &tpl, Duration::from_secs(30), T)).unwrap();
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).unwrap().offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .collect()
}

fn commit(cfg: &Config, topic: &str, offsets: &[i64]) {
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets.iter().enumerate() {
        tpl.add_partition_offset(topic, p as i32, Offset::Offset(*o)).unwrap();
    }
    // A fresh broker's coordinator may still be loading: that is waited for.
    tokio::task::block_in_place(|| reservoir::kafka::commit_sync(&group_client(cfg), &tpl, T)).unwrap();
}

async fn until_committed(cfg: &Config, topic: &str, partitions: i32, total: i64) {
    let start = Instant::now();
    loop {
        let c = committed(cfg, topic, partitions);
        if c.iter().map(|o| o.unwrap_or(0)).sum::<i64>() == total {
            return;
        }
        assert!(start.elapsed() < T, "the group's offsets on {topic} did not reach {total} in all: {c:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_while_a_worker_runs_then_the_worker_rereads_and_nothing_changes() {
    let stack = Stack::start().await;
    let cfg = config(&stack.bootstrap, &stack.redis_url, 2).await;
    let t = cfg.topics.clone();
    let worker = InProcess::start(cfg.clone());
    let p = producer(&stack.bootstrap);
    let u = uid();
    let (ch, sku) = (format!("ch-{u}"), format!("SKU-{u}"));
    let key = format!("{ch}/{sku}");
    let mut avail = Reader::new(&stack.bootstrap, &t.availability);
    let mut results = Reader::new(&stack.bootstrap, &t.reservations);
    send(&p, &t.stock, &ch, &event("r1", "inventory.channel.configured", json!({"channel": ch, "locations": ["l1"]}))).await;
    send(&p, &t.stock, &sku, &event("r2", "inventory.level.set", json!({"sku": sku, "location": "l1", "on_hand": 10}))).await;
    avail.until(T, "stock applied", |s| latest(s).get(&key).is_some_and(|v| v["available"] == json!(10))).await;
    for i in 0..4 {
        let order = json!({"order_id": format!("o{i}-{u}"), "channel": ch, "lines": [{"line_id": "1", "sku": sku, "quantity": 1}]});
        let value = event(&format!("r-o{i}"), "order.placed", order);
        p.send(FutureRecord::to(&t.orders).key(&format!("o{i}")).payload(&value).partition(i % 2), T).await.expect("delivered");
    }
    results.until(T, "four results", |s| s.len() >= 4).await;
    avail.until(T, "available 6", |s| latest(s)[&key]["available"] == json!(6)).await;
    until_committed(&cfg, &t.orders, 2, 4).await;

    let err = replay(&cfg, &args("orders", None)).await.unwrap_err();
    assert!(matches!(err, ReplayError::GroupActive { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&cfg.group_id) && msg.contains("stop every worker"), "{msg}");
    assert!(err.is_retryable());
    worker.stop().await;

    let before = committed(&cfg, &t.orders, 2);
    let dry = replay(&cfg, &ReplayArgs { dry_run: true, ..args("orders", None) }).await.expect("a dry run of a stopped group");
    assert_eq!((dry.to_reread(), dry.committed), (4, false));
    assert_eq!(committed(&cfg, &t.orders, 2), before, "a dry run commits nothing");
    println!("{}", dry.table());

    let plan = replay(&cfg, &args("orders", None)).await.expect("replay of a stopped group");
    assert!(plan.committed);
    assert_eq!(plan.partitions.iter().map(|p| p.committed).collect::<Vec<_>>(), before);
    assert_eq!(plan.to_reread(), 4);
    assert_eq!(committed(&cfg, &t.orders, 2), plan.partitions.iter().map(|p| Some(p.low)).collect::<Vec<_>>(), "back at the start");
    let state = avail.drain(Duration::from_millis(500)).await.to_vec();
    let (first, seen_before) = (latest(&state)[&key].clone(), results.seen.len());

    // The worker re-reads the four orders: four results again, state unchanged.
    let worker = InProcess::start(cfg.clone());
    results.until(T, "the four results again", |s| s.len() >= seen_before + 4).await;
    until_committed(&cfg, &t.orders, 2, 4).await;
    worker.stop().await;
    let again: Vec<_> = results.seen[seen_before..].iter().map(|r| (r.value["type"].clone(), r.value["data"]["order_id"].clone())).collect();
    for r in &results.seen[..seen_before] {
        assert!(again.contains(&(r.value["type"].clone(), r.value["data"]["order_id"].clone())), "{} re-read with the same result", r.value["data"]["order_id"]);
    }
    let after = latest(avail.drain(Duration::from_secs(1)).await)[&key].clone();
    support::kafka::assert_unchanged(&after, &first, "the replay");
    stack.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_time_picks_the_first_message_at_that_time() {
    let stack = Stack::start().await;
    let cfg = config(&stack.bootstrap, &stack.redis_url, 1).await;
    let t = cfg.topics.clone();
    let p = producer(&stack.bootstrap);
    let level = |i: usize| event(&format!("t{i}"), "inventory.level.set", json!({"sku": "S", "location": "l1", "on_hand": i}));
    for i in 0..3 {
        send(&p, &t.stock, "S", &level(i)).await;
    }
    // Every message so far is older than `at`, every later one not.
    let at = now_ms() + 1;
    while now_ms() <= at {
        std::thread::yield_now();
    }
    for i in 3..7 {
        send(&p, &t.stock, "S", &level(i)).await;
    }
    commit(&cfg, &t.stock, &[7]);

    let dry = replay(&cfg, &ReplayArgs { dry_run: true, ..args(&t.stock, Some(at)) }).await.unwrap();
    assert_eq!((dry.partitions[0].new_offset, dry.to_reread()), (Some(3), 4), "{}", dry.table());
    // Past the end: nothing moves.
    let future = replay(&cfg, &args(&t.stock, Some(now_ms() + 3_600_000))).await.unwrap();
    assert_eq!((future.partitions[0].new_offset, future.committed), (None, false));
    assert_eq!(committed(&cfg, &t.stock, 1), vec![Some(7)]);
    // Long before the first message (older than the retention, but what
    // would be re-read is new): from the start.
    let early = replay(&cfg, &ReplayArgs { dry_run: true, ..args(&t.stock, Some(at - 30 * 86_400_000)) }).await.unwrap();
    assert_eq!(early.partitions[0].new_offset, Some(0));

    let plan = replay(&cfg, &args(&t.stock, Some(at))).await.unwrap();
    assert!(plan.committed);
    assert_eq!(committed(&cfg, &t.stock, 1), vec![Some(3)]);
    stack.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_older_than_the_idempotency_retention_need_force() {
    let stack = Stack::start().await;
    let mut cfg = config(&stack.bootstrap, &stack.redis_url, 1).await;
    cfg.engine.idempotency_retention = Duration::from_secs(2 * 86_400);
    let t = cfg.topics.clone();
    let p = producer(&stack.bootstrap);
    let old = now_ms() - 3 * 86_400_000;
    let value = event("c1", "cart.released", json!({"cart_id": "c1"}));
    p.send(FutureRecord::to(&t.carts).key("c1").payload(&value).timestamp(old), Duration::from_secs(30)).await.expect("delivered");
    send(&p, &t.carts, "c1", &value).await;
    commit(&cfg, &t.carts, &[2]);

    let err = replay(&cfg, &args("carts", None)).await.unwrap_err();
    assert!(matches!(err, ReplayError::TooOld { partition: 0, .. }), "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(committed(&cfg, &t.carts, 1), vec![Some(2)], "nothing committed");
    let forced = replay(&cfg, &ReplayArgs { force: true, ..args("carts", None) }).await.unwrap();
    assert_eq!(forced.partitions[0].first_timestamp, Some(old));
    assert_eq!(committed(&cfg, &t.carts, 1), vec![Some(0)]);

    // Names that are not input topics, or do not exist, are refused.
    let err = replay(&cfg, &args(&t.availability, None)).await.unwrap_err();
    assert!(matches!(err, ReplayError::NotInput { .. }) && err.to_string().contains(&t.stock), "{err}");
    cfg.topics.shipments = format!("missing-{}", uid());
    let err = replay(&cfg, &args("shipments", None)).await.unwrap_err();
    assert!(matches!(err, ReplayError::UnknownTopic { .. }) && err.to_string().contains(&cfg.topics.shipments), "{err}");
    stack.audit().await;
}
