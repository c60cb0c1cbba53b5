//! Per-test PostgreSQL schemas.
//!
//! Tests that talk to PostgreSQL share one server and one database, and run in
//! parallel, so each test works in a schema of its own:
//!
//! ```no_run
//! # async fn example() {
//! use test_support::{Service, pg};
//! // In a test whose path contains `svc_postgres`:
//! let url = test_support::require_service!(Service::Postgres);
//! let (schema, _guard) = pg::fresh_schema(&url).await;
//! // With decnet-repo (feature `postgres`):
//! // let repo = PgRepository::connect(PgConfig::new(&url).with_schema(&schema))?;
//! // repo.migrate().await?;   // creates the tables inside `schema`
//! // ... the test ...
//! // `_guard` drops the schema (CASCADE) when the test ends, passing or panicking.
//! # }
//! ```
//!
//! Keep the guard alive for the whole test (bind it to `_guard`, not `_`, which
//! drops it at once), and declare it before anything that holds connections
//! into the schema, so those are dropped first.
//!
//! Cleanup is layered so that schemas never pile up:
//! - the guard drops its schema on `Drop`, from a helper thread with its own
//!   connection (a `Drop` cannot await), bounded by a 5 s `lock_timeout`;
//! - [`SchemaGuard::drop_now`] does the same from async code, if a test wants
//!   to check for errors;
//! - the first [`fresh_schema`] of each test process drops schemas this module
//!   created more than an hour ago (left by a killed test run). Their names
//!   carry their creation time: `t_<unix seconds>_<unique suffix>`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::{Client, NoTls};

/// Schemas created by [`fresh_schema`] older than this are dropped as stale.
pub const STALE_AFTER: Duration = Duration::from_secs(3600);

/// Drops its schema (`DROP SCHEMA ... CASCADE`) when dropped.
#[derive(Debug)]
pub struct SchemaGuard {
    url: String,
    name: String,
    dropped: bool,
}

impl SchemaGuard {
    /// The schema's name (also returned by [`fresh_schema`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drop the schema now, from async code.
    ///
    /// # Errors
    ///
    /// The error from connecting or from `DROP SCHEMA` (for example when
    /// another session still holds a lock in it for more than 5 s).
    pub async fn drop_now(mut self) -> Result<(), tokio_postgres::Error> {
        self.dropped = true;
        drop_schema(&self.url, &self.name).await
    }
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let url = self.url.clone();
        let name = self.name.clone();
        // A Drop cannot await, and may run inside a runtime: do the I/O on a
        // thread with its own runtime, and wait for it.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| err.to_string())?;
            runtime
                .block_on(drop_schema(&url, &name))
                .map_err(|err| err.to_string())
        });
        let outcome = cleanup
            .join()
            .unwrap_or_else(|_| Err("cleanup thread panicked".into()));
        if let Err(err) = outcome {
            eprintln!(
                "WARNING: could not drop test schema {}: {err} (dropped as stale after {:?})",
                self.name, STALE_AFTER
            );
        }
    }
}

/// Create a new, empty schema `t_<unix seconds>_<unique suffix>` and return its
/// name with a guard that drops it.
///
/// Use the name as `PgConfig::schema` (decnet-repo), or [`connect_in_schema`]
/// for a raw client. The first call in a process also drops the schemas this
/// function created more than [`STALE_AFTER`] ago.
///
/// # Panics
///
/// When the server cannot be reached or refuses `CREATE SCHEMA`: the test
/// cannot run.
pub async fn fresh_schema(url: &str) -> (String, SchemaGuard) {
    static SWEPT: AtomicBool = AtomicBool::new(false);
    let client = connect(url)
        .await
        .unwrap_or_else(|err| panic!("connect to {}: {err}", url_without_password(url)));
    if !SWEPT.swap(true, Ordering::SeqCst) {
        drop_stale_schemas(&client).await;
    }
    let name = format!("t_{}_{}", unix_seconds(), crate::unique_suffix());
    client
        .batch_execute(&format!("CREATE SCHEMA {}", quote_ident(&name)))
        .await
        .unwrap_or_else(|err| panic!("create schema {name}: {err}"));
    let guard = SchemaGuard {
        url: url.to_owned(),
        name: name.clone(),
        dropped: false,
    };
    (name, guard)
}

/// A plain tokio-postgres client whose `search_path` is `schema`, for tests
/// that set up tables or rows behind the repository's back.
///
/// # Panics
///
/// When the server cannot be reached.
pub async fn connect_in_schema(url: &str, schema: &str) -> Client {
    let client = connect(url)
        .await
        .unwrap_or_else(|err| panic!("connect to {}: {err}", url_without_password(url)));
    client
        .batch_execute(&format!("SET search_path TO {}", quote_ident(schema)))
        .await
        .unwrap_or_else(|err| panic!("set search_path {schema}: {err}"));
    client
}

/// `DROP SCHEMA IF EXISTS <name> CASCADE`, waiting at most 5 s for locks.
///
/// # Errors
///
/// The error from connecting or from the statement.
pub async fn drop_schema(url: &str, name: &str) -> Result<(), tokio_postgres::Error> {
    let client = connect(url).await?;
    client
        .batch_execute(&format!(
            "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(name)
        ))
        .await
}

/// Drop `t_<seconds>_<suffix>` schemas older than [`STALE_AFTER`]. Errors
/// (another process dropping the same schema) are ignored.
async fn drop_stale_schemas(client: &Client) {
    let Ok(rows) = client
        .query(
            r"SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 't\_%\_%'",
            &[],
        )
        .await
    else {
        return;
    };
    let cutoff = unix_seconds().saturating_sub(STALE_AFTER.as_secs());
    for row in rows {
        let Ok(name) = row.try_get::<_, String>(0) else {
            continue;
        };
        if created_at(&name).is_some_and(|created| created < cutoff) {
            let _ = client
                .batch_execute(&format!(
                    "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {} CASCADE",
                    quote_ident(&name)
                ))
                .await;
        }
    }
}

/// The creation time encoded in a schema name made by [`fresh_schema`].
fn created_at(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("t_")?;
    let (seconds, suffix) = rest.split_once('_')?;
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(suffix) || !seconds.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    seconds.parse().ok()
}

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        // Ends when the client is dropped; an error here surfaces on the client.
        let _ = connection.await;
    });
    Ok(client)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The URL without its `user:password@` part, for panic messages.
fn url_without_password(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://…@{}", &url[at + 1..]),
        _ => "the test database".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_creation_time_from_names() {
        assert_eq!(created_at("t_1700000000_ab12"), Some(1_700_000_000));
        assert_eq!(created_at("t_1700000000_"), None);
        assert_eq!(created_at("t_abc_12"), None);
        assert_eq!(created_at("tenant_1_2"), None);
        assert_eq!(created_at("public"), None);
    }
}
