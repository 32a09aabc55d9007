//! An item's settings and the stock of one sku, as the engine returns it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::qty::Qty;

/// How a sku's stock is counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tracking {
    /// Units are counted per location.
    #[default]
    Quantity,
    /// No counts: a location is either in stock or not (made-to-order, digital).
    InStock,
    /// Never out of stock; reservations record nothing.
    None,
}

impl Tracking {
    pub fn code(self) -> &'static str {
        match self {
            Tracking::Quantity => "q",
            Tracking::InStock => "i",
            Tracking::None => "n",
        }
    }
    pub fn from_code(c: &str) -> Option<Tracking> {
        match c {
            "q" => Some(Tracking::Quantity),
            "i" => Some(Tracking::InStock),
            "n" => Some(Tracking::None),
            _ => None,
        }
    }
}

/// Backorders or preorders: selling beyond stock, up to `limit` units
/// outstanding (None = unlimited).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeyondStock {
    pub enabled: bool,
    pub limit: Option<Qty>,
}

impl BeyondStock {
    /// Units still sellable beyond stock given `used`; None = unlimited.
    /// Only meaningful when enabled.
    pub fn remaining(&self, used: Qty) -> Option<Qty> {
        self.limit.map(|l| (l - used).max(Qty::ZERO))
    }
    /// Enabled and not used up.
    pub fn open(&self, used: Qty) -> bool {
        self.enabled && self.remaining(used).is_none_or(|r| r.is_positive())
    }
}

/// The settings of `inventory.item.configured`; absent ones are defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemConfig {
    pub tracking: Tracking,
    pub backorders: BeyondStock,
    pub preorder: BeyondStock,
    pub out_of_stock_threshold: Qty,
    pub low_stock_threshold: Option<Qty>,
}

/// One location's row for a sku.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level {
    pub on_hand: Qty,
    /// Promised to orders or held by carts, not yet shipped.
    pub reserved: Qty,
    pub in_stock: bool,
}

impl Default for Level {
    fn default() -> Level {
        Level { on_hand: Qty::ZERO, reserved: Qty::ZERO, in_stock: true }
    }
}

/// Everything about one sku that availability depends on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuState {
    /// Configured or has a level.
    pub exists: bool,
    pub config: ItemConfig,
    pub levels: BTreeMap<String, Level>,
    /// Units reserved beyond stock, outstanding, as backorders.
    pub backordered: Qty,
    /// Units reserved beyond stock, outstanding, as preorders.
    pub preordered: Qty,
    /// Strictly increasing per sku; bumped by every change.
    pub version: u64,
}
