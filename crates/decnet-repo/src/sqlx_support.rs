//! What the SQLite and MySQL backends share: a pooled connection that is
//! closed rather than reused after an abandoned or failed call, the mapping
//! of sqlx errors onto [`RepoError`], the per-call deadline, and the parts of
//! row decoding that do not depend on the engine.

use std::time::Duration;

use sqlx_core::arguments::IntoArguments;
use sqlx_core::connection::Connection;
use sqlx_core::database::Database;
use sqlx_core::encode::Encode;
use sqlx_core::error::DatabaseError;
use sqlx_core::executor::Executor;
use sqlx_core::pool::{Pool, PoolConnection};
use sqlx_core::query::{Query, query};
use sqlx_core::sql_str::AssertSqlSafe;
use sqlx_core::types::Type;

use crate::{DbTime, RepoError, TopologySnapshot};

/// A configuration that cannot work (bad URL, empty pool, ...).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConfigError(pub(crate) String);

/// A call that did not finish within its deadline.
#[derive(Debug, thiserror::Error)]
#[error("{engine} call exceeded its {deadline:?} deadline")]
pub(crate) struct DeadlineExceeded {
    pub(crate) engine: &'static str,
    pub(crate) deadline: Duration,
}

/// A pooled connection that is no longer usable.
#[derive(Debug, thiserror::Error)]
#[error("connection already discarded")]
pub(crate) struct Discarded;

/// `RepoError::Config` with a message.
pub(crate) fn config_error(message: impl Into<String>) -> RepoError {
    RepoError::Config(Box::new(ConfigError(message.into())))
}

/// Run one repository call under `deadline`: past it the call is dropped
/// (its connection closed, see [`Conn`]) and the caller gets
/// [`RepoError::Unavailable`].
pub(crate) async fn bounded<T>(
    engine: &'static str,
    deadline: Duration,
    call: impl Future<Output = Result<T, RepoError>>,
) -> Result<T, RepoError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(res) => res,
        Err(_elapsed) => Err(RepoError::Unavailable(Box::new(DeadlineExceeded {
            engine,
            deadline,
        }))),
    }
}

/// How a backend sorts the database errors of its engine.
pub(crate) trait Classify {
    /// Whether a server-side error means "cannot serve now" (busy, locked,
    /// timed out, shutting down) rather than "bad query".
    fn unavailable(err: &dyn DatabaseError) -> bool;
}

/// Map an error from a query (not from checking out a connection).
pub(crate) fn query_error<C: Classify>(err: sqlx_core::Error) -> RepoError {
    use sqlx_core::Error as E;
    match err {
        E::Database(db) if C::unavailable(db.as_ref()) => {
            RepoError::Unavailable(Box::new(E::Database(db)))
        }
        E::Io(_)
        | E::Tls(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed
        | E::Protocol(_)
        | E::Configuration(_) => RepoError::Unavailable(Box::new(err)),
        E::ColumnDecode { .. }
        | E::Decode(_)
        | E::ColumnNotFound(_)
        | E::ColumnIndexOutOfBounds { .. }
        | E::TypeNotFound { .. } => RepoError::InvalidData(err.to_string()),
        other => RepoError::Query(Box::new(other)),
    }
}

/// A checked-out connection. Dropped while a query is in flight (the call
/// was cancelled or hit its deadline), or after the connection failed, it is
/// closed instead of going back to the pool.
pub(crate) struct Conn<DB: Database> {
    inner: Option<PoolConnection<DB>>,
    in_flight: bool,
}

impl<DB: Database> Conn<DB> {
    /// Check a connection out of `pool`. Every failure here (wait timeout,
    /// connect error, closed pool, a refused login) means "not reachable now".
    pub(crate) async fn acquire(pool: &Pool<DB>) -> Result<Self, RepoError> {
        let conn = pool
            .acquire()
            .await
            .map_err(|err| RepoError::Unavailable(Box::new(err)))?;
        Ok(Conn {
            inner: Some(conn),
            in_flight: false,
        })
    }

    /// The connection, for one query; pair every use with [`Conn::settle`].
    pub(crate) fn raw(&mut self) -> Result<&mut DB::Connection, RepoError> {
        self.in_flight = true;
        match self.inner.as_mut() {
            Some(conn) => Ok(&mut **conn),
            None => Err(RepoError::Unavailable(Box::new(Discarded))),
        }
    }

    /// The outcome of the query started with [`Conn::raw`], mapped; a
    /// connection whose query failed with "unavailable" is closed on drop.
    pub(crate) fn settle<T, C: Classify>(
        &mut self,
        res: Result<T, sqlx_core::Error>,
    ) -> Result<T, RepoError> {
        match res {
            Ok(value) => {
                self.in_flight = false;
                Ok(value)
            }
            Err(err) => {
                let err = query_error::<C>(err);
                self.in_flight = err.is_unavailable();
                Err(err)
            }
        }
    }
}

impl<DB: Database> Drop for Conn<DB> {
    fn drop(&mut self) {
        if self.in_flight
            && let Some(mut conn) = self.inner.take()
        {
            conn.close_on_drop();
        }
    }
}

/// One bound value of a query.
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    /// A text parameter.
    Text(String),
    /// An integer parameter.
    Int(i64),
}

/// `value` as a text parameter.
pub(crate) fn text(value: &str) -> Bind {
    Bind::Text(value.to_owned())
}

/// The two reads of [`fetch_head_and_rest`]: the head row, every row of the rest.
pub(crate) type HeadAndRest<R> = (R, Vec<R>);

/// A SQL backend's query plumbing: a pool, its engine's error rules and the
/// per-call deadline. The engines implement [`Fetch::fetch_all`] with
/// [`fetch_all`]; the rest is shared.
pub(crate) trait Fetch: Sync {
    /// The engine's row.
    type Row: Send;

    /// Run `sql` with `binds` and return every row, under the call deadline.
    fn fetch_all(
        &self,
        sql: &str,
        binds: Vec<Bind>,
    ) -> impl Future<Output = Result<Vec<Self::Row>, RepoError>> + Send;

    /// Two reads in one transaction, as [`fetch_head_and_rest`] does.
    fn fetch_head_and_rest(
        &self,
        begin: Option<&'static str>,
        head: (&'static str, Vec<Bind>),
        rest: (&'static str, Vec<Bind>),
    ) -> impl Future<Output = Result<Option<HeadAndRest<Self::Row>>, RepoError>> + Send;

    /// [`Fetch::fetch_all`], at most one row.
    fn fetch_optional(
        &self,
        sql: &str,
        binds: Vec<Bind>,
    ) -> impl Future<Output = Result<Option<Self::Row>, RepoError>> + Send {
        async move { Ok(self.fetch_all(sql, binds).await?.into_iter().next()) }
    }

    /// [`Fetch::fetch_all`], exactly one row (`InvalidData` without one).
    fn fetch_one(
        &self,
        sql: &str,
        binds: Vec<Bind>,
    ) -> impl Future<Output = Result<Self::Row, RepoError>> + Send {
        async move {
            self.fetch_optional(sql, binds)
                .await?
                .ok_or_else(|| RepoError::InvalidData(format!("no row from {sql:?}")))
        }
    }
}

/// `sql` with `binds` bound in order.
fn bound<'q, DB>(sql: &'q str, binds: Vec<Bind>) -> Query<'q, DB, <DB as Database>::Arguments>
where
    DB: Database,
    String: for<'t> Encode<'t, DB> + Type<DB>,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
{
    let mut q = query::<DB>(AssertSqlSafe(sql));
    for bind in binds {
        q = match bind {
            Bind::Text(text) => q.bind(text),
            Bind::Int(n) => q.bind(n),
        };
    }
    q
}

/// Run `sql` with `binds` on a connection of `pool` under `deadline`, the
/// errors sorted by `C` (see [`Conn`] for what happens to the connection).
pub(crate) async fn fetch_all<DB, C>(
    engine: &'static str,
    pool: &Pool<DB>,
    deadline: Duration,
    sql: &str,
    binds: Vec<Bind>,
) -> Result<Vec<DB::Row>, RepoError>
where
    DB: Database,
    C: Classify,
    String: for<'t> Encode<'t, DB> + Type<DB>,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    bounded(engine, deadline, async {
        let mut conn = Conn::acquire(pool).await?;
        let res = bound::<DB>(sql, binds).fetch_all(conn.raw()?).await;
        conn.settle::<_, C>(res)
    })
    .await
}

/// A failure inside a multi-statement call: from sqlx (mapped by
/// [`Conn::settle`]) or already a [`RepoError`].
enum Step {
    Sql(sqlx_core::Error),
    Repo(RepoError),
}

impl From<RepoError> for Step {
    fn from(err: RepoError) -> Self {
        Step::Repo(err)
    }
}

/// Two reads in one transaction (opened with `begin`, or the engine's
/// default `BEGIN`), under `deadline`: `head` (at most one row) and, when it
/// has its row, every row of `rest`. `None` when `head` finds nothing.
pub(crate) async fn fetch_head_and_rest<DB, C>(
    engine: &'static str,
    pool: &Pool<DB>,
    deadline: Duration,
    begin: Option<&'static str>,
    head: (&'static str, Vec<Bind>),
    rest: (&'static str, Vec<Bind>),
) -> Result<Option<HeadAndRest<DB::Row>>, RepoError>
where
    DB: Database,
    C: Classify,
    String: for<'t> Encode<'t, DB> + Type<DB>,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    bounded(engine, deadline, async move {
        let mut conn = Conn::acquire(pool).await?;
        let res: Result<_, Step> = async {
            let raw = conn.raw()?;
            let mut tx = match begin {
                Some(statement) => raw.begin_with(AssertSqlSafe(statement.to_owned())).await,
                None => raw.begin().await,
            }
            .map_err(Step::Sql)?;
            let first = bound::<DB>(head.0, head.1)
                .fetch_optional(&mut *tx)
                .await
                .map_err(Step::Sql)?;
            let Some(first) = first else {
                tx.commit().await.map_err(Step::Sql)?;
                return Ok(None);
            };
            let rows = bound::<DB>(rest.0, rest.1)
                .fetch_all(&mut *tx)
                .await
                .map_err(Step::Sql)?;
            tx.commit().await.map_err(Step::Sql)?;
            Ok(Some((first, rows)))
        }
        .await;
        let res = match res {
            Ok(value) => Ok(value),
            Err(Step::Sql(err)) => Err(err),
            Err(Step::Repo(err)) => return Err(err),
        };
        conn.settle::<_, C>(res)
    })
    .await
}

/// `InvalidData` for a value a row holds that this crate cannot represent.
pub(crate) fn invalid(what: impl std::fmt::Display, detail: impl std::fmt::Display) -> RepoError {
    RepoError::InvalidData(format!("{what}: {detail}"))
}

/// A stored datetime text (SQLite's two forms, MySQL's `CAST(.. AS CHAR)`).
pub(crate) fn parse_time(text: &str, what: impl std::fmt::Display) -> Result<DbTime, RepoError> {
    DbTime::parse(text).map_err(|err| invalid(what, err))
}

/// [`parse_time`] for a nullable column.
pub(crate) fn parse_opt_time(
    text: Option<String>,
    what: impl std::fmt::Display,
) -> Result<Option<DbTime>, RepoError> {
    text.map(|t| parse_time(&t, what)).transpose()
}

/// A JSON document stored as text (`observations.value`).
pub(crate) fn parse_json(
    text: &str,
    what: impl std::fmt::Display,
) -> Result<serde_json::Value, RepoError> {
    serde_json::from_str(text).map_err(|err| invalid(what, err))
}

/// Count `n` from SQL as `i64` (SQLite and MySQL both give signed counts).
pub(crate) fn limit(n: u32) -> i64 {
    i64::from(n)
}

/// Typed access to one row's columns, implemented per engine; every miss
/// is `InvalidData` naming the column.
pub(crate) trait Cells {
    /// A non-null text column.
    fn text(&self, col: &str) -> Result<String, RepoError>;
    /// A nullable text column.
    fn opt_text(&self, col: &str) -> Result<Option<String>, RepoError>;
    /// A non-null integer column.
    fn int(&self, col: &str) -> Result<i64, RepoError>;
    /// A non-null floating-point column.
    fn float(&self, col: &str) -> Result<f64, RepoError>;
    /// A nullable floating-point column.
    fn opt_float(&self, col: &str) -> Result<Option<f64>, RepoError>;
    /// A boolean column (0/1).
    fn flag(&self, col: &str) -> Result<bool, RepoError>;
    /// A nullable binary column.
    fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>, RepoError>;
    /// A JSON column, decoded.
    fn json(&self, col: &str) -> Result<serde_json::Value, RepoError>;

    /// A non-null datetime column, selected as text.
    fn time(&self, col: &str) -> Result<DbTime, RepoError> {
        parse_time(&self.text(col)?, format_args!("column {col}"))
    }

    /// A nullable datetime column, selected as text.
    fn opt_time(&self, col: &str) -> Result<Option<DbTime>, RepoError> {
        parse_opt_time(self.opt_text(col)?, format_args!("column {col}"))
    }
}

/// A topology's snapshot from its `status` row and its in-flight mutation
/// rows.
pub(crate) fn topology_from<R: Cells>(
    status: &R,
    mutations: &[R],
) -> Result<TopologySnapshot, RepoError> {
    Ok(TopologySnapshot {
        status: status.text("status")?,
        in_flight: mutations
            .iter()
            .map(mutation_from)
            .collect::<Result<_, _>>()?,
    })
}

/// An `i64` from SQL as the `i32` a row type holds.
fn narrow(value: i64, col: &str) -> Result<i32, RepoError> {
    i32::try_from(value).map_err(|err| invalid(format_args!("column {col}"), err))
}

pub(crate) fn user_from(row: &impl Cells) -> Result<crate::User, RepoError> {
    Ok(crate::User {
        uuid: row.text("uuid")?,
        username: row.text("username")?,
        password_hash: row.text("password_hash")?,
        role: row.text("role")?,
        must_change_password: row.flag("must_change_password")?,
        tokens_valid_from: row
            .opt_time("tokens_valid_from")?
            .map(DbTime::to_system_time),
    })
}

pub(crate) fn attacker_from(row: &impl Cells) -> Result<crate::Attacker, RepoError> {
    Ok(crate::Attacker {
        uuid: row.text("uuid")?,
        ip: row.text("ip")?,
        identity_id: row.opt_text("identity_id")?,
    })
}

pub(crate) fn observation_from(row: &impl Cells) -> Result<crate::Observation, RepoError> {
    Ok(crate::Observation {
        id: row.text("id")?,
        identity_ref: row.opt_text("identity_ref")?,
        primitive: row.text("primitive")?,
        value: row.json("value")?,
        confidence: row.float("confidence")?,
        window_start_ts: row.float("window_start_ts")?,
        window_end_ts: row.float("window_end_ts")?,
        source: row.text("source")?,
        evidence_ref: row.text("evidence_ref")?,
        envelope_v: narrow(row.int("envelope_v")?, "envelope_v")?,
        ts: row.float("ts")?,
        attacker_uuid: row.text("attacker_uuid")?,
    })
}

pub(crate) fn identity_from(row: &impl Cells) -> Result<crate::IdentityRow, RepoError> {
    Ok(crate::IdentityRow {
        uuid: row.text("uuid")?,
        schema_version: row.int("schema_version")?,
        campaign_id: row.opt_text("campaign_id")?,
        first_seen_at: row.opt_time("first_seen_at")?,
        last_seen_at: row.opt_time("last_seen_at")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
        confidence: row.opt_float("confidence")?,
        observation_count: row.int("observation_count")?,
        ja3_hashes: row.opt_text("ja3_hashes")?,
        hassh_hashes: row.opt_text("hassh_hashes")?,
        ja4h_hashes: row.opt_text("ja4h_hashes")?,
        ja4_quic_hashes: row.opt_text("ja4_quic_hashes")?,
        http_versions_seen: row.opt_text("http_versions_seen")?,
        tls_cert_sha256: row.opt_text("tls_cert_sha256")?,
        ipv6_link_local_iids: row.opt_text("ipv6_link_local_iids")?,
        payload_simhashes: row.opt_text("payload_simhashes")?,
        c2_endpoints: row.opt_text("c2_endpoints")?,
        kd_digraph_simhash: row.opt_bytes("kd_digraph_simhash")?.map(crate::HexBytes),
        merged_into_uuid: row.opt_text("merged_into_uuid")?,
        notes: row.opt_text("notes")?,
    })
}

pub(crate) fn campaign_from(row: &impl Cells) -> Result<crate::CampaignRow, RepoError> {
    Ok(crate::CampaignRow {
        uuid: row.text("uuid")?,
        schema_version: row.int("schema_version")?,
        first_seen_at: row.opt_time("first_seen_at")?,
        last_seen_at: row.opt_time("last_seen_at")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
        confidence: row.opt_float("confidence")?,
        identity_count: row.int("identity_count")?,
        ja3_hashes: row.opt_text("ja3_hashes")?,
        hassh_hashes: row.opt_text("hassh_hashes")?,
        tls_cert_sha256: row.opt_text("tls_cert_sha256")?,
        payload_simhashes: row.opt_text("payload_simhashes")?,
        c2_endpoints: row.opt_text("c2_endpoints")?,
        merged_into_uuid: row.opt_text("merged_into_uuid")?,
        notes: row.opt_text("notes")?,
    })
}

pub(crate) fn orchestrator_event_from(
    row: &impl Cells,
) -> Result<crate::OrchestratorEventRow, RepoError> {
    Ok(crate::OrchestratorEventRow {
        uuid: row.text("uuid")?,
        ts: row.time("ts")?,
        kind: row.text("kind")?,
        protocol: row.text("protocol")?,
        action: row.text("action")?,
        src_decky_uuid: row.opt_text("src_decky_uuid")?,
        dst_decky_uuid: row.text("dst_decky_uuid")?,
        success: row.flag("success")?,
        payload: row.text("payload")?,
    })
}

pub(crate) fn mutation_from(row: &impl Cells) -> Result<crate::MutationRow, RepoError> {
    Ok(crate::MutationRow {
        id: row.text("id")?,
        topology_id: row.text("topology_id")?,
        op: row.text("op")?,
        payload: row.text("payload")?,
        state: row.text("state")?,
        requested_at: row.time("requested_at")?,
        applied_at: row.opt_time("applied_at")?,
        reason: row.opt_text("reason")?,
    })
}

pub(crate) fn log_from(row: &impl Cells) -> Result<crate::LogRow, RepoError> {
    Ok(crate::LogRow {
        id: row.int("id")?,
        timestamp: row.time("timestamp")?,
        decky: row.text("decky")?,
        service: row.text("service")?,
        event_type: row.text("event_type")?,
        attacker_ip: row.text("attacker_ip")?,
        raw_line: row.text("raw_line")?,
        fields: row.text("fields")?,
        msg: row.opt_text("msg")?,
        trace_id: row.opt_text("trace_id")?,
        span_id: row.opt_text("span_id")?,
    })
}

pub(crate) fn stats_from(row: &impl Cells) -> Result<crate::LogStats, RepoError> {
    Ok(crate::LogStats {
        total_logs: row.int("total_logs")?,
        unique_attackers: row.int("unique_attackers")?,
        running_topology_deckies: row.int("running_topology_deckies")?,
        topology_deckies: row.int("topology_deckies")?,
    })
}

/// Rows of `(table, column)` names into [`crate::schema::compare`].
pub(crate) fn compare_schema(
    pairs: impl IntoIterator<Item = (String, String)>,
) -> Result<(), RepoError> {
    let mut tables: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (table, column) in pairs {
        tables
            .entry(table.to_ascii_lowercase())
            .or_default()
            .push(column.to_ascii_lowercase());
    }
    crate::schema::compare(|table| tables.get(table).cloned()).map_err(RepoError::Schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_json_parse_or_name_what_failed() {
        assert!(parse_time("2026-06-20 12:00:00.000001", "t").is_ok());
        let err = parse_time("yesterday", "logs.timestamp of row 7").expect_err("bad");
        assert!(err.to_string().contains("logs.timestamp of row 7"), "{err}");
        assert_eq!(parse_opt_time(None, "x").ok(), Some(None));
        assert!(parse_json("{\"a\":", "observations.value of o1").is_err());
        assert_eq!(limit(50), 50);
    }
}
