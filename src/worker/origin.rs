//! Where an input event came from, and its dead letter.
//!
//! A shipment or credit memo that arrives before its order's placement is
//! kept in Redis until the placement, and may be refused only then, long
//! after its own offset was committed. So the worker hands the store the
//! original message with it (as [`Origin::encode`]), and dead-letters it
//! from there when the placement reports the refusal.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rdkafka::message::{Message, OwnedMessage};
use serde::{Deserialize, Serialize};

use crate::publish::Out;

/// Values larger than this are dead-lettered without their value (header
/// `dlq.value_bytes` says how large it was): Kafka's default message limit
/// would refuse them, and the partition must not stall on it.
const DLQ_MAX_VALUE: usize = 900 * 1024;

/// Longest `dlq.message` header: a refusal of many lines names each, and the
/// header counts toward the same message limit as the value.
const DLQ_MAX_MESSAGE: usize = 4096;

/// Most bytes of the input's own headers a dead letter carries.
const DLQ_MAX_HEADERS: usize = 16 * 1024;

/// `message` cut to `max` bytes at a character boundary, saying how long it was.
fn capped(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_string();
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all; cut)", &message[..end], message.len())
}

/// An input message: where it was, and its key and value unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub event_id: Option<String>,
    #[serde(with = "base64_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "base64_bytes")]
    pub value: Vec<u8>,
    /// The input's own headers (a binary-mode CloudEvent's attributes are
    /// there), kept on its dead letter; none for origins stored before.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "base64_headers")]
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A message's headers as (name, value), borrowed from the message; a
/// header without a value as empty. Copied only where an origin is kept.
pub fn headers_of(m: &OwnedMessage) -> Vec<(&str, &[u8])> {
    use rdkafka::message::Headers as _;
    m.headers().map(|h| h.iter().map(|h| (h.key, h.value.unwrap_or_default())).collect()).unwrap_or_default()
}

mod base64_headers {
    use super::*;

    pub fn serialize<S: serde::Serializer>(h: &[(String, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(h.iter().map(|(k, v)| (k, B64.encode(v))))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(String, Vec<u8>)>, D::Error> {
        let h = Vec::<(String, String)>::deserialize(d)?;
        h.into_iter().map(|(k, v)| Ok((k, B64.decode(v).map_err(serde::de::Error::custom)?))).collect()
    }
}

mod base64_bytes {
    use super::*;

    pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(b))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s).map_err(serde::de::Error::custom)
    }
}

impl Origin {
    pub fn of(m: &OwnedMessage, event_id: Option<&str>) -> Origin {
        Origin {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            event_id: event_id.map(str::to_string),
            key: m.key().unwrap_or_default().to_vec(),
            value: m.payload().unwrap_or_default().to_vec(),
            headers: headers_of(m).into_iter().filter(|(k, _)| !k.starts_with("dlq.")).map(|(k, v)| (k.to_string(), v.to_vec())).collect(),
        }
    }

    /// The form the store keeps (JSON, key and value in base64).
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("an origin serializes")
    }

    pub fn decode(s: &str) -> Result<Origin, serde_json::Error> {
        serde_json::from_str(s)
    }

    /// The original key, value and headers with the `dlq.*` headers.
    pub fn dead_letter(&self, dead_letter_topic: &str, code: &str, message: &str) -> Out {
        // The input's own headers, as many as fit in a bound: with the
        // value's, the dead letter must stay within Kafka's message limit.
        let mut headers = Vec::new();
        let (mut size, mut dropped) = (0, 0);
        for (k, v) in &self.headers {
            size += k.len() + v.len();
            if size <= DLQ_MAX_HEADERS {
                headers.push((k.clone(), v.clone()));
            } else {
                dropped += 1;
            }
        }
        if dropped > 0 {
            headers.push(("dlq.headers_dropped".to_string(), dropped.to_string().into_bytes()));
        }
        headers.extend([
            ("dlq.code".to_string(), code.as_bytes().to_vec()),
            ("dlq.message".to_string(), capped(message, DLQ_MAX_MESSAGE).into_bytes()),
            ("dlq.topic".to_string(), self.topic.as_bytes().to_vec()),
            ("dlq.partition".to_string(), self.partition.to_string().into_bytes()),
            ("dlq.offset".to_string(), self.offset.to_string().into_bytes()),
        ]);
        if let Some(id) = &self.event_id {
            headers.push(("dlq.event_id".to_string(), id.as_bytes().to_vec()));
        }
        let mut payload = self.value.clone();
        if payload.len() > DLQ_MAX_VALUE {
            headers.push(("dlq.value_bytes".to_string(), payload.len().to_string().into_bytes()));
            payload.clear();
        }
        Out { topic: dead_letter_topic.to_string(), key: self.key.clone(), payload, headers, availability: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_any_bytes() {
        let o = Origin {
            topic: "shop.shipments".into(),
            partition: 3,
            offset: 42,
            event_id: Some("e-1".into()),
            key: vec![0, 255, b'"', b'\n'],
            value: br#"{"id":"e-1","data":{"q":1.50}}"#.to_vec(),
            headers: vec![("ce_type".into(), b"shipment.created".to_vec()), ("bin".into(), vec![0, 255])],
        };
        assert_eq!(Origin::decode(&o.encode()).unwrap(), o);
        // Stored before origins kept headers.
        let old = r#"{"topic":"t","partition":0,"offset":1,"event_id":null,"key":"aw==","value":"dg=="}"#;
        assert_eq!(Origin::decode(old).unwrap().headers, vec![]);
    }

    #[test]
    fn a_long_refusal_message_is_cut_to_a_few_kilobytes() {
        let o = Origin { topic: "t".into(), partition: 0, offset: 0, event_id: None, key: b"k".to_vec(), value: b"v".to_vec(), headers: vec![] };
        let long = "data.lines[line_id=\"é\"]: over_refund; ".repeat(20_000);
        let out = o.dead_letter("dl", "over_refund", &long);
        let m = &out.headers.iter().find(|(k, _)| k == "dlq.message").unwrap().1;
        assert!(m.len() < DLQ_MAX_MESSAGE + 64, "{} bytes", m.len());
        assert!(String::from_utf8(m.clone()).unwrap().ends_with(&format!("({} bytes in all; cut)", long.len())));
    }

    #[test]
    fn dead_letter_keeps_key_value_and_names_the_origin() {
        let headers = vec![("ce_type".to_string(), b"shipment.created".to_vec()), ("big".to_string(), vec![b'x'; DLQ_MAX_HEADERS])];
        let o = Origin { topic: "t".into(), partition: 1, offset: 7, event_id: None, key: b"k".to_vec(), value: b"v".to_vec(), headers };
        let out = o.dead_letter("inventory.dead-letter", "over_refund", "data.lines[line_id=\"1\"]: too much");
        assert_eq!((out.key.as_slice(), out.payload.as_slice()), (&b"k"[..], &b"v"[..]));
        let h: Vec<(&str, &[u8])> = out.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        assert!(h.contains(&("dlq.offset", &b"7"[..])) && h.contains(&("dlq.topic", &b"t"[..])), "{h:?}");
        assert!(!h.iter().any(|(k, _)| *k == "dlq.event_id"));
        // The input's own headers come along (a binary-mode event's attributes), within a bound.
        assert!(h.contains(&("ce_type", &b"shipment.created"[..])) && !h.iter().any(|(k, _)| *k == "big"), "{h:?}");
        assert!(h.contains(&("dlq.headers_dropped", &b"1"[..])), "{h:?}");
    }
}
