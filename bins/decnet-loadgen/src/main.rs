//! `decnet-loadgen`: the load generator behind `cargo xtask bench`.
//!
//! What it is: a tool that opens thousands of real SSE streams on a running
//! `decnet-events` (ticket endpoint, then events endpoint, over a minimal
//! hand-written HTTP/1.1 client with one small buffer and one task per
//! stream; or hyper's HTTP/2 client over TLS, one connection per stream or
//! many streams per connection), publishes paced events on the real bus
//! with a send timestamp in each payload, and measures what comes back: streams opened and failed,
//! open latency, frames expected against received, publish-to-receive
//! latency, delivered frames per second, and the server's RSS and CPU time
//! from `/proc/<pid>`. It only ever connects to loopback addresses.
//! What it is not: a general HTTP client or a test of correctness (the
//! end-to-end tests of `decnet-events` do that).
//!
//! Subcommands:
//! - `seed`: (re)create the benchmark database, migrate it, add K attackers
//!   and U users with uuids derived from their index;
//! - `run`: the load itself; progress on stderr, a JSON summary on stdout;
//! - `merge`: merge the summaries of processes that ran at the same time;
//! - `report`: Markdown and an SVG chart from a directory of summaries.
//!
//! Main modules: [`http`] (client and chunked decoder), [`transport`]
//! (plain, TLS, HTTP/2), [`kind`] (which stream), [`run`] (the load),
//! [`histogram`] (latency percentiles), [`summary`] (the JSON and merging),
//! [`procfs`] (RSS and CPU), [`seed`], [`report`].
//!
//! One process holds at most ~19,900 streams (20,000 open files, hard
//! limit); run several with `--stream-offset` for more, and raise the soft
//! limit first (`ulimit -Sn $(ulimit -Hn)`: raising it in-process needs
//! `setrlimit`, which is `unsafe` to call).

#![allow(clippy::print_stdout, reason = "a CLI prints its JSON result")]

mod compare;
mod floor;
mod histogram;
mod http;
mod kind;
mod procfs;
mod report;
mod run;
mod seed;
mod summary;
mod transport;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use decnet_bus::{BusConfig, BusKind};

use crate::kind::Kind;
use crate::summary::Summary;
use crate::transport::{TlsClient, Transport};

/// Load generator for decnet-events: many SSE streams, paced bus events,
/// latency and loss.
#[derive(Debug, Parser)]
#[command(name = "decnet-loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create (or recreate) the benchmark database: K attackers, U users.
    Seed(SeedArgs),
    /// Open streams, publish events, print a JSON summary on stdout.
    Run(Box<RunArgs>),
    /// Merge JSON summaries of processes that ran at the same time.
    Merge(MergeArgs),
    /// Markdown (stdout) and an SVG chart from a directory of summaries.
    Report(ReportArgs),
    /// The machine's floor per frame: small writes to loopback sockets with
    /// no service in the way (JSON summary on stdout).
    Floor(floor::FloorArgs),
}

#[derive(Debug, Args)]
struct SeedArgs {
    /// The benchmark database URL
    #[arg(long, env = "DECNET_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Drop and create the database first, connecting through this
    /// maintenance URL (e.g. postgres://postgres@127.0.0.1:5432/postgres)
    #[arg(long, value_name = "ADMIN_URL")]
    recreate_via: Option<String>,
    /// Attackers to create
    #[arg(long, default_value_t = 1000)]
    attackers: usize,
    /// Users to create (role viewer)
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// Topologies to create (status active), for `run --kind topology`
    #[arg(long, default_value_t = 0)]
    topologies: usize,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The server, http://127.0.0.x:port, or https:// for the TLS
    /// transports (loopback only)
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// How streams reach the server: h1 (plain HTTP/1.1), h1-tls, h2 (one
    /// TLS + HTTP/2 connection per stream), h2-mux (--streams-per-conn
    /// streams on each HTTP/2 connection)
    #[arg(long, default_value = "h1")]
    transport: String,
    /// PEM certificate(s) to trust as the only roots (the TLS transports)
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Streams multiplexed on one HTTP/2 connection (h2-mux)
    #[arg(long, default_value_t = 100)]
    streams_per_conn: usize,
    /// Stream kind to open and publish for: attacker, identities,
    /// campaigns, orchestrator, topology (topologies seeded with `seed
    /// --topologies`, counted by --attackers)
    #[arg(long, default_value = "attacker")]
    kind: String,
    /// HS256 secret the server verifies JWTs with
    #[arg(long, env = "DECNET_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
    /// Lifetime of the minted JWTs, seconds
    #[arg(long, default_value_t = 4 * 3600)]
    token_ttl_secs: u64,
    /// Streams to open in this process
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// Global index of this process's first stream (several processes)
    #[arg(long, default_value_t = 0)]
    stream_offset: usize,
    /// Attackers the streams spread over (seeded with `seed`)
    #[arg(long, default_value_t = 1000)]
    attackers: usize,
    /// Index of the first attacker this process uses
    #[arg(long, default_value_t = 0)]
    attacker_offset: usize,
    /// Users the streams spread over (seeded with `seed`)
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// Opens in flight at most
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Opens per second; 0 opens as fast as the concurrency allows
    #[arg(long, default_value_t = 0.0)]
    open_rate: f64,
    /// Loopback source addresses to spread connections over (127.0.0.2 ..);
    /// 0 lets the kernel choose (one address: ~28,000 ports)
    #[arg(long, default_value_t = 8)]
    source_addrs: u8,
    /// Bound on one open (connect + ticket + stream headers), seconds
    #[arg(long, default_value_t = 30)]
    open_timeout_secs: u64,
    /// The server's pid, to read its RSS and CPU time from /proc
    #[arg(long)]
    server_pid: Option<u32>,
    /// Wait until the server reports this many active streams (a barrier
    /// for several processes) before the idle reading
    #[arg(long)]
    wait_active: Option<u64>,
    /// Idle seconds with every stream open before the idle RSS reading
    #[arg(long, default_value_t = 0.0)]
    hold_secs: f64,
    /// Bus to publish on: nats | redis
    #[arg(long, default_value = "nats")]
    bus: String,
    /// NATS URL
    #[arg(long, default_value = decnet_bus::DEFAULT_NATS_URL)]
    nats_url: String,
    /// Redis URL
    #[arg(long, default_value = decnet_bus::DEFAULT_REDIS_URL)]
    redis_url: String,
    /// Event rates, comma-separated, one step each (none: idle run)
    #[arg(long, value_delimiter = ',')]
    rates: Vec<f64>,
    /// Seconds of publishing per step
    #[arg(long, default_value_t = 10.0)]
    step_secs: f64,
    /// Events per step (overrides rate x step-secs)
    #[arg(long)]
    events: Option<u64>,
    /// p99 limit for a step to count as clean, ms
    #[arg(long, default_value_t = 100.0)]
    p99_limit_ms: f64,
    /// Stop at the first step that is not clean (a ceiling search)
    #[arg(long)]
    stop_on_dirty: bool,
    /// Run a step that is not clean again, up to this many times (a
    /// passing hiccup of a shared machine is not the ceiling)
    #[arg(long, default_value_t = 0)]
    retry_dirty: u32,
    /// Longest wait for the last frames after publishing, seconds
    #[arg(long, default_value_t = 5.0)]
    drain_secs: f64,
    /// Quiet seconds between steps
    #[arg(long, default_value_t = 2.0)]
    pause_secs: f64,
    /// Read buffer per connection, bytes
    #[arg(long, default_value_t = 8192)]
    read_buf: usize,
    /// Name of the run in the summary
    #[arg(long, default_value = "run")]
    label: String,
    /// How far each open goes before the connection is held idle:
    /// connect | ticket | stream (memory attribution)
    #[arg(long, default_value = "stream")]
    open_until: String,
    /// Count the server's database queries over the hold (its
    /// `decnet_repository_queries_total`), for the `/stream` database load:
    /// `sqlite` or `mysql` names the engine; a PostgreSQL URL (the server's
    /// database) also counts its transactions (`pg_stat_database`)
    #[arg(long, value_name = "DATABASE_URL", hide_env_values = true)]
    count_db: Option<String>,
    /// Get each ticket on a connection of its own (default: the ticket POST
    /// and the events GET share one keep-alive connection)
    #[arg(long)]
    separate_ticket_conn: bool,
}

#[derive(Debug, Args)]
struct MergeArgs {
    /// Summary files (JSON) to merge
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// p99 limit the merged steps are judged against, ms
    #[arg(long, default_value_t = 100.0)]
    p99_limit_ms: f64,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// Directory of <scenario>.json summaries
    #[arg(long)]
    dir: PathBuf,
    /// Write the latency chart here (SVG)
    #[arg(long)]
    svg: Option<PathBuf>,
    /// How the Markdown links to the chart
    #[arg(long, default_value = "bench-latency.svg")]
    svg_link: String,
    /// `Key=value` lines to print first (date, machine, command, ...)
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
    /// Which section: service (idle, fan-out, ceiling, open rate,
    /// ablation; the latency chart), h2 (HTTP/1.1 against HTTP/2; the RSS
    /// chart), kinds (every stream kind, `/stream`'s database load)
    #[arg(long, default_value = "service")]
    section: String,
}

fn secs(value: f64, name: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| format!("--{name} must be >= 0"))
}

fn run_options(args: RunArgs) -> Result<run::RunOptions> {
    let kind = match args.bus.as_str() {
        "nats" => BusKind::Nats,
        "redis" => BusKind::Redis,
        other => bail!("--bus must be nats or redis, got {other:?}"),
    };
    if args.rates.iter().any(|r| !r.is_finite() || *r <= 0.0) {
        bail!("--rates must be positive numbers");
    }
    let open_until = match args.open_until.as_str() {
        "connect" => run::OpenUntil::Connect,
        "ticket" => run::OpenUntil::Ticket,
        "stream" => run::OpenUntil::Stream,
        other => bail!("--open-until must be connect, ticket or stream, got {other:?}"),
    };
    if !args.open_rate.is_finite() || args.open_rate < 0.0 {
        bail!("--open-rate must be >= 0");
    }
    let transport = Transport::parse(&args.transport)?;
    let stream_kind = Kind::parse(&args.kind)?;
    if stream_kind == Kind::Logs && !args.rates.is_empty() {
        bail!("--kind logs has no bus events to publish: no --rates");
    }
    let tls = match (&args.ca, transport.is_tls()) {
        (Some(ca), true) => Some(TlsClient::from_ca_file(ca)?),
        (None, true) => bail!("--transport {} needs --ca <pem>", args.transport),
        (_, false) => None,
    };
    if transport.is_h2() && open_until != run::OpenUntil::Stream {
        bail!("--open-until connect|ticket is for the HTTP/1.1 transports");
    }
    if args.streams_per_conn == 0 {
        bail!("--streams-per-conn must be at least 1");
    }
    Ok(run::RunOptions {
        url: args.url,
        jwt_secret: args.jwt_secret,
        token_ttl: Duration::from_secs(args.token_ttl_secs),
        streams: args.streams,
        stream_offset: args.stream_offset,
        attackers: args.attackers,
        attacker_offset: args.attacker_offset,
        users: args.users,
        connect_concurrency: args.connect_concurrency,
        open_rate: args.open_rate,
        source_addrs: args.source_addrs,
        open_timeout: Duration::from_secs(args.open_timeout_secs),
        server_pid: args.server_pid,
        wait_active: args.wait_active,
        hold: secs(args.hold_secs, "hold-secs")?,
        bus: BusConfig {
            kind,
            nats_url: Some(args.nats_url),
            redis_url: Some(args.redis_url),
            ..BusConfig::default()
        },
        rates: args.rates,
        step_secs: args.step_secs,
        events: args.events,
        p99_limit_ms: args.p99_limit_ms,
        stop_on_dirty: args.stop_on_dirty,
        retry_dirty: args.retry_dirty,
        drain: secs(args.drain_secs, "drain-secs")?,
        pause: secs(args.pause_secs, "pause-secs")?,
        read_buf: args.read_buf,
        label: args.label,
        open_until,
        separate_ticket_conn: args.separate_ticket_conn,
        transport,
        tls,
        streams_per_conn: args.streams_per_conn,
        kind: stream_kind,
        count_db: args.count_db,
    })
}

async fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Seed(args) => {
            seed::seed(&seed::SeedOptions {
                database_url: args.database_url,
                recreate_via: args.recreate_via,
                attackers: args.attackers,
                users: args.users,
                topologies: args.topologies,
            })
            .await
        }
        Command::Floor(args) => {
            // Its own runtimes and threads, off this runtime's.
            let thread = std::thread::Builder::new()
                .name("floor".to_owned())
                .spawn(move || floor::floor(&args))?;
            tokio::task::spawn_blocking(move || thread.join())
                .await?
                .map_err(|_| anyhow::anyhow!("the floor run panicked"))?
        }
        Command::Run(args) => {
            let summary = run::run(run_options(*args)?).await?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(())
        }
        Command::Merge(args) => {
            let parts = args
                .files
                .iter()
                .map(|path| {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    serde_json::from_str::<Summary>(&text)
                        .with_context(|| format!("parsing {}", path.display()))
                })
                .collect::<Result<Vec<_>>>()?;
            let merged = Summary::merge(&parts, args.p99_limit_ms);
            println!("{}", serde_json::to_string_pretty(&merged)?);
            Ok(())
        }
        Command::Report(args) => {
            let meta = args
                .meta
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .with_context(|| format!("--meta {kv:?} is not KEY=VALUE"))
                })
                .collect::<Result<Vec<_>>>()?;
            let markdown = report::report(&report::ReportOptions {
                dir: args.dir,
                svg: args.svg,
                svg_link: args.svg_link,
                meta,
                section: report::Section::parse(&args.section)?,
            })?;
            print!("{markdown}");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("decnet-loadgen: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("decnet-loadgen: {error:#}");
            ExitCode::FAILURE
        }
    }
}
