//! Applying one decoded event through the engine, and the messages it
//! causes: results, dead letters and availability updates.

use rdkafka::message::{Message as _, OwnedMessage};
use tokio::sync::watch;

use super::batch::with_redis;
use super::WorkerError;
use crate::config::{Config, Sabotage};
pub use super::origin::Origin;
use crate::domain::{refusal, AvailabilityUpdate};
use crate::publish::Out;
use crate::store::{Effect, Engine, LateRefusal};
use crate::wire::{output, Body, InputEvent};

/// `caused_by` of availability published by the hold sweep.
pub const HOLD_EXPIRY_CAUSE: &str = "reservoir.hold-expiry";

/// `caused_by` of availability published again because an older message of
/// another worker's landed after it on the topic.
pub const FENCE_CAUSE: &str = "reservoir.fence";

/// What one event did.
pub struct Applied {
    /// Results for `inventory.reservations`.
    pub outs: Vec<Out>,
    /// Availability after the event (published if changed).
    pub updates: Vec<AvailabilityUpdate>,
    /// Dead-letter code and message when (part of) the event was refused.
    pub dead: Option<(&'static str, String)>,
    /// Earlier shipments and credit memos this placement refused.
    pub late: Vec<LateRefusal>,
    /// The store had applied this event before (a redelivery or a repeat).
    pub repeat: bool,
}

impl Applied {
    fn from<T>(e: Effect<T>) -> (T, Applied) {
        let repeat = !e.skus.is_empty() && e.skus.iter().all(|s| s.repeat);
        (e.outcome, Applied { outs: Vec::new(), updates: e.updates, dead: None, late: e.late_refusals, repeat })
    }
}

fn result_out(cfg: &Config, key: &str, (ty, data): (&str, serde_json::Value)) -> Out {
    Out {
        topic: cfg.topics.reservations.clone(),
        key: key.as_bytes().to_vec(),
        payload: output::envelope(&cfg.source, ty, data),
        headers: Vec::new(),
        availability: None,
    }
}

pub fn availability_out(cfg: &Config, u: &AvailabilityUpdate, caused_by: &str) -> Out {
    Out {
        topic: cfg.topics.availability.clone(),
        key: format!("{}/{}", u.channel, u.sku).into_bytes(),
        payload: output::envelope(&cfg.source, "inventory.availability.changed", output::availability(u, caused_by)),
        headers: Vec::new(),
        availability: Some((u.channel.clone(), u.sku.clone(), u.version)),
    }
}

/// The original key and value with the `dlq.*` headers.
pub fn dead_letter(cfg: &Config, m: &OwnedMessage, code: &str, message: &str, event_id: Option<&str>) -> Out {
    Origin::of(m, event_id).dead_letter(&cfg.topics.dead_letter, code, message)
}

fn count_reservation(o: &crate::domain::OrderOutcome) {
    use crate::domain::OrderOutcome;
    match o {
        OrderOutcome::Confirmed { .. } => metrics::counter!(crate::metrics::RESERVATIONS, "result" => "confirmed").increment(1),
        OrderOutcome::Rejected { lines } => {
            let reason = lines.first().map(|l| l.reason.as_str()).unwrap_or("insufficient_stock");
            metrics::counter!(crate::metrics::RESERVATIONS, "result" => "rejected", "reason" => reason).increment(1)
        }
    }
}

/// Applies one event, retrying while Redis is unavailable. An error the
/// engine says retrying cannot fix dead-letters the event (`invalid_data`),
/// unless it is our own (a reply we cannot read): that stops the worker.
pub async fn apply(engine: &Engine, cfg: &Config, m: &OwnedMessage, ev: &InputEvent, stop: &watch::Receiver<bool>) -> Result<Applied, WorkerError> {
    match apply_once(engine, cfg, m, ev, stop).await {
        Err(WorkerError::Store(error)) if error.is_bug() => {
            Err(WorkerError::Bug { topic: m.topic().to_string(), partition: m.partition(), offset: m.offset(), kind: ev.kind, error })
        }
        Err(WorkerError::Store(e)) if !e.is_retryable() => Ok(Applied {
            outs: Vec::new(),
            updates: Vec::new(),
            dead: Some(("invalid_data", format!("the event could not be applied: {e}"))),
            late: Vec::new(),
            repeat: false,
        }),
        Ok(mut a) if a.repeat && cfg.sabotage == Some(Sabotage::NoRepublishOnRepeat) => {
            a.outs.clear();
            a.updates.clear();
            Ok(a)
        }
        other => other,
    }
}

async fn apply_once(engine: &Engine, cfg: &Config, m: &OwnedMessage, ev: &InputEvent, stop: &watch::Receiver<bool>) -> Result<Applied, WorkerError> {
    // Ids are unique per producer: the engine remembers (source, id).
    let mut idem = format!("{}:{}:{}", ev.source.len(), ev.source, ev.id);
    if cfg.sabotage == Some(Sabotage::SkipIdempotency) {
        idem.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    let id = idem.as_str();
    let caused_by = ev.id.as_str();
    let what = ev.kind;
    Ok(match &ev.body {
        Body::ChannelConfigured { channel, locations } => Applied::from(with_redis(what, stop, || engine.configure_channel(id, channel, locations)).await?).1,
        Body::ItemConfigured { sku, config } => Applied::from(with_redis(what, stop, || engine.configure_item(id, sku, config)).await?).1,
        Body::LevelSet { sku, location, on_hand, in_stock } => {
            Applied::from(with_redis(what, stop, || engine.set_level(id, sku, location, *on_hand, *in_stock)).await?).1
        }
        Body::LevelAdjusted { sku, location, delta } => {
            let (r, mut a) = Applied::from(with_redis(what, stop, || engine.adjust_level(id, sku, location, *delta)).await?);
            a.dead = r.err().map(|r| (r.code, r.message));
            a
        }
        Body::LineHeld { cart_id, channel, sku, quantity, expires_at_ms } => {
            let (h, mut a) = Applied::from(with_redis(what, stop, || engine.hold(id, cart_id, channel, sku, *quantity, *expires_at_ms)).await?);
            metrics::counter!(crate::metrics::HOLDS, "result" => if h.confirmed { "confirmed" } else { "rejected" }).increment(1);
            a.outs.push(result_out(cfg, cart_id, output::hold(&h, cart_id, channel, sku, caused_by)));
            a
        }
        Body::CartReleased { cart_id, skus } => Applied::from(with_redis(what, stop, || engine.release_cart(id, cart_id, skus.as_deref())).await?).1,
        Body::OrderPlaced(o) => {
            let (outcome, mut a) = Applied::from(with_redis(what, stop, || engine.place_order(o)).await?);
            count_reservation(&outcome);
            a.outs.push(result_out(cfg, &o.order_id, output::reservation(&outcome, &o.order_id, &o.channel, caused_by)));
            a
        }
        Body::OrderCanceled { order_id, lines } => Applied::from(with_redis(what, stop, || engine.cancel_order(id, order_id, lines.as_deref())).await?).1,
        Body::ShipmentCreated(s) => {
            let origin = Origin::of(m, Some(&ev.id)).encode();
            let (lines, mut a) = Applied::from(with_redis(what, stop, || engine.ship(s, Some(&origin))).await?);
            a.dead = refusal(&lines);
            a
        }
        Body::CreditMemoCreated(c) => {
            let origin = Origin::of(m, Some(&ev.id)).encode();
            let (lines, mut a) = Applied::from(with_redis(what, stop, || engine.credit(c, Some(&origin))).await?);
            a.dead = refusal(&lines);
            a
        }
    })
}

