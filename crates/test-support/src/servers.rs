//! Private `nats-server` / `redis-server` / `mariadbd` processes for tests
//! that kill or restart a broker or a database (never the shared ones).
//!
//! Each server ([`NatsServer`], [`RedisServer`], [`MariadbServer`]: one
//! [`PrivateServer`] each) listens on 127.0.0.1 on a [`crate::free_port`],
//! is killed with SIGKILL on [`PrivateServer::kill`] / drop, and can be
//! restarted on the same port (MariaDB on the same data directory too). All
//! run on [`crate::process::ChildProcess`]. Use them only inside `svc_nats` /
//! `svc_redis` / `svc_mysql` tests, after [`crate::require_service!`], so
//! the same skip policy applies.
//!
//! Binaries: `$DECNET_TEST_NATS_SERVER_BIN` or `/usr/sbin/nats-server` or
//! `nats-server` on `PATH`; `$DECNET_TEST_REDIS_SERVER_BIN` or
//! `redis-server` on `PATH`; `$DECNET_TEST_MARIADBD_BIN` or
//! `/usr/sbin/mariadbd` or `mariadbd` on `PATH`, with
//! `$DECNET_TEST_MARIADB_INSTALL_DB_BIN` or `mariadb-install-db` beside it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{ChildProcess, Output, WaitError};

/// How long a start or restart may take before the fixture gives up.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// MariaDB's: crash recovery after a SIGKILL, on a loaded machine.
const MARIADB_START_TIMEOUT: Duration = Duration::from_secs(30);

/// One private server process on a fixed port.
struct Process {
    program: String,
    args: Vec<String>,
    port: u16,
    start_timeout: Duration,
    child: Option<ChildProcess>,
}

impl Process {
    fn new(program: String, args: Vec<String>, port: u16) -> Process {
        Process {
            program,
            args,
            port,
            start_timeout: START_TIMEOUT,
            child: None,
        }
    }

    /// Spawn and wait until the port accepts; retries while the port is
    /// still held (e.g. just after a kill: the new process exits at once).
    fn start(&mut self) {
        let deadline = Instant::now() + self.start_timeout;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            let mut command = Command::new(&self.program);
            command.args(&self.args);
            let mut child =
                ChildProcess::spawn(&self.program, &mut command, Output::Null, Output::Null)
                    .unwrap_or_else(|err| panic!("{err}"));
            let left = deadline.saturating_duration_since(Instant::now());
            match child.wait_for_port(addr, left) {
                Ok(()) => {
                    self.child = Some(child);
                    return;
                }
                Err(WaitError::Exited { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(WaitError::Exited { .. }) => panic!(
                    "{} kept exiting at start on port {}",
                    self.program, self.port
                ),
                Err(err) => panic!("{err}"),
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }
}

fn find_binary(env_var: &str, candidates: &[&str]) -> String {
    if let Ok(bin) = std::env::var(env_var)
        && !bin.is_empty()
    {
        return bin;
    }
    for candidate in candidates {
        if Path::new(candidate).is_file() {
            return (*candidate).to_owned();
        }
    }
    // Fall back to PATH lookup by the bare name.
    candidates
        .last()
        .map(|c| {
            Path::new(c)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(c)
                .to_owned()
        })
        .unwrap_or_default()
}

/// A kind of private server: how its URL starts.
pub trait ServerKind: std::fmt::Debug {
    /// The URL up to the host, e.g. `nats://`.
    const URL_PREFIX: &'static str;
}

/// `nats-server`.
#[derive(Debug)]
pub struct Nats;

impl ServerKind for Nats {
    const URL_PREFIX: &'static str = "nats://";
}

/// `redis-server`, without persistence.
#[derive(Debug)]
pub struct Redis;

impl ServerKind for Redis {
    const URL_PREFIX: &'static str = "redis://";
}

/// `mariadbd`, with the temporary directory holding its data (removed when
/// the server is dropped, after the process is killed).
#[derive(Debug)]
pub struct Mariadb {
    dir: PathBuf,
}

impl ServerKind for Mariadb {
    const URL_PREFIX: &'static str = "mysql://root@";
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One private server process of kind `K` on its own port, killed on drop.
pub struct PrivateServer<K: ServerKind> {
    // Dropped first: the process is killed before `kind` cleans up after it.
    process: Process,
    kind: K,
}

impl<K: ServerKind> std::fmt::Debug for PrivateServer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateServer")
            .field("program", &self.process.program)
            .field("port", &self.process.port)
            .field("running", &self.process.child.is_some())
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl<K: ServerKind> PrivateServer<K> {
    /// Start `process` (see [`Process::start`]).
    ///
    /// Started here, not before: a start that panics still drops `kind`.
    fn started(process: Process, kind: K) -> PrivateServer<K> {
        let mut server = PrivateServer { process, kind };
        server.process.start();
        server
    }

    /// `<scheme>://127.0.0.1:<port>` (MariaDB's as `root`, no database:
    /// tests make their own).
    pub fn url(&self) -> String {
        format!("{}127.0.0.1:{}", K::URL_PREFIX, self.process.port)
    }

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// SIGKILL the server and reap it (no-op when already killed).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Kill (if running) and start again on the same port (MariaDB: and
    /// data directory, so databases made before survive).
    ///
    /// # Panics
    ///
    /// When it cannot listen on the port again within its start timeout
    /// (10 s; MariaDB's 30 s).
    pub fn restart(&mut self) {
        self.process.kill();
        self.process.start();
    }
}

/// A private `nats-server` on its own port.
pub type NatsServer = PrivateServer<Nats>;

impl PrivateServer<Nats> {
    /// Start `nats-server -a 127.0.0.1 -p <free port>` and wait until it listens.
    ///
    /// # Panics
    ///
    /// When the binary cannot be spawned or does not listen within 10 s.
    pub fn start() -> NatsServer {
        NatsServer::start_on(crate::free_port())
    }

    /// Like [`NatsServer::start`], on a given port (e.g. one a client is
    /// already trying to reach).
    ///
    /// # Panics
    ///
    /// As [`NatsServer::start`].
    pub fn start_on(port: u16) -> NatsServer {
        let program = find_binary(
            "DECNET_TEST_NATS_SERVER_BIN",
            &[
                "/usr/sbin/nats-server",
                "/usr/local/bin/nats-server",
                "/usr/bin/nats-server",
            ],
        );
        let args = vec![
            "-a".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            port.to_string(),
        ];
        PrivateServer::started(Process::new(program, args, port), Nats)
    }
}

/// A private `redis-server` on its own port, without persistence.
pub type RedisServer = PrivateServer<Redis>;

impl PrivateServer<Redis> {
    /// Start `redis-server --port <free port> --bind 127.0.0.1 --save "" --appendonly no`
    /// and wait until it listens.
    ///
    /// # Panics
    ///
    /// When the binary cannot be spawned or does not listen within 10 s.
    pub fn start() -> RedisServer {
        RedisServer::start_on(crate::free_port())
    }

    /// Like [`RedisServer::start`], on a given port (e.g. one a client is
    /// already trying to reach).
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub fn start_on(port: u16) -> RedisServer {
        let program = find_binary(
            "DECNET_TEST_REDIS_SERVER_BIN",
            &["/usr/bin/redis-server", "/usr/local/bin/redis-server"],
        );
        let args = vec![
            "--port".to_owned(),
            port.to_string(),
            "--bind".to_owned(),
            "127.0.0.1".to_owned(),
            "--save".to_owned(),
            String::new(),
            "--appendonly".to_owned(),
            "no".to_owned(),
        ];
        PrivateServer::started(Process::new(program, args, port), Redis)
    }
}

/// A private MariaDB server (`mariadbd`) on its own port and its own
/// temporary data directory (made with `mariadb-install-db`; root, no
/// password, over TCP), removed on drop. [`PrivateServer::kill`] is a crash
/// (SIGKILL); [`PrivateServer::restart`] starts it again on the same port and
/// data directory, so databases made before survive (InnoDB recovers).
pub type MariadbServer = PrivateServer<Mariadb>;

impl PrivateServer<Mariadb> {
    /// Initialise a data directory and start `mariadbd` on a free port.
    ///
    /// # Panics
    ///
    /// When a binary cannot be run, the data directory cannot be
    /// initialised, or the server does not listen within 30 s.
    pub fn start() -> MariadbServer {
        let program = find_binary(
            "DECNET_TEST_MARIADBD_BIN",
            &["/usr/sbin/mariadbd", "/usr/bin/mariadbd", "mariadbd"],
        );
        let install = find_binary(
            "DECNET_TEST_MARIADB_INSTALL_DB_BIN",
            &["/usr/bin/mariadb-install-db", "mariadb-install-db"],
        );
        let dir = std::env::temp_dir().join(format!("decnet-mariadb-{}", crate::unique_suffix()));
        let data = dir.join("data");
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|err| panic!("create {}: {err}", dir.display()));
        // mariadbd refuses to run as root without `--user=root`.
        let as_root = std::fs::metadata("/proc/self").is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid() == 0
        });
        let user: Vec<String> = if as_root {
            vec!["--user=root".to_owned()]
        } else {
            Vec::new()
        };
        let mut command = Command::new(&install);
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .args(&user);
        let mut child = ChildProcess::spawn(&install, &mut command, Output::Null, Output::Capture)
            .unwrap_or_else(|err| panic!("{err}"));
        match child.wait_timeout(MARIADB_START_TIMEOUT) {
            Some(status) if status.success() => {}
            other => {
                let _ = std::fs::remove_dir_all(&dir);
                panic!(
                    "{install} failed ({other:?}): {}",
                    child.stderr().lines().last().unwrap_or_default()
                );
            }
        }
        let port = crate::free_port();
        let mut args = vec![
            "--no-defaults".to_owned(),
            format!("--datadir={}", data.display()),
            format!("--port={port}"),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--socket={}", dir.join("mysqld.sock").display()),
            format!("--pid-file={}", dir.join("mysqld.pid").display()),
            format!("--log-error={}", dir.join("error.log").display()),
            "--skip-log-bin".to_owned(),
            "--innodb-buffer-pool-size=16M".to_owned(),
        ];
        args.extend(user);
        let mut process = Process::new(program, args, port);
        process.start_timeout = MARIADB_START_TIMEOUT;
        PrivateServer::started(process, Mariadb { dir })
    }
}
