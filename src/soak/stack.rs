//! The soak's processes: Redis (AOF, fsync always), a 3-node Apache Kafka
//! cluster and the workers, each of which the fault injector kills,
//! freezes and restarts on the same port with the same data.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::local::{self, signal, Kafka, LocalError, Proc};

/// Nodes of the soak's Kafka cluster: replication factor 3, 2 in sync.
pub const KAFKA_NODES: usize = 3;

pub struct Stack {
    pub dir: PathBuf,
    pub redis_port: u16,
    pub redis: Option<Proc>,
    pub kafka: Kafka,
    pub workers: Vec<Option<Proc>>,
}

fn kill9(p: &mut Option<Proc>) {
    if let Some(mut p) = p.take() {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
}

impl Stack {
    pub fn start(dir: &Path) -> Result<(Stack, String, String), LocalError> {
        let kafka = Kafka::cluster(&dir.join("kafka"), KAFKA_NODES)?;
        let mut s = Stack { dir: dir.to_path_buf(), redis_port: local::free_port()?, redis: None, kafka, workers: Vec::new() };
        s.start_redis()?;
        let redis = format!("redis://127.0.0.1:{}", s.redis_port);
        let bootstrap = s.kafka.bootstrap.clone();
        Ok((s, redis, bootstrap))
    }

    pub fn start_redis(&mut self) -> Result<(), LocalError> {
        self.redis = Some(local::redis_at(&self.dir, self.redis_port, "always")?.0);
        Ok(())
    }


    pub fn start_worker(&mut self, cfg: &Config, i: usize) -> Result<(), LocalError> {
        while self.workers.len() <= i {
            self.workers.push(None);
        }
        self.workers[i] = Some(local::worker(cfg, &self.dir, &format!("worker-{i}"))?);
        Ok(())
    }

    pub fn kill_redis(&mut self) {
        kill9(&mut self.redis);
    }

    /// kill -9 of the node leading `topic`/`partition`; its index, if a
    /// leader was found.
    pub fn kill_leader(&mut self, topic: &str, partition: i32) -> Result<Option<usize>, LocalError> {
        let leader = self.kafka.leader_of(topic, partition)?;
        if let Some(i) = leader {
            self.kafka.kill9(i);
        }
        Ok(leader)
    }

    pub fn kill_worker(&mut self, i: usize) {
        if let Some(w) = self.workers.get_mut(i) {
            kill9(w);
        }
    }

    /// SIGUSR1 to worker `i` (started with its crash point), then waits up
    /// to `wait` for it to kill itself mid-batch; false if it did not (it
    /// is killed with kill -9 then). Either way it is gone after.
    pub fn crash_worker(&mut self, i: usize, wait: Duration) -> bool {
        let Some(slot) = self.workers.get_mut(i) else { return false };
        let crashed = slot.as_mut().is_some_and(|w| w.signal_and_wait(libc::SIGUSR1, wait));
        *slot = None;
        crashed
    }

    pub fn freeze_worker(&self, i: usize, on: bool) {
        if let Some(Some(w)) = self.workers.get(i) {
            signal(w, if on { libc::SIGSTOP } else { libc::SIGCONT });
        }
    }

    /// A worker that exited by itself (it should not): its index and status.
    pub fn exited_worker(&mut self) -> Option<(usize, String)> {
        self.workers.iter_mut().enumerate().find_map(|(i, w)| {
            let status = w.as_mut()?.child.try_wait().ok()??;
            Some((i, status.to_string()))
        })
    }

    /// Everything running again (after the faults).
    pub fn heal(&mut self, cfg: &Config) -> Result<(), LocalError> {
        if self.redis.is_none() {
            self.start_redis()?;
        }
        for i in 0..self.kafka.nodes.len() {
            if !self.kafka.nodes[i].is_running() {
                self.kafka.restart(i)?;
            }
        }
        for i in 0..self.workers.len() {
            self.freeze_worker(i, false);
            if self.workers[i].as_mut().is_none_or(|w| w.child.try_wait().ok().flatten().is_some()) {
                self.start_worker(cfg, i)?;
            }
        }
        Ok(())
    }

    /// SIGTERM to the workers: they drain, flush and commit.
    pub fn stop_workers(&mut self) {
        for w in self.workers.iter_mut().flatten() {
            w.terminate(Duration::from_secs(20));
        }
        self.workers.clear();
    }

    /// SIGTERM to the workers, then Redis (Kafka stops when dropped).
    pub fn stop(&mut self) {
        self.stop_workers();
        kill9(&mut self.redis);
    }
}
