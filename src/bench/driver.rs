//! The benchmark's I/O: the stack, the generator's producer, the results
//! collector and the phases.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::Retryable;
use futures::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::probe::{ProcStats, RedisCounters};
use crate::kafka::GroupProgress;
use super::report::{Cpu, Latency, Params, Report, WaitRun, WaitRuns};
use super::workload::{Catalog, ConfirmedOrder, GenEvent, Workload};
use super::{BenchArgs, BenchError};
use crate::config::{Config, Topics};
use crate::local::{self, Kafka, Proc};
use crate::qty::Qty;
use crate::store::{Clock, Engine, EngineConfig};

/// How far the generator may run ahead of the worker at full speed.
const MAX_BACKLOG: i64 = 50_000;

/// Counts the generator's messages the broker did not take.
#[derive(Default)]
struct Deliveries(AtomicU64);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = r {
            if self.0.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(error = %e, "the broker refused a generated event");
            }
        }
    }
}

/// What the collector shares with the phases.
#[derive(Default)]
struct Shared {
    /// Production instant of each answered event not yet answered.
    sent: Mutex<HashMap<u64, Instant>>,
    /// Latencies of events with seq in [from, to).
    window: Mutex<(u64, u64, Option<Histogram<u64>>)>,
    confirmed: Mutex<Vec<ConfirmedOrder>>,
}

impl Shared {
    fn open_window(&self, from: u64) {
        *self.window.lock().unwrap() = (from, u64::MAX, Some(Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds")));
    }
    fn close_window(&self, to: u64) {
        self.window.lock().unwrap().1 = to;
    }
    fn take_window(&self) -> Histogram<u64> {
        let mut w = self.window.lock().unwrap();
        let h = w.2.take().unwrap_or_else(|| Histogram::new(3).expect("histogram"));
        *w = (u64::MAX, u64::MAX, None);
        h
    }
    fn waiting_in(&self, from: u64, to: u64) -> usize {
        self.sent.lock().unwrap().keys().filter(|s| (from..to).contains(*s)).count()
    }
}

/// Reads results and availability: the first output caused by an answered
/// event gives its latency; confirmations feed the workload.
async fn collect(consumer: StreamConsumer, prefix: String, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let mut stream = consumer.stream();
    while !stop.load(Ordering::Relaxed) {
        let m = match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => {
                tracing::warn!(error = %e, "bench collector");
                continue;
            }
            Ok(None) => return,
            Err(_) => continue,
        };
        let now = Instant::now();
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(m.payload().unwrap_or_default()) else { continue };
        let data = &v["data"];
        if v["type"] == "inventory.reservation.confirmed" {
            if let Some(o) = ConfirmedOrder::from_data(data) {
                shared.confirmed.lock().unwrap().push(o);
            }
        }
        let Some(seq) = data["caused_by"].as_str().and_then(|c| Workload::seq_of(&prefix, c)) else { continue };
        let Some(t) = shared.sent.lock().unwrap().remove(&seq) else { continue };
        let mut w = shared.window.lock().unwrap();
        if (w.0..w.1).contains(&seq) {
            if let Some(h) = w.2.as_mut() {
                let _ = h.record((now - t).as_micros().max(1) as u64);
            }
        }
    }
}

/// A point in time of everything measured.
struct Mark {
    at: Instant,
    committed: i64,
    redis: RedisCounters,
    worker: ProcStats,
    redis_proc: Option<ProcStats>,
    broker: Option<ProcStats>,
    me: ProcStats,
}

struct PhaseResult {
    events_per_s: f64,
    sku_ops_per_event: f64,
    latency: Latency,
    cpu: Cpu,
    commands_per_event: f64,
    round_trips_per_event: f64,
    calls_per_event: std::collections::BTreeMap<String, f64>,
}

struct Bench {
    args: BenchArgs,
    cfg: Config,
    prefix: String,
    producer: ThreadedProducer<Deliveries>,
    shared: Arc<Shared>,
    committed: Arc<GroupProgress>,
    committed_now: Arc<AtomicI64>,
    info: redis::aio::MultiplexedConnection,
    worker: Proc,
    redis_proc: Option<Proc>,
    broker_proc: Option<Kafka>,
    bar: ProgressBar,
}

impl Bench {
    async fn send(&self, e: &GenEvent) {
        if e.answered {
            self.shared.sent.lock().unwrap().insert(e.seq, Instant::now());
        }
        let mut rec = BaseRecord::to(self.cfg.topics.input(e.topic)).key(e.key.as_str()).payload(e.payload.as_slice());
        loop {
            match self.producer.send(rec) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => {
                    tracing::warn!(error = %e, "cannot queue a generated event");
                    self.producer.context().0.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    fn check_worker(&mut self) -> Result<(), BenchError> {
        if let Ok(Some(status)) = self.worker.child.try_wait() {
            return Err(BenchError::WorkerDied { status: status.to_string(), log: self.worker.log.display().to_string() });
        }
        Ok(())
    }

    async fn mark(&mut self) -> Result<Mark, BenchError> {
        let c = self.committed.clone();
        let committed = tokio::task::spawn_blocking(move || c.committed_sum()).await.expect("committed offsets task")?;
        Ok(Mark {
            at: Instant::now(),
            committed,
            redis: RedisCounters::read(&mut self.info).await?,
            worker: ProcStats::read(self.worker.pid()),
            redis_proc: self.redis_proc.as_ref().map(|p| ProcStats::read(p.pid())),
            broker: self.broker_proc.as_ref().and_then(|k| k.nodes[0].pid()).map(ProcStats::read),
            me: ProcStats::read(std::process::id()),
        })
    }

    /// Waits until the group committed everything produced.
    async fn drain(&mut self, what: &str, produced: u64, timeout: Duration) -> Result<(), BenchError> {
        let start = Instant::now();
        loop {
            let c = self.committed_now.load(Ordering::Relaxed);
            if c >= produced as i64 {
                return Ok(());
            }
            self.check_worker()?;
            if start.elapsed() > timeout {
                return Err(BenchError::Stalled {
                    what: what.into(),
                    secs: timeout.as_secs(),
                    committed: c,
                    produced,
                    log: self.worker.log.display().to_string(),
                });
            }
            self.bar.set_message(format!("{what}: {c} of {produced} events committed"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The full-speed run, then the paced one; `label` follows their names.
    async fn full_and_paced(&mut self, wl: &mut Workload, label: &str) -> Result<(PhaseResult, PhaseResult), BenchError> {
        let full = self.phase(wl, &format!("full speed{label}"), None).await?;
        let rate = self.args.rate;
        let paced = self.phase(wl, &format!("paced {rate}/s{label}"), Some(rate)).await?;
        Ok((full, paced))
    }

    /// Runs the mix for warm-up + window, at full speed (`rate` None) or paced.
    async fn phase(&mut self, wl: &mut Workload, name: &str, rate: Option<u64>) -> Result<PhaseResult, BenchError> {
        let (warm, end) = (self.args.warmup(), self.args.warmup() + self.args.window());
        let start = Instant::now();
        let mut m0: Option<Mark> = None;
        let (mut sent, mut ops, mut events, mut from) = (0u64, 0u64, 0u64, 0u64);
        let mut last_check = Instant::now();
        loop {
            let el = start.elapsed();
            if el >= end {
                break;
            }
            if m0.is_none() && el >= warm {
                from = wl.produced();
                self.shared.open_window(from);
                m0 = Some(self.mark().await?);
            }
            for o in std::mem::take(&mut *self.shared.confirmed.lock().unwrap()) {
                wl.confirmed(o);
            }
            let budget = match rate {
                Some(r) => ((r as f64 * el.as_secs_f64()) as u64).saturating_sub(sent),
                None => (MAX_BACKLOG - (wl.produced() as i64 - self.committed_now.load(Ordering::Relaxed))).max(0) as u64,
            };
            if last_check.elapsed() > Duration::from_millis(200) {
                self.check_worker()?;
                last_check = Instant::now();
                let c = self.committed_now.load(Ordering::Relaxed);
                self.bar.set_message(format!("{name}: {} produced, {c} committed, {:.0} s left", wl.produced(), (end.saturating_sub(el)).as_secs_f64()));
            }
            if budget == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            for _ in 0..budget.min(2000) {
                let e = wl.next_event();
                self.send(&e).await;
                sent += 1;
                if m0.is_some() {
                    ops += e.sku_ops as u64;
                    events += 1;
                }
            }
            tokio::task::yield_now().await;
        }
        let m0 = match m0 {
            Some(m) => m,
            None => return Err(BenchError::Args("the warm-up must be shorter than the run".into())),
        };
        let to = wl.produced();
        self.shared.close_window(to);
        let m1 = self.mark().await?;
        self.drain(&format!("{name}: catching up"), wl.produced(), Duration::from_secs(300)).await?;
        // Results of the window's last events may still be on their way.
        let start = Instant::now();
        while self.shared.waiting_in(from, to) > 0 && start.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let hist = self.shared.take_window();
        let secs = (m1.at - m0.at).as_secs_f64();
        let done = (m1.committed - m0.committed).max(1) as f64;
        let cpu = |a: Option<ProcStats>, b: Option<ProcStats>| Some((b?.cpu_secs - a?.cpu_secs) / secs);
        Ok(PhaseResult {
            events_per_s: (m1.committed - m0.committed) as f64 / secs,
            sku_ops_per_event: ops as f64 / events.max(1) as f64,
            latency: Latency::from(&hist),
            cpu: Cpu {
                worker: (m1.worker.cpu_secs - m0.worker.cpu_secs) / secs,
                redis: cpu(m0.redis_proc, m1.redis_proc),
                broker: cpu(m0.broker, m1.broker),
                generator: (m1.me.cpu_secs - m0.me.cpu_secs) / secs,
            },
            commands_per_event: (m1.redis.commands - m0.redis.commands) as f64 / done,
            round_trips_per_event: (m1.redis.reads - m0.redis.reads) as f64 / done,
            calls_per_event: m0.redis.calls_between(&m1.redis, done),
        })
    }
}

impl WaitRun {
    fn of(full: &PhaseResult, paced: &PhaseResult) -> WaitRun {
        WaitRun {
            events_per_s: full.events_per_s,
            sku_ops_per_event: full.sku_ops_per_event,
            saturated: full.latency,
            paced: paced.latency,
            paced_events_per_s: paced.events_per_s,
            cpu: full.cpu.clone(),
            redis_commands_per_event: full.commands_per_event,
            redis_round_trips_per_event: full.round_trips_per_event,
            redis_calls_per_event: full.calls_per_event.clone(),
        }
    }
}

fn spinner() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}").expect("template"));
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Deletes this run's keys matching `pattern` (SCAN, not KEYS); returns how many.
async fn unlink_matching(conn: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Result<u64, BenchError> {
    let (mut cursor, mut n) = (0u64, 0u64);
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(2000).query_async(conn).await?;
        if !keys.is_empty() {
            n += keys.len() as u64;
            redis::cmd("UNLINK").arg(&keys).query_async::<()>(conn).await?;
        }
        if next == 0 {
            return Ok(n);
        }
        cursor = next;
    }
}

/// Redis bytes per sku-location: with the idempotency records of the
/// loading events, and without them (the state that stays after the
/// records' retention).
#[derive(Clone, Copy, Debug)]
struct Memory {
    with_records: f64,
    state: f64,
}

async fn memory_delta(info: &mut redis::aio::MultiplexedConnection, before: u64, per: u64, records: &str) -> Result<Memory, BenchError> {
    let with = RedisCounters::read(info).await?.used_memory;
    unlink_matching(info, records).await?;
    let state = RedisCounters::read(info).await?.used_memory;
    let per = per.max(1) as f64;
    Ok(Memory { with_records: with.saturating_sub(before) as f64 / per, state: state.saturating_sub(before) as f64 / per })
}

/// Loads `skus` × `locations` levels straight through the engine (the same
/// scripts and keys as `inventory.level.set` events) and measures memory.
async fn memory_1m(engine: &Engine, info: &mut redis::aio::MultiplexedConnection, skus: u64, locations: u32, bar: &ProgressBar) -> Result<Memory, BenchError> {
    let before = RedisCounters::read(info).await?.used_memory;
    let total = skus * locations as u64;
    let done = AtomicU64::new(0);
    let mut calls = futures::stream::iter(0..total)
        .map(|i| {
            let (s, l) = (i / locations as u64, (i % locations as u64) as u32);
            let (sku, loc) = (format!("MEM-{s:07}"), Catalog::location(l));
            let done = &done;
            async move {
                let r = engine.set_level(&format!("mem-{i}"), &sku, &loc, Qty::units(100), true).await;
                let n = done.fetch_add(1, Ordering::Relaxed);
                if n % 10_000 == 0 {
                    bar.set_message(format!("memory: {n} of {total} sku-locations loaded through the engine"));
                }
                r
            }
        })
        .buffer_unordered(256);
    while let Some(r) = calls.next().await {
        r?;
    }
    bar.set_message("memory: removing the loading events' idempotency records");
    memory_delta(info, before, total, "rv:{MEM-*}:e:mem-*").await
}

/// Waits until the master reports `n` replicas online (bounded).
async fn replicas_in_sync(info: &mut redis::aio::MultiplexedConnection, n: usize, within: Duration, dir: &std::path::Path) -> Result<(), BenchError> {
    let start = Instant::now();
    loop {
        let r: String = redis::cmd("INFO").arg("replication").query_async(info).await?;
        if r.matches(",state=online,").count() >= n {
            return Ok(());
        }
        if start.elapsed() > within {
            return Err(BenchError::ReplicasNotInSync { secs: within.as_secs(), dir: dir.display().to_string() });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(super) async fn run(args: BenchArgs) -> Result<Report, BenchError> {
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let dir = args.dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("reservoir-bench-{run_id}")));
    std::fs::create_dir_all(&dir)?;
    let bar = spinner();
    bar.set_message("starting the stack");
    let mut replicas = Vec::new();
    let (redis_proc, redis_url) = match &args.redis {
        Some(u) => (None, u.clone()),
        None => {
            // Each run's own data folder: an old AOF would be loaded first.
            let data = dir.join(format!("redis-{run_id}"));
            std::fs::create_dir_all(&data)?;
            let port = local::free_port()?;
            let master = local::redis_at(&data, port, &args.appendfsync)?;
            for i in 0..args.wait_replicas {
                let data = dir.join(format!("redis-{run_id}-replica-{i}"));
                std::fs::create_dir_all(&data)?;
                replicas.push(local::redis_replica_at(&data, local::free_port()?, port, &args.appendfsync)?.0);
            }
            (Some(master.0), master.1)
        }
    };
    let (broker_proc, kafka) = match &args.kafka {
        Some(k) => (None, k.clone()),
        None => {
            let k = Kafka::single(&dir.join("kafka"))?;
            let bootstrap = k.bootstrap.clone();
            (Some(k), bootstrap)
        }
    };
    bar.println(format!("bench: Kafka {kafka}, Redis {redis_url}; logs in {}", dir.display()));

    let mut cfg = Config::new(&kafka, &redis_url, &format!("reservoir-bench-{run_id}"));
    cfg.topics = Topics::suffixed(&format!(".bench-{run_id}"));
    cfg.source = "reservoir-bench".into();
    if let Some(b) = args.batch_size {
        cfg.batch_size = b;
    }
    crate::kafka::create_topics(&cfg, args.partitions, 1).await?;
    // Finer commits make the committed-events window exact to 0.2 s.
    let mut worker_cfg = cfg.clone();
    worker_cfg.kafka_options.insert("auto.commit.interval.ms".into(), "200".into());
    for kv in &args.worker_kafka_options {
        let (k, v) = kv.split_once('=').ok_or_else(|| BenchError::Args(format!("--worker-kafka-option takes KEY=VALUE, got {kv:?}")))?;
        worker_cfg.kafka_options.insert(k.trim().into(), v.trim().into());
    }
    // A Redis that is still loading its data answers BUSY LOADING: wait (bounded).
    let engine = (|| Engine::connect(&redis_url, EngineConfig::default(), Clock::System))
        .retry(backon::ExponentialBuilder::default().with_max_delay(Duration::from_secs(2)).with_total_delay(Some(Duration::from_secs(60))))
        .when(|e: &crate::store::StoreError| e.is_retryable())
        .await?;
    let mut info = redis::Client::open(redis_url.split(',').next().unwrap_or(&redis_url))?.get_multiplexed_async_connection().await?;
    if !replicas.is_empty() {
        bar.set_message(format!("waiting for {} Redis replicas to be in sync", replicas.len()));
        replicas_in_sync(&mut info, replicas.len(), Duration::from_secs(60), &dir).await?;
    }
    let mem0 = RedisCounters::read(&mut info).await?.used_memory;

    let worker = local::worker(&worker_cfg, &dir, "worker")?;
    let shared = Arc::new(Shared::default());
    shared.take_window();
    let stop = Arc::new(AtomicBool::new(false));
    let prefix = format!("b{run_id}");
    let collector: StreamConsumer = crate::kafka::client_config(
        &cfg,
        crate::kafka::Role::Consumer,
        &[("group.id", &format!("reservoir-bench-collector-{run_id}")), ("auto.offset.reset", "earliest"), ("enable.auto.commit", "false"), ("fetch.wait.max.ms", "10")],
    )
    .create()?;
    collector.subscribe(&[&cfg.topics.reservations, &cfg.topics.availability])?;
    let collecting = tokio::spawn(collect(collector, prefix.clone(), shared.clone(), stop.clone()));

    let committed = Arc::new(GroupProgress::new(&cfg)?);
    let committed_now = Arc::new(AtomicI64::new(0));
    let sampler = {
        let (c, now, stop) = (committed.clone(), committed_now.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = c.committed_sum() {
                    now.store(n, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let producer: ThreadedProducer<Deliveries> = crate::kafka::client_config(&cfg, crate::kafka::Role::Producer, &[("linger.ms", "5"), ("queue.buffering.max.messages", "500000"), ("enable.idempotence", "true")])
        .create_with_context(Deliveries::default())?;
    let mut b = Bench { args: args.clone(), cfg, prefix, producer, shared, committed, committed_now, info, worker, redis_proc, broker_proc, bar };

    let catalog = Catalog { skus: args.skus, locations: args.locations, channels: args.channels };
    let mut wl = Workload::new(catalog.clone(), &b.prefix, args.seed, args.hot);
    let t = Instant::now();
    let events: Vec<GenEvent> = wl.catalog_events().collect();
    b.bar.set_message(format!("catalog: producing {} events", events.len()));
    for e in &events {
        b.send(e).await;
    }
    drop(events);
    b.drain("catalog: loading", wl.produced(), Duration::from_secs(1800)).await?;
    let catalog_eps = wl.produced() as f64 / t.elapsed().as_secs_f64();
    // Only the catalog's events exist yet: their records are this run's.
    let records = format!("rv:*:e:*:bench/generator:{}-*", b.prefix);
    b.bar.set_message("catalog: measuring Redis memory");
    let mem = memory_delta(&mut b.info, mem0, catalog.sku_locations(), &records).await?;

    let (full, paced) = b.full_and_paced(&mut wl, "").await?;
    let worker_peak = ProcStats::read(b.worker.pid());
    b.worker.terminate(Duration::from_secs(30));
    let wait = match args.wait_replicas {
        0 => None,
        n => {
            // The same stream on, from where it stopped, by a worker that
            // WAITs; then once more without, by a worker started the same
            // way: the first runs follow the catalog load, and a run's
            // place in the sequence moved its figures as much as WAIT did.
            let mut waiting = worker_cfg.clone();
            waiting.wait_replicas = n;
            b.worker = local::worker(&waiting, &dir, "worker-wait")?;
            let (wfull, wpaced) = b.full_and_paced(&mut wl, &format!(", WAIT {n}")).await?;
            b.worker.terminate(Duration::from_secs(30));
            b.worker = local::worker(&worker_cfg, &dir, "worker-again")?;
            let (afull, apaced) = b.full_and_paced(&mut wl, ", without WAIT again").await?;
            b.worker.terminate(Duration::from_secs(30));
            let sku_ops = |r: &PhaseResult| r.events_per_s * r.sku_ops_per_event;
            Some(WaitRuns {
                replicas: n,
                with: WaitRun::of(&wfull, &wpaced),
                without_again: WaitRun::of(&afull, &apaced),
                sku_ops_vs_without: sku_ops(&wfull) / ((sku_ops(&full) + sku_ops(&afull)) / 2.0).max(1e-9),
            })
        }
    };
    stop.store(true, Ordering::Relaxed);
    let _ = collecting.await;
    let _ = sampler.join();
    b.producer.flush(Duration::from_secs(10)).ok();

    b.bar.set_message("ceiling: reserve script, pipelined, 4 connections");
    let ceiling = super::ceiling::measure(&engine, &redis_url, Duration::from_secs(args.ceiling_secs.max(1)), 4, 64).await?;
    let mem_1m = if args.memory { Some(memory_1m(&engine, &mut b.info, 1_000_000, args.locations, &b.bar).await?) } else { None };
    b.bar.finish_and_clear();

    let sku_ops = full.events_per_s * full.sku_ops_per_event;
    Ok(Report {
        events_per_s: full.events_per_s,
        sku_ops_per_s: sku_ops,
        sku_ops_per_event: full.sku_ops_per_event,
        ceiling_ops_per_s: ceiling.ops_per_s,
        ceiling_connections: ceiling.connections,
        ceiling_pipeline: ceiling.pipeline,
        ratio: sku_ops / ceiling.ops_per_s.max(1.0),
        p50_ms: paced.latency.p50_ms,
        p99_ms: paced.latency.p99_ms,
        p999_ms: paced.latency.p999_ms,
        paced: paced.latency,
        paced_events_per_s: paced.events_per_s,
        saturated: full.latency,
        catalog_events_per_s: catalog_eps,
        worker_rss_mb: worker_peak.peak_rss_bytes as f64 / (1024.0 * 1024.0),
        cpu: full.cpu,
        paced_cpu: paced.cpu,
        redis_commands_per_event: full.commands_per_event,
        redis_round_trips_per_event: full.round_trips_per_event,
        redis_calls_per_event: full.calls_per_event.clone(),
        redis_bytes_per_sku_location: mem_1m.unwrap_or(mem).state,
        redis_bytes_per_sku_location_with_records: mem_1m.unwrap_or(mem).with_records,
        redis_bytes_measured_over: if mem_1m.is_some() { 1_000_000 * args.locations as u64 } else { catalog.sku_locations() },
        delivery_errors: b.producer.context().0.load(Ordering::Relaxed),
        wait,
        params: Params {
            skus: args.skus,
            locations: args.locations,
            channels: args.channels,
            partitions: args.partitions,
            warmup_s: args.warmup,
            duration_s: args.duration,
            rate: args.rate,
            hot: args.hot,
            seed: args.seed,
            batch_size: b.cfg.batch_size,
            kafka: b.cfg.kafka_bootstrap.clone(),
            redis: b.cfg.redis.to_string(),
            redis_replicas: replicas.len() as u32,
            broker: if args.kafka.is_some() { "given".into() } else { format!("Apache Kafka {}, local", local::kafka::KAFKA_VERSION) },
            appendfsync: if args.redis.is_some() { "given".into() } else { args.appendfsync.clone() },
        },
    })
}
