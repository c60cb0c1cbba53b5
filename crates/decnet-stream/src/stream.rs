//! One stream: the `Stream<Item = Bytes>` an HTTP body is made of.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio::time::{Instant, Sleep};

use crate::frames::{INTERRUPTED, SESSION_EXPIRED, lagged_resync_frame};
use crate::queue::coalesce;
use crate::registry::Attachment;
use crate::session::{SessionEnd, SessionFlag, SessionWatch};
use crate::stats::add;

/// The frames of one stream, as a `Stream<Item = Bytes>`.
///
/// It ends after an `error` frame, on hub shutdown, or never (until dropped).
/// Dropping it releases everything it holds: its index entry, its queue, and
/// the guard given in [`crate::OpenOptions::guard`] (the connection slot).
pub struct EventStream {
    inner: BoxStream<'static, Bytes>,
    watch: Option<SessionWatch>,
    /// The untaken watch, driven by the body from its first poll on.
    watching: Option<BoxFuture<'static, SessionEnd>>,
    flag: Option<Arc<SessionFlag>>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl EventStream {
    pub(crate) fn new(driver: Driver, watch: Option<SessionWatch>) -> Self {
        let flag = driver.flag.clone();
        let inner = futures::stream::unfold(driver, |mut driver| async move {
            let chunk = driver.next_chunk().await?;
            Some((chunk, driver))
        });
        Self {
            inner: Box::pin(inner),
            watch,
            watching: None,
            flag,
        }
    }

    /// Take the watch of this stream's session, to poll it from a task that
    /// runs whatever the client does (see [`SessionWatch`]). Without this,
    /// the stream checks its session itself, but only while it is polled.
    pub fn take_session_watch(&mut self) -> Option<SessionWatch> {
        self.watch.take()
    }

    /// Why the session ended this stream, if it did.
    pub fn session_ended(&self) -> Option<SessionEnd> {
        self.flag.as_ref().and_then(|f| f.ended())
    }
}

impl Stream for EventStream {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = &mut *self;
        // An untaken watch runs here, while the body is polled.
        if let Some(watch) = this.watch.take() {
            this.watching = Some(Box::pin(async move { watch.ended().await }));
        }
        if let Some(watching) = this.watching.as_mut()
            && watching.as_mut().poll(cx).is_ready()
        {
            this.watching = None;
        }
        this.inner.as_mut().poll_next(cx)
    }
}

/// The state machine behind an [`EventStream`].
///
/// One timer serves the keepalive: the deadline moves on with every frame
/// without touching the timer, which is re-armed only when it fires early,
/// so a busy stream does no timer work per frame. The session is checked by
/// its [`SessionWatch`]; the driver only reacts to the flag it raises.
pub(crate) struct Driver {
    attachment: Attachment,
    pending: VecDeque<Bytes>,
    spare: VecDeque<Bytes>,
    keepalive_at: Instant,
    timer: Pin<Box<Sleep>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    flag: Option<Arc<SessionFlag>>,
    ended: bool,
    _guard: Option<Box<dyn Send + Sync>>,
    #[cfg(feature = "ablation")]
    pub(crate) _pump: Option<crate::ablation::AbortOnDrop>,
}

impl Driver {
    pub(crate) fn new(
        attachment: Attachment,
        initial: Vec<Bytes>,
        flag: Option<Arc<SessionFlag>>,
        guard: Option<Box<dyn Send + Sync>>,
    ) -> Self {
        let keepalive = attachment.shared.config.keepalive;
        let keepalive_at = Instant::now() + keepalive;
        Self {
            keepalive_at,
            timer: Box::pin(tokio::time::sleep_until(keepalive_at)),
            shutdown: attachment.shared.shutdown.subscribe(),
            attachment,
            pending: initial.into(),
            spare: VecDeque::new(),
            flag,
            ended: false,
            _guard: guard,
            #[cfg(feature = "ablation")]
            _pump: None,
        }
    }

    #[cfg(feature = "ablation")]
    pub(crate) fn queue(&self) -> Arc<crate::queue::FrameQueue> {
        self.attachment.queue.clone()
    }

    #[cfg(feature = "ablation")]
    pub(crate) fn shared(&self) -> &Arc<crate::registry::Shared> {
        &self.attachment.shared
    }

    fn end_with(&mut self, frame: &'static [u8]) {
        self.pending.push_back(Bytes::from_static(frame));
        self.ended = true;
    }

    /// A chunk is about to be sent: the keepalive is due one interval later.
    fn sent(&mut self, chunk: Bytes) -> Option<Bytes> {
        self.keepalive_at = Instant::now() + self.attachment.shared.config.keepalive;
        Some(chunk)
    }

    /// Send the client a resync and a fresh snapshot after its queue overflowed.
    async fn resync(&mut self, dropped: u64) {
        add(&self.attachment.shared.counters.resyncs, 1);
        self.pending.push_back(lagged_resync_frame(dropped));
        match self.attachment.source.resync().await {
            Ok(Some(frames)) => self.pending.extend(frames),
            Ok(None) => self.end_with(INTERRUPTED),
            Err(error) => {
                tracing::warn!(key = %self.attachment.source.key(), %error, "resync snapshot failed; ending stream");
                self.end_with(INTERRUPTED);
            }
        }
    }

    /// The session ended: the last frame says why.
    fn session_ended(&mut self, why: SessionEnd) {
        match why {
            // Counted by the session's flag when it ended.
            SessionEnd::Expired => self.end_with(SESSION_EXPIRED),
            SessionEnd::Unverifiable => self.end_with(INTERRUPTED),
        }
    }

    /// The timer fired: a keepalive if it is due, else re-arm.
    fn on_timer(&mut self) -> Option<Bytes> {
        let now = Instant::now();
        if self.keepalive_at <= now {
            self.keepalive_at = now + self.attachment.shared.config.keepalive;
            self.timer.as_mut().reset(self.keepalive_at);
            return Some(decnet_sse::keepalive());
        }
        self.timer.as_mut().reset(self.keepalive_at);
        None
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
            if let Some(why) = self.flag.as_ref().and_then(|f| f.ended()) {
                self.session_ended(why);
                continue;
            }
            let (dropped, finished) = self.attachment.queue.take(&mut self.spare);
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
            if finished {
                // The source ended the stream after these frames.
                self.pending.extend(self.spare.drain(..));
                self.ended = true;
                continue;
            }
            if let Some(chunk) = coalesce(&mut self.spare) {
                return self.sent(chunk);
            }
            let queue = self.attachment.queue.clone();
            let flag = self.flag.clone();
            let session = async {
                match &flag {
                    Some(flag) => flag.wait().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        return None;
                    }
                }
                () = session => {}
                () = queue.wait() => {}
                () = &mut self.timer => {
                    if let Some(keepalive) = self.on_timer() {
                        return self.sent(keepalive);
                    }
                }
            }
        }
    }
}
