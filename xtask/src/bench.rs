//! `cargo xtask bench`: the service benchmarks behind docs/BENCHMARKS.md.
//!
//! ```text
//! cargo xtask bench [--quick] [--no-build] [--docs | --no-docs] [SCENARIO ...]
//! cargo xtask bench [--quick] --report-only [--docs | --no-docs]   re-render the last run
//! cargo xtask bench micro [CARGO BENCH ARGS ...]     the crates' micro-benchmarks
//! ```
//!
//! Scenarios (default: all of them, in this order): `idle`, `fanout`,
//! `ceiling`, `ceiling-pinned` (the ceiling with the server on CPU 0 and one
//! worker, the load generator on CPU 1, through `taskset`), `open-rate`,
//! `ablation`, `h2` (HTTP/1.1 plain and over TLS
//! against HTTP/2 one connection per stream and 100 streams per connection,
//! over the test certificate of testdata/tls), `kinds` (every stream kind),
//! `logs-db` (`/stream`'s database load with 100 dashboards, on PostgreSQL,
//! SQLite and MySQL). Each starts a fresh RELEASE
//! `decnet-events` on PostgreSQL (database `decnet_bench`, dropped and
//! recreated once per run) and NATS, drives it with `decnet-loadgen`, and
//! stops it. Summaries (JSON), server logs and the Markdown section go to
//! `target/bench/<full|quick>/`; a full run of every scenario also rewrites
//! the three generated sections of docs/BENCHMARKS.md (service, h2, kinds:
//! each between its own markers, rewritten only when one of its scenarios
//! ran) and docs/bench-latency.svg, docs/bench-rss-h2.svg (`--docs` /
//! `--no-docs` override that).
//!
//! NATS: a private `nats-server` on a free loopback port when one is
//! installed, so the benchmark's tens of thousands of events per second do
//! not reach other developers' test servers on the shared NATS (and theirs do
//! not disturb the figures); otherwise the shared one on 127.0.0.1:4222.
//!
//! File descriptors: every server and load generator runs through
//! `bash -c 'ulimit -Sn $(ulimit -Hn); exec ...'` (the hard limit here is
//! 20,000; raising the soft limit in-process needs `unsafe` `setrlimit`).

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use test_support::process::{ChildProcess, OnDrop, Output};

/// Database the benchmarks own (dropped and recreated every run), unless
/// `DECNET_BENCH_DB` names another (two benchmark runs at once on one
/// PostgreSQL would drop each other's).
const BENCH_DB: &str = "decnet_bench";
/// Maintenance database used to drop and create it.
const ADMIN_DB_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The shared NATS, when no private one can be started.
const SHARED_NATS_URL: &str = "nats://127.0.0.1:4222";
/// The ablation's server binary, beside `decnet-events` in the release
/// directory.
const ABLATION_BIN: &str = "decnet-events-ablation";
/// The JWT secret of the benchmark servers (a loopback-only throwaway).
const JWT_SECRET: &str = "decnet-bench-secret-not-for-production";
/// Attackers seeded (every scenario uses up to this many).
const ATTACKERS: usize = 1000;
/// Users seeded (the per-user cap is lifted, so a few are enough).
const USERS: usize = 20;
/// Where the service section starts and ends in docs/BENCHMARKS.md.
const BEGIN_MARK: &str = "<!-- BEGIN service-benchmarks: written by `cargo xtask bench`, edits inside are overwritten -->";
const END_MARK: &str = "<!-- END service-benchmarks -->";
const ALL: [&str; 10] = [
    "idle",
    "fanout",
    "ceiling",
    "ceiling-pinned",
    "open-rate",
    "ablation",
    "h2",
    "kinds",
    "logs-db",
    "floor",
];

/// A generated section of docs/BENCHMARKS.md: the `report --section` name,
/// its markers, its chart, and the scenarios whose results it shows.
struct DocSection {
    name: &'static str,
    begin: &'static str,
    end: &'static str,
    svg: &'static str,
    scenarios: &'static [&'static str],
}

const SECTIONS: [DocSection; 3] = [
    DocSection {
        name: "service",
        begin: BEGIN_MARK,
        end: END_MARK,
        svg: "bench-latency.svg",
        scenarios: &[
            "idle",
            "fanout",
            "ceiling",
            "ceiling-pinned",
            "open-rate",
            "ablation",
            "floor",
        ],
    },
    DocSection {
        name: "h2",
        begin: "<!-- BEGIN h2-benchmarks: written by `cargo xtask bench h2`, edits inside are overwritten -->",
        end: "<!-- END h2-benchmarks -->",
        svg: "bench-rss-h2.svg",
        scenarios: &["h2"],
    },
    DocSection {
        name: "kinds",
        begin: "<!-- BEGIN kind-benchmarks: written by `cargo xtask bench kinds logs-db`, edits inside are overwritten -->",
        end: "<!-- END kind-benchmarks -->",
        svg: "",
        scenarios: &["kinds", "logs-db"],
    },
];

/// The h2 scenario's transports (`decnet-loadgen run --transport`).
const TRANSPORTS: [&str; 4] = ["h1", "h1-tls", "h2", "h2-mux"];
/// The kinds scenario's bus-fed kinds (`decnet-loadgen run --kind`).
const KINDS: [&str; 5] = [
    "attacker",
    "identities",
    "campaigns",
    "orchestrator",
    "topology",
];
/// The benchmark server's certificate and key (and the loadgen's CA).
const TLS_CERT: &str = "testdata/tls/cert-a.pem";
const TLS_KEY: &str = "testdata/tls/key-a.pem";

/// Sizes of every scenario, full or quick.
struct Sizes {
    idle: &'static [usize],
    fanout_streams: usize,
    fanout_rate: u32,
    fanout_secs: u32,
    ceiling_rates: &'static [u32],
    ceiling_secs: u32,
    open_rate: u32,
    open_secs: u32,
    ablation_secs: u32,
    attackers: usize,
    /// h2 and kinds: streams of each run, and the fan-out step.
    compare_streams: usize,
    compare_rate: u32,
    compare_secs: u32,
    /// `/stream`: dashboards on one filter, and the counting window.
    dashboards: usize,
    dashboards_secs: u32,
    /// The floor: socket pairs (two open files each, in one process),
    /// frames/s, seconds per run.
    floor_sockets: usize,
    floor_rates: &'static [u32],
    floor_secs: u32,
}

const FULL: Sizes = Sizes {
    idle: &[10_000, 19_000],
    fanout_streams: 10_000,
    fanout_rate: 2000,
    fanout_secs: 30,
    ceiling_rates: &[
        2000, 2500, 3000, 3500, 4000, 5000, 6000, 7000, 8000, 10_000, 12_000, 14_000, 15_000,
        16_000, 18_000,
    ],
    ceiling_secs: 10,
    open_rate: 1000,
    // 15 000 streams held open: under the server's 20 000 open files.
    open_secs: 15,
    ablation_secs: 10,
    attackers: ATTACKERS,
    compare_streams: 10_000,
    compare_rate: 2000,
    compare_secs: 20,
    dashboards: 100,
    dashboards_secs: 30,
    floor_sockets: 9000,
    floor_rates: &[20_000, 60_000],
    floor_secs: 10,
};

const QUICK: Sizes = Sizes {
    idle: &[1000],
    fanout_streams: 500,
    fanout_rate: 200,
    fanout_secs: 5,
    ceiling_rates: &[500, 1000, 2000],
    ceiling_secs: 3,
    open_rate: 100,
    open_secs: 5,
    ablation_secs: 3,
    attackers: 100,
    compare_streams: 500,
    compare_rate: 200,
    compare_secs: 5,
    dashboards: 20,
    dashboards_secs: 5,
    floor_sockets: 500,
    floor_rates: &[2000],
    floor_secs: 3,
};

/// Streams one load-generator process holds at most (20,000 open files per
/// process; kept well below so 19,000 streams take two processes).
const STREAMS_PER_LOADGEN: usize = 10_000;

/// Entry point of `cargo xtask bench`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("micro") {
        return super::bench(&args[1..]);
    }
    let mut quick = false;
    let mut build = true;
    let mut docs: Option<bool> = None;
    let mut report_only = false;
    let mut scenarios: Vec<&str> = Vec::new();
    for arg in args {
        match arg.as_str() {
            "--quick" => quick = true,
            "--no-build" => build = false,
            "--docs" => docs = Some(true),
            "--no-docs" => docs = Some(false),
            "--report-only" => report_only = true,
            name => match ALL.iter().find(|s| **s == name) {
                Some(s) => scenarios.push(s),
                None => bail!(
                    "unknown bench argument {name:?}; scenarios: {}, micro; flags: --quick --no-build --docs --no-docs --report-only",
                    ALL.join(", ")
                ),
            },
        }
    }
    let every = scenarios.is_empty();
    if every {
        scenarios = ALL.to_vec();
    }
    let write_docs = docs.unwrap_or(every && !quick);
    let sizes = if quick { &QUICK } else { &FULL };
    let command = if args.is_empty() {
        "cargo xtask bench".to_owned()
    } else {
        format!("cargo xtask bench {}", args.join(" "))
    };

    let root = std::env::current_dir().context("cwd")?;
    let bin_dir = target_dir(&root).join("release");
    let out = target_dir(&root)
        .join("bench")
        .join(if quick { "quick" } else { "full" });
    if report_only {
        // Re-publish the last run's summaries (e.g. after changing the report).
        let saved = std::fs::read_to_string(out.join("meta.txt"))
            .with_context(|| format!("no previous run in {}", out.display()))?;
        let (meta, failures): (Vec<String>, Vec<String>) = (
            saved
                .lines()
                .filter_map(|l| l.strip_prefix("meta:").map(str::to_owned))
                .collect(),
            saved
                .lines()
                .filter_map(|l| l.strip_prefix("failure:").map(str::to_owned))
                .collect(),
        );
        let write_docs = docs.unwrap_or(!quick);
        let ran: Vec<&str> = if every {
            ALL.to_vec()
        } else {
            scenarios.clone()
        };
        return publish(
            &root,
            &bin_dir.join("decnet-loadgen"),
            &out,
            &meta,
            &failures,
            write_docs,
            &ran,
        );
    }

    let report = super::ensure_services();
    report.print();
    if !super::reachable("127.0.0.1:5432") {
        bail!("PostgreSQL is not answering on 127.0.0.1:5432");
    }
    if build {
        if scenarios.contains(&"ablation") {
            // The ablation's server is a build of its own (the feature adds
            // state to every stream): built first, kept under another name,
            // so the release build every other scenario runs stays the
            // production one.
            super::step(
                "build (release, ablation)",
                super::cargo().args([
                    "build",
                    "--release",
                    "-p",
                    "decnet-events",
                    "--features",
                    "decnet-events/ablation",
                ]),
            )?;
            std::fs::copy(bin_dir.join("decnet-events"), bin_dir.join(ABLATION_BIN))
                .context("keeping the ablation build")?;
        }
        super::step(
            "build (release)",
            super::cargo().args([
                "build",
                "--release",
                "-p",
                "decnet-events",
                "-p",
                "decnet-loadgen",
            ]),
        )?;
    }
    if every && out.exists() {
        // A run of every scenario starts from nothing; a subset replaces only
        // its own results, so `cargo xtask bench ceiling` re-measures one
        // scenario and the section shows it beside the earlier ones.
        std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for scenario in &scenarios {
        remove_results(&out, scenario)?;
    }
    let ctx = Ctx {
        events_bin: bin_dir.join("decnet-events"),
        loadgen_bin: bin_dir.join("decnet-loadgen"),
        out: out.clone(),
        database_url: format!(
            "postgres://postgres@127.0.0.1:5432/{}",
            std::env::var("DECNET_BENCH_DB")
                .ok()
                .filter(|db| !db.is_empty()
                    && db.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                .unwrap_or_else(|| BENCH_DB.to_owned())
        ),
        nats: Nats::start(&out)?,
    };
    eprintln!(
        "\n==> bench: NATS at {} ({})",
        ctx.nats.url,
        ctx.nats.kind()
    );

    ctx.seed(sizes.attackers.max(ATTACKERS))?;

    let mut failures = Vec::new();
    for scenario in &scenarios {
        eprintln!("\n==> bench: scenario {scenario}");
        let begun = Instant::now();
        let load_before = load_average();
        let res = match *scenario {
            "idle" => ctx.idle(sizes),
            "fanout" => ctx.fanout(sizes, "fanout", "shared"),
            "ceiling" => ctx.ceiling(sizes, "ceiling", None),
            "ceiling-pinned" => ctx.ceiling(sizes, "ceiling-pinned", Some(PINNED)),
            "open-rate" => ctx.open_rate(sizes),
            "ablation" => ctx.fanout(sizes, "ablation", "per-connection"),
            "h2" => ctx.h2(sizes),
            "kinds" => ctx.kinds(sizes),
            "logs-db" => ctx.logs_db(sizes),
            "floor" => ctx.floor(sizes),
            _ => Ok(()),
        };
        let load_after = load_average();
        let run = format!(
            "{scenario}: {} UTC, `{command}`, {:.0} s, load average (1/5/15 min) {load_before} before, {load_after} after",
            date_utc(),
            begun.elapsed().as_secs_f64(),
        );
        match res {
            Ok(()) => eprintln!("==> bench: {run}"),
            Err(error) => {
                eprintln!("==> bench: scenario {scenario} FAILED: {error:#}");
                failures.push(format!("{scenario}: {error:#}"));
            }
        }
        record_run(&out, scenario, &run)?;
    }

    let mut meta = vec![format!(
        "Machine=2-core shared VM ({}), load generator, NATS ({}) and PostgreSQL on the same machine; other engineers may have been compiling (see the load averages)",
        cpu_model(),
        ctx.nats.kind()
    )];
    let runs = std::fs::read_to_string(out.join("runs.txt")).unwrap_or_default();
    for line in runs.lines() {
        meta.push(format!("Run={line}"));
    }
    let mut saved = String::new();
    for m in &meta {
        let _ = writeln!(saved, "meta:{m}");
    }
    for f in &failures {
        let _ = writeln!(saved, "failure:{f}");
    }
    std::fs::write(out.join("meta.txt"), saved).context("writing meta.txt")?;
    publish(
        &root,
        &ctx.loadgen_bin,
        &out,
        &meta,
        &failures,
        write_docs,
        &scenarios,
    )?;
    if !failures.is_empty() {
        bail!(
            "{} scenario(s) failed: {}",
            failures.len(),
            failures.join("; ")
        );
    }
    Ok(())
}

/// Render every section one of whose scenarios is in `ran` (and its
/// chart) from the summaries in `out`; print it, save it as
/// `out/section-<name>.md`, and splice it between its markers in
/// docs/BENCHMARKS.md when `write_docs` (the other sections stay as they are).
fn publish(
    root: &Path,
    loadgen_bin: &Path,
    out: &Path,
    meta: &[String],
    failures: &[String],
    write_docs: bool,
    ran: &[&str],
) -> Result<()> {
    for section in &SECTIONS {
        if !section.scenarios.iter().any(|s| ran.contains(s)) {
            continue;
        }
        publish_section(root, loadgen_bin, out, meta, failures, write_docs, section)?;
    }
    Ok(())
}

/// Whether a `meta` line belongs to `section` (machine lines belong to all;
/// a `Run=<scenario>: ...` line to the section of its scenario).
fn meta_of(line: &str, section: &DocSection) -> bool {
    match line.strip_prefix("Run=") {
        Some(run) => section
            .scenarios
            .iter()
            .any(|s| run.starts_with(&format!("{s}: "))),
        None => true,
    }
}

fn publish_section(
    root: &Path,
    loadgen_bin: &Path,
    out: &Path,
    meta: &[String],
    failures: &[String],
    write_docs: bool,
    section: &DocSection,
) -> Result<()> {
    let mut report = Command::new(loadgen_bin);
    report
        .args(["report", "--section", section.name, "--dir"])
        .arg(out);
    let svg = if section.svg.is_empty() {
        None
    } else if write_docs {
        Some(root.join("docs").join(section.svg))
    } else {
        Some(out.join(section.svg))
    };
    if let Some(svg) = &svg {
        report
            .arg("--svg")
            .arg(svg)
            .args(["--svg-link", section.svg]);
    }
    for m in meta.iter().filter(|m| meta_of(m, section)) {
        report.args(["--meta", m]);
    }
    let failures: Vec<String> = failures
        .iter()
        .filter(|f| {
            section
                .scenarios
                .iter()
                .any(|s| f.starts_with(&format!("{s}: ")))
        })
        .cloned()
        .collect();
    let output = report.output().context("running decnet-loadgen report")?;
    if !output.status.success() {
        bail!(
            "decnet-loadgen report failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let generated = String::from_utf8_lossy(&output.stdout).into_owned();
    let text = section_text(section, &generated, &failures);
    let saved = out.join(format!("section-{}.md", section.name));
    std::fs::write(&saved, &text).with_context(|| format!("writing {}", saved.display()))?;
    println!("{text}");
    if write_docs {
        let path = root.join("docs").join("BENCHMARKS.md");
        let existing = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, splice(&existing, &text, section.begin, section.end))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "==> bench: wrote the {} section of {}{}",
            section.name,
            path.display(),
            svg.map(|s| format!(" and {}", s.display()))
                .unwrap_or_default()
        );
    } else {
        eprintln!("==> bench: docs untouched; section in {}", saved.display());
    }
    Ok(())
}

/// Delete the results of `scenario` from an earlier run.
fn remove_results(out: &Path, scenario: &str) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = match scenario {
            "idle" => name.starts_with("idle-"),
            "h2" => name.starts_with("h2-"),
            "kinds" => name.starts_with("kind-"),
            "logs-db" => name.starts_with("logs-db"),
            _ => name.starts_with(&format!("{scenario}.")),
        };
        if ours && name.ends_with(".json") {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Keep one line per scenario in `out/runs.txt`: when and how it last ran.
fn record_run(out: &Path, scenario: &str, line: &str) -> Result<()> {
    let path = out.join("runs.txt");
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    let prefix = format!("{scenario}: ");
    let mut lines: Vec<String> = existing
        .lines()
        .filter(|l| !l.starts_with(&prefix))
        .map(str::to_owned)
        .collect();
    lines.push(line.to_owned());
    lines.sort_by_key(|l| {
        ALL.iter()
            .position(|s| l.starts_with(&format!("{s}: ")))
            .unwrap_or(ALL.len())
    });
    std::fs::write(&path, lines.join("\n") + "\n").context("writing runs.txt")
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// The fixed text of a section around its generated figures.
fn section_text(section: &DocSection, generated: &str, failures: &[String]) -> String {
    let mut s = String::new();
    s.push_str(section.begin);
    match section.name {
        "h2" => s.push_str(H2_TEXT),
        "kinds" => s.push_str(KINDS_TEXT),
        _ => service_text(&mut s),
    }
    s.push_str(generated.trim_end());
    s.push('\n');
    if !failures.is_empty() {
        s.push_str("\nScenarios that failed to run:\n\n");
        for failure in failures {
            let _ = writeln!(s, "- {failure}");
        }
    }
    s.push_str(section.end);
    s.push('\n');
    s
}

const H2_TEXT: &str = "\n## decnet-events: HTTP/1.1 against HTTP/2 (memory per idle stream, CPU per frame)\n\n\
The same release server, load generator, bus and database as the service benchmarks, one fresh server per transport; for the TLS transports the server serves `testdata/tls/cert-a.pem` (`DECNET_TLS_CERT` / `DECNET_TLS_KEY`, rustls on ring, ALPN `h2` and `http/1.1`; `/readyz` on a plain `DECNET_OPS_BIND` listener) and the load generator trusts it with `--ca`.\n\
Each run opens 10 000 attacker streams (the ticket POST and the events GET on the stream's own connection; for h2-mux on its group's connection), holds them idle 10 s (RSS per idle stream = (RSS idle - RSS before) / streams), then publishes 2 000 events/s for 20 s round-robin over 1 000 attackers (20 000 frames/s).\n\
h1 = plain HTTP/1.1 (the load generator's own minimal client), h1-tls = the same client over tokio-rustls, h2 = hyper's HTTP/2 client over tokio-rustls, one connection per stream, h2-mux = the same with 100 streams on each connection (100 connections).\n\
CPU per frame = utime + stime of the process over the step / frames delivered, from /proc.\n\
Reproduce: `cargo xtask bench h2 --docs` (about 3 to 4 minutes after the release build; rewrites this section and docs/bench-rss-h2.svg only).\n\n";

const KINDS_TEXT: &str = "\n## decnet-events: every stream kind, and `/stream`'s database load\n\n\
One fresh server per kind, plain HTTP/1.1, 10 000 streams held idle 10 s, then 20 s of publishing on the kind's topics: the attacker and topology streams spread over 1 000 keys (seeded attackers, seeded topologies) at 2 000 events/s; the identities, campaigns and orchestrator streams are firehoses (every event reaches every stream), so 2 events/s make the same 20 000 frames/s, in bursts of 10 000 frames.\n\
Topics: `attacker.observation.bench.latency`, `topology.<id>.bench.latency`, `identity.bench.latency`, `campaign.bench.latency`, `orchestrator.bench.latency`.\n\
`/stream` (logs, stats, histogram polled from the database), on PostgreSQL, SQLite and MySQL (MariaDB) in turn: 1 dashboard, then (another fresh server) 100 dashboards open on the same (empty) filter, idle 30 s each. The database's load is the server's own count of its queries per read (`decnet_repository_queries_total`, read from `/metrics` 2 s after the last open and at the end of the window; the readiness probe's `ping` is left out of the rate), the same on every engine, against DECNET's endpoint's one `get_logs_after_id` per second per connection plus stats and histogram every ~10 s. \
SQLite and MySQL get a database of their own with DECNET's schema (`decnet-loadgen seed --database-url sqlite://<file>` or `mysql://<server>`, through decnet-repo's `testing` writers). On PostgreSQL the change of `xact_commit + xact_rollback` in `pg_stat_database` is reported too, with its window starting 11 s after the last open (PostgreSQL 15 flushes an idle backend's pending counts up to 10 s late), and the scans per table (`pg_stat_user_tables`).\n\
Reproduce: `cargo xtask bench kinds logs-db --docs` (rewrites this section only; `logs-db` alone re-measures `/stream`).\n\n";

/// The fixed text of the service section.
fn service_text(s: &mut String) {
    s.push_str("\n## decnet-events: service benchmarks (fan-out, idle streams, open rate)\n\n");
    s.push_str(
        "A release `decnet-events` on PostgreSQL and NATS, driven by `decnet-loadgen` (bins/decnet-loadgen) on the same machine.\n\
The load generator opens real streams (`POST /api/v1/auth/sse-ticket` with a Bearer JWT, then `GET /api/v1/attackers/{uuid}/events?ticket=..` on the same keep-alive connection), spread round-robin over 1 000 seeded attackers, from 8 loopback source addresses.\n\
It publishes `attacker.observation.bench.latency` events on the bus, round-robin over the attackers, each carrying `payload.sent_at_ns`; latency is from just before the publish to the frame parsed out of the SSE body.\n\
Expected frames are, for each event, the streams open on its attacker; anything short of that is loss.\n\
Server RSS and CPU time (utime + stime) come from `/proc/<pid>/{status,stat}`.\n\
Server settings: `DECNET_SSE_MAX_PER_USER=1000000`, `DECNET_SSE_OPEN_RATE=0` (no per-user open rate), `DECNET_SSE_KEEPALIVE_SECS=15`, `DECNET_SSE_QUEUE_MAX` default (256), `RUST_LOG=warn`.\n\n",
    );
    s.push_str(
        "Scenarios (full mode; `--quick` shrinks every size and duration): idle = streams open and quiet, server RSS per stream = (RSS idle - RSS before) / streams, and the first size again with `DECNET_SSE_HTTP1_HANDOVER=false` (hyper writing the streams);\n\
fan-out = 10 000 streams, 2 000 events/s for 30 s;\n\
ceiling = the same streams, rate raised step by step (10 s each) until p99 > 100 ms or any loss in two tries of the same step (a step that is not clean runs once more; both tries are in the table), reporting the highest clean step;\n\
ceiling, pinned = the ceiling again with each process on a CPU of its own (`taskset -c`): the server on CPU 0 with `TOKIO_WORKER_THREADS=1`, the load generator on CPU 1 (NATS and PostgreSQL are not pinned);\n\
open rate = 1 000 ticket + stream opens per second for 15 s (streams stay open, 15 000 of them: the server holds at most 20 000 open files; they take two load-generator processes opening 500/s each), latency from each open's scheduled start, the rate achieved = streams opened / time from the first open to the last answer;\n\
ablation = the fan-out scenario against a server started with `DECNET_SSE_HUB_MODE=per-connection` (every stream subscribes to the bus itself, as DECNET's Python service does), publishing for 10 s only (the publisher gives up at twice the planned time plus 5 s when the bus pushes back);\n\
floor = no server: `decnet-loadgen floor` writes 120-byte frames to 9 000 loopback socket pairs, 10 per event, at 20 000 and 60 000 frames/s, from one blocking thread and from tokio tasks woken per frame (2 workers, and 1), for 10 s each: what any server pays per frame on this machine.\n\
Above 10 000 streams (idle only) the streams are spread over several load-generator processes (20 000 open files per process) that wait for each other through the server's `decnet_sse_streams_active` gauge; their summaries are merged.\n\n",
    );
    s.push_str(
        "Reproduce: `cargo xtask bench` (about 5 minutes after the release build; it rewrites this section and docs/bench-latency.svg).\n\
`cargo xtask bench --quick` is a 1-2 minute smoke run that leaves the docs alone; `cargo xtask bench fanout ceiling` re-measures named scenarios (add `--docs` to update this section with them, the other rows keep their last run); `cargo xtask bench --report-only` re-renders from the saved summaries.\n\
Raw summaries (JSON), server logs and this text land in `target/bench/<full|quick>/`; `decnet-loadgen run --help` lists the knobs (memory attribution: `--open-until connect|ticket|stream`, `--separate-ticket-conn`).\n\n",
    );
}

/// Replace the part of `existing` between `begin_mark` and `end_mark`, or
/// append it.
pub(crate) fn splice(existing: &str, section: &str, begin_mark: &str, end_mark: &str) -> String {
    if let (Some(begin), Some(end)) = (existing.find(begin_mark), existing.find(end_mark))
        && begin < end
    {
        let after = &existing[end + end_mark.len()..];
        let after = after.strip_prefix('\n').unwrap_or(after);
        return format!("{}{section}{after}", &existing[..begin]);
    }
    let mut out = existing.trim_end().to_owned();
    out.push_str("\n\n");
    out.push_str(section);
    out
}

/// The machine's load averages (1, 5, 15 min) as `/proc/loadavg` has them.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".to_owned())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// Now, as `YYYY-MM-DD HH:MM` in UTC.
pub(crate) fn date_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown date".to_owned())
}

/// The pinned ceiling's CPUs: the server's, the load generator's.
const PINNED: Cpus = Cpus {
    server: 0,
    loadgen: 1,
};

/// A server and its load generator each pinned to one CPU.
#[derive(Debug, Clone, Copy)]
struct Cpus {
    server: usize,
    loadgen: usize,
}

/// `bash -c 'ulimit -Sn $(ulimit -Hn); exec "$0" "$@"' program args..`
fn with_fd_limit(program: &Path) -> Command {
    with_fd_limit_on(program, None)
}

/// [`with_fd_limit`], under `taskset -c <cpu>` when `cpu` is given (the
/// process and every thread it starts run on that CPU alone).
fn with_fd_limit_on(program: &Path, cpu: Option<usize>) -> Command {
    let mut c = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string(), "bash"]);
            c
        }
        None => Command::new("bash"),
    };
    c.arg("-c")
        .arg("ulimit -Sn \"$(ulimit -Hn)\" && exec \"$0\" \"$@\"")
        .arg(program);
    c
}

/// The load generator's options of an idle run.
fn idle_args(sizes: &Sizes) -> Vec<String> {
    strings(&[
        "--attackers",
        &sizes.attackers.to_string(),
        "--connect-concurrency",
        "128",
        "--hold-secs",
        "10",
    ])
}

/// Wait for `child` at most `budget` (killed past it); it must succeed.
fn wait_bounded(child: ChildProcess, budget: Duration) -> Result<()> {
    let name = child.name().to_owned();
    let finished = child
        .finish(budget)
        .map_err(|_| anyhow::anyhow!("{name} ran past its {budget:?} budget and was killed"))?;
    if !finished.status.success() {
        bail!("{name} exited with {}", finished.status);
    }
    Ok(())
}

/// The NATS the benchmark uses.
struct Nats {
    url: String,
    /// A private server this xtask started (SIGTERM, then SIGKILL, on drop).
    child: Option<ChildProcess>,
}

impl Nats {
    fn start(out: &Path) -> Result<Nats> {
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file());
        let Some(binary) = binary else {
            return Ok(Nats {
                url: SHARED_NATS_URL.to_owned(),
                child: None,
            });
        };
        let port = test_support::free_port();
        let log = File::create(out.join("nats.log")).context("nats.log")?;
        let mut child = ChildProcess::spawn(
            "private nats-server",
            Command::new(binary).args(["-a", "127.0.0.1", "-p", &port.to_string()]),
            Output::Null,
            Output::File(log),
        )
        .context("starting a private nats-server")?
        .on_drop(OnDrop::Terminate(Duration::from_secs(5)));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        child
            .wait_for_port(addr, Duration::from_secs(10))
            .context("private nats-server")?;
        Ok(Nats {
            url: format!("nats://{addr}"),
            child: Some(child),
        })
    }

    fn kind(&self) -> &'static str {
        if self.child.is_some() {
            "private nats-server"
        } else {
            "shared NATS"
        }
    }
}

/// A running `decnet-events serve` (SIGTERM, then SIGKILL past 20 s, on drop).
struct Server {
    child: ChildProcess,
    port: u16,
    /// HTTPS (the test certificate).
    tls: bool,
    /// The CPU a load generator against this server is pinned to (the
    /// server itself is on another).
    loadgen_cpu: Option<usize>,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

fn http_ok(port: u16, path: &str) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

struct Ctx {
    events_bin: PathBuf,
    loadgen_bin: PathBuf,
    out: PathBuf,
    database_url: String,
    nats: Nats,
}

impl Ctx {
    fn seed(&self, attackers: usize) -> Result<()> {
        super::step(
            "bench database: recreate, migrate, seed",
            Command::new(&self.loadgen_bin)
                .args(["seed", "--recreate-via", ADMIN_DB_URL, "--database-url"])
                .arg(&self.database_url)
                .args(["--attackers", &attackers.to_string()])
                .args(["--users", &USERS.to_string()])
                .args(["--topologies", &attackers.to_string()]),
        )?;
        super::step(
            "decnet-events migrate",
            Command::new(&self.events_bin)
                .arg("migrate")
                .env("DECNET_DATABASE_URL", &self.database_url)
                // `migrate` never uses the secret, but the settings table
                // requires one with a real database (exit 64 without it).
                .env("DECNET_JWT_SECRET", JWT_SECRET),
        )
    }

    fn start_server(&self, name: &str, hub_mode: &str) -> Result<Server> {
        self.start_server_on(name, hub_mode, None)
    }

    /// A server; with `tls` (the repository root) it serves HTTPS with the
    /// test certificate, and `/readyz` on a plain ops listener.
    fn start_server_on(&self, name: &str, hub_mode: &str, tls: Option<&Path>) -> Result<Server> {
        self.start_server_with(name, hub_mode, tls, &[], None)
    }

    /// [`start_server_on`](Self::start_server_on) with `env` set last (a
    /// `/stream` run's database on another engine).
    fn start_server_with(
        &self,
        name: &str,
        hub_mode: &str,
        tls: Option<&Path>,
        env: &[(&str, String)],
        cpus: Option<Cpus>,
    ) -> Result<Server> {
        let port = test_support::free_port();
        let log_path = self.out.join(format!("server-{name}.log"));
        let log = File::create(&log_path).context("server log file")?;
        let log_err = log.try_clone().context("server log file")?;
        let bin = if hub_mode == "shared" {
            self.events_bin.clone()
        } else {
            self.events_bin.with_file_name(ABLATION_BIN)
        };
        let mut command = with_fd_limit_on(&bin, cpus.map(|c| c.server));
        if cpus.is_some() {
            // One CPU: one worker (two would only take turns on it).
            command.env("TOKIO_WORKER_THREADS", "1");
        } else {
            command.env_remove("TOKIO_WORKER_THREADS");
        }
        command
            .arg("serve")
            .env("DECNET_BIND", format!("127.0.0.1:{port}"))
            .env("DECNET_JWT_SECRET", JWT_SECRET)
            .env("DECNET_DB_TYPE", "postgres")
            .env("DECNET_DATABASE_URL", &self.database_url)
            .env("DECNET_BUS_TYPE", "nats")
            .env("DECNET_NATS_URL", &self.nats.url)
            .env("DECNET_SSE_MAX_PER_USER", "1000000")
            // The per-user open rate (5/s, burst 20) would refuse most opens
            // of 20 users opening thousands of streams: off (0 = unlimited).
            .env("DECNET_SSE_OPEN_RATE", "0")
            .env("DECNET_SSE_KEEPALIVE_SECS", "15")
            .env("DECNET_SSE_HUB_MODE", hub_mode)
            .env("DECNET_DEMO", "false")
            .env("RUST_LOG", "warn")
            .env_remove("DECNET_SSE_QUEUE_MAX")
            .env_remove("DECNET_SSE_MAX_TOTAL")
            .env_remove("DECNET_TLS_CERT")
            .env_remove("DECNET_TLS_KEY")
            .env_remove("DECNET_OPS_BIND");
        if !env.is_empty() {
            // Another engine: its variables alone say where the data is.
            command.env_remove("DECNET_DATABASE_URL");
        }
        for (key, value) in env {
            command.env(key, value);
        }
        let mut ready_port = port;
        if let Some(root) = tls {
            ready_port = test_support::free_port();
            command
                .env("DECNET_TLS_CERT", root.join(TLS_CERT))
                .env("DECNET_TLS_KEY", root.join(TLS_KEY))
                .env("DECNET_OPS_BIND", format!("127.0.0.1:{ready_port}"));
        }
        let mut child = ChildProcess::spawn(
            "decnet-events",
            &mut command,
            Output::File(log),
            Output::File(log_err),
        )
        .context("starting decnet-events")?
        .on_drop(OnDrop::Terminate(Duration::from_secs(20)));
        child
            .wait_for(
                "/readyz 200",
                Duration::from_secs(30),
                Duration::from_millis(200),
                |_| http_ok(ready_port, "/readyz"),
            )
            .with_context(|| format!("decnet-events; see {}", log_path.display()))?;
        let server = Server {
            child,
            port,
            tls: tls.is_some(),
            loadgen_cpu: cpus.map(|c| c.loadgen),
        };
        eprintln!(
            "==> bench: decnet-events ({hub_mode}) pid {} on {}",
            server.pid(),
            server.url()
        );
        Ok(server)
    }

    /// A load generator process writing its summary to `<out>/<file>.json`.
    fn spawn_loadgen(&self, server: &Server, file: &str, args: &[String]) -> Result<ChildProcess> {
        let summary = File::create(self.out.join(format!("{file}.json")))
            .with_context(|| format!("creating {file}.json"))?;
        let mut command = with_fd_limit_on(&self.loadgen_bin, server.loadgen_cpu);
        command
            .arg("run")
            .args(["--url", &server.url()])
            .args(["--server-pid", &server.pid().to_string()])
            .args(["--nats-url", &self.nats.url])
            .args(["--users", &USERS.to_string()])
            .args(["--label", file])
            .args(args)
            .env("DECNET_JWT_SECRET", JWT_SECRET);
        ChildProcess::spawn(
            "decnet-loadgen",
            &mut command,
            Output::File(summary),
            Output::Inherit,
        )
        .context("starting decnet-loadgen")
    }

    /// Run `streams` spread over as many processes as needed; the summary
    /// (merged when several) ends up in `<out>/<name>.json`.
    fn load(
        &self,
        server: &Server,
        name: &str,
        streams: usize,
        args: &[String],
        budget: Duration,
    ) -> Result<()> {
        let processes = loadgens_for(streams);
        if processes > 1 && args.iter().any(|a| a == "--rates") {
            // Every process would publish the full event stream: streams would
            // get each event once per process and the loss maths break.
            bail!("{streams} streams need {processes} load generators; publishing runs take one");
        }
        if processes == 1 {
            let mut all = vec!["--streams".to_owned(), streams.to_string()];
            all.extend_from_slice(args);
            let child = self.spawn_loadgen(server, name, &all)?;
            return wait_bounded(child, budget);
        }
        let mut children = Vec::new();
        let mut parts = Vec::new();
        let mut offset = 0;
        for p in 0..processes {
            let n = (streams - offset).div_ceil(processes - p);
            let part = format!("{name}.part{p}");
            let mut all = vec![
                "--streams".to_owned(),
                n.to_string(),
                "--stream-offset".to_owned(),
                offset.to_string(),
                "--wait-active".to_owned(),
                streams.to_string(),
            ];
            all.extend_from_slice(args);
            children.push(self.spawn_loadgen(server, &part, &all)?);
            parts.push(self.out.join(format!("{part}.json")));
            offset += n;
        }
        for child in children {
            wait_bounded(child, budget)?;
        }
        let merged = File::create(self.out.join(format!("{name}.json")))
            .with_context(|| format!("creating {name}.json"))?;
        let status = Command::new(&self.loadgen_bin)
            .arg("merge")
            .args(&parts)
            .stdout(merged)
            .status()
            .context("decnet-loadgen merge")?;
        if !status.success() {
            bail!("decnet-loadgen merge failed ({status})");
        }
        Ok(())
    }

    /// The machine's floor per frame (`decnet-loadgen floor`), blocking and
    /// tokio writers at each rate; no server.
    fn floor(&self, sizes: &Sizes) -> Result<()> {
        for &rate in sizes.floor_rates {
            // The server's runtime has a worker per core (2 here); one worker
            // shows what the wake-ups between workers cost.
            for (writer, workers, tag) in [
                ("blocking", 1, "blocking"),
                ("tokio", 2, "tokio"),
                ("tokio", 1, "tokio1"),
            ] {
                let name = format!("floor-{tag}-{rate}");
                let summary = File::create(self.out.join(format!("{name}.json")))
                    .with_context(|| format!("creating {name}.json"))?;
                let mut command = with_fd_limit(&self.loadgen_bin);
                command.arg("floor").args(strings(&[
                    "--writer",
                    writer,
                    "--workers",
                    &workers.to_string(),
                    "--sockets",
                    &sizes.floor_sockets.to_string(),
                    "--rate",
                    &rate.to_string(),
                    "--secs",
                    &sizes.floor_secs.to_string(),
                    "--label",
                    &name,
                ]));
                let child = ChildProcess::spawn(
                    "decnet-loadgen floor",
                    &mut command,
                    Output::File(summary),
                    Output::Inherit,
                )
                .context("starting decnet-loadgen floor")?;
                wait_bounded(
                    child,
                    Duration::from_secs(u64::from(sizes.floor_secs) + 120),
                )?;
            }
        }
        Ok(())
    }

    fn idle(&self, sizes: &Sizes) -> Result<()> {
        for &streams in sizes.idle {
            let server = self.start_server(&format!("idle-{streams}"), "shared")?;
            self.load(
                &server,
                &format!("idle-{streams}"),
                streams,
                &idle_args(sizes),
                Duration::from_secs(300),
            )?;
            drop(server);
        }
        // The first size again with hyper writing the streams, for the
        // ratio within one run.
        if let Some(&streams) = sizes.idle.first() {
            let name = format!("idle-hyper-{streams}");
            let server = self.start_server_with(
                &name,
                "shared",
                None,
                &[
                    ("DECNET_DATABASE_URL", self.database_url.clone()),
                    ("DECNET_SSE_HTTP1_HANDOVER", "false".to_owned()),
                ],
                None,
            )?;
            self.load(
                &server,
                &name,
                streams,
                &idle_args(sizes),
                Duration::from_secs(300),
            )?;
        }
        Ok(())
    }

    fn fanout(&self, sizes: &Sizes, name: &str, hub_mode: &str) -> Result<()> {
        let server = self.start_server(name, hub_mode)?;
        let secs = if hub_mode == "shared" {
            sizes.fanout_secs
        } else {
            sizes.ablation_secs
        };
        let drain = if hub_mode == "shared" { "5" } else { "15" };
        let args = strings(&[
            "--attackers",
            &sizes.attackers.to_string(),
            "--connect-concurrency",
            "128",
            "--hold-secs",
            "2",
            "--rates",
            &sizes.fanout_rate.to_string(),
            "--step-secs",
            &secs.to_string(),
            "--drain-secs",
            drain,
            "--p99-limit-ms",
            "50",
        ]);
        self.load(
            &server,
            name,
            sizes.fanout_streams,
            &args,
            Duration::from_secs(u64::from(secs) + 240),
        )
    }

    /// The ceiling as `name`; with `cpus`, the server and the load
    /// generator each on a CPU of its own.
    fn ceiling(&self, sizes: &Sizes, name: &str, cpus: Option<Cpus>) -> Result<()> {
        if cpus.is_some() {
            let online = std::thread::available_parallelism().map_or(1, usize::from);
            if online < 2 {
                bail!("{name} pins two processes to CPUs 0 and 1; this machine has {online} CPU");
            }
        }
        let server = self.start_server_with(name, "shared", None, &[], cpus)?;
        let rates = sizes
            .ceiling_rates
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let args = strings(&[
            "--attackers",
            &sizes.attackers.to_string(),
            "--connect-concurrency",
            "128",
            "--hold-secs",
            "2",
            "--rates",
            &rates,
            "--step-secs",
            &sizes.ceiling_secs.to_string(),
            "--drain-secs",
            "5",
            "--pause-secs",
            "2",
            "--p99-limit-ms",
            "100",
            "--stop-on-dirty",
            "--retry-dirty",
            "1",
        ]);
        // Each step may run twice.
        let steps = 2 * sizes.ceiling_rates.len() as u64;
        let budget = 180 + steps * (u64::from(sizes.ceiling_secs) + 10);
        self.load(
            &server,
            name,
            sizes.fanout_streams,
            &args,
            Duration::from_secs(budget),
        )
    }

    /// One run per transport: 10 000 streams idle, then a fan-out step.
    fn h2(&self, sizes: &Sizes) -> Result<()> {
        let root = std::env::current_dir().context("cwd")?;
        for transport in TRANSPORTS {
            let name = format!("h2-{transport}");
            let tls = (transport != "h1").then_some(root.as_path());
            let mut args = strings(&["--transport", transport]);
            if tls.is_some() {
                args.push("--ca".to_owned());
                args.push(root.join(TLS_CERT).to_string_lossy().into_owned());
            }
            self.compare_run(sizes, &name, tls, sizes.compare_rate, &args)?;
        }
        Ok(())
    }

    /// One run per bus-fed kind (idle, then a fan-out step at the same
    /// frame rate).
    fn kinds(&self, sizes: &Sizes) -> Result<()> {
        for kind in KINDS {
            let name = format!("kind-{kind}");
            // A firehose event reaches every stream: the same frames per
            // second from 1 / (streams / keys) of the events.
            let keyed = matches!(kind, "attacker" | "topology");
            let per_event = if keyed {
                sizes.compare_streams.div_ceil(sizes.attackers)
            } else {
                sizes.compare_streams
            };
            let frames =
                sizes.compare_rate as usize * sizes.compare_streams.div_ceil(sizes.attackers);
            let rate = u32::try_from((frames / per_event.max(1)).max(1)).unwrap_or(1);
            self.compare_run(sizes, &name, None, rate, &strings(&["--kind", kind]))?;
        }
        Ok(())
    }

    /// `/stream` with dashboards on one filter, on every engine.
    fn logs_db(&self, sizes: &Sizes) -> Result<()> {
        // On each engine, one dashboard first: the database load of one
        // poller, which the 100 dashboards on the same filter must not
        // multiply.
        for engine in ["postgres", "sqlite", "mysql"] {
            let (database, count) = self.logs_database(engine)?;
            for (one, dashboards) in [(true, 1), (false, sizes.dashboards)] {
                let name = logs_run_name(engine, one);
                let server = self.start_server_with(&name, "shared", None, &database.env, None)?;
                let args = vec![
                    "--kind".to_owned(),
                    "logs".to_owned(),
                    "--hold-secs".to_owned(),
                    sizes.dashboards_secs.to_string(),
                    "--count-db".to_owned(),
                    count.clone(),
                ];
                self.load(
                    &server,
                    &name,
                    dashboards,
                    &args,
                    Duration::from_secs(u64::from(sizes.dashboards_secs) + 120),
                )?;
            }
        }
        Ok(())
    }

    /// The database a `/stream` run's server reads on `engine`: the bench
    /// database on PostgreSQL; on SQLite and MySQL a database with DECNET's
    /// schema seeded by `decnet-loadgen seed` (removed when dropped). With
    /// it, what `--count-db` is given.
    fn logs_database(&self, engine: &str) -> Result<(EngineDb, String)> {
        let seeded = |url: String| -> Result<String> {
            let output = Command::new(&self.loadgen_bin)
                .args(["seed", "--database-url", &url])
                .args(["--attackers", "1", "--users", &USERS.to_string()])
                .stderr(std::process::Stdio::inherit())
                .output()
                .with_context(|| format!("decnet-loadgen seed on {engine}"))?;
            if !output.status.success() {
                bail!("decnet-loadgen seed on {engine}: {}", output.status);
            }
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        };
        match engine {
            "sqlite" => {
                let path = self.out.join("logs-db.sqlite");
                let path = seeded(format!("sqlite://{}", path.display()))?;
                Ok((
                    EngineDb {
                        env: vec![
                            ("DECNET_DB_TYPE", "sqlite".to_owned()),
                            ("DECNET_DB_PATH", path.clone()),
                        ],
                        file: Some(PathBuf::from(path)),
                    },
                    "sqlite".to_owned(),
                ))
            }
            "mysql" => {
                let server = std::env::var("DECNET_TEST_MYSQL_URL")
                    .ok()
                    .filter(|url| !url.is_empty())
                    .unwrap_or_else(|| "mysql://root@127.0.0.1:3306".to_owned());
                let url = seeded(server)?;
                Ok((
                    EngineDb {
                        env: vec![
                            ("DECNET_DB_TYPE", "mysql".to_owned()),
                            ("DECNET_DB_URL", url),
                        ],
                        file: None,
                    },
                    "mysql".to_owned(),
                ))
            }
            _ => Ok((
                EngineDb {
                    env: Vec::new(),
                    file: None,
                },
                self.database_url.clone(),
            )),
        }
    }

    /// One run of the h2 and kinds scenarios against a fresh server (HTTPS
    /// with `tls`): the streams held 10 s idle, then one publishing step at
    /// `rate`; `extra` says which transport or kind.
    fn compare_run(
        &self,
        sizes: &Sizes,
        name: &str,
        tls: Option<&Path>,
        rate: u32,
        extra: &[String],
    ) -> Result<()> {
        let server = self.start_server_on(name, "shared", tls)?;
        // An idle run's opening and hold, then one publishing step.
        let mut args = idle_args(sizes);
        args.extend(strings(&[
            "--rates",
            &rate.to_string(),
            "--step-secs",
            &sizes.compare_secs.to_string(),
            "--drain-secs",
            "5",
            "--p99-limit-ms",
            "50",
        ]));
        args.extend_from_slice(extra);
        self.load(
            &server,
            name,
            sizes.compare_streams,
            &args,
            Duration::from_secs(u64::from(sizes.compare_secs) + 300),
        )
    }

    fn open_rate(&self, sizes: &Sizes) -> Result<()> {
        let server = self.start_server("open-rate", "shared")?;
        let streams = (sizes.open_rate * sizes.open_secs) as usize;
        // Each process paces its own share: together they open at the rate.
        let per_process = f64::from(sizes.open_rate) / loadgens_for(streams) as f64;
        let args = strings(&[
            "--attackers",
            &sizes.attackers.to_string(),
            "--open-rate",
            &per_process.to_string(),
            // High enough never to be the bottleneck at the target rate.
            "--connect-concurrency",
            "2000",
            // Every process holds its streams past the barrier (polled
            // every 0.5 s), so none leaves before the others have seen the
            // total.
            "--hold-secs",
            "5",
        ]);
        self.load(
            &server,
            "open-rate",
            streams,
            &args,
            Duration::from_secs(u64::from(sizes.open_secs) + 120),
        )
    }
}

/// Load-generator processes `streams` take ([`STREAMS_PER_LOADGEN`] each).
fn loadgens_for(streams: usize) -> usize {
    streams.div_ceil(STREAMS_PER_LOADGEN).max(1)
}

/// A `/stream` run's database on one engine: the server's variables for it,
/// and the SQLite file to remove afterwards.
struct EngineDb {
    env: Vec<(&'static str, String)>,
    file: Option<PathBuf>,
}

impl Drop for EngineDb {
    fn drop(&mut self) {
        if let Some(file) = &self.file {
            for suffix in ["", "-wal", "-shm"] {
                let mut path = file.clone().into_os_string();
                path.push(suffix);
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// The summary name of a `/stream` database-load run (as the load
/// generator's report reads them): `logs-db[-1]` on PostgreSQL,
/// `logs-db[-1]-<engine>` on the others.
fn logs_run_name(engine: &str, one_dashboard: bool) -> String {
    let base = if one_dashboard {
        "logs-db-1"
    } else {
        "logs-db"
    };
    if engine == "postgres" {
        base.to_owned()
    } else {
        format!("{base}-{engine}")
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_or_appends() {
        let section = format!("{BEGIN_MARK}\nnew\n{END_MARK}\n");
        let fresh = splice(
            "# Benchmarks\n\n## other\ntext\n",
            &section,
            BEGIN_MARK,
            END_MARK,
        );
        assert_eq!(
            fresh,
            format!("# Benchmarks\n\n## other\ntext\n\n{section}")
        );
        let old = format!("# B\n\n{BEGIN_MARK}\nold\n{END_MARK}\n\n## after\n");
        assert_eq!(
            splice(&old, &section, BEGIN_MARK, END_MARK),
            format!("# B\n\n{section}\n## after\n")
        );
        // Another section's markers leave this one alone.
        let h2 = &SECTIONS[1];
        let both = splice(
            &old,
            &format!("{}\nh2\n{}\n", h2.begin, h2.end),
            h2.begin,
            h2.end,
        );
        assert!(both.contains("old") && both.contains("\nh2\n"));
        let again = splice(
            &both,
            &format!("{}\nh2b\n{}\n", h2.begin, h2.end),
            h2.begin,
            h2.end,
        );
        assert!(again.contains("old") && again.contains("h2b") && !again.contains("\nh2\n"));
    }

    #[test]
    fn run_lines_go_to_the_section_of_their_scenario() {
        let [service, h2, kinds] = &SECTIONS;
        assert!(meta_of("Machine=2-core", h2));
        assert!(meta_of("Run=h2: 2026-12-02 04:00 UTC", h2));
        assert!(!meta_of("Run=h2: 2026-12-02 04:00 UTC", service));
        assert!(meta_of("Run=idle: ...", service));
        assert!(!meta_of("Run=idle: ...", kinds));
        for scenario in ALL {
            let owners = SECTIONS
                .iter()
                .filter(|s| s.scenarios.contains(&scenario))
                .count();
            assert_eq!(owners, 1, "{scenario} belongs to one section");
        }
    }
}
