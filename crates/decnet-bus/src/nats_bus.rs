//! NATS backend (feature `nats`), on async-nats.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;

use crate::backend::{Backend, ConnectionState, RawSubscription};
use crate::config::{BusKind, DEFAULT_NATS_URL};
use crate::error::{ConnectError, PublishError, SubscribeError};

/// Settings of a [`NatsBus`].
#[derive(Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated (may carry credentials; never logged).
    pub url: String,
    /// Bound on one TCP + handshake attempt.
    pub connect_timeout: Duration,
    /// Longest wait between reconnect attempts (the delay starts at 0, then
    /// 100 ms, and doubles up to this).
    pub max_reconnect_delay: Duration,
    /// Bound on the round trip that confirms a new subscription reached the
    /// server (best effort: past it the subscription is still returned, and
    /// async-nats sends it again on reconnect).
    pub flush_timeout: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: DEFAULT_NATS_URL.to_owned(),
            connect_timeout: Duration::from_secs(2),
            max_reconnect_delay: Duration::from_secs(5),
            flush_timeout: Duration::from_secs(2),
        }
    }
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &"<redacted>")
            .field("connect_timeout", &self.connect_timeout)
            .field("max_reconnect_delay", &self.max_reconnect_delay)
            .field("flush_timeout", &self.flush_timeout)
            .finish()
    }
}

/// Reconnect delay for attempt `attempts` (1-based): 0, then 100 ms doubling
/// up to `max`.
fn reconnect_delay(attempts: usize, max: Duration) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(16);
    Duration::from_millis(100u64.saturating_mul(1 << exp)).min(max)
}

/// Move the watch to `next`, unless it is already `Closed` for good.
fn set_state(state: &watch::Sender<ConnectionState>, next: ConnectionState) {
    state.send_if_modified(|current| {
        if *current == ConnectionState::Closed || *current == next {
            false
        } else {
            *current = next;
            true
        }
    });
}

/// The NATS transport: subject = topic, body = envelope.
///
/// Built with `retry_on_initial_connect`, so it can be created while the
/// server is down (state `Reconnecting` until the first connection).
/// async-nats reconnects forever with capped backoff and re-sends every
/// subscription after a reconnect; its connection events drive the state
/// watch. Dropping a subscription unsubscribes (async-nats sends `UNSUB`
/// from `Drop`).
pub struct NatsBus {
    client: async_nats::Client,
    state: Arc<watch::Sender<ConnectionState>>,
    dropped: Arc<AtomicU64>,
    config: NatsConfig,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("state", &*self.state.borrow())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl NatsBus {
    /// Create the client; the connection is made in the background.
    ///
    /// # Errors
    ///
    /// [`ConnectError::InvalidUrl`] when the URL cannot be parsed.
    pub async fn connect(config: NatsConfig) -> Result<NatsBus, ConnectError> {
        let (state, _) = watch::channel(ConnectionState::Reconnecting);
        let state = Arc::new(state);
        let dropped = Arc::new(AtomicU64::new(0));
        let events_state = state.clone();
        let events_dropped = dropped.clone();
        let max_delay = config.max_reconnect_delay;
        let options = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(config.connect_timeout)
            .reconnect_delay_callback(move |attempts| reconnect_delay(attempts, max_delay))
            .event_callback(move |event| {
                let state = events_state.clone();
                let dropped = events_dropped.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!(bus = "nats", "bus connected");
                            set_state(&state, ConnectionState::Connected);
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!(bus = "nats", "bus disconnected, reconnecting");
                            set_state(&state, ConnectionState::Reconnecting);
                        }
                        async_nats::Event::Closed => {
                            state.send_replace(ConnectionState::Closed);
                        }
                        async_nats::Event::SlowConsumer(_) => {
                            dropped.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(bus = "nats", "slow consumer, messages dropped");
                        }
                        other => {
                            tracing::debug!(bus = "nats", event = %other, "nats event");
                        }
                    }
                }
            });
        let client =
            options
                .connect(config.url.as_str())
                .await
                .map_err(|err| ConnectError::InvalidUrl {
                    kind: "nats",
                    source: Box::new(err),
                })?;
        if client.connection_state() == async_nats::connection::State::Connected {
            set_state(&state, ConnectionState::Connected);
        }
        Ok(NatsBus {
            client,
            state,
            dropped,
            config,
        })
    }
}

impl Backend for NatsBus {
    fn publish(&self, topic: &str, body: Bytes) -> BoxFuture<'_, Result<(), PublishError>> {
        let topic = topic.to_owned();
        async move {
            // async-nats buffers while reconnecting; once its buffer is full a
            // publish waits, and the Bus bounds that wait.
            self.client
                .publish(topic, body)
                .await
                .map_err(PublishError::transport)
        }
        .boxed()
    }

    fn subscribe(&self, pattern: &str) -> BoxFuture<'_, Result<RawSubscription, SubscribeError>> {
        let pattern = pattern.to_owned();
        async move {
            let subscriber = self
                .client
                .subscribe(pattern)
                .await
                .map_err(SubscribeError::transport)?;
            // Round-trip so the server has the SUB before we return, when it
            // is reachable (otherwise async-nats sends it on reconnect).
            if self.client.connection_state() == async_nats::connection::State::Connected {
                let _ = tokio::time::timeout(self.config.flush_timeout, self.client.flush()).await;
            }
            Ok(RawSubscription::new(subscriber.map(|message| {
                (message.subject.to_string(), message.payload)
            })))
        }
        .boxed()
    }

    fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        async move {
            // Flush first: `drain` only queues its command, so without this a
            // publish just before close (the `publish` subcommand) can be
            // lost. Then drain: unsubscribe everything (subscriber streams
            // end) and close the connection. The Bus bounds both.
            if let Err(error) = self.client.flush().await {
                tracing::debug!(%error, "flush before close failed");
            }
            let _ = self.client.drain().await;
            self.state.send_replace(ConnectionState::Closed);
        }
        .boxed()
    }

    fn kind(&self) -> BusKind {
        BusKind::Nats
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::reconnect_delay;
    use std::time::Duration;

    #[test]
    fn backoff_is_capped() {
        let max = Duration::from_secs(5);
        assert_eq!(reconnect_delay(1, max), Duration::ZERO);
        assert_eq!(reconnect_delay(2, max), Duration::from_millis(100));
        assert_eq!(reconnect_delay(3, max), Duration::from_millis(200));
        assert_eq!(reconnect_delay(7, max), Duration::from_millis(3200));
        assert_eq!(reconnect_delay(8, max), max);
        assert_eq!(reconnect_delay(usize::MAX, max), max);
    }
}
