//! Redis pub/sub backend (feature `redis`).
//!
//! Publishing: `PUBLISH <topic> <body>` on one cached multiplexed connection
//! whose commands are bounded by [`RedisConfig::response_timeout`], dropped
//! and re-opened after any failure (a Redis that is down answers a publish
//! with a transport error within about a second; the [`crate::Bus`] bounds
//! the whole call as for every backend).
//!
//! Subscribing: ONE pub/sub connection per [`RedisBus`], owned by a
//! background router task. Each subscription registers with the router,
//! which reference-counts `PSUBSCRIBE`/`PUNSUBSCRIBE` per glob (see
//! [`crate::nats_pattern_to_redis_glob`]), routes each `pmessage` to the
//! subscriptions of the glob it matched (so overlapping patterns never
//! deliver duplicates) after re-checking the NATS pattern, and pushes into a
//! bounded drop-oldest queue per subscription. When the connection is lost
//! (end of stream, or a failed keep-alive `PING`) the router reconnects with
//! exponential backoff (100 ms doubling to 5 s) and re-issues every
//! `PSUBSCRIBE`; open subscriptions carry on. Events published while the
//! connection is down are lost (at-most-once).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use tokio::sync::watch;

use crate::backend::{Backend, ConnectionState, RawSubscription};
use crate::config::{BusKind, DEFAULT_REDIS_URL};
use crate::error::{ConnectError, PublishError, SubscribeError};
use crate::glob::nats_pattern_to_redis_glob;
use crate::memory::DEFAULT_QUEUE_CAPACITY;
use crate::queue::DropOldestQueue;
use crate::router::{self, Command, Commands, Flow, Inbox, Router as _};

/// Settings of a [`RedisBus`].
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` (never logged).
    pub url: String,
    /// Events buffered per subscription before the oldest is dropped.
    pub queue_capacity: usize,
    /// Bound on opening one connection.
    pub connect_timeout: Duration,
    /// Bound on one command (`PUBLISH`, `PSUBSCRIBE`, `PING`).
    pub response_timeout: Duration,
    /// First reconnect delay of the pub/sub connection.
    pub min_backoff: Duration,
    /// Longest reconnect delay of the pub/sub connection.
    pub max_backoff: Duration,
    /// How often the idle pub/sub connection is checked with `PING`.
    pub ping_interval: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: DEFAULT_REDIS_URL.to_owned(),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &"<redacted>")
            .field("queue_capacity", &self.queue_capacity)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("min_backoff", &self.min_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("ping_interval", &self.ping_interval)
            .finish()
    }
}

/// The Redis pub/sub transport (see the module docs for the design).
pub struct RedisBus {
    client: redis::Client,
    // std Mutex: held only to clone or replace the handle, never across .await.
    publisher: Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
    commands: Commands,
    state: Arc<watch::Sender<ConnectionState>>,
    config: RedisConfig,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("state", &*self.state.borrow())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisBus {
    /// Create the bus and start its router task, which connects in the
    /// background (state `Reconnecting` until it does).
    ///
    /// # Errors
    ///
    /// [`ConnectError::InvalidUrl`] when the URL cannot be parsed.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (the router is a Tokio task).
    pub async fn connect(config: RedisConfig) -> Result<RedisBus, ConnectError> {
        let client =
            redis::Client::open(config.url.as_str()).map_err(|err| ConnectError::InvalidUrl {
                kind: "redis",
                source: Box::new(err),
            })?;
        let (state, _) = watch::channel(ConnectionState::Reconnecting);
        let state = Arc::new(state);
        let (commands, inbox) = Commands::channel(config.queue_capacity);
        let router = Router {
            client: client.clone(),
            inbox,
            state: state.clone(),
            routes: HashMap::new(),
            globs: HashMap::new(),
            config: config.clone(),
        };
        tokio::spawn(router.run());
        Ok(RedisBus {
            client,
            publisher: Mutex::new(None),
            generation: AtomicU64::new(0),
            commands,
            state,
            config,
        })
    }

    fn cached_publisher(&self) -> Option<(u64, MultiplexedConnection)> {
        self.publisher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn publisher(&self) -> Result<(u64, MultiplexedConnection), PublishError> {
        if let Some(cached) = self.cached_publisher() {
            return Ok(cached);
        }
        let connection_config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(Some(self.config.response_timeout));
        let connection = tokio::time::timeout(
            self.config.connect_timeout + self.config.response_timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&connection_config),
        )
        .await
        .map_err(PublishError::transport)?
        .map_err(PublishError::transport)?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let mut slot = self.publisher.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            // Another publisher won the race: use its connection.
            Some(existing) => Ok(existing.clone()),
            None => {
                *slot = Some((generation, connection.clone()));
                Ok((generation, connection))
            }
        }
    }

    /// Forget the cached connection if it is still `generation`.
    fn discard_publisher(&self, generation: u64) {
        let mut slot = self.publisher.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
            *slot = None;
        }
    }
}

impl Backend for RedisBus {
    fn publish(&self, topic: &str, body: Bytes) -> BoxFuture<'_, Result<(), PublishError>> {
        let topic = topic.to_owned();
        async move {
            let (generation, mut connection) = self.publisher().await?;
            let res = redis::cmd("PUBLISH")
                .arg(&topic)
                .arg(body.as_ref())
                .query_async::<i64>(&mut connection)
                .await;
            res.map(drop).map_err(|err| {
                self.discard_publisher(generation);
                PublishError::transport(err)
            })
        }
        .boxed()
    }

    fn subscribe(&self, pattern: &str) -> BoxFuture<'_, Result<RawSubscription, SubscribeError>> {
        // The router answers once the PSUBSCRIBE is confirmed (or at once
        // while disconnected: it is re-issued on reconnect).
        self.commands.subscribe(pattern.to_owned()).boxed()
    }

    fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        async move {
            *self.publisher.lock().unwrap_or_else(|e| e.into_inner()) = None;
            self.commands.close().await;
            self.state.send_replace(ConnectionState::Closed);
        }
        .boxed()
    }

    fn kind(&self) -> BusKind {
        BusKind::Redis
    }

    fn dropped(&self) -> u64 {
        self.commands.dropped()
    }
}

// === the router task ===

struct Route {
    pattern: String,
    glob: String,
    queue: Arc<DropOldestQueue>,
}

struct Router {
    client: redis::Client,
    inbox: Inbox,
    state: Arc<watch::Sender<ConnectionState>>,
    routes: HashMap<u64, Route>,
    /// PSUBSCRIBEd glob -> number of routes using it.
    globs: HashMap<String, usize>,
    config: RedisConfig,
}

impl Router {
    async fn run(mut self) {
        let mut backoff = self.config.min_backoff;
        loop {
            let opened = tokio::time::timeout(
                self.config.connect_timeout + self.config.response_timeout,
                self.open(),
            )
            .await;
            let flow = match opened {
                Ok(Ok((sink, stream))) => {
                    backoff = self.config.min_backoff;
                    self.set_state(ConnectionState::Connected);
                    tracing::info!(bus = "redis", "bus connected");
                    let flow = self.serve(sink, stream).await;
                    if matches!(flow, Flow::Retry) {
                        tracing::warn!(bus = "redis", "bus connection lost, reconnecting");
                        self.set_state(ConnectionState::Reconnecting);
                    }
                    flow
                }
                failed => {
                    let reason = match failed {
                        Ok(Err(err)) => err.to_string(),
                        _ => "timed out".to_owned(),
                    };
                    tracing::warn!(
                        bus = "redis",
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
        for route in self.routes.values() {
            route.queue.close();
        }
        self.routes.clear();
        self.state.send_replace(ConnectionState::Closed);
        self.inbox.closed();
    }

    fn set_state(&self, next: ConnectionState) {
        router::set_state(&self.state, next);
    }

    /// Open the pub/sub connection and re-issue every PSUBSCRIBE.
    async fn open(&self) -> redis::RedisResult<(PubSubSink, PubSubStream)> {
        let pubsub = self.client.get_async_pubsub().await?;
        let (mut sink, stream) = pubsub.split();
        if !self.globs.is_empty() {
            let globs: Vec<&str> = self.globs.keys().map(String::as_str).collect();
            sink.psubscribe(globs).await?;
        }
        Ok((sink, stream))
    }

    /// Register a route; returns the glob when it is new (needs PSUBSCRIBE).
    fn add(&mut self, id: u64, pattern: String, queue: Arc<DropOldestQueue>) -> Option<String> {
        let glob = nats_pattern_to_redis_glob(&pattern);
        let count = self.globs.entry(glob.clone()).or_insert(0);
        *count += 1;
        let is_new = *count == 1;
        self.routes.insert(
            id,
            Route {
                pattern,
                glob: glob.clone(),
                queue,
            },
        );
        is_new.then_some(glob)
    }

    /// Remove a route; returns the glob when no route uses it any more
    /// (needs PUNSUBSCRIBE).
    fn remove(&mut self, id: u64) -> Option<String> {
        let route = self.routes.remove(&id)?;
        route.queue.close();
        let count = self.globs.get_mut(&route.glob)?;
        *count -= 1;
        if *count == 0 {
            self.globs.remove(&route.glob);
            Some(route.glob)
        } else {
            None
        }
    }

    fn route(&self, message: &redis::Msg) {
        // Only pmessages carry a pattern; we never SUBSCRIBE plain channels.
        let Ok(glob) = message.get_pattern::<String>() else {
            return;
        };
        let channel = message.get_channel_name();
        let mut body: Option<Bytes> = None;
        for route in self.routes.values() {
            if route.glob == glob && decnet_topics::matches(&route.pattern, channel) {
                let body =
                    body.get_or_insert_with(|| Bytes::copy_from_slice(message.get_payload_bytes()));
                route.queue.push(channel.to_owned(), body.clone());
            }
        }
    }

    /// Serve commands and messages on a live connection until it is lost.
    async fn serve(&mut self, mut sink: PubSubSink, mut stream: PubSubStream) -> Flow {
        let timeout = self.config.response_timeout;
        let mut ping = tokio::time::interval(self.config.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await; // the first tick is immediate
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => self.route(&message),
                    None => return Flow::Retry,
                },
                command = self.inbox.recv() => match command {
                    None => return Flow::Stop,
                    Some(Command::Close { ack }) => return self.inbox.closing(ack),
                    Some(Command::Subscribe { id, pattern, queue, ack }) => {
                        let flow = match self.add(id, pattern, queue) {
                            Some(glob) => {
                                match tokio::time::timeout(timeout, sink.psubscribe(&glob)).await {
                                    Ok(Ok(())) => None,
                                    _ => Some(Flow::Retry),
                                }
                            }
                            None => None,
                        };
                        let _ = ack.send(());
                        if let Some(flow) = flow {
                            return flow;
                        }
                    }
                    Some(Command::Unsubscribe { id }) => {
                        if let Some(glob) = self.remove(id) {
                            match tokio::time::timeout(timeout, sink.punsubscribe(&glob)).await {
                                Ok(Ok(())) => {}
                                _ => return Flow::Retry,
                            }
                        }
                    }
                },
                _ = ping.tick() => {
                    match tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        _ => return Flow::Retry,
                    }
                }
            }
        }
    }
}

impl router::Router for Router {
    fn inbox(&mut self) -> &mut Inbox {
        &mut self.inbox
    }

    fn register(&mut self, id: u64, pattern: String, queue: Arc<DropOldestQueue>) {
        let _ = self.add(id, pattern, queue);
    }

    fn unregister(&mut self, id: u64) {
        let _ = self.remove(id);
    }
}
