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
    /// Frames dropped since the consumer last took the queue.
    dropped: u64,
}

/// One stream's queue. The hub pushes (never blocking), the stream drains.
///
/// A `std::sync::Mutex` guards it: both sides hold it only to move `Bytes`
/// handles, never across an `.await`.
#[derive(Debug)]
pub(crate) struct FrameQueue {
    inner: Mutex<Inner>,
    capacity: usize,
    notify: Notify,
}

impl FrameQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                frames: VecDeque::with_capacity(capacity.min(16)),
                dropped: 0,
            }),
            capacity: capacity.max(1),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a frame without blocking. When the queue is full the stream has
    /// fallen behind: its queued frames are discarded (a fresh snapshot will
    /// replace them) and counted as dropped.
    pub(crate) fn push(&self, frame: Bytes) -> Pushed {
        let pushed = {
            let mut inner = self.lock();
            if inner.frames.len() >= self.capacity {
                let n = inner.frames.len() as u64 + 1;
                inner.frames.clear();
                inner.dropped += n;
                Pushed::Lagged(n)
            } else {
                inner.frames.push_back(frame);
                Pushed::Queued
            }
        };
        self.notify.notify_one();
        pushed
    }

    /// Take everything queued into `spare` (which must be empty; swapping keeps
    /// both buffers' capacity, so steady state allocates nothing) and the count
    /// of dropped frames owed as a resync.
    pub(crate) fn take(&self, spare: &mut VecDeque<Bytes>) -> u64 {
        let mut inner = self.lock();
        std::mem::swap(&mut inner.frames, spare);
        std::mem::take(&mut inner.dropped)
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
        let queue = FrameQueue::new(2);
        assert_eq!(queue.push(Bytes::from_static(b"a")), Pushed::Queued);
        assert_eq!(queue.push(Bytes::from_static(b"b")), Pushed::Queued);
        assert_eq!(queue.push(Bytes::from_static(b"c")), Pushed::Lagged(3));
        assert_eq!(queue.push(Bytes::from_static(b"d")), Pushed::Queued);
        let mut spare = VecDeque::new();
        assert_eq!(queue.take(&mut spare), 3);
        assert_eq!(spare, [Bytes::from_static(b"d")]);
        assert_eq!(queue.take(&mut VecDeque::new()), 0);
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
