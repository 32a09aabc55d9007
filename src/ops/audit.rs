//! `reservoir audit`: checks that every sku's counters agree with the
//! records they count. Reads only.
//!
//! - `r:<loc>` (reserved) equals the holds at that location plus what open
//!   order reservations still hold there;
//! - `bu` / `pu` (units beyond stock) equal the outstanding backordered /
//!   preordered units of open orders;
//! - and, as a warning only, reserved at most on hand where the sku sells
//!   no backorders or preorders: that follows from a count lowered after
//!   the reservations (a level.set or adjustment), or is an oversell.
//!
//! A full audit walks the keyspace twice with SCAN (order records, then
//! skus) and re-reads every sku that looks wrong in one atomic step before
//! reporting it, so a busy system yields no false findings.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;

use super::inspect::read_raw;
use crate::domain::Tracking;
use crate::qty::Qty;
use crate::store::keys::{self, SkuKeys};
use crate::store::reply::{self, US};
use crate::store::{Conn, StoreError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `r:<loc>` differs from holds + open reservations there.
    Reserved,
    /// `bu` / `pu` differ from the open orders' outstanding units.
    BeyondStock,
    /// A stored value cannot be read.
    Unreadable,
    /// Reserved exceeds on hand without backorders or preorder (warning).
    ReservedOverOnHand,
}

/// One disagreement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub sku: String,
    pub kind: Kind,
    pub message: String,
}

impl Finding {
    /// A broken invariant, not a warning.
    pub fn is_violation(&self) -> bool {
        self.kind != Kind::ReservedOverOnHand
    }
}

/// What the records of one sku add up to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    pub reserved: BTreeMap<String, i64>,
    pub backordered: i64,
    pub preordered: i64,
    /// Open order reservations counted.
    pub open_orders: u64,
}

fn int(s: &str, what: &str) -> Result<i64, String> {
    s.parse().map_err(|_| format!("{what} {s:?} is not an integer"))
}

/// Adds `loc US qty US ...` to the map; returns the units added.
fn add_alloc(into: &mut BTreeMap<String, i64>, fields: &[&str], what: &str) -> Result<i64, String> {
    let mut added = 0;
    for p in fields.chunks(2).filter(|p| p.len() == 2 && !p[0].is_empty()) {
        let n = int(p[1], what)?;
        *into.entry(p[0].to_string()).or_default() += n;
        added += n;
    }
    Ok(added)
}

impl Expected {
    /// One order record (HGETALL fields): counted when it reserved here
    /// (`st` r, `c` 1).
    pub fn add_order(&mut self, order_id: &str, fields: &[String]) -> Result<(), String> {
        let m: BTreeMap<&str, &str> = fields.chunks(2).filter_map(|p| Some((p.first()?.as_str(), p.get(1)?.as_str()))).collect();
        if m.get("st") != Some(&"r") || m.get("c") != Some(&"1") {
            return Ok(());
        }
        let what = format!("order {order_id:?}");
        let mut any = false;
        for line in m.get("ln").map(|l| l.split(US).collect::<Vec<_>>()).unwrap_or_default() {
            if let Some(a) = m.get(format!("a:{line}").as_str()) {
                any |= add_alloc(&mut self.reserved, &a.split(US).collect::<Vec<_>>(), &what)? != 0;
            }
            self.backordered += m.get(format!("b:{line}").as_str()).map(|v| int(v, &what)).transpose()?.unwrap_or(0);
            self.preordered += m.get(format!("p:{line}").as_str()).map(|v| int(v, &what)).transpose()?.unwrap_or(0);
        }
        self.open_orders += any as u64;
        Ok(())
    }

    /// The `holds` hash (HGETALL fields): cart -> qty US expires US allocation.
    pub fn add_holds(&mut self, holds: &[String]) -> Result<(), String> {
        for pair in holds.chunks(2) {
            let [cart, v] = pair else { return Err("odd hold list".into()) };
            let f: Vec<&str> = v.split(US).collect();
            if f.len() < 2 {
                return Err(format!("hold of cart {cart:?} is unreadable: {v:?}"));
            }
            add_alloc(&mut self.reserved, &f[2..], &format!("hold of cart {cart:?}"))?;
        }
        Ok(())
    }
}

/// Compares a sku's `inv` fields with what its records add up to.
pub fn check(sku: &str, inv: &[String], exp: &Expected) -> Vec<Finding> {
    let finding = |kind, message: String| Finding { sku: sku.to_string(), kind, message };
    let q = |raw: i64| Qty(raw).to_string();
    let mut stored: BTreeMap<String, i64> = BTreeMap::new();
    let mut on_hand: BTreeMap<&str, i64> = BTreeMap::new();
    let (mut bu, mut pu) = (0, 0);
    let mut sells_beyond = false;
    let mut quantity = true;
    for pair in inv.chunks(2) {
        let [k, v] = pair else { return vec![finding(Kind::Unreadable, "odd field list".into())] };
        let parsed = match k.as_str() {
            "bu" => int(v, "bu").map(|n| bu = n),
            "pu" => int(v, "pu").map(|n| pu = n),
            "cfg" => reply::decode_config(v).map(|c| {
                sells_beyond = c.backorders.enabled || c.preorder.enabled;
                quantity = c.tracking == Tracking::Quantity;
            }),
            _ => match (k.strip_prefix("r:"), k.strip_prefix("h:")) {
                (Some(loc), _) => int(v, k).map(|n| {
                    stored.insert(loc.to_string(), n);
                }),
                (_, Some(loc)) => int(v, k).map(|n| {
                    on_hand.insert(loc, n);
                }),
                _ => Ok(()),
            },
        };
        if let Err(e) = parsed {
            return vec![finding(Kind::Unreadable, e)];
        }
    }
    let mut out = Vec::new();
    let locations: std::collections::BTreeSet<&String> = stored.keys().chain(exp.reserved.keys()).collect();
    for loc in locations {
        let (s, e) = (stored.get(loc).copied().unwrap_or(0), exp.reserved.get(loc).copied().unwrap_or(0));
        if s != e {
            out.push(finding(Kind::Reserved, format!("sku {sku:?} at {loc:?}: reserved is {} but its holds and open reservations add up to {}", q(s), q(e))));
        }
    }
    for (name, s, e) in [("backordered", bu, exp.backordered), ("preordered", pu, exp.preordered)] {
        if s != e {
            out.push(finding(Kind::BeyondStock, format!("sku {sku:?}: {name} is {} but its open orders add up to {}", q(s), q(e))));
        }
    }
    if quantity && !sells_beyond {
        for (loc, r) in &stored {
            let h = on_hand.get(loc.as_str()).copied().unwrap_or(0);
            if *r > h {
                out.push(finding(
                    Kind::ReservedOverOnHand,
                    format!("sku {sku:?} at {loc:?}: reserved {} exceeds on hand {} (a count lowered after the reservations, or an oversell)", q(*r), q(h)),
                ));
            }
        }
    }
    out
}

/// Audits one sku from one atomic read.
pub async fn audit_sku(conn: &mut Conn, sku: &str) -> Result<Vec<Finding>, StoreError> {
    let raw = read_raw(conn, sku).await?;
    let mut exp = Expected::default();
    let mut bad = Vec::new();
    for (id, fields) in &raw.orders {
        if let Err(e) = exp.add_order(id, fields) {
            bad.push(e);
        }
    }
    if let Err(e) = exp.add_holds(&raw.holds) {
        bad.push(e);
    }
    if !bad.is_empty() {
        return Ok(bad.into_iter().map(|m| Finding { sku: sku.to_string(), kind: Kind::Unreadable, message: m }).collect());
    }
    Ok(check(sku, &raw.inv, &exp))
}

/// The result of a full audit.
#[derive(Debug, Default, Serialize)]
pub struct AuditReport {
    pub skus: u64,
    pub open_orders: u64,
    pub findings: Vec<Finding>,
}

impl AuditReport {
    pub fn violations(&self) -> usize {
        self.findings.iter().filter(|f| f.is_violation()).count()
    }

    pub fn table(&self) -> String {
        let mut o = String::new();
        for f in &self.findings {
            let _ = writeln!(o, "{}: {}", if f.is_violation() { "VIOLATION" } else { "warning" }, f.message);
        }
        let _ = writeln!(
            o,
            "audited {} sku(s) with {} open order reservation(s): {} violation(s), {} warning(s)",
            self.skus,
            self.open_orders,
            self.violations(),
            self.findings.len() - self.violations()
        );
        o
    }
}

/// Audits every sku whose id starts with `sku_prefix`, SCANning `page`
/// keys at a time on every node. Memory grows with the skus that have open
/// reservations, not with the catalog.
pub async fn audit(conn: &mut Conn, sku_prefix: Option<&str>, page: usize) -> Result<AuditReport, StoreError> {
    let wanted = |sku: &String| sku_prefix.is_none_or(|p| sku.starts_with(p));
    let nodes = conn.scan_nodes().await?;
    let mut report = AuditReport::default();

    // Pass 1: what open order records reserve, per sku.
    let mut expected: BTreeMap<String, Expected> = BTreeMap::new();
    let mut suspects: Vec<String> = Vec::new();
    for node in &nodes {
        let mut cursor = 0;
        loop {
            let (next, page_keys) = conn.scan_page(node, cursor, keys::ORDER_RECORD_PATTERN, page, "hash").await?;
            let records: Vec<(String, String, Vec<String>)> = stream::iter(page_keys.into_iter().filter_map(|k| Some((keys::sku_of_order_key(&k).filter(wanted)?, k))))
                .map(|(sku, key)| {
                    let mut c = conn.clone();
                    async move {
                        let fields: Vec<String> = redis::cmd("HGETALL").arg(&key).query_async(&mut c).await?;
                        Ok::<_, StoreError>((sku, key, fields))
                    }
                })
                .buffered(64)
                .try_collect()
                .await?;
            for (sku, key, fields) in records {
                let order_id = key.rsplit_once(":o:").map(|(_, o)| o.to_string()).unwrap_or_default();
                if expected.entry(sku.clone()).or_default().add_order(&order_id, &fields).is_err() {
                    suspects.push(sku);
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }

    report.open_orders = expected.values().map(|e| e.open_orders).sum();

    // Pass 2: every sku's counters and holds against pass 1.
    for node in &nodes {
        let mut cursor = 0;
        loop {
            let (next, page_keys) = conn.scan_page(node, cursor, keys::INV_PATTERN, page, "hash").await?;
            let skus: Vec<String> = page_keys.iter().filter_map(|k| keys::sku_of_inv_key(k)).filter(wanted).collect();
            let read: Vec<(String, Vec<String>, Vec<String>)> = stream::iter(skus)
                .map(|sku| {
                    let mut c = conn.clone();
                    async move {
                        let k = SkuKeys::new(&sku);
                        let (inv, holds): (Vec<String>, Vec<String>) = redis::pipe().atomic().hgetall(&k.inv).hgetall(&k.holds).query_async(&mut c).await?;
                        Ok::<_, StoreError>((sku, inv, holds))
                    }
                })
                .buffered(64)
                .try_collect()
                .await?;
            for (sku, inv, holds) in read {
                report.skus += 1;
                let mut exp = expected.remove(&sku).unwrap_or_default();
                if exp.add_holds(&holds).is_err() || !check(&sku, &inv, &exp).is_empty() {
                    suspects.push(sku);
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }

    // The passes saw each sku at different instants: re-read suspects atomically.
    suspects.sort();
    suspects.dedup();
    for sku in suspects {
        report.findings.extend(audit_sku(conn, &sku).await?);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn us(parts: &[&str]) -> String {
        parts.join("\u{1f}")
    }

    fn expected(orders: &[Vec<String>], holds: &[String]) -> Expected {
        let mut e = Expected::default();
        for (i, o) in orders.iter().enumerate() {
            e.add_order(&format!("o-{i}"), o).unwrap();
        }
        e.add_holds(holds).unwrap();
        e
    }

    #[test]
    fn counters_that_match_their_records_pass() {
        let open = s(&["st", "r", "c", "1", "ln", &us(&["1", "2"]), "a:1", &us(&["wh-1", "20000", "wh-2", "10000"]), "a:2", &us(&["wh-1", "0"]), "b:1", "0"]);
        let uncounted = s(&["st", "r", "c", "0", "ln", "1", "a:1", &us(&["wh-1", "50000"])]);
        let rejected = s(&["st", "x", "rej", &us(&["insufficient_stock", "0"])]);
        let holds = s(&["cart-1", &us(&["10000", "99", "wh-1", "10000"])]);
        let e = expected(&[open, uncounted, rejected], &holds);
        assert_eq!(e.reserved, BTreeMap::from([("wh-1".to_string(), 30000), ("wh-2".to_string(), 10000)]));
        assert_eq!(e.open_orders, 1);
        let inv = s(&["ex", "1", "h:wh-1", "50000", "r:wh-1", "30000", "h:wh-2", "10000", "r:wh-2", "10000"]);
        assert_eq!(check("S", &inv, &e), vec![]);
    }

    #[test]
    fn each_disagreement_is_named() {
        let open = s(&["st", "r", "c", "1", "ln", "1", "a:1", &us(&["wh-1", "20000"]), "b:1", "10000"]);
        let e = expected(&[open], &[]);
        // Reserved one unit too many, backordered not recorded, and over on hand.
        let inv = s(&["ex", "1", "h:wh-1", "10000", "r:wh-1", "30000"]);
        let f = check("S", &inv, &e);
        let kinds: Vec<Kind> = f.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, vec![Kind::Reserved, Kind::BeyondStock, Kind::ReservedOverOnHand], "{f:#?}");
        assert!(f[0].message.contains("reserved is 3 but its holds and open reservations add up to 2"), "{}", f[0].message);
        assert!(f[0].is_violation() && !f[2].is_violation());
        // With backorders on, more reserved than on hand is expected.
        let cfg = reply::encode_config(&crate::domain::ItemConfig { backorders: crate::domain::BeyondStock { enabled: true, limit: None }, ..Default::default() });
        let inv = s(&["ex", "1", "cfg", &cfg, "h:wh-1", "10000", "r:wh-1", "20000", "bu", "10000"]);
        assert_eq!(check("S", &inv, &e), vec![]);
    }

    #[test]
    fn unreadable_values_are_findings() {
        let f = check("S", &s(&["r:wh-1", "lots"]), &Expected::default());
        assert_eq!(f[0].kind, Kind::Unreadable);
        assert!(Expected::default().add_holds(&s(&["cart", "nonsense"])).is_err());
    }
}
