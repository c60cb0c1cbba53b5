//! The harness of the reliability suites (`faults.rs`, `churn.rs`,
//! `shutdown.rs`, `tickets.rs`, `hostile.rs`): the real `decnet-events`
//! binary as a process of its own (so its RSS, its exit code and its
//! signals are the real ones), a
//! database it reads (a fresh schema on the shared PostgreSQL, or a
//! private cluster from `test_support::pg_server`), a bus publisher, many
//! SSE streams read concurrently, and the figures the suites measure.
//!
//! Figures: every measurement is one line on stdout,
//! `RELIABILITY {"test":…,"backend":…,"figure":…,"value":…,"unit":…,"target":…,"met":…}`,
//! also appended to the file named by `DECNET_RELIABILITY_OUT` when set
//! (`cargo xtask soak` sets it and builds docs/RELIABILITY.md from it).
//! A figure that misses its target fails the test after it is recorded.
//!
//! Scale: `DECNET_SOAK=1` (set by `cargo xtask soak`) selects the long
//! variants ([`scaled`]); without it every suite runs its fast variant in
//! `cargo xtask test`.

#![allow(dead_code, reason = "not every helper is used by every suite")]

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use decnet_bus::{Bus, BusConfig, BusKind, Event};
use decnet_repo::{Attacker, PgConfig, PgRepository, RepositoryWriter, User};
use decnet_sse::Decoded;
use futures::StreamExt as _;
use serde_json::{Value, json};
use test_support::http::{self, Next, Response, SseStream, events_path};
use test_support::pg::SchemaGuard;
use test_support::process::{ChildProcess, Output, WaitError, remove_env_prefixed};
use tokio::sync::mpsc;

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_decnet-events");
/// A JWT secret that passes DECNET's rule.
pub(crate) const SECRET: &str = "reliability-tests-secret-of-32-characters-or-more";
/// How long the service may take to answer `/readyz` 200.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one SSE item may take in a healthy run.
pub(crate) const ITEM_TIMEOUT: Duration = Duration::from_secs(10);
/// The `retry:` hint the service sends (its default).
pub(crate) const RETRY_HINT: Duration = Duration::from_millis(3000);

// ---------------------------------------------------------------------------
// Scale and figures
// ---------------------------------------------------------------------------

/// Whether this is a soak run (`DECNET_SOAK=1`).
pub(crate) fn soak() -> bool {
    std::env::var("DECNET_SOAK").is_ok_and(|v| v == "1" || v == "true")
}

/// `fast` in `cargo xtask test`, `long` under `cargo xtask soak`.
pub(crate) fn scaled(fast: usize, long: usize) -> usize {
    if soak() { long } else { fast }
}

/// One measured figure of a suite.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    /// The test that measured it.
    pub(crate) test: &'static str,
    /// The backend pair, `<bus>+<repository>` (e.g. `nats+postgres`).
    pub(crate) backend: String,
    /// What was measured.
    pub(crate) figure: String,
    /// The value.
    pub(crate) value: f64,
    /// Its unit (`ms`, `%`, `streams`, …).
    pub(crate) unit: &'static str,
    /// The target, as text (`<= 5000 ms`).
    pub(crate) target: String,
    /// Whether the value meets the target.
    pub(crate) met: bool,
}

/// Record `figure` (stdout and `DECNET_RELIABILITY_OUT`), then fail the
/// test when it misses its target.
#[track_caller]
#[allow(
    clippy::print_stdout,
    reason = "a figure is printed for people and `cargo xtask soak`"
)]
pub(crate) fn record(figure: Figure) {
    let line = json!({
        "test": figure.test,
        "backend": figure.backend,
        "figure": figure.figure,
        "value": (figure.value * 1000.0).round() / 1000.0,
        "unit": figure.unit,
        "target": figure.target,
        "met": figure.met,
        "scale": if soak() { "soak" } else { "fast" },
    });
    println!("RELIABILITY {line}");
    if let Some(path) = std::env::var_os("DECNET_RELIABILITY_OUT").filter(|p| !p.is_empty()) {
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| writeln!(file, "{line}"));
        if let Err(error) = written {
            panic!("append to {}: {error}", path.to_string_lossy());
        }
    }
    assert!(
        figure.met,
        "{} on {}: {} = {} {} misses its target {}",
        figure.test, figure.backend, figure.figure, figure.value, figure.unit, figure.target
    );
}

/// Record a figure that must be at most `max`.
#[track_caller]
pub(crate) fn at_most(
    test: &'static str,
    backend: &str,
    figure: &str,
    value: f64,
    unit: &'static str,
    max: f64,
) {
    record(Figure {
        test,
        backend: backend.to_owned(),
        figure: figure.to_owned(),
        value,
        unit,
        target: format!("<= {max} {unit}"),
        met: value <= max,
    });
}

/// Record a figure that must equal `expected`.
#[track_caller]
pub(crate) fn exactly(
    test: &'static str,
    backend: &str,
    figure: &str,
    value: f64,
    unit: &'static str,
    expected: f64,
) {
    record(Figure {
        test,
        backend: backend.to_owned(),
        figure: figure.to_owned(),
        value,
        unit,
        target: format!("= {expected} {unit}"),
        met: (value - expected).abs() < f64::EPSILON,
    });
}

/// Milliseconds of `d`, as a figure.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) use test_support::http::poll_until;

// ---------------------------------------------------------------------------
// The database
// ---------------------------------------------------------------------------

/// Where the service reads users and attackers, and a writer to seed it.
pub(crate) struct Database {
    /// The URL the service is given (with the schema in `search_path`).
    pub(crate) url: String,
    writer: PgRepository,
    // Last: dropped after the connections into the schema.
    _schema: Option<SchemaGuard>,
}

impl Database {
    /// A fresh, migrated schema on the shared PostgreSQL at `url`.
    pub(crate) async fn shared(url: &str) -> Database {
        let (schema, guard) = test_support::pg::fresh_schema(url).await;
        let writer = PgRepository::connect(PgConfig::new(url).with_schema(&schema))
            .expect("repository config");
        writer.migrate().await.expect("migrate the test schema");
        let sep = if url.contains('?') { '&' } else { '?' };
        Database {
            url: format!("{url}{sep}options=-csearch_path%3D{schema}"),
            writer,
            _schema: Some(guard),
        }
    }

    /// The `public` schema of a private cluster at `url`, migrated.
    pub(crate) async fn private(url: &str) -> Database {
        let writer = PgRepository::connect(PgConfig::new(url)).expect("repository config");
        writer.migrate().await.expect("migrate the private cluster");
        Database {
            url: url.to_owned(),
            writer,
            _schema: None,
        }
    }

    /// A new viewer; its uuid.
    pub(crate) async fn user(&self) -> String {
        let uuid = uuid::Uuid::new_v4().to_string();
        self.writer
            .create_user(&User {
                uuid: uuid.clone(),
                username: format!("user-{uuid}"),
                password_hash: "!".into(),
                role: "viewer".into(),
                must_change_password: false,
                tokens_valid_from: None,
            })
            .await
            .expect("create user");
        uuid
    }

    /// A new attacker; its uuid.
    pub(crate) async fn attacker(&self) -> String {
        let uuid = uuid::Uuid::new_v4().to_string();
        self.writer
            .upsert_attacker(&Attacker {
                uuid: uuid.clone(),
                ip: "198.51.100.7".into(),
                identity_id: None,
            })
            .await
            .expect("create attacker");
        uuid
    }
}

/// A valid access token (1 h) for `user`, signed with [`SECRET`].
pub(crate) fn token(user: &str) -> String {
    token_between(user, 0, 3600)
}

/// An access token for `user` issued `iat` seconds from now and expiring
/// `exp` seconds from now (negative: in the past), signed with [`SECRET`].
pub(crate) fn token_between(user: &str, iat: i64, exp: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    decnet_auth::encode_claims(
        SECRET.as_bytes(),
        &decnet_auth::Claims {
            uuid: user.into(),
            sub: None,
            role: None,
            iss: decnet_auth::ISSUER.into(),
            aud: decnet_auth::AUDIENCE.into(),
            typ: decnet_auth::TOKEN_TYPE_ACCESS.into(),
            jti: uuid::Uuid::new_v4().to_string(),
            iat: now.saturating_add_signed(iat),
            exp: now.saturating_add_signed(exp),
            nbf: None,
        },
    )
    .expect("sign claims")
}

// ---------------------------------------------------------------------------
// The bus
// ---------------------------------------------------------------------------

/// The bus the service is configured with.
#[derive(Debug, Clone)]
pub(crate) enum BusSpec {
    /// The service's own memory bus (nothing else can publish).
    Memory,
    /// NATS at this URL.
    Nats(String),
    /// Redis at this URL.
    Redis(String),
    /// DECNET's UNIX-socket broker at this path.
    Unix(std::path::PathBuf),
}

impl BusSpec {
    /// The name in a backend pair.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            BusSpec::Memory => "memory",
            BusSpec::Nats(_) => "nats",
            BusSpec::Redis(_) => "redis",
            BusSpec::Unix(_) => "unix",
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            BusSpec::Memory => vec![(decnet_bus::ENV_BUS_TYPE, "memory".into())],
            BusSpec::Nats(url) => vec![
                (decnet_bus::ENV_BUS_TYPE, "nats".into()),
                (decnet_bus::ENV_NATS_URL, url.clone()),
            ],
            BusSpec::Redis(url) => vec![
                (decnet_bus::ENV_BUS_TYPE, "redis".into()),
                (decnet_bus::ENV_REDIS_URL, url.clone()),
            ],
            BusSpec::Unix(path) => vec![
                (decnet_bus::ENV_BUS_TYPE, "unix".into()),
                (
                    decnet_bus::ENV_BUS_SOCKET,
                    path.to_string_lossy().into_owned(),
                ),
            ],
        }
    }

    /// A publisher on this bus (`None` for the service's memory bus).
    pub(crate) async fn publisher(&self) -> Option<Bus> {
        let config = match self {
            BusSpec::Memory => return None,
            BusSpec::Nats(url) => BusConfig {
                kind: BusKind::Nats,
                nats_url: Some(url.clone()),
                ..BusConfig::default()
            },
            BusSpec::Redis(url) => BusConfig {
                kind: BusKind::Redis,
                redis_url: Some(url.clone()),
                ..BusConfig::default()
            },
            BusSpec::Unix(path) => BusConfig {
                kind: BusKind::Unix,
                socket_path: Some(path.clone()),
                ..BusConfig::default()
            },
        };
        Some(
            Bus::connect(&config)
                .await
                .unwrap_or_else(|e| panic!("connect the {} publisher: {e}", self.label())),
        )
    }
}

/// An observation of `attacker`, as DECNET's sensors publish it.
pub(crate) fn observation(attacker: &str, marker: &str) -> Event {
    let payload = json!({
        "attacker_uuid": attacker,
        "primitive": "reliability.probe",
        "value": marker,
        "confidence": 0.8,
        "source": "reliability",
    });
    let Value::Object(payload) = payload else {
        unreachable!("a JSON object literal")
    };
    Event::new(
        "attacker.observation.reliability.probe",
        "observation",
        payload,
    )
}

// ---------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------

/// What a service process is started with.
#[derive(Debug, Clone)]
pub(crate) struct ServiceConfig {
    /// Its bus.
    pub(crate) bus: BusSpec,
    /// Its PostgreSQL URL.
    pub(crate) database_url: String,
    /// More variables (override the defaults below).
    pub(crate) vars: Vec<(String, String)>,
}

impl ServiceConfig {
    /// `bus` and `database_url` with the suites' defaults: no per-user
    /// stream or open-rate limit to speak of, no access log, logs at warn.
    pub(crate) fn new(bus: BusSpec, database_url: &str) -> ServiceConfig {
        ServiceConfig {
            bus,
            database_url: database_url.to_owned(),
            vars: Vec::new(),
        }
    }

    /// One more variable.
    #[must_use]
    pub(crate) fn var(mut self, name: &str, value: impl Into<String>) -> ServiceConfig {
        self.vars.push((name.to_owned(), value.into()));
        self
    }
}

/// A `decnet-events serve` process, ready.
pub(crate) struct Service {
    /// The process (its stderr captured).
    pub(crate) child: ChildProcess,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
}

impl Service {
    /// Start it and wait for `/readyz` 200 (retrying on a lost port race).
    pub(crate) async fn start(config: &ServiceConfig) -> Service {
        let service = Service::spawn(config);
        service.wait_ready(START_TIMEOUT).await;
        service
    }

    /// Start it, listening (not waited for readiness).
    pub(crate) fn spawn(config: &ServiceConfig) -> Service {
        let mut last = String::new();
        for _ in 0..3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], test_support::free_port()));
            let mut command = Command::new(BIN);
            remove_env_prefixed(&mut command, &["DECNET_", "OTEL_", "RUST_LOG"]);
            command
                .arg("serve")
                .env("RUST_LOG", "warn")
                .env("DECNET_BIND", addr.to_string())
                .env("DECNET_JWT_SECRET", SECRET)
                .env("DECNET_DEMO", "false")
                .env("DECNET_DB_TYPE", "postgres")
                .env("DECNET_DATABASE_URL", &config.database_url)
                .env("DECNET_ACCESS_LOG", "false")
                .env("DECNET_SSE_MAX_PER_USER", "100000")
                .env("DECNET_SSE_OPEN_RATE", "0")
                .env("DECNET_SSE_TICKETS_PER_USER", "100000");
            for (name, value) in config.bus.env() {
                command.env(name, value);
            }
            for (name, value) in &config.vars {
                command.env(name, value);
            }
            // Run from the target directory: no stray .env file is read.
            command.current_dir(env!("CARGO_TARGET_TMPDIR"));
            let mut child =
                ChildProcess::spawn("decnet-events", &mut command, Output::Null, Output::Capture)
                    .expect("spawn decnet-events");
            match child.wait_for_port(addr, START_TIMEOUT) {
                Ok(()) => return Service { child, addr },
                Err(WaitError::Exited { .. }) if child.stderr().contains("binding") => {
                    last = child.stderr();
                }
                Err(error) => panic!("{error}\nstderr:\n{}", child.stderr()),
            }
        }
        panic!("no free port could be bound three times: {last}");
    }

    /// `/readyz`'s status (0 when it does not answer within 3 s).
    pub(crate) async fn readyz(&self) -> u16 {
        match tokio::time::timeout(
            Duration::from_secs(3),
            http::try_request(self.addr, "GET", "/readyz", &[]),
        )
        .await
        {
            Ok(Ok(response)) => response.status,
            _ => 0,
        }
    }

    /// Wait for `/readyz` 200; how long it took.
    pub(crate) async fn wait_ready(&self, within: Duration) -> Duration {
        self.wait_readyz(200, within).await
    }

    /// Wait for `/readyz` to answer `status`; how long it took.
    pub(crate) async fn wait_readyz(&self, status: u16, within: Duration) -> Duration {
        let started = tokio::time::Instant::now();
        poll_until(within, &format!("/readyz {status}"), || async {
            (self.readyz().await == status).then_some(())
        })
        .await;
        started.elapsed()
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

    /// `POST` the ticket endpoint with `token`.
    pub(crate) async fn post_ticket(&self, token: &str) -> Response {
        let auth = format!("Bearer {token}");
        self.request("POST", http::TICKET_PATH, &[("authorization", &auth)])
            .await
    }

    /// One series of `/metrics` (0 when absent).
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        let text = self.request("GET", "/metrics", &[]).await.text();
        http::metric(&text, series).unwrap_or(0.0)
    }

    /// The process's resident set, KiB (`VmRSS` of `/proc/<pid>/status`).
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in:\n{status}"))
    }

    /// Open `attacker`'s stream with a bearer token; `Err` with the
    /// refusal otherwise.
    pub(crate) async fn try_open(
        &self,
        token: &str,
        attacker: &str,
    ) -> Result<SseStream, Response> {
        let auth = format!("Bearer {token}");
        SseStream::try_open(
            self.addr,
            &events_path(attacker, None),
            &[("authorization", &auth)],
        )
        .await
    }
}

// ---------------------------------------------------------------------------
// Many streams at once
// ---------------------------------------------------------------------------

/// What one stream's reader saw.
#[derive(Debug)]
enum Seen {
    /// A dispatched event: its payload's `value` when a string (the marker
    /// of [`observation`]; brokers such as DECNET's give events ids of
    /// their own, so the marker is what identifies an event end to end).
    Event {
        stream: usize,
        marker: Option<String>,
    },
    /// The stream ended: cleanly (`None`) or with this error.
    End {
        stream: usize,
        error: Option<String>,
    },
}

/// Streams read concurrently, one task each, reporting what they see.
pub(crate) struct Streams {
    seen: mpsc::UnboundedReceiver<Seen>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    ended: HashMap<usize, Option<String>>,
    events: usize,
}

/// Open `count` streams of `attacker` on `addr` (bearer `token`, up to
/// `at_once` handshakes at a time), each read past its snapshot.
pub(crate) async fn open_past_snapshot(
    addr: SocketAddr,
    token: &str,
    attacker: &str,
    count: usize,
    at_once: usize,
) -> Vec<SseStream> {
    let auth = format!("Bearer {token}");
    let path = events_path(attacker, None);
    futures::stream::iter(0..count)
        .map(|_| {
            let (auth, path) = (auth.clone(), path.clone());
            async move {
                let mut stream =
                    SseStream::open(addr, &path, &[("authorization", auth.as_str())]).await;
                stream.expect_snapshot().await;
                stream
            }
        })
        .buffer_unordered(at_once)
        .collect()
        .await
}

impl Streams {
    /// Open `count` streams of `attacker` on `addr` (bearer `token`, up to
    /// 64 handshakes at a time), read each past its snapshot, and start
    /// reading them.
    pub(crate) async fn open(
        addr: SocketAddr,
        token: &str,
        attacker: &str,
        count: usize,
    ) -> Streams {
        Streams::read(open_past_snapshot(addr, token, attacker, count, 64).await)
    }

    /// Start reading `streams`.
    pub(crate) fn read(streams: Vec<SseStream>) -> Streams {
        let (tx, seen) = mpsc::unbounded_channel();
        let tasks = streams
            .into_iter()
            .enumerate()
            .map(|(index, mut stream)| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    loop {
                        let seen = match stream.try_next(Duration::from_secs(3600)).await {
                            Next::Item(Decoded::Event(event)) => Seen::Event {
                                stream: index,
                                marker: serde_json::from_str::<Value>(&event.data).ok().and_then(
                                    |d| d["payload"]["value"].as_str().map(str::to_owned),
                                ),
                            },
                            Next::Item(_) | Next::Timeout => continue,
                            Next::Eof => Seen::End {
                                stream: index,
                                error: None,
                            },
                            Next::Error(error) => Seen::End {
                                stream: index,
                                error: Some(error),
                            },
                        };
                        let end = matches!(seen, Seen::End { .. });
                        if tx.send(seen).is_err() || end {
                            return;
                        }
                    }
                })
            })
            .collect();
        Streams {
            seen,
            tasks,
            ended: HashMap::new(),
            events: 0,
        }
    }

    /// How many streams are read.
    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    fn note(&mut self, seen: &Seen) {
        match seen {
            Seen::Event { .. } => self.events += 1,
            Seen::End { stream, error } => {
                self.ended.insert(*stream, error.clone());
            }
        }
    }

    /// Streams ended so far (after draining what is queued).
    pub(crate) fn ended(&mut self) -> usize {
        while let Ok(seen) = self.seen.try_recv() {
            self.note(&seen);
        }
        self.ended.len()
    }

    /// Publish events made by `make` (given a fresh marker each) on `bus` (every 200 ms; failures
    /// retried, a broker may be away) until every stream has received one
    /// of them, within `within`; how long it took.
    ///
    /// # Panics
    ///
    /// When a stream ends meanwhile, or the time runs out.
    pub(crate) async fn deliver_everywhere(
        &mut self,
        bus: &Bus,
        within: Duration,
        make: impl Fn(&str) -> Event,
    ) -> Duration {
        let started = tokio::time::Instant::now();
        let deadline = started + within;
        let mut sent: HashSet<String> = HashSet::new();
        let mut reached: HashSet<usize> = HashSet::new();
        let run = test_support::unique_suffix();
        let mut n = 0;
        while reached.len() < self.len() {
            let marker = format!("{run}-{n}");
            n += 1;
            if bus.publish_event(&make(&marker)).await.is_ok() {
                sent.insert(marker);
            }
            let round = (tokio::time::Instant::now() + Duration::from_millis(200)).min(deadline);
            while let Ok(Some(seen)) = tokio::time::timeout_at(round, self.seen.recv()).await {
                self.note(&seen);
                match seen {
                    Seen::Event {
                        stream,
                        marker: Some(marker),
                    } if sent.contains(&marker) => {
                        reached.insert(stream);
                    }
                    Seen::Event { .. } => {}
                    Seen::End { stream, error } => {
                        panic!("stream {stream} ended while events were expected: {error:?}")
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline || reached.len() == self.len(),
                "{} of {} streams received an event within {within:?} ({} accepted by the bus)",
                reached.len(),
                self.len(),
                sent.len()
            );
        }
        started.elapsed()
    }

    /// Wait until every stream has ended, within `within`: how many ended
    /// cleanly and the errors of the others.
    pub(crate) async fn wait_all_ended(&mut self, within: Duration) -> (usize, Vec<String>) {
        let deadline = tokio::time::Instant::now() + within;
        while self.ended() < self.len() {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(seen)) => self.note(&seen),
                Ok(None) | Err(_) => break,
            }
        }
        let errors: Vec<String> = self.ended.values().flatten().cloned().collect();
        (self.ended.len() - errors.len(), errors)
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Run `f` on a blocking thread (process fixtures block) and await it.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// Shared ownership of a fixture moved in and out of blocking threads.
pub(crate) type Shared<T> = Arc<std::sync::Mutex<T>>;

/// Read from `tcp` until `needle` has been seen, within `within`.
pub(crate) async fn read_until(
    tcp: &mut tokio::net::TcpStream,
    needle: &str,
    within: Duration,
) -> Result<(), String> {
    use tokio::io::AsyncReadExt as _;
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if String::from_utf8_lossy(&seen).contains(needle) {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Ok(Ok(0)) => {
                return Err(format!(
                    "closed before {needle:?}: {}",
                    String::from_utf8_lossy(&seen)
                ));
            }
            Ok(Ok(n)) => seen.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(format!("read: {e}")),
            Err(_) => return Err(format!("no {needle:?} within {within:?}")),
        }
    }
}
