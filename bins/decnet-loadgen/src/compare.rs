//! The comparison sections of docs/BENCHMARKS.md: HTTP/1.1 against HTTP/2
//! (`h2-<transport>.json`, with the RSS-against-open-streams chart), and
//! every stream kind (`kind-<kind>.json`, `logs-db.json`).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

use crate::report::{load, loss_text, ms, notes_of, pct, thousands, us, verdict};
use crate::summary::{Step, Summary};

/// Issue 15's targets: server RSS per idle stream, CPU per frame, and the
/// fan-out's latency (the service section's fan-out limit).
const IDLE_TARGET_KIB: f64 = 8.0;
const CPU_TARGET_US: f64 = 5.0;
const FANOUT_P99_MS: f64 = 50.0;

/// The transports of the h2 scenario, in table order, with how they connect.
pub(crate) const TRANSPORTS: [(&str, &str); 4] = [
    ("h1", "plain HTTP/1.1, one connection per stream"),
    (
        "h1-tls",
        "HTTP/1.1 over TLS (ALPN http/1.1), one connection per stream",
    ),
    ("h2", "HTTP/2 over TLS, one connection per stream"),
    ("h2-mux", "HTTP/2 over TLS, 100 streams per connection"),
];

/// The stream kinds of the kinds scenario, in table order, with their route.
pub(crate) const KINDS: [(&str, &str); 5] = [
    ("attacker", "/api/v1/attackers/{uuid}/events"),
    ("identities", "/api/v1/identities/events"),
    ("campaigns", "/api/v1/campaigns/events"),
    ("orchestrator", "/api/v1/orchestrator/events/stream"),
    ("topology", "/api/v1/topologies/{id}/events"),
];

fn kib_per_stream(s: &Summary) -> Option<f64> {
    s.rss_per_stream_bytes.map(|b| b / 1024.0)
}

fn fanout_met(step: &Step) -> bool {
    step.frames_lost == 0
        && step.frames_expected > 0
        && step.resyncs == 0
        && step.latency.p99_ms.is_some_and(|p| p <= FANOUT_P99_MS)
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "-".to_owned(),
        |k| format!("{:.1} MiB", k as f64 / 1024.0),
    )
}

/// Target rows (idle memory, fan-out) for one run named `name`.
fn target_rows(md: &mut String, name: &str, s: &Summary) {
    let per_stream = kib_per_stream(s);
    let _ = writeln!(
        md,
        "| {name}: idle, {} streams asked, {} open | {} KiB server RSS per stream | <= {IDLE_TARGET_KIB} KiB | {} |",
        thousands(s.streams_requested as f64),
        thousands(s.streams_opened as f64),
        per_stream.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}")),
        verdict(
            per_stream.is_some_and(|v| v <= IDLE_TARGET_KIB)
                && s.streams_opened == s.streams_requested
        ),
    );
    if let Some(step) = s.steps.first() {
        let _ = writeln!(
            md,
            "| {name}: fan-out, {} ev/s, {} frames/s | loss {}, p99 {} ms | zero loss, p99 <= {FANOUT_P99_MS} ms | {} |",
            thousands(step.rate),
            thousands(step.delivered_per_sec),
            loss_text(step),
            ms(step.latency.p99_ms),
            verdict(fanout_met(step)),
        );
        let _ = writeln!(
            md,
            "| {name}: server CPU per frame at {} frames/s | {} µs | <= {CPU_TARGET_US} µs | {} |",
            thousands(step.delivered_per_sec),
            us(step.server_us_per_frame),
            verdict(step.server_us_per_frame.is_some_and(|v| v <= CPU_TARGET_US)),
        );
    }
}

const DETAIL_HEAD: &str = "| streams opened / asked | open p99 ms | RSS before | RSS idle | per idle stream | events/s | delivered frames/s | lost / expected | resyncs | p50 ms | p99 ms | server CPU | server µs/frame | loadgen µs/frame | clean |";
const DETAIL_RULE: &str = "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |";

fn detail_cells(s: &Summary) -> String {
    let step = s.steps.first();
    let cell = |f: &dyn Fn(&Step) -> String| step.map_or_else(|| "-".to_owned(), f);
    format!(
        "{} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}",
        thousands(s.streams_opened as f64),
        thousands(s.streams_requested as f64),
        ms(s.open_latency.p99_ms),
        mib(s.server_before.map(|p| p.rss_kib)),
        mib(s.server_idle.map(|p| p.rss_kib)),
        kib_per_stream(s).map_or_else(|| "-".to_owned(), |v| format!("{v:.1} KiB")),
        cell(&|st| thousands(st.events_published as f64 / st.publish_secs.max(1e-9))),
        cell(&|st| thousands(st.delivered_per_sec)),
        cell(&loss_text),
        cell(&|st| st.resyncs.to_string()),
        cell(&|st| ms(st.latency.p50_ms)),
        cell(&|st| ms(st.latency.p99_ms)),
        cell(&|st| pct(st.server_cpu_pct)),
        cell(&|st| us(st.server_us_per_frame)),
        cell(&|st| us(st.loadgen_us_per_frame)),
        cell(&|st| if st.clean { "yes" } else { "no" }.to_owned()),
    )
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".to_owned(),
    }
}

/// The HTTP/1.1 against HTTP/2 section (and its chart at `svg`).
///
/// # Errors
///
/// Unreadable summaries or a chart that cannot be written.
pub(crate) fn h2_section(dir: &Path, svg: Option<(&Path, &str)>) -> Result<String> {
    let mut runs = Vec::new();
    for (name, how) in TRANSPORTS {
        if let Some(s) = load(dir, &format!("h2-{name}"))? {
            runs.push((name, how, s));
        }
    }
    let mut md = String::new();
    if runs.is_empty() {
        md.push_str("No h2 run in this directory.\n\n");
        return Ok(md);
    }
    md.push_str("| scenario | measured | target | verdict |\n| --- | --- | --- | --- |\n");
    for (name, _, s) in &runs {
        target_rows(&mut md, name, s);
    }
    md.push('\n');
    md.push_str("Each transport against a freshly started server, the same streams and the same offered load:\n\n");
    let _ = writeln!(md, "| transport | {}", &DETAIL_HEAD[2..]);
    let _ = writeln!(md, "| --- {DETAIL_RULE}");
    for (name, how, s) in &runs {
        let _ = writeln!(md, "| {name} ({how}) | {} |", detail_cells(s));
    }
    md.push('\n');
    let base = runs.iter().find(|(n, _, _)| *n == "h1").map(|(_, _, s)| s);
    if let Some(h1) = base {
        md.push_str("Against plain HTTP/1.1 in this run (ratio of the figures above):\n\n");
        md.push_str("| transport | RSS per idle stream | server µs/frame | loadgen µs/frame | p99 |\n| --- | ---: | ---: | ---: | ---: |\n");
        let step = |s: &Summary| s.steps.first().cloned();
        for (name, _, s) in runs.iter().filter(|(n, _, _)| *n != "h1") {
            let (a, b) = (step(s), step(h1));
            let _ = writeln!(
                md,
                "| {name} / h1 | {} | {} | {} | {} |",
                ratio(kib_per_stream(s), kib_per_stream(h1)),
                ratio(
                    a.as_ref().and_then(|x| x.server_us_per_frame),
                    b.as_ref().and_then(|x| x.server_us_per_frame)
                ),
                ratio(
                    a.as_ref().and_then(|x| x.loadgen_us_per_frame),
                    b.as_ref().and_then(|x| x.loadgen_us_per_frame)
                ),
                ratio(
                    a.as_ref().and_then(|x| x.latency.p99_ms),
                    b.as_ref().and_then(|x| x.latency.p99_ms)
                ),
            );
        }
        md.push('\n');
    }
    for (_, _, s) in &runs {
        notes_of(&mut md, s);
    }
    if let Some((path, link)) = svg {
        let series: Vec<(&str, &Summary)> = runs.iter().map(|(n, _, s)| (*n, s)).collect();
        if series.iter().any(|(_, s)| !s.rss_curve.is_empty()) {
            rss_chart(path, &series)?;
            let _ = writeln!(
                md,
                "![server RSS against open streams, HTTP/1.1 and HTTP/2]({link})\n"
            );
        }
    }
    Ok(md)
}

/// The every-stream-kind section.
///
/// # Errors
///
/// Unreadable summaries.
pub(crate) fn kinds_section(dir: &Path) -> Result<String> {
    let mut runs = Vec::new();
    for (name, route) in KINDS {
        if let Some(s) = load(dir, &format!("kind-{name}"))? {
            runs.push((name, route, s));
        }
    }
    let mut logs = Vec::new();
    for engine in LOG_ENGINES {
        if let Some(many) = load(dir, &logs_run_name(engine, false))? {
            logs.push((many, load(dir, &logs_run_name(engine, true))?));
        }
    }
    let mut md = String::new();
    if runs.is_empty() && logs.is_empty() {
        md.push_str("No per-kind run in this directory.\n\n");
        return Ok(md);
    }
    md.push_str("| scenario | measured | target | verdict |\n| --- | --- | --- | --- |\n");
    for (name, _, s) in &runs {
        target_rows(&mut md, name, s);
    }
    for (many, one) in &logs {
        logs_target_row(&mut md, many, one.as_ref());
    }
    md.push('\n');
    if !runs.is_empty() {
        md.push_str("Every kind over plain HTTP/1.1, each against a freshly started server:\n\n");
        let _ = writeln!(md, "| kind (route) | {}", &DETAIL_HEAD[2..]);
        let _ = writeln!(md, "| --- {DETAIL_RULE}");
        for (name, route, s) in &runs {
            let _ = writeln!(md, "| {name} (`{route}`) | {} |", detail_cells(s));
        }
        md.push('\n');
    }
    let logs_runs: Vec<&Summary> = logs
        .iter()
        .flat_map(|(many, one)| one.iter().chain(std::iter::once(many)))
        .collect();
    logs_queries_line(&mut md, &logs_runs);
    logs_scans_line(&mut md, &logs_runs);
    for (_, _, s) in &runs {
        notes_of(&mut md, s);
    }
    for (l, _) in &logs {
        notes_of(&mut md, l);
    }
    Ok(md)
}

/// DECNET's `/stream` makes one logs query per second per connection, and
/// stats + histogram every ~10 s: 1.2 queries per second per dashboard.
pub(crate) const DECNET_QUERIES_PER_DASHBOARD: f64 = 1.0 + 2.0 / 10.0;

/// The engines `/stream`'s database load is measured on, in table order.
pub(crate) const LOG_ENGINES: [&str; 3] = ["postgres", "sqlite", "mysql"];

/// The summary name of a `/stream` database-load run: `logs-db[-1]` on
/// PostgreSQL (the first engine measured, names kept), `logs-db[-1]-<engine>`
/// on the others.
pub(crate) fn logs_run_name(engine: &str, one_dashboard: bool) -> String {
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

/// The server's queries a second over a `/stream` run's window, its
/// readiness pings (`ping`, a fixed rate whatever the streams) left out.
fn query_rate(s: &Summary) -> Option<f64> {
    let db = s.db_load.as_ref()?;
    if db.queries.is_empty() {
        return None;
    }
    let n: u64 = db
        .queries
        .iter()
        .filter(|(read, _)| read.as_str() != "ping")
        .map(|(_, n)| n)
        .sum();
    Some(n as f64 / db.secs.max(1e-9))
}

/// The database load with many dashboards on one filter must be the load
/// of one (one poller per distinct filter); DECNET's grows with each.
fn logs_target_row(md: &mut String, many: &Summary, one: Option<&Summary>) {
    let (Some(db), Some(per_sec)) = (&many.db_load, query_rate(many)) else {
        return;
    };
    let decnet = many.streams_opened as f64 * DECNET_QUERIES_PER_DASHBOARD;
    let single = one.and_then(query_rate);
    // Within a quarter (plus half a query a second of noise) of the
    // one-dashboard load.
    let met = many.streams_opened == many.streams_requested
        && single.is_some_and(|s| per_sec <= s * 1.25 + 0.5);
    let transactions = if db.engine == "postgres" || db.engine.is_empty() {
        format!(
            "; PostgreSQL counted {:.2} transactions/s",
            db.transactions as f64 / db.secs.max(1e-9)
        )
    } else {
        String::new()
    };
    let engine = if db.engine.is_empty() {
        "postgres"
    } else {
        db.engine.as_str()
    };
    let _ = writeln!(
        md,
        "| `/stream` on {engine}: {} dashboards on one filter, database load over {:.0} s | {per_sec:.2} queries/s{transactions}; 1 dashboard: {}; DECNET's endpoint: {decnet:.0} queries/s ({DECNET_QUERIES_PER_DASHBOARD:.1} per dashboard) | the load of 1 dashboard (one poller per filter) | {} |",
        thousands(many.streams_opened as f64),
        db.secs,
        single.map_or_else(|| "not measured".to_owned(), |s| format!("{s:.2}/s")),
        verdict(met),
    );
}

/// Which reads the `/stream` runs' queries were (the server's counts), one
/// line.
fn logs_queries_line(md: &mut String, runs: &[&Summary]) {
    let parts: Vec<String> = runs
        .iter()
        .filter_map(|s| {
            let db = s.db_load.as_ref()?;
            if db.queries.is_empty() {
                return None;
            }
            let reads: Vec<String> = db
                .queries
                .iter()
                .map(|(read, n)| format!("`{read}` {n}"))
                .collect();
            Some(format!(
                "{} on {} dashboard(s): {}",
                if db.engine.is_empty() {
                    "postgres"
                } else {
                    &db.engine
                },
                thousands(s.streams_opened as f64),
                reads.join(", ")
            ))
        })
        .collect();
    if !parts.is_empty() {
        let _ = writeln!(
            md,
            "`/stream` queries over each window, per read (the server's `decnet_repository_queries_total`; `ping` is the readiness probe, not counted in the rate): {}.\n",
            parts.join("; ")
        );
    }
}

/// Which tables the `/stream` runs' queries scanned (what ran), one line.
fn logs_scans_line(md: &mut String, runs: &[&Summary]) {
    let parts: Vec<String> = runs
        .iter()
        .filter_map(|s| {
            // PostgreSQL's statistics only (the other engines have none here).
            let db = s
                .db_load
                .as_ref()
                .filter(|db| db.engine.is_empty() || db.engine == "postgres")?;
            let scans: Vec<String> = db
                .scans
                .iter()
                .map(|(table, n)| format!("`{table}` {n}"))
                .collect();
            Some(format!(
                "{} dashboard(s): {}",
                thousands(s.streams_opened as f64),
                if scans.is_empty() {
                    "none".to_owned()
                } else {
                    scans.join(", ")
                }
            ))
        })
        .collect();
    if !parts.is_empty() {
        let _ = writeln!(
            md,
            "`/stream` table scans over each window (`seq_scan + idx_scan` of `pg_stat_user_tables`: which queries ran): {}.\n",
            parts.join("; ")
        );
    }
}

/// Server RSS (MiB) against open streams, one line per transport.
fn rss_chart(path: &Path, series: &[(&str, &Summary)]) -> Result<()> {
    let points = |s: &Summary| -> Vec<(f64, f64)> {
        s.rss_curve
            .iter()
            .map(|p| (p.streams as f64, p.rss_kib as f64 / 1024.0))
            .collect()
    };
    let all: Vec<(f64, f64)> = series.iter().flat_map(|(_, s)| points(s)).collect();
    let x_max = all.iter().map(|p| p.0).fold(100.0, f64::max) * 1.05;
    let y_max = all.iter().map(|p| p.1).fold(10.0, f64::max) * 1.1;

    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing the chart: {e}");
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "decnet-events: server RSS against open streams, HTTP/1.1 and HTTP/2",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| draw(&e))?;
    chart
        .configure_mesh()
        .x_desc("open streams")
        .y_desc("server RSS, MiB")
        .x_label_formatter(&|x| thousands(*x))
        .draw()
        .map_err(|e| draw(&e))?;
    let colors = [BLUE, MAGENTA, GREEN, RED];
    for (i, (name, s)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let data = points(s);
        chart
            .draw_series(LineSeries::new(data.clone(), color.stroke_width(2)))
            .map_err(|e| draw(&e))?
            .label((*name).to_owned())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(data.iter().map(|&p| Circle::new(p, 2, color.filled())))
            .map_err(|e| draw(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::AtomicHistogram;
    use crate::procfs::ProcSample;
    use crate::summary::RssPoint;

    fn run(label: &str, rss_idle: u64, server_cpu: f64) -> Summary {
        let h = AtomicHistogram::new();
        for v in [1000, 2000, 3000] {
            h.record(v);
        }
        let mut step = Step {
            rate: 100.0,
            events_published: 100,
            publish_secs: 1.0,
            frames_expected: 1000,
            frames_received: 1000,
            window_secs: 1.0,
            histogram: h.take(),
            server_cpu_secs: Some(server_cpu),
            loadgen_cpu_secs: Some(0.01),
            ..Step::default()
        };
        step.finish(50.0);
        let mut s = Summary {
            label: label.to_owned(),
            streams_requested: 1000,
            streams_opened: 1000,
            server_before: Some(ProcSample {
                rss_kib: 10_000,
                cpu_secs: 0.0,
            }),
            server_idle: Some(ProcSample {
                rss_kib: rss_idle,
                cpu_secs: 0.0,
            }),
            rss_curve: vec![
                RssPoint {
                    streams: 0,
                    rss_kib: 10_000,
                },
                RssPoint {
                    streams: 1000,
                    rss_kib: rss_idle,
                },
            ],
            steps: vec![step],
            ..Summary::default()
        };
        s.finish();
        s
    }

    #[test]
    fn the_h2_section_compares_each_transport_with_plain_http1() {
        let dir = std::env::temp_dir().join(format!("loadgen-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        // 8 KiB and 24 KiB per stream; 4 µs and 6 µs per frame.
        for (name, rss, cpu) in [("h1", 18_000, 0.004), ("h2-mux", 34_000, 0.006)] {
            let s = run(name, rss, cpu);
            std::fs::write(
                dir.join(format!("h2-{name}.json")),
                serde_json::to_string(&s).expect("json"),
            )
            .expect("write");
        }
        let svg = dir.join("rss.svg");
        let md = h2_section(&dir, Some((&svg, "rss.svg"))).expect("section");
        assert!(
            md.contains("| h1: idle, 1 000 streams asked, 1 000 open | 8.0 KiB server RSS per stream | <= 8 KiB | MET |"),
            "{md}"
        );
        assert!(md.contains("| h2-mux: idle, 1 000 streams asked, 1 000 open | 24.0 KiB"));
        assert!(
            md.contains("| h1: server CPU per frame at 1 000 frames/s | 4.0 µs | <= 5 µs | MET |")
        );
        assert!(md.contains(
            "| h2-mux: server CPU per frame at 1 000 frames/s | 6.0 µs | <= 5 µs | NOT MET |"
        ));
        assert!(md.contains("| h2-mux / h1 | 3.00x | 1.50x |"), "{md}");
        assert!(md.contains("![server RSS against open streams"));
        let chart = std::fs::read_to_string(&svg).expect("the chart was written");
        assert!(chart.contains("<svg") && chart.contains("h2-mux"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
