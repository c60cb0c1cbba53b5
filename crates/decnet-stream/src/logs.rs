//! `GET /api/v1/stream`: logs, stats and histogram, polled from the database.
//!
//! DECNET runs one polling loop per connection: a logs query every second,
//! stats and histogram about every 10 s and after new logs. Here one
//! [`Poller`] per distinct (filter, cursor) serves every stream on it, so a
//! hundred dashboards on the same filter cost one query a second, not a
//! hundred; the stats (filter-independent) are shared by every poller.
//! Pollers of the same filter whose cursors meet merge.
//!
//! Frames keep DECNET's shapes, every one `event: message`:
//! `{"type":"stats","data":{...}}`, `{"type":"histogram","data":[...]}`,
//! `{"type":"logs","data":[rows]}` (with `id: <highest log id>`, so a
//! reconnecting `EventSource` resumes from the database), and the error
//! frame `event: error` `{"type":"error","message":"Stream interrupted"}`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use decnet_repo::{HistogramBucket, LogFilter, LogReader, LogRow, LogStats, RepoError};
use futures::future::BoxFuture;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::hub::{OpenError, OpenOptions, StreamHub};
use crate::queue::FrameQueue;
use crate::registry::{Attachment, Shared, Source};
use crate::session::SessionWatch;
use crate::stats::{add, sub};
use crate::stream::{Driver, EventStream};

/// The error frame of `/stream` (DECNET's shape, with a `type`).
pub const LOGS_INTERRUPTED: &[u8] =
    b"event: error\ndata: {\"type\":\"error\",\"message\":\"Stream interrupted\"}\n\n";

/// Tunables of `/stream` (DECNET's are fixed: 1 s, 10, 50, 15).
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// How often a poller asks for new logs.
    pub poll_every: Duration,
    /// Stats and histogram are refreshed every this many polls (and after
    /// every poll that found logs).
    pub refresh_every: u32,
    /// Rows per logs frame (`limit` of `get_logs_after_id`).
    pub batch: u32,
    /// Histogram bucket width, minutes.
    pub histogram_minutes: u32,
    /// DECNET's fleet state file (`decnet-state.json`): its
    /// `config.deckies` count as active and deployed deckies.
    pub state_file: Option<PathBuf>,
    /// DECNET's developer mode: `maxOutput` ends a stream after that many polls.
    pub developer: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            poll_every: Duration::from_secs(1),
            refresh_every: 10,
            batch: 50,
            histogram_minutes: 15,
            state_file: None,
            developer: false,
        }
    }
}

/// What a `/stream` is opened with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogParams {
    /// The `search`, `start_time`, `end_time` filter.
    pub filter: LogFilter,
    /// `lastEventId`: 0 = from the newest log on; otherwise the rows after it.
    pub last_event_id: i64,
    /// `maxOutput` (honoured in developer mode only): polls before the
    /// stream ends cleanly.
    pub max_output: Option<i64>,
}

/// Counters of the log pollers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogHubStats {
    /// `/stream` connections open now.
    pub streams_active: u64,
    /// Pollers running now.
    pub pollers: u64,
    /// Repository queries made (every kind: max id, logs, stats, histogram).
    pub queries: u64,
}

#[derive(Serialize)]
struct Message<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    data: &'a T,
}

#[derive(Serialize)]
struct StatsData {
    total_logs: i64,
    unique_attackers: i64,
    active_deckies: i64,
    deployed_deckies: i64,
}

fn message<T: Serialize>(kind: &str, data: &T, id: Option<&str>) -> Bytes {
    let json = serde_json::to_vec(&Message { kind, data }).unwrap_or_else(|_| b"{}".to_vec());
    decnet_sse::encode_event_json(id, "message", &json)
        .unwrap_or_else(|_| Bytes::from_static(LOGS_INTERRUPTED))
}

/// A `logs` frame: the rows, `id:` their highest id.
fn logs_frame(rows: &[LogRow], last: i64) -> Bytes {
    message("logs", &rows, Some(&last.to_string()))
}

fn histogram_frame(buckets: &[HistogramBucket]) -> Bytes {
    message("histogram", &buckets, None)
}

/// The fleet decky count of DECNET's state file: `config.deckies`; 0 when
/// the file is absent.
fn fleet_deckies(path: Option<&PathBuf>) -> Result<i64, RepoError> {
    let Some(path) = path else { return Ok(0) };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(RepoError::Query(Box::new(error))),
    };
    let state: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| RepoError::Query(Box::new(e)))?;
    let deckies = state
        .get("config")
        .and_then(|c| c.get("deckies"))
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| {
            RepoError::InvalidData(format!("{} has no config.deckies list", path.display()))
        })?;
    Ok(i64::try_from(deckies.len()).unwrap_or(i64::MAX))
}

struct Subscriber {
    id: u64,
    queue: Arc<FrameQueue>,
    /// Polls left before the stream ends (developer `maxOutput`).
    remaining: Option<i64>,
}

/// One polling loop, shared by every stream on its filter and cursor.
struct Poller {
    filter: LogFilter,
    state: Mutex<PollerState>,
    task: Mutex<Option<JoinHandle<()>>>,
}

struct PollerState {
    cursor: i64,
    subscribers: Vec<Subscriber>,
    /// The latest stats and histogram frames (what a joining stream starts with).
    stats: Option<Bytes>,
    histogram: Option<Bytes>,
    since_refresh: u32,
}

impl Poller {
    fn state(&self) -> MutexGuard<'_, PollerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    reader: Arc<dyn LogReader>,
    config: LogConfig,
    // std Mutex: a list scan or push, never across an `.await`.
    pollers: Mutex<Vec<Arc<Poller>>>,
    /// The shared stats frame and when it was read.
    stats: Mutex<Option<(Instant, Bytes)>>,
    next_id: AtomicU64,
    streams_active: AtomicU64,
    queries: AtomicU64,
}

impl Inner {
    fn pollers(&self) -> MutexGuard<'_, Vec<Arc<Poller>>> {
        self.pollers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn counted<T>(&self, result: Result<T, RepoError>) -> Result<T, RepoError> {
        add(&self.queries, 1);
        result
    }

    /// The stats frame: shared by every poller for half a poll period,
    /// read fresh when `fresh` (after new logs, the count must include them).
    async fn stats_frame(&self, fresh: bool) -> Result<Bytes, RepoError> {
        let cached = self
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(at, _)| !fresh && at.elapsed() < self.config.poll_every / 2)
            .map(|(_, frame)| frame.clone());
        if let Some(frame) = cached {
            return Ok(frame);
        }
        let LogStats {
            total_logs,
            unique_attackers,
            running_topology_deckies,
            topology_deckies,
        } = self.counted(self.reader.log_stats().await)?;
        let fleet = fleet_deckies(self.config.state_file.as_ref())?;
        let frame = message(
            "stats",
            &StatsData {
                total_logs,
                unique_attackers,
                active_deckies: fleet.saturating_add(running_topology_deckies),
                deployed_deckies: fleet.saturating_add(topology_deckies),
            },
            None,
        );
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), frame.clone()));
        Ok(frame)
    }

    async fn histogram_frame(&self, filter: &LogFilter) -> Result<Bytes, RepoError> {
        let buckets = self.counted(
            self.reader
                .log_histogram(filter, self.config.histogram_minutes)
                .await,
        )?;
        Ok(histogram_frame(&buckets))
    }
}

/// The `/stream` pollers of one process. Cheap to clone.
#[derive(Clone)]
pub struct LogHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LogHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHub")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// A stream's place in its poller (whichever it is after merges); leaving
/// removes it.
struct LogRegistration {
    hub: Weak<Inner>,
    filter: LogFilter,
    id: u64,
    key: String,
}

impl Source for LogRegistration {
    fn resync(&self) -> BoxFuture<'_, Result<Option<Vec<Bytes>>, RepoError>> {
        Box::pin(async move {
            let Some(hub) = self.hub.upgrade() else {
                return Ok(None);
            };
            let stats = hub.stats_frame(false).await?;
            let histogram = hub.histogram_frame(&self.filter).await?;
            Ok(Some(vec![stats, histogram]))
        })
    }

    fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for LogRegistration {
    fn drop(&mut self) {
        // The stream may have moved to another poller by a merge: look for
        // it in every poller of its filter.
        if let Some(hub) = self.hub.upgrade() {
            let pollers = hub.pollers().clone();
            for poller in pollers {
                poller.state().subscribers.retain(|s| s.id != self.id);
            }
            sub(&hub.streams_active, 1);
        }
    }
}

impl LogHub {
    /// The `/stream` pollers over `reader`, sharing `hub`'s tunables
    /// (keepalive, retry, queues), counters and shutdown.
    pub fn new(hub: &StreamHub, reader: Arc<dyn LogReader>, config: LogConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                shared: hub.shared().clone(),
                reader,
                config,
                pollers: Mutex::new(Vec::new()),
                stats: Mutex::new(None),
                next_id: AtomicU64::new(0),
                streams_active: AtomicU64::new(0),
                queries: AtomicU64::new(0),
            }),
        }
    }

    /// The counters.
    pub fn stats(&self) -> LogHubStats {
        LogHubStats {
            streams_active: self.inner.streams_active.load(Ordering::Relaxed),
            pollers: u64::try_from(self.inner.pollers().len()).unwrap_or(u64::MAX),
            queries: self.inner.queries.load(Ordering::Relaxed),
        }
    }

    /// Open a `/stream`: the initial stats and histogram are read (or shared
    /// from a poller already on this filter and cursor) before the first
    /// byte, so a database outage is a 503, never an aborted 200.
    ///
    /// # Errors
    ///
    /// [`OpenError::Repository`] when the prefetch fails,
    /// [`OpenError::ShuttingDown`] after shutdown.
    pub async fn open(
        &self,
        params: LogParams,
        options: OpenOptions,
    ) -> Result<EventStream, OpenError> {
        let inner = &self.inner;
        if *inner.shared.shutdown.borrow() {
            return Err(OpenError::ShuttingDown);
        }
        let cursor = if params.last_event_id != 0 {
            params.last_event_id
        } else {
            inner
                .counted(inner.reader.max_log_id().await)
                .map_err(OpenError::Repository)?
        };
        let config = &inner.shared.config;
        let queue = Arc::new(FrameQueue::new(config.queue_max, config.queue_max_bytes));
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let subscriber = Subscriber {
            id,
            queue: queue.clone(),
            remaining: params.max_output.filter(|_| inner.config.developer),
        };
        // Join a poller on this filter and cursor, under the list's lock so
        // it cannot retire in between (its frames are cached).
        let joined = {
            let pollers = inner.pollers();
            pollers
                .iter()
                .find(|p| p.filter == params.filter && p.state().cursor == cursor)
                .and_then(|poller| {
                    let mut state = poller.state();
                    let frames = state.stats.clone().zip(state.histogram.clone())?;
                    state.subscribers.push(Subscriber {
                        id: subscriber.id,
                        queue: subscriber.queue.clone(),
                        remaining: subscriber.remaining,
                    });
                    Some(frames)
                })
        };
        let (stats, histogram) = match joined {
            Some(frames) => frames,
            None => {
                let (stats, histogram) = self.prefetch(&params.filter).await?;
                let poller = Arc::new(Poller {
                    filter: params.filter.clone(),
                    state: Mutex::new(PollerState {
                        cursor,
                        subscribers: vec![subscriber],
                        stats: Some(stats.clone()),
                        histogram: Some(histogram.clone()),
                        since_refresh: 0,
                    }),
                    task: Mutex::new(None),
                });
                inner.pollers().push(poller.clone());
                let task = tokio::spawn(poll_loop(Arc::downgrade(inner), Arc::downgrade(&poller)));
                *poller.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
                (stats, histogram)
            }
        };
        add(&inner.streams_active, 1);
        add(&inner.shared.counters.streams_active, 1);
        add(&inner.shared.counters.streams_opened, 1);
        let registration = LogRegistration {
            hub: Arc::downgrade(inner),
            filter: params.filter.clone(),
            id,
            key: format!("logs@{cursor}"),
        };
        let retry = u64::try_from(config.retry.as_millis()).unwrap_or(u64::MAX);
        let initial = vec![
            decnet_sse::keepalive(),
            decnet_sse::retry(retry),
            stats,
            histogram,
        ];
        let (flag, watch) = SessionWatch::for_session(
            options.session,
            config.revalidate_every,
            config.session_unknown_max,
            &inner.shared.counters.sessions_expired,
        );
        let attachment = Attachment {
            shared: inner.shared.clone(),
            queue,
            source: Box::new(StreamCount {
                registration,
                shared: inner.shared.clone(),
            }),
        };
        Ok(EventStream::new(
            Driver::new(attachment, initial, flag, options.guard),
            watch,
        ))
    }

    async fn prefetch(&self, filter: &LogFilter) -> Result<(Bytes, Bytes), OpenError> {
        let stats = self
            .inner
            .stats_frame(false)
            .await
            .map_err(OpenError::Repository)?;
        let histogram = self
            .inner
            .histogram_frame(filter)
            .await
            .map_err(OpenError::Repository)?;
        Ok((stats, histogram))
    }
}

/// A log registration that also keeps the hub-wide stream count.
struct StreamCount {
    registration: LogRegistration,
    shared: Arc<Shared>,
}

impl Source for StreamCount {
    fn resync(&self) -> BoxFuture<'_, Result<Option<Vec<Bytes>>, RepoError>> {
        self.registration.resync()
    }

    fn key(&self) -> &str {
        self.registration.key()
    }
}

impl Drop for StreamCount {
    fn drop(&mut self) {
        sub(&self.shared.counters.streams_active, 1);
    }
}

/// What one poll produced for the poller's streams.
enum Poll {
    Frames(Vec<Bytes>),
    Failed,
}

async fn poll_once(inner: &Inner, poller: &Poller) -> Poll {
    let cursor = poller.state().cursor;
    let rows = match inner.counted(
        inner
            .reader
            .logs_after_id(cursor, inner.config.batch, &poller.filter)
            .await,
    ) {
        Ok(rows) => rows,
        Err(error) => {
            tracing::warn!(%error, "/stream logs poll failed");
            return Poll::Failed;
        }
    };
    let mut frames = Vec::new();
    let mut refresh = {
        let state = poller.state();
        state.since_refresh >= inner.config.refresh_every
    };
    let new_logs = !rows.is_empty();
    if let Some(last) = rows.iter().map(|r| r.id).max() {
        frames.push(logs_frame(&rows, last));
        poller.state().cursor = last;
        refresh = true;
    }
    if refresh {
        let stats = match inner.stats_frame(new_logs).await {
            Ok(frame) => frame,
            Err(error) => {
                tracing::warn!(%error, "/stream stats failed");
                return Poll::Failed;
            }
        };
        let histogram = match inner.histogram_frame(&poller.filter).await {
            Ok(frame) => frame,
            Err(error) => {
                tracing::warn!(%error, "/stream histogram failed");
                return Poll::Failed;
            }
        };
        frames.push(stats.clone());
        frames.push(histogram.clone());
        let mut state = poller.state();
        state.stats = Some(stats);
        state.histogram = Some(histogram);
        state.since_refresh = 0;
    }
    poller.state().since_refresh += 1;
    Poll::Frames(frames)
}

async fn poll_loop(hub: Weak<Inner>, poller: Weak<Poller>) {
    let Some(period) = hub.upgrade().map(|h| h.config.poll_every) else {
        return;
    };
    // DECNET polls at once after the initial frames, then every period.
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let (Some(inner), Some(poller)) = (hub.upgrade(), poller.upgrade()) else {
            return;
        };
        // Developer maxOutput: a stream past its polls ends cleanly.
        poller
            .state()
            .subscribers
            .retain_mut(|subscriber| match subscriber.remaining.as_mut() {
                Some(left) if *left <= 0 => {
                    subscriber.queue.finish(None);
                    false
                }
                Some(left) => {
                    *left -= 1;
                    true
                }
                None => true,
            });
        let outcome = poll_once(&inner, &poller).await;
        let queues: Vec<Arc<FrameQueue>> = poller
            .state()
            .subscribers
            .iter()
            .map(|s| s.queue.clone())
            .collect();
        match outcome {
            Poll::Frames(frames) => {
                for queue in &queues {
                    for frame in &frames {
                        let _ = queue.push(frame.clone());
                    }
                }
            }
            Poll::Failed => {
                for queue in &queues {
                    queue.finish(Some(Bytes::from_static(LOGS_INTERRUPTED)));
                }
                retire(&inner, &poller);
                return;
            }
        }
        if merge_or_retire(&inner, &poller) {
            return;
        }
    }
}

/// Remove `poller` from the list.
fn retire(inner: &Inner, poller: &Arc<Poller>) {
    inner.pollers().retain(|p| !Arc::ptr_eq(p, poller));
}

/// After a poll: a poller without streams retires; one whose cursor met
/// another poller's on the same filter hands its streams over and retires.
/// `true` when it retired.
fn merge_or_retire(inner: &Inner, poller: &Arc<Poller>) -> bool {
    let mut pollers = inner.pollers();
    if poller.state().subscribers.is_empty() {
        pollers.retain(|p| !Arc::ptr_eq(p, poller));
        return true;
    }
    let cursor = poller.state().cursor;
    let twin = pollers
        .iter()
        .find(|p| {
            !Arc::ptr_eq(p, poller) && p.filter == poller.filter && p.state().cursor == cursor
        })
        .cloned();
    let Some(twin) = twin else { return false };
    let moved = std::mem::take(&mut poller.state().subscribers);
    twin.state().subscribers.extend(moved);
    pollers.retain(|p| !Arc::ptr_eq(p, poller));
    true
}

/// DECNET's lax integer of a query parameter (pydantic's lax mode): optional
/// surrounding whitespace and sign, digits with single `_` between them, and
/// a fraction of zeros only (`1.0`). `None` for anything else (`1.5`, empty,
/// `abc`, `0x10`, `1e3`) and for numbers beyond 64 bits.
pub fn lax_int(text: &str) -> Option<i64> {
    let t = text.trim();
    let (sign, digits) = match t.strip_prefix('-') {
        Some(rest) => (-1i64, rest),
        None => (1, t.strip_prefix('+').unwrap_or(t)),
    };
    let (whole, fraction) = match digits.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (digits, None),
    };
    if fraction.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b == b'0')) {
        return None;
    }
    if whole.is_empty()
        || whole.starts_with('_')
        || whole.ends_with('_')
        || whole.contains("__")
        || !whole.bytes().all(|b| b.is_ascii_digit() || b == b'_')
    {
        return None;
    }
    let value: i64 = whole.replace('_', "").parse().ok()?;
    value.checked_mul(sign)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lax_integers_as_pydantic_reads_them() {
        for (text, value) in [
            ("12", 12),
            (" 12 ", 12),
            ("+7", 7),
            ("-5", -5),
            ("1_000", 1000),
            ("1.0", 1),
            ("0", 0),
        ] {
            assert_eq!(lax_int(text), Some(value), "{text:?}");
        }
        for text in [
            "1.5",
            "",
            "abc",
            "0x10",
            "1e3",
            "_1",
            "1__0",
            "1_",
            ".0",
            "--1",
            "99999999999999999999",
        ] {
            assert_eq!(lax_int(text), None, "{text:?}");
        }
    }

    #[test]
    fn frames_keep_decnets_shapes() {
        let frame = message(
            "stats",
            &StatsData {
                total_logs: 3,
                unique_attackers: 2,
                active_deckies: 1,
                deployed_deckies: 4,
            },
            None,
        );
        assert_eq!(
            &frame[..],
            &b"event: message\ndata: {\"type\":\"stats\",\"data\":{\"total_logs\":3,\"unique_attackers\":2,\"active_deckies\":1,\"deployed_deckies\":4}}\n\n"[..]
        );
        let buckets = [HistogramBucket {
            time: Some("2026-04-09 12:00:00".into()),
            count: 5,
        }];
        assert_eq!(
            &histogram_frame(&buckets)[..],
            &b"event: message\ndata: {\"type\":\"histogram\",\"data\":[{\"time\":\"2026-04-09 12:00:00\",\"count\":5}]}\n\n"[..]
        );
        assert!(logs_frame(&[], 42).starts_with(b"id: 42\nevent: message\n"));
    }

    #[test]
    fn the_fleet_count_reads_decnets_state_file() {
        let dir = std::env::temp_dir().join(format!("decnet-state-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("decnet-state.json");
        assert_eq!(fleet_deckies(Some(&path)).ok(), Some(0), "absent: 0");
        std::fs::write(
            &path,
            r#"{"config": {"deckies": [{"name": "a"}, {"name": "b"}]}, "compose_path": "x"}"#,
        )
        .ok();
        assert_eq!(fleet_deckies(Some(&path)).ok(), Some(2));
        std::fs::write(&path, "not json").ok();
        assert!(
            fleet_deckies(Some(&path)).is_err(),
            "invalid: an error, as DECNET raises"
        );
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(fleet_deckies(None).ok(), Some(0));
    }
}
