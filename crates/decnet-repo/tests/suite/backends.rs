//! The backends a case runs against, each fresh per test, and the seeders
//! that write DECNET-shaped rows into SQLite and MySQL with test-only SQL
//! (those backends are readers only).

#![allow(dead_code, reason = "each backend module uses part of the helpers")]

use std::any::Any;
use std::sync::Arc;

use decnet_repo::{MemoryRepository, Repository, RepositoryWriter};

/// Which engine a case is running on (cases assert each engine's own answer
/// where DECNET's engines legitimately differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Memory,
    Postgres,
    Sqlite,
    Mysql,
}

/// A backend under test: its reader, a writer to seed it, and whatever keeps
/// its database alive (dropped last: a schema, a database, a file).
pub(crate) struct Db {
    pub(crate) repo: Arc<dyn Repository>,
    pub(crate) w: Arc<dyn RepositoryWriter>,
    pub(crate) engine: Engine,
    /// Whether the histogram reads a stored time rounded to milliseconds
    /// (SQLite up to 3.4x, as DECNET's hosts run it, and the backends that
    /// follow it), so `10:14:59.999999` lands in the next bucket. Newer
    /// SQLite clamps such a fraction to `.999` instead; MySQL keeps no
    /// fraction at all.
    pub(crate) ms_rounding: bool,
    pub(crate) _guard: Box<dyn Any + Send>,
}

pub(crate) fn memory() -> Db {
    let repo = Arc::new(MemoryRepository::new());
    Db {
        repo: repo.clone(),
        w: repo,
        engine: Engine::Memory,
        ms_rounding: true,
        _guard: Box::new(()),
    }
}

#[cfg(feature = "postgres")]
pub(crate) async fn postgres(url: &str) -> Db {
    let (schema, guard) = test_support::pg::fresh_schema(url).await;
    let repo = Arc::new(crate::pg::migrated(url, &schema).await);
    Db {
        repo: repo.clone(),
        w: repo,
        engine: Engine::Postgres,
        ms_rounding: true,
        _guard: Box::new(guard),
    }
}

/// Test-only SQL writes shared by the SQLite and MySQL seeders: the
/// values of one statement, bound in order.
#[cfg(any(feature = "sqlite", feature = "mysql"))]
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

#[cfg(any(feature = "sqlite", feature = "mysql"))]
pub(crate) mod seed {
    //! The writer contract of the memory backend, in SQL against DECNET's
    //! schema: upserts, the unknown-attacker check, constraint violations
    //! as `InvalidData`.

    use std::time::SystemTime;

    use decnet_repo::{
        Attacker, CampaignRow, DbTime, IdentityRow, LogRow, MutationRow, Observation,
        OrchestratorEventRow, RepoError, RepoFuture, RepositoryWriter, User,
    };
    use futures::FutureExt;

    use super::Val;

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

    const OBSERVATION_COLS: &[&str] = &[
        "id",
        "identity_ref",
        "primitive",
        "value",
        "confidence",
        "window_start_ts",
        "window_end_ts",
        "source",
        "evidence_ref",
        "envelope_v",
        "ts",
        "attacker_uuid",
    ];

    const USER_COLS: &[&str] = &[
        "uuid",
        "username",
        "password_hash",
        "role",
        "must_change_password",
        "tokens_valid_from",
    ];

    const IDENTITY_COLS: &[&str] = &[
        "uuid",
        "schema_version",
        "campaign_id",
        "first_seen_at",
        "last_seen_at",
        "created_at",
        "updated_at",
        "confidence",
        "observation_count",
        "ja3_hashes",
        "hassh_hashes",
        "ja4h_hashes",
        "ja4_quic_hashes",
        "http_versions_seen",
        "tls_cert_sha256",
        "ipv6_link_local_iids",
        "payload_simhashes",
        "c2_endpoints",
        "kd_digraph_simhash",
        "merged_into_uuid",
        "notes",
    ];

    const CAMPAIGN_COLS: &[&str] = &[
        "uuid",
        "schema_version",
        "first_seen_at",
        "last_seen_at",
        "created_at",
        "updated_at",
        "confidence",
        "identity_count",
        "ja3_hashes",
        "hassh_hashes",
        "tls_cert_sha256",
        "payload_simhashes",
        "c2_endpoints",
        "merged_into_uuid",
        "notes",
    ];

    const EVENT_COLS: &[&str] = &[
        "uuid",
        "ts",
        "kind",
        "protocol",
        "action",
        "src_decky_uuid",
        "dst_decky_uuid",
        "success",
        "payload",
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

    const MUTATION_COLS: &[&str] = &[
        "id",
        "topology_id",
        "op",
        "payload",
        "state",
        "requested_at",
        "applied_at",
        "reason",
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
                    (insert("observations", OBSERVATION_COLS), vals),
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
            let sql = s.upsert("users", USER_COLS, "uuid");
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
            let sql = s.upsert("attacker_identities", IDENTITY_COLS, "uuid");
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
            let sql = s.upsert("campaigns", CAMPAIGN_COLS, "uuid");
            async move { s.exec(sql, vals).await.map(drop) }.boxed()
        }

        fn insert_orchestrator_event<'a>(
            &'a self,
            e: &'a OrchestratorEventRow,
        ) -> RepoFuture<'a, ()> {
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
                s.exec(insert("orchestrator_events", EVENT_COLS), vals)
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
            let sql = s.upsert("topology_mutations", MUTATION_COLS, "id");
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
}

/// A unique-constraint or foreign-key failure of a seeding statement.
#[cfg(any(feature = "sqlite", feature = "mysql"))]
fn seed_error(err: sqlx_core::Error) -> decnet_repo::RepoError {
    match &err {
        sqlx_core::Error::Database(db)
            if db.is_unique_violation() || db.is_foreign_key_violation() =>
        {
            decnet_repo::RepoError::InvalidData(db.message().to_owned())
        }
        _ => decnet_repo::RepoError::Query(Box::new(err)),
    }
}

#[cfg(feature = "sqlite")]
pub(crate) mod sqlite {
    //! One temporary SQLite file per test, made from DECNET's DDL, in WAL
    //! mode as DECNET's engine sets it.

    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::Duration;

    use decnet_repo::{DbTime, RepoFuture, SqliteConfig, SqliteRepository};
    use futures::FutureExt;
    use sqlx_core::connection::Connection;
    use sqlx_core::query::query;
    use sqlx_core::raw_sql::raw_sql;
    use sqlx_core::row::Row;
    use sqlx_core::sql_str::AssertSqlSafe;
    use sqlx_sqlite::{
        Sqlite, SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool,
        SqlitePoolOptions,
    };

    use super::seed::{Seeder, Sql, aware_text, orm_text};
    use super::{Db, Engine, Val, seed_error};

    pub(crate) const DDL: &str = include_str!("../../../../testdata/decnet_schema.sqlite.sql");

    /// Deletes the database file and its WAL companions.
    pub(crate) struct TempDb(pub(crate) PathBuf);

    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut path = self.0.clone().into_os_string();
                path.push(suffix);
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// A fresh path in the temp directory (not created).
    pub(crate) fn temp_path() -> TempDb {
        TempDb(std::env::temp_dir().join(format!(
            "decnet-repo-suite-{}.db",
            test_support::unique_suffix()
        )))
    }

    /// A read-write pool on `path` (the seeder's; DECNET's writer stand-in).
    pub(crate) fn writer_pool(path: &Path, wal: bool) -> SqlitePool {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .foreign_keys(false)
            .busy_timeout(Duration::from_secs(5))
            .journal_mode(if wal {
                SqliteJournalMode::Wal
            } else {
                SqliteJournalMode::Delete
            });
        SqlitePoolOptions::new()
            .max_connections(2)
            .connect_lazy_with(options)
    }

    /// A file with DECNET's schema, in WAL or rollback-journal mode.
    pub(crate) async fn create(wal: bool) -> (TempDb, SqlitePool) {
        let file = temp_path();
        let pool = writer_pool(&file.0, wal);
        let mut conn = pool.acquire().await.expect("create the test database");
        raw_sql(DDL).execute(&mut *conn).await.expect("DECNET DDL");
        drop(conn);
        (file, pool)
    }

    pub(crate) async fn db() -> Db {
        let (file, pool) = create(true).await;
        let repo = SqliteRepository::connect(SqliteConfig::new(&file.0)).expect("config");
        // Ask the linked library what DECNET's bucket expression does with
        // the last microsecond of a second.
        let carried: i64 = sqlx_core::query_scalar::query_scalar(
            "SELECT CAST(strftime('%s', '2026-06-20 10:14:59.999999') AS INTEGER) % 60",
        )
        .fetch_one(&pool)
        .await
        .expect("strftime");
        Db {
            repo: Arc::new(repo),
            w: Arc::new(Seeder(SqliteSql(pool))),
            engine: Engine::Sqlite,
            ms_rounding: carried == 0,
            _guard: Box::new(file),
        }
    }

    pub(crate) struct SqliteSql(pub(crate) SqlitePool);

    fn bind(
        mut q: sqlx_core::query::Query<'_, Sqlite, SqliteArguments>,
        vals: Vec<Val>,
    ) -> sqlx_core::query::Query<'_, Sqlite, SqliteArguments> {
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

    impl Sql for SqliteSql {
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

        fn insert_returning_id<'a>(&'a self, sql: String, vals: Vec<Val>) -> RepoFuture<'a, i64> {
            async move {
                let row = bind(query(AssertSqlSafe(format!("{sql} RETURNING id"))), vals)
                    .fetch_one(&self.0)
                    .await
                    .map_err(seed_error)?;
                row.try_get::<i64, _>("id").map_err(seed_error)
            }
            .boxed()
        }

        fn upsert(&self, table: &str, cols: &[&str], key: &str) -> String {
            let marks = vec!["?"; cols.len()].join(", ");
            let sets: Vec<String> = cols
                .iter()
                .filter(|c| **c != key)
                .map(|c| format!("{c} = excluded.{c}"))
                .collect();
            format!(
                "INSERT INTO {table} ({}) VALUES ({marks}) ON CONFLICT ({key}) DO UPDATE SET {}",
                cols.join(", "),
                sets.join(", ")
            )
        }

        fn insert_ignore(&self, table: &str, cols: &[&str]) -> String {
            let marks = vec!["?"; cols.len()].join(", ");
            format!(
                "INSERT OR IGNORE INTO {table} ({}) VALUES ({marks})",
                cols.join(", ")
            )
        }

        fn time(&self, at: DbTime) -> String {
            if at.is_aware() {
                aware_text(at)
            } else {
                orm_text(at)
            }
        }
    }
}

#[cfg(feature = "mysql")]
pub(crate) mod mysql {
    //! One MySQL database per test (`t_<unix seconds>_<suffix>`), made from
    //! DECNET's DDL and dropped when the test ends.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};

    use decnet_repo::{DbTime, MysqlConfig, MysqlRepository, RepoFuture};
    use futures::FutureExt;
    use sqlx_core::connection::{ConnectOptions, Connection};
    use sqlx_core::executor::Executor;
    use sqlx_core::query::query;
    use sqlx_core::query_scalar::query_scalar;
    use sqlx_core::raw_sql::raw_sql;
    use sqlx_core::sql_str::AssertSqlSafe;
    use sqlx_mysql::{
        MySql, MySqlArguments, MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions,
    };

    use super::seed::{Seeder, Sql, orm_text};
    use super::{Db, Engine, Val, seed_error};

    pub(crate) const DDL: &str = include_str!("../../../../testdata/decnet_schema.mysql.sql");

    /// Databases older than this, left by a killed run, are dropped.
    const STALE_AFTER_SECS: u64 = 3600;

    fn unix_seconds() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    }

    /// The server URL with `/database` put in (before any `?query`).
    pub(crate) fn url_for(server: &str, database: &str) -> String {
        let (base, query) = match server.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (server, String::new()),
        };
        format!("{}/{database}{query}", base.trim_end_matches('/'))
    }

    pub(crate) async fn admin(server: &str) -> MySqlConnection {
        let options: MySqlConnectOptions = server.parse().expect("DECNET_TEST_MYSQL_URL");
        options.connect().await.expect("connect to the test MySQL")
    }

    /// Drops its database when dropped (from a helper thread: a `Drop`
    /// cannot await).
    pub(crate) struct DatabaseGuard {
        server: String,
        name: String,
    }

    impl DatabaseGuard {
        pub(crate) fn name(&self) -> &str {
            &self.name
        }
    }

    impl Drop for DatabaseGuard {
        fn drop(&mut self) {
            let server = self.server.clone();
            let name = self.name.clone();
            let outcome = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|err| err.to_string())?;
                runtime.block_on(async {
                    let mut conn = admin(&server).await;
                    conn.execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
                        .await
                        .map(drop)
                        .map_err(|err| err.to_string())
                })
            })
            .join()
            .unwrap_or_else(|_| Err("cleanup thread panicked".into()));
            if let Err(err) = outcome {
                eprintln!("WARNING: could not drop test database {}: {err}", self.name);
            }
        }
    }

    /// A new database with DECNET's schema.
    pub(crate) async fn fresh_database(server: &str) -> DatabaseGuard {
        static SWEPT: AtomicBool = AtomicBool::new(false);
        let mut conn = admin(server).await;
        if !SWEPT.swap(true, Ordering::SeqCst) {
            let names: Vec<String> = query_scalar(
                "SELECT CAST(SCHEMA_NAME AS CHAR) FROM information_schema.SCHEMATA \
                 WHERE SCHEMA_NAME LIKE 't\\_%\\_%'",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
            let cutoff = unix_seconds().saturating_sub(STALE_AFTER_SECS);
            for name in names {
                let created = name
                    .strip_prefix("t_")
                    .and_then(|rest| rest.split_once('_'))
                    .and_then(|(secs, _)| secs.parse::<u64>().ok());
                if created.is_some_and(|c| c < cutoff) {
                    let _ = conn
                        .execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
                        .await;
                }
            }
        }
        let name = format!("t_{}_{}", unix_seconds(), test_support::unique_suffix());
        conn.execute(AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
            .await
            .expect("create the test database");
        let guard = DatabaseGuard {
            server: server.to_owned(),
            name: name.clone(),
        };
        let options: MySqlConnectOptions = url_for(server, &name).parse().expect("url");
        let mut conn = options
            .connect()
            .await
            .expect("connect to the test database");
        raw_sql(DDL).execute(&mut conn).await.expect("DECNET DDL");
        conn.close().await.ok();
        guard
    }

    /// The seeder's pool: foreign keys off (the memory backend's writer does
    /// not require parents first).
    pub(crate) fn writer_pool(url: &str) -> MySqlPool {
        let options: MySqlConnectOptions = url.parse().expect("url");
        MySqlPoolOptions::new()
            .max_connections(2)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("SET SESSION foreign_key_checks = 0").await?;
                    Ok(())
                })
            })
            .connect_lazy_with(options)
    }

    pub(crate) async fn db(server: &str) -> Db {
        let guard = fresh_database(server).await;
        let url = url_for(server, guard.name());
        let repo = MysqlRepository::connect(MysqlConfig {
            pool_size: 4,
            ..MysqlConfig::from_url(&url).expect("url")
        })
        .expect("config");
        Db {
            repo: Arc::new(repo),
            w: Arc::new(Seeder(MysqlSql(writer_pool(&url)))),
            engine: Engine::Mysql,
            ms_rounding: false,
            _guard: Box::new(guard),
        }
    }

    pub(crate) struct MysqlSql(pub(crate) MySqlPool);

    fn bind(
        mut q: sqlx_core::query::Query<'_, MySql, MySqlArguments>,
        vals: Vec<Val>,
    ) -> sqlx_core::query::Query<'_, MySql, MySqlArguments> {
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

    impl Sql for MysqlSql {
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

        fn insert_returning_id<'a>(&'a self, sql: String, vals: Vec<Val>) -> RepoFuture<'a, i64> {
            async move {
                let done = bind(query(AssertSqlSafe(sql)), vals)
                    .execute(&self.0)
                    .await
                    .map_err(seed_error)?;
                i64::try_from(done.last_insert_id())
                    .map_err(|err| decnet_repo::RepoError::InvalidData(err.to_string()))
            }
            .boxed()
        }

        fn upsert(&self, table: &str, cols: &[&str], key: &str) -> String {
            let marks = vec!["?"; cols.len()].join(", ");
            let sets: Vec<String> = cols
                .iter()
                .filter(|c| **c != key)
                .map(|c| format!("{c} = VALUES({c})"))
                .collect();
            format!(
                "INSERT INTO {table} ({}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {}",
                cols.join(", "),
                sets.join(", ")
            )
        }

        fn insert_ignore(&self, table: &str, cols: &[&str]) -> String {
            let marks = vec!["?"; cols.len()].join(", ");
            format!(
                "INSERT IGNORE INTO {table} ({}) VALUES ({marks})",
                cols.join(", ")
            )
        }

        /// MariaDB refuses the `+00:00` literal DECNET's mutator writes, so
        /// every datetime goes in naive (the fraction is truncated).
        fn time(&self, at: DbTime) -> String {
            orm_text(at)
        }
    }
}
