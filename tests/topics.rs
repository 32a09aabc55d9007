//! `topics/`, the machine-readable wire contract: every schema is a valid
//! draft 2020-12 schema with portable patterns; every input example
//! validates, decodes on its topic and carries the contract's key; every
//! output example validates; outputs built by `wire::output` validate;
//! broken inputs get the right dead-letter code (and fail the schema where a
//! schema can tell); and the story, applied through the engine on a local
//! `redis-server`, yields exactly the output examples.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use reservoir::tools::{load_examples, Example};
use reservoir::wire::{decode, decode_message, output, TopicKind};
use serde_json::{json, Value};

const MAX: usize = 1 << 20;

const INPUT_TYPES: [&str; 10] = [
    "inventory.channel.configured",
    "inventory.item.configured",
    "inventory.level.set",
    "inventory.level.adjusted",
    "cart.line.held",
    "cart.released",
    "order.placed",
    "order.canceled",
    "shipment.created",
    "credit_memo.created",
];

const OUTPUT_TYPES: [&str; 5] = [
    "inventory.availability.changed",
    "inventory.reservation.confirmed",
    "inventory.reservation.rejected",
    "inventory.hold.confirmed",
    "inventory.hold.rejected",
];

fn topics() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("topics")
}

fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// One validator per schema file, built once: formats asserted (RFC 3339
/// `date-time`), and patterns compiled with the `regex` engine, which has no
/// look-around, so the patterns work in RE2-style validators too.
fn validators() -> &'static BTreeMap<String, jsonschema::Validator> {
    static V: OnceLock<BTreeMap<String, jsonschema::Validator>> = OnceLock::new();
    V.get_or_init(|| {
        let mut m = BTreeMap::new();
        for f in std::fs::read_dir(topics().join("schemas")).unwrap() {
            let p = f.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let ty = name
                .strip_suffix(".schema.json")
                .unwrap_or_else(|| panic!("{name}: schema files are named <type>.schema.json"));
            let s = read_json(&p);
            assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema", "{name}");
            assert_eq!(s["properties"]["type"]["const"], ty, "{name}: type const");
            let v = jsonschema::options()
                .should_validate_formats(true)
                .with_pattern_options(jsonschema::PatternOptions::regex())
                .build(&s)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            m.insert(ty.to_string(), v);
        }
        m
    })
}

/// Validates `v` against the schema of type `ty`.
fn check(ty: &str, v: &Value) -> Result<(), String> {
    let val = validators().get(ty).unwrap_or_else(|| panic!("no schema for {ty}"));
    let errs: Vec<String> = val.iter_errors(v).map(|e| format!("{e} at {}", e.instance_path())).collect();
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

/// Validates against the schema of the event's own type.
fn valid(v: &Value) -> Result<(), String> {
    check(v["type"].as_str().ok_or("no type")?, v)
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

/// The message key the contract asks for.
fn contract_key(v: &Value) -> String {
    let d = &v["data"];
    let f = |n: &str| d[n].as_str().unwrap_or_else(|| panic!("data.{n} in {v}")).to_string();
    match v["type"].as_str().unwrap() {
        "inventory.channel.configured" => f("channel"),
        "inventory.item.configured" | "inventory.level.set" | "inventory.level.adjusted" => f("sku"),
        "cart.line.held" | "cart.released" | "inventory.hold.confirmed" | "inventory.hold.rejected" => f("cart_id"),
        "order.placed" | "order.canceled" | "shipment.created" | "credit_memo.created" => f("order_id"),
        "inventory.reservation.confirmed" | "inventory.reservation.rejected" => f("order_id"),
        "inventory.availability.changed" => format!("{}/{}", f("channel"), f("sku")),
        other => panic!("no key rule for {other}"),
    }
}

fn inputs() -> Vec<Example> {
    let all = load_examples(&topics().join("examples")).unwrap();
    for ex in &all {
        assert!(
            kind(&ex.topic_dir).is_some() || ex.topic_dir == "outputs",
            "{}: unknown folder",
            ex.path.display()
        );
    }
    all.into_iter().filter(|e| kind(&e.topic_dir).is_some()).collect()
}

fn outputs() -> Vec<(String, String, Value)> {
    let dir = topics().join("examples/outputs");
    let mut out = Vec::new();
    for f in std::fs::read_dir(&dir).unwrap() {
        let p = f.unwrap().path();
        let w = read_json(&p);
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let key = w["key"].as_str().unwrap_or_else(|| panic!("{name}: needs a string key")).to_string();
        out.push((name, key, w["value"].clone()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn schemas_one_per_type_valid_and_portable() {
    let have: BTreeSet<&str> = validators().keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = INPUT_TYPES.iter().chain(OUTPUT_TYPES.iter()).copied().collect();
    assert_eq!(have, want);
}

#[test]
fn input_examples_validate_decode_and_tell_one_story() {
    let examples = inputs();
    let mut types = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for (i, ex) in examples.iter().enumerate() {
        let name = ex.path.file_name().unwrap().to_string_lossy().into_owned();
        let v: Value = serde_json::from_slice(&ex.value).unwrap();
        let ty = v["type"].as_str().unwrap_or_else(|| panic!("{name}: no type"));
        assert_eq!(
            name,
            format!("{:02}-{ty}.json", i + 1),
            "files are numbered 01..NN across folders, named NN-<type>.json"
        );
        assert_eq!(
            kind(&ex.topic_dir),
            reservoir::wire::input::topic_of(ty),
            "{name}: {ty} belongs on another topic"
        );
        valid(&v).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ev = decode(kind(&ex.topic_dir).unwrap(), &ex.value, MAX).unwrap_or_else(|e| panic!("{name}: {} {e}", e.code()));
        assert_eq!(ev.kind, ty);
        assert_eq!(ex.key, contract_key(&v), "{name}: message key");
        assert!(ids.insert(ev.id.clone()), "{name}: event id {} used twice", ev.id);
        types.insert(ty.to_string());
    }
    let want: BTreeSet<String> = INPUT_TYPES.iter().map(|s| s.to_string()).collect();
    assert_eq!(types, want, "an example of every input type");
}

#[test]
fn output_examples_validate() {
    let mut types = BTreeSet::new();
    for (name, key, v) in outputs() {
        let ty = v["type"].as_str().unwrap_or_else(|| panic!("{name}: no type"));
        assert_eq!(name, format!("{ty}.json"));
        valid(&v).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(key, contract_key(&v), "{name}: message key");
        types.insert(ty.to_string());
    }
    let want: BTreeSet<String> = OUTPUT_TYPES.iter().map(|s| s.to_string()).collect();
    assert_eq!(types, want, "an example of every output type");
}

#[test]
fn outputs_the_worker_builds_validate() {
    use reservoir::domain::*;
    use reservoir::qty::Qty;
    let env = |(ty, data): (&str, Value)| -> Value { serde_json::from_slice(&output::envelope("reservoir", ty, data)).unwrap() };
    let upd = |status, available: Option<Qty>, on_hand, reserved, bo, po| AvailabilityUpdate {
        channel: "eu-web".into(),
        sku: "SKU-1".into(),
        availability: Availability {
            status,
            available,
            on_hand,
            reserved,
            backorder_remaining: bo,
            preorder_remaining: po,
        },
        version: 7,
        changed: true,
    };
    let (z, one, q) = (Some(Qty::ZERO), Some(Qty::units(1)), |s: &str| Some(Qty::parse(s).unwrap()));
    let updates = [
        upd(Status::InStock, q("8.5"), q("10.5"), q("2"), Remaining::NotRelevant, Remaining::NotRelevant),
        upd(Status::LowStock, q("0.0001"), one, q("0.9999"), Remaining::NotRelevant, Remaining::NotRelevant),
        upd(Status::Backorder, z, one, one, Remaining::Units(Qty(25_000)), Remaining::NotRelevant),
        upd(Status::Preorder, z, z, z, Remaining::Units(Qty(25_000)), Remaining::Unlimited),
        upd(Status::OutOfStock, z, q("3"), q("3"), Remaining::Units(Qty::ZERO), Remaining::NotRelevant),
        upd(Status::InStock, None, None, None, Remaining::NotRelevant, Remaining::NotRelevant),
        upd(Status::OutOfStock, None, None, None, Remaining::NotRelevant, Remaining::NotRelevant),
    ];
    for u in &updates {
        let a = env(("inventory.availability.changed", output::availability(u, "ex-1")));
        valid(&a).unwrap_or_else(|e| panic!("{a}: {e}"));
    }
    let a = env(("inventory.availability.changed", output::availability(&updates[3], "ex-1")));
    assert_eq!(a["data"]["backorder_remaining"], json!(2.5));
    assert_eq!(a["data"]["preorder_remaining"], Value::Null);
    let plain = env(("inventory.availability.changed", output::availability(&updates[0], "ex-1")));
    assert!(plain["data"].get("backorder_remaining").is_none(), "absent where not relevant");
    // Untracked skus (available null) are only ever in or out of stock.
    let mut bad = env(("inventory.availability.changed", output::availability(&updates[5], "ex-1")));
    bad["data"]["status"] = json!("low_stock");
    assert!(valid(&bad).is_err());

    let conf = OrderOutcome::Confirmed {
        lines: vec![
            ConfirmedLine {
                line_id: "1".into(),
                sku: "SKU-1".into(),
                quantity: Qty::units(7),
                allocations: vec![
                    Allocation {
                        location: "eu-1".into(),
                        quantity: Qty(55_000),
                    },
                    Allocation {
                        location: "eu-2".into(),
                        quantity: Qty(15_000),
                    },
                ],
                backordered: Qty::ZERO,
                preordered: Qty::ZERO,
            },
            ConfirmedLine {
                line_id: "2".into(),
                sku: "SKU-3".into(),
                quantity: Qty(1),
                allocations: vec![],
                backordered: Qty::ZERO,
                preordered: Qty(1),
            },
        ],
    };
    let r = env(output::reservation(&conf, "o-1", "eu-web", "ex-9"));
    valid(&r).unwrap();
    assert_eq!(r["data"]["lines"][0]["allocations"][0]["quantity"], json!(5.5));
    for reason in [
        RejectReason::InsufficientStock,
        RejectReason::UnknownSku,
        RejectReason::UnknownChannel,
        RejectReason::Canceled,
    ] {
        let rej = OrderOutcome::Rejected {
            lines: vec![RejectedLine {
                line_id: "1".into(),
                sku: "SKU-1".into(),
                requested: Qty::units(20),
                available: Qty(55_000),
                reason,
            }],
        };
        let r = env(output::reservation(&rej, "o-2", "eu-web", "ex-10"));
        valid(&r).unwrap_or_else(|e| panic!("{r}: {e}"));
        assert_eq!(r["type"], "inventory.reservation.rejected");
    }
    for (confirmed, available) in [(true, Some(Qty(105_000))), (false, Some(Qty::ZERO)), (true, None), (false, None)] {
        let h = HoldOutcome {
            confirmed,
            requested: Qty::units(2),
            held: if confirmed { Qty::units(2) } else { Qty::ZERO },
            available,
            expires_at_ms: 1_795_342_980_000,
        };
        let v = env(output::hold(&h, "cart-7", "eu-web", "SKU-1", "ex-8"));
        valid(&v).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(v["data"]["expires_at"], "2026-11-22T10:23:00Z");
    }
}

/// Broken variants of input examples: the dead-letter code `decode` gives,
/// and whether the schema refuses them too (false: a schema cannot tell:
/// not JSON, size, topic, or a rule JSON Schema cannot express).
#[test]
fn broken_inputs_get_the_right_code() {
    let examples = inputs();
    let example = |ty: &str| -> Value {
        let ex = examples.iter().find(|e| e.path.to_string_lossy().ends_with(&format!("-{ty}.json"))).unwrap();
        serde_json::from_slice(&ex.value).unwrap()
    };
    let order = example("order.placed");
    let adjusted = example("inventory.level.adjusted");
    let channel = example("inventory.channel.configured");
    let edit = |base: &Value, f: &dyn Fn(&mut Value)| -> Vec<u8> {
        let mut v = base.clone();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let drop_field = |base: &Value, ptr: &str, field: &'static str| {
        let ptr = ptr.to_string();
        edit(base, &move |v| {
            v.pointer_mut(&ptr).unwrap().as_object_mut().unwrap().remove(field);
        })
    };
    let set = |base: &Value, ptr: &str, x: Value| {
        let ptr = ptr.to_string();
        edit(base, &move |v| *v.pointer_mut(&ptr).unwrap() = x.clone())
    };
    let order_bytes = serde_json::to_vec(&order).unwrap();
    let mut big = order.clone();
    big["data"]["note"] = json!("x".repeat(MAX));
    let big = serde_json::to_vec(&big).unwrap();
    use TopicKind::{Orders, Stock};
    // (code, what, topic, value, the schema refuses it too)
    type Case = (&'static str, &'static str, TopicKind, Vec<u8>, bool);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("malformed_json", "truncated", Orders, order_bytes[..order_bytes.len() / 2].to_vec(), false),
        ("malformed_json", "not JSON at all", Orders, b"order placed".to_vec(), false),
        ("invalid_envelope", "not an object", Orders, b"[1, 2]".to_vec(), true),
        ("invalid_envelope", "missing specversion", Orders, drop_field(&order, "", "specversion"), true),
        ("invalid_envelope", "specversion 0.3", Orders, set(&order, "/specversion", json!("0.3")), true),
        ("invalid_envelope", "specversion as a number", Orders, set(&order, "/specversion", json!(1.0)), true),
        ("invalid_envelope", "missing id", Orders, drop_field(&order, "", "id"), true),
        ("invalid_envelope", "empty id", Orders, set(&order, "/id", json!("")), true),
        ("invalid_envelope", "id of 257 characters", Orders, set(&order, "/id", json!("e".repeat(257))), true),
        ("invalid_envelope", "missing source", Orders, drop_field(&order, "", "source"), true),
        ("invalid_envelope", "missing type", Orders, drop_field(&order, "", "type"), true),
        ("invalid_envelope", "time not RFC 3339", Orders, set(&order, "/time", json!("yesterday")), true),
        ("invalid_envelope", "missing data", Orders, drop_field(&order, "", "data"), true),
        ("invalid_envelope", "data not an object", Orders, set(&order, "/data", json!([1])), true),
        ("unknown_type", "unknown type", Orders, set(&order, "/type", json!("order.exploded")), true),
        ("unknown_type", "order.placed on inventory.stock", Stock, order_bytes.clone(), false),
        ("invalid_data", "negative quantity", Orders, set(&order, "/data/lines/0/quantity", json!(-2)), true),
        ("invalid_data", "negative quantity as a string", Orders, set(&order, "/data/lines/0/quantity", json!("-2")), true),
        ("invalid_data", "zero quantity", Orders, set(&order, "/data/lines/0/quantity", json!(0)), true),
        ("invalid_data", "zero quantity as a string", Orders, set(&order, "/data/lines/0/quantity", json!("0.0000")), true),
        ("invalid_data", "5 fractional digits as a string", Orders, set(&order, "/data/lines/0/quantity", json!("1.00001")), true),
        // JSON Schema has no exact decimal check for numbers (multipleOf over floats is unreliable).
        ("invalid_data", "5 fractional digits as a number", Orders, set(&order, "/data/lines/0/quantity", serde_json::from_str("1.00001").unwrap()), false),
        ("invalid_data", "quantity not a number", Orders, set(&order, "/data/lines/0/quantity", json!("two")), true),
        ("invalid_data", "quantity NaN", Orders, set(&order, "/data/lines/0/quantity", json!("NaN")), true),
        ("invalid_data", "empty lines", Orders, set(&order, "/data/lines", json!([])), true),
        ("invalid_data", "missing lines", Orders, drop_field(&order, "/data", "lines"), true),
        ("invalid_data", "missing order_id", Orders, drop_field(&order, "/data", "order_id"), true),
        ("invalid_data", "sku not a string", Orders, set(&order, "/data/lines/0/sku", json!(1)), true),
        // uniqueItems compares whole lines, not their line_id.
        ("invalid_data", "line_id used twice", Orders, set(&order, "/data/lines/1/line_id", json!("1")), false),
        ("invalid_data", "zero delta", Stock, set(&adjusted, "/data/delta", json!(0)), true),
        ("invalid_data", "zero delta as 0.0", Stock, set(&adjusted, "/data/delta", serde_json::from_str("0.0").unwrap()), true),
        ("invalid_data", "zero delta as a string", Stock, set(&adjusted, "/data/delta", json!("-0.0")), true),
        ("invalid_data", "duplicate channel locations", Stock, set(&channel, "/data/locations", json!(["eu-1", "eu-2", "eu-1"])), true),
        ("invalid_data", "empty channel locations", Stock, set(&channel, "/data/locations", json!([])), true),
        ("invalid_data", "501 lines", Orders, set(&order, "/data/lines", json!((0..501).map(|i| json!({"line_id": i.to_string(), "sku": "s", "quantity": 1})).collect::<Vec<_>>())), true),
        ("invalid_data", "501 channel locations", Stock, set(&channel, "/data/locations", json!((0..501).map(|i| format!("l{i}")).collect::<Vec<_>>())), true),
        ("too_large", "over 1 MiB", Orders, big, false),
    ];
    for (code, what, k, bytes, schema_too) in &cases {
        let err = decode(*k, bytes, MAX).expect_err(what);
        assert_eq!(err.code(), *code, "{what}: {err}");
        if *schema_too {
            let v: Value = serde_json::from_slice(bytes).unwrap();
            assert!(check_own(&v).is_err(), "{what}: the schema accepts it");
        }
    }
    // Messages name the field; events with a readable id carry it.
    let err = decode(Orders, &cases.iter().find(|c| c.1 == "negative quantity").unwrap().3, MAX).unwrap_err();
    assert!(err.to_string().contains("data.lines[0].quantity must be > 0"), "{err}");
    assert_eq!(err.event_id(), Some("ex-09"));
    // The size limit is on the value's bytes: exactly at the limit decodes.
    assert_eq!(decode(Orders, &order_bytes, order_bytes.len()).unwrap().id, "ex-09");
    assert_eq!(decode(Orders, &order_bytes, order_bytes.len() - 1).unwrap_err().code(), "too_large");
}

/// The schema an invalid event is checked against: its own type's when that
/// is a known type (so a bad `data` is judged by the right rules), else the
/// schema of the example it was made from (order.placed here, whose `type`
/// const refuses an unknown type).
fn check_own(v: &Value) -> Result<(), String> {
    match v.get("type").and_then(Value::as_str) {
        Some(t) if validators().contains_key(t) => check(t, v),
        _ => check("order.placed", v),
    }
}

/// A local `redis-server` on a free port, killed when dropped.
struct Redis(std::process::Child, #[allow(dead_code)] tempfile::TempDir, String);

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("this test needs redis-server on PATH, as tests/engine.rs does");
        let url = format!("redis://127.0.0.1:{port}");
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < std::time::Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Redis(child, dir, url)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ms(rfc3339: &str) -> i64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Plays the input examples in play order through the engine, each at its
/// `time` on a manual clock, as the worker applies them; then two events that
/// do not fit (a hold and an order after the story). Every output example is
/// one of the messages this produces (envelope id and time aside), and no
/// example is refused by the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_story_through_the_engine_gives_the_output_examples() {
    use reservoir::store::{Clock, Engine, EngineConfig};
    use reservoir::wire::Body;
    let redis = Redis::start();
    let mut events: Vec<(TopicKind, Vec<u8>)> = inputs().into_iter().map(|e| (kind(&e.topic_dir).unwrap(), e.value)).collect();
    let later = |id: &str, time: &str, ty: &str, data: Value| {
        serde_json::to_vec(&json!({"specversion": "1.0", "id": id, "source": "examples", "type": ty, "time": time, "data": data})).unwrap()
    };
    events.push((
        TopicKind::Carts,
        later(
            "ex-later-1",
            "2026-11-22T10:15:00Z",
            "cart.line.held",
            json!({"cart_id": "cart-9", "channel": "eu-web", "sku": "SKU-1", "quantity": 6}),
        ),
    ));
    events.push((
        TopicKind::Orders,
        later(
            "ex-later-2",
            "2026-11-22T10:16:00Z",
            "order.placed",
            json!({"order_id": "o-1002", "channel": "eu-web", "lines": [{"line_id": "1", "sku": "SKU-1", "quantity": 6}]}),
        ),
    ));
    let first: Value = serde_json::from_slice(&events[0].1).unwrap();
    let clock = Clock::manual(ms(first["time"].as_str().unwrap()));
    let e = Engine::connect(&redis.2, EngineConfig::default(), clock.clone()).await.unwrap();
    // (type, key, data) of every message the events lead to.
    let mut produced: Vec<(String, String, Value)> = Vec::new();
    for (k, bytes) in &events {
        let v: Value = serde_json::from_slice(bytes).unwrap();
        let at = ms(v["time"].as_str().unwrap());
        assert!(at >= clock.now_ms(), "example times must not go back: {v}");
        clock.advance(std::time::Duration::from_millis((at - clock.now_ms()) as u64));
        let ev = decode(*k, bytes, MAX).unwrap();
        let idem = format!("{}:{}:{}", ev.source.len(), ev.source, ev.id);
        let (id, cb) = (idem.as_str(), ev.id.as_str());
        let mut result = |(ty, data): (&str, Value), key: &str| produced.push((ty.to_string(), key.to_string(), data));
        let updates = match &ev.body {
            Body::ChannelConfigured { channel, locations } => e.configure_channel(id, channel, locations).await.unwrap().updates,
            Body::ItemConfigured { sku, config } => e.configure_item(id, sku, config).await.unwrap().updates,
            Body::LevelSet {
                sku,
                location,
                on_hand,
                in_stock,
            } => e.set_level(id, sku, location, *on_hand, *in_stock).await.unwrap().updates,
            Body::LevelAdjusted { sku, location, delta } => {
                let r = e.adjust_level(id, sku, location, *delta).await.unwrap();
                assert!(r.outcome.is_ok(), "{cb} refused");
                r.updates
            }
            Body::LineHeld {
                cart_id,
                channel,
                sku,
                quantity,
                expires_at_ms,
            } => {
                let r = e.hold(id, cart_id, channel, sku, *quantity, *expires_at_ms).await.unwrap();
                result(output::hold(&r.outcome, cart_id, channel, sku, cb), cart_id);
                r.updates
            }
            Body::CartReleased { cart_id, skus } => e.release_cart(id, cart_id, skus.as_deref()).await.unwrap().updates,
            Body::OrderPlaced(o) => {
                let r = e.place_order(o).await.unwrap();
                result(output::reservation(&r.outcome, &o.order_id, &o.channel, cb), &o.order_id);
                r.updates
            }
            Body::OrderCanceled { order_id, lines } => e.cancel_order(id, order_id, lines.as_deref()).await.unwrap().updates,
            Body::ShipmentCreated(s) => {
                let r = e.ship(s, None).await.unwrap();
                assert!(r.outcome.iter().all(|l| *l == reservoir::domain::LineOutcome::Applied), "{cb}: {:?}", r.outcome);
                r.updates
            }
            Body::CreditMemoCreated(c) => {
                let r = e.credit(c, None).await.unwrap();
                assert!(r.outcome.iter().all(|l| *l == reservoir::domain::LineOutcome::Applied), "{cb}: {:?}", r.outcome);
                r.updates
            }
        };
        for u in updates.iter().filter(|u| u.changed) {
            produced.push((
                "inventory.availability.changed".into(),
                format!("{}/{}", u.channel, u.sku),
                output::availability(u, cb),
            ));
        }
    }
    for (ty, _, data) in &produced {
        valid(&json!({"specversion": "1.0", "id": "x", "source": "reservoir", "type": ty, "data": data})).unwrap_or_else(|e| panic!("{ty} {data}: {e}"));
    }
    for (name, key, v) in outputs() {
        let ty = v["type"].as_str().unwrap();
        assert!(
            produced.iter().any(|(t, k, d)| t == ty && *k == key && *d == v["data"]),
            "{name} is not what the story produces; it produces:\n{}",
            produced
                .iter()
                .filter(|(t, _, _)| t == ty)
                .map(|(t, k, d)| format!("  {t} {k} {d}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// The CloudEvents Kafka binding's binary mode: every input example sent
/// as `ce_*` headers with the data as the value decodes to the same event
/// as its structured form, and broken binary messages get the same codes.
#[test]
fn binary_mode_inputs_decode_like_structured_ones() {
    fn binary(v: &Value) -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
        let mut headers = vec![("content-type".to_string(), b"application/json".to_vec())];
        for (k, a) in v.as_object().unwrap() {
            if k != "data" && k != "datacontenttype" {
                headers.push((format!("ce_{k}"), a.as_str().unwrap().as_bytes().to_vec()));
            }
        }
        (headers, serde_json::to_vec(&v["data"]).unwrap())
    }
    let decode_binary = |kind: TopicKind, headers: &[(String, Vec<u8>)], value: &[u8]| {
        let h: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        decode_message(kind, &h, value, MAX)
    };
    let mut order = None;
    for ex in inputs() {
        let k = kind(&ex.topic_dir).unwrap();
        let v: Value = serde_json::from_slice(&ex.value).unwrap();
        let (headers, value) = binary(&v);
        assert_eq!(decode_binary(k, &headers, &value).unwrap(), decode(k, &ex.value, MAX).unwrap(), "{}", ex.path.display());
        // Structured stays structured, with or without a content type.
        assert_eq!(decode_binary(k, &[("content-type".into(), b"application/cloudevents+json".to_vec())], &ex.value).unwrap(), decode(k, &ex.value, MAX).unwrap());
        if v["type"] == "order.placed" {
            order = Some((headers, value));
        }
    }
    let (headers, value) = order.unwrap();
    let without = |name: &str| headers.iter().filter(|(k, _)| k != name).cloned().collect::<Vec<_>>();
    let with = |name: &str, v: &[u8]| headers.iter().map(|(k, x)| if k == name { (k.clone(), v.to_vec()) } else { (k.clone(), x.clone()) }).collect::<Vec<_>>();
    for (what, h, val, code) in [
        ("no ce_type", without("ce_type"), value.clone(), "invalid_envelope"),
        ("no ce_id", without("ce_id"), value.clone(), "invalid_envelope"),
        ("ce_specversion 0.3", with("ce_specversion", b"0.3"), value.clone(), "invalid_envelope"),
        ("ce_source not UTF-8", with("ce_source", &[0xff, 0xfe]), value.clone(), "invalid_envelope"),
        ("ce_type of another topic", with("ce_type", b"shipment.created"), value.clone(), "unknown_type"),
        ("value not JSON", headers.clone(), b"{not json".to_vec(), "malformed_json"),
        ("data not an object", headers.clone(), b"[1]".to_vec(), "invalid_envelope"),
        ("data invalid", headers.clone(), br#"{"order_id": "o", "channel": "eu", "lines": []}"#.to_vec(), "invalid_data"),
    ] {
        let err = decode_binary(TopicKind::Orders, &h, &val).expect_err(what);
        assert_eq!(err.code(), code, "{what}: {err}");
    }
    let err = decode_binary(TopicKind::Orders, &without("ce_type"), &value).unwrap_err().to_string();
    assert!(err.contains("ce_type"), "{err}");
}
