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

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::ClientContext;
use tokio::sync::watch;

use crate::config::Config;
use crate::publish::{PublishError, Publisher};
use crate::store::{Engine, StoreError};

pub use batch::BatchStats;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot create the Kafka consumer: {0}")]
    Consumer(#[source] KafkaError),
    #[error("cannot subscribe to the input topics: {0}")]
    Subscribe(#[source] KafkaError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("Redis: {0}")]
    Store(#[from] StoreError),
}

/// Commits stored offsets synchronously when partitions are taken away.
struct Context;

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Nothing is in flight here (batches finish between polls).
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => tracing::warn!(error = %e, "committing offsets on revoke failed; the new owner replays from the last commit"),
            }
            tracing::info!(partitions = tpl.count(), "partitions revoked");
        }
    }
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            tracing::info!(partitions = tpl.count(), "partitions assigned");
        }
    }
}

/// Connects to Redis, retrying with backoff until it answers or shutdown.
async fn connect_engine(cfg: &Config, shutdown: &watch::Receiver<bool>) -> Result<Option<Engine>, StoreError> {
    let connect = || Engine::connect(&cfg.redis_url, cfg.engine.clone(), Default::default());
    let r = connect
        .retry(ExponentialBuilder::default().with_max_delay(Duration::from_secs(5)).without_max_times())
        .when(|e: &StoreError| e.is_retryable() && !*shutdown.borrow())
        .notify(|e, wait| tracing::warn!(error = %e, retry_in = ?wait, "waiting for Redis at {}", cfg.redis_url))
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
    let engine = tokio::select! {
        e = connect_engine(&cfg, &stop) => e?,
        _ = &mut shutdown => None,
    };
    let Some(engine) = engine else { return Ok(()) };
    let publisher = Arc::new(Publisher::new(&cfg)?);
    let consumer: StreamConsumer<Context> = crate::kafka::consumer_config(&cfg).create_with_context(Context).map_err(WorkerError::Consumer)?;
    consumer.subscribe(&cfg.topics.inputs()).map_err(WorkerError::Subscribe)?;
    tracing::info!(group = %cfg.group_id, topics = ?cfg.topics.inputs(), "worker started");

    let processor = batch::Processor::new(cfg.clone(), engine, publisher.clone());
    let mut sweep = tokio::time::interval(cfg.sweep_interval);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut messages = consumer.stream().ready_chunks(cfg.batch_size);
    let result = loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break Ok(()),
            batch = messages.next() => {
                let Some(batch) = batch else { break Ok(()) };
                let mut owned = Vec::with_capacity(batch.len());
                for m in batch {
                    match m {
                        Ok(m) => owned.push(m.detach()),
                        Err(e) => tracing::warn!(error = %e, "Kafka consumer error; librdkafka retries by itself"),
                    }
                }
                // Shutdown while a batch waits for Redis or Kafka: give up the
                // batch without storing offsets; it is redelivered.
                let stopping = async {
                    (&mut shutdown).await;
                    let _ = stop_tx.send(true);
                    std::future::pending::<()>().await
                };
                let done = tokio::select! {
                    r = processor.process(&owned, &stop) => r,
                    _ = stopping => unreachable!(),
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
            _ = sweep.tick() => {
                if let Err(e) = processor.sweep(&stop).await {
                    tracing::warn!(error = %e, "hold sweep failed; retrying at the next tick");
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
        match consumer.commit_consumer_state(CommitMode::Sync) {
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
