//! The SQLite backend: DECNET's own `decnet.db`, read-only, on sqlx's SQLite
//! driver (SQLite compiled in, one worker thread per connection).
//!
//! - [`SqliteConfig`] says which file and how long anything may take;
//!   [`SqliteConfig::from_url`] reads DECNET's URL forms.
//! - [`SqliteRepository::connect`] builds the pool without opening the file,
//!   so a service starts (and answers 503) while the file is missing.
//! - [`SqliteRepository::check_schema`] names every table and column the
//!   service reads that the file lacks.
//!
//! Read-only, three ways: the file is opened with `SQLITE_OPEN_READONLY`
//! (never created), every connection sets `PRAGMA query_only = ON`, and no
//! statement here writes. Nothing is migrated: DECNET's Alembic owns the
//! schema. The journal mode is the file's own (DECNET sets WAL): it is never
//! changed, since that would be a write. In WAL mode a reader never waits
//! for DECNET's writer (it reads the last committed state); in rollback
//! journal mode it waits for a committing writer up to
//! [`SqliteConfig::busy_timeout`], and past that the call fails with
//! [`RepoError::Unavailable`], never with a "database is locked" query error.
//! A WAL file needs its `-wal`/`-shm` companions readable and writable by
//! this process (SQLite's rule for read-only WAL readers).
//!
//! Semantics are DECNET's on SQLite (DECNET.md §2.4-2.5, §3.1):
//! - datetimes are stored as text in two forms, the ORM's naive
//!   `YYYY-MM-DD HH:MM:SS.ffffff` and the mutator's aware ISO form; both are
//!   read ([`crate::DbTime::parse`]);
//! - `observations.value` has NUMERIC affinity: JSON text, or a bare
//!   INTEGER/REAL when DECNET wrote a number (`5000.0` comes back as the
//!   integer `5000`; a non-finite REAL becomes `null`, as orjson writes it);
//! - `kd_digraph_simhash` is a BLOB, rendered as hex;
//! - the `/stream` filters are DECNET's SQL (see the crate's `sql` module):
//!   `json_extract(fields, '$.key') = ?` (JSON strings only), `LIKE` folding
//!   ASCII case, text comparison of the time bounds (a purely numeric bound
//!   is a number: it keeps every row as a start and none as an end);
//! - histogram buckets are DECNET's
//!   `datetime((strftime('%s', timestamp) / W) * W, 'unixepoch')`, which
//!   reads the stored time at millisecond precision (`10:14:59.999999` is in
//!   the 10:15 bucket), and an unreadable timestamp is a `None` bucket;
//! - orderings use SQLite's `BINARY` collation (byte order), so ties resolve
//!   as in the memory backend.
//!
//! Errors: a missing or unopenable file, `SQLITE_BUSY`/`SQLITE_LOCKED`, I/O
//! errors, a pool wait past [`SqliteConfig::acquire_timeout`] and a call past
//! [`SqliteConfig::call_timeout`] are [`RepoError::Unavailable`]; other SQL
//! errors (no such table, malformed JSON in `logs.fields`) are
//! [`RepoError::Query`]; a value this crate cannot represent is
//! [`RepoError::InvalidData`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx_core::decode::Decode;
use sqlx_core::error::DatabaseError;
use sqlx_core::row::Row;
use sqlx_core::type_info::TypeInfo;
use sqlx_core::types::Type;
use sqlx_core::value::ValueRef;
use sqlx_sqlite::{Sqlite, SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};

use crate::RepoError;
use crate::sql::Dialect;
use crate::sqlx_reads::{Queries, SqlxEngine};
use crate::sqlx_support::{
    self as support, Bind, Cells, Classify, Fetch, HeadAndRest, config_error, invalid, parse_json,
};

const ENGINE: &str = "sqlite";

/// Settings for [`SqliteRepository`].
///
/// Start from [`SqliteConfig::new`] (a path) or [`SqliteConfig::from_url`]
/// (DECNET's URL forms) and override fields with struct update syntax:
///
/// ```
/// # use decnet_repo::SqliteConfig;
/// # use std::time::Duration;
/// let config = SqliteConfig {
///     pool_size: 2,
///     ..SqliteConfig::new("/opt/decnet/decnet.db")
/// };
/// assert_eq!(config.busy_timeout, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The database file (DECNET's `<install dir>/decnet.db`). Never created.
    pub path: PathBuf,
    /// How long a statement waits for a lock held by DECNET's writer before
    /// the call fails with [`RepoError::Unavailable`] (`sqlite3_busy_timeout`;
    /// only rollback-journal databases make readers wait). Default 5 s
    /// (DECNET's own connections use 30 s).
    pub busy_timeout: Duration,
    /// Maximum open connections (at least 1). Default 4: SQLite reads run
    /// on one worker thread per connection.
    pub pool_size: u32,
    /// How long a call waits for a connection (all busy, or the file cannot
    /// be opened) before failing with [`RepoError::Unavailable`]. Default 3 s.
    pub acquire_timeout: Duration,
    /// The longest any one call may take, waits included; past it the call is
    /// abandoned, its connection closed, and the caller gets
    /// [`RepoError::Unavailable`]. Keep it above `busy_timeout`. Default 10 s.
    pub call_timeout: Duration,
}

impl SqliteConfig {
    /// Settings for the file at `path`, with the defaults.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteConfig {
            path: path.into(),
            busy_timeout: Duration::from_secs(5),
            pool_size: 4,
            acquire_timeout: Duration::from_secs(3),
            call_timeout: Duration::from_secs(10),
        }
    }

    /// Settings for a SQLite URL as DECNET (SQLAlchemy) or sqlx write them:
    /// `sqlite+aiosqlite:////abs/path.db` (four slashes: absolute),
    /// `sqlite:///relative.db` (three: relative to the working directory),
    /// and sqlx's `sqlite:path.db`, `sqlite://path.db`. Any `+driver` suffix
    /// of the scheme and any `?query` are ignored; the path is taken as
    /// written (DECNET builds it without percent-encoding).
    ///
    /// # Errors
    ///
    /// [`RepoError::Config`] for another scheme, a URL without a path
    /// (`sqlite:`, `sqlite://`), or an in-memory database (`:memory:`), which
    /// a read-only reader would always find empty.
    pub fn from_url(url: &str) -> Result<Self, RepoError> {
        Ok(SqliteConfig::new(path_from_url(url)?))
    }
}

/// The file a SQLite URL names (see [`SqliteConfig::from_url`]).
fn path_from_url(url: &str) -> Result<PathBuf, RepoError> {
    let bad = |why: &str| config_error(format!("sqlite url {url:?}: {why}"));
    let (scheme, rest) = url.split_once(':').ok_or_else(|| bad("no scheme"))?;
    let base = scheme
        .split_once('+')
        .map_or(scheme, |(base, _driver)| base);
    if !base.eq_ignore_ascii_case("sqlite") {
        return Err(bad("not a sqlite: url"));
    }
    let rest = rest.split_once('?').map_or(rest, |(path, _query)| path);
    let path = match rest.strip_prefix("//") {
        // SQLAlchemy: `sqlite:///` + path, so `////abs` is `/abs`.
        Some(after) => after.strip_prefix('/').unwrap_or(after),
        // sqlx: `sqlite:path`.
        None => rest,
    };
    let path = path.strip_prefix("file:").unwrap_or(path);
    if path.is_empty() {
        return Err(bad("no database path"));
    }
    if path == ":memory:" {
        return Err(bad("an in-memory database has nothing to read"));
    }
    Ok(PathBuf::from(path))
}

/// SQLite's primary result codes that mean "cannot serve now".
struct SqliteErrors;

impl Classify for SqliteErrors {
    fn unavailable(err: &dyn DatabaseError) -> bool {
        // Extended codes carry the primary code in the low byte.
        let primary = err
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .map(|code| code & 0xff);
        // BUSY, LOCKED, IOERR, CANTOPEN, PROTOCOL.
        matches!(primary, Some(5 | 6 | 10 | 14 | 15))
    }
}

/// DECNET's SQLite database, read-only. Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct SqliteRepository {
    pool: SqlitePool,
    path: PathBuf,
    call_timeout: Duration,
}

impl SqliteRepository {
    /// Build the pool. Nothing is opened here (no runtime needed either):
    /// connections open on first use, so this succeeds while the file is
    /// missing, and calls then fail with [`RepoError::Unavailable`].
    ///
    /// # Errors
    ///
    /// [`RepoError::Config`] when `pool_size` is 0 or the path is empty.
    pub fn connect(config: SqliteConfig) -> Result<Self, RepoError> {
        if config.pool_size == 0 {
            return Err(config_error("sqlite pool_size must be at least 1"));
        }
        if config.path.as_os_str().is_empty() {
            return Err(config_error("sqlite path must not be empty"));
        }
        let options = SqliteConnectOptions::new()
            .filename(&config.path)
            .read_only(true)
            .create_if_missing(false)
            .busy_timeout(config.busy_timeout)
            .foreign_keys(false)
            .pragma("query_only", "ON")
            .statement_cache_capacity(32);
        let pool = SqlitePoolOptions::new()
            .max_connections(config.pool_size)
            .min_connections(0)
            .acquire_timeout(config.acquire_timeout)
            // No reaper task: the pool then needs no runtime to be built, and
            // an idle SQLite connection costs nothing but a file handle.
            .max_lifetime(None)
            .idle_timeout(None)
            .test_before_acquire(false)
            .connect_lazy_with(options);
        Ok(SqliteRepository {
            pool,
            path: config.path,
            call_timeout: config.call_timeout,
        })
    }

    /// The file this repository reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Check that the file has every table and column the service reads
    /// ([`crate::REQUIRED_COLUMNS`]).
    ///
    /// # Errors
    ///
    /// [`RepoError::Schema`] naming each missing table and column;
    /// [`RepoError::Unavailable`] when the file cannot be read.
    pub async fn check_schema(&self) -> Result<(), RepoError> {
        let rows = self
            .fetch_all(
                "SELECT m.name AS table_name, p.name AS column_name \
                 FROM sqlite_master AS m JOIN pragma_table_info(m.name) AS p \
                 WHERE m.type IN ('table', 'view')",
                Vec::new(),
            )
            .await?;
        let pairs = rows
            .iter()
            .map(|row| Ok((row.text("table_name")?, row.text("column_name")?)))
            .collect::<Result<Vec<_>, RepoError>>()?;
        support::compare_schema(pairs)
    }
}

impl Fetch for SqliteRepository {
    type Row = SqliteRow;

    async fn fetch_all(&self, sql: &str, binds: Vec<Bind>) -> Result<Vec<SqliteRow>, RepoError> {
        support::fetch_all::<Sqlite, SqliteErrors>(
            ENGINE,
            &self.pool,
            self.call_timeout,
            sql,
            binds,
        )
        .await
    }

    async fn fetch_head_and_rest(
        &self,
        begin: Option<&'static str>,
        head: (&'static str, Vec<Bind>),
        rest: (&'static str, Vec<Bind>),
    ) -> Result<Option<HeadAndRest<SqliteRow>>, RepoError> {
        let (pool, deadline) = (&self.pool, self.call_timeout);
        support::fetch_head_and_rest::<Sqlite, SqliteErrors>(
            ENGINE, pool, deadline, begin, head, rest,
        )
        .await
    }
}

/// One column, decoded with SQLite's own conversions (a dynamically typed
/// column gives what SQLite's `sqlite3_column_*` make of it).
fn get<'r, T>(row: &'r SqliteRow, col: &str) -> Result<T, RepoError>
where
    T: Decode<'r, Sqlite> + Type<Sqlite>,
{
    row.try_get_unchecked(col)
        .map_err(|err| invalid(format_args!("column {col}"), err))
}

impl Cells for SqliteRow {
    fn text(&self, col: &str) -> Result<String, RepoError> {
        get(self, col)
    }

    fn opt_text(&self, col: &str) -> Result<Option<String>, RepoError> {
        get(self, col)
    }

    fn int(&self, col: &str) -> Result<i64, RepoError> {
        get(self, col)
    }

    fn float(&self, col: &str) -> Result<f64, RepoError> {
        get(self, col)
    }

    fn opt_float(&self, col: &str) -> Result<Option<f64>, RepoError> {
        get(self, col)
    }

    fn flag(&self, col: &str) -> Result<bool, RepoError> {
        Ok(get::<i64>(self, col)? != 0)
    }

    fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>, RepoError> {
        get(self, col)
    }

    /// NUMERIC affinity: JSON text, or a number SQLite converted on insert.
    fn json(&self, col: &str) -> Result<serde_json::Value, RepoError> {
        let raw = self
            .try_get_raw(col)
            .map_err(|err| invalid(format_args!("column {col}"), err))?;
        let kind = raw.type_info().name().to_owned();
        match kind.as_str() {
            "INTEGER" => Ok(serde_json::Value::from(get::<i64>(self, col)?)),
            "REAL" => Ok(serde_json::Number::from_f64(get::<f64>(self, col)?)
                .map_or(serde_json::Value::Null, serde_json::Value::Number)),
            "TEXT" | "BLOB" => parse_json(&get::<String>(self, col)?, format_args!("column {col}")),
            other => Err(invalid(
                format_args!("column {col}"),
                format_args!("{other} is not JSON"),
            )),
        }
    }
}

const USER_BY_UUID: &str = "SELECT uuid, username, password_hash, role, must_change_password, \
     tokens_valid_from FROM users WHERE uuid = ?";

const ALL_USERS: &str = "SELECT uuid, username, '' AS password_hash, role, \
     must_change_password, tokens_valid_from FROM users LIMIT ?";

const IS_TOKEN_REVOKED: &str =
    "SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = ?) AS revoked";

const ATTACKER_BY_UUID: &str = "SELECT uuid, ip, identity_id FROM attackers WHERE uuid = ?";

const ATTACKERS_OF_IDENTITY: &str = "SELECT uuid FROM attackers WHERE identity_id = ?";

/// Latest observation per primitive as a skip scan over DECNET's index
/// `ix_observations_attacker_primitive_ts (attacker_uuid, primitive, ts)`:
/// the recursive CTE walks the attacker's distinct primitives one index
/// probe each (`primitive > previous ... LIMIT 1`), then per primitive one
/// probe finds `MAX(ts)` and one reads the rows tied on it, of which the
/// highest `id` (byte order) wins. Rows of the attacker that are not a
/// primitive's latest are never read, so the cost grows with the number of
/// primitives, not of observations (DECNET's own query, a `GROUP BY
/// primitive` joined back on `(primitive, ts)`, reads every index entry of
/// the attacker; see docs/BENCHMARKS.md).
const LATEST_PER_PRIMITIVE: &str = "\
WITH RECURSIVE prim(p) AS (
    SELECT (SELECT primitive FROM observations WHERE attacker_uuid = ?1
            ORDER BY primitive LIMIT 1)
    UNION ALL
    SELECT (SELECT primitive FROM observations WHERE attacker_uuid = ?1 AND primitive > prim.p
            ORDER BY primitive LIMIT 1)
    FROM prim WHERE prim.p IS NOT NULL
)
SELECT o.id, o.identity_ref, o.primitive, o.value, o.confidence, o.window_start_ts,
       o.window_end_ts, o.source, o.evidence_ref, o.envelope_v, o.ts, o.attacker_uuid
FROM prim
JOIN observations AS o ON o.rowid = (
    SELECT i.rowid FROM observations AS i
    WHERE i.attacker_uuid = ?1 AND i.primitive = prim.p
      AND i.ts = (SELECT MAX(m.ts) FROM observations AS m
                  WHERE m.attacker_uuid = ?1 AND m.primitive = prim.p)
    ORDER BY i.id DESC LIMIT 1)";

const RECENT_IDENTITIES: &str = "SELECT uuid, schema_version, campaign_id, first_seen_at, \
     last_seen_at, created_at, updated_at, confidence, observation_count, ja3_hashes, \
     hassh_hashes, ja4h_hashes, ja4_quic_hashes, http_versions_seen, tls_cert_sha256, \
     ipv6_link_local_iids, payload_simhashes, c2_endpoints, kd_digraph_simhash, \
     merged_into_uuid, notes FROM attacker_identities WHERE merged_into_uuid IS NULL \
     ORDER BY updated_at DESC, uuid DESC LIMIT ?";

const RECENT_CAMPAIGNS: &str = "SELECT uuid, schema_version, first_seen_at, last_seen_at, \
     created_at, updated_at, confidence, identity_count, ja3_hashes, hassh_hashes, \
     tls_cert_sha256, payload_simhashes, c2_endpoints, merged_into_uuid, notes FROM campaigns \
     WHERE merged_into_uuid IS NULL ORDER BY updated_at DESC, uuid DESC LIMIT ?";

const RECENT_ORCHESTRATOR_EVENTS: &str = "SELECT uuid, ts, kind, protocol, action, \
     src_decky_uuid, dst_decky_uuid, success, payload FROM orchestrator_events \
     ORDER BY ts DESC, uuid DESC LIMIT ?";

const TOPOLOGY_STATUS: &str = "SELECT status FROM topologies WHERE id = ?";

const IN_FLIGHT_MUTATIONS: &str = "SELECT id, topology_id, op, payload, state, requested_at, \
     applied_at, reason FROM topology_mutations \
     WHERE topology_id = ? AND state IN ('pending', 'applying') \
     ORDER BY CASE WHEN state = 'pending' THEN 0 ELSE 1 END, requested_at DESC, id DESC";

const MAX_LOG_ID: &str = "SELECT COALESCE(MAX(id), 0) AS max_id FROM logs";

const LOG_COLUMNS: &str = "id, timestamp, decky, service, event_type, attacker_ip, raw_line, \
     fields, msg, trace_id, span_id";

const LOG_STATS: &str = "SELECT (SELECT COUNT(*) FROM logs) AS total_logs, \
     (SELECT COUNT(DISTINCT attacker_ip) FROM logs) AS unique_attackers, \
     (SELECT COUNT(*) FROM topology_deckies WHERE state = 'running') AS running_topology_deckies, \
     (SELECT COUNT(*) FROM topology_deckies) AS topology_deckies";

impl SqlxEngine for SqliteRepository {
    const QUERIES: Queries = Queries {
        dialect: Dialect::Sqlite,
        user_by_uuid: USER_BY_UUID,
        is_token_revoked: IS_TOKEN_REVOKED,
        all_users: ALL_USERS,
        attacker_by_uuid: ATTACKER_BY_UUID,
        attackers_of_identity: ATTACKERS_OF_IDENTITY,
        latest_per_primitive: LATEST_PER_PRIMITIVE,
        latest_per_primitive_binds: 1,
        recent_identities: RECENT_IDENTITIES,
        recent_campaigns: RECENT_CAMPAIGNS,
        recent_orchestrator_events: RECENT_ORCHESTRATOR_EVENTS,
        topology_status: TOPOLOGY_STATUS,
        in_flight_mutations: IN_FLIGHT_MUTATIONS,
        topology_begin: None,
        max_log_id: MAX_LOG_ID,
        log_columns: LOG_COLUMNS,
        log_stats: LOG_STATS,
        histogram_bucket: |width| {
            format!("datetime((strftime('%s', timestamp) / {width}) * {width}, 'unixepoch')")
        },
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_decnets_url_forms() {
        let check = |url: &str, path: &str| {
            assert_eq!(path_from_url(url).ok(), Some(PathBuf::from(path)), "{url}");
        };
        check(
            "sqlite+aiosqlite:////opt/decnet/decnet.db",
            "/opt/decnet/decnet.db",
        );
        check(
            "sqlite:////opt/decnet/decnet.db?timeout=30",
            "/opt/decnet/decnet.db",
        );
        check("sqlite:///decnet.db", "decnet.db");
        check("sqlite:///data/decnet.db", "data/decnet.db");
        check("SQLite+pysqlite:///x.db", "x.db");
        check("sqlite:decnet.db", "decnet.db");
        check("sqlite:/abs/decnet.db", "/abs/decnet.db");
        check("sqlite://decnet.db", "decnet.db");
        check("sqlite:///file:decnet.db?mode=ro&uri=true", "decnet.db");
        check("sqlite:///a%20b.db", "a%20b.db");
        for bad in [
            "sqlite:",
            "sqlite://",
            "sqlite:///",
            "sqlite+aiosqlite:///:memory:",
            "sqlite::memory:",
            "mysql://h/db",
            "decnet.db",
        ] {
            let err = path_from_url(bad);
            assert!(matches!(err, Err(RepoError::Config(_))), "{bad}: {err:?}");
        }
    }

    #[test]
    fn connect_needs_no_runtime_and_checks_its_config() {
        let repo = SqliteRepository::connect(SqliteConfig::new("/nonexistent/decnet.db"));
        assert_eq!(
            repo.map(|r| r.path().to_path_buf()).ok(),
            Some(PathBuf::from("/nonexistent/decnet.db"))
        );
        let zero = SqliteRepository::connect(SqliteConfig {
            pool_size: 0,
            ..SqliteConfig::new("x.db")
        });
        assert!(matches!(zero, Err(RepoError::Config(_))));
        assert!(matches!(
            SqliteRepository::connect(SqliteConfig::new("")),
            Err(RepoError::Config(_))
        ));
    }
}
