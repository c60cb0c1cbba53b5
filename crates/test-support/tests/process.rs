//! The child-process fixture: output capture, exits, signals, port waits,
//! and the environment scrub. Uses `sh` and `kill(1)` only.

use std::net::TcpListener;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use test_support::process::{
    ChildProcess, OnDrop, Output, Signal, WaitError, accepts, remove_env_prefixed, wait_for_port,
    wait_until,
};

fn sh(script: &str) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", script]);
    command
}

/// `script` run with both outputs captured, once it has exited (within
/// 10 s); its status, and how long the wait took.
fn exited(script: &str) -> (ChildProcess, ExitStatus, Duration) {
    let mut child =
        ChildProcess::spawn("printer", &mut sh(script), Output::Capture, Output::Capture)
            .expect("spawn sh");
    let started = Instant::now();
    let status = child
        .wait_timeout(Duration::from_secs(10))
        .expect("sh exits");
    (child, status, started.elapsed())
}

#[test]
fn captures_output_and_reports_the_exit() {
    let (mut child, status, _) = exited("echo out; echo err >&2; exit 3");
    assert_eq!(status.code(), Some(3));
    assert_eq!(
        (child.stdout(), child.stderr()),
        ("out\n".to_owned(), "err\n".to_owned())
    );
    // Once reaped, the status stays.
    assert_eq!(child.try_exit().and_then(|s| s.code()), Some(3));
}

#[test]
fn everything_printed_is_there_once_it_has_exited() {
    // The last line comes after the exit, from a process it left behind
    // holding the pipe: the wait returns once the pipes have ended.
    let (child, status, _) = exited("echo first >&2; (sleep 0.3; echo last >&2) & exit 0");
    assert!(status.success());
    assert_eq!(child.stderr(), "first\nlast\n");
}

#[test]
fn a_pipe_held_open_after_the_exit_delays_the_wait_a_bounded_time() {
    let (child, _, took) = exited("echo first >&2; (sleep 8; echo never >&2) & exit 0");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(child.stderr(), "first\n");
}

#[test]
fn terminate_sends_sigterm_and_reaps() {
    // `trap` makes the shell's own exit code say it saw SIGTERM.
    let mut child = ChildProcess::spawn(
        "sleeper",
        &mut sh("trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done"),
        Output::Capture,
        Output::Null,
    )
    .expect("spawn sh");
    assert!(wait_until(
        Duration::from_secs(10),
        Duration::from_millis(10),
        || child.stdout().contains("ready")
    ));
    let status = child.terminate(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(7));
    assert!(wait_until(
        Duration::from_secs(5),
        Duration::from_millis(10),
        || child.stdout().contains("got-term")
    ));
}

#[test]
fn terminate_kills_a_child_that_ignores_sigterm() {
    let mut child = ChildProcess::spawn(
        "stubborn",
        &mut sh("trap '' TERM; echo ready; while :; do sleep 0.05; done"),
        Output::Capture,
        Output::Null,
    )
    .expect("spawn sh");
    assert!(wait_until(
        Duration::from_secs(10),
        Duration::from_millis(10),
        || child.stdout().contains("ready")
    ));
    let started = Instant::now();
    match child.terminate(Duration::from_millis(300)) {
        Err(WaitError::TimedOut { .. }) => {}
        other => panic!("expected a timeout then SIGKILL, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(child.try_exit().is_some(), "killed and reaped");
    // Signalling an exited child is a no-op.
    child.signal(Signal::Term).expect("no-op");
}

#[test]
fn waits_fail_fast_when_the_child_exits() {
    let port = test_support::free_port();
    let mut child = ChildProcess::spawn("quitter", &mut sh("exit 0"), Output::Null, Output::Null)
        .expect("spawn sh");
    let started = Instant::now();
    match child.wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(30)) {
        Err(WaitError::Exited { status, .. }) => assert!(status.success()),
        other => panic!("expected Exited, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn port_waits() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    assert!(accepts(addr));
    assert!(wait_for_port(addr, Duration::from_secs(1)));
    drop(listener);
    assert!(!wait_for_port(addr, Duration::from_millis(100)));
}

#[test]
fn drop_stops_the_child() {
    let child = ChildProcess::spawn(
        "dropped",
        &mut sh("while :; do sleep 0.05; done"),
        Output::Null,
        Output::Null,
    )
    .expect("spawn sh")
    .on_drop(OnDrop::Terminate(Duration::from_secs(5)));
    let pid = child.id();
    drop(child);
    // `kill -0` fails once the process is gone (reaped by the drop).
    let alive = Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .expect("kill -0");
    assert!(!alive.success(), "pid {pid} still alive after drop");
}

#[test]
fn scrubs_prefixed_variables() {
    // The scrub removes this process's variables by prefix (cargo sets
    // CARGO_PKG_NAME for every test run) and keeps the others.
    let script = "echo \"${CARGO_PKG_NAME:-gone}:${CARGO_MANIFEST_DIR:+kept}\"";
    let kept = sh(script).output().expect("run sh");
    assert_eq!(String::from_utf8_lossy(&kept.stdout), "test-support:kept\n");
    let mut command = sh(script);
    remove_env_prefixed(&mut command, &["CARGO_PKG_", "DECNET_"]);
    let removed = command.output().expect("run sh");
    assert_eq!(String::from_utf8_lossy(&removed.stdout), "gone:kept\n");
}
