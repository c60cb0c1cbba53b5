//! The conformance suite on the `unix` backend against the stand-in DECNET
//! broker (`test_support::decnet_broker::TestBroker`, one per test on a
//! private socket; no service needed), and what only this backend does:
//! two connections, reference-counted SUB/UNSUB, confirmed subscribes,
//! private probes, interplay with DECNET-style raw clients, refused bodies,
//! broker kill and restart, configuration.
#![cfg(unix)]

mod conformance;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use conformance::{
    Harness, Quirks, assert_quiet, next_event, prefix, publish_until_received, wait_state,
};
use decnet_bus::{
    Bus, BusConfig, BusKind, ConnectionState, ENV_BUS_SOCKET, ENV_BUS_TYPE, PublishError,
    RESERVED_ROOT, SubscribeError, UnixBus, UnixConfig,
};
use futures::FutureExt;
use serde_json::{Map, Value, json};
use test_support::decnet_broker::{BrokerConfig, TestBroker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const WAIT: Duration = Duration::from_secs(5);

async fn broker() -> TestBroker {
    broker_with(BrokerConfig::default()).await
}

async fn broker_with(config: BrokerConfig) -> TestBroker {
    TestBroker::start_in_temp_dir_with(config)
        .await
        .unwrap_or_else(|err| panic!("test broker: {err}"))
}

fn quirks() -> Quirks {
    Quirks {
        restamps_envelope: true,
        object_bodies_only: true,
    }
}

/// A harness whose buses talk to their own test broker (kept alive by it).
async fn harness() -> Harness {
    let broker = Arc::new(broker().await);
    let path = broker.path().to_owned();
    Harness::new(BusKind::Unix, false, move |options| {
        let _keep_alive = &broker;
        let config = UnixConfig {
            socket_path: path.clone(),
            ..UnixConfig::default()
        };
        async move { Bus::from_backend_with(Arc::new(UnixBus::connect(config)), options) }.boxed()
    })
    .with_quirks(quirks())
}

conformance_suite!(harness().await);

async fn connect(broker: &TestBroker) -> Bus {
    let config = BusConfig {
        kind: BusKind::Unix,
        socket_path: Some(broker.path().to_owned()),
        ..BusConfig::default()
    };
    let bus = Bus::connect(&config)
        .await
        .unwrap_or_else(|err| panic!("connect: {err}"));
    wait_state(&bus, ConnectionState::Connected, WAIT).await;
    bus
}

async fn subscribe(bus: &Bus, pattern: &str) -> decnet_bus::Subscription {
    bus.subscribe(pattern)
        .await
        .unwrap_or_else(|err| panic!("subscribe {pattern}: {err}"))
}

fn payload(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// The patterns the broker holds for our subscriber connection(s).
fn broker_patterns(broker: &TestBroker) -> Vec<String> {
    let mut patterns: Vec<String> = broker
        .connections()
        .into_iter()
        .filter(|c| c.name == decnet_bus::DEFAULT_CLIENT_NAME)
        .flat_map(|c| c.patterns)
        .collect();
    patterns.sort();
    patterns
}

/// A raw DECNET-style client (e.g. DECNET's API), frames built by hand.
struct Raw {
    stream: UnixStream,
    buf: Vec<u8>,
}

fn frame(header: &str, body: &[u8]) -> Vec<u8> {
    let mut out = header.as_bytes().to_vec();
    out.push(b'\n');
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(body);
    out
}

impl Raw {
    async fn connect(broker: &TestBroker, name: &str) -> Raw {
        let stream = UnixStream::connect(broker.path())
            .await
            .unwrap_or_else(|err| panic!("raw connect: {err}"));
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
        };
        raw.send(&frame(&format!("HELLO {name}"), b"")).await;
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .unwrap_or_else(|err| panic!("raw send: {err}"));
    }

    async fn publish(&mut self, topic: &str, body: Value) {
        let body = serde_json::to_vec(&body).unwrap_or_default();
        self.send(&frame(&format!("PUB {topic}"), &body)).await;
    }

    /// The next EVT: (topic, body).
    async fn evt(&mut self) -> (String, Value) {
        let read = async {
            loop {
                if let Some(lf) = self.buf.iter().position(|b| *b == b'\n')
                    && self.buf.len() >= lf + 5
                {
                    let len = u32::from_be_bytes([
                        self.buf[lf + 1],
                        self.buf[lf + 2],
                        self.buf[lf + 3],
                        self.buf[lf + 4],
                    ]) as usize;
                    if self.buf.len() >= lf + 5 + len {
                        let raw: Vec<u8> = self.buf.drain(..lf + 5 + len).collect();
                        let header = String::from_utf8_lossy(&raw[..lf]).into_owned();
                        let topic = header.strip_prefix("EVT ").unwrap_or_default().to_owned();
                        let body = serde_json::from_slice(&raw[lf + 5..]).unwrap_or_default();
                        return (topic, body);
                    }
                }
                let mut chunk = [0u8; 4096];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => panic!("raw client: connection closed"),
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        };
        match tokio::time::timeout(WAIT, read).await {
            Ok(evt) => evt,
            Err(_) => panic!("raw client: no EVT within {WAIT:?}"),
        }
    }
}

#[tokio::test]
async fn two_connections_named_decnet_events() {
    let broker = broker().await;
    let bus = connect(&broker).await;
    let _subscription = subscribe(&bus, "a.b").await;
    let names: Vec<String> = broker.connections().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["decnet-events", "decnet-events"]);
    // One carries the SUB, the other nothing: it only publishes (the probe
    // pattern is UNSUBscribed right after the confirmation).
    let split = |b: &TestBroker| {
        let patterns: Vec<Vec<String>> = b.connections().into_iter().map(|c| c.patterns).collect();
        patterns == [vec!["a.b".to_owned()], Vec::new()]
    };
    assert!(
        broker.wait_until(WAIT, split).await,
        "{:?}",
        broker.connections()
    );
}

#[tokio::test]
async fn sub_is_reference_counted_and_unsub_follows_the_last_drop() {
    let broker = broker().await;
    let bus = connect(&broker).await;
    let first = subscribe(&bus, "r.c").await;
    let second = subscribe(&bus, "r.c").await;
    let other = subscribe(&bus, "r.*").await;
    assert!(
        broker
            .wait_until(WAIT, |b| broker_patterns(b) == ["r.*", "r.c"])
            .await,
        "{:?}",
        broker_patterns(&broker)
    );
    drop(first);
    // Still wanted by `second`: no UNSUB (the broker would forget the set).
    let mut second = second;
    assert!(bus.publish("r.c", "still", Map::new()).await.is_ok());
    assert_eq!(next_event(&mut second, "second").await.event_type, "still");
    assert_eq!(broker_patterns(&broker), ["r.*", "r.c"]);
    drop(second);
    assert!(
        broker
            .wait_until(WAIT, |b| broker_patterns(b) == ["r.*"])
            .await,
        "{:?}",
        broker_patterns(&broker)
    );
    drop(other);
    assert!(
        broker
            .wait_until(WAIT, |b| broker_patterns(b).is_empty())
            .await
    );
}

#[tokio::test]
async fn subscribe_returns_once_the_sub_is_processed() {
    // A single publish right after subscribe() returns must arrive: no
    // retries, no sleeps. DECNET's own client cannot promise this.
    let broker = broker().await;
    let bus = connect(&broker).await;
    let mut raw = Raw::connect(&broker, "api").await;
    for n in 0..25 {
        let topic = format!("{}.confirmed.{n}", prefix());
        let mut subscription = subscribe(&bus, &topic).await;
        raw.publish(&topic, json!({"type": "once", "payload": {"n": n}}))
            .await;
        let event = next_event(&mut subscription, "published once").await;
        assert_eq!(event.payload.get("n"), Some(&json!(n)));
    }
}

#[tokio::test]
async fn probes_never_reach_subscribers_and_are_unsubscribed() {
    let broker = broker().await;
    let bus = connect(&broker).await;
    let mut everything = subscribe(&bus, ">").await;
    // A DECNET client listening to everything does see probes.
    let mut raw = Raw::connect(&broker, "everything").await;
    raw.send(&frame("SUB >", b"")).await;
    assert!(
        broker
            .wait_until(WAIT, |b| b
                .connections()
                .iter()
                .any(|c| c.name == "everything" && !c.patterns.is_empty()))
            .await
    );
    let prefix = prefix();
    let mut subscriptions = Vec::new();
    for n in 0..5 {
        subscriptions.push(subscribe(&bus, &format!("{prefix}.p{n}")).await);
    }
    let sentinel = format!("{prefix}.sentinel");
    assert!(bus.publish(&sentinel, "sentinel", Map::new()).await.is_ok());
    loop {
        let event = next_event(&mut everything, "everything").await;
        assert!(
            !event.topic.starts_with(RESERVED_ROOT),
            "probe delivered: {}",
            event.topic
        );
        if event.topic == sentinel {
            break;
        }
    }
    let (topic, body) = raw.evt().await;
    assert!(topic.starts_with("_decnet_events.probe."), "{topic}");
    assert_eq!(body["type"], json!("decnet-events.probe"));
    // Every probe pattern was UNSUBscribed again.
    assert!(
        broker
            .wait_until(WAIT, |b| !broker_patterns(b)
                .iter()
                .any(|p| p.starts_with(RESERVED_ROOT)))
            .await,
        "{:?}",
        broker_patterns(&broker)
    );
    // The root is reserved: whoever publishes under it, our subscriptions
    // never see it.
    let mut raw_publisher = Raw::connect(&broker, "spoof").await;
    raw_publisher
        .publish(&format!("{RESERVED_ROOT}.x"), json!({"type": "spoof"}))
        .await;
    raw_publisher
        .publish(&sentinel, json!({"type": "sentinel-2"}))
        .await;
    let event = next_event(&mut everything, "after spoof").await;
    assert_eq!(event.event_type, "sentinel-2");
}

#[tokio::test]
async fn decnet_clients_and_this_bus_see_each_other() {
    let broker = broker().await;
    let bus = connect(&broker).await;
    let prefix = prefix();
    // DECNET's API publishes: our subscription gets it, restamped.
    let mut subscription = subscribe(&bus, &format!("{prefix}.topology.*.mutation.enqueued")).await;
    let mut api = Raw::connect(&broker, "api").await;
    let topic = format!("{prefix}.topology.t1.mutation.enqueued");
    api.publish(
        &topic,
        json!({"v": 1, "id": "x", "topic": "spoofed", "type": "mutation.enqueued", "ts": 1.0, "payload": {"id": "m1"}}),
    )
    .await;
    let event = next_event(&mut subscription, "from DECNET").await;
    assert_eq!(event.topic, topic);
    assert_eq!(event.event_type, "mutation.enqueued");
    assert_eq!(event.payload.get("id"), Some(&json!("m1")));
    assert_ne!(event.id, "x");
    // We publish: a DECNET subscriber gets exactly type and payload, stamped
    // by the broker in DECNET's key order.
    api.send(&frame(&format!("SUB {prefix}.attacker.>"), b""))
        .await;
    assert!(
        broker
            .wait_until(WAIT, |b| b
                .connections()
                .iter()
                .any(|c| c.name == "api" && !c.patterns.is_empty()))
            .await
    );
    let ours = format!("{prefix}.attacker.scored");
    assert!(
        bus.publish(
            &ours,
            "scored",
            payload(json!({"attacker_ip": "203.0.113.7", "score": 80}))
        )
        .await
        .is_ok()
    );
    let (topic, body) = api.evt().await;
    assert_eq!(topic, ours);
    let keys: Vec<&str> = body
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(keys, ["v", "id", "topic", "type", "ts", "payload"]);
    assert_eq!(body["type"], json!("scored"));
    assert_eq!(
        body["payload"],
        json!({"attacker_ip": "203.0.113.7", "score": 80})
    );
}

#[tokio::test]
async fn refused_messages_never_reach_the_broker() {
    let broker = broker().await;
    let bus = connect(&broker).await;
    let topic = format!("{}.refused", prefix());
    let mut subscription = subscribe(&bus, &topic).await;
    for body in [&b"not json"[..], b"[1]", b"", b"\"s\"", b"{\"a\":"] {
        let res = bus.publish_raw(&topic, Bytes::copy_from_slice(body)).await;
        assert!(matches!(res, Err(PublishError::Rejected(_))), "{res:?}");
    }
    // Non-ASCII topics and patterns are valid topics, but not on this wire.
    let res = bus.publish("attacker.caf\u{e9}", "x", Map::new()).await;
    assert!(matches!(res, Err(PublishError::Rejected(_))), "{res:?}");
    let res = bus.subscribe("attacker.caf\u{e9}").await;
    assert!(matches!(res, Err(SubscribeError::Rejected(_))), "{res:?}");
    let long = format!("a.{}", "b".repeat(4096));
    let res = bus.publish(&long, "x", Map::new()).await;
    assert!(matches!(res, Err(PublishError::Rejected(_))), "{res:?}");
    // Nothing reached the broker, which closed nothing; we are still connected.
    assert!(bus.publish(&topic, "fine", Map::new()).await.is_ok());
    assert_eq!(
        next_event(&mut subscription, "fine").await.event_type,
        "fine"
    );
    assert!(
        broker.stats().closes.is_empty(),
        "{:?}",
        broker.stats().closes
    );
    assert_eq!(bus.state(), ConnectionState::Connected);
    assert_eq!(bus.counters().publish_failures, 7);
}

#[tokio::test]
async fn heartbeats_arrive_as_events() {
    let broker = broker_with(BrokerConfig {
        heartbeat_interval: Duration::from_millis(50),
        ..BrokerConfig::default()
    })
    .await;
    let bus = connect(&broker).await;
    let mut subscription = subscribe(&bus, "system.*.health").await;
    let event = next_event(&mut subscription, "heartbeat").await;
    assert_eq!(event.topic, "system.bus.health");
    assert_eq!(event.event_type, "bus.health");
    assert_eq!(event.payload.get("pid"), Some(&json!(std::process::id())));
    assert!(event.payload.get("uptime_sec").is_some_and(Value::is_f64));
}

#[tokio::test]
async fn slow_subscription_drops_oldest() {
    let broker = broker().await;
    let bus = Bus::from_backend(Arc::new(UnixBus::connect(UnixConfig {
        socket_path: broker.path().to_owned(),
        queue_capacity: 4,
        ..UnixConfig::default()
    })));
    wait_state(&bus, ConnectionState::Connected, WAIT).await;
    let topic = format!("{}.slow", prefix());
    let mut subscription = subscribe(&bus, &topic).await;
    for n in 0..10 {
        assert!(
            bus.publish(&topic, "n", payload(json!({"n": n})))
                .await
                .is_ok()
        );
    }
    let deadline = Instant::now() + WAIT;
    while bus.counters().dropped < 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(bus.counters().dropped, 6);
    for n in 6..10 {
        let event = next_event(&mut subscription, "survivor").await;
        assert_eq!(event.payload.get("n"), Some(&json!(n)));
    }
    assert_quiet(&mut subscription, "drained").await;
}

#[tokio::test]
async fn close_ends_both_connections_cleanly() {
    let broker = broker().await;
    let bus = connect(&broker).await;
    let _subscription = subscribe(&bus, "c.d").await;
    assert_eq!(broker.stats().connections, 2);
    bus.close().await;
    assert!(
        broker
            .wait_until(WAIT, |b| b.stats().connections == 0)
            .await
    );
    assert!(
        broker.stats().closes.is_empty(),
        "{:?}",
        broker.stats().closes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_survive_a_broker_restart() {
    let mut broker = broker().await;
    let bus = connect(&broker).await;
    let prefix = prefix();
    let exact = format!("{prefix}.restart.a");
    let wildcard = format!("{prefix}.restart.*");
    let mut first = subscribe(&bus, &exact).await;
    let mut second = subscribe(&bus, &exact).await;
    let mut third = subscribe(&bus, &wildcard).await;
    assert!(bus.publish(&exact, "before", Map::new()).await.is_ok());
    for subscription in [&mut first, &mut second, &mut third] {
        assert_eq!(
            next_event(subscription, "before").await.event_type,
            "before"
        );
    }

    // The explicit waits prove the order Connected -> Reconnecting ->
    // Connected (a recorder task could miss a short Reconnecting on a
    // loaded machine).
    broker.kill().await;
    wait_state(&bus, ConnectionState::Reconnecting, WAIT).await;
    assert_eq!(bus.state(), ConnectionState::Reconnecting);
    // Publishing while the broker is down fails fast, is counted, never panics.
    for _ in 0..2 {
        let started = Instant::now();
        let res = bus.publish(&exact, "while-down", Map::new()).await;
        assert!(matches!(res, Err(PublishError::Transport(_))), "{res:?}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(bus.counters().publish_failures, 2);
    // Subscribing while down returns at once; it is sent on reconnect.
    let started = Instant::now();
    let mut late = subscribe(&bus, &format!("{prefix}.restart.late")).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    broker
        .restart()
        .await
        .unwrap_or_else(|err| panic!("restart: {err}"));
    wait_state(&bus, ConnectionState::Connected, Duration::from_secs(10)).await;
    // HELLO and every pattern were sent again, once each.
    assert!(
        broker
            .wait_until(WAIT, |b| broker_patterns(b).len() == 3)
            .await,
        "{:?}",
        broker_patterns(&broker)
    );
    assert_eq!(
        broker_patterns(&broker),
        [
            wildcard.clone(),
            exact.clone(),
            format!("{prefix}.restart.late")
        ]
    );
    assert!(
        publish_until_received(&bus, &exact, &mut first, Duration::from_secs(10)).await,
        "delivery did not resume on the same subscription"
    );
    assert!(
        publish_until_received(
            &bus,
            &format!("{prefix}.restart.late"),
            &mut late,
            Duration::from_secs(10)
        )
        .await
    );
    // Everything published after the first success reaches all of them.
    assert!(bus.publish(&exact, "after", Map::new()).await.is_ok());
    for subscription in [&mut first, &mut second, &mut third] {
        loop {
            let event = next_event(subscription, "after").await;
            if event.event_type == "after" {
                break;
            }
            assert_eq!(event.event_type, "probe");
        }
    }
    assert_eq!(bus.state(), ConnectionState::Connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_created_while_broker_down_connects_later() {
    let dir =
        std::env::temp_dir().join(format!("decnet-bus-late-{}", test_support::unique_suffix()));
    assert!(std::fs::create_dir_all(&dir).is_ok());
    let path = dir.join("bus.sock");
    let config = BusConfig::from_lookup(|var| match var {
        ENV_BUS_TYPE => Some("unix".to_owned()),
        ENV_BUS_SOCKET => Some(path.to_string_lossy().into_owned()),
        _ => None,
    })
    .unwrap_or_else(|err| panic!("config: {err}"));
    assert_eq!(config.socket_path.as_deref(), Some(path.as_path()));
    let bus = Bus::connect(&config)
        .await
        .unwrap_or_else(|err| panic!("connect while down: {err}"));
    assert_eq!(bus.kind(), BusKind::Unix);
    assert_eq!(bus.state(), ConnectionState::Reconnecting);
    let topic = format!("{}.late", prefix());
    let mut subscription = subscribe(&bus, &topic).await;
    let res = bus.publish(&topic, "down", Map::new()).await;
    assert!(matches!(res, Err(PublishError::Transport(_))), "{res:?}");
    let broker = TestBroker::start(&path)
        .await
        .unwrap_or_else(|err| panic!("start: {err}"));
    wait_state(&bus, ConnectionState::Connected, Duration::from_secs(10)).await;
    assert!(
        publish_until_received(&bus, &topic, &mut subscription, Duration::from_secs(10)).await,
        "subscription made while down never received"
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
