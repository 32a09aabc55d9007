//! One batch: decode every message, apply the valid ones (concurrently
//! across message keys, in order within a key), coalesce availability per
//! (channel, sku), publish everything, and return the offsets to store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::apply::{self, Applied};
use super::crash_point::CrashPoint;
use super::WorkerError;
use crate::config::Config;
use crate::metrics as M;
use crate::domain::AvailabilityUpdate;
use crate::wire as events;
use crate::publish::{Out, PublishError, Publisher};
use crate::store::{Engine, LateRefusal, Landed, StoreError};

/// Counts of one batch, for logs and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub messages: usize,
    pub applied: usize,
    pub dead_lettered: usize,
    pub published: usize,
}

/// The offsets to store once `msgs` took effect: per partition, one past
/// the last message.
pub fn next_offsets(msgs: &[OwnedMessage]) -> TopicPartitionList {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for m in msgs {
        let e = next.entry((m.topic(), m.partition())).or_insert(0);
        *e = (*e).max(m.offset() + 1);
    }
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in next {
        tpl.add_partition_offset(t, p, Offset::Offset(o)).expect("valid offset");
    }
    tpl
}

pub struct Processor {
    cfg: Config,
    engine: Engine,
    publisher: Arc<Publisher>,
    crash: Option<CrashPoint>,
}

/// The latest availability per (channel, sku) in a batch, published if any
/// change in the batch moved it (or a repeat asked to publish again).
#[derive(Default)]
pub(super) struct Coalesced(BTreeMap<(String, String), (AvailabilityUpdate, String, bool)>);

impl Coalesced {
    pub(super) fn add(&mut self, ups: Vec<AvailabilityUpdate>, caused_by: &str) {
        for u in ups {
            let key = (u.channel.clone(), u.sku.clone());
            match self.0.get_mut(&key) {
                Some(cur) => {
                    let changed = cur.2 || u.changed;
                    if u.version >= cur.0.version {
                        *cur = (u, caused_by.to_string(), changed);
                    } else {
                        cur.2 = changed;
                    }
                }
                None => {
                    let changed = u.changed;
                    self.0.insert(key, (u, caused_by.to_string(), changed));
                }
            }
        }
    }

    pub(super) fn into_outs(self, cfg: &Config) -> Vec<Out> {
        self.0
            .into_values()
            .filter(|(_, _, changed)| *changed)
            .map(|(u, caused_by, _)| apply::availability_out(cfg, &u, &caused_by))
            .collect()
    }
}

/// Retries a store call while Redis is unavailable, saying so in the log;
/// gives up only when the worker is stopping.
pub(super) async fn with_redis<T, F, Fut>(what: &str, stop: &watch::Receiver<bool>, f: F) -> Result<T, WorkerError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let retried = std::sync::atomic::AtomicBool::new(false);
    let r = f
        .retry(ExponentialBuilder::default().with_min_delay(Duration::from_millis(50)).with_max_delay(Duration::from_secs(5)).without_max_times())
        .when(|e: &StoreError| e.is_retryable() && !*stop.borrow())
        .notify(|e, wait| {
            retried.store(true, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!(M::RETRIES, "what" => "redis").increment(1);
            metrics::gauge!(M::WAITING, "what" => "redis").set(1.0);
            tracing::warn!(error = %e, retry_in = ?wait, "waiting for Redis to apply {what}")
        })
        .await;
    // Only a call that waited clears the gauge: the hot path touches no metric.
    if retried.load(std::sync::atomic::Ordering::Relaxed) && r.is_ok() {
        metrics::gauge!(M::WAITING, "what" => "redis").set(0.0);
    }
    match r {
        Err(e) if e.is_retryable() => Err(WorkerError::Publish(PublishError::Shutdown)),
        other => other.map_err(WorkerError::Store),
    }
}

impl Processor {
    pub fn new(cfg: Config, engine: Engine, publisher: Arc<Publisher>, crash: Option<CrashPoint>) -> Processor {
        Processor { cfg, engine, publisher, crash }
    }

    pub async fn process(&self, msgs: &[OwnedMessage], stop: &watch::Receiver<bool>) -> Result<TopicPartitionList, WorkerError> {
        let mut outs = Vec::new();
        let mut stats = BatchStats { messages: msgs.len(), ..Default::default() };
        // Valid events grouped by (topic, partition, key), in offset order.
        let mut groups: Vec<Vec<(&OwnedMessage, events::InputEvent)>> = Vec::new();
        let mut group_of: HashMap<(&str, i32, &[u8]), usize> = HashMap::new();
        metrics::histogram!(M::BATCH_MESSAGES).record(msgs.len() as f64);
        for m in msgs {
            metrics::counter!(M::CONSUMED, "topic" => m.topic().to_string()).increment(1);
            let Some(kind) = self.cfg.topics.kind_of(m.topic()) else { continue };
            let headers = super::origin::headers_of(m);
            match events::decode_message(kind, &headers, m.payload().unwrap_or_default(), self.cfg.max_message_bytes) {
                Ok(ev) => {
                    let k = (m.topic(), m.partition(), m.key().unwrap_or_default());
                    let i = *group_of.entry(k).or_insert_with(|| {
                        groups.push(Vec::new());
                        groups.len() - 1
                    });
                    groups[i].push((m, ev));
                }
                Err(e) => {
                    tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), code = e.code(), "dead letter: {e}");
                    stats.dead_lettered += 1;
                    metrics::counter!(M::DEAD_LETTERED, "topic" => m.topic().to_string(), "code" => e.code()).increment(1);
                    outs.push(apply::dead_letter(&self.cfg, m, e.code(), &e.to_string(), e.event_id()));
                }
            }
        }
        let started = std::time::Instant::now();
        let results = futures::future::join_all(groups.iter().map(|g| async move {
            let mut done: Vec<(&OwnedMessage, &events::InputEvent, Applied)> = Vec::new();
            for (m, ev) in g {
                let a = apply::apply(&self.engine, &self.cfg, m, ev, stop).await?;
                done.push((m, ev, a));
            }
            Ok::<_, WorkerError>(done)
        }))
        .await;
        let mut coalesced = Coalesced::default();
        for r in results {
            for (m, ev, a) in r? {
                stats.applied += 1;
                metrics::counter!(M::APPLIED, "topic" => m.topic().to_string(), "type" => ev.kind).increment(1);
                outs.extend(a.outs);
                if let Some((code, message)) = a.dead {
                    tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), code, "dead letter: {message}");
                    stats.dead_lettered += 1;
                    metrics::counter!(M::DEAD_LETTERED, "topic" => m.topic().to_string(), "code" => code).increment(1);
                    outs.push(apply::dead_letter(&self.cfg, m, code, &message, Some(&ev.id)));
                }
                for late in a.late {
                    stats.dead_lettered += 1;
                    outs.extend(self.late_dead_letter(m, &late));
                }
                coalesced.add(a.updates, &ev.id);
            }
        }
        outs.extend(coalesced.into_outs(&self.cfg));
        stats.published = outs.len();
        let applied_in = started.elapsed();
        if let Some(c) = &self.crash {
            c.reached(outs.len());
        }
        self.replicated(stop).await?;
        let landed = self.publisher.send_all(&outs, stop).await?;
        self.fence(&outs, &landed, stop).await?;
        self.record_published(&outs, msgs);
        tracing::debug!(?stats, apply_ms = applied_in.as_millis() as u64, publish_ms = (started.elapsed() - applied_in).as_millis() as u64, "batch applied");

        Ok(next_offsets(msgs))
    }

    /// With RESERVOIR_REDIS_WAIT_REPLICAS: the batch's writes are on that
    /// many replicas before anything is published or an offset stored.
    async fn replicated(&self, stop: &watch::Receiver<bool>) -> Result<(), WorkerError> {
        if self.cfg.wait_replicas == 0 {
            return Ok(());
        }
        with_redis("the batch on its replicas (WAIT)", stop, || self.engine.wait_replicas(self.cfg.wait_replicas, self.cfg.wait_timeout)).await
    }

    /// The dead letter of a shipment or credit memo that the placement `m`
    /// refused, from the original message the store kept with it.
    fn late_dead_letter(&self, m: &OwnedMessage, late: &LateRefusal) -> Option<Out> {
        let (code, message) = (late.code, late.message.as_str());
        match apply::Origin::decode(&late.origin) {
            Ok(o) => {
                tracing::warn!(topic = o.topic, partition = o.partition, offset = o.offset, placed_at = m.offset(), code, "dead letter (refused when its placement arrived): {message}");
                metrics::counter!(M::DEAD_LETTERED, "topic" => o.topic.clone(), "code" => code).increment(1);
                Some(o.dead_letter(&self.cfg.topics.dead_letter, code, message))
            }
            // Kept before origins were stored: nothing to dead-letter from.
            Err(e) => {
                tracing::error!(placement_offset = m.offset(), code, origin_error = %e, "a shipment or credit memo kept before its placement was refused, and its original message is unknown: {message}");
                None
            }
        }
    }

    /// The dead letter of a shipment or credit memo whose order never came.
    fn expired_dead_letter(&self, late: &LateRefusal) -> Option<Out> {
        let o = apply::Origin::decode(&late.origin).ok()?;
        tracing::warn!(topic = o.topic, partition = o.partition, offset = o.offset, code = late.code, "dead letter (its order never came): {}", late.message);
        metrics::counter!(M::DEAD_LETTERED, "topic" => o.topic.clone(), "code" => late.code).increment(1);
        Some(o.dead_letter(&self.cfg.topics.dead_letter, late.code, &late.message))
    }

    /// Counts availability published, and each input's latency from its
    /// Kafka timestamp to its outputs being acknowledged.
    fn record_published(&self, outs: &[Out], msgs: &[OwnedMessage]) {
        let avail = outs.iter().filter(|o| o.topic == self.cfg.topics.availability).count();
        metrics::counter!(M::AVAILABILITY_PUBLISHED).increment(avail as u64);
        let now = crate::store::Clock::System.now_ms();
        let latency = metrics::histogram!(M::EVENT_LATENCY);
        for m in msgs {
            if let Some(ts) = m.timestamp().to_millis() {
                latency.record((now - ts).max(0) as f64 / 1000.0);
            }
        }
    }

    /// After availability was acknowledged: where another worker's older
    /// message of the same key landed after it, publishes the current
    /// availability again (and checks that one too), so the compacted
    /// topic's last message per key is current.
    async fn fence(&self, outs: &[Out], landed: &[(i32, i64)], stop: &watch::Receiver<bool>) -> Result<(), WorkerError> {
        let mut again = self.overtaken(outs, landed, stop).await?;
        for _ in 0..5 {
            if again.is_empty() {
                return Ok(());
            }
            metrics::counter!(M::AVAILABILITY_REPUBLISHED).increment(again.len() as u64);
            tracing::debug!(messages = again.len(), "availability published again: an older message landed last");
            let landed = self.publisher.send_all(&again, stop).await?;
            again = self.overtaken(&again, &landed, stop).await?;
        }
        tracing::warn!(messages = again.len(), "availability still overtaken after 5 rounds; the next change of these skus publishes it again");
        Ok(())
    }

    /// The current availability of every key whose last message is older
    /// than one published before it, after `outs` landed at `landed`.
    async fn overtaken(&self, outs: &[Out], landed: &[(i32, i64)], stop: &watch::Receiver<bool>) -> Result<Vec<Out>, WorkerError> {
        let mut by_sku: BTreeMap<&str, Vec<Landed>> = BTreeMap::new();
        for (o, (p, off)) in outs.iter().zip(landed) {
            if let Some((channel, sku, version)) = &o.availability {
                by_sku.entry(sku.as_str()).or_default().push((channel.clone(), *version, *p, *off));
            }
        }
        let stale = futures::future::join_all(by_sku.iter().map(|(sku, l)| with_redis("the availability fence", stop, move || self.engine.fence(sku, l)))).await;
        let mut again = Coalesced::default();
        for ups in stale {
            again.add(ups?, apply::FENCE_CAUSE);
        }
        Ok(again.into_outs(&self.cfg))
    }

    /// Releases due holds and publishes their availability.
    pub async fn sweep(&self, stop: &watch::Receiver<bool>) -> Result<usize, WorkerError> {
        let eff = with_redis("the hold sweep", stop, || self.engine.sweep_holds(1000)).await?;
        let released = eff.outcome.released;
        if released > 0 || !eff.updates.is_empty() || !eff.late_refusals.is_empty() {
            self.replicated(stop).await?;
        }
        if !eff.late_refusals.is_empty() {
            // Kept for an order that never came: dead-lettered, and forgotten only once acknowledged.
            let dead: Vec<Out> = eff.late_refusals.iter().filter_map(|l| self.expired_dead_letter(l)).collect();
            self.publisher.send_all(&dead, stop).await?;
            with_redis("forgetting expired early events", stop, || self.engine.forget_expired(&eff.late_refusals)).await?;
        }
        if !eff.updates.is_empty() {
            let mut c = Coalesced::default();
            c.add(eff.updates, apply::HOLD_EXPIRY_CAUSE);
            let outs = c.into_outs(&self.cfg);
            let landed = self.publisher.send_all(&outs, stop).await?;
            self.fence(&outs, &landed, stop).await?;
            metrics::counter!(M::AVAILABILITY_PUBLISHED).increment(outs.len() as u64);
            tracing::info!(released, published = outs.len(), "expired holds released");
        }
        // Only now may the index forget them: a sweeper that died above
        // left them due, and the next sweep publishes them again.
        with_redis("the hold sweep's index", stop, || self.engine.sweep_done(&eff.outcome)).await?;
        metrics::counter!(M::HOLDS_EXPIRED).increment(released as u64);
        Ok(released)
    }
}
