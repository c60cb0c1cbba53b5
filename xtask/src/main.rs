//! Project automation, run as `cargo xtask <command>`.
//!
//! - `test`: the CI entry point (fmt, clippy, tests with real services, cargo-deny).
//! - `services`: start local PostgreSQL, MariaDB, Redis and NATS when installed but not running.
//! - `bench`: the service benchmarks behind docs/BENCHMARKS.md (see `bench.rs`);
//!   `bench micro` runs the crates' micro-benchmarks.
//! - `soak`: the long reliability suites and fuzzing behind docs/RELIABILITY.md (see `soak.rs`).

mod bench;
mod soak;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = project_root();
    std::env::set_current_dir(&root).context("cd to the workspace root")?;
    match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("services") => {
            let report = ensure_services();
            report.print();
            if report.missing().is_empty() {
                Ok(())
            } else {
                bail!("not running: {}", report.missing().join(", "))
            }
        }
        Some("bench") => bench::run(&args[1..]),
        Some("soak") => soak::run(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 test       fmt --check, clippy -D warnings, the test suite on real services, cargo-deny\n  \
                 services   start local PostgreSQL / MariaDB / Redis / NATS that are installed but not running\n  \
                 bench      service benchmarks (--quick, scenarios; see xtask/src/bench.rs); bench micro: cargo bench\n  \
                 soak       long fault / churn / shutdown / ticket / hostile-client suites and fuzzing; rewrites docs/RELIABILITY.md"
            );
            bail!("no command given")
        }
    }
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Run one named step; stop the whole run at the first failure, naming the step.
fn step(name: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("\n==> xtask: {name}");
    let started = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("step `{name}`: could not start {cmd:?}"))?;
    if !status.success() {
        bail!("step `{name}` failed ({status})");
    }
    eprintln!("==> xtask: {name}: ok in {:.1?}", started.elapsed());
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    step("fmt", cargo().args(["fmt", "--all", "--", "--check"]))?;
    step(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
    )?;

    // Backends are optional features: the crates must also build without them.
    step(
        "check without default features",
        cargo().args(["check", "--workspace", "--no-default-features", "--quiet"]),
    )?;
    // The production build has no ablation; its refusal of a per-connection
    // hub is compiled only there (the tests below run with every feature).
    step(
        "settings without the ablation feature",
        cargo().args([
            "test",
            "-p",
            "decnet-api",
            "--lib",
            "--quiet",
            "--",
            "settings::tests::without_the_ablation",
        ]),
    )?;

    let report = ensure_services();
    report.print();
    let missing = report.missing();
    if in_ci() && !missing.is_empty() {
        bail!(
            "CI=true and these services are not reachable: {} (their tests cannot be skipped in CI)",
            missing.join(", ")
        );
    }

    let chromium = ensure_chromium();
    if in_ci() && chromium.is_none() {
        bail!(
            "CI=true and chromium is not installed (the console's browser test cannot be skipped in CI)"
        );
    }
    if !Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!(
            "\n!!! no Docker daemon is reachable: the container image test will say SKIPPED (the image is not built)"
        );
    }

    let mut skips: Vec<String> = Vec::new();
    let mut tests = if has_nextest() {
        let mut c = cargo();
        c.args([
            "nextest",
            "run",
            "--workspace",
            "--all-features",
            "--no-fail-fast",
            "--failure-output",
            "final",
        ]);
        c
    } else {
        let mut c = cargo();
        c.args(["test", "--workspace", "--all-features", "--no-fail-fast"]);
        c
    };
    for svc in &report.services {
        match &svc.url {
            Some(url) => {
                tests.env(svc.env_var, url);
            }
            None => {
                tests.env_remove(svc.env_var);
                skips.push(svc.marker.to_owned());
            }
        }
    }
    if let Some(path) = &chromium {
        tests.env("DECNET_TEST_CHROMIUM", path);
    }
    tests.args(extra);
    if !skips.is_empty() {
        eprintln!(
            "\n!!! SKIPPING every test marked {} because its service is not running; \
             they are reported as filtered out / skipped, not passed",
            skips.join(", ")
        );
        tests.arg("--");
        for marker in &skips {
            tests.args(["--skip", marker]);
        }
    }
    step("tests", &mut tests)?;
    if has_nextest() {
        // nextest does not run doc tests.
        step(
            "doc tests",
            cargo().args(["test", "--workspace", "--all-features", "--doc"]),
        )?;
    }

    if Command::new("cargo-deny").arg("--version").output().is_ok() {
        step(
            "cargo-deny",
            cargo().args([
                "deny",
                "--all-features",
                "check",
                "licenses",
                "bans",
                "sources",
            ]),
        )?;
    } else {
        eprintln!("\n==> xtask: cargo-deny: skipped: cargo-deny not installed");
    }
    if !skips.is_empty() {
        eprintln!(
            "\n!!! reminder: tests marked {} were SKIPPED (service not running)",
            skips.join(", ")
        );
    }
    eprintln!("\n==> xtask: all steps passed");
    Ok(())
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

// === services ===

struct ServiceState {
    name: &'static str,
    env_var: &'static str,
    marker: &'static str,
    /// The URL tests use, or `None` when the service could not be reached.
    url: Option<String>,
    note: String,
}

struct ServicesReport {
    services: Vec<ServiceState>,
}

impl ServicesReport {
    fn missing(&self) -> Vec<String> {
        self.services
            .iter()
            .filter(|s| s.url.is_none())
            .map(|s| format!("{} ({})", s.name, s.note))
            .collect()
    }

    fn print(&self) {
        eprintln!("\n==> xtask: services");
        for s in &self.services {
            match &s.url {
                Some(url) => eprintln!("    {:<10} up    {}={url}", s.name, s.env_var),
                None => eprintln!("    {:<10} DOWN  {}", s.name, s.note),
            }
        }
    }
}

struct ServiceSpec {
    name: &'static str,
    env_var: &'static str,
    marker: &'static str,
    addr: &'static str,
    url: &'static str,
    binary: &'static str,
    start: fn() -> Command,
}

const SERVICES: [ServiceSpec; 4] = [
    ServiceSpec {
        name: "postgres",
        env_var: "DECNET_TEST_DATABASE_URL",
        marker: "svc_postgres",
        addr: "127.0.0.1:5432",
        url: "postgres://postgres@127.0.0.1:5432/postgres",
        binary: "pg_ctlcluster",
        start: || {
            let mut c = Command::new("sh");
            c.args([
                "-c",
                "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -n1) main start",
            ]);
            c
        },
    },
    ServiceSpec {
        // DECNET's MySQL backend runs on MariaDB here; tests make a database
        // each (root, empty password, as Debian's package sets it up).
        name: "mariadb",
        env_var: "DECNET_TEST_MYSQL_URL",
        marker: "svc_mysql",
        addr: "127.0.0.1:3306",
        url: "mysql://root@127.0.0.1:3306",
        binary: "mariadbd",
        start: || {
            let mut c = Command::new("service");
            c.args(["mariadb", "start"]);
            c
        },
    },
    ServiceSpec {
        name: "redis",
        env_var: "DECNET_TEST_REDIS_URL",
        marker: "svc_redis",
        addr: "127.0.0.1:6379",
        url: "redis://127.0.0.1:6379",
        binary: "redis-server",
        start: || {
            let mut c = Command::new("redis-server");
            c.args([
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1 -::1",
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                "/var/lib/redis",
                "--logfile",
                "/var/log/redis/ci.log",
            ]);
            c
        },
    },
    ServiceSpec {
        name: "nats",
        env_var: "DECNET_TEST_NATS_URL",
        marker: "svc_nats",
        addr: "127.0.0.1:4222",
        url: "nats://127.0.0.1:4222",
        binary: "nats-server",
        start: || {
            let mut c = Command::new("start-stop-daemon");
            c.args([
                "--start",
                "--oknodo",
                "--background",
                "--exec",
                "/usr/sbin/nats-server",
                "--",
                "-a",
                "127.0.0.1",
                "-p",
                "4222",
                "-js",
                "-sd",
                "/var/lib/nats-server",
                "-l",
                "/var/log/nats-server.log",
            ]);
            c
        },
    },
];

fn reachable(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .is_ok_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok())
}

fn installed(binary: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
            .any(|dir| dir.join(binary).is_file())
    })
}

/// Make sure each service answers; start the ones that are installed but down.
fn ensure_services() -> ServicesReport {
    let services = SERVICES
        .iter()
        .map(|spec| {
            // An explicit URL from the caller wins: they run their own servers.
            if let Ok(url) = std::env::var(spec.env_var)
                && !url.is_empty()
            {
                return ServiceState {
                    name: spec.name,
                    env_var: spec.env_var,
                    marker: spec.marker,
                    url: Some(url),
                    note: "from the environment".to_owned(),
                };
            }
            let (up, note) = if reachable(spec.addr) {
                (true, "running".to_owned())
            } else if !installed(spec.binary) {
                (false, format!("{} is not installed", spec.binary))
            } else {
                eprintln!(
                    "    {}: not answering on {}, starting it",
                    spec.name, spec.addr
                );
                let started = (spec.start)().status();
                let up = spec.addr.parse::<SocketAddr>().is_ok_and(|addr| {
                    test_support::process::wait_for_port(addr, Duration::from_secs(20))
                });
                match (up, started) {
                    (true, _) => (true, "started".to_owned()),
                    (false, Ok(status)) => (
                        false,
                        format!(
                            "start command exited {status}, still not answering on {}",
                            spec.addr
                        ),
                    ),
                    (false, Err(e)) => (false, format!("start command failed: {e}")),
                }
            };
            ServiceState {
                name: spec.name,
                env_var: spec.env_var,
                marker: spec.marker,
                url: up.then(|| spec.url.to_owned()),
                note,
            }
        })
        .collect();
    ServicesReport { services }
}

/// Chromium for the console's browser test: found, else installed with
/// apt-get (Debian's `chromium`) when this runs as root.
fn ensure_chromium() -> Option<PathBuf> {
    let find = || {
        ["chromium", "chromium-browser"].iter().find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
            })
        })
    };
    if let Some(path) = find() {
        return Some(path);
    }
    eprintln!("    chromium: not installed, installing it with apt-get");
    let installed = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "chromium"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        eprintln!("    chromium: apt-get install failed; the browser test will say SKIPPED");
    }
    find()
}

// === bench ===

fn bench(extra: &[String]) -> Result<()> {
    let report = ensure_services();
    report.print();
    let mut cmd = cargo();
    cmd.args(["bench", "--workspace", "--all-features"]);
    for svc in &report.services {
        if let Some(url) = &svc.url {
            cmd.env(svc.env_var, url);
        }
    }
    cmd.args(extra);
    step("micro-benchmarks", &mut cmd)
}
