//! Turning script replies (nested Redis arrays of strings) into typed values.

use redis::Value;

use super::StoreError;
use crate::domain::{BeyondStock, ItemConfig, Level, SkuState, Tracking};
use crate::qty::Qty;

/// Field separator inside stored values (ids cannot contain control chars).
pub const US: char = '\u{1f}';

pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

pub fn items(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(a) => Some(a),
        Value::Nil => Some(&[]),
        _ => None,
    }
}

/// A script's reply as strings, nested one level: {code, detail[], ...}.
pub struct Reply {
    pub script: &'static str,
    pub code: String,
    pub detail: Vec<String>,
    pub before: SkuState,
    pub after: SkuState,
}

impl Reply {
    /// Parses {code, detail, before fields, after fields}.
    pub fn sku(script: &'static str, v: Value) -> Result<Reply, StoreError> {
        let bad = || StoreError::Reply(format!("{script}: unexpected reply shape"));
        let a = items(&v).ok_or_else(bad)?;
        if a.len() != 4 {
            return Err(bad());
        }
        Ok(Reply {
            script,
            code: text(&a[0]).ok_or_else(bad)?,
            detail: strings(&a[1]).ok_or_else(bad)?,
            before: sku_state(&strings(&a[2]).ok_or_else(bad)?).map_err(|e| StoreError::Reply(format!("{script}: {e}")))?,
            after: sku_state(&strings(&a[3]).ok_or_else(bad)?).map_err(|e| StoreError::Reply(format!("{script}: {e}")))?,
        })
    }

    pub fn bad(&self, what: &str) -> StoreError {
        StoreError::Reply(format!("{}: {what} in reply {:?} {:?}", self.script, self.code, self.detail))
    }

    pub fn qty(&self, i: usize) -> Result<Qty, StoreError> {
        self.detail.get(i).and_then(|s| s.parse::<i64>().ok()).map(Qty).ok_or_else(|| self.bad("quantity"))
    }

    /// A quantity or None for ''.
    pub fn opt_qty(&self, i: usize) -> Result<Option<Qty>, StoreError> {
        match self.detail.get(i).map(String::as_str) {
            Some("") => Ok(None),
            _ => self.qty(i).map(Some),
        }
    }

    pub fn str(&self, i: usize) -> Result<&str, StoreError> {
        self.detail.get(i).map(String::as_str).ok_or_else(|| self.bad("missing field"))
    }
}

pub fn strings(v: &Value) -> Option<Vec<String>> {
    items(v)?.iter().map(text).collect()
}

pub fn split(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split(US).collect()
    }
}

fn int(s: &str, what: &str) -> Result<i64, String> {
    s.parse().map_err(|_| format!("{what} is not an integer: {s:?}"))
}

fn opt_qty(s: &str, what: &str) -> Result<Option<Qty>, String> {
    if s.is_empty() {
        Ok(None)
    } else {
        int(s, what).map(|v| Some(Qty(v)))
    }
}

/// The settings as stored in `cfg`.
pub fn encode_config(c: &ItemConfig) -> String {
    let lim = |l: Option<Qty>| l.map(|q| q.raw().to_string()).unwrap_or_default();
    let flag = |b: bool| if b { "1" } else { "0" };
    [
        c.tracking.code().to_string(),
        flag(c.backorders.enabled).into(),
        lim(c.backorders.limit),
        flag(c.preorder.enabled).into(),
        lim(c.preorder.limit),
        c.out_of_stock_threshold.raw().to_string(),
        lim(c.low_stock_threshold),
    ]
    .join(&US.to_string())
}

pub fn decode_config(s: &str) -> Result<ItemConfig, String> {
    let f: Vec<&str> = s.split(US).collect();
    if f.len() != 7 {
        return Err(format!("settings have {} fields, expected 7", f.len()));
    }
    Ok(ItemConfig {
        tracking: Tracking::from_code(f[0]).ok_or_else(|| format!("unknown tracking {:?}", f[0]))?,
        backorders: BeyondStock { enabled: f[1] == "1", limit: opt_qty(f[2], "backorder limit")? },
        preorder: BeyondStock { enabled: f[3] == "1", limit: opt_qty(f[4], "preorder limit")? },
        out_of_stock_threshold: Qty(int(f[5], "out_of_stock_threshold")?),
        low_stock_threshold: opt_qty(f[6], "low_stock_threshold")?,
    })
}

/// The sku hash's fields (HGETALL order) as a state.
pub fn sku_state(fields: &[String]) -> Result<SkuState, String> {
    let mut s = SkuState::default();
    let mut out_of_stock = Vec::new();
    for pair in fields.chunks(2) {
        let [k, v] = pair else { return Err("odd field list".into()) };
        match k.as_str() {
            "ex" => s.exists = v == "1",
            "v" => s.version = int(v, "version")? as u64,
            "cfg" => s.config = decode_config(v)?,
            "bu" => s.backordered = Qty(int(v, "bu")?),
            "pu" => s.preordered = Qty(int(v, "pu")?),
            _ => {
                if let Some(loc) = k.strip_prefix("h:") {
                    s.levels.entry(loc.to_string()).or_default().on_hand = Qty(int(v, k)?);
                } else if let Some(loc) = k.strip_prefix("r:") {
                    // Reserved can outlive the row only transiently; keep it visible.
                    s.levels.entry(loc.to_string()).or_default().reserved = Qty(int(v, k)?);
                } else if let Some(loc) = k.strip_prefix("s:") {
                    out_of_stock.push((loc.to_string(), v == "0"));
                }
            }
        }
    }
    for (loc, out) in out_of_stock {
        if let Some(l) = s.levels.get_mut(&loc) {
            l.in_stock = !out;
        }
    }
    // Drop rows that only carry a zero reserved count and no level.
    let has_row: Vec<String> = fields.chunks(2).filter_map(|p| p[0].strip_prefix("h:").map(str::to_string)).collect();
    s.levels.retain(|loc, l: &mut Level| has_row.contains(loc) || !l.reserved.is_zero());
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trip() {
        let c = ItemConfig {
            tracking: Tracking::Quantity,
            backorders: BeyondStock { enabled: true, limit: Some(Qty::units(3)) },
            preorder: BeyondStock { enabled: false, limit: None },
            out_of_stock_threshold: Qty(5),
            low_stock_threshold: None,
        };
        assert_eq!(decode_config(&encode_config(&c)).unwrap(), c);
    }

    #[test]
    fn state_from_fields() {
        let f: Vec<String> = ["ex", "1", "v", "7", "h:eu-1", "55000", "r:eu-1", "10000", "h:eu-3", "1", "s:eu-3", "0", "r:gone", "0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let s = sku_state(&f).unwrap();
        assert!(s.exists);
        assert_eq!(s.version, 7);
        assert_eq!(s.levels["eu-1"], Level { on_hand: Qty(55000), reserved: Qty(10000), in_stock: true });
        assert!(!s.levels["eu-3"].in_stock);
        assert!(!s.levels.contains_key("gone"));
    }
}
