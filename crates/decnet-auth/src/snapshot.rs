//! Shared snapshots of the account tables, so that re-checking every open
//! stream costs a fixed number of queries per TTL, not one per stream.
//!
//! A [`Snapshot`] holds the answer of one bulk read (every user, every
//! revoked jti) for a TTL, measured from the moment its query was sent, so
//! an answer is never older than a per-key cache entry would be. Concurrent
//! refreshes coalesce into one query (single-flight, through a shared
//! future: no lock is held across its `.await`, and a caller that gives up
//! leaves the query to the others). A failed refresh is every waiter's
//! error, and the answer of later callers for [`RETRY_AFTER_FAILURE`] (at
//! most the TTL), so an outage costs one query per table per second, not
//! one per stream. A reader without bulk reads, or a table
//! over the cap, yields an empty snapshot ([`Taken::contents`] `None`) that
//! tells the verifier to look keys up one by one, for a TTL too.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use decnet_repo::{RepoError, User};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::time::Instant;

/// One bulk read: `None` when the reader has none or the table is over the
/// cap (look keys up one by one).
pub(crate) type Load<T> = BoxFuture<'static, Result<Option<T>, RepoError>>;

/// A finished read.
#[derive(Debug)]
pub(crate) struct Taken<T> {
    /// When its query was sent.
    at: Instant,
    /// The table, or `None`: look keys up one by one.
    pub(crate) contents: Option<T>,
}

/// How long a failed refresh answers for itself before the next is tried.
pub(crate) const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

type Failure = (Instant, Arc<RepoError>);

type Refresh<T> = Shared<BoxFuture<'static, Result<Arc<Taken<T>>, Failure>>>;

struct State<T> {
    current: Option<Arc<Taken<T>>>,
    /// The refresh under way, and which one it is.
    inflight: Option<(u64, Refresh<T>)>,
    /// The last refresh's failure and when it was sent, while it answers.
    failed: Option<(Instant, Arc<RepoError>)>,
    next: u64,
}

/// A table read at most once per TTL, shared by every caller.
pub(crate) struct Snapshot<T> {
    ttl: Duration,
    load: Box<dyn Fn() -> Load<T> + Send + Sync>,
    // std Mutex: a few field operations under it, never an `.await`.
    state: Mutex<State<T>>,
    refreshes: AtomicU64,
}

impl<T: Send + Sync + 'static> Snapshot<T> {
    /// A snapshot refreshed by `load` once it is `ttl` old.
    pub(crate) fn new(ttl: Duration, load: impl Fn() -> Load<T> + Send + Sync + 'static) -> Self {
        Self {
            ttl,
            load: Box::new(load),
            state: Mutex::new(State {
                current: None,
                inflight: None,
                failed: None,
                next: 0,
            }),
            refreshes: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Poisoned only by a panic between plain field operations.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queries sent so far.
    pub(crate) fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// The current snapshot, or a fresh one (joining a refresh under way).
    ///
    /// # Errors
    ///
    /// The refresh's repository failure (every caller that waited on it
    /// gets it, and so does every caller for [`RETRY_AFTER_FAILURE`] or
    /// the TTL, the shorter; then a call tries again). The error keeps whether the
    /// database was unreachable ([`RepoError::is_unavailable`]) and the
    /// original as its source.
    pub(crate) async fn get(&self) -> Result<Arc<Taken<T>>, RepoError> {
        let (id, refresh) = {
            let mut state = self.lock();
            if let Some(current) = &state.current
                && current.at.elapsed() < self.ttl
            {
                return Ok(current.clone());
            }
            if let Some((at, error)) = &state.failed
                && at.elapsed() < RETRY_AFTER_FAILURE.min(self.ttl)
            {
                return Err(shared_error(error.clone()));
            }
            match &state.inflight {
                Some((id, refresh)) => (*id, refresh.clone()),
                None => {
                    let id = state.next;
                    state.next = state.next.wrapping_add(1);
                    let load = (self.load)();
                    let refresh = async move {
                        // Sent now (a refresh starts when first polled): the
                        // snapshot's age is counted from before the query.
                        let at = Instant::now();
                        match load.await {
                            Ok(contents) => Ok(Arc::new(Taken { at, contents })),
                            Err(error) => Err((at, Arc::new(error))),
                        }
                    }
                    .boxed()
                    .shared();
                    state.inflight = Some((id, refresh.clone()));
                    self.refreshes.fetch_add(1, Ordering::Relaxed);
                    (id, refresh)
                }
            }
        };
        let result = refresh.await;
        let mut state = self.lock();
        if state.inflight.as_ref().is_some_and(|(i, _)| *i == id) {
            state.inflight = None;
            match &result {
                Ok(taken) => {
                    state.current = Some(taken.clone());
                    state.failed = None;
                }
                Err(failure) => state.failed = Some(failure.clone()),
            }
        }
        drop(state);
        result.map_err(|(_, error)| shared_error(error))
    }
}

/// A shared failure as a caller's own error, keeping its class and source.
fn shared_error(error: Arc<RepoError>) -> RepoError {
    if error.is_unavailable() {
        RepoError::Unavailable(Box::new(error))
    } else {
        RepoError::Query(Box::new(error))
    }
}

/// Every user, by uuid.
pub(crate) type Users = HashMap<String, User>;

/// The characters of a jti the revoked set can answer for on every engine:
/// on these, MySQL's case-insensitive collations compare as ASCII case
/// folding does (DECNET's jtis are hex uuids).
fn plain(jti: &str) -> bool {
    !jti.is_empty()
        && jti
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// The jtis of `revoked_tokens`, answering as the database would under
/// any engine's collation, or saying it cannot.
#[derive(Debug, Default)]
pub(crate) struct Revoked {
    exact: HashSet<String>,
    /// Every jti lower-cased, trailing spaces cut (MySQL pads).
    folded: HashSet<String>,
    /// A jti outside [`plain`]'s alphabet is in the table: a collation may
    /// match it to a plain jti that folding would not, so misses are asked.
    exotic: bool,
}

impl Revoked {
    /// The set of `jtis`.
    pub(crate) fn new(jtis: Vec<String>) -> Self {
        let mut set = Revoked::default();
        for jti in jtis {
            let trimmed = jti.trim_end_matches(' ');
            set.exotic |= !plain(trimmed);
            set.folded.insert(trimmed.to_ascii_lowercase());
            set.exact.insert(jti);
        }
        set
    }

    /// `Some(revoked)` when the set can tell, `None` when only the
    /// database can (a jti equal to a revoked one only under a
    /// case-insensitive collation, or outside the plain alphabet).
    pub(crate) fn lookup(&self, jti: &str) -> Option<bool> {
        if self.exact.contains(jti) {
            return Some(true);
        }
        if self.exotic || !plain(jti) || self.folded.contains(&jti.to_ascii_lowercase()) {
            return None;
        }
        Some(false)
    }

    /// How many jtis the set holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.exact.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn jtis(items: &[&str]) -> Revoked {
        Revoked::new(items.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn revoked_answers_what_every_collation_agrees_on() {
        let set = jtis(&["abc-1", "Def_2 "]);
        assert_eq!(set.len(), 2);
        assert_eq!(set.lookup("abc-1"), Some(true));
        assert_eq!(set.lookup("Def_2 "), Some(true));
        assert_eq!(set.lookup("zzz"), Some(false));
        // Equal under MySQL's `_ci` collation only: the database decides.
        assert_eq!(set.lookup("ABC-1"), None);
        assert_eq!(set.lookup("def_2"), None);
        assert_eq!(set.lookup("caf\u{e9}"), None);
        assert_eq!(set.lookup(""), None);
        // A non-plain jti in the table: no miss can be trusted.
        let exotic = jtis(&["caf\u{e9}"]);
        assert_eq!(exotic.lookup("cafe"), None);
        assert_eq!(exotic.lookup("caf\u{e9}"), Some(true));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_gets_share_one_load_and_it_lasts_the_ttl() {
        let loads = Arc::new(AtomicUsize::new(0));
        let counter = loads.clone();
        let snapshot = Arc::new(Snapshot::new(Duration::from_secs(10), move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(Some(n))
            }
            .boxed()
        }));
        let gets = (0..100).map(|_| {
            let snapshot = snapshot.clone();
            tokio::spawn(async move { snapshot.get().await.map(|t| t.contents) })
        });
        for get in futures::future::join_all(gets).await {
            assert_eq!(get.expect("task").expect("load"), Some(0));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_millis(9_900)).await;
        assert_eq!(snapshot.get().await.expect("load").contents, Some(0));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(snapshot.get().await.expect("load").contents, Some(1));
        assert_eq!((loads.load(Ordering::SeqCst), snapshot.refreshes()), (2, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_load_is_every_waiters_error_and_is_retried() {
        let loads = Arc::new(AtomicUsize::new(0));
        let counter = loads.clone();
        let snapshot = Snapshot::new(Duration::from_secs(10), move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(RepoError::Unavailable("down".into()))
                } else {
                    Ok(Some(n))
                }
            }
            .boxed()
        });
        let (a, b) = tokio::join!(snapshot.get(), snapshot.get());
        assert!(a.is_err_and(|e| e.is_unavailable()));
        assert!(b.is_err_and(|e| e.is_unavailable()));
        // The failure answers for a second, then the load is tried again.
        tokio::time::advance(RETRY_AFTER_FAILURE - Duration::from_millis(1)).await;
        assert!(snapshot.get().await.is_err());
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(snapshot.get().await.expect("retried").contents, Some(1));
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_caller_leaves_the_refresh_to_the_next() {
        let loads = Arc::new(AtomicUsize::new(0));
        let counter = loads.clone();
        let snapshot = Snapshot::new(Duration::from_secs(10), move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(Some(()))
            }
            .boxed()
        });
        let gave_up = tokio::time::timeout(Duration::from_millis(10), snapshot.get()).await;
        assert!(gave_up.is_err(), "the first caller timed out");
        assert!(snapshot.get().await.expect("load").contents.is_some());
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }
}
