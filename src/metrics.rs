//! Prometheus metrics: the names the worker records (through the `metrics`
//! facade) and the process-wide recorder that renders them for `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Input messages read, by `topic`.
pub const CONSUMED: &str = "reservoir_events_consumed_total";
/// Valid events applied, by `topic` and `type`.
pub const APPLIED: &str = "reservoir_events_applied_total";
/// Messages sent to the dead-letter topic, by `topic` and `code`.
pub const DEAD_LETTERED: &str = "reservoir_events_dead_lettered_total";
/// Order results, by `result` (confirmed | rejected) and `reason` (rejected only).
pub const RESERVATIONS: &str = "reservoir_reservations_total";
/// Cart hold results, by `result` (confirmed | rejected).
pub const HOLDS: &str = "reservoir_holds_total";
/// Holds released by the expiry sweep.
pub const HOLDS_EXPIRED: &str = "reservoir_holds_expired_total";
/// Availability messages published.
pub const AVAILABILITY_PUBLISHED: &str = "reservoir_availability_published_total";
/// Availability published again because another worker's older message
/// of the same key landed after it.
pub const AVAILABILITY_REPUBLISHED: &str = "reservoir_availability_republished_total";
/// Messages per batch.
pub const BATCH_MESSAGES: &str = "reservoir_batch_messages";
/// Seconds per Redis script call, by `script`.
pub const SCRIPT_SECONDS: &str = "reservoir_redis_script_seconds";
/// Seconds from an input message's Kafka timestamp to its outputs being acknowledged.
pub const EVENT_LATENCY: &str = "reservoir_event_latency_seconds";
/// Messages behind the partition's end, by `topic` and `partition` (librdkafka statistics).
pub const CONSUMER_LAG: &str = "reservoir_consumer_lag";
/// Retries after a failure, by `what` (redis | kafka).
pub const RETRIES: &str = "reservoir_retries_total";
/// 1 while the worker waits for `what` (redis | kafka) to come back, else 0.
pub const WAITING: &str = "reservoir_waiting";
/// Outputs Kafka refused for good (too large, not authorized): a bug or a
/// topic setting to fix; the worker stops on the first. Alert on any.
pub const REFUSED_OUTPUTS: &str = "reservoir_refused_outputs_total";

const SECONDS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const SIZES: &[f64] = &[1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder once per process and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let b = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_MESSAGES.into()), SIZES))
                .expect("bucket lists are not empty");
            let recorder = b.build_recorder();
            let handle = recorder.handle();
            // Another recorder (a test harness's) keeps the facade; this
            // handle then renders only what nobody records: still valid.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Every metric name above, for checks of dashboards and docs.
pub const ALL: &[&str] = &[
    CONSUMED,
    APPLIED,
    DEAD_LETTERED,
    RESERVATIONS,
    HOLDS,
    HOLDS_EXPIRED,
    AVAILABILITY_PUBLISHED,
    AVAILABILITY_REPUBLISHED,
    BATCH_MESSAGES,
    SCRIPT_SECONDS,
    EVENT_LATENCY,
    CONSUMER_LAG,
    RETRIES,
    WAITING,
    REFUSED_OUTPUTS,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_uses_only_metrics_that_exist() {
        let dash = include_str!("../ops/grafana-dashboard.json");
        let mut used = std::collections::BTreeSet::new();
        for (i, _) in dash.match_indices("reservoir_") {
            let name: String = dash[i..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            let base = ["_bucket", "_count", "_sum"].iter().fold(name.clone(), |n, s| n.strip_suffix(s).map(str::to_string).unwrap_or(n));
            used.insert(base);
        }
        assert!(used.len() >= 10, "{used:?}");
        for n in &used {
            assert!(ALL.contains(&n.as_str()), "the dashboard queries {n}, which the worker does not record");
        }
    }
}
