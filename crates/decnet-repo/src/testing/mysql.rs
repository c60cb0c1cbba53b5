//! One MySQL database per test (`t_<unix seconds>_<suffix>`), made from
//! DECNET's DDL and dropped when the test ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

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

use super::{Seeder, Sql, Val, orm_text, seed_error};
use crate::{DbTime, MysqlConfig, MysqlRepository, RepoError, RepoFuture, RepositoryWriter};

/// DECNET's MySQL schema (`testdata/decnet_schema.mysql.sql`).
pub const MYSQL_DDL: &str = include_str!("../../../../testdata/decnet_schema.mysql.sql");

/// Test databases older than this, left by a killed run, are dropped.
const STALE_AFTER_SECS: u64 = 3600;

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The server URL `server` (no database) with `/database` put in, before
/// any `?query`.
pub fn mysql_url_for(server: &str, database: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (server, String::new()),
    };
    format!("{}/{database}{query}", base.trim_end_matches('/'))
}

/// One connection to `server` (no database selected).
///
/// # Panics
///
/// When the URL does not parse or the server does not answer.
pub async fn mysql_admin(server: &str) -> MySqlConnection {
    let options: MySqlConnectOptions = server.parse().expect("a MySQL server URL");
    options.connect().await.expect("connect to the test MySQL")
}

/// A fresh database with DECNET's schema on a MySQL/MariaDB server, and a
/// writer pool into it. Dropping it drops the database (from a helper
/// thread: a `Drop` cannot await).
#[derive(Debug)]
pub struct MysqlTestDb {
    server: String,
    name: String,
    url: String,
    pool: MySqlPool,
    /// Not dropped with this value ([`MysqlTestDb::keep`]).
    kept: bool,
}

impl MysqlTestDb {
    /// Create the database on `server` (a URL without a database, e.g.
    /// `mysql://root@127.0.0.1:3306`) and run DECNET's DDL in it. The first
    /// call of a process also drops test databases older than an hour.
    ///
    /// # Panics
    ///
    /// When the server does not answer or refuses the DDL.
    pub async fn create(server: &str) -> MysqlTestDb {
        static SWEPT: AtomicBool = AtomicBool::new(false);
        let mut conn = mysql_admin(server).await;
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
        conn.close().await.ok();
        let url = mysql_url_for(server, &name);
        let db = MysqlTestDb {
            server: server.to_owned(),
            pool: writer_pool(&url),
            name,
            url,
            kept: false,
        };
        let options: MySqlConnectOptions = db.url.parse().expect("url");
        let mut conn = options
            .connect()
            .await
            .expect("connect to the test database");
        raw_sql(MYSQL_DDL)
            .execute(&mut conn)
            .await
            .expect("DECNET's MySQL DDL");
        conn.close().await.ok();
        db
    }

    /// Close the writer and keep the database (not dropped): for a
    /// database another process reads, as the benchmarks' servers do; its
    /// URL. Test runs drop kept databases an hour old, as any other.
    pub async fn keep(mut self) -> String {
        self.kept = true;
        self.pool.close().await;
        self.url.clone()
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of the database (the server's with `/name`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The writer pool (raw SQL).
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// A writer of DECNET-shaped rows into this database.
    pub fn writer(&self) -> Arc<dyn RepositoryWriter> {
        Arc::new(Seeder(MysqlSql(self.pool.clone())))
    }

    /// The service's read-only repository on this database, pool of 4.
    ///
    /// # Panics
    ///
    /// Never in practice (the URL is this value's own).
    pub fn repository(&self) -> MysqlRepository {
        MysqlRepository::connect(MysqlConfig {
            pool_size: 4,
            ..MysqlConfig::from_url(&self.url).expect("url")
        })
        .expect("MySQL config")
    }
}

impl Drop for MysqlTestDb {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let server = self.server.clone();
        let name = self.name.clone();
        let outcome = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| err.to_string())?;
            runtime.block_on(async {
                let options: MySqlConnectOptions = server
                    .parse()
                    .map_err(|err: sqlx_core::Error| err.to_string())?;
                let mut conn = options.connect().await.map_err(|err| err.to_string())?;
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

/// The writer's pool: foreign keys off (the memory backend's writer does not
/// require parents first).
fn writer_pool(url: &str) -> MySqlPool {
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

struct MysqlSql(MySqlPool);

sqlx_statements!(MySql, MySqlArguments);

impl Sql for MysqlSql {
    sqlx_statement_methods!();

    fn insert_returning_id<'a>(&'a self, sql: String, vals: Vec<Val>) -> RepoFuture<'a, i64> {
        async move {
            let done = bind(query(AssertSqlSafe(sql)), vals)
                .execute(&self.0)
                .await
                .map_err(seed_error)?;
            i64::try_from(done.last_insert_id())
                .map_err(|err| RepoError::InvalidData(err.to_string()))
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
