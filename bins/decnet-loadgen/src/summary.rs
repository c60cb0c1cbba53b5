//! The JSON summary a run prints, and how summaries of several load-generator
//! processes (run at the same time against one server) merge into one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::histogram::{Histogram, LatencyStats};
use crate::procfs::ProcSample;

/// Everything one run measured. Printed as JSON on stdout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Summary {
    /// Free-form name of the run (`--label`).
    pub(crate) label: String,
    /// Load-generator processes merged into this summary.
    pub(crate) processes: u32,
    /// The transport (`h1`, `h1-tls`, `h2`, `h2-mux`).
    #[serde(default)]
    pub(crate) transport: String,
    /// The stream kind (`attacker`, `identities`, ...).
    #[serde(default)]
    pub(crate) kind: String,
    /// Streams asked for.
    pub(crate) streams_requested: u64,
    /// Streams that got `200` and a `text/event-stream` body.
    pub(crate) streams_opened: u64,
    /// Streams that could not be opened.
    pub(crate) streams_failed: u64,
    /// Failures by reason (`ticket 429`, `connect: ...`, `timeout`, ...).
    pub(crate) failures: BTreeMap<String, u64>,
    /// Opened streams that ended before the run did (server closed, error).
    pub(crate) streams_ended_early: u64,
    /// Wall time of the opening phase, seconds.
    pub(crate) open_secs: f64,
    /// Opens per second asked for (0: as fast as the concurrency allows).
    pub(crate) open_rate_target: f64,
    /// Open latency: TCP connect + ticket POST + events GET up to its headers.
    pub(crate) open_latency: LatencyStats,
    /// The open latency histogram (microseconds), for merging.
    pub(crate) open_histogram: Histogram,
    /// First part of an open: TCP connect + ticket POST answered.
    #[serde(default)]
    pub(crate) ticket_latency: LatencyStats,
    /// Its histogram (microseconds).
    #[serde(default)]
    pub(crate) ticket_histogram: Histogram,
    /// Second part of an open: events GET sent to its response headers.
    #[serde(default)]
    pub(crate) stream_latency: LatencyStats,
    /// Its histogram (microseconds).
    #[serde(default)]
    pub(crate) stream_histogram: Histogram,
    /// The server before any stream was opened (`None` without `--server-pid`).
    pub(crate) server_before: Option<ProcSample>,
    /// The server with every stream open and idle (after `--hold-secs`).
    pub(crate) server_idle: Option<ProcSample>,
    /// `(idle RSS - RSS before) / streams opened`, bytes.
    pub(crate) rss_per_stream_bytes: Option<f64>,
    /// Server RSS read while the streams opened (every 250 ms, and the idle
    /// reading last).
    #[serde(default)]
    pub(crate) rss_curve: Vec<RssPoint>,
    /// One entry per publishing step (empty for an idle run).
    pub(crate) steps: Vec<Step>,
    /// The database's load while the streams were idle (`--count-db`).
    #[serde(default)]
    pub(crate) db_load: Option<DbLoad>,
    /// This load generator's own CPU seconds and RSS at the end.
    pub(crate) loadgen: Option<ProcSample>,
    /// CPU seconds the server and the load generator spent while the
    /// streams opened (over `open_secs`).
    #[serde(default)]
    pub(crate) open_cpu: Option<OpenCpu>,
    /// Anything the reader should know (a barrier that timed out, ...).
    #[serde(default)]
    pub(crate) notes: Vec<String>,
}

/// CPU seconds (user + system) spent over the opening phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct OpenCpu {
    /// The server's (the most any part saw: every part reads the same server).
    pub(crate) server_secs: f64,
    /// The load generators' (summed over the parts).
    pub(crate) loadgen_secs: f64,
}

/// The server's database load over a window: the queries it made, per read
/// (its `decnet_repository_queries_total`, on every engine), and on
/// PostgreSQL the transactions the database committed or rolled back
/// (`pg_stat_database`; every statement of the service is a transaction of
/// its own) and the scans per table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct DbLoad {
    /// The database counted (the engine's name for SQLite and MySQL).
    pub(crate) database: String,
    /// `postgres`, `sqlite` or `mysql`.
    #[serde(default)]
    pub(crate) engine: String,
    /// The server's queries over the window per read, reads made at least
    /// once.
    #[serde(default)]
    pub(crate) queries: BTreeMap<String, u64>,
    /// Length of the window, seconds.
    pub(crate) secs: f64,
    /// `xact_commit + xact_rollback` over the window, the load generator's
    /// own reading excluded.
    pub(crate) transactions: u64,
    /// Scans (`seq_scan + idx_scan` of `pg_stat_user_tables`) over the
    /// window per table, tables scanned at least once: which queries ran.
    #[serde(default)]
    pub(crate) scans: BTreeMap<String, u64>,
}

/// One reading of the server's RSS while streams open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RssPoint {
    /// Streams open at the reading.
    pub(crate) streams: u64,
    /// Server RSS, KiB.
    pub(crate) rss_kib: u64,
}

/// One publishing step at a fixed rate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Step {
    /// Events per second asked for.
    pub(crate) rate: f64,
    /// Events the step meant to publish (`rate x step-secs`); more than
    /// `events_published + publish_failures` when the publisher gave up.
    #[serde(default)]
    pub(crate) events_planned: u64,
    /// Events published without error.
    pub(crate) events_published: u64,
    /// Publishes that failed.
    pub(crate) publish_failures: u64,
    /// Time spent publishing, seconds.
    pub(crate) publish_secs: f64,
    /// Frames the open streams should receive: for each event, the streams
    /// open on its attacker when the step started.
    pub(crate) frames_expected: u64,
    /// Bench frames received (live `observation` frames with `sent_at_ns`).
    pub(crate) frames_received: u64,
    /// `expected - received` when positive.
    pub(crate) frames_lost: u64,
    /// `event: resync` frames (the server dropped frames for a slow stream).
    pub(crate) resyncs: u64,
    /// Frames delivered to a stream of another attacker (must be 0).
    pub(crate) misrouted: u64,
    /// From the first publish to the last frame received, seconds.
    pub(crate) window_secs: f64,
    /// `frames_received / window_secs`.
    pub(crate) delivered_per_sec: f64,
    /// Publish-to-receive latency.
    pub(crate) latency: LatencyStats,
    /// The latency histogram (microseconds), for merging.
    pub(crate) histogram: Histogram,
    /// Server CPU seconds (user + system) spent during the window.
    pub(crate) server_cpu_secs: Option<f64>,
    /// Server CPU use during the window, percent of one core.
    pub(crate) server_cpu_pct: Option<f64>,
    /// Server RSS at the end of the step, KiB.
    pub(crate) server_rss_kib: Option<u64>,
    /// Load-generator CPU seconds (user + system) spent during the window.
    #[serde(default)]
    pub(crate) loadgen_cpu_secs: Option<f64>,
    /// Load-generator CPU use during the window, percent of one core.
    pub(crate) loadgen_cpu_pct: Option<f64>,
    /// Server CPU per frame received: `server_cpu_secs / frames_received`,
    /// microseconds.
    #[serde(default)]
    pub(crate) server_us_per_frame: Option<f64>,
    /// Load-generator CPU per frame received, microseconds.
    #[serde(default)]
    pub(crate) loadgen_us_per_frame: Option<f64>,
    /// No loss and p99 within the limit given with `--p99-limit-ms`.
    pub(crate) clean: bool,
}

impl Step {
    /// Recompute the derived fields (loss, rate, latency stats) from counts.
    pub(crate) fn finish(&mut self, p99_limit_ms: f64) {
        self.frames_lost = self.frames_expected.saturating_sub(self.frames_received);
        self.delivered_per_sec = if self.window_secs > 0.0 {
            self.frames_received as f64 / self.window_secs
        } else {
            0.0
        };
        self.latency = self.histogram.stats();
        let per_frame = |cpu: Option<f64>| {
            cpu.filter(|_| self.frames_received > 0)
                .map(|secs| secs * 1e6 / self.frames_received as f64)
        };
        self.server_us_per_frame = per_frame(self.server_cpu_secs);
        self.loadgen_us_per_frame = per_frame(self.loadgen_cpu_secs);
        self.clean = self.frames_lost == 0
            && self.misrouted == 0
            && self.resyncs == 0
            && self.frames_expected > 0
            && self.latency.p99_ms.is_some_and(|p99| p99 <= p99_limit_ms);
    }
}

impl Summary {
    /// Recompute the derived fields from the counts and histograms.
    pub(crate) fn finish(&mut self) {
        self.open_latency = self.open_histogram.stats();
        self.ticket_latency = self.ticket_histogram.stats();
        self.stream_latency = self.stream_histogram.stats();
        self.rss_per_stream_bytes = match (self.server_before, self.server_idle) {
            (Some(before), Some(idle)) if self.streams_opened > 0 => Some(
                (idle.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / self.streams_opened as f64,
            ),
            _ => None,
        };
    }

    /// Merge the summaries of processes that ran AT THE SAME TIME against one
    /// server: counts and histograms add up; the server's "before" is the
    /// lowest reading, its "idle" the highest (the one taken with every
    /// process's streams open); steps merge by position (rates are the same
    /// in every process; frames and delivered rates add up; server CPU is
    /// the same process seen by all, so the highest reading is kept).
    ///
    /// `p99_limit_ms` is the limit the merged steps are judged against.
    pub(crate) fn merge(parts: &[Summary], p99_limit_ms: f64) -> Summary {
        let mut merged = Summary {
            label: parts.first().map(|s| s.label.clone()).unwrap_or_default(),
            transport: parts
                .first()
                .map(|s| s.transport.clone())
                .unwrap_or_default(),
            kind: parts.first().map(|s| s.kind.clone()).unwrap_or_default(),
            ..Summary::default()
        };
        let min_sample = |a: Option<ProcSample>, b: Option<ProcSample>| match (a, b) {
            (Some(a), Some(b)) => Some(if b.rss_kib < a.rss_kib { b } else { a }),
            (a, b) => a.or(b),
        };
        let max_sample = |a: Option<ProcSample>, b: Option<ProcSample>| match (a, b) {
            (Some(a), Some(b)) => Some(if b.rss_kib > a.rss_kib { b } else { a }),
            (a, b) => a.or(b),
        };
        for part in parts {
            merged.processes += part.processes.max(1);
            merged.streams_requested += part.streams_requested;
            merged.streams_opened += part.streams_opened;
            merged.streams_failed += part.streams_failed;
            merged.streams_ended_early += part.streams_ended_early;
            for (reason, n) in &part.failures {
                *merged.failures.entry(reason.clone()).or_default() += n;
            }
            merged.notes.extend(part.notes.iter().cloned());
            if merged.db_load.is_none() {
                merged.db_load.clone_from(&part.db_load);
            }
            merged.open_secs = merged.open_secs.max(part.open_secs);
            merged.open_rate_target += part.open_rate_target;
            merged.open_histogram.merge(&part.open_histogram);
            merged.ticket_histogram.merge(&part.ticket_histogram);
            merged.stream_histogram.merge(&part.stream_histogram);
            merged.server_before = min_sample(merged.server_before, part.server_before);
            merged.server_idle = max_sample(merged.server_idle, part.server_idle);
            merged.open_cpu = match (merged.open_cpu, part.open_cpu) {
                (Some(a), Some(b)) => Some(OpenCpu {
                    server_secs: a.server_secs.max(b.server_secs),
                    loadgen_secs: a.loadgen_secs + b.loadgen_secs,
                }),
                (a, b) => a.or(b),
            };
            merged.loadgen = match (merged.loadgen, part.loadgen) {
                (Some(a), Some(b)) => Some(ProcSample {
                    rss_kib: a.rss_kib + b.rss_kib,
                    cpu_secs: a.cpu_secs + b.cpu_secs,
                }),
                (a, b) => a.or(b),
            };
            for (i, step) in part.steps.iter().enumerate() {
                if merged.steps.len() <= i {
                    merged.steps.push(Step {
                        rate: step.rate,
                        ..Step::default()
                    });
                }
                let m = &mut merged.steps[i];
                m.events_planned += step.events_planned;
                m.events_published += step.events_published;
                m.publish_failures += step.publish_failures;
                m.publish_secs = m.publish_secs.max(step.publish_secs);
                m.frames_expected += step.frames_expected;
                m.frames_received += step.frames_received;
                m.resyncs += step.resyncs;
                m.misrouted += step.misrouted;
                m.window_secs = m.window_secs.max(step.window_secs);
                m.histogram.merge(&step.histogram);
                m.server_cpu_secs = max_f64(m.server_cpu_secs, step.server_cpu_secs);
                m.server_cpu_pct = max_f64(m.server_cpu_pct, step.server_cpu_pct);
                m.server_rss_kib = m.server_rss_kib.max(step.server_rss_kib);
                m.loadgen_cpu_pct = add_f64(m.loadgen_cpu_pct, step.loadgen_cpu_pct);
                m.loadgen_cpu_secs = add_f64(m.loadgen_cpu_secs, step.loadgen_cpu_secs);
            }
        }
        for step in &mut merged.steps {
            step.finish(p99_limit_ms);
        }
        merged.finish();
        merged
    }

    /// The last clean step, for a ceiling search.
    pub(crate) fn highest_clean_step(&self) -> Option<&Step> {
        self.steps
            .iter()
            .filter(|s| s.clean)
            .max_by(|a, b| a.delivered_per_sec.total_cmp(&b.delivered_per_sec))
    }
}

fn add_f64(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

fn max_f64(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::AtomicHistogram;

    fn histogram(values: &[u64]) -> Histogram {
        let h = AtomicHistogram::new();
        for &v in values {
            h.record(v);
        }
        h.take()
    }

    fn part(opened: u64, rss_before: u64, rss_idle: u64, received: u64) -> Summary {
        let mut step = Step {
            rate: 100.0,
            events_published: 10,
            frames_expected: 50,
            frames_received: received,
            window_secs: 1.0,
            histogram: histogram(&[1000, 2000, 3000]),
            server_cpu_secs: Some(0.5),
            loadgen_cpu_secs: Some(0.25),
            ..Step::default()
        };
        step.finish(100.0);
        let mut summary = Summary {
            label: "t".into(),
            processes: 1,
            streams_requested: opened + 1,
            streams_opened: opened,
            streams_failed: 1,
            failures: BTreeMap::from([("ticket 429".to_owned(), 1)]),
            open_histogram: histogram(&[500; 4]),
            server_before: Some(ProcSample {
                rss_kib: rss_before,
                cpu_secs: 1.0,
            }),
            server_idle: Some(ProcSample {
                rss_kib: rss_idle,
                cpu_secs: 2.0,
            }),
            steps: vec![step],
            ..Summary::default()
        };
        summary.finish();
        summary
    }

    #[test]
    fn a_single_summary_computes_rss_per_stream_and_loss() {
        let s = part(1000, 10_000, 20_000, 45);
        assert_eq!(s.rss_per_stream_bytes, Some(10_240.0));
        assert_eq!(s.steps[0].frames_lost, 5);
        assert!(!s.steps[0].clean, "loss is not clean");
        assert_eq!(s.steps[0].delivered_per_sec, 45.0);
        // 0.5 s of server CPU over 45 frames; 0.25 s of the load generator's.
        assert_eq!(
            s.steps[0].server_us_per_frame.map(|v| v.round()),
            Some(11_111.0)
        );
        assert_eq!(
            s.steps[0].loadgen_us_per_frame.map(|v| v.round()),
            Some(5_556.0)
        );
        assert_eq!(s.open_latency.count, 4);
    }

    #[test]
    fn summaries_merge() {
        let a = part(1000, 10_000, 25_000, 50);
        let b = part(1000, 11_000, 30_000, 50);
        let m = Summary::merge(&[a, b], 100.0);
        assert_eq!(m.processes, 2);
        assert_eq!(m.streams_opened, 2000);
        assert_eq!(m.streams_failed, 2);
        assert_eq!(m.failures["ticket 429"], 2);
        assert_eq!(m.server_before.map(|s| s.rss_kib), Some(10_000));
        assert_eq!(m.server_idle.map(|s| s.rss_kib), Some(30_000));
        // (30000 - 10000) KiB over 2000 streams.
        assert_eq!(m.rss_per_stream_bytes, Some(10_240.0));
        assert_eq!(m.open_latency.count, 8);
        let step = &m.steps[0];
        assert_eq!(step.frames_expected, 100);
        assert_eq!(step.frames_received, 100);
        assert_eq!(step.frames_lost, 0);
        assert_eq!(step.latency.count, 6);
        assert_eq!(step.delivered_per_sec, 100.0);
        assert_eq!(step.server_cpu_secs, Some(0.5));
        // The server is one process (highest reading); load generators add up.
        assert_eq!(step.server_us_per_frame, Some(5_000.0));
        assert_eq!(step.loadgen_us_per_frame, Some(5_000.0));
        assert!(step.clean);
        assert_eq!(m.highest_clean_step().map(|s| s.rate), Some(100.0));
    }
}
