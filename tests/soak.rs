//! `reservoir soak`: three workers, faults of every kind, and no violation
//! of the guarantees. SOAK_DURATION (default 3m) sets the length. Not in
//! the default run: `cargo test --release --test soak -- --ignored`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
#[ignore = "Tansu 0.6.0's sqlite storage fails under the soak in some runs (README: Notes on Tansu); run it with --ignored"]
fn a_soak_with_every_fault_kind_finds_no_violation() {
    let duration = std::env::var("SOAK_DURATION").unwrap_or_else(|_| "3m".into());
    let mut child = Command::new(env!("CARGO_BIN_EXE_reservoir"))
        .args(["soak", "--duration", &duration, "--seed", "11"])
        .env("RUST_LOG", "warn,reservoir::soak=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the reservoir binary");
    // The soak bounds its own waits; this only guards against a hang.
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20 * 60) {
            let _ = child.kill();
            panic!("the soak did not finish within 20 minutes");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = text.lines().last().unwrap_or_default();
    let report: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("the last line is JSON ({e}):\n{text}"));
    assert_eq!(report["violations"], serde_json::json!([]), "{text}");
    assert!(out.status.success(), "{text}");
    for kind in ["worker kill -9", "worker SIGSTOP", "redis kill -9", "SCRIPT FLUSH", "broker kill -9"] {
        assert!(report["faults"][kind].as_u64() >= Some(1), "no {kind} in {text}");
    }
    for code in ["malformed_json", "invalid_envelope", "unknown_type", "invalid_data", "too_large", "negative_on_hand"] {
        assert!(report["poison"][code].as_u64() >= Some(1), "no {code} poison in {text}");
    }
    assert!(report["repeats"].as_u64() > Some(0) && report["canceled_first"].as_u64() > Some(0), "{text}");
}
