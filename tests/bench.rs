//! A tiny smoke run of `reservoir bench`: it starts its stack (or uses
//! KAFKA_BOOTSTRAP / REDIS_URL), drives both runs, measures the ceiling and
//! ends with one JSON object whose figures come from real traffic. Not a
//! timed test: it checks that the numbers exist and are consistent.

use std::process::Command;

#[test]
fn bench_smoke_prints_a_consistent_report() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reservoir"));
    cmd.args(["bench", "--skus", "300", "--partitions", "2", "--warmup", "1", "--duration", "3", "--rate", "300", "--ceiling-secs", "1"]);
    if let Ok(k) = std::env::var("KAFKA_BOOTSTRAP") {
        cmd.args(["--kafka", &k]);
    }
    let local_redis = std::env::var("REDIS_URL").is_err();
    if let Ok(r) = std::env::var("REDIS_URL") {
        cmd.args(["--redis", &r]);
    } else {
        // A replica of its own Redis: the runs are repeated with WAIT 1.
        cmd.args(["--wait-replicas", "1"]);
    }
    let out = cmd.output().expect("runs reservoir bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().expect("some output");
    let r: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is JSON ({e}): {last}"));
    let f = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} is a number in {last}"));
    assert!(f("events_per_s") > 0.0 && f("sku_ops_per_s") >= f("events_per_s"), "{last}");
    assert!(f("ceiling_ops_per_s") > 0.0);
    assert!((f("ratio") - f("sku_ops_per_s") / f("ceiling_ops_per_s")).abs() < 1e-6);
    // Every paced answered event got its result: 300/s for 3 s, ~60% answered.
    assert!(r["paced"]["count"].as_u64().unwrap() > 300, "{last}");
    assert!(f("p50_ms") > 0.0 && f("p50_ms") <= f("p99_ms") && f("p99_ms") <= f("p999_ms"));
    assert!(f("worker_rss_mb") > 1.0);
    let state = f("redis_bytes_per_sku_location");
    assert!(state > 10.0 && state < f("redis_bytes_per_sku_location_with_records"), "{last}");
    assert!(f("redis_commands_per_event") >= 1.0);
    assert_eq!(r["params"]["skus"], 300);
    assert!(r["redis_calls_per_event"]["evalsha"].as_f64().unwrap() > 0.5, "{last}");
    if local_redis {
        let w = &r["wait"];
        assert_eq!((w["replicas"].as_u64(), r["params"]["redis_replicas"].as_u64()), (Some(1), Some(1)), "{last}");
        for run in ["with", "without_again"] {
            assert!(w[run]["events_per_s"].as_f64().unwrap() > 0.0 && w[run]["paced"]["count"].as_u64().unwrap() > 300, "{run}: {last}");
        }
        // One WAIT per batch with it, none without.
        assert!(w["with"]["redis_calls_per_event"]["wait"].as_f64().unwrap() > 0.0, "{last}");
        assert!(w["without_again"]["redis_calls_per_event"].get("wait").is_none(), "{last}");
        assert!(stdout.contains("with WAIT 1: full speed"), "{stdout}");
    }
    assert!(stdout.contains("ratio sku-operations/s"), "the table comes first:\n{stdout}");
}
