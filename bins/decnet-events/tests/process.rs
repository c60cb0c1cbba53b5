//! Process-level tests of the `decnet-events` binary: only what needs a
//! process of its own (exit codes and stderr of bad configurations, the
//! embedded demo's banner, SIGTERM, SIGHUP's certificate reload over real
//! TLS, the log formats on stderr, the open-files limit, the `migrate`,
//! `mint-token` and `publish` subcommands). Everything the HTTP application
//! does is tested in process, in `crates/decnet-api/tests/e2e.rs`.
//!
//! Every child runs with every `DECNET_*` and `OTEL_*` variable of this
//! process removed (a developer's own settings must not leak in), through
//! `test_support::process::ChildProcess` (killed on drop, every wait
//! bounded). Tests that need a service carry its marker in their path.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use decnet_api::settings::{
    ENV_BIND, ENV_CORS_ORIGINS, ENV_DATABASE_URL, ENV_DB_TYPE, ENV_JWT_SECRET, ENV_TLS_CERT,
    ENV_TLS_KEY, SETTINGS,
};
use decnet_sse::Decoded;
use serde_json::Value;
use test_support::http::{self, Next, SseStream, events_path};
use test_support::process::{
    ChildProcess, Finished, Output, Signal, WaitError, remove_env_prefixed,
};

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_decnet-events");
/// A JWT secret that passes DECNET's rule.
const SECRET: &str = "process-tests-secret-of-32-characters-or-more";
/// How long the demo may take to print its banner and answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The binary with a clean environment: no `DECNET_*`, no `OTEL_*`, logs at
/// `warn`.
fn binary() -> Command {
    let mut command = Command::new(BIN);
    remove_env_prefixed(&mut command, &["DECNET_", "OTEL_", "RUST_LOG"]);
    command.env("RUST_LOG", "warn");
    command
}

/// A variable of the settings table (so a renamed one fails here, loudly).
fn var(name: &'static str) -> &'static str {
    SETTINGS
        .iter()
        .find(|s| s.env == name)
        .unwrap_or_else(|| panic!("{name} is not in the settings table"))
        .env
}

/// Run `command` to its end (killed past `within`).
fn run(mut command: Command, within: Duration) -> Finished {
    ChildProcess::spawn(
        "decnet-events",
        &mut command,
        Output::Capture,
        Output::Capture,
    )
    .expect("spawn decnet-events")
    .finish(within)
    .unwrap_or_else(|e| panic!("{e}"))
}

/// `decnet-events serve` with `vars` (and a free `DECNET_BIND`) to its end.
fn serve_with(vars: &[(&str, &str)]) -> Finished {
    let mut command = binary();
    command
        .arg("serve")
        .env(ENV_BIND, format!("127.0.0.1:{}", test_support::free_port()));
    for (key, value) in vars {
        command.env(key, value);
    }
    run(command, Duration::from_secs(15))
}

/// Assert exit 64 (EX_USAGE) naming exactly `vars` as invalid.
#[track_caller]
fn assert_refused(finished: &Finished, vars: &[&str]) {
    assert_eq!(finished.status.code(), Some(64), "{finished:?}");
    let named: Vec<&str> = finished
        .stderr
        .lines()
        .filter_map(|line| line.strip_prefix("decnet-events: invalid configuration: "))
        .filter_map(|rest| rest.split_once(':').map(|(var, _)| var))
        .collect();
    let mut named = named;
    named.sort_unstable();
    let mut expected = vars.to_vec();
    expected.sort_unstable();
    assert_eq!(named, expected, "stderr:\n{}", finished.stderr);
    assert!(finished.stdout.is_empty(), "{finished:?}");
}

#[test]
fn configuration_errors_exit_64_naming_every_bad_variable() {
    let max_per_user = var("DECNET_SSE_MAX_PER_USER");
    let keepalive = var("DECNET_SSE_KEEPALIVE_SECS");

    assert_refused(&serve_with(&[(max_per_user, "abc")]), &[max_per_user]);
    // As a flag, the same check and the same name.
    let mut command = binary();
    command.args(["serve", "--sse-max-per-user", "abc"]);
    assert_refused(&run(command, Duration::from_secs(15)), &[max_per_user]);

    // DECNET refuses a wildcard origin; so do we.
    assert_refused(&serve_with(&[(ENV_CORS_ORIGINS, "*")]), &[ENV_CORS_ORIGINS]);

    // A real backend needs a secret, and a strong one.
    let postgres = [
        (ENV_DB_TYPE, "postgres"),
        (ENV_DATABASE_URL, "postgres://postgres@127.0.0.1:1/x"),
    ];
    assert_refused(&serve_with(&postgres), &[ENV_JWT_SECRET]);
    let mut short = postgres.to_vec();
    short.push((ENV_JWT_SECRET, "short-but-secret"));
    let refused = serve_with(&short);
    assert_refused(&refused, &[ENV_JWT_SECRET]);
    assert!(!refused.stderr.contains("short-but-secret"), "{refused:?}");

    // Every bad variable at once, before any port is bound, and a secret
    // is never echoed.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let bind = held.local_addr().expect("addr").to_string();
    let mut command = binary();
    command
        .arg("serve")
        .env(ENV_BIND, &bind)
        .env(keepalive, "0")
        .env(ENV_DB_TYPE, "oracle")
        .env(ENV_CORS_ORIGINS, "https://ok.example, *")
        .env(ENV_JWT_SECRET, "hunter2-hunter2");
    let several = run(command, Duration::from_secs(15));
    assert_refused(
        &several,
        &[keepalive, ENV_DB_TYPE, ENV_CORS_ORIGINS, ENV_JWT_SECRET],
    );
    assert!(!several.stderr.contains("hunter2"), "{several:?}");
    assert!(!several.stderr.contains("binding"), "{several:?}");
}

/// The embedded demo on a free port: the process and what its banner says.
struct Demo {
    child: ChildProcess,
    addr: SocketAddr,
    attacker: String,
    token: String,
    /// The ticket [`Demo::stream`] last spent.
    last_ticket: Option<String>,
}

/// The demo attacker and token from the banner, once both lines are whole.
fn banner(stdout: &str) -> Option<(String, String)> {
    let complete = &stdout[..stdout.rfind('\n').map_or(0, |n| n + 1)];
    let field = |label: &str| {
        complete
            .lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .map(|rest| rest.trim().to_owned())
    };
    Some((field("demo attacker:")?, field("token (24 h):")?))
}

/// Start the binary with nothing configured (only `PATH` and `HOME` kept,
/// plus `DECNET_BIND` on a free port and `vars`), through `sh -c <wrapper>
/// <binary>` when given, and wait for its banner.
fn start_demo(wrapper: Option<&str>, vars: &[(&str, &str)]) -> Demo {
    let mut last = String::new();
    for _ in 0..3 {
        let addr = SocketAddr::from(([127, 0, 0, 1], test_support::free_port()));
        let mut command = match wrapper {
            Some(script) => {
                let mut command = Command::new("sh");
                command.args(["-c", script, BIN]);
                command
            }
            None => Command::new(BIN),
        };
        command.env_clear();
        for key in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(key) {
                command.env(key, value);
            }
        }
        command.env(ENV_BIND, addr.to_string());
        command.envs(vars.iter().copied());
        let mut child = ChildProcess::spawn(
            "decnet-events",
            &mut command,
            Output::Capture,
            Output::Capture,
        )
        .expect("spawn decnet-events");
        let waited = child.wait_for(
            "the demo banner",
            START_TIMEOUT,
            Duration::from_millis(20),
            |child| banner(&child.stdout()).is_some(),
        );
        match waited {
            Ok(()) => {
                let (attacker, token) = banner(&child.stdout()).expect("banner");
                return Demo {
                    child,
                    addr,
                    attacker,
                    token,
                    last_ticket: None,
                };
            }
            // The free port was taken between the probe and the bind.
            Err(WaitError::Exited { .. }) if child.stderr().contains("binding") => {
                last = child.stderr();
            }
            Err(error) => panic!(
                "{error}\nstdout:\n{}\nstderr:\n{}",
                child.stdout(),
                child.stderr()
            ),
        }
    }
    panic!("no free port could be bound three times: {last}");
}

impl Demo {
    /// Wait for `/readyz` 200 (the hub subscribed to the memory bus).
    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let answer = tokio::time::timeout(
                Duration::from_secs(2),
                http::try_request(self.addr, "GET", "/readyz", &[]),
            )
            .await;
            if let Ok(Ok(response)) = answer
                && response.status == 200
                && response.json()["hub"] == "subscribed"
            {
                return;
            }
            if let Some(status) = self.child.try_exit() {
                panic!(
                    "the demo exited ({status}) before it was ready\nstderr:\n{}",
                    self.child.stderr()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the demo was not ready within {START_TIMEOUT:?}\nstderr:\n{}",
                self.child.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The demo attacker's stream, opened with a ticket minted from the
    /// banner's token, after its snapshot.
    async fn stream(&mut self) -> (SseStream, Value) {
        let auth = format!("Bearer {}", self.token);
        let response = http::request(
            self.addr,
            "POST",
            http::TICKET_PATH,
            &[("authorization", &auth)],
        )
        .await;
        assert_eq!(response.status, 200, "{}", response.text());
        let ticket = response.json()["ticket"]
            .as_str()
            .expect("ticket")
            .to_owned();
        let mut stream =
            SseStream::open(self.addr, &events_path(&self.attacker, Some(&ticket)), &[]).await;
        let snapshot = stream.expect_snapshot().await;
        self.last_ticket = Some(ticket);
        (stream, snapshot)
    }
}

/// Poll the child until it exits (bounded), without blocking the runtime.
async fn exit_within(child: &mut ChildProcess, within: Duration) -> ExitStatus {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_exit() {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "did not exit within {within:?}\nstderr:\n{}",
            child.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_embedded_demo_prints_its_banner_and_streams_live() {
    let mut demo = start_demo(None, &[]);
    assert_eq!(demo.attacker.len(), 36, "{}", demo.attacker);
    assert_eq!(demo.token.split('.').count(), 3, "{}", demo.token);
    let stdout = demo.child.stdout();
    let base = format!("http://{}", demo.addr);
    assert!(
        stdout.contains(&format!(
            "{base}/#token={}&kind=attacker&key={}&also=identities",
            demo.token, demo.attacker
        )),
        "the console link:\n{stdout}"
    );
    assert!(stdout.contains("curl -N"), "copy-paste commands:\n{stdout}");
    demo.wait_ready().await;

    let (mut stream, snapshot) = demo.stream().await;
    assert_eq!(snapshot["attacker_uuid"], demo.attacker.as_str());
    assert!(
        snapshot["observations"]
            .as_array()
            .is_some_and(|o| !o.is_empty()),
        "{snapshot}"
    );
    // The generator publishes an event a second, an observation of the
    // demo attacker among every ten.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "no live observation within 15 s");
        let frame = stream.next_event(left).await;
        assert!(!frame.id.is_empty(), "live frames carry an id: {frame:?}");
        if frame.event == "observation" {
            let data: Value = serde_json::from_str(&frame.data).expect("json");
            assert!(
                data["topic"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("attacker.observation.")),
                "{data}"
            );
            assert_eq!(data["payload"]["attacker_uuid"], demo.attacker.as_str());
            break;
        }
    }
}

#[tokio::test]
async fn sigterm_with_a_stream_open_exits_0_and_ends_the_stream_cleanly() {
    let mut demo = start_demo(None, &[]);
    demo.wait_ready().await;
    let (mut stream, _) = demo.stream().await;
    demo.child.signal(Signal::Term).expect("SIGTERM");
    let started = tokio::time::Instant::now();
    let (status, items) = tokio::join!(
        exit_within(&mut demo.child, Duration::from_secs(15)),
        stream.expect_eof(Duration::from_secs(15)),
    );
    assert!(
        status.success(),
        "{status}\nstderr:\n{}",
        demo.child.stderr()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
    // A clean end: no error frame (live demo events may come first).
    assert!(
        !items
            .iter()
            .any(|item| matches!(item, Decoded::Event(e) if e.event == "error")),
        "{items:?}"
    );
    assert!(matches!(
        stream.try_next(Duration::from_millis(10)).await,
        Next::Eof
    ));
    assert!(tokio::net::TcpStream::connect(demo.addr).await.is_err());
    let stderr = demo.child.stderr();
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
}

#[tokio::test]
async fn the_open_files_soft_limit_is_raised_to_the_hard_limit() {
    let hard = Command::new("sh")
        .args(["-c", "ulimit -H -n"])
        .output()
        .expect("sh");
    let hard = String::from_utf8_lossy(&hard.stdout).trim().to_owned();
    // Start with a soft limit below the hard one, so raising it shows.
    let mut demo = start_demo(Some("ulimit -S -n 256 && exec \"$0\" serve"), &[]);
    demo.wait_ready().await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", demo.child.id()))
        .expect("read /proc/<pid>/limits");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open files line:\n{limits}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    // "Max open files <soft> <hard> files"
    let (soft, hard_now) = (fields[3], fields[4]);
    assert_eq!(soft, hard_now, "soft limit raised to the hard one: {line}");
    assert_eq!(hard_now, hard, "{line}");
    if hard != "unlimited" {
        assert!(
            hard.parse::<u64>().is_ok_and(|n| n > 256),
            "the hard limit here ({hard}) leaves nothing to raise"
        );
    }
}

/// A test certificate or key of testdata/tls (testdata/README.md).
fn testdata_tls(name: &str) -> std::path::PathBuf {
    std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/tls")).join(name)
}

/// The DER of test certificate `which` (`a` or `b`).
fn certificate_der(which: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::from_pem_file(testdata_tls(&format!("cert-{which}.pem")))
        .expect("a PEM certificate")
        .to_vec()
}

/// A TLS client that trusts both test certificates and offers `h2`, so
/// that which one the server presents is what the test looks at.
fn tls_connector() -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for which in ["a", "b"] {
        roots
            .add(certificate_der(which).into())
            .expect("a usable root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

type H2Sender = hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// A new HTTPS connection speaking HTTP/2, and the DER of the certificate
/// the server presented on it.
async fn h2_connect(addr: SocketAddr) -> (H2Sender, Vec<u8>) {
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
        tls_connector().connect(name, tcp).await
    };
    let tls = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .expect("a TLS handshake within 10 s")
        .expect("TLS handshake");
    let (_, session) = tls.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
    let presented = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("the server presents a certificate")
        .to_vec();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    (sender, presented)
}

/// One request on `sender` (bounded); the response with its body unread.
async fn h2_send(
    sender: &mut H2Sender,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> hyper::Response<hyper::body::Incoming> {
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(http_body_util::Empty::new()).expect("request");
    tokio::time::timeout(http::HTTP_TIMEOUT, sender.send_request(request))
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer within {:?}", http::HTTP_TIMEOUT))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// One request on `sender`, its status and whole body as JSON.
async fn h2_json(
    sender: &mut H2Sender,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    use http_body_util::BodyExt as _;
    let response = h2_send(sender, method, path, headers).await;
    let status = response.status().as_u16();
    let body = tokio::time::timeout(http::HTTP_TIMEOUT, response.into_body().collect())
        .await
        .expect("the body within the bound")
        .expect("the body")
        .to_bytes();
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{path}: {e}: {}", String::from_utf8_lossy(&body)));
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_for_new_connections_and_keeps_open_streams() {
    // The certificate files the process is given, renewed in place below.
    let dir = std::env::temp_dir().join(format!("decnet-sighup-{}", test_support::unique_suffix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let install = |which: &str| {
        std::fs::copy(testdata_tls(&format!("cert-{which}.pem")), &cert).expect("copy cert");
        std::fs::copy(testdata_tls(&format!("key-{which}.pem")), &key).expect("copy key");
    };
    install("a");
    let mut demo = start_demo(
        None,
        &[
            (ENV_TLS_CERT, &cert.to_string_lossy()),
            (ENV_TLS_KEY, &key.to_string_lossy()),
        ],
    );
    assert!(
        demo.child
            .stdout()
            .contains(&format!("https://{}", demo.addr)),
        "{}",
        demo.child.stdout()
    );
    let (a, b) = (certificate_der("a"), certificate_der("b"));

    // Ready, over HTTPS + h2, with certificate a.
    let (mut sender, presented) = h2_connect(demo.addr).await;
    assert!(presented == a, "certificate a at start");
    http::poll_until(START_TIMEOUT, "/readyz 200 over TLS", || {
        let mut sender = sender.clone();
        async move {
            let (status, body) = h2_json(&mut sender, "GET", "/readyz", &[]).await;
            (status == 200 && body["hub"] == "subscribed").then_some(())
        }
    })
    .await;
    // The demo attacker's stream on that connection: its snapshot, then
    // the generator's live events (several every ten seconds).
    let auth = format!("Bearer {}", demo.token);
    let (status, minted) = h2_json(
        &mut sender,
        "POST",
        http::TICKET_PATH,
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(status, 200, "{minted}");
    let ticket = minted["ticket"].as_str().expect("ticket");
    let response = h2_send(
        &mut sender,
        "GET",
        &events_path(&demo.attacker, Some(ticket)),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    let mut stream = SseStream::from_response(response, sender.clone());
    stream.expect_snapshot().await;
    let before = stream.next_event(Duration::from_secs(20)).await;
    assert!(!before.id.is_empty(), "a live frame: {before:?}");

    // The renewal: new files in place, then SIGHUP. New connections get
    // certificate b (once the process has handled the signal).
    install("b");
    demo.child.signal(Signal::Hup).expect("SIGHUP");
    http::poll_until(
        Duration::from_secs(10),
        "certificate b on a new connection",
        || async { (h2_connect(demo.addr).await.1 == b).then_some(()) },
    )
    .await;
    // The reload is logged after the swap, and stderr is read by a thread:
    // the line can trail the first connection that sees certificate b.
    http::poll_until(Duration::from_secs(10), "the reload logged", || async {
        demo.child
            .stderr()
            .contains("SIGHUP: TLS certificate reloaded")
            .then_some(())
    })
    .await;
    // The stream opened under certificate a goes on, on its connection,
    // which also still takes new requests.
    let after = stream.next_event(Duration::from_secs(20)).await;
    assert_ne!(after.id, before.id, "a new live frame after the reload");
    let (status, _) = h2_json(&mut sender, "GET", "/healthz", &[]).await;
    assert_eq!(status, 200);

    // A bad renewal: logged, certificate b stays, nothing ends.
    std::fs::write(&key, "not a key").expect("write");
    demo.child.signal(Signal::Hup).expect("SIGHUP");
    http::poll_until(Duration::from_secs(10), "the refusal logged", || async {
        demo.child
            .stderr()
            .contains("SIGHUP: TLS certificate not reloaded")
            .then_some(())
    })
    .await;
    assert!(h2_connect(demo.addr).await.1 == b, "certificate b stays");
    let last = stream.next_event(Duration::from_secs(20)).await;
    assert_ne!(last.id, after.id);
    assert!(demo.child.try_exit().is_none(), "{}", demo.child.stderr());
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a demo logged on stderr, and the secrets it was given.
struct DemoLog {
    stderr: String,
    token: String,
    ticket: String,
    attacker: String,
}

/// The demo with `DECNET_LOG_FORMAT=<format>`, sent a 200, a 401 and a
/// stream open (a ticket minted, the stream read to its snapshot), then
/// SIGTERM.
async fn logs_of_a_demo(format: &str) -> DemoLog {
    let mut demo = start_demo(None, &[("DECNET_LOG_FORMAT", format)]);
    demo.wait_ready().await;
    assert_eq!(
        http::request(demo.addr, "GET", "/healthz", &[])
            .await
            .status,
        200
    );
    http::request(demo.addr, "GET", "/api/v1/identities/events", &[])
        .await
        .assert_401();
    let (stream, _) = demo.stream().await;
    drop(stream);
    let status = demo
        .child
        .terminate(Duration::from_secs(15))
        .expect("SIGTERM");
    assert!(
        status.success(),
        "{status}\nstderr:\n{}",
        demo.child.stderr()
    );
    let ticket = demo.last_ticket.clone().expect("a ticket was minted");
    DemoLog {
        stderr: demo.child.stderr(),
        token: demo.token,
        ticket,
        attacker: demo.attacker,
    }
}

/// One access-log record: (method, path, status), and the names of its
/// fields beyond timestamp, level, target and message.
type AccessRecord = ((String, String, String), Vec<String>);

/// The target of the access log.
const ACCESS_TARGET: &str = "decnet_events::access";
/// The levels a line may have.
const LEVELS: [&str; 5] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];

/// `2026-12-02T07:20:17.123456Z`: the timestamp both formats write (RFC
/// 3339, UTC, a fraction of a second).
fn is_rfc3339_utc(text: &str) -> bool {
    let shape = text.bytes().enumerate().all(|(i, b)| match i {
        4 | 7 => b == b'-',
        10 => b == b'T',
        13 | 16 => b == b':',
        19 => b == b'.',
        _ if i == text.len() - 1 => b == b'Z',
        _ => b.is_ascii_digit(),
    });
    shape && text.len() > 21
}

/// Every line of a JSON log: one object with a timestamp, a level, a target
/// and a message. Its (target, message) pairs and access records.
fn parse_json_log(log: &str) -> (BTreeSet<(String, String)>, Vec<AccessRecord>) {
    let (mut messages, mut access) = (BTreeSet::new(), Vec::new());
    for line in log.lines() {
        let object: serde_json::Map<String, Value> = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line:?}"));
        let text = |key: &str| match object.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => panic!("no {key:?}: {line}"),
        };
        assert!(is_rfc3339_utc(&text("timestamp")), "{line}");
        assert!(LEVELS.contains(&text("level").as_str()), "{line}");
        let (target, message) = (text("target"), text("message"));
        if target == ACCESS_TARGET {
            let mut names: Vec<String> = object
                .keys()
                // The span list is the text format's prefix, not a field.
                .filter(|k| {
                    !["timestamp", "level", "target", "message", "spans"].contains(&k.as_str())
                })
                .cloned()
                .collect();
            names.sort();
            access.push(((text("method"), text("path"), text("status")), names));
        }
        messages.insert((target, message));
    }
    (messages, access)
}

/// Every line of a text log: `<timestamp> <LEVEL> [<spans>: ]<target>:
/// <message> [<name>=<value> ...]`, no terminal colours. Its (target,
/// message) pairs and access records.
fn parse_text_log(log: &str) -> (BTreeSet<(String, String)>, Vec<AccessRecord>) {
    let (mut messages, mut access) = (BTreeSet::new(), Vec::new());
    for line in log.lines() {
        assert!(
            !line.contains('\u{1b}'),
            "terminal colours in a log: {line:?}"
        );
        let (timestamp, rest) = line.split_once(' ').unwrap_or((line, ""));
        assert!(is_rfc3339_utc(timestamp), "{line:?}");
        let (level, rest) = rest.trim_start().split_once(' ').unwrap_or((rest, ""));
        assert!(LEVELS.contains(&level), "{line:?}");
        let (target, rest) =
            text_target(rest).unwrap_or_else(|| panic!("no `target: ` in {line:?}"));
        // The message: the words before the first `name=value`.
        let words: Vec<&str> = rest.split(' ').collect();
        let split = words
            .iter()
            .position(|w| w.contains('='))
            .unwrap_or(words.len());
        let message = words[..split].join(" ");
        if target == ACCESS_TARGET {
            let fields: BTreeMap<&str, &str> = words[split..]
                .iter()
                .filter_map(|pair| pair.split_once('='))
                .collect();
            let field = |key: &str| fields.get(key).map(|v| (*v).to_owned()).unwrap_or_default();
            let names = fields.keys().map(|k| (*k).to_owned()).collect();
            access.push(((field("method"), field("path"), field("status")), names));
        }
        messages.insert((target.to_owned(), message));
    }
    (messages, access)
}

/// The target of a text log line after its level, and what follows it:
/// the spans (each `name{fields}`, joined by `:`) come first, then
/// `<target>: `.
fn text_target(rest: &str) -> Option<(&str, &str)> {
    let bytes = rest.as_bytes();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, byte) in bytes.iter().enumerate() {
        match byte {
            b'{' => depth += 1,
            b'}' => depth = depth.saturating_sub(1),
            b':' if depth == 0 && bytes.get(i + 1) == Some(&b' ') => {
                let head = &rest[start..i];
                if !head.contains(['{', '}']) {
                    return Some((head, &rest[i + 2..]));
                }
                start = i + 2;
            }
            _ => {}
        }
    }
    None
}

#[tokio::test]
async fn json_logs_are_one_object_a_line_with_the_fields_of_the_text_logs() {
    let json = logs_of_a_demo("json").await;
    let text = logs_of_a_demo("text").await;
    let (json_messages, json_access) = parse_json_log(&json.stderr);
    let (text_messages, text_access) = parse_text_log(&text.stderr);

    // The same events in both formats.
    assert_eq!(json_messages, text_messages);
    for (log, access) in [(&json, &json_access), (&text, &text_access)] {
        let mut requests: Vec<(&str, String, &str)> = access
            .iter()
            .map(|((method, path, status), _)| (method.as_str(), path.clone(), status.as_str()))
            .collect();
        requests.sort();
        let stream = format!("/api/v1/attackers/{}/events", log.attacker);
        for request in [
            ("GET", "/healthz".to_owned(), "200"),
            ("GET", "/api/v1/identities/events".to_owned(), "401"),
            ("POST", http::TICKET_PATH.to_owned(), "200"),
            ("GET", stream, "200"),
        ] {
            assert!(
                requests.contains(&request),
                "{request:?} not in {requests:?}"
            );
        }
        // The same redaction: the token and the ticket spent are nowhere.
        assert!(!log.stderr.contains(&log.ticket), "{}", log.stderr);
        assert!(!log.stderr.contains(&log.token), "{}", log.stderr);
    }
    // Every access record has the same fields, in both formats.
    for (_, names) in json_access.iter().chain(&text_access) {
        assert_eq!(
            names,
            &["latency_ms", "method", "path", "peer", "query", "status"],
            "{json_access:?}\n{text_access:?}"
        );
    }
}

#[test]
fn mint_token_prints_a_token_the_server_accepts() {
    let user = uuid::Uuid::new_v4().to_string();
    let mut command = binary();
    command
        .args(["mint-token", "--user", &user, "--ttl-secs", "120"])
        .env(ENV_JWT_SECRET, SECRET);
    let minted = run(command, Duration::from_secs(15));
    assert!(minted.status.success(), "{minted:?}");
    let token = minted.stdout.trim().to_owned();
    assert_eq!(minted.stdout, format!("{token}\n"), "one line: the token");

    // The verifier of the server, over a repository that knows the user.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let identity = runtime.block_on(async {
        use decnet_repo::RepositoryWriter as _;
        let repo = std::sync::Arc::new(decnet_repo::MemoryRepository::new());
        repo.create_user(&decnet_repo::User {
            uuid: user.clone(),
            username: "minted".into(),
            password_hash: "!".into(),
            role: "viewer".into(),
            must_change_password: false,
            tokens_valid_from: None,
        })
        .await
        .expect("user");
        let verifier =
            decnet_auth::TokenVerifier::new(decnet_auth::VerifierConfig::new(SECRET), repo.clone());
        let identity = verifier.verify(&token).await.expect("a valid token");
        let other =
            decnet_auth::TokenVerifier::new(decnet_auth::VerifierConfig::new("another"), repo);
        assert!(
            other.verify(&token).await.is_err(),
            "signed with the secret"
        );
        identity
    });
    assert_eq!(identity.user_uuid, user);
    assert_eq!(identity.exp - identity.iat, 120);

    // Usage errors: clap's exit code 2, naming what is missing.
    let mut command = binary();
    command.arg("mint-token").env(ENV_JWT_SECRET, SECRET);
    let missing = run(command, Duration::from_secs(15));
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    assert!(missing.stderr.contains("--user"), "{missing:?}");
    let mut command = binary();
    command.args(["mint-token", "--user", &user]);
    let no_secret = run(command, Duration::from_secs(15));
    assert_eq!(no_secret.status.code(), Some(64), "{no_secret:?}");
    assert!(
        no_secret.stderr.contains("DECNET_JWT_SECRET") && no_secret.stderr.contains("--jwt-secret"),
        "{no_secret:?}"
    );
}

#[test]
fn publish_needs_a_real_bus() {
    let mut command = binary();
    command.args(["publish", "attacker.observation.x", "{}"]);
    let refused = run(command, Duration::from_secs(15));
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("publish needs a real bus"),
        "{refused:?}"
    );
    let mut command = binary();
    command.args(["publish", "attacker.observation.x", "[1]"]);
    let refused = run(command, Duration::from_secs(15));
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(refused.stderr.contains("JSON object"), "{refused:?}");
}

#[test]
fn migrate_refuses_the_memory_repository() {
    let mut command = binary();
    command.arg("migrate");
    let refused = run(command, Duration::from_secs(15));
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(refused.stderr.contains("nothing to migrate"), "{refused:?}");
}

mod svc_postgres {
    use super::*;

    #[tokio::test]
    async fn migrate_a_fresh_schema_then_again_is_up_to_date() {
        let url = test_support::require_service!(test_support::Service::Postgres);
        let (schema, _guard) = test_support::pg::fresh_schema(&url).await;
        let sep = if url.contains('?') { '&' } else { '?' };
        let in_schema = format!("{url}{sep}options=-csearch_path%3D{schema}");
        let migrate = || {
            let mut command = binary();
            command
                .args(["migrate", "--database-url", &in_schema])
                .env(ENV_JWT_SECRET, SECRET);
            run(command, Duration::from_secs(60))
        };
        let first = migrate();
        assert!(first.status.success(), "{first:?}");
        assert!(
            first.stdout.starts_with("applied migrations: ["),
            "{first:?}"
        );
        let client = test_support::pg::connect_in_schema(&url, &schema).await;
        let row = client
            .query_one(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 \
                 AND table_name IN ('users', 'revoked_tokens', 'attackers', 'observations')",
                &[&schema],
            )
            .await
            .expect("count tables");
        assert_eq!(row.get::<_, i64>(0), 4, "the tables are in {schema}");
        let again = migrate();
        assert!(again.status.success(), "{again:?}");
        assert_eq!(again.stdout, "database schema is up to date\n", "{again:?}");
    }
}

mod svc_nats {
    use super::*;

    /// Known failure (a bug in decnet-bus, not worked around here): on a
    /// busy machine `publish` prints "published on <topic>" and exits 0
    /// while the event never reaches the broker, because `NatsBus::close`
    /// calls `async_nats::Client::drain()`, which only queues a drain
    /// command and returns, and the process exits before the connection
    /// task has written the buffered PUB. With `self.client.flush()` before
    /// the drain, this test passed 15 runs of 15 under CPU load; without
    /// it, 6 of 15.
    #[tokio::test]
    async fn publish_reaches_a_subscriber() {
        use futures::StreamExt as _;
        let url = test_support::require_service!(test_support::Service::Nats);
        let bus = decnet_bus::Bus::connect(&decnet_bus::BusConfig {
            kind: decnet_bus::BusKind::Nats,
            nats_url: Some(url.clone()),
            ..decnet_bus::BusConfig::default()
        })
        .await
        .expect("connect to NATS");
        // A topic root of this test's own: nobody else publishes there.
        let root = format!("e2e_{}", test_support::unique_suffix());
        let topic = format!("{root}.probe.published");
        let mut subscription = bus
            .subscribe(&format!("{root}.>"))
            .await
            .expect("subscribe");
        // The client connects in the background: prove the subscription is
        // in place at the server with a probe of our own (one connection,
        // so the probe comes back only after the SUB was processed).
        let probe = format!("{root}.probe.warmup");
        let probe_back = async {
            loop {
                let _ = bus.publish(&probe, "", serde_json::Map::new()).await;
                if let Ok(Some(event)) =
                    tokio::time::timeout(Duration::from_millis(500), subscription.next()).await
                {
                    assert_eq!(event.topic, probe);
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), probe_back)
            .await
            .expect("the subscription is live at the server");
        let mut command = binary();
        command
            .args([
                "publish",
                &topic,
                r#"{"marker": 7, "nested": {"ok": true}}"#,
                "--type",
                "probe",
            ])
            .env(decnet_bus::ENV_BUS_TYPE, "nats")
            .env(decnet_bus::ENV_NATS_URL, &url)
            .env(ENV_JWT_SECRET, SECRET);
        let published = tokio::task::spawn_blocking(move || run(command, Duration::from_secs(30)))
            .await
            .expect("run publish");
        assert!(published.status.success(), "{published:?}");
        assert_eq!(published.stdout, format!("published on {topic}\n"));
        let event = tokio::time::timeout(Duration::from_secs(10), subscription.next())
            .await
            .unwrap_or_else(|_| panic!("the event did not arrive; publish: {published:?}"))
            .expect("subscription open");
        assert_eq!(event.topic, topic);
        assert_eq!(event.event_type, "probe");
        assert_eq!(
            Value::Object(event.payload),
            serde_json::json!({"marker": 7, "nested": {"ok": true}})
        );
        assert_eq!(event.id.len(), 32, "a hex uuid: {}", event.id);
    }
}
