//! `decnet-events`: DECNET's live streams, served.
//!
//! Subcommands: `serve` (the default), `migrate`, `mint-token`, `healthcheck`,
//! `publish`.
//! The `serve` flags are built from decnet-api's settings table, one per
//! `DECNET_*` variable. With no configuration, `serve` runs the embedded demo
//! (memory bus, memory database, memory tickets, a generated secret, a
//! seeded attacker and synthetic events for every stream kind) and prints a
//! token and copy-paste commands.

#![allow(clippy::print_stdout, reason = "a CLI prints its results for people")]

mod backends;
mod telemetry;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Arg, ArgMatches, Command, arg};
use decnet_api::settings::{SETTINGS, Settings};
use decnet_api::{App, Backends, Tls};

/// `EX_USAGE` from sysexits.h: invalid configuration.
const EX_USAGE: u8 = 64;

/// One `--flag` per setting, each also read from its variable.
fn setting_args() -> Vec<Arg> {
    SETTINGS
        .iter()
        .map(|s| {
            let help = if s.default.is_empty() {
                s.help.to_owned()
            } else {
                format!("{} [default: {}]", s.help, s.default)
            };
            Arg::new(s.env)
                .long(s.flag())
                .env(s.env)
                .value_name("VALUE")
                .help(help)
                .hide_env_values(s.secret)
        })
        .collect()
}

fn cli() -> Command {
    let settings = setting_args();
    let env_file = arg!(--"env-file" <PATH> "Read DECNET's env file from PATH instead of ./.env.local and ./.env (the real environment wins over it)").global(true);
    let with_settings = |name: &'static str, about: &'static str| {
        Command::new(name).about(about).args(settings.clone())
    };
    Command::new("decnet-events")
        .version(env!("CARGO_PKG_VERSION"))
        .about("DECNET's live streams (Server-Sent Events) for the analyst dashboard")
        .args(settings.clone())
        .arg(env_file)
        .args_conflicts_with_subcommands(true)
        .subcommand(with_settings("serve", "Serve the HTTP API (the default when no subcommand is given)"))
        .subcommand(with_settings("migrate", "Apply the embedded migrations to the PostgreSQL database (never to DECNET's own)"))
        .subcommand(
            with_settings("mint-token", "Print a JWT for a user, signed with DECNET_JWT_SECRET (operators and tests)")
                .arg(arg!(--user <UUID> "The user's uuid (the `uuid` claim)").required(true))
                .arg(arg!(--"ttl-secs" <SECS> "Token lifetime in seconds").default_value("3600").value_parser(clap::value_parser!(u64))),
        )
        .subcommand(with_settings("healthcheck", "Exit 0 when /readyz answers 200 (the container health check; probes DECNET_OPS_BIND when set, else DECNET_BIND)"))
        .subcommand(
            with_settings("publish", "Publish one event on the configured bus")
                .arg(arg!(<topic> "Topic, e.g. attacker.observation.motor.input_modality"))
                .arg(arg!([payload] "Payload: a JSON object").default_value("{}"))
                .arg(arg!(--type <TYPE> "The envelope's `type`").default_value("")),
        )
}

fn main() -> ExitCode {
    let matches = cli().get_matches();
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
        match matches.subcommand() {
            None => serve(&matches).await,
            Some(("serve", args)) => serve(args).await,
            Some(("migrate", args)) => migrate(args).await,
            Some(("mint-token", args)) => mint_token(args).await,
            Some(("healthcheck", args)) => healthcheck(args).await,
            Some(("publish", args)) => publish(args).await,
            Some((other, _)) => bail!("unknown subcommand {other}"),
        }
    });
    match result {
        Ok(code) => code,
        Err(error) if error.is::<Usage>() => ExitCode::from(EX_USAGE),
        Err(error) => {
            eprintln!("decnet-events: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// A configuration error, already reported variable by variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration")]
struct Usage;

/// The settings from the flags and the environment (clap merged them);
/// every bad variable is printed before the [`Usage`] error. Only `serve`
/// and `mint-token` need the JWT secret (`signs`).
fn settings(args: &ArgMatches, signs: bool) -> Result<Settings> {
    let explicit = args
        .get_one::<String>("env-file")
        .map(std::path::PathBuf::from);
    let file =
        decnet_api::settings::env_files(Path::new("."), explicit.as_deref()).map_err(|error| {
            eprintln!("decnet-events: invalid configuration: {error}");
            Usage
        })?;
    let lookup = |var: &str| match var {
        "HOME" => std::env::var("HOME").ok(),
        _ => args.get_one::<String>(var).or(file.get(var)).cloned(),
    };
    let read = if signs {
        Settings::from_lookup
    } else {
        Settings::for_tools
    };
    read(&lookup).map_err(|errors| {
        for error in &errors {
            eprintln!("decnet-events: invalid configuration: {error}");
        }
        Usage.into()
    })
}

async fn serve(args: &ArgMatches) -> Result<ExitCode> {
    let settings = settings(args, true)?;
    let _telemetry = telemetry::init(settings.log_format);
    tracing::info!(?settings, "starting");
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open files limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open files limit"),
    }
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .with_context(|| format!("binding {}", settings.bind))?;
    let ops_listener = match settings.ops_bind {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr} (DECNET_OPS_BIND)"))?,
        ),
        None => None,
    };
    let local = listener.local_addr().context("local address")?;

    let secret = match &settings.jwt_secret {
        Some(secret) => secret.clone().into_bytes(),
        None => decnet_auth::generate_secret()?.into_bytes(),
    };
    let repo = backends::repository(&settings).await?;
    let bus = decnet_bus::Bus::connect(&settings.bus)
        .await
        .context("connecting to the bus")?;
    let tickets = backends::tickets(&settings, &secret).await?;
    let app = App::from_settings(
        &settings,
        Backends {
            repository: repo.reader.clone(),
            bus: bus.clone(),
            tickets,
            secret: secret.clone(),
        },
    );
    let mut serve_config = settings.serve.clone();
    if let Some(files) = &settings.tls {
        let tls = Tls::load(&files.cert, &files.key).context("loading the TLS certificate")?;
        // The handler is installed here, before anything is served: a
        // SIGHUP that came before the task first ran would otherwise take
        // the default action and end the process.
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hangup) => {
                tokio::spawn(reload_on_sighup(hangup, tls.clone()));
            }
            Err(error) => tracing::warn!(
                %error,
                "cannot listen for SIGHUP: the certificate will not be reloaded"
            ),
        }
        serve_config.tls = Some(tls);
    }

    let tls = serve_config.tls.is_some();
    let _demo = match (settings.demo(), repo.writer) {
        (true, Some(writer)) => {
            let demo = decnet_api::demo::start(writer, bus.clone(), &secret).await?;
            println!("{}", decnet_api::demo::banner(local, tls, &demo.token));
            Some(demo)
        }
        _ => {
            tracing::info!(addr = %local, bus = %bus.kind(), tls, "listening");
            None
        }
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let ops = ops_listener.map(|listener| {
        let mut stopped = stopped.clone();
        let stopped = async move { drop(stopped.wait_for(|s| *s).await) };
        tokio::spawn(decnet_api::serve(
            listener,
            app.ops(),
            settings.serve.clone(),
            stopped,
        ))
    });
    decnet_api::serve(listener, app, serve_config, shutdown_signal()).await?;
    stop.send_replace(true);
    if let Some(ops) = ops {
        let _ = ops.await;
    }
    bus.close().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Re-read the certificate and key on every SIGHUP (after a renewal); a
/// bad pair is logged and the old one stays in use.
async fn reload_on_sighup(mut hangup: tokio::signal::unix::Signal, tls: std::sync::Arc<Tls>) {
    while hangup.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
            Err(error) => {
                tracing::error!(error = %error, "SIGHUP: TLS certificate not reloaded; the previous one stays in use")
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
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
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

async fn migrate(args: &ArgMatches) -> Result<ExitCode> {
    let settings = settings(args, false)?;
    let _telemetry = telemetry::init(settings.log_format);
    let applied = backends::migrate(&settings).await?;
    if applied.is_empty() {
        println!("database schema is up to date");
    } else {
        println!("applied migrations: {applied:?}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn healthcheck(args: &ArgMatches) -> Result<ExitCode> {
    let settings = settings(args, false)?;
    let addr = decnet_api::healthcheck::probe_target(&settings)?;
    decnet_api::healthcheck::probe_ready(addr, Duration::from_secs(5)).await?;
    println!("ready");
    Ok(ExitCode::SUCCESS)
}

async fn mint_token(args: &ArgMatches) -> Result<ExitCode> {
    let Some(secret) = settings(args, false)?.jwt_secret else {
        eprintln!(
            "decnet-events: invalid configuration: DECNET_JWT_SECRET: mint-token signs with it (--jwt-secret)"
        );
        return Err(Usage.into());
    };
    let user = args.get_one::<String>("user").context("--user")?;
    let ttl = args.get_one::<u64>("ttl-secs").copied().unwrap_or(3600);
    let (token, _) =
        decnet_auth::mint_access_token(secret.as_bytes(), user, Duration::from_secs(ttl))
            .context("minting the token")?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

async fn publish(args: &ArgMatches) -> Result<ExitCode> {
    let settings = settings(args, false)?;
    let topic = args.get_one::<String>("topic").context("topic")?;
    let raw = args
        .get_one::<String>("payload")
        .map_or("{}", String::as_str);
    let payload: serde_json::Value =
        serde_json::from_str(raw).context("the payload is not JSON")?;
    let serde_json::Value::Object(payload) = payload else {
        bail!("the payload must be a JSON object");
    };
    if matches!(
        settings.bus.kind,
        decnet_bus::BusKind::Memory | decnet_bus::BusKind::Null
    ) {
        bail!("publish needs a real bus: set DECNET_BUS_TYPE=unix, nats or redis");
    }
    let bus = decnet_bus::Bus::connect(&settings.bus)
        .await
        .context("connecting to the bus")?;
    let event_type = args.get_one::<String>("type").map_or("", String::as_str);
    // A broker that is just (re)connecting: wait for it, boundedly.
    let mut state = bus.watch_state();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|s| *s == decnet_bus::ConnectionState::Connected),
    )
    .await;
    bus.publish(topic, event_type, payload)
        .await
        .context("publishing")?;
    bus.close().await;
    println!("published on {topic}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cli_is_well_formed() {
        super::cli().debug_assert();
    }

    #[test]
    fn every_setting_is_a_flag_of_serve() {
        let serve = super::cli();
        let serve = serve.find_subcommand("serve").expect("serve");
        for setting in decnet_api::settings::SETTINGS {
            let flag = setting.flag();
            assert!(
                serve
                    .get_arguments()
                    .any(|a| a.get_long() == Some(flag.as_str())),
                "--{flag}"
            );
        }
    }
}
