//! The DECNET message bus: the event envelope and one `Bus` over memory,
//! null, NATS, Redis and DECNET's own UNIX-socket broker.
//!
//! What it is: the [`Event`] envelope (wire JSON, lenient simd-json decoding
//! with DECNET's defaults), the [`Bus`] handle that publishes and subscribes
//! with NATS wildcard patterns, and five transports behind one [`Backend`]
//! trait: [`MemoryBus`] (in-process, the default), [`NullBus`] (bus
//! disabled), `NatsBus` (feature `nats`, async-nats), `RedisBus` (feature
//! `redis`, Redis pub/sub) and `UnixBus` (Unix only, no feature: a client of
//! DECNET's `decnet bus` broker, whose frame codec is [`unix_proto`]). What
//! it is not: a durable queue (no JetStream,
//! no Redis streams, no acknowledgements or replay), a topic registry (see
//! `decnet-topics`), or a configuration reader (it takes a [`BusConfig`];
//! [`BusConfig::from_lookup`] maps environment-style variables through a
//! closure, and only the binary reads the real environment).
//!
//! Main types:
//! - [`Event`]: `{v, id, topic, type, ts, payload}`; [`Event::decode`] and
//!   [`DecodeError`];
//! - [`Bus`]: `publish`, `publish_event`, `publish_raw`, `subscribe`,
//!   `state` / `watch_state`, `counters`, `close`, `kind`;
//! - [`Subscription`]: a `futures::Stream<Item = Event>`; dropping it
//!   unsubscribes;
//! - [`Backend`] and [`RawSubscription`]: the transport seam;
//! - [`BusConfig`] / [`BusKind`], the `ENV_*` constants and
//!   [`resolve_socket_path`] (DECNET's socket path order);
//! - [`unix_proto`]: DECNET's bus frames ([`unix_proto::FrameDecoder`],
//!   [`unix_proto::encode`], [`unix_proto::FrameError`]).
//!
//! ```
//! use futures::StreamExt;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = decnet_bus::Bus::memory();
//! let mut subscription = bus.subscribe("attacker.observation.>").await?;
//! let mut payload = serde_json::Map::new();
//! payload.insert("attacker_uuid".into(), "a1".into());
//! bus.publish("attacker.observation.motor.typing", "observation", payload).await?;
//! let event = subscription.next().await.ok_or("ended")?;
//! assert_eq!(event.topic, "attacker.observation.motor.typing");
//! assert_eq!(event.event_type, "observation");
//! # Ok(())
//! # }
//! ```
//!
//! # Why `Arc<dyn Backend>` and not an enum
//!
//! The service holds ONE bus chosen at run time from configuration, and
//! DECNET services that embed this crate must be able to bring their own
//! transport. A closed `enum Bus { Nats(..), Redis(..), .. }` (the STYLE.md
//! default) cannot be extended outside the crate, so the transport is a
//! dyn-compatible [`Backend`] trait with boxed futures
//! (`futures::future::BoxFuture`), and [`Bus`] is a cheap-clone handle around
//! `Arc<dyn Backend>`. The one allocation per publish/subscribe call is noise
//! next to the network round trip and the JSON work. Everything that must
//! behave identically on every transport — topic and pattern validation,
//! envelope encoding and decoding, the pattern re-check of every received
//! message, counters, close semantics, publish timeout — lives in [`Bus`],
//! so an embedder's backend only moves bytes.
//!
//! # Delivery semantics
//!
//! - At-most-once. `publish` returning `Ok` means the transport accepted the
//!   message. A broker outage loses the events published to it meanwhile; a
//!   slow subscriber loses the OLDEST queued events (counted as `dropped`).
//! - Order: events of one topic from one publisher reach each subscriber in
//!   publish order; across topics nothing is promised.
//! - Matching: NATS wildcards (`*` one non-empty token, `>` one or more
//!   trailing tokens) with identical results on every backend: every message
//!   is re-checked with [`decnet_topics::matches`] before decoding.
//! - The topic of a received event is the transport subject, never the body's.
//! - A malformed body (empty, not JSON, not an object, payload not an object,
//!   over [`BusOptions::max_message_bytes`]) is dropped, logged and counted in
//!   [`CountersSnapshot::decode_failures`]; the subscription keeps going.
//! - `publish` never panics: a transport failure is logged, counted in
//!   [`CountersSnapshot::publish_failures`] and returned as
//!   [`PublishError::Transport`].
//! - NATS, Redis and unix reconnect on their own with capped backoff, and
//!   open subscriptions survive a broker restart; [`Bus::watch_state`] shows
//!   `Reconnecting` meanwhile.
//!
//! # Backends
//!
//! - `memory`: bounded per-subscriber queues (default 1024), drop-oldest.
//! - `null`: publish returns `Ok` and drops; subscriptions end at once; state
//!   is always `Connected`.
//! - `nats`: subject = topic, body = envelope; async-nats resubscribes after a
//!   reconnect; the client is built with `retry_on_initial_connect`, so the
//!   bus can be created while the server is down.
//! - `redis`: `PUBLISH <topic> <envelope>` on a multiplexed connection
//!   (re-opened after a failure, every publish bounded by a timeout);
//!   subscriptions share ONE pub/sub connection per `RedisBus`, owned by a
//!   background task that routes messages by pattern, reference-counts
//!   `PSUBSCRIBE`/`PUNSUBSCRIBE`, and reconnects with exponential backoff
//!   (100 ms doubling to 5 s), re-issuing every `PSUBSCRIBE`. Patterns are
//!   translated with [`nats_pattern_to_redis_glob`].
//! - `unix` (Unix only): a client of DECNET's UNIX-socket broker (socket
//!   from [`ENV_BUS_SOCKET`], else DECNET's order, see
//!   [`resolve_socket_path`]). `PUB <topic>` carries `{"type", "payload"}`
//!   only; the broker stamps `v`, `id` and `ts` itself, so received events
//!   have the broker's id and ts. Two connections per bus, a subscriber and
//!   a publisher one, because the broker never delivers an event to the
//!   connection that published it while this crate's buses deliver their
//!   own publishes to their own subscriptions. `SUB`/`UNSUB` are
//!   reference-counted per pattern; `subscribe` returns once a probe on a
//!   private topic under [`RESERVED_ROOT`] proves the `SUB` was processed
//!   (the protocol has no acks); reconnects with exponential backoff
//!   (100 ms doubling to 5 s), re-sending `HELLO` and every `SUB`. A body
//!   the broker would close the connection on (not a JSON object) and a
//!   non-ASCII or over-long topic or pattern are refused with
//!   [`PublishError::Rejected`] / [`SubscribeError::Rejected`]. The bus can
//!   be created while the broker is down.

mod backend;
mod bus;
mod config;
mod error;
mod event;
mod glob;
mod memory;
#[cfg(feature = "nats")]
mod nats_bus;
mod null;
mod queue;
#[cfg(feature = "redis")]
mod redis_bus;
#[cfg(any(feature = "redis", unix))]
mod router;
#[cfg(unix)]
mod unix_bus;
pub mod unix_proto;

pub use backend::{Backend, ConnectionState, RawSubscription};
pub use bus::{
    Bus, BusOptions, CountersSnapshot, DEFAULT_CLOSE_TIMEOUT, DEFAULT_PUBLISH_TIMEOUT,
    DEFAULT_SUBSCRIBE_TIMEOUT, Subscription,
};
pub use config::{
    BusConfig, BusKind, DEFAULT_NATS_URL, DEFAULT_REDIS_URL, DEFAULT_SOCKET_PATH, ENV_BUS_ENABLED,
    ENV_BUS_SOCKET, ENV_BUS_TYPE, ENV_NATS_URL, ENV_REDIS_URL, RUNTIME_DIR, resolve_socket_path,
};
pub use error::{BoxError, ConfigError, ConnectError, PublishError, SubscribeError};
pub use event::{
    DEFAULT_MAX_MESSAGE_BYTES, DecodeError, ENVELOPE_VERSION, Event, new_event_id, now_ts,
};
pub use glob::nats_pattern_to_redis_glob;
pub use memory::{DEFAULT_QUEUE_CAPACITY, MemoryBus, MemoryConfig};
#[cfg(feature = "nats")]
pub use nats_bus::{NatsBus, NatsConfig};
pub use null::NullBus;
#[cfg(feature = "redis")]
pub use redis_bus::{RedisBus, RedisConfig};
#[cfg(unix)]
pub use unix_bus::{
    DEFAULT_CLIENT_NAME, RESERVED_ROOT, UnixBus, UnixConfig, runtime_dir_is_writable,
};
