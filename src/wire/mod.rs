//! The wire contract's events: decoding input (pure, with the dead-letter
//! code of every failure) and building output.

mod fields;
pub mod input;
pub mod output;

pub use input::{decode, decode_message, Body, DecodeError, InputEvent, TopicKind};
