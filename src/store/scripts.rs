//! The Lua scripts from `lua/`, each with the shared helpers prepended.

use super::conn::{CallBudget, Lua};

const LIB: &str = include_str!("../../lua/lib.lua");
const ORDER_LIB: &str = include_str!("../../lua/order_lib.lua");

macro_rules! sku_script {
    ($name:literal) => {
        Lua::new($name, format!("{LIB}\n{}", include_str!(concat!("../../lua/", $name, ".lua"))))
    };
}
macro_rules! order_script {
    ($name:literal) => {
        Lua::new($name, format!("{LIB}\n{ORDER_LIB}\n{}", include_str!(concat!("../../lua/", $name, ".lua"))))
    };
}
macro_rules! plain_script {
    ($name:literal) => {
        Lua::new($name, include_str!(concat!("../../lua/", $name, ".lua")).to_string())
    };
}

pub struct Scripts {
    pub item_configure: Lua,
    pub level_set: Lua,
    pub level_adjust: Lua,
    pub touch: Lua,
    pub hold: Lua,
    pub hold_release: Lua,
    pub sweep: Lua,
    pub sweep_done: Lua,
    pub reserve: Lua,
    pub abort: Lua,
    pub release: Lua,
    pub deduct: Lua,
    pub restock: Lua,
    pub channel_set: Lua,
    pub order_note: Lua,
    pub order_decide: Lua,
    pub order_settle: Lua,
    pub hold_index: Lua,
    pub hold_unindex: Lua,
    pub avail_fence: Lua,
    pub order_expire: Lua,
    pub early_unindex: Lua,
    /// Shared by every script above (see [`CallBudget`]).
    budget: CallBudget,
}

impl Scripts {
    pub fn new() -> Scripts {
        let budget = CallBudget::default();
        let s = |l: Lua| l.sharing(&budget);
        Scripts {
            item_configure: s(sku_script!("item_configure")),
            level_set: s(sku_script!("level_set")),
            level_adjust: s(sku_script!("level_adjust")),
            touch: s(sku_script!("touch")),
            hold: s(sku_script!("hold")),
            hold_release: s(sku_script!("hold_release")),
            sweep: s(sku_script!("sweep")),
            sweep_done: s(plain_script!("sweep_done")),
            reserve: s(order_script!("reserve")),
            abort: s(order_script!("abort")),
            release: s(order_script!("release")),
            deduct: s(order_script!("deduct")),
            restock: s(order_script!("restock")),
            channel_set: s(plain_script!("channel_set")),
            order_note: s(plain_script!("order_note")),
            order_decide: s(plain_script!("order_decide")),
            order_settle: s(plain_script!("order_settle")),
            hold_index: s(plain_script!("hold_index")),
            hold_unindex: s(plain_script!("hold_unindex")),
            avail_fence: s(plain_script!("avail_fence")),
            order_expire: s(plain_script!("order_expire")),
            early_unindex: s(plain_script!("early_unindex")),
            budget: budget.clone(),
        }
    }

    /// The budget every script's calls share (see [`CallBudget`]).
    pub fn budget(&self) -> &CallBudget {
        &self.budget
    }

    pub fn all(&self) -> [&Lua; 22] {
        [
            &self.item_configure,
            &self.level_set,
            &self.level_adjust,
            &self.touch,
            &self.hold,
            &self.hold_release,
            &self.sweep,
            &self.sweep_done,
            &self.reserve,
            &self.abort,
            &self.release,
            &self.deduct,
            &self.restock,
            &self.channel_set,
            &self.order_note,
            &self.order_decide,
            &self.order_settle,
            &self.hold_index,
            &self.hold_unindex,
            &self.avail_fence,
            &self.order_expire,
            &self.early_unindex,
        ]
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts::new()
    }
}
