//! The backends a case runs against, each fresh per test. SQLite and MySQL
//! are readers only: their databases and the writers that seed them are
//! `decnet_repo::testing`'s.

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

#[cfg(feature = "sqlite")]
pub(crate) mod sqlite {
    //! One temporary SQLite file per test, in WAL mode as DECNET's engine
    //! sets it.

    use std::sync::Arc;

    use decnet_repo::testing::SqliteTestDb;
    pub(crate) use decnet_repo::testing::{TempDbFile, sqlite_writer_pool as writer_pool};
    use sqlx_sqlite::SqlitePool;

    use super::{Db, Engine};

    /// A file with DECNET's schema, in WAL or rollback-journal mode, and
    /// its writer pool.
    pub(crate) async fn create(wal: bool) -> (SqliteTestDb, SqlitePool) {
        let db = SqliteTestDb::create(wal).await;
        let pool = db.pool().clone();
        (db, pool)
    }

    /// A fresh path, nothing created there.
    pub(crate) fn temp_path() -> TempDbFile {
        TempDbFile::new()
    }

    pub(crate) async fn db() -> Db {
        let file = SqliteTestDb::create(true).await;
        // Ask the linked library what DECNET's bucket expression does with
        // the last microsecond of a second.
        let carried: i64 = sqlx_core::query_scalar::query_scalar(
            "SELECT CAST(strftime('%s', '2026-06-20 10:14:59.999999') AS INTEGER) % 60",
        )
        .fetch_one(file.pool())
        .await
        .expect("strftime");
        Db {
            repo: Arc::new(file.repository()),
            w: file.writer(),
            engine: Engine::Sqlite,
            ms_rounding: carried == 0,
            _guard: Box::new(file),
        }
    }
}

#[cfg(feature = "mysql")]
pub(crate) mod mysql {
    //! One MySQL database per test, made from DECNET's DDL and dropped when
    //! the test ends.

    use std::sync::Arc;

    pub(crate) use decnet_repo::testing::{
        MysqlTestDb, mysql_admin as admin, mysql_url_for as url_for,
    };

    use super::{Db, Engine};

    /// A new database with DECNET's schema.
    pub(crate) async fn fresh_database(server: &str) -> MysqlTestDb {
        MysqlTestDb::create(server).await
    }

    pub(crate) async fn db(server: &str) -> Db {
        let db = MysqlTestDb::create(server).await;
        Db {
            repo: Arc::new(db.repository()),
            w: db.writer(),
            engine: Engine::Mysql,
            ms_rounding: false,
            _guard: Box::new(db),
        }
    }
}
