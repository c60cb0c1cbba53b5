//! The hub's counters, read through a [`HubStats`] snapshot.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The event-name label for every name a kind does not list as known.
pub const OTHER_EVENT: &str = "other";

/// A point-in-time copy of the hub's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Streams open now.
    pub streams_active: u64,
    /// Streams opened since start.
    pub streams_opened: u64,
    /// Bus events the hub received.
    pub events_received: u64,
    /// Events that no open stream (or replay ring) wanted.
    pub events_unrouted: u64,
    /// Live frames encoded (once per event and kind, however many streams get it).
    pub frames_encoded: u64,
    /// Frames pushed onto stream queues (one per receiving stream).
    pub frames_enqueued: u64,
    /// Frames dropped from lagging streams' queues.
    pub frames_dropped: u64,
    /// Resyncs (resync + fresh snapshot) sent.
    pub resyncs: u64,
    /// Streams ended because their session expired or was revoked.
    pub sessions_expired: u64,
    /// Streams resumed from a replay ring (no snapshot).
    pub resumed: u64,
    /// Identity re-keys applied.
    pub rekeys: u64,
    /// Live frames not kept for replay because the byte budget was spent.
    pub ring_skipped: u64,
    /// Keys (attackers, topologies, kind-wide families) with open streams or
    /// a live replay ring.
    pub tracked_keys: u64,
    /// Bytes held by every replay ring.
    pub ring_bytes: u64,
    /// Per kind: its name, streams open now, and live frames delivered by SSE
    /// event name (known names, then [`OTHER_EVENT`]).
    pub kinds: Vec<KindStats>,
}

/// One kind's part of [`HubStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindStats {
    /// The kind's name (`attacker`, `identities`, ...).
    pub kind: &'static str,
    /// Streams of this kind open now.
    pub streams_active: u64,
    /// Live frames delivered, by event name (counted per receiving stream).
    pub frames_by_event: Vec<(&'static str, u64)>,
}

#[derive(Debug)]
pub(crate) struct KindCounters {
    pub(crate) name: &'static str,
    pub(crate) known: &'static [&'static str],
    pub(crate) active: AtomicU64,
    /// `known.len() + 1` counters, the last one for [`OTHER_EVENT`].
    frames: Vec<AtomicU64>,
}

impl KindCounters {
    pub(crate) fn new(name: &'static str, known: &'static [&'static str]) -> Self {
        Self {
            name,
            known,
            active: AtomicU64::new(0),
            frames: (0..=known.len()).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Count `n` deliveries of a frame named `event_name`.
    pub(crate) fn delivered(&self, event_name: &str, n: u64) {
        let slot = self
            .known
            .iter()
            .position(|known| *known == event_name)
            .unwrap_or(self.known.len());
        if let Some(counter) = self.frames.get(slot) {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> KindStats {
        let names = self.known.iter().copied().chain([OTHER_EVENT]);
        KindStats {
            kind: self.name,
            streams_active: self.active.load(Ordering::Relaxed),
            frames_by_event: names
                .zip(&self.frames)
                .map(|(name, n)| (name, n.load(Ordering::Relaxed)))
                .collect(),
        }
    }
}

/// The live counters (relaxed atomics; no lock on a hot path).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) streams_active: AtomicU64,
    pub(crate) streams_opened: AtomicU64,
    pub(crate) events_received: AtomicU64,
    pub(crate) events_unrouted: AtomicU64,
    pub(crate) frames_encoded: AtomicU64,
    pub(crate) frames_enqueued: AtomicU64,
    pub(crate) frames_dropped: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    /// Shared with every stream's session flag, which counts when the
    /// session ends (whether or not the stream's body is polled again).
    pub(crate) sessions_expired: Arc<AtomicU64>,
    pub(crate) resumed: AtomicU64,
    pub(crate) rekeys: AtomicU64,
    pub(crate) kinds: Vec<KindCounters>,
}

/// Add `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Take `n` from a gauge.
pub(crate) fn sub(counter: &AtomicU64, n: u64) {
    counter.fetch_sub(n, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(
        &self,
        tracked_keys: usize,
        ring_bytes: usize,
        ring_skipped: u64,
    ) -> HubStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        HubStats {
            streams_active: load(&self.streams_active),
            streams_opened: load(&self.streams_opened),
            events_received: load(&self.events_received),
            events_unrouted: load(&self.events_unrouted),
            frames_encoded: load(&self.frames_encoded),
            frames_enqueued: load(&self.frames_enqueued),
            frames_dropped: load(&self.frames_dropped),
            resyncs: load(&self.resyncs),
            sessions_expired: load(self.sessions_expired.as_ref()),
            resumed: load(&self.resumed),
            rekeys: load(&self.rekeys),
            ring_skipped,
            tracked_keys: u64::try_from(tracked_keys).unwrap_or(u64::MAX),
            ring_bytes: u64::try_from(ring_bytes).unwrap_or(u64::MAX),
            kinds: self.kinds.iter().map(KindCounters::snapshot).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_count_as_other() {
        let kind = KindCounters::new("k", &["a", "b"]);
        kind.delivered("a", 2);
        kind.delivered("b\"\n{evil", 5);
        kind.delivered("c", 1);
        assert_eq!(
            kind.snapshot().frames_by_event,
            vec![("a", 2), ("b", 0), (OTHER_EVENT, 6)]
        );
    }
}
