//! The producer: availability changes, results and dead letters. A batch's
//! messages are all acknowledged (acks=all, idempotent producer) before the
//! worker stores the batch's offsets.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::watch;

use crate::config::Config;

/// One message to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Out {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Channel, sku and version of an availability message.
    pub availability: Option<(String, String, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot create the Kafka producer: {0}")]
    Create(#[source] KafkaError),
    #[error("shutting down before the messages were acknowledged")]
    Shutdown,
    /// Kafka refuses this message whatever the retry: a bug (an output we
    /// should never build) or a topic setting to fix. The worker stops
    /// rather than loop; its offsets stay where they are.
    #[error("Kafka refused a message for {topic} for good ({error}); it is not retried: check the topic's max.message.bytes and the producer's message.max.bytes, or report a bug")]
    Refused { topic: String, error: KafkaError },
}

/// Errors that no retry of the same message can fix.
fn permanent(e: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        e.rdkafka_error_code(),
        Some(MessageSizeTooLarge | InvalidMessageSize | MessageBatchTooLarge | InvalidRecord | TopicAuthorizationFailed | InvalidTopic | UnsupportedForMessageFormat)
    )
}

pub struct Publisher {
    producer: FutureProducer,
}

impl Publisher {
    pub fn new(cfg: &Config) -> Result<Publisher, PublishError> {
        let producer = crate::kafka::producer_config(cfg, &[]).create().map_err(PublishError::Create)?;
        Ok(Publisher { producer })
    }

    /// Publishes every message and waits until the broker acknowledged all
    /// of them, retrying with backoff while Kafka is unreachable; returns
    /// where each landed (partition, offset). Returns early only on
    /// shutdown (the caller then stores no offsets).
    pub async fn send_all(&self, outs: &[Out], shutdown: &watch::Receiver<bool>) -> Result<Vec<(i32, i64)>, PublishError> {
        use backon::BackoffBuilder as _;
        let mut landed = vec![(-1, -1); outs.len()];
        let mut pending: Vec<(usize, &Out)> = outs.iter().enumerate().collect();
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .without_max_times()
            .build();
        loop {
            let mut deliveries = Vec::with_capacity(pending.len());
            for (_, out) in &pending {
                deliveries.push(self.enqueue(out, shutdown).await);
            }
            let mut failed = Vec::new();
            for ((i, out), d) in pending.iter().zip(deliveries) {
                let result = match d {
                    Ok(d) => d.await.map_err(|_| KafkaError::Canceled).and_then(|r| r.map_err(|(e, _)| e)),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(d) => landed[*i] = (d.partition, d.offset),
                    Err(e) if permanent(&e) => {
                        metrics::counter!(crate::metrics::REFUSED_OUTPUTS).increment(1);
                        tracing::error!(topic = %out.topic, bytes = out.payload.len() + out.key.len(), error = %e, "Kafka refused a message for good; stopping instead of retrying it");
                        return Err(PublishError::Refused { topic: out.topic.clone(), error: e });
                    }
                    Err(e) => {
                        tracing::warn!(topic = %out.topic, error = %e, "Kafka did not acknowledge a message; publishing it again");
                        failed.push((*i, *out));
                    }
                }
            }
            if failed.is_empty() {
                metrics::gauge!(crate::metrics::WAITING, "what" => "kafka").set(0.0);
                return Ok(landed);
            }
            pending = failed;
            metrics::counter!(crate::metrics::RETRIES, "what" => "kafka").increment(pending.len() as u64);
            metrics::gauge!(crate::metrics::WAITING, "what" => "kafka").set(1.0);
            let wait = backoff.next().unwrap_or(Duration::from_secs(5));
            tracing::warn!(messages = pending.len(), retry_in = ?wait, "waiting for Kafka to accept {} message(s)", pending.len());
            if *shutdown.borrow() {
                return Err(PublishError::Shutdown);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Queues one message, waiting while the local queue is full.
    async fn enqueue(&self, out: &Out, shutdown: &watch::Receiver<bool>) -> Result<rdkafka::producer::DeliveryFuture, KafkaError> {
        let enqueue = || async {
            let mut headers = OwnedHeaders::new();
            for (k, v) in &out.headers {
                headers = headers.insert(Header { key: k, value: Some(v) });
            }
            let rec = FutureRecord::to(&out.topic).key(&out.key).payload(&out.payload).headers(headers);
            self.producer.send_result(rec).map_err(|(e, _)| e)
        };
        enqueue
            .retry(ExponentialBuilder::default().with_min_delay(Duration::from_millis(5)).with_max_delay(Duration::from_secs(1)).without_max_times())
            .when(|e| !*shutdown.borrow() && matches!(e, KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)))
            .await
    }

    /// Waits for everything queued to be delivered (before dropping the
    /// producer, which would purge its queue).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "the producer did not flush within {timeout:?}");
        }
    }
}
