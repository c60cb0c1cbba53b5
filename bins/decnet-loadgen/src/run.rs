//! `decnet-loadgen run`: open N streams over K attackers, hold them, publish
//! paced events in steps, and measure.
//!
//! Phases:
//! 1. Mint one JWT per user; read the server's RSS and CPU time.
//! 2. Open the streams (bounded concurrency, optional pacing): one task per
//!    stream does TCP connect (from one of several loopback source
//!    addresses), `POST /api/v1/auth/sse-ticket` and
//!    `GET /api/v1/attackers/{uuid}/events?ticket=..` on the same keep-alive
//!    connection, then reads the SSE body until the run ends.
//! 3. Optionally wait until the server reports `--wait-active` open streams
//!    (a barrier when several load generators share one server), hold
//!    `--hold-secs`, read the server's RSS again (idle memory per stream).
//! 4. For each rate in `--rates`: publish events round-robin over the
//!    attackers at that rate (a dedicated publisher thread), wait for the
//!    frames to drain, and record loss, latency, throughput and CPU.
//! 5. Print the JSON [`Summary`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use decnet_bus::{Bus, BusConfig};
use decnet_sse::Decoded;
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::histogram::AtomicHistogram;
use crate::http::{BodyKind, ChunkedDecoder, Conn};
use crate::procfs::{Pid, ProcSample};
use crate::seed::{attacker_uuid, user_uuid};
use crate::summary::{Step, Summary};

/// The bus topic of bench events (forwarded to streams as `observation`).
pub(crate) const BENCH_TOPIC: &str = "attacker.observation.bench.latency";

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

/// Parse `http://host:port` into a loopback socket address and `Host` value.
pub(crate) fn parse_url(url: &str) -> Result<(SocketAddr, String)> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("--url must start with http:// (got {url:?})");
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

/// State every stream task shares.
struct Shared {
    server: SocketAddr,
    host: String,
    tokens: Vec<String>,
    attackers: Vec<String>,
    users: usize,
    stream_offset: usize,
    open_until: OpenUntil,
    separate_ticket_conn: bool,
    /// Streams open now, per attacker index.
    open_per_attacker: Vec<AtomicU32>,
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
    let (server, host) = parse_url(&options.url)?;
    if options.attackers == 0 || options.users == 0 {
        bail!("--attackers and --users must be at least 1");
    }
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
        attackers: (0..options.attackers)
            .map(|a| attacker_uuid(options.attacker_offset + a))
            .collect(),
        users: options.users,
        stream_offset: options.stream_offset,
        open_until: options.open_until,
        separate_ticket_conn: options.separate_ticket_conn,
        open_per_attacker: (0..options.attackers).map(|_| AtomicU32::new(0)).collect(),
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
        processes: 1,
        streams_requested: options.streams as u64,
        open_rate_target: options.open_rate,
        server_before: sample_server(),
        ..Summary::default()
    };
    let mut notes = Vec::new();

    // The publisher (its own thread and runtime, so pacing does not compete
    // with thousands of stream tasks) connects while the streams open.
    let publisher = if options.rates.is_empty() {
        None
    } else {
        Some(Publisher::start(
            options.bus.clone(),
            shared.attackers.clone(),
        )?)
    };

    // --- open ---
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let permits = Arc::new(Semaphore::new(options.connect_concurrency.max(1)));
    let mut last_progress = Instant::now();
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
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            open_progress(&shared, options.streams, started);
        }
    }
    summary.open_secs = started.elapsed().as_secs_f64();
    open_progress(&shared, options.streams, started);

    if let Some(target) = options.wait_active
        && !wait_active(&shared, target, Duration::from_secs(180)).await
    {
        notes.push(format!(
            "the server did not report {target} active streams within 180 s"
        ));
    }
    if !options.hold.is_zero() {
        eprintln!("hold: {:.0} s idle", options.hold.as_secs_f64());
        tokio::time::sleep(options.hold).await;
    }
    summary.server_idle = sample_server();

    // --- publish steps ---
    if let Some(publisher) = &publisher {
        for (n, &rate) in options.rates.iter().enumerate() {
            if n > 0 && !options.pause.is_zero() {
                tokio::time::sleep(options.pause).await;
            }
            let events = options
                .events
                .unwrap_or_else(|| (rate * options.step_secs).round() as u64);
            let step = run_step(&shared, publisher, &options, server_pid, rate, events).await?;
            let clean = step.clean;
            eprintln!(
                "step {}: {:.0} ev/s -> {:.0} frames/s delivered, lost {}/{}, p50 {} p99 {} ms, server cpu {}%{}",
                n + 1,
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
    let attacker = global % shared.attackers.len();
    let token = &shared.tokens[global % shared.users];
    let source =
        (!shared.sources.is_empty()).then(|| shared.sources[global % shared.sources.len()]);
    let opened = tokio::time::timeout(
        shared.open_timeout,
        open(&shared, &shared.attackers[attacker], token, source),
    )
    .await;
    drop(permit);
    let (conn, kind, ticket_at) = match opened {
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
    shared.open_per_attacker[attacker].fetch_add(1, Ordering::Relaxed);
    shared.opened.fetch_add(1, Ordering::Relaxed);
    if shared.open_until == OpenUntil::Stream {
        receive(&shared, conn, kind, attacker).await;
    } else {
        hold(conn).await;
    }
    shared.open_per_attacker[attacker].fetch_sub(1, Ordering::Relaxed);
    shared.ended.fetch_add(1, Ordering::Relaxed);
}

#[derive(serde::Deserialize)]
struct TicketAnswer {
    ticket: String,
}

/// Connect, get a ticket, open the events stream; returns the connection
/// positioned at the start of the SSE body, and when the ticket arrived (for
/// a full open). Errors are short reasons.
async fn open(
    shared: &Shared,
    attacker: &str,
    token: &str,
    source: Option<IpAddr>,
) -> Result<(Conn, BodyKind, Option<Instant>), String> {
    let stream = crate::http::connect(shared.server, source)
        .await
        .map_err(|e| format!("connect: {}", root_cause(&e)))?;
    let mut conn = Conn::new(stream, shared.read_buf);
    if shared.open_until == OpenUntil::Connect {
        return Ok((conn, BodyKind::UntilClose, None));
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
    if head.status != 200 {
        return Err(format!("ticket http {}", head.status));
    }
    let ticket = serde_json::from_slice::<TicketAnswer>(&body)
        .map_err(|_| "ticket: bad JSON".to_owned())?
        .ticket;
    if ticket.is_empty()
        || !ticket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("ticket: not base64url".to_owned());
    }
    let ticket_at = Instant::now();
    if shared.open_until == OpenUntil::Ticket {
        return Ok((conn, BodyKind::UntilClose, None));
    }
    if shared.separate_ticket_conn {
        // As a client without connection reuse would: a fresh connection
        // for the stream (this one closes, and its port sits in TIME_WAIT).
        let stream = crate::http::connect(shared.server, source)
            .await
            .map_err(|e| format!("connect: {}", root_cause(&e)))?;
        conn = Conn::new(stream, shared.read_buf);
    }
    let request = format!(
        "GET /api/v1/attackers/{attacker}/events?ticket={ticket} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
        shared.host
    );
    conn.send(request.as_bytes())
        .await
        .map_err(|e| format!("stream: {}", root_cause(&e)))?;
    let head = conn
        .read_head()
        .await
        .map_err(|e| format!("stream: {}", root_cause(&e)))?;
    if head.status != 200 {
        return Err(format!("stream http {}", head.status));
    }
    if !head.content_type.starts_with("text/event-stream") {
        return Err("stream: not text/event-stream".to_owned());
    }
    Ok((conn, head.body, Some(ticket_at)))
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

/// Read SSE frames until the server ends the stream or the task is aborted.
async fn receive(shared: &Shared, mut conn: Conn, kind: BodyKind, attacker: usize) {
    let attacker_uuid = shared.attackers[attacker].as_str();
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
        for item in items.drain(..) {
            let Decoded::Event(event) = item else {
                continue;
            };
            match event.event.as_str() {
                "observation" => {
                    let Some(sent) = json_u64_field(&event.data, "sent_at_ns") else {
                        continue;
                    };
                    let now = now_ns();
                    shared.latency.record(now.saturating_sub(sent) / 1000);
                    shared.received.fetch_add(1, Ordering::Relaxed);
                    shared.last_rx_ns.fetch_max(now, Ordering::Relaxed);
                    if !event.data.contains(attacker_uuid) {
                        shared.misrouted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                "resync" => {
                    shared.resyncs.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        if chunked.is_done() {
            break;
        }
        match conn.fill().await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
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
    let stream = crate::http::connect(shared.server, None).await?;
    let mut conn = Conn::new(stream, 16 * 1024);
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        shared.host
    );
    conn.send(request.as_bytes()).await?;
    let head = conn.read_head().await?;
    let body = conn.read_body(head.body).await?;
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find_map(|line| line.strip_prefix("decnet_sse_streams_active "))
        .and_then(|v| v.trim().parse().ok())
        .context("no decnet_sse_streams_active in /metrics")
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
    fn start(config: BusConfig, attackers: Vec<String>) -> Result<Publisher> {
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
                            publish_paced(&bus, &attackers, request.rate, request.events).await;
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
async fn publish_paced(bus: &Bus, attackers: &[String], rate: f64, events: u64) -> PublishReport {
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
            let attacker = &attackers[(sent % attackers.len() as u64) as usize];
            let mut payload = Map::new();
            payload.insert("attacker_uuid".into(), Value::from(attacker.as_str()));
            payload.insert("seq".into(), Value::from(sent));
            payload.insert("sent_at_ns".into(), Value::from(now_ns()));
            match bus.publish(BENCH_TOPIC, "bench", payload).await {
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
        .open_per_attacker
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
    fn urls_must_be_loopback() {
        let (addr, host) = parse_url("http://127.0.0.1:8080").expect("valid");
        assert_eq!(addr.port(), 8080);
        assert_eq!(host, "127.0.0.1:8080");
        assert!(parse_url("http://localhost:9000/").is_ok());
        assert!(parse_url("http://10.0.0.1:80").is_err());
        assert!(parse_url("https://127.0.0.1:80").is_err());
        assert!(parse_url("http://example.com:80").is_err());
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
