//! The benchmark's seeded workload, pure (no I/O): the catalog events, then
//! a realistic mix of cart, order, shipment, credit-memo and restock events
//! with Zipf-distributed skus. Shipments, cancels and credit memos follow
//! confirmed orders only (fed back from `inventory.reservations`), as a shop
//! would send them.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde_json::{json, Value};

use crate::wire::TopicKind;

/// The catalog's shape.
#[derive(Clone, Debug)]
pub struct Catalog {
    pub skus: u64,
    pub locations: u32,
    pub channels: u32,
}

impl Catalog {
    pub fn sku(i: u64) -> String {
        format!("SKU-{i:07}")
    }
    pub fn location(i: u32) -> String {
        format!("L{}", i + 1)
    }
    pub fn channel(i: u32) -> String {
        format!("ch{}", i + 1)
    }
    /// A channel sells from every location, starting at a different one.
    pub fn channel_locations(&self, c: u32) -> Vec<String> {
        (0..self.locations).map(|i| Catalog::location((i + c) % self.locations)).collect()
    }
    pub fn sku_locations(&self) -> u64 {
        self.skus * self.locations as u64
    }
}

/// One event to produce.
#[derive(Clone, Debug)]
pub struct GenEvent {
    pub topic: TopicKind,
    pub key: String,
    pub payload: Vec<u8>,
    /// The event's sequence number (its id is `<prefix>-<seq>`).
    pub seq: u64,
    /// Per-sku operations it asks of the engine.
    pub sku_ops: u32,
    /// Whether the worker always answers it on `inventory.reservations`.
    pub answered: bool,
}

/// (location, quantity in ten-thousandths) allocations of one line.
pub type Allocations = Vec<(String, i64)>;

/// A confirmed order as the results topic reports it: per line, its id,
/// sku and allocations.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfirmedOrder {
    pub order_id: String,
    pub lines: Vec<(String, String, Allocations)>,
}

impl ConfirmedOrder {
    /// The locations it was allocated at, in order of first appearance:
    /// settling ships once from each.
    pub fn locations(&self) -> Vec<&str> {
        let mut locs: Vec<&str> = Vec::new();
        for a in self.lines.iter().flat_map(|l| l.2.iter()) {
            if !locs.contains(&a.0.as_str()) {
                locs.push(&a.0);
            }
        }
        locs
    }

    /// Reads an `inventory.reservation.confirmed` event's data.
    pub fn from_data(data: &Value) -> Option<ConfirmedOrder> {
        let order_id = data.get("order_id")?.as_str()?.to_string();
        let mut lines = Vec::new();
        for l in data.get("lines")?.as_array()? {
            let allocs = l
                .get("allocations")?
                .as_array()?
                .iter()
                .filter_map(|a| Some((a.get("location")?.as_str()?.to_string(), a.get("quantity")?.as_i64()?)))
                .collect();
            lines.push((l.get("line_id")?.as_str()?.to_string(), l.get("sku")?.as_str()?.to_string(), allocs));
        }
        Some(ConfirmedOrder { order_id, lines })
    }
}

/// Relative weights of the event types in the mix.
const MIX: [(Kind, u32); 7] = [
    (Kind::Hold, 30),
    (Kind::Release, 8),
    (Kind::Order, 30),
    (Kind::Cancel, 4),
    (Kind::Ship, 15),
    (Kind::Credit, 3),
    (Kind::Restock, 10),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Hold,
    Release,
    Order,
    Cancel,
    Ship,
    Credit,
    Restock,
}

const MAX_CARTS: usize = 20_000;
const MAX_ORDERS: usize = 50_000;
/// Settling: shipped orders kept for a refund, newest first (a few seconds' worth).
const SETTLED_REFUNDABLE: usize = 200;

pub struct Workload {
    catalog: Catalog,
    prefix: String,
    rng: StdRng,
    zipf: Zipf<f64>,
    /// Share of orders and holds whose first sku is the hot one.
    hot: f64,
    seq: u64,
    next_cart: u64,
    next_order: u64,
    carts: VecDeque<(String, u32, Vec<String>)>,
    confirmed: VecDeque<ConfirmedOrder>,
    shipped: VecDeque<ConfirmedOrder>,
    /// Settling: orders whose shipments were all sent, until the caller
    /// says they took effect ([`Workload::shipped`]).
    shipping: Vec<ConfirmedOrder>,
    /// Settle every confirmed order in full (the soak's steady state).
    settle: bool,
    queued: VecDeque<GenEvent>,
}

impl Workload {
    pub fn new(catalog: Catalog, prefix: &str, seed: u64, hot: f64) -> Workload {
        let zipf = Zipf::new(catalog.skus.max(1) as f64, 1.0).expect("Zipf over at least one sku");
        Workload {
            catalog,
            prefix: prefix.to_string(),
            rng: StdRng::seed_from_u64(seed),
            zipf,
            hot: hot.clamp(0.0, 1.0),
            seq: 0,
            next_cart: 0,
            next_order: 0,
            carts: VecDeque::new(),
            confirmed: VecDeque::new(),
            shipped: VecDeque::new(),
            shipping: Vec::new(),
            settle: false,
            queued: VecDeque::new(),
        }
    }

    /// Settles orders in full: each confirmed order is shipped from every
    /// location it was allocated at, or canceled, and no more than about a
    /// hundred wait, so the store reaches a steady size (the soak checks
    /// Redis memory stays flat). The benchmark leaves orders open.
    pub fn settling(mut self) -> Workload {
        self.settle = true;
        self
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The number of events produced so far.
    pub fn produced(&self) -> u64 {
        self.seq
    }

    /// The id of event `seq`.
    pub fn event_id(prefix: &str, seq: u64) -> String {
        format!("{prefix}-{seq}")
    }

    /// The seq of an id made by this run, from an output's `caused_by`.
    pub fn seq_of(prefix: &str, id: &str) -> Option<u64> {
        id.strip_prefix(prefix)?.strip_prefix('-')?.parse().ok()
    }

    fn event(&mut self, topic: TopicKind, key: String, ty: &str, data: Value, sku_ops: u32, answered: bool) -> GenEvent {
        let seq = self.seq;
        self.seq += 1;
        let v = json!({
            "specversion": "1.0", "id": Workload::event_id(&self.prefix, seq), "source": "bench/generator",
            "type": ty, "datacontenttype": "application/json", "data": data,
        });
        GenEvent { topic, key, payload: serde_json::to_vec(&v).expect("JSON"), seq, sku_ops, answered }
    }

    /// The channels, then every sku-location's level (on_hand 20..=200).
    pub fn catalog_events(&mut self) -> impl Iterator<Item = GenEvent> + '_ {
        let channels = self.catalog.channels;
        let locs = self.catalog.locations;
        let skus = self.catalog.skus;
        let ch = (0..channels).map(|c| (Some(c), 0u64, 0u32));
        let lv = (0..skus).flat_map(move |s| (0..locs).map(move |l| (None, s, l)));
        ch.chain(lv).map(move |(c, s, l)| match c {
            Some(c) => {
                let name = Catalog::channel(c);
                let data = json!({"channel": name, "locations": self.catalog.channel_locations(c)});
                self.event(TopicKind::Stock, name, "inventory.channel.configured", data, 0, false)
            }
            None => {
                let sku = Catalog::sku(s);
                let on_hand: i64 = self.rng.random_range(20..=200);
                let data = json!({"sku": sku, "location": Catalog::location(l), "on_hand": on_hand});
                self.event(TopicKind::Stock, sku, "inventory.level.set", data, 1, false)
            }
        })
    }

    /// Tells the workload an order was confirmed, so it can later be
    /// shipped, canceled or refunded.
    pub fn confirmed(&mut self, o: ConfirmedOrder) {
        if self.confirmed.len() >= MAX_ORDERS {
            self.confirmed.pop_front();
        }
        self.confirmed.push_back(o);
    }

    /// Tells the workload an order's shipments took effect, so it may be
    /// refunded. The benchmark refunds as soon as it ships; a settling
    /// workload waits for this, so a refund always finds its units shipped.
    pub fn shipped(&mut self, o: ConfirmedOrder) {
        // Settling, an order is refunded soon after it shipped or not at
        // all: a refund long after would outlive its settled order's
        // retention in the store, and wait for a placement forever.
        let keep = if self.settle { SETTLED_REFUNDABLE } else { MAX_ORDERS };
        if self.shipped.len() >= keep {
            self.shipped.pop_front();
        }
        self.shipped.push_back(o);
    }

    /// Settling: orders whose shipments have all been sent since the last call.
    pub fn take_shipping(&mut self) -> Vec<ConfirmedOrder> {
        std::mem::take(&mut self.shipping)
    }

    /// Some confirmed order not yet shipped or canceled, if any (its record
    /// in the store is alive: settled orders are forgotten after their
    /// retention).
    pub fn any_open_order(&mut self) -> Option<ConfirmedOrder> {
        let i = self.rng.random_range(0..self.confirmed.len().max(1));
        self.confirmed.get(i).cloned()
    }

    fn zipf_sku(&mut self) -> String {
        let r = self.zipf.sample(&mut self.rng) as u64;
        Catalog::sku(r.saturating_sub(1).min(self.catalog.skus - 1))
    }

    fn skus(&mut self, n: usize) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(n);
        if self.rng.random_bool(self.hot) {
            out.push(Catalog::sku(0));
        }
        // Zipf repeats the head often; a few tries keep skus distinct.
        for _ in 0..n * 4 {
            if out.len() >= n {
                break;
            }
            let s = self.zipf_sku();
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }

    fn pick(&mut self) -> Kind {
        let total: u32 = MIX.iter().map(|(_, w)| w).sum();
        let mut x = self.rng.random_range(0..total);
        for (k, w) in MIX {
            if x < w {
                return k;
            }
            x -= w;
        }
        unreachable!("weights cover the range")
    }

    /// The next event of the mix.
    pub fn next_event(&mut self) -> GenEvent {
        if let Some(e) = self.queued.pop_front() {
            return e;
        }
        if self.settle && self.confirmed.len() > 100 {
            let e = if self.rng.random_bool(0.25) { self.cancel() } else { self.ship() };
            if let Some(e) = e {
                return e;
            }
        }
        loop {
            if let Some(e) = match self.pick() {
                Kind::Hold => Some(self.hold()),
                Kind::Release => self.release(),
                Kind::Order => Some(self.order()),
                Kind::Cancel => self.cancel(),
                Kind::Ship => self.ship(),
                Kind::Credit => self.credit(),
                Kind::Restock => Some(self.restock()),
            } {
                return e;
            }
        }
    }

    fn hold(&mut self) -> GenEvent {
        // Add to a recent cart half of the time, else open a new one.
        let reuse = !self.carts.is_empty() && self.rng.random_bool(0.5);
        let sku = self.skus(1).remove(0);
        let (cart_id, channel) = if reuse {
            let i = self.rng.random_range(0..self.carts.len());
            let c = &mut self.carts[i];
            if !c.2.contains(&sku) {
                c.2.push(sku.clone());
            }
            (c.0.clone(), c.1)
        } else {
            self.next_cart += 1;
            let id = format!("{}-c{}", self.prefix, self.next_cart);
            let ch = self.rng.random_range(0..self.catalog.channels);
            if self.carts.len() >= MAX_CARTS {
                self.carts.pop_front();
            }
            self.carts.push_back((id.clone(), ch, vec![sku.clone()]));
            (id, ch)
        };
        let q: i64 = self.rng.random_range(1..=2);
        let data = json!({"cart_id": cart_id, "channel": Catalog::channel(channel), "sku": sku, "quantity": q});
        self.event(TopicKind::Carts, cart_id, "cart.line.held", data, 1, true)
    }

    fn release(&mut self) -> Option<GenEvent> {
        let i = self.rng.random_range(0..self.carts.len().max(1));
        let (cart_id, _, skus) = self.carts.remove(i)?;
        let data = json!({"cart_id": cart_id});
        Some(self.event(TopicKind::Carts, cart_id, "cart.released", data, skus.len() as u32, false))
    }

    fn order(&mut self) -> GenEvent {
        self.next_order += 1;
        let order_id = format!("{}-o{}", self.prefix, self.next_order);
        // 1 to 5 lines, mostly short orders.
        let n = [1, 1, 1, 2, 2, 3, 4, 5][self.rng.random_range(0..8)];
        // A third of orders check out a cart: its holds become the reservation.
        let cart = if !self.carts.is_empty() && self.rng.random_bool(0.33) {
            let i = self.rng.random_range(0..self.carts.len());
            self.carts.remove(i)
        } else {
            None
        };
        let (channel, mut skus) = match &cart {
            Some((_, ch, s)) => (*ch, s.iter().take(5).cloned().collect::<Vec<_>>()),
            None => (self.rng.random_range(0..self.catalog.channels), Vec::new()),
        };
        if skus.is_empty() {
            skus = self.skus(n);
        }
        let lines: Vec<Value> = skus
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"line_id": (i + 1).to_string(), "sku": s, "quantity": self.rng.random_range(1..=2)}))
            .collect();
        let mut data = json!({"order_id": order_id, "channel": Catalog::channel(channel), "lines": lines});
        if let Some((c, _, _)) = cart {
            data["cart_id"] = json!(c);
        }
        self.event(TopicKind::Orders, order_id, "order.placed", data, skus.len() as u32, true)
    }

    fn take_confirmed(&mut self) -> Option<ConfirmedOrder> {
        let i = self.rng.random_range(0..self.confirmed.len().max(1));
        self.confirmed.remove(i)
    }

    fn cancel(&mut self) -> Option<GenEvent> {
        let o = self.take_confirmed()?;
        let data = json!({"order_id": o.order_id});
        Some(self.event(TopicKind::Orders, o.order_id.clone(), "order.canceled", data, o.lines.len() as u32, false))
    }

    /// Ships an order from where it was allocated, one shipment per
    /// location: the benchmark sends the first only (the order's other
    /// locations stay reserved), a settling workload all of them.
    fn ship(&mut self) -> Option<GenEvent> {
        let o = self.take_confirmed()?;
        let mut locs: Vec<String> = o.locations().into_iter().map(str::to_string).collect();
        if !self.settle {
            locs.truncate(1);
        }
        let mut events = Vec::new();
        for loc in &locs {
            let lines: Vec<Value> = o
                .lines
                .iter()
                .filter_map(|(line_id, sku, allocs)| {
                    let q: i64 = allocs.iter().filter(|a| a.0 == *loc).map(|a| a.1).sum();
                    (q > 0).then(|| json!({"line_id": line_id, "sku": sku, "quantity": q}))
                })
                .collect();
            let n = lines.len() as u32;
            let id = if self.settle { format!("{}-s-{loc}", o.order_id) } else { format!("{}-s", o.order_id) };
            let data = json!({"shipment_id": id, "order_id": o.order_id, "location": loc, "lines": lines});
            events.push(self.event(TopicKind::Shipments, o.order_id.clone(), "shipment.created", data, n, false));
        }
        if self.settle {
            self.shipping.push(o);
        } else {
            self.shipped(o);
        }
        let mut events = events.into_iter();
        let first = events.next();
        self.queued.extend(events);
        first
    }

    fn credit(&mut self) -> Option<GenEvent> {
        let i = self.rng.random_range(0..self.shipped.len().max(1));
        let o = self.shipped.remove(i)?;
        let (line_id, sku, allocs) = o.lines.first()?.clone();
        // Named, so the units' way back to stock does not depend on which location shipped first.
        let location = allocs.first().map(|a| a.0.clone())?;
        let lines = json!([{"line_id": line_id, "sku": sku, "quantity": 1, "back_to_stock": true, "location": location}]);
        let data = json!({"credit_memo_id": format!("{}-m", o.order_id), "order_id": o.order_id, "lines": lines});
        Some(self.event(TopicKind::CreditMemos, o.order_id.clone(), "credit_memo.created", data, 1, false))
    }

    fn restock(&mut self) -> GenEvent {
        let sku = self.skus(1).remove(0);
        let loc = Catalog::location(self.rng.random_range(0..self.catalog.locations));
        let delta: i64 = self.rng.random_range(10..=50);
        let data = json!({"sku": sku, "location": loc, "delta": delta, "reason": "restock"});
        self.event(TopicKind::Stock, sku, "inventory.level.adjusted", data, 1, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode, Body};

    fn catalog() -> Catalog {
        Catalog { skus: 1000, locations: 3, channels: 2 }
    }

    #[test]
    fn catalog_events_decode_and_cover_every_sku_location() {
        let mut w = Workload::new(catalog(), "t", 1, 0.0);
        let evs: Vec<GenEvent> = w.catalog_events().collect();
        assert_eq!(evs.len(), 2 + 3000);
        for e in &evs {
            decode(e.topic, &e.payload, 1 << 20).expect("catalog events are valid");
        }
        assert_eq!(w.produced(), 3002);
    }

    #[test]
    fn the_mix_decodes_and_follows_confirmed_orders() {
        let mut w = Workload::new(catalog(), "t", 7, 0.0);
        let mut kinds = std::collections::BTreeMap::new();
        for _ in 0..20_000 {
            let e = w.next_event();
            let ev = decode(e.topic, &e.payload, 1 << 20).unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&e.payload)));
            *kinds.entry(ev.kind).or_insert(0) += 1;
            assert_eq!(Workload::seq_of("t", &ev.id), Some(e.seq));
            if let Body::OrderPlaced(o) = &ev.body {
                assert!((1..=5).contains(&o.lines.len()));
                // Confirm every order at its channel's first location.
                let lines = o.lines.iter().map(|l| (l.line_id.clone(), l.sku.clone(), vec![("L1".to_string(), 1)])).collect();
                w.confirmed(ConfirmedOrder { order_id: o.order_id.clone(), lines });
            }
        }
        for k in ["cart.line.held", "cart.released", "order.placed", "order.canceled", "shipment.created", "credit_memo.created", "inventory.level.adjusted"] {
            assert!(kinds.get(k).copied().unwrap_or(0) > 100, "{k} is in the mix: {kinds:?}");
        }
    }

    #[test]
    fn seeded_and_skewed() {
        let a: Vec<Vec<u8>> = {
            let mut w = Workload::new(catalog(), "t", 3, 0.0);
            (0..100).map(|_| w.next_event().payload).collect()
        };
        let mut w = Workload::new(catalog(), "t", 3, 0.0);
        assert!(a.iter().all(|p| *p == w.next_event().payload), "same seed, same events");
        // Zipf: the first sku is far more popular than the median one.
        let mut w = Workload::new(catalog(), "t", 3, 0.0);
        let picks: Vec<String> = (0..10_000).map(|_| w.zipf_sku()).collect();
        let top = picks.iter().filter(|s| *s == &Catalog::sku(0)).count();
        let mid = picks.iter().filter(|s| *s == &Catalog::sku(500)).count();
        assert!(top > 50 * mid.max(1), "top {top}, median {mid}");
    }

    #[test]
    fn hot_puts_orders_on_one_sku() {
        let mut w = Workload::new(catalog(), "t", 5, 0.8);
        let hot = (0..2000)
            .map(|_| w.order())
            .filter(|e| String::from_utf8_lossy(&e.payload).contains(&format!("\"{}\"", Catalog::sku(0))))
            .count();
        assert!(hot > 1500, "{hot} of 2000 orders hit the hot sku");
    }

    #[test]
    fn reads_confirmed_results() {
        let data = json!({"order_id": "o", "channel": "ch1", "lines": [
            {"line_id": "1", "sku": "S", "quantity": 3, "allocations": [{"location": "L1", "quantity": 2}, {"location": "L2", "quantity": 1}], "backordered": 0, "preordered": 0}
        ]});
        let o = ConfirmedOrder::from_data(&data).unwrap();
        assert_eq!(o.lines[0].2, vec![("L1".into(), 2), ("L2".into(), 1)]);
    }
}
