//! Private `nats-server` / `redis-server` processes for tests that kill or
//! restart a broker (never the shared ones).
//!
//! Each server listens on 127.0.0.1 on a [`crate::free_port`], is killed
//! with SIGKILL on [`NatsServer::kill`] / drop, and can be restarted on the
//! same port. Both run on [`crate::process::ChildProcess`]. Use them only inside `svc_nats` / `svc_redis` tests, after
//! [`crate::require_service!`], so the same skip policy applies.
//!
//! Binaries: `$DECNET_TEST_NATS_SERVER_BIN` or `/usr/sbin/nats-server` or
//! `nats-server` on `PATH`; `$DECNET_TEST_REDIS_SERVER_BIN` or
//! `redis-server` on `PATH`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{ChildProcess, Output, WaitError};

/// How long a start or restart may take before the fixture gives up.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One private server process on a fixed port.
struct Process {
    program: String,
    args: Vec<String>,
    port: u16,
    child: Option<ChildProcess>,
}

impl Process {
    fn new(program: String, args: Vec<String>, port: u16) -> Process {
        Process {
            program,
            args,
            port,
            child: None,
        }
    }

    /// Spawn and wait until the port accepts; retries while the port is
    /// still held (e.g. just after a kill: the new process exits at once).
    fn start(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
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

/// A private `nats-server` on its own port.
pub struct NatsServer {
    process: Process,
}

impl NatsServer {
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
        let mut process = Process::new(program, args, port);
        process.start();
        NatsServer { process }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.process.port)
    }

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// SIGKILL the server and reap it (no-op when already killed).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Kill (if running) and start again on the same port.
    ///
    /// # Panics
    ///
    /// When it cannot listen on the port again within 10 s.
    pub fn restart(&mut self) {
        self.process.kill();
        self.process.start();
    }
}

/// A private `redis-server` on its own port, without persistence.
pub struct RedisServer {
    process: Process,
}

impl RedisServer {
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
        let mut process = Process::new(program, args, port);
        process.start();
        RedisServer { process }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.process.port)
    }

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// SIGKILL the server and reap it (no-op when already killed).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Kill (if running) and start again on the same port.
    ///
    /// # Panics
    ///
    /// When it cannot listen on the port again within 10 s.
    pub fn restart(&mut self) {
        self.process.kill();
        self.process.start();
    }
}
