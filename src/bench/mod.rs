//! `reservoir bench`: the whole path measured. Events produced to Kafka →
//! worker (a child process) → Redis → availability and results published →
//! offsets committed; then the Redis ceiling on the same server.
//!
//! Phases: load the catalog; run the mix at full speed (throughput: events
//! whose offsets the group committed, over the window after warm-up); run
//! it paced (latency from production to the result); measure the ceiling.

mod ceiling;
mod driver;
mod probe;
mod report;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

pub use report::Report;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Kafka bootstrap servers; default: start a local Apache Kafka (one KRaft node).
    #[arg(long)]
    pub kafka: Option<String>,
    /// Redis URL; default: start a local redis-server (AOF, `--appendfsync`).
    #[arg(long)]
    pub redis: Option<String>,
    /// `appendfsync` of the local redis-server: `always` (what the worker's
    /// guarantees assume) or `everysec` (to see what `always` costs).
    #[arg(long, default_value = "always", value_parser = ["always", "everysec"])]
    pub appendfsync: String,
    /// Skus in the catalog.
    #[arg(long, default_value_t = 100_000)]
    pub skus: u64,
    /// Locations per sku.
    #[arg(long, default_value_t = 3)]
    pub locations: u32,
    /// Channels (each sells from every location, in its own order).
    #[arg(long, default_value_t = 2)]
    pub channels: u32,
    /// Partitions per topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Seconds measured per run (full speed, then paced).
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Seconds of each run before measuring starts.
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    /// Input events per second of the paced run.
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// Share (0..1) of orders and holds on one sku (flash sale).
    #[arg(long, default_value_t = 0.0)]
    pub hot: f64,
    /// Seed of the workload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Worker batch size (default: the worker's).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// librdkafka setting KEY=VALUE for the worker (repeatable), to try tunings.
    #[arg(long = "worker-kafka-option")]
    pub worker_kafka_options: Vec<String>,
    /// Short run (10,000 skus, 3 s warm-up, 10 s per run): under two minutes.
    #[arg(long)]
    pub quick: bool,
    /// Also load 1,000,000 skus through the engine and report Redis memory per sku-location.
    #[arg(long)]
    pub memory: bool,
    /// Also measure Redis `WAIT`: the local Redis gets this many replicas
    /// (started by the bench, attached from the start, so every run pays
    /// for replication), and after the two runs the worker is restarted
    /// with RESERVOIR_REDIS_WAIT_REPLICAS set to this and both runs are
    /// repeated. With --redis, that Redis must have the replicas.
    #[arg(long, default_value_t = 0)]
    pub wait_replicas: u32,
    /// Seconds of the ceiling measurement.
    #[arg(long, default_value_t = 10)]
    pub ceiling_secs: u64,
    /// Where logs of the local servers and worker go (default: a new folder under the temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

impl BenchArgs {
    /// `--quick` shrinks whatever was left at its default.
    pub fn effective(mut self) -> BenchArgs {
        if self.quick {
            if self.skus == 100_000 {
                self.skus = 10_000;
            }
            if self.duration == 30 {
                self.duration = 10;
            }
            if self.warmup == 5 {
                self.warmup = 3;
            }
            if self.ceiling_secs == 10 {
                self.ceiling_secs = 5;
            }
        }
        self
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs(self.warmup)
    }

    pub fn window(&self) -> Duration {
        Duration::from_secs(self.duration.max(1))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
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
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the worker exited early (status {status}); see its log {log}")]
    WorkerDied { status: String, log: String },
    #[error("{what} did not finish within {secs} s (committed {committed} of {produced} events); see the worker log {log}")]
    Stalled { what: String, secs: u64, committed: i64, produced: u64, log: String },
    #[error("the local Redis replicas did not come in sync within {secs} s; see their logs in {dir}")]
    ReplicasNotInSync { secs: u64, dir: String },
    #[error("bad argument: {0}")]
    Args(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs the benchmark; progress goes to stderr, the report is returned.
pub async fn run(args: BenchArgs) -> Result<Report, BenchError> {
    let args = args.effective();
    if args.skus == 0 || args.locations == 0 || args.channels == 0 || args.partitions < 1 {
        return Err(BenchError::Args("--skus, --locations, --channels and --partitions must be at least 1".into()));
    }
    if !(0.0..=1.0).contains(&args.hot) {
        return Err(BenchError::Args(format!("--hot is a share between 0 and 1, got {}", args.hot)));
    }
    driver::run(args).await
}
