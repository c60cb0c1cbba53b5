//! What the hub and its streams share: the index behind its lock, the
//! counters, the shutdown signal, the kinds. A stream holds this narrow
//! context (never the bus or the hub's tasks), so `stream.rs` does not
//! depend on `hub.rs`.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use decnet_repo::RepoError;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::HubConfig;
use crate::index::Index;
use crate::kind::{KindId, StreamKind};
use crate::queue::FrameQueue;
use crate::stats::{Counters, HubStats};

/// The state shared by the hub and every stream.
pub(crate) struct Shared {
    pub(crate) config: HubConfig,
    pub(crate) kinds: Vec<Arc<dyn StreamKind>>,
    // std Mutex: held only for index operations (map lookups, ring pushes,
    // collecting queues), never across an `.await`, never while encoding.
    index: Mutex<Index>,
    pub(crate) counters: Counters,
    pub(crate) shutdown: watch::Sender<bool>,
}

impl Shared {
    pub(crate) fn new(config: HubConfig, kinds: Vec<Arc<dyn StreamKind>>, index: Index) -> Self {
        let counters = Counters {
            kinds: kinds
                .iter()
                .map(|k| crate::stats::KindCounters::new(k.name(), k.known_event_names()))
                .collect(),
            ..Counters::default()
        };
        let (shutdown, _) = watch::channel(false);
        Self {
            config,
            kinds,
            index: Mutex::new(index),
            counters,
            shutdown,
        }
    }

    /// The index lock (see the field comment).
    pub(crate) fn index(&self) -> MutexGuard<'_, Index> {
        // Poisoning needs a panic inside an index operation; the maps are
        // still consistent enough to route (at worst a stale entry).
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn kind(&self, kind: KindId) -> Option<&Arc<dyn StreamKind>> {
        self.kinds.get(usize::from(kind.0))
    }

    pub(crate) fn stats(&self) -> HubStats {
        let index = self.index();
        let (tracked, bytes, skipped) = (index.tracked(), index.ring_bytes(), index.ring_skipped);
        drop(index);
        self.counters.snapshot(tracked, bytes, skipped)
    }
}

/// Where a stream's frames come from: the bus hub's index or a log poller.
/// Dropping it deregisters the stream from its source.
pub(crate) trait Source: Send + Sync {
    /// The frames that bring a lagged stream back up to date (a resync),
    /// `None` when the stream's key vanished (the stream then ends).
    fn resync(&self) -> BoxFuture<'_, Result<Option<Vec<Bytes>>, RepoError>>;

    /// The stream's key, for logs.
    fn key(&self) -> &str;
}

/// What a stream driver is attached to: the shared context, its queue, and
/// its source.
pub(crate) struct Attachment {
    pub(crate) shared: Arc<Shared>,
    pub(crate) queue: Arc<FrameQueue>,
    pub(crate) source: Box<dyn Source>,
}

/// One stream registered in the bus hub's index: deregisters when dropped.
pub(crate) struct Registration {
    pub(crate) shared: Arc<Shared>,
    pub(crate) kind: KindId,
    pub(crate) key: Arc<str>,
    pub(crate) stream_id: u64,
}

impl Source for Registration {
    fn resync(&self) -> BoxFuture<'_, Result<Option<Vec<Bytes>>, RepoError>> {
        Box::pin(async move {
            match self.shared.kind(self.kind) {
                Some(kind) => Ok(kind.snapshot(&self.key).await?.map(|frame| vec![frame])),
                None => Ok(None),
            }
        })
    }

    fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let keep_ring =
            !self.shared.config.replay_grace.is_zero() && self.shared.config.replay_capacity > 0;
        self.shared.index().deregister(
            self.kind,
            &self.key,
            self.stream_id,
            Instant::now(),
            keep_ring,
        );
        crate::stats::sub(&self.shared.counters.streams_active, 1);
        if let Some(kind) = self.shared.counters.kinds.get(usize::from(self.kind.0)) {
            crate::stats::sub(&kind.active, 1);
        }
    }
}
