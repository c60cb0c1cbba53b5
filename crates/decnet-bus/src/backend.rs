//! The transport seam: [`Backend`], [`RawSubscription`], [`ConnectionState`].

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio::sync::watch;

use crate::config::BusKind;
use crate::error::{PublishError, SubscribeError};

/// Whether a backend can currently reach its broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Connected (always, for the memory and null backends).
    Connected,
    /// Not connected and trying to (also the state before the first
    /// connection succeeds).
    Reconnecting,
    /// Closed for good ([`crate::Bus::close`]).
    Closed,
}

impl ConnectionState {
    /// A short lowercase name for metrics and readiness bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Connected => "connected",
            ConnectionState::Reconnecting => "reconnecting",
            ConnectionState::Closed => "closed",
        }
    }
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transport: the part of a bus that moves bytes.
///
/// [`crate::Bus`] wraps one `Arc<dyn Backend>` and does everything else
/// (topic and pattern validation, envelope encoding and decoding, pattern
/// re-checks, counters, close semantics), so a backend written outside this
/// crate behaves exactly like the built-in ones. Implement this to plug in
/// your own transport and hand it to [`crate::Bus::from_backend`].
///
/// Contract:
/// - `publish` is called with a validated concrete topic and an opaque body;
///   it must not block for long (bound it with a timeout) and must never panic.
/// - `subscribe` is called with a validated NATS-style pattern. The returned
///   stream yields `(subject, body)` for messages published on matching
///   topics, in publish order per publisher and topic. Extra messages are
///   harmless (the bus re-checks the pattern), missing ones are not.
///   Dropping the [`RawSubscription`] must unsubscribe; if that needs async
///   I/O, spawn it from `Drop`.
/// - `state` reports connectivity; `close` ends every open raw subscription.
/// - The [`crate::Bus`] handle owns close semantics and every call's time
///   bound: it refuses `publish` and `subscribe` after close (so a backend
///   need not track that), calls `close` once, and bounds `publish`,
///   `subscribe` and `close` by [`crate::BusOptions`]. A backend only bounds
///   its own protocol steps (connect, keep-alive round trips).
pub trait Backend: Send + Sync + 'static {
    /// Send `body` on `topic`.
    ///
    /// # Errors
    ///
    /// [`PublishError::Transport`] when the transport fails (the bus logs and
    /// counts it).
    fn publish(&self, topic: &str, body: Bytes) -> BoxFuture<'_, Result<(), PublishError>>;

    /// Start receiving messages whose topic matches `pattern`.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::Transport`] when the transport refuses.
    fn subscribe(&self, pattern: &str) -> BoxFuture<'_, Result<RawSubscription, SubscribeError>>;

    /// A watch of the connection state.
    fn state(&self) -> watch::Receiver<ConnectionState>;

    /// Close the transport; open raw subscriptions end.
    fn close(&self) -> BoxFuture<'_, ()>;

    /// Which backend this is: a built-in [`BusKind`], or
    /// [`BusKind::Custom`] with the embedder's own name.
    fn kind(&self) -> BusKind;

    /// Messages this backend dropped on its own (e.g. a full subscriber
    /// queue). Defaults to 0.
    fn dropped(&self) -> u64 {
        0
    }
}

/// The undecoded messages of one backend subscription: `(subject, body)`.
///
/// Dropping it unsubscribes (whatever the backend's stream owns is dropped).
pub struct RawSubscription {
    stream: BoxStream<'static, (String, Bytes)>,
}

impl RawSubscription {
    /// Wrap a backend's stream of `(subject, body)`.
    pub fn new(stream: impl Stream<Item = (String, Bytes)> + Send + 'static) -> RawSubscription {
        RawSubscription {
            stream: Box::pin(stream),
        }
    }

    /// A subscription that ends at once (the null backend's).
    pub fn empty() -> RawSubscription {
        RawSubscription::new(futures::stream::empty())
    }
}

impl fmt::Debug for RawSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawSubscription").finish_non_exhaustive()
    }
}

impl Stream for RawSubscription {
    type Item = (String, Bytes);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.as_mut().poll_next(cx)
    }
}
