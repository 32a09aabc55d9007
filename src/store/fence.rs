//! Keeps the compacted availability topic's last message per key current
//! when several workers publish one sku's availability at once.

use super::{keys::SkuKeys, Engine, StoreError};
use crate::domain::outcome::current;
use crate::domain::AvailabilityUpdate;

/// One acknowledged availability message: channel, version, partition, offset.
pub type Landed = (String, u64, i32, i64);

impl Engine {
    /// Records where `sku`'s availability messages landed; for every channel
    /// whose last message by offset is older than one published before it,
    /// returns its current availability to publish again.
    pub async fn fence(&self, sku: &str, landed: &[Landed]) -> Result<Vec<AvailabilityUpdate>, StoreError> {
        let mut args = vec![landed.len().to_string()];
        for (ch, version, partition, offset) in landed {
            args.extend([ch.clone(), version.to_string(), partition.to_string(), offset.to_string()]);
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let v = self.scripts.avail_fence.call(&mut self.conn.clone(), &[&SkuKeys::new(sku).inv], &argv).await?;
        let stale: Vec<String> = redis::from_redis_value(v).map_err(|e| StoreError::Reply(format!("avail_fence: {e}")))?;
        if stale.is_empty() {
            return Ok(Vec::new());
        }
        let state = self.sku_state(sku).await?;
        let channels = self.channels().await?;
        Ok(current(sku, &state, channels.iter().filter(|(n, _)| stale.contains(n)).map(|(n, l)| (n.as_str(), l.as_slice()))))
    }
}
