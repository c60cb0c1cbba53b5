//! DECNET's data, as the events service reads it.
//!
//! What it is: the row types ([`Attacker`], [`Observation`], [`User`]), the
//! [`Repository`] abstraction the service and the auth crate read through, and
//! its backends: [`MemoryRepository`] (always compiled; tests, the embedded
//! demo) and `PgRepository` (feature `postgres`; deadpool-postgres over
//! tokio-postgres, with the SQL migrations embedded).
//! What it is not: DECNET's ORM. The service only reads; the few writes here
//! exist for tools, the demo and tests.
//!
//! Backends are a closed set chosen at run time from configuration, so the
//! service holds a [`Repo`], an enum that delegates to the backend (no boxing
//! per call). The [`Repository`] trait is public so embedders can write code
//! generic over any backend, including their own.
//!
//! Errors: every operation returns [`RepoError`]. A caller that only needs to
//! know whether to answer 503 asks [`RepoError::is_unavailable`].

use std::future::Future;
use std::time::SystemTime;

mod memory;
#[cfg(feature = "postgres")]
mod postgres;

pub use memory::MemoryRepository;
#[cfg(feature = "postgres")]
pub use postgres::{MIGRATIONS, PgConfig, PgRepository};

/// Boxed error source kept inside [`RepoError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A DECNET attacker (one row of `attackers`).
#[derive(Debug, Clone, PartialEq)]
pub struct Attacker {
    /// The attacker's uuid (primary key).
    pub uuid: String,
    /// The source IP it was first seen from.
    pub ip: String,
    /// The identity the attribution engine linked it to, if any.
    pub identity_id: Option<String>,
}

/// One behavioural observation (one row of `observations`).
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Row id (primary key); the tie-breaker for equal `ts` (highest wins).
    pub id: String,
    /// Identity reference recorded with the observation, if any.
    pub identity_ref: Option<String>,
    /// The primitive observed, e.g. `motor.input_modality`.
    pub primitive: String,
    /// The observed value: any JSON.
    pub value: serde_json::Value,
    /// Confidence in `[0, 1]`.
    pub confidence: f64,
    /// Start of the observation window, epoch seconds.
    pub window_start_ts: f64,
    /// End of the observation window, epoch seconds.
    pub window_end_ts: f64,
    /// The producer of the observation.
    pub source: String,
    /// Reference to the evidence; unique together with `primitive`.
    pub evidence_ref: String,
    /// Version of the bus envelope it arrived in.
    pub envelope_v: i32,
    /// When it was observed, epoch seconds.
    pub ts: f64,
    /// The attacker it belongs to.
    pub attacker_uuid: String,
}

/// A dashboard user (one row of `users`).
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// The user's uuid (primary key), the JWT `uuid` claim.
    pub uuid: String,
    /// Unique login name.
    pub username: String,
    /// Password hash (never used by this service; kept for schema parity).
    pub password_hash: String,
    /// `viewer`, `admin`, or another DECNET role.
    pub role: String,
    /// The user must change their password before using the API.
    pub must_change_password: bool,
    /// Tokens issued (whole seconds) before this instant are revoked. UTC.
    pub tokens_valid_from: Option<SystemTime>,
}

/// Why a repository operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// The database could not be reached in time (pool exhausted, connection
    /// refused, timeout). The server answers 503 with `Retry-After`.
    #[error("repository unavailable")]
    Unavailable(#[source] BoxError),
    /// The database answered with an error.
    #[error("repository query failed")]
    Query(#[source] BoxError),
    /// A migration could not be applied.
    #[error("migration failed")]
    Migration(#[source] BoxError),
    /// A row held a value this crate cannot represent, or a write broke a
    /// constraint (unknown attacker, username taken, ...).
    #[error("invalid data: {0}")]
    InvalidData(String),
    /// The backend's configuration cannot work (a database URL that does not
    /// parse, an empty pool). Returned when building a backend, never by a
    /// call.
    #[error("invalid repository configuration")]
    Config(#[source] BoxError),
}

impl RepoError {
    /// Whether the failure means "could not reach the database" (retry later)
    /// rather than a bad query or bad data.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RepoError::Unavailable(_))
    }
}

/// Read (and a few write) operations over DECNET's tables.
///
/// Implemented by every backend and by [`Repo`]. Futures are `Send` so callers
/// can `tokio::spawn` them.
pub trait Repository: Send + Sync {
    /// The attacker with this uuid, or `None`.
    fn attacker_by_uuid(
        &self,
        uuid: &str,
    ) -> impl Future<Output = Result<Option<Attacker>, RepoError>> + Send;

    /// The latest observation per primitive for one attacker, sorted by
    /// primitive. "Latest" is the highest `ts`; a tie on `ts` goes to the
    /// highest `id`.
    fn latest_observation_per_primitive(
        &self,
        attacker_uuid: &str,
    ) -> impl Future<Output = Result<Vec<Observation>, RepoError>> + Send;

    /// The user with this uuid, or `None`.
    fn user_by_uuid(
        &self,
        uuid: &str,
    ) -> impl Future<Output = Result<Option<User>, RepoError>> + Send;

    /// Whether `jti` is in the revocation denylist.
    fn is_token_revoked(&self, jti: &str) -> impl Future<Output = Result<bool, RepoError>> + Send;

    /// A cheap round trip proving the repository answers.
    fn ping(&self) -> impl Future<Output = Result<(), RepoError>> + Send;

    /// Insert or update an attacker by uuid.
    fn upsert_attacker(
        &self,
        attacker: &Attacker,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;

    /// Insert an observation, or update the existing one with the same
    /// `(evidence_ref, primitive)`: idempotent.
    fn upsert_observation(
        &self,
        observation: &Observation,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;

    /// Insert a user, or replace the user with the same uuid.
    fn create_user(&self, user: &User) -> impl Future<Output = Result<(), RepoError>> + Send;

    /// Delete a user; deleting an unknown uuid is not an error.
    fn delete_user(&self, uuid: &str) -> impl Future<Output = Result<(), RepoError>> + Send;

    /// Link an attacker to an identity (or unlink it with `None`).
    fn set_attacker_identity(
        &self,
        attacker_uuid: &str,
        identity_id: Option<&str>,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;

    /// Add `jti` to the revocation denylist.
    fn revoke_token(
        &self,
        jti: &str,
        user_uuid: &str,
        expires_at: SystemTime,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
}

/// The repository the service holds: one backend chosen at run time.
///
/// Cheap to clone (backends are handles around shared state).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Repo {
    /// In-process maps.
    Memory(MemoryRepository),
    /// PostgreSQL through a connection pool.
    #[cfg(feature = "postgres")]
    Postgres(PgRepository),
}

impl From<MemoryRepository> for Repo {
    fn from(repo: MemoryRepository) -> Self {
        Repo::Memory(repo)
    }
}

#[cfg(feature = "postgres")]
impl From<PgRepository> for Repo {
    fn from(repo: PgRepository) -> Self {
        Repo::Postgres(repo)
    }
}

macro_rules! delegate {
    ($self:ident, $repo:ident => $call:expr) => {
        match $self {
            Repo::Memory($repo) => $call.await,
            #[cfg(feature = "postgres")]
            Repo::Postgres($repo) => $call.await,
        }
    };
}

impl Repository for Repo {
    async fn attacker_by_uuid(&self, uuid: &str) -> Result<Option<Attacker>, RepoError> {
        delegate!(self, r => r.attacker_by_uuid(uuid))
    }

    async fn latest_observation_per_primitive(
        &self,
        attacker_uuid: &str,
    ) -> Result<Vec<Observation>, RepoError> {
        delegate!(self, r => r.latest_observation_per_primitive(attacker_uuid))
    }

    async fn user_by_uuid(&self, uuid: &str) -> Result<Option<User>, RepoError> {
        delegate!(self, r => r.user_by_uuid(uuid))
    }

    async fn is_token_revoked(&self, jti: &str) -> Result<bool, RepoError> {
        delegate!(self, r => r.is_token_revoked(jti))
    }

    async fn ping(&self) -> Result<(), RepoError> {
        delegate!(self, r => r.ping())
    }

    async fn upsert_attacker(&self, attacker: &Attacker) -> Result<(), RepoError> {
        delegate!(self, r => r.upsert_attacker(attacker))
    }

    async fn upsert_observation(&self, observation: &Observation) -> Result<(), RepoError> {
        delegate!(self, r => r.upsert_observation(observation))
    }

    async fn create_user(&self, user: &User) -> Result<(), RepoError> {
        delegate!(self, r => r.create_user(user))
    }

    async fn delete_user(&self, uuid: &str) -> Result<(), RepoError> {
        delegate!(self, r => r.delete_user(uuid))
    }

    async fn set_attacker_identity(
        &self,
        attacker_uuid: &str,
        identity_id: Option<&str>,
    ) -> Result<(), RepoError> {
        delegate!(self, r => r.set_attacker_identity(attacker_uuid, identity_id))
    }

    async fn revoke_token(
        &self,
        jti: &str,
        user_uuid: &str,
        expires_at: SystemTime,
    ) -> Result<(), RepoError> {
        delegate!(self, r => r.revoke_token(jti, user_uuid, expires_at))
    }
}

/// Pick the latest observation per primitive from any rows, sorted by primitive.
///
/// The rule shared by every backend: highest `ts`, then highest `id`.
pub fn latest_per_primitive<'a>(
    rows: impl IntoIterator<Item = &'a Observation>,
) -> Vec<Observation> {
    let mut latest: std::collections::BTreeMap<&str, &Observation> = Default::default();
    for row in rows {
        let replace = match latest.get(row.primitive.as_str()) {
            None => true,
            Some(current) => match row.ts.total_cmp(&current.ts) {
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Equal => row.id > current.id,
                std::cmp::Ordering::Less => false,
            },
        };
        if replace {
            latest.insert(row.primitive.as_str(), row);
        }
    }
    latest.into_values().cloned().collect()
}
