//! The only place that names a concrete backend: repository, ticket store
//! (the bus builds itself from its config). DECNET's databases (SQLite,
//! MySQL) are opened read-only and their schema checked at start.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use decnet_api::settings::{DbKind, Settings, TicketStoreKind};
use decnet_auth::{MemoryTicketStore, TicketStore};
use decnet_repo::{MemoryRepository, PgConfig, PgRepository};

/// The repository as every consumer sees it.
pub(crate) struct Repository {
    /// Every reader.
    pub(crate) reader: Arc<dyn decnet_repo::Repository>,
    /// The writer, for the embedded demo (in-process repository only).
    pub(crate) writer: Option<Arc<dyn decnet_repo::RepositoryWriter>>,
}

fn postgres(settings: &Settings) -> Result<PgRepository> {
    let url = settings
        .db
        .postgres_url
        .clone()
        .context("DECNET_DATABASE_URL is not set")?;
    PgRepository::connect(PgConfig::new(url)).context("configuring PostgreSQL")
}

/// The repository the settings ask for. DECNET's own databases are opened
/// read-only, and their schema is checked at start (naming what is missing).
pub(crate) async fn repository(settings: &Settings) -> Result<Repository> {
    Ok(match settings.db.kind {
        DbKind::Memory => {
            let memory = Arc::new(MemoryRepository::new());
            Repository {
                reader: memory.clone(),
                writer: Some(memory),
            }
        }
        DbKind::Postgres => {
            let pg = postgres(settings)?;
            checked(pg.check_schema().await)?;
            read_only(pg)
        }
        #[cfg(feature = "sqlite")]
        DbKind::Sqlite => {
            let config = decnet_repo::SqliteConfig::new(&settings.db.sqlite_path);
            let sqlite =
                decnet_repo::SqliteRepository::connect(config).context("configuring SQLite")?;
            checked(sqlite.check_schema().await)?;
            read_only(sqlite)
        }
        #[cfg(feature = "mysql")]
        DbKind::Mysql => {
            let url = settings.db.mysql_url.as_deref().context("no MySQL URL")?;
            let config = decnet_repo::MysqlConfig::from_url(url).context("DECNET_DB_URL")?;
            let mysql =
                decnet_repo::MysqlRepository::connect(config).context("configuring MySQL")?;
            checked(mysql.check_schema().await)?;
            read_only(mysql)
        }
        #[cfg(not(all(feature = "sqlite", feature = "mysql")))]
        kind => bail!(
            "this build has no {kind:?} repository (build with the `sqlite` and `mysql` features)"
        ),
    })
}

fn read_only(reader: impl decnet_repo::Repository + 'static) -> Repository {
    Repository {
        reader: Arc::new(reader),
        writer: None,
    }
}

/// A schema that lacks what we read stops start-up (naming every missing
/// table and column); a database that cannot be reached yet does not
/// (`/readyz` says so, and streams answer 503 until it is back).
fn checked(result: Result<(), decnet_repo::RepoError>) -> Result<()> {
    match result {
        Err(error @ decnet_repo::RepoError::Schema(_)) => Err(error.into()),
        Err(error) => {
            tracing::warn!(%error, "database not reachable at start; serving, not ready");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// `decnet-events migrate`: our migrations, on PostgreSQL only.
pub(crate) async fn migrate(settings: &Settings) -> Result<Vec<i32>> {
    match settings.db.kind {
        DbKind::Postgres => postgres(settings)?
            .migrate()
            .await
            .context("applying migrations"),
        DbKind::Sqlite | DbKind::Mysql => bail!(
            "decnet-events never migrates DECNET's own database: DECNET owns its schema (run DECNET's migrations); decnet-events only reads it"
        ),
        DbKind::Memory => {
            bail!("nothing to migrate: set DECNET_DB_TYPE=postgres and DECNET_DATABASE_URL")
        }
    }
}

/// The ticket store the settings ask for; Redis keys are hashed and values
/// sealed with keys derived from the JWT secret (shared by every instance).
pub(crate) async fn tickets(settings: &Settings, secret: &[u8]) -> Result<Arc<dyn TicketStore>> {
    Ok(match settings.ticket_store {
        TicketStoreKind::Memory => Arc::new(MemoryTicketStore::new(settings.ticket_limits)),
        #[cfg(feature = "redis")]
        TicketStoreKind::Redis => Arc::new(
            decnet_auth::RedisTicketStore::connect(decnet_auth::RedisTicketConfig {
                limits: settings.ticket_limits,
                ..decnet_auth::RedisTicketConfig::new(settings.redis_url.clone(), secret)
            })
            .await
            .context("connecting the Redis ticket store")?,
        ),
        #[cfg(not(feature = "redis"))]
        TicketStoreKind::Redis => {
            let _ = secret;
            bail!("DECNET_TICKET_STORE=redis needs a build with the `redis` feature")
        }
    })
}
