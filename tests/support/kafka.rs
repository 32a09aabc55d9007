//! A real broker for tests: Apache Kafka (KRaft) started as a child
//! process on free loopback ports, or the cluster in KAFKA_BOOTSTRAP. The
//! tests of one binary share one node ([`shared`]), with random topic and
//! group names; tests that kill or restart a broker start their own
//! ([`OwnBroker`], [`cluster`]). Plus a producer and a collecting consumer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use reservoir::config::{Config, Topics};
use reservoir::local::{Kafka, KafkaSettings};

use super::uid;

static SHARED_DIR: OnceLock<PathBuf> = OnceLock::new();
static SHARED_PID: AtomicU32 = AtomicU32::new(0);

/// At exit of the test binary: the shared broker is killed and its data removed.
extern "C" fn stop_shared() {
    let pid = SHARED_PID.load(Ordering::SeqCst);
    if pid != 0 {
        // SAFETY: kill/waitpid on our own child.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
            libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
        }
    }
    if let Some(d) = SHARED_DIR.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The bootstrap of the broker every test of this binary shares: one
/// Apache Kafka node started on first use, or KAFKA_BOOTSTRAP.
pub fn shared() -> &'static str {
    // The outcome is kept, so every test of a binary whose broker failed
    // reports the same cause.
    static BOOTSTRAP: OnceLock<Result<String, String>> = OnceLock::new();
    let r = BOOTSTRAP.get_or_init(|| {
        if let Ok(b) = std::env::var("KAFKA_BOOTSTRAP") {
            return Ok(b);
        }
        let dir = tempfile::Builder::new().prefix("reservoir-test-kafka-").tempdir().map_err(|e| e.to_string())?.keep();
        let _ = SHARED_DIR.set(dir.clone());
        // SAFETY: registering a plain extern "C" fn.
        unsafe { libc::atexit(stop_shared) };
        let (tx, rx) = std::sync::mpsc::channel();
        // A thread that lives as long as the process: the broker is spawned
        // from it with PDEATHSIG, so it dies with the test binary however
        // that ends.
        std::thread::Builder::new()
            .name("shared-kafka".into())
            .spawn(move || match Kafka::start(&dir, 1, None, KafkaSettings { die_with_parent: true, ..Default::default() }) {
                Ok(k) => {
                    SHARED_PID.store(k.nodes[0].pid().unwrap_or(0), Ordering::SeqCst);
                    let _ = tx.send(Ok(k.bootstrap.clone()));
                    loop {
                        std::thread::park();
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                }
            })
            .map_err(|e| e.to_string())?;
        rx.recv().map_err(|e| e.to_string())?
    });
    match r {
        Ok(b) => b,
        Err(e) => panic!("Apache Kafka did not start (scripts/deps.sh installs it; .ci/run runs that): {e}"),
    }
}

/// A broker of one test's own, for tests that stop and restart it: one
/// Apache Kafka node keeping its data across restarts, or KAFKA_BOOTSTRAP
/// (which such a test cannot restart: see `is_local`).
pub struct OwnBroker {
    pub bootstrap: String,
    pub kafka: Option<Kafka>,
    _dir: Option<tempfile::TempDir>,
}

impl OwnBroker {
    pub fn start() -> OwnBroker {
        if let Ok(b) = std::env::var("KAFKA_BOOTSTRAP") {
            return OwnBroker { bootstrap: b, kafka: None, _dir: None };
        }
        let dir = tempfile::Builder::new().prefix("reservoir-test-kafka-").tempdir().unwrap();
        let kafka = Kafka::single(dir.path()).unwrap_or_else(|e| panic!("Apache Kafka did not start: {e}"));
        OwnBroker { bootstrap: kafka.bootstrap.clone(), kafka: Some(kafka), _dir: Some(dir) }
    }

    pub fn is_local(&self) -> bool {
        self.kafka.is_some()
    }

    /// kill -9.
    pub fn kill(&mut self) {
        self.kafka.as_mut().expect("a local broker").kill9(0);
    }

    /// Starts it again on the same port and data, and waits until it answers.
    pub fn restart(&mut self) {
        let k = self.kafka.as_mut().expect("a local broker");
        k.kill9(0);
        k.restart(0).unwrap_or_else(|e| panic!("Apache Kafka did not restart: {e}"));
    }
}

/// A 3-node Apache Kafka cluster of one test's own (replication factor 3,
/// `min.insync.replicas` 2), with its folder.
pub fn cluster() -> (Kafka, tempfile::TempDir) {
    let dir = tempfile::Builder::new().prefix("reservoir-test-kafka3-").tempdir().unwrap();
    let k = Kafka::cluster(dir.path(), 3).unwrap_or_else(|e| panic!("the 3-node Apache Kafka cluster did not start: {e}"));
    (k, dir)
}

/// Random topic names for one test.
pub fn topics() -> Topics {
    Topics::suffixed(&format!("-{}", uid()))
}

/// A worker config with random topics and group, topics created (at
/// KAFKA_REPLICATION replicas on an external cluster, default 1).
pub async fn config(bootstrap: &str, redis_url: &str, partitions: i32) -> Config {
    let replication = std::env::var("KAFKA_REPLICATION").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
    config_replicated(bootstrap, redis_url, partitions, replication).await
}

pub async fn config_replicated(bootstrap: &str, redis_url: &str, partitions: i32, replication: i32) -> Config {
    let mut cfg = Config::new(bootstrap, redis_url, &format!("reservoir-test-{}", uid()));
    cfg.topics = topics();
    cfg.sweep_interval = Duration::from_millis(200);
    reservoir::kafka::create_topics(&cfg, partitions, replication).await.expect("topics created");
    cfg
}

/// A test producer as shops run one: idempotent, acks=all, batching
/// (`linger.ms` 5, so a stream puts many records in each batch and a
/// worker resumes inside batches).
pub fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

pub async fn send(p: &FutureProducer, topic: &str, key: &str, value: &[u8]) {
    p.send(FutureRecord::to(topic).key(key).payload(value), Duration::from_secs(30)).await.expect("delivered");
}

/// One message read back from an output topic.
#[derive(Clone, Debug)]
pub struct Received {
    pub key: String,
    pub value: serde_json::Value,
    pub raw: Vec<u8>,
    pub headers: HashMap<String, String>,
    pub partition: i32,
    pub offset: i64,
    /// The producer's timestamp (Unix ms).
    pub timestamp: Option<i64>,
}

/// Reads a topic from the beginning.
pub struct Reader {
    consumer: StreamConsumer,
    pub seen: Vec<Received>,
}

impl Reader {
    pub fn new(bootstrap: &str, topic: &str) -> Reader {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("reader-{}", uid()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        Reader { consumer, seen: Vec::new() }
    }

    /// Reads until `done(seen)` holds, or panics after `timeout`.
    pub async fn until(&mut self, timeout: Duration, what: &str, mut done: impl FnMut(&[Received]) -> bool) -> &[Received] {
        let deadline = Instant::now() + timeout;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out after {timeout:?} waiting for {what}; saw {} message(s): {:#?}", self.seen.len(), self.seen.iter().map(|r| &r.value).collect::<Vec<_>>());
            if let Ok(Ok(m)) = tokio::time::timeout(left.min(Duration::from_millis(500)), self.consumer.recv()).await {
                let raw = m.payload().unwrap_or_default().to_vec();
                let mut headers = HashMap::new();
                if let Some(h) = m.headers() {
                    for hd in h.iter() {
                        headers.insert(hd.key.to_string(), String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned());
                    }
                }
                self.seen.push(Received {
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    value: serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null),
                    raw,
                    headers,
                    partition: m.partition(),
                    offset: m.offset(),
                    timestamp: m.timestamp().to_millis(),
                });
            }
        }
        &self.seen
    }

    /// Reads whatever arrives within `quiet` of the last message.
    pub async fn drain(&mut self, quiet: Duration) -> &[Received] {
        while let Ok(Ok(m)) = tokio::time::timeout(quiet, self.consumer.recv()).await {
            let raw = m.payload().unwrap_or_default().to_vec();
            self.seen.push(Received {
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                value: serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null),
                raw,
                headers: HashMap::new(),
                partition: m.partition(),
                offset: m.offset(),
                timestamp: m.timestamp().to_millis(),
            });
        }
        &self.seen
    }
}

/// The latest message data per key, by `data.version` (availability).
pub fn latest(seen: &[Received]) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut m: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
    for r in seen {
        let v = r.value["data"].clone();
        if m.get(&r.key).is_none_or(|cur| cur["version"].as_u64() <= v["version"].as_u64()) {
            m.insert(r.key.clone(), v);
        }
    }
    m
}

/// Asserts a key's availability data kept what a replay must not change.
pub fn assert_unchanged(after: &serde_json::Value, before: &serde_json::Value, what: &str) {
    for f in ["available", "on_hand", "reserved", "status", "version"] {
        assert_eq!(after[f], before[f], "{f} after {what}");
    }
}
