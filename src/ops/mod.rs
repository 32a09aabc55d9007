//! Operator commands: look inside the store, bulk-load levels, rebuild
//! downstream caches and replay input topics.
//!
//! - [`inspect`]: one sku as stored: levels, holds, open reservations,
//!   availability per channel (reads only).
//! - [`audit`]: every sku's counters against the holds and reservations
//!   they count (reads only).
//! - [`import`]: a CSV of levels published as `inventory.level.set` events.
//! - [`republish`]: the stored availability of every sku published again
//!   with the same versions (SCAN, checkpointed, cluster-wide).
//! - [`replay`]: move the worker group's offsets on a topic back (group stopped).

pub mod audit;
pub mod import;
pub mod inspect;
pub mod replay;
pub mod republish;
