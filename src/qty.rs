//! Exact decimal quantities.
//!
//! The contract allows at most 4 fractional digits, so a quantity is an `i64`
//! count of ten-thousandths. The magnitude is capped at [`Qty::MAX`] so that
//! sums stay exact in Redis Lua, whose numbers are IEEE doubles (exact up to
//! 2^53 ≈ 9.0e15).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Fixed-point units per whole unit.
pub const SCALE: i64 = 10_000;

/// A quantity in ten-thousandths of a unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Qty(pub i64);

/// Why a text is not a contract quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QtyError {
    #[error("is not a decimal number: {0:?}")]
    NotANumber(String),
    #[error("has more than 4 fractional digits: {0}")]
    TooPrecise(String),
    #[error("is out of range (at most 10000000000 in magnitude): {0}")]
    OutOfRange(String),
}

impl Qty {
    pub const ZERO: Qty = Qty(0);
    /// 10^10 units: leaves headroom for sums over locations in Lua doubles.
    pub const MAX: Qty = Qty(10_000_000_000 * SCALE);

    pub fn units(n: i64) -> Qty {
        Qty(n * SCALE)
    }
    pub fn raw(self) -> i64 {
        self.0
    }
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
    pub fn is_negative(self) -> bool {
        self.0 < 0
    }
    pub fn is_positive(self) -> bool {
        self.0 > 0
    }
    pub fn max(self, o: Qty) -> Qty {
        Qty(self.0.max(o.0))
    }
    pub fn min(self, o: Qty) -> Qty {
        Qty(self.0.min(o.0))
    }

    /// Parses `[-+]digits[.digits][e[-+]digits]` exactly.
    pub fn parse(text: &str) -> Result<Qty, QtyError> {
        let bad = || QtyError::NotANumber(text.to_string());
        let s = text.trim();
        let (neg, s) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let (mantissa, exp) = match s.find(['e', 'E']) {
            Some(i) => {
                let e: i32 = s[i + 1..].parse().map_err(|_| bad())?;
                (&s[..i], e)
            }
            None => (s, 0),
        };
        let (int, frac) = match mantissa.find('.') {
            Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
            None => (mantissa, ""),
        };
        if int.is_empty() && frac.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        // Digits as one integer with `scale` fractional places, trailing
        // zeros dropped so "1.50000" is fine but "1.00001" is not.
        let mut digits: String = format!("{int}{frac}").trim_start_matches('0').to_string();
        let mut scale = frac.len() as i64 - exp as i64;
        while scale > 0 && digits.ends_with('0') {
            digits.pop();
            scale -= 1;
        }
        if digits.is_empty() {
            return Ok(Qty::ZERO);
        }
        if scale > 4 {
            return Err(QtyError::TooPrecise(text.to_string()));
        }
        let shift = 4 - scale; // >= 0
        if digits.len() as i64 + shift > 18 {
            return Err(QtyError::OutOfRange(text.to_string()));
        }
        let mut v: i64 = digits.parse().map_err(|_| bad())?;
        for _ in 0..shift {
            v *= 10;
        }
        if v > Qty::MAX.0 {
            return Err(QtyError::OutOfRange(text.to_string()));
        }
        Ok(Qty(if neg { -v } else { v }))
    }
}

impl std::ops::Add for Qty {
    type Output = Qty;
    fn add(self, o: Qty) -> Qty {
        Qty(self.0 + o.0)
    }
}
impl std::ops::Sub for Qty {
    type Output = Qty;
    fn sub(self, o: Qty) -> Qty {
        Qty(self.0 - o.0)
    }
}
impl std::ops::AddAssign for Qty {
    fn add_assign(&mut self, o: Qty) {
        self.0 += o.0
    }
}
impl std::ops::SubAssign for Qty {
    fn sub_assign(&mut self, o: Qty) {
        self.0 -= o.0
    }
}
impl std::iter::Sum for Qty {
    fn sum<I: Iterator<Item = Qty>>(iter: I) -> Qty {
        Qty(iter.map(|q| q.0).sum())
    }
}

impl FromStr for Qty {
    type Err = QtyError;
    fn from_str(s: &str) -> Result<Qty, QtyError> {
        Qty::parse(s)
    }
}

/// Shortest exact form: "8.5", "3", "-0.0001".
impl fmt::Display for Qty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let a = self.0.unsigned_abs();
        let int = a / SCALE as u64;
        let frac = a % SCALE as u64;
        if frac == 0 {
            write!(f, "{sign}{int}")
        } else {
            let s = format!("{frac:04}");
            write!(f, "{sign}{int}.{}", s.trim_end_matches('0'))
        }
    }
}

/// Written as a JSON number with no more digits than needed.
impl Serialize for Qty {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n: serde_json::Number = self
            .to_string()
            .parse()
            .map_err(|_| serde::ser::Error::custom("quantity is not a JSON number"))?;
        n.serialize(s)
    }
}

/// Read from a JSON number or a string, exactly.
impl<'de> Deserialize<'de> for Qty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Qty, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let text = match &v {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => s.clone(),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "must be a decimal number or a string holding one, not {other}"
                )))
            }
        };
        Qty::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        assert_eq!(Qty::parse("8.5").unwrap(), Qty(85_000));
        assert_eq!(Qty::parse("0.25").unwrap(), Qty(2_500));
        assert_eq!(Qty::parse("-3").unwrap(), Qty(-30_000));
        assert_eq!(Qty::parse("1.00010").unwrap(), Qty(10_001));
        assert_eq!(Qty::parse("1e2").unwrap(), Qty::units(100));
        assert_eq!(Qty::parse("25e-2").unwrap(), Qty(2_500));
        assert_eq!(Qty::parse(".5").unwrap(), Qty(5_000));
        assert_eq!(Qty::parse("0").unwrap(), Qty::ZERO);
        assert_eq!(Qty::parse("0.0001").unwrap(), Qty(1));
    }

    #[test]
    fn rejects_what_the_contract_forbids() {
        assert!(matches!(Qty::parse("1.00001"), Err(QtyError::TooPrecise(_))));
        assert!(matches!(Qty::parse("1e-5"), Err(QtyError::TooPrecise(_))));
        assert!(matches!(Qty::parse("NaN"), Err(QtyError::NotANumber(_))));
        assert!(matches!(Qty::parse("1e400"), Err(QtyError::OutOfRange(_))));
        assert!(matches!(Qty::parse("10000000001"), Err(QtyError::OutOfRange(_))));
        assert!(matches!(Qty::parse(""), Err(QtyError::NotANumber(_))));
        assert!(matches!(Qty::parse("1.2.3"), Err(QtyError::NotANumber(_))));
        assert!(matches!(Qty::parse("e5"), Err(QtyError::NotANumber(_))));
    }

    #[test]
    fn formats_minimal_digits() {
        assert_eq!(Qty(85_000).to_string(), "8.5");
        assert_eq!(Qty(30_000).to_string(), "3");
        assert_eq!(Qty(-1).to_string(), "-0.0001");
        assert_eq!(Qty(12_340).to_string(), "1.234");
    }

    #[test]
    fn json_round_trip_from_number_and_string() {
        let a: Qty = serde_json::from_str("0.1").unwrap();
        let b: Qty = serde_json::from_str("\"0.1\"").unwrap();
        assert_eq!(a, Qty(1_000));
        assert_eq!(a, b);
        assert_eq!(serde_json::to_string(&Qty(85_000)).unwrap(), "8.5");
        assert!(serde_json::from_str::<Qty>("0.12345").is_err());
        assert!(serde_json::from_str::<Qty>("true").is_err());
    }
}
