//! One connection type for a single Redis and a Redis Cluster, and script
//! calls by EVALSHA with an EVAL fallback.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::{Cmd, ErrorKind, IntoConnectionInfo, Pipeline, RedisFuture, ServerErrorKind, Value};

use super::StoreError;

/// A multiplexed connection: clones share it, and concurrent calls are
/// pipelined on the wire by redis-rs.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Nagle's algorithm holds back a small write while an earlier one is
/// unacknowledged; with many calls pipelined on one connection that added
/// milliseconds to every round trip (docs/BENCHMARKS.md).
fn tcp() -> TcpSettings {
    TcpSettings::default().set_nodelay(true)
}

impl Conn {
    /// `url` is one Redis URL, or a comma-separated seed list (two or more
    /// URLs) of a Redis Cluster.
    pub async fn connect(url: &str) -> Result<Conn, StoreError> {
        let urls: Vec<&str> = url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        match urls.as_slice() {
            [] => Err(StoreError::Config("the Redis URL is empty: set RESERVOIR_REDIS_URL, e.g. redis://127.0.0.1:6379".into())),
            [one] => {
                let info = one.into_connection_info().map_err(|e| StoreError::Config(format!("Redis URL {one:?}: {e}")))?;
                let client = redis::Client::open(info.set_tcp_settings(tcp())).map_err(|e| StoreError::Config(format!("Redis URL {one:?}: {e}")))?;
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(std::time::Duration::from_secs(5)))
                    .set_response_timeout(Some(std::time::Duration::from_secs(10)))
                    .set_number_of_retries(1);
                Ok(Conn::Single(ConnectionManager::new_with_config(client, cfg).await?))
            }
            many => {
                let client = redis::cluster::ClusterClient::builder(many.iter().copied())
                    .connection_timeout(std::time::Duration::from_secs(5))
                    .response_timeout(std::time::Duration::from_secs(10))
                    .tcp_settings(tcp())
                    .build()
                    .map_err(|e| StoreError::Config(format!("Redis Cluster seeds {url:?}: {e}")))?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }
    fn req_packed_commands<'a>(&'a mut self, p: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(p, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(p, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A Lua script: its source and SHA1.
pub struct Lua {
    pub name: &'static str,
    pub code: String,
    pub sha: String,
}

impl Lua {
    pub fn new(name: &'static str, code: String) -> Lua {
        let sha = redis::Script::new(&code).get_hash().to_string();
        Lua { name, code, sha }
    }

    /// EVALSHA, falling back to EVAL (which also caches the script on the
    /// node that owns the keys) when the node has not seen it: after a
    /// restart, a failover or `SCRIPT FLUSH`.
    pub async fn call(&self, conn: &mut Conn, keys: &[&str], args: &[&str]) -> Result<Value, StoreError> {
        let started = std::time::Instant::now();
        let r = self.call_once(conn, keys, args).await;
        metrics::histogram!(crate::metrics::SCRIPT_SECONDS, "script" => self.name).record(started.elapsed().as_secs_f64());
        r
    }

    async fn call_once(&self, conn: &mut Conn, keys: &[&str], args: &[&str]) -> Result<Value, StoreError> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(keys.len()).arg(keys).arg(args);
        match cmd.query_async::<Value>(conn).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(&self.code).arg(keys.len()).arg(keys).arg(args);
                cmd.query_async(conn).await.map_err(|e| StoreError::from_script(self.name, e))
            }
            r => r.map_err(|e| StoreError::from_script(self.name, e)),
        }
    }
}
