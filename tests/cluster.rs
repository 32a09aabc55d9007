//! Faults Kafka really has, on a 3-node Apache Kafka cluster (replication
//! factor 3, `min.insync.replicas` 2): the leader of a busy partition
//! killed under load, a broker frozen past its session, and a worker
//! killed and restarted at once (the group rebalances by itself once the
//! dead member's session ends). Each streams orders from a batching
//! producer and checks the final state against an uninterrupted run.
//! The tests take turns: each starts its own cluster, and three JVMs
//! beside a worker fill two cores.

mod support;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use reservoir::config::Config;
use reservoir::local::Kafka;
use support::kafka::{cluster, config_replicated, producer, Reader};
use support::orders::{results_at_least, Workload, T};
use support::worker::Process;
use support::RedisServer;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Broker heartbeats to the controller lapse after this
/// (`broker.session.timeout.ms`, Kafka's default).
const BROKER_SESSION: Duration = Duration::from_secs(9);

struct Setup {
    kafka: Kafka,
    _dir: tempfile::TempDir,
    redis: RedisServer,
    cfg: Config,
}

async fn setup() -> Setup {
    let (kafka, dir) = tokio::task::block_in_place(cluster);
    let redis = RedisServer::start();
    let cfg = config_replicated(&kafka.bootstrap, &redis.url, 3, 3).await;
    Setup { kafka, _dir: dir, redis, cfg }
}

fn leader(kafka: &Kafka, topic: &str) -> usize {
    tokio::task::block_in_place(|| kafka.leader_of(topic, 0)).expect("metadata").expect("partition 0 has a leader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_of_a_busy_partition_killed_under_load_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = setup().await;
    let w = Workload::new(3000);
    let p = producer(&s.kafka.bootstrap);
    let _worker = Process::start(&s.cfg);
    w.seed(&p, &s.cfg).await;
    let streaming = w.stream(&p, &s.cfg);
    let fault = async {
        results_at_least(&s.cfg, 500).await;
        let i = leader(&s.kafka, &s.cfg.topics.orders);
        eprintln!("killing node {} (leader of {}/0)", s.kafka.nodes[i].id, s.cfg.topics.orders);
        s.kafka.kill9(i);
        results_at_least(&s.cfg, 1500).await;
        tokio::task::block_in_place(|| s.kafka.restart(i)).expect("the node restarts");
    };
    tokio::join!(streaming, fault);
    w.verify(&s.cfg).await;
    drop(s.redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_frozen_past_its_session_then_woken_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup().await;
    let w = Workload::new(3000);
    let p = producer(&s.kafka.bootstrap);
    let _worker = Process::start(&s.cfg);
    w.seed(&p, &s.cfg).await;
    let streaming = w.stream(&p, &s.cfg);
    let fault = async {
        results_at_least(&s.cfg, 500).await;
        let i = leader(&s.kafka, &s.cfg.topics.orders);
        eprintln!("freezing node {} (leader of {}/0)", s.kafka.nodes[i].id, s.cfg.topics.orders);
        s.kafka.freeze(i, true);
        tokio::time::sleep(BROKER_SESSION + Duration::from_secs(6)).await;
        let moved = leader(&s.kafka, &s.cfg.topics.orders);
        s.kafka.freeze(i, false);
        assert_ne!(moved, i, "the controller moved the partition's leadership away from the frozen node");
    };
    tokio::join!(streaming, fault);
    w.verify(&s.cfg).await;
}

/// kill -9 and a new worker at once: the group gives the dead member's
/// partitions to the new one when the dead one's session (10 s) ends.
/// The idle time is measured from the results' timestamps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_and_restarted_at_once_resumes_within_its_session() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup().await;
    let w = Workload::new(4000);
    let p = producer(&s.kafka.bootstrap);
    let mut first = Process::start(&s.cfg);
    w.seed(&p, &s.cfg).await;
    let streaming = w.stream(&p, &s.cfg);
    let fault = async {
        results_at_least(&s.cfg, 500).await;
        first.kill9();
        let killed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let started = Instant::now();
        (Process::start(&s.cfg), killed_at, started)
    };
    let (_, (_second, killed_at, started)) = tokio::join!(streaming, fault);
    w.verify(&s.cfg).await;
    let mut r = Reader::new(&s.kafka.bootstrap, &s.cfg.topics.reservations);
    let seen = r.until(T, "every result", |seen| seen.len() >= w.orders.len()).await;
    let resumed = seen.iter().filter_map(|m| m.timestamp).filter(|t| *t > killed_at).min().expect("results after the kill");
    let idle = Duration::from_millis((resumed - killed_at) as u64);
    eprintln!("partitions idle for {idle:?} after kill -9 and an immediate restart (session 10 s; verified after {:?})", started.elapsed());
    assert!(idle < Duration::from_secs(30), "the group took {idle:?} to give the partitions to the new worker");
}
