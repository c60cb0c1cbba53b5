//! What the Redis and UNIX-socket transports share: one task owns the
//! connection and every route, and the bus handle talks to it through
//! commands.
//!
//! A subscription never does I/O in the handle: it registers its queue with
//! the task ([`Commands::subscribe`]) and waits for the task's answer, and
//! dropping it tells the task through a guard (no I/O in `Drop`). While
//! disconnected the task keeps serving commands ([`Router::idle`]), so a
//! subscription registers at once and reaches the broker on reconnect.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::backend::{ConnectionState, RawSubscription};
use crate::error::SubscribeError;
use crate::queue::DropOldestQueue;

/// A request from the bus handle to its task.
pub(crate) enum Command {
    /// Add a route; `ack` is answered once the broker has the pattern (or at
    /// once while disconnected).
    Subscribe {
        id: u64,
        pattern: String,
        queue: Arc<DropOldestQueue>,
        ack: oneshot::Sender<()>,
    },
    /// The subscription `id` was dropped.
    Unsubscribe { id: u64 },
    /// Stop the task; `ack` is answered when every route is closed.
    Close { ack: oneshot::Sender<()> },
}

/// What the task does after a connection (or a backoff delay) ends.
pub(crate) enum Flow {
    /// Reconnect (the connection was lost, or a backoff delay ended).
    Retry,
    /// Stop: closed, or every handle to the bus is gone.
    Stop,
}

/// The handle's side of the command channel.
pub(crate) struct Commands {
    sender: mpsc::UnboundedSender<Command>,
    next_id: AtomicU64,
    queue_capacity: usize,
    dropped: Arc<AtomicU64>,
}

/// The task's side of the command channel.
pub(crate) struct Inbox {
    receiver: mpsc::UnboundedReceiver<Command>,
    close_ack: Option<oneshot::Sender<()>>,
}

/// Tells the task when a subscription is dropped.
struct Unsubscribe {
    sender: mpsc::UnboundedSender<Command>,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let _ = self.sender.send(Command::Unsubscribe { id: self.id });
    }
}

impl Commands {
    /// A command channel whose subscriptions queue at most `queue_capacity`
    /// messages each (drop-oldest).
    pub(crate) fn channel(queue_capacity: usize) -> (Commands, Inbox) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let commands = Commands {
            sender,
            next_id: AtomicU64::new(0),
            queue_capacity,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        let inbox = Inbox {
            receiver,
            close_ack: None,
        };
        (commands, inbox)
    }

    /// Register a route for `pattern` with the task and wait for its answer.
    pub(crate) async fn subscribe(
        &self,
        pattern: String,
    ) -> Result<RawSubscription, SubscribeError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let queue = DropOldestQueue::new(self.queue_capacity, self.dropped.clone());
        let (ack, acked) = oneshot::channel();
        self.sender
            .send(Command::Subscribe {
                id,
                pattern,
                queue: queue.clone(),
                ack,
            })
            .map_err(|_| SubscribeError::Closed)?;
        let guard = Unsubscribe {
            sender: self.sender.clone(),
            id,
        };
        acked.await.map_err(|_| SubscribeError::Closed)?;
        Ok(DropOldestQueue::into_subscription(queue, guard))
    }

    /// Stop the task and wait until it has closed every route.
    pub(crate) async fn close(&self) {
        let (ack, acked) = oneshot::channel();
        if self.sender.send(Command::Close { ack }).is_ok() {
            let _ = acked.await;
        }
    }

    /// Messages dropped so far because a subscriber's queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Inbox {
    /// The next command; `None` once every handle is gone.
    pub(crate) async fn recv(&mut self) -> Option<Command> {
        self.receiver.recv().await
    }

    /// Keep `ack` to answer when the task has stopped; the task must stop.
    pub(crate) fn closing(&mut self, ack: oneshot::Sender<()>) -> Flow {
        self.close_ack = Some(ack);
        Flow::Stop
    }

    /// Answer the `Close` that stopped the task, if one did.
    pub(crate) fn closed(&mut self) {
        if let Some(ack) = self.close_ack.take() {
            let _ = ack.send(());
        }
    }
}

/// A transport task: its routes, and its inbox.
pub(crate) trait Router: Send {
    /// The task's inbox.
    fn inbox(&mut self) -> &mut Inbox;

    /// Add a route while disconnected (the pattern reaches the broker on
    /// reconnect).
    fn register(&mut self, id: u64, pattern: String, queue: Arc<DropOldestQueue>);

    /// Remove a route while disconnected.
    fn unregister(&mut self, id: u64);

    /// Wait `delay` before the next connection attempt, still serving
    /// commands.
    fn idle(&mut self, delay: Duration) -> impl Future<Output = Flow> + Send {
        async move {
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => return Flow::Retry,
                    command = self.inbox().recv() => match command {
                        None => return Flow::Stop,
                        Some(Command::Close { ack }) => return self.inbox().closing(ack),
                        Some(Command::Subscribe { id, pattern, queue, ack }) => {
                            self.register(id, pattern, queue);
                            let _ = ack.send(());
                        }
                        Some(Command::Unsubscribe { id }) => self.unregister(id),
                    },
                }
            }
        }
    }
}

/// Move `state` to `next`, never out of `Closed`, waking watchers only on a
/// change.
pub(crate) fn set_state(state: &watch::Sender<ConnectionState>, next: ConnectionState) {
    state.send_if_modified(|current| {
        if *current == ConnectionState::Closed || *current == next {
            false
        } else {
            *current = next;
            true
        }
    });
}
