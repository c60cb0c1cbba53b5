//! The MySQL backend: DECNET's own MySQL/MariaDB database, read-only, on
//! sqlx's MySQL driver (rustls on ring for TLS).
//!
//! - [`MysqlConfig`] says where the server is and how long anything may
//!   take; [`MysqlConfig::from_url`] reads DECNET's `DECNET_DB_URL`
//!   (`mysql+asyncmy://user:pass@host:port/db`) and
//!   [`MysqlConfig::from_components`] DECNET's `DECNET_DB_HOST/PORT/NAME/
//!   USER/PASSWORD` with DECNET's defaults.
//! - [`MysqlRepository::connect`] builds the pool without connecting, so a
//!   service starts (and answers 503) while the server is down.
//! - [`MysqlRepository::check_schema`] names every table and column the
//!   service reads that the database lacks.
//!
//! Read-only: every session is `SET SESSION TRANSACTION ... READ ONLY` (the
//! server refuses any write), and no statement here writes. Nothing is
//! migrated: DECNET's Alembic owns the schema. Each session also sets
//! `time_zone = '+00:00'` (histogram buckets are not shifted by the server's
//! zone, unlike DECNET's, which uses the session default), `NAMES utf8mb4`,
//! REPEATABLE READ, and a server-side statement timeout
//! (`max_statement_time` on MariaDB, `max_execution_time` on MySQL).
//!
//! Semantics are DECNET's on MySQL (DECNET.md §2.3-2.5, §3.1):
//! - comparisons follow the column collation, normally case-insensitive
//!   (`utf8mb4_general_ci` on MariaDB, `utf8mb4_0900_ai_ci` on MySQL 8):
//!   a uuid lookup ignores case, as it does for DECNET, and so do the
//!   `/stream` equality and `LIKE` terms; primitives that differ only in case
//!   are one primitive to `GROUP BY`. Tie-breaks on uuids in the snapshots
//!   use byte order (`CAST(.. AS BINARY)`), as every backend does; the
//!   latest-per-primitive tie-break on `id` uses the column's collation order
//!   (byte order for DECNET's lower-case hex ids; see the query);
//! - `FLOAT` columns are single precision (`observations.ts` near 1.7e9 has
//!   128 s steps): latest-per-primitive resolves the many ties on `ts` by the
//!   highest `id` in SQL, and a value is returned as the shortest decimal
//!   that reads back as the stored single-precision number (`0.9`, not
//!   `0.8999999761581421`), which is what the server's own text rendering
//!   shows and what was most likely written;
//! - `DATETIME` has no fraction (fsp 0; MariaDB truncates on insert, MySQL
//!   rounds) and no zone: every datetime is naive;
//! - JSON (`observations.value`) is read as text and parsed;
//! - the `/stream` JSON-key term is DECNET's
//!   `JSON_UNQUOTE(JSON_EXTRACT(fields, '$.key')) = ?`: numbers match their
//!   text, booleans `true`/`false`; on MariaDB malformed `fields` JSON does
//!   not match (MariaDB returns NULL with a warning), on MySQL it fails the
//!   query; `\` is `LIKE`'s escape; time bounds are converted by the server;
//! - histogram buckets are DECNET's
//!   `FROM_UNIXTIME((UNIX_TIMESTAMP(timestamp) DIV W) * W)` as
//!   `YYYY-MM-DD HH:MM:SS`.
//!
//! Errors: a refused or failed connection, a wait past
//! [`MysqlConfig::acquire_timeout`], the server's statement timeout, lock
//! wait timeout, shutdown or "too many connections", and a call past
//! [`MysqlConfig::call_timeout`] are [`RepoError::Unavailable`]; other SQL
//! errors are [`RepoError::Query`]; a value this crate cannot represent is
//! [`RepoError::InvalidData`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use sqlx_core::error::DatabaseError;
use sqlx_core::executor::Executor;
use sqlx_core::query_scalar::query_scalar;
use sqlx_core::row::Row;
use sqlx_core::sql_str::AssertSqlSafe;
use sqlx_core::type_info::TypeInfo;
use sqlx_core::value::ValueRef;
use sqlx_mysql::{
    MySql, MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlPoolOptions, MySqlRow,
};

use crate::RepoError;
use crate::sql::Dialect;
use crate::sqlx_reads::{Queries, SqlxEngine};
use crate::sqlx_support::{
    self as support, Bind, Cells, Classify, Fetch, HeadAndRest, config_error, invalid, parse_json,
};

const ENGINE: &str = "mysql";

/// DECNET's defaults for its `DECNET_DB_*` components.
const DEFAULT_HOST: &str = "localhost";
const DEFAULT_PORT: u16 = 3306;
const DEFAULT_DATABASE: &str = "decnet";
const DEFAULT_USER: &str = "decnet";

/// Whether and how the connection is encrypted (MySQL's `ssl-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MysqlSslMode {
    /// Plain TCP.
    Disabled,
    /// TLS when the server offers it, plain otherwise; the certificate is not
    /// verified. The default, as in MySQL's own clients.
    #[default]
    Preferred,
    /// TLS or fail; the certificate is not verified.
    Required,
    /// TLS with the certificate verified against [`MysqlConfig::ssl_ca`] (or
    /// the bundled web roots).
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host.
    VerifyIdentity,
}

impl MysqlSslMode {
    /// Parse MySQL's spelling (`DISABLED`, `PREFERRED`, `REQUIRED`,
    /// `VERIFY_CA`, `VERIFY_IDENTITY`, any case, `-` or `_`).
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().replace('-', "_").as_str() {
            "disabled" => MysqlSslMode::Disabled,
            "preferred" => MysqlSslMode::Preferred,
            "required" => MysqlSslMode::Required,
            "verify_ca" => MysqlSslMode::VerifyCa,
            "verify_identity" => MysqlSslMode::VerifyIdentity,
            _ => return None,
        })
    }

    fn to_sqlx(self) -> sqlx_mysql::MySqlSslMode {
        use sqlx_mysql::MySqlSslMode as S;
        match self {
            MysqlSslMode::Disabled => S::Disabled,
            MysqlSslMode::Preferred => S::Preferred,
            MysqlSslMode::Required => S::Required,
            MysqlSslMode::VerifyCa => S::VerifyCa,
            MysqlSslMode::VerifyIdentity => S::VerifyIdentity,
        }
    }
}

/// Settings for [`MysqlRepository`].
///
/// Start from [`MysqlConfig::from_url`] or [`MysqlConfig::from_components`]
/// and override fields with struct update syntax:
///
/// ```
/// # use decnet_repo::MysqlConfig;
/// let config = MysqlConfig {
///     pool_size: 4,
///     ..MysqlConfig::from_url("mysql+asyncmy://decnet:s%40cret@db.internal:3306/decnet")?
/// };
/// assert_eq!(config.password.as_deref(), Some("s@cret"));
/// # Ok::<(), decnet_repo::RepoError>(())
/// ```
///
/// `Debug` masks the password.
#[derive(Clone)]
pub struct MysqlConfig {
    /// Server host name or address. DECNET's default `localhost` (TCP).
    pub host: String,
    /// Server port. Default 3306.
    pub port: u16,
    /// Database (schema) name. DECNET's default `decnet`.
    pub database: String,
    /// User. DECNET's default `decnet`.
    pub user: String,
    /// Password, if any.
    pub password: Option<String>,
    /// TLS. Default [`MysqlSslMode::Preferred`].
    pub ssl_mode: MysqlSslMode,
    /// A PEM file of CA certificates for the `Verify*` modes.
    pub ssl_ca: Option<PathBuf>,
    /// Maximum pooled connections (at least 1). Default 8.
    pub pool_size: u32,
    /// How long a call waits for a connection, connecting included, before
    /// failing with [`RepoError::Unavailable`]. Default 3 s.
    pub acquire_timeout: Duration,
    /// Server-side statement timeout set on every session; `None` leaves the
    /// server's. Default 5 s.
    pub statement_timeout: Option<Duration>,
    /// The longest any one call may take, waits included; past it the call
    /// is abandoned, its connection closed, and the caller gets
    /// [`RepoError::Unavailable`]. Default 10 s.
    pub call_timeout: Duration,
}

impl fmt::Debug for MysqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_ca", &self.ssl_ca)
            .field("pool_size", &self.pool_size)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("call_timeout", &self.call_timeout)
            .finish()
    }
}

impl MysqlConfig {
    fn with_defaults() -> Self {
        MysqlConfig {
            host: DEFAULT_HOST.to_owned(),
            port: DEFAULT_PORT,
            database: DEFAULT_DATABASE.to_owned(),
            user: DEFAULT_USER.to_owned(),
            password: None,
            ssl_mode: MysqlSslMode::default(),
            ssl_ca: None,
            pool_size: 8,
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Some(Duration::from_secs(5)),
            call_timeout: Duration::from_secs(10),
        }
    }

    /// Settings from a URL as DECNET's `DECNET_DB_URL` holds it:
    /// `mysql+asyncmy://user:password@host:port/database` (any `+driver`
    /// suffix is dropped; `mariadb://` is accepted too). User, password and
    /// database are percent-decoded (a `+` stays a `+`, as SQLAlchemy reads
    /// it); a missing port is 3306, a missing user or database DECNET's
    /// `decnet`, a missing password none. The query may set `ssl-mode`
    /// (MySQL's values) and `ssl-ca`; other parameters (`charset`, ...) are
    /// ignored.
    ///
    /// # Errors
    ///
    /// [`RepoError::Config`] for another scheme, a missing host, a bad port,
    /// bad percent-encoding or an unknown `ssl-mode`.
    pub fn from_url(url: &str) -> Result<Self, RepoError> {
        let bad = |why: String| config_error(format!("mysql url {}: {why}", redact(url)));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected mysql://...".into()))?;
        let base = scheme
            .split_once('+')
            .map_or(scheme, |(base, _driver)| base);
        if !(base.eq_ignore_ascii_case("mysql") || base.eq_ignore_ascii_case("mariadb")) {
            return Err(bad(format!("scheme {scheme:?} is not mysql")));
        }
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let mut config = MysqlConfig::with_defaults();
        if let Some(userinfo) = userinfo {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                config.user =
                    percent_decode(user).ok_or_else(|| bad("bad user encoding".into()))?;
            }
            if let Some(password) = password {
                config.password = Some(
                    percent_decode(password).ok_or_else(|| bad("bad password encoding".into()))?,
                );
            }
        }
        let (host, port) = split_host_port(hostport).ok_or_else(|| bad("bad host:port".into()))?;
        if host.is_empty() {
            return Err(bad("no host".into()));
        }
        config.host = host.to_owned();
        if let Some(port) = port {
            config.port = parse_port(port).map_err(bad)?;
        }
        if !path.is_empty() {
            config.database =
                percent_decode(path).ok_or_else(|| bad("bad database encoding".into()))?;
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value).ok_or_else(|| bad(format!("bad {key} encoding")))?;
            match key.to_ascii_lowercase().replace('_', "-").as_str() {
                "ssl-mode" | "sslmode" => {
                    config.ssl_mode = MysqlSslMode::parse(&value)
                        .ok_or_else(|| bad(format!("unknown ssl-mode {value:?}")))?;
                }
                "ssl-ca" => config.ssl_ca = Some(PathBuf::from(value)),
                _ => {}
            }
        }
        Ok(config)
    }

    /// Settings from DECNET's components (`DECNET_DB_HOST`, `DECNET_DB_PORT`,
    /// `DECNET_DB_NAME`, `DECNET_DB_USER`, `DECNET_DB_PASSWORD`), as the
    /// binary read them: `None` or an empty string takes DECNET's default
    /// (`localhost`, 3306, `decnet`, `decnet`); the port must be an integer
    /// in 1-65535; the password is required, as DECNET requires it.
    ///
    /// # Errors
    ///
    /// [`RepoError::Config`] for a bad port or a missing or empty password.
    pub fn from_components(
        host: Option<&str>,
        port: Option<&str>,
        database: Option<&str>,
        user: Option<&str>,
        password: Option<&str>,
    ) -> Result<Self, RepoError> {
        fn set(value: Option<&str>) -> Option<&str> {
            value.filter(|v| !v.is_empty())
        }
        let mut config = MysqlConfig::with_defaults();
        if let Some(host) = set(host) {
            config.host = host.to_owned();
        }
        if let Some(port) = set(port) {
            config.port =
                parse_port(port).map_err(|why| config_error(format!("DECNET_DB_PORT: {why}")))?;
        }
        if let Some(database) = set(database) {
            config.database = database.to_owned();
        }
        if let Some(user) = set(user) {
            config.user = user.to_owned();
        }
        match set(password) {
            Some(password) => config.password = Some(password.to_owned()),
            None => {
                return Err(config_error(
                    "a MySQL password is required (DECNET_DB_PASSWORD, or a DECNET_DB_URL)",
                ));
            }
        }
        Ok(config)
    }
}

/// DECNET's port rule: an integer in 1-65535.
fn parse_port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("port {text:?} is not an integer in 1-65535")),
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(text: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    Some(match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    })
}

/// `%XX` decoding (no `+` to space); `None` on a bad escape or non-UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The URL with any password masked, for error messages.
fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        if let Some((userinfo, host)) = authority.rsplit_once('@')
            && let Some((user, _password)) = userinfo.split_once(':')
        {
            return format!("{scheme}://{user}:***@{host}{tail}");
        }
    }
    url.to_owned()
}

/// MySQL/MariaDB error numbers that mean "cannot serve now".
struct MysqlErrors;

impl Classify for MysqlErrors {
    fn unavailable(err: &dyn DatabaseError) -> bool {
        let Some(err) = err.try_downcast_ref::<MySqlDatabaseError>() else {
            return false;
        };
        matches!(
            err.number(),
            1040 // too many connections
                | 1053 // server shutdown in progress
                | 1205 // lock wait timeout
                | 1213 // deadlock (a reader is only its victim by accident)
                | 1317 // query interrupted
                | 1927 // MariaDB: connection killed
                | 1969 // MariaDB: max_statement_time exceeded
                | 3024 // MySQL: max_execution_time exceeded
        )
    }
}

/// DECNET's MySQL (or MariaDB) database, read-only. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MysqlRepository {
    pool: MySqlPool,
    call_timeout: Duration,
}

impl MysqlRepository {
    /// Build the pool. No connection is made here (no runtime needed
    /// either): connections are opened on first use, so this succeeds while
    /// the server is down, and calls then fail with
    /// [`RepoError::Unavailable`] within [`MysqlConfig::acquire_timeout`].
    ///
    /// # Errors
    ///
    /// [`RepoError::Config`] when `pool_size` is 0 or the host is empty.
    pub fn connect(config: MysqlConfig) -> Result<Self, RepoError> {
        if config.pool_size == 0 {
            return Err(config_error("mysql pool_size must be at least 1"));
        }
        if config.host.is_empty() {
            return Err(config_error("mysql host must not be empty"));
        }
        let mut options = MySqlConnectOptions::new()
            .host(&config.host)
            .port(config.port)
            .username(&config.user)
            .database(&config.database)
            .ssl_mode(config.ssl_mode.to_sqlx())
            .charset("utf8mb4")
            .timezone(Some("+00:00".to_owned()))
            .pipes_as_concat(false)
            .no_engine_substitution(false)
            .statement_cache_capacity(64);
        if let Some(password) = &config.password {
            options = options.password(password);
        }
        if let Some(ca) = &config.ssl_ca {
            options = options.ssl_ca(ca);
        }
        let statement_timeout = config.statement_timeout;
        let pool = MySqlPoolOptions::new()
            .max_connections(config.pool_size)
            .min_connections(0)
            .acquire_timeout(config.acquire_timeout)
            // No reaper task (the pool then needs no runtime to be built);
            // a connection the server closed while idle is found by the ping
            // before each checkout, DECNET's `pool_pre_ping` on MySQL.
            .max_lifetime(None)
            .idle_timeout(None)
            .test_before_acquire(true)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    conn.execute(
                        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                    )
                    .await?;
                    if let Some(timeout) = statement_timeout {
                        let version: String = query_scalar("SELECT VERSION()")
                            .fetch_one(&mut *conn)
                            .await?;
                        let millis = timeout.as_millis().max(1);
                        let sql = if version.to_ascii_lowercase().contains("mariadb") {
                            format!(
                                "SET SESSION max_statement_time = {}",
                                millis as f64 / 1000.0
                            )
                        } else {
                            format!("SET SESSION max_execution_time = {millis}")
                        };
                        conn.execute(AssertSqlSafe(sql)).await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        Ok(MysqlRepository {
            pool,
            call_timeout: config.call_timeout,
        })
    }

    /// Check that the database has every table and column the service reads
    /// ([`crate::REQUIRED_COLUMNS`]).
    ///
    /// # Errors
    ///
    /// [`RepoError::Schema`] naming each missing table and column;
    /// [`RepoError::Unavailable`] when the server cannot be reached.
    pub async fn check_schema(&self) -> Result<(), RepoError> {
        let rows = self
            .fetch_all(
                "SELECT CAST(TABLE_NAME AS CHAR) AS table_name, \
                 CAST(COLUMN_NAME AS CHAR) AS column_name \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()",
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

impl Fetch for MysqlRepository {
    type Row = MySqlRow;

    async fn fetch_all(&self, sql: &str, binds: Vec<Bind>) -> Result<Vec<MySqlRow>, RepoError> {
        support::fetch_all::<MySql, MysqlErrors>(ENGINE, &self.pool, self.call_timeout, sql, binds)
            .await
    }

    async fn fetch_head_and_rest(
        &self,
        begin: Option<&'static str>,
        head: (&'static str, Vec<Bind>),
        rest: (&'static str, Vec<Bind>),
    ) -> Result<Option<HeadAndRest<MySqlRow>>, RepoError> {
        let (pool, deadline) = (&self.pool, self.call_timeout);
        support::fetch_head_and_rest::<MySql, MysqlErrors>(
            ENGINE, pool, deadline, begin, head, rest,
        )
        .await
    }
}

fn get<'r, T>(row: &'r MySqlRow, col: &str) -> Result<T, RepoError>
where
    T: sqlx_core::decode::Decode<'r, MySql> + sqlx_core::types::Type<MySql>,
{
    row.try_get(col)
        .map_err(|err| invalid(format_args!("column {col}"), err))
}

/// A `FLOAT` (single precision) as the shortest decimal that reads back as
/// the same single-precision value; a `DOUBLE` as it is.
fn float_of(row: &MySqlRow, col: &str) -> Result<Option<f64>, RepoError> {
    let raw = row
        .try_get_raw(col)
        .map_err(|err| invalid(format_args!("column {col}"), err))?;
    if raw.is_null() {
        return Ok(None);
    }
    if raw.type_info().name() == "FLOAT" {
        let single: f32 = get(row, col)?;
        Ok(Some(widen(single)))
    } else {
        get(row, col).map(Some)
    }
}

/// The shortest decimal rendering of `single`, read as `f64`.
fn widen(single: f32) -> f64 {
    single
        .to_string()
        .parse::<f64>()
        .unwrap_or(f64::from(single))
}

impl Cells for MySqlRow {
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
        float_of(self, col)?.ok_or_else(|| invalid(format_args!("column {col}"), "unexpected NULL"))
    }

    fn opt_float(&self, col: &str) -> Result<Option<f64>, RepoError> {
        float_of(self, col)
    }

    fn flag(&self, col: &str) -> Result<bool, RepoError> {
        Ok(get::<i64>(self, col)? != 0)
    }

    fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>, RepoError> {
        get(self, col)
    }

    fn json(&self, col: &str) -> Result<serde_json::Value, RepoError> {
        parse_json(&get::<String>(self, col)?, format_args!("column {col}"))
    }
}

const USER_BY_UUID: &str = "SELECT uuid, username, password_hash, role, must_change_password, \
     CAST(tokens_valid_from AS CHAR) AS tokens_valid_from FROM users WHERE uuid = ?";

const ALL_USERS: &str = "SELECT uuid, username, '' AS password_hash, role, \
     must_change_password, CAST(tokens_valid_from AS CHAR) AS tokens_valid_from FROM users \
     LIMIT ?";

const IS_TOKEN_REVOKED: &str =
    "SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = ?) AS revoked";

const ATTACKER_BY_UUID: &str = "SELECT uuid, ip, identity_id FROM attackers WHERE uuid = ?";

const ATTACKERS_OF_IDENTITY: &str = "SELECT uuid FROM attackers WHERE identity_id = ?";

/// Latest observation per primitive on DECNET's index
/// `ix_observations_attacker_primitive_ts (attacker_uuid, primitive, ts)`:
/// - `m`: `MAX(ts)` per primitive as a loose index scan, one probe per
///   primitive ("Using index for group-by"). The attacker is matched with
///   `>= ? AND <= ?`, the same rows as `= ?` under any collation: MariaDB
///   only considers a loose scan for a range, not for a constant (with `=`
///   it reads every index entry of the attacker, 4x slower at 10,000 rows);
/// - `w`: per primitive, the row tied on that `ts` with the highest `id`,
///   read backwards from the same index (InnoDB appends the primary key to
///   it), so one entry per primitive however many rows tie: single-precision
///   FLOAT makes ties the rule (128 s steps near 1.7e9). The order is the
///   `id` column's collation, which is byte order for DECNET's ids
///   (lower-case hex uuids) and any id without upper-case letters or
///   `[\]^_`` ` ``; a byte-order sort of the ties (`CAST(id AS BINARY)`)
///   costs a filesort of every tied row (about 4x slower here);
/// - only the 40 or so winning rows are read whole, by primary key.
const LATEST_PER_PRIMITIVE: &str = "\
WITH m AS (
    SELECT attacker_uuid, primitive, MAX(ts) AS ts FROM observations
    WHERE attacker_uuid >= ? AND attacker_uuid <= ?
    GROUP BY attacker_uuid, primitive
),
w AS (
    SELECT (SELECT i.id FROM observations AS i
            WHERE i.attacker_uuid = m.attacker_uuid AND i.primitive = m.primitive
              AND i.ts = m.ts
            ORDER BY i.id DESC LIMIT 1) AS id
    FROM m
)
SELECT o.id, o.identity_ref, o.primitive, CAST(o.value AS CHAR) AS value, o.confidence,
       o.window_start_ts, o.window_end_ts, o.source, o.evidence_ref, o.envelope_v, o.ts,
       o.attacker_uuid
FROM w JOIN observations AS o ON o.id = w.id";

const RECENT_IDENTITIES: &str = "SELECT t.uuid, t.schema_version, t.campaign_id, \
     CAST(t.first_seen_at AS CHAR) AS first_seen_at, CAST(t.last_seen_at AS CHAR) AS last_seen_at, \
     CAST(t.created_at AS CHAR) AS created_at, CAST(t.updated_at AS CHAR) AS updated_at, \
     t.confidence, t.observation_count, t.ja3_hashes, t.hassh_hashes, t.ja4h_hashes, \
     t.ja4_quic_hashes, t.http_versions_seen, t.tls_cert_sha256, t.ipv6_link_local_iids, \
     t.payload_simhashes, t.c2_endpoints, t.kd_digraph_simhash, t.merged_into_uuid, t.notes \
     FROM attacker_identities AS t WHERE t.merged_into_uuid IS NULL \
     ORDER BY t.updated_at DESC, CAST(t.uuid AS BINARY) DESC LIMIT ?";

const RECENT_CAMPAIGNS: &str = "SELECT t.uuid, t.schema_version, \
     CAST(t.first_seen_at AS CHAR) AS first_seen_at, CAST(t.last_seen_at AS CHAR) AS last_seen_at, \
     CAST(t.created_at AS CHAR) AS created_at, CAST(t.updated_at AS CHAR) AS updated_at, \
     t.confidence, t.identity_count, t.ja3_hashes, t.hassh_hashes, t.tls_cert_sha256, \
     t.payload_simhashes, t.c2_endpoints, t.merged_into_uuid, t.notes FROM campaigns AS t \
     WHERE t.merged_into_uuid IS NULL \
     ORDER BY t.updated_at DESC, CAST(t.uuid AS BINARY) DESC LIMIT ?";

const RECENT_ORCHESTRATOR_EVENTS: &str = "SELECT e.uuid, CAST(e.ts AS CHAR) AS ts, e.kind, \
     e.protocol, e.action, e.src_decky_uuid, e.dst_decky_uuid, e.success, e.payload \
     FROM orchestrator_events AS e ORDER BY e.ts DESC, CAST(e.uuid AS BINARY) DESC LIMIT ?";

const TOPOLOGY_STATUS: &str = "SELECT status FROM topologies WHERE id = ?";

const IN_FLIGHT_MUTATIONS: &str = "SELECT m.id, m.topology_id, m.op, m.payload, m.state, \
     CAST(m.requested_at AS CHAR) AS requested_at, CAST(m.applied_at AS CHAR) AS applied_at, \
     m.reason FROM topology_mutations AS m \
     WHERE m.topology_id = ? AND m.state IN ('pending', 'applying') \
     ORDER BY CASE WHEN m.state = 'pending' THEN 0 ELSE 1 END, m.requested_at DESC, \
     CAST(m.id AS BINARY) DESC";

const MAX_LOG_ID: &str = "SELECT CAST(COALESCE(MAX(id), 0) AS SIGNED) AS max_id FROM logs";

const LOG_COLUMNS: &str = "id, CAST(timestamp AS CHAR) AS timestamp, decky, service, \
     event_type, attacker_ip, raw_line, fields, msg, trace_id, span_id";

const LOG_STATS: &str = "SELECT (SELECT COUNT(*) FROM logs) AS total_logs, \
     (SELECT COUNT(DISTINCT attacker_ip) FROM logs) AS unique_attackers, \
     (SELECT COUNT(*) FROM topology_deckies WHERE state = 'running') AS running_topology_deckies, \
     (SELECT COUNT(*) FROM topology_deckies) AS topology_deckies";

impl SqlxEngine for MysqlRepository {
    const QUERIES: Queries = Queries {
        dialect: Dialect::Mysql,
        user_by_uuid: USER_BY_UUID,
        is_token_revoked: IS_TOKEN_REVOKED,
        all_users: ALL_USERS,
        attacker_by_uuid: ATTACKER_BY_UUID,
        attackers_of_identity: ATTACKERS_OF_IDENTITY,
        latest_per_primitive: LATEST_PER_PRIMITIVE,
        latest_per_primitive_binds: 2,
        recent_identities: RECENT_IDENTITIES,
        recent_campaigns: RECENT_CAMPAIGNS,
        recent_orchestrator_events: RECENT_ORCHESTRATOR_EVENTS,
        topology_status: TOPOLOGY_STATUS,
        in_flight_mutations: IN_FLIGHT_MUTATIONS,
        topology_begin: Some("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"),
        max_log_id: MAX_LOG_ID,
        log_columns: LOG_COLUMNS,
        log_stats: LOG_STATS,
        histogram_bucket: |width| {
            format!(
                "DATE_FORMAT(FROM_UNIXTIME((UNIX_TIMESTAMP(timestamp) DIV {width}) * {width}), \
             '%Y-%m-%d %H:%i:%s')"
            )
        },
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_decnets_url() {
        let config = MysqlConfig::from_url(
            "mysql+asyncmy://decnet:p%40ss+w%3Ard@db.internal:3307/decnet_prod",
        )
        .expect("valid");
        assert_eq!(config.host, "db.internal");
        assert_eq!(config.port, 3307);
        assert_eq!(config.user, "decnet");
        assert_eq!(config.password.as_deref(), Some("p@ss+w:rd"));
        assert_eq!(config.database, "decnet_prod");
        assert_eq!(config.ssl_mode, MysqlSslMode::Preferred);

        let bare = MysqlConfig::from_url("mysql://root@127.0.0.1").expect("valid");
        assert_eq!(
            (bare.port, bare.password, bare.database.as_str()),
            (3306, None, "decnet")
        );

        let tls = MysqlConfig::from_url(
            "mariadb://u:@[::1]:3306/x?charset=utf8mb4&ssl-mode=VERIFY_CA&ssl_ca=/etc/ca.pem",
        )
        .expect("valid");
        assert_eq!(tls.host, "::1");
        assert_eq!(tls.password.as_deref(), Some(""));
        assert_eq!(tls.ssl_mode, MysqlSslMode::VerifyCa);
        assert_eq!(tls.ssl_ca, Some(PathBuf::from("/etc/ca.pem")));

        for bad in [
            "postgres://u@h/db",
            "mysql:/h/db",
            "mysql://u@:3306/db",
            "mysql://u@h:0/db",
            "mysql://u@h:65536/db",
            "mysql://u@h:port/db",
            "mysql://u:%zz@h/db",
            "mysql://u@h/db?ssl-mode=sometimes",
        ] {
            let err = MysqlConfig::from_url(bad);
            assert!(matches!(err, Err(RepoError::Config(_))), "{bad}: {err:?}");
        }
        let err = MysqlConfig::from_url("mysql://u:hunter2@h:0/db").expect_err("bad port");
        let shown = format!("{err} {:?}", std::error::Error::source(&err));
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn components_take_decnets_defaults_and_require_a_password() {
        let config =
            MysqlConfig::from_components(None, None, None, None, Some("pw")).expect("valid");
        assert_eq!(
            (
                config.host.as_str(),
                config.port,
                config.database.as_str(),
                config.user.as_str()
            ),
            ("localhost", 3306, "decnet", "decnet")
        );
        let config = MysqlConfig::from_components(
            Some("db"),
            Some("3307"),
            Some("d"),
            Some("u"),
            Some("pw"),
        )
        .expect("valid");
        assert_eq!((config.host.as_str(), config.port), ("db", 3307));
        for password in [None, Some("")] {
            let err = MysqlConfig::from_components(None, None, None, None, password);
            assert!(matches!(err, Err(RepoError::Config(_))), "{err:?}");
        }
        for port in ["0", "70000", "x", "-1"] {
            let err = MysqlConfig::from_components(None, Some(port), None, None, Some("pw"));
            assert!(matches!(err, Err(RepoError::Config(_))), "{port}: {err:?}");
        }
        let shown = format!("{config:?}");
        assert!(!shown.contains("\"pw\""), "{shown}");
    }

    #[test]
    fn single_precision_reads_as_its_shortest_decimal() {
        assert_eq!(widen(0.9), 0.9);
        assert_eq!(widen(0.75), 0.75);
        assert_eq!(widen(1_718_000_128.0), 1_718_000_100.0);
        assert!(widen(f32::NAN).is_nan());
    }

    #[test]
    fn connect_needs_no_runtime_and_checks_its_config() {
        let config = MysqlConfig::from_url("mysql://root@127.0.0.1:1/x").expect("valid");
        assert!(MysqlRepository::connect(config.clone()).is_ok());
        let zero = MysqlRepository::connect(MysqlConfig {
            pool_size: 0,
            ..config
        });
        assert!(matches!(zero, Err(RepoError::Config(_))));
    }
}
