//! The process-wide hub: one subscription set for every kind, dispatch
//! through the index, encode-once frames, background sweep.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use decnet_bus::{Bus, Event};
use decnet_repo::RepoError;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::HubConfig;
use crate::frames::live_frame;
use crate::index::{Index, RingLimits};
use crate::kind::{KeyInfo, KindId, Rekey, Route, StreamKind};
use crate::queue::{FrameQueue, Pushed};
use crate::registry::{Attachment, Registration, Shared};
use crate::session::{SessionCheck, SessionWatch};
use crate::stats::{HubStats, add};
use crate::stream::{Driver, EventStream};

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The repository could not be read (the server answers 503).
    #[error("repository unavailable while opening the stream")]
    Repository(#[source] RepoError),
    /// The key vanished between the lookup and the snapshot (the server
    /// answers 404).
    #[error("the stream's key no longer exists")]
    NotFound,
    /// The hub has no kind with this id.
    #[error("unknown stream kind {0}")]
    UnknownKind(KindId),
    /// The hub is shutting down.
    #[error("the stream hub is shutting down")]
    ShuttingDown,
}

/// What a stream is opened with, beyond its kind and key.
#[derive(Default)]
pub struct OpenOptions {
    /// `Last-Event-ID` sent by a reconnecting client.
    pub last_event_id: Option<String>,
    /// The session behind the stream; it ends the stream when it expires.
    pub session: Option<Arc<dyn SessionCheck>>,
    /// Anything the stream must hold while open and release when dropped
    /// (a connection slot, typically).
    pub guard: Option<Box<dyn Send + Sync>>,
}

impl std::fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenOptions")
            .field("last_event_id", &self.last_event_id)
            .field("session", &self.session.is_some())
            .field("guard", &self.guard.is_some())
            .finish()
    }
}

/// Aborts the hub's background tasks when the last hub handle is dropped
/// (the pattern of mini-redis's `DbDropGuard`).
struct TaskGuard {
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl TaskGuard {
    fn abort_all(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            task.abort();
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.abort_all();
    }
}

/// The process-wide stream hub. Cheap to clone.
///
/// Create one per process with [`StreamHub::start`], giving it every
/// [`StreamKind`] to serve; answer 404s with [`StreamHub::lookup`]; open
/// streams with [`StreamHub::open`]; stop with [`StreamHub::shutdown`]. The
/// hub's tasks stop when the last handle is dropped.
#[derive(Clone)]
pub struct StreamHub {
    shared: Arc<Shared>,
    subscribed: watch::Receiver<bool>,
    bus: Bus,
    tasks: Arc<TaskGuard>,
}

impl std::fmt::Debug for StreamHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHub")
            .field("config", &self.shared.config)
            .field(
                "kinds",
                &self
                    .shared
                    .kinds
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The union of the kinds' patterns, each once, with the kinds that asked
/// for it.
fn pattern_table(kinds: &[Arc<dyn StreamKind>]) -> Vec<(&'static str, Vec<KindId>)> {
    let mut table: Vec<(&'static str, Vec<KindId>)> = Vec::new();
    for (n, kind) in kinds.iter().enumerate() {
        let Ok(id) = u8::try_from(n) else { break };
        for pattern in kind.patterns() {
            match table.iter_mut().find(|(p, _)| p == pattern) {
                Some((_, ids)) => ids.push(KindId(id)),
                None => table.push((pattern, vec![KindId(id)])),
            }
        }
    }
    table
}

impl StreamHub {
    /// Start the hub over `kinds` (at most 255): subscribe once to the union
    /// of their patterns on `bus` and route everything received.
    /// Subscriptions are retried with backoff while the bus is unavailable;
    /// the hub never dies with the bus. With the null bus nothing is
    /// subscribed and streams get snapshots and keepalives only.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (it spawns its tasks).
    pub fn start(bus: Bus, kinds: Vec<Arc<dyn StreamKind>>, config: HubConfig) -> Self {
        let limits = RingLimits {
            per_key: config.replay_capacity,
            total_bytes: config.replay_max_bytes,
        };
        let index = Index::new(kinds.len(), limits);
        let shared = Arc::new(Shared::new(config, kinds, index));
        let (subscribed_tx, subscribed) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(sweep_loop(Arc::downgrade(&shared)))];
        if !bus.kind().is_null() && subscribes(&shared.config) {
            tasks.push(tokio::spawn(subscribe_loop(
                Arc::downgrade(&shared),
                bus.clone(),
                subscribed_tx,
            )));
        }
        Self {
            shared,
            subscribed,
            bus,
            tasks: Arc::new(TaskGuard {
                tasks: std::sync::Mutex::new(tasks),
            }),
        }
    }

    /// The state streams share (for the log pollers).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The id of the kind named `name`, if the hub serves it.
    pub fn kind_id(&self, name: &str) -> Option<KindId> {
        self.shared
            .kinds
            .iter()
            .position(|k| k.name() == name)
            .and_then(|n| u8::try_from(n).ok())
            .map(KindId)
    }

    /// The counters, as a snapshot.
    pub fn stats(&self) -> HubStats {
        self.shared.stats()
    }

    /// Whether the hub's bus subscriptions are in place (always `false` on the
    /// null bus, which has nothing to subscribe to).
    pub fn is_subscribed(&self) -> bool {
        *self.subscribed.borrow()
    }

    /// Wait until the hub's bus subscriptions are in place.
    pub async fn wait_subscribed(&self) {
        let mut rx = self.subscribed.clone();
        if rx.wait_for(|subscribed| *subscribed).await.is_err() {
            // The subscribing task is gone (null bus, or shut down): never.
            std::future::pending::<()>().await;
        }
    }

    /// The hub's configuration.
    pub fn config(&self) -> &HubConfig {
        &self.shared.config
    }

    /// Number of keys with open streams or a live replay ring.
    pub fn tracked_keys(&self) -> usize {
        self.shared.index().tracked()
    }

    /// Number of keys of one kind with open streams or a live replay ring.
    pub fn tracked_keys_of(&self, kind: KindId) -> usize {
        self.shared.index().tracked_of(kind)
    }

    /// End every stream cleanly (no error frame) and stop the hub's tasks.
    /// Streams opened afterwards fail with [`OpenError::ShuttingDown`].
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        self.tasks.abort_all();
    }

    /// Whether [`StreamHub::shutdown`] was called.
    pub fn is_shut_down(&self) -> bool {
        *self.shared.shutdown.borrow()
    }

    /// Whether `key` exists for `kind` (`Ok(None)`: answer 404), and what
    /// opening it needs.
    ///
    /// # Errors
    ///
    /// [`OpenError::Repository`] when the repository fails,
    /// [`OpenError::UnknownKind`] for a kind the hub does not serve.
    pub async fn lookup(&self, kind: KindId, key: &str) -> Result<Option<KeyInfo>, OpenError> {
        let stream_kind = self.shared.kind(kind).ok_or(OpenError::UnknownKind(kind))?;
        stream_kind.lookup(key).await.map_err(OpenError::Repository)
    }

    /// Open a stream of `kind` on `key` (already looked up, so the caller
    /// could answer 404 first). The stream is registered before the snapshot
    /// is read, so no event published in between is lost.
    ///
    /// With `options.last_event_id` still in the key's replay ring, the
    /// stream starts with the missed frames and no snapshot; otherwise with
    /// the snapshot.
    ///
    /// # Errors
    ///
    /// [`OpenError::Repository`] when the snapshot cannot be read,
    /// [`OpenError::NotFound`] when the key vanished since the lookup,
    /// [`OpenError::ShuttingDown`] after [`StreamHub::shutdown`],
    /// [`OpenError::UnknownKind`] for a kind the hub does not serve.
    pub async fn open(
        &self,
        kind: KindId,
        key: &str,
        info: KeyInfo,
        options: OpenOptions,
    ) -> Result<EventStream, OpenError> {
        if self.is_shut_down() {
            return Err(OpenError::ShuttingDown);
        }
        let shared = &self.shared;
        let stream_kind = shared
            .kind(kind)
            .ok_or(OpenError::UnknownKind(kind))?
            .clone();
        let config = &shared.config;
        let key: Arc<str> = Arc::from(key);
        let queue = Arc::new(FrameQueue::new(config.queue_max, config.queue_max_bytes));
        let identity = info.identity.as_deref().map(Arc::from);
        let registered = shared.index().register(
            kind,
            &key,
            identity,
            queue.clone(),
            options.last_event_id.as_deref(),
        );
        add(&shared.counters.streams_active, 1);
        add(&shared.counters.streams_opened, 1);
        if let Some(kind_counters) = shared.counters.kinds.get(usize::from(kind.0)) {
            add(&kind_counters.active, 1);
        }
        let registration = Registration {
            shared: shared.clone(),
            kind,
            key: key.clone(),
            stream_id: registered.stream_id,
        };

        let retry = u64::try_from(config.retry.as_millis()).unwrap_or(u64::MAX);
        let mut initial = vec![decnet_sse::keepalive(), decnet_sse::retry(retry)];
        match registered.replay {
            Some(frames) => {
                add(&shared.counters.resumed, 1);
                initial.extend(frames);
            }
            None => match stream_kind.snapshot(&key).await {
                Ok(Some(snapshot)) => initial.push(snapshot),
                Ok(None) => return Err(OpenError::NotFound),
                Err(error) => return Err(OpenError::Repository(error)),
            },
        }
        let (flag, watch) = SessionWatch::for_session(
            options.session,
            config.revalidate_every,
            config.session_unknown_max,
            &shared.counters.sessions_expired,
        );
        let attachment = Attachment {
            shared: shared.clone(),
            queue,
            source: Box::new(registration),
        };
        #[cfg_attr(
            not(feature = "ablation"),
            allow(unused_mut, reason = "the ablation adds a pump")
        )]
        let mut driver = Driver::new(attachment, initial, flag, options.guard);
        #[cfg(feature = "ablation")]
        crate::ablation::attach(&mut driver, &self.bus, &stream_kind, &key, &info, config);
        let _ = &self.bus;
        Ok(EventStream::new(driver, watch))
    }

    /// Route one event as if it came from the bus (for embedders that feed the
    /// hub from their own source, and for tests). Every kind with a pattern
    /// matching the topic gets it.
    pub fn dispatch(&self, event: &Event) {
        add(&self.shared.counters.events_received, 1);
        for (n, kind) in self.shared.kinds.iter().enumerate() {
            if kind
                .patterns()
                .iter()
                .any(|p| decnet_topics::matches(p, &event.topic))
                && let Ok(id) = u8::try_from(n)
            {
                route_to_kind(&self.shared, KindId(id), event);
            }
        }
    }
}

/// Whether the hub subscribes to the bus itself (not in the ablation's
/// per-connection mode).
fn subscribes(config: &HubConfig) -> bool {
    #[cfg(feature = "ablation")]
    {
        config.mode == crate::ablation::SubscriptionMode::Shared
    }
    #[cfg(not(feature = "ablation"))]
    {
        let _ = config;
        true
    }
}

/// Route `event` to one kind's streams.
fn route_to_kind(shared: &Arc<Shared>, kind: KindId, event: &Event) {
    let Some(stream_kind) = shared.kind(kind) else {
        return;
    };
    let route = stream_kind.route(event);
    match route {
        Route::Drop => {}
        Route::Rekey => rekey(shared, kind, stream_kind, event),
        route => {
            let targets = shared.index().targets(kind, &route);
            if targets.keys.is_empty() {
                add(&shared.counters.events_unrouted, 1);
                return;
            }
            // Encode once, outside the lock; every receiving stream shares
            // these bytes.
            let name = stream_kind.event_name(&event.topic);
            let frame: Bytes = live_frame(event, &name);
            add(&shared.counters.frames_encoded, 1);
            let event_id: Arc<str> = Arc::from(event.id.as_str());
            let queues = shared
                .index()
                .deliver(kind, &targets.keys, &event_id, &frame);
            let mut dropped = 0u64;
            for queue in &queues {
                if let Pushed::Lagged(n) = queue.push(frame.clone()) {
                    dropped += n;
                }
            }
            let delivered = u64::try_from(queues.len()).unwrap_or(u64::MAX);
            let counters = &shared.counters;
            add(&counters.frames_enqueued, delivered);
            if dropped > 0 {
                add(&counters.frames_dropped, dropped);
            }
            if delivered > 0
                && let Some(kind_counters) = counters.kinds.get(usize::from(kind.0))
            {
                kind_counters.delivered(&name, delivered);
            }
        }
    }
}

/// Apply an event's identity changes to `kind`'s keys.
fn rekey(shared: &Arc<Shared>, kind: KindId, stream_kind: &Arc<dyn StreamKind>, event: &Event) {
    let changes = stream_kind.rekeys(event);
    let mut applied = 0;
    let mut resurrected = Vec::new();
    {
        let mut index = shared.index();
        for change in &changes {
            match change {
                Rekey::Resurrect { identity } => resurrected.push(identity.clone()),
                other => applied += index.rekey(kind, other),
            }
        }
    }
    if applied > 0 {
        add(&shared.counters.rekeys, applied);
    }
    for identity in resurrected {
        // The attackers that follow a resurrected identity are in the
        // database only: read them off the dispatch path.
        let shared = Arc::downgrade(shared);
        let stream_kind = stream_kind.clone();
        tokio::spawn(async move {
            let keys = match stream_kind.followers_of(&identity).await {
                Ok(keys) => keys,
                Err(error) => {
                    tracing::warn!(%identity, %error, "could not re-read the followers of an unmerged identity");
                    return;
                }
            };
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut applied = 0;
            {
                let mut index = shared.index();
                for key in keys {
                    applied += index.rekey(
                        kind,
                        &Rekey::Follow {
                            key,
                            identity: identity.clone(),
                        },
                    );
                }
            }
            add(&shared.counters.rekeys, applied);
        });
    }
}

async fn subscribe_loop(
    shared: std::sync::Weak<Shared>,
    bus: Bus,
    subscribed: watch::Sender<bool>,
) {
    let table = match shared.upgrade() {
        Some(shared) => pattern_table(&shared.kinds),
        None => return,
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut subscriptions = Vec::new();
        for (n, (pattern, _)) in table.iter().enumerate() {
            match bus.subscribe(pattern).await {
                Ok(subscription) => subscriptions.push(subscription.map(move |event| (n, event))),
                Err(error) => {
                    tracing::warn!(%pattern, %error, "hub could not subscribe; retrying");
                    break;
                }
            }
        }
        if subscriptions.len() == table.len() {
            backoff = Duration::from_millis(100);
            subscribed.send_replace(true);
            let mut merged = futures::stream::select_all(subscriptions);
            while let Some((n, event)) = merged.next().await {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                dispatch_from(&shared, &table, n, &event);
            }
            subscribed.send_replace(false);
            tracing::warn!("hub bus subscriptions ended; resubscribing");
        } else {
            drop(subscriptions);
        }
        if shared.upgrade().is_none() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// An event that arrived through pattern `n` of `table`: route it to that
/// pattern's kinds, except those that also have an earlier pattern matching
/// the topic (they get it through that one; overlapping patterns never
/// deliver twice).
fn dispatch_from(
    shared: &Arc<Shared>,
    table: &[(&'static str, Vec<KindId>)],
    n: usize,
    event: &Event,
) {
    add(&shared.counters.events_received, 1);
    let Some((_, kinds)) = table.get(n) else {
        return;
    };
    for kind in kinds {
        let earlier = table[..n]
            .iter()
            .any(|(p, ks)| ks.contains(kind) && decnet_topics::matches(p, &event.topic));
        if !earlier {
            route_to_kind(shared, *kind, event);
        }
    }
}

async fn sweep_loop(shared: std::sync::Weak<Shared>) {
    let period = match shared.upgrade() {
        Some(shared) => shared
            .config
            .replay_grace
            .clamp(Duration::from_millis(50), Duration::from_secs(10)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let grace = shared.config.replay_grace;
        shared.index().sweep(Instant::now(), grace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_table_is_the_union_each_once() {
        let repo: Arc<dyn decnet_repo::Repository> = Arc::new(decnet_repo::MemoryRepository::new());
        let kinds = crate::kinds::decnet_kinds(&repo);
        let table = pattern_table(&kinds);
        let patterns: Vec<&str> = table.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            patterns,
            [
                "attacker.observation.>",
                "attacker.fingerprint_rotated",
                "attacker.scored",
                "attribution.>",
                "identity.>",
                "campaign.>",
                "orchestrator.>",
                "topology.>",
                "decky.>",
            ]
        );
        // identity.> serves the attacker kind (re-keying) and the identity kind.
        assert_eq!(table[4].1, vec![KindId(0), KindId(1)]);
    }
}
