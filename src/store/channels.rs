//! The channel list, cached for a short while: every worker reads it on
//! each call that computes availability, and it changes rarely.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::RwLock;

use super::{keys, Conn, StoreError};

type Channels = Arc<BTreeMap<String, Vec<String>>>;

pub struct ChannelCache {
    ttl: Duration,
    cached: RwLock<Option<(Instant, Channels)>>,
}

impl ChannelCache {
    pub fn new(ttl: Duration) -> ChannelCache {
        ChannelCache { ttl, cached: RwLock::new(None) }
    }

    pub async fn get(&self, conn: &mut Conn, force: bool) -> Result<Channels, StoreError> {
        if !force {
            if let Some((at, c)) = self.cached.read().await.as_ref() {
                if at.elapsed() < self.ttl {
                    return Ok(c.clone());
                }
            }
        }
        let fresh = Arc::new(load(conn).await?);
        *self.cached.write().await = Some((Instant::now(), fresh.clone()));
        Ok(fresh)
    }
}

pub async fn load(conn: &mut Conn) -> Result<BTreeMap<String, Vec<String>>, StoreError> {
    let names: Vec<String> = redis::cmd("SMEMBERS").arg(keys::CHANNELS).query_async(conn).await?;
    let mut out = BTreeMap::new();
    for name in names {
        let raw: Option<String> = redis::cmd("GET").arg(keys::channel(&name)).query_async(conn).await?;
        if let Some(raw) = raw {
            let locs: Vec<String> = serde_json::from_str(&raw)
                .map_err(|e| StoreError::Reply(format!("channel {name:?} has unreadable locations {raw:?}: {e}")))?;
            out.insert(name, locs);
        }
    }
    Ok(out)
}
