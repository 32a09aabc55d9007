//! Apache Kafka as child processes: one KRaft node that is broker and
//! controller, or a quorum of three such nodes, on free loopback ports. The
//! jars are Kafka's own (`kafka_2.13` and its runtime dependencies), which
//! `scripts/deps.sh` resolves with Maven into [`libs_dir`].
//!
//! Each node gets a folder with its `server.properties`, a log4j2 file
//! that sends its log to `server.log` there, and its data. Nodes can be
//! killed, frozen and started again on the same ports and data, which is
//! what the fault tests and the soak do to them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use super::{free_port, signal, LocalError, Proc};

/// The Apache Kafka release `scripts/deps.sh` resolves (`scripts/kafka/pom.xml`).
pub const KAFKA_VERSION: &str = "4.1.1";

/// Where the broker's jars are: `RESERVOIR_KAFKA_LIBS`, else
/// `~/.cache/reservoir/kafka-VERSION/libs` (what `scripts/deps.sh` fills).
pub fn libs_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RESERVOIR_KAFKA_LIBS") {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("reservoir").join(format!("kafka-{KAFKA_VERSION}")).join("libs")
}

fn java() -> PathBuf {
    std::env::var_os("JAVA_HOME").map(|h| PathBuf::from(h).join("bin").join("java")).filter(|j| j.exists()).unwrap_or_else(|| PathBuf::from("java"))
}

/// What a node's `server.properties` gets beyond the listeners and the quorum.
#[derive(Clone, Debug)]
pub struct KafkaSettings {
    /// Maximum JVM heap, e.g. `768m`.
    pub heap: String,
    /// More `server.properties` lines (`key`, `value`), after the defaults.
    pub properties: Vec<(String, String)>,
    /// Kill the nodes when the process that started them dies (tests): see
    /// [`Kafka::die_with_parent`].
    pub die_with_parent: bool,
    /// SSL and SASL_SSL listeners beside the plaintext one.
    pub tls: Option<KafkaTls>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings { heap: "768m".into(), properties: Vec::new(), die_with_parent: false, tls: None }
    }
}

/// TLS listeners of every node, on free ports: `SSL` and `SASL_SSL` with
/// SCRAM-SHA-256 and SCRAM-SHA-512 (PLAIN besides, for the same users).
/// Brokers and controllers keep talking plaintext among themselves.
#[derive(Clone, Debug)]
pub struct KafkaTls {
    /// PEM file: the broker's private key (PKCS#8, unencrypted), then its
    /// certificate chain. The certificate must name 127.0.0.1.
    pub keystore: PathBuf,
    /// PEM CA bundle that client certificates are checked against.
    pub truststore: PathBuf,
    /// `ssl.client.auth` of the SSL listener: `none`, `requested` or `required`.
    pub client_auth: String,
    /// SCRAM users (name, password) created when the nodes are formatted.
    pub scram_users: Vec<(String, String)>,
}

/// One KRaft node: broker and controller in one JVM.
pub struct KafkaNode {
    pub id: u32,
    pub port: u16,
    pub controller_port: u16,
    /// The SSL and SASL_SSL listeners' ports, with [`KafkaSettings::tls`].
    pub ssl_port: Option<u16>,
    pub sasl_ssl_port: Option<u16>,
    pub dir: PathBuf,
    proc: Option<Proc>,
}

impl KafkaNode {
    pub fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    pub fn is_running(&self) -> bool {
        self.proc.is_some()
    }
}

/// A running single node or quorum; every node is stopped when dropped.
pub struct Kafka {
    pub nodes: Vec<KafkaNode>,
    /// `host:port,...` of every node's client listener.
    pub bootstrap: String,
    /// The same for the SSL and the SASL_SSL listeners, with [`KafkaSettings::tls`].
    pub ssl_bootstrap: Option<String>,
    pub sasl_ssl_bootstrap: Option<String>,
    settings: KafkaSettings,
}

/// Replication settings for `n` nodes: everything at n (at most 3), and
/// writes acknowledged by 2 where there are replicas to spare.
fn replication_properties(n: usize) -> Vec<(&'static str, String)> {
    let rf = n.min(3).to_string();
    let isr = if n >= 3 { "2" } else { "1" }.to_string();
    vec![
        ("default.replication.factor", rf.clone()),
        ("min.insync.replicas", isr.clone()),
        ("offsets.topic.replication.factor", rf.clone()),
        ("transaction.state.log.replication.factor", rf.clone()),
        ("transaction.state.log.min.isr", isr.clone()),
        ("share.coordinator.state.topic.replication.factor", rf),
        ("share.coordinator.state.topic.min.isr", isr),
    ]
}

/// A node's `server.properties`: listeners on loopback, the quorum, and
/// settings that make a test broker quick to start and to rebalance.
pub fn server_properties(node: &KafkaNode, voters: &str, n: usize, extra: &[(String, String)], tls: Option<&KafkaTls>) -> String {
    let mut p: Vec<(String, String)> = vec![
        ("process.roles".into(), "broker,controller".into()),
        ("node.id".into(), node.id.to_string()),
        ("controller.quorum.voters".into(), voters.into()),
        ("listeners".into(), format!("PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}", node.port, node.controller_port)),
        ("advertised.listeners".into(), format!("PLAINTEXT://127.0.0.1:{}", node.port)),
        ("controller.listener.names".into(), "CONTROLLER".into()),
        ("inter.broker.listener.name".into(), "PLAINTEXT".into()),
        ("listener.security.protocol.map".into(), "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".into()),
        ("log.dirs".into(), node.dir.join("data").display().to_string()),
        ("num.partitions".into(), "1".into()),
        ("auto.create.topics.enable".into(), "false".into()),
        // A consumer group starts at once instead of waiting 3 s for more members.
        ("group.initial.rebalance.delay.ms".into(), "0".into()),
        // 50 partitions each by default: minutes of start-up on 2 cores.
        ("offsets.topic.num.partitions".into(), "10".into()),
        ("transaction.state.log.num.partitions".into(), "10".into()),
        // Small segments and indexes: many short-lived test topics.
        ("log.segment.bytes".into(), (16 << 20).to_string()),
        ("log.index.size.max.bytes".into(), (1 << 20).to_string()),
        ("num.network.threads".into(), "2".into()),
        ("num.io.threads".into(), "4".into()),
    ];
    p.extend(replication_properties(n).into_iter().map(|(k, v)| (k.to_string(), v)));
    if let (Some(t), Some(ssl), Some(sasl)) = (tls, node.ssl_port, node.sasl_ssl_port) {
        let set = |p: &mut Vec<(String, String)>, k: &str, v: String| match p.iter_mut().find(|(pk, _)| pk == k) {
            Some(e) => e.1 = v,
            None => p.push((k.to_string(), v)),
        };
        set(&mut p, "listeners", format!("PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{},SSL://127.0.0.1:{ssl},SASL_SSL://127.0.0.1:{sasl}", node.port, node.controller_port));
        set(&mut p, "advertised.listeners", format!("PLAINTEXT://127.0.0.1:{},SSL://127.0.0.1:{ssl},SASL_SSL://127.0.0.1:{sasl}", node.port));
        set(&mut p, "listener.security.protocol.map", "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL".into());
        set(&mut p, "ssl.keystore.type", "PEM".into());
        set(&mut p, "ssl.keystore.location", t.keystore.display().to_string());
        set(&mut p, "ssl.truststore.type", "PEM".into());
        set(&mut p, "ssl.truststore.location", t.truststore.display().to_string());
        set(&mut p, "listener.name.ssl.ssl.client.auth", t.client_auth.clone());
        set(&mut p, "sasl.enabled.mechanisms", "SCRAM-SHA-256,SCRAM-SHA-512".into());
        for mech in ["scram-sha-256", "scram-sha-512"] {
            set(&mut p, &format!("listener.name.sasl_ssl.{mech}.sasl.jaas.config"), "org.apache.kafka.common.security.scram.ScramLoginModule required;".into());
        }
    }
    for (k, v) in extra {
        match p.iter_mut().find(|(pk, _)| pk == k) {
            Some(e) => e.1 = v.clone(),
            None => p.push((k.clone(), v.clone())),
        }
    }
    p.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

const LOG4J2: &str = "status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
";

/// A random cluster id: 16 bytes, URL-safe base64 without padding (what
/// `kafka-storage random-uuid` prints).
fn cluster_id() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
}

impl Kafka {
    /// One node on free ports, its data in `dir`.
    pub fn single(dir: &Path) -> Result<Kafka, LocalError> {
        Kafka::start(dir, 1, None, KafkaSettings::default())
    }

    /// A quorum of `n` nodes on free ports, data in `dir/node-ID`:
    /// internal topics (and topics created without a replication factor)
    /// at replication factor min(n, 3), `min.insync.replicas` 2 from 3 nodes.
    pub fn cluster(dir: &Path, n: usize) -> Result<Kafka, LocalError> {
        Kafka::start(dir, n, None, KafkaSettings::default())
    }

    /// `n` nodes; the first listens on `ports` (client, controller) when
    /// given (the demo's 9092 and 9093), the others on free ports. A node
    /// folder formatted before keeps its data and cluster id.
    pub fn start(dir: &Path, n: usize, ports: Option<(u16, u16)>, settings: KafkaSettings) -> Result<Kafka, LocalError> {
        let libs = libs_dir();
        if !libs.join(format!("kafka_2.13-{KAFKA_VERSION}.jar")).exists() {
            return Err(LocalError::NoKafka { libs: libs.display().to_string() });
        }
        let mut nodes = Vec::new();
        for i in 0..n {
            let id = i as u32 + 1;
            let node_dir = if n == 1 { dir.to_path_buf() } else { dir.join(format!("node-{id}")) };
            std::fs::create_dir_all(&node_dir)?;
            let (port, controller_port) = match (i, ports) {
                (0, Some(p)) => p,
                _ => (free_port()?, free_port()?),
            };
            let (ssl_port, sasl_ssl_port) = match settings.tls {
                Some(_) => (Some(free_port()?), Some(free_port()?)),
                None => (None, None),
            };
            nodes.push(KafkaNode { id, port, controller_port, ssl_port, sasl_ssl_port, dir: node_dir, proc: None });
        }
        let voters = nodes.iter().map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port)).collect::<Vec<_>>().join(",");
        let id = cluster_id();
        for node in &nodes {
            std::fs::write(node.dir.join("server.properties"), server_properties(node, &voters, n, &settings.properties, settings.tls.as_ref()))?;
            std::fs::write(node.dir.join("log4j2.properties"), LOG4J2)?;
        }
        // Formatting is a JVM start each: format the nodes side by side.
        let formats: Vec<_> = nodes.iter().map(|node| format(node, &id, &settings)).collect::<Result<_, _>>()?;
        for (node, child) in nodes.iter().zip(formats) {
            let out = child.wait_with_output()?;
            if !out.status.success() {
                return Err(LocalError::Format { dir: node.dir.display().to_string(), output: String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr) });
            }
        }
        let bootstrap = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect::<Vec<_>>().join(",");
        let listed = |port: fn(&KafkaNode) -> Option<u16>| -> Option<String> { nodes.iter().map(|n| port(n).map(|p| format!("127.0.0.1:{p}"))).collect::<Option<Vec<_>>>().map(|v| v.join(",")) };
        let (ssl_bootstrap, sasl_ssl_bootstrap) = (listed(|n| n.ssl_port), listed(|n| n.sasl_ssl_port));
        let mut k = Kafka { nodes, bootstrap, ssl_bootstrap, sasl_ssl_bootstrap, settings };
        for i in 0..n {
            k.spawn(i)?;
        }
        k.wait_ready(Duration::from_secs(120))?;
        Ok(k)
    }

    fn java_command(&self, node: &KafkaNode, main: &str) -> Command {
        java_command(node, main, &self.settings)
    }

    fn spawn(&mut self, i: usize) -> Result<(), LocalError> {
        let node = &self.nodes[i];
        let mut cmd = self.java_command(node, "kafka.Kafka");
        cmd.arg(node.dir.join("server.properties"));
        let p = Proc::spawn(cmd, "java (Apache Kafka)", node.dir.join("stdout.log"), self.settings.die_with_parent)?;
        self.nodes[i].proc = Some(p);
        Ok(())
    }

    /// Waits until every running node's listener answers and the cluster's
    /// metadata lists every running node (then topics can be created).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), LocalError> {
        let start = Instant::now();
        let running: Vec<usize> = (0..self.nodes.len()).filter(|i| self.nodes[*i].proc.is_some()).collect();
        let bootstrap = running.iter().map(|i| format!("127.0.0.1:{}", self.nodes[*i].port)).collect::<Vec<_>>().join(",");
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("log_level", "3")
            .create()
            .map_err(|e| LocalError::NotReady { what: "Apache Kafka".into(), why: e.to_string(), log: self.nodes[0].log().display().to_string() })?;
        let mut why;
        loop {
            for &i in &running {
                let node = &mut self.nodes[i];
                if let Some(p) = node.proc.as_mut() {
                    if let Ok(Some(status)) = p.child.try_wait() {
                        node.proc = None;
                        return Err(LocalError::Exited { what: format!("Apache Kafka node {}", node.id), status: status.to_string(), log: node.log().display().to_string() });
                    }
                }
            }
            match client.fetch_metadata(None, Duration::from_secs(2)) {
                Ok(md) => {
                    let up: Vec<i32> = md.brokers().iter().map(|b| b.id()).collect();
                    if running.iter().all(|i| up.contains(&(self.nodes[*i].id as i32))) {
                        return Ok(());
                    }
                    why = format!("the metadata lists nodes {up:?}");
                }
                Err(e) => why = e.to_string(),
            }
            if start.elapsed() > timeout {
                return Err(LocalError::NotReady { what: format!("Apache Kafka at {bootstrap}"), why: format!("not ready within {} s: {why}", timeout.as_secs()), log: self.nodes[0].log().display().to_string() });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// kill -9 of node `i` (index into `nodes`).
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].proc.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// SIGTERM to node `i`: a controlled shutdown, then a kill after `timeout`.
    pub fn stop(&mut self, i: usize, timeout: Duration) {
        if let Some(mut p) = self.nodes[i].proc.take() {
            p.terminate(timeout);
        }
    }

    /// Starts a stopped node again on its ports and data, and waits until
    /// the cluster lists it.
    pub fn restart(&mut self, i: usize) -> Result<(), LocalError> {
        if self.nodes[i].proc.is_none() {
            self.spawn(i)?;
        }
        self.wait_ready(Duration::from_secs(120))
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) to node `i`.
    pub fn freeze(&self, i: usize, on: bool) {
        if let Some(p) = &self.nodes[i].proc {
            signal(p, if on { libc::SIGSTOP } else { libc::SIGCONT });
        }
    }

    /// The index in `nodes` of the leader of `topic`/`partition`, as the
    /// cluster's metadata says now.
    pub fn leader_of(&self, topic: &str, partition: i32) -> Result<Option<usize>, LocalError> {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("log_level", "3")
            .create()
            .map_err(|e| LocalError::NotReady { what: "Apache Kafka".into(), why: e.to_string(), log: self.nodes[0].log().display().to_string() })?;
        let md = client
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| LocalError::NotReady { what: format!("Apache Kafka at {}", self.bootstrap), why: e.to_string(), log: self.nodes[0].log().display().to_string() })?;
        let leader = md.topics().iter().find(|t| t.name() == topic).and_then(|t| t.partitions().iter().find(|p| p.id() == partition)).map(|p| p.leader());
        Ok(leader.and_then(|l| self.nodes.iter().position(|n| n.id as i32 == l)))
    }
}

fn java_command(node: &KafkaNode, main: &str, settings: &KafkaSettings) -> Command {
    let mut cmd = Command::new(java());
    cmd.arg(format!("-Xmx{}", settings.heap))
        .arg("-Xms128m")
        .args(["-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35", "-Djava.awt.headless=true"])
        .arg(format!("-Dlog4j2.configurationFile={}", node.dir.join("log4j2.properties").display()))
        .arg(format!("-Dkafka.logs.dir={}", node.dir.display()))
        .arg("-cp")
        .arg(format!("{}/*", libs_dir().display()))
        .arg(main)
        .current_dir(&node.dir);
    cmd
}

/// `kafka-storage format` for one node, as a child to wait for.
fn format(node: &KafkaNode, cluster_id: &str, settings: &KafkaSettings) -> Result<std::process::Child, LocalError> {
    let mut cmd = java_command(node, "kafka.tools.StorageTool", settings);
    // One argument with `=`: a random id can start with `-`, which the
    // tool's parser would otherwise take for an option (1 start in 64).
    cmd.args(["format", "--ignore-formatted", &format!("--cluster-id={cluster_id}"), "-c"]).arg(node.dir.join("server.properties"));
    for (name, password) in settings.tls.iter().flat_map(|t| &t.scram_users) {
        for mech in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
            cmd.arg("--add-scram").arg(format!("{mech}=[name={name},password={password}]"));
        }
    }
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    cmd.spawn().map_err(|source| LocalError::Spawn { program: java().display().to_string(), source })
}

impl Drop for Kafka {
    fn drop(&mut self) {
        // All at once: a node stopping alone waits for the others' answers.
        for n in &self.nodes {
            if let Some(p) = &n.proc {
                signal(p, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for n in &mut self.nodes {
            if let Some(mut p) = n.proc.take() {
                p.terminate(deadline.saturating_duration_since(Instant::now()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_of_three_replicates_everything_and_needs_two_in_sync() {
        let node = KafkaNode { id: 2, port: 9001, controller_port: 9002, ssl_port: None, sasl_ssl_port: None, dir: PathBuf::from("/d"), proc: None };
        let p = server_properties(&node, "1@a,2@b,3@c", 3, &[("log.segment.bytes".into(), "1048576".into()), ("x.y".into(), "z".into())], None);
        for line in [
            "node.id=2",
            "controller.quorum.voters=1@a,2@b,3@c",
            "listeners=PLAINTEXT://127.0.0.1:9001,CONTROLLER://127.0.0.1:9002",
            "offsets.topic.replication.factor=3",
            "default.replication.factor=3",
            "min.insync.replicas=2",
            "transaction.state.log.min.isr=2",
            "group.initial.rebalance.delay.ms=0",
            "log.segment.bytes=1048576",
            "x.y=z",
        ] {
            assert!(p.lines().any(|l| l == line), "{line} missing from\n{p}");
        }
        assert_eq!(p.lines().filter(|l| l.starts_with("log.segment.bytes=")).count(), 1, "an extra setting replaces the default");
        let single = server_properties(&node, "2@b", 1, &[], None);
        assert!(single.lines().any(|l| l == "offsets.topic.replication.factor=1") && single.lines().any(|l| l == "min.insync.replicas=1"));
    }

    /// Needs the broker's jars (scripts/deps.sh, which scripts/test.sh runs).
    #[test]
    fn a_cluster_id_starting_with_a_dash_formats() {
        let dir = tempfile::tempdir().unwrap();
        let node = KafkaNode { id: 1, port: 9001, controller_port: 9002, ssl_port: None, sasl_ssl_port: None, dir: dir.path().to_path_buf(), proc: None };
        std::fs::write(dir.path().join("server.properties"), server_properties(&node, "1@127.0.0.1:9002", 1, &[], None)).unwrap();
        let out = format(&node, "-AAAAAAAAAAAAAAAAAAAAA", &KafkaSettings::default()).unwrap().wait_with_output().unwrap();
        assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
}
