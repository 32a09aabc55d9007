//! Kafka client settings, topic administration, the consumer group's
//! progress and calls to its coordinator.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::Config;

mod coordinator;
mod progress;
pub use coordinator::{commit_sync, committed_offsets, coordinator_busy, while_busy};
pub use progress::{GroupProgress, ProgressError};

/// The partition ids of `topic` in `md`, sorted; None when the broker does
/// not know the topic, answers an error for it, or lists no partitions.
pub fn partitions_in(md: &Metadata, topic: &str) -> Option<Vec<i32>> {
    let t = md.topics().iter().find(|t| t.name() == topic && t.error().is_none())?;
    let mut ps: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ps.sort_unstable();
    (!ps.is_empty()).then_some(ps)
}

/// librdkafka settings whose values are secrets: never shown in logs,
/// errors or debug output.
pub fn is_secret_option(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k.contains("secret") || k == "ssl.key.pem" || k == "sasl.oauthbearer.config" || k.ends_with("jaas.config")
}

/// `options` as `key=value` lines for display, secrets as `***`.
pub fn shown_options(options: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    options.iter().map(|(k, v)| if is_secret_option(k) { format!("{k}=***") } else { format!("{k}={v}") }).collect()
}

/// What the worker says when a broker refuses who it is (SASL credentials
/// refused, or a TLS certificate that does not verify): a retry presents
/// the same, so the worker stops with this instead of retrying for ever.
/// None for every other client error. `reason` is librdkafka's text, which
/// names the listener (`sasl_ssl://host:port/...`) and the mechanism; any
/// secret of `cfg` in it is hidden all the same.
pub fn refused_credentials(code: RDKafkaErrorCode, reason: &str, cfg: &Config) -> Option<String> {
    let opt = |k: &str| cfg.kafka_options.get(k).or_else(|| cfg.kafka_consumer_options.get(k)).map(String::as_str);
    let protocol = opt("security.protocol").unwrap_or("plaintext").to_ascii_lowercase();
    let what = match code {
        RDKafkaErrorCode::Authentication => {
            let mech = opt("sasl.mechanism").or_else(|| opt("sasl.mechanisms")).unwrap_or("GSSAPI");
            format!("check sasl.username and sasl.password for mechanism {mech} (security.protocol {protocol}) in --kafka-option / RESERVOIR_KAFKA_OPTIONS, and that the user exists on the cluster")
        }
        RDKafkaErrorCode::SSL if reason.contains("certificate verify failed") || reason.contains("certificate") && reason.contains("fail") => {
            "check ssl.ca.location (the CA that signed the brokers' certificates; the system's roots by default) and that the certificates name the host in the bootstrap address".to_string()
        }
        _ => return None,
    };
    let mut reason = reason.to_string();
    for (k, v) in cfg.kafka_options.iter().chain(&cfg.kafka_consumer_options).chain(&cfg.kafka_producer_options) {
        if is_secret_option(k) && !v.is_empty() {
            reason = reason.replace(v.as_str(), "***");
        }
    }
    Some(format!("Kafka at {} refused the worker: {reason}. The worker stopped, since retrying the same settings cannot help: {what}", cfg.kafka_bootstrap))
}

/// Which kind of client a [`client_config`] is for: each takes the shared
/// pass-through settings and then its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Consumer,
    Producer,
    Admin,
}

/// Settings of one client: bootstrap, then `extra`, then the raw
/// pass-through (shared, then the role's own) applied last so users can
/// override anything.
pub fn client_config(cfg: &Config, role: Role, extra: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka_bootstrap);
    for (k, v) in extra {
        c.set(*k, *v);
    }
    let own = match role {
        Role::Consumer => Some(&cfg.kafka_consumer_options),
        Role::Producer => Some(&cfg.kafka_producer_options),
        Role::Admin => None,
    };
    for (k, v) in cfg.kafka_options.iter().chain(own.into_iter().flatten()) {
        c.set(k, v);
    }
    c
}

/// Consumer: offsets are stored by the worker only after the effect and its
/// messages are durable, and committed by the auto-commit timer, on revoke
/// and on shutdown.
pub fn consumer_config(cfg: &Config) -> ClientConfig {
    client_config(
        cfg,
        Role::Consumer,
        &[
            ("group.id", &cfg.group_id),
            ("enable.auto.commit", "true"),
            ("auto.commit.interval.ms", "1000"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "1000"),
            ("max.poll.interval.ms", "300000"),
            ("enable.partition.eof", "false"),
            // librdkafka's defaults prefetch up to 100,000 messages per
            // partition and 50 MB per fetch: 300 MB of RSS while a backlog
            // waits (docs/BENCHMARKS.md). A few batches ahead keep it fed.
            ("queued.min.messages", "10000"),
            ("queued.max.messages.kbytes", "16384"),
            ("fetch.max.bytes", "8388608"),

            // Consumer lag per partition and broker state, for metrics and /readyz.
            ("statistics.interval.ms", "5000"),
        ],
    )
}

/// Producer: idempotent, acks from all in-sync replicas; `extra` tunes
/// these defaults for a caller (the user's options still win).
pub fn producer_config(cfg: &Config, extra: &[(&str, &str)]) -> ClientConfig {
    let mut defaults = vec![("enable.idempotence", "true"), ("acks", "all"), ("linger.ms", "2"), ("message.timeout.ms", "30000"), ("compression.type", "lz4")];
    defaults.extend_from_slice(extra);
    client_config(cfg, Role::Producer, &defaults)
}

#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    #[error("cannot reach Kafka at {bootstrap}: {message}")]
    Client { bootstrap: String, message: String },
    #[error("creating topic {topic}: {message}")]
    Create { topic: String, message: String },
}

/// Creates the contract's topics (availability compacted). Topics that
/// already exist are left as they are.
pub async fn create_topics(cfg: &Config, partitions: i32, replication: i32) -> Result<Vec<String>, TopicsError> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(cfg, Role::Admin, &[]).create().map_err(|e| TopicsError::Client { bootstrap: cfg.kafka_bootstrap.clone(), message: e.to_string() })?;
    let t = &cfg.topics;
    let new: Vec<NewTopic> = t
        .all()
        .iter()
        .map(|name| {
            let nt = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
            if *name == t.availability {
                nt.set("cleanup.policy", "compact")
            } else {
                nt.set("cleanup.policy", "delete")
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .map_err(|e| TopicsError::Client { bootstrap: cfg.kafka_bootstrap.clone(), message: e.to_string() })?;
    let mut created = Vec::new();
    for r in results {
        match r {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicsError::Create { topic, message: code.to_string() }),
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_takes_the_shared_options_then_its_own() {
        let mut cfg = Config::new("k:1", "redis://r", "g");
        cfg.kafka_options.insert("client.id".into(), "shared".into());
        cfg.kafka_options.insert("linger.ms".into(), "7".into());
        cfg.kafka_producer_options.insert("enable.idempotence".into(), "false".into());
        cfg.kafka_producer_options.insert("linger.ms".into(), "9".into());
        cfg.kafka_consumer_options.insert("fetch.min.bytes".into(), "10".into());
        let (c, p, a) = (consumer_config(&cfg), producer_config(&cfg, &[("linger.ms", "4")]), client_config(&cfg, Role::Admin, &[]));
        for x in [&c, &p, &a] {
            assert_eq!(x.get("client.id"), Some("shared"));
        }
        assert_eq!((p.get("enable.idempotence"), p.get("linger.ms"), p.get("fetch.min.bytes")), (Some("false"), Some("9"), None));
        assert_eq!((c.get("enable.idempotence"), c.get("fetch.min.bytes"), c.get("group.id")), (None, Some("10"), Some("g")));
        assert_eq!((a.get("enable.idempotence"), a.get("fetch.min.bytes")), (None, None));
        // A caller's tuning replaces a default; no user option is set here.
        let plain = producer_config(&Config::new("k:1", "redis://r", "g"), &[("linger.ms", "4")]);
        assert_eq!((plain.get("linger.ms"), plain.get("enable.idempotence")), (Some("4"), Some("true")));
    }

    #[test]
    fn a_refused_login_or_certificate_stops_with_what_to_check_and_no_secret() {
        let mut cfg = Config::new("b:9096", "redis://r", "g");
        for (k, v) in [("security.protocol", "SASL_SSL"), ("sasl.mechanism", "SCRAM-SHA-512"), ("sasl.username", "app"), ("sasl.password", "hunter2")] {
            cfg.kafka_options.insert(k.into(), v.into());
        }
        let reason = "sasl_ssl://b:9096/bootstrap: SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512 (echo hunter2)";
        let m = refused_credentials(RDKafkaErrorCode::Authentication, reason, &cfg).unwrap();
        assert!(m.contains("sasl_ssl://b:9096") && m.contains("SCRAM-SHA-512") && m.contains("sasl.password"), "{m}");
        assert!(!m.contains("hunter2"), "{m}");
        let m = refused_credentials(RDKafkaErrorCode::SSL, "ssl://b:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed", &cfg).unwrap();
        assert!(m.contains("ssl.ca.location"), "{m}");
        assert_eq!(refused_credentials(RDKafkaErrorCode::SSL, "ssl://b:9093/bootstrap: SSL transport error: Connection reset by peer", &cfg), None);
        assert_eq!(refused_credentials(RDKafkaErrorCode::AllBrokersDown, "1/1 brokers are down", &cfg), None);
        assert_eq!(shown_options(&cfg.kafka_options), ["sasl.mechanism=SCRAM-SHA-512", "sasl.password=***", "sasl.username=app", "security.protocol=SASL_SSL"]);
    }
}
