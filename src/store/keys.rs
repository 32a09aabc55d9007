//! Redis key names. Every key of one sku carries the same hash tag, so a
//! script over them runs on one Redis Cluster slot.

/// The hash tag for an id (sku, order, cart): the id itself, or `%` and
/// its hex form when it holds a brace (which would end or split the tag) or
/// starts with `%`. One tag per id and back, so tools can read the sku out
/// of a key ([`sku_of_inv_key`]).
pub fn tag(id: &str) -> String {
    if id.contains(['{', '}']) || id.starts_with('%') {
        let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
        format!("%{hex}")
    } else {
        id.to_string()
    }
}

/// The id a tag stands for; None for text no [`tag`] call returns.
pub fn untag(text: &str) -> Option<String> {
    if text.contains(['{', '}']) {
        return None;
    }
    let Some(hex) = text.strip_prefix('%') else { return Some(text.to_string()) };
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("checked hex")).collect();
    String::from_utf8(bytes).ok().filter(|id| tag(id) == text)
}

/// SCAN pattern of every sku's `inv` hash (type hash).
pub const INV_PATTERN: &str = "rv:{*}:inv";

/// The sku whose `inv` hash this key is; None for any other key (an order
/// or event id can end in `:inv`, but then the text between the braces is
/// no tag).
pub fn sku_of_inv_key(key: &str) -> Option<String> {
    untag(key.strip_prefix("rv:{")?.strip_suffix("}:inv")?)
}

/// SCAN pattern of the per-sku order records (type hash).
pub const ORDER_RECORD_PATTERN: &str = "rv:{*}:o:*";

/// The sku of a per-sku order record key; None for any other key.
pub fn sku_of_order_key(key: &str) -> Option<String> {
    let (tag, rest) = key.strip_prefix("rv:{")?.split_once('}')?;
    rest.starts_with(":o:").then(|| untag(tag))?
}

/// The keys every per-sku script takes first: inv, holds, hexp.
pub struct SkuKeys {
    pub inv: String,
    pub holds: String,
    pub hexp: String,
    prefix: String,
}

impl SkuKeys {
    pub fn new(sku: &str) -> SkuKeys {
        let prefix = format!("rv:{{{}}}", tag(sku));
        SkuKeys { inv: format!("{prefix}:inv"), holds: format!("{prefix}:holds"), hexp: format!("{prefix}:hexp"), prefix }
    }
    /// Idempotency record of one event on this sku.
    pub fn event(&self, event_id: &str) -> String {
        format!("{}:e:{event_id}", self.prefix)
    }
    /// This order's record on this sku.
    pub fn order(&self, order_id: &str) -> String {
        format!("{}:o:{order_id}", self.prefix)
    }
    /// Set while a cart's hold on this sku, turned into an order's
    /// reservation, may still be given back by that order's compensation:
    /// the order record's key, until the hold's expiry. A later hold or
    /// release of the cart on the sku deletes it. Its name with an empty
    /// cart id (an order without a cart) is never written.
    pub fn consumed_hold(&self, cart_id: &str) -> String {
        format!("{}:hc:{cart_id}", self.prefix)
    }
}

/// The order key (decision, outcome, lines) and its pending-op list.
pub fn order(order_id: &str) -> (String, String) {
    let t = tag(order_id);
    (format!("rv:o:{{{t}}}"), format!("rv:o:{{{t}}}:p"))
}

/// A channel's locations (JSON list). Channel keys share one slot so they
/// can be written together, and none starts with `rv:{` like a sku's.
pub fn channel(name: &str) -> String {
    format!("rv:ch:{{ch}}:c:{name}")
}

/// The marker of an applied `inventory.channel.configured` event.
pub fn channel_event(event_id: &str) -> String {
    format!("rv:ch:{{ch}}:e:{event_id}")
}

/// Set once a channel event's recompute touched every sku it found: a
/// replay then bumps none (skus stocked since were published by their own
/// levels), while a redelivery after a crash mid-recompute bumps the rest.
pub fn channel_event_done(event_id: &str) -> String {
    format!("rv:ch:{{ch}}:e:{event_id}:done")
}

/// The set of all channel names.
pub const CHANNELS: &str = "rv:ch:{ch}";

/// A new random token at every channel change: a worker whose channel list
/// was read at another generation reads it again before computing availability.
pub const CHANNEL_GENERATION: &str = "rv:ch:{ch}:gen";

/// Skus with a level at a location, so a channel change can find them.
pub fn location_skus(location: &str) -> String {
    format!("rv:loc:{location}")
}

/// Skus a cart holds, for `cart.released` without a sku list.
pub fn cart(cart_id: &str) -> String {
    format!("rv:cart:{{{}}}", tag(cart_id))
}

/// Orders with shipments or credit memos kept before their placement, by
/// deadline (one zset per shard of [`hold_shard`] of the order id): the
/// sweep dead-letters those whose order never came.
pub fn early_index(shard: u32) -> String {
    format!("rv:early:{{{shard}}}")
}

/// Shards of the hold-expiry index: one zset, generation hash and counter
/// each, with a shared tag so one script can touch all three.
pub const HOLD_SHARDS: u32 = 16;

pub struct HoldIndexKeys {
    pub zset: String,
    pub gens: String,
    pub counter: String,
}

pub fn hold_index(shard: u32) -> HoldIndexKeys {
    let p = format!("rv:hd:{{{shard}}}");
    HoldIndexKeys { zset: p.clone(), gens: format!("{p}:g"), counter: format!("{p}:c") }
}

/// The shard a sku's holds are indexed in (FNV-1a).
pub fn hold_shard(sku: &str) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in sku.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    h % HOLD_SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_tag_per_sku() {
        let k = SkuKeys::new("SKU-1");
        assert_eq!(k.inv, "rv:{SKU-1}:inv");
        assert_eq!(k.order("o-1"), "rv:{SKU-1}:o:o-1");
        assert_eq!(SkuKeys::new("a{b}").inv, "rv:{%617b627d}:inv");
    }

    #[test]
    fn tags_map_back_to_one_id() {
        for id in ["SKU-1", "a{b}", "%41", "x617b627d", "é}", "a:inv", "%"] {
            assert_eq!(untag(&tag(id)).as_deref(), Some(id), "{id}");
            assert_eq!(sku_of_inv_key(&SkuKeys::new(id).inv).as_deref(), Some(id), "{id}");
        }
        // Two ids never share a tag: a '%' id is always hexed.
        assert_ne!(tag("%617b"), tag("a{"));
        assert_eq!(untag("%41"), None, "'A' is tagged as itself, so %41 is no tag");
        assert_eq!(untag("%4"), None);
        assert_eq!(sku_of_inv_key("rv:{SKU}:o:x}:inv"), None);
        assert_eq!(sku_of_inv_key("rv:{SKU}:holds"), None);
        assert_eq!(sku_of_inv_key(&channel("inv")), None);
        assert_eq!(sku_of_order_key(&SkuKeys::new("a{b}").order("o}:1")).as_deref(), Some("a{b}"));
        assert_eq!(sku_of_order_key(&SkuKeys::new("S").event("x}:o:y")), None);
        assert_eq!(sku_of_order_key(&order("o-1").0), None);
    }

    #[test]
    fn shards_spread() {
        let used: std::collections::HashSet<u32> = (0..200).map(|i| hold_shard(&format!("SKU-{i}"))).collect();
        assert_eq!(used.len(), HOLD_SHARDS as usize);
    }
}
