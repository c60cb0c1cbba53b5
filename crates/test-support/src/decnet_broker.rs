//! A stand-in for DECNET's UNIX-socket bus broker (`decnet bus`), for tests
//! of the `unix` bus backend: the SERVER side of DECNET's protocol, written
//! from DECNET.md §1 and independently of the client codec in `decnet-bus`
//! (so that a parsing bug on one side cannot cancel itself out).
//!
//! What it does, following the checklist of DECNET.md §1.14:
//! - accepts connections on a socket path and never writes anything but
//!   `EVT` frames;
//! - parses frames as DECNET's reader does (header to the first LF, a line
//!   over 4096 bytes refused, trailing CR/LF run stripped, ASCII only, split
//!   at the first space, verbs case-sensitive; 4-byte big-endian length,
//!   over 1 MiB refused) and closes the connection, silently, on every
//!   condition of §1.7 ([`CloseReason`]);
//! - keeps a set of patterns per connection (`SUB` adds, `UNSUB` removes the
//!   exact string);
//! - on `PUB`, builds a new envelope (`v` 1, a fresh hex uuid4 `id`, its own
//!   float `ts`, the body's `payload` and `type` when truthy in Python's
//!   sense, else `{}` and `""`; a truthy list payload is forwarded as is)
//!   and queues `EVT <topic>` with the compact body in key order
//!   `v,id,topic,type,ts,payload` once for every OTHER connection with a
//!   matching pattern, using DECNET's matcher ([`decnet_matches`], with its
//!   `a.>.b` quirk);
//! - has one bounded drop-oldest queue (1024 frames) and one writer task per
//!   connection, so publishers never block;
//! - publishes `system.bus.health` heartbeats (`type` `bus.health`, payload
//!   `pid`, `uptime_sec`, `ts`) at start and every
//!   [`BrokerConfig::heartbeat_interval`] to everyone matching;
//! - chmods the socket 0660 (and chgrps it when asked), unlinks a stale
//!   socket at start and the socket at [`TestBroker::stop`].
//!
//! It can be killed like a crashed process ([`TestBroker::kill`]: every
//! connection dropped at once, the socket file left behind) and restarted
//! on the same path ([`TestBroker::restart`]).
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use test_support::decnet_broker::TestBroker;
//! let mut broker = TestBroker::start_in_temp_dir().await?;
//! let path = broker.path().to_owned(); // give this to the client under test
//! broker.kill().await; // clients see the connection drop
//! broker.restart().await?; // same path again
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinSet};

/// Largest header line DECNET accepts, LF included.
const HEADER_LIMIT: usize = 4096;
/// Largest body DECNET accepts (inclusive).
const BODY_LIMIT: u64 = 1024 * 1024;
/// asyncio's default `StreamReader` limit: a line without LF longer than
/// this fails before any LF arrives.
const STREAM_LIMIT: usize = 64 * 1024;
/// DECNET's per-connection outbound queue.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// DECNET's default heartbeat interval (`decnet bus --heartbeat`).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// DECNET's socket mode.
pub const SOCKET_MODE: u32 = 0o660;
/// The heartbeat topic.
pub const HEALTH_TOPIC: &str = "system.bus.health";

/// Settings of a [`TestBroker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Time between two `system.bus.health` heartbeats (the first is sent
    /// at start). Default 10 s.
    pub heartbeat_interval: Duration,
    /// Frames queued per connection before the oldest is dropped. Default 1024.
    pub queue_capacity: usize,
    /// Group id to give the socket (best effort, as DECNET's `--group`).
    pub group: Option<u32>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            group: None,
        }
    }
}

/// Why the broker closed a connection (it never says so on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The verb is not one of HELLO PUB SUB UNSUB EVT BYE.
    UnknownVerb(String),
    /// The header line is empty once trailing CR/LF are stripped.
    EmptyHeader,
    /// The header line is longer than 4096 bytes (or no LF within 64 KiB).
    HeaderTooLong,
    /// The header line holds a byte outside ASCII.
    NonAsciiHeader,
    /// The length prefix announces more than 1 MiB.
    BodyTooLarge(u32),
    /// `PUB` without a topic.
    PubWithoutTopic,
    /// `SUB` without a pattern.
    SubWithoutPattern,
    /// A `PUB` body that is not valid JSON.
    BodyNotJson,
    /// A `PUB` body that is JSON but not an object.
    BodyNotObject,
    /// A client sent `EVT`.
    EvtFromClient,
    /// The stream ended inside a header line.
    EofMidHeader,
    /// The stream ended inside the length or the body (DECNET logs this at
    /// debug level only; the wire effect is the same).
    EofMidFrame,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A point-in-time view of the broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Connections open now.
    pub connections: usize,
    /// Connections accepted since the first start.
    pub accepted: u64,
    /// Events fanned out (publishes and heartbeats), since the first start.
    pub events: u64,
    /// Frames dropped from full queues (oldest first), since the first start.
    pub dropped: u64,
    /// Connections closed for a protocol error, in order, since the first start.
    pub closes: Vec<CloseReason>,
}

/// One open connection, as the broker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The broker's id for it (increasing).
    pub id: u64,
    /// The last non-empty `HELLO` name, or `<unknown>`.
    pub name: String,
    /// Its patterns, sorted.
    pub patterns: Vec<String>,
}

/// DECNET's wildcard matcher (`base.py` `matches`): token by token on `.`;
/// `*` is one non-empty token; `>` matches as soon as it is reached when at
/// least one topic token remains there (so `a.>.b` behaves like `a.>`);
/// otherwise both must have as many tokens.
pub fn decnet_matches(pattern: &str, topic: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let topic: Vec<&str> = topic.split('.').collect();
    for (i, token) in pattern.iter().enumerate() {
        if *token == ">" {
            return i < topic.len();
        }
        let Some(topic_token) = topic.get(i) else {
            return false;
        };
        if *token == "*" {
            if topic_token.is_empty() {
                return false;
            }
            continue;
        }
        if token != topic_token {
            return false;
        }
    }
    pattern.len() == topic.len()
}

/// Python's truthiness of a JSON value.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Python's `str.isspace()` on an ASCII byte.
fn python_space(byte: u8) -> bool {
    byte == b' ' || (0x09..=0x0d).contains(&byte) || (0x1c..=0x1f).contains(&byte)
}

fn now_float() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    events: AtomicU64,
    dropped: AtomicU64,
    // std Mutex: pushed to or copied, never held across .await.
    closes: Mutex<Vec<CloseReason>>,
}

/// One connection's outbound queue: drop-oldest, drained by one writer.
struct Outbound {
    // std Mutex: held for a push or a pop only.
    frames: Mutex<VecDeque<Bytes>>,
    ready: Notify,
    capacity: usize,
}

impl Outbound {
    /// Queue a frame; returns whether the oldest one was dropped for it.
    fn push(&self, frame: Bytes) -> bool {
        let dropped = {
            let mut frames = self.frames.lock().unwrap_or_else(|e| e.into_inner());
            let dropped = frames.len() >= self.capacity && frames.pop_front().is_some();
            frames.push_back(frame);
            dropped
        };
        self.ready.notify_one();
        dropped
    }

    fn pop(&self) -> Option<Bytes> {
        self.frames
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }
}

struct Connection {
    name: String,
    patterns: HashSet<String>,
    outbound: Arc<Outbound>,
}

/// The state of one running broker (a restart makes a new one).
struct Core {
    // std Mutex: every fan-out, SUB and UNSUB takes it briefly (never across
    // .await), which orders them all as DECNET's single event loop does.
    connections: Mutex<HashMap<u64, Connection>>,
    next_id: AtomicU64,
    counters: Arc<Counters>,
    queue_capacity: usize,
    // std Mutex: held to spawn or to take the set, never across .await.
    tasks: Mutex<Tasks>,
}

struct Tasks {
    set: JoinSet<()>,
    killed: bool,
}

impl Core {
    /// Spawn a task that `kill` will abort; none once killed.
    fn spawn(
        &self,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Option<AbortHandle> {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if tasks.killed {
            return None;
        }
        while tasks.set.try_join_next().is_some() {}
        Some(tasks.set.spawn(task))
    }

    fn record_close(&self, reason: CloseReason) {
        self.counters
            .closes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(reason);
    }

    /// Build and queue `EVT <topic>` for every matching connection except
    /// `origin` (DECNET's `_fanout`).
    fn fan_out(&self, topic: &str, event_type: Value, payload: Value, origin: Option<u64>) {
        let mut body = Map::new();
        body.insert("v".into(), Value::from(1));
        body.insert(
            "id".into(),
            Value::from(uuid::Uuid::new_v4().simple().to_string()),
        );
        body.insert("topic".into(), Value::from(topic));
        body.insert("type".into(), event_type);
        body.insert("ts".into(), Value::from(now_float()));
        body.insert("payload".into(), payload);
        let Ok(body) = serde_json::to_vec(&body) else {
            return;
        };
        // DECNET's encoder: args without CR/LF, header within the limit,
        // body within the limit; otherwise the event is dropped for everyone.
        if topic.contains(['\r', '\n']) {
            return;
        }
        let mut header = format!("EVT {topic}").into_bytes();
        while header.last().is_some_and(|b| python_space(*b)) {
            header.pop();
        }
        header.push(b'\n');
        let Ok(len) = u32::try_from(body.len()) else {
            return;
        };
        if header.len() > HEADER_LIMIT || u64::from(len) > BODY_LIMIT {
            return;
        }
        let mut frame = header;
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&body);
        let frame = Bytes::from(frame);
        self.counters.events.fetch_add(1, Ordering::Relaxed);
        let connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        for (id, connection) in connections.iter() {
            if Some(*id) == origin {
                continue;
            }
            if connection
                .patterns
                .iter()
                .any(|pattern| decnet_matches(pattern, topic))
                && connection.outbound.push(frame.clone())
            {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// What one complete client frame asks for.
enum Step {
    Continue,
    /// BYE or a clean end of stream.
    End,
}

/// Buffered reading with asyncio `StreamReader` semantics.
struct FrameReader {
    read: OwnedReadHalf,
    buf: Vec<u8>,
}

impl FrameReader {
    /// Read more bytes; `Ok(false)` at end of stream.
    async fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.read.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// `readuntil(b"\n")`: the line with its LF, `None` on a clean end.
    async fn line(&mut self) -> Result<Option<Vec<u8>>, Option<CloseReason>> {
        loop {
            if let Some(lf) = self.buf.iter().position(|b| *b == b'\n') {
                let rest = self.buf.split_off(lf + 1);
                return Ok(Some(std::mem::replace(&mut self.buf, rest)));
            }
            if self.buf.len() > STREAM_LIMIT {
                return Err(Some(CloseReason::HeaderTooLong));
            }
            match self.fill().await {
                Ok(true) => {}
                Ok(false) if self.buf.is_empty() => return Ok(None),
                Ok(false) => return Err(Some(CloseReason::EofMidHeader)),
                Err(_) => return Err(None),
            }
        }
    }

    /// `readexactly(n)`.
    async fn exactly(&mut self, n: usize) -> Result<Vec<u8>, Option<CloseReason>> {
        while self.buf.len() < n {
            match self.fill().await {
                Ok(true) => {}
                Ok(false) => return Err(Some(CloseReason::EofMidFrame)),
                Err(_) => return Err(None),
            }
        }
        let rest = self.buf.split_off(n);
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    /// One frame: verb, trimmed args, body. `Ok(None)` on a clean end.
    async fn frame(&mut self) -> Result<Option<(String, String, Vec<u8>)>, Option<CloseReason>> {
        let Some(line) = self.line().await? else {
            return Ok(None);
        };
        if line.len() > HEADER_LIMIT {
            return Err(Some(CloseReason::HeaderTooLong));
        }
        let mut end = line.len();
        while end > 0 && (line[end - 1] == b'\r' || line[end - 1] == b'\n') {
            end -= 1;
        }
        let Ok(text) = std::str::from_utf8(&line[..end]) else {
            return Err(Some(CloseReason::NonAsciiHeader));
        };
        if !text.is_ascii() {
            return Err(Some(CloseReason::NonAsciiHeader));
        }
        if text.is_empty() {
            return Err(Some(CloseReason::EmptyHeader));
        }
        let (verb, rest) = text.split_once(' ').unwrap_or((text, ""));
        if !["HELLO", "PUB", "SUB", "UNSUB", "EVT", "BYE"].contains(&verb) {
            return Err(Some(CloseReason::UnknownVerb(verb.to_owned())));
        }
        let prefix = self.exactly(4).await?;
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if u64::from(len) > BODY_LIMIT {
            return Err(Some(CloseReason::BodyTooLarge(len)));
        }
        let body = match usize::try_from(len) {
            Ok(0) => Vec::new(),
            Ok(n) => self.exactly(n).await?,
            Err(_) => return Err(Some(CloseReason::BodyTooLarge(len))),
        };
        let args = rest.trim_matches(|c: char| c.is_ascii() && python_space(c as u8));
        Ok(Some((verb.to_owned(), args.to_owned(), body)))
    }
}

/// Serve one client connection until it ends or breaks the protocol.
async fn serve_connection(core: Arc<Core>, stream: UnixStream) {
    let id = core.next_id.fetch_add(1, Ordering::Relaxed);
    let (read, write) = stream.into_split();
    let outbound = Arc::new(Outbound {
        frames: Mutex::new(VecDeque::new()),
        ready: Notify::new(),
        capacity: core.queue_capacity.max(1),
    });
    core.connections
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            id,
            Connection {
                name: "<unknown>".into(),
                patterns: HashSet::new(),
                outbound: outbound.clone(),
            },
        );
    let writer = core.spawn(write_loop(write, outbound));
    let mut reader = FrameReader {
        read,
        buf: Vec::new(),
    };
    let reason = loop {
        match reader.frame().await {
            Ok(Some((verb, args, body))) => match dispatch(&core, id, &verb, &args, &body) {
                Ok(Step::Continue) => {}
                Ok(Step::End) => break None,
                Err(reason) => break Some(reason),
            },
            Ok(None) => break None,
            Err(reason) => break reason,
        }
    };
    if let Some(reason) = reason {
        core.record_close(reason);
    }
    // Queued EVTs are abandoned; dropping both halves closes the socket.
    core.connections
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
    if let Some(writer) = writer {
        writer.abort();
    }
}

/// DECNET's `_dispatch` for one frame.
fn dispatch(
    core: &Core,
    id: u64,
    verb: &str,
    args: &str,
    body: &[u8],
) -> Result<Step, CloseReason> {
    match verb {
        "HELLO" => {
            if !args.is_empty()
                && let Some(connection) = core
                    .connections
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(&id)
            {
                connection.name = args.to_owned();
            }
            Ok(Step::Continue)
        }
        "SUB" => {
            if args.is_empty() {
                return Err(CloseReason::SubWithoutPattern);
            }
            if let Some(connection) = core
                .connections
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&id)
            {
                connection.patterns.insert(args.to_owned());
            }
            Ok(Step::Continue)
        }
        "UNSUB" => {
            if let Some(connection) = core
                .connections
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&id)
            {
                connection.patterns.remove(args);
            }
            Ok(Step::Continue)
        }
        "PUB" => {
            if args.is_empty() {
                return Err(CloseReason::PubWithoutTopic);
            }
            let data = if body.is_empty() {
                Map::new()
            } else {
                match serde_json::from_slice::<Value>(body) {
                    Ok(Value::Object(map)) => map,
                    Ok(_) => return Err(CloseReason::BodyNotObject),
                    Err(_) => return Err(CloseReason::BodyNotJson),
                }
            };
            let payload = data
                .get("payload")
                .filter(|v| truthy(v))
                .cloned()
                .unwrap_or_else(|| Value::Object(Map::new()));
            let event_type = data
                .get("type")
                .filter(|v| truthy(v))
                .cloned()
                .unwrap_or_else(|| Value::from(""));
            core.fan_out(args, event_type, payload, Some(id));
            Ok(Step::Continue)
        }
        "BYE" => Ok(Step::End),
        // EVT: server-to-client only.
        _ => Err(CloseReason::EvtFromClient),
    }
}

/// Write a connection's queued frames, one at a time.
async fn write_loop(mut write: OwnedWriteHalf, outbound: Arc<Outbound>) {
    loop {
        let ready = outbound.ready.notified();
        match outbound.pop() {
            Some(frame) => {
                if write.write_all(&frame).await.is_err() {
                    return;
                }
            }
            None => ready.await,
        }
    }
}

async fn accept_loop(core: Arc<Core>, listener: UnixListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // EMFILE and friends: back off a little and keep serving.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        core.counters.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = core.spawn(serve_connection(core.clone(), stream));
    }
}

/// Fan out one `system.bus.health` heartbeat (no origin: everyone matching).
fn heartbeat(core: &Core, started: Instant) {
    let uptime = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    let mut payload = Map::new();
    payload.insert("pid".into(), Value::from(std::process::id()));
    payload.insert("uptime_sec".into(), Value::from(uptime));
    payload.insert("ts".into(), Value::from(now_float()));
    core.fan_out(
        HEALTH_TOPIC,
        Value::from("bus.health"),
        Value::Object(payload),
        None,
    );
}

/// Every `interval` after the first (sent at start by `launch`).
async fn heartbeat_loop(core: Arc<Core>, started: Instant, interval: Duration) {
    let interval = interval.max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        ticks.tick().await;
        heartbeat(&core, started);
    }
}

/// A running (or killed) stand-in broker on one socket path.
///
/// Dropping it aborts every task and removes the socket (and the temporary
/// directory of [`TestBroker::start_in_temp_dir`]).
pub struct TestBroker {
    path: PathBuf,
    config: BrokerConfig,
    counters: Arc<Counters>,
    core: Option<Arc<Core>>,
    temp_dir: Option<PathBuf>,
}

impl fmt::Debug for TestBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestBroker")
            .field("path", &self.path)
            .field("running", &self.core.is_some())
            .finish_non_exhaustive()
    }
}

impl TestBroker {
    /// Start on `path` with default settings.
    ///
    /// # Errors
    ///
    /// As [`TestBroker::start_with`].
    pub async fn start(path: impl Into<PathBuf>) -> io::Result<TestBroker> {
        TestBroker::start_with(path, BrokerConfig::default()).await
    }

    /// Start on `path`: the parent directory must exist (as for DECNET's
    /// server); a stale socket file there is removed first.
    ///
    /// # Errors
    ///
    /// The parent directory is missing, or binding the socket fails (e.g. a
    /// file that is not a socket is in the way).
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub async fn start_with(
        path: impl Into<PathBuf>,
        config: BrokerConfig,
    ) -> io::Result<TestBroker> {
        let mut broker = TestBroker {
            path: path.into(),
            config,
            counters: Arc::new(Counters::default()),
            core: None,
            temp_dir: None,
        };
        broker.launch()?;
        Ok(broker)
    }

    /// Start in a fresh private temporary directory (socket `bus.sock`),
    /// removed when the broker is dropped.
    ///
    /// # Errors
    ///
    /// As [`TestBroker::start_with`].
    pub async fn start_in_temp_dir() -> io::Result<TestBroker> {
        TestBroker::start_in_temp_dir_with(BrokerConfig::default()).await
    }

    /// [`TestBroker::start_in_temp_dir`] with settings.
    ///
    /// # Errors
    ///
    /// As [`TestBroker::start_with`].
    pub async fn start_in_temp_dir_with(config: BrokerConfig) -> io::Result<TestBroker> {
        let dir = std::env::temp_dir().join(format!("decnet-bus-{}", crate::unique_suffix()));
        std::fs::create_dir_all(&dir)?;
        match TestBroker::start_with(dir.join("bus.sock"), config).await {
            Ok(mut broker) => {
                broker.temp_dir = Some(dir);
                Ok(broker)
            }
            Err(err) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(err)
            }
        }
    }

    fn launch(&mut self) -> io::Result<()> {
        let parent = self.path.parent().unwrap_or_else(|| Path::new("/"));
        if !parent.as_os_str().is_empty() && !parent.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "bus socket parent directory {} does not exist",
                    parent.display()
                ),
            ));
        }
        if std::fs::metadata(&self.path).is_ok_and(|m| m.file_type().is_socket()) {
            std::fs::remove_file(&self.path)?;
        }
        let listener = UnixListener::bind(&self.path)?;
        if std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(SOCKET_MODE))
            .is_err()
        {
            // DECNET logs and goes on.
        }
        if let Some(gid) = self.config.group {
            let _ = std::os::unix::fs::chown(&self.path, None, Some(gid));
        }
        let core = Arc::new(Core {
            connections: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            counters: self.counters.clone(),
            queue_capacity: self.config.queue_capacity,
            tasks: Mutex::new(Tasks {
                set: JoinSet::new(),
                killed: false,
            }),
        });
        // The first heartbeat goes out at start, before any client is served.
        let started = Instant::now();
        heartbeat(&core, started);
        let _ = core.spawn(heartbeat_loop(
            core.clone(),
            started,
            self.config.heartbeat_interval,
        ));
        let _ = core.spawn(accept_loop(core.clone(), listener));
        self.core = Some(core);
        Ok(())
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it is running (started and not killed or stopped).
    pub fn is_running(&self) -> bool {
        self.core.is_some()
    }

    /// Kill it like a crashed process: stop accepting, drop every
    /// connection at once (queued frames are lost), leave the socket file
    /// in place (connecting to it is then refused). Returns once every
    /// connection is closed. No-op when not running.
    pub async fn kill(&mut self) {
        let Some(core) = self.core.take() else {
            return;
        };
        let mut set = {
            let mut tasks = core.tasks.lock().unwrap_or_else(|e| e.into_inner());
            tasks.killed = true;
            std::mem::take(&mut tasks.set)
        };
        set.abort_all();
        while set.join_next().await.is_some() {}
        core.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Stop it cleanly: as [`TestBroker::kill`], then remove the socket file.
    pub async fn stop(&mut self) {
        self.kill().await;
        let _ = std::fs::remove_file(&self.path);
    }

    /// Kill it if running, then start again on the same path (the stale
    /// socket is removed first). Counters carry on.
    ///
    /// # Errors
    ///
    /// As [`TestBroker::start_with`].
    pub async fn restart(&mut self) -> io::Result<()> {
        self.kill().await;
        self.launch()
    }

    /// Counters and open connections.
    pub fn stats(&self) -> BrokerStats {
        let connections = self.core.as_ref().map_or(0, |core| {
            core.connections
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len()
        });
        BrokerStats {
            connections,
            accepted: self.counters.accepted.load(Ordering::Relaxed),
            events: self.counters.events.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            closes: self
                .counters
                .closes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// The open connections, by id.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let Some(core) = &self.core else {
            return Vec::new();
        };
        let connections = core.connections.lock().unwrap_or_else(|e| e.into_inner());
        let mut infos: Vec<ConnectionInfo> = connections
            .iter()
            .map(|(id, connection)| {
                let mut patterns: Vec<String> = connection.patterns.iter().cloned().collect();
                patterns.sort();
                ConnectionInfo {
                    id: *id,
                    name: connection.name.clone(),
                    patterns,
                }
            })
            .collect();
        infos.sort_by_key(|info| info.id);
        infos
    }

    /// Wait until `condition` holds for the broker, polling every 5 ms;
    /// `false` when `within` passed first.
    pub async fn wait_until(
        &self,
        within: Duration,
        condition: impl Fn(&TestBroker) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if condition(self) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(core) = self.core.take() {
            let mut tasks = core.tasks.lock().unwrap_or_else(|e| e.into_inner());
            tasks.killed = true;
            tasks.set.abort_all();
        }
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = &self.temp_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
