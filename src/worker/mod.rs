//! The consumer loop: poll a batch, decode, apply through the engine,
//! publish, and only then store the offsets.
//!
//! Batches are processed between polls, so nothing is in flight when
//! librdkafka runs a rebalance callback: on revoke the stored offsets are
//! exactly the applied ones, and they are committed synchronously there.
//! Within a batch, events with different message keys run concurrently
//! (their Redis calls share one pipelined connection) and events with the
//! same key run in order.

mod apply;
mod batch;
mod crash_point;
mod origin;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use tracing::Instrument as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::ClientContext;
use tokio::sync::watch;

use crate::config::{Config, Sabotage};
use crate::http::Health;
use crate::publish::{PublishError, Publisher};
use crate::store::{Engine, StoreError};

pub use apply::availability_out;
pub use batch::BatchStats;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot create the Kafka consumer: {0}")]
    Consumer(#[source] KafkaError),
    #[error("cannot subscribe to the input topics: {0}")]
    Subscribe(#[source] KafkaError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Http(#[source] std::io::Error),
    #[error(
        "{topic}[{partition}] offset {offset} ({kind}): {error}. The worker stopped without storing this offset: this is a bug in reservoir, its keys in Redis were changed by something else, or Redis refuses what it needs (ACL permissions); look at them with `reservoir inspect`, then report it. A restart applies the event again once the cause is gone"
    )]
    Bug { topic: String, partition: i32, offset: i64, kind: &'static str, error: StoreError },
    #[error("the hold sweep failed for good, so the worker stopped: {0}")]
    Sweep(#[source] Box<WorkerError>),
    #[error("{0}")]
    KafkaRefused(String),
    #[error("cannot listen for SIGUSR1 (RESERVOIR_CRASH_POINT): {0}")]
    CrashPoint(#[source] std::io::Error),
}

/// Commits stored offsets synchronously when partitions are taken away,
/// and tells the probes and metrics what librdkafka reports.
struct Context {
    health: Arc<Health>,
    cfg: Config,
    /// Set once a broker refuses the worker's credentials or certificate.
    refused: watch::Sender<Option<String>>,
}

impl ClientContext for Context {
    fn stats(&self, s: rdkafka::Statistics) {
        if s.brokers.values().any(|b| b.nodeid >= 0 && b.state == "UP") {
            self.health.broker_down.store(false, Ordering::Relaxed);
        }
        for (topic, t) in &s.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    metrics::gauge!(crate::metrics::CONSUMER_LAG, "topic" => topic.clone(), "partition" => p.to_string()).set(part.consumer_lag as f64);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::Global(rdkafka::types::RDKafkaErrorCode::AllBrokersDown)) {
            self.health.broker_down.store(true, Ordering::Relaxed);
        }
        if let KafkaError::Global(code) = error {
            if let Some(m) = crate::kafka::refused_credentials(code, reason, &self.cfg) {
                self.refused.send_replace(Some(m));
                return;
            }
        }
        tracing::warn!(error = %error, "Kafka: {reason}; librdkafka reconnects by itself");
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.health.assigned.store(0, Ordering::Relaxed);
            // Nothing is in flight here (batches finish between polls).
            // A coordinator still loading is waited for briefly: the rebalance waits on this.
            match crate::kafka::while_busy(Duration::from_secs(5), || consumer.commit_consumer_state(CommitMode::Sync)) {
                Ok(()) | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => tracing::warn!(error = %e, "committing offsets on revoke failed; the new owner replays from the last commit"),
            }
            tracing::info!(partitions = tpl.count(), "partitions revoked");
        }
    }
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.health.assigned.store(tpl.count(), Ordering::Relaxed);
            tracing::info!(partitions = tpl.count(), "partitions assigned");
        }
    }
}

/// One span per batch: its size and, per partition, the offsets it covers,
/// so every log line of the batch can be traced to its messages.
fn batch_span(msgs: &[rdkafka::message::OwnedMessage]) -> tracing::Span {
    use rdkafka::Message as _;
    let mut ranges: std::collections::BTreeMap<(&str, i32), (i64, i64)> = Default::default();
    for m in msgs {
        let r = ranges.entry((m.topic(), m.partition())).or_insert((m.offset(), m.offset()));
        r.0 = r.0.min(m.offset());
        r.1 = r.1.max(m.offset());
    }
    let offsets: Vec<String> = ranges.iter().map(|((t, p), (a, b))| format!("{t}/{p}:{a}-{b}")).collect();
    tracing::info_span!("batch", messages = msgs.len(), offsets = %offsets.join(","))
}

/// Connects to Redis, retrying with backoff until it answers or shutdown.
async fn connect_engine(cfg: &Config, shutdown: &watch::Receiver<bool>) -> Result<Option<Engine>, StoreError> {
    let connect = || Engine::connect(&cfg.redis, cfg.engine.clone(), Default::default());
    let r = connect
        .retry(ExponentialBuilder::default().with_max_delay(Duration::from_secs(5)).without_max_times())
        .when(|e: &StoreError| e.is_retryable() && !*shutdown.borrow())
        .notify(|e, wait| tracing::warn!(error = %e, retry_in = ?wait, "waiting for Redis at {}", cfg.redis))
        .await;
    match r {
        Ok(e) => Ok(Some(e)),
        Err(_) if *shutdown.borrow() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Runs a worker until `shutdown` completes; then stops fetching, finishes
/// the batch in hand, flushes the producer and commits.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
    let (stop_tx, stop) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    // First, so a SIGUSR1 never finds the default action (exit) in place.
    let crash = if cfg.crash_point { Some(crash_point::CrashPoint::listen().map_err(WorkerError::CrashPoint)?) } else { None };
    // Probes answer from the start, also while Redis is still awaited.
    let health = Arc::new(Health::default());
    if let Some(addr) = cfg.metrics_addr {
        let mut stopped = stop.clone();
        let until_stop = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        crate::http::serve(addr, health.clone(), &cfg.redis, until_stop).await.map_err(WorkerError::Http)?;
    }
    let engine = tokio::select! {
        e = connect_engine(&cfg, &stop) => e?,
        _ = &mut shutdown => None,
    };
    let Some(engine) = engine else { return Ok(()) };
    let publisher = Arc::new(Publisher::new(&cfg)?);
    let (refused_tx, mut refused) = watch::channel(None);
    let context = Context { health, cfg: cfg.clone(), refused: refused_tx };
    let consumer: StreamConsumer<Context> = crate::kafka::consumer_config(&cfg).create_with_context(context).map_err(WorkerError::Consumer)?;
    consumer.subscribe(&cfg.topics.inputs()).map_err(WorkerError::Subscribe)?;
    tracing::info!(group = %cfg.group_id, topics = ?cfg.topics.inputs(), "worker started");
    if let Some(s) = cfg.sabotage {
        tracing::error!(sabotage = s.name(), "this worker breaks the contract on purpose (RESERVOIR_SABOTAGE); it is for the soak's own tests only");
    }

    let processor = batch::Processor::new(cfg.clone(), engine, publisher.clone(), crash);
    let mut sweep = tokio::time::interval(cfg.sweep_interval);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut messages = consumer.stream().ready_chunks(cfg.batch_size);
    let result = loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break Ok(()),
            _ = refused.changed() => {
                let m = refused.borrow().clone().unwrap_or_default();
                break Err(WorkerError::KafkaRefused(m));
            }
            // Before messages: under a backlog a batch is always ready, and
            // expired holds must still be released within a sweep interval.
            _ = sweep.tick() => {
                let swept = tokio::select! {
                    r = processor.sweep(&stop) => r,
                    never = stop_on(shutdown.as_mut(), &stop_tx) => match never {},
                };
                // Redis and Kafka outages are waited out inside; what comes
                // back is permanent (a refused message, a failing script),
                // and stops the worker as it would in a batch.
                match swept {
                    Ok(_) => {}
                    Err(WorkerError::Publish(PublishError::Shutdown)) => break Ok(()),
                    Err(e) => break Err(WorkerError::Sweep(Box::new(e))),
                }
                if *stop.borrow() {
                    break Ok(());
                }
            }
            batch = messages.next() => {
                let Some(batch) = batch else { break Ok(()) };
                let mut owned = Vec::with_capacity(batch.len());
                for m in batch {
                    match m {
                        Ok(m) => owned.push(m.detach()),
                        Err(e) => tracing::warn!(error = %e, "Kafka consumer error; librdkafka retries by itself"),
                    }
                }
                if cfg.sabotage == Some(Sabotage::OffsetsBeforeEffect) {
                    let _ = consumer.store_offsets(&batch::next_offsets(&owned));
                    let _ = consumer.commit_consumer_state(CommitMode::Async);
                }
                let span = batch_span(&owned);
                let done = tokio::select! {
                    r = processor.process(&owned, &stop).instrument(span) => r,
                    // Shutdown while a batch waits for Redis or Kafka: give up
                    // the batch without storing offsets; it is redelivered.
                    never = stop_on(shutdown.as_mut(), &stop_tx) => match never {},
                };
                match done {
                    Ok(offsets) => {
                        if let Err(e) = consumer.store_offsets(&offsets) {
                            tracing::warn!(error = %e, "storing offsets failed (partition revoked?); the batch is replayed by its next owner");
                        }
                    }
                    Err(WorkerError::Publish(PublishError::Shutdown)) => break Ok(()),
                    Err(e) => break Err(e),
                }
                if *stop.borrow() {
                    break Ok(());
                }
            }
        }
    };
    let _ = stop_tx.send(true);
    tracing::info!("worker stopping: flushing the producer and committing offsets");
    drop(messages);
    // librdkafka blocks while the broker is unreachable; bound the exit.
    let closing = tokio::task::spawn_blocking(move || {
        publisher.flush(Duration::from_secs(10));
        match crate::kafka::while_busy(Duration::from_secs(8), || consumer.commit_consumer_state(CommitMode::Sync)) {
            Ok(()) | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!(error = %e, "final commit failed; the next owner replays from the last commit"),
        }
        drop(consumer);
    });
    if tokio::time::timeout(Duration::from_secs(20), closing).await.is_err() {
        tracing::warn!("Kafka did not answer the final flush and commit within 20 s; exiting anyway (uncommitted events are redelivered and applied once)");
    }
    result
}

/// Completes never: once `shutdown` completes it tells the batch or sweep in
/// progress to stop (through `stop_tx`), which then returns by itself.
async fn stop_on<F: Future<Output = ()>>(shutdown: std::pin::Pin<&mut F>, stop_tx: &watch::Sender<bool>) -> std::convert::Infallible {
    shutdown.await;
    let _ = stop_tx.send(true);
    std::future::pending().await
}
