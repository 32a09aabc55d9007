//! The engine: every contract operation over Redis Lua scripts.
//!
//! Each operation is one or more per-sku scripts (one cluster slot each);
//! an order over several skus is a sequence of them with idempotent
//! compensation (see `orders`). Every call returns an [`Effect`]: the
//! outcome to publish and, per affected (channel, sku), the availability
//! after the change.

mod channels;
pub mod conn;
mod fence;
mod holds;
pub mod keys;
mod orders;
pub mod reply;
mod sentinel;
mod target;
pub(crate) mod scripts;
mod stock;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use channels::load as read_channels;
pub use conn::Conn;
pub use target::{redact_urls, RedisTarget};
pub use fence::Landed;
pub use holds::Swept;
pub use orders::{ORDER_NOT_PLACED, CancelOutcome, CreditLine, CreditMemo, OrderLine, PlaceOrder, Shipment, ShipmentLine};

use crate::domain::{updates, AvailabilityUpdate, SkuChange, SkuState};
use crate::qty::Qty;
use channels::ChannelCache;
use scripts::Scripts;

/// Why a store call failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis unreachable, timed out, loading, failing over: retry with backoff.
    #[error("Redis is unavailable ({0}); retrying can help once it is back")]
    Unavailable(#[source] redis::RedisError),
    /// A script's own argument check refused what the event asked for
    /// (`reservoir: ...`): the input's fault, retrying fails the same way.
    #[error("Redis script {script} refused its arguments: {message}")]
    Script { script: &'static str, message: String },
    /// Redis refused a command or a script failed at run time for a reason
    /// that is not the input's (WRONGTYPE on one of our keys, a Lua error,
    /// NOPERM for the ACL user, an unknown command): a bug in reservoir, its
    /// keys changed by something else, or a Redis setting to fix.
    #[error("Redis failed {script}: {message}. This is not the event's fault: check the type of the keys it names and the ACL user's permissions")]
    Failed { script: &'static str, message: String },
    /// `WAIT` found fewer replicas with the writes than asked for: retry
    /// with backoff, as for an outage (replicas down or lagging).
    #[error("only {acked} Redis replica(s) acknowledged this batch's writes within {timeout_ms} ms, and RESERVOIR_REDIS_WAIT_REPLICAS asks for {wanted}; waiting (are the replicas up and connected to the master?)")]
    TooFewReplicas { acked: i64, wanted: u32, timeout_ms: u64 },
    #[error("unexpected reply from Redis: {0}")]
    Reply(String),
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("configuration: {0}")]
    Config(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::TooFewReplicas { .. })
    }

    /// A reply we cannot read or a setting we cannot use: a bug in
    /// reservoir or its keys changed by something else, never the input's
    /// fault, so the event must not be dead-lettered for it.
    pub fn is_bug(&self) -> bool {
        matches!(self, StoreError::Reply(_) | StoreError::Config(_) | StoreError::Failed { .. })
    }

    fn from_script(script: &'static str, e: redis::RedisError) -> StoreError {
        let message = e.to_string();
        if transient(&e) {
            StoreError::Unavailable(e)
        } else if message.contains(ARGUMENT_CHECK) {
            StoreError::Script { script, message }
        } else {
            StoreError::Failed { script, message }
        }
    }
}

/// The prefix of every error our scripts raise on purpose (lua/lib.lua's
/// argument checks): only those are about the event.
const ARGUMENT_CHECK: &str = "reservoir: ";

fn transient(e: &redis::RedisError) -> bool {
    use redis::RetryMethod::*;
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.retry_method(),
            Reconnect | ReconnectFromInitialConnections | RetryImmediately | WaitAndRetry | AskRedirect | MovedRedirect | RefreshSlotsAndRetry
        )
        || refusing_writes(e.code(), &e.to_string())
}

/// Error codes of a Redis that refuses writes for a while (memory full, disk
/// full, too few replicas, a long script, loading, a demoted master, a
/// cluster without quorum). They say nothing about the input, so waiting
/// them out is right; redis-rs reports most as extension errors it does not
/// retry. A script stops at its first refused write, which Redis checks
/// before the script has written anything, so a refused call changed nothing.
const REFUSING_WRITES: &[&str] = &["OOM", "MISCONF", "NOREPLICAS", "BUSY", "LOADING", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN"];

/// Also matches a code Redis put inside a script error's text
/// (`ERR Error running script ...: OOM command not allowed ...`).
fn refusing_writes(code: Option<&str>, text: &str) -> bool {
    code.is_some_and(|c| REFUSING_WRITES.contains(&c))
        || REFUSING_WRITES.iter().any(|c| text.split(|ch: char| !ch.is_ascii_alphanumeric()).any(|w| w == *c))
}

#[cfg(test)]
mod tests {
    use super::refusing_writes;

    #[test]
    fn conditions_that_pass_are_told_from_bad_input() {
        assert!(refusing_writes(Some("OOM"), "OOM command not allowed when used memory > 'maxmemory'."));
        assert!(refusing_writes(Some("MISCONF"), "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk."));
        assert!(refusing_writes(Some("ERR"), "ERR Error running script (call to f_1): @user_script:12: OOM command not allowed when used memory > 'maxmemory'"));
        assert!(refusing_writes(Some("NOREPLICAS"), "NOREPLICAS Not enough good replicas to write."));
        assert!(refusing_writes(Some("BUSY"), "BUSY Redis is busy running a script."));
        assert!(!refusing_writes(Some("ERR"), "ERR wrong number of arguments for 'evalsha' command"));
        assert!(!refusing_writes(Some("ERR"), "ERR user_script:3: bad quantity 'BOOM'"));
        assert!(!refusing_writes(None, "unexpected reply"));
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> StoreError {
        StoreError::from_script("a command", e)
    }
}

/// Retention and timing settings of the engine.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EngineConfig {
    /// How long an event id is remembered per sku (repeats inside it change nothing).
    pub idempotency_retention: Duration,
    /// How long a settled (or rejected) order's records are kept.
    pub order_retention: Duration,
    /// Hold time of a `cart.line.held` without `expires_at`.
    pub hold_time: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            idempotency_retention: Duration::from_secs(7 * 24 * 3600),
            order_retention: Duration::from_secs(30 * 24 * 3600),
            hold_time: Duration::from_secs(15 * 60),
        }
    }
}

/// Where "now" comes from: the system clock, or a hand-set one for tests.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<AtomicI64>),
}

impl Clock {
    pub fn manual(start_ms: i64) -> Clock {
        Clock::Manual(Arc::new(AtomicI64::new(start_ms)))
    }
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            Clock::Manual(t) => t.load(Ordering::SeqCst),
        }
    }
    /// Moves a manual clock; no effect on the system clock.
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual(t) = self {
            t.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        }
    }
}

/// What one operation did: its outcome, the sku states it moved, and the
/// availability per (channel, sku) to publish where `changed`.
#[derive(Clone, Debug)]
pub struct Effect<T> {
    pub outcome: T,
    pub skus: Vec<SkuChange>,
    pub updates: Vec<AvailabilityUpdate>,
    /// Shipments and credit memos kept until this placement and refused
    /// (in part) when it applied them: each is dead-lettered now.
    pub late_refusals: Vec<LateRefusal>,
}

/// A shipment or credit memo that arrived before its order's placement and
/// was refused when the placement applied it. `origin` is what the caller
/// gave with it (the worker keeps the original message there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LateRefusal {
    pub origin: String,
    pub code: &'static str,
    pub message: String,
    /// The order it was kept for.
    pub order_id: String,
}

impl<T> Effect<T> {
    /// The updates a subscriber must see: changed ones only.
    pub fn to_publish(&self) -> impl Iterator<Item = &AvailabilityUpdate> {
        self.updates.iter().filter(|u| u.changed)
    }
}

/// Per-sku changes of one operation, merged: first `before`, last `after`.
#[derive(Default)]
struct Changes(Vec<SkuChange>);

impl Changes {
    fn add(&mut self, sku: &str, before: SkuState, after: SkuState, repeat: bool) {
        match self.0.iter_mut().find(|c| c.sku == sku) {
            Some(c) => {
                c.after = after;
                c.repeat &= repeat;
            }
            None => self.0.push(SkuChange { sku: sku.to_string(), before, after, repeat }),
        }
    }
    fn add_reply(&mut self, sku: &str, r: reply::Reply, repeat: bool) -> reply::Reply {
        self.add(sku, r.before.clone(), r.after.clone(), repeat);
        r
    }
}

/// The inventory engine. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Engine {
    conn: Conn,
    scripts: Arc<Scripts>,
    cfg: Arc<EngineConfig>,
    clock: Clock,
    channels: Arc<ChannelCache>,
}

impl Engine {
    /// Connects and loads every script into the server's cache (so pipelined
    /// EVALSHA calls find them; a later NOSCRIPT still falls back to EVAL).
    pub async fn connect(redis: impl Into<RedisTarget>, cfg: EngineConfig, clock: Clock) -> Result<Engine, StoreError> {
        let conn = Conn::connect(redis).await?;
        let engine = Engine {
            conn,
            scripts: Arc::new(Scripts::new()),
            channels: Arc::new(ChannelCache::default()),
            cfg: Arc::new(cfg),
            clock,
        };
        engine.load_scripts().await?;
        Ok(engine)
    }

    async fn load_scripts(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        for s in self.scripts.all() {
            let mut cmd = redis::cmd("SCRIPT");
            cmd.arg("LOAD").arg(&s.code);
            if let Conn::Cluster(_) = conn {
                // Every master needs it; redis-rs fans SCRIPT LOAD out to all nodes.
                cmd.query_async::<redis::Value>(&mut conn).await?;
            } else {
                cmd.query_async::<String>(&mut conn).await?;
            }
        }
        Ok(())
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Tests' crash points: after `calls` more script calls, every call
    /// fails as if the worker had died there (`None`: no limit again).
    #[doc(hidden)]
    pub fn crash_after_calls(&self, calls: Option<u32>) {
        self.scripts.budget().set(calls);
    }

    /// The loaded scripts (the benchmark calls `reserve` directly for its ceiling).
    pub(crate) fn scripts(&self) -> &Scripts {
        &self.scripts
    }

    /// Waits until `replicas` replicas have every write this engine's
    /// connection made (Redis `WAIT`; on a cluster, the least of every
    /// master's answers), or `timeout` passes: then TooFewReplicas. A
    /// failover loses what the old master never replicated, so outputs and
    /// offsets must not run ahead of it.
    pub async fn wait_replicas(&self, replicas: u32, timeout: Duration) -> Result<(), StoreError> {
        let ms = timeout.as_millis().max(1) as u64;
        let acked: i64 = redis::cmd("WAIT").arg(replicas).arg(ms).query_async(&mut self.conn.clone()).await?;
        if acked >= i64::from(replicas) {
            Ok(())
        } else {
            Err(StoreError::TooFewReplicas { acked, wanted: replicas, timeout_ms: ms })
        }
    }

    /// A raw connection handle (for inspection tools and tests).
    pub fn conn(&self) -> Conn {
        self.conn.clone()
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn idem_ttl(&self) -> String {
        (self.cfg.idempotency_retention.as_millis().max(1)).to_string()
    }

    fn order_ttl(&self) -> String {
        (self.cfg.order_retention.as_millis().max(1)).to_string()
    }

    /// The current state of one sku, read without changing anything.
    pub async fn sku_state(&self, sku: &str) -> Result<SkuState, StoreError> {
        let fields: Vec<String> = redis::cmd("HGETALL").arg(keys::SkuKeys::new(sku).inv).query_async(&mut self.conn.clone()).await?;
        reply::sku_state(&fields).map_err(StoreError::Reply)
    }

    /// The channels as this engine sees them: name -> locations.
    pub async fn channels(&self) -> Result<Arc<BTreeMap<String, Vec<String>>>, StoreError> {
        self.channels.get(&mut self.conn.clone()).await
    }

    /// Builds the effect: availability per channel for every sku moved.
    async fn effect<T>(&self, outcome: T, changes: Changes) -> Result<Effect<T>, StoreError> {
        let channels = self.channels().await?;
        let ups = changes
            .0
            .iter()
            .flat_map(|c| updates(c, channels.iter().map(|(n, l)| (n.as_str(), l.as_slice()))))
            .collect();
        Ok(Effect { outcome, skus: changes.0, updates: ups, late_refusals: Vec::new() })
    }
}

/// Checks an id the scripts will use as part of a key or stored value.
pub fn check_id(what: &str, v: &str) -> Result<(), StoreError> {
    if v.is_empty() || v.chars().any(|c| c.is_control()) {
        return Err(StoreError::Invalid(format!("{what} must be a non-empty id without control characters, got {v:?}")));
    }
    Ok(())
}

fn qarg(q: Qty) -> String {
    q.raw().to_string()
}
