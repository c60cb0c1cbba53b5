//! The PostgreSQL backend: deadpool-postgres over tokio-postgres.
//!
//! - [`PgConfig`] says where the database is and how long anything may take.
//! - [`PgRepository::connect`] builds the pool without touching the network, so
//!   a service starts (and answers 503) while its database is down.
//! - [`PgRepository::migrate`] applies the embedded [`MIGRATIONS`].
//!
//! Every query is a prepared statement cached per connection
//! (`prepare_cached`). Errors map onto [`RepoError`] by cause: anything that
//! means "the database could not be reached in time" (pool wait or connect
//! timeout, refused or closed connection, I/O error, server shutting down,
//! too many connections, statement timeout) is [`RepoError::Unavailable`];
//! an error the server raised for the SQL itself is [`RepoError::Query`];
//! a constraint the caller broke (unknown attacker, username taken, reused
//! observation id) is [`RepoError::InvalidData`], as in the memory backend.
//!
//! `/stream` search semantics: SQLite's (DECNET's default engine, and the
//! memory backend's), written out so that PostgreSQL answers as they do:
//! `LIKE` folds ASCII case only and has no escape character, `=` is byte
//! equality, a JSON-key term only matches a JSON string, the time bounds
//! compare with the timestamp as SQLite stores it
//! (`YYYY-MM-DD HH:MM:SS.ffffff`, text order), a purely numeric bound keeps
//! every row as a start and none as an end, and histogram buckets read the
//! time at millisecond precision. See the crate's `sql` module.
//!
//! The topology snapshot is one statement (one snapshot of the database).
//! [`PgRepository::migrate`] refuses a database that has DECNET's
//! `alembic_version` table ([`RepoError::DecnetOwnsSchema`]).
//!
//! Differences from the memory backend, by nature of PostgreSQL:
//! - timestamps keep microseconds (the memory backend keeps nanoseconds);
//! - `jsonb` refuses strings containing `\u0000`, and does not keep object key
//!   order (`serde_json::Value` equality ignores it anyway);
//! - `timestamp without time zone` columns (older DECNET databases) are read
//!   and written as UTC, whatever the session `TimeZone`;
//! - the `timestamp` columns of 0002 carry no zone, so a [`crate::DbTime`]
//!   written aware (a mutation's `applied_at`) reads back naive (rendered
//!   without `Z`), as on MySQL.

use std::error::Error as _;
use std::fmt;
use std::time::{Duration, SystemTime};

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use futures::FutureExt;

use crate::sql::{Dialect, conditions};
use crate::traits::RepoFuture;
use crate::{
    AccountReader, Attacker, AttackerReader, CampaignReader, CampaignRow, DbTime, Health, HexBytes,
    HistogramBucket, IdentityReader, IdentityRow, LogFilter, LogReader, LogRow, LogStats,
    MutationRow, Observation, OrchestratorEventRow, OrchestratorReader, RepoError,
    RepositoryWriter, TopologyReader, TopologySnapshot, User,
};

/// Embedded SQL migrations, in order: (version, name, sql).
///
/// [`PgRepository::migrate`] applies the ones a database has not recorded in
/// `decnet_events_schema_version`. Every statement is `IF NOT EXISTS`, so an
/// existing DECNET database keeps its tables, extra columns and rows.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (2, "streams", include_str!("../migrations/0002_streams.sql")),
];

/// First key of the advisory lock `migrate` holds; the second is a hash of the
/// schema, so migrations of different schemas do not wait for each other.
/// (ASCII "DEVM".)
const MIGRATION_LOCK_CLASS: i32 = 0x4445_564d;

/// Connection settings for [`PgRepository`].
///
/// Start from [`PgConfig::new`] and override fields with struct update syntax:
///
/// ```
/// # use decnet_repo::PgConfig;
/// # use std::time::Duration;
/// let config = PgConfig {
///     pool_size: 4,
///     schema: Some("t_123_abc".into()),
///     ..PgConfig::new("postgres://postgres@127.0.0.1:5432/postgres")
/// };
/// assert_eq!(config.wait_timeout, Duration::from_secs(3));
/// ```
///
/// `Debug` prints the URL with its password masked.
#[derive(Clone)]
pub struct PgConfig {
    /// A libpq-style URL (`postgres://user:pass@host:port/db?...`) or
    /// key-value string (`host=... user=...`). Options given in it (for
    /// example `options=-c TimeZone=UTC`) are kept; the settings below are
    /// added to them.
    pub url: String,
    /// Maximum pooled connections (at least 1). Default 16.
    pub pool_size: usize,
    /// Time limit for opening one connection: the TCP connect and the whole
    /// start-up handshake. Default 3 s.
    pub connect_timeout: Duration,
    /// How long a call waits for a pooled connection when all `pool_size` are
    /// busy, before failing with [`RepoError::Unavailable`]. Default 3 s.
    pub wait_timeout: Duration,
    /// Server-side `statement_timeout` set on every connection; `None` leaves
    /// the server's setting. When set, every repository call also has an
    /// overall deadline of `wait_timeout + connect_timeout +
    /// statement_timeout + 1 s` (a call stuck on a dead network fails with
    /// [`RepoError::Unavailable`] instead of hanging). Migrations are exempt.
    /// Default 5 s.
    pub statement_timeout: Option<Duration>,
    /// Schema to use: sets `search_path` to just this schema on each new
    /// connection. `None` keeps the server's `search_path` (normally
    /// `public`). [`PgRepository::migrate`] creates it when missing. Tests
    /// use it for isolation (see `test_support::pg::fresh_schema`).
    pub schema: Option<String>,
}

impl PgConfig {
    /// Settings for `url` with the defaults: 16 connections, 3 s connect and
    /// wait timeouts, 5 s statement timeout, the server's `search_path`.
    pub fn new(url: impl Into<String>) -> Self {
        PgConfig {
            url: url.into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(3),
            wait_timeout: Duration::from_secs(3),
            statement_timeout: Some(Duration::from_secs(5)),
            schema: None,
        }
    }

    /// The same settings with `search_path` set to `schema`.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The longest a repository call may take before it is abandoned, if
    /// bounded (see [`PgConfig::statement_timeout`]).
    fn call_deadline(&self) -> Option<Duration> {
        self.statement_timeout.map(|statement| {
            self.wait_timeout + self.connect_timeout + statement + Duration::from_secs(1)
        })
    }
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("wait_timeout", &self.wait_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("schema", &self.schema)
            .finish()
    }
}

/// The URL with any password replaced by `***`, for logs.
fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        if let Some((userinfo, hosts)) = authority.rsplit_once('@')
            && let Some((user, _password)) = userinfo.split_once(':')
        {
            return format!("{scheme}://{user}:***@{hosts}{tail}");
        }
        if !tail.contains("password=") {
            return url.to_owned();
        }
    }
    // Key-value form, or a URL with `?password=`: mask every password value.
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(at) = rest.find("password=") {
        let value_start = at + "password=".len();
        out.push_str(&rest[..value_start]);
        out.push_str("***");
        let value = &rest[value_start..];
        let value_end = value.find([' ', '&']).unwrap_or(value.len());
        rest = &value[value_end..];
    }
    out.push_str(rest);
    out
}

/// A configuration that cannot work (bad URL, empty pool, empty schema name).
#[derive(Debug, thiserror::Error)]
#[error("invalid postgres configuration: {0}")]
struct ConfigError(String);

/// A call that did not finish within [`PgConfig::call_deadline`].
#[derive(Debug, thiserror::Error)]
#[error("postgres call exceeded its {0:?} deadline")]
struct DeadlineExceeded(Duration);

/// A pooled connection that is no longer usable.
#[derive(Debug, thiserror::Error)]
#[error("postgres connection already discarded")]
struct Discarded;

/// A migration step that failed, with which one.
#[derive(Debug, thiserror::Error)]
#[error("migration {version} ({name}): {source}")]
struct MigrationStep {
    version: i32,
    name: &'static str,
    source: tokio_postgres::Error,
}

/// PostgreSQL repository: a pool of connections plus the settings it was built
/// from. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct PgRepository {
    pool: Pool,
    schema: Option<String>,
    deadline: Option<Duration>,
}

impl fmt::Debug for PgRepository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PgRepository")
            .field("schema", &self.schema)
            .field("pool_size", &status.max_size)
            .field("pool_open", &status.size)
            .field("pool_idle", &status.available)
            .finish()
    }
}

impl PgRepository {
    /// Build the pool. No connection is opened here: connections are made on
    /// first use, so this succeeds while the database is down, and calls then
    /// fail with [`RepoError::Unavailable`] within the configured timeouts.
    ///
    /// # Errors
    ///
    /// [`RepoError::Config`] when the URL does not parse, `pool_size` is 0 or
    /// `schema` is `Some("")`.
    pub fn connect(config: PgConfig) -> Result<Self, RepoError> {
        let invalid = |message: String| RepoError::Config(Box::new(ConfigError(message)));
        if config.pool_size == 0 {
            return Err(invalid("pool_size must be at least 1".into()));
        }
        if config.schema.as_deref() == Some("") {
            return Err(invalid("schema must not be empty".into()));
        }
        let (url, tls) = crate::pg_tls::TlsSettings::take_from_url(&config.url)
            .map_err(|err| invalid(format!("database url: {err}")))?;
        let mut pg: tokio_postgres::Config = url
            .parse()
            .map_err(|err| invalid(format!("database url: {err}")))?;
        // A key-value string carries its own sslmode, which tokio-postgres read.
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            pg.ssl_mode(tls.mode);
        }
        let tls = crate::pg_tls::MakeRustls::new(tls.client_config().map_err(invalid)?);
        pg.connect_timeout(config.connect_timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("decnet-events");
        }
        let options = startup_options(
            pg.get_options(),
            config.schema.as_deref(),
            config.statement_timeout,
        );
        if let Some(options) = options {
            pg.options(options);
        }

        let manager = Manager::from_config(
            pg,
            tls,
            ManagerConfig {
                // `Fast` only checks that the connection is open: no round trip
                // per checkout. A connection that broke while idle fails its
                // next call with `Unavailable` and is then dropped.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.wait_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|err| invalid(format!("pool: {err}")))?;
        Ok(PgRepository {
            pool,
            deadline: config.call_deadline(),
            schema: config.schema,
        })
    }

    /// Apply the embedded [`MIGRATIONS`] this database has not recorded yet,
    /// and return the versions applied (empty when it was up to date).
    ///
    /// Runs in one transaction, under a `pg_advisory_xact_lock` per schema,
    /// so two instances starting at once do not race: the second waits, then
    /// finds nothing to do. Creates the configured schema when missing, and
    /// the `decnet_events_schema_version` table that records what was
    /// applied. Statement timeout is lifted for the transaction (building an
    /// index on a large existing table may take long).
    ///
    /// # Errors
    ///
    /// [`RepoError::DecnetOwnsSchema`] when the schema has DECNET's
    /// `alembic_version` table (nothing is changed);
    /// [`RepoError::Unavailable`] when the database cannot be reached;
    /// [`RepoError::Migration`] when a statement fails (nothing is applied
    /// then: the transaction rolls back).
    pub async fn migrate(&self) -> Result<Vec<i32>, RepoError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let migration_error = |err: tokio_postgres::Error| {
            if is_unavailable(&err) {
                RepoError::Unavailable(Box::new(err))
            } else {
                RepoError::Migration(Box::new(err))
            }
        };
        let tx = client.transaction().await.map_err(migration_error)?;
        tx.batch_execute("SET LOCAL statement_timeout = 0")
            .await
            .map_err(migration_error)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext(coalesce($2::text, current_schema(), '')))",
            &[&MIGRATION_LOCK_CLASS, &self.schema],
        )
        .await
        .map_err(migration_error)?;
        if let Some(schema) = &self.schema {
            tx.batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                quote_ident(schema)
            ))
            .await
            .map_err(migration_error)?;
        }
        // DECNET's Alembic owns a database with its version table: refuse
        // before creating anything.
        let decnet_owned: bool = tx
            .query_one("SELECT to_regclass('alembic_version') IS NOT NULL", &[])
            .await
            .map_err(migration_error)?
            .try_get(0)
            .map_err(migration_error)?;
        if decnet_owned {
            return Err(RepoError::DecnetOwnsSchema);
        }
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS decnet_events_schema_version (
                 version int PRIMARY KEY,
                 name text,
                 applied_at timestamptz DEFAULT now()
             )",
        )
        .await
        .map_err(migration_error)?;
        let done: Vec<i32> = tx
            .query("SELECT version FROM decnet_events_schema_version", &[])
            .await
            .map_err(migration_error)?
            .iter()
            .map(|row| row.try_get::<_, i32>(0))
            .collect::<Result<_, _>>()
            .map_err(migration_error)?;

        let mut applied = Vec::new();
        for &(version, name, sql) in MIGRATIONS {
            if done.contains(&version) {
                continue;
            }
            let step = |source| {
                RepoError::Migration(Box::new(MigrationStep {
                    version,
                    name,
                    source,
                }))
            };
            tx.batch_execute(sql).await.map_err(step)?;
            tx.execute(
                "INSERT INTO decnet_events_schema_version (version, name) VALUES ($1, $2)",
                &[&version, &name],
            )
            .await
            .map_err(step)?;
            tracing::info!(version, name, "applied migration");
            applied.push(version);
        }
        tx.commit().await.map_err(migration_error)?;
        Ok(applied)
    }

    /// Check that the schema has every table and column the service reads
    /// ([`crate::REQUIRED_COLUMNS`]), e.g. after [`PgRepository::migrate`]
    /// or on a database migrated by another version.
    ///
    /// # Errors
    ///
    /// [`RepoError::Schema`] naming each missing table and column;
    /// [`RepoError::Unavailable`] when the database cannot be reached.
    pub async fn check_schema(&self) -> Result<(), RepoError> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let rows = conn
                .query(
                    "SELECT table_name::text, column_name::text FROM information_schema.columns \
                     WHERE table_schema = current_schema()",
                    &[],
                )
                .await?;
            let mut tables: std::collections::HashMap<String, Vec<String>> = Default::default();
            for row in &rows {
                let table: String = column(row, "table_name")?;
                let name: String = column(row, "column_name")?;
                tables.entry(table).or_default().push(name);
            }
            crate::schema::compare(|table| tables.get(table).cloned()).map_err(RepoError::Schema)
        })
        .await
    }

    /// Check out a connection, wrapped so that it is discarded rather than
    /// reused if the call is abandoned mid-query or the connection failed.
    async fn conn(&self) -> Result<Conn, RepoError> {
        let object = self.pool.get().await.map_err(pool_error)?;
        Ok(Conn {
            object: Some(object),
            discard: false,
        })
    }

    /// Run one repository call under the overall deadline, if any.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, RepoError>>,
    ) -> Result<T, RepoError> {
        match self.deadline {
            None => call.await,
            Some(deadline) => match tokio::time::timeout(deadline, call).await {
                Ok(res) => res,
                Err(_elapsed) => Err(RepoError::Unavailable(Box::new(DeadlineExceeded(deadline)))),
            },
        }
    }
}

/// The `options` start-up parameter: what the URL had, plus `search_path` and
/// `statement_timeout`. Backslash-escaped as the server splits it on spaces.
fn startup_options(
    existing: Option<&str>,
    schema: Option<&str>,
    statement_timeout: Option<Duration>,
) -> Option<String> {
    let mut settings = Vec::new();
    if let Some(schema) = schema {
        settings.push(format!("search_path={}", quote_ident(schema)));
    }
    if let Some(timeout) = statement_timeout {
        // 0 would mean "no timeout": round a sub-millisecond value up.
        let millis = timeout.as_millis().max(1);
        settings.push(format!("statement_timeout={millis}"));
    }
    if settings.is_empty() {
        return None;
    }
    let mut options = existing.unwrap_or_default().to_owned();
    for setting in settings {
        if !options.is_empty() {
            options.push(' ');
        }
        options.push_str("-c ");
        for c in setting.chars() {
            if c == '\\' || c.is_whitespace() {
                options.push('\\');
            }
            options.push(c);
        }
    }
    Some(options)
}

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Any failure to get a pooled connection: wait/create/recycle timeout,
/// connect error, closed pool. All mean "not reachable now".
fn pool_error(err: PoolError) -> RepoError {
    RepoError::Unavailable(Box::new(err))
}

/// SQLSTATEs that mean "cannot serve now" rather than "bad query": class 08
/// (connection exception), class 53 (insufficient resources, e.g. too many
/// connections), 57P01-57P03 (shutdown, crash, starting up), 57014 (statement
/// timeout), 55P03 (lock timeout).
fn unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P0")
        || code == "57014"
        || code == "55P03"
}

/// Whether a tokio-postgres error means the database could not be reached.
fn is_unavailable(err: &tokio_postgres::Error) -> bool {
    if let Some(code) = err.code() {
        return unavailable_sqlstate(code.code());
    }
    if err.is_closed() {
        return true;
    }
    let mut source = err.source();
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Map a tokio-postgres error: unreachable → `Unavailable`, else `Query`.
fn query_error(err: tokio_postgres::Error) -> RepoError {
    if is_unavailable(&err) {
        RepoError::Unavailable(Box::new(err))
    } else {
        RepoError::Query(Box::new(err))
    }
}

/// Whether `err` is the server reporting a unique (23505) or foreign key
/// (23503) violation: the caller's data broke a constraint.
fn constraint_violation(err: &RepoError) -> Option<String> {
    let RepoError::Query(source) = err else {
        return None;
    };
    let db = source
        .downcast_ref::<tokio_postgres::Error>()?
        .as_db_error()?;
    match db.code().code() {
        "23505" | "23503" => Some(db.detail().unwrap_or(db.message()).to_owned()),
        _ => None,
    }
}

/// A checked-out connection. Dropped while a query is in flight (the call was
/// cancelled or hit its deadline), or after the connection failed, it is
/// removed from the pool instead of being handed to the next caller.
struct Conn {
    object: Option<Object>,
    discard: bool,
}

impl Conn {
    async fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, RepoError> {
        let Some(client) = self.object.as_ref() else {
            return Err(RepoError::Unavailable(Box::new(Discarded)));
        };
        self.discard = true;
        let res = async {
            let statement = client.prepare_cached(sql).await?;
            client.query(&statement, params).await
        }
        .await;
        match res {
            Ok(rows) => {
                self.discard = false;
                Ok(rows)
            }
            Err(err) => {
                let err = query_error(err);
                self.discard = err.is_unavailable();
                Err(err)
            }
        }
    }

    async fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, RepoError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// [`Conn::query`] for SQL built per call (the `/stream` filters): an
    /// unnamed statement, so the per-connection cache does not grow with
    /// every distinct filter.
    async fn query_uncached(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, RepoError> {
        let Some(client) = self.object.as_ref() else {
            return Err(RepoError::Unavailable(Box::new(Discarded)));
        };
        self.discard = true;
        match client.query(sql, params).await {
            Ok(rows) => {
                self.discard = false;
                Ok(rows)
            }
            Err(err) => {
                let err = query_error(err);
                self.discard = err.is_unavailable();
                Err(err)
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.discard
            && let Some(object) = self.object.take()
        {
            // Detach from the pool; dropping the client closes the connection.
            drop(Object::take(object));
        }
    }
}

/// One column of a row, or `InvalidData` naming the column.
fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    name: &str,
) -> Result<T, RepoError> {
    row.try_get(name)
        .map_err(|err| RepoError::InvalidData(format!("column {name}: {err}")))
}

fn attacker_from_row(row: &Row) -> Result<Attacker, RepoError> {
    Ok(Attacker {
        uuid: column(row, "uuid")?,
        ip: column(row, "ip")?,
        identity_id: column(row, "identity_id")?,
    })
}

fn observation_from_row(row: &Row) -> Result<Observation, RepoError> {
    Ok(Observation {
        id: column(row, "id")?,
        identity_ref: column(row, "identity_ref")?,
        primitive: column(row, "primitive")?,
        value: column(row, "value")?,
        confidence: column(row, "confidence")?,
        window_start_ts: column(row, "window_start_ts")?,
        window_end_ts: column(row, "window_end_ts")?,
        source: column(row, "source")?,
        evidence_ref: column(row, "evidence_ref")?,
        envelope_v: column(row, "envelope_v")?,
        ts: column(row, "ts")?,
        attacker_uuid: column(row, "attacker_uuid")?,
    })
}

fn user_from_row(row: &Row) -> Result<User, RepoError> {
    Ok(User {
        uuid: column(row, "uuid")?,
        username: column(row, "username")?,
        password_hash: column(row, "password_hash")?,
        role: column(row, "role")?,
        must_change_password: column(row, "must_change_password")?,
        // SystemTime reads both timestamptz and timestamp; the latter's wall
        // clock is taken as UTC (binary format, independent of TimeZone).
        tokens_valid_from: column(row, "tokens_valid_from")?,
    })
}

const ATTACKER_BY_UUID: &str = "SELECT uuid, ip, identity_id FROM attackers WHERE uuid = $1";

/// Latest observation per primitive as a skip scan over the
/// `(attacker_uuid, primitive, ts)` index, instead of `DISTINCT ON`, which
/// reads and sorts every row of the attacker (about 40 ms at 10,000 rows; see
/// docs/BENCHMARKS.md).
///
/// The recursive CTE walks the index backwards, one probe per primitive:
/// below the previous primitive, `ORDER BY primitive DESC, ts DESC, id DESC
/// LIMIT 1` is the next primitive's latest row. The index yields rows already
/// ordered by `(primitive, ts)`, so the planner only sorts the rows tied on
/// the highest `ts` (an incremental sort) to pick the highest `id` (byte
/// order, `COLLATE "C"`, as in the memory backend). The result is sorted by
/// primitive in byte order, as [`crate::latest_per_primitive`] sorts. One
/// probe per primitive whatever the number of rows, and no index beyond
/// DESIGN.md's. Columns are listed, not carried as a whole-row value, so extra
/// columns of a DECNET table are never read.
const LATEST_PER_PRIMITIVE: &str = r#"
WITH RECURSIVE latest (id, identity_ref, primitive, value, confidence,
                       window_start_ts, window_end_ts, source, evidence_ref,
                       envelope_v, ts, attacker_uuid) AS (
    (SELECT o.id, o.identity_ref, o.primitive, o.value, o.confidence,
            o.window_start_ts, o.window_end_ts, o.source, o.evidence_ref,
            o.envelope_v, o.ts, o.attacker_uuid
     FROM observations o
     WHERE o.attacker_uuid = $1
     ORDER BY o.primitive DESC, o.ts DESC, o.id COLLATE "C" DESC
     LIMIT 1)
  UNION ALL
    SELECT next.*
    FROM latest l
    CROSS JOIN LATERAL (
        SELECT o.id, o.identity_ref, o.primitive, o.value, o.confidence,
               o.window_start_ts, o.window_end_ts, o.source, o.evidence_ref,
               o.envelope_v, o.ts, o.attacker_uuid
        FROM observations o
        WHERE o.attacker_uuid = $1 AND o.primitive < l.primitive
        ORDER BY o.primitive DESC, o.ts DESC, o.id COLLATE "C" DESC
        LIMIT 1
    ) next
)
SELECT * FROM latest ORDER BY primitive COLLATE "C"
"#;

const ATTACKERS_OF_IDENTITY: &str =
    "SELECT uuid FROM attackers WHERE identity_id = $1 ORDER BY uuid COLLATE \"C\"";

const USER_BY_UUID: &str = "SELECT uuid, username, password_hash, role, must_change_password, \
     tokens_valid_from FROM users WHERE uuid = $1";

const IS_TOKEN_REVOKED: &str = "SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = $1)";

const ALL_USERS: &str = "SELECT uuid, username, ''::text AS password_hash, role, \
     must_change_password, tokens_valid_from FROM users LIMIT $1";

const REVOKED_JTIS: &str = "SELECT jti FROM revoked_tokens LIMIT $1";

const UPSERT_ATTACKER: &str = "INSERT INTO attackers (uuid, ip, identity_id) VALUES ($1, $2, $3) \
     ON CONFLICT (uuid) DO UPDATE SET ip = EXCLUDED.ip, identity_id = EXCLUDED.identity_id";

const UPSERT_OBSERVATION: &str = "INSERT INTO observations (id, identity_ref, primitive, value, \
     confidence, window_start_ts, window_end_ts, source, evidence_ref, envelope_v, ts, \
     attacker_uuid) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (evidence_ref, primitive) DO UPDATE SET id = EXCLUDED.id, \
     identity_ref = EXCLUDED.identity_ref, value = EXCLUDED.value, \
     confidence = EXCLUDED.confidence, window_start_ts = EXCLUDED.window_start_ts, \
     window_end_ts = EXCLUDED.window_end_ts, source = EXCLUDED.source, \
     envelope_v = EXCLUDED.envelope_v, ts = EXCLUDED.ts, attacker_uuid = EXCLUDED.attacker_uuid";

const CREATE_USER: &str = "INSERT INTO users (uuid, username, password_hash, role, \
     must_change_password, tokens_valid_from) VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (uuid) DO UPDATE SET username = EXCLUDED.username, \
     password_hash = EXCLUDED.password_hash, role = EXCLUDED.role, \
     must_change_password = EXCLUDED.must_change_password, \
     tokens_valid_from = EXCLUDED.tokens_valid_from";

const DELETE_USER: &str = "DELETE FROM users WHERE uuid = $1";

const SET_ATTACKER_IDENTITY: &str =
    "UPDATE attackers SET identity_id = $2 WHERE uuid = $1 RETURNING uuid";

const REVOKE_TOKEN: &str = "INSERT INTO revoked_tokens (jti, user_uuid, expires_at) \
     VALUES ($1, $2, $3) ON CONFLICT (jti) DO NOTHING";

/// A write that broke a unique or foreign-key constraint becomes
/// `InvalidData` (with the server's detail), as in the memory backend.
fn constraint_to_invalid(err: RepoError, what: &str) -> RepoError {
    match constraint_violation(&err) {
        Some(detail) => RepoError::InvalidData(format!("{what}: {detail}")),
        None => err,
    }
}

impl AccountReader for PgRepository {
    fn user_by_uuid<'a>(&'a self, uuid: &'a str) -> RepoFuture<'a, Option<User>> {
        self.bounded(async move {
            let mut conn = self.conn().await?;
            conn.query_opt(USER_BY_UUID, &[&uuid])
                .await?
                .map(|row| user_from_row(&row))
                .transpose()
        })
        .boxed()
    }

    fn is_token_revoked<'a>(&'a self, jti: &'a str) -> RepoFuture<'a, bool> {
        self.bounded(async move {
            let mut conn = self.conn().await?;
            match conn.query_opt(IS_TOKEN_REVOKED, &[&jti]).await? {
                Some(row) => column(&row, "exists"),
                None => Err(RepoError::InvalidData("EXISTS returned no row".into())),
            }
        })
        .boxed()
    }

    fn all_users(&self, limit: u32) -> RepoFuture<'_, Option<Vec<User>>> {
        self.bounded(async move {
            let mut conn = self.conn().await?;
            conn.query(ALL_USERS, &[&i64::from(limit)])
                .await?
                .iter()
                .map(user_from_row)
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        })
        .boxed()
    }

    fn revoked_jtis(&self, limit: u32) -> RepoFuture<'_, Option<Vec<String>>> {
        self.bounded(async move {
            let mut conn = self.conn().await?;
            conn.query(REVOKED_JTIS, &[&i64::from(limit)])
                .await?
                .iter()
                .map(|row| column(row, "jti"))
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        })
        .boxed()
    }
}

impl AttackerReader for PgRepository {
    fn attacker_by_uuid<'a>(&'a self, uuid: &'a str) -> RepoFuture<'a, Option<Attacker>> {
        self.bounded(async move {
            let mut conn = self.conn().await?;
            conn.query_opt(ATTACKER_BY_UUID, &[&uuid])
                .await?
                .map(|row| attacker_from_row(&row))
                .transpose()
        })
        .boxed()
    }

    fn latest_observation_per_primitive<'a>(
        &'a self,
        attacker_uuid: &'a str,
    ) -> RepoFuture<'a, Vec<Observation>> {
        self.bounded(async move {
            let mut conn = self.conn().await?;
            conn.query(LATEST_PER_PRIMITIVE, &[&attacker_uuid])
                .await?
                .iter()
                .map(observation_from_row)
                .collect()
        })
        .boxed()
    }

    fn attackers_of_identity<'a>(&'a self, identity_uuid: &'a str) -> RepoFuture<'a, Vec<String>> {
        self.bounded(async move {
            let mut conn = self.conn().await?;
            conn.query(ATTACKERS_OF_IDENTITY, &[&identity_uuid])
                .await?
                .iter()
                .map(|row| column(row, "uuid"))
                .collect()
        })
        .boxed()
    }
}

/// A `timestamp` (or `timestamptz`) column as a naive [`DbTime`] (UTC).
fn time_column(row: &Row, name: &str) -> Result<DbTime, RepoError> {
    let at: SystemTime = column(row, name)?;
    DbTime::from_system_time(at)
        .ok_or_else(|| RepoError::InvalidData(format!("column {name}: out of range")))
}

/// A nullable `timestamp` column.
fn opt_time_column(row: &Row, name: &str) -> Result<Option<DbTime>, RepoError> {
    let at: Option<SystemTime> = column(row, name)?;
    at.map(|at| {
        DbTime::from_system_time(at)
            .ok_or_else(|| RepoError::InvalidData(format!("column {name}: out of range")))
    })
    .transpose()
}

/// An `integer` column as `i64`.
fn int_column(row: &Row, name: &str) -> Result<i64, RepoError> {
    column::<i32>(row, name).map(i64::from)
}

/// An `i64` of a row type for an `integer` column.
fn to_int(value: i64, what: &str) -> Result<i32, RepoError> {
    i32::try_from(value)
        .map_err(|_| RepoError::InvalidData(format!("{what} {value} exceeds integer")))
}

fn identity_from_row(row: &Row) -> Result<IdentityRow, RepoError> {
    Ok(IdentityRow {
        uuid: column(row, "uuid")?,
        schema_version: int_column(row, "schema_version")?,
        campaign_id: column(row, "campaign_id")?,
        first_seen_at: opt_time_column(row, "first_seen_at")?,
        last_seen_at: opt_time_column(row, "last_seen_at")?,
        created_at: time_column(row, "created_at")?,
        updated_at: time_column(row, "updated_at")?,
        confidence: column(row, "confidence")?,
        observation_count: int_column(row, "observation_count")?,
        ja3_hashes: column(row, "ja3_hashes")?,
        hassh_hashes: column(row, "hassh_hashes")?,
        ja4h_hashes: column(row, "ja4h_hashes")?,
        ja4_quic_hashes: column(row, "ja4_quic_hashes")?,
        http_versions_seen: column(row, "http_versions_seen")?,
        tls_cert_sha256: column(row, "tls_cert_sha256")?,
        ipv6_link_local_iids: column(row, "ipv6_link_local_iids")?,
        payload_simhashes: column(row, "payload_simhashes")?,
        c2_endpoints: column(row, "c2_endpoints")?,
        kd_digraph_simhash: column::<Option<Vec<u8>>>(row, "kd_digraph_simhash")?.map(HexBytes),
        merged_into_uuid: column(row, "merged_into_uuid")?,
        notes: column(row, "notes")?,
    })
}

fn campaign_from_row(row: &Row) -> Result<CampaignRow, RepoError> {
    Ok(CampaignRow {
        uuid: column(row, "uuid")?,
        schema_version: int_column(row, "schema_version")?,
        first_seen_at: opt_time_column(row, "first_seen_at")?,
        last_seen_at: opt_time_column(row, "last_seen_at")?,
        created_at: time_column(row, "created_at")?,
        updated_at: time_column(row, "updated_at")?,
        confidence: column(row, "confidence")?,
        identity_count: int_column(row, "identity_count")?,
        ja3_hashes: column(row, "ja3_hashes")?,
        hassh_hashes: column(row, "hassh_hashes")?,
        tls_cert_sha256: column(row, "tls_cert_sha256")?,
        payload_simhashes: column(row, "payload_simhashes")?,
        c2_endpoints: column(row, "c2_endpoints")?,
        merged_into_uuid: column(row, "merged_into_uuid")?,
        notes: column(row, "notes")?,
    })
}

fn orchestrator_event_from_row(row: &Row) -> Result<OrchestratorEventRow, RepoError> {
    Ok(OrchestratorEventRow {
        uuid: column(row, "uuid")?,
        ts: time_column(row, "ts")?,
        kind: column(row, "kind")?,
        protocol: column(row, "protocol")?,
        action: column(row, "action")?,
        src_decky_uuid: column(row, "src_decky_uuid")?,
        dst_decky_uuid: column(row, "dst_decky_uuid")?,
        success: column(row, "success")?,
        payload: column(row, "payload")?,
    })
}

fn mutation_from_row(row: &Row) -> Result<MutationRow, RepoError> {
    Ok(MutationRow {
        id: column(row, "id")?,
        topology_id: column(row, "topology_id")?,
        op: column(row, "op")?,
        payload: column(row, "payload")?,
        state: column(row, "state")?,
        requested_at: time_column(row, "requested_at")?,
        applied_at: opt_time_column(row, "applied_at")?,
        reason: column(row, "reason")?,
    })
}

fn log_from_row(row: &Row) -> Result<LogRow, RepoError> {
    Ok(LogRow {
        id: column(row, "id")?,
        timestamp: time_column(row, "timestamp")?,
        decky: column(row, "decky")?,
        service: column(row, "service")?,
        event_type: column(row, "event_type")?,
        attacker_ip: column(row, "attacker_ip")?,
        raw_line: column(row, "raw_line")?,
        fields: column(row, "fields")?,
        msg: column(row, "msg")?,
        trace_id: column(row, "trace_id")?,
        span_id: column(row, "span_id")?,
    })
}

const RECENT_IDENTITIES: &str = "SELECT uuid, schema_version, campaign_id, first_seen_at, \
     last_seen_at, created_at, updated_at, confidence, observation_count, ja3_hashes, \
     hassh_hashes, ja4h_hashes, ja4_quic_hashes, http_versions_seen, tls_cert_sha256, \
     ipv6_link_local_iids, payload_simhashes, c2_endpoints, kd_digraph_simhash, \
     merged_into_uuid, notes FROM attacker_identities WHERE merged_into_uuid IS NULL \
     ORDER BY updated_at DESC, uuid COLLATE \"C\" DESC LIMIT $1";

const RECENT_CAMPAIGNS: &str = "SELECT uuid, schema_version, first_seen_at, last_seen_at, \
     created_at, updated_at, confidence, identity_count, ja3_hashes, hassh_hashes, \
     tls_cert_sha256, payload_simhashes, c2_endpoints, merged_into_uuid, notes FROM campaigns \
     WHERE merged_into_uuid IS NULL ORDER BY updated_at DESC, uuid COLLATE \"C\" DESC LIMIT $1";

const RECENT_ORCHESTRATOR_EVENTS: &str = "SELECT uuid, ts, kind, protocol, action, \
     src_decky_uuid, dst_decky_uuid, success, payload FROM orchestrator_events \
     ORDER BY ts DESC, uuid COLLATE \"C\" DESC LIMIT $1";

/// Status and in-flight mutations in one statement: one snapshot.
const TOPOLOGY_SNAPSHOT: &str = "SELECT t.status, m.id, m.topology_id, m.op, m.payload, \
     m.state, m.requested_at, m.applied_at, m.reason FROM topologies t \
     LEFT JOIN topology_mutations m ON m.topology_id = t.id AND m.state IN ('pending', 'applying') \
     WHERE t.id = $1 \
     ORDER BY CASE WHEN m.state = 'pending' THEN 0 ELSE 1 END, m.requested_at DESC, \
     m.id COLLATE \"C\" DESC";

const MAX_LOG_ID: &str = "SELECT COALESCE(MAX(id), 0)::bigint AS max_id FROM logs";

const LOG_STATS: &str = "SELECT (SELECT count(*) FROM logs) AS total_logs, \
     (SELECT count(DISTINCT attacker_ip) FROM logs) AS unique_attackers, \
     (SELECT count(*) FROM topology_deckies WHERE state = 'running') AS running_topology_deckies, \
     (SELECT count(*) FROM topology_deckies) AS topology_deckies";

impl IdentityReader for PgRepository {
    fn recent_identities(&self, limit: u32) -> RepoFuture<'_, Vec<IdentityRow>> {
        self.bounded(async move {
            let mut conn = self.conn().await?;
            conn.query(RECENT_IDENTITIES, &[&i64::from(limit)])
                .await?
                .iter()
                .map(identity_from_row)
                .collect()
        })
        .boxed()
    }
}

impl CampaignReader for PgRepository {
    fn recent_campaigns(&self, limit: u32) -> RepoFuture<'_, Vec<CampaignRow>> {
        self.bounded(async move {
            let mut conn = self.conn().await?;
            conn.query(RECENT_CAMPAIGNS, &[&i64::from(limit)])
                .await?
                .iter()
                .map(campaign_from_row)
                .collect()
        })
        .boxed()
    }
}

impl OrchestratorReader for PgRepository {
    fn recent_orchestrator_events(&self, limit: u32) -> RepoFuture<'_, Vec<OrchestratorEventRow>> {
        self.bounded(async move {
            let mut conn = self.conn().await?;
            conn.query(RECENT_ORCHESTRATOR_EVENTS, &[&i64::from(limit)])
                .await?
                .iter()
                .map(orchestrator_event_from_row)
                .collect()
        })
        .boxed()
    }
}

impl TopologyReader for PgRepository {
    fn topology_snapshot<'a>(
        &'a self,
        topology_id: &'a str,
    ) -> RepoFuture<'a, Option<TopologySnapshot>> {
        self.bounded(async move {
            let mut conn = self.conn().await?;
            let rows = conn.query(TOPOLOGY_SNAPSHOT, &[&topology_id]).await?;
            let Some(first) = rows.first() else {
                return Ok(None);
            };
            let status: String = column(first, "status")?;
            let mut in_flight = Vec::new();
            for row in &rows {
                if column::<Option<String>>(row, "id")?.is_some() {
                    in_flight.push(mutation_from_row(row)?);
                }
            }
            Ok(Some(TopologySnapshot { status, in_flight }))
        })
        .boxed()
    }
}

impl LogReader for PgRepository {
    fn max_log_id(&self) -> RepoFuture<'_, i64> {
        self.bounded(async move {
            let mut conn = self.conn().await?;
            match conn.query_opt(MAX_LOG_ID, &[]).await? {
                Some(row) => column(&row, "max_id"),
                None => Err(RepoError::InvalidData("max(id) returned no row".into())),
            }
        })
        .boxed()
    }

    fn logs_after_id<'a>(
        &'a self,
        after: i64,
        limit: u32,
        filter: &'a LogFilter,
    ) -> RepoFuture<'a, Vec<LogRow>> {
        self.bounded(async move {
            let filter = conditions(filter, Dialect::Postgres, 3);
            let sql = format!(
                "SELECT id, \"timestamp\", decky, service, event_type, attacker_ip, raw_line, \
                 fields, msg, trace_id, span_id FROM logs WHERE id > $1{} ORDER BY id LIMIT $2",
                filter.and_clause()
            );
            let limit = i64::from(limit);
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&after, &limit];
            params.extend(filter.binds.iter().map(|b| b as &(dyn ToSql + Sync)));
            let mut conn = self.conn().await?;
            conn.query_uncached(&sql, &params)
                .await?
                .iter()
                .map(log_from_row)
                .collect()
        })
        .boxed()
    }

    fn log_stats(&self) -> RepoFuture<'_, LogStats> {
        self.bounded(async move {
            let mut conn = self.conn().await?;
            let Some(row) = conn.query_opt(LOG_STATS, &[]).await? else {
                return Err(RepoError::InvalidData("stats returned no row".into()));
            };
            Ok(LogStats {
                total_logs: column(&row, "total_logs")?,
                unique_attackers: column(&row, "unique_attackers")?,
                running_topology_deckies: column(&row, "running_topology_deckies")?,
                topology_deckies: column(&row, "topology_deckies")?,
            })
        })
        .boxed()
    }

    /// SQLite's buckets: the time rounded to milliseconds, then whole
    /// seconds, then the bucket; labelled `YYYY-MM-DD HH:MM:SS` here.
    fn log_histogram<'a>(
        &'a self,
        filter: &'a LogFilter,
        interval_minutes: u32,
    ) -> RepoFuture<'a, Vec<HistogramBucket>> {
        self.bounded(async move {
            let width = i64::from(interval_minutes.max(1)) * 60;
            let filter = conditions(filter, Dialect::Postgres, 1);
            let sql = format!(
                "SELECT (floor(round(extract(epoch FROM \"timestamp\") * 1000) / {ms}) * {width})::bigint \
                 AS bucket, count(*) AS n FROM logs{} GROUP BY 1 ORDER BY 1",
                filter.where_clause(),
                ms = width * 1000,
            );
            let params: Vec<&(dyn ToSql + Sync)> =
                filter.binds.iter().map(|b| b as &(dyn ToSql + Sync)).collect();
            let mut conn = self.conn().await?;
            conn.query_uncached(&sql, &params)
                .await?
                .iter()
                .map(|row| {
                    let start: i64 = column(row, "bucket")?;
                    Ok(HistogramBucket {
                        time: DbTime::from_unix_micros(start.saturating_mul(1_000_000))
                            .map(DbTime::to_sql_seconds),
                        count: column(row, "n")?,
                    })
                })
                .collect()
        })
        .boxed()
    }
}

impl Health for PgRepository {
    fn ping(&self) -> RepoFuture<'_, ()> {
        self.bounded(async move {
            let mut conn = self.conn().await?;
            conn.query("SELECT 1", &[]).await.map(drop)
        })
        .boxed()
    }
}

impl RepositoryWriter for PgRepository {
    fn upsert_attacker<'a>(&'a self, attacker: &'a Attacker) -> RepoFuture<'a, ()> {
        self.bounded(async move {
            let mut conn = self.conn().await?;
            conn.query(
                UPSERT_ATTACKER,
                &[&attacker.uuid, &attacker.ip, &attacker.identity_id],
            )
            .await
            .map(drop)
        })
        .boxed()
    }

    fn upsert_observation<'a>(&'a self, observation: &'a Observation) -> RepoFuture<'a, ()> {
        self.bounded(async move {
            let mut conn = self.conn().await?;
            let o = observation;
            conn.query(
                UPSERT_OBSERVATION,
                &[
                    &o.id,
                    &o.identity_ref,
                    &o.primitive,
                    &o.value,
                    &o.confidence,
                    &o.window_start_ts,
                    &o.window_end_ts,
                    &o.source,
                    &o.evidence_ref,
                    &o.envelope_v,
                    &o.ts,
                    &o.attacker_uuid,
                ],
            )
            .await
            .map(drop)
            .map_err(|err| constraint_to_invalid(err, &format!("observation {}", o.id)))
        })
        .boxed()
    }

    fn create_user<'a>(&'a self, user: &'a User) -> RepoFuture<'a, ()> {
        self.bounded(async move {
            let mut conn = self.conn().await?;
            conn.query(
                CREATE_USER,
                &[
                    &user.uuid,
                    &user.username,
                    &user.password_hash,
                    &user.role,
                    &user.must_change_password,
                    &user.tokens_valid_from,
                ],
            )
            .await
            .map(drop)
            .map_err(|err| constraint_to_invalid(err, &format!("user {}", user.uuid)))
        })
        .boxed()
    }

    fn delete_user<'a>(&'a self, uuid: &'a str) -> RepoFuture<'a, ()> {
        self.bounded(async move {
            let mut conn = self.conn().await?;
            conn.query(DELETE_USER, &[&uuid]).await.map(drop)
        })
        .boxed()
    }

    fn set_attacker_identity<'a>(
        &'a self,
        attacker_uuid: &'a str,
        identity_id: Option<&'a str>,
    ) -> RepoFuture<'a, ()> {
        self.bounded(async move {
            let mut conn = self.conn().await?;
            match conn
                .query_opt(SET_ATTACKER_IDENTITY, &[&attacker_uuid, &identity_id])
                .await?
            {
                Some(_) => Ok(()),
                None => Err(RepoError::InvalidData(format!(
                    "unknown attacker {attacker_uuid}"
                ))),
            }
        })
        .boxed()
    }

    fn revoke_token<'a>(
        &'a self,
        jti: &'a str,
        user_uuid: &'a str,
        expires_at: SystemTime,
    ) -> RepoFuture<'a, ()> {
        self.bounded(async move {
            let mut conn = self.conn().await?;
            conn.query(REVOKE_TOKEN, &[&jti, &user_uuid, &expires_at])
                .await
                .map(drop)
        })
        .boxed()
    }

    fn upsert_identity<'a>(&'a self, identity: &'a IdentityRow) -> RepoFuture<'a, ()> {
        self.bounded(async move {
            let i = identity;
            let schema_version = to_int(i.schema_version, "schema_version")?;
            let observation_count = to_int(i.observation_count, "observation_count")?;
            let first_seen_at = i.first_seen_at.map(DbTime::to_system_time);
            let last_seen_at = i.last_seen_at.map(DbTime::to_system_time);
            let created_at = i.created_at.to_system_time();
            let updated_at = i.updated_at.to_system_time();
            let simhash = i.kd_digraph_simhash.as_ref().map(|h| h.0.as_slice());
            let mut conn = self.conn().await?;
            conn.query(
                UPSERT_IDENTITY,
                &[
                    &i.uuid,
                    &schema_version,
                    &i.campaign_id,
                    &first_seen_at,
                    &last_seen_at,
                    &created_at,
                    &updated_at,
                    &i.confidence,
                    &observation_count,
                    &i.ja3_hashes,
                    &i.hassh_hashes,
                    &i.ja4h_hashes,
                    &i.ja4_quic_hashes,
                    &i.http_versions_seen,
                    &i.tls_cert_sha256,
                    &i.ipv6_link_local_iids,
                    &i.payload_simhashes,
                    &i.c2_endpoints,
                    &simhash,
                    &i.merged_into_uuid,
                    &i.notes,
                ],
            )
            .await
            .map(drop)
        })
        .boxed()
    }

    fn upsert_campaign<'a>(&'a self, campaign: &'a CampaignRow) -> RepoFuture<'a, ()> {
        self.bounded(async move {
            let c = campaign;
            let schema_version = to_int(c.schema_version, "schema_version")?;
            let identity_count = to_int(c.identity_count, "identity_count")?;
            let first_seen_at = c.first_seen_at.map(DbTime::to_system_time);
            let last_seen_at = c.last_seen_at.map(DbTime::to_system_time);
            let created_at = c.created_at.to_system_time();
            let updated_at = c.updated_at.to_system_time();
            let mut conn = self.conn().await?;
            conn.query(
                UPSERT_CAMPAIGN,
                &[
                    &c.uuid,
                    &schema_version,
                    &first_seen_at,
                    &last_seen_at,
                    &created_at,
                    &updated_at,
                    &c.confidence,
                    &identity_count,
                    &c.ja3_hashes,
                    &c.hassh_hashes,
                    &c.tls_cert_sha256,
                    &c.payload_simhashes,
                    &c.c2_endpoints,
                    &c.merged_into_uuid,
                    &c.notes,
                ],
            )
            .await
            .map(drop)
        })
        .boxed()
    }

    fn insert_orchestrator_event<'a>(
        &'a self,
        event: &'a OrchestratorEventRow,
    ) -> RepoFuture<'a, ()> {
        self.bounded(async move {
            let e = event;
            let ts = e.ts.to_system_time();
            let mut conn = self.conn().await?;
            conn.query(
                INSERT_ORCHESTRATOR_EVENT,
                &[
                    &e.uuid,
                    &ts,
                    &e.kind,
                    &e.protocol,
                    &e.action,
                    &e.src_decky_uuid,
                    &e.dst_decky_uuid,
                    &e.success,
                    &e.payload,
                ],
            )
            .await
            .map(drop)
            .map_err(|err| constraint_to_invalid(err, &format!("orchestrator event {}", e.uuid)))
        })
        .boxed()
    }

    fn upsert_topology<'a>(
        &'a self,
        id: &'a str,
        name: &'a str,
        status: &'a str,
    ) -> RepoFuture<'a, ()> {
        self.bounded(async move {
            let mut conn = self.conn().await?;
            conn.query(UPSERT_TOPOLOGY, &[&id, &name, &status])
                .await
                .map(drop)
                .map_err(|err| constraint_to_invalid(err, &format!("topology {id}")))
        })
        .boxed()
    }

    fn upsert_mutation<'a>(&'a self, mutation: &'a MutationRow) -> RepoFuture<'a, ()> {
        self.bounded(async move {
            let m = mutation;
            let requested_at = m.requested_at.to_system_time();
            let applied_at = m.applied_at.map(DbTime::to_system_time);
            let mut conn = self.conn().await?;
            conn.query(
                UPSERT_MUTATION,
                &[
                    &m.id,
                    &m.topology_id,
                    &m.op,
                    &m.payload,
                    &m.state,
                    &requested_at,
                    &applied_at,
                    &m.reason,
                ],
            )
            .await
            .map(drop)
        })
        .boxed()
    }

    fn insert_topology_decky<'a>(
        &'a self,
        topology_id: &'a str,
        name: &'a str,
        state: &'a str,
    ) -> RepoFuture<'a, ()> {
        self.bounded(async move {
            let mut conn = self.conn().await?;
            conn.query(INSERT_TOPOLOGY_DECKY, &[&topology_id, &name, &state])
                .await
                .map(drop)
                .map_err(|err| {
                    constraint_to_invalid(err, &format!("decky {name} of topology {topology_id}"))
                })
        })
        .boxed()
    }

    fn insert_log<'a>(&'a self, row: &'a LogRow) -> RepoFuture<'a, i64> {
        self.bounded(async move {
            let timestamp = row.timestamp.to_system_time();
            let mut conn = self.conn().await?;
            let inserted = conn
                .query_opt(
                    INSERT_LOG,
                    &[
                        &timestamp,
                        &row.decky,
                        &row.service,
                        &row.event_type,
                        &row.attacker_ip,
                        &row.raw_line,
                        &row.fields,
                        &row.msg,
                        &row.trace_id,
                        &row.span_id,
                    ],
                )
                .await?;
            match inserted {
                Some(inserted) => column(&inserted, "id"),
                None => Err(RepoError::InvalidData("INSERT returned no id".into())),
            }
        })
        .boxed()
    }
}

const UPSERT_IDENTITY: &str = "INSERT INTO attacker_identities (uuid, schema_version, \
     campaign_id, first_seen_at, last_seen_at, created_at, updated_at, confidence, \
     observation_count, ja3_hashes, hassh_hashes, ja4h_hashes, ja4_quic_hashes, \
     http_versions_seen, tls_cert_sha256, ipv6_link_local_iids, payload_simhashes, c2_endpoints, \
     kd_digraph_simhash, merged_into_uuid, notes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
     $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21) ON CONFLICT (uuid) DO UPDATE SET \
     schema_version = EXCLUDED.schema_version, campaign_id = EXCLUDED.campaign_id, \
     first_seen_at = EXCLUDED.first_seen_at, last_seen_at = EXCLUDED.last_seen_at, \
     created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, \
     confidence = EXCLUDED.confidence, observation_count = EXCLUDED.observation_count, \
     ja3_hashes = EXCLUDED.ja3_hashes, hassh_hashes = EXCLUDED.hassh_hashes, \
     ja4h_hashes = EXCLUDED.ja4h_hashes, ja4_quic_hashes = EXCLUDED.ja4_quic_hashes, \
     http_versions_seen = EXCLUDED.http_versions_seen, tls_cert_sha256 = EXCLUDED.tls_cert_sha256, \
     ipv6_link_local_iids = EXCLUDED.ipv6_link_local_iids, \
     payload_simhashes = EXCLUDED.payload_simhashes, c2_endpoints = EXCLUDED.c2_endpoints, \
     kd_digraph_simhash = EXCLUDED.kd_digraph_simhash, \
     merged_into_uuid = EXCLUDED.merged_into_uuid, notes = EXCLUDED.notes";

const UPSERT_CAMPAIGN: &str = "INSERT INTO campaigns (uuid, schema_version, first_seen_at, \
     last_seen_at, created_at, updated_at, confidence, identity_count, ja3_hashes, hassh_hashes, \
     tls_cert_sha256, payload_simhashes, c2_endpoints, merged_into_uuid, notes) VALUES ($1, $2, \
     $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) ON CONFLICT (uuid) DO UPDATE SET \
     schema_version = EXCLUDED.schema_version, first_seen_at = EXCLUDED.first_seen_at, \
     last_seen_at = EXCLUDED.last_seen_at, created_at = EXCLUDED.created_at, \
     updated_at = EXCLUDED.updated_at, confidence = EXCLUDED.confidence, \
     identity_count = EXCLUDED.identity_count, ja3_hashes = EXCLUDED.ja3_hashes, \
     hassh_hashes = EXCLUDED.hassh_hashes, tls_cert_sha256 = EXCLUDED.tls_cert_sha256, \
     payload_simhashes = EXCLUDED.payload_simhashes, c2_endpoints = EXCLUDED.c2_endpoints, \
     merged_into_uuid = EXCLUDED.merged_into_uuid, notes = EXCLUDED.notes";

const INSERT_ORCHESTRATOR_EVENT: &str = "INSERT INTO orchestrator_events (uuid, ts, kind, \
     protocol, action, src_decky_uuid, dst_decky_uuid, success, payload) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

const UPSERT_TOPOLOGY: &str = "INSERT INTO topologies (id, name, status) VALUES ($1, $2, $3) \
     ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, status = EXCLUDED.status";

const UPSERT_MUTATION: &str = "INSERT INTO topology_mutations (id, topology_id, op, payload, \
     state, requested_at, applied_at, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (id) DO UPDATE SET topology_id = EXCLUDED.topology_id, op = EXCLUDED.op, \
     payload = EXCLUDED.payload, state = EXCLUDED.state, requested_at = EXCLUDED.requested_at, \
     applied_at = EXCLUDED.applied_at, reason = EXCLUDED.reason";

const INSERT_TOPOLOGY_DECKY: &str =
    "INSERT INTO topology_deckies (topology_id, name, state) VALUES ($1, $2, $3)";

const INSERT_LOG: &str = "INSERT INTO logs (\"timestamp\", decky, service, event_type, \
     attacker_ip, raw_line, fields, msg, trace_id, span_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_url_passwords() {
        let check = |url: &str, expected: &str| assert_eq!(redact_url(url), expected, "{url}");
        check(
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://postgres@127.0.0.1:5432/postgres",
        );
        check(
            "postgres://u:secret@db:5432/x?sslmode=disable",
            "postgres://u:***@db:5432/x?sslmode=disable",
        );
        check("postgres://u:p%40ss@h/x", "postgres://u:***@h/x");
        check(
            "postgres://h/x?user=u&password=pw&a=b",
            "postgres://h/x?user=u&password=***&a=b",
        );
        check(
            "host=h user=u password=pw dbname=x",
            "host=h user=u password=*** dbname=x",
        );
    }

    #[test]
    fn startup_options_escape_and_append() {
        assert_eq!(startup_options(None, None, None), None);
        assert_eq!(
            startup_options(None, Some("t_1"), Some(Duration::from_secs(5))).as_deref(),
            Some(r#"-c search_path="t_1" -c statement_timeout=5000"#)
        );
        assert_eq!(
            startup_options(Some("-c TimeZone=UTC"), Some(r#"we "ird\ s"#), None).as_deref(),
            Some(r#"-c TimeZone=UTC -c search_path="we\ ""ird\\\ s""#)
        );
        assert_eq!(
            startup_options(None, None, Some(Duration::from_micros(10))).as_deref(),
            Some("-c statement_timeout=1")
        );
    }

    #[test]
    fn classifies_sqlstates() {
        for code in [
            "08006", "08001", "53300", "57P01", "57P03", "57014", "55P03",
        ] {
            assert!(unavailable_sqlstate(code), "{code}");
        }
        for code in ["42P01", "23505", "22P02", "40001", "42601"] {
            assert!(!unavailable_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn connect_rejects_bad_configs_without_a_server() {
        let check = |config: PgConfig| {
            let err = PgRepository::connect(config).map(drop);
            assert!(matches!(err, Err(RepoError::Config(_))), "{err:?}");
        };
        check(PgConfig::new("postgres://h:notaport/x"));
        check(PgConfig {
            pool_size: 0,
            ..PgConfig::new("postgres://h/x")
        });
        check(PgConfig::new("postgres://h/x").with_schema(""));
    }

    #[test]
    fn config_debug_masks_the_password() {
        let config = PgConfig::new("postgres://u:hunter2@h/x");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    /// The plan of the latest-per-primitive query walks the
    /// `(attacker_uuid, primitive, ts)` index and never scans the table.
    mod svc_postgres {
        use super::*;
        use test_support::Service;

        #[tokio::test]
        async fn latest_query_uses_the_index() {
            let url = test_support::require_service!(Service::Postgres);
            let (schema, _guard) = test_support::pg::fresh_schema(&url).await;
            let repo =
                PgRepository::connect(PgConfig::new(&url).with_schema(&schema)).expect("config");
            repo.migrate().await.expect("migrate");
            let client = test_support::pg::connect_in_schema(&url, &schema).await;
            client
                .batch_execute(
                    "INSERT INTO attackers (uuid, ip) SELECT 'a' || n, 'ip' FROM generate_series(0, 49) n;
                     INSERT INTO observations SELECT 'o' || n, NULL, 'p' || (n % 20), '{}', 0.5, 0, 0,
                         's', 'e' || n, 1, n, 'a' || (n % 50) FROM generate_series(1, 20000) n;
                     ANALYZE observations;",
                )
                .await
                .expect("load");
            let rows = client
                .query(
                    &format!("EXPLAIN {}", LATEST_PER_PRIMITIVE.replace("$1", "'a7'")),
                    &[],
                )
                .await
                .expect("explain");
            let plan: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
            let plan = plan.join("\n");
            assert!(
                plan.contains("ix_observations_attacker_primitive_ts"),
                "{plan}"
            );
            assert!(!plan.contains("Seq Scan"), "{plan}");
        }
    }
}
