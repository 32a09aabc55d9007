//! A crash point for the soak's own tests (hidden `--crash-point`): once
//! the worker gets SIGUSR1 it kills itself with SIGKILL at the next batch
//! whose effects are in Redis and whose outputs are not yet published.
//! A kill -9 from outside lands in that window only by chance; the soak
//! needs it every time, to show that a repeat republishes what the crash
//! left unpublished.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

pub struct CrashPoint(Arc<AtomicBool>);

impl CrashPoint {
    /// Listens for SIGUSR1 (which would otherwise end the process at once).
    pub fn listen() -> std::io::Result<CrashPoint> {
        let armed = Arc::new(AtomicBool::new(false));
        let mut usr1 = signal(SignalKind::user_defined1())?;
        let set = armed.clone();
        tokio::spawn(async move {
            while usr1.recv().await.is_some() {
                set.store(true, Ordering::Relaxed);
            }
        });
        tracing::error!("this worker kills itself mid-batch on SIGUSR1 (RESERVOIR_CRASH_POINT); it is for the soak's own tests only");
        Ok(CrashPoint(armed))
    }

    /// Called with a batch's effects applied and its outputs in hand.
    pub fn reached(&self, outputs: usize) {
        if outputs > 0 && self.0.load(Ordering::Relaxed) {
            tracing::error!(outputs, "crash point: killing this worker after the effect, before publishing");
            // SAFETY: kill(2) on our own pid; SIGKILL ends the process here.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}
