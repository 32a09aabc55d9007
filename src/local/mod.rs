//! A local stack as child processes on free loopback ports: `redis-server`,
//! Apache Kafka ([`kafka`]: one KRaft node or a quorum of three) and
//! `reservoir run` workers. Used by `reservoir bench`, `reservoir soak`,
//! `reservoir local` (the demo) and the tests; every child is stopped when
//! its handle is dropped.

pub mod kafka;

pub use kafka::{Kafka, KafkaSettings, KafkaTls};

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot start {program}: {source}; install it (scripts/deps.sh does) or pass the address of a running one")]
    Spawn { program: String, source: std::io::Error },
    #[error("{what} did not listen on 127.0.0.1:{port} within {secs} s; see {log}")]
    NotListening { what: String, port: u16, secs: u64, log: String },
    #[error("Apache Kafka's jars are not in {libs}: run scripts/deps.sh (it resolves them with Maven once), or set RESERVOIR_KAFKA_LIBS to a folder holding them, or pass the address of a running broker")]
    NoKafka { libs: String },
    #[error("formatting the Kafka storage in {dir} failed: {output}")]
    Format { dir: String, output: String },
    #[error("{what}: {why}; see {log}")]
    NotReady { what: String, why: String, log: String },
    #[error("{what} exited during start-up ({status}); see {log}")]
    Exited { what: String, status: String, log: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Sends `sig` to a child.
pub fn signal(p: &Proc, sig: i32) {
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    unsafe { libc::kill(p.pid() as i32, sig) };
}

pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_listening(what: &str, port: u16, log: &Path, timeout: Duration) -> Result<(), LocalError> {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > timeout {
            return Err(LocalError::NotListening { what: what.into(), port, secs: timeout.as_secs(), log: log.display().to_string() });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A child process killed on drop, its output in a log file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// `die_with_parent`: the kernel kills the child when the thread that
    /// spawned it ends (tests spawn shared servers from a thread that lives
    /// as long as the process, so nothing outlives a test binary).
    fn spawn(mut cmd: Command, program: &str, log: PathBuf, die_with_parent: bool) -> Result<Proc, LocalError> {
        // Appended to, so a restarted server keeps the history before it.
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        if die_with_parent {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()
            .map_err(|source| LocalError::Spawn { program: program.into(), source })?;
        Ok(Proc { child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits up to `timeout` before killing.
    pub fn terminate(&mut self, timeout: Duration) {
        self.signal_and_wait(libc::SIGTERM, timeout);
    }

    /// Sends `sig`, then waits up to `timeout` for the process to exit and
    /// kills it if it has not; true if it exited by itself.
    pub fn signal_and_wait(&mut self, sig: i32, timeout: Duration) -> bool {
        signal(self, sig);
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `redis-server` on `port` with AOF (`appendfsync` = `fsync`) in `dir`:
/// started again with the same arguments it finds its data.
pub fn redis_at(dir: &Path, port: u16, fsync: &str) -> Result<(Proc, String), LocalError> {
    redis_with(dir, port, fsync, &[])
}

/// A replica of the local Redis at `master_port`, with AOF like it, in its
/// own `dir`.
pub fn redis_replica_at(dir: &Path, port: u16, master_port: u16, fsync: &str) -> Result<(Proc, String), LocalError> {
    redis_with(dir, port, fsync, &["--replicaof", "127.0.0.1", &master_port.to_string()])
}

fn redis_with(dir: &Path, port: u16, fsync: &str, extra: &[&str]) -> Result<(Proc, String), LocalError> {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", fsync])
        .args(extra)
        .arg("--dir")
        .arg(dir);
    let p = Proc::spawn(cmd, "redis-server", dir.join(format!("redis-{port}.log")), false)?;
    wait_listening("redis-server", port, &p.log, Duration::from_secs(30))?;
    Ok((p, format!("redis://127.0.0.1:{port}")))
}


/// `reservoir local`: Redis and one Kafka node for development and the demo.
#[derive(clap::Args, Debug, Clone)]
pub struct LocalArgs {
    /// Port of Redis.
    #[arg(long, default_value_t = 6379)]
    pub redis_port: u16,
    /// Port of Kafka's client listener.
    #[arg(long, default_value_t = 9092)]
    pub kafka_port: u16,
    /// Port of Kafka's controller listener.
    #[arg(long, default_value_t = 9093)]
    pub kafka_controller_port: u16,
    /// Where data and logs go (Redis AOF, Kafka's log dirs, server.log).
    #[arg(long, default_value = "target/local")]
    pub dir: PathBuf,
}

/// What `reservoir local` started (None where a server already listened).
pub struct LocalStack {
    pub redis: Option<Proc>,
    pub kafka: Option<Kafka>,
    pub redis_url: String,
    pub bootstrap: String,
}

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

impl LocalStack {
    pub fn start(args: &LocalArgs) -> Result<LocalStack, LocalError> {
        std::fs::create_dir_all(&args.dir)?;
        let redis = if listening(args.redis_port) {
            tracing::info!(port = args.redis_port, "something listens on the Redis port already; using it");
            None
        } else {
            Some(redis_at(&args.dir, args.redis_port, "always")?.0)
        };
        let kafka = if listening(args.kafka_port) {
            tracing::info!(port = args.kafka_port, "something listens on the Kafka port already; using it");
            None
        } else {
            Some(Kafka::start(&args.dir.join("kafka"), 1, Some((args.kafka_port, args.kafka_controller_port)), KafkaSettings::default())?)
        };
        Ok(LocalStack { redis, kafka, redis_url: format!("redis://127.0.0.1:{}", args.redis_port), bootstrap: format!("127.0.0.1:{}", args.kafka_port) })
    }
}

/// The command line of `reservoir run` (binary `exe`) with every setting of
/// `cfg` passed through the environment and flags.
pub fn run_command(exe: &Path, cfg: &Config) -> Command {
    command(exe, cfg, "run")
}

/// `reservoir SUBCOMMAND` with every setting of `cfg` passed through the
/// environment and flags; add the subcommand's own arguments after.
pub fn command(exe: &Path, cfg: &Config, subcommand: &str) -> Command {
    let t = &cfg.topics;
    let mut cmd = Command::new(exe);
    let settings = [
        ("RESERVOIR_KAFKA_BOOTSTRAP", cfg.kafka_bootstrap.as_str()),
        ("RESERVOIR_REDIS_URL", &cfg.redis.url),
        ("RESERVOIR_GROUP_ID", &cfg.group_id),
        ("RESERVOIR_SOURCE", &cfg.source),
        ("RESERVOIR_TOPIC_STOCK", &t.stock),
        ("RESERVOIR_TOPIC_CARTS", &t.carts),
        ("RESERVOIR_TOPIC_ORDERS", &t.orders),
        ("RESERVOIR_TOPIC_SHIPMENTS", &t.shipments),
        ("RESERVOIR_TOPIC_CREDIT_MEMOS", &t.credit_memos),
        ("RESERVOIR_TOPIC_AVAILABILITY", &t.availability),
        ("RESERVOIR_TOPIC_RESERVATIONS", &t.reservations),
        ("RESERVOIR_TOPIC_DEAD_LETTER", &t.dead_letter),
    ];
    cmd.arg(subcommand).envs(settings).env_remove("RESERVOIR_KAFKA_OPTIONS").env_remove("RESERVOIR_KAFKA_PRODUCER_OPTIONS").env_remove("RESERVOIR_KAFKA_CONSUMER_OPTIONS").env_remove("RESERVOIR_CONFIG");
    for var in ["RESERVOIR_REDIS_USERNAME", "RESERVOIR_REDIS_PASSWORD", "RESERVOIR_REDIS_PASSWORD_FILE", "RESERVOIR_REDIS_CA_FILE", "RESERVOIR_REDIS_CLIENT_CERT", "RESERVOIR_REDIS_CLIENT_KEY", "RESERVOIR_REDIS_SENTINEL_MASTER"] {
        cmd.env_remove(var);
    }
    if let Some(m) = &cfg.redis.sentinel_master {
        cmd.env("RESERVOIR_REDIS_SENTINEL_MASTER", m);
    }
    cmd.env("RESERVOIR_REDIS_WAIT_REPLICAS", cfg.wait_replicas.to_string());
    cmd.env("RESERVOIR_REDIS_WAIT_TIMEOUT_MS", cfg.wait_timeout.as_millis().max(1).to_string());
    let r = &cfg.redis;
    // The environment, not flags: a password in argv is visible to `ps`.
    for (var, v) in [("RESERVOIR_REDIS_USERNAME", r.username.clone()), ("RESERVOIR_REDIS_PASSWORD", r.password.clone())] {
        if let Some(v) = v {
            cmd.env(var, v);
        }
    }
    for (var, p) in [("RESERVOIR_REDIS_CA_FILE", &r.ca_file), ("RESERVOIR_REDIS_CLIENT_CERT", &r.client_cert), ("RESERVOIR_REDIS_CLIENT_KEY", &r.client_key)] {
        if let Some(p) = p {
            cmd.env(var, p);
        }
    }
    let e = &cfg.engine;
    cmd.env("RESERVOIR_HOLD_TIME_SECS", e.hold_time.as_secs().max(1).to_string());
    cmd.env("RESERVOIR_IDEMPOTENCY_RETENTION_SECS", e.idempotency_retention.as_secs().max(1).to_string());
    cmd.env("RESERVOIR_ORDER_RETENTION_SECS", e.order_retention.as_secs().max(1).to_string());
    cmd.env("RESERVOIR_MAX_MESSAGE_BYTES", cfg.max_message_bytes.to_string());
    cmd.env("RESERVOIR_BATCH_SIZE", cfg.batch_size.to_string());
    cmd.env("RESERVOIR_SWEEP_INTERVAL_MS", cfg.sweep_interval.as_millis().to_string());
    cmd.env("RESERVOIR_METRICS_ADDR", cfg.metrics_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()));
    cmd.env_remove("RESERVOIR_SABOTAGE").env_remove("RESERVOIR_CRASH_POINT");
    if cfg.crash_point {
        cmd.env("RESERVOIR_CRASH_POINT", "true");
    }
    if let Some(s) = cfg.sabotage {
        cmd.env("RESERVOIR_SABOTAGE", s.name());
    }
    for (flag, options) in [("kafka-option", &cfg.kafka_options), ("kafka-producer-option", &cfg.kafka_producer_options), ("kafka-consumer-option", &cfg.kafka_consumer_options)] {
        for (k, v) in options {
            cmd.arg(format!("--{flag}={k}={v}"));
        }
    }
    cmd
}

/// `reservoir run` (this executable) as a child, logging to DIR/NAME.log.
pub fn worker(cfg: &Config, dir: &Path, name: &str) -> Result<Proc, LocalError> {
    let exe = std::env::current_exe()?;
    let mut cmd = run_command(&exe, cfg);
    cmd.env("RUST_LOG", std::env::var("RESERVOIR_WORKER_LOG").unwrap_or_else(|_| "info".into()));
    Proc::spawn(cmd, &exe.display().to_string(), dir.join(format!("{name}.log")), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        settings: crate::config::Settings,
    }

    #[test]
    fn a_child_worker_gets_each_kind_of_kafka_option_as_its_own_flag() {
        let mut cfg = Config::new("k:1", "redis://r", "g");
        cfg.kafka_options.insert("client.id".into(), "w".into());
        cfg.kafka_producer_options.insert("enable.idempotence".into(), "false".into());
        cfg.kafka_consumer_options.insert("fetch.min.bytes".into(), "10".into());
        let cmd = run_command(Path::new("reservoir"), &cfg);
        let args: Vec<String> = cmd.get_args().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
        let s = Run::try_parse_from(std::iter::once("run".to_string()).chain(args)).unwrap().settings;
        assert_eq!(s.kafka_options, ["client.id=w"]);
        assert_eq!(s.kafka_producer_options, ["enable.idempotence=false"]);
        assert_eq!(s.kafka_consumer_options, ["fetch.min.bytes=10"]);
    }
}
