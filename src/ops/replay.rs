//! `reservoir replay`: move the worker group's committed offsets on one
//! input topic back (to the beginning or to a time), with every worker of
//! the group stopped, so the workers re-read those events when started.
//!
//! Re-reading is safe because the worker is idempotent per event id for
//! the idempotency retention; older events would be applied again, so the
//! plan is refused (unless `--force`) when it would re-read one of those.
//! The pure parts (time parsing, the plan) are here; the Kafka calls are in
//! [`broker`].

mod broker;

use std::fmt::Write as _;
use std::time::Duration;

use clap::ArgGroup;
use rdkafka::error::KafkaError;

use crate::config::{Config, Topics};

const EXAMPLES: &str = "\
Examples:
  # What would a replay of the stock topic from 08:00 UTC re-read? (commits nothing)
  reservoir replay --topic inventory.stock --from-time 2026-11-20T08:00:00Z --dry-run

  # Stop every worker of the group, then move its offsets on shop.orders to the start
  reservoir replay --topic orders --from-beginning --kafka-bootstrap 127.0.0.1:9092

  # The same from a Unix time in milliseconds, for another group
  reservoir replay --topic shop.carts --from-time 1795161600000 --group-id reservoir-eu

Then start the workers (reservoir run): they re-read from the new offsets. Events
already applied change nothing (their ids are remembered for
RESERVOIR_IDEMPOTENCY_RETENTION_SECS, 7 days by default); older ones would be
applied again, so replay refuses to re-read them unless --force is given.";

/// Move the worker group's offsets on an input topic back, so the workers re-read its events.
#[derive(clap::Args, Debug, Clone)]
#[command(group(ArgGroup::new("from").required(true).args(["from_beginning", "from_time"])), after_long_help = EXAMPLES)]
pub struct ReplayArgs {
    /// Input topic to replay: its name, or its role (stock, carts, orders, shipments, credit-memos).
    #[arg(long)]
    pub topic: String,
    /// Re-read every message still kept in the topic.
    #[arg(long)]
    pub from_beginning: bool,
    /// Re-read messages from this time on: RFC 3339 (2026-11-20T08:00:00Z) or Unix milliseconds.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub from_time: Option<i64>,
    /// Print the plan and commit nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Re-read even messages older than the idempotency retention (they are applied again).
    #[arg(long)]
    pub force: bool,
}

impl ReplayArgs {
    pub fn from(&self) -> ReplayFrom {
        match self.from_time {
            Some(t) => ReplayFrom::Time(t),
            None => ReplayFrom::Beginning,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayFrom {
    Beginning,
    /// Unix milliseconds.
    Time(i64),
}

/// Parses `--from-time`: RFC 3339, or Unix milliseconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        // 10 digits are seconds, not milliseconds: 1970 is never meant.
        if n < 100_000_000_000 {
            return Err(format!("{n} looks like Unix seconds; give milliseconds ({n}000) or RFC 3339 like 2026-11-20T08:00:00Z"));
        }
        return Ok(n);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time like 2026-11-20T08:00:00Z (with a zone) nor Unix milliseconds: {e}"))?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// RFC 3339 in UTC with milliseconds, for messages and the table.
pub fn format_time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// What happens to one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionPlan {
    pub partition: i32,
    /// Low and high watermarks when planned.
    pub low: i64,
    pub high: i64,
    /// The group's committed offset before the replay; None: never committed.
    pub committed: Option<i64>,
    /// Where `--from-beginning` / `--from-time` points.
    pub target: i64,
    /// The offset committed; None: left as it is (the group has not read
    /// past the target, or has never committed and starts at the earliest).
    pub new_offset: Option<i64>,
    /// Timestamp (Unix ms) of the first message to re-read, when known.
    pub first_timestamp: Option<i64>,
}

impl PartitionPlan {
    /// Messages the group has read already and will read again.
    pub fn to_reread(&self) -> i64 {
        match (self.committed, self.new_offset) {
            (Some(c), Some(n)) => (c.min(self.high) - n.max(self.low)).max(0),
            _ => 0,
        }
    }
}

/// Offsets only move back: moving one forward would skip events the
/// group has not processed yet.
pub fn plan_partition(partition: i32, low: i64, high: i64, committed: Option<i64>, target: i64) -> PartitionPlan {
    let target = target.clamp(low, high);
    let new_offset = committed.filter(|c| target < *c).map(|_| target);
    PartitionPlan { partition, low, high, committed, target, new_offset, first_timestamp: None }
}

/// The replay of one topic for one group: planned, and committed unless a dry run.
#[derive(Clone, Debug)]
pub struct ReplayPlan {
    pub group: String,
    pub topic: String,
    pub from: ReplayFrom,
    pub partitions: Vec<PartitionPlan>,
    pub dry_run: bool,
    /// Whether new offsets were committed (and read back).
    pub committed: bool,
}

impl ReplayPlan {
    pub fn to_reread(&self) -> i64 {
        self.partitions.iter().map(PartitionPlan::to_reread).sum()
    }

    /// A table for people: one row per partition, and a summary line.
    pub fn table(&self) -> String {
        let from = match self.from {
            ReplayFrom::Beginning => "the beginning".to_string(),
            ReplayFrom::Time(t) => format_time(t),
        };
        let mut s = format!("replay of {} for group {} from {from}\n", self.topic, self.group);
        let _ = writeln!(s, "{:>9}  {:>12}  {:>12}  {:>10}  first message to re-read", "partition", "committed", "new offset", "re-read");
        let opt = |o: Option<i64>| o.map_or("-".to_string(), |v| v.to_string());
        for p in &self.partitions {
            let new = p.new_offset.map_or("unchanged".to_string(), |v| v.to_string());
            let first = match (p.new_offset, p.first_timestamp) {
                (Some(_), Some(t)) if p.to_reread() > 0 => format_time(t),
                _ => "-".into(),
            };
            let _ = writeln!(s, "{:>9}  {:>12}  {new:>12}  {:>10}  {first}", p.partition, opt(p.committed), p.to_reread());
        }
        let n = self.to_reread();
        let _ = match (self.partitions.iter().any(|p| p.new_offset.is_some()), self.dry_run) {
            (false, _) if self.partitions.iter().all(|p| p.committed.is_none()) => {
                writeln!(s, "nothing to re-read: the group has committed no offsets here (its workers start at the earliest message); no offset changed")
            }
            (false, _) => writeln!(s, "nothing to re-read: the group has not read past that point; no offset changed"),
            (true, true) => writeln!(s, "dry run, nothing committed: run again without --dry-run to re-read {n} message(s)"),
            (true, false) => writeln!(s, "committed: start the workers (reservoir run) to re-read {n} message(s)"),
        };
        s
    }
}

/// Re-reading a message older than this margin inside the idempotency
/// retention is refused too: its id may be forgotten before a worker,
/// started some time after the replay, reaches it.
pub const RETENTION_MARGIN: Duration = Duration::from_secs(3600);

/// The first partition whose re-read starts before `cutoff_ms` (the oldest
/// such message), for the retention check.
pub fn oldest_before(plan: &[PartitionPlan], from: ReplayFrom, cutoff_ms: i64) -> Option<(i32, i64)> {
    plan.iter()
        .filter(|p| p.to_reread() > 0)
        .filter_map(|p| {
            let t = p.first_timestamp.or(match from {
                ReplayFrom::Time(t) => Some(t),
                ReplayFrom::Beginning => None,
            })?;
            (t < cutoff_ms).then_some((p.partition, t))
        })
        .min_by_key(|(_, t)| *t)
}

/// The topic named by `--topic`: an input topic's name or its role.
pub fn resolve_topic<'a>(topics: &'a Topics, given: &str) -> Result<&'a str, ReplayError> {
    let roles = [("stock", &topics.stock), ("carts", &topics.carts), ("orders", &topics.orders), ("shipments", &topics.shipments), ("credit-memos", &topics.credit_memos), ("credit_memos", &topics.credit_memos)];
    if let Some((_, t)) = roles.iter().find(|(r, _)| *r == given) {
        return Ok(t.as_str());
    }
    topics.inputs().into_iter().find(|t| *t == given).ok_or_else(|| ReplayError::NotInput { topic: given.into(), inputs: inputs(topics) })
}

fn inputs(topics: &Topics) -> String {
    topics.inputs().join(", ")
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{topic} is not an input topic of the workers: give one of {inputs}, or a role (stock, carts, orders, shipments, credit-memos); topic names come from RESERVOIR_TOPIC_* or --topic-*")]
    NotInput { topic: String, inputs: String },
    #[error("topic {topic} does not exist on {bootstrap}: check RESERVOIR_KAFKA_BOOTSTRAP and the topic settings (configured input topics: {inputs})")]
    UnknownTopic { topic: String, bootstrap: String, inputs: String },
    #[error("group {group} has {count} active member(s) ({members}): stop every worker of the group (reservoir run) and run replay again. A worker killed rather than stopped stays a member until its session times out (10 s)")]
    GroupActive { group: String, count: usize, members: String },
    #[error("partition {partition} of {topic} would re-read messages from {at}, older than the idempotency retention ({retention_secs} s, less a margin of {margin_secs} s): their event ids may be forgotten, so they would be applied again (an old inventory.level.set sets an old count). Replay from a later time (--from-time {cutoff} or later), or give --force if applying them again is meant")]
    TooOld { topic: String, partition: i32, at: String, cutoff: String, retention_secs: u64, margin_secs: u64 },
    #[error("{action} on Kafka at {bootstrap}: {source}; check that the broker is reachable and run replay again")]
    Kafka { action: String, bootstrap: String, source: Box<KafkaError> },
    #[error("no message arrived from {topic}/{partition} at offset {offset} within {secs} s (the watermarks say there is one): check the broker and run replay again")]
    Read { topic: String, partition: i32, offset: i64, secs: u64 },
    #[error("Kafka refused the offsets of group {group} on {topic}: {source}; a worker of the group has probably joined since the check: stop every worker and run replay again")]
    Commit { group: String, topic: String, source: Box<KafkaError> },
    #[error("after the commit, group {group} has offset {got} on {topic}/{partition}, not {wanted}: a worker of the group has probably started and committed since: stop every worker and run replay again")]
    NotVerified { group: String, topic: String, partition: i32, wanted: i64, got: String },
}

impl ReplayError {
    /// Whether running the same command again can succeed (after doing
    /// what the message says, where it says something).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ReplayError::NotInput { .. } | ReplayError::UnknownTopic { .. } | ReplayError::TooOld { .. })
    }
}

/// Plans the replay, refuses it when unsafe, commits it unless a dry run,
/// and verifies the commit by reading the offsets back. Blocking Kafka
/// calls run on a blocking thread.
pub async fn replay(cfg: &Config, args: &ReplayArgs) -> Result<ReplayPlan, ReplayError> {
    let (cfg, args) = (cfg.clone(), args.clone());
    tokio::task::spawn_blocking(move || broker::replay_blocking(&cfg, &args)).await.expect("the replay thread does not panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339_or_millis() {
        assert_eq!(parse_time("2026-11-20T08:00:00Z"), Ok(1_795_161_600_000));
        assert_eq!(parse_time("2026-11-20T09:00:00.250+01:00"), Ok(1_795_161_600_250));
        assert_eq!(parse_time(" 1795161600000 "), Ok(1_795_161_600_000));
        let secs = parse_time("1795161600").unwrap_err();
        assert!(secs.contains("seconds") && secs.contains("1795161600000"), "{secs}");
        let no_zone = parse_time("2026-11-20T08:00:00").unwrap_err();
        assert!(no_zone.contains("RFC 3339"), "{no_zone}");
        assert!(parse_time("yesterday").is_err());
        assert_eq!(format_time(1_795_161_600_000), "2026-11-20T08:00:00Z");
    }

    #[test]
    fn offsets_only_move_back() {
        // Read to the end (10), replay from the beginning (low 2: 0 and 1 deleted).
        let p = plan_partition(0, 2, 10, Some(10), 2);
        assert_eq!((p.new_offset, p.to_reread()), (Some(2), 8));
        // From a time at offset 6.
        assert_eq!(plan_partition(0, 0, 10, Some(10), 6).to_reread(), 4);
        // The group is behind the target: nothing to re-read, never skip ahead.
        let behind = plan_partition(0, 0, 10, Some(4), 6);
        assert_eq!((behind.new_offset, behind.to_reread()), (None, 0));
        // Never committed: the group starts at the earliest anyway.
        assert_eq!(plan_partition(0, 0, 10, None, 0).new_offset, None);
        // A time past the end points at the high watermark: nothing moves.
        assert_eq!(plan_partition(0, 0, 10, Some(10), i64::MAX).new_offset, None);
        // A committed offset past the end (topic recreated) counts what exists.
        assert_eq!(plan_partition(0, 0, 5, Some(9), 0).to_reread(), 5);
        // Empty partition.
        assert_eq!(plan_partition(0, 3, 3, Some(3), 3).to_reread(), 0);
    }

    #[test]
    fn the_oldest_message_re_read_is_checked_against_the_retention() {
        let mut a = plan_partition(0, 0, 10, Some(10), 0);
        let mut b = plan_partition(1, 0, 10, Some(10), 0);
        let untouched = PartitionPlan { first_timestamp: Some(1), ..plan_partition(2, 0, 10, Some(0), 0) };
        a.first_timestamp = Some(5_000);
        b.first_timestamp = Some(3_000);
        let plan = [a.clone(), b, untouched];
        assert_eq!(oldest_before(&plan, ReplayFrom::Beginning, 4_000), Some((1, 3_000)));
        assert_eq!(oldest_before(&plan, ReplayFrom::Beginning, 3_000), None);
        // Unknown first message: the asked time stands in for it.
        a.first_timestamp = None;
        assert_eq!(oldest_before(&[a.clone()], ReplayFrom::Time(2_000), 4_000), Some((0, 2_000)));
        assert_eq!(oldest_before(&[a], ReplayFrom::Beginning, 4_000), None);
    }

    #[test]
    fn topics_by_name_or_role_and_only_inputs() {
        let t = Topics::default();
        assert_eq!(resolve_topic(&t, "orders").unwrap(), "shop.orders");
        assert_eq!(resolve_topic(&t, "credit-memos").unwrap(), "shop.credit-memos");
        assert_eq!(resolve_topic(&t, "inventory.stock").unwrap(), "inventory.stock");
        let e = resolve_topic(&t, "inventory.availability").unwrap_err();
        assert!(!e.is_retryable());
        let msg = e.to_string();
        assert!(msg.contains("inventory.availability") && msg.contains("shop.carts"), "{msg}");
    }

    #[test]
    fn the_table_shows_every_partition() {
        let mut p0 = plan_partition(0, 0, 7, Some(7), 0);
        p0.first_timestamp = Some(1_795_161_600_000);
        let plan = ReplayPlan { group: "g".into(), topic: "t".into(), from: ReplayFrom::Beginning, partitions: vec![p0, plan_partition(1, 0, 0, None, 0)], dry_run: true, committed: false };
        let table = plan.table();
        assert!(table.contains("2026-11-20T08:00:00Z"), "{table}");
        assert!(table.contains("unchanged"), "{table}");
        assert!(table.contains("dry run") && table.contains("7 message(s)"), "{table}");
    }
}
