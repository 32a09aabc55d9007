//! A pure in-memory model of the wire contract (`../shared/CONTRACT.md`) and
//! of the semantics `docs/ENGINE.md` pins down where the contract is silent.
//!
//! It is the oracle of `tests/proptest_engine.rs`: written from those two
//! documents, not from the Lua scripts, it exposes one method per engine
//! operation returning the same outcome types, and the `SkuState` of any sku
//! (without `version`, which the engine owns).
//!
//! Besides the contract's state (levels, counters, holds, orders) it keeps
//! the little bookkeeping the documents make observable:
//! - expired holds are released lazily, "first on every call touching the
//!   sku, and by the sweep" (ENGINE.md, Holds), so until a call touches a sku
//!   its raw `reserved` still includes holds past their expiry. Each method
//!   touches exactly the skus its operation reads or writes;
//! - a channel change touches every sku stocked at an old or new location
//!   ("availability of every sku stocked there is recomputed"); a sku counts
//!   as stocked at a location once a level call named it there or a row was
//!   created there (`loc_index`);
//! - `cart.released` without skus releases "every sku it held": the skus the
//!   cart sent holds for and that it has not released since (`cart_skus`).
//!
//! Readings adopted where the documents are silent or ambiguous:
//! - a whole-order cancel before the placement decides the order (it will be
//!   rejected): shipments and credit memos arriving after it, still before
//!   the placement, are applied at once (against no reserved line) rather
//!   than kept as pending, and later cancels answer `CanceledFirst`;
//! - a repeated cancel, shipment or credit memo answers what the first
//!   delivery did when it was applied (not `Pending` if it was queued
//!   then); a repeated whole cancel-first after the placement answers
//!   `Released(0)`;
//! - idempotency of shipment/credit-memo lines is per (id, line_id) on the
//!   line's sku; a cancel naming a line twice releases twice;
//! - a line reserved while the sku was quantity-tracked keeps counting in
//!   `reserved` after the tracking changes: shipments, cancels and credit
//!   memos release it, while on_hand moves only under quantity tracking at
//!   the time of the shipment or restock;
//! - a hold of quantity 0 answers `available` (quantity tracking) as a
//!   quantity hold would; an `in_stock` hold that is refused answers the
//!   cart's current hold and no `available`;
//! - a `cart.released` naming a sku twice releases it once; repeating a
//!   whole-cart release answers the first total and changes nothing.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use reservoir::domain::{
    Allocation, ConfirmedLine, HoldOutcome, ItemConfig, Level, LineOutcome, OrderOutcome, RejectReason, RejectedLine, SkuState,
    Tracking,
};
use reservoir::qty::Qty;
use reservoir::store::{CancelOutcome, CreditMemo, PlaceOrder, Shipment};

thread_local! {
    static HITS: std::cell::RefCell<BTreeMap<&'static str, usize>> = const { std::cell::RefCell::new(BTreeMap::new()) };
}

/// Counts a path of the model taken (coverage of the property test).
fn hit(what: &'static str) {
    HITS.with(|h| *h.borrow_mut().entry(what).or_default() += 1);
}

/// How often each counted path was taken on this thread.
pub fn coverage() -> BTreeMap<&'static str, usize> {
    HITS.with(|h| h.borrow().clone())
}

/// Hold time of a `cart.line.held` without `expires_at` (the default).
pub const HOLD_TIME_MS: i64 = 15 * 60 * 1000;

/// The dead-letter codes the model can refuse with.
pub const NEGATIVE_ON_HAND: &str = "negative_on_hand";
pub const INSUFFICIENT_ON_HAND: &str = "insufficient_on_hand";
pub const OVER_REFUND: &str = "over_refund";

/// (location, quantity) entries in order of first use, each location once.
type Alloc = Vec<(String, Qty)>;

fn alloc_add(a: &mut Alloc, loc: &str, q: Qty) {
    match a.iter_mut().find(|(l, _)| l == loc) {
        Some(e) => e.1 += q,
        None => a.push((loc.to_string(), q)),
    }
}

fn alloc_sum(a: &Alloc) -> Qty {
    a.iter().map(|(_, q)| *q).sum()
}

fn alloc_at(a: &Alloc, loc: &str) -> Qty {
    a.iter().filter(|(l, _)| l == loc).map(|(_, q)| *q).sum()
}

fn allocations(a: &Alloc) -> Vec<Allocation> {
    a.iter().filter(|(_, q)| !q.is_zero()).map(|(l, q)| Allocation { location: l.clone(), quantity: *q }).collect()
}

fn refused(code: &'static str) -> LineOutcome {
    LineOutcome::Refused { code, message: String::new() }
}

#[derive(Clone, Debug)]
struct Hold {
    qty: Qty,
    expires_ms: i64,
    alloc: Alloc,
}

/// What a sku remembers of an event id (per sku, ENGINE.md Idempotency).
#[derive(Clone, Debug)]
enum Remembered {
    Done,
    Adjust(Result<(), &'static str>),
    Hold(HoldOutcome),
    Released(Qty),
}

#[derive(Clone, Debug, Default)]
struct Sku {
    exists: bool,
    config: ItemConfig,
    /// Rows: a location has one once a level is set/adjusted there, a
    /// restock lands there or a backorder/preorder is allocated there.
    levels: BTreeMap<String, Level>,
    backordered: Qty,
    preordered: Qty,
    /// cart -> hold; may include holds past their expiry not yet released.
    holds: BTreeMap<String, Hold>,
    events: BTreeMap<String, Remembered>,
}

impl Sku {
    fn add_reserved(&mut self, a: &Alloc, sign: i64) {
        for (loc, q) in a {
            if q.is_zero() {
                continue;
            }
            let lv = self.levels.get_mut(loc).unwrap_or_else(|| panic!("model: units reserved at {loc:?} where the sku has no row"));
            lv.reserved = Qty(lv.reserved.0 + sign * q.0);
        }
    }

    /// Releases every hold with expiry <= now; returns how many.
    fn expire(&mut self, now: i64) -> usize {
        let due: Vec<String> = self.holds.iter().filter(|(_, h)| h.expires_ms <= now).map(|(c, _)| c.clone()).collect();
        for c in &due {
            let h = self.holds.remove(c).expect("due hold");
            self.add_reserved(&h.alloc, -1);
        }
        due.len()
    }

    fn drop_hold(&mut self, cart: &str) -> Option<Hold> {
        let h = self.holds.remove(cart)?;
        self.add_reserved(&h.alloc, -1);
        Some(h)
    }

    fn in_stock_at(&self, loc: &str) -> bool {
        self.levels.get(loc).is_some_and(|l| l.in_stock)
    }

    /// Free units per selling location of the channel (rows in stock, in
    /// priority order), counting `own` as free, and the channel's available
    /// quantity: max(0, sum of free - out_of_stock_threshold).
    fn channel_free(&self, locs: &[String], own: Option<&Alloc>) -> (Vec<(String, Qty)>, Qty) {
        let mut frees = Vec::new();
        let mut total = Qty::ZERO;
        for loc in locs {
            if let Some(lv) = self.levels.get(loc).filter(|l| l.in_stock) {
                let f = lv.on_hand - lv.reserved + own.map_or(Qty::ZERO, |a| alloc_at(a, loc));
                frees.push((loc.clone(), f));
                total += f;
            }
        }
        (frees, (total - self.config.out_of_stock_threshold).max(Qty::ZERO))
    }

    fn counter(&mut self, kind: Beyond) -> &mut Qty {
        match kind {
            Beyond::Backorder => &mut self.backordered,
            Beyond::Preorder => &mut self.preordered,
        }
    }

    /// Creates an empty row (on_hand 0, in stock) if there is none.
    fn ensure_row(&mut self, loc: &str) -> bool {
        if self.levels.contains_key(loc) {
            return false;
        }
        self.levels.insert(loc.to_string(), Level { on_hand: Qty::ZERO, reserved: Qty::ZERO, in_stock: true });
        true
    }

    fn state(&self) -> SkuState {
        SkuState {
            exists: self.exists,
            config: self.config,
            levels: self.levels.clone(),
            backordered: self.backordered,
            preordered: self.preordered,
            version: 0,
        }
    }
}

/// Takes up to `want` units from the free list in priority order (at most
/// max(0, free) per location), appending to `alloc`; returns what it took.
fn take(frees: &mut [(String, Qty)], want: Qty, alloc: &mut Alloc) -> Qty {
    let mut got = Qty::ZERO;
    for (loc, free) in frees.iter_mut() {
        if got >= want {
            break;
        }
        if free.is_positive() {
            let n = (*free).min(want - got);
            *free -= n;
            got += n;
            alloc_add(alloc, loc, n);
        }
    }
    got
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Beyond {
    Backorder,
    Preorder,
}

/// One order line on one sku.
#[derive(Clone, Debug)]
struct Line {
    qty: Qty,
    /// Allocation at confirmation.
    confirmed: Alloc,
    /// Allocation still reserved.
    alloc: Alloc,
    beyond: Option<Beyond>,
    /// Units beyond stock at confirmation, and of those still outstanding.
    beyond_qty: Qty,
    beyond_left: Qty,
    shipped: Alloc,
    /// Restocked, keyed by the shipped-from location.
    restocked: Alloc,
    refunded: Qty,
}

#[derive(Clone, Debug)]
enum Placement {
    /// No placement on this sku (yet).
    None,
    Reserved {
        /// Quantity-tracked at placement: allocations count in `reserved`.
        counted: bool,
        order: Vec<String>,
        lines: BTreeMap<String, Line>,
        /// The cart's hold the placement turned into the reservation.
        hold: Option<(String, Hold)>,
    },
    Rejected,
    Aborted,
}

/// An order's record on one sku.
#[derive(Clone, Debug)]
struct Rec {
    placement: Placement,
    /// Results of cancels (by event id), shipment and credit-memo lines (by
    /// id and line_id) applied on this sku.
    ops: BTreeMap<String, OpResult>,
}

impl Default for Rec {
    fn default() -> Rec {
        Rec { placement: Placement::None, ops: BTreeMap::new() }
    }
}

impl Rec {
    fn line_mut(&mut self, line: &str) -> Option<&mut Line> {
        match &mut self.placement {
            Placement::Reserved { lines, .. } => lines.get_mut(line),
            _ => None,
        }
    }
    fn counted(&self) -> bool {
        matches!(self.placement, Placement::Reserved { counted: true, .. })
    }
}

#[derive(Clone, Debug)]
enum OpResult {
    Released(Qty),
    Line(LineOutcome),
}

#[derive(Clone, Debug)]
enum PendingOp {
    Cancel { event_id: String, lines: Vec<(String, Qty)> },
    Ship(Shipment),
    Credit(CreditMemo),
}

#[derive(Clone, Debug, Default)]
enum OrderState {
    #[default]
    Open,
    /// A whole-order cancel arrived before the placement.
    CanceledFirst,
    Decided {
        confirmed: bool,
        outcome: OrderOutcome,
        /// line_id -> sku of the deciding placement.
        lines: BTreeMap<String, String>,
    },
}

#[derive(Clone, Debug, Default)]
struct Order {
    state: OrderState,
    /// Ops that arrived before the decision, in arrival order, once per op id.
    pending: Vec<PendingOp>,
    pending_ids: BTreeSet<String>,
}

/// The model: the contract's state plus a manual clock.
#[derive(Clone, Debug)]
pub struct Model {
    pub now_ms: i64,
    pub hold_time_ms: i64,
    channels: BTreeMap<String, Vec<String>>,
    /// Channel events applied, each with the locations it replaced.
    channel_events: BTreeMap<String, Vec<String>>,
    skus: BTreeMap<String, Sku>,
    /// location -> skus stocked (named by a level call, or a row) there.
    loc_index: BTreeMap<String, BTreeSet<String>>,
    /// cart -> skus it sent holds for and has not released since.
    cart_skus: BTreeMap<String, BTreeSet<String>>,
    /// First outcome and sku list of each whole-cart release, by event id.
    cart_releases: BTreeMap<String, (Qty, Vec<String>)>,
    orders: BTreeMap<String, Order>,
    /// (order_id, sku) -> the order's record on the sku.
    recs: BTreeMap<(String, String), Rec>,
}

/// An order's lines grouped by sku, in order of first appearance.
fn by_sku(o: &PlaceOrder) -> Vec<(String, Vec<(String, Qty)>)> {
    let mut out: Vec<(String, Vec<(String, Qty)>)> = Vec::new();
    for l in &o.lines {
        match out.iter_mut().find(|(s, _)| *s == l.sku) {
            Some((_, v)) => v.push((l.line_id.clone(), l.quantity)),
            None => out.push((l.sku.clone(), vec![(l.line_id.clone(), l.quantity)])),
        }
    }
    out
}

fn all_lines(o: &PlaceOrder, reason: RejectReason) -> Vec<RejectedLine> {
    o.lines
        .iter()
        .map(|l| RejectedLine { line_id: l.line_id.clone(), sku: l.sku.clone(), requested: l.quantity, available: Qty::ZERO, reason })
        .collect()
}

impl Model {
    pub fn new(now_ms: i64) -> Model {
        Model {
            now_ms,
            hold_time_ms: HOLD_TIME_MS,
            channels: BTreeMap::new(),
            channel_events: BTreeMap::new(),
            skus: BTreeMap::new(),
            loc_index: BTreeMap::new(),
            cart_skus: BTreeMap::new(),
            cart_releases: BTreeMap::new(),
            orders: BTreeMap::new(),
            recs: BTreeMap::new(),
        }
    }

    // ----- observation -------------------------------------------------

    /// For a confirmed order: whether it is settled, i.e. none of its skus
    /// has anything left reserved for it (ENGINE.md, retention: its records
    /// expire then, and not before). Lines of other skus never count. None
    /// for an order that is not confirmed.
    pub fn order_settled(&self, order_id: &str) -> Option<bool> {
        let OrderState::Decided { confirmed: true, lines, .. } = &self.orders.get(order_id)?.state else { return None };
        let skus: BTreeSet<&String> = lines.values().collect();
        Some(skus.into_iter().all(|sku| match self.recs.get(&(order_id.to_string(), sku.clone())).map(|r| &r.placement) {
            Some(Placement::Reserved { lines, .. }) => lines.values().all(|l| alloc_sum(&l.alloc) == Qty::ZERO),
            _ => true,
        }))
    }

    /// The sku's state as `Engine::sku_state` returns it, version 0.
    pub fn sku_state(&self, sku: &str) -> SkuState {
        self.skus.get(sku).map(Sku::state).unwrap_or_default()
    }

    pub fn channel(&self, name: &str) -> Option<&Vec<String>> {
        self.channels.get(name)
    }

    /// The cart's live hold on the sku (quantity), if any (ignoring expiry).
    pub fn hold_of(&self, sku: &str, cart: &str) -> Option<(Qty, i64)> {
        self.skus.get(sku)?.holds.get(cart).map(|h| (h.qty, h.expires_ms))
    }

    pub fn advance(&mut self, ms: i64) {
        self.now_ms += ms;
    }

    // ----- helpers -----------------------------------------------------

    /// A call touching the sku: expired holds are released first.
    fn touch(&mut self, sku: &str) -> usize {
        let now = self.now_ms;
        let n = self.skus.get_mut(sku).map_or(0, |s| s.expire(now));
        if n > 0 {
            hit("expired hold released by a call touching the sku");
        }
        n
    }

    fn index(&mut self, sku: &str, loc: &str) {
        self.loc_index.entry(loc.to_string()).or_default().insert(sku.to_string());
    }

    fn sku_mut(&mut self, sku: &str) -> &mut Sku {
        self.skus.entry(sku.to_string()).or_default()
    }

    // ----- inventory.stock ---------------------------------------------

    /// `inventory.channel.configured`. A repeated event id changes nothing.
    pub fn configure_channel(&mut self, event_id: &str, channel: &str, locations: &[String]) {
        let current = self.channels.get(channel).cloned().unwrap_or_default();
        // A repeat recomputes the skus of the locations its first delivery
        // replaced (ENGINE.md, Channels), and changes nothing else.
        let (old, new) = match self.channel_events.get(event_id) {
            Some(replaced) => (replaced.clone(), current),
            None => {
                self.channel_events.insert(event_id.to_string(), current.clone());
                self.channels.insert(channel.to_string(), locations.to_vec());
                (current, locations.to_vec())
            }
        };
        let skus: BTreeSet<String> =
            old.iter().chain(new.iter()).flat_map(|l| self.loc_index.get(l).cloned().unwrap_or_default()).collect();
        for s in skus {
            if self.touch(&s) > 0 {
                hit("expired hold released by a channel change");
            }
        }
    }

    /// `inventory.item.configured`: replaces all settings; counters stay.
    pub fn configure_item(&mut self, event_id: &str, sku: &str, cfg: &ItemConfig) {
        self.touch(sku);
        let s = self.sku_mut(sku);
        if s.events.contains_key(event_id) {
            return;
        }
        s.config = *cfg;
        s.exists = true;
        s.events.insert(event_id.to_string(), Remembered::Done);
    }

    /// `inventory.level.set`: on_hand and in_stock of the row.
    pub fn set_level(&mut self, event_id: &str, sku: &str, location: &str, on_hand: Qty, in_stock: bool) {
        self.index(sku, location);
        self.touch(sku);
        let s = self.sku_mut(sku);
        if s.events.contains_key(event_id) {
            return;
        }
        let lv = s.levels.entry(location.to_string()).or_default();
        lv.on_hand = on_hand;
        lv.in_stock = in_stock;
        s.exists = true;
        s.events.insert(event_id.to_string(), Remembered::Done);
    }

    /// `inventory.level.adjusted`: on_hand + delta, refused below zero.
    pub fn adjust_level(&mut self, event_id: &str, sku: &str, location: &str, delta: Qty) -> Result<(), &'static str> {
        self.index(sku, location);
        self.touch(sku);
        let s = self.sku_mut(sku);
        if let Some(Remembered::Adjust(r)) = s.events.get(event_id) {
            return *r;
        }
        let h = s.levels.get(location).map_or(Qty::ZERO, |l| l.on_hand);
        let r = if (h + delta).is_negative() {
            Err(NEGATIVE_ON_HAND)
        } else {
            s.levels.entry(location.to_string()).or_default().on_hand = h + delta;
            s.exists = true;
            Ok(())
        };
        s.events.insert(event_id.to_string(), Remembered::Adjust(r));
        r
    }

    // ----- shop.carts ----------------------------------------------------

    /// `cart.line.held`. `expires_at_ms` None = now + hold time.
    pub fn hold(
        &mut self,
        event_id: &str,
        cart: &str,
        channel: &str,
        sku: &str,
        quantity: Qty,
        expires_at_ms: Option<i64>,
    ) -> HoldOutcome {
        let now = self.now_ms;
        let exp = expires_at_ms.unwrap_or(now + self.hold_time_ms);
        self.cart_skus.entry(cart.to_string()).or_default().insert(sku.to_string());
        self.touch(sku);
        let locs = self.channels.get(channel).cloned();
        let s = self.sku_mut(sku);
        if let Some(Remembered::Hold(o)) = s.events.get(event_id) {
            return HoldOutcome { requested: quantity, ..o.clone() };
        }
        let cur_qty = s.holds.get(cart).map_or(Qty::ZERO, |h| h.qty);
        let out = |confirmed: bool, held: Qty, available: Option<Qty>| HoldOutcome {
            confirmed,
            requested: quantity,
            held,
            available,
            expires_at_ms: exp,
        };
        let outcome = 'decide: {
            let Some(locs) = locs.filter(|_| s.exists) else {
                break 'decide out(false, cur_qty, Some(Qty::ZERO));
            };
            if exp <= now {
                s.drop_hold(cart);
                break 'decide out(false, Qty::ZERO, Some(Qty::ZERO));
            }
            let tracking = s.config.tracking;
            if quantity.is_zero() {
                s.drop_hold(cart);
                let avail = (tracking == Tracking::Quantity).then(|| s.channel_free(&locs, None).1);
                break 'decide out(true, Qty::ZERO, avail);
            }
            match tracking {
                Tracking::None | Tracking::InStock => {
                    if tracking == Tracking::InStock && !locs.iter().any(|l| s.in_stock_at(l)) {
                        break 'decide out(false, cur_qty, None);
                    }
                    s.drop_hold(cart);
                    out(true, quantity, None)
                }
                Tracking::Quantity => {
                    let own = s.holds.get(cart).map(|h| h.alloc.clone());
                    let (mut frees, avail) = s.channel_free(&locs, own.as_ref());
                    if quantity > avail {
                        break 'decide out(false, cur_qty, Some(avail));
                    }
                    if s.drop_hold(cart).is_some() {
                        hit("hold replaced");
                    }
                    let mut alloc = Alloc::new();
                    let got = take(&mut frees, quantity, &mut alloc);
                    assert_eq!(got, quantity, "model: a hold within available must be fully allocated");
                    s.add_reserved(&alloc, 1);
                    s.holds.insert(cart.to_string(), Hold { qty: quantity, expires_ms: exp, alloc });
                    out(true, quantity, Some(avail))
                }
            }
        };
        s.events.insert(event_id.to_string(), Remembered::Hold(outcome.clone()));
        outcome
    }

    /// `cart.released`: releases the cart's holds on the skus (or every sku
    /// it held); the outcome is the total quantity released.
    pub fn release_cart(&mut self, event_id: &str, cart: &str, skus: Option<&[String]>) -> Qty {
        // A repeated whole-cart release covers the skus of its first delivery.
        let first = if skus.is_none() { self.cart_releases.get(event_id).cloned() } else { None };
        let mut list: Vec<String> = match (skus, &first) {
            (Some(s), _) => s.to_vec(),
            (None, Some((_, recorded))) => recorded.clone(),
            (None, None) => self.cart_skus.get(cart).map(|s| s.iter().cloned().collect()).unwrap_or_default(),
        };
        // A sku named twice is released once.
        let mut seen = BTreeSet::new();
        list.retain(|s| seen.insert(s.clone()));
        if first.is_some() {
            hit("whole-cart release repeated");
        }
        let mut total = Qty::ZERO;
        for sku in &list {
            self.touch(sku);
            if first.is_some() {
                // A repeated whole-cart release changes nothing (contract,
                // Guarantees 2), also on skus held since the first delivery.
                continue;
            }
            let s = self.sku_mut(sku);
            if let Some(Remembered::Released(q)) = s.events.get(event_id) {
                total += *q;
                continue;
            }
            let released = s.drop_hold(cart).map_or(Qty::ZERO, |h| h.qty);
            s.events.insert(event_id.to_string(), Remembered::Released(released));
            total += released;
        }
        // A repeat changes nothing, also not the cart's list of skus.
        if let (None, Some(set)) = (&first, self.cart_skus.get_mut(cart)) {
            for s in &list {
                set.remove(s);
            }
        }
        match first {
            Some((q, _)) => q,
            None => {
                if skus.is_none() {
                    self.cart_releases.insert(event_id.to_string(), (total, list));
                }
                total
            }
        }
    }

    /// The hold sweep: releases every due hold; returns how many.
    pub fn sweep_holds(&mut self) -> usize {
        let now = self.now_ms;
        self.skus.values_mut().map(|s| s.expire(now)).sum()
    }

    // ----- shop.orders -----------------------------------------------------

    /// `order.placed`: all or nothing; a repeat returns the first outcome.
    /// Also returns the ops kept before it that it refused ("shp:"/"cm:" id,
    /// code), to be dead-lettered.
    pub fn place_order(&mut self, o: &PlaceOrder) -> (OrderOutcome, Vec<(String, &'static str)>) {
        let state = self.orders.entry(o.order_id.clone()).or_default().state.clone();
        let outcome = match state {
            OrderState::Decided { outcome, .. } => {
                hit("placement repeated");
                // Ops that were pending are idempotent: re-applying them
                // only touches their skus.
                let late = self.apply_pending(&o.order_id);
                return (outcome, late);
            }
            OrderState::CanceledFirst => {
                self.abort_all(o);
                OrderOutcome::Rejected { lines: all_lines(o, RejectReason::Canceled) }
            }
            OrderState::Open => self.try_place(o),
        };
        let order = self.orders.get_mut(&o.order_id).expect("order");
        order.state = OrderState::Decided {
            confirmed: matches!(outcome, OrderOutcome::Confirmed { .. }),
            outcome: outcome.clone(),
            lines: o.lines.iter().map(|l| (l.line_id.clone(), l.sku.clone())).collect(),
        };
        let late = self.apply_pending(&o.order_id);
        (outcome, late)
    }

    fn try_place(&mut self, o: &PlaceOrder) -> OrderOutcome {
        let Some(locs) = self.channels.get(&o.channel).cloned() else {
            self.abort_all(o);
            return OrderOutcome::Rejected { lines: all_lines(o, RejectReason::UnknownChannel) };
        };
        let mut confirmed: BTreeMap<String, ConfirmedLine> = BTreeMap::new();
        for (sku, lines) in by_sku(o) {
            match self.reserve_sku(&o.order_id, o.cart_id.as_deref(), &locs, &sku, &lines) {
                Ok(ls) => confirmed.extend(ls.into_iter().map(|l| (l.line_id.clone(), l))),
                Err((reason, available)) => {
                    self.abort_all(o);
                    return OrderOutcome::Rejected {
                        lines: lines
                            .iter()
                            .map(|(id, q)| RejectedLine { line_id: id.clone(), sku: sku.clone(), requested: *q, available, reason })
                            .collect(),
                    };
                }
            }
        }
        OrderOutcome::Confirmed { lines: o.lines.iter().filter_map(|l| confirmed.get(&l.line_id).cloned()).collect() }
    }

    /// Reserves all of the order's lines of one sku, or none.
    fn reserve_sku(
        &mut self,
        order_id: &str,
        cart: Option<&str>,
        locs: &[String],
        sku: &str,
        lines: &[(String, Qty)],
    ) -> Result<Vec<ConfirmedLine>, (RejectReason, Qty)> {
        self.touch(sku);
        let key = (order_id.to_string(), sku.to_string());
        assert!(
            matches!(self.recs.get(&key).map(|r| &r.placement), None | Some(Placement::None)),
            "model: a second placement on {key:?}"
        );
        let s = self.skus.entry(sku.to_string()).or_default();
        let rec = self.recs.entry(key).or_default();
        if !s.exists {
            rec.placement = Placement::Rejected;
            return Err((RejectReason::UnknownSku, Qty::ZERO));
        }
        let mut new_rows = Vec::new();
        let (counted, allocs, kind, beyonds, hold) = match s.config.tracking {
            Tracking::None => (false, vec![Alloc::new(); lines.len()], None, vec![Qty::ZERO; lines.len()], None),
            Tracking::InStock => {
                let Some(loc) = locs.iter().find(|l| s.in_stock_at(l)) else {
                    rec.placement = Placement::Rejected;
                    return Err((RejectReason::InsufficientStock, Qty::ZERO));
                };
                (false, lines.iter().map(|(_, q)| vec![(loc.clone(), *q)]).collect(), None, vec![Qty::ZERO; lines.len()], None)
            }
            Tracking::Quantity => {
                let total: Qty = lines.iter().map(|(_, q)| *q).sum();
                let own = cart.and_then(|c| s.holds.get(c)).map(|h| h.alloc.clone());
                let (mut frees, avail) = s.channel_free(locs, own.as_ref());
                let beyond = total - avail;
                let mut kind = None;
                if beyond.is_positive() {
                    let fits = |b: &reservoir::domain::BeyondStock, used: Qty| b.enabled && b.limit.is_none_or(|l| used + beyond <= l);
                    if fits(&s.config.preorder, s.preordered) {
                        kind = Some(Beyond::Preorder);
                    } else if fits(&s.config.backorders, s.backordered) {
                        kind = Some(Beyond::Backorder);
                    } else {
                        rec.placement = Placement::Rejected;
                        return Err((RejectReason::InsufficientStock, avail));
                    }
                }
                // The cart's own hold becomes part of the reservation.
                let consumed = cart.and_then(|c| s.drop_hold(c).map(|h| (c.to_string(), h)));
                if consumed.is_some() {
                    hit("cart hold turned into a reservation");
                }
                let mut stock_left = total.min(avail);
                let mut allocs = Vec::new();
                let mut beyonds = Vec::new();
                for (_, q) in lines {
                    let mut la = Alloc::new();
                    let got = take(&mut frees, (*q).min(stock_left), &mut la);
                    stock_left -= got;
                    let rest = *q - got;
                    if rest.is_positive() {
                        alloc_add(&mut la, &locs[0], rest);
                        if s.ensure_row(&locs[0]) {
                            hit("row created by a backorder/preorder");
                            new_rows.push(locs[0].clone());
                        }
                    }
                    s.add_reserved(&la, 1);
                    allocs.push(la);
                    beyonds.push(rest);
                }
                if let Some(k) = kind {
                    *s.counter(k) += beyond;
                }
                (true, allocs, kind, beyonds, consumed)
            }
        };
        let mut recorded = BTreeMap::new();
        let mut out = Vec::new();
        for (i, (id, q)) in lines.iter().enumerate() {
            let line = Line {
                qty: *q,
                confirmed: allocs[i].clone(),
                alloc: allocs[i].clone(),
                beyond: kind,
                beyond_qty: beyonds[i],
                beyond_left: if kind.is_some() { beyonds[i] } else { Qty::ZERO },
                shipped: Alloc::new(),
                restocked: Alloc::new(),
                refunded: Qty::ZERO,
            };
            out.push(ConfirmedLine {
                line_id: id.clone(),
                sku: sku.to_string(),
                quantity: *q,
                allocations: allocations(&allocs[i]),
                backordered: if kind == Some(Beyond::Backorder) { beyonds[i] } else { Qty::ZERO },
                preordered: if kind == Some(Beyond::Preorder) { beyonds[i] } else { Qty::ZERO },
            });
            recorded.insert(id.clone(), line);
        }
        rec.placement = Placement::Reserved { counted, order: lines.iter().map(|(id, _)| id.clone()).collect(), lines: recorded, hold };
        for loc in new_rows {
            self.index(sku, &loc);
        }
        Ok(out)
    }

    /// Compensation: nothing of the order stays reserved on any of its
    /// skus, and cart holds the placement consumed are given back.
    fn abort_all(&mut self, o: &PlaceOrder) {
        for (sku, _) in by_sku(o) {
            self.touch(&sku);
            let now = self.now_ms;
            let s = self.skus.entry(sku.clone()).or_default();
            let rec = self.recs.entry((o.order_id.clone(), sku.clone())).or_default();
            if let Placement::Reserved { order, hold, .. } = rec.placement.clone() {
                hit("reserved sku compensated");
                for l in &order {
                    let n = rec.line_mut(l).map_or(Qty::ZERO, |x| alloc_sum(&x.alloc));
                    release_line(s, rec, l, n);
                }
                if let Some((cart, h)) = hold {
                    // Given back only where it fits (ENGINE.md, Orders): at
                    // each of its locations, still in stock, on_hand -
                    // reserved covers it, and what stays free there beyond
                    // it is at least the out-of-stock threshold.
                    let free = |loc: &String| s.levels.get(loc).map_or(Qty::ZERO, |l| l.on_hand - l.reserved);
                    let spare = h.alloc.iter().fold(Qty::ZERO, |acc, (loc, q)| acc + free(loc) - *q);
                    let fits = h.alloc.iter().all(|(loc, q)| s.levels.get(loc).is_some_and(|l| l.in_stock && l.on_hand - l.reserved >= *q))
                        && spare >= s.config.out_of_stock_threshold;
                    if !fits {
                        hit("cart hold not given back: it no longer fits");
                    }
                    if h.expires_ms > now && fits && !s.holds.contains_key(&cart) {
                        hit("cart hold given back by compensation");
                        s.add_reserved(&h.alloc, 1);
                        s.holds.insert(cart, h);
                    }
                }
            }
            if !matches!(rec.placement, Placement::Rejected) {
                rec.placement = Placement::Aborted;
            }
        }
    }

    fn apply_pending(&mut self, order_id: &str) -> Vec<(String, &'static str)> {
        let mut late = Vec::new();
        let mut refusal = |id: String, lines: Vec<LineOutcome>| {
            if let Some(LineOutcome::Refused { code, .. }) = lines.into_iter().find(|l| matches!(l, LineOutcome::Refused { .. })) {
                hit("kept op refused at its placement");
                late.push((id, code));
            }
        };
        let order = self.orders.get(order_id).expect("order").clone();
        let OrderState::Decided { confirmed, lines, .. } = &order.state else { panic!("model: pending ops of an undecided order") };
        for op in &order.pending {
            match op {
                PendingOp::Cancel { event_id, lines: req } => {
                    hit("pending cancel after decision");
                    if *confirmed {
                        self.release_decided(event_id, order_id, lines, Some(req));
                    }
                }
                PendingOp::Ship(s) => {
                    hit(if *confirmed { "pending shipment after confirmation" } else { "pending shipment after rejection" });
                    refusal(format!("shp:{}", s.shipment_id), self.ship_decided(s));
                }
                PendingOp::Credit(c) => {
                    hit(if *confirmed { "pending credit memo after confirmation" } else { "pending credit memo after rejection" });
                    refusal(format!("cm:{}", c.credit_memo_id), self.credit_decided(c));
                }
            }
        }
        late
    }

    /// `order.canceled`: whole (lines None) or partial.
    pub fn cancel_order(&mut self, event_id: &str, order_id: &str, lines: Option<&[(String, Qty)]>) -> CancelOutcome {
        let order = self.orders.entry(order_id.to_string()).or_default();
        match &order.state {
            OrderState::Open => match lines {
                None => {
                    order.state = OrderState::CanceledFirst;
                    CancelOutcome::CanceledFirst
                }
                Some(ls) => {
                    if order.pending_ids.insert(event_id.to_string()) {
                        order.pending.push(PendingOp::Cancel { event_id: event_id.to_string(), lines: ls.to_vec() });
                    }
                    CancelOutcome::Pending
                }
            },
            OrderState::CanceledFirst => CancelOutcome::CanceledFirst,
            OrderState::Decided { confirmed: false, .. } => CancelOutcome::Released(Qty::ZERO),
            OrderState::Decided { confirmed: true, lines: line_skus, .. } => {
                let line_skus = line_skus.clone();
                CancelOutcome::Released(self.release_decided(event_id, order_id, &line_skus, lines))
            }
        }
    }

    /// Releases per line min(requested, still reserved), whole: everything.
    fn release_decided(
        &mut self,
        event_id: &str,
        order_id: &str,
        line_skus: &BTreeMap<String, String>,
        lines: Option<&[(String, Qty)]>,
    ) -> Qty {
        let mut per_sku: BTreeMap<String, Vec<(String, Qty)>> = BTreeMap::new();
        for sku in line_skus.values() {
            per_sku.entry(sku.clone()).or_default();
        }
        for (l, q) in lines.unwrap_or_default() {
            if let Some(sku) = line_skus.get(l) {
                per_sku.entry(sku.clone()).or_default().push((l.clone(), *q));
            }
        }
        let mut released = Qty::ZERO;
        for (sku, req) in per_sku {
            if lines.is_some() && req.is_empty() {
                continue;
            }
            self.touch(&sku);
            let s = self.skus.entry(sku.clone()).or_default();
            let rec = self.recs.entry((order_id.to_string(), sku.clone())).or_default();
            if let Some(OpResult::Released(q)) = rec.ops.get(event_id) {
                released += *q;
                continue;
            }
            let mut rel = Qty::ZERO;
            if let Placement::Reserved { order, .. } = rec.placement.clone() {
                if lines.is_none() {
                    for l in &order {
                        let n = rec.line_mut(l).map_or(Qty::ZERO, |x| alloc_sum(&x.alloc));
                        rel += release_line(s, rec, l, n);
                    }
                } else {
                    for (l, q) in &req {
                        if rec.line_mut(l).is_some() {
                            rel += release_line(s, rec, l, *q);
                        }
                    }
                }
            }
            rec.ops.insert(event_id.to_string(), OpResult::Released(rel));
            released += rel;
        }
        released
    }

    // ----- shop.shipments / shop.credit-memos ---------------------------

    /// `shipment.created`: per line, before the placement Pending.
    pub fn ship(&mut self, sh: &Shipment) -> Vec<LineOutcome> {
        let order = self.orders.entry(sh.order_id.clone()).or_default();
        if let OrderState::CanceledFirst = order.state {
            hit("shipment after a cancel, before the placement");
        }
        if let OrderState::Open = order.state {
            if order.pending_ids.insert(format!("shp:{}", sh.shipment_id)) {
                order.pending.push(PendingOp::Ship(sh.clone()));
            }
            return vec![LineOutcome::Pending; sh.lines.len()];
        }
        self.ship_decided(sh)
    }

    fn ship_decided(&mut self, sh: &Shipment) -> Vec<LineOutcome> {
        let mut out = Vec::new();
        for l in &sh.lines {
            let op = format!("shp:{}\u{1f}{}", sh.shipment_id, l.line_id);
            self.touch(&l.sku);
            let s = self.skus.entry(l.sku.clone()).or_default();
            let rec = self.recs.entry((sh.order_id.clone(), l.sku.clone())).or_default();
            if let Some(OpResult::Line(r)) = rec.ops.get(&op) {
                out.push(r.clone());
                continue;
            }
            let counts = s.config.tracking == Tracking::Quantity;
            let h = s.levels.get(&sh.location).map_or(Qty::ZERO, |lv| lv.on_hand);
            if counts && h < l.quantity {
                rec.ops.insert(op, OpResult::Line(refused(INSUFFICIENT_ON_HAND)));
                out.push(refused(INSUFFICIENT_ON_HAND));
                continue;
            }
            if counts {
                s.levels.get_mut(&sh.location).expect("row with on_hand > 0").on_hand = h - l.quantity;
            }
            let counted = rec.counted();
            if let Some(line) = rec.line_mut(&l.line_id) {
                // From the allocation at the shipping location first, then
                // the other entries in order.
                let mut idx: Vec<usize> = (0..line.alloc.len()).filter(|&i| line.alloc[i].0 == sh.location).collect();
                idx.extend((0..line.alloc.len()).filter(|&i| line.alloc[i].0 != sh.location));
                let mut left = l.quantity;
                let mut used = Alloc::new();
                for i in idx {
                    if !left.is_positive() {
                        break;
                    }
                    let n = line.alloc[i].1.min(left);
                    if n.is_positive() {
                        line.alloc[i].1 -= n;
                        left -= n;
                        alloc_add(&mut used, &line.alloc[i].0.clone(), n);
                    }
                }
                line.alloc.retain(|(_, q)| q.is_positive());
                if used.iter().any(|(l, _)| *l != sh.location) {
                    hit("shipment consumed allocation at another location");
                }
                if left.is_positive() {
                    hit("shipment beyond the line's reservation");
                }
                if counted && s.config.tracking != Tracking::Quantity {
                    hit("shipment of a counted line after tracking changed");
                }
                if counted {
                    s.add_reserved(&used, -1);
                    release_beyond(s, line, alloc_sum(&used));
                }
                alloc_add(&mut line.shipped, &sh.location, l.quantity);
            }
            rec.ops.insert(op, OpResult::Line(LineOutcome::Applied));
            out.push(LineOutcome::Applied);
        }
        out
    }

    /// `credit_memo.created`: per line, before the placement Pending.
    pub fn credit(&mut self, c: &CreditMemo) -> Vec<LineOutcome> {
        let order = self.orders.entry(c.order_id.clone()).or_default();
        if let OrderState::Open = order.state {
            if order.pending_ids.insert(format!("cm:{}", c.credit_memo_id)) {
                order.pending.push(PendingOp::Credit(c.clone()));
            }
            return vec![LineOutcome::Pending; c.lines.len()];
        }
        self.credit_decided(c)
    }

    fn credit_decided(&mut self, c: &CreditMemo) -> Vec<LineOutcome> {
        let mut out = Vec::new();
        for l in &c.lines {
            let op = format!("cm:{}\u{1f}{}", c.credit_memo_id, l.line_id);
            self.touch(&l.sku);
            let s = self.skus.entry(l.sku.clone()).or_default();
            let rec = self.recs.entry((c.order_id.clone(), l.sku.clone())).or_default();
            if let Some(OpResult::Line(r)) = rec.ops.get(&op) {
                out.push(r.clone());
                continue;
            }
            let (ordered, refunded) = rec.line_mut(&l.line_id).map_or((Qty::ZERO, Qty::ZERO), |x| (x.qty, x.refunded));
            if refunded + l.quantity > ordered {
                rec.ops.insert(op, OpResult::Line(refused(OVER_REFUND)));
                out.push(refused(OVER_REFUND));
                continue;
            }
            let released = release_line(s, rec, &l.line_id, l.quantity);
            if released.is_positive() {
                hit("credit memo released a reservation");
            }
            let mut rest = l.quantity - released;
            let mut new_rows = Vec::new();
            let line = rec.line_mut(&l.line_id).expect("known line");
            if l.back_to_stock && rest.is_positive() && s.config.tracking == Tracking::Quantity {
                for (from, shipped) in line.shipped.clone() {
                    if !rest.is_positive() {
                        break;
                    }
                    let n = rest.min(shipped - alloc_at(&line.restocked, &from));
                    if n.is_positive() {
                        let target = l.location.clone().unwrap_or_else(|| from.clone());
                        hit(if target == from { "restock where shipped from" } else { "restock at another location" });
                        if s.ensure_row(&target) {
                            hit("row created by a restock");
                            new_rows.push(target.clone());
                        }
                        s.levels.get_mut(&target).expect("row").on_hand += n;
                        alloc_add(&mut line.restocked, &from, n);
                        rest -= n;
                    }
                }
            }
            line.refunded += l.quantity;
            rec.ops.insert(op, OpResult::Line(LineOutcome::Applied));
            out.push(LineOutcome::Applied);
            for loc in new_rows {
                self.index(&l.sku, &loc);
            }
        }
        out
    }
}

/// Releases up to `n` units of a line's reservation, from its allocation
/// entries last first; released units reduce its outstanding
/// backordered/preordered units first. Returns the units released.
fn release_line(s: &mut Sku, rec: &mut Rec, line: &str, n: Qty) -> Qty {
    let counted = rec.counted();
    let Some(l) = rec.line_mut(line) else { return Qty::ZERO };
    let mut left = n;
    let mut rel = Alloc::new();
    for (loc, q) in l.alloc.iter_mut().rev() {
        if !left.is_positive() {
            break;
        }
        let m = (*q).min(left);
        *q -= m;
        left -= m;
        if m.is_positive() {
            alloc_add(&mut rel, loc, m);
        }
    }
    l.alloc.retain(|(_, q)| q.is_positive());
    let got = n - left;
    if counted {
        s.add_reserved(&rel, -1);
        release_beyond(s, l, got);
    }
    got
}

fn release_beyond(s: &mut Sku, l: &mut Line, got: Qty) {
    if let Some(kind) = l.beyond {
        let m = l.beyond_left.min(got);
        if m.is_positive() {
            hit(if kind == Beyond::Backorder { "backordered units released" } else { "preordered units released" });
            l.beyond_left -= m;
            *s.counter(kind) -= m;
        }
    }
}
