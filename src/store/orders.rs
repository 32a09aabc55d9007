//! Orders, cancels, shipments and credit memos.
//!
//! An order over several skus is a sequence of per-sku `reserve` calls (one
//! slot each), then one decision on the order key. Each per-sku record ends
//! in one final state (reserved, rejected, or aborted), written by whichever
//! attempt gets there first, so retries and concurrent duplicates follow the
//! same path:
//!
//! 1. `peek`: decided already? Return that outcome (nothing reserved again).
//! 2. `reserve` each sku in order of first appearance; stop at a rejection.
//! 3. All reserved: `decide(confirmed)`. Otherwise `abort` every sku (which
//!    also tombstones skus not reached yet), then `decide(rejected)`.
//! 4. A cancel that came first makes `decide` answer `canceled`: abort all,
//!    then record the rejection with reason `canceled`.
//! 5. Ops that arrived before the decision (cancels, shipments, credit memos)
//!    were queued on the order key atomically against `decide`; they are
//!    applied now, idempotently (each has an op id on every sku record); a
//!    shipment or credit memo refused then comes back as a late refusal,
//!    with the origin its caller gave, for the caller to dead-letter.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::keys::{self, SkuKeys};
use super::reply::{self, split, Reply};
use super::{check_id, qarg, Changes, Effect, Engine, LateRefusal, StoreError};
use crate::domain::{refusal, Allocation, ConfirmedLine, LineOutcome, OrderOutcome, RejectReason, RejectedLine};
use crate::qty::Qty;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub line_id: String,
    pub sku: String,
    pub quantity: Qty,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceOrder {
    pub order_id: String,
    pub channel: String,
    pub cart_id: Option<String>,
    pub lines: Vec<OrderLine>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentLine {
    pub line_id: String,
    pub sku: String,
    pub quantity: Qty,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    pub shipment_id: String,
    pub order_id: String,
    pub location: String,
    pub lines: Vec<ShipmentLine>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditLine {
    pub line_id: String,
    pub sku: String,
    pub quantity: Qty,
    pub back_to_stock: bool,
    pub location: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditMemo {
    pub credit_memo_id: String,
    pub order_id: String,
    pub lines: Vec<CreditLine>,
}

/// What a cancel did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Released this much of what the order had reserved.
    Released(Qty),
    /// Partial cancel before the placement: applied when it arrives.
    Pending,
    /// Whole cancel before the placement: the placement will be rejected.
    CanceledFirst,
}

/// An op queued on the order key until the placement is decided. A
/// shipment or credit memo keeps its caller's `origin`, to hand back if the
/// placement refuses it (ops queued before origins were kept have none).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum PendingOp {
    Cancel { event_id: String, lines: Vec<(String, Qty)> },
    Ship {
        #[serde(flatten)]
        shipment: Shipment,
        #[serde(default)]
        origin: String,
    },
    Credit {
        #[serde(flatten)]
        memo: CreditMemo,
        #[serde(default)]
        origin: String,
    },
}

/// Dead-letter code of a shipment or credit memo kept for an order that did
/// not arrive within the order retention.
pub const ORDER_NOT_PLACED: &str = "order_not_placed";

/// How long kept ops outlive their deadline, so that the sweep finds them
/// (a sweep that does not run for this long lets them expire unreported).
const EARLY_OP_GRACE_MS: u128 = 24 * 3600 * 1000;

/// The dead letter of an op kept for `order_id`, whose order never came;
/// None for a cancel (it has no effect without its order) and for an op
/// kept before origins were stored (nothing to dead-letter from).
fn expired_refusal(order_id: &str, op: &PendingOp) -> Option<LateRefusal> {
    let (what, origin) = match op {
        PendingOp::Ship { shipment, origin } => (format!("shipment {:?}", shipment.shipment_id), origin),
        PendingOp::Credit { memo, origin } => (format!("credit memo {:?}", memo.credit_memo_id), origin),
        PendingOp::Cancel { .. } => return None,
    };
    (!origin.is_empty()).then(|| LateRefusal {
        origin: origin.clone(),
        code: ORDER_NOT_PLACED,
        message: format!(
            "data.order_id: the {what} was kept for order {order_id:?}, whose order.placed did not arrive within the order retention, and was not applied; send the order.placed, then this event again with a new id"
        ),
        order_id: order_id.to_string(),
    })
}

/// The order key's answer: decision state, stored outcome, line -> sku map,
/// and queued ops.
struct Decision {
    tag: String,
    state: String,
    outcome: Option<OrderOutcome>,
    lines: BTreeMap<String, String>,
    pending: Vec<PendingOp>,
}

impl Decision {
    /// Whether the decided order has lines of `sku`: only those can settle
    /// it (a shipment or credit memo may name any sku).
    fn has_sku(&self, sku: &str) -> bool {
        self.lines.values().any(|s| s == sku)
    }

    fn parse(v: redis::Value) -> Result<Decision, StoreError> {
        let f = reply::strings(&v).ok_or_else(|| StoreError::Reply("order_decide: unexpected reply shape".into()))?;
        if f.len() < 4 {
            return Err(StoreError::Reply("order_decide: short reply".into()));
        }
        fn json<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T, StoreError> {
            serde_json::from_str(s).map_err(|e| StoreError::Reply(format!("order_decide: stored {what} unreadable: {e}")))
        }
        Ok(Decision {
            tag: f[0].clone(),
            state: f[1].clone(),
            outcome: if f[2].is_empty() { None } else { Some(json(&f[2], "outcome")?) },
            lines: if f[3].is_empty() { BTreeMap::new() } else { json(&f[3], "lines")? },
            pending: f[4..].iter().map(|p| json(p, "pending op")).collect::<Result<_, _>>()?,
        })
    }
}

/// The order's lines grouped by sku, in order of first appearance.
fn by_sku(lines: &[OrderLine]) -> Vec<(String, Vec<&OrderLine>)> {
    let mut out: Vec<(String, Vec<&OrderLine>)> = Vec::new();
    for l in lines {
        match out.iter_mut().find(|(s, _)| *s == l.sku) {
            Some((_, v)) => v.push(l),
            None => out.push((l.sku.clone(), vec![l])),
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

fn allocations(s: &str) -> Result<Vec<Allocation>, StoreError> {
    let f = split(s);
    f.chunks(2)
        .map(|p| match p {
            [loc, q] => Ok(Allocation { location: loc.to_string(), quantity: Qty(q.parse().map_err(|_| StoreError::Reply(format!("allocation {s:?}")))?) }),
            _ => Err(StoreError::Reply(format!("allocation {s:?}"))),
        })
        .collect()
}

/// The placement on one sku as `reserve.lua` reports it.
enum Placement {
    Reserved(BTreeMap<String, ConfirmedLine>),
    Rejected(RejectReason, Qty),
    Aborted,
}

fn placement(r: &Reply, sku: &str) -> Result<Placement, StoreError> {
    match r.str(0)? {
        "r" => {
            let n: usize = r.str(2)?.parse().map_err(|_| r.bad("line count"))?;
            let mut lines = BTreeMap::new();
            for i in 0..n {
                let b = 3 + i * 5;
                let (backordered, preordered) = (r.qty(b + 3)?, r.qty(b + 4)?);
                lines.insert(
                    r.str(b)?.to_string(),
                    ConfirmedLine {
                        line_id: r.str(b)?.to_string(),
                        sku: sku.to_string(),
                        quantity: r.qty(b + 1)?,
                        allocations: allocations(r.str(b + 2)?)?,
                        backordered,
                        preordered,
                    },
                );
            }
            Ok(Placement::Reserved(lines))
        }
        "x" => Ok(Placement::Rejected(RejectReason::parse(r.str(1)?).ok_or_else(|| r.bad("reason"))?, r.qty(2)?)),
        "a" => Ok(Placement::Aborted),
        _ => Err(r.bad("placement state")),
    }
}

impl Engine {
    async fn decide(&self, order_id: &str, mode: &str, outcome: Option<&OrderOutcome>, lines: &PlaceOrder) -> Result<Decision, StoreError> {
        let (okey, plist) = keys::order(order_id);
        let (state, out) = match outcome {
            Some(o @ OrderOutcome::Confirmed { .. }) => ("confirmed", serde_json::to_string(o).expect("serializable")),
            Some(o) => ("rejected", serde_json::to_string(o).expect("serializable")),
            None => ("", String::new()),
        };
        let line_map: BTreeMap<&str, &str> = lines.lines.iter().map(|l| (l.line_id.as_str(), l.sku.as_str())).collect();
        let skus = by_sku(&lines.lines).len().to_string();
        let v = self
            .scripts
            .order_decide
            .call(
                &mut self.conn.clone(),
                &[&okey, &plist],
                &[mode, &self.order_ttl(), state, &out, &serde_json::to_string(&line_map).expect("serializable"), &skus],
            )
            .await?;
        Decision::parse(v)
    }

    async fn reserve_sku(&self, o: &PlaceOrder, sku: &str, lines: &[&OrderLine], locs: Option<&Vec<String>>, changes: &mut Changes) -> Result<Placement, StoreError> {
        let k = SkuKeys::new(sku);
        let mut args = vec![
            self.now().to_string(),
            self.order_ttl(),
            o.cart_id.clone().unwrap_or_default(),
            if locs.is_some() { "1" } else { "0" }.to_string(),
        ];
        let locs = locs.cloned().unwrap_or_default();
        args.push(locs.len().to_string());
        args.extend(locs);
        args.push(lines.len().to_string());
        for l in lines {
            args.push(l.line_id.clone());
            args.push(qarg(l.quantity));
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let consumed = k.consumed_hold(o.cart_id.as_deref().unwrap_or_default());
        let v = self.scripts.reserve.call(&mut self.conn.clone(), &[&k.inv, &k.holds, &k.hexp, &k.order(&o.order_id), &consumed], &argv).await?;
        let r = Reply::sku("reserve", v)?;
        let repeat = r.code == "dup";
        let p = placement(&r, sku)?;
        changes.add_reply(sku, r, repeat);
        Ok(p)
    }

    async fn abort_all(&self, o: &PlaceOrder, changes: &mut Changes) -> Result<(), StoreError> {
        for (sku, _) in by_sku(&o.lines) {
            let k = SkuKeys::new(&sku);
            let consumed = k.consumed_hold(o.cart_id.as_deref().unwrap_or_default());
            let v = self
                .scripts
                .abort
                .call(&mut self.conn.clone(), &[&k.inv, &k.holds, &k.hexp, &k.order(&o.order_id), &consumed], &[&self.now().to_string(), &self.order_ttl()])
                .await?;
            let r = Reply::sku("abort", v)?;
            if let Ok(exp) = r.str(1)?.parse::<i64>() {
                self.index_hold(&sku, exp).await?;
            }
            changes.add_reply(&sku, r, false);
        }
        Ok(())
    }

    /// `order.placed`: reserves every line or none, and returns the one
    /// result for `inventory.reservations`. A repeat (same order_id, any
    /// event id) returns the first result and changes nothing.
    pub async fn place_order(&self, o: &PlaceOrder) -> Result<Effect<OrderOutcome>, StoreError> {
        check_id("order_id", &o.order_id)?;
        check_id("channel", &o.channel)?;
        if let Some(c) = &o.cart_id {
            check_id("cart_id", c)?;
        }
        if o.lines.is_empty() {
            return Err(StoreError::Invalid("an order needs at least one line".into()));
        }
        for l in &o.lines {
            check_id("line_id", &l.line_id)?;
            check_id("sku", &l.sku)?;
            if !l.quantity.is_positive() {
                return Err(StoreError::Invalid(format!("line {:?} quantity must be > 0, got {}", l.line_id, l.quantity)));
            }
        }
        let mut changes = Changes::default();
        let peek = self.decide(&o.order_id, "peek", None, o).await?;
        let decision = match peek.tag.as_str() {
            "was" => {
                // Decided before: publish the current availability again.
                for (sku, _) in by_sku(&o.lines) {
                    let s = self.sku_state(&sku).await?;
                    changes.add(&sku, s.clone(), s, true);
                }
                peek
            }
            "canceled" => self.reject_canceled(o, &mut changes).await?,
            _ => self.try_place(o, &mut changes).await?,
        };
        let outcome = decision.outcome.clone().ok_or_else(|| StoreError::Reply(format!("order {:?} decided without an outcome", o.order_id)))?;
        if let OrderOutcome::Confirmed { lines } = &outcome {
            // Skus with nothing counted (tracking none) are settled from the
            // start. On every answer, not only the deciding one: the attempt
            // that decided may have died before settling, and settling again
            // changes nothing. The skus of the decided lines: a repeat may
            // carry other lines under the same order_id.
            let mut skus: Vec<&str> = Vec::new();
            for l in lines {
                if !skus.contains(&l.sku.as_str()) {
                    skus.push(&l.sku);
                }
            }
            for sku in skus {
                if lines.iter().filter(|l| l.sku == sku).all(|l| l.allocations.is_empty()) {
                    self.settle(&o.order_id, sku).await?;
                }
            }
        }
        let mut late = Vec::new();
        for op in &decision.pending {
            late.extend(self.apply_pending(&o.order_id, op, &decision, &mut changes).await?);
        }
        self.index_new_rows(&changes).await?;
        let mut e = self.effect(outcome, changes).await?;
        e.late_refusals = late;
        Ok(e)
    }

    async fn try_place(&self, o: &PlaceOrder, changes: &mut Changes) -> Result<Decision, StoreError> {
        let channels = self.channels().await?;
        let locs = channels.get(&o.channel);
        let mut confirmed: BTreeMap<String, ConfirmedLine> = BTreeMap::new();
        let mut rejected: Option<Vec<RejectedLine>> = None;
        let mut aborted = false;
        if locs.is_none() {
            rejected = Some(all_lines(o, RejectReason::UnknownChannel));
        } else {
            for (sku, lines) in by_sku(&o.lines) {
                match self.reserve_sku(o, &sku, &lines, locs, changes).await? {
                    Placement::Reserved(ls) => confirmed.extend(ls),
                    Placement::Rejected(reason, available) => {
                        rejected = Some(
                            lines
                                .iter()
                                .map(|l| RejectedLine { line_id: l.line_id.clone(), sku: sku.clone(), requested: l.quantity, available, reason })
                                .collect(),
                        );
                        break;
                    }
                    // Compensated already: by an attempt that stopped at a
                    // later sku, whose record keeps the reason (so read on:
                    // a crash or a concurrent duplicate between the abort
                    // and the decision must not lose it), or by one that
                    // was canceled first.
                    Placement::Aborted => aborted = true,
                }
            }
            if rejected.is_none() && aborted {
                rejected = Some(all_lines(o, RejectReason::Canceled));
            }
        }
        let outcome = match rejected {
            None => OrderOutcome::Confirmed {
                lines: o.lines.iter().filter_map(|l| confirmed.get(&l.line_id).cloned()).collect(),
            },
            Some(lines) => {
                self.abort_all(o, changes).await?;
                OrderOutcome::Rejected { lines }
            }
        };
        let d = self.decide(&o.order_id, "decide", Some(&outcome), o).await?;
        if d.tag == "canceled" {
            return self.reject_canceled(o, changes).await;
        }
        if matches!(d.outcome, Some(OrderOutcome::Rejected { .. })) && matches!(outcome, OrderOutcome::Confirmed { .. }) {
            // Cannot happen while per-sku states are final; compensate rather
            // than leave stock reserved for a rejected order.
            self.abort_all(o, changes).await?;
        }
        Ok(d)
    }

    async fn reject_canceled(&self, o: &PlaceOrder, changes: &mut Changes) -> Result<Decision, StoreError> {
        self.abort_all(o, changes).await?;
        let outcome = OrderOutcome::Rejected { lines: all_lines(o, RejectReason::Canceled) };
        self.decide(&o.order_id, "reject_canceled", Some(&outcome), o).await
    }

    async fn settle(&self, order_id: &str, sku: &str) -> Result<(), StoreError> {
        let (okey, plist) = keys::order(order_id);
        self.scripts.order_settle.call(&mut self.conn.clone(), &[&okey, &plist], &[sku, &self.order_ttl()]).await?;
        Ok(())
    }

    /// Tells the order key about an op; returns its decision when decided.
    async fn note(&self, order_id: &str, op_id: &str, whole_cancel: bool, op: &PendingOp) -> Result<Decision, StoreError> {
        let (okey, plist) = keys::order(order_id);
        let payload = serde_json::to_string(op).expect("serializable");
        let retention = self.cfg.order_retention.as_millis().max(1);
        let deadline = (self.now() as i128 + retention as i128).to_string();
        let keep = (retention + EARLY_OP_GRACE_MS).to_string();
        let v = self
            .scripts
            .order_note
            .call(&mut self.conn.clone(), &[&okey, &plist], &[&self.order_ttl(), op_id, if whole_cancel { "1" } else { "0" }, &payload, &deadline, &keep])
            .await?;
        let f = reply::strings(&v).ok_or_else(|| StoreError::Reply("order_note: unexpected reply".into()))?;
        let [state, out, lines] = f.as_slice() else { return Err(StoreError::Reply("order_note: short reply".into())) };
        if state == "pending" {
            // Another slot: a crash before this leaves the op unindexed, but
            // its event's offset is not committed, so its redelivery indexes it.
            redis::cmd("ZADD")
                .arg(keys::early_index(keys::hold_shard(order_id)))
                .arg("GT")
                .arg(&deadline)
                .arg(order_id)
                .query_async::<()>(&mut self.conn.clone())
                .await?;
        }
        Ok(Decision {
            tag: state.clone(),
            state: state.clone(),
            outcome: if out.is_empty() { None } else { serde_json::from_str(out).ok() },
            lines: if lines.is_empty() { BTreeMap::new() } else { serde_json::from_str(lines).map_err(|e| StoreError::Reply(format!("order lines: {e}")))? },
            pending: Vec::new(),
        })
    }

    /// Applies a queued op (again, on a repeated placement: each is
    /// idempotent and answers as it did the first time).
    async fn apply_pending(&self, order_id: &str, op: &PendingOp, d: &Decision, changes: &mut Changes) -> Result<Option<LateRefusal>, StoreError> {
        let (lines, origin) = match op {
            PendingOp::Cancel { event_id, lines } => {
                if d.state == "confirmed" {
                    self.release_decided(event_id, &d.lines, order_id, Some(lines), changes).await?;
                }
                return Ok(None);
            }
            PendingOp::Ship { shipment, origin } => (self.ship_decided(shipment, d, changes).await?, origin),
            PendingOp::Credit { memo, origin } => (self.credit_decided(memo, d, changes).await?, origin),
        };
        Ok(refusal(&lines).map(|(code, message)| LateRefusal { origin: origin.clone(), code, message, order_id: order_id.to_string() }))
    }

    /// `order.canceled`: releases what the order still has reserved (all of
    /// it, or the given line quantities).
    pub async fn cancel_order(&self, event_id: &str, order_id: &str, lines: Option<&[(String, Qty)]>) -> Result<Effect<CancelOutcome>, StoreError> {
        check_id("event id", event_id)?;
        check_id("order_id", order_id)?;
        for (l, q) in lines.unwrap_or_default() {
            check_id("line_id", l)?;
            if !q.is_positive() {
                return Err(StoreError::Invalid(format!("line {l:?} quantity must be > 0, got {q}")));
            }
        }
        let op = PendingOp::Cancel { event_id: event_id.to_string(), lines: lines.map(|l| l.to_vec()).unwrap_or_default() };
        let d = self.note(order_id, event_id, lines.is_none(), &op).await?;
        let mut changes = Changes::default();
        let outcome = match d.state.as_str() {
            "pending" => CancelOutcome::Pending,
            "canceled" => CancelOutcome::CanceledFirst,
            "confirmed" => CancelOutcome::Released(self.release_decided(event_id, &d.lines, order_id, lines, &mut changes).await?),
            _ => CancelOutcome::Released(Qty::ZERO),
        };
        self.effect(outcome, changes).await
    }

    async fn release_decided(
        &self,
        event_id: &str,
        line_skus: &BTreeMap<String, String>,
        order_id: &str,
        lines: Option<&[(String, Qty)]>,
        changes: &mut Changes,
    ) -> Result<Qty, StoreError> {
        // Per sku: whole release, or the requested lines that belong to it.
        let mut per_sku: BTreeMap<&str, Vec<(&str, Qty)>> = BTreeMap::new();
        for sku in line_skus.values() {
            per_sku.entry(sku).or_default();
        }
        if let Some(ls) = lines {
            for (l, q) in ls {
                if let Some(sku) = line_skus.get(l) {
                    per_sku.entry(sku).or_default().push((l, *q));
                }
            }
        }
        let mut released = Qty::ZERO;
        for (sku, req) in per_sku {
            if lines.is_some() && req.is_empty() {
                continue;
            }
            let k = SkuKeys::new(sku);
            let mut args = vec![self.now().to_string(), self.order_ttl(), event_id.to_string(), if lines.is_none() { "1" } else { "0" }.to_string()];
            args.push(req.len().to_string());
            for (l, q) in &req {
                args.push(l.to_string());
                args.push(qarg(*q));
            }
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let v = self.scripts.release.call(&mut self.conn.clone(), &[&k.inv, &k.holds, &k.hexp, &k.order(order_id)], &argv).await?;
            let r = Reply::sku("release", v)?;
            released += r.qty(0)?;
            if r.str(1)? == "1" {
                self.settle(order_id, sku).await?;
            }
            let repeat = r.code == "dup";
            changes.add_reply(sku, r, repeat);
        }
        Ok(released)
    }

    /// `shipment.created`: deducts each line at the shipping location. A
    /// line that would take on_hand below zero is refused
    /// (`insufficient_on_hand`) and changes nothing; the other lines apply.
    /// Before the placement the shipment is kept with `origin`, returned in
    /// the placement's [`Effect::late_refusals`] if a line is refused then.
    pub async fn ship(&self, s: &Shipment, origin: Option<&str>) -> Result<Effect<Vec<LineOutcome>>, StoreError> {
        check_id("shipment_id", &s.shipment_id)?;
        check_id("order_id", &s.order_id)?;
        check_id("location", &s.location)?;
        for l in &s.lines {
            check_id("line_id", &l.line_id)?;
            check_id("sku", &l.sku)?;
            if !l.quantity.is_positive() {
                return Err(StoreError::Invalid(format!("line {:?} quantity must be > 0, got {}", l.line_id, l.quantity)));
            }
        }
        let d = self.note(&s.order_id, &format!("shp:{}", s.shipment_id), false, &PendingOp::Ship { shipment: s.clone(), origin: origin.unwrap_or_default().to_string() }).await?;
        let mut changes = Changes::default();
        let outcome = if d.state == "pending" { vec![LineOutcome::Pending; s.lines.len()] } else { self.ship_decided(s, &d, &mut changes).await? };
        self.index_new_rows(&changes).await?;
        self.effect(outcome, changes).await
    }

    async fn ship_decided(&self, s: &Shipment, d: &Decision, changes: &mut Changes) -> Result<Vec<LineOutcome>, StoreError> {
        let mut out = Vec::new();
        for l in &s.lines {
            let k = SkuKeys::new(&l.sku);
            let op = format!("shp:{}\u{1f}{}", s.shipment_id, l.line_id);
            let v = self
                .scripts
                .deduct
                .call(
                    &mut self.conn.clone(),
                    &[&k.inv, &k.holds, &k.hexp, &k.order(&s.order_id)],
                    &[&self.now().to_string(), &self.order_ttl(), &op, &l.line_id, &s.location, &qarg(l.quantity)],
                )
                .await?;
            let r = Reply::sku("deduct", v)?;
            out.push(if r.str(0)? == "ok" {
                LineOutcome::Applied
            } else {
                LineOutcome::Refused {
                    code: "insufficient_on_hand",
                    message: format!(
                        "data.lines[line_id={:?}]: shipping {} of sku {:?} from location {:?} would take on_hand below zero (it is {}); record the stock there first (inventory.level.set) and send the shipment again with a new shipment_id",
                        l.line_id, l.quantity, l.sku, s.location, r.qty(1)?
                    ),
                }
            });
            if r.str(2)? == "1" && d.state == "confirmed" && d.has_sku(&l.sku) {
                self.settle(&s.order_id, &l.sku).await?;
            }
            let repeat = r.code == "dup";
            changes.add_reply(&l.sku, r, repeat);
        }
        Ok(out)
    }

    /// `credit_memo.created`: per line, unshipped refunded units release the
    /// reservation, shipped ones go back to stock when `back_to_stock`.
    /// Refunding more than the line ordered is refused (`over_refund`).
    /// Kept with `origin` before the placement, as [`Engine::ship`].
    pub async fn credit(&self, c: &CreditMemo, origin: Option<&str>) -> Result<Effect<Vec<LineOutcome>>, StoreError> {
        check_id("credit_memo_id", &c.credit_memo_id)?;
        check_id("order_id", &c.order_id)?;
        for l in &c.lines {
            check_id("line_id", &l.line_id)?;
            check_id("sku", &l.sku)?;
            if let Some(loc) = &l.location {
                check_id("location", loc)?;
            }
            if !l.quantity.is_positive() {
                return Err(StoreError::Invalid(format!("line {:?} quantity must be > 0, got {}", l.line_id, l.quantity)));
            }
        }
        let d = self.note(&c.order_id, &format!("cm:{}", c.credit_memo_id), false, &PendingOp::Credit { memo: c.clone(), origin: origin.unwrap_or_default().to_string() }).await?;
        let mut changes = Changes::default();
        let outcome = if d.state == "pending" { vec![LineOutcome::Pending; c.lines.len()] } else { self.credit_decided(c, &d, &mut changes).await? };
        self.index_new_rows(&changes).await?;
        self.effect(outcome, changes).await
    }

    async fn credit_decided(&self, c: &CreditMemo, d: &Decision, changes: &mut Changes) -> Result<Vec<LineOutcome>, StoreError> {
        let mut out = Vec::new();
        for l in &c.lines {
            let k = SkuKeys::new(&l.sku);
            let op = format!("cm:{}\u{1f}{}", c.credit_memo_id, l.line_id);
            let v = self
                .scripts
                .restock
                .call(
                    &mut self.conn.clone(),
                    &[&k.inv, &k.holds, &k.hexp, &k.order(&c.order_id)],
                    &[
                        &self.now().to_string(),
                        &self.order_ttl(),
                        &op,
                        &l.line_id,
                        &qarg(l.quantity),
                        if l.back_to_stock { "1" } else { "0" },
                        l.location.as_deref().unwrap_or(""),
                    ],
                )
                .await?;
            let r = Reply::sku("restock", v)?;
            out.push(if r.str(0)? == "ok" {
                LineOutcome::Applied
            } else {
                LineOutcome::Refused {
                    code: "over_refund",
                    message: format!(
                        "data.lines[line_id={:?}]: refunding {} of sku {:?} is more than order {:?} ordered on that line, less what was refunded before; check the line_id and quantity",
                        l.line_id, l.quantity, l.sku, c.order_id
                    ),
                }
            });
            if r.str(3)? == "1" && d.state == "confirmed" && d.has_sku(&l.sku) {
                self.settle(&c.order_id, &l.sku).await?;
            }
            let repeat = r.code == "dup";
            changes.add_reply(&l.sku, r, repeat);
        }
        Ok(out)
    }
    /// Shipments and credit memos kept for an order that has not come by
    /// their deadline (the last kept op's arrival + the order retention):
    /// one refusal each, to dead-letter. They stay kept, and every sweep
    /// returns them again, until [`Engine::forget_expired`] is told that
    /// their dead letters are out.
    pub(super) async fn expired_early_ops(&self, limit: usize, now: i64) -> Result<Vec<LateRefusal>, StoreError> {
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        for shard in 0..keys::HOLD_SHARDS {
            let ix = keys::early_index(shard);
            let due: Vec<String> = redis::cmd("ZRANGEBYSCORE").arg(&ix).arg("-inf").arg(now).arg("LIMIT").arg(0).arg(limit).query_async(&mut conn).await?;
            for order_id in due {
                let (okey, plist) = keys::order(&order_id);
                let v = self.scripts.order_expire.call(&mut conn, &[&okey, &plist], &["peek", &now.to_string()]).await?;
                let f = reply::strings(&v).ok_or_else(|| StoreError::Reply("order_expire: unexpected reply".into()))?;
                if f.first().map(String::as_str) == Some("due") {
                    // An op unreadable here could not be applied either: skipped, not retried forever.
                    let found: Vec<LateRefusal> = f[1..]
                        .iter()
                        .filter_map(|p| serde_json::from_str::<PendingOp>(p).ok())
                        .filter_map(|op| expired_refusal(&order_id, &op))
                        .collect();
                    if found.is_empty() {
                        self.forget_order(&order_id, now).await?;
                    }
                    out.extend(found);
                } else {
                    self.reindex_early(&order_id, &f, now).await?;
                }
            }
        }
        Ok(out)
    }

    /// After the dead letters of [`Engine::sweep_holds`]'s `late_refusals`
    /// were acknowledged: forgets the kept ops they came from, so they are
    /// not dead-lettered again (an op kept since, for the same order, moves
    /// its deadline on and stays).
    pub async fn forget_expired(&self, refused: &[LateRefusal]) -> Result<(), StoreError> {
        let now = self.now();
        let orders: std::collections::BTreeSet<&str> = refused.iter().filter(|r| r.code == ORDER_NOT_PLACED).map(|r| r.order_id.as_str()).collect();
        for order_id in orders {
            self.forget_order(order_id, now).await?;
        }
        Ok(())
    }

    async fn forget_order(&self, order_id: &str, now: i64) -> Result<(), StoreError> {
        let (okey, plist) = keys::order(order_id);
        let v = self.scripts.order_expire.call(&mut self.conn.clone(), &[&okey, &plist], &["forget", &now.to_string()]).await?;
        let f = reply::strings(&v).ok_or_else(|| StoreError::Reply("order_expire: unexpected reply".into()))?;
        self.reindex_early(order_id, &f, now).await
    }

    /// Moves an order in the early-op index to its deadline, or drops it
    /// when nothing is kept for it any more.
    async fn reindex_early(&self, order_id: &str, f: &[String], now: i64) -> Result<(), StoreError> {
        let ix = keys::early_index(keys::hold_shard(order_id));
        match (f.first().map(String::as_str), f.get(1)) {
            (Some("later"), Some(dl)) if !dl.is_empty() => {
                redis::cmd("ZADD").arg(&ix).arg("GT").arg(dl).arg(order_id).query_async::<()>(&mut self.conn.clone()).await?;
            }
            _ => {
                self.scripts.early_unindex.call(&mut self.conn.clone(), &[&ix], &[order_id, &now.to_string()]).await?;
            }
        }
        Ok(())
    }
}

