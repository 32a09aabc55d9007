//! The faults and the final checks' I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use super::stack::Stack;
use super::traffic::Ledger;
use super::recorder::Recorded;
use super::{checks, model, SoakError, SoakReport};
use crate::bench::workload::{Catalog, ConfirmedOrder};
use crate::config::Config;

/// The workers' session timeout (`session.timeout.ms` in kafka/mod.rs).
const SESSION: Duration = Duration::from_secs(10);

/// Longer than the session, so the group moves a frozen worker's
/// partitions away before it wakes up.
const FREEZE: Duration = Duration::from_secs(SESSION.as_secs() + 3);

/// How long an armed crash point may wait for a batch with outputs.
const CRASH_WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    #[value(name = "worker-kill")]
    KillWorker,
    #[value(name = "worker-crash")]
    CrashWorker,
    #[value(name = "worker-stop")]
    FreezeWorker,
    #[value(name = "redis-kill")]
    KillRedis,
    #[value(name = "script-flush")]
    ScriptFlush,
    #[value(name = "leader-kill")]
    KillLeader,
}

impl Fault {
    pub const ALL: [Fault; 6] = [Fault::KillWorker, Fault::CrashWorker, Fault::FreezeWorker, Fault::KillRedis, Fault::ScriptFlush, Fault::KillLeader];

    pub fn name(self) -> &'static str {
        match self {
            Fault::KillWorker => "worker kill -9",
            Fault::CrashWorker => "worker crash after effect",
            Fault::FreezeWorker => "worker SIGSTOP",
            Fault::KillRedis => "redis kill -9",
            Fault::ScriptFlush => "SCRIPT FLUSH",
            Fault::KillLeader => "leader kill -9",
        }
    }

    /// Injects the fault and heals it (restart, SIGCONT) before returning.
    pub async fn inject(self, stack: &mut Stack, cfg: &Config, worker: usize) -> Result<(), SoakError> {
        tracing::info!(fault = self.name(), worker, "injecting");
        match self {
            Fault::KillWorker => {
                // Restarted at once: the group expires the dead member
                // after its session and rebalances by itself.
                stack.kill_worker(worker);
                stack.start_worker(cfg, worker)?;
            }
            Fault::CrashWorker => {
                // SIGUSR1 arms the worker's crash point: it kills itself
                // once a batch's effects are applied and its outputs are
                // not yet published (the window a kill -9 hits by chance).
                if !tokio::task::block_in_place(|| stack.crash_worker(worker, CRASH_WAIT)) {
                    tracing::warn!(worker, "no batch reached the crash point within {CRASH_WAIT:?}; killed with kill -9 instead");
                }
                stack.start_worker(cfg, worker)?;
            }
            Fault::FreezeWorker => {
                stack.freeze_worker(worker, true);
                tokio::time::sleep(FREEZE).await;
                stack.freeze_worker(worker, false);
            }
            Fault::KillRedis => {
                stack.kill_redis();
                tokio::time::sleep(Duration::from_secs(1)).await;
                stack.start_redis()?;
            }
            Fault::ScriptFlush => {
                // Redis may still be loading its AOF after a kill just before.
                let flush = || async {
                    let mut c = crate::store::Conn::connect(&cfg.redis).await?;
                    redis::cmd("SCRIPT").arg("FLUSH").query_async::<()>(&mut c).await.map_err(crate::store::StoreError::from)
                };
                let backoff = ExponentialBuilder::default().with_max_delay(Duration::from_secs(2)).with_max_times(40);
                flush.retry(backoff).when(crate::store::StoreError::is_retryable).await?;
            }
            Fault::KillLeader => {
                // The orders topic's first partition: every order passes a
                // partition of it, and workers and producers both use it.
                let topic = cfg.topics.orders.clone();
                let killed = tokio::task::block_in_place(|| stack.kill_leader(&topic, 0))?;
                tracing::info!(node = ?killed.map(|i| stack.kafka.nodes[i].id), topic, "partition leader killed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Some(i) = killed {
                    tokio::task::block_in_place(|| stack.kafka.restart(i))?;
                }
            }
        }
        Ok(())
    }
}

/// Every check after the run; returns the violations.
pub async fn check_all(cfg: &Config, ledger: &Ledger, mut out: Recorded, skus: u64, report: &mut SoakReport) -> Result<Vec<String>, SoakError> {
    let mut v = Vec::new();
    let mut conn = crate::store::Conn::connect(&cfg.redis).await?;
    let audit = crate::ops::audit::audit(&mut conn, None, 1000).await?;
    // The oversell check is per sku over all locations (every channel sells
    // from all), below: reserved above on hand at one location alone is no
    // oversell (a shipment may take units another order holds there).
    v.extend(audit.findings.iter().filter(|f| f.is_violation()).map(|f| format!("audit: {}", f.message)));

    let channels = crate::store::read_channels(&mut conn).await?;
    let mut current = BTreeMap::new();
    let mut stock = model::Stock::new();
    for sku in (0..skus).map(Catalog::sku) {
        let fields: Vec<String> = redis::cmd("HGETALL").arg(crate::store::keys::SkuKeys::new(&sku).inv).query_async(&mut conn).await.map_err(crate::store::StoreError::from)?;
        let state = crate::store::reply::sku_state(&fields).map_err(crate::store::StoreError::Reply)?;
        for (loc, l) in &state.levels {
            stock.insert((sku.clone(), loc.clone()), (l.on_hand, l.reserved));
        }
        for u in crate::domain::outcome::current(&sku, &state, channels.iter().map(|(n, l)| (n.as_str(), l.as_slice()))) {
            let a = &u.availability;
            let avail = a.available.map(|q| serde_json::to_value(q).expect("quantities serialize")).unwrap_or(serde_json::Value::Null);
            current.insert(format!("{}/{sku}", u.channel), (a.status.as_str().to_string(), avail, u.version));
        }
    }
    v.extend(model::oversold(&stock));
    if let Some(unread) = &out.unread {
        // Checks against partly read topics would only report what is unread.
        v.push(format!("the output topics were not read to their end in time: {unread}"));
        return Ok(v);
    }

    v.extend(checks::results(ledger, &out.results));
    let f = checks::dead_letters(ledger, &out.dead_letters);
    v.extend(f.violations);
    report.dead_letters_repeated = f.again;
    report.shipped_first_refused = f.refused_ship_first.len() as u64;
    let refused = f.refused_ship_first;
    let f = checks::availability(&out.availability, &current);
    v.extend(f.violations);
    report.availability_out_of_order = f.out_of_order;
    report.stale_last_messages = f.stale_last;
    report.availability_fenced = f.fenced;
    let confirmed: Vec<ConfirmedOrder> = std::mem::take(&mut out.confirmed).into_values().collect();
    let locations = channels.values().flatten().cloned().collect();
    v.extend(model::outcomes(&ledger.facts, &confirmed, &locations));
    v.extend(model::unjustified_refusals(&ledger.ship_first, &refused, &stock));
    let differences = model::compare(&model::expected(&ledger.facts, &confirmed, &ledger.ship_first, &refused), &stock);
    report.model_differences = differences.len() as u64;
    v.extend(differences);
    Ok(v)
}
