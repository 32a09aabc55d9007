//! Test harness: real `redis-server` processes on free loopback ports (one
//! server, or a 3-master Redis Cluster), killed when dropped. With
//! `REDIS_URL` (or `REDIS_CLUSTER_URLS`) set, tests use that server instead
//! and keep apart by random names.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reservoir::store::{Clock, Engine, EngineConfig};

/// A random suffix for sku, order and channel names.
pub fn uid() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    format!("{:x}", h.finish())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ping(url: &str) -> bool {
    redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}

pub struct RedisServer {
    pub url: String,
    pub port: u16,
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// A fresh local server, or the one in REDIS_URL.
    pub fn start() -> RedisServer {
        if let Ok(url) = std::env::var("REDIS_URL") {
            return RedisServer { url, port: 0, child: None, dir: None };
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = spawn_redis(port, dir.path(), &[]);
        let url = format!("redis://127.0.0.1:{port}");
        wait_until("redis-server to answer PING", Duration::from_secs(10), || ping(&url));
        RedisServer { url, port, child: Some(child), dir: Some(dir) }
    }

    /// A local server with AOF (`appendfsync always`), restartable with its data.
    pub fn start_durable() -> RedisServer {
        if let Ok(url) = std::env::var("REDIS_URL") {
            return RedisServer { url, port: 0, child: None, dir: None };
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut r = RedisServer { url: format!("redis://127.0.0.1:{port}"), port, child: None, dir: Some(dir) };
        r.spawn_durable();
        r
    }

    fn spawn_durable(&mut self) {
        let dir = self.dir.as_ref().expect("local server").path().to_path_buf();
        self.child = Some(spawn_redis(self.port, &dir, &["--appendonly", "yes", "--appendfsync", "always"]));
        let url = self.url.clone();
        wait_until("redis-server to answer PING", Duration::from_secs(10), || ping(&url));
    }

    /// Stops a durable local server (SIGTERM: it finishes writing its AOF).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    /// Starts a stopped durable server again on the same port and data.
    pub fn start_again(&mut self) {
        self.spawn_durable();
    }

    pub fn is_local(&self) -> bool {
        self.child.is_some()
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str()).unwrap().get_connection().unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn spawn_redis(port: u16, dir: &std::path::Path, extra: &[&str]) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (apt-get install redis-server; .ci/run does it)")
}

/// A 3-master Redis Cluster on loopback, or the seeds in REDIS_CLUSTER_URLS.
pub struct RedisCluster {
    pub urls: String,
    children: Vec<Child>,
    dir: Option<tempfile::TempDir>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        if let Ok(urls) = std::env::var("REDIS_CLUSTER_URLS") {
            return RedisCluster { urls, children: Vec::new(), dir: None };
        }
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut children = Vec::new();
        for p in &ports {
            let conf = format!("nodes-{p}.conf");
            children.push(spawn_redis(*p, dir.path(), &["--cluster-enabled", "yes", "--cluster-config-file", &conf, "--cluster-node-timeout", "5000"]));
        }
        for p in &ports {
            let url = format!("redis://127.0.0.1:{p}");
            wait_until("cluster node to answer PING", Duration::from_secs(10), || ping(&url));
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed");
        assert!(out.status.success(), "redis-cli --cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
        for p in &ports {
            let url = format!("redis://127.0.0.1:{p}");
            wait_until("cluster_state:ok", Duration::from_secs(30), || {
                redis::Client::open(url.as_str())
                    .and_then(|c| c.get_connection())
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                    .map(|s| s.contains("cluster_state:ok"))
                    .unwrap_or(false)
            });
        }
        let urls = ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
        RedisCluster { urls, children, dir: Some(dir) }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An engine on `url` with a hand-set clock starting at a fixed instant.
pub async fn engine(url: &str) -> (Engine, Clock) {
    let clock = Clock::manual(1_800_000_000_000);
    let e = Engine::connect(url, EngineConfig::default(), clock.clone()).await.expect("engine connects");
    (e, clock)
}
pub mod kafka;
pub mod orders;
pub mod stack;
pub mod tls;
pub mod worker;
