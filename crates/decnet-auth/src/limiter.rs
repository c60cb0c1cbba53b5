//! Concurrent stream slots per user (and optionally in total).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

/// Why no stream slot was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// The user already holds `limit` streams (HTTP 429
    /// `SSE connection limit (N) reached`).
    #[error("per-user stream limit ({limit}) reached")]
    PerUser {
        /// The per-user cap.
        limit: usize,
    },
    /// The process already serves `limit` streams.
    #[error("global stream limit ({limit}) reached")]
    Global {
        /// The process-wide cap.
        limit: usize,
    },
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Only users holding at least one slot have an entry.
    by_user: HashMap<String, usize>,
}

#[derive(Debug)]
struct Inner {
    per_user: usize,
    global: Option<usize>,
    // std Mutex: every critical section is a counter update, never an `.await`.
    counts: Mutex<Counts>,
}

impl Inner {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        // Poisoning needs a panic inside a critical section, and none of them
        // can leave the counts half-updated; keep counting.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(&self, user: &str) {
        let mut counts = self.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_user.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.by_user.remove(user);
            }
        }
    }
}

/// Caps concurrent streams per user and, optionally, per process.
///
/// The caps are per instance (DESIGN.md: a cluster-wide cap is future work).
/// Cheap to clone: clones share the counts.
#[derive(Debug, Clone)]
pub struct ConnectionLimiter {
    inner: Arc<Inner>,
}

impl ConnectionLimiter {
    /// At most `per_user` concurrent slots per user, and at most `global` in
    /// total when set.
    pub fn new(per_user: usize, global: Option<usize>) -> Self {
        Self {
            inner: Arc::new(Inner {
                per_user,
                global,
                counts: Mutex::new(Counts::default()),
            }),
        }
    }

    /// Take a slot for `user_uuid`. Take it before doing the stream's work and
    /// keep it inside whatever the stream owns: dropping it (including when the
    /// owning task is cancelled or aborted) frees the slot.
    ///
    /// # Errors
    ///
    /// [`LimitError::PerUser`] when the user already holds `per_user` slots
    /// (checked first), [`LimitError::Global`] when the process holds `global`.
    pub fn try_acquire(&self, user_uuid: &str) -> Result<ConnectionSlot, LimitError> {
        let mut counts = self.inner.counts();
        let held = counts.by_user.get(user_uuid).copied().unwrap_or(0);
        if held >= self.inner.per_user {
            return Err(LimitError::PerUser {
                limit: self.inner.per_user,
            });
        }
        if let Some(limit) = self.inner.global
            && counts.total >= limit
        {
            return Err(LimitError::Global { limit });
        }
        counts.total += 1;
        *counts.by_user.entry(user_uuid.to_owned()).or_insert(0) += 1;
        drop(counts);
        Ok(ConnectionSlot {
            limiter: Arc::clone(&self.inner),
            user_uuid: user_uuid.to_owned(),
        })
    }

    /// Slots held in total.
    pub fn active(&self) -> usize {
        self.inner.counts().total
    }

    /// Slots held by `user_uuid`.
    pub fn active_for(&self, user_uuid: &str) -> usize {
        self.inner
            .counts()
            .by_user
            .get(user_uuid)
            .copied()
            .unwrap_or(0)
    }

    /// How many users hold at least one slot (the map never keeps zeroes).
    pub fn users(&self) -> usize {
        self.inner.counts().by_user.len()
    }
}

/// One held stream slot; dropping it gives the slot back.
pub struct ConnectionSlot {
    limiter: Arc<Inner>,
    user_uuid: String,
}

impl ConnectionSlot {
    /// The user holding this slot.
    pub fn user_uuid(&self) -> &str {
        &self.user_uuid
    }
}

impl fmt::Debug for ConnectionSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionSlot")
            .field("user_uuid", &self.user_uuid)
            .finish()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limiter.release(&self.user_uuid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_per_user_refuses_everyone() {
        let limiter = ConnectionLimiter::new(0, None);
        assert_eq!(
            limiter.try_acquire("u").map(drop),
            Err(LimitError::PerUser { limit: 0 })
        );
        assert_eq!(limiter.users(), 0);
    }

    #[test]
    fn per_user_is_checked_before_global() {
        let limiter = ConnectionLimiter::new(1, Some(1));
        let _slot = limiter.try_acquire("u").expect("first");
        assert_eq!(
            limiter.try_acquire("u").map(drop),
            Err(LimitError::PerUser { limit: 1 })
        );
        assert_eq!(
            limiter.try_acquire("v").map(drop),
            Err(LimitError::Global { limit: 1 })
        );
    }

    #[test]
    fn messages_name_the_limit() {
        assert_eq!(
            LimitError::PerUser { limit: 5 }.to_string(),
            "per-user stream limit (5) reached"
        );
        assert_eq!(
            LimitError::Global { limit: 9 }.to_string(),
            "global stream limit (9) reached"
        );
    }
}
