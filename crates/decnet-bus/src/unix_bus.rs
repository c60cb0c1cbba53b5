//! The `unix` backend: a client of DECNET's own UNIX-socket bus broker
//! (`decnet bus`), compiled on Unix without a cargo feature.
//!
//! Wire: [`crate::unix_proto`]. The broker never answers anything (no
//! acknowledgements, no errors: it closes the connection on any protocol
//! violation), stamps every event itself (`v` 1, a fresh `id`, its own
//! `ts`) and delivers it as `EVT <topic>` to every OTHER connection with a
//! matching pattern, once per connection.
//!
//! # Two connections
//!
//! DECNET's broker never delivers an event to the connection that published
//! it, while every other backend of this crate delivers a bus's own
//! publishes to its own subscriptions (and the services rely on that, e.g.
//! an event this process publishes reaches its own streams). So a
//! [`UnixBus`] opens TWO connections, each starting with
//! `HELLO decnet-events`:
//! - the subscriber connection carries `SUB` / `UNSUB` and receives `EVT`;
//! - the publisher connection carries only `PUB` (the broker sees it as
//!   the origin, so the subscriber connection, being another connection,
//!   gets this process's own events like anybody else's).
//!
//! Both are owned by one background task; when either is lost, both are
//! dropped and re-opened together.
//!
//! # Subscribing
//!
//! Local subscriptions are reference-counted per exact pattern: `SUB` is
//! sent for the first one, `UNSUB` when the last one is dropped (the drop
//! only sends a command to the task, which does the I/O). Every `EVT` is
//! handed, topic from the header, to every local subscription whose pattern
//! matches (bounded drop-oldest queues, [`UnixConfig::queue_capacity`]); an
//! empty `EVT` body is handed on as `{}`, as DECNET decodes it.
//!
//! The protocol has no acknowledgement, so an event published right after a
//! bare `SUB` could be missed. [`Backend::subscribe`] therefore returns only
//! once the `SUB` is known to be processed: after the `SUB` it sends `SUB`
//! for a private probe topic on the same connection, then publishes a probe
//! on the publisher connection (again every 5 ms doubling to 100 ms) until
//! it comes back. The broker handles each connection's frames in order, so
//! the probe coming back proves the real `SUB` was processed. The probe is
//! then `UNSUB`scribed. One probe round confirms every `SUB` sent before it,
//! so concurrent subscribes share rounds. Bounds: a round gives up after
//! [`UnixConfig::confirm_timeout`] (the subscription is then returned
//! anyway, with a warning: the `SUB` was sent); while disconnected,
//! `subscribe` returns at once and the `SUB` goes out on reconnect.
//!
//! Probe topics are `_decnet_events.probe.<instance>.<n>`, unique per bus
//! and round, under the reserved root [`RESERVED_ROOT`]: an `EVT` under it
//! is never handed to a local subscription (of this or any other
//! `decnet-events`), so probes never reach our consumers. A DECNET consumer
//! subscribed to `>` does see them; their `type` is `decnet-events.probe`.
//!
//! # Publishing
//!
//! `PUB <topic>` with the body `{"type": .., "payload": ..}` taken from the
//! envelope the [`crate::Bus`] hands over (the broker ignores the rest).
//! What DECNET's broker would answer by closing the connection is refused
//! before sending, with [`PublishError::Rejected`]: a body that is not a
//! JSON object (also an empty one), a topic that is not ASCII or makes the
//! header longer than 4096 bytes; a re-encoded body over 1 MiB is
//! [`PublishError::TooLarge`]. A truthy non-object `payload` (a list, a
//! string) IS sent: the broker forwards it and receivers drop it.
//!
//! While disconnected, `publish` fails at once with
//! [`PublishError::Transport`] (delivery is at-most-once). Every write is
//! bounded by [`UnixConfig::write_timeout`]; a write that makes no progress
//! for that long drops both connections.
//!
//! # Reconnecting
//!
//! Unlike DECNET's own client, which never reconnects, the task reconnects
//! with exponential backoff ([`UnixConfig::min_backoff`] 100 ms doubling to
//! [`UnixConfig::max_backoff`] 5 s; a connection that lived less than a
//! second counts as a failure, so a broker that accepts and closes at once
//! is not hammered), re-sends `HELLO` and every `SUB`, and reports
//! [`ConnectionState::Reconnecting`] meanwhile and
//! [`ConnectionState::Connected`] once both connections are open, so
//! readiness probes and the stream hub behave as with NATS and Redis.
//! Events published while the broker is down are lost.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backend::{Backend, ConnectionState, RawSubscription};
use crate::config::{BusKind, DEFAULT_SOCKET_PATH};
use crate::error::{PublishError, SubscribeError};
use crate::memory::DEFAULT_QUEUE_CAPACITY;
use crate::queue::DropOldestQueue;
use crate::router::{self, Command, Commands, Flow, Inbox, Router as _};
use crate::unix_proto::{self, EncodeError, FrameDecoder, MAX_BODY_BYTES, Verb};

/// The `HELLO` name this backend sends by default.
pub const DEFAULT_CLIENT_NAME: &str = "decnet-events";

/// The topic root reserved for this backend's subscribe probes: events
/// under it are never delivered to a subscription of a `unix` bus.
pub const RESERVED_ROOT: &str = "_decnet_events";

/// Body of a probe publish.
const PROBE_BODY: &[u8] = br#"{"type":"decnet-events.probe"}"#;
/// First and largest interval between two probe publishes of one round.
const PROBE_FIRST_INTERVAL: Duration = Duration::from_millis(5);
const PROBE_MAX_INTERVAL: Duration = Duration::from_millis(100);
/// A connection that lived less than this counts as a failed attempt.
const STABLE_CONNECTION: Duration = Duration::from_secs(1);
/// Publishes queued for the publisher connection before `publish` waits.
const PUBLISH_QUEUE: usize = 1024;
/// Bytes of queued publishes written in one go.
const PUBLISH_BATCH_BYTES: usize = 64 * 1024;
/// Read buffer growth step of the subscriber connection.
const READ_CHUNK: usize = 64 * 1024;
/// Bound on the best-effort `BYE` at close.
const BYE_TIMEOUT: Duration = Duration::from_millis(200);

/// Settings of a [`UnixBus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixConfig {
    /// The broker's socket (see [`crate::resolve_socket_path`]).
    pub socket_path: PathBuf,
    /// The `HELLO` name (the broker's logs show it); ASCII, one line.
    pub client_name: String,
    /// Events buffered per subscription before the oldest is dropped.
    pub queue_capacity: usize,
    /// Bound on opening both connections and sending `HELLO` and the `SUB`s.
    pub connect_timeout: Duration,
    /// Bound on one write to either connection; past it both are dropped
    /// and re-opened.
    pub write_timeout: Duration,
    /// Bound on one subscribe confirmation (see the module docs).
    pub confirm_timeout: Duration,
    /// First reconnect delay.
    pub min_backoff: Duration,
    /// Longest reconnect delay.
    pub max_backoff: Duration,
}

impl Default for UnixConfig {
    fn default() -> Self {
        UnixConfig {
            socket_path: PathBuf::from(DEFAULT_SOCKET_PATH),
            client_name: DEFAULT_CLIENT_NAME.to_owned(),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            connect_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(2),
            confirm_timeout: Duration::from_secs(2),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Whether `dir` is a directory this process may write (`access(W_OK)`
/// for the real uid, as Python's `os.access`): DECNET's probe before it
/// uses `/run/decnet/bus.sock`. The real probe for
/// [`crate::resolve_socket_path`].
pub fn runtime_dir_is_writable(dir: &Path) -> bool {
    dir.is_dir() && rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
}

/// Whether `topic` lies under [`RESERVED_ROOT`].
fn is_reserved(topic: &str) -> bool {
    topic
        .strip_prefix(RESERVED_ROOT)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// The `PUB` body for an envelope: `{"type": .., "payload": ..}` with the
/// keys the envelope has.
fn publish_body(envelope: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let value: Value = serde_json::from_slice(envelope).map_err(|err| {
        if envelope.is_empty() {
            EncodeError::BodyNotObject("empty body".to_owned())
        } else {
            EncodeError::BodyNotObject(err.to_string())
        }
    })?;
    let Value::Object(mut envelope) = value else {
        return Err(EncodeError::BodyNotObject(format!(
            "a JSON {}",
            json_kind(&value)
        )));
    };
    let mut body = Map::new();
    for key in ["type", "payload"] {
        if let Some(value) = envelope.remove(key) {
            body.insert(key.to_owned(), value);
        }
    }
    serde_json::to_vec(&body).map_err(|err| EncodeError::BodyNotObject(err.to_string()))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The whole `PUB` frame for `topic` and an envelope.
fn publish_frame(topic: &str, envelope: &[u8]) -> Result<Bytes, PublishError> {
    let body = publish_body(envelope).map_err(|err| PublishError::Rejected(Box::new(err)))?;
    if body.len() > MAX_BODY_BYTES {
        return Err(PublishError::TooLarge {
            size: body.len(),
            max: MAX_BODY_BYTES,
        });
    }
    unix_proto::encode(Verb::Pub, topic, &body).map_err(|err| PublishError::Rejected(Box::new(err)))
}

fn not_connected() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "not connected to the DECNET bus socket",
    )
}

fn connection_lost() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection to the DECNET bus socket lost",
    )
}

/// One queued publish: the frame, and who waits for the write.
struct PublishRequest {
    frame: Bytes,
    done: Option<oneshot::Sender<io::Result<()>>>,
}

/// What the bus handle and its task share.
struct Shared {
    state: watch::Sender<ConnectionState>,
    // std Mutex: held only to clone or replace the sender, never across .await.
    publisher: Mutex<Option<mpsc::Sender<PublishRequest>>>,
}

impl Shared {
    fn set_publisher(&self, publisher: Option<mpsc::Sender<PublishRequest>>) {
        *self.publisher.lock().unwrap_or_else(|e| e.into_inner()) = publisher;
    }

    fn publisher(&self) -> Option<mpsc::Sender<PublishRequest>> {
        self.publisher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A client of DECNET's UNIX-socket broker (see the module docs).
pub struct UnixBus {
    shared: Arc<Shared>,
    commands: Commands,
    config: UnixConfig,
}

impl std::fmt::Debug for UnixBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixBus")
            .field("state", &*self.shared.state.borrow())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl UnixBus {
    /// Create the bus and start its task, which connects in the background
    /// (state `Reconnecting` until both connections are open; a broker that
    /// is down, or a socket that does not exist yet, is not an error).
    ///
    /// A `client_name` that cannot be sent (not ASCII, a line break, too
    /// long) is replaced by [`DEFAULT_CLIENT_NAME`].
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (the task is a Tokio task).
    pub fn connect(mut config: UnixConfig) -> UnixBus {
        if unix_proto::encode(Verb::Hello, &config.client_name, b"").is_err() {
            tracing::warn!(
                bus = "unix",
                "client name cannot be sent in a HELLO frame; using {DEFAULT_CLIENT_NAME}"
            );
            config.client_name = DEFAULT_CLIENT_NAME.to_owned();
        }
        let (state, _) = watch::channel(ConnectionState::Reconnecting);
        let shared = Arc::new(Shared {
            state,
            publisher: Mutex::new(None),
        });
        let (commands, inbox) = Commands::channel(config.queue_capacity);
        let driver = Driver {
            config: config.clone(),
            inbox,
            shared: shared.clone(),
            patterns: HashMap::new(),
            route_patterns: HashMap::new(),
            seq: 0,
            confirmed_seq: 0,
            waiters: Vec::new(),
            round: None,
            instance: crate::event::new_event_id(),
            rounds: 0,
        };
        tokio::spawn(driver.run());
        UnixBus {
            shared,
            commands,
            config,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &UnixConfig {
        &self.config
    }
}

impl Backend for UnixBus {
    fn publish(&self, topic: &str, body: Bytes) -> BoxFuture<'_, Result<(), PublishError>> {
        let frame = publish_frame(topic, &body);
        async move {
            let frame = frame?;
            let Some(publisher) = self.shared.publisher() else {
                return Err(PublishError::transport(not_connected()));
            };
            let (done, result) = oneshot::channel();
            let request = PublishRequest {
                frame,
                done: Some(done),
            };
            if publisher.send(request).await.is_err() {
                return Err(PublishError::transport(connection_lost()));
            }
            match result.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => Err(PublishError::transport(err)),
                Err(_) => Err(PublishError::transport(connection_lost())),
            }
        }
        .boxed()
    }

    fn subscribe(&self, pattern: &str) -> BoxFuture<'_, Result<RawSubscription, SubscribeError>> {
        let sendable = unix_proto::encode(Verb::Sub, pattern, b"")
            .map(drop)
            .map_err(|err| SubscribeError::Rejected(Box::new(err)));
        let pattern = pattern.to_owned();
        async move {
            sendable?;
            // Answered once the SUB is confirmed (or at once while
            // disconnected: it is sent on reconnect).
            self.commands.subscribe(pattern).await
        }
        .boxed()
    }

    fn state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        async move {
            self.shared.set_publisher(None);
            self.commands.close().await;
            self.shared.state.send_replace(ConnectionState::Closed);
        }
        .boxed()
    }

    fn kind(&self) -> BusKind {
        BusKind::Unix
    }

    fn dropped(&self) -> u64 {
        self.commands.dropped()
    }
}

// === the connection task ===

/// The local subscriptions of one exact pattern.
struct PatternEntry {
    routes: Vec<(u64, Arc<DropOldestQueue>)>,
    /// Sequence number of the last `SUB` sent for it (0: not sent yet).
    sent_seq: u64,
}

/// One subscribe-confirmation round in flight.
struct ProbeRound {
    topic: String,
    /// Every `SUB` with a sequence number up to this was sent before the
    /// probe's own `SUB`.
    covers: u64,
    deadline: Instant,
    next_publish: Instant,
    interval: Duration,
}

/// Both open connections.
struct Link {
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    buf: BytesMut,
    decoder: FrameDecoder,
    /// For probe publishes (the bus handle gets a clone through `Shared`).
    publisher: mpsc::Sender<PublishRequest>,
    publisher_task: JoinHandle<()>,
    /// Resolves when the publisher task ends (its connection was lost).
    publisher_lost: oneshot::Receiver<()>,
    opened: Instant,
}

struct Driver {
    config: UnixConfig,
    inbox: Inbox,
    shared: Arc<Shared>,
    patterns: HashMap<String, PatternEntry>,
    route_patterns: HashMap<u64, String>,
    /// Sequence number of the last `SUB` sent (monotonic across connections).
    seq: u64,
    /// Every `SUB` up to this sequence number is known to be processed.
    confirmed_seq: u64,
    /// Subscribers waiting for the `SUB` of the given sequence number.
    waiters: Vec<(u64, oneshot::Sender<()>)>,
    round: Option<ProbeRound>,
    instance: String,
    rounds: u64,
}

impl Driver {
    async fn run(mut self) {
        let mut backoff = self.config.min_backoff;
        loop {
            let opened = tokio::time::timeout(self.config.connect_timeout, self.open()).await;
            let flow = match opened {
                Ok(Ok(mut link)) => {
                    self.shared.set_publisher(Some(link.publisher.clone()));
                    self.set_state(ConnectionState::Connected);
                    tracing::info!(
                        bus = "unix",
                        socket = %self.config.socket_path.display(),
                        "bus connected"
                    );
                    let flow = self.serve(&mut link).await;
                    let lived = link.opened.elapsed();
                    self.disconnect(link);
                    match flow {
                        Flow::Stop => Flow::Stop,
                        Flow::Retry => {
                            tracing::warn!(bus = "unix", "bus connection lost, reconnecting");
                            self.set_state(ConnectionState::Reconnecting);
                            if lived >= STABLE_CONNECTION {
                                backoff = self.config.min_backoff;
                                Flow::Retry
                            } else {
                                let flow = self.idle(backoff).await;
                                backoff = (backoff * 2).min(self.config.max_backoff);
                                flow
                            }
                        }
                    }
                }
                failed => {
                    let reason = match failed {
                        Ok(Err(err)) => err.to_string(),
                        _ => "timed out".to_owned(),
                    };
                    tracing::warn!(
                        bus = "unix",
                        socket = %self.config.socket_path.display(),
                        error = %reason,
                        retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                        "bus connection failed"
                    );
                    self.set_state(ConnectionState::Reconnecting);
                    let flow = self.idle(backoff).await;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    flow
                }
            };
            if matches!(flow, Flow::Stop) {
                break;
            }
        }
        for entry in self.patterns.values() {
            for (_, queue) in &entry.routes {
                queue.close();
            }
        }
        self.patterns.clear();
        self.route_patterns.clear();
        self.release_waiters(u64::MAX);
        self.shared.set_publisher(None);
        self.shared.state.send_replace(ConnectionState::Closed);
        self.inbox.closed();
    }

    fn set_state(&self, next: ConnectionState) {
        router::set_state(&self.shared.state, next);
    }

    /// Open both connections: `HELLO` and every `SUB` on the subscriber
    /// connection, `HELLO` on the publisher connection.
    async fn open(&mut self) -> io::Result<Link> {
        let path = self.config.socket_path.clone();
        let subscriber = UnixStream::connect(&path).await?;
        let publisher = UnixStream::connect(&path).await?;
        let hello = unix_proto::encode(Verb::Hello, &self.config.client_name, b"")
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        let mut greeting = BytesMut::from(&hello[..]);
        for (pattern, entry) in &mut self.patterns {
            let frame = unix_proto::encode(Verb::Sub, pattern, b"")
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
            greeting.extend_from_slice(&frame);
            self.seq += 1;
            entry.sent_seq = self.seq;
        }
        let (read, mut write) = subscriber.into_split();
        write.write_all(&greeting).await?;
        let (publisher_read, mut publisher_write) = publisher.into_split();
        publisher_write.write_all(&hello).await?;
        let (requests, receiver) = mpsc::channel(PUBLISH_QUEUE);
        let (lost, publisher_lost) = oneshot::channel();
        let publisher_task = tokio::spawn(run_publisher(
            publisher_read,
            publisher_write,
            receiver,
            lost,
            self.config.write_timeout,
        ));
        Ok(Link {
            read,
            write,
            buf: BytesMut::with_capacity(READ_CHUNK),
            decoder: FrameDecoder::new(),
            publisher: requests,
            publisher_task,
            publisher_lost,
            opened: Instant::now(),
        })
    }

    /// Forget a lost (or closed) connection: publishes fail fast from now
    /// on, and subscribers still waiting for a confirmation get their
    /// subscription (the `SUB` goes out again on reconnect).
    fn disconnect(&mut self, link: Link) {
        self.shared.set_publisher(None);
        link.publisher_task.abort();
        self.round = None;
        self.release_waiters(u64::MAX);
    }

    /// Answer every waiter whose `SUB` sequence number is at most `upto`.
    fn release_waiters(&mut self, upto: u64) {
        let waiters = std::mem::take(&mut self.waiters);
        for (needed, ack) in waiters {
            if needed <= upto {
                let _ = ack.send(());
            } else {
                self.waiters.push((needed, ack));
            }
        }
    }

    /// Register a route; returns whether its pattern is new (needs `SUB`).
    fn add_route(&mut self, id: u64, pattern: String, queue: Arc<DropOldestQueue>) -> bool {
        let entry = self
            .patterns
            .entry(pattern.clone())
            .or_insert_with(|| PatternEntry {
                routes: Vec::new(),
                sent_seq: 0,
            });
        entry.routes.push((id, queue));
        let is_new = entry.routes.len() == 1;
        self.route_patterns.insert(id, pattern);
        is_new
    }

    /// Remove a route; returns its pattern when no route uses it any more
    /// (needs `UNSUB`).
    fn remove_route(&mut self, id: u64) -> Option<String> {
        let pattern = self.route_patterns.remove(&id)?;
        let entry = self.patterns.get_mut(&pattern)?;
        if let Some(position) = entry.routes.iter().position(|(route, _)| *route == id) {
            let (_, queue) = entry.routes.swap_remove(position);
            queue.close();
        }
        if entry.routes.is_empty() {
            self.patterns.remove(&pattern);
            Some(pattern)
        } else {
            None
        }
    }

    /// Serve commands, events and probes on a live link until it is lost.
    async fn serve(&mut self, link: &mut Link) -> Flow {
        loop {
            if link.buf.capacity() - link.buf.len() < unix_proto::MAX_HEADER_BYTES {
                link.buf.reserve(READ_CHUNK);
            }
            let probe_at = self
                .round
                .as_ref()
                .map(|round| round.next_publish.min(round.deadline));
            let step = tokio::select! {
                biased;
                command = self.inbox.recv() => self.on_command(command, link).await,
                _ = &mut link.publisher_lost => Err(Flow::Retry),
                read = link.read.read_buf(&mut link.buf) => match read {
                    Ok(0) => {
                        if let Err(err) = link.decoder.finish(&link.buf) {
                            tracing::debug!(bus = "unix", error = %err, "bus closed the connection mid-frame");
                        }
                        Err(Flow::Retry)
                    }
                    Ok(_) => self.on_bytes(link).await,
                    Err(err) => {
                        tracing::debug!(bus = "unix", error = %err, "bus read failed");
                        Err(Flow::Retry)
                    }
                },
                () = sleep_until(probe_at) => self.on_probe_timer(link).await,
            };
            if let Err(flow) = step {
                return flow;
            }
        }
    }

    async fn on_command(&mut self, command: Option<Command>, link: &mut Link) -> Result<(), Flow> {
        match command {
            None => Err(Flow::Stop),
            Some(Command::Close { ack }) => {
                if let Ok(bye) = unix_proto::encode(Verb::Bye, "", b"") {
                    let _ = tokio::time::timeout(BYE_TIMEOUT, link.write.write_all(&bye)).await;
                }
                Err(self.inbox.closing(ack))
            }
            Some(Command::Subscribe {
                id,
                pattern,
                queue,
                ack,
            }) => {
                if self.add_route(id, pattern.clone(), queue) {
                    let res = self.send(link, Verb::Sub, &pattern).await;
                    self.seq += 1;
                    if let Some(entry) = self.patterns.get_mut(&pattern) {
                        entry.sent_seq = self.seq;
                    }
                    if res.is_err() {
                        // Answered by `disconnect`; the SUB goes out on reconnect.
                        self.waiters.push((self.seq, ack));
                        return res;
                    }
                }
                let needed = self.patterns.get(&pattern).map_or(0, |e| e.sent_seq);
                if needed <= self.confirmed_seq {
                    let _ = ack.send(());
                    return Ok(());
                }
                self.waiters.push((needed, ack));
                if self.round.is_none() {
                    self.start_round(link).await?;
                }
                Ok(())
            }
            Some(Command::Unsubscribe { id }) => match self.remove_route(id) {
                Some(pattern) => self.send(link, Verb::Unsub, &pattern).await,
                None => Ok(()),
            },
        }
    }

    /// Write one control frame on the subscriber connection, bounded.
    async fn send(&self, link: &mut Link, verb: Verb, args: &str) -> Result<(), Flow> {
        // Patterns and probe topics were checked to be encodable.
        let Ok(frame) = unix_proto::encode(verb, args, b"") else {
            return Ok(());
        };
        match tokio::time::timeout(self.config.write_timeout, link.write.write_all(&frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => {
                tracing::debug!(bus = "unix", error = %err, "bus write failed");
                Err(Flow::Retry)
            }
            Err(_) => {
                tracing::warn!(bus = "unix", "bus write made no progress in time");
                Err(Flow::Retry)
            }
        }
    }

    /// Start a probe round covering every `SUB` sent so far.
    async fn start_round(&mut self, link: &mut Link) -> Result<(), Flow> {
        self.rounds += 1;
        let topic = format!("{RESERVED_ROOT}.probe.{}.{}", self.instance, self.rounds);
        self.send(link, Verb::Sub, &topic).await?;
        let now = Instant::now();
        self.round = Some(ProbeRound {
            topic,
            covers: self.seq,
            deadline: now + self.config.confirm_timeout,
            next_publish: now,
            interval: PROBE_FIRST_INTERVAL,
        });
        Ok(())
    }

    /// End the current round (its probe came back, or it timed out).
    async fn finish_round(&mut self, link: &mut Link, confirmed: bool) -> Result<(), Flow> {
        let Some(round) = self.round.take() else {
            return Ok(());
        };
        if confirmed {
            self.confirmed_seq = self.confirmed_seq.max(round.covers);
        } else {
            tracing::warn!(
                bus = "unix",
                timeout_ms =
                    u64::try_from(self.config.confirm_timeout.as_millis()).unwrap_or(u64::MAX),
                "bus subscription not confirmed in time; going on without confirmation"
            );
        }
        self.release_waiters(round.covers);
        self.send(link, Verb::Unsub, &round.topic).await?;
        if !self.waiters.is_empty() {
            self.start_round(link).await?;
        }
        Ok(())
    }

    async fn on_probe_timer(&mut self, link: &mut Link) -> Result<(), Flow> {
        let now = Instant::now();
        let Some(round) = self.round.as_mut() else {
            return Ok(());
        };
        if now >= round.deadline {
            return self.finish_round(link, false).await;
        }
        if let Ok(frame) = unix_proto::encode(Verb::Pub, &round.topic, PROBE_BODY) {
            // A full queue skips this probe; the next one follows.
            let _ = link
                .publisher
                .try_send(PublishRequest { frame, done: None });
        }
        round.next_publish = now + round.interval;
        round.interval = (round.interval * 2).min(PROBE_MAX_INTERVAL);
        Ok(())
    }

    /// Decode and handle every complete frame received.
    async fn on_bytes(&mut self, link: &mut Link) -> Result<(), Flow> {
        loop {
            match link.decoder.decode(&mut link.buf) {
                Ok(None) => return Ok(()),
                Ok(Some(frame)) => match frame.verb {
                    Verb::Evt => self.on_event(link, frame.args, frame.body).await?,
                    Verb::Bye => return Err(Flow::Retry),
                    verb => {
                        tracing::warn!(bus = "unix", verb = %verb, "unexpected frame from the bus, ignored");
                    }
                },
                Err(err) => {
                    tracing::warn!(bus = "unix", error = %err, "malformed frame from the bus, reconnecting");
                    return Err(Flow::Retry);
                }
            }
        }
    }

    async fn on_event(&mut self, link: &mut Link, topic: String, body: Bytes) -> Result<(), Flow> {
        if is_reserved(&topic) {
            if self
                .round
                .as_ref()
                .is_some_and(|round| round.topic == topic)
            {
                return self.finish_round(link, true).await;
            }
            return Ok(());
        }
        let body = if body.is_empty() {
            Bytes::from_static(b"{}")
        } else {
            body
        };
        for (pattern, entry) in &self.patterns {
            if decnet_topics::matches(pattern, &topic) {
                for (_, queue) in &entry.routes {
                    queue.push(topic.clone(), body.clone());
                }
            }
        }
        Ok(())
    }
}

impl router::Router for Driver {
    fn inbox(&mut self) -> &mut Inbox {
        &mut self.inbox
    }

    fn register(&mut self, id: u64, pattern: String, queue: Arc<DropOldestQueue>) {
        let _ = self.add_route(id, pattern, queue);
    }

    fn unregister(&mut self, id: u64) {
        let _ = self.remove_route(id);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Own the publisher connection: write queued publishes (in batches, each
/// write bounded), watch for the broker closing it, and end — dropping
/// `lost` — when it fails or every sender is gone (then with a `BYE`).
async fn run_publisher(
    mut read: OwnedReadHalf,
    mut write: OwnedWriteHalf,
    mut requests: mpsc::Receiver<PublishRequest>,
    lost: oneshot::Sender<()>,
    write_timeout: Duration,
) {
    let mut scratch = [0u8; 512];
    let mut batch: Vec<PublishRequest> = Vec::new();
    let mut bytes = BytesMut::new();
    loop {
        tokio::select! {
            request = requests.recv() => {
                let Some(request) = request else {
                    if let Ok(bye) = unix_proto::encode(Verb::Bye, "", b"") {
                        let _ = tokio::time::timeout(BYE_TIMEOUT, write.write_all(&bye)).await;
                    }
                    break;
                };
                let mut size = request.frame.len();
                batch.push(request);
                while size < PUBLISH_BATCH_BYTES {
                    let Ok(request) = requests.try_recv() else { break };
                    size += request.frame.len();
                    batch.push(request);
                }
                bytes.clear();
                for request in &batch {
                    bytes.extend_from_slice(&request.frame);
                }
                let res = match tokio::time::timeout(write_timeout, write.write_all(&bytes)).await {
                    Ok(res) => res,
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "write to the DECNET bus socket made no progress in time",
                    )),
                };
                for request in batch.drain(..) {
                    if let Some(done) = request.done {
                        let _ = done.send(match &res {
                            Ok(()) => Ok(()),
                            Err(err) => Err(io::Error::new(err.kind(), err.to_string())),
                        });
                    }
                }
                if let Err(err) = res {
                    tracing::debug!(bus = "unix", error = %err, "bus publish write failed");
                    break;
                }
                if bytes.capacity() > 4 * PUBLISH_BATCH_BYTES {
                    bytes = BytesMut::new();
                }
            }
            // The broker never writes here (this connection subscribes to
            // nothing): a read only ever tells that it closed.
            read = read.read(&mut scratch) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
        }
    }
    drop(lost);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_body_keeps_type_and_payload_only() {
        let envelope = br#"{"v":1,"id":"abc","topic":"t","type":"scored","ts":1.5,"payload":{"b":1,"a":[2]},"x":0}"#;
        let body = publish_body(envelope).unwrap_or_default();
        assert_eq!(body, br#"{"type":"scored","payload":{"b":1,"a":[2]}}"#);
        assert_eq!(publish_body(b"{}").unwrap_or_default(), b"{}");
        // A non-object payload is carried: the broker forwards it, receivers drop it.
        assert_eq!(
            publish_body(br#"{"payload":[1]}"#).unwrap_or_default(),
            br#"{"payload":[1]}"#
        );
    }

    #[test]
    fn publish_body_refuses_what_the_broker_would_close_on() {
        for bad in [
            &b""[..],
            b"not json",
            b"[1,2]",
            b"\"s\"",
            b"3",
            b"null",
            b"{\"a\":",
        ] {
            assert!(
                matches!(publish_body(bad), Err(EncodeError::BodyNotObject(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn publish_frame_limits() {
        let ok = publish_frame("a.b", br#"{"type":"x","payload":{}}"#);
        assert_eq!(
            ok.ok().as_deref(),
            Some(&b"PUB a.b\n\0\0\0\x19{\"type\":\"x\",\"payload\":{}}"[..])
        );
        assert!(matches!(
            publish_frame("caf\u{e9}.b", b"{}"),
            Err(PublishError::Rejected(_))
        ));
        let long_topic = "a".repeat(unix_proto::MAX_HEADER_BYTES);
        assert!(matches!(
            publish_frame(&long_topic, b"{}"),
            Err(PublishError::Rejected(_))
        ));
        let big = format!(
            r#"{{"payload":{{"pad":"{}"}}}}"#,
            "x".repeat(MAX_BODY_BYTES)
        );
        assert!(matches!(
            publish_frame("a", big.as_bytes()),
            Err(PublishError::TooLarge { .. })
        ));
    }

    #[test]
    fn reserved_root() {
        assert!(is_reserved("_decnet_events"));
        assert!(is_reserved("_decnet_events.probe.x.1"));
        assert!(!is_reserved("_decnet_eventsx.a"));
        assert!(!is_reserved("system.bus.health"));
    }

    #[test]
    fn runtime_dir_probe() {
        let dir = std::env::temp_dir();
        assert!(runtime_dir_is_writable(&dir));
        assert!(!runtime_dir_is_writable(Path::new("/nonexistent/decnet")));
        // A file is not a directory, writable or not.
        let file = dir.join(format!("decnet-probe-{}", crate::event::new_event_id()));
        assert!(std::fs::write(&file, b"x").is_ok());
        assert!(!runtime_dir_is_writable(&file));
        let _ = std::fs::remove_file(&file);
    }
}
