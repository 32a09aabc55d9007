//! Reads the output topics (results, dead letters, availability) while the
//! soak runs, feeding confirmed orders to the generator, and reads them to
//! their end once the workers have stopped.
//!
//! Why while it runs: the generator needs confirmed orders to ship and
//! cancel, and reading at the tail keeps the final read short after a long
//! run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

use super::checks::Out;
use super::SoakError;
use crate::bench::workload::ConfirmedOrder;
use crate::config::Config;

/// What the output topics held, trimmed to what the checks read.
#[derive(Debug, Default)]
pub struct Recorded {
    pub results: Vec<Out>,
    pub dead_letters: Vec<Out>,
    pub availability: Vec<Out>,
    /// Confirmed orders by id, as first published.
    pub confirmed: BTreeMap<String, ConfirmedOrder>,
    /// Partitions not read to their end, if the final read timed out.
    pub unread: Option<String>,
}

pub struct Recorder {
    thread: JoinHandle<Recorded>,
    /// When set, read up to the ends as of then, and give up at the instant.
    finish_by: Arc<Mutex<Option<Instant>>>,
    stop_feed: Arc<AtomicBool>,
}

impl Recorder {
    /// Starts reading every partition of the output topics from the start;
    /// confirmed orders also go to `feed` until `stop_feeding`.
    pub fn start(
        cfg: &Config,
        feed: Arc<Mutex<Vec<ConfirmedOrder>>>,
    ) -> Result<Recorder, SoakError> {
        let c: BaseConsumer = crate::kafka::client_config(
            cfg,
            crate::kafka::Role::Consumer,
            &[
                ("group.id", &format!("{}-recorder", cfg.group_id)),
                ("enable.auto.commit", "false"),
                ("auto.offset.reset", "earliest"),
                ("fetch.wait.max.ms", "50"),
            ],
        )
        .create()?;
        let topics = [
            cfg.topics.reservations.clone(),
            cfg.topics.dead_letter.clone(),
            cfg.topics.availability.clone(),
        ];
        let md = c.fetch_metadata(None, Duration::from_secs(30))?;
        let mut tpl = TopicPartitionList::new();
        let mut partitions = Vec::new();
        for t in md
            .topics()
            .iter()
            .filter(|t| topics.iter().any(|n| n == t.name()))
        {
            for p in t.partitions() {
                tpl.add_partition_offset(t.name(), p.id(), Offset::Beginning)?;
                partitions.push((t.name().to_string(), p.id()));
            }
        }
        c.assign(&tpl)?;
        let finish_by: Arc<Mutex<Option<Instant>>> = Arc::default();
        let stop_feed = Arc::new(AtomicBool::new(false));
        let mut reading = Reading {
            topics,
            partitions,
            feed,
            stop_feed: stop_feed.clone(),
            next: BTreeMap::new(),
            recorded: Recorded::default(),
        };
        let by = finish_by.clone();
        let thread = std::thread::Builder::new()
            .name("soak-recorder".into())
            .spawn(move || reading.run(&c, &by))?;
        Ok(Recorder {
            thread,
            finish_by,
            stop_feed,
        })
    }

    /// The generator has stopped: no more confirmed orders for it.
    pub fn stop_feeding(&self) {
        self.stop_feed.store(true, Ordering::Relaxed);
    }

    /// Reads up to the ends as of now (call it once nothing publishes),
    /// giving up after `timeout` with `unread` set.
    pub async fn finish(self, timeout: Duration) -> Recorded {
        *self.finish_by.lock().expect("not poisoned") = Some(Instant::now() + timeout);
        tokio::task::spawn_blocking(move || {
            self.thread.join().expect("the recorder does not panic")
        })
        .await
        .expect("join task")
    }
}

struct Reading {
    /// Results, dead letters, availability.
    topics: [String; 3],
    partitions: Vec<(String, i32)>,
    feed: Arc<Mutex<Vec<ConfirmedOrder>>>,
    stop_feed: Arc<AtomicBool>,
    next: BTreeMap<(String, i32), i64>,
    recorded: Recorded,
}

impl Reading {
    fn run(&mut self, c: &BaseConsumer, finish_by: &Mutex<Option<Instant>>) -> Recorded {
        let mut ends: Option<BTreeMap<(String, i32), i64>> = None;
        loop {
            let deadline = *finish_by.lock().expect("not poisoned");
            if let Some(deadline) = deadline {
                if ends.is_none() {
                    ends = self
                        .ends(c)
                        .map_err(
                            |e| tracing::warn!(error = %e, "soak: reading the output topics' ends"),
                        )
                        .ok();
                }
                let behind = ends.as_ref().map(|e| self.behind(e));
                if behind.as_ref().is_some_and(Vec::is_empty) {
                    return std::mem::take(&mut self.recorded);
                }
                if Instant::now() >= deadline {
                    let why = match behind {
                        Some(b) => format!("read up to {}", b.join(", ")),
                        None => "their ends could not be read".to_string(),
                    };
                    self.recorded.unread = Some(why);
                    return std::mem::take(&mut self.recorded);
                }
            }
            match c.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => self.record(&m),
                // The broker is restarted during the run; the client reconnects.
                Some(Err(e)) => tracing::debug!(error = %e, "soak recorder"),
                None => {}
            }
        }
    }

    fn ends(
        &self,
        c: &BaseConsumer,
    ) -> Result<BTreeMap<(String, i32), i64>, rdkafka::error::KafkaError> {
        self.partitions
            .iter()
            .map(|(t, p)| {
                Ok((
                    (t.clone(), *p),
                    c.fetch_watermarks(t, *p, Duration::from_secs(30))?.1,
                ))
            })
            .collect()
    }

    fn behind(&self, ends: &BTreeMap<(String, i32), i64>) -> Vec<String> {
        ends.iter()
            .filter_map(|((t, p), end)| {
                let at = self.next.get(&(t.clone(), *p)).copied().unwrap_or(0);
                (at < *end).then(|| format!("{at} of {end} in {t}[{p}]"))
            })
            .collect()
    }

    fn record(&mut self, m: &BorrowedMessage<'_>) {
        self.next
            .insert((m.topic().to_string(), m.partition()), m.offset() + 1);
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        let value: Value =
            serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or(Value::Null);
        let d = &value["data"];
        let r = &mut self.recorded;
        if m.topic() == self.topics[0] {
            if value["type"] == "inventory.reservation.confirmed" {
                if let Some(o) =
                    ConfirmedOrder::from_data(d).filter(|o| !r.confirmed.contains_key(&o.order_id))
                {
                    if !self.stop_feed.load(Ordering::Relaxed) {
                        self.feed.lock().expect("not poisoned").push(o.clone());
                    }
                    r.confirmed.insert(o.order_id.clone(), o);
                }
            }
            let reasons: Vec<Value> = d["lines"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| json!({"reason": l["reason"]}))
                .collect();
            r.results.push(Out { key, value: json!({"type": value["type"], "data": {"order_id": d["order_id"], "lines": reasons}}), headers: BTreeMap::new() });
        } else if m.topic() == self.topics[1] {
            let mut headers = BTreeMap::new();
            for h in m.headers().into_iter().flat_map(|h| h.iter()) {
                headers.insert(
                    h.key.to_string(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                );
            }
            r.dead_letters.push(Out {
                key,
                value: Value::Null,
                headers,
            });
        } else {
            let data = json!({"status": d["status"], "available": d["available"], "version": d["version"], "caused_by": d["caused_by"]});
            r.availability.push(Out {
                key,
                value: json!({ "data": data }),
                headers: BTreeMap::new(),
            });
        }
    }
}
