//! `inventory.stock` operations: channels, item settings, levels.

use std::collections::BTreeSet;

use futures::stream::{self, StreamExt, TryStreamExt};

use super::keys::{self, SkuKeys};
use super::reply::{self, encode_config, Reply};
use super::{check_id, qarg, Changes, Effect, Engine, StoreError};
use crate::domain::{availability, AvailabilityUpdate, ItemConfig};
use crate::qty::Qty;

/// A refusal the contract dead-letters: its code and a sentence naming the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

/// How many per-sku calls run at once (they share one pipelined connection).
const FAN_OUT: usize = 64;

impl Engine {
    /// `inventory.channel.configured`: the channel sells from exactly these
    /// locations. Every sku stocked at an old or new location gets a new
    /// version, and its availability in this channel is returned (changed
    /// where (status, available) moved, or on a repeat).
    pub async fn configure_channel(
        &self,
        event_id: &str,
        channel: &str,
        locations: &[String],
    ) -> Result<Effect<()>, StoreError> {
        check_id("event id", event_id)?;
        check_id("channel", channel)?;
        if locations.is_empty() {
            return Err(StoreError::Invalid(format!("channel {channel:?} needs at least one location")));
        }
        for l in locations {
            check_id("location", l)?;
        }
        let mut conn = self.conn.clone();
        let json = serde_json::to_string(locations).expect("strings serialize");
        let v = self
            .scripts
            .channel_set
            .call(
                &mut conn,
                &[&keys::channel(channel), keys::CHANNELS, &keys::channel_event(event_id), keys::CHANNEL_GENERATION, &keys::channel_event_done(event_id)],
                &[channel, &json, &self.idem_ttl(), &uuid::Uuid::new_v4().simple().to_string()],
            )
            .await?;
        let f = reply::strings(&v).ok_or_else(|| StoreError::Reply("channel_set: unexpected reply".into()))?;
        let [_, before, now, done] = f.as_slice() else { return Err(StoreError::Reply("channel_set: short reply".into())) };
        let list = |json: &str| -> Result<Vec<String>, StoreError> {
            if json.is_empty() {
                return Ok(Vec::new());
            }
            serde_json::from_str(json).map_err(|e| StoreError::Reply(format!("channel {channel:?} has unreadable locations {json:?}: {e}")))
        };
        // On a redelivery, `before` is what the first delivery replaced.
        let (old, new) = (list(before)?, list(now)?);

        let mut skus = BTreeSet::new();
        for loc in old.iter().chain(new.iter()) {
            let mut iter: redis::AsyncIter<String> = redis::cmd("SSCAN")
                .arg(keys::location_skus(loc))
                .cursor_arg(0)
                .arg("COUNT")
                .arg(1000)
                .clone()
                .iter_async(&mut conn)
                .await?;
            while let Some(s) = iter.next_item().await {
                skus.insert(s?);
            }
        }
        let replies: Vec<(String, Reply)> = stream::iter(skus)
            .map(|sku| async move {
                let k = SkuKeys::new(&sku);
                let now = self.now().to_string();
                let ttl = self.idem_ttl();
                let v = self.scripts.touch.call(&mut self.conn.clone(), &[&k.inv, &k.holds, &k.hexp, &k.event(event_id)], &[&now, &ttl, done]).await?;
                Ok::<_, StoreError>((sku, Reply::sku("touch", v)?))
            })
            .buffer_unordered(FAN_OUT)
            .try_collect()
            .await?;
        if done != "1" {
            redis::cmd("SET").arg(keys::channel_event_done(event_id)).arg("1").arg("PX").arg(self.idem_ttl()).query_async::<()>(&mut conn).await?;
        }

        let mut changes = Changes::default();
        let mut ups = Vec::new();
        for (sku, r) in replies {
            let repeat = r.code == "dup";
            let before = availability(&r.before, &old);
            let after = availability(&r.after, &new);
            if r.after.exists {
                ups.push(AvailabilityUpdate {
                    channel: channel.to_string(),
                    sku: sku.clone(),
                    changed: repeat || old.is_empty() || before.key() != after.key(),
                    availability: after,
                    version: r.after.version,
                });
            }
            changes.add(&sku, r.before, r.after, repeat);
        }
        Ok(Effect { outcome: (), skus: changes.0, updates: ups, late_refusals: Vec::new() })
    }

    /// `inventory.item.configured`: replaces the sku's settings.
    pub async fn configure_item(&self, event_id: &str, sku: &str, cfg: &ItemConfig) -> Result<Effect<()>, StoreError> {
        check_id("event id", event_id)?;
        check_id("sku", sku)?;
        let k = SkuKeys::new(sku);
        let v = self
            .scripts
            .item_configure
            .call(&mut self.conn.clone(), &[&k.inv, &k.holds, &k.hexp, &k.event(event_id)], &[&self.now().to_string(), &self.idem_ttl(), &encode_config(cfg)])
            .await?;
        let r = Reply::sku("item_configure", v)?;
        let mut c = Changes::default();
        c.add(sku, r.before, r.after, r.code == "dup");
        self.effect((), c).await
    }

    /// `inventory.level.set`: the physical count at a location.
    pub async fn set_level(&self, event_id: &str, sku: &str, location: &str, on_hand: Qty, in_stock: bool) -> Result<Effect<()>, StoreError> {
        check_id("event id", event_id)?;
        check_id("sku", sku)?;
        check_id("location", location)?;
        if on_hand.is_negative() {
            return Err(StoreError::Invalid(format!("on_hand must be >= 0, got {on_hand}")));
        }
        self.index_location(sku, location).await?;
        let k = SkuKeys::new(sku);
        let v = self
            .scripts
            .level_set
            .call(
                &mut self.conn.clone(),
                &[&k.inv, &k.holds, &k.hexp, &k.event(event_id)],
                &[&self.now().to_string(), &self.idem_ttl(), location, &qarg(on_hand), if in_stock { "1" } else { "0" }],
            )
            .await?;
        let r = Reply::sku("level_set", v)?;
        if r.code == "big" {
            return Err(StoreError::Invalid(out_of_range(sku, location)));
        }
        let mut c = Changes::default();
        c.add(sku, r.before, r.after, r.code == "dup");
        self.effect((), c).await
    }

    /// `inventory.level.adjusted`: adds a signed delta to on_hand; refused
    /// with `negative_on_hand` (changing nothing) when it would go below 0.
    pub async fn adjust_level(&self, event_id: &str, sku: &str, location: &str, delta: Qty) -> Result<Effect<Result<(), Refusal>>, StoreError> {
        check_id("event id", event_id)?;
        check_id("sku", sku)?;
        check_id("location", location)?;
        if delta.is_zero() {
            return Err(StoreError::Invalid("delta must not be 0".into()));
        }
        self.index_location(sku, location).await?;
        let k = SkuKeys::new(sku);
        let v = self
            .scripts
            .level_adjust
            .call(&mut self.conn.clone(), &[&k.inv, &k.holds, &k.hexp, &k.event(event_id)], &[&self.now().to_string(), &self.idem_ttl(), location, &qarg(delta)])
            .await?;
        let r = Reply::sku("level_adjust", v)?;
        let repeat = r.code == "dup";
        // A repeat carries the first reply's {code, on_hand}.
        let (code, on_hand) = if repeat { (r.str(0)?.to_string(), r.qty(1)?) } else { (r.code.clone(), r.qty(0)?) };
        let outcome = if code == "big" {
            Err(Refusal { code: "invalid_data", message: out_of_range(sku, location) })
        } else if code == "neg" {
            Err(Refusal {
                code: "negative_on_hand",
                message: format!(
                    "data.delta {delta} would take on_hand of sku {sku:?} at location {location:?} below zero (it is {on_hand}); send a level.set with the counted quantity instead"
                ),
            })
        } else {
            Ok(())
        };
        let mut c = Changes::default();
        c.add(sku, r.before, r.after, repeat);
        self.effect(outcome, c).await
    }

    /// Remembers that the sku has a row at the location (for channel changes).
    pub(super) async fn index_location(&self, sku: &str, location: &str) -> Result<(), StoreError> {
        redis::cmd("SADD").arg(keys::location_skus(location)).arg(sku).query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Indexes rows a call created implicitly (backorders at a channel's
    /// first location, restocks at a new location).
    pub(super) async fn index_new_rows(&self, changes: &Changes) -> Result<(), StoreError> {
        for c in &changes.0 {
            for loc in c.after.levels.keys() {
                if !c.before.levels.contains_key(loc) {
                    self.index_location(&c.sku, loc).await?;
                }
            }
        }
        Ok(())
    }
}

/// The refusal of a level whose sku would hold more than [`Qty::MAX`] over
/// all its locations: sums past it are not exact in the scripts' doubles.
fn out_of_range(sku: &str, location: &str) -> String {
    format!(
        "on_hand of sku {sku:?} at location {location:?} would make its on hand over all locations larger than {}, the largest quantity; nothing was changed",
        Qty::MAX
    )
}
