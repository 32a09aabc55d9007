//! The worker under faults: kill -9, SIGTERM, Redis and broker restarts,
//! two workers sharing a group. Each test streams a deterministic workload
//! (orders, some canceled) and checks the final state against what an
//! uninterrupted run gives.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::producer::{FutureProducer, FutureRecord};
use reservoir::config::Config;
use serde_json::json;
use support::kafka::{config, latest, producer, Reader};
use support::stack::Stack;
use support::uid;
use support::worker::{event, InProcess, Process};

const T: Duration = Duration::from_secs(120);
const SKUS: usize = 20;
const STOCK: i64 = 200;

struct Workload {
    ch: String,
    skus: Vec<String>,
    /// (order_id, sku index)
    orders: Vec<(String, usize)>,
    canceled: BTreeSet<String>,
}

impl Workload {
    fn new(orders: usize) -> Workload {
        let u = uid();
        let skus = (0..SKUS).map(|i| format!("S{i}-{u}")).collect();
        let orders: Vec<(String, usize)> = (0..orders).map(|i| (format!("o{i}-{u}"), (i * 7) % SKUS)).collect();
        let canceled = orders.iter().step_by(5).map(|(o, _)| o.clone()).collect();
        Workload { ch: format!("ch-{u}"), skus, orders, canceled }
    }

    /// Available per sku after everything, as an uninterrupted run leaves it.
    fn expected(&self) -> BTreeMap<String, i64> {
        let mut m: BTreeMap<String, i64> = self.skus.iter().map(|s| (s.clone(), STOCK)).collect();
        for (o, i) in &self.orders {
            if !self.canceled.contains(o) {
                *m.get_mut(&self.skus[*i]).unwrap() -= 1;
            }
        }
        m
    }

    async fn seed(&self, p: &FutureProducer, cfg: &Config) {
        let t = &cfg.topics;
        support::kafka::send(p, &t.stock, &self.ch, &event(&format!("ch-{}", self.ch), "inventory.channel.configured", json!({"channel": self.ch, "locations": ["l1", "l2"]}))).await;
        let mut avail = Reader::new(&cfg.kafka_bootstrap, &t.availability);
        avail.until(T, "channel configured", |_| true).await;
        for s in &self.skus {
            support::kafka::send(p, &t.stock, s, &event(&format!("lv-{s}"), "inventory.level.set", json!({"sku": s, "location": "l1", "on_hand": STOCK}))).await;
        }
        let want: BTreeSet<String> = self.skus.iter().map(|s| format!("{}/{s}", self.ch)).collect();
        avail.until(T, "stock applied", |seen| want.iter().all(|k| seen.iter().any(|r| &r.key == k))).await;
    }

    /// Every order (and the cancels right behind their orders), produced concurrently.
    async fn stream(&self, p: &FutureProducer, cfg: &Config) {
        let t = &cfg.topics;
        let mut msgs = Vec::new();
        for (o, i) in &self.orders {
            msgs.push((o.clone(), event(&format!("place-{o}"), "order.placed", json!({"order_id": o, "channel": self.ch, "lines": [{"line_id": "1", "sku": self.skus[*i], "quantity": 1}]}))));
            if self.canceled.contains(o) {
                msgs.push((o.clone(), event(&format!("cancel-{o}"), "order.canceled", json!({"order_id": o}))));
            }
        }
        let mut pending = FuturesUnordered::new();
        for (k, v) in &msgs {
            pending.push(p.send(FutureRecord::to(&t.orders).key(k).payload(v), Duration::from_secs(60)));
            if pending.len() >= 200 {
                pending.next().await.unwrap().expect("delivered");
            }
        }
        while let Some(r) = pending.next().await {
            r.expect("delivered");
        }
    }

    /// Waits for a result of every order, then checks results and availability.
    async fn verify(&self, cfg: &Config) {
        let mut results = Reader::new(&cfg.kafka_bootstrap, &cfg.topics.reservations);
        let ids: BTreeSet<&str> = self.orders.iter().map(|(o, _)| o.as_str()).collect();
        let deadline = Instant::now() + T;
        let seen = loop {
            let s = results.drain(Duration::from_secs(2)).await.to_vec();
            let got: BTreeSet<&str> = s.iter().filter_map(|r| r.value["data"]["order_id"].as_str()).collect();
            let missing: Vec<&str> = ids.iter().filter(|o| !got.contains(*o)).copied().collect();
            if missing.is_empty() {
                break s;
            }
            if Instant::now() > deadline {
                let mut conn = redis::Client::open(cfg.redis_url.as_str()).unwrap().get_connection().unwrap();
                let states: Vec<(String, Option<String>)> = missing
                    .iter()
                    .take(10)
                    .map(|o| (o.to_string(), redis::cmd("HGET").arg(format!("rv:o:{{{o}}}")).arg("st").query(&mut conn).unwrap()))
                    .collect();
                let mut orders = Reader::new(&cfg.kafka_bootstrap, &cfg.topics.orders);
                let all = orders.drain(Duration::from_secs(5)).await.to_vec();
                let at: Vec<(String, i32, i64)> = all.iter().filter(|r| missing.contains(&r.key.as_str())).map(|r| (r.key.clone(), r.partition, r.offset)).collect();
                let c: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", &cfg.kafka_bootstrap).set("group.id", &cfg.group_id).create().unwrap();
                let mut tpl = rdkafka::TopicPartitionList::new();
                for p in 0..3 {
                    tpl.add_partition(&cfg.topics.orders, p);
                }
                let committed = rdkafka::consumer::Consumer::committed_offsets(&c, tpl, Duration::from_secs(10)).map(|t| format!("{t:?}"));
                panic!("{} order(s) have no result after {T:?}; decisions in Redis: {states:?}; in the orders topic at {at:?}; committed {committed:?}", missing.len());
            }
        };
        let mut kinds: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in &seen {
            kinds.entry(r.value["data"]["order_id"].as_str().unwrap().to_string()).or_default().insert(r.value["type"].as_str().unwrap().to_string());
        }
        for (o, k) in &kinds {
            assert_eq!(k.len(), 1, "order {o} has contradicting results: {k:?}");
            assert!(k.contains("inventory.reservation.confirmed"), "order {o}: {k:?}");
        }
        let expected = self.expected();
        let (engine, _) = support::engine(&cfg.redis_url).await;
        let chans = vec!["l1".to_string(), "l2".to_string()];
        let mut avail = Reader::new(&cfg.kafka_bootstrap, &cfg.topics.availability);
        let want: BTreeMap<String, i64> = expected.iter().map(|(s, n)| (format!("{}/{s}", self.ch), *n)).collect();
        avail
            .until(T, "the last availability of every sku equals the expected", |s| {
                let last = latest(s);
                want.iter().all(|(k, n)| last.get(k).is_some_and(|v| v["available"] == json!(n)))
            })
            .await;
        for (sku, n) in &expected {
            let st = engine.sku_state(sku).await.unwrap();
            let a = reservoir::domain::availability(&st, &chans);
            assert_eq!(a.available, Some(reservoir::qty::Qty::units(*n)), "sku {sku} in Redis");
        }
    }
}

/// Waits until at least `n` results were published (the stream is under way).
async fn results_at_least(cfg: &Config, n: usize) {
    let mut r = Reader::new(&cfg.kafka_bootstrap, &cfg.topics.reservations);
    r.until(T, "some results", |s| s.len() >= n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_loses_and_doubles_nothing() {
    let stack = Stack::start().await;
    let cfg = config(stack.broker.as_ref().unwrap(), &stack.redis_url, 3).await;
    let w = Workload::new(3000);
    let p = producer(&stack.bootstrap);
    let mut worker = Process::start(&cfg);
    w.seed(&p, &cfg).await;
    let streaming = w.stream(&p, &cfg);
    let killing = async {
        results_at_least(&cfg, 300).await;
        worker.kill9();
    };
    tokio::join!(streaming, killing);
    // The dead member holds its partitions until its session (10 s)
    // expires. Restarting before that sometimes left Tansu's group without
    // an assignment for minutes (seen once in CI); restart after it.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let _restarted = Process::start(&cfg);
    w.verify(&cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_exits_0_and_loses_nothing() {
    let stack = Stack::start().await;
    let cfg = config(stack.broker.as_ref().unwrap(), &stack.redis_url, 3).await;
    let w = Workload::new(2000);
    let p = producer(&stack.bootstrap);
    let mut worker = Process::start(&cfg);
    w.seed(&p, &cfg).await;
    let streaming = w.stream(&p, &cfg);
    let terminating = async {
        results_at_least(&cfg, 200).await;
        let status = worker.term(Duration::from_secs(30));
        assert!(status.success(), "exit status after SIGTERM: {status:?}");
    };
    tokio::join!(streaming, terminating);
    let _restarted = Process::start(&cfg);
    w.verify(&cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_for_ten_seconds_is_waited_out() {
    let mut stack = Stack::start_with(true).await;
    let cfg = config(stack.broker.as_ref().unwrap(), &stack.redis_url, 3).await;
    let w = Workload::new(1500);
    let p = producer(&stack.bootstrap);
    let worker = InProcess::start(cfg.clone());
    w.seed(&p, &cfg).await;
    let redis = stack.redis.as_mut().expect("a local redis-server to stop");
    let streaming = w.stream(&p, &cfg);
    let outage = async {
        results_at_least(&cfg, 100).await;
        redis.stop();
        tokio::time::sleep(Duration::from_secs(10)).await;
        redis.start_again();
    };
    tokio::join!(streaming, outage);
    w.verify(&cfg).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_is_waited_out() {
    let mut stack = Stack::start_with(true).await;
    let cfg = config(stack.broker.as_ref().unwrap(), &stack.redis_url, 3).await;
    let w = Workload::new(1000);
    let p = producer(&stack.bootstrap);
    let worker = InProcess::start(cfg.clone());
    w.seed(&p, &cfg).await;
    w.stream(&p, &cfg).await;
    results_at_least(&cfg, 50).await;
    let broker = stack.broker.as_mut().unwrap();
    broker.stop();
    tokio::time::sleep(Duration::from_secs(10)).await;
    broker.restart();
    let started = Instant::now();
    w.verify(&cfg).await;
    eprintln!("caught up {:?} after the broker came back", started.elapsed());
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_split_the_partitions_and_one_takes_over() {
    let stack = Stack::start().await;
    let cfg = config(stack.broker.as_ref().unwrap(), &stack.redis_url, 4).await;
    let w = Workload::new(2000);
    let p = producer(&stack.bootstrap);
    let a = InProcess::start(cfg.clone());
    let b = InProcess::start(cfg.clone());
    w.seed(&p, &cfg).await;
    let streaming = w.stream(&p, &cfg);
    let leaving = async {
        results_at_least(&cfg, 300).await;
        b.stop().await;
    };
    tokio::join!(streaming, leaving);
    w.verify(&cfg).await;
    a.stop().await;
}
