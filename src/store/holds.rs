//! `shop.carts` operations and the hold sweep.
//!
//! Expired holds stop counting at once: every script releases due holds of
//! its sku first. The sweep publishes those releases for skus nobody
//! touches: a sharded index (zset of skus by earliest expiry) tells it which
//! skus are due. The index is a separate call from the hold itself (other
//! slot), so the sweeper removes an entry only if no hold was indexed since
//! it looked (a generation check in `hold_unindex.lua`).

use super::keys::{self, SkuKeys};
use super::reply::Reply;
use super::{check_id, qarg, Changes, Effect, Engine, StoreError};
use crate::domain::HoldOutcome;
use crate::qty::Qty;

impl Engine {
    /// `cart.line.held`: sets the cart's hold on the sku, all or nothing.
    /// `expires_at_ms` None means the configured hold time from now.
    pub async fn hold(
        &self,
        event_id: &str,
        cart_id: &str,
        channel: &str,
        sku: &str,
        quantity: Qty,
        expires_at_ms: Option<i64>,
    ) -> Result<Effect<HoldOutcome>, StoreError> {
        check_id("event id", event_id)?;
        check_id("cart_id", cart_id)?;
        check_id("channel", channel)?;
        check_id("sku", sku)?;
        if quantity.is_negative() {
            return Err(StoreError::Invalid(format!("quantity must be >= 0, got {quantity}")));
        }
        let now = self.now();
        let expires = expires_at_ms.unwrap_or(now + self.cfg.hold_time.as_millis() as i64);
        let channels = self.channels().await?;
        let locs = channels.get(channel);
        // The cart's sku list outlives its holds a little, for cart.released.
        let cart_ttl = (expires - now).max(0) + self.cfg.hold_time.as_millis() as i64 + 60_000;
        redis::pipe()
            .cmd("SADD")
            .arg(keys::cart(cart_id))
            .arg(sku)
            .ignore()
            .cmd("PEXPIRE")
            .arg(keys::cart(cart_id))
            .arg(cart_ttl)
            .arg("GT")
            .ignore()
            .cmd("PEXPIRE")
            .arg(keys::cart(cart_id))
            .arg(cart_ttl)
            .arg("NX")
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await?;

        let k = SkuKeys::new(sku);
        let mut args = vec![
            now.to_string(),
            self.idem_ttl(),
            cart_id.to_string(),
            qarg(quantity),
            expires.to_string(),
            if locs.is_some() { "1" } else { "0" }.to_string(),
        ];
        let locs = locs.cloned().unwrap_or_default();
        args.push(locs.len().to_string());
        args.extend(locs);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let v = self.scripts.hold.call(&mut self.conn.clone(), &[&k.inv, &k.holds, &k.hexp, &k.event(event_id), &k.consumed_hold(cart_id)], &argv).await?;
        let r = Reply::sku("hold", v)?;
        let repeat = r.code == "dup";
        let outcome = HoldOutcome {
            confirmed: r.str(0)? == "ok",
            requested: quantity,
            held: r.qty(1)?,
            available: r.opt_qty(2)?,
            expires_at_ms: r.str(3)?.parse().map_err(|_| r.bad("expires_ms"))?,
        };
        if r.str(4)? == "1" {
            self.index_hold(sku, expires).await?;
        }
        let mut c = Changes::default();
        c.add(sku, r.before, r.after, repeat);
        self.effect(outcome, c).await
    }

    /// `cart.released`: releases the cart's holds on the given skus, or on
    /// every sku it holds. The outcome is the total quantity released.
    pub async fn release_cart(&self, event_id: &str, cart_id: &str, skus: Option<&[String]>) -> Result<Effect<Qty>, StoreError> {
        check_id("event id", event_id)?;
        check_id("cart_id", cart_id)?;
        let mut conn = self.conn.clone();
        let (mut skus, repeat) = match skus {
            Some(s) => (s.to_vec(), false),
            None => self.cart_skus_once(event_id, cart_id).await?,
        };
        let mut seen = std::collections::HashSet::new();
        skus.retain(|s| seen.insert(s.clone()));
        let mut changes = Changes::default();
        let mut released = Qty::ZERO;
        for sku in &skus {
            check_id("sku", sku)?;
            let k = SkuKeys::new(sku);
            let v = self
                .scripts
                .hold_release
                .call(&mut conn, &[&k.inv, &k.holds, &k.hexp, &k.event(event_id), &k.consumed_hold(cart_id)], &[&self.now().to_string(), &self.idem_ttl(), cart_id])
                .await?;
            let r = Reply::sku("hold_release", v)?;
            released += r.qty(0)?;
            changes.add(sku, r.before, r.after, r.code == "dup");
        }
        // A repeat leaves the cart's list alone: the cart may hold some of
        // these skus again since the first delivery.
        if !skus.is_empty() && !repeat {
            redis::cmd("SREM").arg(keys::cart(cart_id)).arg(&skus).query_async::<()>(&mut conn).await?;
        }
        self.effect(released, changes).await
    }

    /// The skus a whole-cart release covers, fixed at its first delivery so
    /// a repeat cannot release holds taken after it; and whether this is a
    /// repeat.
    async fn cart_skus_once(&self, event_id: &str, cart_id: &str) -> Result<(Vec<String>, bool), StoreError> {
        let mut conn = self.conn.clone();
        let record = format!("{}:e:{event_id}", keys::cart(cart_id));
        if let Some(json) = redis::cmd("GET").arg(&record).query_async::<Option<String>>(&mut conn).await? {
            let skus = serde_json::from_str(&json).map_err(|e| StoreError::Reply(format!("cart release record {record:?}: {e}")))?;
            return Ok((skus, true));
        }
        let skus: Vec<String> = redis::cmd("SMEMBERS").arg(keys::cart(cart_id)).query_async(&mut conn).await?;
        redis::cmd("SET")
            .arg(&record)
            .arg(serde_json::to_string(&skus).expect("strings serialize"))
            .arg("NX")
            .arg("PX")
            .arg(self.idem_ttl())
            .query_async::<()>(&mut conn)
            .await?;
        Ok((skus, false))
    }

    pub(super) async fn index_hold(&self, sku: &str, expires_ms: i64) -> Result<(), StoreError> {
        let ix = keys::hold_index(keys::hold_shard(sku));
        self.scripts
            .hold_index
            .call(&mut self.conn.clone(), &[&ix.zset, &ix.gens, &ix.counter], &[sku, &expires_ms.to_string()])
            .await?;
        Ok(())
    }

    /// Releases holds that are due, up to `limit` skus per index shard, and
    /// returns their availability changes. Safe to run from every worker at
    /// once. The outcome is the number of holds released, and what to tell
    /// [`Engine::sweep_done`] once the changes' messages are acknowledged: a
    /// swept sku stays due in the index (and marked in its hash) until then,
    /// so a sweeper that dies before publishing leaves it to the next sweep,
    /// which publishes its current availability again. Its `late_refusals`
    /// are the shipments and credit memos whose order did not come within
    /// the order retention (up to `limit` orders per shard): the caller
    /// dead-letters them, then calls [`Engine::forget_expired`].
    pub async fn sweep_holds(&self, limit: usize) -> Result<Effect<Swept>, StoreError> {
        let mut conn = self.conn.clone();
        let now = self.now();
        let mut changes = Changes::default();
        let mut swept = Swept::default();
        for shard in 0..keys::HOLD_SHARDS {
            let ix = keys::hold_index(shard);
            let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(&ix.zset)
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut conn)
                .await?;
            for sku in due {
                let gen: Option<String> = redis::cmd("HGET").arg(&ix.gens).arg(&sku).query_async(&mut conn).await?;
                let k = SkuKeys::new(&sku);
                let v = self.scripts.sweep.call(&mut conn, &[&k.inv, &k.holds, &k.hexp], &[&now.to_string()]).await?;
                let r = Reply::sku("sweep", v)?;
                let n: usize = r.str(0)?.parse().map_err(|_| r.bad("count"))?;
                let done = SweptSku { shard, sku, gen: gen.unwrap_or_default(), next: r.str(1)?.to_string(), unpublished: r.str(2)?.to_string() };
                swept.released += n;
                if done.unpublished.is_empty() {
                    self.unindex(&mut conn, &done).await?;
                    continue;
                }
                // Left by a sweep that did not finish: every channel's
                // current availability, as for a repeated event.
                let earlier = r.str(3)? == "1";
                changes.add(&done.sku, r.before, r.after, earlier || n == 0);
                swept.pending.push(done);
            }
        }
        let late = self.expired_early_ops(limit, now).await?;
        let mut e = self.effect(swept, changes).await?;
        e.late_refusals = late;
        Ok(e)
    }

    /// After the availability of [`Engine::sweep_holds`] was acknowledged:
    /// clears each swept sku's mark and moves it in the index to its next
    /// expiry (or out of it).
    pub async fn sweep_done(&self, swept: &Swept) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        for done in &swept.pending {
            self.scripts.sweep_done.call(&mut conn, &[&SkuKeys::new(&done.sku).inv], &[&done.unpublished]).await?;
            self.unindex(&mut conn, done).await?;
        }
        Ok(())
    }

    async fn unindex(&self, conn: &mut super::Conn, done: &SweptSku) -> Result<(), StoreError> {
        let ix = keys::hold_index(done.shard);
        self.scripts.hold_unindex.call(conn, &[&ix.zset, &ix.gens], &[&done.sku, &done.gen, &done.next]).await?;
        Ok(())
    }
}

/// What a hold sweep released, and the skus whose release is still to be
/// published (see [`Engine::sweep_done`]).
#[derive(Debug, Default)]
pub struct Swept {
    pub released: usize,
    pending: Vec<SweptSku>,
}

#[derive(Debug)]
struct SweptSku {
    shard: u32,
    sku: String,
    /// The index generation read before the sweep (see hold_unindex.lua).
    gen: String,
    next: String,
    /// The version sweep.lua marked as unpublished.
    unpublished: String,
}
