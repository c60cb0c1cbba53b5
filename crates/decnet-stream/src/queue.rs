//! The bounded per-stream frame queue.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

/// What became of a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued.
    Queued,
    /// The queue was full: it was emptied and this many frames (the queued ones
    /// and the new one) are now owed to the client as a resync.
    Lagged(u64),
}

#[derive(Debug, Default)]
struct Inner {
    frames: VecDeque<Bytes>,
    /// Bytes of `frames`.
    bytes: usize,
    /// Frames dropped since the consumer last took the queue.
    dropped: u64,
    /// The source ended the stream: after the queued frames, nothing more.
    finished: bool,
}

/// One stream's queue. The hub pushes (never blocking), the stream drains.
///
/// Bounded by frames and by bytes: a burst of large events lags the stream
/// (resync) instead of piling up.
///
/// A `std::sync::Mutex` guards it: both sides hold it only to move `Bytes`
/// handles, never across an `.await`.
#[derive(Debug)]
pub(crate) struct FrameQueue {
    inner: Mutex<Inner>,
    capacity: usize,
    max_bytes: usize,
    notify: Notify,
}

impl FrameQueue {
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            max_bytes: max_bytes.max(1),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a frame without blocking. When the queue is full (frames or
    /// bytes) the stream has fallen behind: its queued frames are discarded
    /// (a fresh snapshot will replace them) and counted as dropped.
    pub(crate) fn push(&self, frame: Bytes) -> Pushed {
        let pushed = {
            let mut inner = self.lock();
            if inner.finished {
                return Pushed::Queued;
            }
            let over_bytes = inner.bytes.saturating_add(frame.len()) > self.max_bytes;
            if inner.frames.len() >= self.capacity || (over_bytes && !inner.frames.is_empty()) {
                let n = inner.frames.len() as u64 + 1;
                inner.frames.clear();
                inner.bytes = 0;
                inner.dropped += n;
                Pushed::Lagged(n)
            } else {
                inner.bytes = inner.bytes.saturating_add(frame.len());
                inner.frames.push_back(frame);
                Pushed::Queued
            }
        };
        self.notify.notify_one();
        pushed
    }

    /// Take everything queued into `spare` (which must be empty; swapping keeps
    /// both buffers' capacity, so steady state allocates nothing), the count
    /// of dropped frames owed as a resync, and whether the source finished
    /// the stream.
    pub(crate) fn take(&self, spare: &mut VecDeque<Bytes>) -> (u64, bool) {
        let mut inner = self.lock();
        std::mem::swap(&mut inner.frames, spare);
        inner.bytes = 0;
        (std::mem::take(&mut inner.dropped), inner.finished)
    }

    /// End the stream after `last` (queued even when the queue is full):
    /// the source failed or has nothing more to send.
    pub(crate) fn finish(&self, last: Option<Bytes>) {
        {
            let mut inner = self.lock();
            if let Some(frame) = last {
                inner.bytes = inner.bytes.saturating_add(frame.len());
                inner.frames.push_back(frame);
            }
            inner.finished = true;
        }
        self.notify.notify_one();
    }

    /// Wait until something is pushed (a permit is stored if a push happened
    /// while nobody waited, so no wake-up is lost).
    pub(crate) async fn wait(&self) {
        self.notify.notified().await;
    }
}

/// Join several frames into one buffer so they go out in one write; a single
/// frame is returned as is (shared, not copied).
pub(crate) fn coalesce(frames: &mut VecDeque<Bytes>) -> Option<Bytes> {
    match frames.len() {
        0 => None,
        1 => frames.pop_front(),
        _ => {
            let len = frames.iter().map(Bytes::len).sum();
            let mut buf = BytesMut::with_capacity(len);
            for frame in frames.drain(..) {
                buf.extend_from_slice(&frame);
            }
            Some(buf.freeze())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_empties_and_counts() {
        let queue = FrameQueue::new(2, 1 << 20);
        assert_eq!(queue.push(Bytes::from_static(b"a")), Pushed::Queued);
        assert_eq!(queue.push(Bytes::from_static(b"b")), Pushed::Queued);
        assert_eq!(queue.push(Bytes::from_static(b"c")), Pushed::Lagged(3));
        assert_eq!(queue.push(Bytes::from_static(b"d")), Pushed::Queued);
        let mut spare = VecDeque::new();
        assert_eq!(queue.take(&mut spare), (3, false));
        assert_eq!(spare, [Bytes::from_static(b"d")]);
        assert_eq!(queue.take(&mut VecDeque::new()), (0, false));
        queue.finish(Some(Bytes::from_static(b"end")));
        let mut last = VecDeque::new();
        assert_eq!(queue.take(&mut last), (0, true));
        assert_eq!(last, [Bytes::from_static(b"end")]);
    }

    #[test]
    fn the_byte_bound_lags_a_stream_of_large_frames() {
        let queue = FrameQueue::new(100, 10);
        // One frame larger than the bound is queued alone (never starved).
        assert_eq!(queue.push(Bytes::from(vec![b'x'; 50])), Pushed::Queued);
        assert_eq!(queue.push(Bytes::from_static(b"y")), Pushed::Lagged(2));
        assert_eq!(queue.push(Bytes::from_static(b"0123456")), Pushed::Queued);
        assert_eq!(queue.push(Bytes::from_static(b"789")), Pushed::Queued);
        assert_eq!(queue.push(Bytes::from_static(b"a")), Pushed::Lagged(3));
        let mut spare = VecDeque::new();
        assert_eq!(queue.take(&mut spare), (5, false));
    }

    #[test]
    fn coalesce_joins_frames() {
        let mut frames: VecDeque<Bytes> = [b"ab".as_slice(), b"cd", b"e"]
            .into_iter()
            .map(Bytes::from_static)
            .collect();
        assert_eq!(coalesce(&mut frames), Some(Bytes::from_static(b"abcde")));
        assert!(frames.is_empty());
        assert_eq!(coalesce(&mut frames), None);
    }
}
