//! A bounded single-consumer queue that drops the OLDEST item when full, so a
//! slow subscriber never blocks its publisher. Shared by the memory and Redis
//! backends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::backend::RawSubscription;

/// One subscriber's queue of `(subject, body)`.
pub(crate) struct DropOldestQueue {
    // std Mutex: held only for a push or pop, never across an .await.
    items: Mutex<VecDeque<(String, Bytes)>>,
    notify: Notify,
    closed: AtomicBool,
    capacity: usize,
    dropped: Arc<AtomicU64>,
}

impl DropOldestQueue {
    /// A queue of `capacity` items (at least 1); drops are added to `dropped`.
    pub(crate) fn new(capacity: usize, dropped: Arc<AtomicU64>) -> Arc<DropOldestQueue> {
        let capacity = capacity.max(1);
        Arc::new(DropOldestQueue {
            items: Mutex::new(VecDeque::with_capacity(capacity.min(64))),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            capacity,
            dropped,
        })
    }

    /// Enqueue, dropping the oldest item when full. Never blocks on the consumer.
    pub(crate) fn push(&self, subject: String, body: Bytes) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        {
            let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
            if items.len() >= self.capacity {
                items.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            items.push_back((subject, body));
        }
        self.notify.notify_one();
    }

    fn pop(&self) -> Option<(String, Bytes)> {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    /// End the consumer's stream at once; undelivered items are dropped
    /// (the bus is closing, and delivery is at-most-once).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.items.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.notify.notify_one();
    }

    /// The consumer side as a raw subscription; `guard` is dropped with it
    /// (that is how the backend learns the subscriber left).
    pub(crate) fn into_subscription(
        queue: Arc<DropOldestQueue>,
        guard: impl Send + 'static,
    ) -> RawSubscription {
        let stream = futures::stream::unfold((queue, guard), |(queue, guard)| async move {
            let next = loop {
                // Create the waiter before checking: notify_one stores a
                // permit when nobody waits, so no wake-up is lost.
                let notified = queue.notify.notified();
                if queue.closed.load(Ordering::Acquire) {
                    break None;
                }
                if let Some(item) = queue.pop() {
                    break Some(item);
                }
                notified.await;
            };
            next.map(|item| (item, (queue, guard)))
        });
        RawSubscription::new(stream)
    }
}
