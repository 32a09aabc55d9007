//! The engine against a real redis-server: the issue's scenarios, every
//! rejection reason, idempotency, out-of-order events, hold expiry.

mod support;

use std::time::Duration;

use reservoir::domain::{BeyondStock, ItemConfig, LineOutcome, OrderOutcome, RejectReason, Status, Tracking};
use reservoir::qty::Qty;
use reservoir::store::{CancelOutcome, CreditLine, CreditMemo, Engine, OrderLine, PlaceOrder, Shipment, ShipmentLine};
use support::{uid, RedisServer};

fn q(s: &str) -> Qty {
    Qty::parse(s).unwrap()
}

/// Unique names for one test: channel, skus, orders, carts.
struct Names(String);
impl Names {
    fn new() -> Names {
        Names(uid())
    }
    fn n(&self, base: &str) -> String {
        format!("{base}-{}", self.0)
    }
}

fn eu(n: &Names) -> Vec<String> {
    vec![n.n("eu-1"), n.n("eu-2"), n.n("eu-3")]
}

fn order(n: &Names, id: &str, lines: &[(&str, &str, &str)]) -> PlaceOrder {
    PlaceOrder {
        order_id: n.n(id),
        channel: n.n("eu"),
        cart_id: None,
        lines: lines.iter().map(|(l, s, qt)| OrderLine { line_id: l.to_string(), sku: n.n(s), quantity: q(qt) }).collect(),
    }
}

async fn available(e: &Engine, n: &Names, sku: &str) -> Qty {
    let s = e.sku_state(&n.n(sku)).await.unwrap();
    reservoir::domain::availability(&s, &eu(n)).available.unwrap()
}

async fn setup(e: &Engine, n: &Names, sku: &str, levels: &[(&str, &str, bool)]) {
    e.configure_channel(&n.n("ev-ch"), &n.n("eu"), &eu(n)).await.unwrap();
    for (i, (loc, h, in_stock)) in levels.iter().enumerate() {
        e.set_level(&n.n(&format!("ev-{sku}-{i}")), &n.n(sku), &n.n(loc), q(h), *in_stock).await.unwrap();
    }
}

fn confirmed(o: &OrderOutcome) -> &Vec<reservoir::domain::ConfirmedLine> {
    match o {
        OrderOutcome::Confirmed { lines } => lines,
        other => panic!("expected confirmed, got {other:?}"),
    }
}

fn rejected(o: &OrderOutcome) -> &Vec<reservoir::domain::RejectedLine> {
    match o {
        OrderOutcome::Rejected { lines } => lines,
        other => panic!("expected rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn availability_reserve_cancel_and_threshold() {
    let r = RedisServer::start();
    let (e, _) = support::engine(&r.url).await;
    let n = Names::new();
    setup(&e, &n, "SKU-1", &[("eu-1", "5.5", true), ("eu-2", "3", true), ("eu-3", "10", false)]).await;
    assert_eq!(available(&e, &n, "SKU-1").await, q("8.5"));

    let placed = e.place_order(&order(&n, "o-1", &[("1", "SKU-1", "3.5")])).await.unwrap();
    let lines = confirmed(&placed.outcome);
    assert_eq!(lines[0].allocations.len(), 1);
    assert_eq!(lines[0].allocations[0].quantity, q("3.5"));
    assert_eq!(available(&e, &n, "SKU-1").await, q("5"));
    let up = placed.to_publish().next().expect("availability changed");
    assert_eq!((up.availability.available, up.availability.status), (Some(q("5")), Status::InStock));

    let c = e.cancel_order(&n.n("ev-c1"), &n.n("o-1"), None).await.unwrap();
    assert_eq!(c.outcome, CancelOutcome::Released(q("3.5")));
    assert_eq!(available(&e, &n, "SKU-1").await, q("8.5"));

    let cfg = ItemConfig { out_of_stock_threshold: q("5"), ..Default::default() };
    e.configure_item(&n.n("ev-cfg"), &n.n("SKU-1"), &cfg).await.unwrap();
    assert_eq!(available(&e, &n, "SKU-1").await, q("3.5"));
    confirmed(&e.place_order(&order(&n, "o-2", &[("1", "SKU-1", "3")])).await.unwrap().outcome);
    let rej = e.place_order(&order(&n, "o-3", &[("1", "SKU-1", "1")])).await.unwrap();
    let l = &rejected(&rej.outcome)[0];
    assert_eq!((l.reason, l.available, l.requested), (RejectReason::InsufficientStock, q("0.5"), q("1")));
}

#[tokio::test]
async fn concurrent_reservations_of_the_last_unit() {
    let r = RedisServer::start();
    let (e, _) = support::engine(&r.url).await;
    let n = Names::new();
    setup(&e, &n, "SKU-1", &[("eu-1", "1", true)]).await;
    let (oa, ob) = (order(&n, "o-a", &[("1", "SKU-1", "1")]), order(&n, "o-b", &[("1", "SKU-1", "1")]));
    let (a, b) = tokio::join!(e.place_order(&oa), e.place_order(&ob));
    let oks = [a.unwrap(), b.unwrap()].iter().filter(|x| matches!(x.outcome, OrderOutcome::Confirmed { .. })).count();
    assert_eq!(oks, 1);
    assert_eq!(available(&e, &n, "SKU-1").await, Qty::ZERO);
}

#[tokio::test]
async fn same_sku_lines_count_together_and_nothing_stays_reserved() {
    let r = RedisServer::start();
    let (e, _) = support::engine(&r.url).await;
    let n = Names::new();
    setup(&e, &n, "SKU-1", &[("eu-1", "5", true)]).await;
    setup(&e, &n, "SKU-2", &[("eu-1", "5", true)]).await;
    let rej = e.place_order(&order(&n, "o-1", &[("1", "SKU-1", "5"), ("2", "SKU-1", "5")])).await.unwrap();
    assert_eq!(rejected(&rej.outcome).len(), 2);
    assert_eq!(available(&e, &n, "SKU-1").await, q("5"));
    // Multi-sku: the first sku reserved, the second short: compensated.
    let rej = e.place_order(&order(&n, "o-2", &[("1", "SKU-1", "2"), ("2", "SKU-2", "6")])).await.unwrap();
    assert_eq!(rejected(&rej.outcome)[0].sku, n.n("SKU-2"));
    assert_eq!(available(&e, &n, "SKU-1").await, q("5"));
    assert_eq!(available(&e, &n, "SKU-2").await, q("5"));
    // The same order again: same answer, still nothing reserved.
    let again = e.place_order(&order(&n, "o-2", &[("1", "SKU-1", "2"), ("2", "SKU-2", "1")])).await.unwrap();
    assert_eq!(again.outcome, rej.outcome);
    assert_eq!(available(&e, &n, "SKU-1").await, q("5"));
}

#[tokio::test]
async fn backorders_within_limit() {
    let r = RedisServer::start();
    let (e, _) = support::engine(&r.url).await;
    let n = Names::new();
    setup(&e, &n, "SKU-1", &[("eu-1", "0", true)]).await;
    let cfg = ItemConfig { backorders: BeyondStock { enabled: true, limit: Some(q("3")) }, ..Default::default() };
    e.configure_item(&n.n("ev-cfg"), &n.n("SKU-1"), &cfg).await.unwrap();
    let s = e.sku_state(&n.n("SKU-1")).await.unwrap();
    assert_eq!(reservoir::domain::availability(&s, &eu(&n)).status, Status::Backorder);
    let ok = e.place_order(&order(&n, "o-1", &[("1", "SKU-1", "3")])).await.unwrap();
    let l = &confirmed(&ok.outcome)[0];
    assert_eq!((l.backordered, l.allocations[0].location.clone()), (q("3"), n.n("eu-1")));
    let up = ok.to_publish().next().unwrap();
    assert_eq!(up.availability.status, Status::OutOfStock);
    let rej = e.place_order(&order(&n, "o-2", &[("1", "SKU-1", "1")])).await.unwrap();
    assert_eq!(rejected(&rej.outcome)[0].reason, RejectReason::InsufficientStock);
    // Cancel frees the backorder limit again.
    e.cancel_order(&n.n("ev-c"), &n.n("o-1"), Some(&[("1".to_string(), q("1"))])).await.unwrap();
    confirmed(&e.place_order(&order(&n, "o-3", &[("1", "SKU-1", "1")])).await.unwrap().outcome);
}

#[tokio::test]
async fn allocation_splits_in_priority_order() {
    let r = RedisServer::start();
    let (e, _) = support::engine(&r.url).await;
    let n = Names::new();
    setup(&e, &n, "SKU-1", &[("eu-1", "4", true), ("eu-2", "3", true)]).await;
    let ok = e.place_order(&order(&n, "o-1", &[("1", "SKU-1", "6")])).await.unwrap();
    let a: Vec<(String, Qty)> = confirmed(&ok.outcome)[0].allocations.iter().map(|a| (a.location.clone(), a.quantity)).collect();
    assert_eq!(a, vec![(n.n("eu-1"), q("4")), (n.n("eu-2"), q("2"))]);
}

#[tokio::test]
async fn shipments_deduct_on_hand_and_reservation() {
    let r = RedisServer::start();
    let (e, _) = support::engine(&r.url).await;
    let n = Names::new();
    setup(&e, &n, "SKU-1", &[("eu-1", "10", true)]).await;
    confirmed(&e.place_order(&order(&n, "o-1", &[("1", "SKU-1", "3")])).await.unwrap().outcome);
    for (i, (h, r)) in [("9", "2"), ("8", "1"), ("7", "0")].iter().enumerate() {
        let s = Shipment {
            shipment_id: n.n(&format!("s-{i}")),
            order_id: n.n("o-1"),
            location: n.n("eu-1"),
            lines: vec![ShipmentLine { line_id: "1".into(), sku: n.n("SKU-1"), quantity: q("1") }],
        };
        let eff = e.ship(&s, None).await.unwrap();
        assert_eq!(eff.outcome, vec![LineOutcome::Applied]);
        let lv = e.sku_state(&n.n("SKU-1")).await.unwrap().levels[&n.n("eu-1")];
        assert_eq!((lv.on_hand, lv.reserved), (q(h), q(r)));
        // Repeated shipment: nothing more.
        e.ship(&s, None).await.unwrap();
        assert_eq!(e.sku_state(&n.n("SKU-1")).await.unwrap().levels[&n.n("eu-1")].on_hand, q(h));
    }
    let too_much = Shipment {
        shipment_id: n.n("s-big"),
        order_id: n.n("o-1"),
        location: n.n("eu-1"),
        lines: vec![ShipmentLine { line_id: "9".into(), sku: n.n("SKU-1"), quantity: q("8") }],
    };
    let eff = e.ship(&too_much, None).await.unwrap();
    assert!(matches!(&eff.outcome[0], LineOutcome::Refused { code: "insufficient_on_hand", .. }));
    assert_eq!(e.sku_state(&n.n("SKU-1")).await.unwrap().levels[&n.n("eu-1")].on_hand, q("7"));
}

#[tokio::test]
async fn credit_memos_restock_shipped_units_once() {
    let r = RedisServer::start();
    let (e, _) = support::engine(&r.url).await;
    let n = Names::new();
    setup(&e, &n, "SKU-1", &[("eu-1", "10", true)]).await;
    confirmed(&e.place_order(&order(&n, "o-1", &[("1", "SKU-1", "5")])).await.unwrap().outcome);
    let s = Shipment {
        shipment_id: n.n("s-1"),
        order_id: n.n("o-1"),
        location: n.n("eu-1"),
        lines: vec![ShipmentLine { line_id: "1".into(), sku: n.n("SKU-1"), quantity: q("4") }],
    };
    e.ship(&s, None).await.unwrap();
    let memo = |id: &str, qty: &str, back: bool| CreditMemo {
        credit_memo_id: n.n(id),
        order_id: n.n("o-1"),
        lines: vec![CreditLine { line_id: "1".into(), sku: n.n("SKU-1"), quantity: q(qty), back_to_stock: back, location: None }],
    };
    let on_hand = |e: &Engine| {
        let e = e.clone();
        let sku = n.n("SKU-1");
        let loc = n.n("eu-1");
        async move { e.sku_state(&sku).await.unwrap().levels[&loc] }
    };
    assert_eq!(on_hand(&e).await.on_hand, q("6"));
    // 3 refunded: 1 unshipped releases the reservation, 2 shipped go back.
    e.credit(&memo("cm-1", "3", true), None).await.unwrap();
    let lv = on_hand(&e).await;
    assert_eq!((lv.on_hand, lv.reserved), (q("8"), q("0")));
    e.credit(&memo("cm-1", "3", true), None).await.unwrap();
    assert_eq!(on_hand(&e).await.on_hand, q("8"));
    e.credit(&memo("cm-2", "1", false), None).await.unwrap();
    assert_eq!(on_hand(&e).await.on_hand, q("8"));
    let over = e.credit(&memo("cm-3", "2", true), None).await.unwrap();
    assert!(matches!(&over.outcome[0], LineOutcome::Refused { code: "over_refund", .. }));
}

#[tokio::test]
async fn a_carts_own_hold_never_blocks_its_order() {
    let r = RedisServer::start();
    let (e, clock) = support::engine(&r.url).await;
    let n = Names::new();
    setup(&e, &n, "SKU-1", &[("eu-1", "2", true)]).await;
    let h = e.hold(&n.n("ev-h1"), &n.n("cart-a"), &n.n("eu"), &n.n("SKU-1"), q("2"), None).await.unwrap();
    assert!(h.outcome.confirmed);
    let other = e.hold(&n.n("ev-h2"), &n.n("cart-b"), &n.n("eu"), &n.n("SKU-1"), q("1"), None).await.unwrap();
    assert!(!other.outcome.confirmed);
    assert_eq!(other.outcome.available, Some(Qty::ZERO));
    let mut o = order(&n, "o-1", &[("1", "SKU-1", "2")]);
    o.cart_id = Some(n.n("cart-a"));
    confirmed(&e.place_order(&o).await.unwrap().outcome);
    let lv = e.sku_state(&n.n("SKU-1")).await.unwrap().levels[&n.n("eu-1")];
    assert_eq!(lv.reserved, q("2"));
    // The hold is gone: expiry later releases nothing twice.
    clock.advance(Duration::from_secs(3600));
    let swept = e.sweep_holds(100).await.unwrap();
    assert_eq!(swept.outcome.released, 0);
    assert_eq!(e.sku_state(&n.n("SKU-1")).await.unwrap().levels[&n.n("eu-1")].reserved, q("2"));
}

#[tokio::test]
async fn holds_expire_at_once_and_the_sweep_reports_them() {
    let r = RedisServer::start();
    let (e, clock) = support::engine(&r.url).await;
    let n = Names::new();
    setup(&e, &n, "SKU-1", &[("eu-1", "5", true)]).await;
    let h = e.hold(&n.n("ev-h1"), &n.n("cart-a"), &n.n("eu"), &n.n("SKU-1"), q("4"), None).await.unwrap();
    assert!(h.outcome.confirmed);
    assert_eq!(available(&e, &n, "SKU-1").await, q("1"));
    clock.advance(Duration::from_secs(15 * 60 + 1));
    // Expired: another cart can take the stock even before any sweep.
    let h2 = e.hold(&n.n("ev-h2"), &n.n("cart-b"), &n.n("eu"), &n.n("SKU-1"), q("5"), None).await.unwrap();
    assert!(h2.outcome.confirmed, "{:?}", h2.outcome);
    clock.advance(Duration::from_secs(15 * 60 + 1));
    let swept = e.sweep_holds(100).await.unwrap();
    assert_eq!(swept.outcome.released, 1);
    let up = swept.to_publish().next().expect("the release is published");
    assert_eq!(up.availability.available, Some(q("5")));
    // A sweeper that died before its messages were acknowledged: the next
    // sweep releases nothing but publishes the sku's availability again.
    let again = e.sweep_holds(100).await.unwrap();
    assert_eq!(again.outcome.released, 0);
    let up2 = again.to_publish().next().expect("the unfinished sweep's release is published again");
    assert_eq!((up2.availability.available, up2.version), (Some(q("5")), up.version));
    e.sweep_done(&again.outcome).await.unwrap();
    // Nothing left to sweep or publish, and the index is empty again.
    let after = e.sweep_holds(100).await.unwrap();
    assert_eq!((after.outcome.released, after.to_publish().count()), (0, 0));
    let index: usize = (0..reservoir::store::keys::HOLD_SHARDS)
        .map(|s| redis::cmd("ZCARD").arg(reservoir::store::keys::hold_index(s).zset).query::<usize>(&mut redis::Client::open(r.url.as_str()).unwrap().get_connection().unwrap()).unwrap())
        .sum();
    assert_eq!(index, 0);
    // Cart release of everything the cart holds.
    e.hold(&n.n("ev-h3"), &n.n("cart-c"), &n.n("eu"), &n.n("SKU-1"), q("2"), None).await.unwrap();
    let rel = e.release_cart(&n.n("ev-r"), &n.n("cart-c"), None).await.unwrap();
    assert_eq!(rel.outcome, q("2"));
    assert_eq!(available(&e, &n, "SKU-1").await, q("5"));
    // The cart holds the sku again; the first release delivered again
    // changes nothing, and a new release still finds the new hold.
    e.hold(&n.n("ev-h4"), &n.n("cart-c"), &n.n("eu"), &n.n("SKU-1"), q("1"), None).await.unwrap();
    let again = e.release_cart(&n.n("ev-r"), &n.n("cart-c"), None).await.unwrap();
    assert_eq!(again.outcome, q("2"), "a repeat answers what the first delivery did");
    assert_eq!(available(&e, &n, "SKU-1").await, q("4"));
    let rel2 = e.release_cart(&n.n("ev-r2"), &n.n("cart-c"), None).await.unwrap();
    assert_eq!(rel2.outcome, q("1"));
    assert_eq!(available(&e, &n, "SKU-1").await, q("5"));
}

#[tokio::test]
async fn every_rejection_reason() {
    let r = RedisServer::start();
    let (e, _) = support::engine(&r.url).await;
    let n = Names::new();
    setup(&e, &n, "SKU-1", &[("eu-1", "1", true)]).await;
    let rej = |o: OrderOutcome| rejected(&o)[0].reason;
    assert_eq!(rej(e.place_order(&order(&n, "o-1", &[("1", "SKU-1", "2")])).await.unwrap().outcome), RejectReason::InsufficientStock);
    assert_eq!(rej(e.place_order(&order(&n, "o-2", &[("1", "NOPE", "1")])).await.unwrap().outcome), RejectReason::UnknownSku);
    let mut o = order(&n, "o-3", &[("1", "SKU-1", "1")]);
    o.channel = n.n("nowhere");
    assert_eq!(rej(e.place_order(&o).await.unwrap().outcome), RejectReason::UnknownChannel);
    // Cancel first: the later placement is rejected as canceled, nothing reserved.
    assert_eq!(e.cancel_order(&n.n("ev-c"), &n.n("o-4"), None).await.unwrap().outcome, CancelOutcome::CanceledFirst);
    assert_eq!(rej(e.place_order(&order(&n, "o-4", &[("1", "SKU-1", "1")])).await.unwrap().outcome), RejectReason::Canceled);
    assert_eq!(available(&e, &n, "SKU-1").await, q("1"));
    // Adjust below zero.
    let adj = e.adjust_level(&n.n("ev-a"), &n.n("SKU-1"), &n.n("eu-1"), q("-2")).await.unwrap();
    assert_eq!(adj.outcome.unwrap_err().code, "negative_on_hand");
}

#[tokio::test]
async fn shipment_and_partial_cancel_before_placement() {
    let r = RedisServer::start();
    let (e, _) = support::engine(&r.url).await;
    let n = Names::new();
    setup(&e, &n, "SKU-1", &[("eu-1", "10", true)]).await;
    let s = Shipment {
        shipment_id: n.n("s-1"),
        order_id: n.n("o-1"),
        location: n.n("eu-1"),
        lines: vec![ShipmentLine { line_id: "1".into(), sku: n.n("SKU-1"), quantity: q("2") }],
    };
    assert_eq!(e.ship(&s, None).await.unwrap().outcome, vec![LineOutcome::Pending]);
    assert_eq!(e.cancel_order(&n.n("ev-c"), &n.n("o-1"), Some(&[("1".into(), q("1"))])).await.unwrap().outcome, CancelOutcome::Pending);
    let placed = e.place_order(&order(&n, "o-1", &[("1", "SKU-1", "5")])).await.unwrap();
    confirmed(&placed.outcome);
    // In order: reserve 5, ship 2 (on_hand 8, reserved 3), cancel 1 (reserved 2).
    let lv = e.sku_state(&n.n("SKU-1")).await.unwrap().levels[&n.n("eu-1")];
    assert_eq!((lv.on_hand, lv.reserved), (q("8"), q("2")));
    // Replaying everything changes nothing.
    e.ship(&s, None).await.unwrap();
    e.cancel_order(&n.n("ev-c"), &n.n("o-1"), Some(&[("1".into(), q("1"))])).await.unwrap();
    e.place_order(&order(&n, "o-1", &[("1", "SKU-1", "5")])).await.unwrap();
    let lv = e.sku_state(&n.n("SKU-1")).await.unwrap().levels[&n.n("eu-1")];
    assert_eq!((lv.on_hand, lv.reserved), (q("8"), q("2")));
}

#[tokio::test]
async fn kept_ops_refused_at_their_placement_come_back_with_their_origin() {
    let r = RedisServer::start();
    let (e, _) = support::engine(&r.url).await;
    let n = Names::new();
    setup(&e, &n, "SKU-1", &[("eu-1", "3", true)]).await;
    let ship = |id: &str, qty: &str| Shipment {
        shipment_id: n.n(id),
        order_id: n.n("o-1"),
        location: n.n("eu-1"),
        lines: vec![ShipmentLine { line_id: "1".into(), sku: n.n("SKU-1"), quantity: q(qty) }],
    };
    let memo = CreditMemo {
        credit_memo_id: n.n("cm-1"),
        order_id: n.n("o-1"),
        lines: vec![CreditLine { line_id: "1".into(), sku: n.n("SKU-1"), quantity: q("9"), back_to_stock: true, location: None }],
    };
    // Before the placement all three are kept; two can only be refused later.
    assert_eq!(e.ship(&ship("s-ok", "1"), Some("origin of s-ok")).await.unwrap().outcome, vec![LineOutcome::Pending]);
    assert_eq!(e.ship(&ship("s-big", "50"), Some("origin of s-big")).await.unwrap().outcome, vec![LineOutcome::Pending]);
    assert_eq!(e.credit(&memo, Some("origin of cm-1")).await.unwrap().outcome, vec![LineOutcome::Pending]);
    let placed = e.place_order(&order(&n, "o-1", &[("1", "SKU-1", "2")])).await.unwrap();
    confirmed(&placed.outcome);
    let late: Vec<(&str, &str)> = placed.late_refusals.iter().map(|l| (l.origin.as_str(), l.code)).collect();
    assert_eq!(late, vec![("origin of s-big", "insufficient_on_hand"), ("origin of cm-1", "over_refund")]);
    assert!(placed.late_refusals[0].message.contains("line_id=\"1\""), "{}", placed.late_refusals[0].message);
    // Only the small shipment took effect: on hand 3 - 1, the line's 1 left reserved.
    let lv = e.sku_state(&n.n("SKU-1")).await.unwrap().levels[&n.n("eu-1")];
    assert_eq!((lv.on_hand, lv.reserved), (q("2"), q("1")));
    // A repeated placement reports them again (its first publish may have died) and changes nothing.
    let again = e.place_order(&order(&n, "o-1", &[("1", "SKU-1", "2")])).await.unwrap();
    assert_eq!(again.late_refusals, placed.late_refusals);
    let lv = e.sku_state(&n.n("SKU-1")).await.unwrap().levels[&n.n("eu-1")];
    assert_eq!((lv.on_hand, lv.reserved), (q("2"), q("1")));
}

#[tokio::test]
async fn repeats_change_nothing_and_republish() {
    let r = RedisServer::start();
    let (e, _) = support::engine(&r.url).await;
    let n = Names::new();
    setup(&e, &n, "SKU-1", &[("eu-1", "10", true)]).await;
    let adj = e.adjust_level(&n.n("ev-a"), &n.n("SKU-1"), &n.n("eu-1"), q("-3")).await.unwrap();
    let v1 = adj.updates[0].version;
    let again = e.adjust_level(&n.n("ev-a"), &n.n("SKU-1"), &n.n("eu-1"), q("-3")).await.unwrap();
    assert_eq!(available(&e, &n, "SKU-1").await, q("7"));
    assert!(again.updates[0].changed, "a repeat publishes the current availability again");
    assert_eq!(again.updates[0].version, v1);
    // Untracked kinds.
    let cfg = ItemConfig { tracking: Tracking::None, ..Default::default() };
    e.configure_item(&n.n("ev-none"), &n.n("SKU-1"), &cfg).await.unwrap();
    let ok = e.place_order(&order(&n, "o-1", &[("1", "SKU-1", "1000")])).await.unwrap();
    assert!(confirmed(&ok.outcome)[0].allocations.is_empty());
}

#[tokio::test]
async fn works_on_a_redis_cluster() {
    let c = support::RedisCluster::start();
    let (e, _) = support::engine(&c.urls).await;
    let n = Names::new();
    setup(&e, &n, "SKU-1", &[("eu-1", "4", true), ("eu-2", "3", true)]).await;
    setup(&e, &n, "SKU-2", &[("eu-2", "1", true)]).await;
    setup(&e, &n, "SKU-3", &[("eu-3", "1", true)]).await;
    let ok = e.place_order(&order(&n, "o-1", &[("1", "SKU-1", "6"), ("2", "SKU-2", "1")])).await.unwrap();
    assert_eq!(confirmed(&ok.outcome).len(), 2);
    let rej = e.place_order(&order(&n, "o-2", &[("1", "SKU-1", "1"), ("2", "SKU-3", "2")])).await.unwrap();
    rejected(&rej.outcome);
    assert_eq!(available(&e, &n, "SKU-1").await, q("1"));
    // The full audit walks every master: o-1 reserves on two skus.
    let report = reservoir::ops::audit::audit(&mut e.conn(), None, 7).await.unwrap();
    assert!(report.skus >= 3 && report.open_orders >= 2 && report.violations() == 0, "{}", report.table());
    let h = e.hold(&n.n("ev-h"), &n.n("cart"), &n.n("eu"), &n.n("SKU-1"), q("1"), Some(1)).await.unwrap();
    assert!(!h.outcome.confirmed, "an already expired hold is rejected");
    e.hold(&n.n("ev-h2"), &n.n("cart"), &n.n("eu"), &n.n("SKU-1"), q("1"), None).await.unwrap();
    e.clock().advance(Duration::from_secs(3600));
    assert_eq!(e.sweep_holds(100).await.unwrap().outcome.released, 1);
    // Scripts survive a SCRIPT FLUSH on every node (NOSCRIPT falls back to EVAL).
    for url in c.urls.split(',') {
        let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
        let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn).unwrap();
    }
    e.cancel_order(&n.n("ev-c"), &n.n("o-1"), None).await.unwrap();
    assert_eq!(available(&e, &n, "SKU-1").await, q("7"));
}

#[tokio::test]
async fn the_fence_names_keys_whose_last_message_is_older_than_one_before() {
    let r = RedisServer::start();
    let (e, _) = support::engine(&r.url).await;
    let n = Names::new();
    setup(&e, &n, "SKU-1", &[("eu-1", "4", true)]).await;
    let (sku, ch) = (n.n("SKU-1"), n.n("eu"));
    let version = e.sku_state(&sku).await.unwrap().version;
    let at = |v: u64, offset: i64| vec![(ch.clone(), v, 0, offset)];
    // In order: nothing to do, also for a repeat of the same version later.
    assert!(e.fence(&sku, &at(version - 1, 10)).await.unwrap().is_empty());
    assert!(e.fence(&sku, &at(version, 11)).await.unwrap().is_empty());
    assert!(e.fence(&sku, &at(version, 12)).await.unwrap().is_empty());
    // A newer version's ack arrives after an older one that landed later: stale.
    assert!(e.fence(&sku, &at(version + 2, 20)).await.unwrap().is_empty());
    let again = e.fence(&sku, &at(version + 1, 21)).await.unwrap();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!((again[0].channel.as_str(), again[0].availability.available, again[0].version), (ch.as_str(), Some(q("4")), version));
    // The same, with the acks in the other order.
    let late = e.fence(&sku, &at(version + 3, 31)).await.unwrap();
    assert!(late.is_empty());
    assert_eq!(e.fence(&sku, &at(version + 4, 30)).await.unwrap().len(), 1);
    // Once the current one has landed last, the key is clean again.
    assert!(e.fence(&sku, &at(version + 4, 40)).await.unwrap().is_empty());
    // The sku's state is untouched by the fence's fields.
    assert_eq!(available(&e, &n, "SKU-1").await, q("4"));
}

/// #18 item 10: on hand over all locations stays at most `Qty::MAX`, so the
/// scripts' sums stay exact and every reply parses; a level past it is
/// refused before anything is written.
#[tokio::test]
async fn levels_past_the_largest_quantity_are_refused_before_any_write() {
    let r = RedisServer::start();
    let (e, _) = support::engine(&r.url).await;
    let n = Names::new();
    let max = Qty::MAX.to_string();
    setup(&e, &n, "SKU-1", &[("eu-1", &max, true)]).await;
    let two = e.set_level(&n.n("ev-l2"), &n.n("SKU-1"), &n.n("eu-2"), q("1"), true).await;
    assert!(matches!(&two, Err(reservoir::store::StoreError::Invalid(m)) if m.contains("largest quantity")), "{:?}", two.map(|_| ()));
    let up = e.adjust_level(&n.n("ev-a1"), &n.n("SKU-1"), &n.n("eu-1"), q("0.0001")).await.unwrap();
    let refusal = up.outcome.expect_err("an adjust past the largest quantity is refused");
    assert_eq!(refusal.code, "invalid_data");
    assert_eq!(available(&e, &n, "SKU-1").await, Qty::MAX);
    // Within the range, the same location moves as before.
    e.adjust_level(&n.n("ev-a2"), &n.n("SKU-1"), &n.n("eu-1"), q("-1")).await.unwrap().outcome.unwrap();
    e.set_level(&n.n("ev-l3"), &n.n("SKU-1"), &n.n("eu-2"), q("1"), true).await.unwrap();
    assert_eq!(available(&e, &n, "SKU-1").await, Qty::MAX);
}

/// The remaining time to live of a key in ms (-1: none, -2: no such key).
fn pttl(r: &RedisServer, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(&mut r.conn()).unwrap()
}

fn order_key(n: &Names, id: &str) -> String {
    reservoir::store::keys::order(&n.n(id)).0
}

/// What a crash right before the placement's decision leaves: every sku
/// record written, the order key not (a decision is its only write).
fn forget_decision(r: &RedisServer, n: &Names, id: &str) {
    let (okey, plist) = reservoir::store::keys::order(&n.n(id));
    let _: () = redis::cmd("DEL").arg(&okey).arg(&plist).query(&mut r.conn()).unwrap();
}

#[tokio::test]
async fn lines_of_skus_not_in_the_order_do_not_settle_it() {
    let r = RedisServer::start();
    let (e, _) = support::engine(&r.url).await;
    let n = Names::new();
    setup(&e, &n, "SKU-1", &[("eu-1", "10", true)]).await;
    setup(&e, &n, "SKU-2", &[("eu-1", "10", true)]).await;
    confirmed(&e.place_order(&order(&n, "o-1", &[("1", "SKU-1", "2")])).await.unwrap().outcome);
    assert_eq!(pttl(&r, &order_key(&n, "o-1")), -1, "an open order does not expire");
    // A refused credit-memo line and a shipment line for a sku the order does not have.
    let memo = CreditMemo {
        credit_memo_id: n.n("cm-1"),
        order_id: n.n("o-1"),
        lines: vec![CreditLine { line_id: "1".into(), sku: n.n("SKU-2"), quantity: q("1"), back_to_stock: true, location: None }],
    };
    let c = e.credit(&memo, None).await.unwrap();
    assert!(matches!(&c.outcome[0], LineOutcome::Refused { code: "over_refund", .. }));
    assert_eq!(pttl(&r, &order_key(&n, "o-1")), -1, "a refused line of another sku settled the order while SKU-1 is reserved");
    let s = Shipment {
        shipment_id: n.n("s-1"),
        order_id: n.n("o-1"),
        location: n.n("eu-1"),
        lines: vec![ShipmentLine { line_id: "1".into(), sku: n.n("SKU-2"), quantity: q("1") }],
    };
    assert_eq!(e.ship(&s, None).await.unwrap().outcome, vec![LineOutcome::Applied]);
    assert_eq!(pttl(&r, &order_key(&n, "o-1")), -1, "a shipment line of another sku settled the order while SKU-1 is reserved");
    // The order's own sku settling it does.
    e.cancel_order(&n.n("ev-c"), &n.n("o-1"), None).await.unwrap();
    assert!(pttl(&r, &order_key(&n, "o-1")) > 0, "settled: the order's records expire");
}

#[tokio::test]
async fn a_placement_aborted_before_its_decision_keeps_its_reason() {
    let r = RedisServer::start();
    let (e, _) = support::engine(&r.url).await;
    let n = Names::new();
    setup(&e, &n, "SKU-1", &[("eu-1", "5", true)]).await;
    setup(&e, &n, "SKU-2", &[("eu-1", "1", true)]).await;
    let o = order(&n, "o-1", &[("1", "SKU-1", "2"), ("2", "SKU-2", "3")]);
    let first = e.place_order(&o).await.unwrap();
    let l = &rejected(&first.outcome)[0];
    assert_eq!((l.sku.clone(), l.reason, l.available), (n.n("SKU-2"), RejectReason::InsufficientStock, q("1")));
    // Crash after compensation, before the decision: the redelivery decides.
    forget_decision(&r, &n, "o-1");
    let again = e.place_order(&o).await.unwrap();
    assert_eq!(again.outcome, first.outcome, "no cancel was sent: the reason is SKU-2's stock");
    assert_eq!(available(&e, &n, "SKU-1").await, q("5"));
}

#[tokio::test]
async fn an_order_of_untracked_skus_expires_whichever_attempt_decided_it() {
    let r = RedisServer::start();
    let (e, _) = support::engine(&r.url).await;
    let n = Names::new();
    setup(&e, &n, "SKU-1", &[("eu-1", "0", true)]).await;
    e.configure_item(&n.n("ev-cfg"), &n.n("SKU-1"), &ItemConfig { tracking: Tracking::None, ..Default::default() }).await.unwrap();
    let o = order(&n, "o-1", &[("1", "SKU-1", "3")]);
    confirmed(&e.place_order(&o).await.unwrap().outcome);
    assert!(pttl(&r, &order_key(&n, "o-1")) > 0, "nothing is reserved: settled at once");
    // Decided, then a crash before the settlement (or a concurrent attempt
    // decided it and this one answered `was`): the repeat settles it.
    let okey = order_key(&n, "o-1");
    let _: () = redis::pipe()
        .cmd("HDEL").arg(&okey).arg(format!("d:{}", n.n("SKU-1"))).ignore()
        .cmd("HSET").arg(&okey).arg("nd").arg(0).ignore()
        .cmd("PERSIST").arg(&okey).ignore()
        .query(&mut r.conn())
        .unwrap();
    confirmed(&e.place_order(&o).await.unwrap().outcome);
    assert!(pttl(&r, &okey) > 0, "the order key of a settled order never expires");
}

#[tokio::test]
async fn a_hold_given_back_after_a_crash_is_swept_when_it_expires() {
    let r = RedisServer::start();
    let (e, clock) = support::engine(&r.url).await;
    let n = Names::new();
    setup(&e, &n, "SKU-1", &[("eu-1", "5", true)]).await;
    setup(&e, &n, "SKU-2", &[("eu-1", "1", true)]).await;
    assert!(e.hold(&n.n("ev-h"), &n.n("cart-a"), &n.n("eu"), &n.n("SKU-1"), q("2"), None).await.unwrap().outcome.confirmed);
    let mut o = order(&n, "o-1", &[("1", "SKU-1", "2"), ("2", "SKU-2", "3")]);
    o.cart_id = Some(n.n("cart-a"));
    rejected(&e.place_order(&o).await.unwrap().outcome);
    assert_eq!(available(&e, &n, "SKU-1").await, q("3"), "the cart's hold is given back");
    // Crash after the abort gave the hold back, before it was indexed (and
    // the sweep had dropped the sku while the order held the units).
    let ix = reservoir::store::keys::hold_index(reservoir::store::keys::hold_shard(&n.n("SKU-1")));
    let _: () = redis::pipe().cmd("ZREM").arg(&ix.zset).arg(n.n("SKU-1")).ignore().cmd("HDEL").arg(&ix.gens).arg(n.n("SKU-1")).ignore().query(&mut r.conn()).unwrap();
    forget_decision(&r, &n, "o-1");
    rejected(&e.place_order(&o).await.unwrap().outcome);
    clock.advance(Duration::from_secs(15 * 60 + 1));
    let swept = e.sweep_holds(100).await.unwrap();
    assert_eq!(swept.outcome.released, 1, "the given-back hold's expiry is swept");
    assert_eq!(available(&e, &n, "SKU-1").await, q("5"));
}

/// Places `o` (cart-a's order of SKU-1 and SKU-2) so that it fails after
/// SKU-1 was reserved and before SKU-2 (its record there is unreadable: a
/// crash at that point), then makes SKU-2 short, so its redelivery is
/// rejected and compensates SKU-1.
async fn fail_between_skus(r: &RedisServer, e: &Engine, n: &Names, o: &PlaceOrder) {
    let rec = reservoir::store::keys::SkuKeys::new(&n.n("SKU-2")).order(&o.order_id);
    let _: () = redis::cmd("SET").arg(&rec).arg("not a hash").query(&mut r.conn()).unwrap();
    assert!(e.place_order(o).await.is_err(), "the placement stops at SKU-2");
    assert_eq!(e.sku_state(&n.n("SKU-1")).await.unwrap().levels[&n.n("eu-1")].reserved, q("2"));
    let _: () = redis::cmd("DEL").arg(&rec).query(&mut r.conn()).unwrap();
    e.set_level(&n.n("ev-short"), &n.n("SKU-2"), &n.n("eu-1"), q("0"), true).await.unwrap();
}

/// cart-a holds 8 of SKU-1's 10, then checks out 2 of SKU-1 and 1 of SKU-2
/// (5 on hand); the placement stops between the skus (`fail_between_skus`).
async fn cart_order_stopped_between_skus(r: &RedisServer, e: &Engine, n: &Names) -> PlaceOrder {
    setup(e, n, "SKU-1", &[("eu-1", "10", true)]).await;
    setup(e, n, "SKU-2", &[("eu-1", "5", true)]).await;
    assert!(e.hold(&n.n("ev-ha"), &n.n("cart-a"), &n.n("eu"), &n.n("SKU-1"), q("8"), None).await.unwrap().outcome.confirmed);
    let mut o = order(n, "o-1", &[("1", "SKU-1", "2"), ("2", "SKU-2", "1")]);
    o.cart_id = Some(n.n("cart-a"));
    fail_between_skus(r, e, n, &o).await;
    o
}

#[tokio::test]
async fn an_aborted_order_gives_back_a_hold_only_where_it_fits() {
    let r = RedisServer::start();
    let (e, _) = support::engine(&r.url).await;
    let n = Names::new();
    let o = cart_order_stopped_between_skus(&r, &e, &n).await;
    // Meanwhile cart-b takes the units cart-a's hold had.
    assert!(e.hold(&n.n("ev-hb"), &n.n("cart-b"), &n.n("eu"), &n.n("SKU-1"), q("8"), None).await.unwrap().outcome.confirmed);
    rejected(&e.place_order(&o).await.unwrap().outcome);
    let lv = e.sku_state(&n.n("SKU-1")).await.unwrap().levels[&n.n("eu-1")];
    assert!(lv.reserved <= lv.on_hand, "reserved {} above on hand {}", lv.reserved, lv.on_hand);
    assert_eq!(lv.reserved, q("8"), "only cart-b's hold");
    let report = reservoir::ops::audit::audit(&mut e.conn(), None, 7).await.unwrap();
    assert_eq!(report.violations(), 0, "{}", report.table());
}

#[tokio::test]
async fn an_aborted_order_gives_back_no_hold_below_the_out_of_stock_threshold() {
    let r = RedisServer::start();
    let (e, _) = support::engine(&r.url).await;
    let n = Names::new();
    let o = cart_order_stopped_between_skus(&r, &e, &n).await;
    // Meanwhile the shop keeps 3 units back: a new hold of 8 no longer fits.
    let cfg = ItemConfig { out_of_stock_threshold: q("3"), ..Default::default() };
    e.configure_item(&n.n("ev-oos"), &n.n("SKU-1"), &cfg).await.unwrap();
    assert!(!e.hold(&n.n("ev-hb"), &n.n("cart-b"), &n.n("eu"), &n.n("SKU-1"), q("8"), None).await.unwrap().outcome.confirmed);
    rejected(&e.place_order(&o).await.unwrap().outcome);
    assert_eq!(e.sku_state(&n.n("SKU-1")).await.unwrap().levels[&n.n("eu-1")].reserved, Qty::ZERO, "the hold came back below the threshold");
    assert_eq!(available(&e, &n, "SKU-1").await, q("7"));
    // Nor at a location marked out of stock since.
    let n = Names::new();
    let o = cart_order_stopped_between_skus(&r, &e, &n).await;
    e.set_level(&n.n("ev-off"), &n.n("SKU-1"), &n.n("eu-1"), q("10"), false).await.unwrap();
    rejected(&e.place_order(&o).await.unwrap().outcome);
    assert_eq!(e.sku_state(&n.n("SKU-1")).await.unwrap().levels[&n.n("eu-1")].reserved, Qty::ZERO, "the hold came back at an out-of-stock location");
    let report = reservoir::ops::audit::audit(&mut e.conn(), None, 7).await.unwrap();
    assert_eq!(report.violations(), 0, "{}", report.table());
}

#[tokio::test]
async fn an_aborted_order_gives_back_no_hold_the_cart_released() {
    let r = RedisServer::start();
    let (e, _) = support::engine(&r.url).await;
    let n = Names::new();
    let o = cart_order_stopped_between_skus(&r, &e, &n).await;
    e.release_cart(&n.n("ev-rel"), &n.n("cart-a"), None).await.unwrap();
    rejected(&e.place_order(&o).await.unwrap().outcome);
    assert_eq!(e.sku_state(&n.n("SKU-1")).await.unwrap().levels[&n.n("eu-1")].reserved, Qty::ZERO, "the released cart got its hold back");
    // Nor one the cart replaced since and that is gone again.
    let mut o2 = order(&n, "o-2", &[("1", "SKU-1", "2"), ("2", "SKU-2", "1")]);
    o2.cart_id = Some(n.n("cart-a"));
    e.set_level(&n.n("ev-back"), &n.n("SKU-2"), &n.n("eu-1"), q("5"), true).await.unwrap();
    assert!(e.hold(&n.n("ev-ha2"), &n.n("cart-a"), &n.n("eu"), &n.n("SKU-1"), q("4"), None).await.unwrap().outcome.confirmed);
    let rec = reservoir::store::keys::SkuKeys::new(&n.n("SKU-2")).order(&o2.order_id);
    let _: () = redis::cmd("SET").arg(&rec).arg("not a hash").query(&mut r.conn()).unwrap();
    assert!(e.place_order(&o2).await.is_err());
    let _: () = redis::cmd("DEL").arg(&rec).query(&mut r.conn()).unwrap();
    assert!(e.hold(&n.n("ev-ha3"), &n.n("cart-a"), &n.n("eu"), &n.n("SKU-1"), q("1"), None).await.unwrap().outcome.confirmed);
    e.release_cart(&n.n("ev-rel2"), &n.n("cart-a"), Some(&[n.n("SKU-1")])).await.unwrap();
    e.set_level(&n.n("ev-short2"), &n.n("SKU-2"), &n.n("eu-1"), q("0"), true).await.unwrap();
    rejected(&e.place_order(&o2).await.unwrap().outcome);
    assert_eq!(e.sku_state(&n.n("SKU-1")).await.unwrap().levels[&n.n("eu-1")].reserved, Qty::ZERO, "an old hold came back after the cart replaced and released it");
}

#[tokio::test]
async fn early_shipments_and_credit_memos_whose_order_never_comes_are_dead_lettered() {
    let r = RedisServer::start();
    let (e, clock) = support::engine(&r.url).await;
    let n = Names::new();
    setup(&e, &n, "SKU-1", &[("eu-1", "10", true)]).await;
    let s = Shipment {
        shipment_id: n.n("s-1"),
        order_id: n.n("o-1"),
        location: n.n("eu-1"),
        lines: vec![ShipmentLine { line_id: "1".into(), sku: n.n("SKU-1"), quantity: q("2") }],
    };
    let memo = CreditMemo {
        credit_memo_id: n.n("cm-1"),
        order_id: n.n("o-1"),
        lines: vec![CreditLine { line_id: "1".into(), sku: n.n("SKU-1"), quantity: q("1"), back_to_stock: true, location: None }],
    };
    assert_eq!(e.ship(&s, Some("origin of s-1")).await.unwrap().outcome, vec![LineOutcome::Pending]);
    assert_eq!(e.cancel_order(&n.n("ev-c"), &n.n("o-1"), Some(&[("1".into(), q("1"))])).await.unwrap().outcome, CancelOutcome::Pending);
    clock.advance(Duration::from_secs(3600));
    assert_eq!(e.credit(&memo, Some("origin of cm-1")).await.unwrap().outcome, vec![LineOutcome::Pending]);
    let retention = e.config().order_retention;
    let refused = |eff: &reservoir::store::Effect<reservoir::store::Swept>| eff.late_refusals.iter().map(|l| (l.origin.clone(), l.code)).collect::<Vec<_>>();
    // Kept for the retention after the last of them.
    clock.advance(retention - Duration::from_secs(60));
    assert_eq!(refused(&e.sweep_holds(100).await.unwrap()), vec![]);
    clock.advance(Duration::from_secs(120));
    let want = vec![("origin of s-1".to_string(), "order_not_placed"), ("origin of cm-1".to_string(), "order_not_placed")];
    let swept = e.sweep_holds(100).await.unwrap();
    assert_eq!(refused(&swept), want, "an early shipment and credit memo whose order never came expire silently");
    assert!(swept.late_refusals[0].message.contains("data.order_id"), "{}", swept.late_refusals[0].message);
    // Until their dead letters are out, every sweep returns them again.
    assert_eq!(refused(&e.sweep_holds(100).await.unwrap()), want);
    e.forget_expired(&swept.late_refusals).await.unwrap();
    assert_eq!(refused(&e.sweep_holds(100).await.unwrap()), vec![]);
    // A placement after all that does not apply them (they were dead-lettered).
    confirmed(&e.place_order(&order(&n, "o-1", &[("1", "SKU-1", "3")])).await.unwrap().outcome);
    let lv = e.sku_state(&n.n("SKU-1")).await.unwrap().levels[&n.n("eu-1")];
    assert_eq!((lv.on_hand, lv.reserved), (q("10"), q("3")));
    // An order placed in time is not swept.
    let s2 = Shipment { shipment_id: n.n("s-2"), order_id: n.n("o-2"), ..s.clone() };
    assert_eq!(e.ship(&s2, Some("origin of s-2")).await.unwrap().outcome, vec![LineOutcome::Pending]);
    confirmed(&e.place_order(&order(&n, "o-2", &[("1", "SKU-1", "2")])).await.unwrap().outcome);
    clock.advance(retention + Duration::from_secs(60));
    assert_eq!(refused(&e.sweep_holds(100).await.unwrap()), vec![]);
}
