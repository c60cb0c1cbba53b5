//! The routing index: which streams are open on which key of which kind, the
//! identity each attacker key follows, and the replay rings.
//!
//! Plain data and functions: no locks, no tasks, no clock reads (callers pass
//! `now`), so routing and re-keying are unit-tested here without tokio. The
//! hub keeps one [`Index`] behind a mutex and holds it only for these calls.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::kind::{KIND_WIDE_KEY, KindId, Rekey, Route};
use crate::queue::FrameQueue;

/// Bounds of the replay rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RingLimits {
    /// Frames kept per key.
    pub(crate) per_key: usize,
    /// Bytes kept in all rings together.
    pub(crate) total_bytes: usize,
}

#[derive(Debug)]
struct StreamEntry {
    id: u64,
    queue: Arc<FrameQueue>,
}

/// Everything tracked for one key that has (or recently had) streams.
#[derive(Debug, Default)]
struct KeyEntry {
    /// The identity this key's streams follow (attacker keys).
    identity: Option<Arc<str>>,
    streams: Vec<StreamEntry>,
    /// Recent live frames, oldest first, with their event ids.
    ring: VecDeque<(Arc<str>, Bytes)>,
    /// When the last stream closed; `None` while one is open.
    idle_since: Option<Instant>,
}

/// One kind's part of the index.
#[derive(Debug, Default)]
struct KindIndex {
    keys: HashMap<Arc<str>, KeyEntry>,
    /// identity -> keys (with entries) that follow it.
    followers: HashMap<Arc<str>, HashSet<Arc<str>>>,
}

impl KindIndex {
    fn set_identity(&mut self, key: &Arc<str>, identity: Option<Arc<str>>) -> bool {
        let Some(entry) = self.keys.get_mut(key) else {
            return false;
        };
        if entry.identity == identity {
            return false;
        }
        let old = std::mem::replace(&mut entry.identity, identity.clone());
        if let Some(old) = old
            && let Some(set) = self.followers.get_mut(&old)
        {
            set.remove(key);
            if set.is_empty() {
                self.followers.remove(&old);
            }
        }
        if let Some(new) = identity {
            self.followers.entry(new).or_default().insert(key.clone());
        }
        true
    }
}

/// Where one routed event's frame must go, collected under the lock.
#[derive(Debug, Default)]
pub(crate) struct Targets {
    /// The keys that receive it (their rings too).
    pub(crate) keys: Vec<Arc<str>>,
}

/// What registering a stream produced.
#[derive(Debug)]
pub(crate) struct Registered {
    /// The stream's id within its key (for deregistering).
    pub(crate) stream_id: u64,
    /// The frames after `last_event_id`, when it was found in the ring.
    pub(crate) replay: Option<Vec<Bytes>>,
}

/// The index of every kind.
#[derive(Debug)]
pub(crate) struct Index {
    kinds: Vec<KindIndex>,
    next_stream_id: u64,
    ring_bytes: usize,
    limits: RingLimits,
    /// Frames not kept for replay because the byte budget was spent.
    pub(crate) ring_skipped: u64,
}

impl Index {
    pub(crate) fn new(kinds: usize, limits: RingLimits) -> Self {
        Self {
            kinds: (0..kinds).map(|_| KindIndex::default()).collect(),
            next_stream_id: 0,
            ring_bytes: 0,
            limits,
            ring_skipped: 0,
        }
    }

    fn kind(&mut self, kind: KindId) -> Option<&mut KindIndex> {
        self.kinds.get_mut(usize::from(kind.0))
    }

    /// Register a stream on `key`, following `identity` (the database is the
    /// source of truth at open), and look `last_event_id` up in the ring.
    pub(crate) fn register(
        &mut self,
        kind: KindId,
        key: &Arc<str>,
        identity: Option<Arc<str>>,
        queue: Arc<FrameQueue>,
        last_event_id: Option<&str>,
    ) -> Registered {
        let stream_id = self.next_stream_id;
        self.next_stream_id = self.next_stream_id.wrapping_add(1);
        let Some(index) = self.kind(kind) else {
            return Registered {
                stream_id,
                replay: None,
            };
        };
        let entry = index.keys.entry(key.clone()).or_default();
        entry.idle_since = None;
        entry.streams.push(StreamEntry {
            id: stream_id,
            queue,
        });
        let replay = last_event_id.and_then(|last| {
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
        index.set_identity(key, identity);
        Registered { stream_id, replay }
    }

    /// Remove a stream; when it was the key's last, the key stays tracked
    /// (its ring kept) until the grace ends, or goes at once without grace.
    pub(crate) fn deregister(
        &mut self,
        kind: KindId,
        key: &Arc<str>,
        stream_id: u64,
        now: Instant,
        keep_ring: bool,
    ) {
        let Some(index) = self.kind(kind) else { return };
        let now_empty = match index.keys.get_mut(key) {
            Some(entry) => {
                entry.streams.retain(|s| s.id != stream_id);
                if entry.streams.is_empty() {
                    entry.idle_since = Some(now);
                    true
                } else {
                    false
                }
            }
            None => false,
        };
        if now_empty && !keep_ring {
            self.remove_key(kind, key);
        }
    }

    fn remove_key(&mut self, kind: KindId, key: &Arc<str>) {
        let Some(index) = self.kind(kind) else { return };
        index.set_identity(key, None);
        if let Some(entry) = index.keys.remove(key) {
            let freed: usize = entry.ring.iter().map(|(_, f)| f.len()).sum();
            self.ring_bytes = self.ring_bytes.saturating_sub(freed);
        }
    }

    /// Forget keys without streams whose grace has passed; how many went.
    pub(crate) fn sweep(&mut self, now: Instant, grace: Duration) -> usize {
        let mut expired = Vec::new();
        for (n, index) in self.kinds.iter().enumerate() {
            for (key, entry) in &index.keys {
                if entry.streams.is_empty()
                    && entry
                        .idle_since
                        .is_some_and(|t| now.saturating_duration_since(t) >= grace)
                    && let Ok(n) = u8::try_from(n)
                {
                    expired.push((KindId(n), key.clone()));
                }
            }
        }
        for (kind, key) in &expired {
            self.remove_key(*kind, key);
        }
        expired.len()
    }

    /// The keys a route reaches that are tracked (have streams or a ring).
    pub(crate) fn targets(&self, kind: KindId, route: &Route<'_>) -> Targets {
        let Some(index) = self.kinds.get(usize::from(kind.0)) else {
            return Targets::default();
        };
        let keys = match route {
            Route::Keys(candidates) => candidates
                .iter()
                .filter_map(|key| index.keys.get_key_value(key.as_ref()))
                .map(|(key, _)| key.clone())
                .collect(),
            Route::Followers(identity) => index
                .followers
                .get(*identity)
                .map(|keys| keys.iter().cloned().collect())
                .unwrap_or_default(),
            Route::All => index
                .keys
                .get_key_value(KIND_WIDE_KEY)
                .map(|(key, _)| vec![key.clone()])
                .unwrap_or_default(),
            Route::Rekey | Route::Drop => Vec::new(),
        };
        Targets { keys }
    }

    /// Record `frame` in the rings of `keys` and return the queues of their
    /// open streams (pushed by the caller, outside the lock).
    pub(crate) fn deliver(
        &mut self,
        kind: KindId,
        keys: &[Arc<str>],
        event_id: &Arc<str>,
        frame: &Bytes,
    ) -> Vec<Arc<FrameQueue>> {
        let limits = self.limits;
        let mut ring_bytes = self.ring_bytes;
        let mut skipped = 0;
        let mut queues = Vec::new();
        if let Some(index) = self.kinds.get_mut(usize::from(kind.0)) {
            for key in keys {
                let Some(entry) = index.keys.get_mut(key) else {
                    continue;
                };
                if limits.per_key > 0 {
                    // Make room: this key's oldest frames go first, within
                    // both the per-key count and the global byte budget.
                    while !entry.ring.is_empty()
                        && (entry.ring.len() >= limits.per_key
                            || ring_bytes.saturating_add(frame.len()) > limits.total_bytes)
                    {
                        if let Some((_, old)) = entry.ring.pop_front() {
                            ring_bytes = ring_bytes.saturating_sub(old.len());
                        }
                    }
                    if ring_bytes.saturating_add(frame.len()) <= limits.total_bytes {
                        entry.ring.push_back((event_id.clone(), frame.clone()));
                        ring_bytes += frame.len();
                    } else {
                        skipped += 1;
                    }
                }
                queues.extend(entry.streams.iter().map(|s| s.queue.clone()));
            }
        }
        self.ring_bytes = ring_bytes;
        self.ring_skipped += skipped;
        queues
    }

    /// Apply one identity change to `kind`'s keys; how many keys moved.
    pub(crate) fn rekey(&mut self, kind: KindId, change: &Rekey) -> u64 {
        let Some(index) = self.kind(kind) else {
            return 0;
        };
        match change {
            Rekey::Follow { key, identity } => match index.keys.get_key_value(key.as_str()) {
                Some((key, _)) => {
                    let key = key.clone();
                    u64::from(index.set_identity(&key, Some(Arc::from(identity.as_str()))))
                }
                None => 0,
            },
            Rekey::Merge { loser, winner } => {
                let winner: Arc<str> = Arc::from(winner.as_str());
                let moved: Vec<Arc<str>> = index
                    .followers
                    .get(loser.as_str())
                    .map(|set| set.iter().cloned().collect())
                    .unwrap_or_default();
                moved
                    .iter()
                    .map(|key| u64::from(index.set_identity(key, Some(winner.clone()))))
                    .sum()
            }
            // Needs the repository: the hub reads who follows the identity
            // and applies a `Follow` per tracked key.
            Rekey::Resurrect { .. } => 0,
        }
    }

    /// Number of tracked keys of every kind.
    pub(crate) fn tracked(&self) -> usize {
        self.kinds.iter().map(|k| k.keys.len()).sum()
    }

    /// Number of tracked keys of one kind.
    pub(crate) fn tracked_of(&self, kind: KindId) -> usize {
        self.kinds
            .get(usize::from(kind.0))
            .map_or(0, |k| k.keys.len())
    }

    /// Bytes held by every replay ring.
    pub(crate) fn ring_bytes(&self) -> usize {
        self.ring_bytes
    }

    /// The identity `key` follows (tests and diagnostics).
    #[cfg(test)]
    fn identity_of(&self, kind: KindId, key: &str) -> Option<&str> {
        self.kinds
            .get(usize::from(kind.0))?
            .keys
            .get(key)?
            .identity
            .as_deref()
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    const K: KindId = KindId(0);

    fn index(per_key: usize, total_bytes: usize) -> Index {
        Index::new(
            1,
            RingLimits {
                per_key,
                total_bytes,
            },
        )
    }

    fn queue() -> Arc<FrameQueue> {
        Arc::new(FrameQueue::new(16, 1 << 20))
    }

    fn key(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    fn frame(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[test]
    fn keys_route_only_to_tracked_keys() {
        let mut ix = index(8, 1 << 20);
        ix.register(K, &key("a"), None, queue(), None);
        let route = Route::Keys(vec![Cow::Borrowed("a"), Cow::Borrowed("b")]);
        assert_eq!(ix.targets(K, &route).keys, vec![key("a")]);
        assert!(
            ix.targets(K, &Route::Keys(vec![Cow::Borrowed("zz")]))
                .keys
                .is_empty()
        );
        assert!(ix.targets(K, &Route::Drop).keys.is_empty());
        assert!(ix.targets(KindId(9), &route).keys.is_empty());
    }

    #[test]
    fn followers_and_rekeying() {
        let mut ix = index(8, 1 << 20);
        ix.register(K, &key("a1"), Some(key("i1")), queue(), None);
        ix.register(K, &key("a2"), None, queue(), None);
        assert_eq!(ix.targets(K, &Route::Followers("i1")).keys, vec![key("a1")]);
        // a2 joins i2; a1 moves to i3: i1's followers are gone.
        let follow = |k: &str, i: &str| Rekey::Follow {
            key: k.into(),
            identity: i.into(),
        };
        assert_eq!(ix.rekey(K, &follow("a2", "i2")), 1);
        assert_eq!(ix.rekey(K, &follow("a1", "i3")), 1);
        assert_eq!(ix.rekey(K, &follow("a1", "i3")), 0, "no change");
        assert_eq!(ix.rekey(K, &follow("untracked", "i3")), 0);
        assert!(ix.targets(K, &Route::Followers("i1")).keys.is_empty());
        // i3 merges into i2: both follow i2.
        let merge = Rekey::Merge {
            loser: "i3".into(),
            winner: "i2".into(),
        };
        assert_eq!(ix.rekey(K, &merge), 1);
        let mut followers = ix.targets(K, &Route::Followers("i2")).keys;
        followers.sort();
        assert_eq!(followers, vec![key("a1"), key("a2")]);
        assert_eq!(ix.identity_of(K, "a1"), Some("i2"));
        assert!(ix.targets(K, &Route::Followers("i3")).keys.is_empty());
    }

    #[test]
    fn kind_wide_key_gets_all() {
        let mut ix = index(8, 1 << 20);
        assert!(ix.targets(K, &Route::All).keys.is_empty());
        ix.register(K, &key(KIND_WIDE_KEY), None, queue(), None);
        assert_eq!(ix.targets(K, &Route::All).keys, vec![key("")]);
    }

    #[test]
    fn ring_replays_after_an_id_and_is_bounded_per_key() {
        let mut ix = index(2, 1 << 20);
        let q = queue();
        let reg = ix.register(K, &key("a"), None, q.clone(), None);
        for (id, f) in [("1", "one"), ("2", "two"), ("3", "three")] {
            let queues = ix.deliver(K, &[key("a")], &key(id), &frame(f));
            assert_eq!(queues.len(), 1);
        }
        ix.deregister(K, &key("a"), reg.stream_id, Instant::now(), true);
        let replay = ix.register(K, &key("a"), None, queue(), Some("2")).replay;
        assert_eq!(replay, Some(vec![frame("three")]));
        // "1" fell out of the 2-frame ring: no replay (a snapshot instead).
        assert_eq!(
            ix.register(K, &key("a"), None, queue(), Some("1")).replay,
            None
        );
        assert_eq!(ix.ring_bytes(), "twothree".len());
    }

    #[test]
    fn the_byte_budget_evicts_the_oldest_and_skips_what_cannot_fit() {
        let mut ix = index(100, 10);
        ix.register(K, &key("a"), None, queue(), None);
        ix.register(K, &key("b"), None, queue(), None);
        ix.deliver(K, &[key("a")], &key("1"), &frame("aaaaaa"));
        ix.deliver(K, &[key("b")], &key("2"), &frame("bbbb"));
        assert_eq!(ix.ring_bytes(), 10);
        // a's own oldest goes to make room for a's new frame.
        ix.deliver(K, &[key("a")], &key("3"), &frame("cc"));
        assert_eq!(ix.ring_bytes(), 6);
        // Larger than the whole budget: delivered, never kept.
        let queues = ix.deliver(K, &[key("a")], &key("4"), &frame("0123456789ab"));
        assert_eq!(queues.len(), 1);
        assert_eq!(ix.ring_skipped, 1);
        assert!(ix.ring_bytes() <= 10);
    }

    #[test]
    fn grace_keeps_a_ring_then_the_sweep_forgets_it() {
        let mut ix = index(8, 1 << 20);
        let start = Instant::now();
        let reg = ix.register(K, &key("a"), Some(key("i")), queue(), None);
        ix.deliver(K, &[key("a")], &key("1"), &frame("x"));
        ix.deregister(K, &key("a"), reg.stream_id, start, true);
        assert_eq!(ix.tracked(), 1);
        assert_eq!(
            ix.sweep(start + Duration::from_secs(1), Duration::from_secs(5)),
            0
        );
        assert_eq!(
            ix.sweep(start + Duration::from_secs(5), Duration::from_secs(5)),
            1
        );
        assert_eq!(ix.tracked(), 0);
        assert_eq!(ix.ring_bytes(), 0);
        assert!(ix.targets(K, &Route::Followers("i")).keys.is_empty());
        // Without grace the key goes with its last stream.
        let reg = ix.register(K, &key("b"), None, queue(), None);
        ix.deregister(K, &key("b"), reg.stream_id, start, false);
        assert_eq!(ix.tracked_of(K), 0);
    }
}
