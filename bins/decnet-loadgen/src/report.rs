//! `decnet-loadgen report`: turn the summaries of a `cargo xtask bench` run
//! into the Markdown section of docs/BENCHMARKS.md and the latency chart.
//!
//! It reads `<dir>/<scenario>.json` for the scenarios that ran (`idle-<n>`,
//! `fanout`, `ceiling`, `ceiling-pinned`, `open-rate`, `ablation`), judges
//! each target, and
//! prints Markdown on stdout.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::summary::{Step, Summary};

/// Targets from the benchmark issue.
const RSS_PER_STREAM_TARGET_KIB: f64 = 8.0;
const FANOUT_P99_TARGET_MS: f64 = 50.0;
const CEILING_TARGET_FPS: f64 = 150_000.0;
const OPEN_P99_TARGET_MS: f64 = 20.0;
/// Opens per second the open-rate scenario must sustain.
const OPEN_RATE_TARGET: f64 = 1000.0;
/// Share of the asked rate an open-rate run must achieve to count as
/// sustained (the last opens' tail lengthens the phase a little).
const OPEN_RATE_SUSTAINED: f64 = 0.99;
/// The pinned ceiling's name in its rows (`cargo xtask bench` starts its
/// processes so).
const PINNED: &str = "ceiling, pinned (server on CPU 0 with 1 worker, load generator on CPU 1)";

/// What the report needs besides the summaries.
#[derive(Debug, Clone)]
pub(crate) struct ReportOptions {
    /// Directory of `<scenario>.json` summaries.
    pub(crate) dir: PathBuf,
    /// Where to write the SVG chart (`None`: no chart).
    pub(crate) svg: Option<PathBuf>,
    /// How the Markdown links to the chart (relative to docs/).
    pub(crate) svg_link: String,
    /// Free text: date, machine, load, command, mode (one `key=value` each).
    pub(crate) meta: Vec<(String, String)>,
    /// Which section to render.
    pub(crate) section: Section,
}

/// The sections of docs/BENCHMARKS.md the report renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    /// Idle, fan-out, ceiling, open rate, ablation (the latency chart).
    Service,
    /// HTTP/1.1 against HTTP/2 (the RSS chart).
    H2,
    /// Every stream kind and `/stream`'s database load.
    Kinds,
}

impl Section {
    /// Parse `service | h2 | kinds`.
    pub(crate) fn parse(name: &str) -> Result<Section> {
        Ok(match name {
            "service" => Section::Service,
            "h2" => Section::H2,
            "kinds" => Section::Kinds,
            other => anyhow::bail!("--section must be service, h2 or kinds, got {other:?}"),
        })
    }
}

/// The run summary `<dir>/<name>.json`, if that run happened.
pub(crate) fn load(dir: &Path, name: &str) -> Result<Option<Summary>> {
    load_json(dir, name)
}

/// `<dir>/<name>.json` as a `T`, `None` when the file is not there.
fn load_json<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> Result<Option<T>> {
    let path = dir.join(format!("{name}.json"));
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("parsing {}", path.display()))
}

/// Streams opened per second of the opening phase.
fn achieved_open_rate(o: &Summary) -> f64 {
    o.streams_opened as f64 / o.open_secs.max(1e-9)
}

pub(crate) fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

pub(crate) fn us(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

pub(crate) fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0} %"))
}

pub(crate) fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

pub(crate) fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "NOT MET" }
}

pub(crate) fn loss_text(step: &Step) -> String {
    if step.frames_expected == 0 {
        return "-".to_owned();
    }
    format!(
        "{} / {} ({:.3} %)",
        step.frames_lost,
        thousands(step.frames_expected as f64),
        step.frames_lost as f64 * 100.0 / step.frames_expected as f64
    )
}

/// Idle summaries present, by stream count (`idle-<n>.json`).
fn idle_runs(dir: &Path) -> Result<Vec<(u64, Summary)>> {
    let mut runs = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(_) => return Ok(runs),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("idle-")
            .and_then(|rest| rest.strip_suffix(".json"))
            .and_then(|n| n.parse::<u64>().ok())
            && let Some(summary) = load(dir, &format!("idle-{n}"))?
        {
            runs.push((n, summary));
        }
    }
    runs.sort_by_key(|(n, _)| *n);
    Ok(runs)
}

/// Floor summaries present (`floor-<writer>-<rate>.json`), by rate then
/// writer.
fn floor_runs(dir: &Path) -> Result<Vec<crate::floor::FloorSummary>> {
    let mut runs = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(runs);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name
            .strip_suffix(".json")
            .filter(|stem| stem.starts_with("floor-"))
            && let Some(run) = load_json(dir, stem)?
        {
            runs.push(run);
        }
    }
    runs.sort_by(|a, b| {
        a.rate
            .cmp(&b.rate)
            .then_with(|| a.writer.cmp(&b.writer))
            .then_with(|| b.workers.cmp(&a.workers))
    });
    Ok(runs)
}

/// The floor table, and the server's CPU per frame against the tokio floor
/// at the same rate (`steps`: every publishing step of the run).
fn floor_section(md: &mut String, floor: &[crate::floor::FloorSummary], steps: &[&Step]) {
    let Some(first) = floor.first() else {
        return;
    };
    let _ = writeln!(
        md,
        "Floor: what a frame costs this machine with no service in the way (`decnet-loadgen floor`: {} loopback socket pairs in one process, {} sockets per event, {}-byte frames, a reader thread draining them; CPU of the writer's threads over the frames written, from /proc/self/task). `blocking` is one thread and one `write(2)` per frame; `tokio` is a task per socket woken through a `Notify` per frame by a dispatcher task, as the server's streams are, on the server's {} worker threads or on one:\n",
        thousands(first.sockets as f64),
        first.fanout,
        first.frame_bytes,
        floor
            .iter()
            .find(|f| f.writer == "tokio")
            .map_or(2, |f| f.workers),
    );
    md.push_str("| writer | threads | frames/s asked | written/s | read / written | writer µs/frame | reader µs/frame |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for f in floor {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} / {} | {:.1} | {:.1} |",
            f.writer,
            f.workers,
            thousands(f64::from(f.rate)),
            thousands(f.writes_per_sec),
            thousands(f.frames_read as f64),
            thousands(f.frames_written as f64),
            f.writer_us_per_frame,
            f.reader_us_per_frame,
        );
    }
    md.push('\n');
    let workers = floor.iter().map(|f| f.workers).max().unwrap_or(2);
    for f in floor
        .iter()
        .filter(|f| f.writer == "tokio" && f.workers == workers)
    {
        // The clean step delivering closest to the floor's rate.
        let step = steps
            .iter()
            .filter(|s| s.clean)
            .min_by(|a, b| {
                let da = (a.delivered_per_sec - f64::from(f.rate)).abs();
                let db = (b.delivered_per_sec - f64::from(f.rate)).abs();
                da.total_cmp(&db)
            })
            .filter(|s| (s.delivered_per_sec - f64::from(f.rate)).abs() <= f64::from(f.rate) * 0.1);
        let (Some(step), Some(server)) = (step, step.and_then(|s| s.server_us_per_frame)) else {
            continue;
        };
        let blocking = floor
            .iter()
            .find(|b| b.writer == "blocking" && b.rate == f.rate)
            .map(|b| b.writer_us_per_frame);
        let _ = writeln!(
            md,
            "- At {} frames/s the server spent {server:.1} µs per frame: {:.2}x the tokio floor ({:.1} µs){}; the service's own work is the difference, {:.1} µs.",
            thousands(step.delivered_per_sec),
            server / f.writer_us_per_frame.max(1e-9),
            f.writer_us_per_frame,
            blocking.map_or_else(String::new, |b| format!(
                ", of which the blocking write alone is {b:.1} µs"
            )),
            server - f.writer_us_per_frame,
        );
    }
    md.push('\n');
}

/// Build the Markdown (and the chart). Returns the Markdown.
///
/// # Errors
///
/// Unreadable summaries or a chart that cannot be written.
pub(crate) fn report(options: &ReportOptions) -> Result<String> {
    let mut md = meta_lines(&options.meta);
    let dir = &options.dir;
    match options.section {
        Section::Service => {}
        Section::H2 => {
            let svg = options
                .svg
                .as_deref()
                .map(|p| (p, options.svg_link.as_str()));
            md.push_str(&crate::compare::h2_section(dir, svg)?);
            return Ok(md);
        }
        Section::Kinds => {
            md.push_str(&crate::compare::kinds_section(dir)?);
            return Ok(md);
        }
    }
    let idle = idle_runs(dir)?;
    let fanout = load(dir, "fanout")?;
    let ceiling = load(dir, "ceiling")?;
    let pinned = load(dir, "ceiling-pinned")?;
    let open_rate = load(dir, "open-rate")?;
    let ablation = load(dir, "ablation")?;

    // --- targets ---
    md.push_str("| scenario | measured | target | verdict |\n| --- | --- | --- | --- |\n");
    for (n, s) in &idle {
        let per_stream = s.rss_per_stream_bytes.map(|b| b / 1024.0);
        let _ = writeln!(
            md,
            "| idle, {} streams asked, {} open | {} KiB server RSS per stream | <= {RSS_PER_STREAM_TARGET_KIB} KiB | {} |",
            thousands(*n as f64),
            thousands(s.streams_opened as f64),
            per_stream.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}")),
            verdict(
                per_stream.is_some_and(|v| v <= RSS_PER_STREAM_TARGET_KIB)
                    && s.streams_opened == *n
            ),
        );
    }
    if let Some(step) = fanout.as_ref().and_then(|s| s.steps.first()) {
        let met = step.frames_lost == 0
            && step.frames_expected > 0
            && step
                .latency
                .p99_ms
                .is_some_and(|p| p <= FANOUT_P99_TARGET_MS);
        let _ = writeln!(
            md,
            "| fan-out, {} streams, {} ev/s | loss {}, p99 {} ms | zero loss, p99 <= {FANOUT_P99_TARGET_MS} ms | {} |",
            thousands(fanout.as_ref().map_or(0, |s| s.streams_opened) as f64),
            thousands(step.rate),
            loss_text(step),
            ms(step.latency.p99_ms),
            verdict(met),
        );
    }
    for (label, c) in [("ceiling", &ceiling), (PINNED, &pinned)] {
        let Some(c) = c else { continue };
        let best = c.highest_clean_step();
        let _ = writeln!(
            md,
            "| {label} (highest clean step: no loss, p99 <= 100 ms) | {} | >= {} frames/s | {} |",
            best.map_or_else(
                || "no clean step".to_owned(),
                |s| format!(
                    "{} frames/s ({} ev/s)",
                    thousands(s.delivered_per_sec),
                    thousands(s.rate)
                )
            ),
            thousands(CEILING_TARGET_FPS),
            verdict(best.is_some_and(|s| s.delivered_per_sec >= CEILING_TARGET_FPS)),
        );
    }
    if let Some(o) = &open_rate {
        let achieved = achieved_open_rate(o);
        let met = o.streams_failed == 0
            && achieved >= OPEN_RATE_TARGET * OPEN_RATE_SUSTAINED
            && o.open_latency
                .p99_ms
                .is_some_and(|p| p <= OPEN_P99_TARGET_MS);
        let _ = writeln!(
            md,
            "| open rate, {} opens/s asked for {:.0} s | {} opens/s achieved, p99 {} ms (p50 {}), {} failed | >= {} opens/s sustained, p99 <= {OPEN_P99_TARGET_MS} ms | {} |",
            thousands(o.open_rate_target),
            o.streams_requested as f64 / o.open_rate_target.max(1e-9),
            thousands(achieved),
            ms(o.open_latency.p99_ms),
            ms(o.open_latency.p50_ms),
            o.streams_failed,
            thousands(OPEN_RATE_TARGET),
            verdict(met),
        );
    }
    md.push('\n');

    // --- details ---
    if !idle.is_empty() {
        md.push_str("Idle streams (after every stream is open and a hold; RSS from /proc/<pid>/status):\n\n");
        md.push_str("| streams asked | opened | failed | open time | RSS before | RSS idle | per stream |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for (n, s) in &idle {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.1} s | {} | {} | {} |",
                thousands(*n as f64),
                thousands(s.streams_opened as f64),
                s.streams_failed,
                s.open_secs,
                s.server_before.map_or_else(
                    || "-".to_owned(),
                    |p| format!("{:.1} MiB", p.rss_kib as f64 / 1024.0)
                ),
                s.server_idle.map_or_else(
                    || "-".to_owned(),
                    |p| format!("{:.1} MiB", p.rss_kib as f64 / 1024.0)
                ),
                s.rss_per_stream_bytes
                    .map_or_else(|| "-".to_owned(), |b| format!("{:.1} KiB", b / 1024.0)),
            );
        }
        md.push('\n');
        for (_, s) in &idle {
            notes_of(&mut md, s);
        }
        for (n, own) in &idle {
            let Some(hyper) = load(dir, &format!("idle-hyper-{n}"))? else {
                continue;
            };
            let (Some(own_b), Some(hyper_b)) =
                (own.rss_per_stream_bytes, hyper.rss_per_stream_bytes)
            else {
                continue;
            };
            let _ = writeln!(
                md,
                "Hyper writing the streams instead (`DECNET_SSE_HTTP1_HANDOVER=false`, same run): {} streams asked, {} open, {:.1} KiB server RSS per stream against {:.1} KiB with the hand-over ({:.2}x).\n",
                thousands(*n as f64),
                thousands(hyper.streams_opened as f64),
                hyper_b / 1024.0,
                own_b / 1024.0,
                hyper_b / own_b.max(1.0),
            );
        }
    }

    let mut step_rows: Vec<(&str, &Summary, &Step)> = Vec::new();
    if let Some(s) = &fanout {
        step_rows.extend(s.steps.iter().map(|st| ("fan-out", s, st)));
    }
    if let Some(s) = &ablation {
        step_rows.extend(s.steps.iter().map(|st| ("ablation: per-connection", s, st)));
    }
    if let Some(s) = &ceiling {
        step_rows.extend(s.steps.iter().map(|st| ("ceiling", s, st)));
    }
    if let Some(s) = &pinned {
        step_rows.extend(s.steps.iter().map(|st| (PINNED, s, st)));
    }
    if !step_rows.is_empty() {
        md.push_str("Publishing steps (latency = bus publish to SSE frame parsed by the load generator):\n\n");
        md.push_str("| run | streams | events/s | delivered frames/s | lost / expected | resyncs | p50 ms | p99 ms | max ms | server CPU | loadgen CPU | server µs/frame | loadgen µs/frame | server RSS | clean |\n");
        md.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
        for (name, s, st) in &step_rows {
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                thousands(s.streams_opened as f64),
                thousands(st.events_published as f64 / st.publish_secs.max(1e-9)),
                thousands(st.delivered_per_sec),
                loss_text(st),
                st.resyncs,
                ms(st.latency.p50_ms),
                ms(st.latency.p99_ms),
                ms(st.latency.max_ms),
                pct(st.server_cpu_pct),
                pct(st.loadgen_cpu_pct),
                us(st.server_us_per_frame),
                us(st.loadgen_us_per_frame),
                st.server_rss_kib.map_or_else(
                    || "-".to_owned(),
                    |k| format!("{:.0} MiB", k as f64 / 1024.0)
                ),
                if st.clean { "yes" } else { "no" },
            );
        }
        md.push_str("\nCPU is percent of one core over the step (the machine has two; the load generator runs on the same two); µs/frame is that process's utime + stime over the step divided by the frames delivered (the server's includes its keepalives and bus intake, the load generator's its publisher).\n\n");
        if pinned.is_some() {
            md.push_str("The pinned ceiling's processes are started by `taskset -c`: the server on CPU 0 with `TOKIO_WORKER_THREADS=1`, the load generator on CPU 1 (its runtime then has one worker); NATS is not pinned.\n\n");
        }
        for s in [&fanout, &ablation, &ceiling, &pinned]
            .into_iter()
            .flatten()
        {
            notes_of(&mut md, s);
        }
    }
    if let (Some(f), Some(a)) = (
        fanout.as_ref().and_then(|s| s.steps.first()),
        ablation.as_ref().and_then(|s| s.steps.first()),
    ) {
        let _ = writeln!(
            md,
            "Shared hub against per-connection subscriptions at the same offered load: {} against {} delivered frames/s, p99 {} against {} ms, loss {:.3} % against {:.3} %.\n",
            thousands(f.delivered_per_sec),
            thousands(a.delivered_per_sec),
            ms(f.latency.p99_ms),
            ms(a.latency.p99_ms),
            f.frames_lost as f64 * 100.0 / (f.frames_expected.max(1)) as f64,
            a.frames_lost as f64 * 100.0 / (a.frames_expected.max(1)) as f64,
        );
    }
    let floor = floor_runs(dir)?;
    let floor_steps: Vec<&Step> = [&fanout, &ceiling]
        .into_iter()
        .flatten()
        .flat_map(|s| s.steps.iter())
        .collect();
    floor_section(&mut md, &floor, &floor_steps);
    if let Some(o) = &open_rate {
        let _ = writeln!(
            md,
            "Open rate: {} streams asked at {} opens/s, {} opened, {} failed, open latency p50 {} ms, p99 {} ms, max {} ms (connect + ticket + stream headers, measured from each open's scheduled start); of which connect + ticket p50 {} / p99 {} ms, events GET to headers p50 {} / p99 {} ms.\n",
            thousands(o.streams_requested as f64),
            thousands(o.open_rate_target),
            thousands(o.streams_opened as f64),
            o.streams_failed,
            ms(o.open_latency.p50_ms),
            ms(o.open_latency.p99_ms),
            ms(o.open_latency.max_ms),
            ms(o.ticket_latency.p50_ms),
            ms(o.ticket_latency.p99_ms),
            ms(o.stream_latency.p50_ms),
            ms(o.stream_latency.p99_ms),
        );
        if let Some(cpu) = o.open_cpu {
            let secs = o.open_secs.max(1e-9);
            let _ = writeln!(
                md,
                "Over the {:.1} s of opens ({} opens/s achieved): server CPU {:.0} % of one core, load generator{} {:.0} % (utime + stime from /proc; the machine has 2 cores).\n",
                o.open_secs,
                thousands(achieved_open_rate(o)),
                cpu.server_secs * 100.0 / secs,
                if o.processes > 1 {
                    format!("s ({} processes)", o.processes)
                } else {
                    String::new()
                },
                cpu.loadgen_secs * 100.0 / secs,
            );
        }
        notes_of(&mut md, o);
    }

    if let Some(svg) = &options.svg {
        let mut series: Vec<(&str, Vec<&Step>)> = Vec::new();
        if let Some(c) = &ceiling {
            series.push(("ceiling (shared hub)", c.steps.iter().collect()));
        }
        if let Some(c) = &pinned {
            series.push(("ceiling, pinned to a core each", c.steps.iter().collect()));
        }
        if let Some(a) = &ablation {
            series.push(("per-connection ablation", a.steps.iter().collect()));
        }
        if series.iter().any(|(_, steps)| !steps.is_empty()) {
            chart(svg, &series)?;
            let _ = writeln!(
                md,
                "![publish-to-receive latency against delivered frames per second]({})\n",
                options.svg_link
            );
        }
    }
    Ok(md)
}

/// The `Key: value` lines and the list of runs that open a section.
fn meta_lines(meta: &[(String, String)]) -> String {
    let mut md = String::new();
    let mut runs = 0;
    for (key, value) in meta {
        if key == "Run" {
            if runs == 0 {
                md.push_str("Runs (each scenario against a freshly started server):\n\n");
            }
            runs += 1;
            let _ = writeln!(md, "- {value}");
        } else {
            if runs > 0 {
                md.push('\n');
                runs = 0;
            }
            let _ = writeln!(md, "{key}: {value}\n");
        }
    }
    if runs > 0 {
        md.push('\n');
    }
    md
}

pub(crate) fn notes_of(md: &mut String, summary: &Summary) {
    let mut wrote = false;
    for step in &summary.steps {
        let attempted = step.events_published + step.publish_failures;
        if attempted < step.events_planned {
            let _ = writeln!(
                md,
                "- {}: at {} ev/s the bus pushed back and the publisher gave up after {:.0} s with {} of {} events sent (expected frames count only those sent)",
                summary.label,
                thousands(step.rate),
                step.publish_secs,
                thousands(attempted as f64),
                thousands(step.events_planned as f64)
            );
            wrote = true;
        }
        if step.publish_failures > 0 {
            let _ = writeln!(
                md,
                "- {}: {} publishes failed at {} ev/s",
                summary.label,
                step.publish_failures,
                thousands(step.rate)
            );
            wrote = true;
        }
    }
    for (reason, n) in &summary.failures {
        let _ = writeln!(md, "- {}: {n} opens failed: {reason}", summary.label);
    }
    for note in &summary.notes {
        let _ = writeln!(md, "- {}: {note}", summary.label);
    }
    if summary.streams_ended_early > 0 {
        let _ = writeln!(
            md,
            "- {}: {} streams were ended by the server during the run",
            summary.label, summary.streams_ended_early
        );
    }
    if wrote
        || !summary.failures.is_empty()
        || !summary.notes.is_empty()
        || summary.streams_ended_early > 0
    {
        md.push('\n');
    }
}

/// p50 and p99 latency (log scale) against delivered frames/s, one pair of
/// lines per series, with the 100 ms ceiling limit drawn across.
fn chart(path: &Path, series: &[(&str, Vec<&Step>)]) -> Result<()> {
    let points = |steps: &[&Step], pick: fn(&Step) -> Option<f64>| -> Vec<(f64, f64)> {
        steps
            .iter()
            .filter_map(|s| pick(s).map(|ms| (s.delivered_per_sec, ms.max(0.01))))
            .collect()
    };
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|(_, steps)| {
            let mut p = points(steps, |s| s.latency.p99_ms);
            p.extend(points(steps, |s| s.latency.p50_ms));
            p
        })
        .collect();
    let x_max = all.iter().map(|p| p.0).fold(1000.0, f64::max) * 1.1;
    let y_max = all.iter().map(|p| p.1).fold(200.0, f64::max) * 2.0;
    let y_min = all.iter().map(|p| p.1).fold(1.0, f64::min).max(0.01) / 2.0;

    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing the chart: {e}");
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "decnet-events: publish-to-receive latency against delivered rate",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())
        .map_err(|e| draw(&e))?;
    chart
        .configure_mesh()
        .x_desc("delivered SSE frames per second")
        .y_desc("latency, ms (log scale)")
        .x_label_formatter(&|x| thousands(*x))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(|e| draw(&e))?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, 100.0), (x_max, 100.0)],
            RED.mix(0.4).stroke_width(1),
        ))
        .map_err(|e| draw(&e))?
        .label("100 ms (ceiling limit)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.mix(0.4)));
    let colors = [BLUE, MAGENTA, GREEN, CYAN];
    for (i, (name, steps)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        for (quantile, pick, width) in [
            (
                "p99",
                (|s: &Step| s.latency.p99_ms) as fn(&Step) -> Option<f64>,
                2,
            ),
            ("p50", |s: &Step| s.latency.p50_ms, 1),
        ] {
            let data = points(steps, pick);
            chart
                .draw_series(LineSeries::new(data.clone(), color.stroke_width(width)))
                .map_err(|e| draw(&e))?
                .label(format!("{name} {quantile}"))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(width))
                });
            chart
                .draw_series(data.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| draw(&e))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
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

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1 000");
        assert_eq!(thousands(1_234_567.4), "1 234 567");
    }
}
