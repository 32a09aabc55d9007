//! The channel list, read again only when it changed: every call that
//! computes availability first reads the channel generation (one GET,
//! after the call's sku scripts ran), and reloads the lists when the
//! generation moved. So every worker computes availability from the list
//! in force: a change applied before that GET is seen, and a sku stocked
//! after a change's recompute read the skus of its locations is seen by
//! the change or sees it.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::RwLock;

use super::{keys, Conn, StoreError};

type Channels = Arc<BTreeMap<String, Vec<String>>>;

#[derive(Default)]
pub struct ChannelCache {
    cached: RwLock<Option<(String, Channels)>>,
}

impl ChannelCache {
    pub async fn get(&self, conn: &mut Conn) -> Result<Channels, StoreError> {
        let generation = generation(conn).await?;
        if let Some((g, c)) = self.cached.read().await.as_ref() {
            if *g == generation {
                return Ok(c.clone());
            }
        }
        // Read after the generation: the lists are at least that new. A
        // slower load that began earlier may overwrite this one; the next
        // call then sees another generation and loads again.
        let fresh = Arc::new(load(conn).await?);
        *self.cached.write().await = Some((generation, fresh.clone()));
        Ok(fresh)
    }
}

async fn generation(conn: &mut Conn) -> Result<String, StoreError> {
    let g: Option<String> = redis::cmd("GET").arg(keys::CHANNEL_GENERATION).query_async(conn).await?;
    Ok(g.unwrap_or_default())
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
