//! `decnet-events`: the DECNET attacker events service.
//!
//! Subcommands: `serve` (the default), `migrate`, `mint-token`, `publish`.
//! With no configuration, `serve` runs the embedded demo (memory bus, memory
//! database, memory tickets, a generated secret, a seeded attacker and
//! synthetic events) and prints a token and copy-paste commands.

#![allow(clippy::print_stdout, reason = "a CLI prints its results for people")]

mod config;
mod demo;
mod metrics;
mod server;
mod telemetry;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use decnet_auth::{ConnectionLimiter, TicketStore, TokenVerifier, VerifierConfig};
use decnet_bus::{Bus, BusKind};
use decnet_repo::{MemoryRepository, PgConfig, PgRepository, Repo};
use decnet_stream::{HubConfig, StreamHub};

use crate::config::{Config, DbKind, TicketStoreKind};

/// `EX_USAGE` from sysexits.h: invalid configuration.
const EX_USAGE: u8 = 64;

/// DECNET attacker events: Server-Sent Events of per-attacker behaviour.
#[derive(Debug, Parser)]
#[command(
    name = "decnet-events",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Apply the embedded database migrations to DECNET_DATABASE_URL.
    Migrate(DbArgs),
    /// Print a JWT for a user (operators and tests).
    MintToken(MintArgs),
    /// Publish one event on the configured bus.
    Publish(PublishArgs),
}

/// Every `serve` setting; each flag also reads its environment variable.
#[derive(Debug, Default, Args)]
struct ServeArgs {
    /// Listen address [default: 127.0.0.1:8000]
    #[arg(long, env = config::ENV_BIND, value_name = "ADDR")]
    bind: Option<String>,
    /// HS256 secret shared with DECNET (generated in demo mode)
    #[arg(long, env = config::ENV_JWT_SECRET, value_name = "SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// memory | nats | redis | null [default: memory]
    #[arg(long, env = config::ENV_BUS_TYPE, value_name = "TYPE")]
    bus_type: Option<String>,
    /// false forces the null bus
    #[arg(long, env = config::ENV_BUS_ENABLED, value_name = "BOOL")]
    bus_enabled: Option<String>,
    /// NATS server URL [default: nats://127.0.0.1:4222]
    #[arg(long, env = config::ENV_NATS_URL, value_name = "URL", hide_env_values = true)]
    nats_url: Option<String>,
    /// Redis URL (bus and tickets) [default: redis://127.0.0.1:6379]
    #[arg(long, env = config::ENV_REDIS_URL, value_name = "URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// memory | postgres [default: memory]
    #[arg(long, env = config::ENV_DB_TYPE, value_name = "TYPE")]
    db_type: Option<String>,
    /// PostgreSQL URL
    #[arg(long, env = config::ENV_DATABASE_URL, value_name = "URL", hide_env_values = true)]
    database_url: Option<String>,
    /// memory | redis [default: memory]
    #[arg(long, env = config::ENV_TICKET_STORE, value_name = "TYPE")]
    ticket_store: Option<String>,
    /// Streams per user per instance [default: 5]
    #[arg(long, env = config::ENV_SSE_MAX_PER_USER, value_name = "N")]
    sse_max_per_user: Option<String>,
    /// Streams per instance [default: unlimited]
    #[arg(long, env = config::ENV_SSE_MAX_TOTAL, value_name = "N")]
    sse_max_total: Option<String>,
    /// Idle keepalive interval [default: 15]
    #[arg(long, env = config::ENV_SSE_KEEPALIVE_SECS, value_name = "SECS")]
    sse_keepalive_secs: Option<String>,
    /// Per-stream queue bound [default: 256]
    #[arg(long, env = config::ENV_SSE_QUEUE_MAX, value_name = "N")]
    sse_queue_max: Option<String>,
    /// Ticket lifetime [default: 60]
    #[arg(long, env = config::ENV_SSE_TICKET_TTL, value_name = "SECS")]
    sse_ticket_ttl: Option<String>,
    /// Replay frames kept per attacker [default: 256]
    #[arg(long, env = config::ENV_SSE_REPLAY, value_name = "N")]
    sse_replay: Option<String>,
    /// How long a replay ring outlives its last stream [default: 300]
    #[arg(long, env = config::ENV_SSE_REPLAY_GRACE_SECS, value_name = "SECS")]
    sse_replay_grace_secs: Option<String>,
    /// The retry: hint sent to clients [default: 3000]
    #[arg(long, env = config::ENV_SSE_RETRY_MS, value_name = "MS")]
    sse_retry_ms: Option<String>,
    /// JWT clock leeway [default: 0]
    #[arg(long, env = config::ENV_JWT_LEEWAY_SECS, value_name = "SECS")]
    jwt_leeway_secs: Option<String>,
    /// Comma-separated allowed CORS origins
    #[arg(long, env = config::ENV_CORS_ORIGINS, value_name = "ORIGINS")]
    cors_origins: Option<String>,
    /// Connection drain timeout at shutdown [default: 10]
    #[arg(long, env = config::ENV_SHUTDOWN_GRACE_SECS, value_name = "SECS")]
    shutdown_grace_secs: Option<String>,
    /// shared | per-connection: hub subscriptions (per-connection is a benchmark ablation) [default: shared]
    #[arg(long, env = config::ENV_SSE_HUB_MODE, value_name = "MODE")]
    sse_hub_mode: Option<String>,
    /// auto | true | false: run the embedded demo [default: auto]
    #[arg(long, env = config::ENV_DEMO, value_name = "MODE")]
    demo: Option<String>,
}

impl ServeArgs {
    /// The values clap resolved (flag, else environment), keyed by variable.
    fn values(&self) -> BTreeMap<&'static str, String> {
        use config::*;
        let pairs = [
            (ENV_BIND, &self.bind),
            (ENV_JWT_SECRET, &self.jwt_secret),
            (ENV_BUS_TYPE, &self.bus_type),
            (ENV_BUS_ENABLED, &self.bus_enabled),
            (ENV_NATS_URL, &self.nats_url),
            (ENV_REDIS_URL, &self.redis_url),
            (ENV_DB_TYPE, &self.db_type),
            (ENV_DATABASE_URL, &self.database_url),
            (ENV_TICKET_STORE, &self.ticket_store),
            (ENV_SSE_MAX_PER_USER, &self.sse_max_per_user),
            (ENV_SSE_MAX_TOTAL, &self.sse_max_total),
            (ENV_SSE_KEEPALIVE_SECS, &self.sse_keepalive_secs),
            (ENV_SSE_QUEUE_MAX, &self.sse_queue_max),
            (ENV_SSE_TICKET_TTL, &self.sse_ticket_ttl),
            (ENV_SSE_REPLAY, &self.sse_replay),
            (ENV_SSE_REPLAY_GRACE_SECS, &self.sse_replay_grace_secs),
            (ENV_SSE_RETRY_MS, &self.sse_retry_ms),
            (ENV_JWT_LEEWAY_SECS, &self.jwt_leeway_secs),
            (ENV_CORS_ORIGINS, &self.cors_origins),
            (ENV_SHUTDOWN_GRACE_SECS, &self.shutdown_grace_secs),
            (ENV_DEMO, &self.demo),
            (ENV_SSE_HUB_MODE, &self.sse_hub_mode),
        ];
        pairs
            .into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
            .collect()
    }

    fn config(&self) -> Result<Config, Vec<config::ConfigError>> {
        let values = self.values();
        Config::from_lookup(&move |k| values.get(k).cloned())
    }
}

#[derive(Debug, Args)]
struct DbArgs {
    /// PostgreSQL URL
    #[arg(long, env = config::ENV_DATABASE_URL, value_name = "URL", hide_env_values = true)]
    database_url: String,
}

#[derive(Debug, Args)]
struct MintArgs {
    /// The user's uuid (the `uuid` claim)
    #[arg(long)]
    user: String,
    /// Token lifetime in seconds
    #[arg(long, default_value_t = 3600)]
    ttl_secs: u64,
    /// HS256 secret
    #[arg(long, env = config::ENV_JWT_SECRET, hide_env_values = true)]
    jwt_secret: String,
}

#[derive(Debug, Args)]
struct PublishArgs {
    /// Topic, e.g. attacker.observation.motor.input_modality
    topic: String,
    /// Payload: a JSON object
    #[arg(default_value = "{}")]
    payload: String,
    /// The envelope's `type`
    #[arg(long = "type", default_value = "")]
    event_type: String,
    #[command(flatten)]
    bus: ServeArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("decnet-events: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            None => serve(cli.serve).await,
            Some(Command::Serve(args)) => serve(args).await,
            Some(Command::Migrate(args)) => migrate(args).await,
            Some(Command::MintToken(args)) => mint_token(&args),
            Some(Command::Publish(args)) => publish(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("decnet-events: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_or_usage(args: &ServeArgs) -> Result<Config, ExitCode> {
    args.config().map_err(|errors| {
        for error in &errors {
            eprintln!("decnet-events: invalid configuration: {error}");
        }
        ExitCode::from(EX_USAGE)
    })
}

async fn build_repo(config: &Config) -> Result<Repo> {
    Ok(match config.db {
        DbKind::Memory => Repo::from(MemoryRepository::new()),
        DbKind::Postgres => {
            let url = config
                .database_url
                .clone()
                .context("DECNET_DATABASE_URL is not set")?;
            Repo::from(
                PgRepository::connect(PgConfig::new(url)).context("connecting to PostgreSQL")?,
            )
        }
    })
}

async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let config = match config_or_usage(&args) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let _telemetry = telemetry::init();
    tracing::info!(?config, "starting");
    raise_open_files_limit();

    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding {}", config.bind))?;
    let local = listener.local_addr().context("local address")?;

    let secret = match &config.jwt_secret {
        Some(secret) => secret.clone().into_bytes(),
        None => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("OS random generator: {e}"))?;
            bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into_bytes()
        }
    };
    let repo = build_repo(&config).await?;
    let bus = Bus::connect(&config.bus)
        .await
        .context("connecting to the bus")?;
    let tickets = match config.ticket_store {
        TicketStoreKind::Memory => TicketStore::memory(),
        #[cfg(feature = "redis")]
        TicketStoreKind::Redis => TicketStore::redis(&config.redis_url, "decnet:")
            .await
            .context("connecting the Redis ticket store")?,
        #[cfg(not(feature = "redis"))]
        TicketStoreKind::Redis => {
            bail!("DECNET_TICKET_STORE=redis needs a build with the `redis` feature")
        }
    };
    let verifier = Arc::new(TokenVerifier::new(
        VerifierConfig {
            secret: secret.clone(),
            leeway_secs: config.jwt_leeway_secs,
            cache_ttl: Some(Duration::from_secs(10)),
        },
        repo.clone(),
    ));
    let hub = StreamHub::start(
        bus.clone(),
        repo.clone(),
        HubConfig {
            keepalive: config.keepalive,
            queue_max: config.queue_max,
            replay_capacity: config.replay,
            replay_grace: config.replay_grace,
            retry: config.retry,
            // With a 10 s verifier cache, a revocation is seen within 20 s (< 30 s).
            revalidate_every: Duration::from_secs(10),
            mode: config.hub_mode,
        },
    );
    let limiter = ConnectionLimiter::new(config.max_per_user, config.max_total);
    let metrics = Arc::new(metrics::Metrics::new(
        hub.clone(),
        bus.clone(),
        tickets.clone(),
        limiter.clone(),
    ));
    let state = Arc::new(server::AppState {
        hub,
        repo: repo.clone(),
        bus: bus.clone(),
        verifier,
        tickets,
        limiter,
        metrics,
        ticket_ttl: config.ticket_ttl,
        cors_origins: config.cors_origins.clone(),
    });

    let demo_task = if config.demo {
        demo::seed(&repo).await.context("seeding the demo data")?;
        let (token, _) = decnet_auth::mint_access_token(
            &secret,
            demo::DEMO_USER,
            Duration::from_secs(24 * 3600),
        )
        .context("minting the demo token")?;
        print_demo_banner(local, &token);
        Some(tokio::spawn(demo::generate(bus.clone(), repo.clone())))
    } else {
        tracing::info!(addr = %local, bus = %bus.kind(), "listening");
        None
    };

    server::run(listener, state, shutdown_signal(), config.shutdown_grace).await?;
    if let Some(task) = demo_task {
        task.abort();
    }
    bus.close().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Every stream is a socket: lift the soft open-files limit to the hard one.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open files limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open files limit"),
    }
}

fn print_demo_banner(addr: std::net::SocketAddr, token: &str) {
    let base = format!("http://{addr}");
    println!(
        "\n\
decnet-events demo is running on {base} (memory bus, memory database, synthetic events)\n\
\n\
  demo attacker: {attacker}\n\
  token (24 h):  {token}\n\
\n\
Console:  {base}/#token={token}&attacker={attacker}\n\
\n\
Mint a ticket, then open the stream (tickets are single-use, 60 s):\n\
\n\
  TOKEN={token}\n\
  TICKET=$(curl -s -X POST -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/auth/sse-ticket | sed 's/.*\"ticket\": *\"\\([^\"]*\\)\".*/\\1/')\n\
  curl -N \"{base}/api/v1/attackers/{attacker}/events?ticket=$TICKET\"\n",
        attacker = demo::DEMO_ATTACKER,
    );
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

async fn migrate(args: DbArgs) -> Result<ExitCode> {
    let _telemetry = telemetry::init();
    let repo = PgRepository::connect(PgConfig::new(args.database_url))
        .context("connecting to PostgreSQL")?;
    let applied = repo.migrate().await.context("applying migrations")?;
    if applied.is_empty() {
        println!("database schema is up to date");
    } else {
        println!("applied migrations: {applied:?}");
    }
    Ok(ExitCode::SUCCESS)
}

fn mint_token(args: &MintArgs) -> Result<ExitCode> {
    let (token, _) = decnet_auth::mint_access_token(
        args.jwt_secret.as_bytes(),
        &args.user,
        Duration::from_secs(args.ttl_secs),
    )
    .context("minting the token")?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

async fn publish(args: PublishArgs) -> Result<ExitCode> {
    let payload: serde_json::Value =
        serde_json::from_str(&args.payload).context("the payload is not JSON")?;
    let serde_json::Value::Object(payload) = payload else {
        bail!("the payload must be a JSON object");
    };
    let values = args.bus.values();
    let bus_config = decnet_bus::BusConfig::from_lookup(|k| values.get(k).cloned())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if matches!(bus_config.kind, BusKind::Memory | BusKind::Null) {
        bail!("publish needs a real bus: set DECNET_BUS_TYPE=nats or redis");
    }
    let bus = Bus::connect(&bus_config)
        .await
        .context("connecting to the bus")?;
    bus.publish(&args.topic, &args.event_type, payload)
        .await
        .context("publishing")?;
    bus.close().await;
    println!("published on {}", args.topic);
    Ok(ExitCode::SUCCESS)
}
