//! What must hold after the soak, each check a pure function of what was
//! sent (the ledger), what the output topics hold and what Redis holds.

use std::collections::{BTreeMap, BTreeSet};
use serde_json::Value;

use super::traffic::Ledger;

/// One message of an output topic.
#[derive(Clone, Debug)]
pub struct Out {
    pub key: String,
    pub value: Value,
    pub headers: BTreeMap<String, String>,
}

/// Every acknowledged order has results of one kind only; an order whose
/// cancel came first is rejected as `canceled`.
pub fn results(ledger: &Ledger, results: &[Out]) -> Vec<String> {
    let mut kinds: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut reasons: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for r in results {
        let Some(order) = r.value["data"]["order_id"].as_str() else { continue };
        kinds.entry(order).or_default().insert(r.value["type"].as_str().unwrap_or("?").to_string());
        for l in r.value["data"]["lines"].as_array().into_iter().flatten() {
            if let Some(reason) = l["reason"].as_str() {
                reasons.entry(order).or_default().insert(reason.to_string());
            }
        }
    }
    let mut v = Vec::new();
    for o in &ledger.orders {
        match kinds.get(o.as_str()) {
            None => v.push(format!("order {o}: no result was published")),
            Some(k) if k.len() > 1 => v.push(format!("order {o}: contradicting results {k:?}")),
            Some(_) => {}
        }
    }
    for o in &ledger.canceled_first {
        let rejected = kinds.get(o.as_str()).is_some_and(|k| k.len() == 1 && k.contains("inventory.reservation.rejected"));
        let canceled = reasons.get(o.as_str()).is_some_and(|r| r.len() == 1 && r.contains("canceled"));
        if ledger.orders.contains(o) && !(rejected && canceled) {
            v.push(format!("order {o}: canceled before its placement, but got {:?} with reasons {:?} (want rejected, canceled)", kinds.get(o.as_str()), reasons.get(o.as_str())));
        }
    }
    v
}

/// What the dead-letter topic holds against what was injected.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DeadLetterFindings {
    pub violations: Vec<String>,
    /// Dead letters published more than once (a worker died after publishing).
    pub again: u64,
    /// Shipments sent before their placement and refused `insufficient_on_hand`.
    pub refused_ship_first: BTreeSet<String>,
}

/// The dead-letter topic holds exactly the injected poison (each at least
/// once: a worker that dies after publishing one may publish it again),
/// with the origin headers; besides, a shipment sent before its placement
/// may be refused `insufficient_on_hand` when its location is short.
pub fn dead_letters(ledger: &Ledger, dead: &[Out]) -> DeadLetterFindings {
    let mut v = Vec::new();
    let mut refused = BTreeSet::new();
    let ship_first: BTreeSet<&str> = ledger.ship_first.iter().map(|f| f.id.as_str()).collect();
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for d in dead {
        // Poison that cannot be read is keyed by its id.
        let id = d.headers.get("dlq.event_id").cloned().unwrap_or_else(|| d.key.clone());
        for h in ["dlq.code", "dlq.message", "dlq.topic", "dlq.partition", "dlq.offset"] {
            if !d.headers.contains_key(h) {
                v.push(format!("dead letter {id}: no {h} header"));
            }
        }
        let code = d.headers.get("dlq.code").map(String::as_str);
        if ship_first.contains(id.as_str()) && code == Some("insufficient_on_hand") {
            refused.insert(id);
            continue;
        }
        match ledger.poison.get(&id) {
            None => v.push(format!("dead letter {id} ({code:?}) was not injected: a valid event was dead-lettered")),
            Some(code) if d.headers.get("dlq.code").map(String::as_str) != Some(*code) => {
                v.push(format!("dead letter {id}: code {:?}, injected as {code}", d.headers.get("dlq.code")))
            }
            Some(_) => {}
        }
        *seen.entry(id).or_default() += 1;
    }
    for (id, code) in &ledger.poison {
        if !seen.contains_key(id) {
            v.push(format!("poison {id} ({code}) never reached the dead-letter topic"));
        }
    }
    let again = seen.values().map(|n| n - 1).sum();
    DeadLetterFindings { violations: v, again, refused_ship_first: refused }
}

/// What the availability topic says against the store, per key.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AvailabilityFindings {
    pub violations: Vec<String>,
    /// Messages with a lower version than one before them on the same key
    /// (workers publish concurrently; subscribers keep the highest version).
    pub out_of_order: u64,
    /// Keys whose last message by offset is older than their highest version:
    /// a reader of the compacted topic that keeps the last message is stale
    /// (a violation: the worker publishes the current one again).
    pub stale_last: Vec<String>,
    /// Messages a worker published again because an older one landed last.
    pub fenced: u64,
}

/// Per key, the highest version published carries the current (status,
/// available) and is not ahead of the store; `current` maps a key to
/// (status, available, stored version).
pub fn availability(published: &[Out], current: &BTreeMap<String, (String, Value, u64)>) -> AvailabilityFindings {
    let mut f = AvailabilityFindings::default();
    let mut last: BTreeMap<&str, &Value> = BTreeMap::new();
    let mut best: BTreeMap<&str, &Value> = BTreeMap::new();
    for m in published {
        let d = &m.value["data"];
        if d["caused_by"] == "reservoir.fence" {
            f.fenced += 1;
        }
        if let Some(prev) = last.get(m.key.as_str()) {
            if d["version"].as_u64() < prev["version"].as_u64() {
                f.out_of_order += 1;
            }
        }
        last.insert(&m.key, d);
        if best.get(m.key.as_str()).is_none_or(|b| b["version"].as_u64() <= d["version"].as_u64()) {
            best.insert(&m.key, d);
        }
    }
    for (key, (status, available, version)) in current {
        match best.get(key.as_str()) {
            None => f.violations.push(format!("{key}: never published")),
            Some(d) => {
                if d["status"].as_str() != Some(status) || !same_number(&d["available"], available) {
                    f.violations.push(format!("{key}: highest version published says {} / {}, but it is {status} / {available}", d["status"], d["available"]));
                }
                if d["version"].as_u64().is_none_or(|p| p > *version) {
                    f.violations.push(format!("{key}: published version {} is ahead of the stored {version}", d["version"]));
                }
                if let Some(l) = last.get(key.as_str()).filter(|l| l["version"] != d["version"]) {
                    f.violations.push(format!(
                        "{key}: the last message on the topic has version {}, older than {} published before it (a reader of the compacted topic keeps the older)",
                        l["version"], d["version"]
                    ));
                    f.stale_last.push(key.clone());
                }
            }
        }
    }
    f
}

fn same_number(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Number(_), Value::Number(_)) => {
            let q = |v: &Value| crate::qty::Qty::parse(&v.to_string()).ok();
            q(a) == q(b)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn out(key: &str, value: Value, headers: &[(&str, &str)]) -> Out {
        Out { key: key.into(), value, headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
    }

    #[test]
    fn results_catch_missing_contradicting_and_wrong_cancels() {
        let mut l = Ledger::default();
        l.orders.extend(["o1".to_string(), "o2".to_string(), "o3".to_string(), "o4".to_string()]);
        l.canceled_first.insert("o4".into());
        let conf = |o: &str| out(o, json!({"type": "inventory.reservation.confirmed", "data": {"order_id": o, "lines": []}}), &[]);
        let rej = |o: &str, r: &str| out(o, json!({"type": "inventory.reservation.rejected", "data": {"order_id": o, "lines": [{"reason": r}]}}), &[]);
        let got = results(&l, &[conf("o1"), conf("o1"), conf("o2"), rej("o2", "insufficient_stock"), rej("o4", "canceled")]);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains("o2: contradicting") && got[1].contains("o3: no result"), "{got:?}");
        let got = results(&l, &[conf("o1"), conf("o2"), conf("o3"), rej("o4", "insufficient_stock")]);
        assert!(got.len() == 1 && got[0].contains("o4: canceled before"), "{got:?}");
    }

    #[test]
    fn dead_letters_must_be_exactly_the_poison() {
        let mut l = Ledger::default();
        l.poison.insert("poison-1".into(), "malformed_json");
        l.poison.insert("poison-2".into(), "negative_on_hand");
        let h = |code: &'static str, id: Option<&'static str>| {
            let mut v = vec![("dlq.code", code), ("dlq.message", "m"), ("dlq.topic", "t"), ("dlq.partition", "0"), ("dlq.offset", "1")];
            if let Some(id) = id {
                v.push(("dlq.event_id", id));
            }
            v
        };
        let ok = [out("poison-1", Value::Null, &h("malformed_json", None)), out("SKU-1", Value::Null, &h("negative_on_hand", Some("poison-2")))];
        assert_eq!(dead_letters(&l, &ok), DeadLetterFindings::default());
        let mut twice = ok.to_vec();
        twice.push(ok[0].clone());
        assert_eq!(dead_letters(&l, &twice).again, 1);
        let v = dead_letters(&l, &[ok[0].clone(), out("SKU-2", Value::Null, &h("invalid_data", Some("e-7")))]).violations;
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("was not injected") && v[1].contains("poison-2"), "{v:?}");
        // A shipment sent before its placement may be refused for a short location, for no other reason.
        l.ship_first.push(crate::soak::model::ShipFirst { id: "o1-ship-first-1".into(), order: "o1".into(), location: "L1".into(), line_id: "1".into(), sku: "A".into(), quantity: 1 });
        let short = out("o1", Value::Null, &h("insufficient_on_hand", Some("o1-ship-first-1")));
        let f = dead_letters(&l, &[ok[0].clone(), ok[1].clone(), short.clone()]);
        assert_eq!((f.violations.len(), f.refused_ship_first.len()), (0, 1), "{f:?}");
        let wrong = out("o1", Value::Null, &h("invalid_data", Some("o1-ship-first-1")));
        assert_eq!(dead_letters(&l, &[ok[0].clone(), ok[1].clone(), wrong]).violations.len(), 1);
    }

    #[test]
    fn availability_highest_version_against_the_store() {
        let a = |key: &str, status: &str, avail: Value, version: u64| out(key, json!({"data": {"status": status, "available": avail, "version": version}}), &[]);
        let published = [a("c/A", "in_stock", json!(5), 1), a("c/A", "in_stock", json!(3), 4), a("c/B", "out_of_stock", json!(0), 2)];
        let mut now = BTreeMap::from([("c/A".to_string(), ("in_stock".to_string(), json!(3.0), 6)), ("c/B".to_string(), ("out_of_stock".to_string(), json!(0), 2))]);
        assert_eq!(availability(&published, &now), AvailabilityFindings::default());
        // An older message after the newest: counted, and the key's last message is stale.
        let mut late = published.to_vec();
        late.push(a("c/A", "in_stock", json!(5), 2));
        let f = availability(&late, &now);
        assert_eq!((f.violations.len(), f.out_of_order, f.stale_last), (1, 1, vec!["c/A".to_string()]));
        assert!(f.violations[0].contains("last message on the topic has version 2, older than 4"), "{:?}", f.violations);
        // Published again after it: current once more, the older one only counted.
        late.push(a("c/A", "in_stock", json!(3), 6));
        now.insert("c/A".into(), ("in_stock".into(), json!(3), 6));
        let f = availability(&late, &now);
        assert_eq!((f.violations.len(), f.out_of_order), (0, 1), "{:?}", f.violations);
        now.insert("c/B".into(), ("in_stock".into(), json!(1), 3));
        now.insert("c/C".into(), ("in_stock".into(), json!(1), 1));
        now.insert("c/A".into(), ("in_stock".into(), json!(3), 3));
        let v = availability(&published, &now).violations;
        assert_eq!(v.len(), 3, "{v:?}");
    }
}
