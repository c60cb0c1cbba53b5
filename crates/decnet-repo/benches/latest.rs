//! Benchmark: `latest_observation_per_primitive` on PostgreSQL, SQLite and
//! MySQL.
//!
//! One attacker with 10,000 observations over 40 primitives (ties on `ts`
//! included), in a table of 1,000,000 rows (100 such attackers, their rows
//! interleaved as they would arrive). 100 warm-up calls, then 1,000 timed calls
//! through the repository, sequentially; reports p50 / p99 / max against the
//! target p99 <= 5 ms. The answer is checked first against a reference.
//!
//! - PostgreSQL (feature `postgres`, `DECNET_TEST_DATABASE_URL`): this crate's
//!   schema in a schema of its own (dropped at the end), after `VACUUM
//!   ANALYZE`; for comparison the plain `DISTINCT ON` query.
//! - SQLite (feature `sqlite`, always): DECNET's DDL (`testdata/`) in a
//!   temporary file in WAL mode, no `ANALYZE` (DECNET runs none); for
//!   comparison DECNET's own query (a per-primitive `MAX(ts)` subquery joined
//!   back on `(primitive, ts)`), timed the same way through the same driver.
//! - MySQL (feature `mysql`, `DECNET_TEST_MYSQL_URL`, a server URL): DECNET's
//!   DDL in a database of its own (dropped at the end); `ts` is FLOAT there,
//!   so most rows of a primitive tie on it. For comparison DECNET's query too.
//!
//! A section whose feature or server is missing prints why and is skipped.
//!
//! Run: `cargo bench -p decnet-repo --all-features --bench latest` (add the
//! two URLs to include the servers; `-- sqlite mysql` runs only those
//! sections).

#![allow(clippy::print_stdout, reason = "a benchmark reports on its terminal")]
#![cfg_attr(
    not(all(feature = "postgres", feature = "sqlite", feature = "mysql")),
    allow(
        dead_code,
        reason = "helpers shared by whichever sections are compiled in"
    )
)]

use std::time::{Duration, Instant};

#[allow(unused_imports, reason = "used by whichever sections are compiled")]
use decnet_repo::prelude::*;

const ATTACKERS: i64 = 100;
const ROWS: i64 = 1_000_000;
const PRIMITIVES: i64 = 40;
const TARGET: &str = "att-7";
const WARM_UP: usize = 100;
const CALLS: usize = 1_000;
#[cfg(feature = "postgres")]
const DISTINCT_ON_CALLS: usize = 50;
const P99_TARGET: Duration = Duration::from_millis(5);

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // `cargo bench ... -- sqlite mysql` runs only the named sections.
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    let wanted = |section: &str| named.is_empty() || named.iter().any(|n| n == section);
    runtime.block_on(async {
        if wanted("postgres") {
            postgres::bench().await;
        }
        if wanted("sqlite") {
            sqlite::bench().await;
        }
        if wanted("mysql") {
            mysql::bench().await;
        }
    });
}

fn env_url(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|url| !url.is_empty())
}

/// Time `CALLS` calls of `call` after `WARM_UP` untimed ones.
async fn time_calls<F, Fut>(calls: usize, mut call: F) -> Stats
where
    F: FnMut() -> Fut,
    Fut: Future<Output = usize>,
{
    for _ in 0..WARM_UP.min(calls) {
        call().await;
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        let rows = call().await;
        samples.push(started.elapsed());
        assert_eq!(rows, usize::try_from(PRIMITIVES).expect("40 fits"));
    }
    Stats::of(samples)
}

fn report(what: &str, stats: &Stats, target: bool) {
    println!(
        "{what}: p50 {:.3?}  p99 {:.3?}  max {:.3?}  mean {:.3?}",
        stats.p50, stats.p99, stats.max, stats.mean
    );
    if target {
        println!(
            "  target p99 <= {P99_TARGET:?}: {}",
            if stats.p99 <= P99_TARGET {
                "met"
            } else {
                "MISSED"
            }
        );
    }
}

/// The rows of `TARGET`, reduced with the rule every backend follows.
fn reference(rows: Vec<decnet_repo::Observation>) -> Vec<String> {
    decnet_repo::latest_per_primitive(&rows)
        .into_iter()
        .map(|o| o.id)
        .collect()
}

#[cfg(not(feature = "postgres"))]
mod postgres {
    pub(crate) async fn bench() {
        println!("postgres: skipping (feature `postgres` is off)");
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use decnet_repo::{PgConfig, PgRepository};

    pub(crate) async fn bench() {
        match env_url("DECNET_TEST_DATABASE_URL") {
            Some(url) => run(&url).await,
            None => println!(
                "postgres: skipping (DECNET_TEST_DATABASE_URL is not set: no PostgreSQL to measure)"
            ),
        }
    }

    async fn run(url: &str) {
        let (schema, guard) = test_support::pg::fresh_schema(url).await;
        let repo = PgRepository::connect(PgConfig::new(url).with_schema(&schema)).expect("config");
        repo.migrate().await.expect("migrate");
        let client = test_support::pg::connect_in_schema(url, &schema).await;

        let started = Instant::now();
        // Row i belongs to attacker i % 100; per attacker, row k (= i / 100) has
        // primitive k % 40 and ts k / 80, so each primitive's rows come in pairs
        // sharing a ts: the latest is decided by the id tie-break.
        client
            .batch_execute(&format!(
                "INSERT INTO attackers (uuid, ip)
                     SELECT 'att-' || a, '10.0.' || (a / 256) || '.' || (a % 256)
                     FROM generate_series(0, {last_attacker}) a;
                 INSERT INTO observations
                     SELECT 'obs-' || lpad(i::text, 8, '0'), NULL,
                            'prim.' || lpad(((i / {ATTACKERS}) % {PRIMITIVES})::text, 2, '0'),
                            jsonb_build_object('n', i, 'label', 'value ' || i, 'tags', jsonb_build_array('a', 'b')),
                            0.5, 1700000000 + i, 1700000060 + i, 'bench', 'ev-' || i, 1,
                            1700000000 + (i / {ATTACKERS} / {tie_span}), 'att-' || (i % {ATTACKERS})
                     FROM generate_series(0, {last_row}) i;",
                last_attacker = ATTACKERS - 1,
                last_row = ROWS - 1,
                tie_span = PRIMITIVES * 2,
            ))
            .await
            .expect("bulk load");
        // VACUUM as well as ANALYZE: sets the visibility map as autovacuum would
        // on a live table, and keeps autovacuum from starting on the fresh
        // million rows in the middle of the timed loop.
        client
            .batch_execute("VACUUM ANALYZE attackers")
            .await
            .expect("vacuum");
        client
            .batch_execute("VACUUM ANALYZE observations")
            .await
            .expect("vacuum");
        println!(
            "postgres: loaded {ROWS} observations ({ATTACKERS} attackers x {} rows, {PRIMITIVES} primitives) in {:.1?}",
            ROWS / ATTACKERS,
            started.elapsed()
        );

        // The answer is right: the same rows as the obvious DISTINCT ON query.
        let distinct_on = "SELECT DISTINCT ON (primitive) id FROM observations \
             WHERE attacker_uuid = $1 ORDER BY primitive, ts DESC, id COLLATE \"C\" DESC";
        let expected: Vec<String> = client
            .query(distinct_on, &[&TARGET])
            .await
            .expect("distinct on")
            .iter()
            .map(|row| row.get(0))
            .collect();

        let latest = repo
            .latest_observation_per_primitive(TARGET)
            .await
            .expect("latest");
        let got: Vec<String> = latest.iter().map(|o| o.id.clone()).collect();
        assert_eq!(got.len(), usize::try_from(PRIMITIVES).expect("40 fits"));
        assert_eq!(got, expected, "skip scan and DISTINCT ON disagree");

        let stats = time_calls(CALLS, || async {
            repo.latest_observation_per_primitive(TARGET)
                .await
                .expect("latest")
                .len()
        })
        .await;
        report(
            &format!(
                "postgres: latest_observation_per_primitive ({CALLS} calls after {WARM_UP} warm-up)"
            ),
            &stats,
            true,
        );

        // For comparison: DISTINCT ON over all of the attacker's rows, with the
        // same columns the repository reads.
        let distinct_on_full = client
            .prepare(
                "SELECT DISTINCT ON (primitive) id, identity_ref, primitive, value, confidence, \
                 window_start_ts, window_end_ts, source, evidence_ref, envelope_v, ts, attacker_uuid \
                 FROM observations WHERE attacker_uuid = $1 \
                 ORDER BY primitive, ts DESC, id COLLATE \"C\" DESC",
            )
            .await
            .expect("prepare");
        let mut samples = Vec::with_capacity(DISTINCT_ON_CALLS);
        for _ in 0..DISTINCT_ON_CALLS {
            let call = Instant::now();
            client
                .query(&distinct_on_full, &[&TARGET])
                .await
                .expect("distinct on");
            samples.push(call.elapsed());
        }
        let stats = Stats::of(samples);
        println!(
            "postgres: for comparison, DISTINCT ON ({DISTINCT_ON_CALLS} calls): p50 {:.3?}  p99 {:.3?}  max {:.3?}",
            stats.p50, stats.p99, stats.max
        );

        drop(client);
        drop(repo);
        guard.drop_now().await.expect("drop bench schema");
    }
}

/// DECNET's own latest-per-primitive query (`sqlmodel_repo/observations.py`),
/// with the columns the repository reads.
#[cfg(any(feature = "sqlite", feature = "mysql"))]
const DECNET_LATEST: &str = "SELECT o.id, o.identity_ref, o.primitive, o.value, o.confidence, \
     o.window_start_ts, o.window_end_ts, o.source, o.evidence_ref, o.envelope_v, o.ts, \
     o.attacker_uuid FROM observations AS o \
     JOIN (SELECT primitive, MAX(ts) AS max_ts FROM observations WHERE attacker_uuid = ? \
           GROUP BY primitive) AS m ON o.primitive = m.primitive AND o.ts = m.max_ts \
     WHERE o.attacker_uuid = ? ORDER BY o.primitive";

#[cfg(not(feature = "sqlite"))]
mod sqlite {
    pub(crate) async fn bench() {
        println!("sqlite: skipping (feature `sqlite` is off)");
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use decnet_repo::{SqliteConfig, SqliteRepository};
    use sqlx_core::executor::Executor;
    use sqlx_core::query::query;
    use sqlx_core::raw_sql::raw_sql;
    use sqlx_sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

    const DDL: &str = include_str!("../../../testdata/decnet_schema.sqlite.sql");

    /// Removes the database file and its companions.
    struct TempFile(std::path::PathBuf);

    impl Drop for TempFile {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let mut path = self.0.clone().into_os_string();
                path.push(suffix);
                let _ = std::fs::remove_file(path);
            }
        }
    }

    pub(crate) async fn bench() {
        let file = TempFile(std::env::temp_dir().join(format!(
            "decnet-repo-bench-{}.db",
            test_support::unique_suffix()
        )));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(
                SqliteConnectOptions::new()
                    .filename(&file.0)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .foreign_keys(false),
            );
        let started = Instant::now();
        let mut conn = writer.acquire().await.expect("create the bench database");
        raw_sql(DDL).execute(&mut *conn).await.expect("DECNET DDL");
        // The same rows as PostgreSQL's: row i belongs to attacker i % 100,
        // primitive (i / 100) % 40, ts (i / 100) / 80 (pairs tie on ts).
        conn.execute(sqlx_core::sql_str::AssertSqlSafe(format!(
            "PRAGMA synchronous = OFF;
             BEGIN;
             WITH RECURSIVE n(a) AS (SELECT 0 UNION ALL SELECT a + 1 FROM n WHERE a < {last_attacker})
             INSERT INTO attackers (uuid, ip, first_seen, last_seen, event_count, service_count,
                 decky_count, services, deckies, is_traversal, bounty_count, credential_count,
                 fingerprints, commands, rotation_count, ipv6_leak_count, updated_at)
             SELECT 'att-' || a, '10.0.0.' || a, '2026-06-20 12:00:00.000000',
                 '2026-06-20 12:00:00.000000', 0, 0, 0, '[]', '[]', 0, 0, 0, '[]', '[]', 0, 0,
                 '2026-06-20 12:00:00.000000' FROM n;
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last_row})
             INSERT INTO observations
             SELECT printf('obs-%08d', i), NULL, printf('prim.%02d', (i / {ATTACKERS}) % {PRIMITIVES}),
                 json_object('n', i, 'label', 'value ' || i, 'tags', json_array('a', 'b')),
                 0.5, 1700000000 + i, 1700000060 + i, 'bench', 'ev-' || i, 1,
                 1700000000 + (i / {ATTACKERS} / {tie_span}), 'att-' || (i % {ATTACKERS})
             FROM n;
             COMMIT;
             PRAGMA wal_checkpoint(TRUNCATE);",
            last_attacker = ATTACKERS - 1,
            last_row = ROWS - 1,
            tie_span = PRIMITIVES * 2,
        )))
        .await
        .expect("bulk load");
        println!(
            "sqlite: loaded {ROWS} observations into DECNET's schema in {:.1?}",
            started.elapsed()
        );

        let repo = SqliteRepository::connect(SqliteConfig::new(&file.0)).expect("config");
        let all = query(
            "SELECT id, identity_ref, primitive, value, confidence, window_start_ts, \
             window_end_ts, source, evidence_ref, envelope_v, ts, attacker_uuid \
             FROM observations WHERE attacker_uuid = ?",
        )
        .bind(TARGET)
        .fetch_all(&mut *conn)
        .await
        .expect("all rows of the target");
        assert_eq!(all.len(), 10_000);
        let rows = all
            .iter()
            .map(|row| {
                use sqlx_core::row::Row;
                decnet_repo::Observation {
                    id: row.get("id"),
                    identity_ref: None,
                    primitive: row.get("primitive"),
                    value: serde_json::Value::Null,
                    confidence: row.get("confidence"),
                    window_start_ts: 0.0,
                    window_end_ts: 0.0,
                    source: String::new(),
                    evidence_ref: String::new(),
                    envelope_v: 1,
                    ts: row.get("ts"),
                    attacker_uuid: TARGET.to_owned(),
                }
            })
            .collect();
        drop(conn);
        let latest = repo
            .latest_observation_per_primitive(TARGET)
            .await
            .expect("latest");
        let got: Vec<String> = latest.iter().map(|o| o.id.clone()).collect();
        assert_eq!(got, reference(rows), "skip scan and the reference disagree");

        let stats = time_calls(CALLS, || async {
            repo.latest_observation_per_primitive(TARGET)
                .await
                .expect("latest")
                .len()
        })
        .await;
        report(
            &format!(
                "sqlite: latest_observation_per_primitive ({CALLS} calls after {WARM_UP} warm-up)"
            ),
            &stats,
            true,
        );

        // DECNET's query, through the same driver and a read-only pool of the
        // same shape. It returns both rows of a tied pair (DECNET keeps the
        // last one in result order), so count primitives, not rows.
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_lazy_with(
                SqliteConnectOptions::new()
                    .filename(&file.0)
                    .read_only(true),
            );
        let stats = time_calls(CALLS, || async {
            let rows = query(DECNET_LATEST)
                .bind(TARGET)
                .bind(TARGET)
                .fetch_all(&reader)
                .await
                .expect("DECNET's query");
            let mut primitives: Vec<String> = rows
                .iter()
                .map(|row| sqlx_core::row::Row::get(row, "primitive"))
                .collect();
            primitives.dedup();
            primitives.len()
        })
        .await;
        report(
            &format!(
                "sqlite: for comparison, DECNET's query ({CALLS} calls after {WARM_UP} warm-up)"
            ),
            &stats,
            false,
        );
        reader.close().await;
        writer.close().await;
        drop(repo);
        drop(file);
    }
}

#[cfg(not(feature = "mysql"))]
mod mysql {
    pub(crate) async fn bench() {
        println!("mysql: skipping (feature `mysql` is off)");
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use super::*;
    use decnet_repo::{MysqlConfig, MysqlRepository};
    use sqlx_core::connection::{ConnectOptions, Connection};
    use sqlx_core::executor::Executor;
    use sqlx_core::query::query;
    use sqlx_core::raw_sql::raw_sql;
    use sqlx_core::row::Row;
    use sqlx_core::sql_str::AssertSqlSafe;
    use sqlx_mysql::{MySqlConnectOptions, MySqlPoolOptions};

    const DDL: &str = include_str!("../../../testdata/decnet_schema.mysql.sql");

    pub(crate) async fn bench() {
        match env_url("DECNET_TEST_MYSQL_URL") {
            Some(server) => run(&server).await,
            None => {
                println!("mysql: skipping (DECNET_TEST_MYSQL_URL is not set: no MySQL to measure)")
            }
        }
    }

    fn url_for(server: &str, database: &str) -> String {
        format!("{}/{database}", server.trim_end_matches('/'))
    }

    async fn connect(url: &str) -> sqlx_mysql::MySqlConnection {
        let options: MySqlConnectOptions = url.parse().expect("url");
        options.connect().await.expect("connect to MySQL")
    }

    async fn run(server: &str) {
        let name = format!("bench_{}", test_support::unique_suffix());
        let mut admin = connect(server).await;
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
            .await
            .expect("create the bench database");
        let url = url_for(server, &name);
        let res = tokio::spawn({
            let url = url.clone();
            async move { measure(&url).await }
        })
        .await;
        admin
            .execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
            .await
            .expect("drop the bench database");
        admin.close().await.ok();
        if let Err(panic) = res {
            std::panic::resume_unwind(panic.into_panic());
        }
    }

    async fn measure(url: &str) {
        let mut conn = connect(url).await;
        raw_sql(DDL).execute(&mut conn).await.expect("DECNET DDL");
        let started = Instant::now();
        let version: String = sqlx_core::query_scalar::query_scalar("SELECT VERSION()")
            .fetch_one(&mut conn)
            .await
            .expect("version");
        // MariaDB's sequence engine, or a recursive CTE (MySQL 8).
        let mariadb = version.to_ascii_lowercase().contains("mariadb");
        let numbers = |last: i64| {
            if mariadb {
                format!("(SELECT seq AS i FROM seq_0_to_{last}) AS n")
            } else {
                format!(
                    "(WITH RECURSIVE r(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM r \
                     WHERE i < {last}) SELECT i FROM r) AS n"
                )
            }
        };
        conn.execute(AssertSqlSafe(format!(
            "SET SESSION foreign_key_checks = 0, unique_checks = 0{depth};
             INSERT INTO attackers (uuid, ip, first_seen, last_seen, event_count, service_count,
                 decky_count, services, deckies, is_traversal, bounty_count, credential_count,
                 fingerprints, commands, rotation_count, ipv6_leak_count, updated_at)
             SELECT CONCAT('att-', i), CONCAT('10.0.0.', i), '2026-06-20 12:00:00',
                 '2026-06-20 12:00:00', 0, 0, 0, '[]', '[]', 0, 0, 0, '[]', '[]', 0, 0,
                 '2026-06-20 12:00:00' FROM {attackers};
             INSERT INTO observations
             SELECT CONCAT('obs-', LPAD(i, 8, '0')), NULL,
                 CONCAT('prim.', LPAD((i DIV {ATTACKERS}) MOD {PRIMITIVES}, 2, '0')),
                 JSON_OBJECT('n', i, 'label', CONCAT('value ', i), 'tags', JSON_ARRAY('a', 'b')),
                 0.5, 1700000000 + i, 1700000060 + i, 'bench', CONCAT('ev-', i), 1,
                 1700000000 + (i DIV {ATTACKERS} DIV {tie_span}), CONCAT('att-', i MOD {ATTACKERS})
             FROM {rows};
             ANALYZE TABLE observations;",
            depth = if mariadb {
                String::new()
            } else {
                format!(", cte_max_recursion_depth = {ROWS}")
            },
            attackers = numbers(ATTACKERS - 1),
            rows = numbers(ROWS - 1),
            tie_span = PRIMITIVES * 2,
        )))
        .await
        .expect("bulk load");
        println!(
            "mysql: loaded {ROWS} observations into DECNET's schema on {version} in {:.1?}",
            started.elapsed()
        );

        let repo =
            MysqlRepository::connect(MysqlConfig::from_url(url).expect("url")).expect("config");
        let all =
            query("SELECT id, primitive, confidence, ts FROM observations WHERE attacker_uuid = ?")
                .bind(TARGET)
                .fetch_all(&mut conn)
                .await
                .expect("all rows of the target");
        assert_eq!(all.len(), 10_000);
        let rows = all
            .iter()
            .map(|row| decnet_repo::Observation {
                id: row.get("id"),
                identity_ref: None,
                primitive: row.get("primitive"),
                value: serde_json::Value::Null,
                confidence: 0.5,
                window_start_ts: 0.0,
                window_end_ts: 0.0,
                source: String::new(),
                evidence_ref: String::new(),
                envelope_v: 1,
                ts: f64::from(row.get::<f32, _>("ts")),
                attacker_uuid: TARGET.to_owned(),
            })
            .collect();
        conn.close().await.ok();
        let latest = repo
            .latest_observation_per_primitive(TARGET)
            .await
            .expect("latest");
        let got: Vec<String> = latest.iter().map(|o| o.id.clone()).collect();
        assert_eq!(
            got,
            reference(rows),
            "the loose scan and the reference disagree"
        );

        let stats = time_calls(CALLS, || async {
            repo.latest_observation_per_primitive(TARGET)
                .await
                .expect("latest")
                .len()
        })
        .await;
        report(
            &format!(
                "mysql: latest_observation_per_primitive ({CALLS} calls after {WARM_UP} warm-up)"
            ),
            &stats,
            true,
        );

        let reader = MySqlPoolOptions::new()
            .max_connections(4)
            .connect_lazy_with(url.parse::<MySqlConnectOptions>().expect("url"));
        let stats = time_calls(CALLS / 10, || async {
            let rows = query(DECNET_LATEST)
                .bind(TARGET)
                .bind(TARGET)
                .fetch_all(&reader)
                .await
                .expect("DECNET's query");
            let mut primitives: Vec<String> = rows.iter().map(|row| row.get("primitive")).collect();
            primitives.dedup();
            primitives.len()
        })
        .await;
        report(
            &format!(
                "mysql: for comparison, DECNET's query ({} calls after {WARM_UP} warm-up; it returns every tied row)",
                CALLS / 10
            ),
            &stats,
            false,
        );
        reader.close().await;
    }
}

struct Stats {
    p50: Duration,
    p99: Duration,
    max: Duration,
    mean: Duration,
}

impl Stats {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        let at = |q: f64| {
            // Nearest rank: the smallest sample with at least q of them at or below.
            let rank = (q * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        };
        let total: Duration = samples.iter().sum();
        Stats {
            p50: at(0.50),
            p99: at(0.99),
            max: samples[samples.len() - 1],
            mean: total / u32::try_from(samples.len()).expect("few samples"),
        }
    }
}
