//! DECNET's data, as the events service reads it.
//!
//! What it is: the row types ([`Attacker`], [`Observation`], [`User`],
//! [`IdentityRow`], [`CampaignRow`], [`OrchestratorEventRow`],
//! [`TopologySnapshot`], [`LogRow`], ...), one small read trait per consumer
//! ([`AccountReader`] for JWT checks, [`AttackerReader`], [`IdentityReader`],
//! [`CampaignReader`], [`OrchestratorReader`], [`TopologyReader`] and
//! [`LogReader`] for the six streams, [`Health`] for readiness; all of them
//! at once as [`Repository`]), the writer tools and tests use
//! ([`RepositoryWriter`]), DECNET's `/stream` filter language ([`LogFilter`]),
//! its datetimes ([`DbTime`]), and the backends: [`MemoryRepository`] (always
//! compiled; tests, the embedded demo), `PgRepository` (feature `postgres`;
//! deadpool-postgres over tokio-postgres, this crate's own schema with the
//! SQL migrations embedded), and the readers of DECNET's own database,
//! `SqliteRepository` (feature `sqlite`) and `MysqlRepository` (feature
//! `mysql`), both on sqlx's drivers, read-only, over DECNET's Alembic schema.
//! [`CountedRepository`] wraps any of them and counts its queries per read
//! ([`Read`]), the same on every engine.
//! Every SQL backend has a `check_schema` naming what a database lacks
//! ([`SchemaMismatch`], against [`REQUIRED_COLUMNS`]).
//! What it is not: DECNET's ORM. The service only reads; the writer exists for
//! tools, the demo and tests, and DECNET's own databases have none.
//!
//! The seam policy, shared with the bus and the ticket store: every trait is
//! dyn-compatible (boxed `Send` futures), consumers hold `Arc<dyn Trait>`,
//! and only the binary names a concrete backend. An embedder's own data
//! layer implements the reader a consumer needs and nothing else.
//!
//! Test suites of this workspace create DECNET-schema SQLite files and MySQL
//! databases, and write rows into them, with `testing` (feature `testing`,
//! with `sqlite` and/or `mysql`); nothing in production uses it.
//!
//! Errors: every operation returns [`RepoError`]. A caller that only needs to
//! know whether to answer 503 asks [`RepoError::is_unavailable`].

mod counted;
mod datetime;
mod memory;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod pg_tls;
#[cfg(feature = "postgres")]
mod postgres;
mod rows;
mod schema;
mod search;
#[cfg(any(feature = "sqlite", feature = "mysql", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(any(feature = "sqlite", feature = "mysql"))]
mod sqlx_reads;
#[cfg(any(feature = "sqlite", feature = "mysql"))]
mod sqlx_support;
#[cfg(all(feature = "testing", any(feature = "sqlite", feature = "mysql")))]
pub mod testing;
mod traits;

pub use counted::{CountedRepository, QueryCounts, Read};
pub use datetime::{DbTime, DbTimeError};
pub use memory::MemoryRepository;
#[cfg(feature = "mysql")]
pub use mysql::{MysqlConfig, MysqlRepository, MysqlSslMode};
#[cfg(feature = "postgres")]
pub use postgres::{MIGRATIONS, PgConfig, PgRepository};
pub use rows::{
    Attacker, CampaignRow, HexBytes, HistogramBucket, IdentityRow, LogRow, LogStats, MutationRow,
    Observation, OrchestratorEventRow, TopologySnapshot, User,
};
pub use schema::{REQUIRED_COLUMNS, SchemaItem, SchemaMismatch};
pub use search::{LogColumn, LogFilter, SearchTerm};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteConfig, SqliteRepository};
pub use traits::{
    AccountReader, AttackerReader, CampaignReader, Health, IdentityReader, LogReader,
    OrchestratorReader, RepoFuture, Repository, RepositoryWriter, TopologyReader,
};

/// Every trait of this crate, for `use decnet_repo::prelude::*;` (a method of
/// a reader can only be called on a concrete backend with its trait in scope).
pub mod prelude {
    pub use crate::traits::{
        AccountReader, AttackerReader, CampaignReader, Health, IdentityReader, LogReader,
        OrchestratorReader, Repository, RepositoryWriter, TopologyReader,
    };
}

/// Boxed error source kept inside [`RepoError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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
    /// The database lacks tables or columns the service reads (from a
    /// backend's `check_schema`, which the server calls at start); the
    /// message names every one of them.
    #[error(transparent)]
    Schema(SchemaMismatch),
    /// A migration was asked of a database whose schema DECNET owns (it has
    /// DECNET's Alembic `alembic_version` table); nothing was changed.
    #[error(
        "refusing to migrate: the database has DECNET's alembic_version table, so DECNET's \
         Alembic owns its schema; decnet-events only reads such a database (repository \
         sqlite or mysql) and never migrates it"
    )]
    DecnetOwnsSchema,
}

impl RepoError {
    /// Whether the failure means "could not reach the database" (retry later)
    /// rather than a bad query or bad data.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RepoError::Unavailable(_))
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
