//! A real Kafka-compatible broker for tests: Tansu started as a child
//! process on a free loopback port (memory or sqlite storage), or the
//! cluster in KAFKA_BOOTSTRAP. Plus a producer and a collecting consumer.

use std::collections::HashMap;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use reservoir::config::{Config, Topics};

use super::{free_port, uid};

pub struct Broker {
    pub bootstrap: String,
    pub port: u16,
    child: Option<Child>,
    storage: String,
    pub dir: Option<tempfile::TempDir>,
}

impl Broker {
    /// Tansu with in-memory storage, or KAFKA_BOOTSTRAP.
    pub fn start() -> Broker {
        if let Ok(b) = std::env::var("KAFKA_BOOTSTRAP") {
            return Broker { bootstrap: b, port: 0, child: None, storage: String::new(), dir: None };
        }
        Broker::start_with("memory://tansu/".into(), None)
    }

    /// Tansu keeping its data in sqlite, so it survives a restart.
    pub fn start_durable() -> Broker {
        if let Ok(b) = std::env::var("KAFKA_BOOTSTRAP") {
            return Broker { bootstrap: b, port: 0, child: None, storage: String::new(), dir: None };
        }
        let dir = tempfile::tempdir().unwrap();
        // Tansu reads the sqlite path relative to its working directory.
        let storage = "sqlite://tansu.db".to_string();
        Broker::start_with(storage, Some(dir))
    }

    fn start_with(storage: String, dir: Option<tempfile::TempDir>) -> Broker {
        let port = free_port();
        let mut b = Broker { bootstrap: format!("127.0.0.1:{port}"), port, child: None, storage, dir };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let mut cmd = Command::new("tansu");
        if let Some(d) = &self.dir {
            cmd.current_dir(d.path());
        }
        let child = cmd
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", &self.storage])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu must be installed (cargo install tansu --locked --version 0.6.0 --features dynostore,libsql; .ci/run does it)");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "tansu did not listen on {} within 20 s", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_local(&self) -> bool {
        self.child.is_some() || !self.storage.is_empty()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Random topic names for one test.
pub fn topics() -> Topics {
    Topics::suffixed(&format!("-{}", uid()))
}

/// A worker config with random topics and group, topics created.
pub async fn config(broker: &Broker, redis_url: &str, partitions: i32) -> Config {
    let mut cfg = Config::new(&broker.bootstrap, redis_url, &format!("reservoir-test-{}", uid()));
    cfg.topics = topics();
    cfg.sweep_interval = Duration::from_millis(200);
    reservoir::kafka::create_topics(&cfg, partitions, 1).await.expect("topics created");
    cfg
}

/// A test producer. One record per batch: Tansu 0.6.0 answers a fetch
/// from an offset inside a record batch with nothing (or the next batch),
/// so a group resuming mid-batch would skip records; Apache Kafka returns
/// the containing batch. See the README's notes on Tansu.
pub fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
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
