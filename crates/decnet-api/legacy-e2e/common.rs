//! Harness for the decnet-events end-to-end tests.
//!
//! What it is: the real `decnet-events` binary run as a subprocess against the
//! real PostgreSQL and NATS / Redis, a small HTTP/1.1 client (hyper's
//! `client::conn::http1` over a plain `TcpStream`) that can read an SSE body
//! incrementally through `decnet_sse::Decoder`, and helpers to seed rows,
//! mint tokens and publish bus events.
//!
//! Isolation (tests run in parallel, in one process or one process each):
//! - every test gets its own PostgreSQL schema (`test_support::pg::fresh_schema`),
//!   handed to the server through the URL (`?options=-csearch_path%3D<schema>`),
//!   and its own server process on a free port;
//! - users, attackers and identities are random uuids, so the events parallel
//!   tests publish on the shared bus never reach each other's streams.
//!
//! Every wait is bounded; a test that would hang fails with the server's stderr.

#![allow(dead_code, reason = "not every helper is used by every case")]
#![allow(clippy::print_stderr, reason = "tests report diagnostics on stderr")]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use decnet_auth::Claims;
use decnet_bus::{Bus, BusConfig, BusKind, Event};
use decnet_repo::{Attacker, Observation, PgConfig, PgRepository, Repo, Repository, User};
use decnet_sse::Decoded;
use http::HeaderMap;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use test_support::Service;
use test_support::pg::{self, SchemaGuard};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_decnet-events");

/// How long a server may take to answer `/readyz` 200 after spawning.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Default bound for one HTTP exchange.
pub(crate) const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound for the next SSE item.
pub(crate) const ITEM_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Bus flavours
// ---------------------------------------------------------------------------

/// The bus a case runs against (always with PostgreSQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// NATS bus, memory ticket store.
    Nats,
    /// Redis bus, Redis ticket store.
    Redis,
}

impl Flavor {
    /// The real service this flavour needs.
    pub(crate) fn service(self) -> Service {
        match self {
            Flavor::Nats => Service::Nats,
            Flavor::Redis => Service::Redis,
        }
    }

    /// `DECNET_BUS_TYPE`.
    pub(crate) fn bus_type(self) -> &'static str {
        match self {
            Flavor::Nats => "nats",
            Flavor::Redis => "redis",
        }
    }

    /// The `DECNET_*_URL` variable of the bus.
    pub(crate) fn url_var(self) -> &'static str {
        match self {
            Flavor::Nats => "DECNET_NATS_URL",
            Flavor::Redis => "DECNET_REDIS_URL",
        }
    }

    /// `DECNET_TICKET_STORE`: Redis tickets when Redis is there anyway.
    pub(crate) fn ticket_store(self) -> &'static str {
        match self {
            Flavor::Nats => "memory",
            Flavor::Redis => "redis",
        }
    }

    /// A publisher bus connected to `url`.
    pub(crate) async fn connect_bus(self, url: &str) -> Bus {
        let config = match self {
            Flavor::Nats => BusConfig {
                kind: BusKind::Nats,
                nats_url: Some(url.to_owned()),
                ..BusConfig::default()
            },
            Flavor::Redis => BusConfig {
                kind: BusKind::Redis,
                redis_url: Some(url.to_owned()),
                ..BusConfig::default()
            },
        };
        Bus::connect(&config)
            .await
            .unwrap_or_else(|e| panic!("connect the {self:?} publisher bus: {e}"))
    }

    /// The env a server needs to use this bus at `url`.
    pub(crate) fn server_env(self, url: &str) -> Vec<(String, String)> {
        vec![
            ("DECNET_BUS_TYPE".into(), self.bus_type().into()),
            (self.url_var().into(), url.into()),
            ("DECNET_TICKET_STORE".into(), self.ticket_store().into()),
        ]
    }
}

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

/// A random hyphenated v4 uuid.
pub(crate) fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// `url` with `options=-csearch_path=<schema>` added, as the server receives it.
pub(crate) fn url_with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

/// The JSON object inside `value` (panics otherwise).
pub(crate) fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not a JSON object: {other}"),
    }
}

/// Poll `check` every 100 ms until it returns `Some`, for at most `within`.
pub(crate) async fn poll_until<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of one Prometheus series (`name` or `name{labels}`) in `text`.
pub(crate) fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
}

// ---------------------------------------------------------------------------
// Subprocesses
// ---------------------------------------------------------------------------

/// A temp file path unique to this process and call.
fn temp_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "decnet-events-e2e-{}-{what}.log",
        test_support::unique_suffix()
    ))
}

/// A command for the binary with every `DECNET_*` and `OTEL_*` variable of the
/// test process removed (a developer's own settings must not leak in).
pub(crate) fn base_command() -> Command {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("DECNET_") || key.starts_with("OTEL_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command.env("RUST_LOG", "warn");
    command
}

/// What a finished subprocess left.
#[derive(Debug)]
pub(crate) struct Finished {
    /// Exit status.
    pub(crate) status: ExitStatus,
    /// Everything it printed on stdout.
    pub(crate) stdout: String,
    /// Everything it printed on stderr.
    pub(crate) stderr: String,
}

/// Run `command` to its end (killed and failed after `within`).
pub(crate) async fn run_to_end(mut command: Command, within: Duration) -> Finished {
    let out = temp_path("out");
    let err = temp_path("err");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("create stdout file"))
        .stderr(std::fs::File::create(&err).expect("create stderr file"))
        .spawn()
        .expect("spawn decnet-events");
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&err);
    let Some(status) = status else {
        panic!("{command:?} did not exit within {within:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    };
    Finished {
        status,
        stdout,
        stderr,
    }
}

/// `decnet-events migrate --database-url <url>`, which must succeed.
pub(crate) async fn migrate(database_url: &str) -> Finished {
    let mut command = base_command();
    command.args(["migrate", "--database-url", database_url]);
    let finished = run_to_end(command, Duration::from_secs(30)).await;
    assert!(
        finished.status.success(),
        "migrate failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        finished.status,
        finished.stdout,
        finished.stderr
    );
    finished
}

/// A `decnet-events` server process, killed on drop.
pub(crate) struct TestServer {
    child: Option<Child>,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl TestServer {
    /// Spawn `decnet-events serve` (or, with `subcommand == None`, the bare
    /// binary) with exactly `envs` on top of a clean environment, on a free port.
    ///
    /// With `clear_env`, the child's environment is emptied first and only
    /// `PATH` and `HOME` are kept.
    pub(crate) fn spawn(
        envs: &[(String, String)],
        subcommand: Option<&str>,
        clear_env: bool,
    ) -> Self {
        let port = test_support::free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stdout = temp_path("server-out");
        let stderr = temp_path("server-err");
        let mut command = if clear_env {
            let mut command = Command::new(BIN);
            command.env_clear();
            for key in ["PATH", "HOME"] {
                if let Some(value) = std::env::var_os(key) {
                    command.env(key, value);
                }
            }
            command
        } else {
            base_command()
        };
        if let Some(subcommand) = subcommand {
            command.arg(subcommand);
        }
        command.env("DECNET_BIND", addr.to_string());
        for (key, value) in envs {
            command.env(key, value);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("create stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("create stderr file"))
            .spawn()
            .expect("spawn decnet-events");
        TestServer {
            child: Some(child),
            addr,
            stdout,
            stderr,
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// What the server printed on stdout so far.
    pub(crate) fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What the server printed on stderr so far.
    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The exit status if it has exited.
    pub(crate) fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Wait until `path` answers `status` and `accept(body)` holds; panics
    /// (with stderr) after `within`, or at once if the process exits.
    pub(crate) async fn wait_for(
        &mut self,
        path: &str,
        status: u16,
        within: Duration,
        accept: impl Fn(&Value) -> bool,
    ) {
        let deadline = Instant::now() + within;
        let mut last = String::from("no answer");
        loop {
            if let Some(exit) = self.try_exit() {
                panic!(
                    "decnet-events exited ({exit:?}) before {path} answered {status}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            if let Ok(Ok(response)) = tokio::time::timeout(
                Duration::from_secs(3),
                try_request(self.addr, "GET", path, &[]),
            )
            .await
            {
                if response.status == status
                    && accept(&serde_json::from_slice(&response.body).unwrap_or(Value::Null))
                {
                    return;
                }
                last = format!("{} {}", response.status, response.text());
            }
            if Instant::now() > deadline {
                panic!(
                    "{path} did not answer {status} within {within:?} (last: {last})\nstderr:\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait for `/readyz` 200 with the hub subscribed to the bus.
    pub(crate) async fn wait_ready(&mut self) {
        self.wait_for("/readyz", 200, READY_TIMEOUT, |body| {
            body["hub"] == "subscribed"
        })
        .await;
    }

    /// Send SIGTERM (`kill -TERM <pid>`) and wait up to `within` for the exit.
    pub(crate) async fn terminate(&mut self, within: Duration) -> ExitStatus {
        let pid = self.pid().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "decnet-events did not exit within {within:?} of SIGTERM\nstderr:\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `request` against this server.
    pub(crate) async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Response {
        request(self.addr, method, path, headers).await
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

    /// Open the stream of `attacker` with a fresh ticket minted from `token`.
    pub(crate) async fn open_with_ticket(&self, token: &str, attacker: &str) -> SseStream {
        let ticket = self.ticket(token).await;
        SseStream::open(self.addr, &events_path(attacker, Some(&ticket)), &[]).await
    }

    /// Open the stream of `attacker` with `Authorization: Bearer <token>`.
    pub(crate) async fn open_with_bearer(&self, token: &str, attacker: &str) -> SseStream {
        let auth = format!("Bearer {token}");
        SseStream::open(
            self.addr,
            &events_path(attacker, None),
            &[("authorization", &auth)],
        )
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
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- decnet-events {} stderr ---\n{}",
                self.addr,
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            );
        }
        let _ = std::fs::remove_file(&self.stdout);
        let _ = std::fs::remove_file(&self.stderr);
    }
}

// ---------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------

/// The ticket route.
pub(crate) const TICKET_PATH: &str = "/api/v1/auth/sse-ticket";

/// The events route of `attacker`, with `?ticket=` when given.
pub(crate) fn events_path(attacker: &str, ticket: Option<&str>) -> String {
    match ticket {
        Some(ticket) => format!("/api/v1/attackers/{attacker}/events?ticket={ticket}"),
        None => format!("/api/v1/attackers/{attacker}/events"),
    }
}

/// A complete HTTP response.
#[derive(Debug)]
pub(crate) struct Response {
    /// Status code.
    pub(crate) status: u16,
    /// Headers.
    pub(crate) headers: HeaderMap,
    /// The whole body.
    pub(crate) body: Bytes,
}

impl Response {
    /// One header as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as (lossy) text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics otherwise).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// Assert `{"detail": <detail>}` with `status` and a JSON content type.
    pub(crate) fn assert_detail(&self, status: u16, detail: &str) {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(self.json(), json!({ "detail": detail }));
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "content-type {:?}",
            self.header("content-type")
        );
    }

    /// Assert the 401 DECNET sends: detail + `WWW-Authenticate: Bearer`.
    pub(crate) fn assert_401(&self) {
        self.assert_detail(401, "Could not validate credentials");
        assert_eq!(self.header("www-authenticate"), Some("Bearer"));
    }

    /// Assert a 503 with `Retry-After`.
    pub(crate) fn assert_503(&self) {
        assert_eq!(self.status, 503, "body: {}", self.text());
        assert!(
            self.header("retry-after").is_some(),
            "503 without Retry-After: {:?}",
            self.headers
        );
    }
}

/// Aborts a spawned task on drop (the client connection: dropping it closes the socket).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Exchange {
    parts: http::response::Parts,
    body: Incoming,
    _sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    connection: AbortOnDrop,
}

async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Exchange, String> {
    exchange_with(addr, method, path, headers, None).await
}

/// `exchange`, optionally with a fixed (small) socket receive buffer, which
/// turns off receive-window autotuning: a client that does not read then
/// pushes back on the server after a few kilobytes.
async fn exchange_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    recv_buffer: Option<u32>,
) -> Result<Exchange, String> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if let Some(size) = recv_buffer {
        socket
            .set_recv_buffer_size(size)
            .map_err(|e| format!("SO_RCVBUF: {e}"))?;
    }
    let tcp = socket
        .connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let connection = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("build request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let (parts, body) = response.into_parts();
    Ok(Exchange {
        parts,
        body,
        _sender: sender,
        connection,
    })
}

/// One request, reading the whole body.
pub(crate) async fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, String> {
    let exchange = exchange(addr, method, path, headers).await?;
    let body = exchange
        .body
        .collect()
        .await
        .map_err(|e| format!("read body: {e}"))?
        .to_bytes();
    Ok(Response {
        status: exchange.parts.status.as_u16(),
        headers: exchange.parts.headers,
        body,
    })
}

/// One request, reading the whole body; fails the test after [`HTTP_TIMEOUT`].
pub(crate) async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    match tokio::time::timeout(HTTP_TIMEOUT, try_request(addr, method, path, headers)).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => panic!("{method} {path}: {error}"),
        Err(_) => panic!("{method} {path}: no complete answer within {HTTP_TIMEOUT:?}"),
    }
}

/// What reading an SSE body produced next.
#[derive(Debug)]
pub(crate) enum Next {
    /// A decoded item.
    Item(Decoded),
    /// The body ended cleanly.
    Eof,
    /// The body failed (connection reset, truncated chunk).
    Error(String),
    /// Nothing within the time given.
    Timeout,
}

/// An open SSE response, read incrementally. Dropping it closes the connection.
pub(crate) struct SseStream {
    /// Status (200).
    pub(crate) status: u16,
    /// Response headers.
    pub(crate) headers: HeaderMap,
    body: Incoming,
    decoder: decnet_sse::Decoder,
    queue: VecDeque<Decoded>,
    ended: bool,
    _sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    _connection: AbortOnDrop,
}

impl SseStream {
    /// GET `path`; `Ok` with the open stream on 200, `Err` with the whole
    /// response otherwise.
    pub(crate) async fn try_open(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<SseStream, Response> {
        SseStream::try_open_with(addr, path, headers, None).await
    }

    /// GET `path` over a socket whose receive buffer is `recv_buffer` bytes
    /// (no autotuning), which must answer 200: a client that can fall behind.
    pub(crate) async fn open_small_window(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        recv_buffer: u32,
    ) -> SseStream {
        match SseStream::try_open_with(addr, path, headers, Some(recv_buffer)).await {
            Ok(stream) => stream,
            Err(response) => panic!(
                "GET {path}: expected a 200 stream, got {} {}",
                response.status,
                response.text()
            ),
        }
    }

    async fn try_open_with(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        recv_buffer: Option<u32>,
    ) -> Result<SseStream, Response> {
        let exchange = tokio::time::timeout(
            HTTP_TIMEOUT,
            exchange_with(addr, "GET", path, headers, recv_buffer),
        )
        .await
        .unwrap_or_else(|_| panic!("GET {path}: no response head within {HTTP_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = exchange.parts.status.as_u16();
        if status != 200 {
            let body = tokio::time::timeout(HTTP_TIMEOUT, exchange.body.collect())
                .await
                .unwrap_or_else(|_| panic!("GET {path}: {status} body did not end"))
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(Response {
                status,
                headers: exchange.parts.headers,
                body,
            });
        }
        Ok(SseStream {
            status,
            headers: exchange.parts.headers,
            body: exchange.body,
            decoder: decnet_sse::Decoder::new(),
            queue: VecDeque::new(),
            ended: false,
            _sender: exchange._sender,
            _connection: exchange.connection,
        })
    }

    /// GET `path`, which must answer 200.
    pub(crate) async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseStream {
        match SseStream::try_open(addr, path, headers).await {
            Ok(stream) => stream,
            Err(response) => panic!(
                "GET {path}: expected a 200 stream, got {} {}",
                response.status,
                response.text()
            ),
        }
    }

    /// The next item, end, error or timeout.
    pub(crate) async fn try_next(&mut self, within: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Next::Item(item);
            }
            if self.ended {
                return Next::Eof;
            }
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => return Next::Timeout,
                Ok(None) => {
                    self.ended = true;
                    return Next::Eof;
                }
                Ok(Some(Err(error))) => {
                    self.ended = true;
                    return Next::Error(error.to_string());
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        let items = self.decoder.feed(&data);
                        self.queue.extend(items);
                    }
                }
            }
        }
    }

    /// The next item; panics on end, error or timeout.
    pub(crate) async fn next_item(&mut self, within: Duration) -> Decoded {
        match self.try_next(within).await {
            Next::Item(item) => item,
            other => panic!("expected an SSE item within {within:?}, got {other:?}"),
        }
    }

    /// The next dispatched event, skipping comments (keepalives) and `retry`.
    pub(crate) async fn next_event(&mut self, within: Duration) -> decnet_sse::Event {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_next(left).await {
                Next::Item(Decoded::Event(event)) => return event,
                Next::Item(_) => {}
                other => panic!("expected an SSE event within {within:?}, got {other:?}"),
            }
        }
    }

    /// Read until the body ends (cleanly); returns every item read on the way.
    /// Panics on a transport error or when it does not end within `within`.
    pub(crate) async fn expect_eof(&mut self, within: Duration) -> Vec<Decoded> {
        let deadline = tokio::time::Instant::now() + within;
        let mut items = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_next(left).await {
                Next::Item(item) => items.push(item),
                Next::Eof => return items,
                Next::Error(error) => {
                    panic!("expected a clean end of stream, got error {error} after {items:?}")
                }
                Next::Timeout => panic!("stream did not end within {within:?}; read {items:?}"),
            }
        }
    }

    /// Assert that no event (comments allowed) arrives within `within`.
    pub(crate) async fn expect_no_event(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_next(left).await {
                Next::Timeout => return,
                Next::Item(Decoded::Event(event)) => panic!("unexpected event {event:?}"),
                Next::Item(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The opening of every stream: `: keepalive`, then `retry: 3000`.
    pub(crate) async fn expect_preamble(&mut self) {
        assert_eq!(
            self.next_item(ITEM_TIMEOUT).await,
            Decoded::Comment("keepalive".into()),
            "a stream starts with the keepalive comment"
        );
        assert_eq!(
            self.next_item(ITEM_TIMEOUT).await,
            Decoded::Retry(3000),
            "then the retry hint"
        );
    }

    /// Preamble then the snapshot; returns the snapshot's data.
    pub(crate) async fn expect_snapshot(&mut self) -> Value {
        self.expect_preamble().await;
        let event = self.next_event(ITEM_TIMEOUT).await;
        assert_eq!(event.event, "snapshot", "{event:?}");
        serde_json::from_str(&event.data).expect("snapshot data is JSON")
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

/// Publish `event` on `bus` (must be accepted).
pub(crate) async fn publish(bus: &Bus, event: &Event) {
    bus.publish_event(event)
        .await
        .unwrap_or_else(|e| panic!("publish on {}: {e}", event.topic));
}

/// Assert `frame` is the live frame of `event` named `name`:
/// `id` = event id, data exactly `{"topic","type","ts","payload"}`.
pub(crate) fn assert_live_frame(frame: &decnet_sse::Event, event: &Event, name: &str) {
    assert_eq!(
        frame.event, name,
        "event name of {}: {frame:?}",
        event.topic
    );
    assert_eq!(frame.id, event.id, "id of {}: {frame:?}", event.topic);
    let data = object(serde_json::from_str(&frame.data).expect("live data is JSON"));
    let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["payload", "topic", "ts", "type"], "{data:?}");
    assert_eq!(data["topic"], event.topic.as_str());
    assert_eq!(data["type"], event.event_type.as_str());
    assert_eq!(data["payload"], Value::Object(event.payload.clone()));
    let ts = data["ts"].as_f64().expect("ts is a number");
    assert!((ts - event.ts).abs() < 1e-3, "ts {ts} vs {}", event.ts);
}

/// Publish `event` and return the stream's next event, which must be it.
pub(crate) async fn deliver(bus: &Bus, stream: &mut SseStream, event: &Event) -> decnet_sse::Event {
    publish(bus, event).await;
    let frame = stream.next_event(ITEM_TIMEOUT).await;
    assert_eq!(
        frame.id, event.id,
        "expected the frame of {} ({}), got {frame:?}",
        event.topic, event.id
    );
    frame
}

/// Publish events made by `make` until one reaches `stream` (bounded by
/// `within`); for when the path may still be coming up (a broker that
/// restarts, a subscription being set up). Returns the event and its frame.
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
        let attempt_end = (tokio::time::Instant::now() + Duration::from_millis(500)).min(deadline);
        loop {
            let left = attempt_end.saturating_duration_since(tokio::time::Instant::now());
            match stream.try_next(left).await {
                Next::Item(Decoded::Event(frame)) => {
                    if let Some(event) = sent.iter().find(|e| e.id == frame.id) {
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

// ---------------------------------------------------------------------------
// Per-test context: schema, repository, publisher, servers
// ---------------------------------------------------------------------------

/// One test's world: its own schema (migrated by `decnet-events migrate`), a
/// repository on it for seeding, a publisher on the shared bus, and a secret.
pub(crate) struct Ctx {
    /// The bus flavour.
    pub(crate) flavor: Flavor,
    /// The shared PostgreSQL URL.
    pub(crate) pg_url: String,
    /// The schema of this test.
    pub(crate) schema: String,
    /// The URL the server gets (search_path = the schema).
    pub(crate) db_url: String,
    /// The shared bus URL.
    pub(crate) bus_url: String,
    /// The JWT secret of this test's servers.
    pub(crate) secret: String,
    /// Seeding access to the schema.
    pub(crate) repo: Repo,
    /// Publisher on the shared bus.
    pub(crate) bus: Bus,
    /// Output of the first `migrate`.
    pub(crate) migrate_output: String,
    // Last: dropped after everything holding connections into the schema.
    _schema_guard: SchemaGuard,
}

impl Ctx {
    /// The world for one test, or `None` (skipped) when PostgreSQL or the bus
    /// of `flavor` is not configured (fails instead under `CI`).
    pub(crate) async fn new(flavor: Flavor) -> Option<Ctx> {
        let pg_url = test_support::service_url(Service::Postgres)?;
        let bus_url = test_support::service_url(flavor.service())?;
        let (schema, guard) = pg::fresh_schema(&pg_url).await;
        let db_url = url_with_search_path(&pg_url, &schema);
        let migrated = migrate(&db_url).await;
        let repo = Repo::from(
            PgRepository::connect(PgConfig::new(pg_url.clone()).with_schema(schema.clone()))
                .expect("repository config"),
        );
        let bus = flavor.connect_bus(&bus_url).await;
        Some(Ctx {
            flavor,
            pg_url,
            schema,
            db_url,
            bus_url,
            secret: format!("e2e-{}", new_uuid()),
            repo,
            bus,
            migrate_output: migrated.stdout,
            _schema_guard: guard,
        })
    }

    /// The base env of a server for this test (bus, database, secret, tickets).
    pub(crate) fn server_env(&self) -> Vec<(String, String)> {
        let mut env = self.flavor.server_env(&self.bus_url);
        env.extend([
            ("DECNET_JWT_SECRET".to_owned(), self.secret.clone()),
            ("DECNET_DB_TYPE".to_owned(), "postgres".to_owned()),
            ("DECNET_DATABASE_URL".to_owned(), self.db_url.clone()),
        ]);
        env
    }

    /// Start a server with the base env plus `extra` (later entries win),
    /// wait until it is ready, and warm the bus path up (see [`Ctx::warm_up`]).
    pub(crate) async fn start_server(&self, extra: &[(&str, &str)]) -> TestServer {
        let mut env = self.server_env();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        self.start_server_with(&env, &self.bus).await
    }

    /// Start a server with exactly `env`, wait for it, and warm up with `bus`.
    pub(crate) async fn start_server_with(
        &self,
        env: &[(String, String)],
        bus: &Bus,
    ) -> TestServer {
        // A free port may be taken between the probe and the bind: retry then.
        for attempt in 0.. {
            let mut server = TestServer::spawn(env, Some("serve"), false);
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Some(status) = server.try_exit()
                && server.stderr().contains("binding")
                && attempt < 3
            {
                eprintln!("port race ({status:?}); retrying");
                continue;
            }
            server.wait_ready().await;
            self.warm_up(&server, bus).await;
            return server;
        }
        unreachable!()
    }

    /// Prove the whole bus path works before a case relies on it: open a
    /// stream on a throwaway attacker and publish until a frame arrives.
    pub(crate) async fn warm_up(&self, server: &TestServer, bus: &Bus) {
        let user = self.user("viewer").await;
        let attacker = self.attacker(None).await;
        let token = self.token(&user);
        let mut stream = server.open_with_bearer(&token, &attacker).await;
        stream.expect_snapshot().await;
        deliver_eventually(bus, &mut stream, Duration::from_secs(15), || {
            observation_event(&attacker, "warmup.probe", json!("probe"))
        })
        .await;
    }

    /// A new user with `role` (and `must_change_password` false); its uuid.
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
        self.repo.create_user(user).await.expect("create user");
    }

    /// A new attacker linked to `identity`; its uuid.
    pub(crate) async fn attacker(&self, identity: Option<&str>) -> String {
        let uuid = new_uuid();
        self.repo
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
        self.repo
            .upsert_observation(&row)
            .await
            .expect("store observation");
        row
    }

    /// A valid access token for `user` (1 h).
    pub(crate) fn token(&self, user: &str) -> String {
        self.token_claims(user, Duration::from_secs(3600)).0
    }

    /// A valid access token for `user` with `ttl`, and its claims.
    pub(crate) fn token_claims(&self, user: &str, ttl: Duration) -> (String, Claims) {
        decnet_auth::mint_access_token(self.secret.as_bytes(), user, ttl).expect("mint token")
    }

    /// Sign `claims` with this test's secret.
    pub(crate) fn sign(&self, claims: &Claims) -> String {
        decnet_auth::encode_claims(self.secret.as_bytes(), claims).expect("sign claims")
    }

    /// Sign arbitrary JSON claims with this test's secret.
    pub(crate) fn sign_value(&self, claims: &Value) -> String {
        decnet_auth::encode_claims(self.secret.as_bytes(), claims).expect("sign claims")
    }

    /// Valid claims for `user` (iat now, exp in 1 h, fresh jti).
    pub(crate) fn claims(&self, user: &str) -> Claims {
        let now = unix_now();
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

    /// Put `jti` on the revocation denylist (a row in `revoked_tokens`).
    pub(crate) async fn revoke(&self, claims: &Claims) {
        self.repo
            .revoke_token(
                &claims.jti,
                &claims.uuid,
                UNIX_EPOCH + Duration::from_secs(claims.exp),
            )
            .await
            .expect("revoke token");
    }
}
