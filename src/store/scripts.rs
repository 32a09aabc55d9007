//! The Lua scripts from `lua/`, each with the shared helpers prepended.

use super::conn::Lua;

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
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            item_configure: sku_script!("item_configure"),
            level_set: sku_script!("level_set"),
            level_adjust: sku_script!("level_adjust"),
            touch: sku_script!("touch"),
            hold: sku_script!("hold"),
            hold_release: sku_script!("hold_release"),
            sweep: sku_script!("sweep"),
            reserve: order_script!("reserve"),
            abort: order_script!("abort"),
            release: order_script!("release"),
            deduct: order_script!("deduct"),
            restock: order_script!("restock"),
            channel_set: plain_script!("channel_set"),
            order_note: plain_script!("order_note"),
            order_decide: plain_script!("order_decide"),
            order_settle: plain_script!("order_settle"),
            hold_index: plain_script!("hold_index"),
            hold_unindex: plain_script!("hold_unindex"),
            avail_fence: plain_script!("avail_fence"),
            order_expire: plain_script!("order_expire"),
            early_unindex: plain_script!("early_unindex"),
        }
    }

    pub fn all(&self) -> [&Lua; 21] {
        [
            &self.item_configure,
            &self.level_set,
            &self.level_adjust,
            &self.touch,
            &self.hold,
            &self.hold_release,
            &self.sweep,
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
