//! Behaviour of the stream hub, every kind, on the memory bus and memory repository.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use decnet_bus::Bus;
use decnet_repo::prelude::*;
use decnet_repo::{Attacker, MemoryRepository, Observation};
use decnet_sse::{Decoded, Decoder};
use decnet_stream::{
    EventStream, HubConfig, KIND_WIDE_KEY, KindId, OpenOptions, SessionCheck, SessionEnd,
    SessionVerdict, StreamHub, decnet_kinds,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(5);

struct Fixture {
    bus: Bus,
    repo: MemoryRepository,
    hub: StreamHub,
}

fn hub_over(bus: &Bus, repo: &MemoryRepository, config: HubConfig) -> StreamHub {
    let repo: Arc<dyn Repository> = Arc::new(repo.clone());
    StreamHub::start(bus.clone(), decnet_kinds(&repo), config)
}

async fn fixture(config: HubConfig) -> Fixture {
    let bus = Bus::memory();
    let repo = MemoryRepository::new();
    let hub = hub_over(&bus, &repo, config);
    // Let the hub's subscriptions register before anything is published.
    tokio::time::timeout(WAIT, hub.wait_subscribed())
        .await
        .expect("hub subscribed");
    Fixture { bus, repo, hub }
}

async fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn attacker(uuid: &str, identity: Option<&str>) -> Attacker {
    Attacker {
        uuid: uuid.into(),
        ip: "198.51.100.7".into(),
        identity_id: identity.map(str::to_owned),
    }
}

fn observation(attacker: &str, id: &str, primitive: &str, ts: f64, value: Value) -> Observation {
    Observation {
        id: id.into(),
        identity_ref: None,
        primitive: primitive.into(),
        value,
        confidence: 0.9,
        window_start_ts: ts - 1.0,
        window_end_ts: ts,
        source: "behave".into(),
        evidence_ref: format!("ev-{id}"),
        envelope_v: 1,
        ts,
        attacker_uuid: attacker.into(),
    }
}

/// Reads decoded items from a stream, however the bytes were chunked.
struct Reader {
    stream: EventStream,
    decoder: Decoder,
    items: std::collections::VecDeque<Decoded>,
    ended: bool,
}

impl Reader {
    fn new(stream: EventStream) -> Self {
        Self {
            stream,
            decoder: Decoder::new(),
            items: Default::default(),
            ended: false,
        }
    }

    /// The next item, or `None` when the stream ended.
    async fn next(&mut self) -> Option<Decoded> {
        loop {
            if let Some(item) = self.items.pop_front() {
                return Some(item);
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout(WAIT, self.stream.next()).await {
                Ok(Some(chunk)) => self.items.extend(self.decoder.feed(&chunk)),
                Ok(None) => self.ended = true,
                Err(_) => panic!("stream produced nothing for {WAIT:?}"),
            }
        }
    }

    async fn event(&mut self) -> decnet_sse::Event {
        loop {
            match self.next().await {
                Some(Decoded::Event(event)) => return event,
                Some(_) => continue,
                None => panic!("stream ended while an event was expected"),
            }
        }
    }

    /// The next event that is not a keepalive/retry, as (name, data JSON, id).
    async fn frame(&mut self) -> (String, Value, String) {
        let event = self.event().await;
        let data = serde_json::from_str(&event.data).expect("data is JSON");
        (event.event, data, event.id)
    }

    async fn open_preamble(&mut self) {
        assert_eq!(
            self.next().await,
            Some(Decoded::Comment("keepalive".into()))
        );
        assert_eq!(self.next().await, Some(Decoded::Retry(3000)));
    }

    /// Assert nothing but keepalives arrives for `wait`.
    async fn assert_quiet(&mut self, wait: Duration) {
        if let Some(item) = self.items.pop_front() {
            panic!("unexpected {item:?}");
        }
        if let Ok(Some(chunk)) = tokio::time::timeout(wait, self.stream.next()).await {
            for item in self.decoder.feed(&chunk) {
                assert_eq!(
                    item,
                    Decoded::Comment("keepalive".into()),
                    "unexpected frame"
                );
            }
        }
    }
}

fn kind(hub: &StreamHub, name: &str) -> KindId {
    hub.kind_id(name).expect("the hub serves this kind")
}

/// Look `key` up (it must exist) and open a stream of `kind` on it.
/// A stream of kind `name` on `key`, not read yet.
async fn open_stream(hub: &StreamHub, name: &str, key: &str, options: OpenOptions) -> EventStream {
    let id = kind(hub, name);
    let info = hub
        .lookup(id, key)
        .await
        .expect("repo")
        .expect("key exists");
    hub.open(id, key, info, options).await.expect("open")
}

async fn open_kind(hub: &StreamHub, name: &str, key: &str, options: OpenOptions) -> Reader {
    Reader::new(open_stream(hub, name, key, options).await)
}

async fn open(fx: &Fixture, uuid: &str, options: OpenOptions) -> Reader {
    open_kind(&fx.hub, "attacker", uuid, options).await
}

async fn state_changed(bus: &Bus, payload: Value) -> String {
    publish(bus, "attribution.profile.state_changed", payload).await
}

async fn publish(bus: &Bus, topic: &str, payload: Value) -> String {
    let Value::Object(payload) = payload else {
        panic!("payload must be an object")
    };
    let event = decnet_bus::Event::new(topic, "test", payload);
    bus.publish_event(&event).await.expect("publish");
    event.id
}

#[tokio::test]
async fn snapshot_then_live_frames_for_this_attacker_only() {
    let fx = fixture(HubConfig::default()).await;
    fx.repo
        .upsert_attacker(&attacker("a1", None))
        .await
        .unwrap();
    fx.repo
        .upsert_attacker(&attacker("a2", None))
        .await
        .unwrap();
    for obs in [
        observation("a1", "1", "motor.z", 10.0, json!(1)),
        observation("a1", "2", "motor.a", 10.0, json!({"x": [1, 2]})),
        observation("a1", "3", "motor.a", 12.0, json!("newer")),
        observation("a2", "4", "motor.b", 99.0, json!(true)),
    ] {
        fx.repo.upsert_observation(&obs).await.unwrap();
    }
    let mut reader = open(&fx, "a1", OpenOptions::default()).await;
    reader.open_preamble().await;
    let (name, data, id) = reader.frame().await;
    assert_eq!(name, "snapshot");
    assert_eq!(id, "", "the snapshot carries no id");
    assert_eq!(
        data,
        json!({"attacker_uuid": "a1", "observations": [
            {"primitive": "motor.a", "value": "newer", "confidence": 0.9, "ts": 12.0, "source": "behave"},
            {"primitive": "motor.z", "value": 1, "confidence": 0.9, "ts": 10.0, "source": "behave"},
        ]})
    );

    publish(
        &fx.bus,
        "attacker.observation.motor.a",
        json!({"attacker_uuid": "a2"}),
    )
    .await;
    let id = publish(
        &fx.bus,
        "attacker.observation.motor.shell_mastery.tab_completion",
        json!({"attacker_uuid": "a1", "v": 1}),
    )
    .await;
    let (name, data, got_id) = reader.frame().await;
    assert_eq!(name, "observation");
    assert_eq!(got_id, id);
    assert_eq!(
        data["topic"],
        "attacker.observation.motor.shell_mastery.tab_completion"
    );
    assert_eq!(data["type"], "test");
    assert_eq!(data["payload"], json!({"attacker_uuid": "a1", "v": 1}));
    assert!(data["ts"].is_f64());
    assert!(data.get("v").is_none() && data.get("id").is_none());

    publish(
        &fx.bus,
        "attacker.fingerprint_rotated",
        json!({"attacker_uuid": "a1"}),
    )
    .await;
    assert_eq!(reader.frame().await.0, "fingerprint.rotated");
    publish(
        &fx.bus,
        "attacker.scored",
        json!({"attacker_uuid": "a1", "score": 3}),
    )
    .await;
    assert_eq!(reader.frame().await.0, "attacker.scored");
    // Other attacker topics, and a payload without attacker_uuid, are not forwarded.
    publish(
        &fx.bus,
        "attacker.something_new",
        json!({"attacker_uuid": "a1"}),
    )
    .await;
    publish(&fx.bus, "attacker.scored", json!({"other": "a1"})).await;
    reader.assert_quiet(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn attribution_follows_the_identity_and_rekeys_live() {
    let fx = fixture(HubConfig::default()).await;
    fx.repo
        .upsert_attacker(&attacker("a1", Some("id-1")))
        .await
        .unwrap();
    fx.repo
        .upsert_attacker(&attacker("a2", None))
        .await
        .unwrap();
    let mut r1 = open(&fx, "a1", OpenOptions::default()).await;
    let mut r2 = open(&fx, "a2", OpenOptions::default()).await;
    for r in [&mut r1, &mut r2] {
        r.open_preamble().await;
        assert_eq!(r.frame().await.0, "snapshot");
    }

    state_changed(&fx.bus, json!({"identity_uuid": "id-1", "state": "x"})).await;
    assert_eq!(r1.frame().await.0, "attribution.state_changed");
    publish(
        &fx.bus,
        "attribution.profile.multi_actor_suspected",
        json!({"identity_uuid": "id-1"}),
    )
    .await;
    assert_eq!(r1.frame().await.0, "attribution.multi_actor_suspected");
    state_changed(&fx.bus, json!({"identity_uuid": "id-other"})).await;
    r1.assert_quiet(Duration::from_millis(100)).await;
    r2.assert_quiet(Duration::from_millis(10)).await;

    // a2 joins id-2 through identity.formed; identity events are not forwarded.
    publish(
        &fx.bus,
        "identity.formed",
        json!({"identity_uuid": "id-2", "observation_uuids": ["a2", "nobody"]}),
    )
    .await;
    wait_until(|| fx.hub.stats().rekeys >= 1).await;
    state_changed(&fx.bus, json!({"identity_uuid": "id-2"})).await;
    let (name, data, _) = r2.frame().await;
    assert_eq!(
        (name.as_str(), &data["payload"]["identity_uuid"]),
        ("attribution.state_changed", &json!("id-2"))
    );

    // a1 is re-linked to id-3: id-1's events stop, id-3's arrive.
    publish(
        &fx.bus,
        "identity.observation.linked",
        json!({"identity_uuid": "id-3", "observation_uuid": "a1"}),
    )
    .await;
    wait_until(|| fx.hub.stats().rekeys >= 2).await;
    state_changed(&fx.bus, json!({"identity_uuid": "id-1"})).await;
    state_changed(&fx.bus, json!({"identity_uuid": "id-3", "n": 3})).await;
    assert_eq!(r1.frame().await.1["payload"]["n"], 3);

    // id-3 merges into id-2 (winner): both streams follow id-2, id-3's stop.
    publish(
        &fx.bus,
        "identity.merged",
        json!({"winner_uuid": "id-2", "loser_uuid": "id-3"}),
    )
    .await;
    wait_until(|| fx.hub.stats().rekeys >= 3).await;
    state_changed(&fx.bus, json!({"identity_uuid": "id-3"})).await;
    state_changed(&fx.bus, json!({"identity_uuid": "id-2", "n": 4})).await;
    assert_eq!(r1.frame().await.1["payload"]["n"], 4);
    assert_eq!(r2.frame().await.1["payload"]["n"], 4);
    r1.assert_quiet(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn resume_replays_missed_frames_without_snapshot() {
    let fx = fixture(HubConfig::default()).await;
    fx.repo
        .upsert_attacker(&attacker("a1", Some("id-1")))
        .await
        .unwrap();
    let mut reader = open(&fx, "a1", OpenOptions::default()).await;
    reader.open_preamble().await;
    assert_eq!(reader.frame().await.0, "snapshot");
    let first = publish(
        &fx.bus,
        "attacker.scored",
        json!({"attacker_uuid": "a1", "n": 1}),
    )
    .await;
    assert_eq!(reader.frame().await.2, first);
    drop(reader);
    // While the tab is away: an observation and an attribution frame routed to it.
    let second = publish(
        &fx.bus,
        "attacker.scored",
        json!({"attacker_uuid": "a1", "n": 2}),
    )
    .await;
    let third = state_changed(&fx.bus, json!({"identity_uuid": "id-1"})).await;
    wait_until(|| fx.hub.stats().frames_encoded >= 3).await;

    let mut resumed = open(
        &fx,
        "a1",
        OpenOptions {
            last_event_id: Some(first.clone()),
            ..Default::default()
        },
    )
    .await;
    resumed.open_preamble().await;
    assert_eq!(resumed.frame().await.2, second);
    let (name, _, id) = resumed.frame().await;
    assert_eq!((name.as_str(), id), ("attribution.state_changed", third));
    resumed.assert_quiet(Duration::from_millis(100)).await;

    // An id no longer (or never) in the ring gets the snapshot, like a new client.
    let mut unknown = open(
        &fx,
        "a1",
        OpenOptions {
            last_event_id: Some("nope".into()),
            ..Default::default()
        },
    )
    .await;
    unknown.open_preamble().await;
    assert_eq!(unknown.frame().await.0, "snapshot");
}

#[tokio::test]
async fn ring_expires_after_grace() {
    let fx = fixture(HubConfig {
        replay_grace: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    fx.repo
        .upsert_attacker(&attacker("a1", None))
        .await
        .unwrap();
    let mut reader = open(&fx, "a1", OpenOptions::default()).await;
    reader.open_preamble().await;
    reader.frame().await;
    let first = publish(&fx.bus, "attacker.scored", json!({"attacker_uuid": "a1"})).await;
    reader.frame().await;
    drop(reader);
    wait_until(|| fx.hub.tracked_keys() == 0).await;
    let mut late = open(
        &fx,
        "a1",
        OpenOptions {
            last_event_id: Some(first),
            ..Default::default()
        },
    )
    .await;
    late.open_preamble().await;
    assert_eq!(late.frame().await.0, "snapshot");
}

#[tokio::test]
async fn lagging_stream_gets_resync_and_fresh_snapshot() {
    let fx = fixture(HubConfig {
        queue_max: 4,
        ..Default::default()
    })
    .await;
    fx.repo
        .upsert_attacker(&attacker("a1", None))
        .await
        .unwrap();
    fx.repo
        .upsert_observation(&observation("a1", "1", "p", 1.0, json!(1)))
        .await
        .unwrap();
    let mut reader = open(&fx, "a1", OpenOptions::default()).await;
    reader.open_preamble().await;
    assert_eq!(reader.frame().await.0, "snapshot");
    // Not reading: 10 events overflow a queue of 4.
    for n in 0..10 {
        publish(
            &fx.bus,
            "attacker.scored",
            json!({"attacker_uuid": "a1", "n": n}),
        )
        .await;
    }
    wait_until(|| fx.hub.stats().frames_enqueued >= 10).await;
    let (name, data, id) = reader.frame().await;
    assert_eq!(name, "resync");
    assert_eq!(id, "");
    assert_eq!(data["reason"], "lagged");
    let dropped = data["dropped"].as_u64().expect("dropped count");
    assert!(dropped >= 5, "dropped {dropped}");
    assert_eq!(reader.frame().await.0, "snapshot");
    // Whatever survived after the overflow follows, in order, and nothing is lost silently.
    let mut rest = Vec::new();
    for _ in 0..(10 - dropped) {
        rest.push(reader.frame().await.1["payload"]["n"].as_u64().unwrap());
    }
    assert_eq!(rest, ((dropped)..10).collect::<Vec<_>>());
    assert_eq!(fx.hub.stats().resyncs, 1);
    assert_eq!(fx.hub.stats().frames_dropped, dropped);
}

#[tokio::test]
async fn keepalive_after_idle_interval() {
    let fx = fixture(HubConfig {
        keepalive: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    fx.repo
        .upsert_attacker(&attacker("a1", None))
        .await
        .unwrap();
    let mut reader = open(&fx, "a1", OpenOptions::default()).await;
    reader.open_preamble().await;
    reader.frame().await;
    assert_eq!(
        reader.next().await,
        Some(Decoded::Comment("keepalive".into()))
    );
    assert_eq!(
        reader.next().await,
        Some(Decoded::Comment("keepalive".into()))
    );
}

struct TestSession {
    expires_at: Option<SystemTime>,
    revoked: Arc<AtomicBool>,
}

impl SessionCheck for TestSession {
    fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }
    fn revalidate(&self) -> BoxFuture<'static, SessionVerdict> {
        let revoked = self.revoked.load(Ordering::SeqCst);
        Box::pin(async move {
            if revoked {
                SessionVerdict::Ended
            } else {
                SessionVerdict::Valid
            }
        })
    }
}

#[tokio::test]
async fn session_expiry_ends_the_stream() {
    let fx = fixture(HubConfig::default()).await;
    fx.repo
        .upsert_attacker(&attacker("a1", None))
        .await
        .unwrap();
    let session = TestSession {
        expires_at: Some(SystemTime::now() + Duration::from_millis(200)),
        revoked: Arc::default(),
    };
    let mut reader = open(
        &fx,
        "a1",
        OpenOptions {
            session: Some(Arc::new(session)),
            ..Default::default()
        },
    )
    .await;
    reader.open_preamble().await;
    reader.frame().await;
    let (name, data, _) = reader.frame().await;
    assert_eq!(
        (name.as_str(), data),
        ("error", json!({"message": "Session expired"}))
    );
    assert_eq!(reader.next().await, None);
}

#[tokio::test]
async fn session_revocation_ends_the_stream() {
    let fx = fixture(HubConfig {
        revalidate_every: Duration::from_millis(50),
        ..Default::default()
    })
    .await;
    fx.repo
        .upsert_attacker(&attacker("a1", None))
        .await
        .unwrap();
    let revoked = Arc::new(AtomicBool::new(false));
    let session = TestSession {
        expires_at: None,
        revoked: revoked.clone(),
    };
    let mut reader = open(
        &fx,
        "a1",
        OpenOptions {
            session: Some(Arc::new(session)),
            ..Default::default()
        },
    )
    .await;
    reader.open_preamble().await;
    reader.frame().await;
    reader.assert_quiet(Duration::from_millis(150)).await;
    revoked.store(true, Ordering::SeqCst);
    let (name, data, _) = reader.frame().await;
    assert_eq!(
        (name.as_str(), data),
        ("error", json!({"message": "Session expired"}))
    );
    assert_eq!(reader.next().await, None);
    assert_eq!(fx.hub.stats().sessions_expired, 1);
}

/// A revoked session is counted when its watch ends it, even if the
/// stream's body is never polled again (a client that stopped reading).
#[tokio::test]
async fn an_expired_session_is_counted_without_its_body() {
    let fx = fixture(HubConfig {
        revalidate_every: Duration::from_millis(50),
        ..Default::default()
    })
    .await;
    fx.repo
        .upsert_attacker(&attacker("a1", None))
        .await
        .unwrap();
    let session = TestSession {
        expires_at: None,
        revoked: Arc::new(AtomicBool::new(true)),
    };
    let options = OpenOptions {
        session: Some(Arc::new(session)),
        ..Default::default()
    };
    let mut stream = open_stream(&fx.hub, "attacker", "a1", options).await;
    let watch = stream.take_session_watch().expect("a watch");
    let why = tokio::time::timeout(Duration::from_secs(5), watch.ended())
        .await
        .expect("the watch ends the session");
    assert_eq!(why, SessionEnd::Expired);
    assert_eq!(fx.hub.stats().sessions_expired, 1);
    // The body, polled now, ends with the error frame and counts nothing more.
    let mut reader = Reader::new(stream);
    reader.open_preamble().await;
    reader.frame().await;
    let (name, _, _) = reader.frame().await;
    assert_eq!(name, "error");
    assert_eq!(reader.next().await, None);
    assert_eq!(fx.hub.stats().sessions_expired, 1);
}

/// A session that can never be re-checked (the repository is down).
struct Unverifiable;

impl SessionCheck for Unverifiable {
    fn expires_at(&self) -> Option<SystemTime> {
        None
    }
    fn revalidate(&self) -> BoxFuture<'static, SessionVerdict> {
        Box::pin(async { SessionVerdict::Unknown })
    }
}

/// Revalidation fails open, but not forever: after `session_unknown_max`
/// without one successful check the stream ends (issue #10, finding 2).
#[tokio::test(start_paused = true)]
async fn a_session_that_cannot_be_checked_ends_after_the_cap() {
    let fx = fixture(HubConfig {
        keepalive: Duration::from_secs(1),
        revalidate_every: Duration::from_secs(10),
        session_unknown_max: Duration::from_secs(300),
        ..Default::default()
    })
    .await;
    fx.repo
        .upsert_attacker(&attacker("a1", None))
        .await
        .unwrap();
    let mut reader = open(
        &fx,
        "a1",
        OpenOptions {
            session: Some(Arc::new(Unverifiable)),
            ..Default::default()
        },
    )
    .await;
    reader.open_preamble().await;
    reader.frame().await;
    let start = tokio::time::Instant::now();
    let (name, data) = loop {
        let (name, data, _) = reader.frame().await;
        if name == "error" {
            break (name, data);
        }
    };
    assert_eq!(
        (name.as_str(), data),
        ("error", json!({"message": "Stream interrupted"}))
    );
    let after = start.elapsed();
    assert!(
        after >= Duration::from_secs(290) && after <= Duration::from_secs(320),
        "{after:?}"
    );
    assert_eq!(reader.next().await, None);
}

#[tokio::test]
async fn repository_failure_mid_stream_sends_error_and_ends() {
    let fx = fixture(HubConfig {
        queue_max: 1,
        ..Default::default()
    })
    .await;
    fx.repo
        .upsert_attacker(&attacker("a1", None))
        .await
        .unwrap();
    let mut reader = open(&fx, "a1", OpenOptions::default()).await;
    reader.open_preamble().await;
    reader.frame().await;
    fx.repo.set_available(false);
    for _ in 0..3 {
        publish(&fx.bus, "attacker.scored", json!({"attacker_uuid": "a1"})).await;
    }
    wait_until(|| fx.hub.stats().frames_dropped >= 1).await;
    assert_eq!(reader.frame().await.0, "resync");
    let (name, data, _) = reader.frame().await;
    assert_eq!(
        (name.as_str(), data),
        ("error", json!({"message": "Stream interrupted"}))
    );
    assert_eq!(reader.next().await, None);
}

#[tokio::test]
async fn open_fails_when_repository_is_down() {
    let fx = fixture(HubConfig::default()).await;
    fx.repo
        .upsert_attacker(&attacker("a1", None))
        .await
        .unwrap();
    let id = kind(&fx.hub, "attacker");
    let info = fx.hub.lookup(id, "a1").await.unwrap().unwrap();
    fx.repo.set_available(false);
    let err = fx
        .hub
        .open(id, "a1", info, OpenOptions::default())
        .await
        .expect_err("must fail");
    assert!(
        matches!(err, decnet_stream::OpenError::Repository(ref e) if e.is_unavailable()),
        "{err:?}"
    );
    assert_eq!(fx.hub.stats().streams_active, 0);
    assert!(matches!(
        fx.hub.lookup(id, "a1").await,
        Err(decnet_stream::OpenError::Repository(_))
    ));
}

struct CountingGuard(Arc<AtomicUsize>);
impl Drop for CountingGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn dropping_a_stream_releases_everything() {
    let fx = fixture(HubConfig {
        replay_grace: Duration::ZERO,
        ..Default::default()
    })
    .await;
    fx.repo
        .upsert_attacker(&attacker("a1", None))
        .await
        .unwrap();
    let released = Arc::new(AtomicUsize::new(0));
    let reader = open(
        &fx,
        "a1",
        OpenOptions {
            guard: Some(Box::new(CountingGuard(released.clone()))),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(fx.hub.stats().streams_active, 1);
    assert_eq!(fx.hub.stats().kinds[0].streams_active, 1);
    assert_eq!(fx.hub.tracked_keys(), 1);
    drop(reader);
    assert_eq!(released.load(Ordering::SeqCst), 1);
    assert_eq!(fx.hub.stats().streams_active, 0);
    assert_eq!(fx.hub.stats().kinds[0].streams_active, 0);
    assert_eq!(fx.hub.tracked_keys(), 0);
}

#[tokio::test]
async fn shutdown_ends_streams_cleanly() {
    let fx = fixture(HubConfig::default()).await;
    fx.repo
        .upsert_attacker(&attacker("a1", None))
        .await
        .unwrap();
    let mut reader = open(&fx, "a1", OpenOptions::default()).await;
    reader.open_preamble().await;
    reader.frame().await;
    fx.hub.shutdown();
    assert_eq!(reader.next().await, None, "no error frame on shutdown");
    let id = kind(&fx.hub, "attacker");
    assert!(matches!(
        fx.hub
            .open(id, "a1", Default::default(), OpenOptions::default())
            .await,
        Err(decnet_stream::OpenError::ShuttingDown)
    ));
}

#[tokio::test]
async fn null_bus_streams_get_snapshot_and_keepalives() {
    let repo = MemoryRepository::new();
    repo.upsert_attacker(&attacker("a1", None)).await.unwrap();
    let hub = hub_over(
        &Bus::null(),
        &repo,
        HubConfig {
            keepalive: Duration::from_millis(50),
            ..Default::default()
        },
    );
    assert!(!hub.is_subscribed());
    for (name, key) in [("attacker", "a1"), ("identities", KIND_WIDE_KEY)] {
        let mut reader = open_kind(&hub, name, key, OpenOptions::default()).await;
        reader.open_preamble().await;
        assert_eq!(reader.frame().await.0, "snapshot");
        assert_eq!(
            reader.next().await,
            Some(Decoded::Comment("keepalive".into()))
        );
    }
}

#[tokio::test]
async fn one_event_touches_only_matching_streams_among_10000() {
    let fx = fixture(HubConfig::default()).await;
    let id = kind(&fx.hub, "attacker");
    let mut streams = Vec::new();
    for n in 0..10_000 {
        let uuid = format!("other-{n}");
        let info = decnet_stream::KeyInfo {
            identity: Some(format!("identity-{n}")),
        };
        streams.push(
            fx.hub
                .open(id, &uuid, info, OpenOptions::default())
                .await
                .unwrap(),
        );
    }
    fx.repo
        .upsert_attacker(&attacker("target", Some("id-t")))
        .await
        .unwrap();
    let mut reader = open(&fx, "target", OpenOptions::default()).await;
    reader.open_preamble().await;
    reader.frame().await;
    let before = fx.hub.stats().frames_enqueued;
    publish(
        &fx.bus,
        "attacker.scored",
        json!({"attacker_uuid": "target"}),
    )
    .await;
    state_changed(&fx.bus, json!({"identity_uuid": "id-t"})).await;
    assert_eq!(reader.frame().await.0, "attacker.scored");
    assert_eq!(reader.frame().await.0, "attribution.state_changed");
    // Two events, one receiving stream each: exactly two queue pushes, not 20,002.
    let stats = fx.hub.stats();
    assert_eq!(stats.frames_enqueued - before, 2);
    assert_eq!(stats.frames_encoded, 2);
    // An event for nobody costs a lookup and no push.
    publish(
        &fx.bus,
        "attacker.scored",
        json!({"attacker_uuid": "unwatched"}),
    )
    .await;
    wait_until(|| fx.hub.stats().events_unrouted >= 1).await;
    assert_eq!(fx.hub.stats().frames_enqueued - before, 2);
    assert_eq!(fx.hub.stats().streams_active, 10_001);
    drop(streams);
    assert_eq!(fx.hub.stats().streams_active, 1);
}

fn time(text: &str) -> decnet_repo::DbTime {
    decnet_repo::DbTime::parse(text).expect("datetime")
}

fn identity_row(uuid: &str, updated: &str) -> decnet_repo::IdentityRow {
    decnet_repo::IdentityRow {
        uuid: uuid.into(),
        schema_version: 1,
        campaign_id: None,
        first_seen_at: Some(time("2026-06-20 11:00:00.000000")),
        last_seen_at: None,
        created_at: time("2026-06-20 10:00:00.000000"),
        updated_at: time(updated),
        confidence: Some(0.5),
        observation_count: 3,
        ja3_hashes: Some("[\"a\"]".into()),
        hassh_hashes: None,
        ja4h_hashes: None,
        ja4_quic_hashes: None,
        http_versions_seen: None,
        tls_cert_sha256: None,
        ipv6_link_local_iids: None,
        payload_simhashes: None,
        c2_endpoints: None,
        kd_digraph_simhash: Some(decnet_repo::HexBytes(vec![0xff, 0x00, 0x10])),
        merged_into_uuid: None,
        notes: None,
    }
}

#[tokio::test]
async fn identity_stream_is_a_firehose_named_without_its_root() {
    let fx = fixture(HubConfig::default()).await;
    fx.repo
        .upsert_identity(&identity_row("i-old", "2026-06-20 12:00:00.000000"))
        .await
        .unwrap();
    fx.repo
        .upsert_identity(&identity_row("i-new", "2026-06-20 12:00:01.500000"))
        .await
        .unwrap();
    let mut merged = identity_row("i-merged", "2026-06-20 13:00:00.000000");
    merged.merged_into_uuid = Some("i-new".into());
    fx.repo.upsert_identity(&merged).await.unwrap();
    let mut a = open_kind(&fx.hub, "identities", KIND_WIDE_KEY, OpenOptions::default()).await;
    let mut b = open_kind(&fx.hub, "identities", KIND_WIDE_KEY, OpenOptions::default()).await;
    a.open_preamble().await;
    let (name, data, id) = a.frame().await;
    assert_eq!((name.as_str(), id.as_str()), ("snapshot", ""));
    let rows = data["identities"].as_array().expect("identities");
    let uuids: Vec<&str> = rows.iter().map(|r| r["uuid"].as_str().unwrap()).collect();
    assert_eq!(
        uuids,
        ["i-new", "i-old"],
        "newest updated_at first, unmerged only"
    );
    assert_eq!(rows[0]["updated_at"], "2026-06-20T12:00:01.500000");
    assert_eq!(rows[1]["updated_at"], "2026-06-20T12:00:00");
    assert_eq!(rows[0]["kd_digraph_simhash"], "ff0010");
    assert_eq!(rows[0]["ja3_hashes"], "[\"a\"]");
    let keys: Vec<&String> = rows[0].as_object().unwrap().keys().collect();
    assert_eq!(keys.first().map(|k| k.as_str()), Some("uuid"));
    assert_eq!(keys.last().map(|k| k.as_str()), Some("notes"));
    b.open_preamble().await;
    b.frame().await;
    for (topic, name) in [
        ("identity.formed", "formed"),
        ("identity.observation.linked", "observation.linked"),
        ("identity.merged", "merged"),
        ("identity.unmerged", "unmerged"),
        ("identity.campaign.assigned", "campaign.assigned"),
    ] {
        let event_id = publish(&fx.bus, topic, json!({"anything": 1})).await;
        for reader in [&mut a, &mut b] {
            let (got, data, id) = reader.frame().await;
            assert_eq!((got.as_str(), id.as_str()), (name, event_id.as_str()));
            assert_eq!(data["topic"], topic);
        }
    }
    // One encode per event, shared by both streams.
    let stats = fx.hub.stats();
    assert_eq!(stats.frames_encoded, 5);
    assert_eq!(stats.kinds[1].kind, "identities");
    assert!(stats.kinds[1].frames_by_event.contains(&("formed", 2)));
}

#[tokio::test]
async fn campaign_and_orchestrator_streams() {
    let fx = fixture(HubConfig::default()).await;
    fx.repo
        .insert_orchestrator_event(&decnet_repo::OrchestratorEventRow {
            uuid: "e1".into(),
            ts: time("2026-06-20 12:00:00.000000"),
            kind: "traffic".into(),
            protocol: "tcp".into(),
            action: "probe".into(),
            src_decky_uuid: None,
            dst_decky_uuid: "d1".into(),
            success: true,
            payload: "{\"bytes\": 10}".into(),
        })
        .await
        .unwrap();
    let mut campaigns =
        open_kind(&fx.hub, "campaigns", KIND_WIDE_KEY, OpenOptions::default()).await;
    let mut orchestrator = open_kind(
        &fx.hub,
        "orchestrator",
        KIND_WIDE_KEY,
        OpenOptions::default(),
    )
    .await;
    campaigns.open_preamble().await;
    assert_eq!(campaigns.frame().await.1, json!({"campaigns": []}));
    orchestrator.open_preamble().await;
    let (_, data, _) = orchestrator.frame().await;
    assert_eq!(
        data["events"][0]["payload"], "{\"bytes\": 10}",
        "the stored JSON string"
    );
    assert_eq!(data["events"][0]["success"], true);
    publish(
        &fx.bus,
        "campaign.identity.assigned",
        json!({"campaign_uuid": "c"}),
    )
    .await;
    assert_eq!(campaigns.frame().await.0, "identity.assigned");
    publish(&fx.bus, "orchestrator.file.web01", json!({"path": "/x"})).await;
    let (name, data, _) = orchestrator.frame().await;
    assert_eq!(
        (name.as_str(), &data["payload"]["path"]),
        ("file", &json!("/x"))
    );
    campaigns.assert_quiet(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn topology_stream_gets_its_own_deckies_and_no_other_topology() {
    let fx = fixture(HubConfig::default()).await;
    for id in ["T1", "T2"] {
        fx.repo
            .upsert_topology(id, &format!("net-{id}"), "active")
            .await
            .unwrap();
    }
    for (id, state, at) in [
        ("m1", "pending", "2026-06-20 12:00:00.000000"),
        ("m2", "pending", "2026-06-20 12:00:05.000000"),
        ("m3", "applying", "2026-06-20 12:00:09.000000"),
        ("m4", "applied", "2026-06-20 12:00:10.000000"),
    ] {
        fx.repo
            .upsert_mutation(&decnet_repo::MutationRow {
                id: id.into(),
                topology_id: "T1".into(),
                op: "add_decky".into(),
                payload: "{\"name\":\"web01\"}".into(),
                state: state.into(),
                requested_at: time(at),
                applied_at: None,
                reason: None,
            })
            .await
            .unwrap();
    }
    let id = kind(&fx.hub, "topology");
    assert_eq!(fx.hub.lookup(id, "nope").await.unwrap(), None, "404");
    let mut t1 = open_kind(&fx.hub, "topology", "T1", OpenOptions::default()).await;
    let mut t2 = open_kind(&fx.hub, "topology", "T2", OpenOptions::default()).await;
    t1.open_preamble().await;
    let (_, snapshot, _) = t1.frame().await;
    assert_eq!(snapshot["topology_id"], "T1");
    assert_eq!(snapshot["status"], "active");
    let order: Vec<&str> = snapshot["in_flight"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["m2", "m1", "m3"],
        "pending newest first, then applying"
    );
    t2.open_preamble().await;
    t2.frame().await;

    publish(
        &fx.bus,
        "topology.T1.mutation.applied",
        json!({"mutation_id": "m2"}),
    )
    .await;
    publish(&fx.bus, "topology.T2.status", json!({"state": "degraded"})).await;
    publish(
        &fx.bus,
        "decky.web01.service_added",
        json!({"topology_id": "T1", "service_name": "ssh"}),
    )
    .await;
    publish(
        &fx.bus,
        "decky.fleet01.service_added",
        json!({"service_name": "ftp"}),
    )
    .await;
    publish(&fx.bus, "decky.web09.state", json!({"topology_id": "T2"})).await;
    assert_eq!(t1.frame().await.0, "mutation.applied");
    assert_eq!(t1.frame().await.0, "decky.service_added");
    t1.assert_quiet(Duration::from_millis(100)).await;
    assert_eq!(t2.frame().await.0, "status");
    assert_eq!(t2.frame().await.0, "decky.state");
    t2.assert_quiet(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn unmerged_reads_the_resurrected_identity_from_the_repository() {
    let fx = fixture(HubConfig::default()).await;
    fx.repo
        .upsert_attacker(&attacker("a1", Some("winner")))
        .await
        .unwrap();
    let mut reader = open(&fx, "a1", OpenOptions::default()).await;
    reader.open_preamble().await;
    reader.frame().await;
    // The clusterer splits: a1 belongs to the resurrected identity again.
    fx.repo
        .set_attacker_identity("a1", Some("back"))
        .await
        .unwrap();
    publish(
        &fx.bus,
        "identity.unmerged",
        json!({"resurrected_uuid": "back", "former_winner_uuid": "winner"}),
    )
    .await;
    wait_until(|| fx.hub.stats().rekeys >= 1).await;
    state_changed(&fx.bus, json!({"identity_uuid": "winner"})).await;
    state_changed(&fx.bus, json!({"identity_uuid": "back", "n": 1})).await;
    assert_eq!(reader.frame().await.1["payload"]["n"], 1);
}

#[tokio::test]
async fn the_hub_subscribes_once_to_the_union_of_every_kind() {
    let memory = Arc::new(decnet_bus::MemoryBus::default());
    let bus = Bus::from_backend(memory.clone());
    let repo = MemoryRepository::new();
    let hub = hub_over(&bus, &repo, HubConfig::default());
    tokio::time::timeout(WAIT, hub.wait_subscribed())
        .await
        .expect("subscribed");
    assert_eq!(memory.subscriber_count(), 9);
    // Opening streams of every kind adds no subscription.
    repo.upsert_attacker(&attacker("a1", None)).await.unwrap();
    let _streams = [
        open_kind(&hub, "attacker", "a1", OpenOptions::default()).await,
        open_kind(&hub, "identities", KIND_WIDE_KEY, OpenOptions::default()).await,
        open_kind(&hub, "campaigns", KIND_WIDE_KEY, OpenOptions::default()).await,
    ];
    assert_eq!(memory.subscriber_count(), 9);
    drop(hub);
    // The last handle gone, the hub's tasks stop and unsubscribe.
    wait_until(|| memory.subscriber_count() == 0).await;
}

#[tokio::test]
async fn metric_labels_are_the_known_names_or_other() {
    let fx = fixture(HubConfig::default()).await;
    let mut reader = open_kind(&fx.hub, "identities", KIND_WIDE_KEY, OpenOptions::default()).await;
    reader.open_preamble().await;
    reader.frame().await;
    publish(&fx.bus, "identity.weird\"label", json!({})).await;
    publish(&fx.bus, "identity.formed", json!({})).await;
    reader.frame().await;
    reader.frame().await;
    let kinds = fx.hub.stats().kinds;
    let identities = &kinds[1].frames_by_event;
    assert!(identities.contains(&("formed", 1)));
    assert!(identities.contains(&(decnet_stream::OTHER_EVENT, 1)));
    assert!(identities.iter().all(|(name, _)| !name.contains('"')));
}

#[cfg(feature = "ablation")]
#[tokio::test]
async fn per_connection_mode_delivers_the_same_frames_but_filters_per_stream() {
    let bus = Bus::memory();
    let repo = MemoryRepository::new();
    let config = HubConfig {
        mode: decnet_stream::SubscriptionMode::PerConnection,
        ..Default::default()
    };
    let hub = hub_over(&bus, &repo, config);
    repo.upsert_attacker(&attacker("a1", Some("id-1")))
        .await
        .unwrap();
    repo.upsert_attacker(&attacker("a2", None)).await.unwrap();
    let fx = Fixture { bus, repo, hub };
    let mut r1 = open(&fx, "a1", OpenOptions::default()).await;
    let _r2 = open(&fx, "a2", OpenOptions::default()).await;
    r1.open_preamble().await;
    assert_eq!(r1.frame().await.0, "snapshot");
    // Each stream subscribes on its own: retry until its subscription is live.
    let id = loop {
        let id = publish(&fx.bus, "attacker.scored", json!({"attacker_uuid": "a1"})).await;
        if let Ok(Some(Decoded::Event(event))) =
            tokio::time::timeout(Duration::from_millis(200), r1.next()).await
        {
            break (event.id, id);
        }
    };
    assert_eq!(id.0, id.1);
    state_changed(&fx.bus, json!({"identity_uuid": "id-1"})).await;
    assert_eq!(r1.frame().await.0, "attribution.state_changed");
    // Every stream sees every event: work grows with the number of streams.
    let stats = fx.hub.stats();
    assert!(
        stats.events_received >= 2 * stats.frames_encoded,
        "received {}, encoded {}",
        stats.events_received,
        stats.frames_encoded
    );
}
