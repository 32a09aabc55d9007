//! Decoding input messages: CloudEvents 1.0 structured JSON, checked against
//! the contract, with the dead-letter code of every failure.

use serde_json::Value;

use super::fields::{check_id, FieldError, Obj};
use crate::domain::{BeyondStock, ItemConfig, Tracking};
use crate::qty::Qty;
use crate::store::{CreditLine, CreditMemo, OrderLine, PlaceOrder, Shipment, ShipmentLine};

/// Which input topic a message came from (types belong to one topic each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicKind {
    Stock,
    Carts,
    Orders,
    Shipments,
    CreditMemos,
}

impl TopicKind {
    pub const ALL: [TopicKind; 5] = [TopicKind::Stock, TopicKind::Carts, TopicKind::Orders, TopicKind::Shipments, TopicKind::CreditMemos];

    pub fn default_name(self) -> &'static str {
        match self {
            TopicKind::Stock => "inventory.stock",
            TopicKind::Carts => "shop.carts",
            TopicKind::Orders => "shop.orders",
            TopicKind::Shipments => "shop.shipments",
            TopicKind::CreditMemos => "shop.credit-memos",
        }
    }
}

/// A valid input event.
#[derive(Clone, Debug, PartialEq)]
pub struct InputEvent {
    pub id: String,
    pub source: String,
    pub kind: &'static str,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    ChannelConfigured { channel: String, locations: Vec<String> },
    ItemConfigured { sku: String, config: ItemConfig },
    LevelSet { sku: String, location: String, on_hand: Qty, in_stock: bool },
    LevelAdjusted { sku: String, location: String, delta: Qty },
    LineHeld { cart_id: String, channel: String, sku: String, quantity: Qty, expires_at_ms: Option<i64> },
    CartReleased { cart_id: String, skus: Option<Vec<String>> },
    OrderPlaced(PlaceOrder),
    OrderCanceled { order_id: String, lines: Option<Vec<(String, Qty)>> },
    ShipmentCreated(Shipment),
    CreditMemoCreated(CreditMemo),
}

/// Why a message cannot be applied; `code()` is its dead-letter code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the message value is {size} bytes, more than the {max} allowed; split the event or raise RESERVOIR_MAX_MESSAGE_BYTES")]
    TooLarge { size: usize, max: usize },
    #[error("the message value is not JSON ({0}); producers must send CloudEvents JSON, in structured mode (the whole event) or binary mode (ce_* headers, data as the value)")]
    MalformedJson(String),
    #[error("{message}")]
    InvalidEnvelope { message: String, event_id: Option<String> },
    #[error("{message}")]
    UnknownType { message: String, event_id: String },
    #[error("{message}")]
    InvalidData { message: String, event_id: String },
}

impl DecodeError {
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::MalformedJson(_) => "malformed_json",
            DecodeError::InvalidEnvelope { .. } => "invalid_envelope",
            DecodeError::UnknownType { .. } => "unknown_type",
            DecodeError::InvalidData { .. } => "invalid_data",
        }
    }

    pub fn event_id(&self) -> Option<&str> {
        match self {
            DecodeError::InvalidEnvelope { event_id, .. } => event_id.as_deref(),
            DecodeError::UnknownType { event_id, .. } | DecodeError::InvalidData { event_id, .. } => Some(event_id),
            _ => None,
        }
    }
}

/// The topic each input type belongs on.
pub fn topic_of(ty: &str) -> Option<TopicKind> {
    Some(match ty {
        "inventory.channel.configured" | "inventory.item.configured" | "inventory.level.set" | "inventory.level.adjusted" => TopicKind::Stock,
        "cart.line.held" | "cart.released" => TopicKind::Carts,
        "order.placed" | "order.canceled" => TopicKind::Orders,
        "shipment.created" => TopicKind::Shipments,
        "credit_memo.created" => TopicKind::CreditMemos,
        _ => return None,
    })
}

/// Decodes one message that arrived on a `kind` topic, in either content
/// mode of the CloudEvents Kafka protocol binding: binary when it has
/// `ce_*` headers (the attributes, as strings) and a `content-type` that is
/// not `application/cloudevents...`; the value is then the `data` object.
/// Otherwise structured: the value is the whole event ([`decode`]). Both
/// are checked by the same rules and refused with the same codes.
pub fn decode_message(kind: TopicKind, headers: &[(&str, &[u8])], value: &[u8], max_bytes: usize) -> Result<InputEvent, DecodeError> {
    let header = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v);
    let content_type = header("content-type").map(String::from_utf8_lossy);
    let attributes: Vec<&(&str, &[u8])> = headers.iter().filter(|(k, _)| k.len() > 3 && k[..3].eq_ignore_ascii_case("ce_")).collect();
    if attributes.is_empty() || content_type.as_deref().is_some_and(|c| c.trim_start().starts_with("application/cloudevents")) {
        return decode(kind, value, max_bytes);
    }
    if value.len() > max_bytes {
        return Err(DecodeError::TooLarge { size: value.len(), max: max_bytes });
    }
    let data: Value = serde_json::from_slice(value).map_err(|e| DecodeError::MalformedJson(format!("{e}; in binary mode (ce_* headers) the value is the event's data, a JSON object")))?;
    let mut envelope = serde_json::Map::new();
    for (k, v) in attributes {
        let text = std::str::from_utf8(v).map_err(|_| DecodeError::InvalidEnvelope { message: format!("header {k} is not UTF-8; CloudEvents attributes are strings"), event_id: None })?;
        envelope.insert(k[3..].to_ascii_lowercase(), Value::String(text.to_string()));
    }
    if let Some(ct) = content_type {
        envelope.insert("datacontenttype".into(), Value::String(ct.into_owned()));
    }
    envelope.insert("data".into(), data);
    decode_value(kind, Value::Object(envelope)).map_err(|e| match e {
        DecodeError::InvalidEnvelope { message, event_id } => {
            DecodeError::InvalidEnvelope { message: format!("{message} (binary mode: each attribute is a ce_ header, e.g. ce_type)"), event_id }
        }
        e => e,
    })
}

/// Decodes one message value (a structured-mode CloudEvent) that arrived on a `kind` topic.
pub fn decode(kind: TopicKind, value: &[u8], max_bytes: usize) -> Result<InputEvent, DecodeError> {
    if value.len() > max_bytes {
        return Err(DecodeError::TooLarge { size: value.len(), max: max_bytes });
    }
    let v: Value = serde_json::from_slice(value).map_err(|e| DecodeError::MalformedJson(e.to_string()))?;
    decode_value(kind, v)
}

fn decode_value(kind: TopicKind, v: Value) -> Result<InputEvent, DecodeError> {
    let env_err = |message: String, event_id: Option<String>| DecodeError::InvalidEnvelope { message, event_id };
    let env = Obj::new(&v, "the event").map_err(|e| env_err(format!("{}; send a CloudEvents 1.0 JSON object", e.0), None))?;
    let id = match v.get("id") {
        None | Some(Value::Null) => return Err(env_err("id is required (a unique event id, 1..256 characters)".into(), None)),
        Some(raw) => check_id("id", raw).map_err(|e| env_err(e.0, None))?,
    };
    let with_id = |e: FieldError| env_err(e.0, Some(id.clone()));
    match v.get("specversion") {
        Some(Value::String(s)) if s == "1.0" => {}
        Some(other) => return Err(with_id(FieldError(format!("specversion must be \"1.0\", got {other}")))),
        None => return Err(with_id(FieldError("specversion is required and must be \"1.0\"".into()))),
    }
    let source = env.opt_str("source").map_err(with_id)?.filter(|s| !s.is_empty());
    let source = source.ok_or_else(|| with_id(FieldError("source is required (a non-empty string naming the producer)".into())))?.to_string();
    let ty = env.opt_str("type").map_err(with_id)?.filter(|s| !s.is_empty());
    let ty = ty.ok_or_else(|| with_id(FieldError("type is required (e.g. \"order.placed\")".into())))?.to_string();
    if let Some(t) = env.opt_str("time").map_err(with_id)? {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .map_err(|_| with_id(FieldError(format!("time must be an RFC 3339 timestamp, got {t:?}"))))?;
    }
    let data = match v.get("data") {
        Some(d @ Value::Object(_)) => d,
        Some(other) => return Err(with_id(FieldError(format!("data must be an object, got {other}")))),
        None => return Err(with_id(FieldError("data is required (an object)".into()))),
    };
    match topic_of(&ty) {
        None => {
            return Err(DecodeError::UnknownType {
                message: format!("type {ty:?} is not an event type of the contract; check the producer (known types are listed in topics/README.md)"),
                event_id: id,
            })
        }
        Some(k) if k != kind => {
            return Err(DecodeError::UnknownType {
                message: format!("type {ty:?} does not belong on this topic; publish it to {}", k.default_name()),
                event_id: id,
            })
        }
        Some(_) => {}
    }
    let d = Obj::new(data, "data").expect("checked object");
    let body = body(&ty, &d).map_err(|e| DecodeError::InvalidData { message: e.0, event_id: id.clone() })?;
    let kind_name = KNOWN.iter().find(|k| **k == ty).copied().expect("known type");
    Ok(InputEvent { id, source, kind: kind_name, body })
}

const KNOWN: [&str; 10] = [
    "inventory.channel.configured",
    "inventory.item.configured",
    "inventory.level.set",
    "inventory.level.adjusted",
    "cart.line.held",
    "cart.released",
    "order.placed",
    "order.canceled",
    "shipment.created",
    "credit_memo.created",
];

fn ids(a: Vec<(String, &Value)>) -> Result<Vec<String>, FieldError> {
    a.into_iter().map(|(p, v)| check_id(&p, v)).collect()
}

fn beyond(d: &Obj, name: &str, flag: &str) -> Result<BeyondStock, FieldError> {
    match d.opt_obj(name)? {
        None => Ok(BeyondStock::default()),
        Some(o) => Ok(BeyondStock { enabled: o.opt_bool(flag)?.unwrap_or(false), limit: o.opt_nonneg("limit")? }),
    }
}

fn rfc3339_ms(path: &str, s: &str) -> Result<i64, FieldError> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| FieldError(format!("{path} must be an RFC 3339 timestamp, got {s:?}")))?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn body(ty: &str, d: &Obj) -> Result<Body, FieldError> {
    Ok(match ty {
        "inventory.channel.configured" => {
            let locations = ids(d.array("locations")?)?;
            for (i, l) in locations.iter().enumerate() {
                if locations[..i].contains(l) {
                    return Err(FieldError(format!("data.locations lists {l:?} twice; locations must be distinct")));
                }
            }
            Body::ChannelConfigured { channel: d.id("channel")?, locations }
        }
        "inventory.item.configured" => {
            let tracking = match d.opt_str("tracking")? {
                None | Some("quantity") => Tracking::Quantity,
                Some("in_stock") => Tracking::InStock,
                Some("none") => Tracking::None,
                Some(other) => return Err(FieldError(format!("data.tracking must be \"quantity\", \"in_stock\" or \"none\", got {other:?}"))),
            };
            Body::ItemConfigured {
                sku: d.id("sku")?,
                config: ItemConfig {
                    tracking,
                    backorders: beyond(d, "backorders", "allowed")?,
                    preorder: beyond(d, "preorder", "enabled")?,
                    out_of_stock_threshold: d.opt_nonneg("out_of_stock_threshold")?.unwrap_or(Qty::ZERO),
                    low_stock_threshold: d.opt_nonneg("low_stock_threshold")?,
                },
            }
        }
        "inventory.level.set" => Body::LevelSet {
            sku: d.id("sku")?,
            location: d.id("location")?,
            on_hand: d.nonneg("on_hand")?,
            in_stock: d.opt_bool("in_stock")?.unwrap_or(true),
        },
        "inventory.level.adjusted" => {
            let delta = d.qty("delta")?;
            if delta.is_zero() {
                return Err(FieldError("data.delta must not be 0".into()));
            }
            d.opt_str("reason")?;
            Body::LevelAdjusted { sku: d.id("sku")?, location: d.id("location")?, delta }
        }
        "cart.line.held" => Body::LineHeld {
            cart_id: d.id("cart_id")?,
            channel: d.id("channel")?,
            sku: d.id("sku")?,
            quantity: d.nonneg("quantity")?,
            expires_at_ms: d.opt_str("expires_at")?.map(|s| rfc3339_ms("data.expires_at", s)).transpose()?,
        },
        "cart.released" => Body::CartReleased {
            cart_id: d.id("cart_id")?,
            skus: d.opt_array("skus")?.map(ids).transpose()?,
        },
        "order.placed" => {
            let mut lines = Vec::new();
            for (p, v) in d.array("lines")? {
                let l = Obj::new(v, &p)?;
                let line_id = l.id("line_id")?;
                if lines.iter().any(|x: &OrderLine| x.line_id == line_id) {
                    return Err(FieldError(format!("{p}.line_id {line_id:?} is used twice; line ids must be distinct")));
                }
                lines.push(OrderLine { line_id, sku: l.id("sku")?, quantity: l.positive("quantity")? });
            }
            Body::OrderPlaced(PlaceOrder { order_id: d.id("order_id")?, channel: d.id("channel")?, cart_id: d.opt_id("cart_id")?, lines })
        }
        "order.canceled" => {
            let lines = match d.opt_array("lines")? {
                None => None,
                Some(a) => Some(
                    a.into_iter()
                        .map(|(p, v)| {
                            let l = Obj::new(v, &p)?;
                            Ok((l.id("line_id")?, l.positive("quantity")?))
                        })
                        .collect::<Result<Vec<_>, FieldError>>()?,
                ),
            };
            Body::OrderCanceled { order_id: d.id("order_id")?, lines }
        }
        "shipment.created" => {
            let mut lines = Vec::new();
            for (p, v) in d.array("lines")? {
                let l = Obj::new(v, &p)?;
                lines.push(ShipmentLine { line_id: l.id("line_id")?, sku: l.id("sku")?, quantity: l.positive("quantity")? });
            }
            Body::ShipmentCreated(Shipment { shipment_id: d.id("shipment_id")?, order_id: d.id("order_id")?, location: d.id("location")?, lines })
        }
        "credit_memo.created" => {
            let mut lines = Vec::new();
            for (p, v) in d.array("lines")? {
                let l = Obj::new(v, &p)?;
                lines.push(CreditLine {
                    line_id: l.id("line_id")?,
                    sku: l.id("sku")?,
                    quantity: l.positive("quantity")?,
                    back_to_stock: l.bool("back_to_stock")?,
                    location: l.opt_id("location")?,
                });
            }
            Body::CreditMemoCreated(CreditMemo { credit_memo_id: d.id("credit_memo_id")?, order_id: d.id("order_id")?, lines })
        }
        other => unreachable!("type {other} was checked against the known types"),
    })
}
