//! Child processes for tests and tools: spawn one, wait until it listens or
//! answers, stop it with SIGTERM (then SIGKILL), read what it printed. Every
//! wait is bounded. Standard library only, so xtask can use it without
//! Tokio (`test-support` with `default-features = false`).
//!
//! ```no_run
//! use std::process::Command;
//! use std::time::Duration;
//! use test_support::process::{ChildProcess, Output};
//!
//! let port = test_support::free_port();
//! let mut command = Command::new("nats-server");
//! command.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
//! let mut nats = ChildProcess::spawn("nats-server", &mut command, Output::Null, Output::Capture)?;
//! nats.wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(10))?;
//! // ... use it ...
//! let status = nats.terminate(Duration::from_secs(5))?; // SIGTERM, SIGKILL past 5 s
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Signals are sent with `kill(1)` (`kill -s TERM <pid>`): `unsafe` is
//! forbidden here, so no `libc::kill`. Dropping a [`ChildProcess`] stops it
//! ([`OnDrop`]) and reaps it: a test that panics leaves nothing behind.

use std::fmt;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the waits below look again.
pub const POLL_EVERY: Duration = Duration::from_millis(20);
/// How long an exited child's captured output may take to reach its end
/// (a process it started may still hold the pipe).
const SETTLE_WITHIN: Duration = Duration::from_secs(2);

/// Where a child's stdout or stderr goes.
#[derive(Debug)]
pub enum Output {
    /// Discarded.
    Null,
    /// This process's own stream.
    Inherit,
    /// Kept in memory, readable while the child runs ([`ChildProcess::stdout`]).
    Capture,
    /// Written to a file (a server log).
    File(std::fs::File),
}

/// What dropping a [`ChildProcess`] does to a child still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDrop {
    /// SIGKILL at once (a broker a test kills anyway).
    Kill,
    /// SIGTERM, then SIGKILL if it has not exited within the duration (a
    /// server that should flush its output).
    Terminate(Duration),
}

/// A signal [`ChildProcess::signal`] can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: stop gracefully.
    Term,
    /// SIGINT: Ctrl-C.
    Int,
    /// SIGKILL: stop now.
    Kill,
    /// SIGHUP: reload (decnet-events re-reads its TLS certificate).
    Hup,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Int => "INT",
            Signal::Kill => "KILL",
            Signal::Hup => "HUP",
        }
    }
}

/// Why a wait on a child ended without its condition.
#[derive(Debug)]
pub enum WaitError {
    /// The child exited first.
    Exited {
        /// The child's name.
        name: String,
        /// How it exited.
        status: ExitStatus,
    },
    /// The condition did not hold within the time given.
    TimedOut {
        /// The child's name.
        name: String,
        /// What was waited for.
        what: String,
        /// For how long.
        within: Duration,
    },
    /// Waiting on the child failed (`waitpid`).
    Io(io::Error),
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::Exited { name, status } => write!(f, "{name} exited ({status})"),
            WaitError::TimedOut { name, what, within } => {
                write!(f, "{name}: no {what} within {within:?}")
            }
            WaitError::Io(error) => write!(f, "waiting on a child process: {error}"),
        }
    }
}

impl std::error::Error for WaitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WaitError::Io(error) => Some(error),
            _ => None,
        }
    }
}

/// A stream read into memory by a thread of its own.
#[derive(Debug)]
struct Captured {
    buffer: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl Captured {
    fn start(mut source: impl Read + Send + 'static) -> Captured {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match source.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => sink
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&chunk[..n]),
                }
            }
        });
        Captured {
            buffer,
            reader: Some(reader),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Wait until the reader has seen the end of the stream, at most until
    /// `deadline` (another process may still hold the pipe open).
    fn settle(&mut self, deadline: Instant) {
        while let Some(reader) = &self.reader {
            if reader.is_finished() {
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return;
            }
            if Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Everything, once the stream has ended (the child exited and nothing
    /// else holds the pipe).
    fn finish(mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.text()
    }
}

/// What a child that ran to its end left.
#[derive(Debug)]
pub struct Finished {
    /// How it exited.
    pub status: ExitStatus,
    /// Everything it printed on stdout ([`Output::Capture`] only).
    pub stdout: String,
    /// Everything it printed on stderr ([`Output::Capture`] only).
    pub stderr: String,
}

fn stdio(output: &Output) -> io::Result<Stdio> {
    Ok(match output {
        Output::Null => Stdio::null(),
        Output::Inherit => Stdio::inherit(),
        Output::Capture => Stdio::piped(),
        Output::File(file) => Stdio::from(file.try_clone()?),
    })
}

/// A child process this process started, stopped and reaped on drop.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    stdout: Option<Captured>,
    stderr: Option<Captured>,
    on_drop: OnDrop,
}

impl ChildProcess {
    /// Spawn `command` (stdin is closed) as `name` (for messages), its
    /// stdout and stderr sent where asked. Dropped, it is killed
    /// ([`OnDrop::Kill`]); see [`ChildProcess::on_drop`].
    ///
    /// # Errors
    ///
    /// When the program cannot be started, or a log file cannot be shared.
    pub fn spawn(
        name: impl Into<String>,
        command: &mut Command,
        stdout: Output,
        stderr: Output,
    ) -> io::Result<ChildProcess> {
        let name = name.into();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(stdio(&stdout)?)
            .stderr(stdio(&stderr)?)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {name}: {e}")))?;
        let stdout = child.stdout.take().map(|s: ChildStdout| Captured::start(s));
        let stderr = child.stderr.take().map(|s: ChildStderr| Captured::start(s));
        Ok(ChildProcess {
            name,
            child,
            status: None,
            stdout,
            stderr,
            on_drop: OnDrop::Kill,
        })
    }

    /// What dropping does to the child if it still runs.
    #[must_use]
    pub fn on_drop(mut self, on_drop: OnDrop) -> ChildProcess {
        self.on_drop = on_drop;
        self
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything the child printed on stdout so far ([`Output::Capture`]
    /// only; empty otherwise).
    pub fn stdout(&self) -> String {
        self.stdout.as_ref().map(Captured::text).unwrap_or_default()
    }

    /// Everything the child printed on stderr so far ([`Output::Capture`]
    /// only; empty otherwise).
    pub fn stderr(&self) -> String {
        self.stderr.as_ref().map(Captured::text).unwrap_or_default()
    }

    /// The exit status if the child has exited (it is reaped then), without
    /// waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
            if self.status.is_some() {
                // What it printed last is still in the pipes: once it has
                // exited, stdout() and stderr() say everything.
                let deadline = Instant::now() + SETTLE_WITHIN;
                for captured in [&mut self.stdout, &mut self.stderr].into_iter().flatten() {
                    captured.settle(deadline);
                }
            }
        }
        self.status
    }

    /// Wait up to `within` for the child to exit (it keeps running past it).
    pub fn wait_timeout(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// Send `signal` to the child (a no-op once it has exited).
    ///
    /// # Errors
    ///
    /// When `kill(1)` cannot be run or refuses (no such process).
    pub fn signal(&mut self, signal: Signal) -> io::Result<()> {
        if self.try_exit().is_some() {
            return Ok(());
        }
        if signal == Signal::Kill {
            return self.child.kill();
        }
        let status = Command::new("kill")
            .args(["-s", signal.name(), &self.id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if status.success() || self.try_exit().is_some() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "kill -s {} {} failed ({status})",
                signal.name(),
                self.id()
            )))
        }
    }

    /// SIGTERM, then wait up to `within` for the exit; past it SIGKILL.
    ///
    /// # Errors
    ///
    /// [`WaitError::TimedOut`] when it had to be killed (it is reaped all
    /// the same); [`WaitError::Io`] when no signal could be sent.
    pub fn terminate(&mut self, within: Duration) -> Result<ExitStatus, WaitError> {
        self.signal(Signal::Term).map_err(WaitError::Io)?;
        if let Some(status) = self.wait_timeout(within) {
            return Ok(status);
        }
        self.kill();
        Err(WaitError::TimedOut {
            name: self.name.clone(),
            what: "exit after SIGTERM".to_owned(),
            within,
        })
    }

    /// Wait up to `within` for the child to exit, then for the end of its
    /// captured output; what it left.
    ///
    /// # Errors
    ///
    /// [`WaitError::TimedOut`] when it did not exit in time (it is killed
    /// then).
    pub fn finish(mut self, within: Duration) -> Result<Finished, WaitError> {
        let Some(status) = self.wait_timeout(within) else {
            self.kill();
            return Err(WaitError::TimedOut {
                name: self.name.clone(),
                what: "exit".to_owned(),
                within,
            });
        };
        Ok(Finished {
            status,
            stdout: self.stdout.take().map(Captured::finish).unwrap_or_default(),
            stderr: self.stderr.take().map(Captured::finish).unwrap_or_default(),
        })
    }

    /// SIGKILL and reap (a no-op once it has exited); the exit status.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        self.status
    }

    /// Poll `condition` (given the child, to read its output) every `every`
    /// until it holds; fails at once when the child exits first, or after
    /// `within`.
    ///
    /// # Errors
    ///
    /// [`WaitError::Exited`] or [`WaitError::TimedOut`] (naming `what`).
    pub fn wait_for(
        &mut self,
        what: &str,
        within: Duration,
        every: Duration,
        mut condition: impl FnMut(&ChildProcess) -> bool,
    ) -> Result<(), WaitError> {
        let deadline = Instant::now() + within;
        loop {
            if condition(self) {
                return Ok(());
            }
            if let Some(status) = self.try_exit() {
                return Err(WaitError::Exited {
                    name: self.name.clone(),
                    status,
                });
            }
            if Instant::now() >= deadline {
                return Err(WaitError::TimedOut {
                    name: self.name.clone(),
                    what: what.to_owned(),
                    within,
                });
            }
            std::thread::sleep(every);
        }
    }

    /// Wait until `addr` accepts TCP connections (see [`accepts`]), the
    /// child exits, or `within` passes.
    ///
    /// # Errors
    ///
    /// As [`ChildProcess::wait_for`].
    pub fn wait_for_port(&mut self, addr: SocketAddr, within: Duration) -> Result<(), WaitError> {
        self.wait_for(&format!("listener on {addr}"), within, POLL_EVERY, |_| {
            accepts(addr)
        })
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.try_exit().is_some() {
            return;
        }
        match self.on_drop {
            OnDrop::Kill => {
                self.kill();
            }
            OnDrop::Terminate(within) => {
                let _ = self.terminate(within);
            }
        }
    }
}

/// Whether `addr` accepts a TCP connection now (100 ms connect timeout).
pub fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
}

/// Wait up to `within` for `addr` to accept TCP connections (for a server
/// this process did not start).
pub fn wait_for_port(addr: SocketAddr, within: Duration) -> bool {
    wait_until(within, POLL_EVERY, || accepts(addr))
}

/// Poll `condition` every `every` until it holds (`true`) or `within`
/// passes (`false`).
pub fn wait_until(within: Duration, every: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Remove from `command`'s environment every variable of this process whose
/// name starts with one of `prefixes` (a developer's own `DECNET_*` and
/// `OTEL_*` settings must not leak into a child under test).
pub fn remove_env_prefixed<'c>(command: &'c mut Command, prefixes: &[&str]) -> &'c mut Command {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if prefixes.iter().any(|p| key.starts_with(p)) {
            command.env_remove(key.as_ref());
        }
    }
    command
}
