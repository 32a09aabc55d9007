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

pub mod domain;
pub mod qty;
pub mod store;
