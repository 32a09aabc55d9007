//! The benchmark's figures: a table for people, one JSON line for scripts.

use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Params {
    pub skus: u64,
    pub locations: u32,
    pub channels: u32,
    pub partitions: i32,
    pub warmup_s: u64,
    pub duration_s: u64,
    pub rate: u64,
    pub hot: f64,
    pub seed: u64,
    pub batch_size: usize,
    pub kafka: String,
    pub redis: String,
    /// Replicas of the local Redis (`--wait-replicas`; 0 without).
    pub redis_replicas: u32,
    /// The broker (`Apache Kafka 4.1.1, local`, or `given`: --kafka).
    pub broker: String,
    /// `appendfsync` of the local Redis (`given`: --redis).
    pub appendfsync: String,
}

/// Latency percentiles in milliseconds over `count` answered events.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn from(h: &hdrhistogram::Histogram<u64>) -> Latency {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Latency { count: h.len(), p50_ms: ms(0.5), p99_ms: ms(0.99), p999_ms: ms(0.999), max_ms: h.max() as f64 / 1000.0 }
    }
}

/// CPU use (share of one core) of each local process over the full-speed window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Cpu {
    pub worker: f64,
    pub redis: Option<f64>,
    pub broker: Option<f64>,
    pub generator: f64,
}

/// With `--wait-replicas`: the two runs repeated by a worker that waits
/// (Redis `WAIT`) for replicas to have each batch's writes before it
/// publishes and commits, then once more by one that does not.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WaitRuns {
    pub replicas: u32,
    pub with: WaitRun,
    pub without_again: WaitRun,
    /// Sku-operations/s with WAIT over the mean of the two runs without
    /// (same Redis, same replicas). Sku-operations, not events: the mix
    /// drifts as carts and confirmed orders pile up.
    pub sku_ops_vs_without: f64,
}

/// A full-speed run and a paced run by one worker.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WaitRun {
    pub events_per_s: f64,
    pub sku_ops_per_event: f64,
    pub saturated: Latency,
    pub paced: Latency,
    pub paced_events_per_s: f64,
    pub cpu: Cpu,
    pub redis_commands_per_event: f64,
    pub redis_round_trips_per_event: f64,
    pub redis_calls_per_event: std::collections::BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub events_per_s: f64,
    pub sku_ops_per_s: f64,
    pub sku_ops_per_event: f64,
    pub ceiling_ops_per_s: f64,
    pub ceiling_connections: usize,
    pub ceiling_pipeline: usize,
    pub ratio: f64,
    /// Paced run: production to result.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub paced: Latency,
    pub paced_events_per_s: f64,
    /// Full-speed run (queueing included).
    pub saturated: Latency,
    pub catalog_events_per_s: f64,
    pub worker_rss_mb: f64,
    /// CPU over the full-speed window.
    pub cpu: Cpu,
    /// CPU over the paced window.
    pub paced_cpu: Cpu,
    pub redis_commands_per_event: f64,
    pub redis_round_trips_per_event: f64,
    /// Calls per input event by command name (Redis commandstats), full speed.
    pub redis_calls_per_event: std::collections::BTreeMap<String, f64>,
    /// Redis memory per sku-location of the stock state (levels, indexes).
    pub redis_bytes_per_sku_location: f64,
    /// The same while the loading events' idempotency records are retained.
    pub redis_bytes_per_sku_location_with_records: f64,
    /// Sku-locations loaded for the memory figures (the catalog, or 1,000,000 × locations with `--memory`).
    pub redis_bytes_measured_over: u64,
    pub delivery_errors: u64,
    /// With `--wait-replicas`: the runs repeated with WAIT.
    pub wait: Option<WaitRuns>,
    pub params: Params,
}

impl Report {
    pub fn table(&self) -> String {
        let mut t = String::new();
        let mut row = |k: &str, v: String| t.push_str(&format!("{k:<52} {v}\n"));
        let p = &self.params;
        row("broker / Redis appendfsync", format!("{} / {}", p.broker, p.appendfsync));
        row("catalog", format!("{} skus × {} locations, {} channels, {} partitions", p.skus, p.locations, p.channels, p.partitions));
        row("catalog load (level.set events/s)", format!("{:.0}", self.catalog_events_per_s));
        row("full speed: input events/s (committed)", format!("{:.0}", self.events_per_s));
        row("full speed: sku-operations/s", format!("{:.0} ({:.2} per event)", self.sku_ops_per_s, self.sku_ops_per_event));
        row(
            "ceiling: reserve EVALSHA ops/s",
            format!("{:.0} ({} connections, pipelines of {})", self.ceiling_ops_per_s, self.ceiling_connections, self.ceiling_pipeline),
        );
        row("ratio sku-operations/s ÷ ceiling", format!("{:.3}", self.ratio));
        row("full speed latency p50/p99/p999 ms", format!("{:.1} / {:.1} / {:.1} (queueing included)", self.saturated.p50_ms, self.saturated.p99_ms, self.saturated.p999_ms));
        row(
            &format!("paced {}/s latency p50/p99/p999 ms", p.rate),
            format!("{:.1} / {:.1} / {:.1} over {} results ({:.0} events/s achieved)", self.p50_ms, self.p99_ms, self.p999_ms, self.paced.count, self.paced_events_per_s),
        );
        row("worker peak RSS MB", format!("{:.1}", self.worker_rss_mb));
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
        for (name, c) in [("full speed", &self.cpu), ("paced", &self.paced_cpu)] {
            row(
                &format!("{name}: CPU worker / redis / broker / generator"),
                format!("{:.2} / {} / {} / {:.2}", c.worker, opt(c.redis), opt(c.broker), c.generator),
            );
        }
        row("redis commands / round trips per event", format!("{:.2} / {:.2}", self.redis_commands_per_event, self.redis_round_trips_per_event));
        row(
            &format!("redis bytes per sku-location (over {})", self.redis_bytes_measured_over),
            format!("{:.0} state; {:.0} while the loading events' idempotency records are kept", self.redis_bytes_per_sku_location, self.redis_bytes_per_sku_location_with_records),
        );
        if let Some(w) = &self.wait {
            for (name, r) in [(format!("with WAIT {}", w.replicas), &w.with), ("without WAIT, again".to_string(), &w.without_again)] {
                row(&format!("{name}: full speed input events/s"), format!("{:.0} ({:.2} sku-ops per event)", r.events_per_s, r.sku_ops_per_event));
                row(&format!("{name}: full speed latency p50/p99 ms"), format!("{:.1} / {:.1}", r.saturated.p50_ms, r.saturated.p99_ms));
                row(
                    &format!("{name}: paced {}/s latency p50/p99/p999", p.rate),
                    format!("{:.1} / {:.1} / {:.1} over {} results ({:.0} events/s achieved)", r.paced.p50_ms, r.paced.p99_ms, r.paced.p999_ms, r.paced.count, r.paced_events_per_s),
                );
                row(&format!("{name}: CPU worker / redis (full speed)"), format!("{:.2} / {}", r.cpu.worker, opt(r.cpu.redis)));
                row(&format!("{name}: redis commands / round trips per event"), format!("{:.2} / {:.2}", r.redis_commands_per_event, r.redis_round_trips_per_event));
            }
            row(&format!("sku-ops/s with WAIT {} ÷ without (mean of both)", w.replicas), format!("{:.2}", w.sku_ops_vs_without));
        }
        if self.delivery_errors > 0 {
            row("generator delivery errors", self.delivery_errors.to_string());
        }
        t
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("report serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_named_fields_on_one_line() {
        let r = Report { events_per_s: 1.5, ratio: 0.5, ..Default::default() };
        let j = r.json();
        assert!(!j.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        for k in ["events_per_s", "sku_ops_per_s", "ceiling_ops_per_s", "ratio", "p50_ms", "p99_ms", "p999_ms", "worker_rss_mb", "redis_bytes_per_sku_location", "params"] {
            assert!(v.get(k).is_some(), "{k} in {j}");
        }
        assert!(r.table().contains("ratio"));
    }
}
