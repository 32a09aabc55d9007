//! Worker configuration: a TOML file, then environment, then flags (later
//! wins), checked once at start-up with errors that name the setting.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::store::{EngineConfig, RedisTarget};
use crate::wire::TopicKind;

/// Topic names (defaults as in the contract).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    pub stock: String,
    pub carts: String,
    pub orders: String,
    pub shipments: String,
    pub credit_memos: String,
    pub availability: String,
    pub reservations: String,
    pub dead_letter: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            stock: "inventory.stock".into(),
            carts: "shop.carts".into(),
            orders: "shop.orders".into(),
            shipments: "shop.shipments".into(),
            credit_memos: "shop.credit-memos".into(),
            availability: "inventory.availability".into(),
            reservations: "inventory.reservations".into(),
            dead_letter: "inventory.dead-letter".into(),
        }
    }
}

impl Topics {
    /// Every default name with `suffix` appended: fresh topics for a test
    /// or benchmark run.
    pub fn suffixed(suffix: &str) -> Topics {
        let d = Topics::default();
        let s = |t: &str| format!("{t}{suffix}");
        Topics {
            stock: s(&d.stock),
            carts: s(&d.carts),
            orders: s(&d.orders),
            shipments: s(&d.shipments),
            credit_memos: s(&d.credit_memos),
            availability: s(&d.availability),
            reservations: s(&d.reservations),
            dead_letter: s(&d.dead_letter),
        }
    }

    /// The configured name of an input topic.
    pub fn input(&self, kind: TopicKind) -> &str {
        match kind {
            TopicKind::Stock => &self.stock,
            TopicKind::Carts => &self.carts,
            TopicKind::Orders => &self.orders,
            TopicKind::Shipments => &self.shipments,
            TopicKind::CreditMemos => &self.credit_memos,
        }
    }

    /// Which input a configured topic name is; None for any other topic.
    pub fn kind_of(&self, topic: &str) -> Option<TopicKind> {
        TopicKind::ALL.into_iter().find(|k| self.input(*k) == topic)
    }

    pub fn inputs(&self) -> [&str; 5] {
        [&self.stock, &self.carts, &self.orders, &self.shipments, &self.credit_memos]
    }
    pub fn all(&self) -> [&str; 8] {
        [
            &self.stock,
            &self.carts,
            &self.orders,
            &self.shipments,
            &self.credit_memos,
            &self.availability,
            &self.reservations,
            &self.dead_letter,
        ]
    }
}

/// The validated configuration of a worker. Its Debug form hides every
/// secret (Redis password, secret librdkafka options).
#[derive(Clone)]
pub struct Config {
    pub kafka_bootstrap: String,
    /// Redis URL(s), TLS files and ACL credentials (shown redacted).
    pub redis: RedisTarget,
    pub group_id: String,
    /// `source` of every event the worker publishes.
    pub source: String,
    pub topics: Topics,
    pub engine: EngineConfig,
    /// Most messages applied per batch (per poll of the consumer).
    pub batch_size: usize,
    /// Larger message values are dead-lettered as `too_large`.
    pub max_message_bytes: usize,
    /// How often expired holds are swept.
    pub sweep_interval: Duration,
    /// Replicas that must have a batch's Redis writes (`WAIT`) before its
    /// messages are published and its offsets stored; 0: no wait.
    pub wait_replicas: u32,
    /// How long one `WAIT` lasts before it is asked again.
    pub wait_timeout: Duration,
    /// Raw librdkafka settings for every client (consumer, producer, admin).
    pub kafka_options: BTreeMap<String, String>,
    /// Raw librdkafka settings for producers only, applied after the shared
    /// ones (librdkafka warns about producer settings given to a consumer).
    pub kafka_producer_options: BTreeMap<String, String>,
    /// Raw librdkafka settings for consumers only, applied after the shared ones.
    pub kafka_consumer_options: BTreeMap<String, String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; None: nowhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// A contract broken on purpose, for the soak's proof that it can fail.
    pub sabotage: Option<Sabotage>,
    /// SIGUSR1 kills the worker between a batch's effect and its outputs
    /// (the soak's deterministic crash).
    pub crash_point: bool,
}

/// Ways to break the worker on purpose, so `reservoir soak` can show that
/// its checks catch a broken worker. Hidden from `--help`; a worker running
/// one logs an error at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Sabotage {
    /// Store and commit a batch's offsets when it is polled, before its effect.
    OffsetsBeforeEffect,
    /// Take every delivery for a new event: idempotency records never match.
    SkipIdempotency,
    /// Publish nothing for an event the store says was applied before.
    NoRepublishOnRepeat,
}

impl Sabotage {
    pub const ALL: [Sabotage; 3] = [Sabotage::OffsetsBeforeEffect, Sabotage::SkipIdempotency, Sabotage::NoRepublishOnRepeat];

    pub fn name(self) -> &'static str {
        match self {
            Sabotage::OffsetsBeforeEffect => "offsets-before-effect",
            Sabotage::SkipIdempotency => "skip-idempotency",
            Sabotage::NoRepublishOnRepeat => "no-republish-on-repeat",
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::kafka::shown_options;
        f.debug_struct("Config")
            .field("kafka_bootstrap", &self.kafka_bootstrap)
            .field("redis", &self.redis)
            .field("group_id", &self.group_id)
            .field("source", &self.source)
            .field("topics", &self.topics)
            .field("engine", &self.engine)
            .field("batch_size", &self.batch_size)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("sweep_interval", &self.sweep_interval)
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout", &self.wait_timeout)
            .field("kafka_options", &shown_options(&self.kafka_options))
            .field("kafka_producer_options", &shown_options(&self.kafka_producer_options))
            .field("kafka_consumer_options", &shown_options(&self.kafka_consumer_options))
            .field("metrics_addr", &self.metrics_addr)
            .field("sabotage", &self.sabotage)
            .field("crash_point", &self.crash_point)
            .finish()
    }
}

impl Config {
    /// Defaults for the given endpoints (tests and tools).
    pub fn new(kafka_bootstrap: &str, redis_url: &str, group_id: &str) -> Config {
        Config {
            kafka_bootstrap: kafka_bootstrap.into(),
            redis: redis_url.into(),
            group_id: group_id.into(),
            source: "reservoir".into(),
            topics: Topics::default(),
            engine: EngineConfig::default(),
            batch_size: 500,
            max_message_bytes: 1 << 20,
            sweep_interval: Duration::from_secs(1),
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
            kafka_options: BTreeMap::new(),
            kafka_producer_options: BTreeMap::new(),
            kafka_consumer_options: BTreeMap::new(),
            metrics_addr: None,
            sabotage: None,
            crash_point: false,
        }
    }
}

/// Settings as flags and environment variables (all optional here; the
/// file and defaults fill the rest).
#[derive(Args, Default, Clone)]
pub struct Settings {
    /// TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "RESERVOIR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers, e.g. 127.0.0.1:9092.
    #[arg(long, env = "RESERVOIR_KAFKA_BOOTSTRAP")]
    pub kafka_bootstrap: Option<String>,
    /// One Redis URL, or a comma-separated Redis Cluster seed list; rediss:// for TLS.
    #[arg(long, env = "RESERVOIR_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Redis ACL user (replaces the URL's).
    #[arg(long, env = "RESERVOIR_REDIS_USERNAME")]
    pub redis_username: Option<String>,
    /// Redis password (replaces the URL's). Prefer RESERVOIR_REDIS_PASSWORD_FILE.
    #[arg(long, env = "RESERVOIR_REDIS_PASSWORD")]
    pub redis_password: Option<String>,
    /// File holding the Redis password (a mounted Kubernetes secret); trailing newline ignored.
    #[arg(long, env = "RESERVOIR_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,
    /// PEM CA bundle to trust for rediss:// instead of the system's roots.
    #[arg(long, env = "RESERVOIR_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// PEM client certificate for Redis mutual TLS (with --redis-client-key).
    #[arg(long, env = "RESERVOIR_REDIS_CLIENT_CERT")]
    pub redis_client_cert: Option<PathBuf>,
    /// PEM private key of the Redis client certificate.
    #[arg(long, env = "RESERVOIR_REDIS_CLIENT_KEY")]
    pub redis_client_key: Option<PathBuf>,
    /// Redis Sentinel: the master's name; RESERVOIR_REDIS_URL then lists the sentinels.
    #[arg(long, env = "RESERVOIR_REDIS_SENTINEL_MASTER")]
    pub redis_sentinel_master: Option<String>,
    /// Replicas that must have a batch's Redis writes (WAIT) before its outputs and offsets (default 0; 1 with replicas).
    #[arg(long, env = "RESERVOIR_REDIS_WAIT_REPLICAS")]
    pub redis_wait_replicas: Option<u32>,
    /// Milliseconds one WAIT for replicas lasts before it is asked again (default 1000).
    #[arg(long, env = "RESERVOIR_REDIS_WAIT_TIMEOUT_MS")]
    pub redis_wait_timeout_ms: Option<u64>,
    /// Consumer group of the workers.
    #[arg(long, env = "RESERVOIR_GROUP_ID")]
    pub group_id: Option<String>,
    /// `source` of published events.
    #[arg(long, env = "RESERVOIR_SOURCE")]
    pub source: Option<String>,
    #[arg(long, env = "RESERVOIR_TOPIC_STOCK")]
    pub topic_stock: Option<String>,
    #[arg(long, env = "RESERVOIR_TOPIC_CARTS")]
    pub topic_carts: Option<String>,
    #[arg(long, env = "RESERVOIR_TOPIC_ORDERS")]
    pub topic_orders: Option<String>,
    #[arg(long, env = "RESERVOIR_TOPIC_SHIPMENTS")]
    pub topic_shipments: Option<String>,
    #[arg(long, env = "RESERVOIR_TOPIC_CREDIT_MEMOS")]
    pub topic_credit_memos: Option<String>,
    #[arg(long, env = "RESERVOIR_TOPIC_AVAILABILITY")]
    pub topic_availability: Option<String>,
    #[arg(long, env = "RESERVOIR_TOPIC_RESERVATIONS")]
    pub topic_reservations: Option<String>,
    #[arg(long, env = "RESERVOIR_TOPIC_DEAD_LETTER")]
    pub topic_dead_letter: Option<String>,
    /// Hold time of cart holds without expires_at, in seconds (default 900).
    #[arg(long, env = "RESERVOIR_HOLD_TIME_SECS")]
    pub hold_time_secs: Option<u64>,
    /// How long event ids are remembered, in seconds (default 7 days).
    #[arg(long, env = "RESERVOIR_IDEMPOTENCY_RETENTION_SECS")]
    pub idempotency_retention_secs: Option<u64>,
    /// How long settled orders are remembered, in seconds (default 30 days).
    #[arg(long, env = "RESERVOIR_ORDER_RETENTION_SECS")]
    pub order_retention_secs: Option<u64>,
    /// Most messages per batch (default 500).
    #[arg(long, env = "RESERVOIR_BATCH_SIZE")]
    pub batch_size: Option<usize>,
    /// Largest accepted message value in bytes (default 1048576).
    #[arg(long, env = "RESERVOIR_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Milliseconds between hold sweeps (default 1000).
    #[arg(long, env = "RESERVOIR_SWEEP_INTERVAL_MS")]
    pub sweep_interval_ms: Option<u64>,
    /// Address of the HTTP port with /metrics, /healthz and /readyz (default 0.0.0.0:9464; `off` disables it).
    #[arg(long, env = "RESERVOIR_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Raw librdkafka setting KEY=VALUE (repeatable; env: comma-separated).
    #[arg(long = "kafka-option", env = "RESERVOIR_KAFKA_OPTIONS", value_delimiter = ',')]
    pub kafka_options: Vec<String>,
    /// Raw librdkafka setting for producers only, KEY=VALUE (repeatable; env: comma-separated).
    #[arg(long = "kafka-producer-option", env = "RESERVOIR_KAFKA_PRODUCER_OPTIONS", value_delimiter = ',')]
    pub kafka_producer_options: Vec<String>,
    /// Raw librdkafka setting for consumers only, KEY=VALUE (repeatable; env: comma-separated).
    #[arg(long = "kafka-consumer-option", env = "RESERVOIR_KAFKA_CONSUMER_OPTIONS", value_delimiter = ',')]
    pub kafka_consumer_options: Vec<String>,
    /// Breaks the worker on purpose (for `reservoir soak`'s own tests only).
    #[arg(long, env = "RESERVOIR_SABOTAGE", value_enum, hide = true)]
    pub sabotage: Option<Sabotage>,
    /// SIGUSR1 kills the worker mid-batch (for `reservoir soak`'s own tests only).
    #[arg(long, env = "RESERVOIR_CRASH_POINT", hide = true)]
    pub crash_point: bool,
}

/// The file form of [`Settings`].
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    kafka_bootstrap: Option<String>,
    redis_url: Option<String>,
    redis_username: Option<String>,
    redis_password: Option<String>,
    redis_password_file: Option<PathBuf>,
    redis_ca_file: Option<PathBuf>,
    redis_client_cert: Option<PathBuf>,
    redis_client_key: Option<PathBuf>,
    redis_sentinel_master: Option<String>,
    redis_wait_replicas: Option<u32>,
    redis_wait_timeout_ms: Option<u64>,
    group_id: Option<String>,
    source: Option<String>,
    topic_stock: Option<String>,
    topic_carts: Option<String>,
    topic_orders: Option<String>,
    topic_shipments: Option<String>,
    topic_credit_memos: Option<String>,
    topic_availability: Option<String>,
    topic_reservations: Option<String>,
    topic_dead_letter: Option<String>,
    hold_time_secs: Option<u64>,
    idempotency_retention_secs: Option<u64>,
    order_retention_secs: Option<u64>,
    batch_size: Option<usize>,
    max_message_bytes: Option<usize>,
    sweep_interval_ms: Option<u64>,
    metrics_addr: Option<String>,
    #[serde(default)]
    kafka_options: BTreeMap<String, String>,
    #[serde(default)]
    kafka_producer_options: BTreeMap<String, String>,
    #[serde(default)]
    kafka_consumer_options: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
}

impl Settings {
    /// Merges file < env/flags < nothing else, applies defaults, checks.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let file: FileSettings = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::File { path: p.display().to_string(), message: e.to_string() })?;
                toml::from_str(&text).map_err(|e| ConfigError::File { path: p.display().to_string(), message: e.to_string() })?
            }
            None => FileSettings::default(),
        };
        let need = |v: Option<String>, f: Option<String>, env: &str, flag: &str, example: &str| {
            v.or(f).filter(|s| !s.trim().is_empty()).ok_or_else(|| {
                ConfigError::Invalid(format!("{env} is not set: give the {flag} flag, the {env} variable or `{}` in the config file, e.g. {example}", flag.trim_start_matches("--").replace('-', "_")))
            })
        };
        let mut c = Config::new(
            &need(self.kafka_bootstrap.clone(), file.kafka_bootstrap, "RESERVOIR_KAFKA_BOOTSTRAP", "--kafka-bootstrap", "127.0.0.1:9092")?,
            &need(self.redis_url.clone(), file.redis_url, "RESERVOIR_REDIS_URL", "--redis-url", "redis://127.0.0.1:6379")?,
            &self.group_id.clone().or(file.group_id).unwrap_or_else(|| "reservoir".into()),
        );
        macro_rules! pick {
            ($field:ident) => {
                self.$field.clone().or(file.$field)
            };
        }
        if let Some(s) = pick!(source) {
            c.source = s;
        }
        c.redis.username = pick!(redis_username);
        c.redis.password = match (pick!(redis_password), pick!(redis_password_file)) {
            (Some(_), Some(_)) => return Err(ConfigError::Invalid("RESERVOIR_REDIS_PASSWORD and RESERVOIR_REDIS_PASSWORD_FILE are both set: keep one".into())),
            (Some(p), None) => Some(p),
            (None, Some(f)) => Some(secret_file(&f, "RESERVOIR_REDIS_PASSWORD_FILE")?),
            (None, None) => None,
        };
        c.redis.ca_file = pick!(redis_ca_file);
        c.redis.client_cert = pick!(redis_client_cert);
        c.redis.client_key = pick!(redis_client_key);
        c.redis.sentinel_master = pick!(redis_sentinel_master).filter(|m| !m.trim().is_empty());
        c.wait_replicas = pick!(redis_wait_replicas).unwrap_or(0);
        if let Some(ms) = pick!(redis_wait_timeout_ms) {
            if ms == 0 {
                return Err(ConfigError::Invalid("RESERVOIR_REDIS_WAIT_TIMEOUT_MS must be > 0 (0 would make WAIT block for ever)".into()));
            }
            c.wait_timeout = Duration::from_millis(ms);
        }
        let t = &mut c.topics;
        for (slot, v) in [
            (&mut t.stock, pick!(topic_stock)),
            (&mut t.carts, pick!(topic_carts)),
            (&mut t.orders, pick!(topic_orders)),
            (&mut t.shipments, pick!(topic_shipments)),
            (&mut t.credit_memos, pick!(topic_credit_memos)),
            (&mut t.availability, pick!(topic_availability)),
            (&mut t.reservations, pick!(topic_reservations)),
            (&mut t.dead_letter, pick!(topic_dead_letter)),
        ] {
            if let Some(v) = v {
                *slot = v;
            }
        }
        let secs = |v: Option<u64>, name: &str, default: Duration| -> Result<Duration, ConfigError> {
            match v {
                Some(0) => Err(ConfigError::Invalid(format!("{name} must be > 0 seconds"))),
                Some(s) => Ok(Duration::from_secs(s)),
                None => Ok(default),
            }
        };
        c.engine.hold_time = secs(pick!(hold_time_secs), "RESERVOIR_HOLD_TIME_SECS", c.engine.hold_time)?;
        c.engine.idempotency_retention = secs(pick!(idempotency_retention_secs), "RESERVOIR_IDEMPOTENCY_RETENTION_SECS", c.engine.idempotency_retention)?;
        c.engine.order_retention = secs(pick!(order_retention_secs), "RESERVOIR_ORDER_RETENTION_SECS", c.engine.order_retention)?;
        if let Some(b) = pick!(batch_size) {
            if !(1..=100_000).contains(&b) {
                return Err(ConfigError::Invalid(format!("RESERVOIR_BATCH_SIZE must be 1..=100000, got {b}")));
            }
            c.batch_size = b;
        }
        if let Some(b) = pick!(max_message_bytes) {
            if b < 1024 {
                return Err(ConfigError::Invalid(format!("RESERVOIR_MAX_MESSAGE_BYTES must be at least 1024, got {b}")));
            }
            c.max_message_bytes = b;
        }
        if let Some(ms) = pick!(sweep_interval_ms) {
            if ms == 0 {
                return Err(ConfigError::Invalid("RESERVOIR_SWEEP_INTERVAL_MS must be > 0".into()));
            }
            c.sweep_interval = Duration::from_millis(ms);
        }
        c.metrics_addr = match pick!(metrics_addr).as_deref().map(str::trim) {
            Some("off") | Some("") => None,
            Some(a) => Some(a.parse().map_err(|e| ConfigError::Invalid(format!("RESERVOIR_METRICS_ADDR must be HOST:PORT like 0.0.0.0:9464, or off; got {a:?}: {e}")))?),
            None => Some(std::net::SocketAddr::from(([0, 0, 0, 0], 9464))),
        };
        c.kafka_options = options(file.kafka_options, &self.kafka_options, "--kafka-option / RESERVOIR_KAFKA_OPTIONS", "security.protocol=SSL")?;
        c.kafka_producer_options =
            options(file.kafka_producer_options, &self.kafka_producer_options, "--kafka-producer-option / RESERVOIR_KAFKA_PRODUCER_OPTIONS", "compression.type=zstd")?;
        c.kafka_consumer_options =
            options(file.kafka_consumer_options, &self.kafka_consumer_options, "--kafka-consumer-option / RESERVOIR_KAFKA_CONSUMER_OPTIONS", "client.rack=eu-1a")?;
        c.sabotage = self.sabotage;
        c.crash_point = self.crash_point;
        let names: Vec<&str> = c.topics.all().to_vec();
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() || names[..i].contains(n) {
                return Err(ConfigError::Invalid(format!("topic names must be non-empty and distinct; {n:?} is not")));
            }
        }
        Ok(c)
    }
}

/// A secret mounted as a file: its text without the trailing newline.
fn secret_file(path: &std::path::Path, setting: &str) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid(format!("{setting} {}: {e}", path.display())))?;
    let secret = text.trim_end_matches(['\n', '\r']).to_string();
    if secret.is_empty() {
        return Err(ConfigError::Invalid(format!("{setting} {} is empty", path.display())));
    }
    Ok(secret)
}

/// The file's table, then KEY=VALUE entries from flags or env over it.
fn options(mut from_file: BTreeMap<String, String>, entries: &[String], name: &str, example: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    for kv in entries {
        let (k, v) = kv.split_once('=').filter(|(k, _)| !k.trim().is_empty()).ok_or_else(|| ConfigError::Invalid(format!("{name} entry {kv:?} must be KEY=VALUE, e.g. {example}")))?;
        from_file.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(from_file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_topics_by_kind_and_back() {
        let t = Topics::suffixed("-x");
        assert_eq!(t.stock, "inventory.stock-x");
        for k in TopicKind::ALL {
            assert_eq!(t.kind_of(t.input(k)), Some(k));
            assert_eq!(Topics::default().input(k), k.default_name());
        }
        assert_eq!(t.kind_of(&t.availability), None);
    }

    #[test]
    fn missing_endpoints_name_the_setting() {
        let err = Settings::default().resolve().unwrap_err().to_string();
        assert!(err.contains("RESERVOIR_KAFKA_BOOTSTRAP"), "{err}");
        let s = Settings { kafka_bootstrap: Some("k:1".into()), ..Default::default() };
        assert!(s.resolve().unwrap_err().to_string().contains("RESERVOIR_REDIS_URL"));
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(&p, "kafka_bootstrap = \"f:1\"\nredis_url = \"redis://f\"\nbatch_size = 7\n[kafka_options]\n\"fetch.min.bytes\" = \"10\"\n").unwrap();
        let s = Settings { config: Some(p.clone()), batch_size: Some(9), kafka_options: vec!["linger.ms=2".into()], ..Default::default() };
        let c = s.resolve().unwrap();
        assert_eq!((c.kafka_bootstrap.as_str(), c.batch_size), ("f:1", 9));
        assert_eq!(c.kafka_options["fetch.min.bytes"], "10");
        assert_eq!(c.kafka_options["linger.ms"], "2");
        assert!(c.kafka_producer_options.is_empty() && c.kafka_consumer_options.is_empty());
        std::fs::write(&p, "kafka_bootstrap = \"f:1\"\nbogus = 1\n").unwrap();
        assert!(s.resolve().unwrap_err().to_string().contains("bogus"));
        let bad = Settings { kafka_bootstrap: Some("k".into()), redis_url: Some("r".into()), hold_time_secs: Some(0), ..Default::default() };
        assert!(bad.resolve().unwrap_err().to_string().contains("RESERVOIR_HOLD_TIME_SECS"));
    }

    #[test]
    fn producer_and_consumer_options_stay_apart() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(&p, "kafka_bootstrap = \"f:1\"\nredis_url = \"redis://f\"\n[kafka_producer_options]\n\"linger.ms\" = \"9\"\n[kafka_consumer_options]\n\"client.rack\" = \"a\"\n").unwrap();
        let s = Settings {
            config: Some(p),
            kafka_producer_options: vec!["enable.idempotence=false".into()],
            kafka_consumer_options: vec![" client.rack = b ".into()],
            ..Default::default()
        };
        let c = s.resolve().unwrap();
        assert_eq!(c.kafka_producer_options.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(), ["enable.idempotence=false", "linger.ms=9"]);
        assert_eq!(c.kafka_consumer_options.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(), ["client.rack=b"]);
        assert!(c.kafka_options.is_empty());
        let bad = Settings { kafka_consumer_options: vec!["=1".into()], ..s };
        let err = bad.resolve().unwrap_err().to_string();
        assert!(err.contains("--kafka-consumer-option") && err.contains("KEY=VALUE"), "{err}");
    }

    #[test]
    fn redis_credentials_and_tls_files_from_settings_or_a_secret_file() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let base = Settings { kafka_bootstrap: Some("k:1".into()), redis_url: Some("rediss://h:6380".into()), ..Default::default() };
        let s = Settings { redis_username: Some("app".into()), redis_password_file: Some(pw.clone()), redis_ca_file: Some("/ca.pem".into()), ..base.clone() };
        let c = s.resolve().unwrap();
        assert_eq!((c.redis.username.as_deref(), c.redis.password.as_deref(), c.redis.ca_file.as_deref()), (Some("app"), Some("s3cret"), Some(std::path::Path::new("/ca.pem"))));
        assert!(!format!("{c:?}").contains("s3cret"));
        let both = Settings { redis_password: Some("x".into()), ..s };
        assert!(both.resolve().unwrap_err().to_string().contains("RESERVOIR_REDIS_PASSWORD_FILE"));
        std::fs::write(&pw, "\n").unwrap();
        let empty = Settings { redis_password_file: Some(pw), ..base.clone() };
        assert!(empty.resolve().unwrap_err().to_string().contains("is empty"));
        let sentinel = Settings { redis_sentinel_master: Some("mymaster".into()), redis_wait_replicas: Some(1), redis_wait_timeout_ms: Some(250), ..base.clone() };
        let c = sentinel.resolve().unwrap();
        assert_eq!((c.redis.sentinel_master.as_deref(), c.wait_replicas, c.wait_timeout), (Some("mymaster"), 1, Duration::from_millis(250)));
        let forever = Settings { redis_wait_timeout_ms: Some(0), ..base };
        assert!(forever.resolve().unwrap_err().to_string().contains("RESERVOIR_REDIS_WAIT_TIMEOUT_MS"));
    }

    /// The worked configurations under examples/ (README, "Connecting to
    /// managed services") are valid settings, and librdkafka knows every
    /// option they set, as consumer and as producer.
    #[test]
    fn every_example_configuration_resolves() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let secrets = tempfile::tempdir().unwrap();
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            // Mounted secrets as the example names them, here in a temporary folder.
            let text = std::fs::read_to_string(&path).unwrap().replace("/run/secrets", &secrets.path().display().to_string());
            std::fs::create_dir_all(secrets.path().join("aiven")).unwrap();
            std::fs::write(secrets.path().join("redis-password"), "pw\n").unwrap();
            let copy = secrets.path().join(path.file_name().unwrap());
            std::fs::write(&copy, text).unwrap();
            let c = Settings { config: Some(copy), ..Default::default() }.resolve().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for role in [crate::kafka::Role::Consumer, crate::kafka::Role::Producer] {
                crate::kafka::client_config(&c, role, &[]).create_native_config().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            seen += 1;
        }
        assert!(seen >= 4, "examples/*.toml: {seen}");
    }
}
