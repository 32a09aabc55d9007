//! `reservoir republish`: publishes the stored availability of every sku
//! again, with the versions it has, so a downstream cache or search index
//! can be rebuilt without touching stock.
//!
//! It walks the keyspace with SCAN (every master of a cluster), a page at a
//! time, so memory stays bounded. After each page's messages are
//! acknowledged it saves the SCAN cursors to a checkpoint file, so an
//! interrupted run continues where it stopped; publishing a page twice is
//! harmless (same versions).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::Config;
use crate::publish::{Out, PublishError, Publisher};
use crate::store::keys::{self, SkuKeys};
use crate::store::{reply, Conn, StoreError};

/// `data.caused_by` of republished availability (no input event caused it).
pub const REPUBLISH_CAUSE: &str = "reservoir.republish";

#[derive(clap::Args, Debug, Clone)]
pub struct RepublishArgs {
    /// Only this channel (default: every configured channel).
    #[arg(long)]
    pub channel: Option<String>,
    /// Only skus whose id starts with this text.
    #[arg(long)]
    pub sku_prefix: Option<String>,
    /// Progress file: an interrupted run with the same settings continues
    /// from it; it is removed when the run completes.
    #[arg(long, default_value = "reservoir-republish.checkpoint.json")]
    pub checkpoint: PathBuf,
    /// Ignore (and replace) an existing checkpoint and start from the beginning.
    #[arg(long)]
    pub restart: bool,
    /// Keys asked for per SCAN call; each page is published and checkpointed.
    #[arg(long, default_value_t = 1000)]
    pub page: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RepublishError {
    #[error("Redis: {0}")]
    Store(#[from] StoreError),
    #[error("Kafka: {0}")]
    Publish(#[from] PublishError),
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: String, message: String },
    #[error("channel {0:?} is not configured; configured channels: {1:?}")]
    UnknownChannel(String, Vec<String>),
    #[error("interrupted; progress is saved in {0}: run the same command again to continue")]
    Interrupted(String),
}

impl RepublishError {
    /// Whether running the same command again can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            RepublishError::Store(e) => e.is_retryable(),
            RepublishError::Publish(_) | RepublishError::Interrupted(_) => true,
            _ => false,
        }
    }
}

/// What a run did, over all its resumed parts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Summary {
    /// Skus read that matched the prefix (with or without a channel).
    pub skus: u64,
    /// Availability messages published.
    pub messages: u64,
    /// Whether this run continued a saved checkpoint.
    #[serde(skip)]
    pub resumed: bool,
}

/// The saved progress: what the run was for, and where each node's SCAN is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Checkpoint {
    redis_url: String,
    topic: String,
    channel: Option<String>,
    sku_prefix: Option<String>,
    /// node -> next SCAN cursor; None once the node is done.
    cursors: BTreeMap<String, Option<u64>>,
    done: Summary,
}

impl Checkpoint {
    fn same_run(&self, other: &Checkpoint) -> bool {
        (&self.redis_url, &self.topic, &self.channel, &self.sku_prefix) == (&other.redis_url, &other.topic, &other.channel, &other.sku_prefix)
            && self.cursors.keys().eq(other.cursors.keys())
    }

    fn load(path: &Path) -> Result<Option<Checkpoint>, RepublishError> {
        let err = |m: String| RepublishError::Checkpoint { path: path.display().to_string(), message: m };
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| err(format!("unreadable ({e}); delete it or pass --restart"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Written to a temporary file and renamed, so a crash leaves the old
    /// or the new checkpoint, never half of one.
    fn save(&self, path: &Path) -> Result<(), RepublishError> {
        let err = |e: std::io::Error| RepublishError::Checkpoint { path: path.display().to_string(), message: e.to_string() };
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).expect("checkpoint serializes")).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

/// Runs (or continues) a republish; `stop` ends it early, after the page in
/// flight is acknowledged and checkpointed.
pub async fn republish(cfg: &Config, args: &RepublishArgs, stop: impl std::future::Future<Output = ()> + Send + 'static) -> Result<Summary, RepublishError> {
    let mut conn = Conn::connect(&cfg.redis).await?;
    let mut channels = crate::store::read_channels(&mut conn).await?;
    if let Some(c) = &args.channel {
        if !channels.contains_key(c) {
            return Err(RepublishError::UnknownChannel(c.clone(), channels.keys().cloned().collect()));
        }
        channels.retain(|name, _| name == c);
    }
    let nodes = conn.scan_nodes().await?;
    let fresh = Checkpoint {
        redis_url: cfg.redis.to_string(),
        topic: cfg.topics.availability.clone(),
        channel: args.channel.clone(),
        sku_prefix: args.sku_prefix.clone(),
        cursors: nodes.iter().map(|n| (n.clone(), Some(0))).collect(),
        done: Summary::default(),
    };
    let mut cp = match Checkpoint::load(&args.checkpoint)? {
        Some(saved) if !args.restart => {
            if !saved.same_run(&fresh) {
                return Err(RepublishError::Checkpoint {
                    path: args.checkpoint.display().to_string(),
                    message: "was saved by a republish with other settings (Redis, topic, channel, prefix or cluster masters); pass --restart to start over, or --checkpoint with another file".into(),
                });
            }
            let mut saved = saved;
            saved.done.resumed = true;
            saved
        }
        _ => fresh,
    };

    let publisher = Publisher::new(cfg)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopper = tokio::spawn(async move {
        stop.await;
        let _ = stop_tx.send(true);
    });
    let interrupted = |publisher: &Publisher, bar: &indicatif::ProgressBar| {
        publisher.flush(Duration::from_secs(10));
        bar.abandon();
        RepublishError::Interrupted(args.checkpoint.display().to_string())
    };
    let bar = progress_bar();
    let started = Instant::now();
    let nodes: Vec<String> = cp.cursors.keys().cloned().collect();
    for node in nodes {
        while let Some(cursor) = cp.cursors[&node] {
            if *stop_rx.borrow() {
                return Err(interrupted(&publisher, &bar));
            }
            let (next, keys) = conn.scan_page(&node, cursor, keys::INV_PATTERN, args.page, "hash").await?;
            let skus: Vec<String> = keys
                .iter()
                .filter_map(|k| keys::sku_of_inv_key(k))
                .filter(|s| args.sku_prefix.as_deref().is_none_or(|p| s.starts_with(p)))
                .collect();
            let outs = page_messages(cfg, &conn, &skus, &channels).await?;
            match publisher.send_all(&outs, &stop_rx).await {
                Err(PublishError::Shutdown) => return Err(interrupted(&publisher, &bar)),
                r => {
                    r?;
                }
            }
            advance(&mut cp, &node, next, skus.len(), outs.len());
            cp.save(&args.checkpoint)?;
            bar.set_position((progress(&cp) * 1000.0) as u64);
            bar.set_message(format!("{} skus, {} messages, {:.0} skus/s", cp.done.skus, cp.done.messages, cp.done.skus as f64 / started.elapsed().as_secs_f64().max(0.001)));
        }
    }
    stopper.abort();
    publisher.flush(Duration::from_secs(30));
    bar.finish_and_clear();
    let _ = std::fs::remove_file(&args.checkpoint);
    Ok(cp.done)
}

fn advance(cp: &mut Checkpoint, node: &str, next: u64, skus: usize, messages: usize) {
    cp.cursors.insert(node.to_string(), (next != 0).then_some(next));
    cp.done.skus += skus as u64;
    cp.done.messages += messages as u64;
}

/// How far the whole walk is, 0..=1: SCAN's cursor counts buckets in
/// reverse-bit order, so its bits reversed grow from 0 to 2^64.
fn progress(cp: &Checkpoint) -> f64 {
    let per_node: f64 = cp.cursors.values().map(|c| c.map(|c| c.reverse_bits() as f64 / 2f64.powi(64)).unwrap_or(1.0)).sum();
    per_node / cp.cursors.len().max(1) as f64
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {percent:>3}%  {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar
}

/// The availability messages of one page of skus, read 64 at a time on the
/// multiplexed connection.
async fn page_messages(cfg: &Config, conn: &Conn, skus: &[String], channels: &BTreeMap<String, Vec<String>>) -> Result<Vec<Out>, StoreError> {
    let states: Vec<(String, Vec<String>)> = stream::iter(skus)
        .map(|sku| async move {
            let fields: Vec<String> = redis::cmd("HGETALL").arg(SkuKeys::new(sku).inv).query_async(&mut conn.clone()).await?;
            Ok::<_, StoreError>((sku.clone(), fields))
        })
        .buffered(64)
        .try_collect()
        .await?;
    let mut outs = Vec::new();
    for (sku, fields) in states {
        let state = reply::sku_state(&fields).map_err(|e| StoreError::Reply(format!("sku {sku:?}: {e}")))?;
        let now = crate::domain::outcome::current(&sku, &state, channels.iter().map(|(n, l)| (n.as_str(), l.as_slice())));
        outs.extend(now.iter().map(|u| crate::worker::availability_out(cfg, u, REPUBLISH_CAUSE)));
    }
    Ok(outs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(cursors: &[(&str, Option<u64>)]) -> Checkpoint {
        Checkpoint {
            redis_url: "redis://r".into(),
            topic: "t".into(),
            channel: None,
            sku_prefix: Some("A".into()),
            cursors: cursors.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
            done: Summary::default(),
        }
    }

    #[test]
    fn progress_follows_reversed_cursor_bits() {
        assert_eq!(progress(&cp(&[("a", Some(0))])), 0.0);
        assert_eq!(progress(&cp(&[("a", None)])), 1.0);
        // After half the buckets of any power-of-two table the cursor's top reversed bit is set: cursor 1.
        assert_eq!(progress(&cp(&[("a", Some(1)), ("b", None)])), 0.75);
    }

    #[test]
    fn resumes_only_the_same_run() {
        let a = cp(&[("n1", Some(5)), ("n2", None)]);
        assert!(a.same_run(&cp(&[("n1", Some(0)), ("n2", Some(0))])));
        assert!(!a.same_run(&cp(&[("n1", Some(0))])), "other masters");
        let mut other = cp(&[("n1", Some(0)), ("n2", Some(0))]);
        other.sku_prefix = None;
        assert!(!a.same_run(&other));
    }

    #[test]
    fn checkpoint_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cp.json");
        assert_eq!(Checkpoint::load(&p).unwrap(), None);
        let mut c = cp(&[("n1", Some(7))]);
        c.done.messages = 3;
        c.save(&p).unwrap();
        assert_eq!(Checkpoint::load(&p).unwrap(), Some(c));
        std::fs::write(&p, "{").unwrap();
        assert!(Checkpoint::load(&p).unwrap_err().to_string().contains("--restart"));
    }
}
