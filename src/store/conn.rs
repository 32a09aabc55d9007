//! One connection type for a single Redis and a Redis Cluster, and script
//! calls by EVALSHA with an EVAL fallback.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, ErrorKind, Pipeline, RedisFuture, ServerErrorKind, Value};

use super::{RedisTarget, StoreError};

/// A multiplexed connection: clones share it, and concurrent calls are
/// pipelined on the wire by redis-rs.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    /// The master a set of Redis Sentinels names, followed across failovers.
    Sentinel(std::sync::Arc<super::sentinel::Failover>),
}

/// Nagle's algorithm holds back a small write while an earlier one is
/// unacknowledged; with many calls pipelined on one connection that added
/// milliseconds to every round trip (docs/BENCHMARKS.md).
pub(super) fn tcp() -> TcpSettings {
    TcpSettings::default().set_nodelay(true)
}

impl Conn {
    /// `target`'s URL is one Redis URL, or a comma-separated seed list (two
    /// or more URLs) of a Redis Cluster; `rediss://` connects over TLS.
    pub async fn connect(target: impl Into<RedisTarget>) -> Result<Conn, StoreError> {
        let target: RedisTarget = target.into();
        let manager = || {
            redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(std::time::Duration::from_secs(5)))
                .set_response_timeout(Some(std::time::Duration::from_secs(10)))
                .set_number_of_retries(1)
        };
        if let Some(master) = &target.sentinel_master {
            return Ok(Conn::Sentinel(super::sentinel::Failover::connect(&target, master, manager()).await?));
        }
        let certs = target.certificates()?;
        match target.urls().as_slice() {
            [] => Err(StoreError::Config("the Redis URL is empty: set RESERVOIR_REDIS_URL, e.g. redis://127.0.0.1:6379".into())),
            [one] => {
                let info = target.info(one)?.set_tcp_settings(tcp());
                let client = match certs {
                    Some(c) => redis::Client::build_with_tls(info, c),
                    None => redis::Client::open(info),
                }
                .map_err(|e| StoreError::Config(format!("Redis URL {target}: {e}")))?;
                Ok(Conn::Single(ConnectionManager::new_with_config(client, manager()).await.map_err(|e| target.connect_error(e))?))
            }
            many => {
                let seeds = many.iter().map(|u| target.info(u)).collect::<Result<Vec<_>, _>>()?;
                let mut b = redis::cluster::ClusterClient::builder(seeds)
                    .connection_timeout(std::time::Duration::from_secs(5))
                    .response_timeout(std::time::Duration::from_secs(10))
                    .tcp_settings(tcp());
                if let Some(c) = certs {
                    b = b.certs(c);
                }
                let client = b.build().map_err(|e| StoreError::Config(format!("Redis Cluster seeds {target}: {e}")))?;
                Ok(Conn::Cluster(client.get_async_connection().await.map_err(|e| target.connect_error(e))?))
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
            Conn::Sentinel(f) => f.req_packed_command(cmd),
        }
    }
    fn req_packed_commands<'a>(&'a mut self, p: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(p, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(p, offset, count),
            Conn::Sentinel(f) => f.req_packed_commands(p, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(f) => f.get_db(),
        }
    }
}

/// A Lua script: its source and SHA1.
pub struct Lua {
    pub name: &'static str,
    pub code: String,
    pub sha: String,
    budget: CallBudget,
}

/// How many more script calls may run before every further one fails as
/// if the process had died right there: the crash points of the engine's
/// tests (a multi-script operation stopped between two scripts). Unlimited
/// unless a test sets it; clones share it.
#[derive(Clone, Debug)]
pub struct CallBudget(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl Default for CallBudget {
    fn default() -> CallBudget {
        CallBudget(std::sync::Arc::new(std::sync::atomic::AtomicI64::new(-1)))
    }
}

impl CallBudget {
    /// `Some(n)`: n more calls, then none; `None`: unlimited again.
    pub fn set(&self, calls: Option<u32>) {
        self.0.store(calls.map_or(-1, i64::from), std::sync::atomic::Ordering::SeqCst);
    }

    fn take(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        // A load only when unlimited (always, outside tests): no write to
        // the shared counter on every script call.
        self.0.load(SeqCst) < 0
            || self
                .0
                .fetch_update(SeqCst, SeqCst, |b| match b {
                    b if b < 0 => Some(b),
                    0 => None,
                    b => Some(b - 1),
                })
                .is_ok()
    }
}

impl Lua {
    pub fn new(name: &'static str, code: String) -> Lua {
        let sha = redis::Script::new(&code).get_hash().to_string();
        Lua { name, code, sha, budget: CallBudget::default() }
    }

    /// This script, counting its calls in `budget`.
    pub fn sharing(mut self, budget: &CallBudget) -> Lua {
        self.budget = budget.clone();
        self
    }

    /// EVALSHA, falling back to EVAL (which also caches the script on the
    /// node that owns the keys) when the node has not seen it: after a
    /// restart, a failover or `SCRIPT FLUSH`.
    pub async fn call(&self, conn: &mut Conn, keys: &[&str], args: &[&str]) -> Result<Value, StoreError> {
        if !self.budget.take() {
            let died = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, format!("crash point before {} (a test's call budget is spent)", self.name));
            return Err(StoreError::Unavailable(died.into()));
        }
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

/// Key listing for operator tools: bounded pages, on one Redis or on every
/// master of a cluster.
impl Conn {
    /// The servers a full SCAN must visit: `["server"]` for one Redis, the
    /// masters' `host:port` (sorted) for a cluster.
    pub async fn scan_nodes(&mut self) -> Result<Vec<String>, StoreError> {
        let Conn::Cluster(c) = self else { return Ok(vec![SINGLE.to_string()]) };
        let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(c).await?;
        let mut out = Vec::new();
        // Each entry: [start, end, [host, port, id, ...] (the master), replicas...].
        for range in super::reply::items(&slots).unwrap_or_default() {
            let master = super::reply::items(range).and_then(|r| r.get(2)).and_then(super::reply::items);
            if let Some([host, port, ..]) = master {
                if let (Some(h), Some(p)) = (super::reply::text(host), super::reply::text(port)) {
                    out.push(format!("{h}:{p}"));
                }
            }
        }
        out.sort();
        out.dedup();
        if out.is_empty() {
            return Err(StoreError::Reply("CLUSTER SLOTS named no master".into()));
        }
        Ok(out)
    }

    /// One SCAN page on `node` (from [`Conn::scan_nodes`]): (next cursor, keys).
    /// Cursor 0 in the reply means the node is done.
    pub async fn scan_page(&mut self, node: &str, cursor: u64, pattern: &str, count: usize, ty: &str) -> Result<(u64, Vec<String>), StoreError> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(count).arg("TYPE").arg(ty);
        let v = match self {
            Conn::Single(_) | Conn::Sentinel(_) => cmd.query_async::<Value>(self).await?,
            Conn::Cluster(c) => {
                let (host, port) = node
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)))
                    .ok_or_else(|| StoreError::Invalid(format!("cluster node {node:?} is not HOST:PORT")))?;
                c.route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port })).await?
            }
        };
        redis::from_redis_value::<(u64, Vec<String>)>(v).map_err(|e| StoreError::Reply(format!("SCAN on {node}: {e}")))
    }

    /// Every key that starts with `prefix`, whose hash tag puts all of them
    /// in one slot (a sku's order records). On a cluster this lists the
    /// slot's keys; on one Redis it SCANs the whole keyspace, so it suits a
    /// person's inspection, not a hot path.
    pub async fn keys_with_prefix(&mut self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        match self {
            Conn::Single(_) | Conn::Sentinel(_) => {
                let pattern = format!("{}*", glob_escape(prefix));
                let mut cursor = 0;
                loop {
                    let (next, keys) = self.scan_page(SINGLE, cursor, &pattern, 10_000, "hash").await?;
                    out.extend(keys);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            Conn::Cluster(c) => {
                let slot: u16 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(prefix).query_async(c).await?;
                let route = || RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master)));
                let mut count = redis::cmd("CLUSTER");
                count.arg("COUNTKEYSINSLOT").arg(slot);
                let n: u64 = redis::from_redis_value(c.route_command(count, route()).await?).map_err(|e| StoreError::Reply(e.to_string()))?;
                let mut get = redis::cmd("CLUSTER");
                get.arg("GETKEYSINSLOT").arg(slot).arg(n.max(1));
                let keys: Vec<String> = redis::from_redis_value(c.route_command(get, route()).await?).map_err(|e| StoreError::Reply(e.to_string()))?;
                out.extend(keys.into_iter().filter(|k| k.starts_with(prefix)));
            }
        }
        out.sort();
        Ok(out)
    }
}

/// The one node of a single Redis, in [`Conn::scan_nodes`].
pub const SINGLE: &str = "server";

/// `text` as a SCAN MATCH pattern that matches only itself.
pub fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}
