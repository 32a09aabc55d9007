//! Redis + a Kafka broker for end-to-end tests. In order of preference:
//! REDIS_URL / KAFKA_BOOTSTRAP from the environment; with the
//! `testcontainers` feature and a Docker engine, Redis and Apache Kafka
//! (KRaft) containers; else a local redis-server per test and the Apache
//! Kafka node the test binary shares (or, for tests that restart it, one
//! of the test's own).

use super::kafka::OwnBroker;
use super::RedisServer;

pub struct Stack {
    pub redis_url: String,
    pub bootstrap: String,
    /// Local processes, when those are used (tests that restart them need these).
    pub redis: Option<RedisServer>,
    /// The test's own broker (`start_with(true)`); None on the shared one.
    pub broker: Option<OwnBroker>,
    #[cfg(feature = "testcontainers")]
    _containers: Option<containers::Containers>,
}

impl Stack {
    /// `reservoir audit` of this test's Redis finds no violation: every
    /// counter agrees with the holds and reservations it counts.
    pub async fn audit(&self) {
        let mut c = reservoir::store::Conn::connect(&self.redis_url).await.expect("Redis for the audit");
        let r = reservoir::ops::audit::audit(&mut c, None, 500).await.expect("the audit runs");
        assert_eq!(r.violations(), 0, "audit after the test:\n{}", r.table());
    }

    pub async fn start() -> Stack {
        Stack::start_with(false).await
    }

    /// `durable`: a broker of the test's own and Redis with AOF, both
    /// restartable with their data.
    pub async fn start_with(durable: bool) -> Stack {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        #[cfg(feature = "testcontainers")]
        if std::env::var("REDIS_URL").is_err() && std::env::var("KAFKA_BOOTSTRAP").is_err() {
            if let Some(c) = containers::Containers::start().await {
                return Stack { redis_url: c.redis_url.clone(), bootstrap: c.bootstrap.clone(), redis: None, broker: None, _containers: Some(c) };
            }
        }
        let redis = if durable { RedisServer::start_durable() } else { RedisServer::start() };
        let broker = durable.then(OwnBroker::start);
        Stack {
            redis_url: redis.url.clone(),
            bootstrap: broker.as_ref().map_or_else(|| super::kafka::shared().to_string(), |b| b.bootstrap.clone()),
            redis: Some(redis),
            broker,
            #[cfg(feature = "testcontainers")]
            _containers: None,
        }
    }
}

#[cfg(feature = "testcontainers")]
mod containers {
    use testcontainers::runners::AsyncRunner;
    use testcontainers::ContainerAsync;
    use testcontainers_modules::kafka::apache::{Kafka, KAFKA_PORT};
    use testcontainers_modules::redis::{Redis, REDIS_PORT};

    pub struct Containers {
        pub redis_url: String,
        pub bootstrap: String,
        _redis: ContainerAsync<Redis>,
        _kafka: ContainerAsync<Kafka>,
    }

    impl Containers {
        /// None when no Docker engine answers.
        pub async fn start() -> Option<Containers> {
            let redis = Redis::default().start().await.ok()?;
            let kafka = Kafka::default().start().await.ok()?;
            let redis_url = format!("redis://127.0.0.1:{}", redis.get_host_port_ipv4(REDIS_PORT).await.ok()?);
            let bootstrap = format!("127.0.0.1:{}", kafka.get_host_port_ipv4(KAFKA_PORT).await.ok()?);
            Some(Containers { redis_url, bootstrap, _redis: redis, _kafka: kafka })
        }
    }
}
