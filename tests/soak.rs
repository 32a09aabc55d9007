//! `reservoir soak`: three workers, faults of every kind, and no violation
//! of the guarantees; and the same soak against workers broken on purpose,
//! which it must catch. SOAK_DURATION (default 3m) sets the clean run's
//! length. The soaks run one at a time: each starts its own Redis, a
//! 3-node Apache Kafka cluster and three workers on two cores.

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `reservoir soak ARGS`; returns its report (the last line) and all it printed.
fn soak(args: &[&str]) -> (Value, String, bool) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut child = Command::new(env!("CARGO_BIN_EXE_reservoir"))
        .arg("soak")
        .args(args)
        .env("RUST_LOG", "warn,reservoir::soak=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the reservoir binary");
    // Read the report while the soak runs: one with many violations
    // outgrows the pipe's buffer, and the soak would block writing it.
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    // The soak bounds its own waits; this only guards against a hang.
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(20 * 60) {
            let _ = child.kill();
            panic!("the soak did not finish within 20 minutes");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let text = reader.join().expect("the reader thread");
    let last = text.lines().last().unwrap_or_default();
    let report: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("the last line is JSON ({e}):\n{text}"));
    (report, text, status.success())
}

#[test]
fn a_soak_with_every_fault_kind_finds_no_violation() {
    let duration = std::env::var("SOAK_DURATION").unwrap_or_else(|_| "3m".into());
    let (report, text, ok) = soak(&["--duration", &duration, "--seed", "11"]);
    assert_eq!(report["violations"], serde_json::json!([]), "{text}");
    assert!(ok, "{text}");
    for kind in ["worker kill -9", "worker crash after effect", "worker SIGSTOP", "redis kill -9", "SCRIPT FLUSH", "leader kill -9"] {
        assert!(report["faults"][kind].as_u64() >= Some(1), "no {kind} in {text}");
    }
    assert!(report["faults"]["leader kill -9"].as_u64() >= Some(2), "fewer than 2 partition leader kills in {text}");
    assert_eq!(report["generator_lost"], 0, "the broker refused messages of the generator: {text}");
    for code in ["malformed_json", "invalid_envelope", "unknown_type", "invalid_data", "too_large", "negative_on_hand", "insufficient_on_hand", "over_refund"] {
        assert!(report["poison"][code].as_u64() >= Some(1), "no {code} poison in {text}");
    }
    assert!(report["repeats"].as_u64() > Some(0) && report["canceled_first"].as_u64() > Some(0), "{text}");
}

/// A soak of workers broken by `sabotage` reports violations and exits 1.
/// `worker-crash` kills a worker between a batch's effect and its outputs
/// every time (its crash point), so a few crashes are enough; the rate is
/// one these two cores sustain with three workers on a 3-node cluster, so
/// recoveries stay short and the checks, not a backlog, decide.
fn caught(sabotage: &str, faults: &str) -> Value {
    let (report, text, ok) = soak(&["--duration", "60s", "--seed", "5", "--rate", "300", "--pause", "0", "--faults", faults, "--sabotage", sabotage]);
    assert!(!ok, "a soak of workers broken by {sabotage} passed:\n{text}");
    assert_eq!(report["sabotage"], sabotage, "{text}");
    assert!(report["violations"].as_array().is_some_and(|v| !v.is_empty()), "{text}");
    eprintln!("{sabotage}: {text}");
    report
}

#[test]
fn offsets_stored_before_the_effect_lose_events_on_a_crash() {
    let r = caught("offsets-before-effect", "worker-crash");
    let v = r["violations"].to_string();
    assert!(v.contains("no result was published") || v.contains("model:"), "{v}");
}

#[test]
fn skipped_idempotency_records_apply_repeats_twice() {
    let r = caught("skip-idempotency", "script-flush");
    assert!(r["model_differences"].as_u64() > Some(0), "{r}");
}

#[test]
fn no_republish_on_repeat_loses_what_a_crash_left_unpublished() {
    let r = caught("no-republish-on-repeat", "worker-crash");
    let v = r["violations"].to_string();
    assert!(v.contains("no result was published") || v.contains("never published") || v.contains("highest version published"), "{v}");
}
