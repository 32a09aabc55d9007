//! The Kafka side of a replay, blocking (librdkafka's calls block): the
//! topic's partitions, the group's members and offsets, watermarks, the
//! offset for a time, and the commit.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{format_time, oldest_before, plan_partition, resolve_topic, ReplayArgs, ReplayError, ReplayFrom, ReplayPlan, RETENTION_MARGIN};
use crate::config::Config;
use crate::kafka::{client_config, Role};

/// Bound of every broker request.
const REQUEST: Duration = Duration::from_secs(30);
/// How long a read waits for a message the watermarks promise.
const READ: Duration = Duration::from_secs(15);

pub(super) fn replay_blocking(cfg: &Config, args: &ReplayArgs) -> Result<ReplayPlan, ReplayError> {
    let topic = resolve_topic(&cfg.topics, &args.topic)?.to_string();
    let k = Kafka(cfg);
    // The group's own id, never subscribed: it reads and commits the
    // group's offsets without joining it.
    let group: BaseConsumer = client_config(cfg, Role::Consumer, &[("group.id", &cfg.group_id), ("enable.auto.commit", "false"), ("enable.auto.offset.store", "false")])
        .create()
        .map_err(k.err("creating a Kafka client"))?;
    let partitions = partitions(&group, cfg, &topic)?;
    ensure_stopped(&group, cfg)?;
    let before = committed(&group, cfg, &topic, &partitions)?;
    let reader = Reader::new(cfg, &topic)?;
    let from = args.from();
    let mut plan = ReplayPlan { group: cfg.group_id.clone(), topic: topic.clone(), from, partitions: Vec::new(), dry_run: args.dry_run, committed: false };
    for (&p, c) in partitions.iter().zip(before) {
        let (low, high) = group.fetch_watermarks(&topic, p, REQUEST).map_err(k.err(format!("reading the watermarks of {topic}/{p}")))?;
        let target = match from {
            ReplayFrom::Beginning => low,
            ReplayFrom::Time(t) => offset_for_time(&group, cfg, &topic, p, t, low, high)?,
        };
        let mut pp = plan_partition(p, low, high, c, target);
        if let Some(n) = pp.new_offset.filter(|_| pp.to_reread() > 0) {
            // Only a hint for the retention check: a miss leaves it unknown.
            pp.first_timestamp = reader.first_timestamp(p, n, high).ok().flatten();
        }
        plan.partitions.push(pp);
    }
    if !args.force {
        let retention = cfg.engine.idempotency_retention;
        let cutoff = now_ms() - (retention.saturating_sub(RETENTION_MARGIN)).as_millis() as i64;
        if let Some((partition, at)) = oldest_before(&plan.partitions, from, cutoff) {
            return Err(ReplayError::TooOld {
                topic,
                partition,
                at: format_time(at),
                cutoff: format_time(cutoff),
                retention_secs: retention.as_secs(),
                margin_secs: RETENTION_MARGIN.as_secs(),
            });
        }
    }
    let moves: Vec<(i32, i64)> = plan.partitions.iter().filter_map(|p| Some((p.partition, p.new_offset?))).collect();
    if args.dry_run || moves.is_empty() {
        return Ok(plan);
    }
    // Again right before the commit: a worker may have started meanwhile.
    ensure_stopped(&group, cfg)?;
    let mut tpl = TopicPartitionList::new();
    for &(p, n) in &moves {
        tpl.add_partition_offset(&topic, p, Offset::Offset(n)).expect("a fresh list takes any offset");
    }
    crate::kafka::commit_sync(&group, &tpl, REQUEST).map_err(|e| ReplayError::Commit { group: cfg.group_id.clone(), topic: topic.clone(), source: Box::new(e) })?;
    plan.committed = true;
    let after = committed(&group, cfg, &topic, &moves.iter().map(|m| m.0).collect::<Vec<_>>())?;
    for (&(partition, wanted), got) in moves.iter().zip(after) {
        if got != Some(wanted) {
            let got = got.map_or("none".into(), |g| g.to_string());
            return Err(ReplayError::NotVerified { group: cfg.group_id.clone(), topic, partition, wanted, got });
        }
    }
    Ok(plan)
}

/// Builds `ReplayError::Kafka` naming the broker and what was being done.
struct Kafka<'a>(&'a Config);

impl Kafka<'_> {
    fn err(&self, action: impl Into<String>) -> impl FnOnce(KafkaError) -> ReplayError {
        let (action, bootstrap) = (action.into(), self.0.kafka_bootstrap.clone());
        move |source| ReplayError::Kafka { action, bootstrap, source: Box::new(source) }
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The topic's partitions, from the metadata of every topic (asking for
/// one topic by name may create it where auto-creation is on).
fn partitions(c: &BaseConsumer, cfg: &Config, topic: &str) -> Result<Vec<i32>, ReplayError> {
    let md = c.fetch_metadata(None, REQUEST).map_err(Kafka(cfg).err("reading the topic metadata"))?;
    crate::kafka::partitions_in(&md, topic)
        .ok_or_else(|| ReplayError::UnknownTopic { topic: topic.into(), bootstrap: cfg.kafka_bootstrap.clone(), inputs: super::inputs(&cfg.topics) })
}

/// Refuses while the group has members (ListGroups, then DescribeGroups).
fn ensure_stopped(c: &BaseConsumer, cfg: &Config) -> Result<(), ReplayError> {
    let list = crate::kafka::while_busy(REQUEST, || c.fetch_group_list(Some(&cfg.group_id), REQUEST)).map_err(Kafka(cfg).err(format!("describing consumer group {}", cfg.group_id)))?;
    let members: Vec<String> = list
        .groups()
        .iter()
        .filter(|g| g.name() == cfg.group_id)
        .flat_map(|g| g.members())
        .map(|m| match (m.client_id(), m.client_host()) {
            ("", _) => m.id().to_string(),
            (client, host) => format!("{} ({client} at {host})", m.id()),
        })
        .collect();
    if members.is_empty() {
        return Ok(());
    }
    Err(ReplayError::GroupActive { group: cfg.group_id.clone(), count: members.len(), members: members.join(", ") })
}

/// The group's committed offset per partition (None: never committed).
fn committed(c: &BaseConsumer, cfg: &Config, topic: &str, partitions: &[i32]) -> Result<Vec<Option<i64>>, ReplayError> {
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition(topic, p);
    }
    let got = crate::kafka::committed_offsets(c, &tpl, REQUEST, REQUEST).map_err(Kafka(cfg).err(format!("reading the offsets of group {} on {topic}", cfg.group_id)))?;
    partitions
        .iter()
        .map(|&p| {
            let e = got.find_partition(topic, p);
            if let Some(Err(source)) = e.as_ref().map(|e| e.error()) {
                return Err(Kafka(cfg).err(format!("reading the offset of group {} on {topic}/{p}", cfg.group_id))(source));
            }
            Ok(match e.map(|e| e.offset()) {
                Some(Offset::Offset(o)) if o >= 0 => Some(o),
                _ => None,
            })
        })
        .collect()
}

/// The first offset of a message at or after `t` (Unix ms), by the
/// broker's time index (ListOffsets by timestamp); the high watermark when
/// no message is that new (Kafka answers -1 then).
fn offset_for_time(c: &BaseConsumer, cfg: &Config, topic: &str, p: i32, t: i64, low: i64, high: i64) -> Result<i64, ReplayError> {
    if low >= high {
        return Ok(high);
    }
    let what = || format!("looking up the offset of {} on {topic}/{p}", format_time(t));
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, Offset::Offset(t)).expect("a fresh list takes any offset");
    let got = c.offsets_for_times(tpl, REQUEST).map_err(Kafka(cfg).err(what()))?;
    let e = got.find_partition(topic, p);
    if let Some(Err(source)) = e.as_ref().map(|e| e.error()) {
        return Err(Kafka(cfg).err(what())(source));
    }
    Ok(match e.map(|e| e.offset()) {
        Some(Offset::Offset(o)) if o >= 0 => o.clamp(low, high),
        _ => high,
    })
}

/// Reads messages of one topic from given offsets, outside any group.
struct Reader<'a> {
    consumer: BaseConsumer,
    topic: String,
    cfg: &'a Config,
}

impl<'a> Reader<'a> {
    fn new(cfg: &'a Config, topic: &str) -> Result<Reader<'a>, ReplayError> {
        // librdkafka wants a group.id even to assign; this one never
        // joins nor commits, so no broker keeps anything for it.
        let group = format!("{}-replay-reader", cfg.group_id);
        let consumer = client_config(cfg, Role::Consumer, &[("group.id", &group), ("enable.auto.commit", "false"), ("enable.partition.eof", "true"), ("fetch.wait.max.ms", "20")])
            .create()
            .map_err(Kafka(cfg).err("creating a Kafka reader"))?;
        Ok(Reader { consumer, topic: topic.into(), cfg })
    }

    /// The timestamp of the message at `start` (the first one after it
    /// where compaction removed that one), below `high`; None if none.
    fn first_timestamp(&self, p: i32, start: i64, high: i64) -> Result<Option<i64>, ReplayError> {
        if start >= high {
            return Ok(None);
        }
        let topic = self.topic.as_str();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(start)).expect("a fresh list takes any offset");
        self.consumer.assign(&tpl).map_err(Kafka(self.cfg).err(format!("reading {topic}/{p}")))?;
        let started = Instant::now();
        let found = loop {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) if m.topic() == topic && m.partition() == p && m.offset() >= start => break m.timestamp().to_millis(),
                Some(Ok(_)) | Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => return Err(Kafka(self.cfg).err(format!("reading {topic}/{p} at offset {start}"))(e)),
                None if started.elapsed() > READ => return Err(ReplayError::Read { topic: topic.into(), partition: p, offset: start, secs: READ.as_secs() }),
                None => {}
            }
        };
        let _ = self.consumer.unassign();
        Ok(found)
    }
}
