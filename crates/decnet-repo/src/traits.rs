//! The read seams, one small trait per consumer, and the writer used by tools,
//! the demo and tests.
//!
//! Every trait is dyn-compatible (methods return [`RepoFuture`], a boxed
//! `Send` future), so a consumer holds an `Arc<dyn AttackerReader>` and an
//! embedder's own data layer plugs in without generics spreading through the
//! service. The box costs one allocation per query, noise next to the round
//! trip. [`Repository`] is every reader at once, implemented for any type that
//! implements them all.

use std::time::SystemTime;

use futures::future::BoxFuture;

use crate::{
    Attacker, CampaignRow, HistogramBucket, IdentityRow, LogFilter, LogRow, LogStats, MutationRow,
    Observation, OrchestratorEventRow, RepoError, TopologySnapshot, User,
};

/// The future every repository call returns.
pub type RepoFuture<'a, T> = BoxFuture<'a, Result<T, RepoError>>;

/// What JWT verification reads (decnet-auth).
pub trait AccountReader: Send + Sync {
    /// The user with this uuid, or `None`.
    fn user_by_uuid<'a>(&'a self, uuid: &'a str) -> RepoFuture<'a, Option<User>>;

    /// Whether `jti` is in the revocation denylist.
    fn is_token_revoked<'a>(&'a self, jti: &'a str) -> RepoFuture<'a, bool>;

    /// Every user at once, at most `limit` of them (in no particular order),
    /// for a verifier's shared snapshot: one query however many users are
    /// asked about. `password_hash` is left empty (a snapshot of every user
    /// need not hold every hash; verification never reads it).
    ///
    /// `None` when this reader has no bulk read; the verifier then asks
    /// [`user_by_uuid`](Self::user_by_uuid) per user. The default is `None`.
    fn all_users(&self, limit: u32) -> RepoFuture<'_, Option<Vec<User>>> {
        let _ = limit;
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Every `jti` of the revocation denylist at once, at most `limit` of
    /// them (in no particular order), expired rows included (revocation is
    /// presence of the row, whatever its `expires_at`), for a verifier's
    /// shared snapshot.
    ///
    /// `None` when this reader has no bulk read; the verifier then asks
    /// [`is_token_revoked`](Self::is_token_revoked) per jti. The default is
    /// `None`.
    fn revoked_jtis(&self, limit: u32) -> RepoFuture<'_, Option<Vec<String>>> {
        let _ = limit;
        Box::pin(std::future::ready(Ok(None)))
    }
}

/// What the attacker stream reads.
pub trait AttackerReader: Send + Sync {
    /// The attacker with this uuid (exact match), or `None`.
    fn attacker_by_uuid<'a>(&'a self, uuid: &'a str) -> RepoFuture<'a, Option<Attacker>>;

    /// The latest observation per primitive for one attacker, sorted by
    /// primitive (byte order). "Latest" is the highest `ts`; a tie on `ts`
    /// goes to the highest `id` (byte order).
    fn latest_observation_per_primitive<'a>(
        &'a self,
        attacker_uuid: &'a str,
    ) -> RepoFuture<'a, Vec<Observation>>;

    /// The uuids of the attackers whose `identity_id` is `identity_uuid`
    /// (for `identity.unmerged`: who follows the resurrected identity).
    fn attackers_of_identity<'a>(&'a self, identity_uuid: &'a str) -> RepoFuture<'a, Vec<String>>;
}

/// What the identity stream's snapshot reads.
pub trait IdentityReader: Send + Sync {
    /// The `limit` most recently updated identities not merged into another
    /// (`merged_into_uuid IS NULL`), newest `updated_at` first (ties: highest
    /// `uuid` first, a deterministic stand-in for DECNET's engine order).
    fn recent_identities(&self, limit: u32) -> RepoFuture<'_, Vec<IdentityRow>>;
}

/// What the campaign stream's snapshot reads.
pub trait CampaignReader: Send + Sync {
    /// The `limit` most recently updated campaigns not merged into another,
    /// newest `updated_at` first (ties: highest `uuid` first).
    fn recent_campaigns(&self, limit: u32) -> RepoFuture<'_, Vec<CampaignRow>>;
}

/// What the orchestrator stream's snapshot reads.
pub trait OrchestratorReader: Send + Sync {
    /// The `limit` newest `orchestrator_events` (every kind), newest `ts`
    /// first (ties: highest `uuid` first).
    fn recent_orchestrator_events(&self, limit: u32) -> RepoFuture<'_, Vec<OrchestratorEventRow>>;
}

/// What the topology stream reads.
pub trait TopologyReader: Send + Sync {
    /// The topology's status and its in-flight mutations (pending newest
    /// `requested_at` first, then applying newest first; ties: highest `id`
    /// first), read consistently (one transaction or snapshot), or `None`
    /// when no topology has this id.
    fn topology_snapshot<'a>(
        &'a self,
        topology_id: &'a str,
    ) -> RepoFuture<'a, Option<TopologySnapshot>>;
}

/// What `/stream` (logs, stats, histogram) reads.
pub trait LogReader: Send + Sync {
    /// `max(id)` of `logs`, 0 when empty (unfiltered).
    fn max_log_id(&self) -> RepoFuture<'_, i64>;

    /// Up to `limit` rows with `id > after` that pass `filter`, ascending by id.
    fn logs_after_id<'a>(
        &'a self,
        after: i64,
        limit: u32,
        filter: &'a LogFilter,
    ) -> RepoFuture<'a, Vec<LogRow>>;

    /// The database part of the stats frame (filters do not apply).
    fn log_stats(&self) -> RepoFuture<'_, LogStats>;

    /// Rows passing `filter` counted per bucket of `interval_minutes` (at
    /// least 1) on the epoch-second grid, non-empty buckets only, ascending.
    fn log_histogram<'a>(
        &'a self,
        filter: &'a LogFilter,
        interval_minutes: u32,
    ) -> RepoFuture<'a, Vec<HistogramBucket>>;
}

/// Liveness of the data layer, for `/readyz`.
pub trait Health: Send + Sync {
    /// A cheap round trip proving the repository answers.
    fn ping(&self) -> RepoFuture<'_, ()>;
}

/// Every reader at once: what the service needs from one database.
///
/// Implemented for every type that implements all the readers, so a backend
/// never implements it by hand. An `Arc<dyn Repository>` coerces to any one
/// reader (`Arc<dyn AttackerReader>`, ...).
pub trait Repository:
    AccountReader
    + AttackerReader
    + IdentityReader
    + CampaignReader
    + OrchestratorReader
    + TopologyReader
    + LogReader
    + Health
{
}

impl<T> Repository for T where
    T: AccountReader
        + AttackerReader
        + IdentityReader
        + CampaignReader
        + OrchestratorReader
        + TopologyReader
        + LogReader
        + Health
{
}

/// Writes, for tools (`decnet-events` demo, the load generator) and tests.
/// The service itself never writes; DECNET's own databases (SQLite, MySQL)
/// have no writer here at all.
pub trait RepositoryWriter: Send + Sync {
    /// Insert or update an attacker by uuid.
    fn upsert_attacker<'a>(&'a self, attacker: &'a Attacker) -> RepoFuture<'a, ()>;

    /// Insert an observation, or update the existing one with the same
    /// `(evidence_ref, primitive)`: idempotent.
    fn upsert_observation<'a>(&'a self, observation: &'a Observation) -> RepoFuture<'a, ()>;

    /// Insert a user, or replace the user with the same uuid.
    fn create_user<'a>(&'a self, user: &'a User) -> RepoFuture<'a, ()>;

    /// Delete a user; deleting an unknown uuid is not an error.
    fn delete_user<'a>(&'a self, uuid: &'a str) -> RepoFuture<'a, ()>;

    /// Link an attacker to an identity (or unlink it with `None`).
    fn set_attacker_identity<'a>(
        &'a self,
        attacker_uuid: &'a str,
        identity_id: Option<&'a str>,
    ) -> RepoFuture<'a, ()>;

    /// Add `jti` to the revocation denylist.
    fn revoke_token<'a>(
        &'a self,
        jti: &'a str,
        user_uuid: &'a str,
        expires_at: SystemTime,
    ) -> RepoFuture<'a, ()>;

    /// Insert or replace an identity by uuid.
    fn upsert_identity<'a>(&'a self, identity: &'a IdentityRow) -> RepoFuture<'a, ()>;

    /// Insert or replace a campaign by uuid.
    fn upsert_campaign<'a>(&'a self, campaign: &'a CampaignRow) -> RepoFuture<'a, ()>;

    /// Insert an orchestrator event.
    fn insert_orchestrator_event<'a>(
        &'a self,
        event: &'a OrchestratorEventRow,
    ) -> RepoFuture<'a, ()>;

    /// Insert or update a topology (`id`, unique `name`, `status`).
    fn upsert_topology<'a>(
        &'a self,
        id: &'a str,
        name: &'a str,
        status: &'a str,
    ) -> RepoFuture<'a, ()>;

    /// Insert or replace a topology mutation by id.
    fn upsert_mutation<'a>(&'a self, mutation: &'a MutationRow) -> RepoFuture<'a, ()>;

    /// Insert a decky of a topology in `state` (`running`, `failed`, ...).
    fn insert_topology_decky<'a>(
        &'a self,
        topology_id: &'a str,
        name: &'a str,
        state: &'a str,
    ) -> RepoFuture<'a, ()>;

    /// Insert a log row; `row.id` is ignored and the assigned id returned.
    fn insert_log<'a>(&'a self, row: &'a LogRow) -> RepoFuture<'a, i64>;
}
