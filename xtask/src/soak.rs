//! `cargo xtask soak`: the long variants of the reliability suites and
//! every proptest fuzz target on a large budget, with their figures
//! written into docs/RELIABILITY.md.
//!
//! ```text
//! cargo xtask soak [--cases N] [--no-docs] [--only faults|churn|shutdown|tickets|hostile|fuzz ...]
//! ```
//!
//! 1. The reliability suites of `bins/decnet-events/tests` (`faults`,
//!    `churn`, `shutdown`, `tickets`, `hostile`) with `DECNET_SOAK=1` (their long
//!    variants: more cycles, 100,000 churn cycles, 1,000 streams, 10,000
//!    half-open connections) one test at a time (so a
//!    figure is not measured against another test's load), with
//!    `DECNET_RELIABILITY_OUT` naming `target/reliability/figures.jsonl`:
//!    every figure a test measures is one JSON line there (the tests' own
//!    `RELIABILITY {...}` lines, see `bins/decnet-events/tests/reliability`).
//! 2. Every `tests/fuzz.rs` (proptest) with `PROPTEST_CASES` = `--cases`
//!    (default 5,000 per property), one row each.
//! 3. docs/RELIABILITY.md: the table between its markers is rewritten
//!    after every step (with `--only`, the rows of tests not re-run are
//!    kept)
//!    (test, backend pair, figure, value, target, verdict), with the date
//!    and the load average at the start and the end of the run.
//!
//! Services: as `cargo xtask test` (started when installed but down); the
//! suites start their private NATS, Redis, PostgreSQL and DECNET broker on
//! their own ports. The command fails when any step failed or any figure
//! missed its target, after writing the document (the failures are in it).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The reliability suites, in `bins/decnet-events/tests`.
const SUITES: [&str; 5] = ["faults", "churn", "shutdown", "tickets", "hostile"];
/// The crates with a `tests/fuzz.rs` (proptest).
const FUZZ_CRATES: [&str; 7] = [
    "decnet-topics",
    "decnet-sse",
    "decnet-bus",
    "decnet-auth",
    "decnet-repo",
    "decnet-api",
    "test-support",
];
/// Cases per property by default.
const DEFAULT_CASES: u32 = 5_000;
/// Where the figures of a run go.
const FIGURES: &str = "target/reliability/figures.jsonl";
/// The document and its markers.
const DOC: &str = "docs/RELIABILITY.md";
const BEGIN_MARK: &str =
    "<!-- BEGIN reliability: written by `cargo xtask soak`, edits inside are overwritten -->";
const END_MARK: &str = "<!-- END reliability -->";

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    test: String,
    backend: String,
    figure: String,
    value: String,
    target: String,
    met: bool,
}

/// `cargo xtask soak [ARGS]`.
pub fn run(args: &[String]) -> Result<()> {
    let mut cases = DEFAULT_CASES;
    let mut docs = true;
    let mut only: Vec<String> = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--cases" => {
                cases = args
                    .next()
                    .context("--cases needs a number")?
                    .parse()
                    .context("--cases needs a number")?;
            }
            "--no-docs" => docs = false,
            "--only" => only.push(args.next().context("--only needs a suite name")?.clone()),
            other => bail!("unknown argument {other:?} (see xtask/src/soak.rs)"),
        }
    }
    for name in &only {
        let known = SUITES.contains(&name.as_str())
            || name == "fuzz"
            || name
                .strip_prefix("fuzz:")
                .is_some_and(|krate| FUZZ_CRATES.contains(&krate));
        if !known {
            bail!(
                "--only {name:?}: not a suite ({}), `fuzz`, or `fuzz:<crate>` ({})",
                SUITES.join(", "),
                FUZZ_CRATES.join(", ")
            );
        }
    }
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);

    let report = crate::ensure_services();
    report.print();
    let run = RunInfo {
        started: Instant::now(),
        started_load: crate::bench::load_average(),
        docs,
        partial: !only.is_empty(),
    };
    let figures = Path::new(FIGURES);
    if let Some(dir) = figures.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(figures);
    let absolute = std::env::current_dir()?.join(figures);

    let mut failures: Vec<String> = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    for suite in SUITES.iter().filter(|s| wanted(s)) {
        let mut cmd = tests_command("decnet-events", suite);
        cmd.env("DECNET_SOAK", "1")
            .env("DECNET_RELIABILITY_OUT", &absolute);
        with_services(&mut cmd, &report);
        if let Err(error) = crate::step(&format!("soak: {suite}"), &mut cmd) {
            failures.push(error.to_string());
        }
        run.report(figures, &rows, &failures, Some("the next step"))?;
    }
    // `--only fuzz` runs every crate's properties, `--only fuzz:<crate>` one.
    let fuzz_wanted = |krate: &str| wanted("fuzz") || wanted(&format!("fuzz:{krate}"));
    if FUZZ_CRATES.iter().any(|krate| fuzz_wanted(krate)) {
        for krate in FUZZ_CRATES.iter().filter(|krate| fuzz_wanted(krate)) {
            let mut cmd = tests_command(krate, "fuzz");
            cmd.env("PROPTEST_CASES", cases.to_string());
            let began = Instant::now();
            let outcome = crate::step(&format!("fuzz: {krate} ({cases} cases)"), &mut cmd);
            rows.push(Row {
                test: format!("{krate}/tests/fuzz.rs (every property)"),
                backend: "none (pure)".to_owned(),
                figure: format!(
                    "{cases} proptest cases per property, {:.0} s",
                    began.elapsed().as_secs_f64()
                ),
                value: if outcome.is_ok() {
                    "no failure"
                } else {
                    "FAILED"
                }
                .to_owned(),
                target: "no failure".to_owned(),
                met: outcome.is_ok(),
            });
            if let Err(error) = outcome {
                failures.push(error.to_string());
            }
            run.report(figures, &rows, &failures, Some("the next step"))?;
        }
    }

    let failures = run.report(figures, &rows, &failures, None)?;
    if !failures.is_empty() {
        bail!(
            "soak: {} failure(s):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}

/// When and under what load the run started, and whether to write the document.
struct RunInfo {
    started: Instant,
    started_load: String,
    docs: bool,
    /// `--only`: rows of tests this run does not measure are kept from the
    /// document as it was.
    partial: bool,
}

impl RunInfo {
    /// Render the figures so far (`figures` plus `rows`) and write the
    /// document (after every step, so an interrupted run leaves what it
    /// measured, marked `in_progress`); every failure, the steps' and the
    /// missed targets.
    fn report(
        &self,
        figures: &Path,
        rows: &[Row],
        step_failures: &[String],
        in_progress: Option<&str>,
    ) -> Result<Vec<String>> {
        let mut failures = step_failures.to_vec();
        let text = std::fs::read_to_string(figures).unwrap_or_default();
        let mut measured: Vec<Row> = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match parse_figure(line) {
                Some(row) => measured.push(row),
                None => failures.push(format!("unreadable figure line: {line}")),
            }
        }
        measured.extend(rows.iter().cloned());
        let existing = std::fs::read_to_string(DOC).unwrap_or_else(|_| default_doc());
        let mut carried = 0;
        if self.partial {
            let now: Vec<&str> = measured.iter().map(|r| r.test.as_str()).collect();
            let kept: Vec<Row> = previous_rows(&existing)
                .into_iter()
                .filter(|r| !now.contains(&r.test.as_str()))
                .collect();
            carried = kept.len();
            measured.splice(0..0, kept);
        }
        for row in measured.iter().filter(|r| !r.met) {
            failures.push(format!(
                "{} on {}: {} = {} misses {}",
                row.test, row.backend, row.figure, row.value, row.target
            ));
        }
        let mut section = render(
            &measured,
            &self.started_load,
            &crate::bench::load_average(),
            self.started.elapsed().as_secs() / 60,
            &failures,
        );
        if carried > 0 {
            section = section.replacen(
                "\n| test |",
                &format!(
                    "{carried} rows are carried over from the run before (`--only`).\n\n| test |"
                ),
                1,
            );
        }
        if let Some(next) = in_progress {
            section = section.replacen(
                "\nLast run:",
                &format!("\n**Run in progress** (next: {next}); so far:\n\nLast run:"),
                1,
            );
        }
        if self.docs {
            std::fs::write(DOC, splice(&existing, &section))
                .with_context(|| format!("write {DOC}"))?;
            eprintln!("\n==> xtask: soak: wrote {DOC} ({} rows)", measured.len());
        } else if in_progress.is_none() {
            eprintln!("{section}");
        }
        Ok(failures)
    }
}

/// `cargo nextest run` (or `cargo test`) of one test target of `krate`.
fn tests_command(krate: &str, target: &str) -> Command {
    let mut cmd = crate::cargo();
    if crate::has_nextest() {
        cmd.args([
            "nextest",
            "run",
            "-p",
            krate,
            "--all-features",
            "--test",
            target,
        ])
        .args(["--no-fail-fast", "--test-threads", "1", "--no-capture"]);
    } else {
        cmd.args(["test", "-p", krate, "--all-features", "--test", target])
            .args(["--no-fail-fast", "--", "--test-threads", "1", "--nocapture"]);
    }
    cmd
}

fn with_services(cmd: &mut Command, report: &crate::ServicesReport) {
    for svc in &report.services {
        match &svc.url {
            Some(url) => cmd.env(svc.env_var, url),
            None => cmd.env_remove(svc.env_var),
        };
    }
}

/// One figure line (`{"test":…,"backend":…,…}`, as the suites write it).
fn parse_figure(line: &str) -> Option<Row> {
    let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).ok()?;
    let get = |key: &str| {
        fields.get(key).map(|v| match v {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        })
    };
    let value = get("value")?;
    let unit = get("unit").unwrap_or_default();
    Some(Row {
        test: get("test")?,
        backend: get("backend")?,
        figure: get("figure")?,
        value: format!("{value} {unit}").trim().to_owned(),
        target: get("target")?,
        met: fields.get("met")?.as_bool()?,
    })
}

/// The rows of the table in `doc` (as [`render`] writes them).
fn previous_rows(doc: &str) -> Vec<Row> {
    let (Some(begin), Some(end)) = (doc.find(BEGIN_MARK), doc.find(END_MARK)) else {
        return Vec::new();
    };
    doc[begin..end.max(begin)]
        .lines()
        .filter_map(|line| {
            let inner = line.strip_prefix("| `")?.strip_suffix(" |")?;
            let cells: Vec<String> = inner
                .replace("\\|", "\u{0}")
                .split(" | ")
                .map(|c| c.replace('\u{0}', "|"))
                .collect();
            let [test, backend, figure, value, target, verdict] = cells.as_slice() else {
                return None;
            };
            Some(Row {
                test: test.strip_suffix('`')?.to_owned(),
                backend: backend.clone(),
                figure: figure.clone(),
                value: value.clone(),
                target: target.clone(),
                met: verdict == "met",
            })
        })
        .collect()
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The marked section.
fn render(
    rows: &[Row],
    load_start: &str,
    load_end: &str,
    minutes: u64,
    failures: &[String],
) -> String {
    let mut s = String::new();
    s.push_str(BEGIN_MARK);
    s.push('\n');
    let _ = writeln!(
        s,
        "\nLast run: {} UTC, {minutes} min, load average {load_start} at the start and {load_end} at the end ({} CPUs).\n",
        crate::bench::date_utc(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    s.push_str("| test | backend pair | figure | last run | target | verdict |\n");
    s.push_str("|---|---|---|---|---|---|\n");
    for row in rows {
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} | {} |",
            cell(&row.test),
            cell(&row.backend),
            cell(&row.figure),
            cell(&row.value),
            cell(&row.target),
            if row.met { "met" } else { "**MISSED**" }
        );
    }
    if !failures.is_empty() {
        s.push_str("\nFailures of this run:\n\n");
        for failure in failures {
            let _ = writeln!(s, "- {}", cell(failure));
        }
    }
    s.push('\n');
    s.push_str(END_MARK);
    s.push('\n');
    s
}

fn default_doc() -> String {
    "# Reliability\n\nWhat `cargo xtask soak` measured on this machine (see xtask/src/soak.rs).\n"
        .to_owned()
}

/// Replace the marked section of `existing`, or append it.
fn splice(existing: &str, section: &str) -> String {
    crate::bench::splice(existing, section, BEGIN_MARK, END_MARK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_line_becomes_a_row() {
        let line = r#"{"backend":"nats+postgres","figure":"time to \"503\"","met":true,"scale":"soak","target":"<= 5000 ms","test":"t","unit":"ms","value":12.5}"#;
        assert_eq!(
            parse_figure(line),
            Some(Row {
                test: "t".into(),
                backend: "nats+postgres".into(),
                figure: "time to \"503\"".into(),
                value: "12.5 ms".into(),
                target: "<= 5000 ms".into(),
                met: true,
            })
        );
        assert_eq!(parse_figure("not json"), None);
        let row = parse_figure(line).expect("a row");
        let doc = render(std::slice::from_ref(&row), "1", "2", 3, &[]);
        assert_eq!(previous_rows(&doc), vec![row]);
        assert_eq!(parse_figure(r#"{"test":"t"}"#), None);
    }

    #[test]
    fn the_section_replaces_the_old_one_only() {
        let old = format!("# R\n\nintro\n\n{BEGIN_MARK}\nold\n{END_MARK}\n\n## after\n");
        let section = format!("{BEGIN_MARK}\nnew\n{END_MARK}\n");
        assert_eq!(
            splice(&old, &section),
            format!("# R\n\nintro\n\n{BEGIN_MARK}\nnew\n{END_MARK}\n\n## after\n")
        );
        assert_eq!(splice("# R\n", &section), format!("# R\n\n{section}"));
    }

    #[test]
    fn every_crates_fuzz_target_is_soaked() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut found: Vec<String> = ["crates", "bins"]
            .iter()
            .flat_map(|dir| std::fs::read_dir(root.join(dir)).expect("the workspace's folders"))
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.path().join("tests/fuzz.rs").is_file())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        found.sort();
        let mut listed = FUZZ_CRATES.to_vec();
        listed.sort_unstable();
        assert_eq!(found, listed, "FUZZ_CRATES lists every tests/fuzz.rs");
    }

    #[test]
    fn every_reliability_suite_is_soaked() {
        let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bins/decnet-events/tests");
        let mut found: Vec<String> = std::fs::read_dir(&tests)
            .expect("bins/decnet-events/tests")
            .filter_map(|entry| entry.ok())
            .filter(|entry| {
                std::fs::read_to_string(entry.path())
                    .is_ok_and(|text| text.lines().any(|line| line == "mod reliability;"))
            })
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".rs").map(str::to_owned)
            })
            .collect();
        found.sort();
        let mut listed = SUITES.to_vec();
        listed.sort_unstable();
        assert_eq!(
            found, listed,
            "SUITES lists every suite using tests/reliability"
        );
    }
}
