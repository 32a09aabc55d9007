//! Reading typed fields out of a JSON object with errors that name the
//! field by its path (`data.lines[1].quantity`).

use serde_json::{Map, Value};

use crate::qty::Qty;

/// Most entries in any list of an input event (lines, skus, locations). The
/// largest output an event can cause (a confirmed result naming every
/// line's allocations, or a dead letter quoting it) then stays well inside
/// Kafka's default 1 MB message size, so every event gets its answer.
pub const MAX_LIST: usize = 500;

/// A field-level problem: the path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError(pub String);

pub struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!("{}…", &s[..s.char_indices().take_while(|(i, _)| *i < 60).last().map_or(0, |(i, c)| i + c.len_utf8())])
    } else {
        s
    }
}

impl<'a> Obj<'a> {
    pub fn new(v: &'a Value, path: &str) -> Result<Obj<'a>, FieldError> {
        match v {
            Value::Object(map) => Ok(Obj { map, path: path.to_string() }),
            other => Err(FieldError(format!("{path} must be an object, got {}", show(other)))),
        }
    }

    pub fn path(&self, name: &str) -> String {
        format!("{}.{name}", self.path)
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn required(&self, name: &str) -> Result<&'a Value, FieldError> {
        self.get(name).ok_or_else(|| FieldError(format!("{} is required", self.path(name))))
    }

    /// A required id: a non-empty string without control characters.
    pub fn id(&self, name: &str) -> Result<String, FieldError> {
        let v = self.required(name)?;
        check_id(&self.path(name), v)
    }

    pub fn opt_id(&self, name: &str) -> Result<Option<String>, FieldError> {
        self.get(name).map(|v| check_id(&self.path(name), v)).transpose()
    }

    pub fn opt_str(&self, name: &str) -> Result<Option<&'a str>, FieldError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(FieldError(format!("{} must be a string, got {}", self.path(name), show(other)))),
        }
    }

    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, FieldError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(FieldError(format!("{} must be true or false, got {}", self.path(name), show(other)))),
        }
    }

    pub fn bool(&self, name: &str) -> Result<bool, FieldError> {
        self.opt_bool(name)?.ok_or_else(|| FieldError(format!("{} is required", self.path(name))))
    }

    pub fn opt_qty(&self, name: &str) -> Result<Option<Qty>, FieldError> {
        let Some(v) = self.get(name) else { return Ok(None) };
        let text = match v {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            other => return Err(FieldError(format!("{} must be a decimal number, got {}", self.path(name), show(other)))),
        };
        Qty::parse(&text).map(Some).map_err(|e| FieldError(format!("{} {e}", self.path(name))))
    }

    pub fn qty(&self, name: &str) -> Result<Qty, FieldError> {
        self.opt_qty(name)?.ok_or_else(|| FieldError(format!("{} is required", self.path(name))))
    }

    /// A quantity > 0.
    pub fn positive(&self, name: &str) -> Result<Qty, FieldError> {
        let q = self.qty(name)?;
        if !q.is_positive() {
            return Err(FieldError(format!("{} must be > 0, got {q}", self.path(name))));
        }
        Ok(q)
    }

    /// A quantity >= 0, if present.
    pub fn opt_nonneg(&self, name: &str) -> Result<Option<Qty>, FieldError> {
        match self.opt_qty(name)? {
            Some(q) if q.is_negative() => Err(FieldError(format!("{} must be >= 0, got {q}", self.path(name)))),
            other => Ok(other),
        }
    }

    pub fn nonneg(&self, name: &str) -> Result<Qty, FieldError> {
        self.opt_nonneg(name)?.ok_or_else(|| FieldError(format!("{} is required", self.path(name))))
    }

    pub fn opt_obj(&self, name: &str) -> Result<Option<Obj<'a>>, FieldError> {
        self.get(name).map(|v| Obj::new(v, &self.path(name))).transpose()
    }

    /// An array's elements with their paths.
    pub fn opt_array(&self, name: &str) -> Result<Option<Vec<(String, &'a Value)>>, FieldError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(a)) if a.len() > MAX_LIST => Err(FieldError(format!(
                "{} has {} entries; an event may list at most {MAX_LIST} (split the order, shipment or credit memo)",
                self.path(name),
                a.len()
            ))),
            Some(Value::Array(a)) => Ok(Some(a.iter().enumerate().map(|(i, v)| (format!("{}[{i}]", self.path(name)), v)).collect())),
            Some(other) => Err(FieldError(format!("{} must be a list, got {}", self.path(name), show(other)))),
        }
    }

    /// A required, non-empty array.
    pub fn array(&self, name: &str) -> Result<Vec<(String, &'a Value)>, FieldError> {
        let a = self.opt_array(name)?.ok_or_else(|| FieldError(format!("{} is required", self.path(name))))?;
        if a.is_empty() {
            return Err(FieldError(format!("{} must not be empty", self.path(name))));
        }
        Ok(a)
    }
}

pub fn check_id(path: &str, v: &Value) -> Result<String, FieldError> {
    match v {
        Value::String(s) if s.is_empty() => Err(FieldError(format!("{path} must not be empty"))),
        Value::String(s) if s.chars().any(char::is_control) => Err(FieldError(format!("{path} must not contain control characters"))),
        Value::String(s) if s.len() > 256 => Err(FieldError(format!("{path} must be at most 256 characters long"))),
        Value::String(s) => Ok(s.clone()),
        other => Err(FieldError(format!("{path} must be a string, got {}", show(other)))),
    }
}
