//! Reaching managed services: Apache Kafka over TLS and SASL_SSL (SCRAM),
//! inputs written with every compression codec by Kafka's own Java client,
//! and Redis over TLS with an ACL user, single and as a Redis Cluster. Each
//! test starts the servers it needs with a CA of its own; wrong credentials
//! stop the worker with an error that names what to fix and never the secret.

mod support;

use std::time::Duration;

use reservoir::config::Config;
use reservoir::local::{Kafka, KafkaSettings, KafkaTls};
use serde_json::json;
use support::kafka::{config, producer, send, Reader};
use support::tls::{java_produce, spawn_tls_redis, tls_cli, wait_tls_ping, TestCa};
use support::worker::{event, InProcess};
use support::{uid, RedisServer};

const T: Duration = Duration::from_secs(60);

/// A channel with a level of 10 of one sku at its location, a producer,
/// and readers of the outputs from before its first event.
struct Shop {
    p: rdkafka::producer::FutureProducer,
    topics: reservoir::config::Topics,
    u: String,
    ch: String,
    sku: String,
    avail: Reader,
    results: Reader,
}

impl Shop {
    /// The channel and the level, awaited as availability 10 (inputs of
    /// different topics are not ordered, so the stock goes first).
    async fn open(cfg: &Config, plain_bootstrap: &str) -> Shop {
        let t = cfg.topics.clone();
        let u = uid();
        let (ch, sku) = (format!("ch-{u}"), format!("SKU-{u}"));
        let mut shop = Shop { p: producer(plain_bootstrap), avail: Reader::new(plain_bootstrap, &t.availability), results: Reader::new(plain_bootstrap, &t.reservations), topics: t, u, ch, sku };
        let (t, u) = (&shop.topics, &shop.u);
        send(&shop.p, &t.stock, &shop.ch, &event(&format!("c-{u}"), "inventory.channel.configured", json!({"channel": shop.ch, "locations": ["wh"]}))).await;
        send(&shop.p, &t.stock, &shop.sku, &event(&format!("l-{u}"), "inventory.level.set", json!({"sku": shop.sku, "location": "wh", "on_hand": 10}))).await;
        shop.available(10).await;
        shop
    }

    async fn available(&mut self, n: i64) {
        let key = format!("{}/{}", self.ch, self.sku);
        self.avail.until(T, &format!("availability {n}"), |s| s.iter().any(|r| r.key == key && r.value["data"]["available"] == json!(n))).await;
    }

    /// Order `n` (2 units) sent; its result is not awaited.
    async fn send_order(&self, n: u32) -> String {
        let (u, order) = (&self.u, format!("o{n}-{}", self.u));
        let placed = json!({"order_id": order, "channel": self.ch, "lines": [{"line_id": "1", "sku": self.sku, "quantity": 2}]});
        send(&self.p, &self.topics.orders, &order, &event(&format!("p{n}-{u}"), "order.placed", placed)).await;
        order
    }

    /// The result of `order`, awaited.
    async fn result_of(&mut self, order: &str) -> serde_json::Value {
        let seen = self.results.until(T, &format!("the result of {order}"), |s| s.iter().any(|r| r.value["data"]["order_id"] == json!(order))).await;
        seen.iter().find(|r| r.value["data"]["order_id"] == json!(order)).unwrap().value.clone()
    }

    async fn place(&mut self, n: u32) -> serde_json::Value {
        let order = self.send_order(n).await;
        self.result_of(&order).await
    }
}

/// A shop opened, then an order of 2: the order's result.
async fn place_an_order(cfg: &Config, plain_bootstrap: &str) -> serde_json::Value {
    Shop::open(cfg, plain_bootstrap).await.place(1).await
}

fn tls_broker(ca: &TestCa, dir: &std::path::Path, users: &[(&str, &str)]) -> Kafka {
    let cert = ca.issue("kafka");
    let tls = KafkaTls {
        keystore: cert.keystore,
        truststore: ca.ca.clone(),
        client_auth: "none".into(),
        scram_users: users.iter().map(|(u, p)| (u.to_string(), p.to_string())).collect(),
    };
    Kafka::start(dir, 1, None, KafkaSettings { die_with_parent: true, tls: Some(tls), ..Default::default() }).unwrap_or_else(|e| panic!("Apache Kafka with TLS listeners did not start: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_runs_over_kafka_tls_and_sasl_scram_and_a_wrong_password_stops_it_naming_the_listener() {
    let ca = TestCa::new();
    let dir = tempfile::Builder::new().prefix("reservoir-test-kafka-tls-").tempdir().unwrap();
    let kafka = tls_broker(&ca, dir.path(), &[("app", "app-secret-1")]);
    let redis = RedisServer::start();
    let plain = kafka.bootstrap.clone();

    // TLS: the brokers' certificate checked against the test's CA.
    let mut cfg = config(&plain, &redis.url, 1).await;
    cfg.kafka_bootstrap = kafka.ssl_bootstrap.clone().unwrap();
    cfg.kafka_options.insert("security.protocol".into(), "ssl".into());
    cfg.kafka_options.insert("ssl.ca.location".into(), ca.ca.display().to_string());
    let worker = InProcess::start(cfg.clone());
    let result = place_an_order(&cfg, &plain).await;
    assert_eq!(result["type"], "inventory.reservation.confirmed", "{result}");
    worker.stop().await;

    // SASL_SSL with SCRAM-SHA-512.
    let mut cfg = config(&plain, &redis.url, 1).await;
    cfg.kafka_bootstrap = kafka.sasl_ssl_bootstrap.clone().unwrap();
    for (k, v) in [("security.protocol", "sasl_ssl"), ("sasl.mechanism", "SCRAM-SHA-512"), ("sasl.username", "app"), ("sasl.password", "app-secret-1")] {
        cfg.kafka_options.insert(k.into(), v.into());
    }
    cfg.kafka_options.insert("ssl.ca.location".into(), ca.ca.display().to_string());
    let worker = InProcess::start(cfg.clone());
    let result = place_an_order(&cfg, &plain).await;
    assert_eq!(result["type"], "inventory.reservation.confirmed", "{result}");
    worker.stop().await;

    // A wrong password: one error naming the listener and the mechanism,
    // never the password, and the worker ends instead of retrying for ever.
    cfg.kafka_options.insert("sasl.password".into(), "not-the-secret-2".into());
    let err = InProcess::start(cfg.clone()).ended(T).await.expect_err("a refused login stops the worker").to_string();
    let listener = format!("sasl_ssl://{}", kafka.sasl_ssl_bootstrap.as_ref().unwrap());
    assert!(err.contains(&listener) && err.contains("SCRAM-SHA-512") && err.contains("sasl.password"), "{err}");
    assert!(!err.contains("not-the-secret-2") && !err.contains("app-secret-1"), "{err}");

    // The CA left out: the system's roots do not know the test CA.
    let mut cfg = config(&plain, &redis.url, 1).await;
    cfg.kafka_bootstrap = kafka.ssl_bootstrap.clone().unwrap();
    cfg.kafka_options.insert("security.protocol".into(), "ssl".into());
    let err = InProcess::start(cfg).ended(T).await.expect_err("an untrusted certificate stops the worker").to_string();
    assert!(err.contains("certificate verify failed") && err.contains("ssl.ca.location"), "{err}");
}

/// Each input topic written by Kafka's Java producer with another codec;
/// our own outputs compressed with zstd and read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_in_every_codec_are_applied_and_outputs_can_be_zstd() {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into())).with_test_writer().try_init();
    let redis = RedisServer::start();
    let bootstrap = support::kafka::shared();
    let mut cfg = config(bootstrap, &redis.url, 1).await;
    cfg.kafka_producer_options.insert("compression.type".into(), "zstd".into());
    let t = cfg.topics.clone();
    let worker = InProcess::start(cfg.clone());
    let u = uid();
    let (ch, sku) = (format!("ch-{u}"), format!("SKU-{u}"));
    let key = format!("{ch}/{sku}");
    let mut avail = Reader::new(bootstrap, &t.availability);
    let mut results = Reader::new(bootstrap, &t.reservations);
    let rec = |k: &str, id: &str, ty: &str, data: serde_json::Value| (k.to_string(), event(&format!("{id}-{u}"), ty, data));

    java_produce(bootstrap, &t.stock, "gzip", &[
        rec(&ch, "c", "inventory.channel.configured", json!({"channel": ch, "locations": ["wh"]})),
        rec(&sku, "l", "inventory.level.set", json!({"sku": sku, "location": "wh", "on_hand": 10})),
    ]);
    avail.until(T, "availability 10 (gzip)", |s| s.iter().any(|r| r.key == key && r.value["data"]["available"] == json!(10))).await;

    java_produce(bootstrap, &t.carts, "snappy", &[rec("cart-1", "h", "cart.line.held", json!({"cart_id": "cart-1", "channel": ch, "sku": sku, "quantity": 1}))]);
    results.until(T, "hold confirmed (snappy)", |s| s.iter().any(|r| r.value["type"] == "inventory.hold.confirmed")).await;

    let order = format!("o-{u}");
    java_produce(bootstrap, &t.orders, "lz4", &[rec(&order, "p", "order.placed", json!({"order_id": order, "channel": ch, "lines": [{"line_id": "1", "sku": sku, "quantity": 2}]}))]);
    results.until(T, "order confirmed (lz4)", |s| s.iter().any(|r| r.value["type"] == "inventory.reservation.confirmed")).await;

    java_produce(bootstrap, &t.shipments, "zstd", &[rec(&order, "s", "shipment.created", json!({"shipment_id": format!("s-{u}"), "order_id": order, "location": "wh", "lines": [{"line_id": "1", "sku": sku, "quantity": 3}]}))]);
    // 3 shipped of the 2 reserved: the third unit comes from free stock, so available moves (7 to 6).
    avail.until(T, "on hand 7 after the shipment (zstd)", |s| s.iter().any(|r| r.key == key && r.value["data"]["on_hand"] == json!(7) && r.value["data"]["available"] == json!(6))).await;
    let mut dead = Reader::new(bootstrap, &t.dead_letter);
    assert!(dead.drain(Duration::from_secs(2)).await.is_empty(), "nothing dead-lettered");
    worker.stop().await;
}

const REDIS_PW: &str = "redis-secret-3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_runs_on_redis_over_tls_as_an_acl_user_and_a_wrong_password_says_so_without_it() {
    let ca = TestCa::new();
    let server = ca.issue("redis");
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let mut child = spawn_tls_redis(port, dir.path(), &server, &ca.ca, REDIS_PW, false, false);
    wait_tls_ping(port, &ca.ca, None, REDIS_PW);
    let bootstrap = support::kafka::shared();

    // The user and password as separate settings, the CA as a file.
    let mut cfg = config(bootstrap, &format!("rediss://127.0.0.1:{port}"), 1).await;
    cfg.redis.username = Some("app".into());
    cfg.redis.password = Some(REDIS_PW.into());
    cfg.redis.ca_file = Some(ca.ca.clone());
    let worker = InProcess::start(cfg.clone());
    let result = place_an_order(&cfg, bootstrap).await;
    assert_eq!(result["type"], "inventory.reservation.confirmed", "{result}");
    worker.stop().await;
    assert!(tls_cli(port, &ca.ca, None, REDIS_PW, &["DBSIZE"]).unwrap().trim() != "0", "the worker's keys are in the TLS Redis");

    // The password in the URL and SSL_CERT_FILE instead of the CA setting,
    // through the binary: a wrong password ends it, and neither its log
    // nor its error shows the password.
    let wrong = "wrong-pw-4";
    let mut run = Config::new(bootstrap, &format!("rediss://app:{wrong}@127.0.0.1:{port}"), "g");
    run.topics = cfg.topics.clone();
    let out = reservoir::local::run_command(std::path::Path::new(env!("CARGO_BIN_EXE_reservoir")), &run)
        .env("SSL_CERT_FILE", &ca.ca)
        .env("RUST_LOG", "debug")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("reservoir binary");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("refused the credentials of user \"app\"") && log.contains(&format!("rediss://app:***@127.0.0.1:{port}")), "{log}");
    assert!(!log.contains(wrong), "the password is in the log:\n{log}");

    // No CA at all: the handshake is refused, and it says what to set.
    let err = reservoir::store::Conn::connect(&format!("rediss://app:{REDIS_PW}@127.0.0.1:{port}")).await.err().expect("an untrusted certificate is refused").to_string();
    assert!(err.contains("RESERVOIR_REDIS_CA_FILE") && !err.contains(REDIS_PW), "{err}");
    let _ = child.kill();
    let _ = child.wait();
}

/// Mutual TLS as well: the nodes want a client certificate signed by the CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_runs_on_a_tls_redis_cluster_with_a_client_certificate_as_an_acl_user() {
    let ca = TestCa::new();
    let server = ca.issue("redis");
    let client = ca.issue("client");
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| support::free_port()).collect();
    let mut children: Vec<_> = ports.iter().map(|p| spawn_tls_redis(*p, dir.path(), &server, &ca.ca, REDIS_PW, true, true)).collect();
    for p in &ports {
        wait_tls_ping(*p, &ca.ca, Some(&client), REDIS_PW);
    }
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut args = vec!["--cluster", "create"];
    args.extend(nodes.iter().map(String::as_str));
    args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    tls_cli(ports[0], &ca.ca, Some(&client), REDIS_PW, &args).unwrap_or_else(|e| panic!("redis-cli --cluster create over TLS: {e}"));
    for p in &ports {
        let start = std::time::Instant::now();
        while !tls_cli(*p, &ca.ca, Some(&client), REDIS_PW, &["CLUSTER", "INFO"]).is_ok_and(|o| o.contains("cluster_state:ok")) {
            assert!(start.elapsed() < Duration::from_secs(30), "cluster_state:ok on {p}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let bootstrap = support::kafka::shared();
    let seeds = ports.iter().map(|p| format!("rediss://app:{REDIS_PW}@127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    // Without the client certificate the nodes refuse the handshake, and the error says what to set.
    let no_cert = reservoir::store::RedisTarget { url: seeds.clone(), ca_file: Some(ca.ca.clone()), ..Default::default() };
    let err = reservoir::store::Conn::connect(&no_cert).await.err().expect("a cluster wanting client certificates refuses none").to_string();
    assert!(err.contains("RESERVOIR_REDIS_CLIENT_CERT") && !err.contains(REDIS_PW), "{err}");
    let mut cfg = config(bootstrap, &seeds, 1).await;
    cfg.redis.ca_file = Some(ca.ca.clone());
    cfg.redis.client_cert = Some(client.cert.clone());
    cfg.redis.client_key = Some(client.key.clone());
    assert!(!format!("{cfg:?}").contains(REDIS_PW));
    let worker = InProcess::start(cfg.clone());
    let result = place_an_order(&cfg, bootstrap).await;
    assert_eq!(result["type"], "inventory.reservation.confirmed", "{result}");
    worker.stop().await;
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// CloudEvents binary content mode end to end: attributes in `ce_*`
/// headers, the data as the value. Applied like the structured form; one
/// without `ce_type` is dead-lettered `invalid_envelope` with its headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_mode_events_are_applied_and_a_broken_one_is_dead_lettered_with_its_headers() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::FutureRecord;
    let redis = RedisServer::start();
    let bootstrap = support::kafka::shared();
    let cfg = config(bootstrap, &redis.url, 1).await;
    let t = cfg.topics.clone();
    let worker = InProcess::start(cfg.clone());
    let p = producer(bootstrap);
    let u = uid();
    let (ch, sku) = (format!("ch-{u}"), format!("SKU-{u}"));
    let send_binary = |key: String, id: String, ty: Option<&'static str>, data: serde_json::Value| {
        let (p, topic) = (p.clone(), t.stock.clone());
        async move {
            let mut h = OwnedHeaders::new().insert(Header { key: "content-type", value: Some("application/json") });
            for (k, v) in [("ce_specversion", "1.0"), ("ce_id", id.as_str()), ("ce_source", "binary-test"), ("ce_time", "2026-11-22T10:00:00Z")] {
                h = h.insert(Header { key: k, value: Some(v) });
            }
            if let Some(ty) = ty {
                h = h.insert(Header { key: "ce_type", value: Some(ty) });
            }
            let value = serde_json::to_vec(&data).unwrap();
            p.send(FutureRecord::to(&topic).key(&key).payload(&value).headers(h), Duration::from_secs(30)).await.expect("delivered");
        }
    };
    send_binary(ch.clone(), format!("c-{u}"), Some("inventory.channel.configured"), json!({"channel": ch, "locations": ["wh"]})).await;
    send_binary(sku.clone(), format!("l-{u}"), Some("inventory.level.set"), json!({"sku": sku, "location": "wh", "on_hand": 4})).await;
    send_binary(sku.clone(), format!("x-{u}"), None, json!({"sku": sku, "location": "wh", "on_hand": 99})).await;
    let key = format!("{ch}/{sku}");
    let mut avail = Reader::new(bootstrap, &t.availability);
    avail.until(T, "availability 4 from binary-mode events", |s| s.iter().any(|r| r.key == key && r.value["data"]["available"] == json!(4))).await;
    let mut dead = Reader::new(bootstrap, &t.dead_letter);
    let seen = dead.until(T, "the dead letter of the event without ce_type", |s| !s.is_empty()).await;
    let d = &seen[0];
    assert_eq!(d.headers.get("dlq.code").map(String::as_str), Some("invalid_envelope"), "{:?}", d.headers);
    assert!(d.headers["dlq.message"].contains("ce_type"), "{:?}", d.headers);
    assert_eq!(d.headers.get("ce_id"), Some(&format!("x-{u}")), "the input's headers are kept: {:?}", d.headers);
    assert_eq!(d.value["on_hand"], json!(99), "the value is the data, unchanged");
    worker.stop().await;
    let mut last = Reader::new(bootstrap, &t.availability);
    let seen = last.drain(Duration::from_secs(2)).await;
    assert!(seen.iter().all(|r| r.value["data"]["on_hand"] != json!(99)), "the broken event changed nothing");
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(args).output().expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn await_cond(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !ok() {
        assert!(start.elapsed() < within, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Redis Sentinel: a master with two replicas and one sentinel. The worker
/// finds the master through the sentinel and waits (WAIT 1) for a replica
/// to have each batch before publishing; the master is killed -9, the
/// sentinel promotes a replica, and the worker follows it: the next order
/// sees the first one's reservation, so nothing it published was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_follows_a_sentinel_failover_and_waits_for_a_replica_before_publishing() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..4).map(|_| support::free_port()).collect();
    let (master, sentinel) = (ports[0], ports[3]);
    let mut servers = vec![support::spawn_redis(master, dir.path(), &["--dbfilename", "m.rdb"])];
    for (i, p) in ports[1..3].iter().enumerate() {
        servers.push(support::spawn_redis(*p, dir.path(), &["--replicaof", "127.0.0.1", &master.to_string(), "--dbfilename", &format!("r{i}.rdb")]));
    }
    let conf = dir.path().join("sentinel.conf");
    std::fs::write(&conf, format!("port {sentinel}\nbind 127.0.0.1\nprotected-mode no\ndir {}\nsentinel monitor mymaster 127.0.0.1 {master} 1\nsentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 10000\n", dir.path().display())).unwrap();
    let mut sentinel_proc = std::process::Command::new("redis-server").arg(&conf).arg("--sentinel").stdout(std::process::Stdio::null()).spawn().expect("redis-server --sentinel");
    await_cond("both replicas in sync", Duration::from_secs(30), || cli(master, &["INFO", "replication"]).contains("connected_slaves:2") && ports[1..3].iter().all(|p| cli(*p, &["INFO", "replication"]).contains("master_link_status:up")));
    await_cond("the sentinel to see both replicas", Duration::from_secs(30), || cli(sentinel, &["SENTINEL", "REPLICAS", "mymaster"]).matches("127.0.0.1").count() >= 2);

    let bootstrap = support::kafka::shared();
    let mut cfg = config(bootstrap, &format!("redis://127.0.0.1:{sentinel}"), 1).await;
    cfg.redis.sentinel_master = Some("mymaster".into());
    cfg.wait_replicas = 1;
    cfg.wait_timeout = Duration::from_millis(500);
    let worker = InProcess::start(cfg.clone());
    let mut shop = Shop::open(&cfg, bootstrap).await;
    assert_eq!(shop.place(1).await["type"], "inventory.reservation.confirmed");

    // kill -9 of the master; the sentinel promotes a replica.
    let _ = servers[0].kill();
    let _ = servers[0].wait();
    await_cond("a replica promoted", Duration::from_secs(60), || {
        let m = cli(sentinel, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"]);
        !m.contains(&master.to_string()) && m.contains("127.0.0.1")
    });
    // The other replica follows the new master: what the sentinel tells it
    // in its own time, done here at once so WAIT 1 can be met.
    let new_master: u16 = cli(sentinel, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"]).lines().nth(1).unwrap().trim().parse().unwrap();
    let other = if ports[1] == new_master { 2 } else { 1 };
    cli(ports[other], &["REPLICAOF", "127.0.0.1", &new_master.to_string()]);
    await_cond("the other replica in sync with the new master", Duration::from_secs(60), || cli(new_master, &["INFO", "replication"]).contains(",state=online,"));
    assert_eq!(shop.place(2).await["type"], "inventory.reservation.confirmed", "order 2 on the new master");
    shop.available(6).await; // both orders' reservations

    // Without a replica in sync, WAIT 1 holds the batch back: no result
    // until a replica of the new master is up again.
    let _ = servers[other].kill();
    let _ = servers[other].wait();
    let o3 = shop.send_order(3).await;
    let held_back = tokio::time::timeout(Duration::from_secs(4), shop.result_of(&o3)).await;
    assert!(held_back.is_err(), "order 3's result was published with no replica in sync");
    servers[other] = support::spawn_redis(ports[other], dir.path(), &["--replicaof", "127.0.0.1", &new_master.to_string(), "--dbfilename", "again.rdb"]);
    shop.result_of(&o3).await;
    worker.stop().await;
    let _ = sentinel_proc.kill();
    let _ = sentinel_proc.wait();
    for s in &mut servers {
        let _ = s.kill();
        let _ = s.wait();
    }
}

/// `--help` shows the environment variable of each setting; with the
/// secrets of a managed service in the environment, none of their values.
#[test]
fn help_shows_no_secret_from_the_environment() {
    let secrets = [
        ("RESERVOIR_REDIS_URL", "rediss://app:help-secret-1@cache.example:6380"),
        ("RESERVOIR_REDIS_PASSWORD", "help-secret-2"),
        ("RESERVOIR_KAFKA_OPTIONS", "security.protocol=sasl_ssl,sasl.password=help-secret-3"),
        ("RESERVOIR_KAFKA_PRODUCER_OPTIONS", "ssl.key.password=help-secret-4"),
        ("RESERVOIR_KAFKA_CONSUMER_OPTIONS", "sasl.password=help-secret-5"),
    ];
    for sub in ["run", "play", "tail", "inspect", "republish"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_reservoir")).args([sub, "--help"]).envs(secrets).output().expect("reservoir --help");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && help.contains("RESERVOIR_REDIS_URL"), "reservoir {sub} --help:\n{help}{}", String::from_utf8_lossy(&out.stderr));
        assert!(!help.contains("help-secret"), "reservoir {sub} --help shows a secret from the environment:\n{help}");
    }
}
