//! How far the worker group has come: its committed offsets on the input
//! topics against their ends. Read by `reservoir bench` (events whose
//! effects are durable) and `reservoir soak` (caught up after a fault).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::{client_config, Role};
use crate::config::Config;

/// Each broker request; a broker restarting answers within it or fails.
const REQUEST: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    /// The broker did not answer; asking again can help.
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// Retrying cannot help until the topic exists.
    #[error("input topic {0} has no partitions at the broker: create the topics first (`reservoir topics create`)")]
    NoTopic(String),
}

/// The group's committed offsets against the input topics' ends. Blocking
/// calls (librdkafka); async callers use [`GroupProgress::wait_caught_up`].
pub struct GroupProgress {
    cfg: Config,
    /// Replaced after an error: a client that never subscribes keeps the
    /// partition leaders it saw, so after a leader moved it answered
    /// "Unknown partition" for minutes (measured in the soak).
    consumer: Mutex<BaseConsumer>,
    partitions: Vec<(String, i32)>,
}

/// Reads the group's offsets only: it never joins, so never rebalances the workers.
fn reader(cfg: &Config) -> Result<BaseConsumer, KafkaError> {
    client_config(cfg, Role::Consumer, &[("group.id", &cfg.group_id), ("enable.auto.commit", "false")]).create()
}

impl GroupProgress {
    /// Every partition of every input topic, as the broker knows them now.
    pub fn new(cfg: &Config) -> Result<GroupProgress, ProgressError> {
        let consumer = reader(cfg)?;
        let md = consumer.fetch_metadata(None, Duration::from_secs(30))?;
        let mut partitions = Vec::new();
        for topic in cfg.topics.inputs() {
            let found = super::partitions_in(&md, topic).ok_or_else(|| ProgressError::NoTopic(topic.to_string()))?;
            partitions.extend(found.into_iter().map(|p| (topic.to_string(), p)));
        }
        Ok(GroupProgress { cfg: cfg.clone(), consumer: Mutex::new(consumer), partitions })
    }

    fn consumer(&self) -> std::sync::MutexGuard<'_, BaseConsumer> {
        self.consumer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new client, after one failed (it learns the leaders anew).
    fn renew(&self) {
        if let Ok(c) = reader(&self.cfg) {
            *self.consumer() = c;
        }
    }

    /// The group's committed offset per partition (0 where none yet).
    pub fn committed(&self) -> Result<Vec<i64>, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in &self.partitions {
            tpl.add_partition(t, *p);
        }
        let got = self.consumer().committed_offsets(tpl, REQUEST);
        let got = got.inspect_err(|_| self.renew())?;
        Ok(self
            .partitions
            .iter()
            .map(|(t, p)| match got.find_partition(t, *p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            })
            .collect())
    }

    /// Events whose effects are durable: the committed offsets summed.
    pub fn committed_sum(&self) -> Result<i64, KafkaError> {
        Ok(self.committed()?.iter().sum())
    }

    /// The group's committed offset per partition of `topic`.
    pub fn committed_of(&self, topic: &str) -> Result<BTreeMap<i32, i64>, KafkaError> {
        Ok(self.partitions.iter().zip(self.committed()?).filter(|((t, _), _)| t == topic).map(|((_, p), c)| (*p, c)).collect())
    }

    /// The end (high watermark) of every partition.
    pub fn ends(&self) -> Result<Vec<i64>, KafkaError> {
        let ends: Result<Vec<i64>, KafkaError> = {
            let c = self.consumer();
            self.partitions.iter().map(|(t, p)| c.fetch_watermarks(t, *p, REQUEST).map(|w| w.1)).collect()
        };
        ends.inspect_err(|_| self.renew())
    }

    /// Waits until the group has committed everything produced up to the
    /// first look at the ends; the error says which partitions lag.
    pub async fn wait_caught_up(&self, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        let mut last = String::new();
        let mut ends = None;
        while start.elapsed() < timeout {
            let r = tokio::task::block_in_place(|| -> Result<Lag, KafkaError> {
                if ends.is_none() {
                    ends = Some(self.ends()?);
                }
                Ok(Lag::of(&self.partitions, &self.committed()?, ends.as_ref().expect("set above")))
            });
            match r {
                Ok(lag) if lag.behind.is_empty() => return Ok(()),
                Ok(lag) => last = lag.to_string(),
                Err(e) => last = format!("Kafka: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(format!("not caught up within {} s ({last})", timeout.as_secs()))
    }
}

/// Committed against ends, with the partitions behind: which partitions
/// lag tells a stuck consumer from a slow one.
#[derive(Debug, PartialEq)]
struct Lag {
    committed: i64,
    end: i64,
    behind: Vec<String>,
}

impl Lag {
    fn of(partitions: &[(String, i32)], committed: &[i64], ends: &[i64]) -> Lag {
        let behind = partitions.iter().zip(committed.iter().zip(ends)).filter(|(_, (c, e))| c < e).map(|((t, p), (c, e))| format!("{t}[{p}] at {c} of {e}")).collect();
        Lag { committed: committed.iter().sum(), end: ends.iter().sum(), behind }
    }
}

impl std::fmt::Display for Lag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "committed {} of {}; behind: {}", self.committed, self.end, self.behind.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_only_the_partitions_behind() {
        let parts = [("orders".to_string(), 0), ("orders".to_string(), 1), ("carts".to_string(), 0)];
        let lag = Lag::of(&parts, &[5, 3, 9], &[5, 7, 8]);
        assert_eq!(lag.behind, ["orders[1] at 3 of 7"]);
        assert_eq!(lag.to_string(), "committed 17 of 20; behind: orders[1] at 3 of 7");
        // A commit past the first look at the end (more was produced since) is caught up.
        assert!(Lag::of(&parts, &[6, 7, 9], &[5, 7, 8]).behind.is_empty());
    }
}
