//! [`CountedRepository`]: any [`Repository`] with a count of the queries made
//! through it, per read, for the service's `/metrics` and the benchmarks'
//! database load (the same on every engine, where the engines' own
//! statistics differ or are switched off).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{
    AccountReader, Attacker, AttackerReader, CampaignReader, CampaignRow, Health, HistogramBucket,
    IdentityReader, IdentityRow, LogFilter, LogReader, LogRow, LogStats, Observation,
    OrchestratorEventRow, OrchestratorReader, RepoFuture, Repository, TopologyReader,
    TopologySnapshot, User,
};

/// One read of the [`Repository`] traits: the label of its count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Read {
    /// [`AccountReader::user_by_uuid`].
    UserByUuid,
    /// [`AccountReader::is_token_revoked`].
    IsTokenRevoked,
    /// [`AccountReader::all_users`].
    AllUsers,
    /// [`AccountReader::revoked_jtis`].
    RevokedJtis,
    /// [`AttackerReader::attacker_by_uuid`].
    AttackerByUuid,
    /// [`AttackerReader::latest_observation_per_primitive`].
    LatestObservationPerPrimitive,
    /// [`AttackerReader::attackers_of_identity`].
    AttackersOfIdentity,
    /// [`IdentityReader::recent_identities`].
    RecentIdentities,
    /// [`CampaignReader::recent_campaigns`].
    RecentCampaigns,
    /// [`OrchestratorReader::recent_orchestrator_events`].
    RecentOrchestratorEvents,
    /// [`TopologyReader::topology_snapshot`].
    TopologySnapshot,
    /// [`LogReader::max_log_id`].
    MaxLogId,
    /// [`LogReader::logs_after_id`].
    LogsAfterId,
    /// [`LogReader::log_stats`].
    LogStats,
    /// [`LogReader::log_histogram`].
    LogHistogram,
    /// [`Health::ping`].
    Ping,
}

impl Read {
    /// Every read, in the order of the traits.
    pub const ALL: [Read; 16] = [
        Read::UserByUuid,
        Read::IsTokenRevoked,
        Read::AllUsers,
        Read::RevokedJtis,
        Read::AttackerByUuid,
        Read::LatestObservationPerPrimitive,
        Read::AttackersOfIdentity,
        Read::RecentIdentities,
        Read::RecentCampaigns,
        Read::RecentOrchestratorEvents,
        Read::TopologySnapshot,
        Read::MaxLogId,
        Read::LogsAfterId,
        Read::LogStats,
        Read::LogHistogram,
        Read::Ping,
    ];

    /// The method's name (`logs_after_id`), the metric label.
    pub const fn name(self) -> &'static str {
        match self {
            Read::UserByUuid => "user_by_uuid",
            Read::IsTokenRevoked => "is_token_revoked",
            Read::AllUsers => "all_users",
            Read::RevokedJtis => "revoked_jtis",
            Read::AttackerByUuid => "attacker_by_uuid",
            Read::LatestObservationPerPrimitive => "latest_observation_per_primitive",
            Read::AttackersOfIdentity => "attackers_of_identity",
            Read::RecentIdentities => "recent_identities",
            Read::RecentCampaigns => "recent_campaigns",
            Read::RecentOrchestratorEvents => "recent_orchestrator_events",
            Read::TopologySnapshot => "topology_snapshot",
            Read::MaxLogId => "max_log_id",
            Read::LogsAfterId => "logs_after_id",
            Read::LogStats => "log_stats",
            Read::LogHistogram => "log_histogram",
            Read::Ping => "ping",
        }
    }
}

/// The counts of a [`CountedRepository`] (cheap to clone: shared).
#[derive(Debug, Clone, Default)]
pub struct QueryCounts(Arc<[AtomicU64; Read::ALL.len()]>);

impl QueryCounts {
    /// Calls of `read` so far.
    pub fn get(&self, read: Read) -> u64 {
        self.0[read as usize].load(Ordering::Relaxed)
    }

    /// Every read with its count, in [`Read::ALL`]'s order.
    pub fn all(&self) -> [(Read, u64); Read::ALL.len()] {
        Read::ALL.map(|read| (read, self.get(read)))
    }

    fn bump(&self, read: Read) {
        self.0[read as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// A [`Repository`] that counts every call made through it (made, not
/// completed: a call that fails or is cancelled counts too), then passes it
/// to the repository it wraps.
pub struct CountedRepository {
    inner: Arc<dyn Repository>,
    counts: QueryCounts,
}

impl std::fmt::Debug for CountedRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountedRepository")
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl CountedRepository {
    /// `inner`, counted.
    pub fn new(inner: Arc<dyn Repository>) -> Self {
        Self {
            inner,
            counts: QueryCounts::default(),
        }
    }

    /// The counts (shared with this repository: they keep counting).
    pub fn counts(&self) -> QueryCounts {
        self.counts.clone()
    }

    fn count(&self, read: Read) -> &dyn Repository {
        self.counts.bump(read);
        &*self.inner
    }
}

impl AccountReader for CountedRepository {
    fn user_by_uuid<'a>(&'a self, uuid: &'a str) -> RepoFuture<'a, Option<User>> {
        self.count(Read::UserByUuid).user_by_uuid(uuid)
    }

    fn is_token_revoked<'a>(&'a self, jti: &'a str) -> RepoFuture<'a, bool> {
        self.count(Read::IsTokenRevoked).is_token_revoked(jti)
    }

    fn all_users(&self, limit: u32) -> RepoFuture<'_, Option<Vec<User>>> {
        self.count(Read::AllUsers).all_users(limit)
    }

    fn revoked_jtis(&self, limit: u32) -> RepoFuture<'_, Option<Vec<String>>> {
        self.count(Read::RevokedJtis).revoked_jtis(limit)
    }
}

impl AttackerReader for CountedRepository {
    fn attacker_by_uuid<'a>(&'a self, uuid: &'a str) -> RepoFuture<'a, Option<Attacker>> {
        self.count(Read::AttackerByUuid).attacker_by_uuid(uuid)
    }

    fn latest_observation_per_primitive<'a>(
        &'a self,
        attacker_uuid: &'a str,
    ) -> RepoFuture<'a, Vec<Observation>> {
        self.count(Read::LatestObservationPerPrimitive)
            .latest_observation_per_primitive(attacker_uuid)
    }

    fn attackers_of_identity<'a>(&'a self, identity_uuid: &'a str) -> RepoFuture<'a, Vec<String>> {
        self.count(Read::AttackersOfIdentity)
            .attackers_of_identity(identity_uuid)
    }
}

impl IdentityReader for CountedRepository {
    fn recent_identities(&self, limit: u32) -> RepoFuture<'_, Vec<IdentityRow>> {
        self.count(Read::RecentIdentities).recent_identities(limit)
    }
}

impl CampaignReader for CountedRepository {
    fn recent_campaigns(&self, limit: u32) -> RepoFuture<'_, Vec<CampaignRow>> {
        self.count(Read::RecentCampaigns).recent_campaigns(limit)
    }
}

impl OrchestratorReader for CountedRepository {
    fn recent_orchestrator_events(&self, limit: u32) -> RepoFuture<'_, Vec<OrchestratorEventRow>> {
        self.count(Read::RecentOrchestratorEvents)
            .recent_orchestrator_events(limit)
    }
}

impl TopologyReader for CountedRepository {
    fn topology_snapshot<'a>(
        &'a self,
        topology_id: &'a str,
    ) -> RepoFuture<'a, Option<TopologySnapshot>> {
        self.count(Read::TopologySnapshot)
            .topology_snapshot(topology_id)
    }
}

impl LogReader for CountedRepository {
    fn max_log_id(&self) -> RepoFuture<'_, i64> {
        self.count(Read::MaxLogId).max_log_id()
    }

    fn logs_after_id<'a>(
        &'a self,
        after: i64,
        limit: u32,
        filter: &'a LogFilter,
    ) -> RepoFuture<'a, Vec<LogRow>> {
        self.count(Read::LogsAfterId)
            .logs_after_id(after, limit, filter)
    }

    fn log_stats(&self) -> RepoFuture<'_, LogStats> {
        self.count(Read::LogStats).log_stats()
    }

    fn log_histogram<'a>(
        &'a self,
        filter: &'a LogFilter,
        interval_minutes: u32,
    ) -> RepoFuture<'a, Vec<HistogramBucket>> {
        self.count(Read::LogHistogram)
            .log_histogram(filter, interval_minutes)
    }
}

impl Health for CountedRepository {
    fn ping(&self) -> RepoFuture<'_, ()> {
        self.count(Read::Ping).ping()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryRepository;

    #[test]
    fn names_are_unique_and_indexes_match_all() {
        let mut names: Vec<_> = Read::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Read::ALL.len());
        for (i, read) in Read::ALL.iter().enumerate() {
            assert_eq!(*read as usize, i, "{read:?}");
        }
    }

    #[tokio::test]
    async fn every_call_is_counted_once_under_its_own_read() {
        let counted = CountedRepository::new(Arc::new(MemoryRepository::new()));
        let counts = counted.counts();
        let filter = LogFilter::default();
        counted.user_by_uuid("u").await.expect("memory");
        counted.is_token_revoked("j").await.expect("memory");
        counted.is_token_revoked("k").await.expect("memory");
        counted.all_users(10).await.expect("memory");
        counted.revoked_jtis(10).await.expect("memory");
        counted.attacker_by_uuid("a").await.expect("memory");
        counted
            .latest_observation_per_primitive("a")
            .await
            .expect("memory");
        counted.attackers_of_identity("i").await.expect("memory");
        counted.recent_identities(5).await.expect("memory");
        counted.recent_campaigns(5).await.expect("memory");
        counted.recent_orchestrator_events(5).await.expect("memory");
        counted.topology_snapshot("t").await.expect("memory");
        counted.max_log_id().await.expect("memory");
        counted.logs_after_id(0, 10, &filter).await.expect("memory");
        counted.log_stats().await.expect("memory");
        counted.log_histogram(&filter, 15).await.expect("memory");
        counted.ping().await.expect("memory");
        for (read, n) in counts.all() {
            let expected = if read == Read::IsTokenRevoked { 2 } else { 1 };
            assert_eq!(n, expected, "{read:?}");
        }
    }

    #[tokio::test]
    async fn a_failed_call_counts_too() {
        let memory = MemoryRepository::new();
        memory.set_available(false);
        let counted = CountedRepository::new(Arc::new(memory));
        assert!(counted.ping().await.is_err());
        assert_eq!(counted.counts().get(Read::Ping), 1);
    }
}
