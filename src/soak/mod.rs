//! `reservoir soak`: three workers under the benchmark's mix while faults
//! are injected (kill -9 and freezing of workers, Redis killed and
//! restarted, `SCRIPT FLUSH`, the broker restarted) and producers misbehave
//! (repeats, a cancel or shipments before their order, poison of every
//! dead-letter kind); then everything is healed, the workers catch up and
//! the guarantees are checked against what was sent, the final stock
//! against a model of it (`model`). `--sabotage` breaks the workers on
//! purpose, to show the checks catch it.
//!
//! Faults come one at a time: each is healed and the workers catch up with
//! everything produced before the next one, so the time to recover is
//! measured per kind.

mod checks;
mod faults;
mod model;
mod recorder;
mod stack;
mod traffic;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::bench::workload::{Catalog, ConfirmedOrder, Workload};
use crate::config::{Config, Sabotage, Topics};
pub use faults::Fault;
use crate::kafka::GroupProgress;

#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    /// How long faults are injected: 90s, 3m, 30m, 1h.
    #[arg(long, default_value = "3m", value_parser = parse_duration)]
    pub duration: Duration,
    /// Seed of the workload and of the fault schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Worker processes in the group.
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// Input events per second.
    #[arg(long, default_value_t = 150)]
    pub rate: u64,
    /// Skus in the catalog.
    #[arg(long, default_value_t = 300)]
    pub skus: u64,
    /// Share of orders and holds on one hot sku, so workers contend.
    #[arg(long, default_value_t = 0.3)]
    pub hot: f64,
    /// Mean seconds between one fault's recovery and the next fault.
    #[arg(long, default_value_t = 3)]
    pub pause: u64,
    /// Where the servers' and workers' logs and data go (default: a new temporary folder, removed after a clean run).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The faults to inject, comma-separated (default: all of them).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Fault::ALL.to_vec())]
    pub faults: Vec<Fault>,
    /// Runs the workers broken on purpose, to show the checks catch it.
    #[arg(long, value_enum, hide = true)]
    pub sabotage: Option<Sabotage>,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("{s:?} is not a duration like 90s, 3m or 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: the unit must be s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    #[error("local stack: {0}")]
    Local(#[from] crate::local::LocalError),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("creating topics: {0}")]
    Topics(#[from] crate::kafka::TopicsError),
    #[error("reading the worker group's progress: {0}")]
    Progress(#[from] crate::kafka::ProgressError),
    #[error("Redis: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}; logs are in {1}")]
    Stuck(String, String),
}

/// What the soak did and found.
#[derive(Debug, Default, Serialize)]
pub struct SoakReport {
    pub duration_s: u64,
    pub seed: u64,
    pub events: u64,
    pub repeats: u64,
    pub canceled_first: u64,
    pub shipped_first: u64,
    /// Shipments sent before their placement that were dead-lettered
    /// `insufficient_on_hand` (their location was short when they applied).
    pub shipped_first_refused: u64,
    pub poison: BTreeMap<String, u64>,
    pub faults: BTreeMap<String, u64>,
    /// Seconds from a fault's healing until every event produced before it
    /// was committed: (mean, max) per kind.
    pub recovery_s: BTreeMap<String, (f64, f64)>,
    pub dead_letters_repeated: u64,
    /// Availability messages older than one before them on their key.
    pub availability_out_of_order: u64,
    /// Keys whose last availability message by offset is not their newest.
    pub stale_last_messages: Vec<String>,
    /// Availability published again by a worker because an older message landed last.
    pub availability_fenced: u64,
    pub memory_warm_bytes: u64,
    pub memory_end_bytes: u64,
    pub catch_up_s: f64,
    pub generator_lost: u64,
    /// Sku-locations whose stock differs from the model of the events sent.
    pub model_differences: u64,
    /// The worker was broken on purpose (`--sabotage`).
    pub sabotage: Option<String>,
    pub violations: Vec<String>,
    pub dir: String,
}

impl SoakReport {
    pub fn table(&self) -> String {
        let mut o = format!(
            "soak of {} s (seed {}): {} events, {} repeats, {} cancels and {} shipments ({} refused) before placement\n",
            self.duration_s, self.seed, self.events, self.repeats, self.canceled_first, self.shipped_first, self.shipped_first_refused
        );
        if let Some(s) = &self.sabotage {
            o.push_str(&format!("the workers were broken on purpose: {s}\n"));
        }
        o.push_str(&format!("poison: {:?}\n", self.poison));
        o.push_str("fault                 count   recovery mean / max (s)\n");
        for (k, n) in &self.faults {
            let (mean, max) = self.recovery_s.get(k).copied().unwrap_or_default();
            o.push_str(&format!("{k:<20} {n:>6}   {mean:>6.1} / {max:.1}\n"));
        }
        let memory = if self.memory_warm_bytes == 0 {
            "not compared (runs longer than the retention + 30 s compare it)".to_string()
        } else {
            format!("{} -> {} bytes", self.memory_warm_bytes, self.memory_end_bytes)
        };
        o.push_str(&format!(
            "catch-up after healing {:.1} s; dead letters published again {}; Redis memory {memory}; generator messages lost {}\n",
            self.catch_up_s, self.dead_letters_repeated, self.generator_lost
        ));
        o.push_str(&format!(
            "availability messages out of version order {} ({} published again because an older one landed last); keys whose last message is not their newest {} {:?}\n",
            self.availability_out_of_order,
            self.availability_fenced,
            self.stale_last_messages.len(),
            self.stale_last_messages.iter().take(5).collect::<Vec<_>>()
        ));
        if self.violations.is_empty() {
            o.push_str("violations: 0\n");
        } else {
            o.push_str(&format!("violations: {}\n", self.violations.len()));
            for v in self.violations.iter().take(50) {
                o.push_str(&format!("  {v}\n"));
            }
        }
        o
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("the report serializes")
    }
}

async fn used_memory(url: &str) -> Result<u64, crate::store::StoreError> {
    let mut c = crate::store::Conn::connect(url).await?;
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut c).await?;
    Ok(info.lines().find_map(|l| l.strip_prefix("used_memory:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0))
}

/// Runs the soak; progress goes to the log, the report is returned.
pub async fn run(args: SoakArgs) -> Result<SoakReport, SoakError> {
    let tmp = tempfile::Builder::new().prefix("reservoir-soak-").tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let logs = dir.display().to_string();
    let (mut stack, redis_url, bootstrap) = stack::Stack::start(&dir)?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let mut cfg = Config::new(&bootstrap, &redis_url, &format!("reservoir-soak-{run_id}"));
    cfg.topics = Topics::suffixed(&format!(".soak-{run_id}"));
    // Shorter than the default 7 days, so Redis memory levels off within a
    // long run, yet far longer than any redelivery or repeat here.
    cfg.engine.idempotency_retention = Duration::from_secs(600);
    cfg.engine.order_retention = Duration::from_secs(600);
    cfg.engine.hold_time = Duration::from_secs(30);
    cfg.max_message_bytes = 4096;
    cfg.sweep_interval = Duration::from_millis(500);
    cfg.sabotage = args.sabotage;
    cfg.crash_point = true;
    crate::kafka::create_topics(&cfg, 3, stack::KAFKA_NODES as i32).await?;
    for i in 0..args.workers {
        stack.start_worker(&cfg, i)?;
    }

    let ledger = Arc::new(Mutex::new(traffic::Ledger::default()));
    let producer = traffic::producer(&cfg, ledger.clone())?;
    let catalog = Catalog { skus: args.skus, locations: 3, channels: 2 };
    let mut wl = Workload::new(catalog, &format!("soak-{run_id}"), args.seed, args.hot).settling();
    let mix = traffic::Mix { repeats: 0.05, cancel_first: 0.03, ship_first: 0.02, poison: 0.01 };
    for e in wl.catalog_events().collect::<Vec<_>>() {
        traffic::send(&producer, &cfg, traffic::Traffic::valid(e)).await;
    }
    for m in traffic::fulfilment_levels(args.skus) {
        traffic::send(&producer, &cfg, m).await;
    }
    // Sent is not yet written: the ends read next must include the whole
    // catalog, or "caught up" comes before the last levels are applied
    // (early shipments then found the fulfilment center empty).
    traffic::delivered(&producer, Duration::from_secs(60)).map_err(|e| SoakError::Stuck(format!("loading the catalog: {e}"), logs.clone()))?;
    let progress = GroupProgress::new(&cfg)?;
    progress.wait_caught_up(Duration::from_secs(120)).await.map_err(|e| SoakError::Stuck(format!("loading the catalog: {e}"), logs.clone()))?;
    tracing::info!("catalog loaded; faults start");

    // The generator runs beside the faults, learning confirmed orders from the results topic.
    let confirmed: Arc<Mutex<Vec<ConfirmedOrder>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let recorder = recorder::Recorder::start(&cfg, confirmed.clone())?;
    let generator = {
        let (cfg, confirmed, stop, rate, ledger) = (cfg.clone(), confirmed.clone(), stop.clone(), args.rate.max(1), ledger.clone());
        let mut t = traffic::Traffic::new(wl, args.seed, mix, cfg.max_message_bytes);
        let committed = GroupProgress::new(&cfg)?;
        tokio::spawn(async move {
            let start = Instant::now();
            let mut sent = 0u64;
            let mut shipping = Vec::new();
            let mut looked = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                for o in std::mem::take(&mut *confirmed.lock().expect("not poisoned")) {
                    if !t.shipped_first(&o.order_id) {
                        t.workload().confirmed(o);
                    }
                }
                shipping.extend(t.workload().take_shipping());
                if looked.elapsed() >= Duration::from_secs(1) && !shipping.is_empty() {
                    looked = Instant::now();
                    if let Ok(c) = tokio::task::block_in_place(|| committed.committed_of(&cfg.topics.shipments)) {
                        let l = ledger.lock().expect("not poisoned");
                        for o in traffic::took_effect(&mut shipping, &l, &c) {
                            t.workload().shipped(o);
                        }
                    }
                }
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                while sent < due {
                    traffic::send(&producer, &cfg, t.next()).await;
                    sent += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            producer
        })
    };

    let mut report =
        SoakReport { duration_s: args.duration.as_secs(), seed: args.seed, dir: logs.clone(), sabotage: args.sabotage.map(|s| s.name().to_string()), ..Default::default() };
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0xfa17);
    let mut recoveries: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let start = Instant::now();
    // Warm once the first idempotency records have begun to expire.
    // Memory is compared once records have begun to expire; shorter runs
    // report no memory figures.
    let warm_at = (args.duration / 3).max(cfg.engine.idempotency_retention + Duration::from_secs(30));
    let mut schedule: Vec<Fault> = Vec::new();
    while start.elapsed() < args.duration {
        if report.memory_warm_bytes == 0 && start.elapsed() >= warm_at {
            report.memory_warm_bytes = used_memory(&redis_url).await.unwrap_or(0);
        }
        if let Some((i, status)) = stack.exited_worker() {
            report.violations.push(format!("worker {i} exited by itself ({status}); see worker-{i}.log"));
            stack.start_worker(&cfg, i)?;
        }
        if schedule.is_empty() {
            schedule = args.faults.clone();
            // A fresh order of every kind each round, so all kinds come up.
            for i in (1..schedule.len()).rev() {
                schedule.swap(i, rng.random_range(0..=i));
            }
        }
        let fault = schedule.pop().expect("refilled above");
        let worker = rng.random_range(0..args.workers.max(1));
        fault.inject(&mut stack, &cfg, worker).await?;
        let healed = Instant::now();
        match progress.wait_caught_up(Duration::from_secs(180)).await {
            Ok(()) => recoveries.entry(fault.name().to_string()).or_default().push(healed.elapsed().as_secs_f64()),
            Err(e) => report.violations.push(format!("no recovery within 180 s after {}: {e}", fault.name())),
        }
        *report.faults.entry(fault.name().to_string()).or_default() += 1;
        let pause = rng.random_range(0..=2 * args.pause);
        tokio::time::sleep(Duration::from_secs(pause)).await;
    }

    stop.store(true, Ordering::Relaxed);
    let producer = generator.await.expect("the generator does not panic");
    recorder.stop_feeding();
    stack.heal(&cfg)?;
    tokio::task::spawn_blocking(move || {
        use rdkafka::producer::Producer as _;
        let _ = producer.flush(Duration::from_secs(120));
    })
    .await
    .expect("flush task");
    let caught = Instant::now();
    progress.wait_caught_up(Duration::from_secs(300)).await.map_err(|e| SoakError::Stuck(format!("catching up after healing: {e}"), logs.clone()))?;
    report.catch_up_s = caught.elapsed().as_secs_f64();
    // Holds placed last expire within the hold time; the sweep then
    // publishes their release. Only after that is the state at rest.
    tokio::time::sleep(cfg.engine.hold_time + cfg.sweep_interval * 4).await;
    // Stopped workers publish nothing more, so the recorder can read to the
    // topics' ends as they are now.
    stack.stop_workers();
    let recorded = recorder.finish(Duration::from_secs(300)).await;
    if report.memory_warm_bytes > 0 {
        report.memory_end_bytes = used_memory(&redis_url).await.unwrap_or(0);
    }
    for (k, v) in recoveries {
        let max = v.iter().copied().fold(0.0, f64::max);
        report.recovery_s.insert(k, (v.iter().sum::<f64>() / v.len().max(1) as f64, max));
    }

    let l = std::mem::take(&mut *ledger.lock().expect("not poisoned"));
    report.events = l.valid;
    report.repeats = l.repeats;
    report.canceled_first = l.canceled_first.len() as u64;
    report.shipped_first = l.ship_first.len() as u64;
    report.generator_lost = l.lost;
    for code in l.poison.values() {
        *report.poison.entry(code.to_string()).or_default() += 1;
    }
    let violations = faults::check_all(&cfg, &l, recorded, args.skus, &mut report).await?;
    report.violations.extend(violations);
    if report.memory_warm_bytes > 0 && report.memory_end_bytes as f64 > report.memory_warm_bytes as f64 * 1.10 {
        report.violations.push(format!("Redis memory grew from {} to {} bytes (more than 10%)", report.memory_warm_bytes, report.memory_end_bytes));
    }
    stack.stop();
    if report.violations.is_empty() && args.dir.is_none() {
        drop(tmp);
    } else {
        // Keep the logs of a run with findings.
        let _ = tmp.keep();
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("120"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("3 weeks").is_err());
    }
}
