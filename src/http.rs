//! The worker's HTTP port: `/metrics` (Prometheus), `/healthz` (the
//! process answers) and `/readyz` (Redis answers, a broker is up and
//! partitions are assigned), for Kubernetes probes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::store::{Conn, RedisTarget, StoreError};

/// What the consumer loop tells the probes.
#[derive(Debug, Default)]
pub struct Health {
    /// Partitions this worker owns now.
    pub assigned: AtomicUsize,
    /// False once librdkafka reports every broker down, true again when
    /// its statistics show one up.
    pub broker_down: AtomicBool,
}

struct App {
    health: Arc<Health>,
    redis: RedisTarget,
    metrics: PrometheusHandle,
}

async fn metrics(State(app): State<Arc<App>>) -> String {
    app.metrics.render()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<Arc<App>>) -> (StatusCode, String) {
    // A connection of its own: the probe answers before the worker has
    // one, and says what a fresh client sees.
    let ping = tokio::time::timeout(Duration::from_secs(1), async {
        let mut conn = Conn::connect(&app.redis).await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await.map_err(StoreError::from)
    })
    .await;
    let mut problems = Vec::new();
    match ping {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => problems.push(format!("redis: {e}")),
        Err(_) => problems.push("redis: no answer to PING within 1 s".into()),
    }
    if app.health.broker_down.load(Ordering::Relaxed) {
        problems.push("kafka: all brokers are down".into());
    }
    if app.health.assigned.load(Ordering::Relaxed) == 0 {
        problems.push("kafka: no partitions assigned (yet)".into());
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", problems.join("; ")))
    }
}

/// Binds `addr` (an error names it when taken) and serves until `stop`.
pub async fn serve(addr: SocketAddr, health: Arc<Health>, redis: &RedisTarget, stop: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr} for /metrics (RESERVOIR_METRICS_ADDR; `off` disables it): {e}")))?;
    let bound = listener.local_addr()?;
    let handle = crate::metrics::install();
    let upkeep = handle.clone();
    let app = Arc::new(App { health, redis: redis.clone(), metrics: handle });
    let router = Router::new().route("/metrics", get(metrics)).route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(app);
    tokio::spawn(async move {
        // Histograms are drained into the exporter's buckets by upkeep.
        let upkeeping = async {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                upkeep.run_upkeep();
            }
        };
        tokio::select! {
            r = axum::serve(listener, router).with_graceful_shutdown(stop) => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "the metrics server stopped");
                }
            }
            _ = upkeeping => {}
        }
    });
    tracing::info!(%bound, "serving /metrics, /healthz and /readyz");
    Ok(bound)
}
