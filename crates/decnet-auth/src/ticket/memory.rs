//! The in-memory ticket store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::time::Instant;

use super::{
    Counters, MAX_TICKET_TTL, Redeemed, Ticket, TicketCounters, TicketError, TicketLimits,
    TicketStore, generate, well_formed,
};
use crate::Identity;

/// How often the background sweep removes expired tickets.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Entry {
    identity: Identity,
    expires_at: Instant,
}

#[derive(Debug, Default)]
struct State {
    tickets: HashMap<String, Entry>,
    /// Tickets held per user (users with none have no entry).
    per_user: HashMap<String, usize>,
}

impl State {
    fn remove(&mut self, ticket: &str) -> Option<Entry> {
        let entry = self.tickets.remove(ticket)?;
        self.release(&entry.identity.user_uuid);
        Some(entry)
    }

    fn release(&mut self, user: &str) {
        if let Some(n) = self.per_user.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_user.remove(user);
            }
        }
    }

    /// Remove every ticket expired at `now`.
    fn sweep(&mut self, now: Instant) -> usize {
        let expired: Vec<String> = self
            .tickets
            .iter()
            .filter(|(_, entry)| entry.expires_at <= now)
            .map(|(ticket, _)| ticket.clone())
            .collect();
        for ticket in &expired {
            self.remove(ticket);
        }
        expired.len()
    }
}

#[derive(Debug)]
struct Inner {
    // std Mutex: every critical section is one map operation or one sweep,
    // never an `.await`.
    state: Mutex<State>,
    limits: TicketLimits,
    counters: Counters,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic mid-operation elsewhere; the maps of
        // independent entries are still consistent enough to keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Tickets in a process-local map (single instance deployments, the demo,
/// tests). Cheap to clone: clones share the map.
///
/// Bounded: at most [`TicketLimits::per_user`] live tickets per user and
/// [`TicketLimits::total`] in all (expired tickets are swept before a mint is
/// refused). Expired tickets are also removed every 10 s by a background task
/// (started when the store is created inside a Tokio runtime; it ends with the
/// last clone), so memory returns to its baseline after a mint flood even when
/// nobody mints again. Time is `tokio::time::Instant`, so tests can pause and
/// advance it.
#[derive(Debug, Clone)]
pub struct MemoryTicketStore {
    inner: Arc<Inner>,
}

impl Default for MemoryTicketStore {
    fn default() -> Self {
        Self::new(TicketLimits::default())
    }
}

impl MemoryTicketStore {
    /// An empty store with these limits.
    pub fn new(limits: TicketLimits) -> Self {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            limits,
            counters: Counters::default(),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep_loop(Arc::downgrade(&inner)));
        }
        Self { inner }
    }

    /// Mint a ticket for `identity`, valid for `ttl` (at most 24 h).
    ///
    /// # Errors
    ///
    /// As [`TicketStore::mint`], never `Unavailable`.
    pub fn mint_now(&self, identity: &Identity, ttl: Duration) -> Result<Ticket, TicketError> {
        let counters = &self.inner.counters;
        let value = generate().inspect_err(|_| counters.failed())?;
        let now = Instant::now();
        let ttl = ttl.min(MAX_TICKET_TTL);
        let expires_at = now.checked_add(ttl).unwrap_or(now);
        let limits = self.inner.limits;
        {
            let mut state = self.inner.state();
            let held = |state: &State| {
                state
                    .per_user
                    .get(&identity.user_uuid)
                    .copied()
                    .unwrap_or(0)
            };
            if held(&state) >= limits.per_user || state.tickets.len() >= limits.total {
                state.sweep(now);
            }
            if held(&state) >= limits.per_user {
                drop(state);
                counters.refused();
                return Err(TicketError::UserLimit {
                    limit: limits.per_user,
                });
            }
            if state.tickets.len() >= limits.total {
                drop(state);
                counters.refused();
                return Err(TicketError::Full {
                    limit: limits.total,
                });
            }
            *state
                .per_user
                .entry(identity.user_uuid.clone())
                .or_insert(0) += 1;
            state.tickets.insert(
                value.clone(),
                Entry {
                    identity: identity.clone(),
                    expires_at,
                },
            );
        }
        counters.minted();
        Ok(Ticket { value, ttl })
    }

    /// Redeem `ticket`: removed in one step whatever the outcome; the identity
    /// when it was live, `None` when unknown, malformed, already redeemed or
    /// expired.
    pub fn redeem_now(&self, ticket: &str) -> Option<Identity> {
        let outcome = if well_formed(ticket) {
            self.inner.state().remove(ticket)
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

    /// Remove every expired ticket now; returns how many were removed. The
    /// background task does this every 10 s.
    pub fn sweep_expired(&self) -> usize {
        self.inner.state().sweep(Instant::now())
    }

    /// How many tickets the map holds (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.inner.state().tickets.len()
    }

    /// Whether the map holds no ticket.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live tickets held by `user_uuid` (expired ones not yet swept included).
    pub fn held_by(&self, user_uuid: &str) -> usize {
        self.inner
            .state()
            .per_user
            .get(user_uuid)
            .copied()
            .unwrap_or(0)
    }
}

async fn sweep_loop(store: Weak<Inner>) {
    let mut ticker = tokio::time::interval(SWEEP_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(inner) = store.upgrade() else { return };
        inner.state().sweep(Instant::now());
    }
}

impl TicketStore for MemoryTicketStore {
    fn mint<'a>(
        &'a self,
        identity: &'a Identity,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Ticket, TicketError>> {
        futures::future::ready(self.mint_now(identity, ttl)).boxed()
    }

    fn redeem<'a>(
        &'a self,
        ticket: &'a str,
    ) -> BoxFuture<'a, Result<Option<Identity>, TicketError>> {
        futures::future::ready(Ok(self.redeem_now(ticket))).boxed()
    }

    fn counters(&self) -> TicketCounters {
        let live = u64::try_from(self.len()).unwrap_or(u64::MAX);
        self.inner.counters.snapshot(live)
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(user: &str) -> Identity {
        Identity {
            user_uuid: user.into(),
            role: "viewer".into(),
            must_change_password: false,
            jti: "j1".into(),
            iat: 1,
            exp: 2,
        }
    }

    fn store(per_user: usize, total: usize) -> MemoryTicketStore {
        MemoryTicketStore::new(TicketLimits { per_user, total })
    }

    #[tokio::test(start_paused = true)]
    async fn per_user_cap_refuses_and_frees_on_redeem_and_expiry() {
        let store = store(2, 100);
        let ttl = Duration::from_secs(5);
        let a = store.mint_now(&identity("u"), ttl).expect("mint");
        store.mint_now(&identity("u"), ttl).expect("mint");
        assert!(matches!(
            store.mint_now(&identity("u"), ttl),
            Err(TicketError::UserLimit { limit: 2 })
        ));
        // Other users are not affected.
        store.mint_now(&identity("v"), ttl).expect("other user");
        assert!(store.redeem_now(a.expose()).is_some());
        store
            .mint_now(&identity("u"), ttl)
            .expect("a slot came back");
        tokio::time::advance(ttl).await;
        store
            .mint_now(&identity("u"), ttl)
            .expect("expired ones are swept");
        assert_eq!(store.held_by("u"), 1);
        assert_eq!(store.counters().refused, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn total_cap_refuses_when_full_of_live_tickets_and_recovers_after_expiry() {
        let store = store(100, 3);
        let ttl = Duration::from_secs(5);
        for user in ["a", "b", "c"] {
            store.mint_now(&identity(user), ttl).expect("mint");
        }
        assert!(matches!(
            store.mint_now(&identity("d"), ttl),
            Err(TicketError::Full { limit: 3 })
        ));
        tokio::time::advance(ttl).await;
        store
            .mint_now(&identity("d"), ttl)
            .expect("mint after expiry");
        assert_eq!(store.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_background_sweep_empties_the_map_without_new_mints() {
        let store = store(100_000, 100_000);
        for n in 0..1_000 {
            store
                .mint_now(&identity(&format!("u{n}")), Duration::from_secs(1))
                .expect("mint");
        }
        assert_eq!(store.len(), 1_000);
        // Past the TTL and one sweep period: the task removed them all.
        tokio::time::sleep(SWEEP_EVERY * 2).await;
        assert_eq!(store.len(), 0);
        assert_eq!(store.held_by("u1"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_expired_reports_what_it_removed() {
        let store = store(10, 10);
        store
            .mint_now(&identity("u"), Duration::from_secs(1))
            .expect("mint");
        store
            .mint_now(&identity("u"), Duration::from_secs(10))
            .expect("mint");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(store.sweep_expired(), 1);
        assert_eq!(store.len(), 1);
        assert_eq!(store.held_by("u"), 1);
    }
}
