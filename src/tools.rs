//! Small operator tools: play example events into the input topics and
//! print what arrives on output topics.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::config::Config;
use crate::wire::TopicKind;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// An example file: `{"key": "...", "value": {event}}`, in
/// `<dir>/<topic>/NN-<type>.json`; the NN prefix orders play across topics.
pub struct Example {
    pub path: PathBuf,
    pub topic_dir: String,
    pub key: String,
    pub value: Vec<u8>,
}

pub fn load_examples(dir: &Path) -> Result<Vec<Example>, ToolError> {
    let err = |p: &Path, m: String| ToolError::File { path: p.display().to_string(), message: m };
    let mut out = Vec::new();
    for topic in std::fs::read_dir(dir).map_err(|e| err(dir, e.to_string()))? {
        let topic = topic.map_err(|e| err(dir, e.to_string()))?.path();
        if !topic.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&topic).map_err(|e| err(&topic, e.to_string()))? {
            let path = f.map_err(|e| err(&topic, e.to_string()))?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| err(&path, e.to_string()))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(&path, format!("not JSON: {e}")))?;
            let key = v.get("key").and_then(|k| k.as_str()).ok_or_else(|| err(&path, "needs a string \"key\"".into()))?;
            let value = v.get("value").ok_or_else(|| err(&path, "needs a \"value\" object".into()))?;
            out.push(Example {
                topic_dir: topic.file_name().unwrap_or_default().to_string_lossy().into_owned(),
                key: key.to_string(),
                value: serde_json::to_vec(value).expect("JSON value serializes"),
                path,
            });
        }
    }
    out.sort_by_key(|e| e.path.file_name().map(|n| n.to_os_string()));
    Ok(out)
}

/// Produces the input examples of `dir` in play order, waiting `delay`
/// after each (the worker reads topics in parallel, so a story spanning
/// topics needs time between steps); returns how many.
pub async fn play(cfg: &Config, dir: &Path, delay: Duration) -> Result<usize, ToolError> {
    let producer: FutureProducer = crate::kafka::producer_config(cfg, &[]).create()?;
    let mut n = 0;
    for ex in load_examples(dir)? {
        // Example folders are named after the default topic names.
        let Some(kind) = TopicKind::ALL.into_iter().find(|k| k.default_name() == ex.topic_dir) else { continue };
        let topic = cfg.topics.input(kind);
        producer
            .send(FutureRecord::to(topic).key(&ex.key).payload(&ex.value), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)?;
        println!("sent {} -> {topic} (key {})", ex.path.file_name().unwrap_or_default().to_string_lossy(), ex.key);
        n += 1;
        tokio::time::sleep(delay).await;
    }
    Ok(n)
}

/// Prints every message of the topics as one JSON line (key and value),
/// from the beginning, until `stop` completes.
pub async fn tail(cfg: &Config, topics: &[&str], stop: impl std::future::Future<Output = ()>) -> Result<(), ToolError> {
    let consumer: StreamConsumer = crate::kafka::client_config(
        cfg,
        crate::kafka::Role::Consumer,
        &[
            ("group.id", &format!("reservoir-tail-{}", uuid::Uuid::new_v4())),
            ("auto.offset.reset", "earliest"),
            ("enable.auto.commit", "false"),
        ],
    )
    .create()?;
    consumer.subscribe(topics)?;
    let mut stream = consumer.stream();
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            m = stream.next() => {
                let Some(m) = m else { return Ok(()) };
                let m = m?;
                let value: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or(serde_json::Value::Null);
                let line = serde_json::json!({
                    "topic": m.topic(),
                    "key": String::from_utf8_lossy(m.key().unwrap_or_default()),
                    "value": value,
                });
                println!("{line}");
            }
        }
    }
}
