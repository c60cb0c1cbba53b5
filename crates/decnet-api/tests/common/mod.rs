//! The harness of the in-process end-to-end suite.
//!
//! What it is: a [`World`] per test (its own repository: a fresh PostgreSQL
//! schema, a SQLite file or a MySQL database with DECNET's schema
//! (`decnet_repo::testing`), or a memory repository; a publisher on its
//! bus: the shared NATS or Redis, a DECNET broker stand-in of its own
//! (`TestBroker`, in a temp directory), or a memory bus of its own; a JWT
//! secret; a Redis key prefix; a clock that follows Tokio's), and [`TestServer`]s built in it the way
//! `bins/decnet-events` builds its application (repository, bus, ticket
//! store, verifier, `StreamHub::start(bus, decnet_kinds(&repo), hub)`,
//! `App::new`, `decnet_api::serve` on a listener bound to 127.0.0.1:0),
//! from explicit configs (the settings table's defaults, adjusted per test;
//! never the environment). [`TestServer::stop`] resolves the shutdown
//! future and waits for `serve()` to return.
//!
//! Isolation: users, attackers and identities are random uuids, so events
//! that parallel tests publish on a shared bus never reach each other's
//! streams; Redis tickets live under a prefix of the test's own.
//!
//! DECNET's broker stamps every event itself (a fresh `id` and `ts`), so on
//! the `unix` pairs a frame is matched to the event a test published by its
//! topic, type and payload, and the broker's id is remembered
//! ([`is_frame_of`], [`wire_id`]): cases compare and resume with the id the
//! stream carries.
//!
//! Time: [`World::advance`] moves Tokio's clock (paused for the jump only,
//! so no real I/O ever waits on a paused clock) and the verifier's clock
//! with it, so a token or a ticket can expire without a real wait. Every
//! other wait is a condition with a deadline.

#![allow(dead_code, reason = "not every helper is used by every case")]

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use decnet_api::settings::Settings;
use decnet_api::{App, AppParts};
use decnet_auth::{
    Claims, ConnectionLimiter, MemoryTicketStore, RedisTicketConfig, RedisTicketStore, TicketStore,
    TokenVerifier, VerifierConfig,
};
use decnet_bus::{Bus, BusConfig, BusKind, Event};
use decnet_repo::testing::{MysqlTestDb, SqliteTestDb};
use decnet_repo::{
    Attacker, DbTime, MemoryRepository, Observation, PgConfig, PgRepository, Repository,
    RepositoryWriter, User,
};
use decnet_stream::StreamHub;
use serde_json::{Map, Value, json};
use test_support::Service;
use test_support::decnet_broker::TestBroker;
use test_support::http::{self, ITEM_TIMEOUT, Next, Response, SseStream, TICKET_PATH};
use test_support::pg::{self, SchemaGuard};

pub(crate) use decnet_sse::Decoded;
pub(crate) use test_support::http::events_path;

/// How long a server may take to be subscribed and warmed up.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Backend pairs
// ---------------------------------------------------------------------------

/// The backends a case runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// Memory bus, memory repository, memory tickets (always runs).
    Memory,
    /// PostgreSQL, NATS, memory tickets.
    PgNats,
    /// PostgreSQL, Redis bus, Redis tickets.
    PgRedis,
    /// DECNET's UNIX-socket bus (a `TestBroker` of the test's own) and a
    /// SQLite file with DECNET's schema in WAL mode; memory tickets. No
    /// service needed.
    UnixSqlite,
    /// DECNET's UNIX-socket bus (a `TestBroker`) and a database of the
    /// test's own with DECNET's schema on the shared MariaDB; memory tickets.
    UnixMysql,
}

impl Backend {
    /// The bus kind, as `/readyz` names it.
    pub(crate) fn bus_kind(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::PgNats => "nats",
            Backend::PgRedis => "redis",
            Backend::UnixSqlite | Backend::UnixMysql => "unix",
        }
    }

    /// Whether the bus stamps events itself (DECNET's broker: a fresh `id`
    /// and `ts` per event).
    pub(crate) fn restamps(self) -> bool {
        matches!(self, Backend::UnixSqlite | Backend::UnixMysql)
    }

    /// The real bus service this pair needs.
    fn bus_service(self) -> Option<Service> {
        match self {
            Backend::Memory | Backend::UnixSqlite | Backend::UnixMysql => None,
            Backend::PgNats => Some(Service::Nats),
            Backend::PgRedis => Some(Service::Redis),
        }
    }

    /// Whether tickets are shared by every instance (Redis).
    pub(crate) fn shared_tickets(self) -> bool {
        self == Backend::PgRedis
    }

    /// The bus config for a real bus at `url` (the socket path on `unix`).
    fn bus_config(self, url: &str) -> Option<BusConfig> {
        match self {
            Backend::Memory => None,
            Backend::UnixSqlite | Backend::UnixMysql => Some(BusConfig {
                kind: BusKind::Unix,
                socket_path: Some(PathBuf::from(url)),
                ..BusConfig::default()
            }),
            Backend::PgNats => Some(BusConfig {
                kind: BusKind::Nats,
                nats_url: Some(url.to_owned()),
                ..BusConfig::default()
            }),
            Backend::PgRedis => Some(BusConfig {
                kind: BusKind::Redis,
                redis_url: Some(url.to_owned()),
                ..BusConfig::default()
            }),
        }
    }
}

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

/// A random hyphenated v4 uuid.
pub(crate) fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The JSON object inside `value`.
pub(crate) fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not a JSON object: {other}"),
    }
}

pub(crate) use test_support::http::poll_until;

pub(crate) use test_support::http::metric;

/// Epoch seconds on a clock that follows Tokio's: the system clock when the
/// world was made, plus Tokio time elapsed since (so [`World::advance`]
/// moves it too).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TestClock {
    base_unix: Duration,
    base: tokio::time::Instant,
}

impl TestClock {
    fn new() -> TestClock {
        TestClock {
            base_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
            base: tokio::time::Instant::now(),
        }
    }

    /// Now, since the epoch.
    pub(crate) fn since_epoch(&self) -> Duration {
        self.base_unix + self.base.elapsed()
    }

    /// Now, whole epoch seconds.
    pub(crate) fn now_secs(&self) -> u64 {
        self.since_epoch().as_secs()
    }
}

// ---------------------------------------------------------------------------
// Bus events
// ---------------------------------------------------------------------------

/// A new event on `topic` with `payload` (an object).
pub(crate) fn event(topic: &str, event_type: &str, payload: Value) -> Event {
    Event::new(topic, event_type, object(payload))
}

/// An `attacker.observation.<primitive>` event for `attacker`.
pub(crate) fn observation_event(attacker: &str, primitive: &str, value: Value) -> Event {
    event(
        &format!("attacker.observation.{primitive}"),
        "observation",
        json!({
            "attacker_uuid": attacker,
            "primitive": primitive,
            "value": value,
            "confidence": 0.8,
            "source": "e2e",
        }),
    )
}

/// An `attribution.profile.state_changed` event for `identity`.
pub(crate) fn attribution_event(identity: &str, marker: &str) -> Event {
    event(
        "attribution.profile.state_changed",
        "state_changed",
        json!({"identity_uuid": identity, "from": "forming", "to": "stable", "marker": marker}),
    )
}

/// An `attacker.scored` event for `attacker`.
pub(crate) fn scored_event(attacker: &str) -> Event {
    event(
        "attacker.scored",
        "scored",
        json!({"attacker_uuid": attacker, "score": 0.5}),
    )
}

/// Publish `event` on `bus` (must be accepted).
pub(crate) async fn publish(bus: &Bus, event: &Event) {
    bus.publish_event(event)
        .await
        .unwrap_or_else(|e| panic!("publish on {}: {e}", event.topic));
}

thread_local! {
    /// Whether this test's bus restamps events (set by [`World`]; a
    /// current-thread runtime runs the whole test on this thread).
    static RESTAMPING: Cell<bool> = const { Cell::new(false) };
    /// Published id -> the id the broker gave the event, learnt from the
    /// first frame matched to it.
    static STAMPS: RefCell<HashMap<String, String>> = RefCell::default();
}

/// Whether `frame` carries `event`: the same id; on a restamping bus
/// (DECNET's broker), the broker's id once learnt, else the same topic, type
/// and payload (and the broker's id is then remembered for `event`).
pub(crate) fn is_frame_of(frame: &decnet_sse::Event, event: &Event) -> bool {
    if frame.id == event.id {
        return true;
    }
    if !RESTAMPING.get() {
        return false;
    }
    if let Some(id) = STAMPS.with_borrow(|stamps| stamps.get(&event.id).cloned()) {
        return id == frame.id;
    }
    let Ok(data) = serde_json::from_str::<Value>(&frame.data) else {
        return false;
    };
    let same = data["topic"] == event.topic.as_str()
        && data["type"] == event.event_type.as_str()
        && data["payload"] == Value::Object(event.payload.clone());
    if same {
        STAMPS.with_borrow_mut(|stamps| stamps.insert(event.id.clone(), frame.id.clone()));
    }
    same
}

/// The id a stream's frame carries for `event`: its own, or on a restamping
/// bus the broker's (known once a frame of it was matched).
///
/// # Panics
///
/// On a restamping bus, when no frame of `event` was matched yet.
#[track_caller]
pub(crate) fn wire_id(event: &Event) -> String {
    if !RESTAMPING.get() {
        return event.id.clone();
    }
    STAMPS
        .with_borrow(|stamps| stamps.get(&event.id).cloned())
        .unwrap_or_else(|| panic!("no frame of {} ({}) seen yet", event.topic, event.id))
}

/// Assert `frame` is the live frame of `event` named `name`: `id` = event
/// id ([`is_frame_of`]), data exactly `{"topic","type","ts","payload"}`.
#[track_caller]
pub(crate) fn assert_live_frame(frame: &decnet_sse::Event, event: &Event, name: &str) {
    assert_eq!(
        frame.event, name,
        "event name of {}: {frame:?}",
        event.topic
    );
    assert!(
        is_frame_of(frame, event),
        "id of {} ({}): {frame:?}",
        event.topic,
        event.id
    );
    let data = object(serde_json::from_str(&frame.data).expect("live data is JSON"));
    let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["payload", "topic", "ts", "type"], "{data:?}");
    assert_eq!(data["topic"], event.topic.as_str());
    assert_eq!(data["type"], event.event_type.as_str());
    assert_eq!(data["payload"], Value::Object(event.payload.clone()));
    let ts = data["ts"].as_f64().expect("ts is a number");
    // DECNET's broker stamps its own time, a moment after the publisher's.
    let within = if RESTAMPING.get() { 30.0 } else { 1e-3 };
    assert!((ts - event.ts).abs() < within, "ts {ts} vs {}", event.ts);
}

/// Publish `event` and return the stream's next event, which must be it.
pub(crate) async fn deliver(bus: &Bus, stream: &mut SseStream, event: &Event) -> decnet_sse::Event {
    publish(bus, event).await;
    let frame = stream.next_event(ITEM_TIMEOUT).await;
    assert!(
        is_frame_of(&frame, event),
        "expected the frame of {} ({}), got {frame:?}",
        event.topic,
        event.id
    );
    frame
}

/// Publish events made by `make` until one reaches `stream` (bounded by
/// `within`): for when the path may still be coming up (a broker that
/// restarts, a subscription being set up). The event and its frame.
pub(crate) async fn deliver_eventually(
    bus: &Bus,
    stream: &mut SseStream,
    within: Duration,
    make: impl Fn() -> Event,
) -> (Event, decnet_sse::Event) {
    let deadline = tokio::time::Instant::now() + within;
    let mut sent: Vec<Event> = Vec::new();
    loop {
        let event = make();
        // Publishing may fail while a broker is away: try again later.
        let _ = bus.publish_event(&event).await;
        sent.push(event);
        let attempt_end = (tokio::time::Instant::now() + Duration::from_millis(250)).min(deadline);
        loop {
            let left = attempt_end.saturating_duration_since(tokio::time::Instant::now());
            match stream.try_next(left).await {
                Next::Item(Decoded::Event(frame)) => {
                    if let Some(event) = sent.iter().find(|e| is_frame_of(&frame, e)) {
                        return (event.clone(), frame);
                    }
                    panic!("unexpected frame while waiting for delivery: {frame:?}");
                }
                Next::Item(_) => {}
                Next::Timeout => break,
                other => panic!("stream ended while waiting for delivery: {other:?}"),
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event reached the stream within {within:?} ({} published)",
            sent.len()
        );
    }
}

/// A user row (`username` derived from the uuid).
pub(crate) fn user_row(
    uuid: &str,
    role: &str,
    must_change_password: bool,
    tokens_valid_from: Option<SystemTime>,
) -> User {
    User {
        uuid: uuid.into(),
        username: format!("user-{uuid}"),
        password_hash: "!".into(),
        role: role.into(),
        must_change_password,
        tokens_valid_from,
    }
}

/// The stream ends with exactly `event: error` `{"message":"Session
/// expired"}` then a clean end, within `within`.
pub(crate) async fn expect_session_expired(stream: &mut SseStream, within: Duration) {
    let items = stream.expect_eof(within).await;
    let events: Vec<&decnet_sse::Event> = items
        .iter()
        .filter_map(|item| match item {
            Decoded::Event(event) => Some(event),
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), 1, "{items:?}");
    assert_eq!(events[0].event, "error");
    assert_eq!(
        serde_json::from_str::<Value>(&events[0].data).expect("json"),
        json!({"message": "Session expired"})
    );
}

// ---------------------------------------------------------------------------
// One test's world
// ---------------------------------------------------------------------------

/// Where the world's data lives.
enum Store {
    Memory(Arc<MemoryRepository>),
    Postgres {
        url: String,
        schema: String,
    },
    /// A SQLite file with DECNET's schema (removed with the world).
    Sqlite(SqliteTestDb),
    /// A MySQL database with DECNET's schema (dropped with the world).
    Mysql(MysqlTestDb),
    /// Nothing answers: a memory repository switched off, or PostgreSQL on
    /// a port nobody listens on.
    Unreachable(Option<Arc<MemoryRepository>>),
}

/// A PostgreSQL URL nobody answers (connections are refused at once).
pub(crate) const UNREACHABLE_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:1/x";

/// One test's world: its repository, its bus publisher, its secret, its
/// clock. Servers made from it share all of these (two servers of one world
/// are two instances of one deployment).
pub(crate) struct World {
    /// The backend pair.
    pub(crate) backend: Backend,
    /// The JWT secret of this world's servers.
    pub(crate) secret: String,
    /// The clock of this world's verifiers and tokens.
    pub(crate) clock: TestClock,
    /// Seeding access to the repository.
    pub(crate) writer: Arc<dyn RepositoryWriter>,
    /// Publisher on the world's bus (the servers' own bus on memory).
    pub(crate) bus: Bus,
    /// The URL of the real bus (`None` on memory).
    pub(crate) bus_url: Option<String>,
    /// The Redis key prefix of this world's tickets.
    pub(crate) redis_prefix: String,
    /// The world's own DECNET broker stand-in (`unix` pairs).
    pub(crate) broker: Option<TestBroker>,
    store: Store,
    // Last: dropped after everything holding connections into the schema.
    _schema: Option<SchemaGuard>,
}

impl World {
    /// The world of one test on `backend`, or `None` (skipped) when a
    /// service it needs is not configured (a failure instead under `CI`).
    pub(crate) async fn new(backend: Backend) -> Option<World> {
        match backend {
            Backend::UnixMysql => {
                let server = test_support::service_url(Service::Mysql)?;
                Some(World::unix_mysql(&server).await)
            }
            _ => {
                let bus_url = match backend.bus_service() {
                    Some(service) => Some(test_support::service_url(service)?),
                    None => None,
                };
                World::with_bus(backend, bus_url).await
            }
        }
    }

    /// The world of a `UnixMysql` test whose database lives on the MySQL
    /// server at `server` (a private one for the restart test).
    pub(crate) async fn unix_mysql(server: &str) -> World {
        let db = MysqlTestDb::create(server).await;
        World::unix(Backend::UnixMysql, db.writer(), Store::Mysql(db)).await
    }

    /// A `unix` world: a broker of its own, a publisher on it.
    async fn unix(backend: Backend, writer: Arc<dyn RepositoryWriter>, store: Store) -> World {
        RESTAMPING.set(true);
        let broker = TestBroker::start_in_temp_dir()
            .await
            .expect("start the DECNET broker stand-in");
        let bus_url = broker.path().display().to_string();
        let config = backend.bus_config(&bus_url).expect("unix bus");
        let bus = Bus::connect(&config)
            .await
            .unwrap_or_else(|e| panic!("connect the unix publisher: {e}"));
        World {
            backend,
            secret: format!("e2e-{}", new_uuid()),
            clock: TestClock::new(),
            writer,
            bus,
            bus_url: Some(bus_url),
            redis_prefix: format!("decnet-e2e-{}:", test_support::unique_suffix()),
            broker: Some(broker),
            store,
            _schema: None,
        }
    }

    /// The world's broker (`unix` pairs).
    ///
    /// # Panics
    ///
    /// On the other pairs.
    pub(crate) fn broker(&mut self) -> &mut TestBroker {
        self.broker.as_mut().expect("a unix world has a broker")
    }

    /// The world of one test on `backend` with its bus at `bus_url` (a
    /// private broker), or `None` when PostgreSQL is not configured.
    pub(crate) async fn with_bus(backend: Backend, bus_url: Option<String>) -> Option<World> {
        let clock = TestClock::new();
        let secret = format!("e2e-{}", new_uuid());
        let redis_prefix = format!("decnet-e2e-{}:", test_support::unique_suffix());
        match backend {
            Backend::Memory => {
                let memory = Arc::new(MemoryRepository::new());
                Some(World {
                    backend,
                    secret,
                    clock,
                    writer: memory.clone(),
                    bus: Bus::memory(),
                    bus_url: None,
                    redis_prefix,
                    broker: None,
                    store: Store::Memory(memory),
                    _schema: None,
                })
            }
            Backend::UnixSqlite => {
                let db = SqliteTestDb::create(true).await;
                Some(World::unix(backend, db.writer(), Store::Sqlite(db)).await)
            }
            Backend::UnixMysql => {
                let server = test_support::service_url(Service::Mysql)?;
                Some(World::unix_mysql(&server).await)
            }
            Backend::PgNats | Backend::PgRedis => {
                let url = test_support::service_url(Service::Postgres)?;
                let bus_url = bus_url.expect("a real bus URL");
                let (schema, guard) = pg::fresh_schema(&url).await;
                let repo = pg_repository(&url, &schema);
                let applied = repo.migrate().await.expect("migrate the test schema");
                assert!(!applied.is_empty(), "a fresh schema gets every migration");
                let config = backend.bus_config(&bus_url).expect("real bus");
                let bus = Bus::connect(&config)
                    .await
                    .unwrap_or_else(|e| panic!("connect the {backend:?} publisher: {e}"));
                Some(World {
                    backend,
                    secret,
                    clock,
                    writer: Arc::new(repo),
                    bus,
                    bus_url: Some(bus_url),
                    redis_prefix,
                    broker: None,
                    store: Store::Postgres { url, schema },
                    _schema: Some(guard),
                })
            }
        }
    }

    /// The world of a test whose repository cannot be reached (nothing can
    /// be seeded), or `None` when its bus is not configured.
    pub(crate) async fn unreachable_repository(backend: Backend) -> Option<World> {
        let bus_url = match backend.bus_service() {
            Some(service) => Some(test_support::service_url(service)?),
            None => None,
        };
        let bus = match bus_url.as_deref().and_then(|url| backend.bus_config(url)) {
            Some(config) => Bus::connect(&config)
                .await
                .unwrap_or_else(|e| panic!("connect the {backend:?} publisher: {e}")),
            None => Bus::memory(),
        };
        let down = Arc::new(MemoryRepository::new());
        down.set_available(false);
        Some(World {
            backend,
            secret: format!("e2e-{}", new_uuid()),
            clock: TestClock::new(),
            writer: down.clone(),
            bus,
            bus_url,
            redis_prefix: format!("decnet-e2e-{}:", test_support::unique_suffix()),
            broker: None,
            store: Store::Unreachable((backend == Backend::Memory).then_some(down)),
            _schema: None,
        })
    }

    /// A reader over the world's data, as a server's repository (a pool of
    /// its own on PostgreSQL, as another process would have).
    pub(crate) fn repository(&self) -> Arc<dyn Repository> {
        match &self.store {
            Store::Memory(memory) => memory.clone(),
            Store::Postgres { url, schema } => Arc::new(pg_repository(url, schema)),
            Store::Sqlite(db) => Arc::new(db.repository()),
            Store::Mysql(db) => Arc::new(db.repository()),
            Store::Unreachable(Some(memory)) => memory.clone(),
            Store::Unreachable(None) => Arc::new(
                PgRepository::connect(PgConfig::new(UNREACHABLE_DATABASE_URL))
                    .expect("repository config"),
            ),
        }
    }

    /// The memory repository (memory backend only).
    pub(crate) fn memory(&self) -> Option<&MemoryRepository> {
        match &self.store {
            Store::Memory(memory) => Some(memory),
            Store::Postgres { .. } | Store::Sqlite(_) | Store::Mysql(_) | Store::Unreachable(_) => {
                None
            }
        }
    }

    /// What the world's engine gives back for a datetime it was given:
    /// MySQL's `DATETIME` keeps no fraction (MariaDB truncates); the others
    /// keep it.
    pub(crate) fn stored(&self, at: DbTime) -> DbTime {
        match self.backend {
            Backend::UnixMysql => {
                DbTime::from_unix_micros(at.unix_micros().div_euclid(1_000_000) * 1_000_000)
                    .unwrap_or(at)
            }
            _ => at,
        }
    }

    /// The SQLite file (`UnixSqlite` only).
    pub(crate) fn sqlite(&self) -> Option<&SqliteTestDb> {
        match &self.store {
            Store::Sqlite(db) => Some(db),
            _ => None,
        }
    }

    /// The settings a server starts from: the binary's defaults
    /// (`Settings::default()`, what an empty environment gives).
    pub(crate) fn settings(&self) -> Settings {
        let mut settings = Settings::default();
        // `World::advance` jumps Tokio's clock (up to 41 s in these cases):
        // a probe in flight at the jump would time out and open the breaker
        // for a moment. The cases' database faults are refusals (probe
        // errors), which this leaves as fast as ever; the hung database is
        // the faults suite's, on the real binary.
        settings.breaker.probe_timeout = Duration::from_secs(60);
        settings
    }

    /// A server with the default settings, ready (see [`World::server_with`]).
    pub(crate) async fn server(&self) -> TestServer {
        self.server_with(|_| {}).await
    }

    /// A server with the default settings adjusted by `adjust`, on the
    /// world's bus, subscribed, and (on a real bus) warmed up: a frame has
    /// gone the whole way through the bus to a stream.
    pub(crate) async fn server_with(&self, adjust: impl FnOnce(&mut Settings)) -> TestServer {
        let mut settings = self.settings();
        adjust(&mut settings);
        let server = self.start(settings, self.repository()).await;
        self.warm_up(&server).await;
        server
    }

    /// Build and start a server over `repo` with `settings` (not waited for).
    pub(crate) async fn start(&self, settings: Settings, repo: Arc<dyn Repository>) -> TestServer {
        // Counted as `App::from_settings` counts them for `/metrics`.
        let counted = decnet_repo::CountedRepository::new(repo);
        let queries = counted.counts();
        let repo: Arc<dyn Repository> = Arc::new(counted);
        let bus = match self
            .bus_url
            .as_deref()
            .and_then(|url| self.backend.bus_config(url))
        {
            Some(config) => Bus::connect(&config)
                .await
                .unwrap_or_else(|e| panic!("connect the server's bus: {e}")),
            None => self.bus.clone(),
        };
        let (tickets, redis_tickets): (Arc<dyn TicketStore>, Option<RedisTicketStore>) =
            match (self.backend, &self.bus_url) {
                // One Redis for the bus and the tickets, as a deployment has.
                (Backend::PgRedis, Some(url)) => {
                    let store = RedisTicketStore::connect(RedisTicketConfig {
                        limits: settings.ticket_limits,
                        prefix: self.redis_prefix.clone(),
                        ..RedisTicketConfig::new(url.clone(), self.secret.as_bytes())
                    })
                    .await
                    .unwrap_or_else(|e| panic!("connect the Redis ticket store: {e}"));
                    (Arc::new(store.clone()), Some(store))
                }
                _ => (
                    Arc::new(MemoryTicketStore::new(settings.ticket_limits)),
                    None,
                ),
            };
        // As App::from_settings: every reader behind the repository's
        // breaker, which probes the repository itself.
        let health = repo;
        let breaker = decnet_api::RepositoryBreaker::new(settings.breaker);
        let repo = breaker.guard(health.clone());
        let clock = self.clock;
        let verifier = TokenVerifier::new(
            VerifierConfig {
                secret: self.secret.clone().into_bytes(),
                leeway_secs: settings.jwt_leeway_secs,
                cache_ttl: Some(decnet_api::VERIFIER_CACHE_TTL),
            },
            repo.clone(),
        )
        .with_clock(move || clock.now_secs());
        let hub = StreamHub::start(
            bus.clone(),
            decnet_stream::decnet_kinds(&repo),
            settings.hub.clone(),
        );
        let logs = decnet_stream::LogHub::new(&hub, repo.clone(), settings.logs.clone());
        let app = App::new(
            AppParts {
                hub,
                verifier,
                tickets,
                limiter: ConnectionLimiter::new(settings.max_per_user, settings.max_total),
                health,
                breaker,
                bus: bus.clone(),
                logs: Some(logs),
            },
            settings.app.clone(),
            Vec::new(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(decnet_api::serve(
            listener,
            app.clone(),
            settings.serve.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        TestServer {
            addr,
            app,
            bus,
            redis_tickets,
            queries,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Wait until `server`'s hub is subscribed; on a real bus, also prove
    /// the whole path works (a frame reaches a throwaway stream), since a
    /// broker may process a subscription after a publish from another
    /// connection.
    pub(crate) async fn warm_up(&self, server: &TestServer) {
        server.wait_connected().await;
        if self.backend == Backend::Memory {
            return;
        }
        let token = self.token(&self.user("viewer").await);
        let attacker = self.attacker(None).await;
        let mut stream = server.open_with_bearer(&token, &attacker).await;
        stream.expect_snapshot().await;
        deliver_eventually(&self.bus, &mut stream, READY_TIMEOUT, || {
            observation_event(&attacker, "warmup.probe", json!("probe"))
        })
        .await;
    }

    /// Move time forward by `by` at once: Tokio's clock (paused for the jump
    /// only, then running again) and with it every timer, the ticket
    /// store's and the rate limiter's instants, and the verifier's clock.
    /// Nothing waits on real I/O meanwhile.
    ///
    /// A jump fires every timer that falls inside it, the timeouts of real
    /// I/O still in flight included. So on a real backend, jump once per
    /// phase, after a real wait of the test's own (what the previous jump
    /// started, a broker ping or a revalidation query, must have finished:
    /// a Redis ping caught by a second jump times out and the bus
    /// reconnects, losing what is published meanwhile, as it should in
    /// production after a second of silence). The memory backends have no
    /// such I/O.
    ///
    /// # Panics
    ///
    /// Outside a current-thread runtime (Tokio's rule for pausing).
    pub(crate) async fn advance(&self, by: Duration) {
        tokio::time::pause();
        tokio::time::advance(by).await;
        tokio::time::resume();
    }

    /// A new user with `role`; its uuid.
    pub(crate) async fn user(&self, role: &str) -> String {
        self.user_with(role, false).await
    }

    /// A new user; its uuid.
    pub(crate) async fn user_with(&self, role: &str, must_change_password: bool) -> String {
        let uuid = new_uuid();
        self.put_user(&user_row(&uuid, role, must_change_password, None))
            .await;
        uuid
    }

    /// Insert or replace a user row.
    pub(crate) async fn put_user(&self, user: &User) {
        self.writer.create_user(user).await.expect("create user");
    }

    /// A new attacker linked to `identity`; its uuid.
    pub(crate) async fn attacker(&self, identity: Option<&str>) -> String {
        let uuid = new_uuid();
        self.writer
            .upsert_attacker(&Attacker {
                uuid: uuid.clone(),
                ip: "198.51.100.7".into(),
                identity_id: identity.map(str::to_owned),
            })
            .await
            .expect("create attacker");
        uuid
    }

    /// Store one observation row.
    pub(crate) async fn observation(
        &self,
        attacker: &str,
        id: &str,
        primitive: &str,
        value: Value,
        ts: f64,
    ) -> Observation {
        let row = Observation {
            id: id.into(),
            identity_ref: None,
            primitive: primitive.into(),
            value,
            confidence: 0.25 + (ts % 7.0) / 10.0,
            window_start_ts: ts - 60.0,
            window_end_ts: ts,
            source: format!("sensor-{id}"),
            evidence_ref: format!("evidence-{id}"),
            envelope_v: 1,
            ts,
            attacker_uuid: attacker.into(),
        };
        self.writer
            .upsert_observation(&row)
            .await
            .expect("store observation");
        row
    }

    /// Valid claims for `user` on the world's clock (iat now, exp in 1 h,
    /// fresh jti).
    pub(crate) fn claims(&self, user: &str) -> Claims {
        let now = self.clock.now_secs();
        Claims {
            uuid: user.into(),
            sub: None,
            role: None,
            iss: decnet_auth::ISSUER.into(),
            aud: decnet_auth::AUDIENCE.into(),
            typ: decnet_auth::TOKEN_TYPE_ACCESS.into(),
            jti: new_uuid(),
            iat: now,
            exp: now + 3600,
            nbf: None,
        }
    }

    /// A valid access token for `user` (1 h).
    pub(crate) fn token(&self, user: &str) -> String {
        self.sign(&self.claims(user))
    }

    /// A valid access token for `user` expiring in `ttl`, and its claims.
    pub(crate) fn token_claims(&self, user: &str, ttl: Duration) -> (String, Claims) {
        let mut claims = self.claims(user);
        claims.exp = claims.iat + ttl.as_secs();
        (self.sign(&claims), claims)
    }

    /// Sign `claims` with this world's secret.
    pub(crate) fn sign(&self, claims: &Claims) -> String {
        decnet_auth::encode_claims(self.secret.as_bytes(), claims).expect("sign claims")
    }

    /// Sign arbitrary JSON claims with this world's secret.
    pub(crate) fn sign_value(&self, claims: &Value) -> String {
        decnet_auth::encode_claims(self.secret.as_bytes(), claims).expect("sign claims")
    }

    /// Put `claims.jti` on the revocation denylist (a row in `revoked_tokens`).
    pub(crate) async fn revoke(&self, claims: &Claims) {
        self.writer
            .revoke_token(
                &claims.jti,
                &claims.uuid,
                UNIX_EPOCH + Duration::from_secs(claims.exp),
            )
            .await
            .expect("revoke token");
    }
}

fn pg_repository(url: &str, schema: &str) -> PgRepository {
    PgRepository::connect(PgConfig::new(url).with_schema(schema)).expect("repository config")
}

// ---------------------------------------------------------------------------
// One server
// ---------------------------------------------------------------------------

/// A running application on 127.0.0.1 (an ephemeral port). Dropping it
/// stops it; [`TestServer::stop`] stops it and waits for `serve()`.
pub(crate) struct TestServer {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// The application (its hub, limiter and metrics).
    pub(crate) app: App,
    /// Its bus (its own connection on a real bus).
    pub(crate) bus: Bus,
    /// Its ticket store when it is Redis (to look at the keys).
    pub(crate) redis_tickets: Option<RedisTicketStore>,
    /// The queries it has made to its repository, by read.
    pub(crate) queries: decnet_repo::QueryCounts,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Resolve the shutdown future and wait up to `within` for `serve()` to
    /// return; how long it took.
    pub(crate) async fn stop(&mut self, within: Duration) -> Duration {
        let started = tokio::time::Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("stopped once");
        tokio::time::timeout(within, task)
            .await
            .unwrap_or_else(|_| panic!("serve() did not return within {within:?}"))
            .expect("serve() did not panic")
            .expect("serve() returned Ok");
        started.elapsed()
    }

    /// Wait until the bus is connected and the hub subscribed (a client
    /// connecting in the background: NATS says `reconnecting` until then).
    pub(crate) async fn wait_connected(&self) {
        let mut state = self.bus.watch_state();
        tokio::time::timeout(
            READY_TIMEOUT,
            state.wait_for(|s| *s == decnet_bus::ConnectionState::Connected),
        )
        .await
        .expect("the bus connects")
        .expect("the bus is open");
        tokio::time::timeout(READY_TIMEOUT, self.app.hub().wait_subscribed())
            .await
            .expect("the hub subscribes to the bus");
    }

    /// One request.
    pub(crate) async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Response {
        http::request(self.addr, method, path, headers).await
    }

    /// `POST /api/v1/auth/sse-ticket` with `Authorization: Bearer <token>`.
    pub(crate) async fn post_ticket(&self, token: &str) -> Response {
        let auth = format!("Bearer {token}");
        self.request("POST", TICKET_PATH, &[("authorization", &auth)])
            .await
    }

    /// A fresh ticket for `token` (the mint must succeed).
    pub(crate) async fn ticket(&self, token: &str) -> String {
        let response = self.post_ticket(token).await;
        assert_eq!(response.status, 200, "mint a ticket: {}", response.text());
        response.json()["ticket"]
            .as_str()
            .expect("ticket is a string")
            .to_owned()
    }

    /// Open `path` with a fresh ticket minted from `token`.
    pub(crate) async fn open_path_with_ticket(&self, token: &str, path: &str) -> SseStream {
        let ticket = self.ticket(token).await;
        SseStream::open(self.addr, &http::with_ticket(path, &ticket), &[]).await
    }

    /// Open `path` with `Authorization: Bearer <token>`.
    pub(crate) async fn open_path_with_bearer(&self, token: &str, path: &str) -> SseStream {
        let auth = format!("Bearer {token}");
        SseStream::open(self.addr, path, &[("authorization", &auth)]).await
    }

    /// Open the stream of `attacker` with a fresh ticket minted from `token`.
    pub(crate) async fn open_with_ticket(&self, token: &str, attacker: &str) -> SseStream {
        self.open_path_with_ticket(token, &events_path(attacker, None))
            .await
    }

    /// Open the stream of `attacker` with `Authorization: Bearer <token>`.
    pub(crate) async fn open_with_bearer(&self, token: &str, attacker: &str) -> SseStream {
        self.open_path_with_bearer(token, &events_path(attacker, None))
            .await
    }

    /// `GET /metrics` as text.
    pub(crate) async fn metrics(&self) -> String {
        let response = self.request("GET", "/metrics", &[]).await;
        assert_eq!(response.status, 200);
        response.text()
    }

    /// One series of `/metrics` (0 when absent).
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        metric(&self.metrics().await, series).unwrap_or(0.0)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.app.hub().shutdown();
    }
}

// ---------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------

pub(crate) use crate::capture::LogCapture;
