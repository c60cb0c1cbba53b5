//! One temporary SQLite file per test, made from DECNET's DDL.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use sqlx_core::connection::Connection;
use sqlx_core::executor::Executor;
use sqlx_core::pool::PoolConnection;
use sqlx_core::query::query;
use sqlx_core::raw_sql::raw_sql;
use sqlx_core::row::Row;
use sqlx_core::sql_str::AssertSqlSafe;
use sqlx_sqlite::{
    Sqlite, SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
};

use super::{Seeder, Sql, Val, aware_text, orm_text, seed_error};
use crate::{DbTime, RepoFuture, RepositoryWriter, SqliteConfig, SqliteRepository};

/// DECNET's SQLite schema (`testdata/decnet_schema.sqlite.sql`).
pub const SQLITE_DDL: &str = include_str!("../../../../testdata/decnet_schema.sqlite.sql");

/// A fresh path in the temporary directory (nothing created there); the
/// file and its `-wal`, `-shm` and `-journal` companions are removed on drop.
#[derive(Debug)]
pub struct TempDbFile(PathBuf);

impl TempDbFile {
    /// A new unique path (`decnet-test-<suffix>.db` in the temp directory).
    pub fn new() -> TempDbFile {
        TempDbFile(
            std::env::temp_dir().join(format!("decnet-test-{}.db", test_support::unique_suffix())),
        )
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDbFile {
    fn default() -> Self {
        TempDbFile::new()
    }
}

impl Drop for TempDbFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A read-write pool on `path` (DECNET's writer stand-in): creates the file
/// if missing, foreign keys off (the memory writer does not require parents
/// first), a 5 s busy timeout, WAL or rollback-journal mode.
pub fn sqlite_writer_pool(path: &Path, wal: bool) -> SqlitePool {
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

/// A temporary SQLite file with DECNET's schema and a writer pool on it.
/// Dropping it removes the file (close readers first, or let them fail).
#[derive(Debug)]
pub struct SqliteTestDb {
    pool: SqlitePool,
    // Last: the pool's connections are gone before the files are removed.
    file: TempDbFile,
}

impl SqliteTestDb {
    /// A new file with DECNET's schema, in WAL mode (as DECNET's engine
    /// sets it) or rollback-journal mode.
    ///
    /// # Panics
    ///
    /// When the file cannot be created or the DDL fails.
    pub async fn create(wal: bool) -> SqliteTestDb {
        let file = TempDbFile::new();
        let pool = sqlite_writer_pool(file.path(), wal);
        let mut conn = pool.acquire().await.expect("create the test database");
        raw_sql(SQLITE_DDL)
            .execute(&mut *conn)
            .await
            .expect("DECNET's SQLite DDL");
        drop(conn);
        SqliteTestDb { pool, file }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Close the writer and keep the file (not removed): for a database
    /// another process reads, as the benchmarks' servers do. The caller
    /// removes it.
    pub async fn keep(self) -> PathBuf {
        let SqliteTestDb { pool, file } = self;
        pool.close().await;
        let path = file.path().to_owned();
        std::mem::forget(file);
        path
    }

    /// The writer pool (raw SQL; DECNET's writer holding locks).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A writer of DECNET-shaped rows into this file.
    pub fn writer(&self) -> Arc<dyn RepositoryWriter> {
        Arc::new(Seeder(SqliteSql(self.pool.clone())))
    }

    /// A write transaction as DECNET's writer opens one (`BEGIN IMMEDIATE`),
    /// `statements` run in it, held uncommitted until [`HeldWrite::commit`]
    /// (or rolled back when dropped).
    ///
    /// # Panics
    ///
    /// When the lock cannot be taken or a statement fails.
    pub async fn begin_immediate(&self, statements: &str) -> HeldWrite {
        let mut conn = self.pool.acquire().await.expect("a writer connection");
        conn.execute("BEGIN IMMEDIATE")
            .await
            .expect("BEGIN IMMEDIATE");
        raw_sql(AssertSqlSafe(statements.to_owned()))
            .execute(&mut *conn)
            .await
            .expect("the held transaction's statements");
        HeldWrite(Some(conn))
    }

    /// The service's read-only repository on this file, default settings.
    ///
    /// # Panics
    ///
    /// Never in practice (the default config is valid).
    pub fn repository(&self) -> SqliteRepository {
        SqliteRepository::connect(SqliteConfig::new(self.path())).expect("SQLite config")
    }
}

/// A write transaction held open on a [`SqliteTestDb`] (the writer's
/// RESERVED lock; in WAL mode readers go on reading the committed state).
#[derive(Debug)]
pub struct HeldWrite(Option<PoolConnection<Sqlite>>);

impl HeldWrite {
    /// Commit it.
    ///
    /// # Panics
    ///
    /// When the commit fails.
    pub async fn commit(mut self) {
        if let Some(mut conn) = self.0.take() {
            conn.execute("COMMIT").await.expect("COMMIT");
        }
    }
}

impl Drop for HeldWrite {
    fn drop(&mut self) {
        // Not committed: the connection is closed, which rolls it back.
        if let Some(conn) = self.0.take() {
            drop(conn.detach());
        }
    }
}

struct SqliteSql(SqlitePool);

sqlx_statements!(Sqlite, SqliteArguments);

impl Sql for SqliteSql {
    sqlx_statement_methods!();

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
