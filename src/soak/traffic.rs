//! The soak's input: the benchmark's seeded mix, plus what a real producer
//! does wrong: the same event again at a new offset, an order's cancel
//! before its placement, and poison of every dead-letter kind. Everything
//! sent is written down so the checks know what to expect.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use serde_json::{json, Value};

use crate::bench::workload::{GenEvent, Workload};
use crate::config::Config;
use crate::wire::TopicKind;

/// The dead-letter codes the soak injects, with how each is made. Not yet:
/// `insufficient_on_hand` and `over_refund`, which need a decided order of
/// the generator's (a shipment or refund for an order never placed is kept
/// for its placement, as the contract says, not refused).
pub const POISON: [&str; 6] = ["malformed_json", "invalid_envelope", "unknown_type", "invalid_data", "too_large", "negative_on_hand"];

/// A message to send: where, key, value, and what it is for the ledger.
pub struct Msg {
    pub topic: TopicKind,
    pub key: String,
    pub payload: Vec<u8>,
    pub what: What,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum What {
    /// A valid event of the mix (its order id when it places an order).
    Valid { order: Option<String> },
    /// A valid event sent again.
    Repeat,
    /// A cancel sent before its order's placement.
    CancelFirst { order: String },
    /// Poison: its dead-letter code and the id that names it (`poison-N`).
    Poison { code: &'static str, id: String },
}

fn envelope(id: &str, ty: &str, data: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"specversion": "1.0", "id": id, "source": "soak/poison", "type": ty, "data": data})).expect("JSON")
}

/// A poison message of `code`, named `id`; `sku` is one the catalog stocks.
pub fn poison(code: &'static str, id: &str, sku: &str, max_message_bytes: usize) -> Msg {
    let what = What::Poison { code, id: id.to_string() };
    let (topic, key, payload) = match code {
        "malformed_json" => (TopicKind::Orders, id.to_string(), format!("{{\"specversion\": \"1.0\", \"id\": \"{id}\", oops").into_bytes()),
        "invalid_envelope" => (TopicKind::Orders, id.to_string(), serde_json::to_vec(&json!({"specversion": "0.3", "id": id, "source": "soak", "type": "order.placed", "data": {}})).expect("JSON")),
        "unknown_type" => (TopicKind::Orders, id.to_string(), envelope(id, "order.teleported", json!({"order_id": id}))),
        "invalid_data" => (TopicKind::Stock, sku.to_string(), envelope(id, "inventory.level.set", json!({"sku": sku, "location": "L1", "on_hand": "-1"}))),
        "too_large" => {
            let pad = "x".repeat(max_message_bytes + 100);
            // Keyed by its id: the worker reads no header of a value it refuses unread.
            (TopicKind::Stock, id.to_string(), envelope(id, "inventory.level.set", json!({"sku": sku, "location": "L1", "on_hand": 1, "pad": pad})))
        }
        "negative_on_hand" => (TopicKind::Stock, sku.to_string(), envelope(id, "inventory.level.adjusted", json!({"sku": sku, "location": "L1", "delta": -1_000_000_000}))),
        other => unreachable!("no poison recipe for {other}"),
    };
    Msg { topic, key, payload, what }
}

/// Shares of the mix.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    pub repeats: f64,
    pub cancel_first: f64,
    pub poison: f64,
}

/// The generator: the workload plus the faults of producers.
pub struct Traffic {
    wl: Workload,
    rng: StdRng,
    mix: Mix,
    recent: VecDeque<Msg>,
    poisoned: u64,
    max_message_bytes: usize,
    pending: VecDeque<Msg>,
}

impl Traffic {
    pub fn new(wl: Workload, seed: u64, mix: Mix, max_message_bytes: usize) -> Traffic {
        Traffic { wl, rng: StdRng::seed_from_u64(seed ^ 0x50a4), mix, recent: VecDeque::new(), poisoned: 0, max_message_bytes, pending: VecDeque::new() }
    }

    pub fn workload(&mut self) -> &mut Workload {
        &mut self.wl
    }

    fn valid(e: GenEvent) -> Msg {
        let order = if e.answered && e.topic == TopicKind::Orders { Some(e.key.clone()) } else { None };
        Msg { topic: e.topic, key: e.key, payload: e.payload, what: What::Valid { order } }
    }

    /// The next message to send.
    pub fn next(&mut self) -> Msg {
        if let Some(m) = self.pending.pop_front() {
            return m;
        }
        let x: f64 = self.rng.random();
        if x < self.mix.poison {
            let code = POISON[(self.poisoned % POISON.len() as u64) as usize];
            self.poisoned += 1;
            let sku = crate::bench::workload::Catalog::sku(self.rng.random_range(0..self.wl.catalog().skus));
            return poison(code, &format!("poison-{}", self.poisoned), &sku, self.max_message_bytes);
        }
        if x < self.mix.poison + self.mix.repeats && !self.recent.is_empty() {
            let m = &self.recent[self.rng.random_range(0..self.recent.len())];
            return Msg { topic: m.topic, key: m.key.clone(), payload: m.payload.clone(), what: What::Repeat };
        }
        let e = self.wl.next_event();
        let m = Traffic::valid(e);
        if let What::Valid { order: Some(order) } = &m.what {
            if self.rng.random_bool(self.mix.cancel_first) {
                // Same key, same partition: the worker sees the cancel first.
                let cancel = envelope(&format!("{order}-cancel-first"), "order.canceled", json!({"order_id": order}));
                let first = Msg { topic: TopicKind::Orders, key: order.clone(), payload: cancel, what: What::CancelFirst { order: order.clone() } };
                self.pending.push_back(m);
                return first;
            }
        }
        if self.recent.len() >= 1000 {
            self.recent.pop_front();
        }
        self.recent.push_back(Msg { topic: m.topic, key: m.key.clone(), payload: m.payload.clone(), what: What::Repeat });
        m
    }
}

/// What was sent and acknowledged, by kind.
#[derive(Debug, Default)]
pub struct Ledger {
    pub valid: u64,
    pub repeats: u64,
    /// Orders placed (valid, acknowledged).
    pub orders: BTreeSet<String>,
    /// Orders whose cancel went first.
    pub canceled_first: BTreeSet<String>,
    /// Poison id -> code.
    pub poison: BTreeMap<String, &'static str>,
    /// Messages the broker did not acknowledge (the harness's loss, not the worker's).
    pub lost: u64,
}

impl Ledger {
    fn record(&mut self, what: What) {
        match what {
            What::Valid { order } => {
                self.valid += 1;
                if let Some(o) = order {
                    self.orders.insert(o);
                }
            }
            What::Repeat => self.repeats += 1,
            What::CancelFirst { order } => {
                self.canceled_first.insert(order);
            }
            What::Poison { code, id } => {
                self.poison.insert(id, code);
            }
        }
    }
}

/// Records each message in the ledger once the broker acknowledged it.
#[derive(Default)]
pub struct Acks(pub Arc<Mutex<Ledger>>);

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<What>;
    fn delivery(&self, r: &DeliveryResult<'_>, what: Box<What>) {
        let mut l = self.0.lock().expect("not poisoned");
        match r {
            Ok(_) => l.record(*what),
            Err(_) => l.lost += 1,
        }
    }
}

/// The generator's producer: one record per batch (Tansu 0.6.0 skips the
/// rest of a batch for a consumer resuming inside it, which a soak full of
/// restarts would hit), and deliveries retried across broker restarts.
pub fn producer(cfg: &Config, ledger: Arc<Mutex<Ledger>>) -> Result<ThreadedProducer<Acks>, KafkaError> {
    crate::kafka::client_config(
        cfg,
        &[("acks", "all"), ("linger.ms", "5"), ("batch.num.messages", "1"), ("message.timeout.ms", "600000"), ("retry.backoff.max.ms", "2000")],
    )
    .create_with_context(Acks(ledger))
}

/// Queues one message, waiting while the queue is full.
pub async fn send(p: &ThreadedProducer<Acks>, cfg: &Config, m: Msg) {
    let mut rec = BaseRecord::with_opaque_to(cfg.topics.input(m.topic), Box::new(m.what)).key(m.key.as_str()).payload(m.payload.as_slice());
    loop {
        match p.send(rec) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                rec = r;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Err((e, _)) => {
                tracing::warn!(error = %e, "cannot queue a soak message");
                p.context().0.lock().expect("not poisoned").lost += 1;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workload::Catalog;
    use crate::wire::decode;

    #[test]
    fn every_poison_fails_the_way_it_is_meant_to() {
        for code in POISON {
            let m = poison(code, "poison-1", "SKU-0000001", 2048);
            let r = decode(m.topic, &m.payload, 2048);
            match code {
                // Refused by the engine, not by the decoder.
                "negative_on_hand" => assert!(r.is_ok(), "{code}: {r:?}"),
                _ => assert_eq!(r.unwrap_err().code(), code),
            }
        }
    }

    #[test]
    fn the_mix_has_repeats_early_cancels_and_poison() {
        let wl = Workload::new(Catalog { skus: 50, locations: 2, channels: 1 }, "t", 3, 0.2);
        let mut t = Traffic::new(wl, 3, Mix { repeats: 0.05, cancel_first: 0.1, poison: 0.05 }, 2048);
        let whats: Vec<What> = (0..3000).map(|_| t.next().what).collect();
        let count = |f: &dyn Fn(&What) -> bool| whats.iter().filter(|w| f(w)).count();
        assert!(count(&|w| *w == What::Repeat) > 50);
        assert!(count(&|w| matches!(w, What::Poison { .. })) > 50);
        // A cancel-first is followed at once by its placement.
        let i = whats.iter().position(|w| matches!(w, What::CancelFirst { .. })).expect("some cancel first");
        let What::CancelFirst { order } = &whats[i] else { unreachable!() };
        assert_eq!(whats[i + 1], What::Valid { order: Some(order.clone()) });
    }
}
