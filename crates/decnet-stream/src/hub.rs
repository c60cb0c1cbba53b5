//! The process-wide hub: bus subscriptions, routing index, replay rings.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use decnet_bus::{Bus, Event};
use decnet_repo::{Attacker, Repo, RepoError, Repository};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::frames::{live_frame, snapshot_frame};
use crate::queue::{FrameQueue, Pushed};
use crate::session::SessionCheck;
use crate::stream::{AttackerStream, Driver};

/// Tunables of the hub and of every stream it serves.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Send `: keepalive` after this long without a frame (`DECNET_SSE_KEEPALIVE_SECS`).
    pub keepalive: Duration,
    /// Frames a stream may have queued before it is resynced (`DECNET_SSE_QUEUE_MAX`).
    pub queue_max: usize,
    /// Live frames kept per attacker for resuming (`DECNET_SSE_REPLAY`).
    pub replay_capacity: usize,
    /// How long a ring outlives the last stream on its attacker
    /// (`DECNET_SSE_REPLAY_GRACE_SECS`).
    pub replay_grace: Duration,
    /// The reconnect hint sent as `retry:` at the start of every stream.
    pub retry: Duration,
    /// How often an open stream re-checks its session for revocation.
    pub revalidate_every: Duration,
    /// Shared hub subscriptions (the default) or one set per stream.
    pub mode: SubscriptionMode,
}

/// How streams get their events from the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubscriptionMode {
    /// One set of bus subscriptions per process; each event is routed through
    /// the index and encoded once. The production mode.
    #[default]
    Shared,
    /// Each stream subscribes to the bus on its own and filters every event
    /// itself, encoding its own frames, as DECNET's Python service does. For
    /// benchmarks (the ablation that shows what the shared hub buys); no
    /// replay ring and no live identity re-keying in this mode.
    PerConnection,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            keepalive: Duration::from_secs(15),
            queue_max: 256,
            replay_capacity: 256,
            replay_grace: Duration::from_secs(300),
            retry: Duration::from_secs(3),
            revalidate_every: Duration::from_secs(10),
            mode: SubscriptionMode::Shared,
        }
    }
}

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The repository could not be read (the server answers 503).
    #[error("repository unavailable while opening the stream")]
    Repository(#[source] RepoError),
    /// The hub is shutting down.
    #[error("the stream hub is shutting down")]
    ShuttingDown,
}

/// What a stream is opened with, beyond its attacker.
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

/// Counters and gauges of the hub, read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct HubMetrics {
    /// Streams open now.
    pub streams_active: AtomicU64,
    /// Streams opened since start.
    pub streams_opened: AtomicU64,
    /// Bus events the hub received.
    pub events_received: AtomicU64,
    /// Events that no open stream (or replay ring) wanted.
    pub events_unrouted: AtomicU64,
    /// Live frames encoded (once per event, however many streams get it).
    pub frames_encoded: AtomicU64,
    /// Frames pushed onto stream queues (one per receiving stream).
    pub frames_enqueued: AtomicU64,
    /// Frames dropped from lagging streams' queues.
    pub frames_dropped: AtomicU64,
    /// Resyncs (resync + fresh snapshot) sent.
    pub resyncs: AtomicU64,
    /// Streams ended because their session expired or was revoked.
    pub sessions_expired: AtomicU64,
    /// Streams resumed from the replay ring (no snapshot).
    pub resumed: AtomicU64,
    /// Identity re-keys applied.
    pub rekeys: AtomicU64,
    /// Live frames delivered, by SSE event name (counted per receiving stream).
    frames_by_event: Mutex<HashMap<String, u64>>,
}

impl HubMetrics {
    /// Live frames delivered per SSE event name, sorted by name.
    pub fn frames_by_event(&self) -> Vec<(String, u64)> {
        let map = self
            .frames_by_event
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<_> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
        rows.sort();
        rows
    }

    fn add_frames(&self, event_name: &str, n: u64) {
        let mut map = self
            .frames_by_event
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match map.get_mut(event_name) {
            Some(count) => *count += n,
            None => {
                map.insert(event_name.to_owned(), n);
            }
        }
    }
}

/// One open stream as the index sees it.
#[derive(Debug)]
struct StreamEntry {
    id: u64,
    queue: Arc<FrameQueue>,
}

/// Everything the hub tracks for one attacker that has (or recently had) streams.
#[derive(Debug, Default)]
struct AttackerEntry {
    /// The identity this attacker's streams follow.
    identity: Option<Arc<str>>,
    streams: Vec<StreamEntry>,
    /// Recent live frames, oldest first, with their event ids.
    ring: VecDeque<(Arc<str>, Bytes)>,
    /// When the last stream closed; `None` while one is open.
    idle_since: Option<Instant>,
}

#[derive(Debug, Default)]
struct Index {
    attackers: HashMap<Arc<str>, AttackerEntry>,
    /// identity uuid -> attackers (with entries) that follow it.
    identities: HashMap<Arc<str>, HashSet<Arc<str>>>,
    next_stream_id: u64,
}

impl Index {
    fn set_identity(&mut self, attacker: &Arc<str>, identity: Option<Arc<str>>) -> bool {
        let Some(entry) = self.attackers.get_mut(attacker) else {
            return false;
        };
        if entry.identity == identity {
            return false;
        }
        let old = std::mem::replace(&mut entry.identity, identity.clone());
        if let Some(old) = old
            && let Some(set) = self.identities.get_mut(&old)
        {
            set.remove(attacker);
            if set.is_empty() {
                self.identities.remove(&old);
            }
        }
        if let Some(new) = identity {
            self.identities
                .entry(new)
                .or_default()
                .insert(attacker.clone());
        }
        true
    }

    fn remove_attacker(&mut self, attacker: &Arc<str>) {
        self.set_identity(attacker, None);
        self.attackers.remove(attacker);
    }
}

pub(crate) struct Inner {
    pub(crate) config: HubConfig,
    pub(crate) repo: Repo,
    index: Mutex<Index>,
    pub(crate) metrics: HubMetrics,
    pub(crate) shutdown: watch::Sender<bool>,
    /// The bus, kept for per-connection subscriptions.
    bus: Bus,
    /// Whether the hub's bus subscriptions are in place.
    subscribed: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Inner {
    /// The index lock: held only for map operations and non-blocking queue
    /// pushes, never across an `.await`.
    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The process-wide attacker stream hub. Cheap to clone.
///
/// Create one per process with [`StreamHub::start`]; open streams with
/// [`StreamHub::open`]; stop with [`StreamHub::shutdown`].
#[derive(Clone)]
pub struct StreamHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StreamHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHub")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Deregisters a stream from the index when dropped.
pub(crate) struct Registration {
    hub: Arc<Inner>,
    attacker: Arc<str>,
    stream_id: u64,
    pub(crate) queue: Arc<FrameQueue>,
}

impl Registration {
    pub(crate) fn attacker_str(&self) -> &str {
        &self.attacker
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let grace_is_zero = self.hub.config.replay_grace.is_zero();
        let mut index = self.hub.index();
        let now_empty = match index.attackers.get_mut(&self.attacker) {
            Some(entry) => {
                entry.streams.retain(|s| s.id != self.stream_id);
                if entry.streams.is_empty() {
                    entry.idle_since = Some(Instant::now());
                    true
                } else {
                    false
                }
            }
            None => false,
        };
        if now_empty && grace_is_zero {
            index.remove_attacker(&self.attacker);
        }
        drop(index);
        self.hub
            .metrics
            .streams_active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl StreamHub {
    /// Start the hub: subscribe once to the attacker stream patterns on `bus`
    /// and route everything received. Subscriptions are retried with backoff
    /// while the bus is unavailable; the hub never dies with the bus. With the
    /// null bus nothing is subscribed and streams only get snapshots and
    /// keepalives.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (it spawns its tasks).
    pub fn start(bus: Bus, repo: Repo, config: HubConfig) -> Self {
        let (shutdown, _) = watch::channel(false);
        let hub = Self {
            inner: Arc::new(Inner {
                config,
                repo,
                index: Mutex::new(Index::default()),
                metrics: HubMetrics::default(),
                shutdown,
                bus: bus.clone(),
                subscribed: watch::Sender::new(false),
                tasks: Mutex::new(Vec::new()),
            }),
        };
        let mut tasks = Vec::new();
        if !bus.kind().is_null() && hub.inner.config.mode == SubscriptionMode::Shared {
            tasks.push(tokio::spawn(Self::subscribe_loop(
                Arc::downgrade(&hub.inner),
                bus,
            )));
        }
        tasks.push(tokio::spawn(Self::sweep_loop(Arc::downgrade(&hub.inner))));
        *hub.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        hub
    }

    /// The hub's counters.
    pub fn metrics(&self) -> &HubMetrics {
        &self.inner.metrics
    }

    /// Whether the hub's bus subscriptions are in place (always `false` on the
    /// null bus, which has nothing to subscribe to).
    pub fn is_subscribed(&self) -> bool {
        *self.inner.subscribed.borrow()
    }

    /// Wait until the hub's bus subscriptions are in place.
    pub async fn wait_subscribed(&self) {
        let mut rx = self.inner.subscribed.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|subscribed| *subscribed).await;
    }

    /// The hub's configuration.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// Number of attackers with open streams or a live replay ring.
    pub fn tracked_attackers(&self) -> usize {
        self.inner.index().attackers.len()
    }

    /// End every stream cleanly (no error frame) and stop the hub's tasks.
    /// Streams opened afterwards fail with [`OpenError::ShuttingDown`].
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        let tasks =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            task.abort();
        }
    }

    /// Open a stream for `attacker` (already loaded, so the caller could answer
    /// 404 first). The stream is registered before the snapshot is read, so no
    /// event published in between is lost.
    ///
    /// With `options.last_event_id` still in the attacker's replay ring, the
    /// stream starts with the missed frames and no snapshot; otherwise with the
    /// snapshot.
    ///
    /// # Errors
    ///
    /// [`OpenError::Repository`] when the snapshot cannot be read;
    /// [`OpenError::ShuttingDown`] after [`StreamHub::shutdown`].
    pub async fn open(
        &self,
        attacker: &Attacker,
        options: OpenOptions,
    ) -> Result<AttackerStream, OpenError> {
        if *self.inner.shutdown.borrow() {
            return Err(OpenError::ShuttingDown);
        }
        let attacker_key: Arc<str> = Arc::from(attacker.uuid.as_str());
        let queue = Arc::new(FrameQueue::new(self.inner.config.queue_max));
        let (registration, replay) = {
            let mut index = self.inner.index();
            let stream_id = index.next_stream_id;
            index.next_stream_id += 1;
            let entry = index.attackers.entry(attacker_key.clone()).or_default();
            entry.idle_since = None;
            entry.streams.push(StreamEntry {
                id: stream_id,
                queue: queue.clone(),
            });
            let replay = options.last_event_id.as_deref().and_then(|last| {
                let pos = entry.ring.iter().rposition(|(id, _)| &**id == last)?;
                Some(
                    entry
                        .ring
                        .iter()
                        .skip(pos + 1)
                        .map(|(_, frame)| frame.clone())
                        .collect::<Vec<_>>(),
                )
            });
            // The database is the source of truth for the identity at open.
            let identity = attacker.identity_id.as_deref().map(Arc::from);
            index.set_identity(&attacker_key, identity);
            self.inner
                .metrics
                .streams_active
                .fetch_add(1, Ordering::Relaxed);
            (
                Registration {
                    hub: self.inner.clone(),
                    attacker: attacker_key.clone(),
                    stream_id,
                    queue,
                },
                replay,
            )
        };
        self.inner
            .metrics
            .streams_opened
            .fetch_add(1, Ordering::Relaxed);

        let mut initial = vec![
            decnet_sse::keepalive(),
            decnet_sse::retry(
                u64::try_from(self.inner.config.retry.as_millis()).unwrap_or(u64::MAX),
            ),
        ];
        match replay {
            Some(frames) => {
                self.inner.metrics.resumed.fetch_add(1, Ordering::Relaxed);
                initial.extend(frames);
            }
            None => {
                let rows = self
                    .inner
                    .repo
                    .latest_observation_per_primitive(&attacker.uuid)
                    .await
                    .map_err(OpenError::Repository)?;
                initial.push(snapshot_frame(&attacker.uuid, &rows));
            }
        }
        let pump = (self.inner.config.mode == SubscriptionMode::PerConnection
            && !self.inner.bus.kind().is_null())
        .then(|| {
            AbortOnDrop(tokio::spawn(per_connection_pump(
                self.inner.bus.clone(),
                attacker.clone(),
                registration.queue.clone(),
                Arc::downgrade(&self.inner),
            )))
        });
        Ok(AttackerStream::new(Driver::new(
            self.inner.clone(),
            registration,
            initial,
            options,
            pump,
        )))
    }

    async fn subscribe_loop(hub: std::sync::Weak<Inner>, bus: Bus) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut subscriptions = Vec::new();
            for pattern in decnet_topics::ATTACKER_STREAM_PATTERNS {
                match bus.subscribe(pattern).await {
                    Ok(subscription) => subscriptions.push(subscription),
                    Err(error) => {
                        tracing::warn!(%pattern, %error, "hub could not subscribe; retrying");
                        break;
                    }
                }
            }
            if subscriptions.len() == decnet_topics::ATTACKER_STREAM_PATTERNS.len() {
                backoff = Duration::from_millis(100);
                if let Some(inner) = hub.upgrade() {
                    inner.subscribed.send_replace(true);
                }
                let mut merged = futures::stream::select_all(subscriptions);
                while let Some(event) = merged.next().await {
                    let Some(inner) = hub.upgrade() else { return };
                    dispatch(&inner, &event);
                }
                if let Some(inner) = hub.upgrade() {
                    inner.subscribed.send_replace(false);
                }
                tracing::warn!("hub bus subscriptions ended; resubscribing");
            } else {
                drop(subscriptions);
            }
            if hub.upgrade().is_none() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn sweep_loop(hub: std::sync::Weak<Inner>) {
        let period = match hub.upgrade() {
            Some(inner) => inner
                .config
                .replay_grace
                .clamp(Duration::from_millis(50), Duration::from_secs(10)),
            None => return,
        };
        loop {
            tokio::time::sleep(period).await;
            let Some(inner) = hub.upgrade() else { return };
            let grace = inner.config.replay_grace;
            let mut index = inner.index();
            let expired: Vec<Arc<str>> = index
                .attackers
                .iter()
                .filter(|(_, e)| e.streams.is_empty())
                .filter(|(_, e)| e.idle_since.is_some_and(|t| t.elapsed() >= grace))
                .map(|(k, _)| k.clone())
                .collect();
            for attacker in &expired {
                index.remove_attacker(attacker);
            }
        }
    }

    /// Route one event as if it came from the bus (for embedders that feed the
    /// hub from their own source, and for tests).
    pub fn dispatch(&self, event: &Event) {
        dispatch(&self.inner, event);
    }
}

fn payload_str<'a>(event: &'a Event, key: &str) -> Option<&'a str> {
    event.payload.get(key).and_then(serde_json::Value::as_str)
}

fn is_attacker_topic(topic: &str) -> bool {
    topic.starts_with("attacker.observation.")
        || topic == decnet_topics::TOPIC_ATTACKER_FINGERPRINT_ROTATED
        || topic == decnet_topics::TOPIC_ATTACKER_SCORED
}

fn dispatch(inner: &Inner, event: &Event) {
    inner
        .metrics
        .events_received
        .fetch_add(1, Ordering::Relaxed);
    let topic = event.topic.as_str();
    if topic.starts_with("identity.") {
        rekey(inner, event);
        return;
    }
    let mut index = inner.index();
    let targets: Vec<Arc<str>> = if is_attacker_topic(topic) {
        match payload_str(event, "attacker_uuid")
            .and_then(|uuid| index.attackers.get_key_value(uuid))
        {
            Some((key, _)) => vec![key.clone()],
            None => Vec::new(),
        }
    } else if topic.starts_with("attribution.") {
        match payload_str(event, "identity_uuid").and_then(|id| index.identities.get(id)) {
            Some(attackers) => attackers.iter().cloned().collect(),
            None => Vec::new(),
        }
    } else {
        Vec::new()
    };
    if targets.is_empty() {
        inner
            .metrics
            .events_unrouted
            .fetch_add(1, Ordering::Relaxed);
        return;
    }
    // Encode once; every receiving stream shares these bytes.
    let frame = live_frame(event);
    inner.metrics.frames_encoded.fetch_add(1, Ordering::Relaxed);
    let event_id: Arc<str> = Arc::from(event.id.as_str());
    let ring_capacity = inner.config.replay_capacity;
    let mut delivered = 0u64;
    let mut dropped = 0u64;
    for attacker in &targets {
        let Some(entry) = index.attackers.get_mut(attacker) else {
            continue;
        };
        if ring_capacity > 0 {
            if entry.ring.len() >= ring_capacity {
                entry.ring.pop_front();
            }
            entry.ring.push_back((event_id.clone(), frame.clone()));
        }
        for stream in &entry.streams {
            delivered += 1;
            if let Pushed::Lagged(n) = stream.queue.push(frame.clone()) {
                dropped += n;
            }
        }
    }
    drop(index);
    let metrics = &inner.metrics;
    metrics
        .frames_enqueued
        .fetch_add(delivered, Ordering::Relaxed);
    if dropped > 0 {
        metrics.frames_dropped.fetch_add(dropped, Ordering::Relaxed);
    }
    if delivered > 0 {
        metrics.add_frames(decnet_topics::sse_event_name(topic), delivered);
    }
}

/// Follow the identity graph live: which identity's `attribution.*` events
/// each attacker's streams receive.
fn rekey(inner: &Inner, event: &Event) {
    let mut index = inner.index();
    let mut applied = 0u64;
    match event.topic.as_str() {
        decnet_topics::TOPIC_IDENTITY_FORMED => {
            let Some(identity) = payload_str(event, "identity_uuid") else {
                return;
            };
            let identity: Arc<str> = Arc::from(identity);
            let members = event
                .payload
                .get("observation_uuids")
                .and_then(serde_json::Value::as_array);
            for attacker in members.into_iter().flatten().filter_map(|v| v.as_str()) {
                if let Some((key, _)) = index.attackers.get_key_value(attacker) {
                    let key = key.clone();
                    applied += u64::from(index.set_identity(&key, Some(identity.clone())));
                }
            }
        }
        decnet_topics::TOPIC_IDENTITY_OBSERVATION_LINKED => {
            let (Some(identity), Some(attacker)) = (
                payload_str(event, "identity_uuid"),
                payload_str(event, "observation_uuid"),
            ) else {
                return;
            };
            if let Some((key, _)) = index.attackers.get_key_value(attacker) {
                let key = key.clone();
                applied += u64::from(index.set_identity(&key, Some(Arc::from(identity))));
            }
        }
        decnet_topics::TOPIC_IDENTITY_MERGED => {
            let (Some(winner), Some(loser)) = (
                payload_str(event, "winner_uuid"),
                payload_str(event, "loser_uuid"),
            ) else {
                return;
            };
            if winner == loser {
                return;
            }
            let winner: Arc<str> = Arc::from(winner);
            let followers: Vec<Arc<str>> = index
                .identities
                .get(loser)
                .map(|set| set.iter().cloned().collect())
                .unwrap_or_default();
            for attacker in followers {
                applied += u64::from(index.set_identity(&attacker, Some(winner.clone())));
            }
        }
        // `identity.unmerged` and anything new: the database is consulted
        // again when streams reopen; live streams keep their identity.
        _ => {}
    }
    drop(index);
    if applied > 0 {
        inner.metrics.rekeys.fetch_add(applied, Ordering::Relaxed);
    }
}

/// Aborts a task when dropped (the per-connection pump of a stream).
pub(crate) struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// [`SubscriptionMode::PerConnection`]: this stream's own subscriptions,
/// filtering and encoding every event itself.
async fn per_connection_pump(
    bus: Bus,
    attacker: Attacker,
    queue: Arc<FrameQueue>,
    hub: std::sync::Weak<Inner>,
) {
    let mut subscriptions = Vec::new();
    for pattern in &decnet_topics::ATTACKER_STREAM_PATTERNS[..4] {
        match bus.subscribe(pattern).await {
            Ok(subscription) => subscriptions.push(subscription),
            Err(error) => {
                tracing::warn!(%pattern, %error, "per-connection subscribe failed");
                return;
            }
        }
    }
    let mut merged = futures::stream::select_all(subscriptions);
    while let Some(event) = merged.next().await {
        let wanted = if is_attacker_topic(&event.topic) {
            payload_str(&event, "attacker_uuid") == Some(attacker.uuid.as_str())
        } else {
            attacker.identity_id.is_some()
                && payload_str(&event, "identity_uuid") == attacker.identity_id.as_deref()
        };
        let Some(inner) = hub.upgrade() else { return };
        inner
            .metrics
            .events_received
            .fetch_add(1, Ordering::Relaxed);
        if !wanted {
            continue;
        }
        inner.metrics.frames_encoded.fetch_add(1, Ordering::Relaxed);
        inner
            .metrics
            .frames_enqueued
            .fetch_add(1, Ordering::Relaxed);
        if let Pushed::Lagged(n) = queue.push(live_frame(&event)) {
            inner.metrics.frames_dropped.fetch_add(n, Ordering::Relaxed);
        }
        inner
            .metrics
            .add_frames(decnet_topics::sse_event_name(&event.topic), 1);
    }
}
