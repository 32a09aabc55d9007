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
use rdkafka::message::Message as _;
use rdkafka::ClientContext;
use serde_json::{json, Value};

use super::model::{self, Fact, ShipFirst};
use crate::bench::workload::{ConfirmedOrder, GenEvent, Workload};
use crate::config::Config;
use crate::wire::TopicKind;

/// The dead-letter codes the soak injects, with how each is made. The last
/// two name an order the workers confirmed: a shipment or refund of an
/// order not placed yet is kept for its placement, as the contract says.
pub const POISON: [&str; 8] =
    ["malformed_json", "invalid_envelope", "unknown_type", "invalid_data", "too_large", "negative_on_hand", "insufficient_on_hand", "over_refund"];

/// Far beyond any stock or order of the soak's.
const HUGE: i64 = 1_000_000_000;

/// A message to send: where, key, value, and what it is for the ledger.
pub struct Msg {
    pub topic: TopicKind,
    pub key: String,
    pub payload: Vec<u8>,
    pub what: What,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum What {
    /// A valid event of the mix: its order id when it places an order, and
    /// what it does to the stock for the model.
    Valid { order: Option<String>, fact: Option<Fact> },
    /// A valid event sent again.
    Repeat,
    /// A cancel sent before its order's placement.
    CancelFirst { order: String },
    /// A shipment of one line sent before its order's placement.
    ShipFirst(ShipFirst),
    /// Poison: its dead-letter code and the id that names it (`poison-N`).
    Poison { code: &'static str, id: String },
}

/// Where shipments sent before their placement ship from: a location no
/// channel sells from, so they never take units reserved by other orders
/// (shipping from a channel's location may, as the contract allows; a
/// settling shipment of that other order is then refused, and the model
/// cannot tell which without the interleaving). Stocked at catalog load.
pub const FULFILMENT_CENTER: &str = "FC";

/// Units of every sku at the fulfilment center.
const FULFILMENT_STOCK: i64 = 100;

/// The fulfilment center's levels, one per sku.
pub fn fulfilment_levels(skus: u64) -> impl Iterator<Item = Msg> {
    (0..skus).map(|i| {
        let sku = crate::bench::workload::Catalog::sku(i);
        let payload = envelope(&format!("fc-level-{sku}"), "inventory.level.set", json!({"sku": sku, "location": FULFILMENT_CENTER, "on_hand": FULFILMENT_STOCK}));
        let fact = model::fact(&payload);
        Msg { topic: TopicKind::Stock, key: sku, payload, what: What::Valid { order: None, fact } }
    })
}

fn envelope(id: &str, ty: &str, data: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"specversion": "1.0", "id": id, "source": "soak/poison", "type": ty, "data": data})).expect("JSON")
}

/// A poison message of `code`, named `id`; `sku` is one the catalog stocks
/// and `order` one the workers confirmed (None when the code needs none).
pub fn poison(code: &'static str, id: &str, sku: &str, order: Option<&ConfirmedOrder>, max_message_bytes: usize) -> Option<Msg> {
    let what = What::Poison { code, id: id.to_string() };
    let line = order.and_then(|o| Some((o.order_id.as_str(), o.lines.first()?)));
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
        "negative_on_hand" => (TopicKind::Stock, sku.to_string(), envelope(id, "inventory.level.adjusted", json!({"sku": sku, "location": "L1", "delta": -HUGE}))),
        "insufficient_on_hand" => {
            let (order, (line_id, sku, allocs)) = line?;
            let data = json!({"shipment_id": id, "order_id": order, "location": allocs.first()?.0, "lines": [{"line_id": line_id, "sku": sku, "quantity": HUGE}]});
            (TopicKind::Shipments, order.to_string(), envelope(id, "shipment.created", data))
        }
        "over_refund" => {
            let (order, (line_id, sku, _)) = line?;
            let data = json!({"credit_memo_id": id, "order_id": order, "lines": [{"line_id": line_id, "sku": sku, "quantity": HUGE, "back_to_stock": false}]});
            (TopicKind::CreditMemos, order.to_string(), envelope(id, "credit_memo.created", data))
        }
        other => unreachable!("no poison recipe for {other}"),
    };
    Some(Msg { topic, key, payload, what })
}

/// Shares of the mix.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    pub repeats: f64,
    pub cancel_first: f64,
    pub ship_first: f64,
    pub poison: f64,
}

/// The generator: the workload plus the faults of producers.
pub struct Traffic {
    wl: Workload,
    rng: StdRng,
    mix: Mix,
    recent: VecDeque<Msg>,
    poisoned: u64,
    /// Whose turn it is among the poison codes.
    turn: usize,
    max_message_bytes: usize,
    pending: VecDeque<Msg>,
    /// Orders shipped before their placement: never settled again.
    shipped_first: std::collections::HashSet<String>,
}

impl Traffic {
    pub fn new(wl: Workload, seed: u64, mix: Mix, max_message_bytes: usize) -> Traffic {
        Traffic { wl, rng: StdRng::seed_from_u64(seed ^ 0x50a4), mix, recent: VecDeque::new(), poisoned: 0, turn: 0, max_message_bytes, pending: VecDeque::new(), shipped_first: Default::default() }
    }

    pub fn workload(&mut self) -> &mut Workload {
        &mut self.wl
    }

    /// Whether `order` was shipped before its placement (so the generator
    /// neither ships nor cancels it again once it is confirmed).
    pub fn shipped_first(&self, order: &str) -> bool {
        self.shipped_first.contains(order)
    }

    /// One shipment per line of the placement `m`, from the fulfilment
    /// center, to send before it.
    fn ship_first(&mut self, m: &Msg) -> Option<Vec<Msg>> {
        let v: Value = serde_json::from_slice(&m.payload).ok()?;
        let d = &v["data"];
        let order = d["order_id"].as_str()?.to_string();
        let location = FULFILMENT_CENTER.to_string();
        let mut out = Vec::new();
        for l in d["lines"].as_array()? {
            let line_id = l["line_id"].as_str()?.to_string();
            let id = format!("{order}-ship-first-{line_id}");
            let data = json!({"shipment_id": id, "order_id": order, "location": location, "lines": [{"line_id": line_id, "sku": l["sku"], "quantity": l["quantity"]}]});
            let first = ShipFirst { id: id.clone(), order: order.clone(), location: location.clone(), line_id, sku: l["sku"].as_str()?.to_string(), quantity: l["quantity"].as_i64()? };
            out.push(Msg { topic: TopicKind::Shipments, key: order.clone(), payload: envelope(&id, "shipment.created", data), what: What::ShipFirst(first) });
        }
        self.shipped_first.insert(order);
        Some(out)
    }

    pub fn valid(e: GenEvent) -> Msg {
        let order = if e.answered && e.topic == TopicKind::Orders { Some(e.key.clone()) } else { None };
        let fact = model::fact(&e.payload);
        Msg { topic: e.topic, key: e.key, payload: e.payload, what: What::Valid { order, fact } }
    }

    /// The next message to send.
    pub fn next(&mut self) -> Msg {
        if let Some(m) = self.pending.pop_front() {
            return m;
        }
        let x: f64 = self.rng.random();
        if x < self.mix.poison {
            let sku = crate::bench::workload::Catalog::sku(self.rng.random_range(0..self.wl.catalog().skus));
            let order = self.wl.any_open_order();
            // Codes take turns; until an order is confirmed, those that need one are skipped.
            for _ in 0..POISON.len() {
                let code = POISON[self.turn % POISON.len()];
                self.turn += 1;
                if let Some(m) = poison(code, &format!("poison-{}", self.poisoned + 1), &sku, order.as_ref(), self.max_message_bytes) {
                    self.poisoned += 1;
                    return m;
                }
            }
        }
        if x < self.mix.poison + self.mix.repeats && !self.recent.is_empty() {
            let m = &self.recent[self.rng.random_range(0..self.recent.len())];
            return Msg { topic: m.topic, key: m.key.clone(), payload: m.payload.clone(), what: What::Repeat };
        }
        let e = self.wl.next_event();
        let m = Traffic::valid(e);
        if let What::Valid { order: Some(order), .. } = &m.what {
            if self.rng.random_bool(self.mix.cancel_first) {
                // Same key, same partition: the worker sees the cancel first.
                let cancel = envelope(&format!("{order}-cancel-first"), "order.canceled", json!({"order_id": order}));
                let first = Msg { topic: TopicKind::Orders, key: order.clone(), payload: cancel, what: What::CancelFirst { order: order.clone() } };
                self.pending.push_back(m);
                return first;
            }
            if self.rng.random_bool(self.mix.ship_first) {
                if let Some(mut ships) = self.ship_first(&m) {
                    // Another topic: the worker may still see the placement first; the final stock must be the same.
                    let first = ships.remove(0);
                    self.pending.extend(ships);
                    self.pending.push_back(m);
                    return first;
                }
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
    /// What the valid events do to the stock, in the order acknowledged.
    pub facts: Vec<Fact>,
    /// Per order, its shipments' (partition, offset).
    pub shipments: BTreeMap<String, Vec<(i32, i64)>>,
    /// Shipments sent before their order's placement.
    pub ship_first: Vec<ShipFirst>,
}

impl Ledger {
    fn record(&mut self, what: What, partition: i32, offset: i64) {
        match what {
            What::Valid { order, fact } => {
                self.valid += 1;
                if let Some(o) = order {
                    self.orders.insert(o);
                }
                if let Some(Fact::Ship { order, .. }) = &fact {
                    self.shipments.entry(order.clone()).or_default().push((partition, offset));
                }
                self.facts.extend(fact);
            }
            What::Repeat => self.repeats += 1,
            What::CancelFirst { order } => {
                self.canceled_first.insert(order);
            }
            What::ShipFirst(f) => self.ship_first.push(f),
            What::Poison { code, id } => {
                self.poison.insert(id, code);
            }
        }
    }
}

/// Takes out of `shipping` the orders whose shipments were all acknowledged
/// and committed by the workers (`committed`: per partition of the
/// shipments topic), so their units are shipped when a refund comes.
pub fn took_effect(shipping: &mut Vec<ConfirmedOrder>, ledger: &Ledger, committed: &BTreeMap<i32, i64>) -> Vec<ConfirmedOrder> {
    let done = |o: &ConfirmedOrder| {
        ledger.shipments.get(&o.order_id).is_some_and(|s| s.len() >= o.locations().len() && s.iter().all(|(p, off)| committed.get(p).is_some_and(|c| c > off)))
    };
    let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(shipping).into_iter().partition(|o| done(o));
    *shipping = waiting;
    ready
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
            Ok(m) => l.record(*what, m.partition(), m.offset()),
            Err((e, _)) => {
                l.lost += 1;
                if l.lost <= 5 {
                    tracing::warn!(error = %e, what = ?what, "the broker did not take a soak message; the checks leave it out");
                }
            }
        }
    }
}

/// The generator's producer: an ordinary batching, idempotent producer
/// (many records per batch, so workers resume inside batches), with
/// deliveries retried across leader kills.
pub fn producer(cfg: &Config, ledger: Arc<Mutex<Ledger>>) -> Result<ThreadedProducer<Acks>, KafkaError> {
    crate::kafka::client_config(
        cfg,
        crate::kafka::Role::Producer,
        &[("enable.idempotence", "true"), ("acks", "all"), ("linger.ms", "5"), ("message.timeout.ms", "600000"), ("retry.backoff.max.ms", "2000")],
    )
    .create_with_context(Acks(ledger))
}

/// Waits until every message queued so far was acknowledged (or failed,
/// which the ledger counts as lost).
pub fn delivered(p: &ThreadedProducer<Acks>, timeout: std::time::Duration) -> Result<(), KafkaError> {
    use rdkafka::producer::Producer as _;
    tokio::task::block_in_place(|| p.flush(timeout))
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
        let order = ConfirmedOrder { order_id: "o-1".into(), lines: vec![("1".into(), "SKU-0000001".into(), vec![("L2".into(), 2)])] };
        for code in POISON {
            let m = poison(code, "poison-1", "SKU-0000001", Some(&order), 2048).expect("an order is given");
            let r = decode(m.topic, &m.payload, 2048);
            match code {
                // Refused by the engine, not by the decoder.
                "negative_on_hand" | "insufficient_on_hand" | "over_refund" => assert!(r.is_ok(), "{code}: {r:?}"),
                _ => assert_eq!(r.unwrap_err().code(), code),
            }
        }
        assert!(poison("over_refund", "poison-2", "SKU-0000001", None, 2048).is_none());
        // The model leaves poison out: it changes nothing.
        assert!(Traffic::valid(GenEvent { topic: TopicKind::Stock, key: "k".into(), payload: b"{}".to_vec(), seq: 0, sku_ops: 0, answered: false }).what
            == What::Valid { order: None, fact: None });
    }

    #[test]
    fn the_mix_has_repeats_early_cancels_and_poison() {
        let wl = Workload::new(Catalog { skus: 50, locations: 2, channels: 1 }, "t", 3, 0.2);
        let mut t = Traffic::new(wl, 3, Mix { repeats: 0.05, cancel_first: 0.1, ship_first: 0.1, poison: 0.05 }, 2048);
        let whats: Vec<What> = (0..3000).map(|_| t.next().what).collect();
        let count = |f: &dyn Fn(&What) -> bool| whats.iter().filter(|w| f(w)).count();
        assert!(count(&|w| *w == What::Repeat) > 50);
        assert!(count(&|w| matches!(w, What::Poison { .. })) > 50);
        // A cancel-first is followed at once by its placement.
        let i = whats.iter().position(|w| matches!(w, What::CancelFirst { .. })).expect("some cancel first");
        let What::CancelFirst { order } = &whats[i] else { unreachable!() };
        assert!(matches!(&whats[i + 1], What::Valid { order: Some(o), .. } if o == order));
        // Shipments first, one per line, then the placement.
        let i = whats.iter().position(|w| matches!(w, What::ShipFirst(_))).expect("some shipment first");
        let What::ShipFirst(f) = &whats[i] else { unreachable!() };
        let placed = whats[i..].iter().position(|w| !matches!(w, What::ShipFirst(_))).unwrap() + i;
        assert!(matches!(&whats[placed], What::Valid { order: Some(o), .. } if *o == f.order), "{:?}", &whats[i..=placed]);
        assert!(t.shipped_first(&f.order) && f.location == FULFILMENT_CENTER && f.quantity >= 1);
    }
}
