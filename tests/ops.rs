//! The operator commands as a person runs them (the `reservoir` binary)
//! against real Redis (single and a 3-master cluster) and the broker:
//! inspect, import and republish.

mod support;

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use reservoir::config::Config;
use reservoir::domain::availability;
use reservoir::qty::Qty;
use serde_json::{json, Value};
use support::kafka::{config, latest, producer, send, Reader};
use support::stack::Stack;
use support::worker::{event, Process};
use support::{uid, RedisCluster};

const T: Duration = Duration::from_secs(90);

fn cli(cfg: &Config, sub: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::from(reservoir::local::command(std::path::Path::new(env!("CARGO_BIN_EXE_reservoir")), cfg, sub));
    c.env("RUST_LOG", "warn").kill_on_drop(true);
    c
}

/// Runs a command to its end (bounded).
async fn run(mut c: tokio::process::Command) -> Output {
    let out = tokio::time::timeout(T, c.output()).await.expect("the command finished in time").expect("the binary runs");
    if std::env::var("CLI_LOGS").is_ok() {
        eprintln!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Availability messages' data without the cause and the version: a
/// channel whose availability did not move when the sku changed for another
/// channel was not published at the sku's new version.
fn comparable(mut v: Value) -> Value {
    let m = v.as_object_mut().expect("data is an object");
    m.remove("caused_by");
    m.remove("version");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_levels_holds_orders_and_availability() {
    let stack = Stack::start().await;
    let cfg = config(&stack.bootstrap, &stack.redis_url, 1).await;
    let _worker = Process::start(&cfg);
    let t = cfg.topics.clone();
    let p = producer(&stack.bootstrap);
    let u = uid();
    let (ch, sku) = (format!("web-{u}"), format!("S{{1}}-{u}"));
    send(&p, &t.stock, &ch, &event("e1", "inventory.channel.configured", json!({"channel": ch, "locations": ["wh-1", "wh-2"]}))).await;
    send(&p, &t.stock, &sku, &event("e2", "inventory.level.set", json!({"sku": sku, "location": "wh-1", "on_hand": 10}))).await;
    send(&p, &t.stock, &sku, &event("e3", "inventory.level.set", json!({"sku": sku, "location": "wh-2", "on_hand": "5.5", "in_stock": false}))).await;
    let mut avail = Reader::new(&stack.bootstrap, &t.availability);
    let key = format!("{ch}/{sku}");
    avail.until(T, "the levels", |s| latest(s).get(&key).is_some_and(|v| v["on_hand"] == json!(10))).await;
    send(&p, &t.carts, "c", &event("e4", "cart.line.held", json!({"cart_id": "cart-1", "channel": ch, "sku": sku, "quantity": 2}))).await;
    send(&p, &t.orders, "o", &event("e5", "order.placed", json!({"order_id": "o-1", "channel": ch, "lines": [{"line_id": "1", "sku": sku, "quantity": 3}]}))).await;
    let mut results = Reader::new(&stack.bootstrap, &t.reservations);
    results.until(T, "hold and reservation", |s| s.len() >= 2).await;
    avail.until(T, "available 5", |s| latest(s).get(&key).is_some_and(|v| v["available"] == json!(5))).await;
    let last = latest(&avail.seen)[&key].clone();

    let out = run({
        let mut c = cli(&cfg, "inspect");
        c.args([&sku, "--json"]);
        c
    })
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let i: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(i["version"], last["version"], "the version of the last availability message");
    assert_eq!(i["levels"], json!([
        {"location": "wh-1", "on_hand": 10, "reserved": 5, "in_stock": true},
        {"location": "wh-2", "on_hand": 5.5, "reserved": 0, "in_stock": false},
    ]));
    assert_eq!(i["holds"][0]["cart_id"], "cart-1");
    assert_eq!(i["holds"][0]["quantity"], 2);
    assert_eq!(i["orders"], json!([{"order_id": "o-1", "lines": [{"line_id": "1", "ordered": 3, "allocations": [{"location": "wh-1", "quantity": 3}], "backordered": 0, "preordered": 0}]}]));
    assert_eq!(i["channels"][0]["channel"], json!(ch));
    assert_eq!(i["channels"][0]["availability"]["available"], last["available"]);

    let out = run({
        let mut c = cli(&cfg, "inspect");
        c.arg(&sku);
        c
    })
    .await;
    let table = text(&out.stdout);
    assert!(out.status.success() && table.contains("order o-1") && table.contains("cart cart-1") && table.contains(&ch), "{table}");

    // The counters agree with the records; a corrupted one is found.
    let out = run(cli(&cfg, "audit")).await;
    assert!(out.status.success() && text(&out.stdout).contains("0 violation(s)"), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("1 open order reservation(s)"), "{}", text(&out.stdout));
    let mut r = redis::Client::open(stack.redis_url.as_str()).unwrap().get_connection().unwrap();
    redis::cmd("HINCRBY").arg(reservoir::store::keys::SkuKeys::new(&sku).inv).arg("r:wh-1").arg(10000).query::<i64>(&mut r).unwrap();
    let out = run(cli(&cfg, "audit")).await;
    let found = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{found}");
    assert!(found.contains(&format!("VIOLATION: sku {sku:?} at \"wh-1\": reserved is 6 but its holds and open reservations add up to 5")), "{found}");
    redis::cmd("HINCRBY").arg(reservoir::store::keys::SkuKeys::new(&sku).inv).arg("r:wh-1").arg(-10000).query::<i64>(&mut r).unwrap();

    let out = run({
        let mut c = cli(&cfg, "inspect");
        c.args([&sku, "--channel", "nope"]);
        c
    })
    .await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("channel \"nope\" is not configured"), "{}", text(&out.stderr));
    let out = run({
        let mut c = cli(&cfg, "inspect");
        c.arg("never-seen");
        c
    })
    .await;
    assert!(out.status.success() && text(&out.stdout).contains("not in the store"), "{}", text(&out.stdout));
    stack.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_publishes_levels_and_names_bad_rows() {
    let stack = Stack::start().await;
    let cfg = config(&stack.bootstrap, &stack.redis_url, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("levels.csv");
    let u = uid();
    let mut csv = String::from("location,sku,on_hand,in_stock\n");
    for i in 0..500 {
        csv.push_str(&format!("wh-{},I{u}-{i},{}.25,{}\n", i % 2, i, if i % 7 == 0 { "false" } else { "" }));
    }
    csv.push_str(&format!("wh-1,I{u}-bad1,-3,\n")); // line 502
    csv.push_str(&format!("wh-1,I{u}-bad2,1.00001,\n")); // line 503
    csv.push_str(&format!("wh-1,I{u}-bad3,4,maybe\n")); // line 504
    std::fs::write(&file, csv).unwrap();

    let out = run({
        let mut c = cli(&cfg, "import");
        c.arg(&file).arg("--dry-run");
        c
    })
    .await;
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "rejected rows make exit code 1: {report}");
    assert!(report.contains("rows 503  published 500  rejected 3"), "{report}");
    assert!(report.contains("line 502: on_hand") && report.contains("line 503: on_hand") && report.contains("line 504: in_stock"), "{report}");

    let out = run({
        let mut c = cli(&cfg, "import");
        c.arg(&file);
        c
    })
    .await;
    assert!(text(&out.stdout).contains("published 500"), "{}{}", text(&out.stdout), text(&out.stderr));

    // The worker applies every published row.
    let _worker = Process::start(&cfg);
    let (engine, _) = support::engine(&stack.redis_url).await;
    let start = Instant::now();
    loop {
        let mut done = 0;
        for i in 0..500 {
            let s = engine.sku_state(&format!("I{u}-{i}")).await.unwrap();
            let loc = format!("wh-{}", i % 2);
            if let Some(l) = s.levels.get(&loc) {
                assert_eq!(l.on_hand, Qty::parse(&format!("{i}.25")).unwrap());
                assert_eq!(l.in_stock, i % 7 != 0, "sku {i}");
                done += 1;
            }
        }
        if done == 500 {
            break;
        }
        assert!(start.elapsed() < T, "only {done} of 500 rows applied");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!engine.sku_state(&format!("I{u}-bad1")).await.unwrap().exists, "a rejected row was not sent");
    stack.audit().await;
}

/// Stock for `n` skus in two channels, applied by a worker; returns the
/// latest availability per key it published.
async fn applied_catalog(stack: &Stack, cfg: &Config, n: usize) -> BTreeMap<String, Value> {
    let _worker = Process::start(cfg);
    let t = &cfg.topics;
    let p = producer(&stack.bootstrap);
    send(&p, &t.stock, "a", &event("c1", "inventory.channel.configured", json!({"channel": "a", "locations": ["wh-1"]}))).await;
    send(&p, &t.stock, "b", &event("c2", "inventory.channel.configured", json!({"channel": "b", "locations": ["wh-1", "wh-2"]}))).await;
    let mut avail = Reader::new(&stack.bootstrap, &t.availability);
    // The channels first, so every level below is published in both.
    send(&p, &t.stock, "P-0", &event("l-0", "inventory.level.set", json!({"sku": "P-0", "location": "wh-1", "on_hand": 1}))).await;
    avail.until(T, "the first sku in both channels", |s| s.iter().filter(|r| r.key.ends_with("/P-0")).count() >= 2).await;
    for i in 1..n {
        let sku = if i % 2 == 0 { format!("P-{i}") } else { format!("Q-{i}") };
        send(&p, &t.stock, &sku, &event(&format!("l-{i}"), "inventory.level.set", json!({"sku": sku, "location": "wh-1", "on_hand": i + 1}))).await;
    }
    avail.until(T, "every sku in both channels", |s| latest(s).len() >= 2 * n).await;
    latest(&avail.seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republish_rebuilds_a_cache_resumes_and_filters() {
    let stack = Stack::start().await;
    let cfg = config(&stack.bootstrap, &stack.redis_url, 2).await;
    let n = 300;
    let original = applied_catalog(&stack, &cfg, n).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("cp.json");

    // Into a fresh topic, interrupted after its first page and continued.
    let mut to = cfg.clone();
    to.topics.availability = format!("rebuilt-{}", uid());
    reservoir::kafka::create_topics(&to, 2, 1).await.unwrap();
    let republish = |extra: &[&str]| {
        let mut c = cli(&to, "republish");
        c.arg("--checkpoint").arg(&checkpoint).args(extra);
        c
    };
    let first = republish(&["--page", "1"]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    while !checkpoint.exists() {
        assert!(start.elapsed() < T, "no checkpoint written");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid = first.id().unwrap().to_string();
    std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let out = tokio::time::timeout(T, first.wait_with_output()).await.unwrap().unwrap();
    assert!(!out.status.success(), "interrupted runs fail: {}", text(&out.stdout));
    assert!(text(&out.stderr).contains("run the same command again"), "{}", text(&out.stderr));
    let saved: Value = serde_json::from_slice(&std::fs::read(&checkpoint).unwrap()).unwrap();
    assert!(saved["done"]["skus"].as_u64().unwrap() < n as u64, "stopped early: {saved}");

    let out = run(republish(&["--channel", "a"])).await;
    assert!(text(&out.stderr).contains("other settings") && text(&out.stderr).contains("--restart"), "{}", text(&out.stderr));
    let out = run(republish(&[])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("continued from the checkpoint"), "{}", text(&out.stdout));
    assert!(!checkpoint.exists(), "removed when done");

    let mut rebuilt = Reader::new(&stack.bootstrap, &to.topics.availability);
    rebuilt.until(T, "every key again", |s| latest(s).len() >= original.len()).await;
    let got = latest(&rebuilt.seen);
    assert_eq!(got.len(), original.len());
    let (engine, _) = support::engine(&stack.redis_url).await;
    for (k, v) in &original {
        assert_eq!(comparable(got[k].clone()), comparable(v.clone()), "{k}: same availability");
        let stored = engine.sku_state(k.split_once('/').unwrap().1).await.unwrap().version;
        assert_eq!(got[k]["version"].as_u64(), Some(stored), "{k}: the stored version, not a new one");
        assert!(got[k]["version"].as_u64() >= v["version"].as_u64(), "{k}: never older than what was published");
        assert_eq!(got[k]["caused_by"], "reservoir.republish");
    }

    // Filters: one channel, one prefix.
    to.topics.availability = format!("filtered-{}", uid());
    reservoir::kafka::create_topics(&to, 2, 1).await.unwrap();
    let out = run({
        let mut c = cli(&to, "republish");
        c.args(["--channel", "b", "--sku-prefix", "Q-", "--restart"]).arg("--checkpoint").arg(&checkpoint);
        c
    })
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want: Vec<String> = original.keys().filter(|k| k.starts_with("b/Q-")).cloned().collect();
    let mut filtered = Reader::new(&stack.bootstrap, &to.topics.availability);
    filtered.until(T, "the filtered keys", |s| s.len() >= want.len()).await;
    filtered.drain(Duration::from_secs(2)).await;
    assert_eq!(latest(&filtered.seen).into_keys().collect::<Vec<_>>(), want);
    assert_eq!(filtered.seen.len(), want.len(), "each once");
    stack.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republish_covers_every_master_of_a_cluster() {
    let cluster = RedisCluster::start();
    let bootstrap = support::kafka::shared();
    let cfg = config(bootstrap, &cluster.urls, 2).await;
    let (engine, _) = support::engine(&cluster.urls).await;
    engine.configure_channel("ch-1", "web", &["wh-1".to_string()]).await.unwrap();
    let mut skus: Vec<String> = (0..200).map(|i| format!("C-{i}")).collect();
    skus.extend(["a{b}".to_string(), "%odd".to_string(), "x:inv".to_string()]);
    for (i, sku) in skus.iter().enumerate() {
        engine.set_level(&format!("lv-{i}"), sku, "wh-1", Qty::units(i as i64 + 1), true).await.unwrap();
    }
    let mut conn = engine.conn();
    assert_eq!(conn.scan_nodes().await.unwrap().len(), 3, "three masters");
    let channels = engine.channels().await.unwrap();
    let mut expected = BTreeMap::new();
    for sku in &skus {
        let s = engine.sku_state(sku).await.unwrap();
        let a = availability(&s, &channels["web"]);
        expected.insert(format!("web/{sku}"), (s.version, a.available));
    }

    let out = run(cli(&cfg, "republish")).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("republished {} availability message(s) for {} sku(s)", skus.len(), skus.len())), "{}", text(&out.stdout));
    let mut r = Reader::new(bootstrap, &cfg.topics.availability);
    r.until(T, "every sku", |s| latest(s).len() >= skus.len()).await;
    let got: BTreeMap<String, (u64, Option<Qty>)> = latest(&r.seen)
        .into_iter()
        .map(|(k, v)| (k, (v["version"].as_u64().unwrap(), Some(Qty::parse(&v["available"].to_string()).unwrap()))))
        .collect();
    assert_eq!(got, expected);
}
