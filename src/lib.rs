//! reservoir: an inventory reservation worker.
//!
//! # Layout
//!
//! Data flows one way: decode → decide → apply → publish → commit.
//!
//! - [`qty`]: exact decimal quantities (4 fractional digits) as fixed-point
//!   integers; parsing from JSON numbers or strings and minimal formatting.
//! - [`domain`]: the contract's pure rules, no I/O: item settings, the stock
//!   of one sku, availability and status per channel, allocation.
//! - [`store`]: the engine over Redis. One Lua script per operation (in
//!   `lua/`), typed calls and replies, the multi-sku order protocol with
//!   idempotent compensation, hold expiry and the sweep index. Works on a
//!   single Redis and on Redis Cluster (every script touches one sku's slot).
//! - [`wire`]: the wire contract's events: decoding and validating input
//!   (with the dead-letter code of every failure), building output.
//! - [`config`]: settings from a TOML file, environment and flags, checked
//!   once at start-up.
//! - [`kafka`]: client settings per role (offsets stored by hand,
//!   idempotent producer, the user's raw options last), topic creation and
//!   the worker group's progress against the input topics' ends.
//! - [`publish`]: the producer; a batch's messages are all acknowledged
//!   before its offsets are stored.
//! - [`worker`]: `run(cfg, shutdown)`: the consumer loop, batching,
//!   applying events, coalescing availability, rebalance and shutdown.
//! - [`tools`]: play example events, tail output topics.
//! - [`soak`]: `reservoir soak`, workers under load and injected faults,
//!   with the guarantees checked after.
//! - [`ops`]: operator commands: inspect a sku, import levels from CSV,
//!   republish availability, replay an input topic.
//! - [`metrics`] and [`http`]: Prometheus metrics and the `/metrics`,
//!   `/healthz` and `/readyz` port.
//! - [`bench`]: `reservoir bench`, the end-to-end benchmark (seeded
//!   workload, measurement, the Redis ceiling).
//! - [`local`]: the local stack as child processes: `redis-server` and
//!   Apache Kafka in KRaft mode (one node, or a 3-node quorum for the soak's
//!   leader kills), for `reservoir local`, the bench, the soak and the tests.

pub mod bench;
pub mod config;
pub mod domain;
pub mod wire;
pub mod http;
pub mod kafka;
pub mod local;
pub mod metrics;
pub mod ops;
pub mod publish;
pub mod qty;
pub mod soak;
pub mod store;
pub mod tools;
pub mod worker;
