//! Redis behind Sentinel: the master the sentinels name, followed across a
//! failover. Calls go to the current master over one multiplexed
//! connection; a call that finds it gone (connection lost, timed out, or
//! `READONLY` from a demoted master) makes the next ones ask the sentinels
//! again, and the caller's retry (the engine's errors say Redis is
//! unavailable) lands on the new master.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Cmd, ConnectionAddr, Pipeline, RedisFuture, RedisResult, TlsMode, Value};

use super::{RedisTarget, StoreError};

/// The current master of a Sentinel-managed Redis and how to find the next.
pub struct Failover {
    sentinels: tokio::sync::Mutex<(SentinelClient, Instant)>,
    current: RwLock<(ConnectionManager, String)>,
    cfg: ConnectionManagerConfig,
    target: String,
    master: String,
}

/// Not more than one question to the sentinels per this long: a failover
/// makes every call in flight fail at once.
const ASK_AT_MOST_EVERY: Duration = Duration::from_millis(500);

impl Failover {
    pub async fn connect(target: &RedisTarget, master: &str, cfg: ConnectionManagerConfig) -> Result<Arc<Failover>, StoreError> {
        let mut client = sentinel_client(target, master)?;
        let (conn, addr) = master_connection(&mut client, &cfg).await.map_err(|e| target.connect_error(e))?;
        tracing::info!(master, %addr, "Redis master found through Sentinel");
        Ok(Arc::new(Failover {
            sentinels: tokio::sync::Mutex::new((client, Instant::now())),
            current: RwLock::new((conn, addr)),
            cfg,
            target: target.to_string(),
            master: master.to_string(),
        }))
    }

    fn conn(&self) -> ConnectionManager {
        self.current.read().expect("not poisoned").0.clone()
    }

    /// After `e`: ask the sentinels which node is master now, and switch
    /// to it if it moved.
    async fn after_error(&self, e: &redis::RedisError) {
        if !(e.code() == Some("READONLY") || e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()) {
            return;
        }
        let mut s = self.sentinels.lock().await;
        if s.1.elapsed() < ASK_AT_MOST_EVERY {
            return;
        }
        s.1 = Instant::now();
        let old = self.current.read().expect("not poisoned").1.clone();
        match master_connection(&mut s.0, &self.cfg).await {
            Ok((conn, addr)) if addr != old => {
                tracing::warn!(master = %self.master, from = %old, to = %addr, sentinels = %self.target, "Redis master moved (Sentinel failover); following it");
                *self.current.write().expect("not poisoned") = (conn, addr);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(master = %self.master, sentinels = %self.target, error = %e, "asking the sentinels for the Redis master failed; asking again at the next error"),
        }
    }

    pub fn req_packed_command<'a>(self: &'a Arc<Self>, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.on_master(move |mut c| async move { c.req_packed_command(cmd).await })
    }

    pub fn req_packed_commands<'a>(self: &'a Arc<Self>, p: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        self.on_master(move |mut c| async move { c.req_packed_commands(p, offset, count).await })
    }

    /// `call` on the current master; an error that may mean it moved makes
    /// the sentinels be asked before the error goes back to the caller.
    fn on_master<'a, T, F>(self: &'a Arc<Self>, call: impl FnOnce(ConnectionManager) -> F) -> RedisFuture<'a, T>
    where
        F: std::future::Future<Output = RedisResult<T>> + Send + 'a,
        T: Send + 'a,
    {
        let call = call(self.conn());
        Box::pin(async move {
            let r = call.await;
            if let Err(e) = &r {
                self.after_error(e).await;
            }
            r
        })
    }

    pub fn get_db(&self) -> i64 {
        self.conn().get_db()
    }
}

fn sentinel_client(target: &RedisTarget, master: &str) -> Result<SentinelClient, StoreError> {
    let infos = target.urls().iter().map(|u| target.sentinel_info(u)).collect::<Result<Vec<_>, _>>()?;
    let Some(first) = infos.first() else {
        return Err(StoreError::Config("the Redis URL is empty: with RESERVOIR_REDIS_SENTINEL_MASTER it lists the sentinels, e.g. redis://10.0.0.1:26379,redis://10.0.0.2:26379".into()));
    };
    let tls = matches!(first.addr(), ConnectionAddr::TcpTls { .. });
    let addrs: Vec<ConnectionAddr> = infos.iter().map(|i| i.addr().clone()).collect();
    let mut b = SentinelClientBuilder::new(addrs, master.to_string(), SentinelServerType::Master).map_err(|e| StoreError::Config(format!("Redis sentinels {target}: {e}")))?;
    let sentinel_auth = first.redis_settings();
    if let Some(u) = sentinel_auth.username() {
        b = b.set_client_to_sentinel_username(u);
    }
    if let Some(p) = sentinel_auth.password() {
        b = b.set_client_to_sentinel_password(p);
    }
    // The master's credentials: the separate settings, else the URL's.
    if let Some(u) = target.username.as_deref().or(sentinel_auth.username()) {
        b = b.set_client_to_redis_username(u);
    }
    if let Some(p) = target.password.as_deref().or(sentinel_auth.password()) {
        b = b.set_client_to_redis_password(p);
    }
    b = b.set_client_to_redis_tcp_settings(super::conn::tcp()).set_client_to_sentinel_tcp_settings(super::conn::tcp());
    if tls {
        b = b.set_client_to_redis_tls_mode(TlsMode::Secure).set_client_to_sentinel_tls_mode(TlsMode::Secure);
        if let Some(c) = target.certificates()? {
            b = b.set_client_to_redis_certificates(c.clone()).set_client_to_sentinel_certificates(c);
        }
    }
    b.build().map_err(|e| StoreError::Config(format!("Redis sentinels {target}: {e}")))
}

async fn master_connection(client: &mut SentinelClient, cfg: &ConnectionManagerConfig) -> RedisResult<(ConnectionManager, String)> {
    let c = client.async_get_client().await?;
    let addr = c.get_connection_info().addr().to_string();
    Ok((ConnectionManager::new_with_config(c, cfg.clone()).await?, addr))
}
