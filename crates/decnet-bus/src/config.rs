//! [`BusConfig`] and its environment mapping ([`BusConfig::from_lookup`]).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::ConfigError;
use crate::event::DEFAULT_MAX_MESSAGE_BYTES;
use crate::memory::DEFAULT_QUEUE_CAPACITY;

/// Which backend to run: `memory` | `nats` | `redis` | `null` | `unix`, or
/// DECNET's `fake` (= `memory`).
pub const ENV_BUS_TYPE: &str = "DECNET_BUS_TYPE";
/// `false` / `0` / `no` / `off` forces the null bus, whatever [`ENV_BUS_TYPE`] says.
pub const ENV_BUS_ENABLED: &str = "DECNET_BUS_ENABLED";
/// The NATS server URL (default [`DEFAULT_NATS_URL`]).
pub const ENV_NATS_URL: &str = "DECNET_NATS_URL";
/// The Redis server URL (default [`DEFAULT_REDIS_URL`]).
pub const ENV_REDIS_URL: &str = "DECNET_REDIS_URL";
/// The socket of DECNET's bus broker, for the `unix` backend (default: see
/// [`resolve_socket_path`]).
pub const ENV_BUS_SOCKET: &str = "DECNET_BUS_SOCKET";
/// The home directory, for DECNET's last socket fallback `~/.decnet/bus.sock`.
const ENV_HOME: &str = "HOME";

/// NATS URL used when [`ENV_NATS_URL`] is unset.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Redis URL used when [`ENV_REDIS_URL`] is unset.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The socket DECNET's systemd unit gives its broker; the `unix` backend's
/// path when [`BusConfig::socket_path`] is `None`.
pub const DEFAULT_SOCKET_PATH: &str = "/run/decnet/bus.sock";
/// The runtime directory DECNET probes before using [`DEFAULT_SOCKET_PATH`].
pub const RUNTIME_DIR: &str = "/run/decnet";
/// DECNET's per-user socket fallback, relative to the home directory.
const USER_SOCKET_PATH: &str = ".decnet/bus.sock";

/// The backend a [`BusConfig`] selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum BusKind {
    /// In-process ([`crate::MemoryBus`]); the default.
    #[default]
    Memory,
    /// NATS (feature `nats`).
    Nats,
    /// Redis pub/sub (feature `redis`).
    Redis,
    /// Nothing ([`crate::NullBus`]).
    Null,
    /// A client of DECNET's own UNIX-socket broker (`UnixBus`, Unix only).
    Unix,
    /// An embedder's own backend, by its name (never chosen by configuration:
    /// [`BusConfig::from_lookup`] and [`crate::Bus::connect`] do not produce it).
    Custom(&'static str),
}

impl BusKind {
    /// The configuration spelling: `memory`, `nats`, `redis`, `null`,
    /// `unix`, or a custom backend's name.
    pub fn as_str(self) -> &'static str {
        match self {
            BusKind::Memory => "memory",
            BusKind::Nats => "nats",
            BusKind::Redis => "redis",
            BusKind::Null => "null",
            BusKind::Unix => "unix",
            BusKind::Custom(name) => name,
        }
    }

    /// Whether this is the null bus: nothing to subscribe to, always "ready".
    pub fn is_null(self) -> bool {
        self == BusKind::Null
    }
}

impl fmt::Display for BusKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to build a [`crate::Bus`] with [`crate::Bus::connect`].
#[derive(Clone, PartialEq, Eq)]
pub struct BusConfig {
    /// The backend.
    pub kind: BusKind,
    /// NATS server URL(s), comma-separated (`None`: [`DEFAULT_NATS_URL`]).
    pub nats_url: Option<String>,
    /// Redis URL (`None`: [`DEFAULT_REDIS_URL`]).
    pub redis_url: Option<String>,
    /// Socket of DECNET's broker for the `unix` backend (`None`:
    /// [`DEFAULT_SOCKET_PATH`]). [`BusConfig::from_lookup`] fills it with
    /// [`resolve_socket_path`] when the kind is `unix`.
    pub socket_path: Option<PathBuf>,
    /// Per-subscriber queue capacity of the memory, Redis and unix backends.
    pub queue_capacity: usize,
    /// Largest envelope accepted when publishing and decoding.
    pub max_message_bytes: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            kind: BusKind::Memory,
            nats_url: None,
            redis_url: None,
            socket_path: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

impl fmt::Debug for BusConfig {
    // URLs may embed credentials: show only whether they are set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusConfig")
            .field("kind", &self.kind)
            .field("nats_url", &self.nats_url.as_ref().map(|_| "<set>"))
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("socket_path", &self.socket_path)
            .field("queue_capacity", &self.queue_capacity)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish()
    }
}

impl BusConfig {
    /// Read the bus settings through `lookup` (the binary passes
    /// `|k| std::env::var(k).ok()`; tests pass a map). Libraries never read
    /// the environment themselves.
    ///
    /// - [`ENV_BUS_TYPE`]: `memory` (default) | `nats` | `redis` | `null` |
    ///   `unix`, and DECNET's `fake` meaning `memory`; case-insensitive.
    ///   The default stays `memory` here: an application that wants
    ///   DECNET's default (`unix`) decides so itself;
    /// - [`ENV_BUS_ENABLED`]: `false`/`0`/`no`/`off` forces `null`;
    ///   `true`/`1`/`yes`/`on` changes nothing;
    /// - [`ENV_NATS_URL`], [`ENV_REDIS_URL`]: defaults [`DEFAULT_NATS_URL`],
    ///   [`DEFAULT_REDIS_URL`];
    /// - for `unix` only, [`ENV_BUS_SOCKET`] and `HOME`, resolved into
    ///   [`BusConfig::socket_path`] by [`resolve_socket_path`] (which probes
    ///   whether [`RUNTIME_DIR`] is a writable directory).
    ///
    /// Empty values count as unset. `queue_capacity` and `max_message_bytes`
    /// keep their defaults.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the variable: an unknown bus type or enabled
    /// flag, a backend this build lacks (feature `nats` / `redis`, or `unix`
    /// off Unix), a URL that is blank inside or has the wrong scheme (the
    /// URL itself is not repeated, it may hold a password), or a `unix`
    /// socket path that cannot be resolved ([`ConfigError::Unresolved`]).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<BusConfig, ConfigError> {
        let get = |var: &str| {
            lookup(var)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut kind = match get(ENV_BUS_TYPE) {
            None => BusKind::Memory,
            Some(value) => match value.to_ascii_lowercase().as_str() {
                "memory" => BusKind::Memory,
                "nats" => BusKind::Nats,
                "redis" => BusKind::Redis,
                "null" => BusKind::Null,
                "unix" => BusKind::Unix,
                "fake" => BusKind::Memory,
                _ => {
                    return Err(ConfigError::InvalidValue {
                        var: ENV_BUS_TYPE,
                        value,
                        expected: "one of memory, nats, redis, null, unix, fake",
                    });
                }
            },
        };
        if let Some(value) = get(ENV_BUS_ENABLED) {
            match value.to_ascii_lowercase().as_str() {
                "false" | "0" | "no" | "off" => kind = BusKind::Null,
                "true" | "1" | "yes" | "on" => {}
                _ => {
                    return Err(ConfigError::InvalidValue {
                        var: ENV_BUS_ENABLED,
                        value,
                        expected: "true or false",
                    });
                }
            }
        }
        let nats_url = get(ENV_NATS_URL).unwrap_or_else(|| DEFAULT_NATS_URL.to_owned());
        let redis_url = get(ENV_REDIS_URL).unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned());
        if kind == BusKind::Nats {
            if !cfg!(feature = "nats") {
                return Err(ConfigError::FeatureDisabled {
                    var: ENV_BUS_TYPE,
                    value: "nats".into(),
                    feature: "nats",
                });
            }
            if nats_url.contains(char::is_whitespace) {
                return Err(invalid_url(ENV_NATS_URL, "a URL without spaces"));
            }
        }
        if kind == BusKind::Redis {
            if !cfg!(feature = "redis") {
                return Err(ConfigError::FeatureDisabled {
                    var: ENV_BUS_TYPE,
                    value: "redis".into(),
                    feature: "redis",
                });
            }
            let schemes = ["redis://", "rediss://", "unix://", "redis+unix://"];
            if !schemes.iter().any(|s| redis_url.starts_with(s))
                || redis_url.contains(char::is_whitespace)
            {
                return Err(invalid_url(
                    ENV_REDIS_URL,
                    "a redis://, rediss:// or unix:// URL",
                ));
            }
        }
        let socket_path = if kind == BusKind::Unix {
            Some(unix_socket_path(&lookup)?)
        } else {
            None
        };
        Ok(BusConfig {
            kind,
            nats_url: Some(nats_url),
            redis_url: Some(redis_url),
            socket_path,
            ..BusConfig::default()
        })
    }
}

#[cfg(unix)]
fn unix_socket_path(lookup: &impl Fn(&str) -> Option<String>) -> Result<PathBuf, ConfigError> {
    resolve_socket_path(lookup, crate::unix_bus::runtime_dir_is_writable)
}

#[cfg(not(unix))]
fn unix_socket_path(_lookup: &impl Fn(&str) -> Option<String>) -> Result<PathBuf, ConfigError> {
    Err(ConfigError::InvalidValue {
        var: ENV_BUS_TYPE,
        value: "unix".into(),
        expected: "a backend this platform has (unix needs Unix-domain sockets)",
    })
}

/// The socket of DECNET's broker, resolved as DECNET's clients do.
///
/// 1. [`ENV_BUS_SOCKET`] if set and non-empty, verbatim;
/// 2. [`DEFAULT_SOCKET_PATH`] if `runtime_dir_writable(`[`RUNTIME_DIR`]`)`
///    (DECNET's quirk: a directory the process cannot write, such as
///    `/run/decnet` mode 0755 for a service under another user, skips to
///    step 3, where no broker listens: such a service must set
///    [`ENV_BUS_SOCKET`]);
/// 3. `$HOME/.decnet/bus.sock`.
///
/// Pure: the environment comes through `lookup` and the filesystem probe is
/// `runtime_dir_writable` (the `unix` backend's `runtime_dir_is_writable`
/// is the real one: a directory, and `access(W_OK)` for the real uid, as
/// Python's `os.access`).
///
/// # Errors
///
/// [`ConfigError::Unresolved`] naming [`ENV_BUS_SOCKET`] when step 3 is
/// reached and `HOME` is unset or empty.
pub fn resolve_socket_path(
    lookup: impl Fn(&str) -> Option<String>,
    runtime_dir_writable: impl Fn(&Path) -> bool,
) -> Result<PathBuf, ConfigError> {
    if let Some(explicit) = lookup(ENV_BUS_SOCKET).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(explicit));
    }
    if runtime_dir_writable(Path::new(RUNTIME_DIR)) {
        return Ok(PathBuf::from(DEFAULT_SOCKET_PATH));
    }
    match lookup(ENV_HOME).filter(|v| !v.is_empty()) {
        Some(home) => Ok(Path::new(&home).join(USER_SOCKET_PATH)),
        None => Err(ConfigError::Unresolved {
            var: ENV_BUS_SOCKET,
            reason: "neither /run/decnet is a writable directory nor HOME is set \
                     (DECNET's fallbacks /run/decnet/bus.sock and ~/.decnet/bus.sock)",
        }),
    }
}

fn invalid_url(var: &'static str, expected: &'static str) -> ConfigError {
    ConfigError::InvalidValue {
        var,
        value: "<redacted>".into(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<BusConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        BusConfig::from_lookup(|k| map.get(k).cloned())
    }

    fn kind(vars: &[(&str, &str)]) -> BusKind {
        match parse(vars) {
            Ok(config) => config.kind,
            Err(err) => panic!("{vars:?}: {err}"),
        }
    }

    fn check_err(vars: &[(&str, &str)], var: &str) {
        match parse(vars) {
            Ok(config) => panic!("{vars:?} parsed: {config:?}"),
            Err(err) => {
                assert_eq!(err.var(), var);
                assert!(err.to_string().contains(var), "{err}");
            }
        }
    }

    #[test]
    fn defaults() {
        let config = parse(&[]).unwrap_or_default();
        assert_eq!(config.kind, BusKind::Memory);
        assert_eq!(config.nats_url.as_deref(), Some(DEFAULT_NATS_URL));
        assert_eq!(config.redis_url.as_deref(), Some(DEFAULT_REDIS_URL));
        assert_eq!(config.queue_capacity, 1024);
        assert_eq!(config.max_message_bytes, 1 << 20);
        assert_eq!(kind(&[(ENV_BUS_TYPE, "")]), BusKind::Memory);
    }

    #[test]
    fn kinds() {
        assert_eq!(kind(&[(ENV_BUS_TYPE, "memory")]), BusKind::Memory);
        assert_eq!(kind(&[(ENV_BUS_TYPE, " NULL ")]), BusKind::Null);
        if cfg!(feature = "nats") {
            assert_eq!(kind(&[(ENV_BUS_TYPE, "nats")]), BusKind::Nats);
        } else {
            check_err(&[(ENV_BUS_TYPE, "nats")], ENV_BUS_TYPE);
        }
        if cfg!(feature = "redis") {
            assert_eq!(kind(&[(ENV_BUS_TYPE, "Redis")]), BusKind::Redis);
        } else {
            check_err(&[(ENV_BUS_TYPE, "redis")], ENV_BUS_TYPE);
        }
    }

    #[test]
    fn enabled_flag() {
        for off in ["false", "0", "no", "off", "FALSE"] {
            assert_eq!(
                kind(&[(ENV_BUS_TYPE, "memory"), (ENV_BUS_ENABLED, off)]),
                BusKind::Null
            );
        }
        for on in ["true", "1", "yes", "on"] {
            assert_eq!(
                kind(&[(ENV_BUS_TYPE, "memory"), (ENV_BUS_ENABLED, on)]),
                BusKind::Memory
            );
        }
        // Disabled wins even over a backend this build lacks.
        assert_eq!(
            kind(&[(ENV_BUS_TYPE, "null"), (ENV_BUS_ENABLED, "false")]),
            BusKind::Null
        );
    }

    #[test]
    fn urls() {
        let config = parse(&[
            (ENV_NATS_URL, "nats://n:4333"),
            (ENV_REDIS_URL, "redis://r:6380/1"),
        ])
        .unwrap_or_default();
        assert_eq!(config.nats_url.as_deref(), Some("nats://n:4333"));
        assert_eq!(config.redis_url.as_deref(), Some("redis://r:6380/1"));
    }

    #[test]
    fn errors_name_the_variable() {
        check_err(&[(ENV_BUS_TYPE, "kafka")], ENV_BUS_TYPE);
        check_err(&[(ENV_BUS_ENABLED, "maybe")], ENV_BUS_ENABLED);
        #[cfg(feature = "redis")]
        {
            check_err(
                &[(ENV_BUS_TYPE, "redis"), (ENV_REDIS_URL, "http://x")],
                ENV_REDIS_URL,
            );
            let err = parse(&[
                (ENV_BUS_TYPE, "redis"),
                (ENV_REDIS_URL, "http://user:hunter2@x"),
            ])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
            assert!(!err.contains("hunter2"), "{err}");
        }
        #[cfg(feature = "nats")]
        check_err(
            &[(ENV_BUS_TYPE, "nats"), (ENV_NATS_URL, "nats://a b")],
            ENV_NATS_URL,
        );
        #[cfg(not(feature = "nats"))]
        check_err(&[(ENV_BUS_TYPE, "nats")], ENV_BUS_TYPE);
        #[cfg(not(feature = "redis"))]
        check_err(&[(ENV_BUS_TYPE, "redis")], ENV_BUS_TYPE);
        let err = parse(&[(ENV_BUS_TYPE, "kafka")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            err,
            "DECNET_BUS_TYPE=\"kafka\" is invalid: expected one of memory, nats, redis, null, unix, fake"
        );
    }

    #[test]
    fn decnet_bus_types() {
        assert_eq!(kind(&[(ENV_BUS_TYPE, "fake")]), BusKind::Memory);
        assert_eq!(kind(&[(ENV_BUS_TYPE, "FAKE")]), BusKind::Memory);
        let socket = [(ENV_BUS_SOCKET, "/tmp/x/bus.sock")];
        if cfg!(unix) {
            let config = parse(&[(ENV_BUS_TYPE, "unix"), socket[0]]).unwrap_or_default();
            assert_eq!(config.kind, BusKind::Unix);
            assert_eq!(config.socket_path, Some(PathBuf::from("/tmp/x/bus.sock")));
            assert_eq!(kind(&[(ENV_BUS_TYPE, " Unix "), socket[0]]), BusKind::Unix);
        } else {
            check_err(&[(ENV_BUS_TYPE, "unix")], ENV_BUS_TYPE);
        }
        // Disabled wins over unix, and then no socket is resolved at all.
        let config =
            parse(&[(ENV_BUS_TYPE, "unix"), (ENV_BUS_ENABLED, "false")]).unwrap_or_default();
        assert_eq!((config.kind, config.socket_path), (BusKind::Null, None));
        // Other kinds ignore the socket.
        let config = parse(&[(ENV_BUS_TYPE, "memory"), socket[0]]).unwrap_or_default();
        assert_eq!(config.socket_path, None);
        assert_eq!(BusKind::Unix.as_str(), "unix");
    }

    fn resolve(vars: &[(&str, &str)], writable: bool) -> Result<PathBuf, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        resolve_socket_path(
            |k| map.get(k).cloned(),
            |dir| {
                assert_eq!(dir, Path::new(RUNTIME_DIR));
                writable
            },
        )
    }

    #[test]
    fn socket_path_resolution() {
        let home = (ENV_HOME, "/home/ana");
        let explicit = (ENV_BUS_SOCKET, "/srv/decnet/bus.sock");
        // 1. The variable wins, verbatim, whatever the probe says.
        for writable in [true, false] {
            assert_eq!(
                resolve(&[explicit, home], writable),
                Ok(PathBuf::from("/srv/decnet/bus.sock"))
            );
        }
        assert_eq!(
            resolve(&[(ENV_BUS_SOCKET, " rel/bus.sock")], false),
            Ok(PathBuf::from(" rel/bus.sock"))
        );
        // 2. An empty variable is unset; a writable /run/decnet comes next.
        assert_eq!(
            resolve(&[(ENV_BUS_SOCKET, ""), home], true),
            Ok(PathBuf::from(DEFAULT_SOCKET_PATH))
        );
        // 3. Else the home fallback (a trailing slash on HOME is harmless).
        assert_eq!(
            resolve(&[home], false),
            Ok(PathBuf::from("/home/ana/.decnet/bus.sock"))
        );
        assert_eq!(
            resolve(&[(ENV_HOME, "/home/ana/")], false),
            Ok(PathBuf::from("/home/ana/.decnet/bus.sock"))
        );
        // Nothing to fall back on: an error naming the variable to set.
        for vars in [&[][..], &[(ENV_HOME, "")][..]] {
            match resolve(vars, false) {
                Err(err) => {
                    assert_eq!(err.var(), ENV_BUS_SOCKET);
                    assert!(
                        err.to_string().starts_with("DECNET_BUS_SOCKET is not set"),
                        "{err}"
                    );
                }
                Ok(path) => panic!("resolved {path:?}"),
            }
        }
    }
}
