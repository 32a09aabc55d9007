//! The soak's model of the final stock: every valid event sent and
//! acknowledged applied exactly once, in partition order.
//!
//! Which of two orders contending for the last units gets them depends on
//! how partitions interleave, which the contract leaves free; so the model
//! takes each order's decision from the results topic and checks that the
//! decisions add up: per sku and location, on hand is the catalog level
//! plus restocks and refunds back to stock minus shipments, and reserved is
//! what confirmed orders still hold (holds have expired by then). An event
//! applied twice, or lost, moves one of those two numbers.
//!
//! The soak's traffic keeps this exact: levels are set only while the
//! catalog loads, shipments take what an order's allocation holds at the
//! location (or, sent before the placement, ship from a location no channel
//! sells from, so they take no other order's units), and a refund is sent only once its order's shipments took
//! effect (its units are then shipped, so they go back to stock).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::bench::workload::ConfirmedOrder;
use crate::qty::Qty;

/// What one valid input event does to the stock, as the model needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fact {
    Set { sku: String, location: String, on_hand: i64 },
    Adjust { sku: String, location: String, delta: i64 },
    /// Per line (sku, quantity), all at `location`.
    Ship { order: String, location: String, lines: Vec<(String, i64)> },
    /// A whole-order cancel.
    Cancel { order: String },
    /// Units back to stock: (sku, location, quantity).
    Refund { lines: Vec<(String, String, i64)> },
    /// An order placed: per line (line_id, sku, quantity).
    Place { order: String, lines: Vec<(String, String, i64)> },
}

/// The fact of an event the soak sends, read from its JSON; None for
/// events the model does not need (holds, placements, channels).
pub fn fact(payload: &[u8]) -> Option<Fact> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let d = &v["data"];
    let s = |k: &str| d[k].as_str().map(str::to_string);
    let lines = || d["lines"].as_array().cloned().unwrap_or_default();
    Some(match v["type"].as_str()? {
        "inventory.level.set" => Fact::Set { sku: s("sku")?, location: s("location")?, on_hand: d["on_hand"].as_i64()? },
        "inventory.level.adjusted" => Fact::Adjust { sku: s("sku")?, location: s("location")?, delta: d["delta"].as_i64()? },
        "shipment.created" => Fact::Ship {
            order: s("order_id")?,
            location: s("location")?,
            lines: lines().iter().map(|l| Some((l["sku"].as_str()?.to_string(), l["quantity"].as_i64()?))).collect::<Option<_>>()?,
        },
        "order.canceled" if d.get("lines").is_none() => Fact::Cancel { order: s("order_id")? },
        "order.placed" => Fact::Place {
            order: s("order_id")?,
            lines: lines().iter().map(|l| Some((l["line_id"].as_str()?.to_string(), l["sku"].as_str()?.to_string(), l["quantity"].as_i64()?))).collect::<Option<_>>()?,
        },
        "credit_memo.created" => Fact::Refund {
            lines: lines()
                .iter()
                .filter(|l| l["back_to_stock"] == true)
                .map(|l| Some((l["sku"].as_str()?.to_string(), l["location"].as_str()?.to_string(), l["quantity"].as_i64()?)))
                .collect::<Option<_>>()?,
        },
        _ => return None,
    })
}

/// (on_hand, reserved) per (sku, location).
pub type Stock = BTreeMap<(String, String), (Qty, Qty)>;

/// A shipment of one order line sent before the order's placement, from a
/// location where the order is not allocated (the fulfilment center).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShipFirst {
    /// Its event id (and shipment id).
    pub id: String,
    pub order: String,
    pub location: String,
    pub line_id: String,
    pub sku: String,
    pub quantity: i64,
}

/// The stock the facts and the confirmed orders give. A shipment sent
/// before its placement deducts on hand at its location and, when the order
/// was confirmed, the line's reservation there first, then at its other
/// locations; unless it was dead-lettered (`refused`: its location's on
/// hand was short at the time, which depends on the interleaving).
pub fn expected(facts: &[Fact], confirmed: &[ConfirmedOrder], ship_first: &[ShipFirst], refused: &BTreeSet<String>) -> Stock {
    let mut s = Stock::new();
    let mut allocated: BTreeMap<&str, &ConfirmedOrder> = BTreeMap::new();
    for o in confirmed {
        allocated.insert(&o.order_id, o);
        for (_, sku, allocs) in &o.lines {
            for (loc, q) in allocs {
                s.entry((sku.clone(), loc.clone())).or_default().1 += Qty::units(*q);
            }
        }
    }
    let mut canceled = BTreeSet::new();
    for f in facts {
        match f {
            Fact::Set { sku, location, on_hand } => s.entry((sku.clone(), location.clone())).or_default().0 = Qty::units(*on_hand),
            Fact::Adjust { sku, location, delta } => s.entry((sku.clone(), location.clone())).or_default().0 += Qty::units(*delta),
            Fact::Ship { location, lines, .. } => {
                for (sku, q) in lines {
                    let e = s.entry((sku.clone(), location.clone())).or_default();
                    e.0 -= Qty::units(*q);
                    e.1 -= Qty::units(*q);
                }
            }
            Fact::Cancel { order } => {
                // The generator cancels a confirmed order it has not shipped.
                if let Some(o) = allocated.get(order.as_str()).filter(|_| canceled.insert(order.clone())) {
                    for (_, sku, allocs) in &o.lines {
                        for (loc, q) in allocs {
                            s.entry((sku.clone(), loc.clone())).or_default().1 -= Qty::units(*q);
                        }
                    }
                }
            }
            Fact::Refund { lines } => {
                for (sku, loc, q) in lines {
                    s.entry((sku.clone(), loc.clone())).or_default().0 += Qty::units(*q);
                }
            }
            Fact::Place { .. } => {}
        }
    }
    for f in ship_first.iter().filter(|f| !refused.contains(&f.id)) {
        s.entry((f.sku.clone(), f.location.clone())).or_default().0 -= Qty::units(f.quantity);
        let Some((_, _, allocs)) = allocated.get(f.order.as_str()).and_then(|o| o.lines.iter().find(|l| l.0 == f.line_id)) else { continue };
        let mut left = f.quantity;
        let here = allocs.iter().filter(|a| a.0 == f.location);
        for (loc, q) in here.chain(allocs.iter().filter(|a| a.0 != f.location)) {
            let take = left.min(*q);
            s.entry((f.sku.clone(), loc.clone())).or_default().1 -= Qty::units(take);
            left -= take;
        }
    }
    s
}

/// Every confirmed order has exactly the lines it was placed with (same
/// ids and skus), each allocated in full (the soak configures no
/// backorders or preorders), at locations of `locations`.
pub fn outcomes(facts: &[Fact], confirmed: &[ConfirmedOrder], locations: &BTreeSet<String>) -> Vec<String> {
    let placed: BTreeMap<&str, &Vec<(String, String, i64)>> = facts
        .iter()
        .filter_map(|f| match f {
            Fact::Place { order, lines } => Some((order.as_str(), lines)),
            _ => None,
        })
        .collect();
    let mut v = Vec::new();
    for o in confirmed {
        let Some(lines) = placed.get(o.order_id.as_str()) else {
            v.push(format!("order {}: confirmed, but never placed", o.order_id));
            continue;
        };
        let got: Vec<(String, String, i64)> = o.lines.iter().map(|(id, sku, a)| (id.clone(), sku.clone(), a.iter().map(|x| x.1).sum())).collect();
        let mut want = (*lines).clone();
        let mut got_sorted = got.clone();
        want.sort();
        got_sorted.sort();
        if want != got_sorted {
            v.push(format!("order {}: placed as {want:?} (line, sku, quantity), confirmed with allocations of {got_sorted:?}", o.order_id));
        }
        if let Some(l) = o.lines.iter().flat_map(|l| &l.2).find(|a| !locations.contains(&a.0) || a.1 <= 0) {
            v.push(format!("order {}: allocation {l:?} is not a positive quantity at a known location", o.order_id));
        }
    }
    v
}

/// Skus with more reserved than on hand over all their locations (the
/// soak's channels sell from every location, and no sku has backorders or
/// preorder): an oversell.
pub fn oversold(actual: &Stock) -> Vec<String> {
    let mut per_sku: BTreeMap<&str, (Qty, Qty)> = BTreeMap::new();
    for ((sku, _), (h, r)) in actual {
        let e = per_sku.entry(sku.as_str()).or_default();
        e.0 += *h;
        e.1 += *r;
    }
    per_sku.into_iter().filter(|(_, (h, r))| r > h).map(|(sku, (h, r))| format!("oversell: {sku} has {r} reserved over all locations, {h} on hand")).collect()
}

/// Refusals of shipments sent before their placement that the final stock
/// cannot explain. Their location (the fulfilment center) only loses units
/// after catalog load, so one refused for a short location must find on hand
/// there at the end below its quantity; more means a wrong refusal, which
/// the model, taking refusals as given, would not see.
pub fn unjustified_refusals(ship_first: &[ShipFirst], refused: &BTreeSet<String>, actual: &Stock) -> Vec<String> {
    ship_first
        .iter()
        .filter(|f| refused.contains(&f.id))
        .filter_map(|f| {
            let on_hand = actual.get(&(f.sku.clone(), f.location.clone())).map(|s| s.0).unwrap_or_default();
            (on_hand >= Qty::units(f.quantity)).then(|| {
                format!(
                    "shipment {} of {} {} was refused insufficient_on_hand at {}, which still has {on_hand} on hand and never gains units",
                    f.id, f.quantity, f.sku, f.location
                )
            })
        })
        .collect()
}

/// Differences between the model and what Redis holds.
pub fn compare(expected: &Stock, actual: &Stock) -> Vec<String> {
    let keys: BTreeSet<&(String, String)> = expected.keys().chain(actual.keys()).collect();
    let mut v = Vec::new();
    for k in keys {
        let e = expected.get(k).copied().unwrap_or_default();
        let a = actual.get(k).copied().unwrap_or_default();
        if e != a {
            v.push(format!(
                "model: {} at {}: Redis has on hand {}, reserved {}; the events sent give on hand {}, reserved {} (an event applied twice, or lost)",
                k.0, k.1, a.0, a.1, e.0, e.1
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(ty: &str, data: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"type": ty, "data": data})).unwrap()
    }

    #[test]
    fn reads_the_facts_it_needs() {
        assert_eq!(
            fact(&ev("inventory.level.adjusted", json!({"sku": "A", "location": "L1", "delta": 5}))),
            Some(Fact::Adjust { sku: "A".into(), location: "L1".into(), delta: 5 })
        );
        let ship = json!({"shipment_id": "s", "order_id": "o", "location": "L2", "lines": [{"line_id": "1", "sku": "A", "quantity": 2}]});
        assert_eq!(fact(&ev("shipment.created", ship)), Some(Fact::Ship { order: "o".into(), location: "L2".into(), lines: vec![("A".into(), 2)] }));
        let memo = json!({"order_id": "o", "lines": [{"line_id": "1", "sku": "A", "quantity": 1, "back_to_stock": true, "location": "L2"}, {"line_id": "2", "sku": "B", "quantity": 1, "back_to_stock": false}]});
        assert_eq!(fact(&ev("credit_memo.created", memo)), Some(Fact::Refund { lines: vec![("A".into(), "L2".into(), 1)] }));
        assert_eq!(fact(&ev("order.canceled", json!({"order_id": "o"}))), Some(Fact::Cancel { order: "o".into() }));
        assert_eq!(fact(&ev("order.canceled", json!({"order_id": "o", "lines": []}))), None);
        assert_eq!(fact(&ev("cart.line.held", json!({}))), None);
        let placed = json!({"order_id": "o", "channel": "c", "lines": [{"line_id": "1", "sku": "A", "quantity": 2}]});
        assert_eq!(fact(&ev("order.placed", placed)), Some(Fact::Place { order: "o".into(), lines: vec![("1".into(), "A".into(), 2)] }));
    }

    #[test]
    fn an_oversell_is_counted_over_all_locations() {
        let u = Qty::units;
        let k = |l: &str| ("A".to_string(), l.to_string());
        let mut s = Stock::from([(k("L1"), (u(6), u(7))), (k("L2"), (u(5), u(0)))]);
        assert!(oversold(&s).is_empty());
        s.insert(k("L2"), (u(0), u(0)));
        assert_eq!(oversold(&s), vec!["oversell: A has 7 reserved over all locations, 6 on hand".to_string()]);
    }

    #[test]
    fn confirmed_orders_match_their_placement() {
        let facts = [Fact::Place { order: "o1".into(), lines: vec![("1".into(), "A".into(), 3), ("2".into(), "B".into(), 1)] }];
        let locs = BTreeSet::from(["L1".to_string(), "L2".to_string()]);
        let ok = ConfirmedOrder { order_id: "o1".into(), lines: vec![("2".into(), "B".into(), vec![("L2".into(), 1)]), ("1".into(), "A".into(), vec![("L1".into(), 2), ("L2".into(), 1)])] };
        assert!(outcomes(&facts, std::slice::from_ref(&ok), &locs).is_empty());
        let mut short = ok.clone();
        short.lines[1].2.pop();
        let mut elsewhere = ok.clone();
        elsewhere.lines[0].2[0].0 = "L9".into();
        let unknown = ConfirmedOrder { order_id: "o2".into(), lines: vec![] };
        let v = outcomes(&facts, &[short, elsewhere, unknown], &locs);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v[0].contains("placed as") && v[1].contains("L9") && v[2].contains("never placed"), "{v:?}");
    }

    #[test]
    fn adds_up_and_catches_an_event_applied_twice() {
        let key = |s: &str, l: &str| (s.to_string(), l.to_string());
        let o1 = ConfirmedOrder { order_id: "o1".into(), lines: vec![("1".into(), "A".into(), vec![("L1".into(), 2), ("L2".into(), 1)])] };
        let o2 = ConfirmedOrder { order_id: "o2".into(), lines: vec![("1".into(), "A".into(), vec![("L1".into(), 3)])] };
        let o3 = ConfirmedOrder { order_id: "o3".into(), lines: vec![("1".into(), "A".into(), vec![("L2".into(), 1)])] };
        let facts = vec![
            Fact::Set { sku: "A".into(), location: "L1".into(), on_hand: 10 },
            Fact::Set { sku: "A".into(), location: "L2".into(), on_hand: 4 },
            Fact::Ship { order: "o1".into(), location: "L1".into(), lines: vec![("A".into(), 2)] },
            Fact::Cancel { order: "o2".into() },
            // A cancel repeated by the generator's producer changes nothing more.
            Fact::Cancel { order: "o2".into() },
            Fact::Adjust { sku: "A".into(), location: "L2".into(), delta: 5 },
            Fact::Refund { lines: vec![("A".into(), "L1".into(), 1)] },
        ];
        let e = expected(&facts, &[o1.clone(), o2.clone(), o3.clone()], &[], &BTreeSet::new());
        // L1: 10 - 2 + 1 on hand; o1's 2 shipped, o2's 3 canceled. L2: 4 + 5; o1's 1 and o3's 1 still reserved.
        let u = Qty::units;
        assert_eq!(e, Stock::from([(key("A", "L1"), (u(9), u(0))), (key("A", "L2"), (u(9), u(2)))]));
        assert!(compare(&e, &e).is_empty());
        let mut twice = e.clone();
        twice.insert(key("A", "L2"), (u(14), u(2)));
        let v = compare(&e, &twice);
        assert!(v.len() == 1 && v[0].contains("A at L2") && v[0].contains("has on hand 14, reserved 2") && v[0].contains("give on hand 9, reserved 2"), "{v:?}");

        // Shipped before placement from L2: o1's line is allocated 1 at L2 and 2 at L1.
        let sf = |id: &str, order: &str, q| ShipFirst { id: id.into(), order: order.into(), location: "L2".into(), line_id: "1".into(), sku: "A".into(), quantity: q };
        let first = [sf("s1", "o1", 2), sf("s9", "o9", 1), sf("s8", "o8", 5)];
        let e = expected(&facts[..2], &[o1], &first, &BTreeSet::from(["s8".to_string()]));
        // o1 confirmed: 2 off L2's on hand, its reservation 1 at L2 then 1 at L1. o9 rejected: 1 off L2. s8 refused: nothing.
        assert_eq!(e, Stock::from([(key("A", "L1"), (u(10), u(1))), (key("A", "L2"), (u(1), u(0)))]));
    }

    #[test]
    fn a_refusal_needs_a_short_location_at_the_end() {
        let sf = |id: &str, q| ShipFirst { id: id.into(), order: "o".into(), location: "FC".into(), line_id: "1".into(), sku: "A".into(), quantity: q };
        let first = [sf("s1", 3), sf("s2", 2), sf("s3", 9)];
        let stock = Stock::from([(("A".to_string(), "FC".to_string()), (Qty::units(2), Qty::units(0)))]);
        // s1 (3 > 2 left) may have been refused; s2 (2 left) may not; s3 was not refused.
        let v = unjustified_refusals(&first, &BTreeSet::from(["s1".to_string(), "s2".to_string()]), &stock);
        assert!(v.len() == 1 && v[0].contains("shipment s2 of 2 A") && v[0].contains("still has 2 on hand"), "{v:?}");
    }
}
