//! In-process backend: fan-out with NATS matching and drop-oldest queues.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::backend::{Backend, ConnectionState, RawSubscription};
use crate::config::BusKind;
use crate::error::{PublishError, SubscribeError};
use crate::queue::DropOldestQueue;

/// Default per-subscriber queue capacity of the memory bus.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

/// Settings of a [`MemoryBus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Events buffered per subscriber before the oldest is dropped
    /// (counted in [`crate::CountersSnapshot::dropped`]). At least 1.
    pub queue_capacity: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
        }
    }
}

struct Subscriber {
    id: u64,
    pattern: String,
    queue: Arc<DropOldestQueue>,
}

struct Shared {
    // std RwLock: read-held for one fan-out, write-held to add or remove a
    // subscriber; never held across an .await.
    subscribers: RwLock<Vec<Subscriber>>,
    next_id: AtomicU64,
    dropped: Arc<AtomicU64>,
    state: watch::Sender<ConnectionState>,
    config: MemoryConfig,
}

/// Removes its subscriber from the bus when the subscription is dropped.
struct Unsubscribe {
    shared: Weak<Shared>,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            let mut subscribers = shared
                .subscribers
                .write()
                .unwrap_or_else(|e| e.into_inner());
            subscribers.retain(|s| s.id != self.id);
        }
    }
}

/// The in-process bus: every publish is delivered to every live subscriber
/// whose pattern matches ([`decnet_topics::matches`]), in publish order.
///
/// Each subscriber has a bounded queue ([`MemoryConfig::queue_capacity`]);
/// when it is full the OLDEST event is dropped and counted, so a slow
/// subscriber never blocks a publisher or other subscribers. A dropped
/// subscription is removed at once.
pub struct MemoryBus {
    shared: Arc<Shared>,
}

impl MemoryBus {
    /// A memory bus with the given settings.
    pub fn new(config: MemoryConfig) -> MemoryBus {
        let (state, _) = watch::channel(ConnectionState::Connected);
        MemoryBus {
            shared: Arc::new(Shared {
                subscribers: RwLock::new(Vec::new()),
                next_id: AtomicU64::new(0),
                dropped: Arc::new(AtomicU64::new(0)),
                state,
                config,
            }),
        }
    }

    /// How many subscriptions are currently registered.
    pub fn subscriber_count(&self) -> usize {
        self.shared
            .subscribers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    fn deliver(&self, topic: &str, body: &Bytes) {
        let subscribers = self
            .shared
            .subscribers
            .read()
            .unwrap_or_else(|e| e.into_inner());
        for subscriber in subscribers.iter() {
            if decnet_topics::matches(&subscriber.pattern, topic) {
                subscriber.queue.push(topic.to_owned(), body.clone());
            }
        }
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        MemoryBus::new(MemoryConfig::default())
    }
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBus")
            .field("subscribers", &self.subscriber_count())
            .field("config", &self.shared.config)
            .finish()
    }
}

impl Backend for MemoryBus {
    fn publish(&self, topic: &str, body: Bytes) -> BoxFuture<'_, Result<(), PublishError>> {
        self.deliver(topic, &body);
        futures::future::ready(Ok(())).boxed()
    }

    fn subscribe(&self, pattern: &str) -> BoxFuture<'_, Result<RawSubscription, SubscribeError>> {
        let res = {
            let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
            let queue = DropOldestQueue::new(
                self.shared.config.queue_capacity,
                self.shared.dropped.clone(),
            );
            self.shared
                .subscribers
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .push(Subscriber {
                    id,
                    pattern: pattern.to_owned(),
                    queue: queue.clone(),
                });
            let guard = Unsubscribe {
                shared: Arc::downgrade(&self.shared),
                id,
            };
            Ok(DropOldestQueue::into_subscription(queue, guard))
        };
        futures::future::ready(res).boxed()
    }

    fn state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        let subscribers = std::mem::take(
            &mut *self
                .shared
                .subscribers
                .write()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for subscriber in subscribers {
            subscriber.queue.close();
        }
        self.shared.state.send_replace(ConnectionState::Closed);
        futures::future::ready(()).boxed()
    }

    fn kind(&self) -> BusKind {
        BusKind::Memory
    }

    fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}
