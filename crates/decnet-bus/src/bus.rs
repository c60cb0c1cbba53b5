//! [`Bus`], the handle every caller uses, and [`Subscription`].

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, Stream};
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::backend::{Backend, ConnectionState, RawSubscription};
use crate::config::{BusConfig, BusKind};
use crate::error::{ConnectError, PublishError, SubscribeError};
use crate::event::{DEFAULT_MAX_MESSAGE_BYTES, Event};
use crate::memory::{MemoryBus, MemoryConfig};
use crate::null::NullBus;

/// Default bound on one publish, whatever the backend.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound on opening one subscription.
pub const DEFAULT_SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on closing the backend.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Messages a subscription may skip in one poll before yielding.
const SKIP_BUDGET: u32 = 128;

/// Settings the [`Bus`] handle applies on top of any backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusOptions {
    /// Largest envelope accepted, both when publishing and when decoding
    /// (larger received bodies are dropped and counted). Default 1 MiB.
    pub max_message_bytes: usize,
    /// Bound on one publish; past it the publish fails with
    /// [`PublishError::Transport`]. Default 5 s.
    pub publish_timeout: Duration,
    /// Bound on opening one subscription; past it the subscribe fails with
    /// [`SubscribeError::Transport`]. Default 10 s.
    pub subscribe_timeout: Duration,
    /// Bound on [`Bus::close`] waiting for the backend to close. Default 3 s.
    pub close_timeout: Duration,
}

impl Default for BusOptions {
    fn default() -> Self {
        BusOptions {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            subscribe_timeout: DEFAULT_SUBSCRIBE_TIMEOUT,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
        }
    }
}

/// A point-in-time copy of a bus's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Publishes the backend accepted.
    pub published: u64,
    /// Publishes that failed in the transport (logged).
    pub publish_failures: u64,
    /// Events handed to subscribers (one per subscription per event).
    pub received: u64,
    /// Received bodies dropped because they did not decode (logged).
    pub decode_failures: u64,
    /// Received messages dropped because the transport's subject is not a
    /// valid topic (a Redis channel with a control character, say; logged).
    pub invalid_topics: u64,
    /// Events the backend dropped (full subscriber queues, NATS slow consumers).
    pub dropped: u64,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    publish_failures: AtomicU64,
    received: AtomicU64,
    decode_failures: AtomicU64,
    invalid_topics: AtomicU64,
}

struct Inner {
    backend: Arc<dyn Backend>,
    options: BusOptions,
    counters: Counters,
    closed: watch::Sender<bool>,
}

/// The bus: one cheap-to-clone handle over one [`Backend`].
///
/// It owns what must be identical across transports: topic and pattern
/// validation, envelope encoding and decoding, the pattern re-check of every
/// received message, counters, and close semantics. Clones share everything.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("kind", &self.kind())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// A bus over `backend` with default [`BusOptions`].
    pub fn from_backend(backend: Arc<dyn Backend>) -> Bus {
        Bus::from_backend_with(backend, BusOptions::default())
    }

    /// A bus over `backend` with the given options.
    pub fn from_backend_with(backend: Arc<dyn Backend>, options: BusOptions) -> Bus {
        let (closed, _) = watch::channel(false);
        Bus {
            inner: Arc::new(Inner {
                backend,
                options,
                counters: Counters::default(),
                closed,
            }),
        }
    }

    /// The null bus ([`NullBus`]): publishes vanish, subscriptions end at once.
    pub fn null() -> Bus {
        Bus::from_backend(Arc::new(NullBus::new()))
    }

    /// An in-process bus ([`MemoryBus`]) with default settings.
    pub fn memory() -> Bus {
        Bus::memory_with(MemoryConfig::default())
    }

    /// An in-process bus ([`MemoryBus`]) with the given settings.
    pub fn memory_with(config: MemoryConfig) -> Bus {
        Bus::from_backend(Arc::new(MemoryBus::new(config)))
    }

    /// The bus `config` asks for.
    ///
    /// A NATS or Redis server, or DECNET's broker (`unix`), that is down is
    /// not an error: the bus starts in [`ConnectionState::Reconnecting`] and
    /// connects in the background.
    ///
    /// # Errors
    ///
    /// [`ConnectError::FeatureDisabled`] when the backend was not compiled in,
    /// [`ConnectError::UnsupportedPlatform`] for `unix` off Unix,
    /// [`ConnectError::InvalidUrl`] when its URL cannot be parsed,
    /// [`ConnectError::CustomBackend`] for [`BusKind::Custom`] (build those
    /// with [`Bus::from_backend`]).
    pub async fn connect(config: &BusConfig) -> Result<Bus, ConnectError> {
        let options = BusOptions {
            max_message_bytes: config.max_message_bytes,
            ..BusOptions::default()
        };
        let backend: Arc<dyn Backend> = match config.kind {
            BusKind::Custom(name) => return Err(ConnectError::CustomBackend { name }),
            BusKind::Null => Arc::new(NullBus::new()),
            BusKind::Memory => Arc::new(MemoryBus::new(MemoryConfig {
                queue_capacity: config.queue_capacity,
            })),
            #[cfg(feature = "nats")]
            BusKind::Nats => Arc::new(
                crate::nats_bus::NatsBus::connect(crate::nats_bus::NatsConfig {
                    url: config
                        .nats_url
                        .clone()
                        .unwrap_or_else(|| crate::config::DEFAULT_NATS_URL.to_owned()),
                    ..crate::nats_bus::NatsConfig::default()
                })
                .await?,
            ),
            #[cfg(not(feature = "nats"))]
            BusKind::Nats => {
                return Err(ConnectError::FeatureDisabled {
                    kind: "nats",
                    feature: "nats",
                });
            }
            #[cfg(feature = "redis")]
            BusKind::Redis => Arc::new(
                crate::redis_bus::RedisBus::connect(crate::redis_bus::RedisConfig {
                    url: config
                        .redis_url
                        .clone()
                        .unwrap_or_else(|| crate::config::DEFAULT_REDIS_URL.to_owned()),
                    queue_capacity: config.queue_capacity,
                    ..crate::redis_bus::RedisConfig::default()
                })
                .await?,
            ),
            #[cfg(not(feature = "redis"))]
            BusKind::Redis => {
                return Err(ConnectError::FeatureDisabled {
                    kind: "redis",
                    feature: "redis",
                });
            }
            #[cfg(unix)]
            BusKind::Unix => Arc::new(crate::unix_bus::UnixBus::connect(
                crate::unix_bus::UnixConfig {
                    socket_path: config.socket_path.clone().unwrap_or_else(|| {
                        std::path::PathBuf::from(crate::config::DEFAULT_SOCKET_PATH)
                    }),
                    queue_capacity: config.queue_capacity,
                    ..crate::unix_bus::UnixConfig::default()
                },
            )),
            #[cfg(not(unix))]
            BusKind::Unix => return Err(ConnectError::UnsupportedPlatform { kind: "unix" }),
        };
        Ok(Bus::from_backend_with(backend, options))
    }

    fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// Publish a new [`Event`] (fresh id, `ts` = now) on `topic`.
    ///
    /// # Errors
    ///
    /// See [`Bus::publish_event`].
    pub async fn publish(
        &self,
        topic: &str,
        event_type: &str,
        payload: Map<String, Value>,
    ) -> Result<(), PublishError> {
        self.publish_event(&Event::new(topic, event_type, payload))
            .await
    }

    /// Publish `event` on `event.topic`.
    ///
    /// Never panics and never blocks past [`BusOptions::publish_timeout`].
    /// Delivery is at-most-once: `Ok` means the transport took the message,
    /// not that anybody received it.
    ///
    /// # Errors
    ///
    /// [`PublishError::InvalidTopic`] for a topic that is not a valid concrete
    /// topic; [`PublishError::TooLarge`] when the envelope exceeds
    /// [`BusOptions::max_message_bytes`]; [`PublishError::Closed`] after
    /// [`Bus::close`]; [`PublishError::Transport`] when the transport fails
    /// (also logged with `tracing::warn!` and counted in
    /// [`CountersSnapshot::publish_failures`]).
    pub async fn publish_event(&self, event: &Event) -> Result<(), PublishError> {
        check_topic(&event.topic)?;
        if self.is_closed() {
            return Err(PublishError::Closed);
        }
        let body = event.to_json();
        let max = self.inner.options.max_message_bytes;
        if body.len() > max {
            return Err(PublishError::TooLarge {
                size: body.len(),
                max,
            });
        }
        self.send(&event.topic, Bytes::from(body)).await
    }

    /// Publish an arbitrary body on `topic`, bypassing the envelope.
    ///
    /// An escape hatch for tools and tests (e.g. proving that malformed
    /// bodies are dropped by subscribers); services publish with
    /// [`Bus::publish`]. No size check is made here.
    ///
    /// # Errors
    ///
    /// As [`Bus::publish_event`], without [`PublishError::TooLarge`].
    pub async fn publish_raw(&self, topic: &str, body: Bytes) -> Result<(), PublishError> {
        check_topic(topic)?;
        if self.is_closed() {
            return Err(PublishError::Closed);
        }
        self.send(topic, body).await
    }

    async fn send(&self, topic: &str, body: Bytes) -> Result<(), PublishError> {
        let inner = &self.inner;
        let res = match tokio::time::timeout(
            inner.options.publish_timeout,
            inner.backend.publish(topic, body),
        )
        .await
        {
            Ok(res) => res,
            Err(elapsed) => Err(PublishError::transport(elapsed)),
        };
        match res {
            Ok(()) => {
                inner.counters.published.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(PublishError::Closed) => Err(PublishError::Closed),
            Err(err) => {
                inner
                    .counters
                    .publish_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    bus = %inner.backend.kind(),
                    topic = %topic,
                    error = %ErrorChain(&err),
                    "bus publish failed"
                );
                Err(err)
            }
        }
    }

    /// Subscribe to `pattern` (NATS wildcards: `*` one token, `>` the rest).
    ///
    /// The subscription yields decoded [`Event`]s; malformed bodies are
    /// skipped (logged and counted). Dropping it unsubscribes.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::InvalidPattern`] for an invalid pattern;
    /// [`SubscribeError::Closed`] after [`Bus::close`];
    /// [`SubscribeError::Transport`] when the backend refuses or does not
    /// answer within [`BusOptions::subscribe_timeout`].
    pub async fn subscribe(&self, pattern: &str) -> Result<Subscription, SubscribeError> {
        if let Err(source) = decnet_topics::validate_pattern(pattern) {
            return Err(SubscribeError::InvalidPattern {
                pattern: pattern.to_owned(),
                source,
            });
        }
        if self.is_closed() {
            return Err(SubscribeError::Closed);
        }
        let raw = match tokio::time::timeout(
            self.inner.options.subscribe_timeout,
            self.inner.backend.subscribe(pattern),
        )
        .await
        {
            Ok(res) => res?,
            Err(elapsed) => return Err(SubscribeError::transport(elapsed)),
        };
        let mut closed = self.inner.closed.subscribe();
        let closed_signal = async move {
            if closed.wait_for(|closed| *closed).await.is_err() {
                // Cannot happen while the subscription holds the bus; never end.
                std::future::pending::<()>().await;
            }
        }
        .boxed();
        Ok(Subscription {
            raw: Some(raw),
            pattern: pattern.to_owned(),
            closed: closed_signal,
            bus: self.inner.clone(),
        })
    }

    /// The current connection state ([`ConnectionState::Closed`] after
    /// [`Bus::close`]).
    pub fn state(&self) -> ConnectionState {
        if self.is_closed() {
            return ConnectionState::Closed;
        }
        *self.inner.backend.state().borrow()
    }

    /// A watch of the backend's connection state, for readiness probes.
    ///
    /// The built-in backends move it to [`ConnectionState::Closed`] on
    /// [`Bus::close`]; [`Bus::state`] reports `Closed` after `close` whatever
    /// the backend does.
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.backend.state()
    }

    /// The counters so far.
    pub fn counters(&self) -> CountersSnapshot {
        let counters = &self.inner.counters;
        CountersSnapshot {
            published: counters.published.load(Ordering::Relaxed),
            publish_failures: counters.publish_failures.load(Ordering::Relaxed),
            received: counters.received.load(Ordering::Relaxed),
            decode_failures: counters.decode_failures.load(Ordering::Relaxed),
            invalid_topics: counters.invalid_topics.load(Ordering::Relaxed),
            dropped: self.inner.backend.dropped(),
        }
    }

    /// Close the bus: later publishes and subscribes fail with `Closed`, open
    /// subscriptions end, and the backend closes its connections. Idempotent.
    pub async fn close(&self) {
        let was_closed = self.inner.closed.send_replace(true);
        if was_closed {
            return;
        }
        if tokio::time::timeout(self.inner.options.close_timeout, self.inner.backend.close())
            .await
            .is_err()
        {
            tracing::warn!(bus = %self.kind(), "bus backend did not close in time");
        }
    }

    /// Which backend this bus runs on.
    pub fn kind(&self) -> BusKind {
        self.inner.backend.kind()
    }

    /// The options in force.
    pub fn options(&self) -> BusOptions {
        self.inner.options
    }
}

fn check_topic(topic: &str) -> Result<(), PublishError> {
    decnet_topics::validate_topic(topic).map_err(|source| PublishError::InvalidTopic {
        topic: topic.to_owned(),
        source,
    })
}

/// Displays an error with its sources, `a: b: c`.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

/// A live subscription: a `Stream` of decoded [`Event`]s.
///
/// Every raw message is re-checked against the pattern (non-matching ones
/// are skipped silently) and decoded with [`Event::decode`]; a body that
/// fails to decode is dropped with a `tracing::warn!` and counted in
/// [`CountersSnapshot::decode_failures`], and the stream goes on. The stream
/// ends when the bus is closed or the backend ends it (the null bus at once).
/// Dropping it unsubscribes.
pub struct Subscription {
    raw: Option<RawSubscription>,
    pattern: String,
    closed: BoxFuture<'static, ()>,
    bus: Arc<Inner>,
}

impl Subscription {
    /// The pattern this subscription was opened with.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("pattern", &self.pattern)
            .field("open", &self.raw.is_some())
            .finish_non_exhaustive()
    }
}

impl Stream for Subscription {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = &mut *self;
        if this.raw.is_none() {
            return Poll::Ready(None);
        }
        if this.closed.as_mut().poll(cx).is_ready() {
            this.raw = None; // unsubscribe now
            return Poll::Ready(None);
        }
        let Some(raw) = this.raw.as_mut() else {
            return Poll::Ready(None);
        };
        // Skipped (non-matching or malformed) messages in this poll: past a
        // budget, yield so a flood of garbage cannot hog the executor.
        let mut skipped = 0u32;
        loop {
            if skipped >= SKIP_BUDGET {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match Pin::new(&mut *raw).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.raw = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some((subject, body))) => {
                    let counters = &this.bus.counters;
                    if let Err(err) = decnet_topics::validate_topic(&subject) {
                        // A subject no publisher could use through a Bus: a
                        // Redis channel with CR/LF, say. It would end up in an
                        // SSE frame and in labels; drop it.
                        skipped += 1;
                        counters.invalid_topics.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            bus = %this.bus.backend.kind(),
                            topic = ?subject,
                            error = %err,
                            "dropped bus message with an invalid topic"
                        );
                        continue;
                    }
                    if !decnet_topics::matches(&this.pattern, &subject) {
                        skipped += 1;
                        continue; // e.g. a Redis glob over-match
                    }
                    match Event::decode(&subject, &body, this.bus.options.max_message_bytes) {
                        Ok(event) => {
                            counters.received.fetch_add(1, Ordering::Relaxed);
                            return Poll::Ready(Some(event));
                        }
                        Err(err) => {
                            skipped += 1;
                            counters.decode_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                bus = %this.bus.backend.kind(),
                                topic = %subject,
                                size = body.len(),
                                error = %err,
                                "dropped malformed bus message"
                            );
                        }
                    }
                }
            }
        }
    }
}
