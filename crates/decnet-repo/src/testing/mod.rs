//! Test databases with DECNET's schema, and writers that fill them
//! (feature `testing`; for this workspace's test suites, never for
//! production).
//!
//! What it is: [`SqliteTestDb`] (feature `sqlite`: a temporary file made
//! from DECNET's SQLite DDL, in WAL mode as DECNET's engine sets it, or in
//! rollback-journal mode) and [`MysqlTestDb`] (feature `mysql`: a fresh
//! database made from DECNET's MySQL DDL on a server the test names, dropped
//! with the value), each with a [`RepositoryWriter`] that writes
//! DECNET-shaped rows with test-only SQL: users, revoked tokens, attackers,
//! observations, identities, campaigns, orchestrator events, topologies,
//! mutations, deckies and logs. The writer keeps the memory backend's
//! contract (upserts, the unknown-attacker check, constraint violations as
//! [`RepoError::InvalidData`]), so one case seeds every backend alike.
//! What it is not: a DECNET writer. The service only reads DECNET's
//! database; these writers stand in for DECNET's own, writing what it
//! writes (naive datetimes in the ORM's text form, JSON as text).
//!
//! The DDL is the repository's `testdata/decnet_schema.{sqlite,mysql}.sql`
//! (DECNET's Alembic schema, written down from DECNET.md §2.6), compiled in.
//!
//! Setup failures panic with what failed: these are test fixtures.

use std::time::SystemTime;

use futures::FutureExt;

use crate::{
    Attacker, CampaignRow, DbTime, IdentityRow, LogRow, MutationRow, Observation,
    OrchestratorEventRow, RepoError, RepoFuture, RepositoryWriter, User,
};

/// The values of one test-only SQL statement, bound in order.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    Float(f64),
    OptFloat(Option<f64>),
    Bool(bool),
    Bytes(Option<Vec<u8>>),
}

/// How a seeder's engine spells what differs.
pub(crate) trait Sql: Send + Sync {
    /// Run one statement; a unique/foreign-key violation is `InvalidData`.
    fn exec<'a>(&'a self, sql: String, vals: Vec<Val>) -> RepoFuture<'a, u64>;
    /// Run statements in one transaction.
    fn exec_tx<'a>(&'a self, stmts: Vec<(String, Vec<Val>)>) -> RepoFuture<'a, ()>;
    /// Whether a row exists (`SELECT 1 ...`).
    fn exists<'a>(&'a self, sql: String, vals: Vec<Val>) -> RepoFuture<'a, bool>;
    /// The id of an inserted log row.
    fn insert_returning_id<'a>(&'a self, sql: String, vals: Vec<Val>) -> RepoFuture<'a, i64>;
    /// `INSERT ... ON CONFLICT (key) DO UPDATE` or `ON DUPLICATE KEY UPDATE`.
    fn upsert(&self, table: &str, cols: &[&str], key: &str) -> String;
    /// `INSERT OR IGNORE` / `INSERT IGNORE`.
    fn insert_ignore(&self, table: &str, cols: &[&str]) -> String;
    /// How a datetime is written (naive or aware, as DECNET writes it).
    fn time(&self, at: DbTime) -> String;
}

fn insert(table: &str, cols: &[&str]) -> String {
    let marks = vec!["?"; cols.len()].join(", ");
    format!("INSERT INTO {table} ({}) VALUES ({marks})", cols.join(", "))
}

fn text(s: &str) -> Val {
    Val::Text(s.to_owned())
}

fn opt(s: &Option<String>) -> Val {
    Val::OptText(s.clone())
}

/// The DECNET ORM's naive SQLite text (always six fractional digits).
pub(crate) fn orm_text(at: DbTime) -> String {
    let utc = at.utc();
    format!(
        "{} {:02}:{:02}:{:02}.{:06}",
        &at.to_sql_seconds()[..10],
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.microsecond()
    )
}

/// Python's `isoformat()` of an aware UTC datetime (the mutator's form).
pub(crate) fn aware_text(at: DbTime) -> String {
    let utc = at.utc();
    let fraction = if utc.microsecond() == 0 {
        String::new()
    } else {
        format!(".{:06}", utc.microsecond())
    };
    format!(
        "{}T{}{fraction}+00:00",
        &at.to_sql_seconds()[..10],
        &at.to_sql_seconds()[11..]
    )
}

/// A [`RepositoryWriter`] over an engine's SQL.
pub(crate) struct Seeder<S: Sql>(pub(crate) S);

/// The columns the service reads from `table`, in DECNET's order
/// ([`crate::REQUIRED_COLUMNS`]): the writer fills exactly those (and, for
/// tables where DECNET requires more, its own lists below).
fn required(table: &str) -> &'static [&'static str] {
    crate::REQUIRED_COLUMNS
        .iter()
        .find(|(name, _)| *name == table)
        .map(|(_, columns)| *columns)
        .unwrap_or_else(|| panic!("{table} is not a table the service reads"))
}

const ATTACKER_COLS: &[&str] = &[
    "uuid",
    "ip",
    "identity_id",
    "first_seen",
    "last_seen",
    "event_count",
    "service_count",
    "decky_count",
    "services",
    "deckies",
    "is_traversal",
    "bounty_count",
    "credential_count",
    "fingerprints",
    "commands",
    "rotation_count",
    "ipv6_leak_count",
    "updated_at",
];

const TOPOLOGY_COLS: &[&str] = &[
    "id",
    "name",
    "mode",
    "config_snapshot",
    "status",
    "status_changed_at",
    "created_at",
    "version",
    "needs_resync",
    "email_personas",
    "language_default",
];

const DECKY_COLS: &[&str] = &[
    "uuid",
    "topology_id",
    "name",
    "services",
    "state",
    "updated_at",
];

const LOG_COLS: &[&str] = &[
    "timestamp",
    "decky",
    "service",
    "event_type",
    "attacker_ip",
    "raw_line",
    "fields",
    "msg",
    "trace_id",
    "span_id",
];

fn now_text<S: Sql>(s: &S) -> String {
    s.time(DbTime::from_system_time(SystemTime::now()).unwrap_or_else(|| panic!("now")))
}

impl<S: Sql> RepositoryWriter for Seeder<S> {
    fn upsert_attacker<'a>(&'a self, a: &'a Attacker) -> RepoFuture<'a, ()> {
        let s = &self.0;
        let now = now_text(s);
        let vals = vec![
            text(&a.uuid),
            text(&a.ip),
            opt(&a.identity_id),
            Val::Text(now.clone()),
            Val::Text(now.clone()),
            Val::Int(0),
            Val::Int(0),
            Val::Int(0),
            text("[]"),
            text("[]"),
            Val::Bool(false),
            Val::Int(0),
            Val::Int(0),
            text("[]"),
            text("[]"),
            Val::Int(0),
            Val::Int(0),
            Val::Text(now),
        ];
        let sql = s.upsert("attackers", ATTACKER_COLS, "uuid");
        async move { s.exec(sql, vals).await.map(drop) }.boxed()
    }

    fn upsert_observation<'a>(&'a self, o: &'a Observation) -> RepoFuture<'a, ()> {
        let s = &self.0;
        async move {
            if !s
                .exists(
                    "SELECT 1 FROM attackers WHERE uuid = ?".into(),
                    vec![text(&o.attacker_uuid)],
                )
                .await?
            {
                return Err(RepoError::InvalidData(format!(
                    "observation {} references unknown attacker {}",
                    o.id, o.attacker_uuid
                )));
            }
            let value = serde_json::to_string(&o.value)
                .map_err(|err| RepoError::InvalidData(err.to_string()))?;
            let vals = vec![
                text(&o.id),
                opt(&o.identity_ref),
                text(&o.primitive),
                Val::Text(value),
                Val::Float(o.confidence),
                Val::Float(o.window_start_ts),
                Val::Float(o.window_end_ts),
                text(&o.source),
                text(&o.evidence_ref),
                Val::Int(i64::from(o.envelope_v)),
                Val::Float(o.ts),
                text(&o.attacker_uuid),
            ];
            // Replace the row of the same (evidence_ref, primitive); a
            // clash on `id` with another row fails the insert and rolls
            // the delete back.
            s.exec_tx(vec![
                (
                    "DELETE FROM observations WHERE evidence_ref = ? AND primitive = ?".into(),
                    vec![text(&o.evidence_ref), text(&o.primitive)],
                ),
                (insert("observations", required("observations")), vals),
            ])
            .await
        }
        .boxed()
    }

    fn create_user<'a>(&'a self, u: &'a User) -> RepoFuture<'a, ()> {
        let s = &self.0;
        let valid_from = u
            .tokens_valid_from
            .map(|t| s.time(DbTime::from_system_time(t).unwrap_or_else(|| panic!("time"))));
        let vals = vec![
            text(&u.uuid),
            text(&u.username),
            text(&u.password_hash),
            text(&u.role),
            Val::Bool(u.must_change_password),
            Val::OptText(valid_from),
        ];
        let sql = s.upsert("users", required("users"), "uuid");
        async move {
            // MySQL's ON DUPLICATE KEY would update the other row.
            if s.exists(
                "SELECT 1 FROM users WHERE username = ? AND uuid <> ?".into(),
                vec![text(&u.username), text(&u.uuid)],
            )
            .await?
            {
                return Err(RepoError::InvalidData(format!(
                    "username {:?} already taken",
                    u.username
                )));
            }
            s.exec(sql, vals).await.map(drop)
        }
        .boxed()
    }

    fn delete_user<'a>(&'a self, uuid: &'a str) -> RepoFuture<'a, ()> {
        let s = &self.0;
        async move {
            s.exec("DELETE FROM users WHERE uuid = ?".into(), vec![text(uuid)])
                .await
                .map(drop)
        }
        .boxed()
    }

    fn set_attacker_identity<'a>(
        &'a self,
        attacker_uuid: &'a str,
        identity_id: Option<&'a str>,
    ) -> RepoFuture<'a, ()> {
        let s = &self.0;
        async move {
            if !s
                .exists(
                    "SELECT 1 FROM attackers WHERE uuid = ?".into(),
                    vec![text(attacker_uuid)],
                )
                .await?
            {
                return Err(RepoError::InvalidData(format!(
                    "unknown attacker {attacker_uuid}"
                )));
            }
            s.exec(
                "UPDATE attackers SET identity_id = ? WHERE uuid = ?".into(),
                vec![
                    Val::OptText(identity_id.map(str::to_owned)),
                    text(attacker_uuid),
                ],
            )
            .await
            .map(drop)
        }
        .boxed()
    }

    fn revoke_token<'a>(
        &'a self,
        jti: &'a str,
        user_uuid: &'a str,
        expires_at: SystemTime,
    ) -> RepoFuture<'a, ()> {
        let s = &self.0;
        let expires =
            s.time(DbTime::from_system_time(expires_at).unwrap_or_else(|| panic!("time")));
        let vals = vec![
            text(jti),
            text(user_uuid),
            Val::Text(expires),
            Val::Text(now_text(s)),
        ];
        let sql = s.insert_ignore(
            "revoked_tokens",
            &["jti", "user_uuid", "expires_at", "revoked_at"],
        );
        async move { s.exec(sql, vals).await.map(drop) }.boxed()
    }

    fn upsert_identity<'a>(&'a self, i: &'a IdentityRow) -> RepoFuture<'a, ()> {
        let s = &self.0;
        let t = |at: Option<DbTime>| Val::OptText(at.map(|at| s.time(at)));
        let vals = vec![
            text(&i.uuid),
            Val::Int(i.schema_version),
            opt(&i.campaign_id),
            t(i.first_seen_at),
            t(i.last_seen_at),
            Val::Text(s.time(i.created_at)),
            Val::Text(s.time(i.updated_at)),
            Val::OptFloat(i.confidence),
            Val::Int(i.observation_count),
            opt(&i.ja3_hashes),
            opt(&i.hassh_hashes),
            opt(&i.ja4h_hashes),
            opt(&i.ja4_quic_hashes),
            opt(&i.http_versions_seen),
            opt(&i.tls_cert_sha256),
            opt(&i.ipv6_link_local_iids),
            opt(&i.payload_simhashes),
            opt(&i.c2_endpoints),
            Val::Bytes(i.kd_digraph_simhash.as_ref().map(|h| h.0.clone())),
            opt(&i.merged_into_uuid),
            opt(&i.notes),
        ];
        let sql = s.upsert(
            "attacker_identities",
            required("attacker_identities"),
            "uuid",
        );
        async move { s.exec(sql, vals).await.map(drop) }.boxed()
    }

    fn upsert_campaign<'a>(&'a self, c: &'a CampaignRow) -> RepoFuture<'a, ()> {
        let s = &self.0;
        let t = |at: Option<DbTime>| Val::OptText(at.map(|at| s.time(at)));
        let vals = vec![
            text(&c.uuid),
            Val::Int(c.schema_version),
            t(c.first_seen_at),
            t(c.last_seen_at),
            Val::Text(s.time(c.created_at)),
            Val::Text(s.time(c.updated_at)),
            Val::OptFloat(c.confidence),
            Val::Int(c.identity_count),
            opt(&c.ja3_hashes),
            opt(&c.hassh_hashes),
            opt(&c.tls_cert_sha256),
            opt(&c.payload_simhashes),
            opt(&c.c2_endpoints),
            opt(&c.merged_into_uuid),
            opt(&c.notes),
        ];
        let sql = s.upsert("campaigns", required("campaigns"), "uuid");
        async move { s.exec(sql, vals).await.map(drop) }.boxed()
    }

    fn insert_orchestrator_event<'a>(&'a self, e: &'a OrchestratorEventRow) -> RepoFuture<'a, ()> {
        let s = &self.0;
        let vals = vec![
            text(&e.uuid),
            Val::Text(s.time(e.ts)),
            text(&e.kind),
            text(&e.protocol),
            text(&e.action),
            opt(&e.src_decky_uuid),
            text(&e.dst_decky_uuid),
            Val::Bool(e.success),
            text(&e.payload),
        ];
        async move {
            s.exec(
                insert("orchestrator_events", required("orchestrator_events")),
                vals,
            )
            .await
            .map(drop)
        }
        .boxed()
    }

    fn upsert_topology<'a>(
        &'a self,
        id: &'a str,
        name: &'a str,
        status: &'a str,
    ) -> RepoFuture<'a, ()> {
        let s = &self.0;
        let now = now_text(s);
        let vals = vec![
            text(id),
            text(name),
            text("unihost"),
            text("{}"),
            text(status),
            Val::Text(now.clone()),
            Val::Text(now),
            Val::Int(1),
            Val::Bool(false),
            text("[]"),
            text("en"),
        ];
        let sql = s.upsert("topologies", TOPOLOGY_COLS, "id");
        async move {
            if s.exists(
                "SELECT 1 FROM topologies WHERE name = ? AND id <> ?".into(),
                vec![text(name), text(id)],
            )
            .await?
            {
                return Err(RepoError::InvalidData(format!(
                    "topology name {name:?} already taken"
                )));
            }
            s.exec(sql, vals).await.map(drop)
        }
        .boxed()
    }

    fn upsert_mutation<'a>(&'a self, m: &'a MutationRow) -> RepoFuture<'a, ()> {
        let s = &self.0;
        let vals = vec![
            text(&m.id),
            text(&m.topology_id),
            text(&m.op),
            text(&m.payload),
            text(&m.state),
            Val::Text(s.time(m.requested_at)),
            Val::OptText(m.applied_at.map(|at| s.time(at))),
            opt(&m.reason),
        ];
        let sql = s.upsert("topology_mutations", required("topology_mutations"), "id");
        async move { s.exec(sql, vals).await.map(drop) }.boxed()
    }

    fn insert_topology_decky<'a>(
        &'a self,
        topology_id: &'a str,
        name: &'a str,
        state: &'a str,
    ) -> RepoFuture<'a, ()> {
        let s = &self.0;
        let vals = vec![
            Val::Text(format!("{topology_id}/{name}")),
            text(topology_id),
            text(name),
            text("[]"),
            text(state),
            Val::Text(now_text(s)),
        ];
        async move {
            s.exec(insert("topology_deckies", DECKY_COLS), vals)
                .await
                .map(drop)
        }
        .boxed()
    }

    fn insert_log<'a>(&'a self, row: &'a LogRow) -> RepoFuture<'a, i64> {
        let s = &self.0;
        let vals = vec![
            Val::Text(s.time(row.timestamp)),
            text(&row.decky),
            text(&row.service),
            text(&row.event_type),
            text(&row.attacker_ip),
            text(&row.raw_line),
            text(&row.fields),
            opt(&row.msg),
            opt(&row.trace_id),
            opt(&row.span_id),
        ];
        async move { s.insert_returning_id(insert("logs", LOG_COLS), vals).await }.boxed()
    }
}

/// `bind`: a seeder statement's values onto a sqlx query of engine `$db`
/// (the same on both engines but for the types).
#[cfg(any(feature = "sqlite", feature = "mysql"))]
macro_rules! sqlx_statements {
    ($db:ty, $args:ty) => {
        fn bind(
            mut q: sqlx_core::query::Query<'_, $db, $args>,
            vals: Vec<Val>,
        ) -> sqlx_core::query::Query<'_, $db, $args> {
            for val in vals {
                q = match val {
                    Val::Text(v) => q.bind(v),
                    Val::OptText(v) => q.bind(v),
                    Val::Int(v) => q.bind(v),
                    Val::Float(v) => q.bind(v),
                    Val::OptFloat(v) => q.bind(v),
                    Val::Bool(v) => q.bind(v),
                    Val::Bytes(v) => q.bind(v),
                };
            }
            q
        }
    };
}

/// [`Sql::exec`], [`Sql::exec_tx`] and [`Sql::exists`] on a pool (`self.0`),
/// the same on both engines.
macro_rules! sqlx_statement_methods {
    () => {
        fn exec<'a>(&'a self, sql: String, vals: Vec<Val>) -> RepoFuture<'a, u64> {
            async move {
                bind(query(AssertSqlSafe(sql)), vals)
                    .execute(&self.0)
                    .await
                    .map(|r| r.rows_affected())
                    .map_err(seed_error)
            }
            .boxed()
        }

        fn exec_tx<'a>(&'a self, stmts: Vec<(String, Vec<Val>)>) -> RepoFuture<'a, ()> {
            async move {
                let mut conn = self.0.acquire().await.map_err(seed_error)?;
                let mut tx = conn.begin().await.map_err(seed_error)?;
                for (sql, vals) in stmts {
                    bind(query(AssertSqlSafe(sql)), vals)
                        .execute(&mut *tx)
                        .await
                        .map_err(seed_error)?;
                }
                tx.commit().await.map_err(seed_error)
            }
            .boxed()
        }

        fn exists<'a>(&'a self, sql: String, vals: Vec<Val>) -> RepoFuture<'a, bool> {
            async move {
                bind(query(AssertSqlSafe(sql)), vals)
                    .fetch_optional(&self.0)
                    .await
                    .map(|row| row.is_some())
                    .map_err(seed_error)
            }
            .boxed()
        }
    };
}

/// A unique-constraint or foreign-key failure of a writing statement is
/// `InvalidData` (the memory backend's contract); anything else a query error.
fn seed_error(err: sqlx_core::Error) -> RepoError {
    match &err {
        sqlx_core::Error::Database(db)
            if db.is_unique_violation() || db.is_foreign_key_violation() =>
        {
            RepoError::InvalidData(db.message().to_owned())
        }
        _ => RepoError::Query(Box::new(err)),
    }
}

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "mysql")]
pub use mysql::{MYSQL_DDL, MysqlTestDb, mysql_admin, mysql_url_for};
#[cfg(feature = "sqlite")]
pub use sqlite::{HeldWrite, SQLITE_DDL, SqliteTestDb, TempDbFile, sqlite_writer_pool};
