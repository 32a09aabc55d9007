//! Running the worker in-process (library `run` with a shutdown future) or
//! as a child process (for kill -9 and SIGTERM), and building events.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reservoir::config::Config;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A worker running in this process.
pub struct InProcess {
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), reservoir::worker::WorkerError>>>,
}

impl InProcess {
    pub fn start(cfg: Config) -> InProcess {
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(reservoir::worker::run(cfg, async move {
            let _ = rx.await;
        }));
        InProcess { stop: Some(tx), handle: Some(handle) }
    }

    /// Asks it to stop and waits (bounded) for a clean exit.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let h = self.handle.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), h).await.expect("worker stops within 30 s").expect("worker task").expect("worker ran without error");
    }
}

impl InProcess {
    /// Waits (bounded) for the worker to end by itself, and its result.
    pub async fn ended(mut self, within: Duration) -> Result<(), reservoir::worker::WorkerError> {
        let h = self.handle.take().unwrap();
        tokio::time::timeout(within, h).await.unwrap_or_else(|_| panic!("the worker did not end by itself within {within:?}")).expect("worker task")
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(h) = &self.handle {
            h.abort();
        }
    }
}

/// The `reservoir run` binary as a child process.
pub struct Process {
    pub child: Child,
}

impl Process {
    pub fn start(cfg: &Config) -> Process {
        let child = reservoir::local::run_command(std::path::Path::new(env!("CARGO_BIN_EXE_reservoir")), cfg)
            .env("RUST_LOG", "warn,reservoir=info")
            .stdout(Stdio::null())
            .stderr(if std::env::var("WORKER_LOGS").is_ok() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .expect("reservoir binary");
        Process { child }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status (bounded wait).
    pub fn term(&mut self, within: Duration) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let start = std::time::Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(start.elapsed() < within, "worker did not exit within {within:?} of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CloudEvents envelope as bytes.
pub fn event(id: &str, ty: &str, data: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "specversion": "1.0", "id": id, "source": "test", "type": ty,
        "time": "2026-11-22T10:00:00Z", "data": data,
    }))
    .unwrap()
}
