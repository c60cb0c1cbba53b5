//! Shared fixtures for decnet-events tests.
//!
//! What it is: the one place that decides whether a test that needs a real
//! PostgreSQL, MySQL (MariaDB), Redis or NATS server runs, fails, or is skipped; the one
//! child-process fixture ([`process`]: spawn, wait for a port, SIGTERM /
//! SIGKILL, captured output), used by [`servers`] (private broker processes
//! for tests that kill or restart one), the binary's process tests and
//! `cargo xtask bench`; and, with the default `async` feature, per-test
//! PostgreSQL schemas ([`pg`]) and a small HTTP/1.1 client that reads
//! Server-Sent Events incrementally (`http`).
//! What it is not: a mock of any of those servers; every test that asks for one
//! talks to the real thing.
//!
//! The one exception is `decnet_broker` (Unix, feature `async`): DECNET's own bus broker
//! is a Python program that is not installed here, so `decnet_broker::TestBroker`
//! re-implements its server side from DECNET.md §1, byte for byte, and runs in
//! process; tests of the `unix` bus backend use it (no service needed).
//!
//! The policy, shared with `cargo xtask test`:
//! - a test reads its server URL from `DECNET_TEST_DATABASE_URL`,
//!   `DECNET_TEST_MYSQL_URL`, `DECNET_TEST_REDIS_URL` or `DECNET_TEST_NATS_URL`;
//! - when the variable is unset and `CI` is set, the test fails naming the
//!   variable (a CI run must never pass without its services);
//! - otherwise it prints a loud `SKIPPED` line and returns early.
//!
//! `cargo xtask test` sets the variables when the services answer, and when one
//! does not, it filters the tests out by name, so the runner reports them as
//! skipped instead of passed. Tests that need a service therefore carry the
//! marker `svc_postgres`, `svc_mysql`, `svc_redis` or `svc_nats` in their path
//! (a module named like that is the usual way).

use std::net::TcpListener;

/// A real service a test can need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// PostgreSQL, URL from `DECNET_TEST_DATABASE_URL`.
    Postgres,
    /// MySQL or MariaDB, URL from `DECNET_TEST_MYSQL_URL` (a server URL
    /// without a database, e.g. `mysql://root@127.0.0.1:3306`: tests create
    /// and drop a database of their own).
    Mysql,
    /// Redis, URL from `DECNET_TEST_REDIS_URL`.
    Redis,
    /// NATS, URL from `DECNET_TEST_NATS_URL`.
    Nats,
}

impl Service {
    /// The environment variable holding this service's URL.
    pub fn env_var(self) -> &'static str {
        match self {
            Service::Postgres => "DECNET_TEST_DATABASE_URL",
            Service::Mysql => "DECNET_TEST_MYSQL_URL",
            Service::Redis => "DECNET_TEST_REDIS_URL",
            Service::Nats => "DECNET_TEST_NATS_URL",
        }
    }

    /// The name-marker that test paths needing this service carry.
    pub fn marker(self) -> &'static str {
        match self {
            Service::Postgres => "svc_postgres",
            Service::Mysql => "svc_mysql",
            Service::Redis => "svc_redis",
            Service::Nats => "svc_nats",
        }
    }
}

/// The URL of `service` for this test, or `None` when the test must skip.
///
/// # Panics
///
/// When the variable is unset and `CI` is set: a CI run must not pass without
/// the service it was meant to test against.
pub fn service_url(service: Service) -> Option<String> {
    match std::env::var(service.env_var()) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
            assert!(
                !in_ci,
                "{} is not set: this test needs a real {:?} server and CI=true forbids skipping it",
                service.env_var(),
                service
            );
            eprintln!(
                "SKIPPED: {} is not set, so this test did not talk to a real {:?} server",
                service.env_var(),
                service
            );
            None
        }
    }
}

/// Return early from a test (as skipped) when `service` is not configured.
///
/// Expands to the URL as a `String`.
#[macro_export]
macro_rules! require_service {
    ($service:expr) => {
        match $crate::service_url($service) {
            Some(url) => url,
            None => return,
        }
    };
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// # Panics
///
/// When the OS cannot bind an ephemeral port at all (tests cannot run then).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// A short random suffix for per-test names (schemas, topic prefixes, keys).
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:x}{n:x}", std::process::id(), nanos & 0xffff_ffff)
}

#[cfg(all(unix, feature = "async"))]
pub mod decnet_broker;
#[cfg(feature = "async")]
pub mod http;
#[cfg(feature = "async")]
pub mod pg;
#[cfg(unix)]
pub mod pg_server;
pub mod process;
pub mod servers;
