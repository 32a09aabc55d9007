//! What an operation decided: reservation and hold results, per-line outcomes
//! of shipments and credit memos, and the availability changes to publish.

use serde::{Deserialize, Serialize};

use super::availability::{availability, stocked_in, Availability};
use super::item::SkuState;
use crate::qty::Qty;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub location: String,
    pub quantity: Qty,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmedLine {
    pub line_id: String,
    pub sku: String,
    pub quantity: Qty,
    pub allocations: Vec<Allocation>,
    pub backordered: Qty,
    pub preordered: Qty,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    InsufficientStock,
    UnknownSku,
    UnknownChannel,
    /// The cancellation arrived before the placement.
    Canceled,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InsufficientStock => "insufficient_stock",
            RejectReason::UnknownSku => "unknown_sku",
            RejectReason::UnknownChannel => "unknown_channel",
            RejectReason::Canceled => "canceled",
        }
    }
    pub fn parse(s: &str) -> Option<RejectReason> {
        Some(match s {
            "insufficient_stock" => RejectReason::InsufficientStock,
            "unknown_sku" => RejectReason::UnknownSku,
            "unknown_channel" => RejectReason::UnknownChannel,
            "canceled" => RejectReason::Canceled,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedLine {
    pub line_id: String,
    pub sku: String,
    pub requested: Qty,
    pub available: Qty,
    pub reason: RejectReason,
}

/// The one result of an order placement. A rejection lists the lines that
/// failed: every line for `unknown_channel` and `canceled`, else the lines of
/// the first sku (in order of first appearance) that could not be reserved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum OrderOutcome {
    Confirmed { lines: Vec<ConfirmedLine> },
    Rejected { lines: Vec<RejectedLine> },
}

/// The result of `cart.line.held`. `available` is the most this cart could
/// hold now (its own hold counted as free); None when the sku is not
/// tracked by quantity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldOutcome {
    pub confirmed: bool,
    pub requested: Qty,
    pub held: Qty,
    pub available: Option<Qty>,
    pub expires_at_ms: i64,
}

/// One line of a shipment or credit memo.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineOutcome {
    Applied,
    /// The placement has not arrived; applied when it does.
    Pending,
    /// Dead-letter code and a sentence naming the line.
    Refused { code: &'static str, message: String },
}

/// The dead letter of a shipment or credit memo whose lines were (partly)
/// refused: the first refusal's code and every refused line's sentence.
pub fn refusal(lines: &[LineOutcome]) -> Option<(&'static str, String)> {
    let msgs: Vec<(&'static str, &str)> = lines
        .iter()
        .filter_map(|l| match l {
            LineOutcome::Refused { code, message } => Some((*code, message.as_str())),
            _ => None,
        })
        .collect();
    let code = msgs.first()?.0;
    Some((code, msgs.iter().map(|(_, m)| *m).collect::<Vec<_>>().join("; ")))
}

/// A sku's state before and after one call. `repeat` marks a call the
/// engine had applied before (same idempotency key): nothing changed now,
/// and the caller publishes the current availability again in case the
/// first attempt died before publishing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkuChange {
    pub sku: String,
    pub before: SkuState,
    pub after: SkuState,
    pub repeat: bool,
}

/// The availability of one (channel, sku) to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AvailabilityUpdate {
    pub channel: String,
    pub sku: String,
    pub availability: Availability,
    pub version: u64,
    /// (status, available) moved, or this is a repeat (publish again).
    pub changed: bool,
}

/// The availability of every channel a sku is stocked in, after a change.
pub fn updates<'a>(
    change: &'a SkuChange,
    channels: impl IntoIterator<Item = (&'a str, &'a [String])>,
) -> Vec<AvailabilityUpdate> {
    channels
        .into_iter()
        .filter(|(_, locs)| stocked_in(&change.after, locs) || stocked_in(&change.before, locs))
        .map(|(name, locs)| {
            let after = availability(&change.after, locs);
            let before = availability(&change.before, locs);
            AvailabilityUpdate {
                channel: name.to_string(),
                sku: change.sku.clone(),
                // A sku new to a channel was absent for its subscribers, whatever
                // its (status, available): a first level there is a change.
                changed: change.repeat || before.key() != after.key() || !stocked_in(&change.before, locs),
                availability: after,
                version: change.after.version,
            }
        })
        .collect()
}

/// The availability a sku has now in every channel it is stocked in, at
/// its stored version (republish and the soak's check): nothing changed,
/// so every update counts as one to publish.
pub fn current<'a>(sku: &str, state: &SkuState, channels: impl IntoIterator<Item = (&'a str, &'a [String])>) -> Vec<AvailabilityUpdate> {
    if !state.exists {
        return Vec::new();
    }
    channels
        .into_iter()
        .filter(|(_, locs)| stocked_in(state, locs))
        .map(|(name, locs)| AvailabilityUpdate {
            channel: name.to_string(),
            sku: sku.to_string(),
            availability: availability(state, locs),
            version: state.version,
            changed: true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::item::{ItemConfig, Level, Tracking};
    use crate::qty::Qty;

    #[test]
    fn a_first_level_in_a_channel_is_a_change_even_with_the_same_status() {
        let locs = vec!["L".to_string()];
        let before = SkuState { exists: true, config: ItemConfig { tracking: Tracking::None, ..Default::default() }, version: 1, ..Default::default() };
        let mut after = before.clone();
        after.levels.insert("L".into(), Level { on_hand: Qty::ZERO, reserved: Qty::ZERO, in_stock: true });
        after.version = 2;
        let change = SkuChange { sku: "S".into(), before, after: after.clone(), repeat: false };
        let ups = updates(&change, [("ch", locs.as_slice())]);
        assert_eq!(ups.len(), 1);
        assert!(ups[0].changed, "{ups:?}");
        // The same level set again: stocked before and after, nothing moved.
        let again = SkuChange { sku: "S".into(), before: after.clone(), after, repeat: false };
        assert!(!updates(&again, [("ch", locs.as_slice())])[0].changed);
    }
}
