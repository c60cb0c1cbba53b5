//! One attacker stream: the `Stream<Item = Bytes>` an HTTP body is made of.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use decnet_repo::Repository;
use futures::Stream;
use futures::stream::BoxStream;
use tokio::time::{Instant, Sleep};

use crate::frames::{INTERRUPTED, SESSION_EXPIRED, lagged_resync_frame, snapshot_frame};
use crate::hub::{AbortOnDrop, Inner, OpenOptions, Registration};
use crate::queue::coalesce;
use crate::session::{SessionCheck, SessionVerdict};

/// The frames of one attacker stream, as a `Stream<Item = Bytes>`.
///
/// It ends after an `error` frame, on hub shutdown, or never (until dropped).
/// Dropping it releases everything it holds: its index entry, its queue, and
/// the guard given in [`OpenOptions::guard`] (the connection slot).
pub struct AttackerStream {
    inner: BoxStream<'static, Bytes>,
}

impl std::fmt::Debug for AttackerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttackerStream").finish_non_exhaustive()
    }
}

impl AttackerStream {
    pub(crate) fn new(driver: Driver) -> Self {
        let inner = futures::stream::unfold(driver, |mut driver| async move {
            let chunk = driver.next_chunk().await?;
            Some((chunk, driver))
        });
        Self {
            inner: Box::pin(inner),
        }
    }
}

impl Stream for AttackerStream {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// The state machine behind an [`AttackerStream`].
///
/// One timer serves the keepalive, the session expiry and the periodic
/// revalidation: it is armed for the earliest of the three and re-armed when
/// it fires early (the keepalive deadline moves on with every frame without
/// touching the timer, so a busy stream does no timer work per frame).
pub(crate) struct Driver {
    hub: Arc<Inner>,
    registration: Registration,
    pending: VecDeque<Bytes>,
    spare: VecDeque<Bytes>,
    keepalive_at: Instant,
    session: Option<Arc<dyn SessionCheck>>,
    session_expires_at: Option<Instant>,
    revalidate_at: Instant,
    timer: Pin<Box<Sleep>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    ended: bool,
    _guard: Option<Box<dyn Send + Sync>>,
    _pump: Option<AbortOnDrop>,
}

fn instant_of(at: SystemTime) -> Instant {
    let now = Instant::now();
    match at.duration_since(SystemTime::now()) {
        Ok(ahead) => now + ahead,
        Err(_) => now,
    }
}

impl Driver {
    pub(crate) fn new(
        hub: Arc<Inner>,
        registration: Registration,
        initial: Vec<Bytes>,
        options: OpenOptions,
        pump: Option<AbortOnDrop>,
    ) -> Self {
        let now = Instant::now();
        let session_expires_at = options
            .session
            .as_ref()
            .and_then(|s| s.expires_at())
            .map(instant_of);
        let keepalive_at = now + hub.config.keepalive;
        let mut driver = Self {
            keepalive_at,
            revalidate_at: now + hub.config.revalidate_every,
            timer: Box::pin(tokio::time::sleep_until(keepalive_at)),
            shutdown: hub.shutdown.subscribe(),
            hub,
            registration,
            pending: initial.into(),
            spare: VecDeque::new(),
            session: options.session,
            session_expires_at,
            ended: false,
            _guard: options.guard,
            _pump: pump,
        };
        let first = driver.next_deadline();
        driver.timer.as_mut().reset(first);
        driver
    }

    fn end_with(&mut self, frame: &'static [u8]) {
        self.pending.push_back(Bytes::from_static(frame));
        self.ended = true;
    }

    fn session_ended(&mut self) {
        self.hub
            .metrics
            .sessions_expired
            .fetch_add(1, Ordering::Relaxed);
        self.end_with(SESSION_EXPIRED);
    }

    /// The earliest moment the timer must wake the stream.
    fn next_deadline(&self) -> Instant {
        let mut at = self.keepalive_at;
        if self.session.is_some() {
            at = at.min(self.revalidate_at);
        }
        if let Some(expires) = self.session_expires_at {
            at = at.min(expires);
        }
        at
    }

    /// A chunk is about to be sent: the keepalive is due one interval later.
    fn sent(&mut self, chunk: Bytes) -> Option<Bytes> {
        self.keepalive_at = Instant::now() + self.hub.config.keepalive;
        Some(chunk)
    }

    /// Send the client a resync and a fresh snapshot after its queue overflowed.
    async fn resync(&mut self, dropped: u64) {
        self.hub.metrics.resyncs.fetch_add(1, Ordering::Relaxed);
        self.pending.push_back(lagged_resync_frame(dropped));
        let attacker = self.registration.attacker_uuid().to_owned();
        match self
            .hub
            .repo
            .latest_observation_per_primitive(&attacker)
            .await
        {
            Ok(rows) => self.pending.push_back(snapshot_frame(&attacker, &rows)),
            Err(error) => {
                tracing::warn!(attacker_uuid = %attacker, %error, "resync snapshot failed; ending stream");
                self.end_with(INTERRUPTED);
            }
        }
    }

    /// The timer fired: do whatever is due, or re-arm it if nothing is yet.
    async fn on_timer(&mut self) -> Option<Bytes> {
        let now = Instant::now();
        if self.session_expires_at.is_some_and(|at| at <= now) {
            self.session_ended();
            return None;
        }
        if self.session.is_some() && self.revalidate_at <= now {
            self.revalidate_at = now + self.hub.config.revalidate_every;
            if let Some(session) = self.session.clone()
                && session.revalidate().await == SessionVerdict::Ended
            {
                self.session_ended();
                return None;
            }
        }
        let keepalive = (self.keepalive_at <= now).then(decnet_sse::keepalive);
        if keepalive.is_some() {
            self.keepalive_at = now + self.hub.config.keepalive;
        }
        let next = self.next_deadline();
        self.timer.as_mut().reset(next);
        keepalive
    }

    /// The next chunk of bytes for the client, or `None` when the stream ends.
    pub(crate) async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return self.sent(frame);
            }
            if self.ended || *self.shutdown.borrow() {
                return None;
            }
            let dropped = self.registration.queue.take(&mut self.spare);
            if dropped > 0 {
                // Frames queued after the overflow are newer than nothing the
                // client has; send them after the fresh snapshot. Boxed: the
                // repository future is large and rarely needed, so it is not
                // kept inline in every idle stream.
                let after = std::mem::take(&mut self.spare);
                Box::pin(self.resync(dropped)).await;
                if !self.ended {
                    self.pending.extend(after);
                }
                continue;
            }
            if let Some(chunk) = coalesce(&mut self.spare) {
                return self.sent(chunk);
            }
            let queue = self.registration.queue.clone();
            tokio::select! {
                biased;
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        return None;
                    }
                }
                () = queue.wait() => {}
                () = &mut self.timer => {
                    if let Some(keepalive) = Box::pin(self.on_timer()).await {
                        return self.sent(keepalive);
                    }
                }
            }
        }
    }
}

impl Registration {
    pub(crate) fn attacker_uuid(&self) -> &str {
        self.attacker_str()
    }
}
