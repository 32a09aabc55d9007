//! Output events: the CloudEvents envelope and the data of each type.

use serde_json::{json, Map, Value};

use crate::domain::{AvailabilityUpdate, HoldOutcome, OrderOutcome, Remaining};
use crate::qty::Qty;

/// A whole output event as JSON bytes, with a fresh unique id.
pub fn envelope(source: &str, ty: &str, data: Value) -> Vec<u8> {
    let time = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    serde_json::to_vec(&json!({
        "specversion": "1.0",
        "id": uuid::Uuid::new_v4().to_string(),
        "source": source,
        "type": ty,
        "time": time,
        "datacontenttype": "application/json",
        "data": data,
    }))
    .expect("JSON values serialize")
}

fn q(v: Qty) -> Value {
    serde_json::to_value(v).expect("quantities serialize")
}

fn oq(v: Option<Qty>) -> Value {
    v.map(q).unwrap_or(Value::Null)
}

/// `inventory.availability.changed` data.
pub fn availability(u: &AvailabilityUpdate, caused_by: &str) -> Value {
    let a = &u.availability;
    let mut m = Map::new();
    m.insert("channel".into(), json!(u.channel));
    m.insert("sku".into(), json!(u.sku));
    m.insert("status".into(), json!(a.status.as_str()));
    m.insert("available".into(), oq(a.available));
    m.insert("on_hand".into(), oq(a.on_hand));
    m.insert("reserved".into(), oq(a.reserved));
    m.insert("version".into(), json!(u.version));
    m.insert("caused_by".into(), json!(caused_by));
    for (name, r) in [("backorder_remaining", a.backorder_remaining), ("preorder_remaining", a.preorder_remaining)] {
        match r {
            Remaining::NotRelevant => {}
            Remaining::Unlimited => {
                m.insert(name.into(), Value::Null);
            }
            Remaining::Units(n) => {
                m.insert(name.into(), q(n));
            }
        }
    }
    Value::Object(m)
}

/// `inventory.reservation.confirmed` / `.rejected`: (type, data).
pub fn reservation(o: &OrderOutcome, order_id: &str, channel: &str, caused_by: &str) -> (&'static str, Value) {
    match o {
        OrderOutcome::Confirmed { lines } => (
            "inventory.reservation.confirmed",
            json!({
                "order_id": order_id,
                "channel": channel,
                "lines": lines.iter().map(|l| json!({
                    "line_id": l.line_id,
                    "sku": l.sku,
                    "quantity": q(l.quantity),
                    "allocations": l.allocations.iter().map(|a| json!({"location": a.location, "quantity": q(a.quantity)})).collect::<Vec<_>>(),
                    "backordered": q(l.backordered),
                    "preordered": q(l.preordered),
                })).collect::<Vec<_>>(),
                "caused_by": caused_by,
            }),
        ),
        OrderOutcome::Rejected { lines } => (
            "inventory.reservation.rejected",
            json!({
                "order_id": order_id,
                "channel": channel,
                "lines": lines.iter().map(|l| json!({
                    "line_id": l.line_id,
                    "sku": l.sku,
                    "requested": q(l.requested),
                    "available": q(l.available),
                    "reason": l.reason.as_str(),
                })).collect::<Vec<_>>(),
                "caused_by": caused_by,
            }),
        ),
    }
}

/// `inventory.hold.confirmed` / `.rejected`: (type, data).
pub fn hold(h: &HoldOutcome, cart_id: &str, channel: &str, sku: &str, caused_by: &str) -> (&'static str, Value) {
    let ty = if h.confirmed { "inventory.hold.confirmed" } else { "inventory.hold.rejected" };
    let expires = time::OffsetDateTime::from_unix_timestamp_nanos(h.expires_at_ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
    (
        ty,
        json!({
            "cart_id": cart_id,
            "channel": channel,
            "sku": sku,
            "requested": q(h.requested),
            "held": q(h.held),
            "available": oq(h.available),
            "expires_at": expires,
            "caused_by": caused_by,
        }),
    )
}
