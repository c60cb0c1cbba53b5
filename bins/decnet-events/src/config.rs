//! Configuration: every `DECNET_*` variable (each also a `serve` flag), parsed
//! and validated once, before anything starts.
//!
//! The seam is [`Config::from_lookup`]: the binary passes the merged flags and
//! environment, tests pass a map. Every bad variable is reported, not just the
//! first, and the process exits with `EX_USAGE` (64) before binding a port.

use std::net::SocketAddr;
use std::time::Duration;

use decnet_bus::{BusConfig, BusKind};

/// `DECNET_BIND`: listen address.
pub(crate) const ENV_BIND: &str = "DECNET_BIND";
/// `DECNET_JWT_SECRET`: the HS256 secret shared with DECNET's API.
pub(crate) const ENV_JWT_SECRET: &str = "DECNET_JWT_SECRET";
/// `DECNET_BUS_TYPE`: memory | nats | redis | null.
pub(crate) const ENV_BUS_TYPE: &str = decnet_bus::ENV_BUS_TYPE;
/// `DECNET_BUS_ENABLED`: false forces the null bus.
pub(crate) const ENV_BUS_ENABLED: &str = decnet_bus::ENV_BUS_ENABLED;
/// `DECNET_NATS_URL`.
pub(crate) const ENV_NATS_URL: &str = decnet_bus::ENV_NATS_URL;
/// `DECNET_REDIS_URL` (bus and ticket store).
pub(crate) const ENV_REDIS_URL: &str = decnet_bus::ENV_REDIS_URL;
/// `DECNET_DB_TYPE`: memory | postgres.
pub(crate) const ENV_DB_TYPE: &str = "DECNET_DB_TYPE";
/// `DECNET_DATABASE_URL`.
pub(crate) const ENV_DATABASE_URL: &str = "DECNET_DATABASE_URL";
/// `DECNET_TICKET_STORE`: memory | redis.
pub(crate) const ENV_TICKET_STORE: &str = "DECNET_TICKET_STORE";
/// `DECNET_SSE_MAX_PER_USER` (5).
pub(crate) const ENV_SSE_MAX_PER_USER: &str = "DECNET_SSE_MAX_PER_USER";
/// `DECNET_SSE_MAX_TOTAL` (unlimited).
pub(crate) const ENV_SSE_MAX_TOTAL: &str = "DECNET_SSE_MAX_TOTAL";
/// `DECNET_SSE_KEEPALIVE_SECS` (15).
pub(crate) const ENV_SSE_KEEPALIVE_SECS: &str = "DECNET_SSE_KEEPALIVE_SECS";
/// `DECNET_SSE_QUEUE_MAX` (256).
pub(crate) const ENV_SSE_QUEUE_MAX: &str = "DECNET_SSE_QUEUE_MAX";
/// `DECNET_SSE_TICKET_TTL` (60).
pub(crate) const ENV_SSE_TICKET_TTL: &str = "DECNET_SSE_TICKET_TTL";
/// `DECNET_SSE_REPLAY` (256 frames per attacker).
pub(crate) const ENV_SSE_REPLAY: &str = "DECNET_SSE_REPLAY";
/// `DECNET_SSE_REPLAY_GRACE_SECS` (300).
pub(crate) const ENV_SSE_REPLAY_GRACE_SECS: &str = "DECNET_SSE_REPLAY_GRACE_SECS";
/// `DECNET_SSE_RETRY_MS` (3000): the `retry:` hint sent to clients.
pub(crate) const ENV_SSE_RETRY_MS: &str = "DECNET_SSE_RETRY_MS";
/// `DECNET_JWT_LEEWAY_SECS` (0).
pub(crate) const ENV_JWT_LEEWAY_SECS: &str = "DECNET_JWT_LEEWAY_SECS";
/// `DECNET_CORS_ORIGINS`: comma-separated allowed origins.
pub(crate) const ENV_CORS_ORIGINS: &str = "DECNET_CORS_ORIGINS";
/// `DECNET_SHUTDOWN_GRACE_SECS` (10): how long shutdown waits for connections.
pub(crate) const ENV_SHUTDOWN_GRACE_SECS: &str = "DECNET_SHUTDOWN_GRACE_SECS";
/// `DECNET_SSE_HUB_MODE`: shared (default) | per-connection (benchmark ablation).
pub(crate) const ENV_SSE_HUB_MODE: &str = "DECNET_SSE_HUB_MODE";
/// `DECNET_DEMO`: auto (default) | true | false.
pub(crate) const ENV_DEMO: &str = "DECNET_DEMO";

/// Which repository backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DbKind {
    /// In-process maps (the embedded default).
    Memory,
    /// PostgreSQL at `DECNET_DATABASE_URL`.
    Postgres,
}

/// Which ticket store to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TicketStoreKind {
    /// In-process (single instance).
    Memory,
    /// Redis at `DECNET_REDIS_URL` (shared by every instance).
    Redis,
}

/// One bad setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub(crate) struct ConfigError {
    /// The variable (and flag) at fault.
    pub(crate) var: &'static str,
    /// What is wrong with it (never its value when that may be a secret).
    pub(crate) message: String,
}

/// The validated configuration of `decnet-events serve`.
#[derive(Clone)]
pub(crate) struct Config {
    /// Listen address.
    pub(crate) bind: SocketAddr,
    /// JWT secret; `None` means "generate one" (demo mode only).
    pub(crate) jwt_secret: Option<String>,
    /// Bus settings.
    pub(crate) bus: BusConfig,
    /// Repository backend.
    pub(crate) db: DbKind,
    /// PostgreSQL URL.
    pub(crate) database_url: Option<String>,
    /// Ticket store backend.
    pub(crate) ticket_store: TicketStoreKind,
    /// Redis URL for the ticket store.
    pub(crate) redis_url: String,
    /// Streams per user per instance.
    pub(crate) max_per_user: usize,
    /// Streams per instance.
    pub(crate) max_total: Option<usize>,
    /// Idle keepalive interval.
    pub(crate) keepalive: Duration,
    /// Per-stream queue bound.
    pub(crate) queue_max: usize,
    /// Ticket lifetime.
    pub(crate) ticket_ttl: Duration,
    /// Replay frames kept per attacker.
    pub(crate) replay: usize,
    /// How long a replay ring outlives its last stream.
    pub(crate) replay_grace: Duration,
    /// The `retry:` hint.
    pub(crate) retry: Duration,
    /// JWT clock leeway.
    pub(crate) jwt_leeway_secs: u64,
    /// Allowed CORS origins (`*` allows any).
    pub(crate) cors_origins: Vec<String>,
    /// Connection drain timeout at shutdown.
    pub(crate) shutdown_grace: Duration,
    /// Whether the embedded demo (seed data, synthetic events) runs.
    pub(crate) demo: bool,
    /// Shared hub subscriptions, or one set per stream (benchmarks only).
    pub(crate) hub_mode: decnet_stream::SubscriptionMode,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("bus", &self.bus)
            .field("db", &self.db)
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("ticket_store", &self.ticket_store)
            .field(
                "redis_url",
                &(!self.redis_url.is_empty()).then_some("<set>"),
            )
            .field("max_per_user", &self.max_per_user)
            .field("max_total", &self.max_total)
            .field("keepalive", &self.keepalive)
            .field("queue_max", &self.queue_max)
            .field("ticket_ttl", &self.ticket_ttl)
            .field("replay", &self.replay)
            .field("replay_grace", &self.replay_grace)
            .field("retry", &self.retry)
            .field("jwt_leeway_secs", &self.jwt_leeway_secs)
            .field("cors_origins", &self.cors_origins)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("demo", &self.demo)
            .field("hub_mode", &self.hub_mode)
            .finish()
    }
}

struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
}

impl Reader<'_> {
    fn get(&self, var: &str) -> Option<String> {
        (self.lookup)(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn fail(&mut self, var: &'static str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            var,
            message: message.into(),
        });
    }

    fn number<T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display>(
        &mut self,
        var: &'static str,
        default: T,
        min: T,
        max: T,
    ) -> T {
        let Some(raw) = self.get(var) else {
            return default;
        };
        match raw.parse::<T>() {
            Ok(n) if n >= min && n <= max => n,
            Ok(_) => {
                self.fail(var, format!("must be between {min} and {max}, got {raw:?}"));
                default
            }
            Err(_) => {
                self.fail(var, format!("must be a whole number, got {raw:?}"));
                default
            }
        }
    }

    fn boolean(&mut self, var: &'static str) -> Option<bool> {
        let raw = self.get(var)?;
        match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Some(true),
            "0" | "false" | "no" | "off" => Some(false),
            "auto" => None,
            _ => {
                self.fail(var, format!("must be true, false or auto, got {raw:?}"));
                None
            }
        }
    }
}

impl Config {
    /// Read and validate every setting through `lookup`.
    ///
    /// # Errors
    ///
    /// Every bad variable, each naming the variable.
    pub(crate) fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<ConfigError>> {
        let mut r = Reader {
            lookup,
            errors: Vec::new(),
        };
        let bind = match r.get(ENV_BIND) {
            None => SocketAddr::from(([127, 0, 0, 1], 8000)),
            Some(raw) => raw.parse().unwrap_or_else(|_| {
                r.fail(
                    ENV_BIND,
                    format!("must be host:port like 127.0.0.1:8000, got {raw:?}"),
                );
                SocketAddr::from(([127, 0, 0, 1], 8000))
            }),
        };
        let bus = match BusConfig::from_lookup(|k| (r.lookup)(k)) {
            Ok(bus) => bus,
            Err(error) => {
                r.fail(error.var(), error.to_string());
                BusConfig::default()
            }
        };
        let db = match r
            .get(ENV_DB_TYPE)
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("memory") => DbKind::Memory,
            Some("postgres" | "postgresql") => DbKind::Postgres,
            Some(other) => {
                r.fail(
                    ENV_DB_TYPE,
                    format!("must be memory or postgres, got {other:?}"),
                );
                DbKind::Memory
            }
        };
        let database_url = r.get(ENV_DATABASE_URL);
        match (&database_url, db) {
            (None, DbKind::Postgres) => {
                r.fail(ENV_DATABASE_URL, "is required when DECNET_DB_TYPE=postgres")
            }
            (Some(url), DbKind::Postgres)
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) =>
            {
                r.fail(
                    ENV_DATABASE_URL,
                    "must start with postgres:// or postgresql://",
                )
            }
            _ => {}
        }
        let ticket_store = match r
            .get(ENV_TICKET_STORE)
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("memory") => TicketStoreKind::Memory,
            Some("redis") if cfg!(feature = "redis") => TicketStoreKind::Redis,
            Some("redis") => {
                r.fail(
                    ENV_TICKET_STORE,
                    "redis needs a build with the `redis` feature",
                );
                TicketStoreKind::Memory
            }
            Some(other) => {
                r.fail(
                    ENV_TICKET_STORE,
                    format!("must be memory or redis, got {other:?}"),
                );
                TicketStoreKind::Memory
            }
        };
        let redis_url = r
            .get(ENV_REDIS_URL)
            .unwrap_or_else(|| decnet_bus::DEFAULT_REDIS_URL.to_owned());
        let max_per_user = r.number(ENV_SSE_MAX_PER_USER, 5usize, 1, 1_000_000);
        let max_total = r
            .get(ENV_SSE_MAX_TOTAL)
            .map(|_| r.number(ENV_SSE_MAX_TOTAL, 0usize, 1, 10_000_000));
        let keepalive = Duration::from_secs(r.number(ENV_SSE_KEEPALIVE_SECS, 15u64, 1, 3600));
        let queue_max = r.number(ENV_SSE_QUEUE_MAX, 256usize, 1, 1_000_000);
        let ticket_ttl = Duration::from_secs(r.number(ENV_SSE_TICKET_TTL, 60u64, 1, 86_400));
        let replay = r.number(ENV_SSE_REPLAY, 256usize, 0, 1_000_000);
        let replay_grace =
            Duration::from_secs(r.number(ENV_SSE_REPLAY_GRACE_SECS, 300u64, 0, 86_400));
        let retry = Duration::from_millis(r.number(ENV_SSE_RETRY_MS, 3000u64, 0, 3_600_000));
        let jwt_leeway_secs = r.number(ENV_JWT_LEEWAY_SECS, 0u64, 0, 3600);
        let shutdown_grace = Duration::from_secs(r.number(ENV_SHUTDOWN_GRACE_SECS, 10u64, 0, 3600));
        let cors_origins: Vec<String> = r
            .get(ENV_CORS_ORIGINS)
            .map(|raw| {
                raw.split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_owned())
                    .filter(|o| !o.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        for origin in &cors_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                let message =
                    format!("origin {origin:?} must be * or start with http:// or https://");
                r.fail(ENV_CORS_ORIGINS, message);
            }
        }
        let hub_mode = match r
            .get(ENV_SSE_HUB_MODE)
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("shared") => decnet_stream::SubscriptionMode::Shared,
            Some("per-connection" | "per_connection") => {
                decnet_stream::SubscriptionMode::PerConnection
            }
            Some(other) => {
                r.fail(
                    ENV_SSE_HUB_MODE,
                    format!("must be shared or per-connection, got {other:?}"),
                );
                decnet_stream::SubscriptionMode::Shared
            }
        };
        let jwt_secret = r.get(ENV_JWT_SECRET);
        // The null bus is no real backend: it keeps the embedded default.
        let embedded = matches!(bus.kind, BusKind::Memory | BusKind::Null)
            && db == DbKind::Memory
            && ticket_store == TicketStoreKind::Memory;
        let demo = match r.boolean(ENV_DEMO) {
            Some(demo) => demo,
            None => embedded,
        };
        if jwt_secret.is_none() && !embedded {
            r.fail(
                ENV_JWT_SECRET,
                "is required when a real bus, database or ticket store is configured",
            );
        }
        if r.errors.is_empty() {
            Ok(Config {
                bind,
                jwt_secret,
                bus,
                db,
                database_url,
                ticket_store,
                redis_url,
                max_per_user,
                max_total,
                keepalive,
                queue_max,
                ticket_ttl,
                replay,
                replay_grace,
                retry,
                jwt_leeway_secs,
                cors_origins,
                shutdown_grace,
                demo,
                hub_mode,
            })
        } else {
            Err(r.errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, Vec<ConfigError>> {
        let map: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(&move |k| map.get(k).cloned())
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
        let config = parse(&[]).expect("defaults are valid");
        assert_eq!(config.bind, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(config.bus.kind, BusKind::Memory);
        assert_eq!(config.db, DbKind::Memory);
        assert_eq!(config.max_per_user, 5);
        assert_eq!(config.keepalive, Duration::from_secs(15));
        assert_eq!(config.queue_max, 256);
        assert_eq!(config.ticket_ttl, Duration::from_secs(60));
        assert_eq!(config.replay_grace, Duration::from_secs(300));
        assert_eq!(config.jwt_leeway_secs, 0);
        assert!(config.demo);
        assert!(config.jwt_secret.is_none());
    }

    #[test]
    fn every_bad_variable_is_reported() {
        assert_eq!(
            vars_in_error(&[
                (ENV_SSE_MAX_PER_USER, "five"),
                (ENV_SSE_KEEPALIVE_SECS, "0"),
                (ENV_BIND, "nowhere"),
                (ENV_DB_TYPE, "mysql"),
            ]),
            vec![
                ENV_BIND,
                ENV_DB_TYPE,
                ENV_SSE_MAX_PER_USER,
                ENV_SSE_KEEPALIVE_SECS
            ]
        );
        assert_eq!(
            vars_in_error(&[(ENV_BUS_TYPE, "kafka")]),
            vec![ENV_BUS_TYPE]
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
    fn real_backends_need_a_secret_and_turn_the_demo_off() {
        assert_eq!(
            vars_in_error(&[
                (ENV_DB_TYPE, "postgres"),
                (ENV_DATABASE_URL, "postgres://x/y")
            ]),
            vec![ENV_JWT_SECRET]
        );
        assert_eq!(
            vars_in_error(&[(ENV_DB_TYPE, "postgres"), (ENV_JWT_SECRET, "s")]),
            vec![ENV_DATABASE_URL]
        );
        let config = parse(&[
            (ENV_DB_TYPE, "postgres"),
            (ENV_DATABASE_URL, "postgres://x/y"),
            (ENV_JWT_SECRET, "s"),
            (
                ENV_CORS_ORIGINS,
                "https://dash.example, http://localhost:5173/",
            ),
        ])
        .expect("valid");
        assert!(!config.demo);
        assert_eq!(
            config.cors_origins,
            ["https://dash.example", "http://localhost:5173"]
        );
    }

    #[test]
    fn bus_disabled_forces_null() {
        let config = parse(&[(ENV_BUS_ENABLED, "false"), (ENV_BUS_TYPE, "memory")]).unwrap();
        assert_eq!(config.bus.kind, BusKind::Null);
    }

    #[test]
    fn secret_is_redacted_in_debug() {
        let config = parse(&[(ENV_JWT_SECRET, "hunter2-hunter2")]).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
