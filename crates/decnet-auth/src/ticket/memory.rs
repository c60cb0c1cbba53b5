//! The in-memory ticket store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::{Counters, Redeemed, Ticket, TicketCounters, TicketError, generate, well_formed};
use crate::Identity;

/// The map is swept of expired tickets on a mint once it holds at least this
/// many (and then again once it has doubled since the last sweep).
const SWEEP_FLOOR: usize = 1_024;

/// Tickets live at most this long, whatever TTL is asked for.
const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug)]
struct Entry {
    identity: Identity,
    expires_at: Instant,
}

#[derive(Debug)]
struct State {
    tickets: HashMap<String, Entry>,
    /// Sweep on the next mint once `tickets.len()` reaches this.
    next_sweep_at: usize,
}

#[derive(Debug)]
struct Inner {
    // std Mutex: every critical section is one map operation or one sweep,
    // never an `.await`.
    state: Mutex<State>,
    max_entries: Option<usize>,
    counters: Counters,
}

/// Tickets in a process-local map (single instance deployments, the demo,
/// tests). Cheap to clone: clones share the map.
///
/// Bounded: expired tickets are swept on mint whenever the map has reached
/// 1,024 entries or doubled since the previous sweep (amortised O(1) per mint),
/// so the map holds at most about twice the tickets minted within one TTL. With
/// [`MemoryTicketStore::with_max_entries`] a mint that would exceed the cap,
/// after a sweep, fails with [`TicketError::Full`] instead. Time is
/// `tokio::time::Instant`, so tests can pause and advance it.
#[derive(Debug, Clone)]
pub struct MemoryTicketStore {
    inner: Arc<Inner>,
}

impl Default for MemoryTicketStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryTicketStore {
    /// An empty store without a cap on live tickets.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// An empty store holding at most `max_entries` live tickets.
    pub fn with_max_entries(max_entries: usize) -> Self {
        Self::build(Some(max_entries))
    }

    fn build(max_entries: Option<usize>) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    tickets: HashMap::new(),
                    next_sweep_at: SWEEP_FLOOR,
                }),
                max_entries,
                counters: Counters::default(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic mid-operation elsewhere; the map of
        // independent entries is still consistent.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mint a ticket for `identity`, valid for `ttl` (at most 24 h).
    ///
    /// # Errors
    ///
    /// [`TicketError::Random`] when the OS random number generator fails;
    /// [`TicketError::Full`] when the store has a cap and holds that many live
    /// tickets.
    pub fn mint(&self, identity: &Identity, ttl: Duration) -> Result<Ticket, TicketError> {
        let value = generate().inspect_err(|_| self.inner.counters.failed())?;
        let now = Instant::now();
        let ttl = ttl.min(MAX_TTL);
        let expires_at = now.checked_add(ttl).unwrap_or(now);
        {
            let mut state = self.state();
            let full = self
                .inner
                .max_entries
                .is_some_and(|max| state.tickets.len() >= max);
            if full || state.tickets.len() >= state.next_sweep_at {
                sweep(&mut state, now);
            }
            if let Some(limit) = self.inner.max_entries
                && state.tickets.len() >= limit
            {
                drop(state);
                self.inner.counters.failed();
                return Err(TicketError::Full { limit });
            }
            state.tickets.insert(
                value.clone(),
                Entry {
                    identity: identity.clone(),
                    expires_at,
                },
            );
        }
        self.inner.counters.minted();
        Ok(Ticket { value, ttl })
    }

    /// Redeem `ticket`: removed in one step whatever the outcome; the identity
    /// when it was live, `None` when unknown, malformed, already redeemed or
    /// expired.
    pub fn redeem(&self, ticket: &str) -> Option<Identity> {
        let outcome = if well_formed(ticket) {
            self.state().tickets.remove(ticket)
        } else {
            None
        };
        let counters = &self.inner.counters;
        match outcome {
            None => {
                counters.redeemed(Redeemed::Unknown);
                None
            }
            Some(entry) if Instant::now() >= entry.expires_at => {
                counters.redeemed(Redeemed::Expired);
                None
            }
            Some(entry) => {
                counters.redeemed(Redeemed::Ok);
                Some(entry.identity)
            }
        }
    }

    /// Remove every expired ticket now; returns how many were removed. Mints
    /// sweep on their own; a binary may also call this on a timer.
    pub fn sweep_expired(&self) -> usize {
        let mut state = self.state();
        let before = state.tickets.len();
        sweep(&mut state, Instant::now());
        before - state.tickets.len()
    }

    /// How many tickets the map holds (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.state().tickets.len()
    }

    /// Whether the map holds no ticket.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of this store's counters.
    pub fn counters(&self) -> TicketCounters {
        self.inner.counters.snapshot()
    }
}

fn sweep(state: &mut State, now: Instant) {
    state.tickets.retain(|_, entry| entry.expires_at > now);
    state.next_sweep_at = SWEEP_FLOOR.max(state.tickets.len().saturating_mul(2));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            user_uuid: "u1".into(),
            role: "viewer".into(),
            must_change_password: false,
            jti: "j1".into(),
            iat: 1,
            exp: 2,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_runs_at_the_floor_and_bounds_the_map() {
        let store = MemoryTicketStore::new();
        let ttl = Duration::from_secs(1);
        for _ in 0..SWEEP_FLOOR - 1 {
            store.mint(&identity(), ttl).expect("mint");
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        // Below the floor before this mint: no sweep yet.
        store.mint(&identity(), ttl).expect("mint");
        assert_eq!(store.len(), SWEEP_FLOOR);
        // At the floor: this mint sweeps the 1,023 expired tickets first.
        store.mint(&identity(), ttl).expect("mint");
        assert_eq!(store.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn cap_refuses_when_full_of_live_tickets_and_recovers_after_expiry() {
        let store = MemoryTicketStore::with_max_entries(3);
        let ttl = Duration::from_secs(5);
        for _ in 0..3 {
            store.mint(&identity(), ttl).expect("mint");
        }
        assert!(matches!(
            store.mint(&identity(), ttl),
            Err(TicketError::Full { limit: 3 })
        ));
        tokio::time::advance(ttl).await;
        store.mint(&identity(), ttl).expect("mint after expiry");
        assert_eq!(store.len(), 1);
        assert_eq!(store.counters().failures, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_expired_reports_what_it_removed() {
        let store = MemoryTicketStore::new();
        store
            .mint(&identity(), Duration::from_secs(1))
            .expect("mint");
        store
            .mint(&identity(), Duration::from_secs(10))
            .expect("mint");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(store.sweep_expired(), 1);
        assert_eq!(store.len(), 1);
    }
}
