//! The contract's availability formula, per channel.

use serde::{Deserialize, Serialize};

use super::item::{SkuState, Tracking};
use crate::qty::Qty;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    InStock,
    LowStock,
    Preorder,
    Backorder,
    OutOfStock,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InStock => "in_stock",
            Status::LowStock => "low_stock",
            Status::Preorder => "preorder",
            Status::Backorder => "backorder",
            Status::OutOfStock => "out_of_stock",
        }
    }
}

/// What a channel can sell of a sku now. Quantities are None for skus not
/// tracked by quantity; the remainders are None when unlimited and absent
/// (`relevant == false`) when the feature is off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Availability {
    pub status: Status,
    pub available: Option<Qty>,
    pub on_hand: Option<Qty>,
    pub reserved: Option<Qty>,
    pub backorder_remaining: Remaining,
    pub preorder_remaining: Remaining,
}

/// A backorder/preorder remainder: not relevant, unlimited, or a quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Remaining {
    NotRelevant,
    Unlimited,
    Units(Qty),
}

impl Availability {
    /// The part whose change is published: (status, available).
    pub fn key(&self) -> (Status, Option<Qty>) {
        (self.status, self.available)
    }
}

/// A channel's locations in priority order.
pub type ChannelLocations = [String];

/// Locations of `channel` where the sku has a row that is in stock, in the
/// channel's priority order.
pub fn selling_locations<'a>(state: &'a SkuState, channel: &'a ChannelLocations) -> impl Iterator<Item = &'a str> + 'a {
    channel
        .iter()
        .filter(move |l| state.levels.get(l.as_str()).is_some_and(|lv| lv.in_stock))
        .map(|l| l.as_str())
}

/// The contract's formula for one channel.
pub fn availability(state: &SkuState, channel: &ChannelLocations) -> Availability {
    let cfg = &state.config;
    let rem = |b: &super::item::BeyondStock, used: Qty| {
        if !b.enabled {
            Remaining::NotRelevant
        } else {
            b.remaining(used).map_or(Remaining::Unlimited, Remaining::Units)
        }
    };
    let backorder_remaining = rem(&cfg.backorders, state.backordered);
    let preorder_remaining = rem(&cfg.preorder, state.preordered);
    match cfg.tracking {
        Tracking::None => Availability {
            status: Status::InStock,
            available: None,
            on_hand: None,
            reserved: None,
            backorder_remaining,
            preorder_remaining,
        },
        Tracking::InStock => {
            let any = selling_locations(state, channel).next().is_some();
            Availability {
                status: if any { Status::InStock } else { Status::OutOfStock },
                available: None,
                on_hand: None,
                reserved: None,
                backorder_remaining,
                preorder_remaining,
            }
        }
        Tracking::Quantity => {
            let (on_hand, reserved) = selling_locations(state, channel).fold((Qty::ZERO, Qty::ZERO), |(h, r), l| {
                let lv = &state.levels[l];
                (h + lv.on_hand, r + lv.reserved)
            });
            let available = (on_hand - reserved - cfg.out_of_stock_threshold).max(Qty::ZERO);
            let status = if available.is_positive() {
                match cfg.low_stock_threshold {
                    Some(low) if available <= low => Status::LowStock,
                    _ => Status::InStock,
                }
            } else if cfg.preorder.open(state.preordered) {
                Status::Preorder
            } else if cfg.backorders.open(state.backordered) {
                Status::Backorder
            } else {
                Status::OutOfStock
            };
            Availability {
                status,
                available: Some(available),
                on_hand: Some(on_hand),
                reserved: Some(reserved),
                backorder_remaining,
                preorder_remaining,
            }
        }
    }
}

/// Whether the sku is stocked at any of the channel's locations (has a row
/// there, in stock or not): the channels whose availability a change of this
/// sku can move.
pub fn stocked_in(state: &SkuState, channel: &ChannelLocations) -> bool {
    channel.iter().any(|l| state.levels.contains_key(l))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::item::{BeyondStock, ItemConfig, Level};

    fn q(s: &str) -> Qty {
        Qty::parse(s).unwrap()
    }

    fn state(levels: &[(&str, &str, &str, bool)]) -> SkuState {
        SkuState {
            exists: true,
            levels: levels
                .iter()
                .map(|(l, h, r, s)| (l.to_string(), Level { on_hand: q(h), reserved: q(r), in_stock: *s }))
                .collect(),
            ..Default::default()
        }
    }

    fn eu() -> Vec<String> {
        vec!["eu-1".into(), "eu-2".into(), "eu-3".into()]
    }

    #[test]
    fn sums_in_stock_channel_locations_only() {
        let s = state(&[("eu-1", "5.5", "0", true), ("eu-2", "3", "0", true), ("eu-3", "10", "0", false), ("us-1", "100", "0", true)]);
        let a = availability(&s, &eu());
        assert_eq!(a.available, Some(q("8.5")));
        assert_eq!(a.on_hand, Some(q("8.5")));
        assert_eq!(a.status, Status::InStock);
    }

    #[test]
    fn threshold_and_low_stock() {
        let mut s = state(&[("eu-1", "5.5", "0", true), ("eu-2", "3", "0", true)]);
        s.config.out_of_stock_threshold = q("5");
        assert_eq!(availability(&s, &eu()).available, Some(q("3.5")));
        s.config.low_stock_threshold = Some(q("3.5"));
        assert_eq!(availability(&s, &eu()).status, Status::LowStock);
        s.config.low_stock_threshold = Some(q("3.4999"));
        assert_eq!(availability(&s, &eu()).status, Status::InStock);
        s.config.out_of_stock_threshold = q("20");
        let a = availability(&s, &eu());
        assert_eq!(a.available, Some(Qty::ZERO));
        assert_eq!(a.status, Status::OutOfStock);
    }

    #[test]
    fn reserved_beyond_on_hand_clamps_to_zero() {
        let s = state(&[("eu-1", "1", "4", true), ("eu-2", "2", "0", true)]);
        let a = availability(&s, &eu());
        assert_eq!(a.available, Some(Qty::ZERO));
        assert_eq!(a.reserved, Some(q("4")));
    }

    #[test]
    fn preorder_wins_over_backorder_until_used_up() {
        let mut s = state(&[("eu-1", "0", "0", true)]);
        s.config.backorders = BeyondStock { enabled: true, limit: Some(q("3")) };
        assert_eq!(availability(&s, &eu()).status, Status::Backorder);
        assert_eq!(availability(&s, &eu()).backorder_remaining, Remaining::Units(q("3")));
        s.config.preorder = BeyondStock { enabled: true, limit: None };
        assert_eq!(availability(&s, &eu()).status, Status::Preorder);
        assert_eq!(availability(&s, &eu()).preorder_remaining, Remaining::Unlimited);
        s.config.preorder.limit = Some(q("2"));
        s.preordered = q("2");
        assert_eq!(availability(&s, &eu()).status, Status::Backorder);
        s.backordered = q("3");
        assert_eq!(availability(&s, &eu()).status, Status::OutOfStock);
        assert_eq!(availability(&s, &eu()).backorder_remaining, Remaining::Units(Qty::ZERO));
    }

    #[test]
    fn untracked_kinds() {
        let mut s = state(&[("eu-3", "0", "0", false)]);
        s.config = ItemConfig { tracking: Tracking::InStock, ..Default::default() };
        let a = availability(&s, &eu());
        assert_eq!((a.status, a.available), (Status::OutOfStock, None));
        s.levels.get_mut("eu-3").unwrap().in_stock = true;
        assert_eq!(availability(&s, &eu()).status, Status::InStock);
        s.config.tracking = Tracking::None;
        s.levels.clear();
        assert_eq!(availability(&s, &eu()).status, Status::InStock);
    }
}
