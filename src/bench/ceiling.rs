//! The Redis ceiling: the project's own `reserve` script called through
//! EVALSHA, pipelined, from several connections, on the same Redis. What
//! the end-to-end path is compared against.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::qty::Qty;
use crate::store::keys::SkuKeys;
use crate::store::{Engine, StoreError};

pub struct Ceiling {
    pub ops_per_s: f64,
    pub connections: usize,
    pub pipeline: usize,
}

const SKUS: u64 = 1000;
const LOCATION: &str = "ceil-L1";

/// Reserves one unit at a time on `SKUS` skus with plenty of stock, as a
/// one-line order on a known one-location channel, for `duration`.
pub async fn measure(engine: &Engine, redis_url: &str, duration: Duration, connections: usize, pipeline: usize) -> Result<Ceiling, StoreError> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let sku = |i: u64| format!("ceil-{}-{i}", &run[..8]);
    for i in 0..SKUS {
        engine.set_level(&format!("ceil-{run}-{i}"), &sku(i), LOCATION, Qty::units(1_000_000_000), true).await?;
    }
    let sha = engine.scripts().reserve.sha.clone();
    let retention = engine.config().order_retention.as_millis().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let client = redis::Client::open(redis_url.split(',').next().unwrap_or(redis_url)).map_err(StoreError::from)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let (stop, done, sha, retention, run) = (stop.clone(), done.clone(), sha.clone(), retention.clone(), run.clone());
        let keys: Vec<SkuKeys> = (0..SKUS).map(|i| SkuKeys::new(&sku(i))).collect();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64);
            let mut n = 0u64;
            let one = Qty::units(1).raw().to_string();
            while !stop.load(Ordering::Relaxed) {
                let now = crate::store::Clock::System.now_ms().to_string();
                let mut pipe = redis::pipe();
                for _ in 0..pipeline {
                    let k = &keys[rng.random_range(0..keys.len())];
                    n += 1;
                    let order = k.order(&format!("{run}-{c}-{n}"));
                    pipe.cmd("EVALSHA")
                        .arg(&sha)
                        .arg(5)
                        .arg(&[&k.inv, &k.holds, &k.hexp, &order, &k.consumed_hold("")])
                        .arg(&[now.as_str(), &retention, "", "1", "1", LOCATION, "1", "1", &one]);
                }
                pipe.query_async::<redis::Value>(&mut conn).await?;
                done.fetch_add(pipeline as u64, Ordering::Relaxed);
            }
            Ok::<_, redis::RedisError>(())
        }));
    }
    // Warm up, then count over the window.
    tokio::time::sleep(duration / 5).await;
    let (start, n0) = (Instant::now(), done.load(Ordering::Relaxed));
    tokio::time::sleep(duration).await;
    let (secs, n1) = (start.elapsed().as_secs_f64(), done.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.map_err(|e| StoreError::Reply(format!("ceiling task: {e}")))??;
    }
    Ok(Ceiling { ops_per_s: (n1 - n0) as f64 / secs, connections, pipeline })
}
