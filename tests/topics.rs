//! `topics/`: every example validates against its JSON Schema and decodes
//! (inputs); outputs built by the worker validate; broken inputs get the
//! right dead-letter code.

use std::path::Path;

use reservoir::wire::{decode, output, TopicKind};
use serde_json::{json, Value};

fn schema(ty: &str) -> jsonschema::Validator {
    let p = format!("{}/topics/schemas/{ty}.schema.json", env!("CARGO_MANIFEST_DIR"));
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))).unwrap();
    jsonschema::validator_for(&s).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn valid(v: &Value) -> Result<(), String> {
    let ty = v["type"].as_str().ok_or("no type")?;
    let errs: Vec<String> = schema(ty).iter_errors(v).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    if errs.is_empty() { Ok(()) } else { Err(errs.join("; ")) }
}

fn kind(folder: &str) -> Option<TopicKind> {
    Some(match folder {
        "inventory.stock" => TopicKind::Stock,
        "shop.carts" => TopicKind::Carts,
        "shop.orders" => TopicKind::Orders,
        "shop.shipments" => TopicKind::Shipments,
        "shop.credit-memos" => TopicKind::CreditMemos,
        _ => return None,
    })
}

#[test]
fn every_example_validates_and_decodes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("topics/examples");
    let examples = reservoir::tools::load_examples(&dir).unwrap();
    let mut types = std::collections::BTreeSet::new();
    for ex in &examples {
        let v: Value = serde_json::from_slice(&ex.value).unwrap();
        valid(&v).unwrap_or_else(|e| panic!("{}: {e}", ex.path.display()));
        types.insert(v["type"].as_str().unwrap().to_string());
        if let Some(k) = kind(&ex.topic_dir) {
            decode(k, &ex.value, 1 << 20).unwrap_or_else(|e| panic!("{}: {e}", ex.path.display()));
        }
    }
    let schemas = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("topics/schemas")).unwrap().count();
    assert_eq!(types.len(), schemas, "an example for every schema: {types:?}");
    assert_eq!(schemas, 15);
}

#[test]
fn outputs_the_worker_builds_validate() {
    use reservoir::domain::*;
    use reservoir::qty::Qty;
    let u = AvailabilityUpdate {
        channel: "eu".into(),
        sku: "S".into(),
        availability: Availability {
            status: Status::Backorder,
            available: Some(Qty::ZERO),
            on_hand: Some(Qty::units(1)),
            reserved: Some(Qty::units(1)),
            backorder_remaining: Remaining::Units(Qty(25_000)),
            preorder_remaining: Remaining::Unlimited,
        },
        version: 3,
        changed: true,
    };
    let env = |ty: &str, data: Value| -> Value { serde_json::from_slice(&output::envelope("reservoir", ty, data)).unwrap() };
    let a = env("inventory.availability.changed", output::availability(&u, "e1"));
    valid(&a).unwrap();
    assert_eq!(a["data"]["backorder_remaining"], json!(2.5));
    assert_eq!(a["data"]["preorder_remaining"], Value::Null);
    let conf = OrderOutcome::Confirmed {
        lines: vec![ConfirmedLine {
            line_id: "1".into(),
            sku: "S".into(),
            quantity: Qty::units(2),
            allocations: vec![Allocation { location: "l1".into(), quantity: Qty::units(2) }],
            backordered: Qty::ZERO,
            preordered: Qty::ZERO,
        }],
    };
    let rej = OrderOutcome::Rejected {
        lines: vec![RejectedLine { line_id: "1".into(), sku: "S".into(), requested: Qty::units(2), available: Qty(5), reason: RejectReason::InsufficientStock }],
    };
    for o in [conf, rej] {
        let (ty, data) = output::reservation(&o, "o-1", "eu", "e2");
        valid(&env(ty, data)).unwrap();
    }
    for confirmed in [true, false] {
        let h = HoldOutcome { confirmed, requested: Qty::units(1), held: Qty::units(1), available: None, expires_at_ms: 1_800_000_000_000 };
        let (ty, data) = output::hold(&h, "c", "eu", "S", "e3");
        valid(&env(ty, data)).unwrap();
    }
}

#[test]
fn broken_inputs_get_the_right_code() {
    let base = json!({"specversion": "1.0", "id": "b1", "source": "t", "type": "order.placed",
        "data": {"order_id": "o", "channel": "eu", "lines": [{"line_id": "1", "sku": "S", "quantity": 2}]}});
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        f(&mut v);
        v
    };
    let cases: Vec<(&str, Vec<u8>, TopicKind)> = vec![
        ("malformed_json", b"{".to_vec(), TopicKind::Orders),
        ("invalid_envelope", serde_json::to_vec(&with(&|v| { v.as_object_mut().unwrap().remove("specversion"); })).unwrap(), TopicKind::Orders),
        ("invalid_envelope", serde_json::to_vec(&with(&|v| v["specversion"] = json!("0.3"))).unwrap(), TopicKind::Orders),
        ("invalid_envelope", serde_json::to_vec(&with(&|v| { v.as_object_mut().unwrap().remove("data"); })).unwrap(), TopicKind::Orders),
        ("unknown_type", serde_json::to_vec(&with(&|v| v["type"] = json!("order.exploded"))).unwrap(), TopicKind::Orders),
        ("unknown_type", serde_json::to_vec(&base).unwrap(), TopicKind::Stock),
        ("invalid_data", serde_json::to_vec(&with(&|v| v["data"]["lines"][0]["quantity"] = json!(-2))).unwrap(), TopicKind::Orders),
        ("invalid_data", serde_json::to_vec(&with(&|v| v["data"]["lines"][0]["quantity"] = json!("1.00001"))).unwrap(), TopicKind::Orders),
        ("invalid_data", serde_json::to_vec(&with(&|v| v["data"]["lines"] = json!([]))).unwrap(), TopicKind::Orders),
        ("too_large", vec![b' '; 2 << 20], TopicKind::Orders),
    ];
    for (code, bytes, k) in &cases {
        let err = decode(*k, bytes, 1 << 20).expect_err(code);
        assert_eq!(err.code(), *code, "{err}");
        if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
            if *code != "unknown_type" && v.get("type").is_some() {
                assert!(valid(&v).is_err(), "the schema also refuses the {code} case: {v}");
            }
        }
    }
    let msg = decode(TopicKind::Orders, &cases[6].1, 1 << 20).unwrap_err().to_string();
    assert!(msg.contains("data.lines[0].quantity must be > 0"), "{msg}");
    let stock = |d: Value| serde_json::to_vec(&json!({"specversion": "1.0", "id": "b2", "source": "t", "type": "inventory.level.adjusted", "data": d})).unwrap();
    assert_eq!(decode(TopicKind::Stock, &stock(json!({"sku": "S", "location": "l", "delta": 0})), 1 << 20).unwrap_err().code(), "invalid_data");
    let ch = serde_json::to_vec(&json!({"specversion": "1.0", "id": "b3", "source": "t", "type": "inventory.channel.configured", "data": {"channel": "eu", "locations": ["a", "a"]}})).unwrap();
    assert_eq!(decode(TopicKind::Stock, &ch, 1 << 20).unwrap_err().code(), "invalid_data");
}
