//! `decnet-loadgen seed`: a fresh benchmark database with K attackers and U
//! users whose uuids both sides derive from an index ([`attacker_uuid`],
//! [`user_uuid`]), so a run needs no database access of its own.

use anyhow::{Context, Result, bail};
use decnet_repo::prelude::*;
use decnet_repo::{Attacker, PgConfig, PgRepository, User};

/// The uuid of bench attacker `index` (a fixed, valid v4-shaped uuid).
pub(crate) fn attacker_uuid(index: usize) -> String {
    format!("be0c4a11-0000-4000-8000-{index:012x}")
}

/// The uuid of bench user `index`.
pub(crate) fn user_uuid(index: usize) -> String {
    format!("be0c4a11-0001-4000-8000-{index:012x}")
}

/// The id of bench topology `index`.
pub(crate) fn topology_id(index: usize) -> String {
    format!("be0c4a11-0002-4000-8000-{index:012x}")
}

/// The database name at the end of a `postgres://` URL (before any `?`).
pub(crate) fn database_name(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let path = rest.split_once('/')?.1;
    let name = path.split('?').next()?;
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    valid.then_some(name)
}

/// What to seed.
#[derive(Debug, Clone)]
pub(crate) struct SeedOptions {
    /// The benchmark database (`postgres://.../decnet_bench`).
    pub(crate) database_url: String,
    /// Drop and create the database first, through this maintenance URL.
    pub(crate) recreate_via: Option<String>,
    /// Attackers to create.
    pub(crate) attackers: usize,
    /// Users to create (role `viewer`).
    pub(crate) users: usize,
    /// Topologies to create (status `active`).
    pub(crate) topologies: usize,
}

/// Recreate (optionally), migrate and fill the benchmark database; on
/// DECNET's own engines (`--database-url sqlite:///<file>` or a MySQL
/// server's `mysql://user@host:port`), a new database with DECNET's schema,
/// whose path or URL is printed on stdout.
///
/// # Errors
///
/// A bad URL, or any database failure.
pub(crate) async fn seed(options: &SeedOptions) -> Result<()> {
    if let Some(path) = options.database_url.strip_prefix("sqlite://") {
        let _ = std::fs::remove_file(path);
        let db = decnet_repo::testing::SqliteTestDb::create(true).await;
        fill(db.writer().as_ref(), options).await?;
        let kept = db.keep().await;
        std::fs::copy(&kept, path).with_context(|| format!("writing {path}"))?;
        std::fs::remove_file(&kept).with_context(|| format!("removing {}", kept.display()))?;
        println!("{path}");
        return Ok(());
    }
    if options.database_url.starts_with("mysql://") {
        let db = decnet_repo::testing::MysqlTestDb::create(&options.database_url).await;
        fill(db.writer().as_ref(), options).await?;
        println!("{}", db.keep().await);
        return Ok(());
    }
    if let Some(admin_url) = &options.recreate_via {
        let Some(name) = database_name(&options.database_url) else {
            bail!("the database URL must end in /<name> with [a-z0-9_] only");
        };
        if name == "postgres" {
            bail!("refusing to drop the maintenance database `postgres`");
        }
        let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
            .await
            .context("connecting to the maintenance database")?;
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .with_context(|| format!("dropping {name}"))?;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("creating {name}"))?;
        drop(client);
        let _ = driver.await;
        eprintln!("seed: recreated database {name}");
    }
    let repo = PgRepository::connect(PgConfig::new(options.database_url.clone()))
        .context("connecting to the benchmark database")?;
    repo.migrate().await.context("migrating")?;
    fill(&repo, options).await
}

/// The users, attackers and topologies of `options`, through `repo`.
async fn fill(repo: &dyn RepositoryWriter, options: &SeedOptions) -> Result<()> {
    for index in 0..options.users {
        repo.create_user(&User {
            uuid: user_uuid(index),
            username: format!("bench-user-{index}"),
            password_hash: "!bench: no password login".to_owned(),
            role: "viewer".to_owned(),
            must_change_password: false,
            tokens_valid_from: None,
        })
        .await
        .with_context(|| format!("creating user {index}"))?;
    }
    for index in 0..options.attackers {
        repo.upsert_attacker(&Attacker {
            uuid: attacker_uuid(index),
            // Documentation range (RFC 5737): a label only, never contacted.
            ip: format!("198.51.100.{}", index % 256),
            identity_id: None,
        })
        .await
        .with_context(|| format!("creating attacker {index}"))?;
    }
    for index in 0..options.topologies {
        repo.upsert_topology(
            &topology_id(index),
            &format!("bench-topology-{index}"),
            "active",
        )
        .await
        .with_context(|| format!("creating topology {index}"))?;
    }
    eprintln!(
        "seed: {} users, {} attackers and {} topologies in place",
        options.users, options.attackers, options.topologies
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_stable_and_distinct() {
        assert_eq!(attacker_uuid(255), "be0c4a11-0000-4000-8000-0000000000ff");
        assert_ne!(attacker_uuid(1), user_uuid(1));
        assert_ne!(topology_id(1), attacker_uuid(1));
        assert_eq!(attacker_uuid(7).len(), 36);
    }

    #[test]
    fn database_names() {
        assert_eq!(
            database_name("postgres://postgres@127.0.0.1:5432/decnet_bench"),
            Some("decnet_bench")
        );
        assert_eq!(
            database_name("postgresql://u@h/decnet_bench?sslmode=disable"),
            Some("decnet_bench")
        );
        assert_eq!(database_name("postgres://u@h/Bad-Name"), None);
        assert_eq!(database_name("postgres://u@h"), None);
    }
}
