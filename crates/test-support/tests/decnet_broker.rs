//! The stand-in DECNET broker, driven by raw `UnixStream` clients: the byte
//! examples of DECNET.md §1.13 (testdata/decnet_bus_frames.json), every
//! close condition of §1.7, fan-out rules, drop-oldest queues, heartbeats,
//! socket files, kill and restart. The frames are built and parsed here by
//! hand, independently of any codec.
#![cfg(unix)]

mod common;

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{Client, Evt, WAIT, broker, frame, subscriber};
use serde_json::{Value, json};
use test_support::decnet_broker::{BrokerConfig, CloseReason, TestBroker, decnet_matches};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

fn vectors() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/decnet_bus_frames.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{path}: {err}"));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|err| panic!("{path}: {err}"));
    doc["frames"].as_array().cloned().unwrap_or_default()
}

fn vector(name: &str) -> Value {
    vectors()
        .into_iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no vector {name}"))
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

fn vector_bytes(name: &str) -> Vec<u8> {
    unhex(vector(name)["hex"].as_str().unwrap_or_default())
}

fn keys(value: &Value) -> Vec<String> {
    value
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The `ts` of an EVT exactly as written (re-serializing a parsed float
/// may differ in the last digit).
fn raw_ts(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let start = text.find(r#""ts":"#).map_or(0, |i| i + 5);
    let end = text[start..].find(',').map_or(text.len(), |i| start + i);
    text[start..end].to_owned()
}

fn assert_fresh_stamps(body: &Value) {
    assert_eq!(body["v"], json!(1));
    let id = body["id"].as_str().unwrap_or_default();
    assert_eq!(id.len(), 32, "{id}");
    assert!(
        id.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{id}"
    );
    let ts = body["ts"].as_f64().unwrap_or_default();
    assert!((ts - now()).abs() < 60.0, "ts {ts}");
    assert!(body["ts"].is_f64(), "ts is a float: {}", body["ts"]);
}

#[tokio::test]
async fn documented_pub_becomes_the_documented_evt() {
    let broker = broker().await;
    let mut receiver = Client::connect(&broker).await;
    let mut hello_sub = vector_bytes("hello_api");
    hello_sub.extend(vector_bytes("sub_attacker_wildcard"));
    receiver.send(&hello_sub).await;
    assert!(
        broker
            .wait_until(WAIT, |b| b
                .connections()
                .iter()
                .any(|c| c.name == "api" && c.patterns == ["attacker.>"]))
            .await
    );
    let mut publisher = Client::connect(&broker).await;
    publisher.send(&vector_bytes("pub_attacker_scored")).await;
    let evt = receiver.evt().await;
    assert_eq!(evt.topic, "attacker.scored");
    assert_eq!(
        keys(&evt.body),
        ["v", "id", "topic", "type", "ts", "payload"]
    );
    assert_fresh_stamps(&evt.body);
    assert_ne!(evt.body["id"], json!("0123456789abcdef0123456789abcdef"));
    // Byte for byte the documented EVT, once its invented id and ts are ours.
    let documented = vector("evt_attacker_scored");
    let body = documented["body"]
        .as_str()
        .unwrap_or_default()
        .replace(
            "fedcba9876543210fedcba9876543210",
            evt.body["id"].as_str().unwrap_or_default(),
        )
        .replace("1718000000.731", &raw_ts(&evt.raw));
    assert_eq!(evt.raw, frame("EVT attacker.scored", body.as_bytes()));
    assert_eq!(&evt.raw[..20], &vector_bytes("evt_attacker_scored")[..20]);
    // The publisher hears nothing back: no acks, no echo.
    publisher.assert_quiet().await;
    receiver.assert_quiet().await;
}

#[tokio::test]
async fn hello_sub_bye_frames_are_accepted() {
    let broker = broker().await;
    let mut client = Client::connect(&broker).await;
    let mut bytes = vector_bytes("hello_api");
    bytes.extend(frame("HELLO", b"")); // an empty HELLO keeps the name
    bytes.extend(vector_bytes("sub_attacker_wildcard"));
    bytes.extend(frame("SUB x.y", b"garbage bodies are ignored here"));
    bytes.extend(frame("UNSUB x.y", b"[not json"));
    bytes.extend(frame("UNSUB never.subscribed", b""));
    client.send(&bytes).await;
    assert!(
        broker
            .wait_until(WAIT, |b| b
                .connections()
                .first()
                .is_some_and(|c| c.name == "api" && c.patterns == ["attacker.>"]))
            .await,
        "{:?}",
        broker.connections()
    );
    client.assert_quiet().await;
    client.send(&vector_bytes("bye")).await;
    client.assert_closed("BYE").await;
    assert!(
        broker
            .wait_until(WAIT, |b| b.stats().connections == 0)
            .await
    );
    assert!(broker.stats().closes.is_empty(), "BYE is a normal close");
}

#[tokio::test]
async fn every_close_condition_closes_silently() {
    let broker = broker().await;
    let mut long_header = "SUB ".to_owned();
    long_header.push_str(&"a".repeat(4096 - 4)); // 4096 + LF = 4097
    let no_lf = vec![b'a'; 70 * 1024];
    let mut too_big = b"PUB x\n".to_vec();
    too_big.extend_from_slice(&(1024u32 * 1024 + 1).to_be_bytes());
    let cases: Vec<(&str, Vec<u8>, CloseReason)> = vec![
        (
            "unknown verb",
            b"FOO x\n".to_vec(),
            CloseReason::UnknownVerb("FOO".into()),
        ),
        (
            "lowercase verb",
            frame("pub x", b"{}"),
            CloseReason::UnknownVerb("pub".into()),
        ),
        (
            "tab after verb",
            frame("PUB\tx", b""),
            CloseReason::UnknownVerb("PUB\tx".into()),
        ),
        (
            "leading space",
            frame(" PUB x", b""),
            CloseReason::UnknownVerb(String::new()),
        ),
        (
            "empty header",
            b"\n\0\0\0\0".to_vec(),
            CloseReason::EmptyHeader,
        ),
        (
            "CR LF only",
            b"\r\n\0\0\0\0".to_vec(),
            CloseReason::EmptyHeader,
        ),
        (
            "header of 4097 bytes",
            frame(&long_header, b""),
            CloseReason::HeaderTooLong,
        ),
        ("no LF within 64 KiB", no_lf, CloseReason::HeaderTooLong),
        (
            "non-ASCII header",
            frame("PUB caf\u{e9}", b"{}"),
            CloseReason::NonAsciiHeader,
        ),
        (
            "body over 1 MiB",
            too_big,
            CloseReason::BodyTooLarge(1024 * 1024 + 1),
        ),
        (
            "PUB without topic",
            frame("PUB", b"{}"),
            CloseReason::PubWithoutTopic,
        ),
        (
            "PUB with a blank topic",
            frame("PUB   ", b"{}"),
            CloseReason::PubWithoutTopic,
        ),
        (
            "SUB without pattern",
            frame("SUB", b""),
            CloseReason::SubWithoutPattern,
        ),
        (
            "PUB body not JSON",
            frame("PUB x", b"abc"),
            CloseReason::BodyNotJson,
        ),
        (
            "PUB body truncated JSON",
            frame("PUB x", b"{\"a\":"),
            CloseReason::BodyNotJson,
        ),
        (
            "PUB body an array",
            frame("PUB x", b"[1]"),
            CloseReason::BodyNotObject,
        ),
        (
            "PUB body a string",
            frame("PUB x", b"\"s\""),
            CloseReason::BodyNotObject,
        ),
        (
            "PUB body a number",
            frame("PUB x", b"3"),
            CloseReason::BodyNotObject,
        ),
        (
            "EVT from a client",
            frame("EVT x", b"{}"),
            CloseReason::EvtFromClient,
        ),
    ];
    for (what, bytes, reason) in cases {
        let before = broker.stats().closes.len();
        let mut client = Client::connect(&broker).await;
        client.send(&bytes).await;
        client.assert_closed(what).await;
        assert!(
            broker
                .wait_until(WAIT, |b| b.stats().closes.len() > before)
                .await,
            "{what}: no close recorded"
        );
        assert_eq!(broker.stats().closes.last(), Some(&reason), "{what}");
    }
    // End of stream inside a frame.
    for (what, bytes, reason) in [
        (
            "EOF mid-header",
            b"PUB x".to_vec(),
            CloseReason::EofMidHeader,
        ),
        (
            "EOF mid-length",
            b"PUB x\n\0\0".to_vec(),
            CloseReason::EofMidFrame,
        ),
        (
            "EOF mid-body",
            b"PUB x\n\0\0\0\x05{}".to_vec(),
            CloseReason::EofMidFrame,
        ),
    ] {
        let before = broker.stats().closes.len();
        let mut client = Client::connect(&broker).await;
        client.send(&bytes).await;
        let _ = client.stream.shutdown().await;
        client.assert_closed(what).await;
        assert!(
            broker
                .wait_until(WAIT, |b| b.stats().closes.len() > before)
                .await
        );
        assert_eq!(broker.stats().closes.last(), Some(&reason), "{what}");
    }
    // Still serving everyone else.
    assert!(
        broker
            .wait_until(WAIT, |b| b.stats().connections == 0)
            .await
    );
}

#[tokio::test]
async fn limits_are_inclusive_and_checked_before_reading_on() {
    let broker = broker().await;
    // A 4096-byte header (LF included) is fine.
    let mut pattern = "p.".to_owned();
    pattern.push_str(&"a".repeat(4096 - 4 - 2 - 1));
    let mut client = subscriber(&broker, "long", &[pattern.as_str()]).await;
    client.assert_quiet().await;
    // A 1 MiB length is fine: the broker waits for the body.
    let mut announced = b"PUB x\n".to_vec();
    announced.extend_from_slice(&(1024u32 * 1024).to_be_bytes());
    client.send(&announced).await;
    client.assert_quiet().await;
    assert!(broker.stats().closes.is_empty());
}

#[tokio::test]
async fn publisher_never_receives_its_own_events() {
    let broker = broker().await;
    let mut both = subscriber(&broker, "both", &["s.t"]).await;
    let mut other = subscriber(&broker, "other", &["s.t"]).await;
    both.send(&frame("PUB s.t", br#"{"type":"x","payload":{"n":1}}"#))
        .await;
    let evt = other.evt().await;
    assert_eq!(evt.body["payload"], json!({"n": 1}));
    both.assert_quiet().await;
    // Heartbeats have no origin: also covered in `heartbeats`.
}

#[tokio::test]
async fn delivered_once_per_connection() {
    let broker = broker().await;
    let mut client = subscriber(&broker, "many", &["a.>", "a.*", ">", "a.b", "*.b"]).await;
    let mut publisher = Client::connect(&broker).await;
    publisher
        .send(&frame("PUB a.b", br#"{"type":"once"}"#))
        .await;
    publisher
        .send(&frame("PUB z.z", br#"{"type":"sentinel"}"#))
        .await;
    assert_eq!(client.evt().await.body["type"], json!("once"));
    assert_eq!(client.evt().await.body["type"], json!("sentinel"));
    client.assert_quiet().await;
}

#[tokio::test]
async fn patterns_are_a_set_and_unsub_removes_the_exact_string() {
    let broker = broker().await;
    let mut client = subscriber(&broker, "set", &["a.>"]).await;
    // SUB twice, UNSUB once: gone (a set, not a count).
    let mut bytes = frame("SUB a.>", b"");
    bytes.extend(frame("SUB q.*", b""));
    bytes.extend(frame("UNSUB a.>", b""));
    bytes.extend(frame("UNSUB q.>", b"")); // not the exact string: no-op
    client.send(&bytes).await;
    assert!(
        broker
            .wait_until(WAIT, |b| b
                .connections()
                .first()
                .is_some_and(|c| c.patterns == ["q.*"]))
            .await,
        "{:?}",
        broker.connections()
    );
    let mut publisher = Client::connect(&broker).await;
    publisher.send(&frame("PUB a.b", b"{}")).await;
    publisher
        .send(&frame("PUB q.r", br#"{"type":"kept"}"#))
        .await;
    let evt = client.evt().await;
    assert_eq!(
        (evt.topic.as_str(), &evt.body["type"]),
        ("q.r", &json!("kept"))
    );
    client.assert_quiet().await;
}

#[test]
fn decnet_matcher_semantics() {
    let check = |pattern: &str, topic: &str, expected: bool| {
        assert_eq!(
            decnet_matches(pattern, topic),
            expected,
            "{pattern} vs {topic}"
        );
    };
    check("topology.>", "topology.abc.status", true);
    check("topology.>", "topology", false);
    check("*", "a", true);
    check("*", "a.b", false);
    check(">", "a", true);
    check(">", "a.b.c", true);
    check("a.*", "a.", false); // `*` needs a non-empty token
    check("a.>", "a.", true); // `>` only needs a token, even an empty one
    check("a..b", "a..b", true);
    check("a..b", "a.x.b", false);
    check("a*", "ab", false);
    check("a*", "a*", true);
    check("system.*.health", "system.bus.health", true);
    // The quirk: a `>` that is not last ends matching.
    check("a.>.b", "a.c", true);
    check("a.>.b", "a.c.d.e", true);
    check("a.>.b", "a", false);
    check("A.b", "a.b", false);
}

#[tokio::test]
async fn the_matcher_quirk_on_the_wire() {
    let broker = broker().await;
    let mut client = subscriber(&broker, "quirk", &["a.>.b"]).await;
    let mut publisher = Client::connect(&broker).await;
    publisher.send(&frame("PUB a.c", b"{}")).await;
    assert_eq!(client.evt().await.topic, "a.c");
}

#[tokio::test]
async fn stamping_keeps_only_truthy_type_and_payload() {
    let broker = broker().await;
    let mut client = subscriber(&broker, "truthy", &["t.>"]).await;
    let mut publisher = Client::connect(&broker).await;
    let cases: Vec<(&[u8], Value, Value)> = vec![
        (
            br#"{"type":"x","payload":{"a":1}}"#,
            json!("x"),
            json!({"a": 1}),
        ),
        (br#"{"type":"x","payload":[1]}"#, json!("x"), json!([1])),
        (br#"{"payload":"s"}"#, json!(""), json!("s")),
        (br#"{"payload":7}"#, json!(""), json!(7)),
        (br#"{"payload":true}"#, json!(""), json!(true)),
        (br#"{"payload":[]}"#, json!(""), json!({})),
        (br#"{"payload":0}"#, json!(""), json!({})),
        (br#"{"payload":0.0}"#, json!(""), json!({})),
        (br#"{"payload":""}"#, json!(""), json!({})),
        (br#"{"payload":null}"#, json!(""), json!({})),
        (br#"{"payload":false}"#, json!(""), json!({})),
        (br#"{"type":5}"#, json!(5), json!({})),
        (br#"{"type":""}"#, json!(""), json!({})),
        (br#"{"type":[]}"#, json!(""), json!({})),
        (b"", json!(""), json!({})),
        (
            br#"{"v":9,"id":"mine","topic":"spoof","ts":1.5,"extra":1,"type":"k"}"#,
            json!("k"),
            json!({}),
        ),
    ];
    for (n, (body, _, _)) in cases.iter().enumerate() {
        publisher.send(&frame(&format!("PUB t.{n}"), body)).await;
    }
    for (n, (body, event_type, payload)) in cases.iter().enumerate() {
        let evt = client.evt().await;
        let what = String::from_utf8_lossy(body);
        assert_eq!(evt.topic, format!("t.{n}"), "{what}");
        assert_eq!(evt.body["topic"], json!(format!("t.{n}")), "{what}");
        assert_eq!(&evt.body["type"], event_type, "{what}");
        assert_eq!(&evt.body["payload"], payload, "{what}");
        assert_eq!(
            keys(&evt.body),
            ["v", "id", "topic", "type", "ts", "payload"]
        );
        assert_fresh_stamps(&evt.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queues_drop_the_oldest_and_never_block_publishers() {
    const N: u64 = 4000;
    let broker = broker().await;
    let slow = subscriber(&broker, "slow", &["q.t"]).await;
    let mut fast = subscriber(&broker, "fast", &["q.t"]).await;
    let fast_reader = tokio::spawn(async move {
        let mut seen = 0u64;
        while seen < N {
            let evt = fast.evt().await;
            assert_eq!(
                evt.body["payload"]["n"],
                json!(seen),
                "fast subscriber lost one"
            );
            seen += 1;
        }
    });
    let pad = "x".repeat(2048);
    let mut bytes = Vec::new();
    for n in 0..N {
        let body = serde_json::to_vec(&json!({"type": "n", "payload": {"n": n, "pad": pad}}))
            .unwrap_or_default();
        bytes.extend(frame("PUB q.t", &body));
    }
    let mut publisher = Client::connect(&broker).await;
    // The slow subscriber reads nothing, yet the publisher is never blocked.
    let sent = tokio::time::timeout(Duration::from_secs(20), publisher.send(&bytes)).await;
    assert!(sent.is_ok(), "publisher blocked");
    assert!(
        broker
            .wait_until(Duration::from_secs(20), |b| b.stats().events >= N)
            .await
    );
    assert!(matches!(fast_reader.await, Ok(())), "fast subscriber");
    let dropped = broker.stats().dropped;
    assert!(
        dropped > 0,
        "nothing was dropped: the test did not fill the queue"
    );
    let mut slow = slow;
    let mut received = Vec::new();
    while received.last() != Some(&(N - 1)) {
        let evt = slow.evt().await;
        received.push(evt.body["payload"]["n"].as_u64().unwrap_or(u64::MAX));
    }
    slow.assert_quiet().await;
    assert!(received.windows(2).all(|w| w[0] < w[1]), "order kept");
    assert_eq!(
        received.len() as u64 + dropped,
        N,
        "each event delivered or dropped"
    );
    // The newest 1024 (the queue) all survived.
    let tail: Vec<u64> = received[received.len() - 1024..].to_vec();
    assert_eq!(tail, (N - 1024..N).collect::<Vec<_>>());
}

#[tokio::test]
async fn heartbeats() {
    let broker = TestBroker::start_in_temp_dir_with(BrokerConfig {
        heartbeat_interval: Duration::from_millis(100),
        ..BrokerConfig::default()
    })
    .await
    .unwrap_or_else(|err| panic!("{err}"));
    // The first one goes out at start (to nobody here).
    assert!(broker.wait_until(WAIT, |b| b.stats().events >= 1).await);
    let mut client = subscriber(&broker, "watchdog", &["system.*.health"]).await;
    let first = client.evt().await;
    let second = client.evt().await;
    for evt in [&first, &second] {
        assert_eq!(evt.topic, "system.bus.health");
        assert_eq!(evt.body["type"], json!("bus.health"));
        assert_eq!(keys(&evt.body["payload"]), ["pid", "uptime_sec", "ts"]);
        assert_eq!(evt.body["payload"]["pid"], json!(std::process::id()));
        assert!(evt.body["payload"]["ts"].is_f64());
        let uptime = evt.body["payload"]["uptime_sec"].as_f64().unwrap_or(-1.0);
        assert!(uptime >= 0.0);
        assert!(
            ((uptime * 1000.0).round() - uptime * 1000.0).abs() < 1e-6,
            "{uptime}"
        );
        assert_fresh_stamps(&evt.body);
    }
    let up = |evt: &Evt| {
        evt.body["payload"]["uptime_sec"]
            .as_f64()
            .unwrap_or_default()
    };
    assert!(up(&second) > up(&first));
    // A connection that publishes still gets heartbeats (they have no origin).
    client.send(&frame("PUB a.b", b"{}")).await;
    assert_eq!(client.evt().await.topic, "system.bus.health");
    // The default interval is DECNET's.
    assert_eq!(
        BrokerConfig::default().heartbeat_interval,
        Duration::from_secs(10)
    );
}

#[tokio::test]
async fn socket_file_mode_stale_socket_and_stop() {
    let mut broker = broker().await;
    let path = broker.path().to_owned();
    let mode = std::fs::metadata(&path)
        .map(|m| m.permissions().mode() & 0o777)
        .ok();
    assert_eq!(mode, Some(0o660));
    // Killed: the socket file stays behind, and nothing answers it.
    broker.kill().await;
    assert!(path.exists());
    assert!(UnixStream::connect(&path).await.is_err());
    // A new broker on the same path removes the stale socket.
    let Ok(mut second) = TestBroker::start(&path).await else {
        panic!("a stale socket was not replaced");
    };
    assert!(UnixStream::connect(&path).await.is_ok());
    second.stop().await;
    assert!(!path.exists(), "stop removes the socket");
    // A file that is not a socket is not removed: binding fails.
    assert!(std::fs::write(&path, b"not a socket").is_ok());
    assert!(TestBroker::start(&path).await.is_err());
    let _ = std::fs::remove_file(&path);
    // The parent directory must exist.
    let missing = path.with_file_name("missing").join("bus.sock");
    let res = TestBroker::start(&missing).await;
    assert!(
        matches!(res, Err(ref err) if err.kind() == io::ErrorKind::NotFound),
        "{res:?}"
    );
}

#[tokio::test]
async fn kill_drops_every_connection_and_restart_serves_again() {
    let mut broker = broker().await;
    let mut first = subscriber(&broker, "a", &["k.t"]).await;
    let mut second = subscriber(&broker, "b", &["k.t"]).await;
    broker.kill().await;
    assert!(!broker.is_running());
    first.assert_closed("killed").await;
    second.assert_closed("killed").await;
    let refused = UnixStream::connect(broker.path()).await;
    assert!(refused.is_err(), "a killed broker accepts nothing");
    broker
        .restart()
        .await
        .unwrap_or_else(|err| panic!("restart: {err}"));
    // A fresh start: no pattern survives on the broker side.
    let mut client = subscriber(&broker, "c", &["k.t"]).await;
    let mut publisher = Client::connect(&broker).await;
    publisher
        .send(&frame("PUB k.t", br#"{"type":"again"}"#))
        .await;
    assert_eq!(client.evt().await.body["type"], json!("again"));
    assert_eq!(broker.connections().len(), 2);
}
