//! The worker under faults: kill -9, SIGTERM, Redis and broker restarts,
//! two workers sharing a group. Each test streams a deterministic workload
//! (orders, some canceled) and checks the final state against what an
//! uninterrupted run gives (`support::orders`).

mod support;

use std::time::{Duration, Instant};

use support::kafka::{config, producer};
use support::orders::{results_at_least, Workload};
use support::stack::Stack;
use support::worker::{InProcess, Process};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_loses_and_doubles_nothing() {
    let stack = Stack::start().await;
    let cfg = config(&stack.bootstrap, &stack.redis_url, 3).await;
    let w = Workload::new(3000);
    let p = producer(&stack.bootstrap);
    let mut worker = Process::start(&cfg);
    w.seed(&p, &cfg).await;
    let streaming = w.stream(&p, &cfg);
    let killing = async {
        results_at_least(&cfg, 300).await;
        worker.kill9();
    };
    tokio::join!(streaming, killing);
    // Restarted at once: the dead member still owns its partitions until
    // its session (10 s) expires, then the group rebalances by itself.
    let _restarted = Process::start(&cfg);
    w.verify(&cfg).await;
    stack.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_exits_0_and_loses_nothing() {
    let stack = Stack::start().await;
    let cfg = config(&stack.bootstrap, &stack.redis_url, 3).await;
    let w = Workload::new(2000);
    let p = producer(&stack.bootstrap);
    let mut worker = Process::start(&cfg);
    w.seed(&p, &cfg).await;
    let streaming = w.stream(&p, &cfg);
    let terminating = async {
        results_at_least(&cfg, 200).await;
        let status = worker.term(Duration::from_secs(30));
        assert!(status.success(), "exit status after SIGTERM: {status:?}");
    };
    tokio::join!(streaming, terminating);
    let _restarted = Process::start(&cfg);
    w.verify(&cfg).await;
    stack.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_for_ten_seconds_is_waited_out() {
    let mut stack = Stack::start_with(true).await;
    let cfg = config(&stack.bootstrap, &stack.redis_url, 3).await;
    let w = Workload::new(1500);
    let p = producer(&stack.bootstrap);
    let worker = InProcess::start(cfg.clone());
    w.seed(&p, &cfg).await;
    let redis = stack.redis.as_mut().expect("a local redis-server to stop");
    let streaming = w.stream(&p, &cfg);
    let outage = async {
        results_at_least(&cfg, 100).await;
        redis.stop();
        tokio::time::sleep(Duration::from_secs(10)).await;
        redis.start_again();
    };
    tokio::join!(streaming, outage);
    w.verify(&cfg).await;
    worker.stop().await;
    stack.audit().await;
}

/// Redis refusing writes (maxmemory reached, noeviction) is an outage to
/// wait out, not bad input: nothing is dead-lettered and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_out_of_memory_for_ten_seconds_is_waited_out() {
    let stack = Stack::start_with(true).await;
    let cfg = config(&stack.bootstrap, &stack.redis_url, 3).await;
    let w = Workload::new(1500);
    let p = producer(&stack.bootstrap);
    let worker = InProcess::start(cfg.clone());
    w.seed(&p, &cfg).await;
    let mut conn = redis::Client::open(cfg.redis.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let streaming = w.stream(&p, &cfg);
    let outage = async {
        results_at_least(&cfg, 100).await;
        let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("noeviction").query_async(&mut conn).await.unwrap();
        let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("1").query_async(&mut conn).await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("0").query_async(&mut conn).await.unwrap();
    };
    tokio::join!(streaming, outage);
    w.verify(&cfg).await;
    worker.stop().await;
    let dead = support::kafka::Reader::new(&cfg.kafka_bootstrap, &cfg.topics.dead_letter).drain(Duration::from_secs(3)).await.to_vec();
    let codes: Vec<String> = dead.iter().map(|r| r.headers.get("dlq.code").cloned().unwrap_or_default()).collect();
    assert!(dead.is_empty(), "dead letters while Redis refused writes: {codes:?}");
    let mut e = support::engine(&cfg.redis.url).await.0.conn();
    let report = reservoir::ops::audit::audit(&mut e, None, 100).await.unwrap();
    assert_eq!(report.violations(), 0, "audit: {:#?}", report.findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_is_waited_out() {
    let mut stack = Stack::start_with(true).await;
    let cfg = config(&stack.bootstrap, &stack.redis_url, 3).await;
    let w = Workload::new(1000);
    let p = producer(&stack.bootstrap);
    let worker = InProcess::start(cfg.clone());
    w.seed(&p, &cfg).await;
    w.stream(&p, &cfg).await;
    results_at_least(&cfg, 50).await;
    let broker = stack.broker.as_mut().unwrap();
    broker.kill();
    tokio::time::sleep(Duration::from_secs(10)).await;
    tokio::task::block_in_place(|| broker.restart());
    let started = Instant::now();
    w.verify(&cfg).await;
    eprintln!("caught up {:?} after the broker came back", started.elapsed());
    worker.stop().await;
    stack.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_split_the_partitions_and_one_takes_over() {
    let stack = Stack::start().await;
    let cfg = config(&stack.bootstrap, &stack.redis_url, 4).await;
    let w = Workload::new(2000);
    let p = producer(&stack.bootstrap);
    let a = InProcess::start(cfg.clone());
    let b = InProcess::start(cfg.clone());
    w.seed(&p, &cfg).await;
    let streaming = w.stream(&p, &cfg);
    let leaving = async {
        results_at_least(&cfg, 300).await;
        b.stop().await;
    };
    tokio::join!(streaming, leaving);
    w.verify(&cfg).await;
    a.stop().await;
    stack.audit().await;
}

/// Thousands of orders from an ordinary batching producer, so the worker
/// resumes inside record batches: SIGTERM mid-stream, restarted at once,
/// then kill -9 mid-stream, restarted at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batching_stream_survives_sigterm_and_kill_9_restarted_at_once() {
    let stack = Stack::start().await;
    let cfg = config(&stack.bootstrap, &stack.redis_url, 3).await;
    let w = Workload::new(5000);
    let p = producer(&stack.bootstrap);
    let mut first = Process::start(&cfg);
    w.seed(&p, &cfg).await;
    let streaming = w.stream(&p, &cfg);
    let faults = async {
        results_at_least(&cfg, 500).await;
        let status = first.term(Duration::from_secs(30));
        assert!(status.success(), "exit status after SIGTERM: {status:?}");
        let mut second = Process::start(&cfg);
        results_at_least(&cfg, 2500).await;
        second.kill9();
        Process::start(&cfg)
    };
    let (_, _third) = tokio::join!(streaming, faults);
    w.verify(&cfg).await;
    stack.audit().await;
}

/// An order and a shipment of 20,000 lines each: answered at once with a
/// dead letter (`invalid_data`, a short reason), and the events behind them
/// on the same partitions are applied. Before, the order's 1 MB result and
/// the shipment's 775 KB refusal header were refused by the producer and
/// retried forever, so the partition stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_and_shipments_of_20000_lines_are_answered_and_the_partition_moves() {
    let stack = Stack::start().await;
    let cfg = config(&stack.bootstrap, &stack.redis_url, 1).await;
    let w = Workload::new(300);
    let p = producer(&stack.bootstrap);
    let worker = InProcess::start(cfg.clone());
    w.seed(&p, &cfg).await;
    // Short ids keep the inputs under Kafka's 1 MB; the outputs were larger.
    let lines: Vec<serde_json::Value> = (0..20_000).map(|i| serde_json::json!({"line_id": i.to_string(), "sku": "x", "quantity": 1})).collect();
    let big = format!("big-{}", w.ch);
    let order = support::worker::event(&format!("place-{big}"), "order.placed", serde_json::json!({"order_id": big, "channel": w.ch, "lines": lines}));
    support::kafka::send(&p, &cfg.topics.orders, &big, &order).await;
    let ship: Vec<serde_json::Value> = (0..20_000).map(|i| serde_json::json!({"line_id": i.to_string(), "sku": "n", "quantity": 1})).collect();
    let shipment = support::worker::event(&format!("ship-{big}"), "shipment.created", serde_json::json!({"shipment_id": big, "order_id": big, "location": "l1", "lines": ship}));
    support::kafka::send(&p, &cfg.topics.shipments, &big, &shipment).await;
    w.stream(&p, &cfg).await;
    w.verify(&cfg).await;
    let mut dead = support::kafka::Reader::new(&cfg.kafka_bootstrap, &cfg.topics.dead_letter);
    let seen = dead.until(Duration::from_secs(30), "both dead letters", |s| s.len() >= 2).await.to_vec();
    for d in &seen {
        assert_eq!(d.headers.get("dlq.code").map(String::as_str), Some("invalid_data"), "{:?}", d.headers);
        assert!(d.headers.get("dlq.message").is_some_and(|m| m.len() < 5000 && m.contains("at most")), "{:?}", d.headers.get("dlq.message"));
    }
    worker.stop().await;
    stack.audit().await;
}
