//! The worker's HTTP port, scraped like Prometheus and probed like
//! Kubernetes: counters move by exactly what the traffic did, and /readyz
//! follows Redis going away and coming back.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use support::kafka::{config, producer, send, Reader};
use support::stack::Stack;
use support::worker::{event, Process};
use support::{free_port, uid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(60);

/// GET over a plain socket: (status, body), or None when nothing answers.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await.ok()?.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

async fn wait_status(addr: SocketAddr, path: &str, want: u16, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let got = get(addr, path).await;
        if let Some((s, body)) = &got {
            if *s == want {
                return body.clone();
            }
        }
        assert!(start.elapsed() < timeout, "{path} did not answer {want} within {timeout:?}; last answer {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the sample `name{...}` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|l| {
        let (head, value) = l.rsplit_once(' ')?;
        let (n, rest) = head.split_once('{').unwrap_or((head, ""));
        (n == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))).then(|| value.parse().ok())?
    })
}

async fn worker_with_port(stack: &Stack, partitions: i32) -> (reservoir::config::Config, Process, SocketAddr) {
    let mut cfg = config(&stack.bootstrap, &stack.redis_url, partitions).await;
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    cfg.metrics_addr = Some(addr);
    let p = Process::start(&cfg);
    (cfg, p, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_what_the_traffic_did() {
    let stack = Stack::start().await;
    let (cfg, _worker, addr) = worker_with_port(&stack, 1).await;
    wait_status(addr, "/readyz", 200, T).await;
    let t = cfg.topics.clone();
    let p = producer(&stack.bootstrap);
    let u = uid();
    let (ch, sku) = (format!("ch-{u}"), format!("S-{u}"));
    let mut results = Reader::new(&stack.bootstrap, &t.reservations);
    let mut dead = Reader::new(&stack.bootstrap, &t.dead_letter);
    let mut avail = Reader::new(&stack.bootstrap, &t.availability);

    send(&p, &t.stock, &ch, &event("m1", "inventory.channel.configured", json!({"channel": ch, "locations": ["L1"]}))).await;
    send(&p, &t.stock, &sku, &event("m2", "inventory.level.set", json!({"sku": sku, "location": "L1", "on_hand": 3}))).await;
    // Topics are consumed in parallel: stock first, then orders.
    let key = format!("{ch}/{sku}");
    avail.until(T, "available 3", |s| support::kafka::latest(s).get(&key).is_some_and(|v| v["available"] == json!(3))).await;
    let line = |q: i64| json!([{"line_id": "1", "sku": sku, "quantity": q}]);
    send(&p, &t.orders, "o1", &event("m3", "order.placed", json!({"order_id": format!("o1-{u}"), "channel": ch, "lines": line(1)}))).await;
    send(&p, &t.orders, "o2", &event("m4", "order.placed", json!({"order_id": format!("o2-{u}"), "channel": ch, "lines": line(5)}))).await;
    send(&p, &t.carts, "c1", &event("m5", "cart.line.held", json!({"cart_id": format!("c1-{u}"), "channel": ch, "sku": sku, "quantity": 1}))).await;
    send(&p, &t.orders, "o3", b"{not json").await;

    results.until(T, "three results", |s| s.len() >= 3).await;
    dead.until(T, "one dead letter", |s| !s.is_empty()).await;
    // Availability ends at 1 (3 on hand, o1 reserved 1, the hold 1). Changes
    // applied in one batch are coalesced, so count what was published.
    avail.until(T, "available 1", |s| support::kafka::latest(s).get(&key).is_some_and(|v| v["available"] == json!(1))).await;
    avail.drain(Duration::from_secs(1)).await;
    let published = avail.seen.len() as f64;
    type Sample<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);
    let expected: &[Sample] = &[
        ("reservoir_events_consumed_total", &[("topic", &t.stock)], 2.0),
        ("reservoir_events_consumed_total", &[("topic", &t.orders)], 3.0),
        ("reservoir_events_consumed_total", &[("topic", &t.carts)], 1.0),
        ("reservoir_events_applied_total", &[("topic", &t.orders), ("type", "order.placed")], 2.0),
        ("reservoir_events_applied_total", &[("topic", &t.stock), ("type", "inventory.level.set")], 1.0),
        ("reservoir_events_dead_lettered_total", &[("topic", &t.orders), ("code", "malformed_json")], 1.0),
        ("reservoir_reservations_total", &[("result", "confirmed")], 1.0),
        ("reservoir_reservations_total", &[("result", "rejected"), ("reason", "insufficient_stock")], 1.0),
        ("reservoir_holds_total", &[("result", "confirmed")], 1.0),
        ("reservoir_availability_published_total", &[], published),
    ];
    let start = Instant::now();
    let text = loop {
        let (_, text) = get(addr, "/metrics").await.expect("/metrics answers");
        if expected.iter().all(|(n, l, v)| sample(&text, n, l) == Some(*v)) {
            break text;
        }
        assert!(start.elapsed() < T, "counters did not reach {expected:?}:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(sample(&text, "reservoir_redis_script_seconds_count", &[("script", "reserve")]).unwrap_or(0.0) >= 2.0, "{text}");
    assert!(sample(&text, "reservoir_batch_messages_count", &[]).unwrap_or(0.0) >= 1.0, "{text}");
    assert!(sample(&text, "reservoir_event_latency_seconds_count", &[]).unwrap_or(0.0) >= 6.0, "{text}");
    assert_eq!(get(addr, "/healthz").await.map(|r| r.0), Some(200));
    stack.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_redis() {
    let mut stack = Stack::start_with(true).await;
    let (_cfg, _worker, addr) = worker_with_port(&stack, 1).await;
    wait_status(addr, "/readyz", 200, T).await;
    let Some(redis) = stack.redis.as_mut().filter(|r| r.is_local()) else {
        eprintln!("REDIS_URL is external: not stopping it");
        return;
    };
    redis.stop();
    let body = wait_status(addr, "/readyz", 503, Duration::from_secs(30)).await;
    assert!(body.contains("redis"), "the answer names what is missing: {body}");
    assert_eq!(get(addr, "/healthz").await.map(|r| r.0), Some(200), "the process is still alive");
    redis.start_again();
    wait_status(addr, "/readyz", 200, T).await;
    stack.audit().await;
}
