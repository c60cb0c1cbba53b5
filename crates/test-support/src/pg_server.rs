//! A private PostgreSQL cluster for tests that kill, hang or restart the
//! database (never the shared server).
//!
//! [`PgServer::start`] runs `initdb` into a temporary directory and starts
//! `postgres` on 127.0.0.1 on a [`crate::free_port`] (trust authentication,
//! user `postgres`, `fsync` off). [`PgServer::kill`] (SIGKILL),
//! [`PgServer::hang`] (SIGSTOP) and [`PgServer::resume`] (SIGCONT) reach
//! the postmaster and every backend (its children), as a crashed or frozen
//! host would. [`PgServer::restart`] starts it again on the same
//! port and data directory. Dropping it kills the cluster and removes the
//! directory.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, `initdb`
//! and `postgres` run as the `postgres` user (`setpriv`, which execs, so the
//! process this fixture holds is the postmaster itself) in a directory that
//! user owns. Use it only inside `svc_postgres` tests, after
//! [`crate::require_service!`], so the same skip policy applies.
//!
//! Binaries: `$DECNET_TEST_PG_BIN_DIR`, else the newest
//! `/usr/lib/postgresql/<version>/bin`, else `initdb` / `postgres` on `PATH`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{ChildProcess, Output, WaitError};

/// How long `initdb`, a start or a restart may take.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The user PostgreSQL runs as when this process is root.
const PG_USER: &str = "postgres";

/// A private PostgreSQL cluster on a fixed port.
pub struct PgServer {
    dir: PathBuf,
    bin_dir: Option<PathBuf>,
    port: u16,
    as_user: Option<String>,
    child: Option<ChildProcess>,
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer")
            .field("dir", &self.dir)
            .field("port", &self.port)
            .field("running", &self.child.is_some())
            .finish_non_exhaustive()
    }
}

/// The directory holding `initdb` and `postgres`, or `None` for `PATH`.
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DECNET_TEST_PG_BIN_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Whether this process runs as root (`id -u` says 0).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `id -u <user>` and `id -g <user>`.
fn ids_of(user: &str) -> (u32, u32) {
    let id = |flag: &str| {
        let out = Command::new("id")
            .args([flag, user])
            .output()
            .unwrap_or_else(|e| panic!("id {flag} {user}: {e}"));
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .unwrap_or_else(|_| panic!("no user {user} to run PostgreSQL as"))
    };
    (id("-u"), id("-g"))
}

/// The pids of `parent`'s children (field 4 of `/proc/<pid>/stat`).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                // The command may hold spaces: the fields after its `)`.
                .and_then(|stat| {
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// Send `signal` (a `kill -s` name) to the postmaster `pid` and to each of
/// its children: every backend calls `setsid()`, so a process-group signal
/// would reach the postmaster alone. The postmaster first on a stop (it
/// forks no more), last on a continue.
fn signal_cluster(pid: u32, signal: &str) {
    let mut pids = vec![pid];
    pids.extend(children_of(pid));
    if signal == "CONT" {
        pids.reverse();
    }
    for pid in pids {
        let _ = Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl PgServer {
    /// `initdb` a new cluster and start it on a free port.
    ///
    /// # Panics
    ///
    /// When the binaries are missing, `initdb` fails, or the server does
    /// not accept connections within 60 s.
    pub fn start() -> PgServer {
        let dir = std::env::temp_dir().join(format!("decnet-pg-{}", crate::unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let as_user = is_root().then(|| PG_USER.to_owned());
        if let Some(user) = &as_user {
            let (uid, gid) = ids_of(user);
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {} to {user}: {e}", dir.display()));
        }
        let mut server = PgServer {
            dir,
            bin_dir: bin_dir(),
            port: crate::free_port(),
            as_user,
            child: None,
        };
        let data = server.data_dir();
        let mut initdb = server.command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync");
        let finished = ChildProcess::spawn("initdb", &mut initdb, Output::Capture, Output::Capture)
            .unwrap_or_else(|e| panic!("{e}"))
            .finish(START_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            finished.status.success(),
            "initdb failed ({}):\n{}",
            finished.status,
            finished.stderr
        );
        server.spawn();
        server
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `program` from the PostgreSQL binaries, as the PostgreSQL user when
    /// this process is root.
    fn command(&self, program: &str) -> Command {
        let program = match &self.bin_dir {
            Some(dir) => dir.join(program),
            None => PathBuf::from(program),
        };
        match &self.as_user {
            Some(user) => {
                let mut command = Command::new("setpriv");
                command
                    .arg(format!("--reuid={user}"))
                    .arg(format!("--regid={user}"))
                    .arg("--init-groups")
                    .arg("--")
                    .arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    /// Start the postmaster and wait until it accepts connections; retries
    /// while the port or the shared memory of a killed one is still held.
    fn spawn(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            let mut command = self.command("postgres");
            command
                .arg("-D")
                .arg(self.data_dir())
                .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
                .arg(&self.dir)
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off", "-c", "max_connections=200"]);
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("postgres.log"))
                .unwrap_or_else(|e| panic!("open the PostgreSQL log: {e}"));
            let mut child =
                ChildProcess::spawn("postgres", &mut command, Output::Null, Output::File(log))
                    .unwrap_or_else(|e| panic!("{e}"));
            let left = deadline.saturating_duration_since(Instant::now());
            let ready = child.wait_for(
                "a PostgreSQL login",
                left,
                Duration::from_millis(50),
                |_| self.answers(),
            );
            match ready {
                Ok(()) => {
                    assert!(crate::process::accepts(addr), "port {} answers", self.port);
                    self.child = Some(child);
                    return;
                }
                Err(WaitError::Exited { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(error) => panic!("{error}\n{}", self.log()),
            }
        }
    }

    /// Whether the server takes a login now (`pg_isready`).
    fn answers(&self) -> bool {
        let program = match &self.bin_dir {
            Some(dir) => dir.join("pg_isready"),
            None => PathBuf::from("pg_isready"),
        };
        Command::new(program)
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-t", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// What the server logged (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, ChildProcess::id)
    }

    /// The cluster's directory (data, socket, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SIGKILL the postmaster and every backend (a crash; no-op when
    /// already killed) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_cluster(child.id(), "KILL");
            child.kill();
        }
    }

    /// SIGSTOP the postmaster and every backend: connections are accepted
    /// by the kernel, and nothing answers (a hung host).
    pub fn hang(&mut self) {
        if let Some(child) = &self.child {
            signal_cluster(child.id(), "STOP");
        }
    }

    /// SIGCONT after [`PgServer::hang`].
    pub fn resume(&mut self) {
        if let Some(child) = &self.child {
            signal_cluster(child.id(), "CONT");
        }
    }

    /// Kill (if running) and start again on the same port and data.
    ///
    /// # Panics
    ///
    /// When it does not accept connections again within 60 s.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.resume();
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
