//! One accepted connection: its context shared with the handler, the socket
//! wrapper that notices when writes stop making progress, and the watchdogs
//! that end a connection from outside the response body.
//!
//! A server polls a response body only while the socket takes bytes. A
//! client that stops reading therefore freezes its stream's body: its
//! session deadline and revocation checks (in the body) never run, and its
//! kernel send buffer stays full. Both are enforced here instead, in the
//! connection task, which runs whatever the client does:
//! - the stream's [`SessionWatch`] is handed over by the handler
//!   ([`ConnCtx::stream_opened`]); when the session ends, the stream is told
//!   (it queues its error frame) and the connection gets a short grace to
//!   deliver it before it is dropped;
//! - [`ProgressIo`] records when a write went pending and when one made
//!   progress; a connection with a write pending for longer than the write
//!   timeout is dropped.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use decnet_stream::{SessionEnd, SessionWatch};
use futures::task::AtomicWaker;
use http::Response;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::Body;

/// Whether one stream is still open (its body not yet dropped).
#[derive(Debug, Default)]
pub(crate) struct StreamLife {
    done: AtomicBool,
    notify: Notify,
}

impl StreamLife {
    /// Wait up to `grace` for the stream to finish; `false` when it did not.
    async fn finished_within(&self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        loop {
            let done = self.notify.notified();
            if self.done.load(Ordering::Acquire) {
                return true;
            }
            tokio::select! {
                () = done => {}
                () = tokio::time::sleep_until(deadline) => return self.done.load(Ordering::Acquire),
            }
        }
    }
}

/// Marks its stream finished when dropped (the body holds it).
pub(crate) struct StreamMark(Arc<StreamLife>);

impl StreamMark {
    pub(crate) fn life(&self) -> Arc<StreamLife> {
        self.0.clone()
    }
}

impl Drop for StreamMark {
    fn drop(&mut self) {
        self.0.done.store(true, Ordering::Release);
        self.0.notify.notify_one();
    }
}

/// What the connection task and the request handler share.
#[derive(Debug)]
pub struct ConnCtx {
    /// HTTP/1.1: the session watch of the stream opened on this connection,
    /// until the connection task takes it.
    watch: Mutex<Option<(SessionWatch, Arc<StreamLife>)>>,
    watch_ready: Notify,
    /// HTTP/2: streams are watched by tasks of their own, which raise this
    /// when one of them outlived its session's grace.
    multiplexed: Mutex<Option<Duration>>,
    kill: Notify,
    killed: AtomicBool,
    /// Set when a stream opens: the socket's send buffer is capped at the
    /// next write.
    cap_sndbuf: AtomicBool,
    /// When a write went pending (ns after `base`, +1; 0 = none pending).
    stalled_since: AtomicU64,
    stall: Notify,
    base: Instant,
    /// Whether the client came over TLS.
    secure: AtomicBool,
    /// HTTP/1.1: whether the handler offers stream responses to the
    /// connection task ([`ConnCtx::offer`]) instead of returning them.
    handover: AtomicBool,
    /// The offered response, until the connection task takes it.
    offered: Mutex<Option<Box<Offer>>>,
    offer_ready: Notify,
}

/// A stream's response offered to the connection task, to write itself
/// (crate::h1stream) or to send back to the handler for hyper to write.
#[derive(Debug)]
pub(crate) struct Offer {
    pub(crate) response: Response<Body>,
    back: oneshot::Sender<Response<Body>>,
}

impl Offer {
    /// Let hyper write it after all.
    pub(crate) fn decline(self) {
        // The handler is gone only with its connection: nothing to tell.
        let _ = self.back.send(self.response);
    }
}

impl Default for ConnCtx {
    fn default() -> Self {
        Self {
            watch: Mutex::new(None),
            watch_ready: Notify::new(),
            multiplexed: Mutex::new(None),
            kill: Notify::new(),
            killed: AtomicBool::new(false),
            cap_sndbuf: AtomicBool::new(false),
            stalled_since: AtomicU64::new(0),
            stall: Notify::new(),
            base: Instant::now(),
            secure: AtomicBool::new(false),
            handover: AtomicBool::new(false),
            offered: Mutex::new(None),
            offer_ready: Notify::new(),
        }
    }
}

impl ConnCtx {
    /// The connection is HTTPS.
    pub(crate) fn set_secure(&self) {
        self.secure.store(true, Ordering::Release);
    }

    /// Whether the connection is HTTPS.
    pub(crate) fn is_secure(&self) -> bool {
        self.secure.load(Ordering::Acquire)
    }

    /// HTTP/1.1 with the hand-over on: stream responses are offered to the
    /// connection task.
    pub(crate) fn enable_handover(&self) {
        self.handover.store(true, Ordering::Release);
    }

    /// Whether stream responses are offered to the connection task.
    pub(crate) fn handover_enabled(&self) -> bool {
        self.handover.load(Ordering::Acquire)
    }

    /// Offer a stream's response to the connection task; the receiver gets
    /// it back if the task declines (hyper then writes it).
    pub(crate) fn offer(&self, response: Response<Body>) -> oneshot::Receiver<Response<Body>> {
        let (back, declined) = oneshot::channel();
        *self.offered.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Box::new(Offer { response, back }));
        self.offer_ready.notify_one();
        declined
    }

    /// The next offered response (cancel-safe: an offer stays until taken).
    pub(crate) async fn offered(&self) -> Box<Offer> {
        loop {
            let ready = self.offer_ready.notified();
            if let Some(offer) = self
                .offered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                return offer;
            }
            ready.await;
        }
    }

    /// No write is pending: whatever hyper wrote to the socket is out.
    pub(crate) fn writes_done(&self) -> bool {
        self.stalled_since().is_none()
    }

    /// The connection is HTTP/2: each stream's session is watched by a task
    /// of its own, with `grace` to deliver its last frame.
    pub(crate) fn set_multiplexed(&self, grace: Duration) {
        *self.multiplexed.lock().unwrap_or_else(|e| e.into_inner()) = Some(grace);
    }

    /// A mark for a stream about to open on this connection.
    pub(crate) fn stream_mark(&self) -> StreamMark {
        StreamMark(Arc::new(StreamLife::default()))
    }

    /// A stream opened on this connection: watch its session from outside
    /// its body (the connection task for HTTP/1.1, a task of its own for
    /// HTTP/2).
    pub(crate) fn stream_opened(self: &Arc<Self>, watch: SessionWatch, life: Arc<StreamLife>) {
        self.cap_sndbuf.store(true, Ordering::Release);
        let multiplexed = *self.multiplexed.lock().unwrap_or_else(|e| e.into_inner());
        match multiplexed {
            Some(grace) => {
                let ctx = Arc::downgrade(self);
                tokio::spawn(async move {
                    let why = watch.ended().await;
                    if !life.finished_within(grace).await
                        && let Some(ctx) = ctx.upgrade()
                    {
                        tracing::debug!(?why, "an HTTP/2 stream outlived its session");
                        ctx.killed.store(true, Ordering::Release);
                        ctx.kill.notify_one();
                    }
                });
            }
            None => {
                *self.watch.lock().unwrap_or_else(|e| e.into_inner()) = Some((watch, life));
                self.watch_ready.notify_one();
            }
        }
    }

    fn now_mark(&self) -> u64 {
        u64::try_from(
            Instant::now()
                .saturating_duration_since(self.base)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
    }

    fn write_pending(&self) {
        if self
            .stalled_since
            .compare_exchange(0, self.now_mark(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.stall.notify_one();
        }
    }

    fn write_progress(&self) {
        self.stalled_since.store(0, Ordering::Release);
    }

    fn stalled_since(&self) -> Option<Instant> {
        match self.stalled_since.load(Ordering::Acquire) {
            0 => None,
            mark => self
                .base
                .checked_add(Duration::from_nanos(mark.saturating_sub(1))),
        }
    }

    /// Resolve when a write has been pending for `timeout` with no progress.
    pub(crate) async fn write_stalled(&self, timeout: Duration) {
        loop {
            let stalled = self.stall.notified();
            let Some(since) = self.stalled_since() else {
                stalled.await;
                continue;
            };
            let deadline = since.checked_add(timeout).unwrap_or(since);
            tokio::time::sleep_until(deadline).await;
            if self.stalled_since() == Some(since) {
                return;
            }
        }
    }

    /// Resolve when a stream's session ended and the stream did not finish
    /// within `grace` (the connection is then dropped): for HTTP/1.1 by
    /// running the watch of each stream opened on it, for HTTP/2 when a
    /// stream's own watch task says so.
    pub(crate) async fn session_ended(&self, grace: Duration) -> SessionEnd {
        loop {
            let ready = self.watch_ready.notified();
            let killed = self.kill.notified();
            if self.killed.load(Ordering::Acquire) {
                return SessionEnd::Expired;
            }
            let watch = self.watch.lock().unwrap_or_else(|e| e.into_inner()).take();
            let Some((watch, life)) = watch else {
                tokio::select! {
                    () = ready => {}
                    () = killed => {}
                }
                continue;
            };
            let why = watch.ended().await;
            if !life.finished_within(grace).await {
                return why;
            }
        }
    }
}

/// Whether a [`Gated`] future's own waker fired, and the task to wake.
#[derive(Debug)]
struct Gate {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

pin_project_lite::pin_project! {
    /// A future polled only when its own waker fired (and on its first poll),
    /// not on every wake-up of the task it shares: the connection's watchdogs
    /// beside a busy stream cost nothing per frame. Their timers and
    /// notifications wake it as they would wake the task.
    pub(crate) struct Gated<F> {
        gate: Arc<Gate>,
        waker: Waker,
        #[pin]
        future: F,
    }
}

impl<F: Future> Gated<F> {
    pub(crate) fn new(future: F) -> Self {
        let gate = Arc::new(Gate {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            waker: Waker::from(gate.clone()),
            gate,
            future,
        }
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Register before looking at the flag: a wake-up in between is seen.
        this.gate.task.register(cx.waker());
        if !this.gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.future.poll(&mut Context::from_waker(this.waker))
    }
}

pin_project_lite::pin_project! {
    /// The accepted socket, noting write progress in its [`ConnCtx`] and
    /// capping its send buffer once a stream opens on it.
    pub(crate) struct ProgressIo {
        #[pin]
        stream: TcpStream,
        ctx: Arc<ConnCtx>,
        sndbuf: usize,
    }
}

impl ProgressIo {
    pub(crate) fn new(stream: TcpStream, ctx: Arc<ConnCtx>, sndbuf: usize) -> Self {
        Self {
            stream,
            ctx,
            sndbuf,
        }
    }
}

fn track(ctx: &ConnCtx, poll: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
    match &poll {
        Poll::Ready(Ok(n)) if *n > 0 => ctx.write_progress(),
        Poll::Pending => ctx.write_pending(),
        _ => {}
    }
    poll
}

impl ProgressIo {
    fn cap_sndbuf(self: Pin<&mut Self>) {
        let this = self.project();
        if *this.sndbuf > 0 && this.ctx.cap_sndbuf.swap(false, Ordering::AcqRel) {
            let stream: &TcpStream = &this.stream;
            if let Err(error) = socket2::SockRef::from(stream).set_send_buffer_size(*this.sndbuf) {
                tracing::debug!(%error, "could not cap the send buffer");
            }
        }
    }
}

impl AsyncRead for ProgressIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().stream.poll_read(cx, buf)
    }
}

impl AsyncWrite for ProgressIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.as_mut().cap_sndbuf();
        let this = self.project();
        track(this.ctx, this.stream.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.as_mut().cap_sndbuf();
        let this = self.project();
        track(this.ctx, this.stream.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_gated_future_runs_on_its_own_wake_ups() {
        let notify = Arc::new(Notify::new());
        let gated = {
            let notify = notify.clone();
            tokio::spawn(Gated::new(async move {
                notify.notified().await;
                tokio::time::sleep(Duration::from_secs(5)).await;
                7
            }))
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!gated.is_finished());
        // The notification and then the timer wake it through the gate.
        notify.notify_one();
        let out = tokio::time::timeout(Duration::from_secs(10), gated).await;
        assert_eq!(out.ok().and_then(Result::ok), Some(7));
    }

    #[tokio::test]
    async fn a_gated_future_is_not_polled_on_other_wake_ups() {
        let polls = Arc::new(AtomicU64::new(0));
        let counted = {
            let polls = polls.clone();
            std::future::poll_fn(move |_| {
                polls.fetch_add(1, Ordering::Relaxed);
                Poll::<()>::Pending
            })
        };
        let gated = Gated::new(counted);
        tokio::pin!(gated);
        for _ in 0..10 {
            // The task wakes through the other branch every round.
            tokio::select! {
                biased;
                () = &mut gated => {}
                () = tokio::task::yield_now() => {}
            }
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_pending_past_the_timeout_is_a_stall() {
        let ctx = Arc::new(ConnCtx::default());
        let watcher = {
            let ctx = ctx.clone();
            tokio::spawn(async move { ctx.write_stalled(Duration::from_secs(30)).await })
        };
        // Pending then progress within the timeout: no stall.
        ctx.write_pending();
        tokio::time::sleep(Duration::from_secs(20)).await;
        ctx.write_progress();
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(!watcher.is_finished());
        // Pending for 30 s: the watcher resolves.
        ctx.write_pending();
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert!(watcher.is_finished());
    }
}
