//! `decnet-loadgen run`: open N streams over K attackers, hold them, publish
//! paced events in steps, and measure.
//!
//! Phases:
//! 1. Mint one JWT per user; read the server's RSS and CPU time.
//! 2. Open the streams (bounded concurrency, optional pacing): one task per
//!    stream does TCP connect (from one of several loopback source
//!    addresses; TLS for the TLS transports), `POST /api/v1/auth/sse-ticket`
//!    and `GET /api/v1/attackers/{uuid}/events?ticket=..` (or the route of
//!    `--kind`) on the same keep-alive connection (the same HTTP/2
//!    connection for h2, shared by `--streams-per-conn` streams for h2-mux),
//!    then reads the SSE body until the run ends.
//! 3. Optionally wait until the server reports `--wait-active` open streams
//!    (a barrier when several load generators share one server), hold
//!    `--hold-secs`, read the server's RSS again (idle memory per stream).
//! 4. For each rate in `--rates`: publish events round-robin over the
//!    stream keys (attackers, topologies, or the one key of a firehose kind)
//!    at that rate (a dedicated publisher thread), wait for the
//!    frames to drain, and record loss, latency, throughput and CPU.
//! 5. Print the JSON [`Summary`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use decnet_bus::{Bus, BusConfig};
use decnet_sse::Decoded;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value};
use tokio::sync::{OnceCell, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::histogram::AtomicHistogram;
use crate::http::{BodyKind, ChunkedDecoder, Conn};
use crate::kind::Kind;
use crate::procfs::{Pid, ProcSample};
use crate::seed::user_uuid;
use crate::summary::{DbLoad, OpenCpu, RssPoint, Step, Summary};
use crate::transport::{H2Sender, TlsClient, Transport, connect_h1};

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub(crate) struct RunOptions {
    /// The server, `http://127.0.0.x:port` (loopback only).
    pub(crate) url: String,
    /// HS256 secret the server verifies with.
    pub(crate) jwt_secret: String,
    /// Lifetime of the minted JWTs.
    pub(crate) token_ttl: Duration,
    /// Streams this process opens.
    pub(crate) streams: usize,
    /// Global index of this process's first stream (several processes).
    pub(crate) stream_offset: usize,
    /// Attackers the streams spread over (round-robin by global index).
    pub(crate) attackers: usize,
    /// Index of the first attacker (processes may take disjoint sets).
    pub(crate) attacker_offset: usize,
    /// Users the streams spread over.
    pub(crate) users: usize,
    /// Opens in flight at most.
    pub(crate) connect_concurrency: usize,
    /// Opens per second (0: as fast as the concurrency allows).
    pub(crate) open_rate: f64,
    /// Loopback source addresses to spread over (127.0.0.2 ..); 0: the
    /// kernel's choice.
    pub(crate) source_addrs: u8,
    /// Bound on one open (connect + ticket + stream headers).
    pub(crate) open_timeout: Duration,
    /// The server's pid, for RSS and CPU time.
    pub(crate) server_pid: Option<u32>,
    /// Wait until the server reports this many active streams.
    pub(crate) wait_active: Option<u64>,
    /// Idle time with every stream open before the idle reading.
    pub(crate) hold: Duration,
    /// The bus to publish on.
    pub(crate) bus: BusConfig,
    /// Event rates, one step each (empty: idle run).
    pub(crate) rates: Vec<f64>,
    /// Length of each step's publishing.
    pub(crate) step_secs: f64,
    /// Events per step, overriding `rate * step_secs`.
    pub(crate) events: Option<u64>,
    /// p99 limit for a step to count as clean.
    pub(crate) p99_limit_ms: f64,
    /// Stop stepping at the first step that is not clean.
    pub(crate) stop_on_dirty: bool,
    /// Run a step that is not clean again, up to this many times, before
    /// stopping (every try is in the summary).
    pub(crate) retry_dirty: u32,
    /// Longest wait for frames after publishing ends.
    pub(crate) drain: Duration,
    /// Quiet time between steps.
    pub(crate) pause: Duration,
    /// Read buffer per connection, bytes.
    pub(crate) read_buf: usize,
    /// Name of the run in the summary.
    pub(crate) label: String,
    /// How far each open goes (memory attribution: a bare connection, a
    /// keep-alive connection after a ticket, or a stream).
    pub(crate) open_until: OpenUntil,
    /// Get the ticket on a connection of its own instead of reusing the
    /// stream's keep-alive connection.
    pub(crate) separate_ticket_conn: bool,
    /// Plain HTTP/1.1, HTTP/1.1 over TLS, HTTP/2 (one connection per stream
    /// or multiplexed).
    pub(crate) transport: Transport,
    /// The TLS client (the TLS transports).
    pub(crate) tls: Option<TlsClient>,
    /// Streams per HTTP/2 connection (h2-mux).
    pub(crate) streams_per_conn: usize,
    /// The stream kind opened and published for.
    pub(crate) kind: Kind,
    /// Count this PostgreSQL database's transactions over the hold.
    pub(crate) count_db: Option<String>,
}

/// How far an open goes before the connection is held idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenUntil {
    /// TCP connect only: what an accepted, silent connection costs.
    Connect,
    /// Connect and `POST /api/v1/auth/sse-ticket`: an idle keep-alive
    /// connection that has served one request.
    Ticket,
    /// The whole open: an SSE stream (the normal mode).
    Stream,
}

/// Parse `http://host:port` (`https://` when `tls`) into a loopback socket
/// address and `Host` value.
pub(crate) fn parse_url(url: &str, tls: bool) -> Result<(SocketAddr, String)> {
    let scheme = if tls { "https://" } else { "http://" };
    let Some(rest) = url.strip_prefix(scheme) else {
        bail!("--url must start with {scheme} for this transport (got {url:?})");
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let addr: SocketAddr = match authority.strip_prefix("localhost:") {
        Some(port) => SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            port.parse().context("bad port")?,
        ),
        None => authority
            .parse()
            .with_context(|| format!("--url needs an IP literal and a port, got {authority:?}"))?,
    };
    if !addr.ip().is_loopback() {
        bail!("only loopback targets are allowed (127.0.0.0/8, ::1), got {addr}");
    }
    Ok((addr, authority.to_owned()))
}

/// Time for PostgreSQL's statistics to catch up before a reading: a
/// backend flushes its counts when it goes idle, but at most once a second,
/// and counts left pending then wait for the idle flush, 10 s later
/// (PostgreSQL 15's `PGSTAT_IDLE_INTERVAL`). With less, the burst of the
/// opens' queries lands inside the window.
const DB_SETTLE: Duration = Duration::from_secs(11);

/// How long the opens' queries are left to finish before the server's own
/// counts are read (they count each query as it is made).
const QUERIES_SETTLE: Duration = Duration::from_secs(2);

/// Whether `--count-db` names a PostgreSQL database (its counters are read
/// too) rather than an engine (`sqlite`, `mysql`: the server's counts only).
fn is_postgres(target: &str) -> bool {
    target.starts_with("postgres://") || target.starts_with("postgresql://")
}

/// The engine `--count-db` names.
fn engine_of(target: &str) -> &str {
    if is_postgres(target) {
        "postgres"
    } else {
        target
    }
}

/// A reading of the database's counters.
struct DbReading {
    name: String,
    /// `xact_commit + xact_rollback`.
    transactions: u64,
    /// `seq_scan + idx_scan` per table.
    scans: BTreeMap<String, u64>,
}

/// The database's name, `xact_commit + xact_rollback` and scans per table
/// so far.
async fn db_transactions(url: &str) -> Result<DbReading> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("--count-db: connecting")?;
    let driver = tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT current_database()::text AS name, \
             (xact_commit + xact_rollback)::bigint AS n \
             FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await
        .context("--count-db: reading pg_stat_database")?;
    let tables = client
        .query(
            "SELECT relname::text AS name, \
             (COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0))::bigint AS n \
             FROM pg_stat_user_tables",
            &[],
        )
        .await
        .context("--count-db: reading pg_stat_user_tables")?;
    drop(client);
    let _ = driver.await;
    let n: i64 = row.try_get("n").context("--count-db: n")?;
    let mut scans = BTreeMap::new();
    for table in tables {
        let name: String = table.try_get("name").context("--count-db: relname")?;
        let n: i64 = table.try_get("n").context("--count-db: scans")?;
        *scans.entry(name).or_default() += u64::try_from(n).unwrap_or(0);
    }
    Ok(DbReading {
        name: row.try_get("name").context("--count-db: name")?,
        transactions: u64::try_from(n).unwrap_or(0),
        scans,
    })
}

/// How often the server's RSS is read while the streams open.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// State every stream task shares.
struct Shared {
    server: SocketAddr,
    host: String,
    tokens: Vec<String>,
    kind: Kind,
    /// The stream keys (attacker uuids, topology ids, or the one kind-wide
    /// key), streams spread round-robin over them.
    keys: Vec<String>,
    transport: Transport,
    tls: Option<TlsClient>,
    streams_per_conn: usize,
    /// h2-mux: one HTTP/2 connection per group of `streams_per_conn` streams,
    /// made by the first stream of the group that needs it.
    mux: Vec<OnceCell<H2Sender>>,
    users: usize,
    stream_offset: usize,
    open_until: OpenUntil,
    separate_ticket_conn: bool,
    /// Streams open now, per key index.
    open_per_key: Vec<AtomicU32>,
    sources: Vec<IpAddr>,
    read_buf: usize,
    open_timeout: Duration,
    open_latency: AtomicHistogram,
    /// Open start to ticket in hand (connect + `POST /api/v1/auth/sse-ticket`).
    ticket_latency: AtomicHistogram,
    /// Ticket in hand to stream headers (`GET .../events`).
    stream_latency: AtomicHistogram,
    latency: AtomicHistogram,
    opened: AtomicU64,
    failed: AtomicU64,
    ended: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
    received: AtomicU64,
    resyncs: AtomicU64,
    misrouted: AtomicU64,
    last_rx_ns: AtomicU64,
}

impl Shared {
    fn fail(&self, reason: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        // A short critical section without .await: std Mutex is right here.
        if let Ok(mut failures) = self.failures.lock() {
            *failures.entry(reason).or_default() += 1;
        }
    }
}

/// Wall-clock nanoseconds since the Unix epoch (what `sent_at_ns` carries).
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The unsigned integer after `"key":` in a JSON text, without parsing it all.
pub(crate) fn json_u64_field(json: &str, key: &str) -> Option<u64> {
    let quoted = format!("\"{key}\"");
    let at = json.find(&quoted)? + quoted.len();
    let rest = json[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Run the whole scenario and return its summary.
///
/// # Errors
///
/// Bad options, a token that cannot be minted, a bus that cannot be created.
/// Stream failures are counted, not errors.
pub(crate) async fn run(options: RunOptions) -> Result<Summary> {
    let (server, host) = parse_url(&options.url, options.transport.is_tls())?;
    if options.attackers == 0 || options.users == 0 {
        bail!("--attackers and --users must be at least 1");
    }
    let keys = options
        .kind
        .keys(options.attacker_offset, options.attackers);
    let tokens = (0..options.users)
        .map(|u| {
            decnet_auth::mint_access_token(
                options.jwt_secret.as_bytes(),
                &user_uuid(u),
                options.token_ttl,
            )
            .map(|(token, _)| token)
            .context("minting a token")
        })
        .collect::<Result<Vec<_>>>()?;
    let sources = (0..options.source_addrs)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i % 250)))
        .collect();
    let shared = Arc::new(Shared {
        server,
        host,
        tokens,
        kind: options.kind,
        open_per_key: keys.iter().map(|_| AtomicU32::new(0)).collect(),
        keys,
        transport: options.transport,
        tls: options.tls.clone(),
        streams_per_conn: options.streams_per_conn,
        mux: (0..options.streams.div_ceil(options.streams_per_conn.max(1)))
            .map(|_| OnceCell::new())
            .collect(),
        users: options.users,
        stream_offset: options.stream_offset,
        open_until: options.open_until,
        separate_ticket_conn: options.separate_ticket_conn,
        sources,
        read_buf: options.read_buf,
        open_timeout: options.open_timeout,
        open_latency: AtomicHistogram::new(),
        ticket_latency: AtomicHistogram::new(),
        stream_latency: AtomicHistogram::new(),
        latency: AtomicHistogram::new(),
        opened: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        ended: AtomicU64::new(0),
        failures: Mutex::new(BTreeMap::new()),
        received: AtomicU64::new(0),
        resyncs: AtomicU64::new(0),
        misrouted: AtomicU64::new(0),
        last_rx_ns: AtomicU64::new(0),
    });
    let server_pid = options.server_pid.map(Pid::Other);
    let sample_server = || server_pid.and_then(Pid::sample);
    let mut summary = Summary {
        label: options.label.clone(),
        transport: options.transport.name().to_owned(),
        kind: options.kind.name().to_owned(),
        processes: 1,
        streams_requested: options.streams as u64,
        open_rate_target: options.open_rate,
        server_before: sample_server(),
        ..Summary::default()
    };
    let mut notes = Vec::new();
    let loadgen_before = Pid::This.sample();

    // The publisher (its own thread and runtime, so pacing does not compete
    // with thousands of stream tasks) connects while the streams open.
    let publisher = if options.rates.is_empty() {
        None
    } else {
        Some(Publisher::start(
            options.bus.clone(),
            targets(shared.kind, &shared.keys),
        )?)
    };

    // --- open ---
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let permits = Arc::new(Semaphore::new(options.connect_concurrency.max(1)));
    let mut last_progress = Instant::now();
    // Server RSS against open streams while opening (the chart's curve).
    let mut last_rss = Instant::now();
    let mut rss_curve = Vec::new();
    let mut sample_rss = |force: bool| {
        if force || last_rss.elapsed() >= RSS_SAMPLE_EVERY {
            last_rss = Instant::now();
            if let Some(sample) = sample_server() {
                rss_curve.push(RssPoint {
                    streams: shared.opened.load(Ordering::Relaxed),
                    rss_kib: sample.rss_kib,
                });
            }
        }
    };
    sample_rss(true);
    for index in 0..options.streams {
        let scheduled = if options.open_rate > 0.0 {
            let at = started + Duration::from_secs_f64(index as f64 / options.open_rate);
            tokio::time::sleep_until(at).await;
            Some(at)
        } else {
            None
        };
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .context("semaphore closed")?;
        let began = scheduled.unwrap_or_else(Instant::now);
        tasks.spawn(stream_task(shared.clone(), index, permit, began));
        sample_rss(false);
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            open_progress(&shared, options.streams, started);
        }
    }
    let all_resolved = |s: &Shared| {
        s.opened.load(Ordering::Relaxed) + s.failed.load(Ordering::Relaxed)
            >= options.streams as u64
    };
    let deadline = Instant::now() + options.open_timeout + Duration::from_secs(5);
    while !all_resolved(&shared) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        sample_rss(false);
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            open_progress(&shared, options.streams, started);
        }
    }
    summary.open_secs = started.elapsed().as_secs_f64();
    if let (Some(server), Some(after), Some(loadgen), Some(loadgen_after)) = (
        summary.server_before,
        sample_server(),
        loadgen_before,
        Pid::This.sample(),
    ) {
        summary.open_cpu = Some(OpenCpu {
            server_secs: (after.cpu_secs - server.cpu_secs).max(0.0),
            loadgen_secs: (loadgen_after.cpu_secs - loadgen.cpu_secs).max(0.0),
        });
    }
    open_progress(&shared, options.streams, started);

    if let Some(target) = options.wait_active
        && !wait_active(&shared, target, Duration::from_secs(180)).await
    {
        notes.push(format!(
            "the server did not report {target} active streams within 180 s"
        ));
    }
    // PostgreSQL's own counters lag (see `DB_SETTLE`); the server's
    // counts of its queries do not.
    let settle = |target: &str| {
        if is_postgres(target) {
            DB_SETTLE
        } else {
            QUERIES_SETTLE
        }
    };
    let db_before = match &options.count_db {
        Some(target) => {
            // The opens' own queries settle first.
            tokio::time::sleep(settle(target)).await;
            let pg = if is_postgres(target) {
                Some(db_transactions(target).await?)
            } else {
                None
            };
            let queries = repository_queries(&shared).await?;
            Some((pg, queries, Instant::now()))
        }
        None => None,
    };
    if !options.hold.is_zero() {
        eprintln!("hold: {:.0} s idle", options.hold.as_secs_f64());
        tokio::time::sleep(options.hold).await;
    }
    if let (Some(target), Some((pg_before, queries_before, at))) = (&options.count_db, db_before) {
        // Both readings lag the queries by the same flush delay: the window
        // is from one reading to the other.
        tokio::time::sleep(settle(target)).await;
        let queries_after = repository_queries(&shared).await?;
        let secs = at.elapsed().as_secs_f64();
        let queries = queries_after
            .iter()
            .map(|(read, n)| {
                let was = queries_before.get(read).copied().unwrap_or(0);
                (read.clone(), n.saturating_sub(was))
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        let mut load = DbLoad {
            database: target.clone(),
            engine: engine_of(target).to_owned(),
            secs,
            queries,
            ..DbLoad::default()
        };
        if let Some(before) = pg_before {
            let after = db_transactions(target).await?;
            load.scans = after
                .scans
                .iter()
                .map(|(table, n)| {
                    let was = before.scans.get(table).copied().unwrap_or(0);
                    (table.clone(), n.saturating_sub(was))
                })
                .filter(|(_, n)| *n > 0)
                .collect();
            load.database = before.name;
            // Our own "before" reading is one transaction of the window.
            load.transactions = after
                .transactions
                .saturating_sub(before.transactions)
                .saturating_sub(1);
        }
        summary.db_load = Some(load);
    }
    summary.server_idle = sample_server();
    if let Some(idle) = summary.server_idle {
        rss_curve.push(RssPoint {
            streams: shared.opened.load(Ordering::Relaxed),
            rss_kib: idle.rss_kib,
        });
    }
    summary.rss_curve = rss_curve;

    // --- publish steps ---
    if let Some(publisher) = &publisher {
        for (n, &rate) in options.rates.iter().enumerate() {
            if n > 0 && !options.pause.is_zero() {
                tokio::time::sleep(options.pause).await;
            }
            let events = options
                .events
                .unwrap_or_else(|| (rate * options.step_secs).round() as u64);
            let mut clean = false;
            for attempt in 0..=options.retry_dirty {
                if attempt > 0 && !options.pause.is_zero() {
                    tokio::time::sleep(options.pause).await;
                }
                let step = run_step(&shared, publisher, &options, server_pid, rate, events).await?;
                clean = step.clean;
                eprintln!(
                    "step {}{}: {:.0} ev/s -> {:.0} frames/s delivered, lost {}/{}, p50 {} p99 {} ms, server cpu {}%{}",
                    n + 1,
                    if attempt > 0 { " (again)" } else { "" },
                    rate,
                    step.delivered_per_sec,
                    step.frames_lost,
                    step.frames_expected,
                    fmt_ms(step.latency.p50_ms),
                    fmt_ms(step.latency.p99_ms),
                    step.server_cpu_pct
                        .map_or_else(|| "?".to_owned(), |c| format!("{c:.0}")),
                    if clean { "" } else { "  (not clean)" },
                );
                summary.steps.push(step);
                if clean {
                    break;
                }
            }
            if !clean && options.stop_on_dirty {
                break;
            }
        }
    }

    // --- wrap up ---
    summary.streams_opened = shared.opened.load(Ordering::Relaxed);
    summary.streams_failed = shared.failed.load(Ordering::Relaxed);
    summary.streams_ended_early = shared.ended.load(Ordering::Relaxed);
    summary.failures = shared
        .failures
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default();
    summary.open_histogram = shared.open_latency.snapshot();
    summary.ticket_histogram = shared.ticket_latency.snapshot();
    summary.stream_histogram = shared.stream_latency.snapshot();
    summary.loadgen = Pid::This.sample();
    summary.notes = notes;
    summary.finish();
    tasks.shutdown().await;
    if let Some(publisher) = publisher {
        publisher.stop();
    }
    Ok(summary)
}

fn fmt_ms(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

fn open_progress(shared: &Shared, total: usize, started: Instant) {
    let opened = shared.opened.load(Ordering::Relaxed);
    let failed = shared.failed.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "open: {opened}/{total} opened, {failed} failed, {:.0}/s, p99 {} ms",
        (opened + failed) as f64 / secs.max(1e-9),
        fmt_ms(shared.open_latency.snapshot().stats().p99_ms),
    );
}

/// One stream: open it, then read frames until the run ends (the task is
/// aborted) or the server closes it.
async fn stream_task(
    shared: Arc<Shared>,
    index: usize,
    permit: tokio::sync::OwnedSemaphorePermit,
    began: Instant,
) {
    let global = shared.stream_offset + index;
    let attacker = global % shared.keys.len();
    let token = &shared.tokens[global % shared.users];
    let source =
        (!shared.sources.is_empty()).then(|| shared.sources[global % shared.sources.len()]);
    let opened = tokio::time::timeout(
        shared.open_timeout,
        open(&shared, index, &shared.keys[attacker], token, source),
    )
    .await;
    drop(permit);
    let (body, ticket_at) = match opened {
        Ok(Ok(ok)) => ok,
        Ok(Err(reason)) => return shared.fail(reason),
        Err(_) => return shared.fail("timeout".to_owned()),
    };
    let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    shared.open_latency.record(micros(began.elapsed()));
    if let Some(ticket_at) = ticket_at {
        shared
            .ticket_latency
            .record(micros(ticket_at.saturating_duration_since(began)));
        shared.stream_latency.record(micros(ticket_at.elapsed()));
    }
    shared.open_per_key[attacker].fetch_add(1, Ordering::Relaxed);
    shared.opened.fetch_add(1, Ordering::Relaxed);
    match body {
        Body::H1(conn, kind) if shared.open_until == OpenUntil::Stream => {
            receive(&shared, conn, kind, attacker).await;
        }
        Body::H1(conn, _) => hold(conn).await,
        Body::H2(body, sender) => {
            receive_h2(&shared, body, attacker).await;
            drop(sender);
        }
    }
    shared.open_per_key[attacker].fetch_sub(1, Ordering::Relaxed);
    shared.ended.fetch_add(1, Ordering::Relaxed);
}

#[derive(serde::Deserialize)]
struct TicketAnswer {
    ticket: String,
}

/// An open stream's body, ready to read.
enum Body {
    /// HTTP/1.1 (plain or TLS): the connection positioned at the start of
    /// the body, and how the body is delimited.
    H1(Conn, BodyKind),
    /// HTTP/2: the response body, and the connection's request half (held
    /// so the connection stays open as long as the stream).
    H2(Incoming, H2Sender),
}

/// The ticket out of a `POST /api/v1/auth/sse-ticket` answer.
fn ticket_of(status: u16, body: &[u8]) -> Result<String, String> {
    if status != 200 {
        return Err(format!("ticket http {status}"));
    }
    let ticket = serde_json::from_slice::<TicketAnswer>(body)
        .map_err(|_| "ticket: bad JSON".to_owned())?
        .ticket;
    if ticket.is_empty()
        || !ticket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("ticket: not base64url".to_owned());
    }
    Ok(ticket)
}

/// The stream's answer must be `200` with `text/event-stream`.
fn check_stream_head(status: u16, content_type: &str) -> Result<(), String> {
    if status != 200 {
        return Err(format!("stream http {status}"));
    }
    if !content_type.starts_with("text/event-stream") {
        return Err("stream: not text/event-stream".to_owned());
    }
    Ok(())
}

/// Connect, get a ticket, open the events stream; returns the body and when
/// the ticket arrived (for a full open). Errors are short reasons.
async fn open(
    shared: &Shared,
    index: usize,
    key: &str,
    token: &str,
    source: Option<IpAddr>,
) -> Result<(Body, Option<Instant>), String> {
    if shared.transport.is_h2() {
        return open_h2(shared, index, key, token, source).await;
    }
    let connect = || async move {
        connect_h1(shared.server, source, shared.tls.as_ref())
            .await
            .map(|io| Conn::new(io, shared.read_buf))
            .map_err(|e| format!("connect: {}", root_cause(&e)))
    };
    let mut conn = connect().await?;
    if shared.open_until == OpenUntil::Connect {
        return Ok((Body::H1(conn, BodyKind::UntilClose), None));
    }
    let request = format!(
        "POST /api/v1/auth/sse-ticket HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n",
        shared.host
    );
    conn.send(request.as_bytes())
        .await
        .map_err(|e| format!("ticket: {}", root_cause(&e)))?;
    let head = conn
        .read_head()
        .await
        .map_err(|e| format!("ticket: {}", root_cause(&e)))?;
    let body = conn
        .read_body(head.body)
        .await
        .map_err(|e| format!("ticket: {}", root_cause(&e)))?;
    let ticket = ticket_of(head.status, &body)?;
    let ticket_at = Instant::now();
    if shared.open_until == OpenUntil::Ticket {
        return Ok((Body::H1(conn, BodyKind::UntilClose), None));
    }
    if shared.separate_ticket_conn {
        // As a client without connection reuse would: a fresh connection
        // for the stream (this one closes, and its port sits in TIME_WAIT).
        conn = connect().await?;
    }
    let request = format!(
        "GET {}?ticket={ticket} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
        shared.kind.path(key),
        shared.host
    );
    conn.send(request.as_bytes())
        .await
        .map_err(|e| format!("stream: {}", root_cause(&e)))?;
    let head = conn
        .read_head()
        .await
        .map_err(|e| format!("stream: {}", root_cause(&e)))?;
    check_stream_head(head.status, &head.content_type)?;
    Ok((Body::H1(conn, head.body), Some(ticket_at)))
}

/// A new TLS + HTTP/2 connection.
async fn h2_connection(shared: &Shared, source: Option<IpAddr>) -> Result<H2Sender> {
    let tls = shared.tls.as_ref().context("no TLS client")?;
    let tcp = crate::http::connect(shared.server, source).await?;
    tls.h2(tcp, shared.server).await
}

/// [`open`] over HTTP/2: the ticket and the stream are two requests on the
/// stream's connection (its own, or its group's for h2-mux).
async fn open_h2(
    shared: &Shared,
    index: usize,
    key: &str,
    token: &str,
    source: Option<IpAddr>,
) -> Result<(Body, Option<Instant>), String> {
    let connected = match shared.transport {
        Transport::H2Mux => shared.mux[index / shared.streams_per_conn]
            .get_or_try_init(|| h2_connection(shared, source))
            .await
            .cloned(),
        _ => h2_connection(shared, source).await,
    };
    let mut sender = connected.map_err(|e| format!("connect: {}", root_cause(&e)))?;
    let uri = |path: &str| format!("https://{}{path}", shared.host);
    let request = hyper::Request::post(uri("/api/v1/auth/sse-ticket"))
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("ticket request: {e}"))?;
    let response = h2_send(&mut sender, "ticket", request).await?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), crate::http::MAX_HEAD * 4)
        .collect()
        .await
        .map_err(|e| format!("ticket: {e}"))?
        .to_bytes();
    let ticket = ticket_of(status, &body)?;
    let ticket_at = Instant::now();
    let request = hyper::Request::get(uri(&format!("{}?ticket={ticket}", shared.kind.path(key))))
        .header(hyper::header::ACCEPT, "text/event-stream")
        .header(hyper::header::CACHE_CONTROL, "no-cache")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("stream request: {e}"))?;
    let response = h2_send(&mut sender, "stream", request).await?;
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    check_stream_head(response.status().as_u16(), &content_type)?;
    Ok((Body::H2(response.into_body(), sender), Some(ticket_at)))
}

/// Send `request` on an HTTP/2 connection once it has room for a stream;
/// errors are short reasons starting with `what`.
async fn h2_send(
    sender: &mut H2Sender,
    what: &str,
    request: hyper::Request<Empty<Bytes>>,
) -> Result<hyper::Response<Incoming>, String> {
    sender.ready().await.map_err(|e| format!("{what}: {e}"))?;
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("{what}: {e}"))
}

/// The innermost error message, without addresses that would make every
/// failure a reason of its own.
fn root_cause(error: &anyhow::Error) -> String {
    let context = error.to_string();
    let root = error.root_cause().to_string();
    if context == root {
        root
    } else {
        format!("{context}: {root}")
    }
}

/// Count the bench frames among `items` (any event carrying `sent_at_ns`:
/// the kind's name for it varies) and the resyncs; a bench frame of a keyed
/// kind must name the stream's key.
fn tally(shared: &Shared, items: &mut Vec<Decoded>, key: &str) {
    for item in items.drain(..) {
        let Decoded::Event(event) = item else {
            continue;
        };
        if event.event == "resync" {
            shared.resyncs.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let Some(sent) = json_u64_field(&event.data, "sent_at_ns") else {
            continue;
        };
        let now = now_ns();
        shared.latency.record(now.saturating_sub(sent) / 1000);
        shared.received.fetch_add(1, Ordering::Relaxed);
        shared.last_rx_ns.fetch_max(now, Ordering::Relaxed);
        if shared.kind.is_keyed() && !event.data.contains(key) {
            shared.misrouted.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Read SSE frames until the server ends the stream or the task is aborted.
async fn receive(shared: &Shared, mut conn: Conn, kind: BodyKind, key_index: usize) {
    let key = shared.keys[key_index].as_str();
    let mut chunked = ChunkedDecoder::new();
    let mut sse = decnet_sse::Decoder::new();
    let mut items = Vec::new();
    loop {
        let bytes = &conn.buf[conn.start..conn.filled];
        match kind {
            BodyKind::Chunked => {
                if chunked
                    .decode(bytes, |data| sse.feed_into(data, &mut items))
                    .is_err()
                {
                    break;
                }
            }
            BodyKind::Length(_) | BodyKind::UntilClose => sse.feed_into(bytes, &mut items),
        }
        conn.start = 0;
        conn.filled = 0;
        tally(shared, &mut items, key);
        if chunked.is_done() {
            break;
        }
        match conn.fill().await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// [`receive`] for an HTTP/2 body: DATA frames as they come.
async fn receive_h2(shared: &Shared, mut body: Incoming, key_index: usize) {
    let key = shared.keys[key_index].as_str();
    let mut sse = decnet_sse::Decoder::new();
    let mut items = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            sse.feed_into(data, &mut items);
            tally(shared, &mut items, key);
        }
    }
}

/// Keep a connection open, discarding anything it sends, until it closes.
async fn hold(mut conn: Conn) {
    loop {
        conn.start = 0;
        conn.filled = 0;
        match conn.fill().await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Poll the server's `/metrics` until `decnet_sse_streams_active >= target`.
async fn wait_active(shared: &Shared, target: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut last = None;
    while Instant::now() < deadline {
        match active_streams(shared).await {
            Ok(n) if n >= target => {
                eprintln!("barrier: server reports {n} active streams");
                return true;
            }
            Ok(n) => {
                if last != Some(n) {
                    eprintln!("barrier: server reports {n}/{target} active streams");
                }
                last = Some(n);
            }
            Err(error) => eprintln!("barrier: /metrics: {error:#}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

async fn active_streams(shared: &Shared) -> Result<u64> {
    metrics_text(shared)
        .await?
        .lines()
        .find_map(|line| line.strip_prefix("decnet_sse_streams_active "))
        .and_then(|v| v.trim().parse().ok())
        .context("no decnet_sse_streams_active in /metrics")
}

/// The queries the server has made to its database so far, per read
/// (`decnet_repository_queries_total{read="..."}` of its `/metrics`).
async fn repository_queries(shared: &Shared) -> Result<BTreeMap<String, u64>> {
    let text = metrics_text(shared).await?;
    let counts = parse_repository_queries(&text);
    if counts.is_empty() {
        bail!("no decnet_repository_queries_total in /metrics");
    }
    Ok(counts)
}

/// `decnet_repository_queries_total{read="x"} n` lines, by read.
fn parse_repository_queries(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("decnet_repository_queries_total{read=\"")?;
            let (read, rest) = rest.split_once("\"}")?;
            let n: f64 = rest.trim().parse().ok()?;
            // Prometheus text counts are integers here.
            Some((read.to_owned(), n as u64))
        })
        .collect()
}

/// The server's `/metrics` text.
async fn metrics_text(shared: &Shared) -> Result<String> {
    let stream = connect_h1(shared.server, None, shared.tls.as_ref()).await?;
    let mut conn = Conn::new(stream, 16 * 1024);
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        shared.host
    );
    conn.send(request.as_bytes()).await?;
    let head = conn.read_head().await?;
    let body = conn.read_body(head.body).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Where one key's bench events go: the topic, and the payload field that
/// names the key (keyed kinds).
#[derive(Debug, Clone)]
struct Target {
    topic: String,
    key: Option<(&'static str, String)>,
}

/// One [`Target`] per stream key, in the keys' order.
fn targets(kind: Kind, keys: &[String]) -> Vec<Target> {
    keys.iter()
        .map(|key| Target {
            topic: kind.topic(key),
            key: kind.key_field().map(|field| (field, key.clone())),
        })
        .collect()
}

/// A publishing request for the publisher thread.
struct StepRequest {
    rate: f64,
    events: u64,
    done: oneshot::Sender<PublishReport>,
}

/// What the publisher did in one step.
#[derive(Debug, Clone, Copy, Default)]
struct PublishReport {
    attempted: u64,
    published: u64,
    failures: u64,
    secs: f64,
}

/// A thread with its own runtime and bus connection that publishes paced
/// events on request.
struct Publisher {
    requests: mpsc::Sender<StepRequest>,
    thread: std::thread::JoinHandle<()>,
}

impl Publisher {
    fn start(config: BusConfig, targets: Vec<Target>) -> Result<Publisher> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("publisher runtime")?;
        let (requests, mut receiver) = mpsc::channel::<StepRequest>(1);
        let thread = std::thread::Builder::new()
            .name("publisher".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let bus = match Bus::connect(&config).await {
                        Ok(bus) => bus,
                        Err(error) => {
                            eprintln!("publisher: cannot create the bus: {error}");
                            return;
                        }
                    };
                    while let Some(request) = receiver.recv().await {
                        let report =
                            publish_paced(&bus, &targets, request.rate, request.events).await;
                        let _ = request.done.send(report);
                    }
                    bus.close().await;
                });
            })
            .context("spawning the publisher thread")?;
        Ok(Publisher { requests, thread })
    }

    async fn publish(&self, rate: f64, events: u64) -> Result<PublishReport> {
        let (done, report) = oneshot::channel();
        self.requests
            .send(StepRequest { rate, events, done })
            .await
            .context("the publisher thread is gone (bus connection failed?)")?;
        report.await.context("the publisher thread stopped")
    }

    fn stop(self) {
        drop(self.requests);
        let _ = self.thread.join();
    }
}

/// Publish `events` events at `rate` per second, round-robin over
/// `attackers`, each with `payload.sent_at_ns` taken just before it is sent.
///
/// Gives up at twice the planned time plus 5 s (a bus that pushes back, as
/// in the per-connection ablation, must not hold the run forever); the
/// report says how many were attempted.
async fn publish_paced(bus: &Bus, targets: &[Target], rate: f64, events: u64) -> PublishReport {
    let started = Instant::now();
    let mut report = PublishReport::default();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0u64;
    let rate = rate.max(1e-3);
    let limit = Duration::from_secs_f64((events as f64 / rate * 2.0 + 5.0).min(86_400.0));
    'publishing: while sent < events {
        ticker.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate) as u64 + 1).min(events);
        while sent < due {
            if started.elapsed() > limit {
                eprintln!(
                    "publisher: gave up after {:.0} s with {sent}/{events} events sent",
                    limit.as_secs_f64()
                );
                break 'publishing;
            }
            let target = &targets[(sent % targets.len() as u64) as usize];
            let mut payload = Map::new();
            if let Some((field, key)) = &target.key {
                payload.insert((*field).into(), Value::from(key.as_str()));
            }
            payload.insert("seq".into(), Value::from(sent));
            payload.insert("sent_at_ns".into(), Value::from(now_ns()));
            match bus.publish(&target.topic, "bench", payload).await {
                Ok(()) => report.published += 1,
                Err(_) => report.failures += 1,
            }
            sent += 1;
        }
    }
    report.attempted = sent;
    report.secs = started.elapsed().as_secs_f64();
    report
}

/// Frames expected when the first `events` events (round-robin over the
/// attackers) reach every stream open on their attacker.
pub(crate) fn expected_frames(open_per_attacker: &[u64], events: u64) -> u64 {
    let k = open_per_attacker.len() as u64;
    if k == 0 {
        return 0;
    }
    open_per_attacker
        .iter()
        .enumerate()
        .map(|(a, open)| (events / k + u64::from((a as u64) < events % k)) * open)
        .sum()
}

/// One step: publish at `rate`, drain, measure.
async fn run_step(
    shared: &Shared,
    publisher: &Publisher,
    options: &RunOptions,
    server_pid: Option<Pid>,
    rate: f64,
    events: u64,
) -> Result<Step> {
    let open: Vec<u64> = shared
        .open_per_key
        .iter()
        .map(|n| u64::from(n.load(Ordering::Relaxed)))
        .collect();
    let planned = expected_frames(&open, events);
    shared.latency.take();
    shared.received.store(0, Ordering::Relaxed);
    shared.resyncs.store(0, Ordering::Relaxed);
    shared.misrouted.store(0, Ordering::Relaxed);
    shared.last_rx_ns.store(0, Ordering::Relaxed);
    let server_before = server_pid.and_then(Pid::sample);
    let self_before = Pid::This.sample();
    let wall = Instant::now();
    let start_ns = now_ns();
    eprintln!("step: publishing {events} events at {rate:.0}/s, expecting {planned} frames");

    let publishing = publisher.publish(rate, events);
    tokio::pin!(publishing);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let report = loop {
        tokio::select! {
            report = &mut publishing => break report?,
            _ = ticker.tick() => step_progress(shared, planned, wall),
        }
    };
    // Frames owed for what was actually sent (the publisher may give up).
    let expected = expected_frames(&open, report.attempted);
    let drain_until = Instant::now() + options.drain;
    while shared.received.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
            _ = ticker.tick() => step_progress(shared, expected, wall),
        }
    }
    let elapsed = wall.elapsed().as_secs_f64();
    let server_after = server_pid.and_then(Pid::sample);
    let self_after = Pid::This.sample();
    let last_rx = shared.last_rx_ns.load(Ordering::Relaxed);
    let window_secs = if last_rx > start_ns {
        (last_rx - start_ns) as f64 / 1e9
    } else {
        report.secs
    };
    let cpu = |before: Option<ProcSample>, after: Option<ProcSample>| match (before, after) {
        (Some(b), Some(a)) => Some(a.cpu_secs - b.cpu_secs),
        _ => None,
    };
    let server_cpu_secs = cpu(server_before, server_after);
    let mut step = Step {
        rate,
        events_planned: events,
        events_published: report.published,
        publish_failures: report.failures,
        publish_secs: report.secs,
        frames_expected: expected,
        frames_received: shared.received.load(Ordering::Relaxed),
        resyncs: shared.resyncs.load(Ordering::Relaxed),
        misrouted: shared.misrouted.load(Ordering::Relaxed),
        window_secs,
        histogram: shared.latency.snapshot(),
        server_cpu_secs,
        server_cpu_pct: server_cpu_secs.map(|c| c / elapsed * 100.0),
        server_rss_kib: server_after.map(|s| s.rss_kib),
        loadgen_cpu_secs: cpu(self_before, self_after),
        loadgen_cpu_pct: cpu(self_before, self_after).map(|c| c / elapsed * 100.0),
        ..Step::default()
    };
    step.finish(options.p99_limit_ms);
    Ok(step)
}

fn step_progress(shared: &Shared, expected: u64, wall: Instant) {
    let received = shared.received.load(Ordering::Relaxed);
    let stats = shared.latency.snapshot().stats();
    eprintln!(
        "  {:>5.1} s: received {received}/{expected}, p50 {} p99 {} ms",
        wall.elapsed().as_secs_f64(),
        fmt_ms(stats.p50_ms),
        fmt_ms(stats.p99_ms),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_queries_are_read_per_read_from_metrics_text() {
        let text = "# HELP decnet_repository_queries Queries\n\
            # TYPE decnet_repository_queries counter\n\
            decnet_repository_queries_total{read=\"logs_after_id\"} 41\n\
            decnet_repository_queries_total{read=\"ping\"} 0\n\
            decnet_sse_streams_active 3\n";
        let counts = parse_repository_queries(text);
        assert_eq!(counts.len(), 2);
        assert_eq!(counts["logs_after_id"], 41);
        assert_eq!(counts["ping"], 0);
        assert!(parse_repository_queries("decnet_sse_streams_active 3\n").is_empty());
        assert_eq!(engine_of("postgres://u@h/db"), "postgres");
        assert_eq!(engine_of("sqlite"), "sqlite");
        assert!(!is_postgres("mysql"));
    }

    #[test]
    fn urls_must_be_loopback() {
        let (addr, host) = parse_url("http://127.0.0.1:8080", false).expect("valid");
        assert_eq!(addr.port(), 8080);
        assert_eq!(host, "127.0.0.1:8080");
        assert!(parse_url("http://localhost:9000/", false).is_ok());
        assert!(parse_url("http://10.0.0.1:80", false).is_err());
        assert!(parse_url("https://127.0.0.1:80", false).is_err());
        assert!(parse_url("http://example.com:80", false).is_err());
        assert!(parse_url("https://127.0.0.1:8443", true).is_ok());
        assert!(parse_url("http://127.0.0.1:8443", true).is_err());
        assert!(parse_url("https://10.0.0.1:443", true).is_err());
    }

    #[test]
    fn sent_at_is_read_without_parsing_everything() {
        let data = r#"{"topic":"t","type":"bench","ts":1.5,"payload":{"attacker_uuid":"a","seq":3,"sent_at_ns":1764000000123456789}}"#;
        assert_eq!(
            json_u64_field(data, "sent_at_ns"),
            Some(1_764_000_000_123_456_789)
        );
        assert_eq!(json_u64_field(data, "seq"), Some(3));
        assert_eq!(
            json_u64_field(r#"{"sent_at_ns" : 42}"#, "sent_at_ns"),
            Some(42)
        );
        assert_eq!(json_u64_field(r#"{"sent_at_ns":"x"}"#, "sent_at_ns"), None);
        assert_eq!(json_u64_field("{}", "sent_at_ns"), None);
    }

    #[test]
    fn expected_frames_follow_the_round_robin() {
        // 3 attackers with 2, 0 and 5 streams; 7 events: 3, 2, 2 per attacker.
        assert_eq!(expected_frames(&[2, 0, 5], 7), 3 * 2 + 2 * 5);
        assert_eq!(expected_frames(&[10; 1000], 20_000), 200_000);
        assert_eq!(expected_frames(&[], 5), 0);
    }
}
