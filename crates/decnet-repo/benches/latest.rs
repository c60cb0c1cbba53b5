//! Benchmark: `latest_observation_per_primitive` on PostgreSQL.
//!
//! One attacker with 10,000 observations over 40 primitives (ties on `ts`
//! included), in a table of 1,000,000 rows (100 such attackers, their rows
//! interleaved as they would arrive). 100 warm-up calls, then 1,000 timed calls
//! through the pool, sequentially; reports p50 / p99 / max against the target
//! p99 <= 5 ms (after `VACUUM ANALYZE`). For comparison it also times the plain `DISTINCT ON` query.
//!
//! Needs `DECNET_TEST_DATABASE_URL` (skips with a message when unset). Works in
//! its own schema, dropped at the end (also on panic, by the fixture's guard).
//!
//! Run: `cargo bench -p decnet-repo --all-features --bench latest`.

#![allow(clippy::print_stdout, reason = "a benchmark reports on its terminal")]

use std::time::{Duration, Instant};

use decnet_repo::prelude::*;
use decnet_repo::{PgConfig, PgRepository};

const ATTACKERS: i64 = 100;
const ROWS: i64 = 1_000_000;
const PRIMITIVES: i64 = 40;
const TARGET: &str = "att-7";
const WARM_UP: usize = 100;
const CALLS: usize = 1_000;
const DISTINCT_ON_CALLS: usize = 50;
const P99_TARGET: Duration = Duration::from_millis(5);

fn main() {
    let url = match std::env::var("DECNET_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            println!("skipping: DECNET_TEST_DATABASE_URL is not set (no PostgreSQL to measure)");
            return;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(&url));
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
        "loaded {ROWS} observations ({ATTACKERS} attackers x {} rows, {PRIMITIVES} primitives) in {:.1?}",
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

    for _ in 0..WARM_UP {
        repo.latest_observation_per_primitive(TARGET)
            .await
            .expect("latest");
    }
    let mut samples = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let call = Instant::now();
        let rows = repo
            .latest_observation_per_primitive(TARGET)
            .await
            .expect("latest");
        samples.push(call.elapsed());
        assert_eq!(rows.len(), got.len());
    }
    let stats = Stats::of(samples);
    println!(
        "latest_observation_per_primitive ({CALLS} calls after {WARM_UP} warm-up): \
         p50 {:.3?}  p99 {:.3?}  max {:.3?}  mean {:.3?}",
        stats.p50, stats.p99, stats.max, stats.mean
    );
    println!(
        "target p99 <= {P99_TARGET:?}: {}",
        if stats.p99 <= P99_TARGET {
            "met"
        } else {
            "MISSED"
        }
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
        "for comparison, DISTINCT ON ({DISTINCT_ON_CALLS} calls): p50 {:.3?}  p99 {:.3?}  max {:.3?}",
        stats.p50, stats.p99, stats.max
    );

    drop(client);
    drop(repo);
    guard.drop_now().await.expect("drop bench schema");
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
