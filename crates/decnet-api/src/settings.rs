//! The one settings table: every `DECNET_*` variable decnet-events reads,
//! its default, its help, and how it feeds the library configs.
//!
//! Adding a setting is one entry in [`SETTINGS`], the field of the library
//! config it feeds, and a row of docs/OPERATIONS.md (a test checks that every
//! entry is documented there and that every documented default is the real
//! one). The binary builds its `serve` flags from this table, so a flag and
//! its variable can never drift apart.
//!
//! The table reads DECNET's own env file (`/opt/decnet/.env.local`) as it
//! is: DECNET's names are honoured with DECNET's meaning, every other
//! `DECNET_*` variable is ignored, and a bad value stops start-up with a
//! message naming the variable (all of them at once). No value that may be
//! a secret is ever repeated in a message.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use decnet_auth::TicketLimits;
use decnet_bus::{BusConfig, BusKind};
use decnet_stream::{HubConfig, LogConfig};

use crate::access_log::AccessLog;
use crate::app::AppConfig;
use crate::breaker::BreakerConfig;
use crate::cors::Cors;
use crate::proxy::UpstreamConfig;
use crate::serve::ServeConfig;

/// Which repository backend the binary builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// In-process maps (the embedded default).
    Memory,
    /// PostgreSQL (`DECNET_DATABASE_URL`, or a `postgres://` `DECNET_DB_URL`).
    Postgres,
    /// DECNET's SQLite file (read-only).
    Sqlite,
    /// DECNET's MySQL / MariaDB (read-only).
    Mysql,
}

/// Where the database is; the binary turns it into a backend config.
#[derive(Clone, PartialEq, Eq)]
pub struct DbSettings {
    /// The backend.
    pub kind: DbKind,
    /// PostgreSQL URL.
    pub postgres_url: Option<String>,
    /// SQLite file (`DECNET_DB_PATH`, a `sqlite:` `DECNET_DB_URL`, else
    /// `./decnet.db`).
    pub sqlite_path: PathBuf,
    /// MySQL URL (`DECNET_DB_URL` without its driver suffix, or built from
    /// `DECNET_DB_HOST/PORT/NAME/USER/PASSWORD`).
    pub mysql_url: Option<String>,
}

impl std::fmt::Debug for DbSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSettings")
            .field("kind", &self.kind)
            .field("postgres_url", &self.postgres_url.as_ref().map(|_| "<set>"))
            .field("sqlite_path", &self.sqlite_path)
            .field("mysql_url", &self.mysql_url.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Which ticket store the binary builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketStoreKind {
    /// In-process (one instance).
    Memory,
    /// Redis at `DECNET_REDIS_URL` (every instance).
    Redis,
}

/// How the binary formats its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Every setting, parsed: the configs of the libraries and the choices the
/// binary makes.
#[derive(Clone)]
pub struct Settings {
    /// Listen address.
    pub bind: SocketAddr,
    /// A separate listener for `/healthz`, `/readyz` and `/metrics`.
    pub ops_bind: Option<SocketAddr>,
    /// The HS256 secret; `None` means "generate one" (demo only).
    pub jwt_secret: Option<String>,
    /// `DECNET_DEVELOPER`: relaxes the secret's length rule.
    pub developer: bool,
    /// JWT clock leeway.
    pub jwt_leeway_secs: u64,
    /// The bus.
    pub bus: BusConfig,
    /// The database.
    pub db: DbSettings,
    /// `/stream`'s pollers (DECNET's fleet state file among them).
    pub logs: LogConfig,
    /// The ticket store.
    pub ticket_store: TicketStoreKind,
    /// Redis URL of the ticket store.
    pub redis_url: String,
    /// Live-ticket caps.
    pub ticket_limits: TicketLimits,
    /// Streams per user per instance.
    pub max_per_user: usize,
    /// Streams per instance.
    pub max_total: Option<usize>,
    /// The stream hub.
    pub hub: HubConfig,
    /// The HTTP application.
    pub app: AppConfig,
    /// How the repository's circuit breaker probes it.
    pub breaker: BreakerConfig,
    /// The listener and connection watchdogs.
    pub serve: ServeConfig,
    /// Log format.
    pub log_format: LogFormat,
    /// Run the embedded demo (`None`: only on the embedded default).
    pub demo: Option<bool>,
    /// TLS certificate chain and key (PEM files); `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// DECNET's API, for every request decnet-events does not serve itself
    /// (`DECNET_EVENTS_UPSTREAM`); `None`: those get 404.
    pub upstream: Option<UpstreamConfig>,
}

/// Where the TLS certificate chain and private key are (both PEM; the
/// binary loads them, and again on `SIGHUP`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            ops_bind: None,
            jwt_secret: None,
            developer: false,
            jwt_leeway_secs: 0,
            bus: BusConfig::default(),
            db: DbSettings {
                kind: DbKind::Memory,
                postgres_url: None,
                sqlite_path: PathBuf::from("decnet.db"),
                mysql_url: None,
            },
            logs: LogConfig {
                state_file: Some(PathBuf::from("decnet-state.json")),
                ..LogConfig::default()
            },
            ticket_store: TicketStoreKind::Memory,
            redis_url: decnet_bus::DEFAULT_REDIS_URL.to_owned(),
            ticket_limits: TicketLimits::default(),
            max_per_user: 5,
            max_total: None,
            hub: HubConfig {
                revalidate_every: crate::auth::REVALIDATE_EVERY,
                ..HubConfig::default()
            },
            app: AppConfig {
                cors: Cors::new(vec!["http://localhost:8080".to_owned()]),
                ..AppConfig::default()
            },
            breaker: BreakerConfig::default(),
            serve: ServeConfig::default(),
            log_format: LogFormat::Text,
            demo: None,
            tls: None,
            upstream: None,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("bind", &self.bind)
            .field("ops_bind", &self.ops_bind)
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("developer", &self.developer)
            .field("bus", &self.bus)
            .field("db", &self.db)
            .field("ticket_store", &self.ticket_store)
            .field("ticket_limits", &self.ticket_limits)
            .field("max_per_user", &self.max_per_user)
            .field("max_total", &self.max_total)
            .field("hub", &self.hub)
            .field("logs", &self.logs)
            .field("app", &self.app)
            .field("breaker", &self.breaker)
            .field("serve", &self.serve)
            .field("log_format", &self.log_format)
            .field("demo", &self.demo)
            .field("tls", &self.tls)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Whether nothing but in-process backends is configured (the embedded
    /// default: the demo may run and a secret may be generated).
    pub fn is_embedded(&self) -> bool {
        matches!(self.bus.kind, BusKind::Memory | BusKind::Null)
            && self.db.kind == DbKind::Memory
            && self.ticket_store == TicketStoreKind::Memory
    }

    /// Whether the embedded demo runs.
    pub fn demo(&self) -> bool {
        self.demo.unwrap_or_else(|| self.is_embedded())
    }
}

/// The env files DECNET reads, in its order: `.env.local`, then `.env`.
pub const ENV_FILES: [&str; 2] = [".env.local", ".env"];

/// Why an env file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct EnvFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong (a line number for a syntax error; never a value).
    pub message: String,
}

/// The variables of DECNET's env files, as DECNET (python-dotenv) reads
/// them: `KEY=value` lines, `#` comments, optional `export` and quotes.
/// With `explicit`, that file alone (it must exist); otherwise `.env.local`
/// then `.env` in `dir` when present, the first file to set a variable
/// winning. The caller lets the real environment win over every file, as
/// DECNET does (`load_dotenv` never overrides).
///
/// # Errors
///
/// [`EnvFileError`] naming the file: unreadable, or a line that is not
/// `KEY=value`.
pub fn env_files(
    dir: &std::path::Path,
    explicit: Option<&std::path::Path>,
) -> Result<std::collections::BTreeMap<String, String>, EnvFileError> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(path) => vec![path.to_path_buf()],
        None => ENV_FILES
            .iter()
            .map(|name| dir.join(name))
            .filter(|path| path.is_file())
            .collect(),
    };
    let mut vars = std::collections::BTreeMap::new();
    for path in candidates {
        let fail = |message: String| EnvFileError {
            path: path.clone(),
            message,
        };
        let entries =
            dotenvy::from_path_iter(&path).map_err(|e| fail(env_file_reason(&e, &path)))?;
        for entry in entries {
            let (key, value) = entry.map_err(|e| fail(env_file_reason(&e, &path)))?;
            vars.entry(key).or_insert(value);
        }
    }
    Ok(vars)
}

/// What is wrong with an env file, without repeating a line (it may hold a
/// secret): the number of the line the parser refused.
fn env_file_reason(error: &dotenvy::Error, path: &std::path::Path) -> String {
    match error {
        dotenvy::Error::LineParse(line, _) => {
            let number = std::fs::read_to_string(path).ok().and_then(|text| {
                text.lines()
                    .position(|l| l.trim() == line.trim())
                    .map(|i| i + 1)
            });
            match number {
                Some(n) => format!("line {n} is not KEY=value"),
                None => "a line is not KEY=value".to_owned(),
            }
        }
        dotenvy::Error::Io(io) => io.to_string(),
        _ => "cannot be read".to_owned(),
    }
}

/// One bad setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct SettingError {
    /// The variable (and flag) at fault.
    pub var: &'static str,
    /// What is wrong with it (never its value when that may be a secret).
    pub message: String,
}

/// One entry of [`SETTINGS`].
pub struct Setting {
    /// The environment variable.
    pub env: &'static str,
    /// The default, as documented (`""`: none).
    pub default: &'static str,
    /// One line of help (the `--flag` help and the docs row).
    pub help: &'static str,
    /// Whether the value may be a secret (hidden in `--help`, never echoed).
    pub secret: bool,
    apply: fn(&mut Value<'_>, &mut Settings),
}

impl std::fmt::Debug for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setting")
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

impl Setting {
    /// The `serve` flag of this variable: `DECNET_SSE_QUEUE_MAX` is
    /// `sse-queue-max`.
    pub fn flag(&self) -> String {
        self.env
            .strip_prefix("DECNET_")
            .unwrap_or(self.env)
            .to_ascii_lowercase()
            .replace('_', "-")
    }
}

/// The raw value of the setting being applied, and where errors go.
pub struct Value<'a> {
    env: &'static str,
    raw: Option<String>,
    secret: bool,
    errors: &'a mut Vec<SettingError>,
}

impl Value<'_> {
    fn fail(&mut self, message: impl Into<String>) {
        self.errors.push(SettingError {
            var: self.env,
            message: message.into(),
        });
    }

    fn shown(&self) -> String {
        if self.secret {
            "<redacted>".to_owned()
        } else {
            format!("{:?}", self.raw.as_deref().unwrap_or_default())
        }
    }

    /// The trimmed value, `None` when unset or empty.
    fn text(&self) -> Option<&str> {
        self.raw.as_deref()
    }

    fn number<T>(&mut self, min: T, max: T) -> Option<T>
    where
        T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display,
    {
        let raw = self.raw.clone()?;
        match raw.parse::<T>() {
            Ok(n) if n >= min && n <= max => Some(n),
            Ok(_) => {
                self.fail(format!(
                    "must be between {min} and {max}, got {}",
                    self.shown()
                ));
                None
            }
            Err(_) => {
                self.fail(format!("must be a number, got {}", self.shown()));
                None
            }
        }
    }

    fn secs(&mut self, min: u64, max: u64) -> Option<Duration> {
        self.number(min, max).map(Duration::from_secs)
    }

    /// DECNET's and our booleans: true/false, 1/0, yes/no, on/off.
    fn boolean(&mut self) -> Option<bool> {
        let raw = self.raw.clone()?;
        match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Some(true),
            "0" | "false" | "no" | "off" => Some(false),
            _ => {
                self.fail(format!("must be true or false, got {}", self.shown()));
                None
            }
        }
    }

    fn addr(&mut self) -> Option<SocketAddr> {
        let raw = self.raw.clone()?;
        match raw.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.fail(format!(
                    "must be host:port like 127.0.0.1:8000, got {}",
                    self.shown()
                ));
                None
            }
        }
    }

    fn choice<T: Copy>(&mut self, choices: &[(&str, T)]) -> Option<T> {
        let raw = self.raw.clone()?.to_ascii_lowercase();
        match choices.iter().find(|(name, _)| *name == raw) {
            Some((_, value)) => Some(*value),
            None => {
                let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                self.fail(format!(
                    "must be one of {}, got {}",
                    names.join(", "),
                    self.shown()
                ));
                None
            }
        }
    }
}

/// Variables read together in [`Settings::from_lookup`]'s final step, not by
/// their own entry (`apply` does nothing for them).
fn read_later(_: &mut Value<'_>, _: &mut Settings) {}

macro_rules! setting {
    ($env:expr, $default:expr, $help:expr, $apply:expr) => {
        Setting {
            env: $env,
            default: $default,
            help: $help,
            secret: false,
            apply: $apply,
        }
    };
    (secret $env:expr, $default:expr, $help:expr, $apply:expr) => {
        Setting {
            env: $env,
            default: $default,
            help: $help,
            secret: true,
            apply: $apply,
        }
    };
}

/// `DECNET_BIND`.
pub const ENV_BIND: &str = "DECNET_BIND";
/// `DECNET_JWT_SECRET`.
pub const ENV_JWT_SECRET: &str = "DECNET_JWT_SECRET";
/// `DECNET_DEVELOPER`.
pub const ENV_DEVELOPER: &str = "DECNET_DEVELOPER";
/// `DECNET_DB_TYPE`.
pub const ENV_DB_TYPE: &str = "DECNET_DB_TYPE";
/// `DECNET_DATABASE_URL`.
pub const ENV_DATABASE_URL: &str = "DECNET_DATABASE_URL";
/// `DECNET_DB_URL` (DECNET's).
pub const ENV_DB_URL: &str = "DECNET_DB_URL";
/// `DECNET_DB_PATH` (DECNET's).
pub const ENV_DB_PATH: &str = "DECNET_DB_PATH";
/// `DECNET_DB_HOST`.
pub const ENV_DB_HOST: &str = "DECNET_DB_HOST";
/// `DECNET_DB_PORT`.
pub const ENV_DB_PORT: &str = "DECNET_DB_PORT";
/// `DECNET_DB_NAME`.
pub const ENV_DB_NAME: &str = "DECNET_DB_NAME";
/// `DECNET_DB_USER`.
pub const ENV_DB_USER: &str = "DECNET_DB_USER";
/// `DECNET_DB_PASSWORD`.
pub const ENV_DB_PASSWORD: &str = "DECNET_DB_PASSWORD";
/// `DECNET_TICKET_STORE`.
pub const ENV_TICKET_STORE: &str = "DECNET_TICKET_STORE";
/// `DECNET_CORS_ORIGINS`.
pub const ENV_CORS_ORIGINS: &str = "DECNET_CORS_ORIGINS";
/// `DECNET_CORS_ALLOW_WILDCARD`.
pub const ENV_CORS_ALLOW_WILDCARD: &str = "DECNET_CORS_ALLOW_WILDCARD";
/// `DECNET_WEB_HOST` (DECNET's; the default CORS origin).
pub const ENV_WEB_HOST: &str = "DECNET_WEB_HOST";
/// `DECNET_WEB_PORT` (DECNET's; the default CORS origin).
pub const ENV_WEB_PORT: &str = "DECNET_WEB_PORT";
/// `DECNET_EVENTS_UPSTREAM`.
pub const ENV_UPSTREAM: &str = "DECNET_EVENTS_UPSTREAM";
/// `DECNET_EVENTS_UPSTREAM_CONNECT_TIMEOUT_SECS`.
pub const ENV_UPSTREAM_CONNECT_TIMEOUT_SECS: &str = "DECNET_EVENTS_UPSTREAM_CONNECT_TIMEOUT_SECS";
/// `DECNET_EVENTS_UPSTREAM_TIMEOUT_SECS`.
pub const ENV_UPSTREAM_TIMEOUT_SECS: &str = "DECNET_EVENTS_UPSTREAM_TIMEOUT_SECS";
/// `DECNET_EVENTS_UPSTREAM_IDLE_TIMEOUT_SECS`.
pub const ENV_UPSTREAM_IDLE_TIMEOUT_SECS: &str = "DECNET_EVENTS_UPSTREAM_IDLE_TIMEOUT_SECS";
/// `DECNET_TLS_CERT`.
pub const ENV_TLS_CERT: &str = "DECNET_TLS_CERT";
/// `DECNET_TLS_KEY`.
pub const ENV_TLS_KEY: &str = "DECNET_TLS_KEY";
/// `DECNET_DEMO`.
pub const ENV_DEMO: &str = "DECNET_DEMO";
/// `DECNET_SSE_HUB_MODE` (the benchmark ablation).
pub const ENV_SSE_HUB_MODE: &str = "DECNET_SSE_HUB_MODE";

/// Every setting, in the order `--help` and docs/OPERATIONS.md list them.
pub const SETTINGS: &[Setting] = &[
    setting!(ENV_BIND, "127.0.0.1:8000", "Listen address", |v, s| {
        if let Some(addr) = v.addr() {
            s.bind = addr;
        }
    }),
    setting!(
        "DECNET_OPS_BIND",
        "",
        "A separate listen address for /healthz, /readyz and /metrics (then /readyz and /metrics are not served on DECNET_BIND)",
        |v, s| {
            s.ops_bind = v.addr();
            s.app.ops_on_main = s.ops_bind.is_none();
        }
    ),
    setting!(secret ENV_JWT_SECRET, "", "HS256 secret shared with DECNET's API (at least 32 characters unless DECNET_DEVELOPER=true; generated in demo mode)", |v, s| {
        s.jwt_secret = v.text().map(str::to_owned);
    }),
    setting!(
        ENV_DEVELOPER,
        "false",
        "DECNET's developer mode: allows a JWT secret shorter than 32 characters; detailed 422s and maxOutput on /stream",
        |v, s| {
            if let Some(b) = v.boolean() {
                s.developer = b;
                s.app.developer = b;
                s.logs.developer = b;
            }
        }
    ),
    setting!(
        "DECNET_JWT_LEEWAY_SECS",
        "0",
        "JWT clock leeway for exp, nbf and iat",
        |v, s| {
            if let Some(n) = v.number(0u64, 3600) {
                s.jwt_leeway_secs = n;
            }
        }
    ),
    setting!(
        decnet_bus::ENV_BUS_TYPE,
        "memory",
        "Bus: unix (DECNET's broker), nats, redis, memory, null, or DECNET's fake (= memory); unix by default with a DECNET database",
        read_later
    ),
    setting!(
        decnet_bus::ENV_BUS_ENABLED,
        "true",
        "false forces the null bus (snapshots and keepalives only)",
        read_later
    ),
    setting!(
        decnet_bus::ENV_BUS_SOCKET,
        "",
        "DECNET's bus socket; unset: /run/decnet/bus.sock when /run/decnet is writable by this process, else ~/.decnet/bus.sock (DECNET's order)",
        read_later
    ),
    setting!(
        decnet_bus::ENV_NATS_URL,
        "nats://127.0.0.1:4222",
        "NATS server(s)",
        read_later
    ),
    setting!(secret decnet_bus::ENV_REDIS_URL, "redis://127.0.0.1:6379", "Redis, for the bus and the ticket store", |v, s| {
        if let Some(url) = v.text() {
            s.redis_url = url.to_owned();
        }
    }),
    setting!(
        ENV_DB_TYPE,
        "memory",
        "Repository: sqlite or mysql (DECNET's database, read-only), postgres, memory; sqlite by default when DECNET's bus or database is configured",
        read_later
    ),
    setting!(secret ENV_DATABASE_URL, "", "PostgreSQL URL", read_later),
    setting!(secret ENV_DB_URL, "", "DECNET's database URL (sqlite+aiosqlite:///path, mysql+asyncmy://user:pass@host:port/db, or postgres://)", read_later),
    setting!(
        ENV_DB_PATH,
        "./decnet.db",
        "DECNET's SQLite file",
        read_later
    ),
    setting!(ENV_DB_HOST, "localhost", "DECNET's MySQL host", read_later),
    setting!(ENV_DB_PORT, "3306", "DECNET's MySQL port", read_later),
    setting!(ENV_DB_NAME, "decnet", "DECNET's MySQL database", read_later),
    setting!(ENV_DB_USER, "decnet", "DECNET's MySQL user", read_later),
    setting!(secret ENV_DB_PASSWORD, "", "DECNET's MySQL password (required for MySQL without DECNET_DB_URL)", read_later),
    setting!(
        "DECNET_STATE_FILE",
        "./decnet-state.json",
        "DECNET's fleet state file (the /stream stats' fleet decky count)",
        |v, s| {
            if let Some(path) = v.text() {
                s.logs.state_file = Some(PathBuf::from(path));
            }
        }
    ),
    setting!(
        ENV_TICKET_STORE,
        "memory",
        "Ticket store: memory (one instance) or redis (any number of instances)",
        |v, s| {
            if let Some(kind) = v.choice(&[
                ("memory", TicketStoreKind::Memory),
                ("redis", TicketStoreKind::Redis),
            ]) {
                s.ticket_store = kind;
            }
        }
    ),
    setting!(
        "DECNET_SSE_TICKET_TTL",
        "60",
        "Ticket lifetime, seconds",
        |v, s| {
            if let Some(ttl) = v.secs(1, 86_400) {
                s.app.ticket_ttl = ttl;
            }
        }
    ),
    setting!(
        "DECNET_SSE_TICKETS_PER_USER",
        "20",
        "Live tickets a user may hold (429 beyond)",
        |v, s| {
            if let Some(n) = v.number(1usize, 1_000_000) {
                s.ticket_limits.per_user = n;
            }
        }
    ),
    setting!(
        "DECNET_SSE_TICKETS_MAX",
        "100000",
        "Live tickets in the store (503 beyond)",
        |v, s| {
            if let Some(n) = v.number(1usize, 100_000_000) {
                s.ticket_limits.total = n;
            }
        }
    ),
    setting!(
        "DECNET_SSE_MAX_PER_USER",
        "5",
        "Streams per user per instance, every kind together (429 beyond)",
        |v, s| {
            if let Some(n) = v.number(0usize, 1_000_000) {
                s.max_per_user = n;
            }
        }
    ),
    setting!(
        "DECNET_SSE_MAX_TOTAL",
        "",
        "Streams per instance (503 beyond; unlimited when unset)",
        |v, s| {
            s.max_total = v.number(1usize, 100_000_000);
        }
    ),
    setting!(
        "DECNET_SSE_OPEN_RATE",
        "5",
        "Stream opens per second per user, sustained (0 = unlimited; 429 beyond)",
        |v, s| {
            if let Some(n) = v.number(0.0f64, 1_000_000.0) {
                s.app.open_rate = n;
            }
        }
    ),
    setting!(
        "DECNET_SSE_OPEN_BURST",
        "20",
        "Stream opens a user may make at once before the rate applies",
        |v, s| {
            if let Some(n) = v.number(1u32, 1_000_000) {
                s.app.open_burst = n;
            }
        }
    ),
    setting!(
        "DECNET_SSE_OPEN_TIMEOUT_MS",
        "5000",
        "How long minting a ticket or opening a stream may take (credentials, lookup, snapshot) before it is a 503 with Retry-After, milliseconds",
        |v, s| {
            if let Some(ms) = v.number(50u64, 600_000) {
                s.app.open_timeout = Duration::from_millis(ms);
            }
        }
    ),
    setting!(
        "DECNET_SSE_REPO_PROBE_MS",
        "250",
        "How often the repository is probed (a cheap round trip); while a probe fails or times out, requests that need the database get 503 with Retry-After at once, milliseconds",
        |v, s| {
            if let Some(ms) = v.number(10u64, 60_000) {
                s.breaker.probe_every = Duration::from_millis(ms);
            }
        }
    ),
    setting!(
        "DECNET_SSE_REPO_PROBE_TIMEOUT_MS",
        "500",
        "How long a repository probe may take before the repository counts as down (a hung database), milliseconds",
        |v, s| {
            if let Some(ms) = v.number(1u64, 60_000) {
                s.breaker.probe_timeout = Duration::from_millis(ms);
            }
        }
    ),
    setting!(
        "DECNET_SSE_KEEPALIVE_SECS",
        "15",
        "Idle keepalive interval, seconds",
        |v, s| {
            if let Some(d) = v.secs(1, 3600) {
                s.hub.keepalive = d;
            }
        }
    ),
    setting!(
        "DECNET_SSE_QUEUE_MAX",
        "256",
        "Frames a stream may have queued; overflow sends resync + snapshot",
        |v, s| {
            if let Some(n) = v.number(1usize, 1_000_000) {
                s.hub.queue_max = n;
            }
        }
    ),
    setting!(
        "DECNET_SSE_QUEUE_MAX_BYTES",
        "8388608",
        "Bytes a stream may have queued; overflow sends resync + snapshot",
        |v, s| {
            if let Some(n) = v.number(1024usize, 1 << 34) {
                s.hub.queue_max_bytes = n;
            }
        }
    ),
    setting!(
        "DECNET_SSE_REPLAY",
        "256",
        "Live frames kept per stream key for resume (0 disables resume)",
        |v, s| {
            if let Some(n) = v.number(0usize, 1_000_000) {
                s.hub.replay_capacity = n;
            }
        }
    ),
    setting!(
        "DECNET_SSE_REPLAY_MAX_BYTES",
        "67108864",
        "Bytes kept by every replay ring together",
        |v, s| {
            if let Some(n) = v.number(0usize, 1 << 36) {
                s.hub.replay_max_bytes = n;
            }
        }
    ),
    setting!(
        "DECNET_SSE_REPLAY_GRACE_SECS",
        "300",
        "How long a ring outlives its key's last stream, seconds",
        |v, s| {
            if let Some(d) = v.secs(0, 86_400) {
                s.hub.replay_grace = d;
            }
        }
    ),
    setting!(
        "DECNET_SSE_RETRY_MS",
        "3000",
        "The retry: hint sent to clients, milliseconds",
        |v, s| {
            if let Some(n) = v.number(0u64, 3_600_000) {
                s.hub.retry = Duration::from_millis(n);
            }
        }
    ),
    setting!(
        "DECNET_SSE_SESSION_UNVERIFIED_SECS",
        "300",
        "How long a stream stays open while its session cannot be re-checked (the database is down), seconds",
        |v, s| {
            if let Some(d) = v.secs(1, 86_400) {
                s.hub.session_unknown_max = d;
            }
        }
    ),
    setting!(
        "DECNET_SSE_WRITE_TIMEOUT_SECS",
        "30",
        "A connection whose writes make no progress this long is dropped (also its TCP_USER_TIMEOUT), seconds",
        |v, s| {
            if let Some(d) = v.secs(1, 3600) {
                s.serve.write_timeout = d;
            }
        }
    ),
    setting!(
        "DECNET_SSE_SNDBUF",
        "65536",
        "Kernel send buffer of a connection that carries a stream, bytes (0 = the kernel's)",
        |v, s| {
            if let Some(n) = v.number(0usize, 1 << 30) {
                s.serve.stream_sndbuf = n;
            }
        }
    ),
    setting!(
        "DECNET_SSE_HTTP1_HANDOVER",
        "true",
        "HTTP/1.1 streams are written by the connection task after hyper read their request, without hyper's two 8 KiB buffers per connection (false: hyper writes every response)",
        |v, s| {
            if let Some(b) = v.boolean() {
                s.serve.http1_handover = b;
            }
        }
    ),
    setting!(
        "DECNET_HEADER_TIMEOUT_SECS",
        "10",
        "A request head (and the TLS handshake) must arrive within this, and an idle keep-alive connection is closed after it, seconds",
        |v, s| {
            if let Some(d) = v.secs(1, 3600) {
                s.serve.header_read_timeout = d;
            }
        }
    ),
    setting!(
        "DECNET_MAX_CONNECTIONS",
        "50000",
        "Connections held at once; more are closed at accept",
        |v, s| {
            if let Some(n) = v.number(1usize, 100_000_000) {
                s.serve.max_connections = n;
            }
        }
    ),
    setting!(
        "DECNET_MAX_CONNECTIONS_PER_IP",
        "4096",
        "Connections held at once per client address (raise it behind a reverse proxy)",
        |v, s| {
            if let Some(n) = v.number(1usize, 100_000_000) {
                s.serve.max_connections_per_ip = n;
            }
        }
    ),
    setting!(
        ENV_CORS_ORIGINS,
        "http://localhost:8080",
        "Comma-separated dashboard origins; defaults to DECNET's http://<DECNET_WEB_HOST>:<DECNET_WEB_PORT> (* is refused unless DECNET_CORS_ALLOW_WILDCARD=true)",
        read_later
    ),
    setting!(
        ENV_CORS_ALLOW_WILDCARD,
        "false",
        "Allow DECNET_CORS_ORIGINS=* (any origin, never with credentials)",
        read_later
    ),
    setting!(
        ENV_WEB_HOST,
        "127.0.0.1",
        "DECNET's dashboard host (only for the default CORS origin)",
        read_later
    ),
    setting!(
        ENV_WEB_PORT,
        "8080",
        "DECNET's dashboard port (only for the default CORS origin)",
        read_later
    ),
    setting!(
        ENV_UPSTREAM,
        "",
        "DECNET's API (http://host:port): every request decnet-events does not serve itself is forwarded there, so the dashboard needs one base URL",
        read_later
    ),
    setting!(
        ENV_UPSTREAM_CONNECT_TIMEOUT_SECS,
        "5",
        "Bound on connecting to DECNET_EVENTS_UPSTREAM, seconds (504 beyond)",
        read_later
    ),
    setting!(
        ENV_UPSTREAM_TIMEOUT_SECS,
        "60",
        "Bound on DECNET_EVENTS_UPSTREAM's response head, seconds (504 beyond)",
        read_later
    ),
    setting!(
        ENV_UPSTREAM_IDLE_TIMEOUT_SECS,
        "120",
        "Bound on every wait for a body chunk to or from DECNET_EVENTS_UPSTREAM, seconds (the transfer is cut beyond)",
        read_later
    ),
    setting!(
        ENV_TLS_CERT,
        "",
        "TLS certificate chain (PEM, leaf first); with DECNET_TLS_KEY serves HTTPS with HTTP/2 and HTTP/1.1 (re-read on SIGHUP)",
        read_later
    ),
    setting!(
        ENV_TLS_KEY,
        "",
        "TLS private key (PEM: PKCS#8, PKCS#1 or SEC1) for DECNET_TLS_CERT",
        read_later
    ),
    setting!(
        "DECNET_SHUTDOWN_GRACE_SECS",
        "10",
        "How long shutdown waits for connections to close, seconds",
        |v, s| {
            if let Some(d) = v.secs(0, 3600) {
                s.serve.shutdown_grace = d;
            }
        }
    ),
    setting!(
        "DECNET_ACCESS_LOG",
        "true",
        "Log every request (target decnet_events::access)",
        |v, s| {
            if let Some(b) = v.boolean() {
                s.app.access_log.enabled = b;
            }
        }
    ),
    setting!(
        "DECNET_ACCESS_LOG_SAMPLE",
        "1",
        "Log one request in N (errors always)",
        |v, s| {
            if let Some(n) = v.number(1u64, 1_000_000) {
                s.app.access_log =
                    AccessLog::new(s.app.access_log.enabled, n, s.app.access_log.skip.clone());
            }
        }
    ),
    setting!(
        "DECNET_ACCESS_LOG_SKIP",
        "",
        "Comma-separated route templates never logged (e.g. /healthz,/metrics)",
        |v, s| {
            if let Some(raw) = v.text() {
                let skip = raw
                    .split(',')
                    .map(|r| r.trim().to_owned())
                    .filter(|r| !r.is_empty())
                    .collect();
                s.app.access_log =
                    AccessLog::new(s.app.access_log.enabled, s.app.access_log.every, skip);
            }
        }
    ),
    setting!(
        "DECNET_LOG_FORMAT",
        "text",
        "Log format: text or json (one object per line)",
        |v, s| {
            if let Some(format) = v.choice(&[("text", LogFormat::Text), ("json", LogFormat::Json)])
            {
                s.log_format = format;
            }
        }
    ),
    setting!(
        ENV_DEMO,
        "auto",
        "Run the embedded demo: auto (only on the embedded default), true, false",
        |v, s| {
            if v.text().is_some_and(|t| t.eq_ignore_ascii_case("auto")) {
                s.demo = None;
            } else if let Some(b) = v.boolean() {
                s.demo = Some(b);
            }
        }
    ),
    #[cfg(feature = "ablation")]
    setting!(
        ENV_SSE_HUB_MODE,
        "shared",
        "shared, or per-connection (every stream subscribes on its own, as DECNET does: a benchmark ablation)",
        |v, s| {
            use decnet_stream::SubscriptionMode;
            if let Some(mode) = v.choice(&[
                ("shared", SubscriptionMode::Shared),
                ("per-connection", SubscriptionMode::PerConnection),
            ]) {
                s.hub.mode = mode;
            }
        }
    ),
    // Without the feature there is only the shared hub: a per-connection
    // request is refused, not silently served by the shared hub.
    #[cfg(not(feature = "ablation"))]
    setting!(
        ENV_SSE_HUB_MODE,
        "shared",
        "shared, or per-connection (every stream subscribes on its own, as DECNET does: a benchmark ablation)",
        |v, _s| {
            if let Some(raw) = v.text().map(str::to_owned)
                && raw != "shared"
            {
                v.fail(format!(
                    "must be shared in this build (per-connection needs the `ablation` feature), got {}",
                    v.shown()
                ));
            }
        }
    ),
];

/// Secrets DECNET refuses whatever the mode (lower-cased comparison).
const WEAK_SECRETS: [&str; 5] = [
    "fallback-secret-key-change-me",
    "admin",
    "secret",
    "password",
    "changeme",
];

impl Settings {
    /// Read and validate every setting through `lookup` (the binary passes
    /// its flags and the environment merged; tests pass a map). Values are
    /// trimmed; empty values count as unset. `HOME` is looked up too (the
    /// bus socket's last fallback is `~/.decnet/bus.sock`).
    ///
    /// # Errors
    ///
    /// Every bad variable, each naming the variable.
    pub fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, Vec<SettingError>> {
        Self::read(lookup, true)
    }

    /// As [`Settings::from_lookup`], for tools that sign nothing
    /// (`migrate`, `publish`, `healthcheck`): the JWT secret may be absent
    /// (a secret that is set must still be a strong one).
    ///
    /// # Errors
    ///
    /// Every bad variable, each naming the variable.
    pub fn for_tools(
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, Vec<SettingError>> {
        Self::read(lookup, false)
    }

    fn read(
        lookup: &dyn Fn(&str) -> Option<String>,
        need_secret: bool,
    ) -> Result<Settings, Vec<SettingError>> {
        let get = |var: &str| {
            lookup(var)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut errors = Vec::new();
        let mut settings = Settings::default();
        for setting in SETTINGS {
            let mut value = Value {
                env: setting.env,
                raw: get(setting.env),
                secret: setting.secret,
                errors: &mut errors,
            };
            (setting.apply)(&mut value, &mut settings);
        }
        finish(&get, &mut settings, &mut errors, need_secret);
        if errors.is_empty() {
            Ok(settings)
        } else {
            Err(errors)
        }
    }
}

fn fail(errors: &mut Vec<SettingError>, var: &'static str, message: impl Into<String>) {
    errors.push(SettingError {
        var,
        message: message.into(),
    });
}

/// The settings read together: database, bus, CORS, the secret's rules.
fn finish(
    get: &dyn Fn(&str) -> Option<String>,
    s: &mut Settings,
    errors: &mut Vec<SettingError>,
    need_secret: bool,
) {
    database(get, s, errors);
    // DECNET-shaped: DECNET's broker or database is configured.
    let decnet_shaped = matches!(s.db.kind, DbKind::Sqlite | DbKind::Mysql)
        || get(decnet_bus::ENV_BUS_SOCKET).is_some();
    let bus_lookup = |var: &str| {
        if var == decnet_bus::ENV_BUS_TYPE && get(var).is_none() && decnet_shaped {
            return Some("unix".to_owned());
        }
        get(var)
    };
    match BusConfig::from_lookup(bus_lookup) {
        Ok(bus) => s.bus = bus,
        Err(error) => fail(errors, error.var(), error.to_string()),
    }
    cors(get, s, errors);
    secret(s, errors, need_secret);
    tls(get, s, errors);
    upstream(get, s, errors);
}

fn upstream(
    get: &dyn Fn(&str) -> Option<String>,
    s: &mut Settings,
    errors: &mut Vec<SettingError>,
) {
    let mut timeout = |env: &'static str| {
        Value {
            env,
            raw: get(env),
            secret: false,
            errors: &mut *errors,
        }
        .secs(1, 86_400)
    };
    let connect = timeout(ENV_UPSTREAM_CONNECT_TIMEOUT_SECS);
    let response = timeout(ENV_UPSTREAM_TIMEOUT_SECS);
    let idle = timeout(ENV_UPSTREAM_IDLE_TIMEOUT_SECS);
    let Some(url) = get(ENV_UPSTREAM) else {
        return;
    };
    match UpstreamConfig::new(&url) {
        Ok(config) if config.authority.as_str().contains('@') => {
            fail(errors, ENV_UPSTREAM, "must not carry credentials");
        }
        Ok(mut config) => {
            config.connect_timeout = connect.unwrap_or(config.connect_timeout);
            config.response_timeout = response.unwrap_or(config.response_timeout);
            config.idle_timeout = idle.unwrap_or(config.idle_timeout);
            s.upstream = Some(config);
        }
        Err(error) => fail(
            errors,
            ENV_UPSTREAM,
            format!("{error} (http://host:port, got {url:?})"),
        ),
    }
}

fn tls(get: &dyn Fn(&str) -> Option<String>, s: &mut Settings, errors: &mut Vec<SettingError>) {
    match (get(ENV_TLS_CERT), get(ENV_TLS_KEY)) {
        (Some(cert), Some(key)) => {
            s.tls = Some(TlsFiles {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
            });
        }
        (Some(_), None) => fail(errors, ENV_TLS_KEY, "required with DECNET_TLS_CERT"),
        (None, Some(_)) => fail(errors, ENV_TLS_CERT, "required with DECNET_TLS_KEY"),
        (None, None) => {}
    }
}

fn database(
    get: &dyn Fn(&str) -> Option<String>,
    s: &mut Settings,
    errors: &mut Vec<SettingError>,
) {
    let url = get(ENV_DB_URL);
    // The scheme without its SQLAlchemy driver suffix (`mysql+asyncmy`).
    let url_kind = url.as_deref().map(|u| {
        let scheme = u.split(':').next().unwrap_or_default().to_ascii_lowercase();
        scheme.split('+').next().unwrap_or_default().to_owned()
    });
    let explicit = get(ENV_DB_TYPE).map(|t| t.to_ascii_lowercase());
    let kind = match explicit.as_deref() {
        Some("memory") => DbKind::Memory,
        Some("postgres" | "postgresql") => DbKind::Postgres,
        Some("sqlite") => DbKind::Sqlite,
        Some("mysql") => DbKind::Mysql,
        Some(_) => {
            fail(
                errors,
                ENV_DB_TYPE,
                "must be one of sqlite, mysql, postgres, memory",
            );
            DbKind::Memory
        }
        None => match url_kind.as_deref() {
            Some("sqlite") => DbKind::Sqlite,
            Some("mysql" | "mariadb") => DbKind::Mysql,
            Some("postgres" | "postgresql") => DbKind::Postgres,
            _ if get(ENV_DB_PATH).is_some() => DbKind::Sqlite,
            _ if get(ENV_DATABASE_URL).is_some() => DbKind::Postgres,
            // DECNET's own default, when DECNET's broker is what is configured.
            _ if get(decnet_bus::ENV_BUS_SOCKET).is_some()
                || get(decnet_bus::ENV_BUS_TYPE)
                    .is_some_and(|t| t.eq_ignore_ascii_case("unix")) =>
            {
                DbKind::Sqlite
            }
            _ => DbKind::Memory,
        },
    };
    s.db.kind = kind;
    match kind {
        DbKind::Memory => {}
        DbKind::Postgres => {
            let pg = get(ENV_DATABASE_URL).or_else(|| {
                url.clone()
                    .filter(|_| matches!(url_kind.as_deref(), Some("postgres" | "postgresql")))
            });
            match pg {
                Some(u)
                    if u.starts_with("postgres://")
                        || u.starts_with("postgresql://")
                        || u.contains('=') =>
                {
                    s.db.postgres_url = Some(u);
                }
                Some(_) => fail(
                    errors,
                    ENV_DATABASE_URL,
                    "must start with postgres:// or postgresql://",
                ),
                None => fail(
                    errors,
                    ENV_DATABASE_URL,
                    "is required when DECNET_DB_TYPE=postgres",
                ),
            }
        }
        DbKind::Sqlite => {
            if let Some(path) = get(ENV_DB_PATH) {
                s.db.sqlite_path = PathBuf::from(path);
            } else if let Some(u) = url
                .as_deref()
                .filter(|_| url_kind.as_deref() == Some("sqlite"))
            {
                match sqlite_path_of(u) {
                    Some(path) => s.db.sqlite_path = path,
                    None => fail(errors, ENV_DB_URL, "is a sqlite URL without a file path"),
                }
            }
        }
        DbKind::Mysql => {
            if let Some(u) = url
                .as_deref()
                .filter(|_| matches!(url_kind.as_deref(), Some("mysql" | "mariadb")))
            {
                // Drop the SQLAlchemy driver suffix (`mysql+asyncmy://`).
                let rest = u.split_once("://").map_or("", |(_, r)| r);
                s.db.mysql_url = Some(format!("mysql://{rest}"));
            } else {
                let host = get(ENV_DB_HOST).unwrap_or_else(|| "localhost".to_owned());
                let port = match get(ENV_DB_PORT) {
                    None => 3306,
                    Some(p) => match p.parse::<u16>() {
                        Ok(n) if n > 0 => n,
                        _ => {
                            fail(errors, ENV_DB_PORT, "must be a port between 1 and 65535");
                            3306
                        }
                    },
                };
                let name = get(ENV_DB_NAME).unwrap_or_else(|| "decnet".to_owned());
                let user = get(ENV_DB_USER).unwrap_or_else(|| "decnet".to_owned());
                match get(ENV_DB_PASSWORD) {
                    None => fail(
                        errors,
                        ENV_DB_PASSWORD,
                        "is required for MySQL without DECNET_DB_URL (DECNET's rule)",
                    ),
                    Some(password) => {
                        let enc = |t: &str| {
                            percent_encoding::utf8_percent_encode(
                                t,
                                percent_encoding::NON_ALPHANUMERIC,
                            )
                            .to_string()
                        };
                        s.db.mysql_url = Some(format!(
                            "mysql://{}:{}@{host}:{port}/{}",
                            enc(&user),
                            enc(&password),
                            enc(&name)
                        ));
                    }
                }
            }
        }
    }
}

/// The file of a SQLAlchemy SQLite URL: `sqlite+aiosqlite:////abs/path`
/// (absolute) and `sqlite:///rel/path` (relative); query strings dropped.
pub fn sqlite_path_of(url: &str) -> Option<PathBuf> {
    let (_, rest) = url.split_once(':')?;
    let rest = rest.split('?').next().unwrap_or_default();
    let path = rest
        .strip_prefix("///")
        .or_else(|| rest.strip_prefix("//"))?;
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

fn cors(get: &dyn Fn(&str) -> Option<String>, s: &mut Settings, errors: &mut Vec<SettingError>) {
    let allow_wildcard = match get(ENV_CORS_ALLOW_WILDCARD).map(|v| v.to_ascii_lowercase()) {
        None => false,
        Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => true,
        Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => false,
        Some(_) => {
            fail(errors, ENV_CORS_ALLOW_WILDCARD, "must be true or false");
            false
        }
    };
    let origins: Vec<String> = match get(ENV_CORS_ORIGINS) {
        Some(raw) => raw
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect(),
        None => {
            // DECNET's default: the dashboard's own address, wildcard binds
            // resolving to localhost.
            let host = get(ENV_WEB_HOST).unwrap_or_else(|| "127.0.0.1".to_owned());
            let host = if matches!(host.as_str(), "0.0.0.0" | "127.0.0.1" | "::") {
                "localhost".to_owned()
            } else {
                host
            };
            let port = get(ENV_WEB_PORT).unwrap_or_else(|| "8080".to_owned());
            vec![format!("http://{host}:{port}")]
        }
    };
    for origin in &origins {
        if origin == "*" {
            if !allow_wildcard {
                fail(
                    errors,
                    ENV_CORS_ORIGINS,
                    "\"*\" is refused, as DECNET refuses it (set DECNET_CORS_ALLOW_WILDCARD=true to allow any origin)",
                );
            }
        } else if !(origin.starts_with("http://") || origin.starts_with("https://")) {
            fail(
                errors,
                ENV_CORS_ORIGINS,
                format!("origin {origin:?} must start with http:// or https://"),
            );
        }
    }
    s.app.cors = Cors::new(origins);
}

fn secret(s: &mut Settings, errors: &mut Vec<SettingError>, need_secret: bool) {
    match &s.jwt_secret {
        None if need_secret && !s.is_embedded() => fail(
            errors,
            ENV_JWT_SECRET,
            "is required when a real bus, database or ticket store is configured",
        ),
        None => {}
        Some(secret) => {
            if WEAK_SECRETS.contains(&secret.to_ascii_lowercase().as_str()) {
                fail(
                    errors,
                    ENV_JWT_SECRET,
                    "is a known weak value (DECNET refuses it too)",
                );
            } else if secret.chars().count() < 32 && !s.developer {
                fail(
                    errors,
                    ENV_JWT_SECRET,
                    "must be at least 32 characters (DECNET's rule) unless DECNET_DEVELOPER=true",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const SECRET: &str = "a-secret-of-at-least-32-characters!!";

    fn parse(vars: &[(&str, &str)]) -> Result<Settings, Vec<SettingError>> {
        let mut map: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        map.entry("HOME".into())
            .or_insert_with(|| "/home/analyst".into());
        Settings::from_lookup(&move |k| map.get(k).cloned())
    }

    fn vars_in_error(vars: &[(&str, &str)]) -> Vec<&'static str> {
        parse(vars)
            .expect_err("must fail")
            .into_iter()
            .map(|e| e.var)
            .collect()
    }

    #[test]
    fn defaults_are_the_embedded_demo() {
        let s = parse(&[]).expect("defaults are valid");
        assert_eq!(s.bind, "127.0.0.1:8000".parse().expect("addr"));
        assert_eq!(s.bus.kind, BusKind::Memory);
        assert_eq!(s.db.kind, DbKind::Memory);
        assert!(s.is_embedded() && s.demo());
        assert_eq!(s.app.cors.origins(), ["http://localhost:8080"]);
        assert_eq!(s.hub.revalidate_every, crate::REVALIDATE_EVERY);
    }

    #[test]
    fn every_documented_default_is_the_real_default() {
        // Parsing each entry's documented default changes nothing.
        for setting in SETTINGS {
            if setting.default.is_empty() || setting.env == ENV_DB_PATH {
                continue;
            }
            let default = setting.default.trim_start_matches("./");
            let parsed = parse(&[(setting.env, default)])
                .unwrap_or_else(|e| panic!("{}={default}: {e:?}", setting.env));
            assert_eq!(
                format!("{parsed:?}"),
                format!("{:?}", parse(&[]).expect("defaults")),
                "{} documents {default:?} but that is not its default",
                setting.env
            );
        }
    }

    #[test]
    fn the_repository_probe_is_read_and_checked() {
        let s = parse(&[
            ("DECNET_SSE_REPO_PROBE_MS", "100"),
            ("DECNET_SSE_REPO_PROBE_TIMEOUT_MS", "300"),
        ])
        .expect("valid");
        assert_eq!(s.breaker.probe_every, Duration::from_millis(100));
        assert_eq!(s.breaker.probe_timeout, Duration::from_millis(300));
        for (var, bad) in [
            ("DECNET_SSE_REPO_PROBE_MS", "0"),
            ("DECNET_SSE_REPO_PROBE_MS", "60001"),
            ("DECNET_SSE_REPO_PROBE_TIMEOUT_MS", "0"),
            ("DECNET_SSE_REPO_PROBE_TIMEOUT_MS", "-5"),
            ("DECNET_SSE_REPO_PROBE_TIMEOUT_MS", "soon"),
        ] {
            let errors = parse(&[(var, bad)]).expect_err("must fail");
            assert_eq!(errors.len(), 1, "{var}={bad}: {errors:?}");
            assert_eq!(errors[0].var, var);
            assert!(
                errors[0].message.contains("between") || errors[0].message.contains("number"),
                "{var}={bad}: {}",
                errors[0].message
            );
        }
    }

    #[test]
    fn the_connection_settings_are_read_and_checked() {
        let s = parse(&[
            ("DECNET_HEADER_TIMEOUT_SECS", "3"),
            ("DECNET_SSE_HTTP1_HANDOVER", "false"),
        ])
        .expect("valid");
        assert_eq!(s.serve.header_read_timeout, Duration::from_secs(3));
        assert!(!s.serve.http1_handover);
        assert!(Settings::default().serve.http1_handover);
        for (var, bad) in [
            ("DECNET_HEADER_TIMEOUT_SECS", "0"),
            ("DECNET_HEADER_TIMEOUT_SECS", "3601"),
            ("DECNET_HEADER_TIMEOUT_SECS", "soon"),
            ("DECNET_SSE_HTTP1_HANDOVER", "maybe"),
        ] {
            let errors = parse(&[(var, bad)]).expect_err("must fail");
            assert_eq!(errors.len(), 1, "{var}={bad}: {errors:?}");
            assert_eq!(errors[0].var, var);
        }
    }

    /// Built without the ablation (the production build; `cargo xtask test`
    /// runs it in a step of its own, the workspace's tests having every
    /// feature): a per-connection hub is refused, not silently ignored.
    #[cfg(not(feature = "ablation"))]
    #[test]
    fn without_the_ablation_a_per_connection_hub_is_refused() {
        let errors = parse(&[(ENV_SSE_HUB_MODE, "per-connection")]).expect_err("refused");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].var, ENV_SSE_HUB_MODE);
        assert!(
            errors[0].message.contains("ablation"),
            "{}",
            errors[0].message
        );
        assert!(parse(&[(ENV_SSE_HUB_MODE, "shared")]).is_ok());
    }

    #[test]
    fn tools_need_no_secret_but_a_set_one_must_be_strong() {
        let postgres = [
            (ENV_DB_TYPE, "postgres"),
            (ENV_DATABASE_URL, "postgres://db/decnet"),
        ];
        let lookup = |vars: Vec<(&'static str, &'static str)>| {
            move |k: &str| {
                vars.iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert!(Settings::from_lookup(&lookup(postgres.to_vec())).is_err());
        assert!(Settings::for_tools(&lookup(postgres.to_vec())).is_ok());
        let mut weak = postgres.to_vec();
        weak.push((ENV_JWT_SECRET, "short"));
        assert!(Settings::for_tools(&lookup(weak)).is_err());
    }

    #[test]
    fn env_files_are_read_in_decnets_order() {
        let dir =
            std::env::temp_dir().join(format!("decnet-envfile-{}-{}", std::process::id(), line!()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(
            dir.join(".env.local"),
            "# DECNET\nDECNET_BIND=0.0.0.0:8000\nexport DECNET_DB_TYPE=sqlite\n",
        )
        .expect("write");
        std::fs::write(
            dir.join(".env"),
            "DECNET_BIND=127.0.0.1:1\nDECNET_WEB_PORT=\"9090\"\n",
        )
        .expect("write");
        let vars = env_files(&dir, None).expect("readable");
        assert_eq!(
            vars["DECNET_BIND"], "0.0.0.0:8000",
            ".env.local wins over .env"
        );
        assert_eq!(vars["DECNET_DB_TYPE"], "sqlite");
        assert_eq!(vars["DECNET_WEB_PORT"], "9090");
        std::fs::write(dir.join("bad"), "DECNET_OK=1\nthis is not a line\n").expect("write");
        let error = env_files(&dir, Some(&dir.join("bad"))).expect_err("bad line");
        assert!(error.to_string().contains("line 2"), "{error}");
        assert!(env_files(&dir, Some(&dir.join("missing"))).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tls_needs_both_files() {
        let s = parse(&[(ENV_TLS_CERT, "/etc/c.pem"), (ENV_TLS_KEY, "/etc/k.pem")])
            .expect("both files");
        assert_eq!(
            s.tls,
            Some(TlsFiles {
                cert: "/etc/c.pem".into(),
                key: "/etc/k.pem".into()
            })
        );
        assert_eq!(vars_in_error(&[(ENV_TLS_CERT, "/c")]), vec![ENV_TLS_KEY]);
        assert_eq!(vars_in_error(&[(ENV_TLS_KEY, "/k")]), vec![ENV_TLS_CERT]);
        assert_eq!(parse(&[]).expect("defaults").tls, None);
    }

    #[test]
    fn upstream_url_and_timeouts() {
        let s = parse(&[
            (ENV_UPSTREAM, "http://127.0.0.1:8001"),
            (ENV_UPSTREAM_TIMEOUT_SECS, "7"),
        ])
        .expect("upstream");
        let upstream = s.upstream.expect("set");
        assert_eq!(upstream.authority.as_str(), "127.0.0.1:8001");
        assert_eq!(upstream.response_timeout, Duration::from_secs(7));
        assert_eq!(upstream.connect_timeout, Duration::from_secs(5));
        assert_eq!(
            vars_in_error(&[(ENV_UPSTREAM, "https://x:1")]),
            vec![ENV_UPSTREAM]
        );
        assert_eq!(
            vars_in_error(&[(ENV_UPSTREAM, "http://u:p@x:1")]),
            vec![ENV_UPSTREAM]
        );
        assert_eq!(
            vars_in_error(&[(ENV_UPSTREAM_IDLE_TIMEOUT_SECS, "0")]),
            vec![ENV_UPSTREAM_IDLE_TIMEOUT_SECS]
        );
    }

    #[test]
    fn every_bad_variable_is_reported() {
        assert_eq!(
            vars_in_error(&[
                ("DECNET_SSE_MAX_PER_USER", "five"),
                ("DECNET_SSE_KEEPALIVE_SECS", "0"),
                (ENV_BIND, "nowhere"),
                (ENV_DB_TYPE, "oracle"),
            ]),
            vec![
                ENV_BIND,
                "DECNET_SSE_MAX_PER_USER",
                "DECNET_SSE_KEEPALIVE_SECS",
                ENV_DB_TYPE
            ]
        );
        assert_eq!(
            vars_in_error(&[(decnet_bus::ENV_BUS_TYPE, "kafka")]),
            vec![decnet_bus::ENV_BUS_TYPE]
        );
        assert_eq!(
            vars_in_error(&[(ENV_TICKET_STORE, "disk")]),
            vec![ENV_TICKET_STORE]
        );
        assert_eq!(
            vars_in_error(&[(ENV_CORS_ORIGINS, "example.com")]),
            vec![ENV_CORS_ORIGINS]
        );
        assert_eq!(vars_in_error(&[(ENV_DEMO, "maybe")]), vec![ENV_DEMO]);
    }

    #[test]
    fn cors_wildcard_is_refused_unless_opted_in() {
        assert_eq!(
            vars_in_error(&[(ENV_CORS_ORIGINS, "*")]),
            vec![ENV_CORS_ORIGINS]
        );
        assert_eq!(
            vars_in_error(&[(ENV_CORS_ORIGINS, "https://a.example, *")]),
            vec![ENV_CORS_ORIGINS]
        );
        let s =
            parse(&[(ENV_CORS_ORIGINS, "*"), (ENV_CORS_ALLOW_WILDCARD, "true")]).expect("opted in");
        assert_eq!(s.app.cors.origins(), ["*"]);
        let s = parse(&[(ENV_WEB_HOST, "dash.example"), (ENV_WEB_PORT, "9090")]).expect("valid");
        assert_eq!(s.app.cors.origins(), ["http://dash.example:9090"]);
    }

    #[test]
    fn decnets_secret_rule() {
        let db = [
            (ENV_DB_TYPE, "postgres"),
            (ENV_DATABASE_URL, "postgres://x/y"),
        ];
        let with = |secret: &str, developer: &str| {
            let mut vars = db.to_vec();
            vars.push((ENV_JWT_SECRET, secret));
            vars.push((ENV_DEVELOPER, developer));
            parse(&vars)
                .map(|_| ())
                .map_err(|e| e.into_iter().map(|e| e.var).collect::<Vec<_>>())
        };
        assert_eq!(with("short", "false"), Err(vec![ENV_JWT_SECRET]));
        assert_eq!(with("short", "true"), Ok(()));
        assert_eq!(with("ChangeMe", "true"), Err(vec![ENV_JWT_SECRET]));
        assert_eq!(with(SECRET, "false"), Ok(()));
        assert_eq!(vars_in_error(&db), vec![ENV_JWT_SECRET]);
        let err = parse(&[(ENV_JWT_SECRET, "hunter2")])
            .err()
            .unwrap_or_default();
        assert!(
            err.iter().all(|e| !e.message.contains("hunter2")),
            "{err:?}"
        );
    }

    #[test]
    fn decnet_shaped_defaults() {
        // DECNET's env file: sqlite database, no bus type: the unix bus.
        let s = parse(&[(ENV_DB_TYPE, "sqlite"), (ENV_JWT_SECRET, SECRET)]).expect("valid");
        assert_eq!((s.db.kind, s.bus.kind), (DbKind::Sqlite, BusKind::Unix));
        assert_eq!(s.db.sqlite_path, PathBuf::from("decnet.db"));
        assert!(!s.demo());
        let s =
            parse(&[(decnet_bus::ENV_BUS_TYPE, "unix"), (ENV_JWT_SECRET, SECRET)]).expect("valid");
        assert_eq!(s.db.kind, DbKind::Sqlite);
        let s = parse(&[
            (ENV_DB_URL, "sqlite+aiosqlite:////opt/decnet/decnet.db"),
            (ENV_JWT_SECRET, SECRET),
        ])
        .expect("valid");
        assert_eq!(s.db.sqlite_path, PathBuf::from("/opt/decnet/decnet.db"));
        let s = parse(&[
            (ENV_DB_PATH, "/var/lib/decnet.db"),
            (ENV_JWT_SECRET, SECRET),
        ])
        .expect("valid");
        assert_eq!(
            (s.db.kind, s.db.sqlite_path.clone()),
            (DbKind::Sqlite, PathBuf::from("/var/lib/decnet.db"))
        );
        // DECNET_BUS_TYPE=fake is our memory bus.
        let s = parse(&[(decnet_bus::ENV_BUS_TYPE, "fake")]).expect("valid");
        assert_eq!(s.bus.kind, BusKind::Memory);
    }

    #[test]
    fn mysql_from_a_url_or_decnets_components() {
        let s = parse(&[
            (ENV_DB_URL, "mysql+asyncmy://u:p%40ss@db:3307/dec"),
            (ENV_JWT_SECRET, SECRET),
        ])
        .expect("valid");
        assert_eq!(s.db.kind, DbKind::Mysql);
        assert_eq!(
            s.db.mysql_url.as_deref(),
            Some("mysql://u:p%40ss@db:3307/dec")
        );
        let s = parse(&[
            (ENV_DB_TYPE, "mysql"),
            (ENV_DB_PASSWORD, "p w"),
            (ENV_JWT_SECRET, SECRET),
        ])
        .expect("valid");
        assert_eq!(
            s.db.mysql_url.as_deref(),
            Some("mysql://decnet:p%20w@localhost:3306/decnet")
        );
        assert_eq!(
            vars_in_error(&[(ENV_DB_TYPE, "mysql"), (ENV_JWT_SECRET, SECRET)]),
            vec![ENV_DB_PASSWORD]
        );
        assert_eq!(
            vars_in_error(&[
                (ENV_DB_TYPE, "mysql"),
                (ENV_DB_PASSWORD, "x"),
                (ENV_DB_PORT, "99999"),
                (ENV_JWT_SECRET, SECRET)
            ]),
            vec![ENV_DB_PORT]
        );
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("p%20w") && !shown.contains(SECRET),
            "{shown}"
        );
    }

    #[test]
    fn flags_are_derived_from_the_variable() {
        let flags: Vec<String> = SETTINGS.iter().map(Setting::flag).collect();
        assert!(flags.contains(&"sse-queue-max".to_owned()));
        assert!(flags.contains(&"bind".to_owned()));
        let mut unique = flags.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), flags.len(), "two settings share a flag");
    }

    #[test]
    fn sqlite_urls() {
        assert_eq!(
            sqlite_path_of("sqlite+aiosqlite:////abs/x.db"),
            Some(PathBuf::from("/abs/x.db"))
        );
        assert_eq!(
            sqlite_path_of("sqlite:///rel/x.db"),
            Some(PathBuf::from("rel/x.db"))
        );
        assert_eq!(
            sqlite_path_of("sqlite:///x.db?mode=ro"),
            Some(PathBuf::from("x.db"))
        );
        assert_eq!(sqlite_path_of("sqlite://"), None);
        assert_eq!(sqlite_path_of("sqlite:///:memory:"), None);
    }
}
