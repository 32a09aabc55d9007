//! Operator commands: look inside the store, bulk-load levels, rebuild
//! downstream caches and replay input topics.
//!
//! - [`replay`]: move the worker group's offsets on a topic back (group stopped).

pub mod replay;
