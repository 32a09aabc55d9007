//! End to end: a real broker (Apache Kafka, one KRaft node per test binary, by default) and a real redis-server,
//! random topics and group, the worker in-process.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::kafka::{config, latest, producer, send, Reader};
use support::stack::Stack;
use support::uid;
use support::worker::{event, InProcess};

const T: Duration = Duration::from_secs(60);

fn data(r: &support::kafka::Received) -> &Value {
    &r.value["data"]
}

fn of_type<'a>(seen: &'a [support::kafka::Received], ty: &str) -> Vec<&'a support::kafka::Received> {
    seen.iter().filter(|r| r.value["type"] == ty).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_type_with_outputs_checked() {
    let stack = Stack::start().await;
    let cfg = config(&stack.bootstrap, &stack.redis_url, 2).await;
    let t = cfg.topics.clone();
    let worker = InProcess::start(cfg.clone());
    let p = producer(&stack.bootstrap);
    let u = uid();
    let (eu, sku, sku2) = (format!("eu-{u}"), format!("SKU-1-{u}"), format!("SKU-2-{u}"));
    let mut avail = Reader::new(&stack.bootstrap, &t.availability);
    let mut results = Reader::new(&stack.bootstrap, &t.reservations);

    send(&p, &t.stock, &eu, &event("e1", "inventory.channel.configured", json!({"channel": eu, "locations": ["eu-1", "eu-2", "eu-3"]}))).await;
    send(&p, &t.stock, &sku, &event("e2", "inventory.item.configured", json!({"sku": sku, "low_stock_threshold": 2}))).await;
    send(&p, &t.stock, &sku, &event("e3", "inventory.level.set", json!({"sku": sku, "location": "eu-1", "on_hand": "5.5"}))).await;
    send(&p, &t.stock, &sku, &event("e4", "inventory.level.set", json!({"sku": sku, "location": "eu-2", "on_hand": 3}))).await;
    send(&p, &t.stock, &sku, &event("e5", "inventory.level.set", json!({"sku": sku, "location": "eu-3", "on_hand": 10, "in_stock": false}))).await;
    let key = format!("{eu}/{sku}");
    avail.until(T, "availability 8.5", |s| latest(s).get(&key).is_some_and(|v| v["available"] == json!(8.5))).await;
    let a = latest(&avail.seen)[&key].clone();
    assert_eq!(a["status"], "in_stock");
    assert_eq!(a["on_hand"], json!(8.5));
    assert_eq!(a["reserved"], json!(0));
    assert_eq!(a["channel"], json!(eu));
    assert!(a.get("backorder_remaining").is_none());

    // A cart holds 2, then its order of 3.5 converts the hold.
    send(&p, &t.carts, "cart-1", &event("e6", "cart.line.held", json!({"cart_id": "cart-1", "channel": eu, "sku": sku, "quantity": 2}))).await;
    let held = results.until(T, "hold result", |s| !of_type(s, "inventory.hold.confirmed").is_empty()).await;
    let h = data(of_type(held, "inventory.hold.confirmed")[0]).clone();
    assert_eq!((h["cart_id"].clone(), h["requested"].clone(), h["held"].clone(), h["available"].clone()), (json!("cart-1"), json!(2), json!(2), json!(8.5)));
    assert_eq!(h["caused_by"], "e6");
    assert!(h["expires_at"].as_str().unwrap().ends_with('Z'));

    let order = json!({"order_id": format!("o-{u}"), "channel": eu, "cart_id": "cart-1",
        "lines": [{"line_id": "1", "sku": sku, "quantity": 3.5}, {"line_id": "2", "sku": sku2, "quantity": 1}]});
    send(&p, &t.orders, &format!("o-{u}"), &event("e7", "order.placed", order.clone())).await;
    let seen = results.until(T, "order rejected (unknown sku 2)", |s| !of_type(s, "inventory.reservation.rejected").is_empty()).await;
    let r = data(of_type(seen, "inventory.reservation.rejected")[0]).clone();
    assert_eq!(r["lines"], json!([{"line_id": "2", "sku": sku2, "requested": 1, "available": 0, "reason": "unknown_sku"}]));
    assert_eq!(r["caused_by"], "e7");

    let order2 = json!({"order_id": format!("o2-{u}"), "channel": eu, "cart_id": "cart-1",
        "lines": [{"line_id": "1", "sku": sku, "quantity": 6.5}]});
    send(&p, &t.orders, &format!("o2-{u}"), &event("e8", "order.placed", order2)).await;
    let seen = results.until(T, "order confirmed", |s| !of_type(s, "inventory.reservation.confirmed").is_empty()).await;
    let c = data(of_type(seen, "inventory.reservation.confirmed")[0]).clone();
    assert_eq!(
        c["lines"],
        json!([{"line_id": "1", "sku": sku, "quantity": 6.5, "allocations": [{"location": "eu-1", "quantity": 5.5}, {"location": "eu-2", "quantity": 1}], "backordered": 0, "preordered": 0}])
    );
    avail.until(T, "available 2, low stock", |s| latest(s)[&key]["available"] == json!(2)).await;
    assert_eq!(latest(&avail.seen)[&key]["status"], "low_stock");

    // Partial cancel, shipment, credit memo, adjustment, release.
    send(&p, &t.orders, &format!("o2-{u}"), &event("e9", "order.canceled", json!({"order_id": format!("o2-{u}"), "lines": [{"line_id": "1", "quantity": 0.5}]}))).await;
    avail.until(T, "available 2.5", |s| latest(s)[&key]["available"] == json!(2.5)).await;
    send(&p, &t.shipments, &format!("o2-{u}"), &event("e10", "shipment.created", json!({"shipment_id": "s1", "order_id": format!("o2-{u}"), "location": "eu-1", "lines": [{"line_id": "1", "sku": sku, "quantity": 5.5}]}))).await;
    // Shipping reserved units moves on_hand and reserved together: the
    // channel's availability does not change, so nothing is published.
    let (engine, _) = support::engine(&stack.redis_url).await;
    let start = std::time::Instant::now();
    while engine.sku_state(&sku).await.unwrap().levels["eu-1"].on_hand != reservoir::qty::Qty::ZERO {
        assert!(start.elapsed() < T, "shipment not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send(&p, &t.credit_memos, &format!("o2-{u}"), &event("e11", "credit_memo.created", json!({"credit_memo_id": "cm1", "order_id": format!("o2-{u}"), "lines": [{"line_id": "1", "sku": sku, "quantity": 1.5, "back_to_stock": true}]}))).await;
    // 0.5 of the unshipped reservation released, 1 shipped unit back at eu-1.
    avail.until(T, "credit memo applied", |s| latest(s)[&key]["on_hand"] == json!(4) && latest(s)[&key]["reserved"] == json!(0)).await;
    send(&p, &t.stock, &sku, &event("e12", "inventory.level.adjusted", json!({"sku": sku, "location": "eu-2", "delta": -1, "reason": "damaged"}))).await;
    avail.until(T, "adjusted", |s| latest(s)[&key]["on_hand"] == json!(3)).await;
    send(&p, &t.carts, "cart-2", &event("e13", "cart.line.held", json!({"cart_id": "cart-2", "channel": eu, "sku": sku, "quantity": 1}))).await;
    avail.until(T, "held 1", |s| latest(s)[&key]["reserved"] == json!(1)).await;
    send(&p, &t.carts, "cart-2", &event("e14", "cart.released", json!({"cart_id": "cart-2"}))).await;
    avail.until(T, "released", |s| latest(s)[&key]["reserved"] == json!(0)).await;

    // Versions only grow per key, and every message is a full envelope.
    let mut last = 0;
    for r in avail.seen.iter().filter(|r| r.key == key) {
        let v = data(r)["version"].as_u64().unwrap();
        assert!(v > last, "versions must increase: {v} after {last}");
        last = v;
        assert_eq!(r.value["specversion"], "1.0");
        assert_eq!(r.value["source"], "reservoir");
        assert_eq!(r.value["type"], "inventory.availability.changed");
    }
    worker.stop().await;
    stack.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_goes_to_dead_letter_and_the_partition_moves_on() {
    let stack = Stack::start().await;
    let mut cfg = config(&stack.bootstrap, &stack.redis_url, 1).await;
    cfg.max_message_bytes = 64 * 1024;
    let t = cfg.topics.clone();
    let worker = InProcess::start(cfg.clone());
    let p = producer(&stack.bootstrap);
    let u = uid();
    let sku = format!("SKU-{u}");
    send(&p, &t.stock, "eu", &event("c1", "inventory.channel.configured", json!({"channel": "eu", "locations": ["eu-1"]}))).await;
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("malformed_json", b"{not json".to_vec()),
        ("invalid_envelope", serde_json::to_vec(&json!({"id": "p2", "source": "t", "type": "inventory.level.set", "data": {}})).unwrap()),
        ("unknown_type", event("p3", "inventory.level.exploded", json!({"sku": sku}))),
        ("invalid_data", event("p4", "inventory.level.set", json!({"sku": sku, "location": "eu-1", "on_hand": -1}))),
        ("invalid_data", event("p5", "inventory.level.set", json!({"sku": sku, "location": "eu-1", "on_hand": "1.00001"}))),
        ("too_large", event("p6", "inventory.level.set", json!({"sku": sku, "location": "eu-1", "on_hand": 1, "pad": "x".repeat(100_000)}))),
        ("negative_on_hand", event("p7", "inventory.level.adjusted", json!({"sku": sku, "location": "eu-1", "delta": -1}))),
    ];
    for (_, v) in &poison {
        send(&p, &t.stock, &sku, v).await;
    }
    send(&p, &t.stock, &sku, &event("ok1", "inventory.level.set", json!({"sku": sku, "location": "eu-1", "on_hand": 4}))).await;
    let mut dlq = Reader::new(&stack.bootstrap, &t.dead_letter);
    let seen = dlq.until(T, "every poison message dead-lettered", |s| s.len() >= poison.len()).await.to_vec();
    let codes: Vec<&str> = seen.iter().map(|r| r.headers["dlq.code"].as_str()).collect();
    assert_eq!(codes, poison.iter().map(|(c, _)| *c).collect::<Vec<_>>());
    for (r, (_, v)) in seen.iter().zip(&poison) {
        assert_eq!(&r.raw, v, "the original value, unchanged");
        assert_eq!(r.key, sku);
        assert_eq!(r.headers["dlq.topic"], t.stock);
        assert_eq!(r.headers["dlq.partition"], "0");
        assert!(r.headers["dlq.offset"].parse::<i64>().is_ok());
        assert!(!r.headers["dlq.message"].is_empty());
    }
    assert!(seen[3].headers["dlq.message"].contains("data.on_hand"), "{}", seen[3].headers["dlq.message"]);
    assert!(seen[4].headers["dlq.message"].contains("4 fractional digits"));
    assert_eq!(seen[6].headers["dlq.event_id"], "p7");
    assert!(!seen[0].headers.contains_key("dlq.event_id"));
    // The valid event behind them was applied.
    let mut avail = Reader::new(&stack.bootstrap, &t.availability);
    avail.until(T, "valid event applied", |s| s.iter().any(|r| r.key == format!("eu/{sku}") && data(r)["available"] == json!(4))).await;
    worker.stop().await;
    stack.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shipment_refused_when_its_placement_arrives_is_dead_lettered_from_its_own_offset() {
    let stack = Stack::start().await;
    let cfg = config(&stack.bootstrap, &stack.redis_url, 1).await;
    let t = cfg.topics.clone();
    let worker = InProcess::start(cfg.clone());
    let p = producer(&stack.bootstrap);
    let u = uid();
    let (eu, sku, order_id) = (format!("eu-{u}"), format!("SKU-{u}"), format!("o-{u}"));
    send(&p, &t.stock, &eu, &event("c1", "inventory.channel.configured", json!({"channel": eu, "locations": ["eu-1"]}))).await;
    send(&p, &t.stock, &sku, &event("l1", "inventory.level.set", json!({"sku": sku, "location": "eu-1", "on_hand": 3}))).await;
    // More than there is: only known to be refused once the placement applies it.
    let shipment = event("s1", "shipment.created", json!({"shipment_id": "s1", "order_id": order_id, "location": "eu-1", "lines": [{"line_id": "1", "sku": sku, "quantity": 50}]}));
    send(&p, &t.shipments, &order_id, &shipment).await;
    // Kept on the order until its placement (another topic, so wait for it).
    let (_, pending) = reservoir::store::keys::order(&order_id);
    let (engine, _) = support::engine(&stack.redis_url).await;
    let start = std::time::Instant::now();
    while redis::cmd("LLEN").arg(&pending).query_async::<i64>(&mut engine.conn()).await.unwrap() == 0 {
        assert!(start.elapsed() < T, "shipment not kept for its placement");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send(&p, &t.orders, &order_id, &event("o1", "order.placed", json!({"order_id": order_id, "channel": eu, "lines": [{"line_id": "1", "sku": sku, "quantity": 2}]}))).await;
    let mut dlq = Reader::new(&stack.bootstrap, &t.dead_letter);
    let seen = dlq.until(T, "the refused shipment dead-lettered", |s| !s.is_empty()).await.to_vec();
    let r = &seen[0];
    assert_eq!((r.key.as_str(), &r.raw), (order_id.as_str(), &shipment), "the shipment's own key and value");
    assert_eq!(r.headers["dlq.code"], "insufficient_on_hand");
    assert_eq!((r.headers["dlq.topic"].as_str(), r.headers["dlq.partition"].as_str(), r.headers["dlq.offset"].as_str()), (t.shipments.as_str(), "0", "0"));
    assert_eq!(r.headers["dlq.event_id"], "s1");
    assert!(r.headers["dlq.message"].contains("line_id=\"1\""), "{}", r.headers["dlq.message"]);
    // The order itself was confirmed, and nothing shipped.
    let mut results = Reader::new(&stack.bootstrap, &t.reservations);
    results.until(T, "order confirmed", |s| !of_type(s, "inventory.reservation.confirmed").is_empty()).await;
    let mut avail = Reader::new(&stack.bootstrap, &t.availability);
    avail.until(T, "3 on hand, 2 reserved", |s| latest(s).get(&format!("{eu}/{sku}")).is_some_and(|v| v["on_hand"] == json!(3) && v["reserved"] == json!(2))).await;
    worker.stop().await;
    stack.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_new_event_ids_and_replays_change_nothing() {
    let stack = Stack::start().await;
    let mut cfg = config(&stack.bootstrap, &stack.redis_url, 2).await;
    let t = cfg.topics.clone();
    let worker = InProcess::start(cfg.clone());
    let p = producer(&stack.bootstrap);
    let u = uid();
    let (sku, ch) = (format!("SKU-{u}"), format!("ch-{u}"));
    let key = format!("{ch}/{sku}");
    send(&p, &t.stock, &ch, &event("d1", "inventory.channel.configured", json!({"channel": ch, "locations": ["l1"]}))).await;
    send(&p, &t.stock, &sku, &event("d2", "inventory.level.set", json!({"sku": sku, "location": "l1", "on_hand": 10}))).await;
    let mut avail = Reader::new(&stack.bootstrap, &t.availability);
    avail.until(T, "stock applied", |s| latest(s).get(&key).is_some_and(|v| v["on_hand"] == json!(10))).await;
    let adj = event("d3", "inventory.level.adjusted", json!({"sku": sku, "location": "l1", "delta": -2}));
    send(&p, &t.stock, &sku, &adj).await;
    send(&p, &t.stock, &sku, &adj).await;
    let place = |id: &str| event(id, "order.placed", json!({"order_id": "o-1", "channel": ch, "lines": [{"line_id": "1", "sku": sku, "quantity": 3}]}));
    send(&p, &t.orders, "o-1", &place("d4")).await;
    send(&p, &t.orders, "o-1", &place("d4")).await;
    send(&p, &t.orders, "o-1", &place("d4-again")).await;
    let ship = event("d5", "shipment.created", json!({"shipment_id": "s-1", "order_id": "o-1", "location": "l1", "lines": [{"line_id": "1", "sku": sku, "quantity": 1}]}));
    send(&p, &t.shipments, "o-1", &ship).await;
    send(&p, &t.shipments, "o-1", &event("d5-again", "shipment.created", serde_json::from_slice::<Value>(&ship).unwrap()["data"].clone())).await;
    avail.until(T, "final state", |s| latest(s).get(&key).is_some_and(|v| v["on_hand"] == json!(7) && v["reserved"] == json!(2))).await;
    let mut results = Reader::new(&stack.bootstrap, &t.reservations);
    let seen = results.until(T, "three results for the three deliveries", |s| s.len() >= 3).await;
    assert!(seen.iter().all(|r| r.value["type"] == "inventory.reservation.confirmed"), "one kind of result per order");
    worker.stop().await;

    // Replay every input topic from the start in a new group: nothing changes.
    let before = latest(&avail.seen)[&key].clone();
    cfg.group_id = format!("replay-{u}");
    let replay = InProcess::start(cfg.clone());
    results.until(T, "replayed results", |s| s.len() >= 6).await;
    assert!(results.seen.iter().all(|r| r.value["type"] == "inventory.reservation.confirmed"));
    avail.until(T, "republished availability", |s| latest(s)[&key]["version"].as_u64() >= before["version"].as_u64()).await;
    replay.stop().await;
    let after = latest(avail.drain(Duration::from_secs(1)).await)[&key].clone();
    support::kafka::assert_unchanged(&after, &before, "a replay");
    stack.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_holds_are_swept_and_published() {
    let stack = Stack::start().await;
    let mut cfg = config(&stack.bootstrap, &stack.redis_url, 1).await;
    cfg.engine.hold_time = Duration::from_secs(2);
    let t = cfg.topics.clone();
    let worker = InProcess::start(cfg.clone());
    let p = producer(&stack.bootstrap);
    let u = uid();
    let (ch, sku) = (format!("ch-{u}"), format!("SKU-{u}"));
    let key = format!("{ch}/{sku}");
    send(&p, &t.stock, &ch, &event("x1", "inventory.channel.configured", json!({"channel": ch, "locations": ["l1"]}))).await;
    send(&p, &t.stock, &sku, &event("x2", "inventory.level.set", json!({"sku": sku, "location": "l1", "on_hand": 3}))).await;
    let mut avail = Reader::new(&stack.bootstrap, &t.availability);
    avail.until(T, "stock", |s| latest(s).get(&key).is_some_and(|v| v["available"] == json!(3))).await;
    send(&p, &t.carts, "c1", &event("x3", "cart.line.held", json!({"cart_id": "c1", "channel": ch, "sku": sku, "quantity": 2}))).await;
    avail.until(T, "held", |s| latest(s)[&key]["available"] == json!(1)).await;
    let held_at = std::time::Instant::now();
    // Nothing touches the sku again: only the sweep can publish the release.
    avail.until(T, "the expired hold released by the sweep", |s| latest(s)[&key]["available"] == json!(3)).await;
    let took = held_at.elapsed();
    assert!(took >= Duration::from_millis(1500), "released after {took:?}, before the hold time");
    assert_eq!(latest(&avail.seen)[&key]["caused_by"], "reservoir.hold-expiry");
    worker.stop().await;
    stack.audit().await;
}

/// A reply the worker cannot read (its own bug, or its keys in Redis
/// changed by something else) stops the worker with an error naming the
/// message, without storing its offset: the event is not blamed and set
/// aside as invalid_data, and once the record is repaired it is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_record_in_redis_stops_the_worker_and_dead_letters_nothing() {
    let stack = Stack::start().await;
    let cfg = config(&stack.bootstrap, &stack.redis_url, 1).await;
    let t = cfg.topics.clone();
    let worker = InProcess::start(cfg.clone());
    let p = producer(&stack.bootstrap);
    let u = uid();
    let (sku, ch, order) = (format!("SKU-{u}"), format!("ch-{u}"), format!("o-{u}"));
    send(&p, &t.stock, &ch, &event("u1", "inventory.channel.configured", json!({"channel": ch, "locations": ["l1"]}))).await;
    send(&p, &t.stock, &sku, &event("u2", "inventory.level.set", json!({"sku": sku, "location": "l1", "on_hand": 10}))).await;
    let place = event("u3", "order.placed", json!({"order_id": order, "channel": ch, "lines": [{"line_id": "1", "sku": sku, "quantity": 3}]}));
    send(&p, &t.orders, &order, &place).await;
    let mut results = Reader::new(&stack.bootstrap, &t.reservations);
    results.until(T, "the order's result", |s| s.len() >= 1).await;

    let mut redis = redis::Client::open(stack.redis_url.as_str()).unwrap().get_connection().unwrap();
    let (okey, _) = reservoir::store::keys::order(&order);
    let kept: String = redis::cmd("HGET").arg(&okey).arg("out").query(&mut redis).unwrap();
    let () = redis::cmd("HSET").arg(&okey).arg("out").arg("{not json").query(&mut redis).unwrap();
    // A redelivery reads the stored outcome back.
    send(&p, &t.orders, &order, &place).await;
    let e = worker.ended(T).await.expect_err("the worker stops on a reply it cannot read");
    let text = e.to_string();
    assert!(text.contains(&t.orders) && text.contains("offset 1") && text.contains("outcome"), "the error names the message and what was unreadable: {text}");

    let () = redis::cmd("HSET").arg(&okey).arg("out").arg(&kept).query(&mut redis).unwrap();
    let again = InProcess::start(cfg.clone());
    results.until(T, "the redelivery's result, once the record is repaired", |s| s.len() >= 2).await;
    again.stop().await;
    assert_eq!(results.seen[1].value["type"], "inventory.reservation.confirmed");
    let mut dlq = Reader::new(&stack.bootstrap, &t.dead_letter);
    assert!(dlq.drain(Duration::from_secs(2)).await.is_empty(), "nothing was dead-lettered: {:?}", dlq.seen.iter().map(|r| &r.value).collect::<Vec<_>>());
    stack.audit().await;
}

/// A key of ours holding another type (something else wrote it) makes the
/// script fail with WRONGTYPE: not the event's fault, so the worker stops
/// with the offset kept instead of dead-lettering every event of the sku.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_the_wrong_type_stops_the_worker_and_dead_letters_nothing() {
    let stack = Stack::start().await;
    let cfg = config(&stack.bootstrap, &stack.redis_url, 1).await;
    let t = cfg.topics.clone();
    let worker = InProcess::start(cfg.clone());
    let p = producer(&stack.bootstrap);
    let u = uid();
    let (sku, ch) = (format!("SKU-{u}"), format!("ch-{u}"));
    let mut redis = redis::Client::open(stack.redis_url.as_str()).unwrap().get_connection().unwrap();
    let inv = reservoir::store::keys::SkuKeys::new(&sku).inv;
    let () = redis::cmd("SET").arg(&inv).arg("written by something else").query(&mut redis).unwrap();

    send(&p, &t.stock, &ch, &event("w1", "inventory.channel.configured", json!({"channel": ch, "locations": ["l1"]}))).await;
    send(&p, &t.stock, &sku, &event("w2", "inventory.level.set", json!({"sku": sku, "location": "l1", "on_hand": 10}))).await;
    let e = worker.ended(T).await.expect_err("the worker stops on a key of the wrong type");
    let text = e.to_string();
    assert!(text.contains("WRONGTYPE") && text.contains(&t.stock) && text.contains("not the event's fault"), "the error says what Redis said and where: {text}");

    let () = redis::cmd("DEL").arg(&inv).query(&mut redis).unwrap();
    let again = InProcess::start(cfg.clone());
    let mut avail = Reader::new(&stack.bootstrap, &t.availability);
    avail.until(T, "the sku's availability, once the key is repaired", |s| s.iter().any(|r| r.key == format!("{ch}/{sku}"))).await;
    again.stop().await;
    let mut dlq = Reader::new(&stack.bootstrap, &t.dead_letter);
    assert!(dlq.drain(Duration::from_secs(2)).await.is_empty(), "nothing was dead-lettered: {:?}", dlq.seen.iter().map(|r| &r.value).collect::<Vec<_>>());
    stack.audit().await;
}
