//! `reservoir inspect SKU`: everything the store holds about one sku, read
//! in one atomic pipeline (all of a sku's keys share a slot), as a table or
//! JSON. Reads only.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::domain::{availability, stocked_in, Availability, ItemConfig, Remaining, SkuState};
use crate::qty::Qty;
use crate::store::keys::SkuKeys;
use crate::store::reply::{self, US};
use crate::store::{Conn, StoreError};

/// One sku as stored.
#[derive(Debug, Serialize)]
pub struct Inspection {
    pub sku: String,
    /// Configured or has a level; false: the store has never heard of it.
    pub exists: bool,
    pub version: u64,
    pub config: ItemConfig,
    pub levels: Vec<LevelRow>,
    /// Units reserved beyond stock and still outstanding.
    pub backordered: Qty,
    pub preordered: Qty,
    pub holds: Vec<HoldRow>,
    /// Orders that still reserve units of this sku.
    pub orders: Vec<OrderRow>,
    /// Availability per channel the sku is stocked in (what was last
    /// published for it, or would be).
    pub channels: Vec<ChannelRow>,
}

#[derive(Debug, Serialize)]
pub struct LevelRow {
    pub location: String,
    pub on_hand: Qty,
    /// Held by carts and reserved by orders together.
    pub reserved: Qty,
    pub in_stock: bool,
}

#[derive(Debug, Serialize)]
pub struct HoldRow {
    pub cart_id: String,
    pub quantity: Qty,
    pub expires_at_ms: i64,
    /// Past its expiry, but still counted until the sweep (or any event of
    /// this sku) releases it.
    pub expired: bool,
    pub allocations: Vec<Allocation>,
}

#[derive(Debug, Serialize)]
pub struct OrderRow {
    pub order_id: String,
    pub lines: Vec<OrderLineRow>,
}

#[derive(Debug, Serialize)]
pub struct OrderLineRow {
    pub line_id: String,
    pub ordered: Qty,
    /// Still reserved, per location.
    pub allocations: Vec<Allocation>,
    pub backordered: Qty,
    pub preordered: Qty,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Allocation {
    pub location: String,
    pub quantity: Qty,
}

#[derive(Debug, Serialize)]
pub struct ChannelRow {
    pub channel: String,
    pub locations: Vec<String>,
    pub availability: Availability,
}

/// A sku's hashes as stored, read in one atomic step: `inv`, `holds` and
/// every order record (order id, fields), in HGETALL order.
pub struct RawSku {
    pub inv: Vec<String>,
    pub holds: Vec<String>,
    pub orders: Vec<(String, Vec<String>)>,
}

/// Reads a sku's hashes. All its keys share a slot, so one MULTI sees them
/// at one instant; the order keys are listed first (see
/// [`Conn::keys_with_prefix`]).
pub async fn read_raw(conn: &mut Conn, sku: &str) -> Result<RawSku, StoreError> {
    crate::store::check_id("sku", sku)?;
    let k = SkuKeys::new(sku);
    let order_prefix = k.order("");
    let order_keys = conn.keys_with_prefix(&order_prefix).await?;
    let mut pipe = redis::pipe();
    pipe.atomic().hgetall(&k.inv).hgetall(&k.holds);
    for key in &order_keys {
        pipe.hgetall(key);
    }
    let mut replies: Vec<Vec<String>> = pipe.query_async(conn).await?;
    if replies.len() != order_keys.len() + 2 {
        return Err(StoreError::Reply("short pipeline reply".into()));
    }
    let orders = replies.split_off(2);
    let holds = replies.pop().unwrap_or_default();
    let inv = replies.pop().unwrap_or_default();
    let orders = order_keys.iter().map(|key| key[order_prefix.len()..].to_string()).zip(orders).collect();
    Ok(RawSku { inv, holds, orders })
}

/// Reads the sku; `channel` limits the availability rows to one channel
/// (an unknown channel is an error naming the known ones).
pub async fn inspect(conn: &mut Conn, sku: &str, channel: Option<&str>, now_ms: i64) -> Result<Inspection, StoreError> {
    crate::store::check_id("sku", sku)?;
    let mut channels = crate::store::read_channels(conn).await?;
    if let Some(c) = channel {
        if !channels.contains_key(c) {
            let known: Vec<&str> = channels.keys().map(String::as_str).collect();
            return Err(StoreError::Invalid(format!("channel {c:?} is not configured; configured channels: {known:?}")));
        }
        channels.retain(|name, _| name == c);
    }
    let raw = read_raw(conn, sku).await?;
    let orders = raw.orders.iter().map(|(id, fields)| (id.clone(), fields.as_slice()));
    build(sku, &raw.inv, &raw.holds, orders, &channels, now_ms).map_err(StoreError::Reply)
}

/// The inspection from raw hash fields (HGETALL order): pure, for tests.
pub fn build<'a>(
    sku: &str,
    inv: &[String],
    holds: &[String],
    orders: impl Iterator<Item = (String, &'a [String])>,
    channels: &BTreeMap<String, Vec<String>>,
    now_ms: i64,
) -> Result<Inspection, String> {
    let state: SkuState = reply::sku_state(inv)?;
    let mut hold_rows = Vec::new();
    for pair in holds.chunks(2) {
        let [cart, v] = pair else { return Err("odd hold list".into()) };
        let f: Vec<&str> = v.split(US).collect();
        let (Some(q), Some(exp)) = (f.first(), f.get(1)) else { return Err(format!("hold of cart {cart:?} is unreadable: {v:?}")) };
        let expires_at_ms: i64 = exp.parse().map_err(|_| format!("hold of cart {cart:?} has expiry {exp:?}"))?;
        hold_rows.push(HoldRow {
            cart_id: cart.clone(),
            quantity: raw_qty(q)?,
            expires_at_ms,
            expired: expires_at_ms <= now_ms,
            allocations: allocations(&f[2..])?,
        });
    }
    let mut order_rows = Vec::new();
    for (order_id, fields) in orders {
        let m: BTreeMap<&str, &str> = fields.chunks(2).filter_map(|p| Some((p.first()?.as_str(), p.get(1)?.as_str()))).collect();
        if m.get("st") != Some(&"r") || m.get("c") != Some(&"1") {
            continue;
        }
        let mut lines = Vec::new();
        for line in m.get("ln").map(|l| l.split(US).collect::<Vec<_>>()).unwrap_or_default() {
            let field = |p: &str| m.get(format!("{p}:{line}").as_str()).copied().unwrap_or("0");
            let alloc = m.get(format!("a:{line}").as_str()).map(|a| a.split(US).collect::<Vec<_>>()).unwrap_or_default();
            lines.push(OrderLineRow {
                line_id: line.to_string(),
                ordered: raw_qty(field("q"))?,
                allocations: allocations(&alloc)?.into_iter().filter(|a| a.quantity.is_positive()).collect(),
                backordered: raw_qty(field("b"))?,
                preordered: raw_qty(field("p"))?,
            });
        }
        if lines.iter().any(|l| !l.allocations.is_empty()) {
            order_rows.push(OrderRow { order_id, lines });
        }
    }
    let channel_rows = channels
        .iter()
        .filter(|(_, locs)| stocked_in(&state, locs))
        .map(|(name, locs)| ChannelRow { channel: name.clone(), locations: locs.clone(), availability: availability(&state, locs) })
        .collect();
    Ok(Inspection {
        sku: sku.to_string(),
        exists: state.exists,
        version: state.version,
        config: state.config,
        levels: state
            .levels
            .iter()
            .map(|(loc, l)| LevelRow { location: loc.clone(), on_hand: l.on_hand, reserved: l.reserved, in_stock: l.in_stock })
            .collect(),
        backordered: state.backordered,
        preordered: state.preordered,
        holds: hold_rows,
        orders: order_rows,
        channels: channel_rows,
    })
}

fn raw_qty(s: &str) -> Result<Qty, String> {
    s.parse::<i64>().map(Qty).map_err(|_| format!("stored quantity {s:?} is not an integer"))
}

/// `loc US qty US loc US qty ...`
fn allocations(f: &[&str]) -> Result<Vec<Allocation>, String> {
    f.chunks(2)
        .filter(|p| p.len() == 2 && !p[0].is_empty())
        .map(|p| Ok(Allocation { location: p[0].to_string(), quantity: raw_qty(p[1])? }))
        .collect()
}

fn opt(q: Option<Qty>) -> String {
    q.map(|q| q.to_string()).unwrap_or_else(|| "-".into())
}

fn rem(r: Remaining) -> String {
    match r {
        Remaining::NotRelevant => "-".into(),
        Remaining::Unlimited => "unlimited".into(),
        Remaining::Units(q) => q.to_string(),
    }
}

fn ms_to_rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

impl Inspection {
    /// A table a person reads at a terminal.
    pub fn table(&self) -> String {
        let mut o = String::new();
        if !self.exists {
            let _ = writeln!(o, "sku {:?}: not in the store (never configured, no level)", self.sku);
            return o;
        }
        let c = &self.config;
        let _ = writeln!(o, "sku {}  version {}", self.sku, self.version);
        let beyond = |b: crate::domain::BeyondStock| if b.enabled { format!("on, limit {}", opt(b.limit)) } else { "off".into() };
        let _ = writeln!(
            o,
            "settings: tracking {:?}, backorders {}, preorder {}, out_of_stock_threshold {}, low_stock_threshold {}",
            c.tracking,
            beyond(c.backorders),
            beyond(c.preorder),
            c.out_of_stock_threshold,
            opt(c.low_stock_threshold)
        );
        let _ = writeln!(o, "outstanding beyond stock: backordered {}, preordered {}", self.backordered, self.preordered);
        let _ = writeln!(o, "\n{:<20} {:>12} {:>12} {:>9}", "LOCATION", "ON_HAND", "RESERVED", "IN_STOCK");
        for l in &self.levels {
            let _ = writeln!(o, "{:<20} {:>12} {:>12} {:>9}", l.location, l.on_hand.to_string(), l.reserved.to_string(), if l.in_stock { "yes" } else { "no" });
        }
        let _ = writeln!(o, "\n{:<16} {:<26} {:>12} {:>10} {:>12}  BACKORDER/PREORDER LEFT", "CHANNEL", "LOCATIONS", "STATUS", "AVAILABLE", "RESERVED");
        for ch in &self.channels {
            let a = &ch.availability;
            let _ = writeln!(
                o,
                "{:<16} {:<26} {:>12} {:>10} {:>12}  {}/{}",
                ch.channel,
                ch.locations.join(","),
                a.status.as_str(),
                opt(a.available),
                opt(a.reserved),
                rem(a.backorder_remaining),
                rem(a.preorder_remaining)
            );
        }
        if self.channels.is_empty() {
            let _ = writeln!(o, "(no channel sells from this sku's locations)");
        }
        let _ = writeln!(o, "\nholds: {}", self.holds.len());
        for h in &self.holds {
            let at: Vec<String> = h.allocations.iter().map(|a| format!("{} {}", a.location, a.quantity)).collect();
            let state = if h.expired { "  EXPIRED, not yet swept" } else { "" };
            let _ = writeln!(o, "  cart {:<20} {:>10}  until {}  at {}{state}", h.cart_id, h.quantity.to_string(), ms_to_rfc3339(h.expires_at_ms), at.join(", "));
        }
        let _ = writeln!(o, "\nopen reservations: {}", self.orders.len());
        for r in &self.orders {
            for l in &r.lines {
                let at: Vec<String> = l.allocations.iter().map(|a| format!("{} {}", a.location, a.quantity)).collect();
                let _ = writeln!(
                    o,
                    "  order {:<20} line {:<6} ordered {:>8}  reserved at {}  backordered {} preordered {}",
                    r.order_id,
                    l.line_id,
                    l.ordered.to_string(),
                    if at.is_empty() { "-".into() } else { at.join(", ") },
                    l.backordered,
                    l.preordered
                );
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn builds_every_part() {
        let us = "\u{1f}";
        let inv = s(&["ex", "1", "v", "9", "h:eu-1", "100000", "r:eu-1", "30000", "h:eu-2", "20000"]);
        let holds = s(&["cart-1", &format!("10000{us}5000{us}eu-1{us}10000"), "cart-2", &format!("5000{us}100{us}eu-1{us}5000")]);
        let open = s(&["st", "r", "c", "1", "ln", &format!("1{us}2"), "q:1", "20000", "a:1", &format!("eu-1{us}15000"), "q:2", "1", "a:2", &format!("eu-1{us}0")]);
        let shipped = s(&["st", "r", "c", "1", "ln", "1", "q:1", "10000", "a:1", &format!("eu-1{us}0")]);
        let rejected = s(&["st", "x", "rej", "insufficient_stock"]);
        let orders = vec![("o-1".to_string(), open.as_slice()), ("o-2".to_string(), shipped.as_slice()), ("o-3".to_string(), rejected.as_slice())];
        let channels = BTreeMap::from([("web".to_string(), s(&["eu-1", "eu-2"])), ("far".to_string(), s(&["us-1"]))]);
        let i = build("SKU-1", &inv, &holds, orders.into_iter(), &channels, 1000).unwrap();
        assert_eq!((i.exists, i.version, i.levels.len()), (true, 9, 2));
        assert_eq!(i.levels[0].reserved, Qty::units(3));
        assert_eq!(i.holds.len(), 2);
        assert!(!i.holds[0].expired && i.holds[1].expired);
        assert_eq!(i.holds[0].allocations, vec![Allocation { location: "eu-1".into(), quantity: Qty::units(1) }]);
        assert_eq!(i.orders.len(), 1, "only o-1 still reserves");
        assert_eq!(i.orders[0].lines[0].allocations[0].quantity, Qty(15000));
        assert!(i.orders[0].lines[1].allocations.is_empty());
        assert_eq!(i.channels.len(), 1, "not stocked at us-1");
        assert_eq!(i.channels[0].availability.available, Some(Qty::units(9)));
        let t = i.table();
        assert!(t.contains("version 9") && t.contains("EXPIRED") && t.contains("order o-1"), "{t}");
    }

    #[test]
    fn unknown_sku_says_so() {
        let i = build("nope", &[], &[], std::iter::empty(), &BTreeMap::new(), 0).unwrap();
        assert!(!i.exists);
        assert!(i.table().contains("not in the store"));
    }
}
