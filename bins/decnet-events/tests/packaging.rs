//! The packaging for a DECNET host: the systemd unit passes
//! `systemd-analyze verify` and agrees with the binary's settings, and the
//! container image builds, reports healthy through `decnet-events
//! healthcheck` and serves (when a Docker daemon is reachable; otherwise the
//! test says loudly that it did not run).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use decnet_api::settings::SETTINGS;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The values of `key=` lines in a unit (every occurrence, in order).
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
        .collect()
}

fn default_of(env: &str) -> &'static str {
    SETTINGS
        .iter()
        .find(|s| s.env == env)
        .unwrap_or_else(|| panic!("{env} is not a setting"))
        .default
}

#[test]
fn the_unit_matches_decnet_and_the_binary() {
    let unit = read("deploy/decnet-events.service");
    assert_eq!(
        unit_values(&unit, "EnvironmentFile"),
        ["-/opt/decnet/.env.local"]
    );
    assert!(unit_values(&unit, "After")[0].contains("decnet-bus.service"));
    assert_eq!(unit_values(&unit, "Restart"), ["on-failure"]);
    let logs = unit_values(&unit, "StandardOutput");
    assert!(logs[0].starts_with("append:/var/log/decnet/"), "{logs:?}");
    // systemd must wait longer than the binary's own shutdown grace.
    let grace: u64 = default_of("DECNET_SHUTDOWN_GRACE_SECS")
        .parse()
        .expect("grace");
    let stop: u64 = unit_values(&unit, "TimeoutStopSec")[0]
        .parse()
        .expect("TimeoutStopSec");
    assert!(
        stop > grace,
        "TimeoutStopSec={stop} must exceed the {grace} s shutdown grace"
    );
    // Room for the default stream caps: one file per connection.
    let nofile: usize = unit_values(&unit, "LimitNOFILE")[0]
        .parse()
        .expect("LimitNOFILE");
    let per_ip: usize = default_of("DECNET_MAX_CONNECTIONS_PER_IP")
        .parse()
        .expect("cap");
    assert!(
        nofile > per_ip,
        "LimitNOFILE={nofile} below one client's connection cap {per_ip}"
    );
    // Every variable the unit sets is one the binary reads.
    for assignment in unit_values(&unit, "Environment") {
        let (var, _) = assignment.split_once('=').expect("VAR=value");
        assert!(
            SETTINGS.iter().any(|s| s.env == var),
            "{var} is not a setting"
        );
    }
    // The unit the binary would run under: systemd's own checker accepts it
    // (the ExecStart pointed at the binary under test).
    let Some(analyze) = which("systemd-analyze") else {
        panic!("systemd-analyze is not installed (Debian: apt install systemd)");
    };
    let dir = std::env::temp_dir().join(format!("decnet-unit-{}", test_support::unique_suffix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("decnet-events.service");
    std::fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/decnet-events",
            env!("CARGO_BIN_EXE_decnet-events"),
        ),
    )
    .expect("write unit");
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_api_drop_in_moves_decnet_api_off_our_port() {
    let drop_in = read("deploy/decnet-api-port.conf");
    let exec = unit_values(&drop_in, "ExecStart");
    assert_eq!(exec.len(), 2, "reset, then the new command");
    assert_eq!(exec[0], "");
    let unit = read("deploy/decnet-events.service");
    let upstream = unit_values(&unit, "Environment")
        .into_iter()
        .find_map(|a| a.strip_prefix("DECNET_EVENTS_UPSTREAM="))
        .expect("the unit sets the upstream");
    let port = upstream.rsplit(':').next().expect("a port");
    assert!(
        exec[1].ends_with(&format!("--port {port}")),
        "{} vs {upstream}",
        exec[1]
    );
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run docker")
}

#[test]
fn the_image_builds_and_reports_healthy() {
    let dockerfile = read("Dockerfile");
    let last_from = dockerfile
        .lines()
        .rfind(|l| l.starts_with("FROM "))
        .expect("a FROM");
    assert!(
        last_from.contains("distroless") && last_from.contains("nonroot"),
        "{last_from}"
    );
    assert!(dockerfile.contains("HEALTHCHECK") && dockerfile.contains("\"healthcheck\""));

    let reachable = which("docker").is_some() && docker(&["info"]).status.success();
    if !reachable {
        eprintln!(
            "SKIPPED the_image_builds_and_reports_healthy: no Docker daemon is reachable here \
             (`docker info` failed); the image was not built"
        );
        return;
    }
    let tag = format!("decnet-events-test:{}", test_support::unique_suffix());
    let root = repo();
    let build = Command::new("docker")
        .args(["build", "-t", &tag])
        .arg(&root)
        .status()
        .expect("docker build");
    assert!(build.success(), "docker build failed");
    let run = docker(&["run", "-d", "-p", "127.0.0.1::8000", &tag]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let id = String::from_utf8_lossy(&run.stdout).trim().to_owned();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut health = String::new();
    while Instant::now() < deadline {
        let out = docker(&["inspect", "--format", "{{.State.Health.Status}}", &id]);
        health = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if health == "healthy" {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let logs = docker(&["logs", &id]);
    let _ = docker(&["rm", "-f", &id]);
    let _ = docker(&["rmi", "-f", &tag]);
    assert_eq!(
        health,
        "healthy",
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
}
