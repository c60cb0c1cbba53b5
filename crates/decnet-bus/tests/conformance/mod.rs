//! The bus conformance suite, written once and run against every backend
//! (`tests/memory.rs`, `tests/null.rs`, `tests/nats.rs`, `tests/redis.rs`,
//! `tests/unix.rs`) through [`conformance_suite!`].
//!
//! Where a backend's broker legitimately behaves otherwise (DECNET's
//! UNIX-socket broker restamps envelopes and closes the connection on a
//! body that is not a JSON object), its harness says so with [`Quirks`] and
//! the affected cases check that behaviour instead: no case is skipped.
//!
//! Isolation: every case works under its own random first token
//! (`test_support::unique_suffix()`), so parallel tests and other users of a
//! shared broker never see each other's events. For the wildcard vectors,
//! each `[pattern, topic, expected]` becomes a subscription to
//! `<prefix>.<pattern>` and a publish to `<prefix>.<topic>`. That preserves
//! every expected result: NATS matching compares tokens position by
//! position, and the prefix is the same literal token at position 0 on both
//! sides, so it matches itself and shifts everything else by one; `>` still
//! needs at least one token after the prefix and `*` still exactly one. The
//! suite asserts `matches(prefixed pattern, prefixed topic) == expected` for
//! every case before using it, so a vector that broke this would fail loudly.
//! Vector topics that are not valid topics (`a.`, `a..c`) cannot be
//! published at all: the case then asserts `expected == false` and that
//! `publish` refuses them with `InvalidTopic`.
#![allow(
    dead_code,
    reason = "each test binary uses the suite through the macro"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use decnet_bus::{
    Bus, BusKind, BusOptions, ConnectionState, Event, PublishError, SubscribeError, Subscription,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

/// How long one event may take to arrive.
pub(crate) const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long we wait to be sure something does NOT arrive.
pub(crate) const QUIET: Duration = Duration::from_millis(150);
/// Bound on a whole case.
pub(crate) const CASE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a backend's broker does differently from the others, so the cases
/// that depend on it check the backend's own documented behaviour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Quirks {
    /// The broker stamps `v`, `id` and `ts` itself (DECNET's UNIX-socket
    /// broker): a received event keeps the published topic, type and
    /// payload, but has a fresh id and the broker's ts.
    pub(crate) restamps_envelope: bool,
    /// Only JSON-object bodies can be carried (DECNET's broker closes the
    /// connection on anything else): `publish_raw` of such a body fails
    /// with `PublishError::Rejected`, one over the broker's 1 MiB with
    /// `TooLarge`. Malformed events still reach subscribers the one way
    /// that broker delivers them: a truthy non-object `payload`.
    pub(crate) object_bodies_only: bool,
}

/// Builds buses for one backend.
pub(crate) struct Harness {
    /// The backend's `Bus::kind()`.
    pub(crate) kind: BusKind,
    /// Null-bus expectations (subscriptions end at once, publish is `Ok`).
    pub(crate) null: bool,
    /// Where this backend's broker differs (none by default).
    pub(crate) quirks: Quirks,
    make: Box<dyn Fn(BusOptions) -> BoxFuture<'static, Bus> + Send + Sync>,
}

impl Harness {
    pub(crate) fn new(
        kind: BusKind,
        null: bool,
        make: impl Fn(BusOptions) -> BoxFuture<'static, Bus> + Send + Sync + 'static,
    ) -> Harness {
        Harness {
            kind,
            null,
            quirks: Quirks::default(),
            make: Box::new(make),
        }
    }

    /// The same harness with `quirks`.
    pub(crate) fn with_quirks(mut self, quirks: Quirks) -> Harness {
        self.quirks = quirks;
        self
    }

    pub(crate) async fn bus(&self) -> Bus {
        self.bus_with(BusOptions::default()).await
    }

    pub(crate) async fn bus_with(&self, options: BusOptions) -> Bus {
        let bus = (self.make)(options).await;
        assert_eq!(bus.kind(), self.kind);
        // A real broker may still be connecting: wait (bounded) for it.
        let mut state = bus.watch_state();
        let connected = tokio::time::timeout(
            EVENT_TIMEOUT,
            state.wait_for(|s| *s == ConnectionState::Connected),
        )
        .await;
        assert!(
            matches!(connected, Ok(Ok(_))),
            "{} bus never connected",
            self.kind
        );
        bus
    }
}

/// Generate one `#[tokio::test]` per conformance case for a harness expression.
/// The expression may `return` early (e.g. `require_service!`) to skip.
#[macro_export]
macro_rules! conformance_suite {
    ($harness:expr) => {
        $crate::conformance_suite!(@cases $harness;
            wildcard_vectors,
            ordering_per_publisher,
            unsubscribe_on_drop,
            overlapping_patterns,
            topic_field_ignored,
            malformed_bodies_dropped,
            size_limit_enforced,
            envelope_round_trip,
            validation_errors,
            close_ends_everything,
            counters_and_state
        );
    };
    (@cases $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let harness = $harness;
                let res = tokio::time::timeout(
                    $crate::conformance::CASE_TIMEOUT,
                    $crate::conformance::$case(&harness),
                )
                .await;
                assert!(res.is_ok(), "conformance case {} timed out", stringify!($case));
            }
        )*
    };
}

pub(crate) fn prefix() -> String {
    format!("t{}", test_support::unique_suffix())
}

fn payload(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// The next event, failing after [`EVENT_TIMEOUT`].
pub(crate) async fn next_event(subscription: &mut Subscription, what: &str) -> Event {
    match tokio::time::timeout(EVENT_TIMEOUT, subscription.next()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("{what}: subscription ended"),
        Err(_) => panic!("{what}: no event within {EVENT_TIMEOUT:?}"),
    }
}

/// Assert nothing arrives for [`QUIET`].
pub(crate) async fn assert_quiet(subscription: &mut Subscription, what: &str) {
    if let Ok(item) = tokio::time::timeout(QUIET, subscription.next()).await {
        panic!("{what}: unexpected {item:?}");
    }
}

/// Assert the subscription has ended (null bus, closed bus).
pub(crate) async fn assert_ended(subscription: &mut Subscription, what: &str) {
    match tokio::time::timeout(EVENT_TIMEOUT, subscription.next()).await {
        Ok(None) => {}
        Ok(Some(event)) => panic!("{what}: expected end, got {event:?}"),
        Err(_) => panic!("{what}: subscription did not end"),
    }
}

async fn subscribe(bus: &Bus, pattern: &str) -> Subscription {
    match bus.subscribe(pattern).await {
        Ok(subscription) => subscription,
        Err(err) => panic!("subscribe {pattern}: {err}"),
    }
}

async fn publish(bus: &Bus, topic: &str, event_type: &str, body: Value) {
    if let Err(err) = bus.publish(topic, event_type, payload(body)).await {
        panic!("publish {topic}: {err}");
    }
}

fn load_vectors() -> Vec<(String, String, bool)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/wildcard_matches.json"
    );
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("test vectors missing at {path}: {err}"));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|err| panic!("{path}: {err}"));
    let cases = doc["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("{path}: no \"cases\" array"));
    assert!(!cases.is_empty(), "{path}: no cases");
    cases
        .iter()
        .map(|case| {
            let pattern = case[0]
                .as_str()
                .unwrap_or_else(|| panic!("bad case {case}"));
            let topic = case[1]
                .as_str()
                .unwrap_or_else(|| panic!("bad case {case}"));
            let expected = case[2]
                .as_bool()
                .unwrap_or_else(|| panic!("bad case {case}"));
            (pattern.to_owned(), topic.to_owned(), expected)
        })
        .collect()
}

/// A topic `pattern` surely matches (wildcards replaced by a literal).
fn sentinel_topic(pattern: &str) -> String {
    pattern
        .split('.')
        .map(|t| if t == "*" || t == ">" { "sentinel" } else { t })
        .collect::<Vec<_>>()
        .join(".")
}

// === cases ===

/// Every case of `wildcard_matches.json`, end to end.
pub(crate) async fn wildcard_vectors(harness: &Harness) {
    let bus = harness.bus().await;
    for (pattern, topic, expected) in load_vectors() {
        let prefix = prefix();
        let full_pattern = format!("{prefix}.{pattern}");
        let full_topic = format!("{prefix}.{topic}");
        let what = format!("[{pattern:?}, {topic:?}, {expected}]");
        assert_eq!(
            decnet_topics::matches(&full_pattern, &full_topic),
            expected,
            "{what}: prefixing changed the expected result"
        );
        let mut subscription = subscribe(&bus, &full_pattern).await;
        if decnet_topics::validate_topic(&full_topic).is_err() {
            assert!(
                !expected,
                "{what}: an unpublishable topic cannot be expected to match"
            );
            let res = bus.publish(&full_topic, "vector", Map::new()).await;
            assert!(
                matches!(res, Err(PublishError::InvalidTopic { .. })),
                "{what}: {res:?}"
            );
            continue;
        }
        publish(&bus, &full_topic, "vector", json!({})).await;
        let sentinel = sentinel_topic(&full_pattern);
        publish(&bus, &sentinel, "sentinel", json!({})).await;
        if harness.null {
            assert_ended(&mut subscription, &what).await;
            continue;
        }
        let mut got_vector = false;
        loop {
            let event = next_event(&mut subscription, &what).await;
            if event.event_type == "sentinel" {
                assert_eq!(event.topic, sentinel);
                break;
            }
            assert_eq!(event.topic, full_topic, "{what}");
            assert!(!got_vector, "{what}: delivered twice");
            got_vector = true;
        }
        if !expected && !got_vector {
            // No order is promised across topics: give a late one a chance.
            assert_quiet(&mut subscription, &what).await;
        }
        assert_eq!(got_vector, expected, "{what}");
    }
}

/// 1,000 events on one topic from one publisher arrive in publish order.
pub(crate) async fn ordering_per_publisher(harness: &Harness) {
    const N: u64 = 1000;
    let bus = harness.bus().await;
    let topic = format!("{}.order.t", prefix());
    let mut subscription = subscribe(&bus, &topic).await;
    let publisher = bus.clone();
    let publisher_topic = topic.clone();
    let task = tokio::spawn(async move {
        for n in 0..N {
            publish(&publisher, &publisher_topic, "seq", json!({ "n": n })).await;
        }
    });
    if harness.null {
        assert_ended(&mut subscription, "null").await;
    } else {
        for n in 0..N {
            let event = next_event(&mut subscription, "ordering").await;
            assert_eq!(event.payload.get("n"), Some(&json!(n)), "out of order");
        }
    }
    assert!(task.await.is_ok(), "publisher panicked");
    assert_eq!(bus.counters().published, N);
}

/// Dropping a subscription unsubscribes it; others on the same pattern
/// keep working, and a fresh one after everyone left works too.
pub(crate) async fn unsubscribe_on_drop(harness: &Harness) {
    let bus = harness.bus().await;
    let topic = format!("{}.drop.t", prefix());
    let first = subscribe(&bus, &topic).await;
    let mut second = subscribe(&bus, &topic).await;
    drop(first);
    publish(&bus, &topic, "after-drop", json!({})).await;
    if harness.null {
        assert_ended(&mut second, "null").await;
        return;
    }
    let event = next_event(&mut second, "second after first dropped").await;
    assert_eq!(event.event_type, "after-drop");
    // Only the second subscription received it.
    assert_eq!(bus.counters().received, 1);
    // Everyone left. No wait before the next subscription: the drop's
    // unsubscribe is ordered before it (memory: removed at once; the
    // broker-backed buses: one command channel to their task, which sends
    // UNSUB / PUNSUBSCRIBE before the new SUB / PSUBSCRIBE; NATS: a
    // subscription of its own), so the third is a fresh subscription that
    // must work as soon as `subscribe` returns.
    drop(second);
    let mut third = subscribe(&bus, &topic).await;
    publish(&bus, &topic, "third", json!({})).await;
    let event = next_event(&mut third, "resubscribed").await;
    assert_eq!(event.event_type, "third");
    assert_quiet(&mut third, "third").await;
    assert_eq!(bus.counters().received, 2);
}

/// Many subscribers on overlapping patterns each get exactly their events,
/// once each.
pub(crate) async fn overlapping_patterns(harness: &Harness) {
    let bus = harness.bus().await;
    let prefix = prefix();
    let patterns = [">", "a.*", "a.b", "*.b", "x.>", "a.>", "a.b", "*.*.z"];
    let topics = ["a.b", "a.c", "x.b", "x.y.z", "q", "a.b.c"];
    let mut subscriptions = Vec::new();
    for pattern in patterns {
        let full = format!("{prefix}.{pattern}");
        subscriptions.push((full.clone(), subscribe(&bus, &full).await));
    }
    for topic in topics {
        publish(&bus, &format!("{prefix}.{topic}"), "overlap", json!({})).await;
    }
    for (pattern, subscription) in &mut subscriptions {
        if harness.null {
            assert_ended(subscription, "null").await;
            continue;
        }
        let mut expected: Vec<String> = topics
            .iter()
            .map(|t| format!("{prefix}.{t}"))
            .filter(|t| decnet_topics::matches(pattern, t))
            .collect();
        let mut got = Vec::new();
        for _ in 0..expected.len() {
            got.push(next_event(subscription, pattern).await.topic);
        }
        assert_quiet(subscription, pattern).await;
        expected.sort();
        got.sort();
        assert_eq!(got, expected, "pattern {pattern}");
    }
}

/// A `topic` in the body never overrides the subject.
pub(crate) async fn topic_field_ignored(harness: &Harness) {
    let bus = harness.bus().await;
    let topic = format!("{}.real", prefix());
    let mut subscription = subscribe(&bus, &topic).await;
    let body = json!({"v": 1, "topic": "attacker.scored", "type": "spoof", "ts": 1.5, "payload": {"a": 1}});
    let raw = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    assert!(bus.publish_raw(&topic, raw).await.is_ok());
    if harness.null {
        assert_ended(&mut subscription, "null").await;
        return;
    }
    let event = next_event(&mut subscription, "spoof").await;
    assert_eq!(event.topic, topic);
    assert_eq!(event.event_type, "spoof");
    if harness.quirks.restamps_envelope {
        assert_restamped(&event, "0", 1.5);
    } else {
        assert_eq!(event.ts, 1.5);
    }
}

/// A broker-stamped event: `v` 1, a fresh 32-hex id (not `published_id`),
/// the broker's clock (near now, not `published_ts`).
fn assert_restamped(event: &Event, published_id: &str, published_ts: f64) {
    assert_eq!(event.v, 1);
    assert_eq!(event.id.len(), 32, "{}", event.id);
    assert!(
        event
            .id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{}",
        event.id
    );
    assert_ne!(event.id, published_id);
    assert_ne!(event.ts, published_ts);
    assert!(
        (event.ts - decnet_bus::now_ts()).abs() < 60.0,
        "ts {} is not the broker's clock",
        event.ts
    );
}

/// Malformed bodies are dropped and counted; the next valid event arrives.
pub(crate) async fn malformed_bodies_dropped(harness: &Harness) {
    let bus = harness.bus().await;
    let topic = format!("{}.bad", prefix());
    let mut subscription = subscribe(&bus, &topic).await;
    let big = {
        let mut body = br#"{"payload":{"pad":""#.to_vec();
        body.resize(body.len() + 2 * 1024 * 1024, b'x');
        body.extend_from_slice(br#""}}"#);
        body
    };
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("not json", b"not json".to_vec()),
        ("array", b"[1, 2, 3]".to_vec()),
        (
            "payload not object",
            br#"{"type": "x", "payload": [1]}"#.to_vec(),
        ),
        ("payload string", br#"{"payload": "x"}"#.to_vec()),
        ("empty", Vec::new()),
        ("2 MiB", big),
    ];
    let mut expected_failures = 0;
    let mut expected_publish_failures = 0;
    for (n, (what, body)) in bodies.into_iter().enumerate() {
        // Bodies an objects-only backend must refuse before sending.
        let refused = harness.quirks.object_bodies_only
            && matches!(what, "not json" | "array" | "empty" | "2 MiB");
        let res = bus.publish_raw(&topic, Bytes::from(body)).await;
        assert!(!refused || res.is_err(), "{what} must be refused: {res:?}");
        match res {
            Ok(()) => expected_failures += 1,
            // NATS refuses bodies over the server's max_payload (1 MiB) at
            // publish time: it never reaches a subscriber either.
            Err(PublishError::Transport(_)) if what == "2 MiB" && harness.kind == BusKind::Nats => {
                expected_publish_failures += 1;
            }
            // DECNET's broker would close the connection on these.
            Err(PublishError::Rejected(_)) if refused && what != "2 MiB" => {
                expected_publish_failures += 1;
            }
            Err(PublishError::TooLarge { .. }) if refused && what == "2 MiB" => {
                expected_publish_failures += 1;
            }
            Err(err) => panic!("publish_raw {what}: {err}"),
        }
        publish(&bus, &topic, "valid", json!({ "n": n })).await;
        if harness.null {
            continue;
        }
        let event = next_event(&mut subscription, what).await;
        assert_eq!(event.event_type, "valid", "{what}");
        assert_eq!(event.payload.get("n"), Some(&json!(n)), "{what}");
        let counters = bus.counters();
        assert_eq!(counters.decode_failures, expected_failures, "{what}");
        assert_eq!(
            counters.publish_failures, expected_publish_failures,
            "{what}"
        );
    }
    if harness.null {
        assert_ended(&mut subscription, "null").await;
        assert_eq!(bus.counters().decode_failures, 0);
    }
}

/// With a small `max_message_bytes`, a larger body is dropped on receipt
/// (on every backend) and refused at publish.
pub(crate) async fn size_limit_enforced(harness: &Harness) {
    let bus = harness
        .bus_with(BusOptions {
            max_message_bytes: 4096,
            ..BusOptions::default()
        })
        .await;
    let topic = format!("{}.size", prefix());
    let mut subscription = subscribe(&bus, &topic).await;
    let pad = "x".repeat(8192);
    let raw =
        serde_json::to_vec(&json!({"type": "big", "payload": {"pad": pad}})).unwrap_or_default();
    assert!(bus.publish_raw(&topic, Bytes::from(raw)).await.is_ok());
    let res = bus
        .publish(&topic, "big", payload(json!({"pad": pad})))
        .await;
    assert!(
        matches!(res, Err(PublishError::TooLarge { max: 4096, .. })),
        "{res:?}"
    );
    publish(&bus, &topic, "small", json!({})).await;
    if harness.null {
        assert_ended(&mut subscription, "null").await;
        return;
    }
    let event = next_event(&mut subscription, "after oversized").await;
    assert_eq!(event.event_type, "small");
    assert_eq!(bus.counters().decode_failures, 1);
}

/// What is published is what is received (id, type, ts, payload, v).
pub(crate) async fn envelope_round_trip(harness: &Harness) {
    let bus = harness.bus().await;
    let topic = format!("{}.attacker.observation.motor.typing", prefix());
    let mut subscription = subscribe(&bus, &topic).await;
    let mut event = Event::new(
        topic.clone(),
        "observation",
        payload(
            json!({"attacker_uuid": "a-1", "value": {"wpm": 71.5, "tags": ["x", null]}, "ok": true}),
        ),
    );
    event.ts = 1_700_000_123.25;
    assert!(bus.publish_event(&event).await.is_ok());
    if harness.null {
        assert_ended(&mut subscription, "null").await;
        return;
    }
    let received = next_event(&mut subscription, "round trip").await;
    if harness.quirks.restamps_envelope {
        assert_eq!(received.topic, event.topic);
        assert_eq!(received.event_type, event.event_type);
        assert_eq!(received.payload, event.payload);
        assert_restamped(&received, &event.id, event.ts);
    } else {
        assert_eq!(received, event);
    }
}

/// Invalid topics and patterns are refused before reaching the backend.
pub(crate) async fn validation_errors(harness: &Harness) {
    let bus = harness.bus().await;
    for topic in ["", "a..b", "a.*", "a.>", "a b", "a."] {
        let res = bus.publish(topic, "x", Map::new()).await;
        assert!(
            matches!(res, Err(PublishError::InvalidTopic { .. })),
            "{topic:?}: {res:?}"
        );
        let res = bus.publish_raw(topic, Bytes::from_static(b"{}")).await;
        assert!(
            matches!(res, Err(PublishError::InvalidTopic { .. })),
            "{topic:?}"
        );
    }
    for pattern in ["", "a..b", "a.>.b", "a*", "a b", ".a"] {
        let res = bus.subscribe(pattern).await;
        assert!(
            matches!(res, Err(SubscribeError::InvalidPattern { .. })),
            "{pattern:?}: {res:?}"
        );
    }
    let counters = bus.counters();
    assert_eq!(counters.published, 0);
    assert_eq!(counters.publish_failures, 0);
}

/// After `close`, publish and subscribe fail with `Closed`, open
/// subscriptions end, and the state is `Closed`.
pub(crate) async fn close_ends_everything(harness: &Harness) {
    let bus = harness.bus().await;
    let topic = format!("{}.close", prefix());
    let mut subscription = subscribe(&bus, &topic).await;
    let clone = bus.clone();
    bus.close().await;
    bus.close().await; // idempotent
    assert_ended(&mut subscription, "after close").await;
    assert!(matches!(
        clone.publish(&topic, "x", Map::new()).await,
        Err(PublishError::Closed)
    ));
    assert!(matches!(
        clone.publish_raw(&topic, Bytes::from_static(b"{}")).await,
        Err(PublishError::Closed)
    ));
    assert!(matches!(
        clone.subscribe(&topic).await,
        Err(SubscribeError::Closed)
    ));
    assert_eq!(clone.state(), ConnectionState::Closed);
    assert_eq!(*clone.watch_state().borrow(), ConnectionState::Closed);
    let counters = clone.counters();
    assert_eq!(
        counters.publish_failures, 0,
        "Closed is not a transport failure"
    );
}

/// Counters move as documented; the state is `Connected` while in use.
pub(crate) async fn counters_and_state(harness: &Harness) {
    let bus = harness.bus().await;
    assert_eq!(bus.state(), ConnectionState::Connected);
    assert_eq!(*bus.watch_state().borrow(), ConnectionState::Connected);
    let prefix = prefix();
    let mut a = subscribe(&bus, &format!("{prefix}.>")).await;
    let mut b = subscribe(&bus, &format!("{prefix}.c.*")).await;
    for _ in 0..3 {
        publish(&bus, &format!("{prefix}.c.d"), "count", json!({})).await;
    }
    if !harness.null {
        for _ in 0..3 {
            next_event(&mut a, "a").await;
            next_event(&mut b, "b").await;
        }
    }
    let counters = bus.counters();
    assert_eq!(counters.published, 3);
    assert_eq!(counters.received, if harness.null { 0 } else { 6 });
    assert_eq!(counters.publish_failures, 0);
    assert_eq!(counters.decode_failures, 0);
    assert_eq!(counters.dropped, 0);
}

// === helpers for the restart tests of the real brokers ===

pub(crate) async fn wait_state(bus: &Bus, want: ConnectionState, within: Duration) {
    let mut state = bus.watch_state();
    let res = tokio::time::timeout(within, state.wait_for(|s| *s == want)).await;
    assert!(matches!(res, Ok(Ok(_))), "state never became {want}");
}

/// Record every state the watch shows.
pub(crate) fn record_states(bus: &Bus) -> Arc<Mutex<Vec<ConnectionState>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut state = bus.watch_state();
    let record = seen.clone();
    tokio::spawn(async move {
        while state.changed().await.is_ok() {
            let now = *state.borrow_and_update();
            record.lock().unwrap_or_else(|e| e.into_inner()).push(now);
        }
    });
    seen
}

/// Publish until one event arrives on `subscription`, bounded.
pub(crate) async fn publish_until_received(
    bus: &Bus,
    topic: &str,
    subscription: &mut Subscription,
    within: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        let _ = bus.publish(topic, "probe", Map::new()).await;
        if let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(250), subscription.next()).await
        {
            return true;
        }
    }
    false
}
