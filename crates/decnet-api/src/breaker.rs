//! [`RepositoryBreaker`]: a circuit breaker in front of the repository, so a
//! database that hangs (SIGSTOP, a dead host that never answers) is turned
//! away as fast as one that refuses.
//!
//! A background task ([`RepositoryBreaker::start`]) probes the repository's
//! [`Health::ping`] every [`BreakerConfig::probe_every`], each probe bounded
//! by [`BreakerConfig::probe_timeout`]. A probe that times out or fails opens
//! the breaker (the repository is "down"); one that answers closes it. A call
//! through [`RepositoryBreaker::guard`] that fails with a connection-class
//! error (connection refused, reset, aborted, a broken pipe: the database's
//! socket is gone) opens it at once too.
//!
//! While it is open every guarded call fails at once with
//! [`RepoError::Unavailable`] (its source a [`BreakerOpen`]), which the
//! request paths already answer with 503 + `Retry-After`; a call waiting on
//! the database when it opens is cut short the same way. Nothing else is
//! touched: open streams keep receiving live bus events.
//!
//! What does not trip it: a slow database that still answers. A query error,
//! a busy SQLite writer (`SQLITE_BUSY` past its busy timeout), a pool wait,
//! a request past its open deadline are each that request's failure; only
//! the probe's verdict (a cheap round trip, answered within the probe
//! timeout even while a writer holds its lock) or a lost connection says
//! the database is gone.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use decnet_repo::{
    AccountReader, Attacker, AttackerReader, CampaignReader, CampaignRow, Health, HistogramBucket,
    IdentityReader, IdentityRow, LogFilter, LogReader, LogRow, LogStats, Observation,
    OrchestratorEventRow, OrchestratorReader, RepoError, RepoFuture, Repository, TopologyReader,
    TopologySnapshot, User,
};
use futures::FutureExt;
use tokio::sync::watch;

/// How the repository is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// The interval between probes (`DECNET_SSE_REPO_PROBE_MS`).
    pub probe_every: Duration,
    /// How long a probe may take before the repository counts as down
    /// (`DECNET_SSE_REPO_PROBE_TIMEOUT_MS`).
    pub probe_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            probe_every: Duration::from_millis(250),
            probe_timeout: Duration::from_millis(500),
        }
    }
}

/// The source of the [`RepoError::Unavailable`] a guarded call fails with
/// while the breaker is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("repository down (circuit breaker open)")]
pub struct BreakerOpen;

/// Why the breaker opened (the `cause` label of
/// `decnet_repository_trips_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TripCause {
    /// A probe did not answer within the probe timeout.
    ProbeTimeout,
    /// A probe failed.
    ProbeError,
    /// A call on a request path lost its connection to the database.
    Request,
}

impl TripCause {
    const ALL: [TripCause; 3] = [
        TripCause::ProbeTimeout,
        TripCause::ProbeError,
        TripCause::Request,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            TripCause::ProbeTimeout => "probe_timeout",
            TripCause::ProbeError => "probe_error",
            TripCause::Request => "request",
        }
    }

    fn index(self) -> usize {
        match self {
            TripCause::ProbeTimeout => 0,
            TripCause::ProbeError => 1,
            TripCause::Request => 2,
        }
    }
}

/// What the breaker has counted, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BreakerCounters {
    /// Whether the repository is up (the breaker closed).
    pub up: bool,
    /// Guarded calls answered at once (or cut short) because it was open.
    pub fast_fails: u64,
    /// Openings by cause (read with [`BreakerCounters::trips`]).
    trips: [u64; 3],
}

impl BreakerCounters {
    /// How many times the breaker opened for `cause`.
    pub fn trips(&self, cause: TripCause) -> u64 {
        self.trips[cause.index()]
    }

    /// Every cause with its count.
    pub fn trips_by_cause(&self) -> impl Iterator<Item = (TripCause, u64)> + '_ {
        TripCause::ALL
            .into_iter()
            .map(|cause| (cause, self.trips(cause)))
    }
}

struct Shared {
    config: BreakerConfig,
    /// `true` while the repository is up. A watch, so a call waiting on the
    /// database learns at once that the breaker opened.
    up: watch::Sender<bool>,
    fast_fails: AtomicU64,
    trips: [AtomicU64; 3],
}

/// The circuit breaker of one repository. Cheap to clone (every clone is
/// the same breaker).
#[derive(Clone)]
pub struct RepositoryBreaker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RepositoryBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepositoryBreaker")
            .field("config", &self.shared.config)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl Default for RepositoryBreaker {
    fn default() -> Self {
        Self::new(BreakerConfig::default())
    }
}

impl RepositoryBreaker {
    /// A closed breaker (the repository is presumed up until a probe or a
    /// call says otherwise).
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                up: watch::Sender::new(true),
                fast_fails: AtomicU64::new(0),
                trips: Default::default(),
            }),
        }
    }

    /// How the repository is probed.
    pub fn config(&self) -> BreakerConfig {
        self.shared.config
    }

    /// Whether the repository is up (the breaker is closed).
    pub fn is_up(&self) -> bool {
        *self.shared.up.borrow()
    }

    /// The counters, for `/metrics`.
    pub fn counters(&self) -> BreakerCounters {
        let shared = &self.shared;
        BreakerCounters {
            up: self.is_up(),
            fast_fails: shared.fast_fails.load(Ordering::Relaxed),
            trips: std::array::from_fn(|n| shared.trips[n].load(Ordering::Relaxed)),
        }
    }

    /// Open the breaker (a no-op when it is open already).
    pub fn trip(&self, cause: TripCause) {
        if self.shared.up.send_replace(false) {
            self.shared.trips[cause.index()].fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                cause = cause.label(),
                "repository down: requests that need it are refused at once until a probe answers"
            );
        }
    }

    /// Close the breaker (a no-op when it is closed already).
    fn close(&self) {
        if !self.shared.up.send_replace(true) {
            tracing::info!("repository up again: the breaker is closed");
        }
    }

    /// One probe of `health`, bounded by the probe timeout: closes the
    /// breaker when it answers, opens it when it fails or times out.
    /// Returns whether the repository answered.
    pub async fn probe(&self, health: &dyn Health) -> bool {
        match tokio::time::timeout(self.shared.config.probe_timeout, health.ping()).await {
            Ok(Ok(())) => {
                self.close();
                true
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "repository probe failed");
                self.trip(TripCause::ProbeError);
                false
            }
            Err(_elapsed) => {
                self.trip(TripCause::ProbeTimeout);
                false
            }
        }
    }

    /// Probe `health` every [`BreakerConfig::probe_every`], forever (the
    /// task [`RepositoryBreaker::start`] spawns).
    pub async fn run_probes(self, health: Arc<dyn Health>) {
        let mut ticker = tokio::time::interval(self.shared.config.probe_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.probe(health.as_ref()).await;
        }
    }

    /// Spawn the probe task on the current Tokio runtime. It runs until the
    /// returned [`ProbeTask`] is stopped or dropped; `None` (and a warning)
    /// outside a runtime, where only calls trip the breaker.
    pub fn start(&self, health: Arc<dyn Health>) -> Option<ProbeTask> {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let task = runtime.spawn(self.clone().run_probes(health));
                Some(ProbeTask(task.abort_handle()))
            }
            Err(_) => {
                tracing::warn!("no Tokio runtime: the repository is not probed");
                None
            }
        }
    }

    /// `repository` with every call behind this breaker: refused at once
    /// while it is open, cut short when it opens mid-call, and a
    /// connection-class failure opens it.
    pub fn guard(&self, repository: Arc<dyn Repository>) -> Arc<dyn Repository> {
        Arc::new(Guarded {
            breaker: self.clone(),
            inner: repository,
        })
    }

    /// Run one repository call behind the breaker.
    ///
    /// # Errors
    ///
    /// The call's own error; [`RepoError::Unavailable`] with a
    /// [`BreakerOpen`] source while the breaker is open or when it opens
    /// before the call answers.
    pub fn call<'a, T: Send + 'a>(
        &self,
        call: impl Future<Output = Result<T, RepoError>> + Send + 'a,
    ) -> RepoFuture<'a, T> {
        let breaker = self.clone();
        async move {
            let mut up = breaker.shared.up.subscribe();
            if !*up.borrow_and_update() {
                return Err(breaker.fast_fail());
            }
            let opened = async move {
                // The sender lives as long as the breaker: an error is
                // unreachable, and then the call alone decides.
                if up.wait_for(|up| !*up).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                biased;
                result = call => {
                    if let Err(error) = &result
                        && connection_lost(error)
                    {
                        tracing::debug!(%error, "repository connection lost on a request");
                        breaker.trip(TripCause::Request);
                    }
                    result
                }
                () = opened => Err(breaker.fast_fail()),
            }
        }
        .boxed()
    }

    fn fast_fail(&self) -> RepoError {
        self.shared.fast_fails.fetch_add(1, Ordering::Relaxed);
        RepoError::Unavailable(Box::new(BreakerOpen))
    }
}

/// The probe task of a [`RepositoryBreaker`]; dropping it stops the task.
#[derive(Debug)]
pub struct ProbeTask(tokio::task::AbortHandle);

impl ProbeTask {
    /// Stop the task (idempotent).
    pub fn stop(&self) {
        self.0.abort();
    }

    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl Drop for ProbeTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether `error` (or anything in its source chain) is the breaker's own
/// fast failure.
pub fn is_breaker_open(error: &(dyn std::error::Error + 'static)) -> bool {
    chain(error).any(|e| e.is::<BreakerOpen>())
}

/// Whether a repository failure means the database's connection is gone
/// (refused, reset, aborted, broken, unreachable), as opposed to a busy,
/// slow or failing database that still answers.
fn connection_lost(error: &RepoError) -> bool {
    use std::io::ErrorKind;
    error.is_unavailable()
        && chain(error).any(|e| {
            e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    ErrorKind::ConnectionRefused
                        | ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::NotConnected
                        | ErrorKind::BrokenPipe
                        | ErrorKind::UnexpectedEof
                        | ErrorKind::HostUnreachable
                        | ErrorKind::NetworkUnreachable
                )
            })
        })
}

fn chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

/// A repository whose every call goes through a breaker.
struct Guarded {
    breaker: RepositoryBreaker,
    inner: Arc<dyn Repository>,
}

impl AccountReader for Guarded {
    fn user_by_uuid<'a>(&'a self, uuid: &'a str) -> RepoFuture<'a, Option<User>> {
        self.breaker.call(self.inner.user_by_uuid(uuid))
    }

    fn is_token_revoked<'a>(&'a self, jti: &'a str) -> RepoFuture<'a, bool> {
        self.breaker.call(self.inner.is_token_revoked(jti))
    }

    // The bulk reads have defaults (`None`: "no bulk read"); left out, the
    // verifier's shared snapshots would fall back to a lookup per stream.
    fn all_users(&self, limit: u32) -> RepoFuture<'_, Option<Vec<User>>> {
        self.breaker.call(self.inner.all_users(limit))
    }

    fn revoked_jtis(&self, limit: u32) -> RepoFuture<'_, Option<Vec<String>>> {
        self.breaker.call(self.inner.revoked_jtis(limit))
    }
}

impl AttackerReader for Guarded {
    fn attacker_by_uuid<'a>(&'a self, uuid: &'a str) -> RepoFuture<'a, Option<Attacker>> {
        self.breaker.call(self.inner.attacker_by_uuid(uuid))
    }

    fn latest_observation_per_primitive<'a>(
        &'a self,
        attacker_uuid: &'a str,
    ) -> RepoFuture<'a, Vec<Observation>> {
        self.breaker
            .call(self.inner.latest_observation_per_primitive(attacker_uuid))
    }

    fn attackers_of_identity<'a>(&'a self, identity_uuid: &'a str) -> RepoFuture<'a, Vec<String>> {
        self.breaker
            .call(self.inner.attackers_of_identity(identity_uuid))
    }
}

impl IdentityReader for Guarded {
    fn recent_identities(&self, limit: u32) -> RepoFuture<'_, Vec<IdentityRow>> {
        self.breaker.call(self.inner.recent_identities(limit))
    }
}

impl CampaignReader for Guarded {
    fn recent_campaigns(&self, limit: u32) -> RepoFuture<'_, Vec<CampaignRow>> {
        self.breaker.call(self.inner.recent_campaigns(limit))
    }
}

impl OrchestratorReader for Guarded {
    fn recent_orchestrator_events(&self, limit: u32) -> RepoFuture<'_, Vec<OrchestratorEventRow>> {
        self.breaker
            .call(self.inner.recent_orchestrator_events(limit))
    }
}

impl TopologyReader for Guarded {
    fn topology_snapshot<'a>(
        &'a self,
        topology_id: &'a str,
    ) -> RepoFuture<'a, Option<TopologySnapshot>> {
        self.breaker.call(self.inner.topology_snapshot(topology_id))
    }
}

impl LogReader for Guarded {
    fn max_log_id(&self) -> RepoFuture<'_, i64> {
        self.breaker.call(self.inner.max_log_id())
    }

    fn logs_after_id<'a>(
        &'a self,
        after: i64,
        limit: u32,
        filter: &'a LogFilter,
    ) -> RepoFuture<'a, Vec<LogRow>> {
        self.breaker
            .call(self.inner.logs_after_id(after, limit, filter))
    }

    fn log_stats(&self) -> RepoFuture<'_, LogStats> {
        self.breaker.call(self.inner.log_stats())
    }

    fn log_histogram<'a>(
        &'a self,
        filter: &'a LogFilter,
        interval_minutes: u32,
    ) -> RepoFuture<'a, Vec<HistogramBucket>> {
        self.breaker
            .call(self.inner.log_histogram(filter, interval_minutes))
    }
}

impl Health for Guarded {
    fn ping(&self) -> RepoFuture<'_, ()> {
        self.breaker.call(self.inner.ping())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;

    /// What the fake's next ping does.
    #[derive(Debug, Clone, Copy)]
    enum Ping {
        Answer,
        Fail,
        Hang,
    }

    /// A [`Health`] answering from a script (the last entry repeats).
    struct FakeHealth {
        // std Mutex: held only to pop, never across an await.
        script: Mutex<VecDeque<Ping>>,
        pings: AtomicU64,
    }

    impl FakeHealth {
        fn new(script: &[Ping]) -> Arc<Self> {
            Arc::new(Self {
                script: Mutex::new(script.iter().copied().collect()),
                pings: AtomicU64::new(0),
            })
        }

        fn next(&self) -> Ping {
            let mut script = self.script.lock().unwrap_or_else(|e| e.into_inner());
            match script.len() {
                0 => Ping::Answer,
                1 => script[0],
                _ => script.pop_front().unwrap_or(Ping::Answer),
            }
        }

        fn set(&self, ping: Ping) {
            let mut script = self.script.lock().unwrap_or_else(|e| e.into_inner());
            script.clear();
            script.push_back(ping);
        }
    }

    impl Health for FakeHealth {
        fn ping(&self) -> RepoFuture<'_, ()> {
            self.pings.fetch_add(1, Ordering::Relaxed);
            let ping = self.next();
            async move {
                match ping {
                    Ping::Answer => Ok(()),
                    Ping::Fail => Err(RepoError::Query("no".into())),
                    Ping::Hang => std::future::pending().await,
                }
            }
            .boxed()
        }
    }

    fn refused() -> RepoError {
        RepoError::Unavailable(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )))
    }

    /// SQLite's `database is locked` past its busy timeout: alive, busy.
    fn busy() -> RepoError {
        RepoError::Unavailable("database is locked".into())
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_times_out_trips_it_and_one_that_answers_closes_it() {
        let breaker = RepositoryBreaker::default();
        let health = FakeHealth::new(&[Ping::Hang]);
        let started = tokio::time::Instant::now();
        assert!(!breaker.probe(health.as_ref()).await);
        assert_eq!(started.elapsed(), breaker.config().probe_timeout);
        assert!(!breaker.is_up());
        assert_eq!(breaker.counters().trips(TripCause::ProbeTimeout), 1);
        // Still down: not counted twice.
        assert!(!breaker.probe(health.as_ref()).await);
        assert_eq!(breaker.counters().trips(TripCause::ProbeTimeout), 1);
        health.set(Ping::Answer);
        assert!(breaker.probe(health.as_ref()).await);
        assert!(breaker.is_up());
        assert!(breaker.counters().up);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_fails_trips_it() {
        let breaker = RepositoryBreaker::default();
        assert!(!breaker.probe(FakeHealth::new(&[Ping::Fail]).as_ref()).await);
        let counters = breaker.counters();
        assert!(!counters.up);
        assert_eq!(counters.trips(TripCause::ProbeError), 1);
        assert_eq!(counters.trips(TripCause::ProbeTimeout), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_connection_on_a_request_trips_it_a_busy_database_does_not() {
        let breaker = RepositoryBreaker::default();
        let busy = breaker.call(async { Err::<(), _>(busy()) }).await;
        assert!(busy.is_err_and(|e| !is_breaker_open(&e)));
        let query = breaker
            .call(async { Err::<(), _>(RepoError::Query("syntax".into())) })
            .await;
        assert!(query.is_err());
        assert!(breaker.is_up(), "slow or failing is not down");
        let lost = breaker.call(async { Err::<(), _>(refused()) }).await;
        assert!(lost.is_err_and(|e| !is_breaker_open(&e)), "its own error");
        assert!(!breaker.is_up());
        assert_eq!(breaker.counters().trips(TripCause::Request), 1);
    }

    /// Every read reaches the wrapped repository once, the ones with a
    /// default in the traits (the bulk reads) included.
    #[tokio::test]
    async fn the_guard_forwards_every_read() {
        use decnet_repo::{CountedRepository, MemoryRepository, Read};
        let counted = CountedRepository::new(Arc::new(MemoryRepository::new()));
        let counts = counted.counts();
        let guarded = RepositoryBreaker::default().guard(Arc::new(counted));
        let filter = LogFilter::default();
        guarded.user_by_uuid("u").await.expect("memory");
        guarded.is_token_revoked("j").await.expect("memory");
        assert!(guarded.all_users(10).await.expect("memory").is_some());
        assert!(guarded.revoked_jtis(10).await.expect("memory").is_some());
        guarded.attacker_by_uuid("a").await.expect("memory");
        guarded
            .latest_observation_per_primitive("a")
            .await
            .expect("memory");
        guarded.attackers_of_identity("i").await.expect("memory");
        guarded.recent_identities(5).await.expect("memory");
        guarded.recent_campaigns(5).await.expect("memory");
        guarded.recent_orchestrator_events(5).await.expect("memory");
        guarded.topology_snapshot("t").await.expect("memory");
        guarded.max_log_id().await.expect("memory");
        guarded.logs_after_id(0, 10, &filter).await.expect("memory");
        guarded.log_stats().await.expect("memory");
        guarded.log_histogram(&filter, 15).await.expect("memory");
        guarded.ping().await.expect("memory");
        for read in Read::ALL {
            assert_eq!(counts.get(read), 1, "{read:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn while_open_calls_fail_at_once_without_reaching_the_database() {
        let breaker = RepositoryBreaker::default();
        breaker.trip(TripCause::ProbeError);
        let reached = Arc::new(AtomicU64::new(0));
        let seen = reached.clone();
        let started = tokio::time::Instant::now();
        let result = breaker
            .call(async move {
                seen.fetch_add(1, Ordering::Relaxed);
                Ok(1)
            })
            .await;
        assert!(result.is_err_and(|e| e.is_unavailable() && is_breaker_open(&e)));
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(reached.load(Ordering::Relaxed), 0);
        assert_eq!(breaker.counters().fast_fails, 1);
        // Closed again: calls go through.
        assert!(breaker.probe(FakeHealth::new(&[]).as_ref()).await);
        assert_eq!(breaker.call(async { Ok(2) }).await.ok(), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_waiting_on_the_database_is_cut_short_when_it_trips() {
        let breaker = RepositoryBreaker::default();
        let waiting = tokio::spawn(breaker.call(std::future::pending::<Result<(), RepoError>>()));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        breaker.trip(TripCause::ProbeTimeout);
        let result = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("cut short")
            .expect("the task");
        assert!(result.is_err_and(|e| is_breaker_open(&e)));
        assert_eq!(breaker.counters().fast_fails, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_probe_task_trips_within_interval_plus_timeout_and_stops() {
        let breaker = RepositoryBreaker::default();
        let health = FakeHealth::new(&[Ping::Answer]);
        let task = breaker.start(health.clone()).expect("a runtime");
        let mut up = breaker.shared.up.subscribe();
        health.set(Ping::Hang);
        let started = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), up.wait_for(|up| !*up))
            .await
            .expect("tripped")
            .expect("the breaker");
        let config = breaker.config();
        assert!(started.elapsed() <= config.probe_every + config.probe_timeout);
        assert_eq!(breaker.counters().trips(TripCause::ProbeTimeout), 1);
        health.set(Ping::Answer);
        tokio::time::timeout(Duration::from_secs(5), up.wait_for(|up| *up))
            .await
            .expect("closed")
            .expect("the breaker");
        task.stop();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !task.is_finished() {
            assert!(tokio::time::Instant::now() < deadline, "the task stops");
            tokio::task::yield_now().await;
        }
        let pings = health.pings.load(Ordering::Relaxed);
        tokio::time::advance(config.probe_every * 10).await;
        assert_eq!(
            health.pings.load(Ordering::Relaxed),
            pings,
            "no probe after stop"
        );
    }

    #[tokio::test]
    async fn dropping_the_probe_task_stops_it() {
        let breaker = RepositoryBreaker::default();
        let task = breaker.start(FakeHealth::new(&[])).expect("a runtime");
        let handle = task.0.clone();
        drop(task);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !handle.is_finished() {
            assert!(tokio::time::Instant::now() < deadline, "the task stops");
            tokio::task::yield_now().await;
        }
        assert_eq!(Arc::strong_count(&breaker.shared), 1, "the task let go");
    }
}
