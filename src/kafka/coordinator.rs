//! Calls to a consumer group's coordinator, retried while it is busy. A
//! broker that has just started, or just taken over the group's offsets
//! partition, answers COORDINATOR_LOAD_IN_PROGRESS (or NOT_COORDINATOR)
//! until it has loaded them, and librdkafka gives a synchronous commit only
//! two quick retries: on a fresh broker that is not enough.

use std::time::Duration;

use backon::{BlockingRetryable, ExponentialBuilder};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::TopicPartitionList;

/// Whether the group's coordinator is only loading or moving, so the
/// same call can succeed shortly.
pub fn coordinator_busy(e: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(e.rdkafka_error_code(), Some(CoordinatorLoadInProgress | CoordinatorNotAvailable | NotCoordinator))
}

/// `call`, again for up to `within` while it fails with a busy
/// coordinator; its result, or the first other error.
pub fn while_busy<T>(within: Duration, call: impl FnMut() -> Result<T, KafkaError>) -> Result<T, KafkaError> {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(usize::MAX)
        .with_total_delay(Some(within));
    call.retry(backoff).when(coordinator_busy).call()
}

/// A synchronous commit of `offsets`, retried for up to `within` while
/// the coordinator is busy; any other error at once.
pub fn commit_sync<C: ConsumerContext>(consumer: &BaseConsumer<C>, offsets: &TopicPartitionList, within: Duration) -> Result<(), KafkaError> {
    while_busy(within, || consumer.commit(offsets, CommitMode::Sync))
}

/// The group's committed offsets of `partitions`, retried like
/// [`commit_sync`]. Each call waits up to `request`.
pub fn committed_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    partitions: &TopicPartitionList,
    request: Duration,
    within: Duration,
) -> Result<TopicPartitionList, KafkaError> {
    while_busy(within, || {
        let got = consumer.committed_offsets(partitions.clone(), request)?;
        // A busy coordinator may answer per partition only.
        match got.elements().iter().find_map(|e| e.error().err()) {
            Some(e) if coordinator_busy(&e) => Err(e),
            _ => Ok(got),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_loading_or_moving_coordinator_is_waited_for() {
        // The error the replay test's commit got on a fresh broker in CI.
        assert!(coordinator_busy(&KafkaError::ConsumerCommit(RDKafkaErrorCode::CoordinatorLoadInProgress)));
        assert!(coordinator_busy(&KafkaError::ConsumerCommit(RDKafkaErrorCode::NotCoordinator)));
        assert!(coordinator_busy(&KafkaError::MetadataFetch(RDKafkaErrorCode::CoordinatorNotAvailable)));
        // A worker that joined (the replay must refuse), or no access: at once.
        assert!(!coordinator_busy(&KafkaError::ConsumerCommit(RDKafkaErrorCode::RebalanceInProgress)));
        assert!(!coordinator_busy(&KafkaError::ConsumerCommit(RDKafkaErrorCode::GroupAuthorizationFailed)));
        assert!(!coordinator_busy(&KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)));
    }
}
