//! A deterministic order stream for the fault tests: a channel, 20 skus
//! with units for every order, orders of one unit (every fifth canceled right behind
//! it), and the checks that the final state is what an uninterrupted run
//! gives: one kind of result per order, the stock and the last
//! availability per sku as expected.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::producer::{FutureProducer, FutureRecord};
use reservoir::config::Config;
use serde_json::json;

use super::kafka::{latest, Reader};
use super::uid;
use super::worker::event;

pub const T: Duration = Duration::from_secs(120);
const SKUS: usize = 20;

pub struct Workload {
    pub ch: String,
    pub skus: Vec<String>,
    /// (order_id, sku index)
    pub orders: Vec<(String, usize)>,
    pub canceled: BTreeSet<String>,
    /// Units per sku: enough for every order, so none is rejected.
    pub stock: i64,
}

impl Workload {
    pub fn new(orders: usize) -> Workload {
        let u = uid();
        let skus = (0..SKUS).map(|i| format!("S{i}-{u}")).collect();
        let orders: Vec<(String, usize)> = (0..orders).map(|i| (format!("o{i}-{u}"), (i * 7) % SKUS)).collect();
        let canceled = orders.iter().step_by(5).map(|(o, _)| o.clone()).collect();
        let stock = (orders.len() / SKUS) as i64 + 50;
        Workload { ch: format!("ch-{u}"), skus, orders, canceled, stock }
    }

    /// Available per sku after everything, as an uninterrupted run leaves it.
    pub fn expected(&self) -> BTreeMap<String, i64> {
        let mut m: BTreeMap<String, i64> = self.skus.iter().map(|s| (s.clone(), self.stock)).collect();
        for (o, i) in &self.orders {
            if !self.canceled.contains(o) {
                *m.get_mut(&self.skus[*i]).unwrap() -= 1;
            }
        }
        m
    }

    pub async fn seed(&self, p: &FutureProducer, cfg: &Config) {
        let t = &cfg.topics;
        super::kafka::send(p, &t.stock, &self.ch, &event(&format!("ch-{}", self.ch), "inventory.channel.configured", json!({"channel": self.ch, "locations": ["l1", "l2"]}))).await;
        let mut avail = Reader::new(&cfg.kafka_bootstrap, &t.availability);
        avail.until(T, "channel configured", |_| true).await;
        for s in &self.skus {
            super::kafka::send(p, &t.stock, s, &event(&format!("lv-{s}"), "inventory.level.set", json!({"sku": s, "location": "l1", "on_hand": self.stock}))).await;
        }
        let want: BTreeSet<String> = self.skus.iter().map(|s| format!("{}/{s}", self.ch)).collect();
        avail.until(T, "stock applied", |seen| want.iter().all(|k| seen.iter().any(|r| &r.key == k))).await;
    }

    /// Every order (and the cancels right behind their orders), produced concurrently.
    pub async fn stream(&self, p: &FutureProducer, cfg: &Config) {
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
    pub async fn verify(&self, cfg: &Config) {
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
                let mut conn = redis::Client::open(cfg.redis.url.as_str()).unwrap().get_connection().unwrap();
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
        let (engine, _) = super::engine(&cfg.redis.url).await;
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
pub async fn results_at_least(cfg: &Config, n: usize) {
    let mut r = Reader::new(&cfg.kafka_bootstrap, &cfg.topics.reservations);
    r.until(T, "some results", |s| s.len() >= n).await;
}

