//! Throw-away TLS material for the connectivity tests (a CA and
//! certificates for 127.0.0.1, made with the `openssl` command), Redis
//! with TLS and ACL users, and Apache Kafka's own Java producer with a
//! chosen compression codec.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A CA of a test's own, in a temporary folder.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    /// The CA's certificate (PEM): what clients trust.
    pub ca: PathBuf,
}

/// A key and certificate issued by a [`TestCa`] for 127.0.0.1 and localhost.
pub struct Issued {
    /// PKCS#8 private key, unencrypted (PEM).
    pub key: PathBuf,
    pub cert: PathBuf,
    /// The key, then the certificate: a PEM keystore as Kafka reads one.
    pub keystore: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("the openssl command (Debian's openssl package)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::Builder::new().prefix("reservoir-test-ca-").tempdir().unwrap();
        openssl(dir.path(), &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=reservoir test CA"]);
        let ca = dir.path().join("ca.pem");
        TestCa { dir, ca }
    }

    /// A certificate good for a server and a client on loopback.
    pub fn issue(&self, name: &str) -> Issued {
        let d = self.dir.path();
        let (key, csr, cert, ext) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
        std::fs::write(d.join(&ext), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n").unwrap();
        openssl(d, &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", &format!("/CN={name}")]);
        openssl(d, &["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", &cert, "-days", "2", "-extfile", &ext]);
        let keystore = d.join(format!("{name}-keystore.pem"));
        let mut pem = std::fs::read(d.join(&key)).unwrap();
        pem.extend(std::fs::read(d.join(&cert)).unwrap());
        std::fs::write(&keystore, pem).unwrap();
        Issued { key: d.join(key), cert: d.join(cert), keystore }
    }
}

/// redis-server on TLS only (no plaintext port), the `default` user off
/// and one ACL user `app` with the given password; one node, or with
/// `cluster` a node of a Redis Cluster (its bus over TLS too). With
/// `client_certs`, clients must present a certificate the CA signed.
pub fn spawn_tls_redis(port: u16, dir: &Path, server: &Issued, ca: &Path, password: &str, cluster: bool, client_certs: bool) -> Child {
    let conf = dir.join(format!("redis-{port}.conf"));
    let mut text = format!(
        "port 0\ntls-port {port}\nbind 127.0.0.1\nprotected-mode no\nsave \"\"\nappendonly no\ndir {}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\ntls-auth-clients {}\nuser default off\nuser app on >{password} ~* &* +@all\n",
        dir.display(),
        server.cert.display(),
        server.key.display(),
        ca.display(),
        if client_certs { "yes" } else { "no" }
    );
    if cluster {
        text += &format!("cluster-enabled yes\ncluster-config-file nodes-{port}.conf\ncluster-node-timeout 5000\ntls-cluster yes\n");
    }
    std::fs::write(&conf, text).unwrap();
    Command::new("redis-server").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("redis-server must be installed (.ci/run does it)")
}

/// `redis-cli` over TLS as user `app` (with `client`'s certificate when
/// given), with `args`; its stdout.
pub fn tls_cli(port: u16, ca: &Path, client: Option<&Issued>, password: &str, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("redis-cli");
    if let Some(c) = client {
        cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
    }
    let out = cmd
        .args(["--tls", "--cacert"])
        .arg(ca)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--user", "app", "--pass", password, "--no-auth-warning"])
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

pub fn wait_tls_ping(port: u16, ca: &Path, client: Option<&Issued>, password: &str) {
    let start = std::time::Instant::now();
    while !tls_cli(port, ca, client, password, &["PING"]).is_ok_and(|o| o.contains("PONG")) {
        assert!(start.elapsed() < Duration::from_secs(10), "TLS redis-server on {port} did not answer PING within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `records` (key, value) to `topic` with Kafka's own Java client
/// (`kafka-clients` from the broker's jars) and `compression.type` =
/// `codec`, in batches of several records; fails unless every one is acknowledged.
pub fn java_produce(bootstrap: &str, topic: &str, codec: &str, records: &[(String, Vec<u8>)]) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("records.tsv");
    let mut text = String::new();
    for (k, v) in records {
        let v = String::from_utf8(v.clone()).unwrap();
        assert!(!k.contains('\t') && !v.contains('\n'), "one record per line");
        text += &format!("{k}\t{v}\n");
    }
    std::fs::write(&input, text).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/CodecProducer.java");
    let java = std::env::var_os("JAVA_HOME").map(|h| PathBuf::from(h).join("bin/java")).filter(|j| j.exists()).unwrap_or_else(|| PathBuf::from("java"));
    let out = Command::new(java)
        .arg("-cp")
        .arg(format!("{}/*", reservoir::local::kafka::libs_dir().display()))
        .arg(source)
        .args([bootstrap, topic, codec])
        .arg(&input)
        .output()
        .expect("java (scripts/deps.sh installs it)");
    assert!(out.status.success(), "the Java producer ({codec}) failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
