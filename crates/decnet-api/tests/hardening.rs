//! The holes an outside review found, each proven closed through `serve()`
//! on 127.0.0.1:0 with in-process memory backends (issue #10): a client that
//! stops reading cannot hold a connection, its slot or its session; ticket
//! and open-rate floods are refused; connection caps hold; bus topics never
//! become metric labels; an `exp` beyond the clock does not panic; the ops
//! endpoints can leave the public listener.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use decnet_api::{App, AppConfig, AppParts, ServeConfig};
use decnet_auth::{ConnectionLimiter, MemoryTicketStore, TokenVerifier, VerifierConfig};
use decnet_bus::Bus;
use decnet_repo::prelude::*;
use decnet_repo::{Attacker, MemoryRepository, User};
use decnet_stream::{HubConfig, StreamHub, decnet_kinds};
use serde_json::{Value, json};
use test_support::http::{metric, poll_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &[u8] = b"hardening-test-secret-of-32-bytes!!";
const USER: &str = "9a6f0c1e-0000-4000-8000-00000000beef";
const ATTACKER: &str = "5f0c7a52-0000-4000-8000-00000000a77a";

struct Server {
    addr: SocketAddr,
    app: App,
    bus: Bus,
    /// The repository behind the app (to revoke what it holds).
    repo: MemoryRepository,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(app_config: AppConfig, serve_config: ServeConfig) -> Server {
        Self::start_with(app_config, serve_config, HubConfig::default()).await
    }

    async fn start_with(
        app_config: AppConfig,
        serve_config: ServeConfig,
        hub_config: HubConfig,
    ) -> Server {
        let repo = MemoryRepository::new();
        repo.create_user(&User {
            uuid: USER.into(),
            username: "analyst".into(),
            password_hash: "!".into(),
            role: "viewer".into(),
            must_change_password: false,
            tokens_valid_from: None,
        })
        .await
        .expect("user");
        repo.upsert_attacker(&Attacker {
            uuid: ATTACKER.into(),
            ip: "203.0.113.9".into(),
            identity_id: None,
        })
        .await
        .expect("attacker");
        let reader: Arc<dyn decnet_repo::Repository> = Arc::new(repo.clone());
        let bus = Bus::memory();
        let hub = StreamHub::start(bus.clone(), decnet_kinds(&reader), hub_config);
        tokio::time::timeout(Duration::from_secs(5), hub.wait_subscribed())
            .await
            .expect("hub subscribed");
        let app = App::new(
            AppParts {
                hub,
                verifier: TokenVerifier::new(VerifierConfig::new(SECRET), reader.clone()),
                tickets: Arc::new(MemoryTicketStore::default()),
                limiter: ConnectionLimiter::new(5, None),
                health: reader,
                breaker: decnet_api::RepositoryBreaker::default(),
                bus: bus.clone(),
                logs: None,
            },
            app_config,
            Vec::new(),
        );
        Self::serve(app, bus, repo, serve_config).await
    }

    async fn serve(app: App, bus: Bus, repo: MemoryRepository, config: ServeConfig) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(decnet_api::serve(
            listener,
            app.clone(),
            config,
            async move {
                let _ = stopped.await;
            },
        ));
        Server {
            addr,
            app,
            bus,
            repo,
            stop: Some(stop),
            task,
        }
    }

    fn token(&self, ttl: Duration) -> String {
        decnet_auth::mint_access_token(SECRET, USER, ttl)
            .expect("token")
            .0
    }

    async fn ticket(&self, token: &str) -> String {
        let (status, body) = request(
            self.addr,
            "POST",
            "/api/v1/auth/sse-ticket",
            &[("Authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).expect("json")["ticket"]
            .as_str()
            .expect("ticket")
            .to_owned()
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), &mut self.task).await;
    }
}

/// One request on a fresh connection; the whole response (the head's status
/// and the body, chunked or not, up to the connection's close).
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}

/// Open a stream with a tiny receive window and never read it.
async fn open_and_never_read(addr: SocketAddr, path: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut stream = socket.connect(addr).await.expect("connect");
    let head = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream
}

/// Wait until `cond` holds, for at most `within`.
async fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the server closed `stream`: reading (all it sent) reaches EOF or
/// a reset within `within`.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = vec![0u8; 1 << 20];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// A keep-alive connection from `from` that the server has answered, so
/// holds; `None` when the server closed it (at accept).
async fn try_hold(addr: SocketAddr, from: IpAddr) -> Option<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("bind the client address");
    let mut stream = socket.connect(addr).await.ok()?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .ok()?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(br#"{"status":"ok"}"#) {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    Some(stream)
}

/// A connection from `from` the server holds, once the server has a slot
/// for it (a slot another connection frees is freed when its task ends,
/// just after its socket closes).
async fn hold(addr: SocketAddr, from: IpAddr) -> TcpStream {
    poll_until(Duration::from_secs(5), "a held connection", || {
        try_hold(addr, from)
    })
    .await
}

/// Whether a connection from `from` is closed by the server before it
/// answers (refused at accept).
async fn refused(addr: SocketAddr, from: IpAddr) -> bool {
    try_hold(addr, from).await.is_none()
}

/// Publish 16 KiB events until the stream behind a never-reading client
/// drops frames: its queue overflowed, so its body is not polled: its
/// socket is blocked.
async fn block_the_socket(server: &Server) {
    poll_until(Duration::from_secs(10), "a blocked stream", || async {
        for _ in 0..20 {
            let _ = server
                .bus
                .publish("attacker.scored", "scored", big_payload(16 * 1024))
                .await;
        }
        let text = server.app.metrics_text();
        metric(&text, "decnet_sse_frames_dropped_total")
            .is_some_and(|n| n >= 1.0)
            .then_some(())
    })
    .await;
}

fn big_payload(n: usize) -> serde_json::Map<String, Value> {
    let Value::Object(map) = json!({"attacker_uuid": ATTACKER, "blob": "x".repeat(n)}) else {
        unreachable!("a literal object")
    };
    map
}

/// Finding 1: a never-reading client is dropped once its writes make no
/// progress for the write timeout, and its slot is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_and_its_slot_freed() {
    let server = Server::start(
        AppConfig::default(),
        ServeConfig {
            write_timeout: Duration::from_secs(2),
            stream_sndbuf: 8192,
            ..ServeConfig::default()
        },
    )
    .await;
    let token = server.token(Duration::from_secs(3600));
    let ticket = server.ticket(&token).await;
    let mut stream = open_and_never_read(
        server.addr,
        &format!("/api/v1/attackers/{ATTACKER}/events?ticket={ticket}"),
    )
    .await;
    let limiter = server.app.limiter().clone();
    wait_until(Duration::from_secs(5), "the stream to open", || {
        limiter.active() == 1
    })
    .await;
    // Fill every buffer between us: 200 events of 16 KiB.
    for _ in 0..200 {
        let _ = server
            .bus
            .publish("attacker.scored", "scored", big_payload(16 * 1024))
            .await;
    }
    wait_until(
        Duration::from_secs(15),
        "the server to drop the stalled connection",
        || limiter.active() == 0,
    )
    .await;
    assert!(closed_by_server(&mut stream, Duration::from_secs(5)).await);
    server.shutdown().await;
}

/// Finding 2: a client that stops reading cannot outrun its token's `exp`:
/// the connection task ends it, whatever the body's socket does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_enforced_outside_the_body() {
    let server = Server::start(
        AppConfig::default(),
        ServeConfig {
            // Long enough that only the session, not the write timeout, ends it.
            write_timeout: Duration::from_secs(60),
            session_end_grace: Duration::from_millis(500),
            stream_sndbuf: 8192,
            ..ServeConfig::default()
        },
    )
    .await;
    let token = server.token(Duration::from_secs(3));
    let ticket = server.ticket(&token).await;
    let mut stream = open_and_never_read(
        server.addr,
        &format!("/api/v1/attackers/{ATTACKER}/events?ticket={ticket}"),
    )
    .await;
    let limiter = server.app.limiter().clone();
    wait_until(Duration::from_secs(5), "the stream to open", || {
        limiter.active() == 1
    })
    .await;
    for _ in 0..200 {
        let _ = server
            .bus
            .publish("attacker.scored", "scored", big_payload(16 * 1024))
            .await;
    }
    let opened = tokio::time::Instant::now();
    wait_until(
        Duration::from_secs(10),
        "the expired stream to be dropped",
        || limiter.active() == 0,
    )
    .await;
    // exp is whole seconds: at most 3 s + the 0.5 s grace, well before the write timeout.
    assert!(
        opened.elapsed() < Duration::from_secs(6),
        "{:?}",
        opened.elapsed()
    );
    assert!(closed_by_server(&mut stream, Duration::from_secs(5)).await);
    server.shutdown().await;
}

/// Finding 2: a client that stops reading cannot outrun its revocation:
/// once its `jti` is denylisted, the connection task ends the stream within
/// the revalidation interval and the grace, whatever the body's socket does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_is_enforced_outside_the_body() {
    let revalidate_every = Duration::from_millis(500);
    let grace = Duration::from_millis(500);
    let server = Server::start_with(
        AppConfig::default(),
        ServeConfig {
            // Long enough that only the revocation, not the write timeout, ends it.
            write_timeout: Duration::from_secs(60),
            session_end_grace: grace,
            stream_sndbuf: 8192,
            ..ServeConfig::default()
        },
        HubConfig {
            revalidate_every,
            ..HubConfig::default()
        },
    )
    .await;
    let (token, claims) =
        decnet_auth::mint_access_token(SECRET, USER, Duration::from_secs(3600)).expect("token");
    let ticket = server.ticket(&token).await;
    let mut stream = open_and_never_read(
        server.addr,
        &format!("/api/v1/attackers/{ATTACKER}/events?ticket={ticket}"),
    )
    .await;
    let limiter = server.app.limiter().clone();
    wait_until(Duration::from_secs(5), "the stream to open", || {
        limiter.active() == 1
    })
    .await;
    block_the_socket(&server).await;
    assert_eq!(limiter.active(), 1, "the blocked stream is still open");

    server
        .repo
        .revoke_token(
            &claims.jti,
            USER,
            UNIX_EPOCH + Duration::from_secs(claims.exp),
        )
        .await
        .expect("revoke the token");
    let revoked = tokio::time::Instant::now();
    wait_until(
        Duration::from_secs(10),
        "the revoked stream to be dropped",
        || limiter.active() == 0,
    )
    .await;
    // One revalidation interval, the grace, and scheduling slack: far from
    // the 60 s write timeout.
    let budget = revalidate_every + grace + Duration::from_secs(2);
    assert!(
        revoked.elapsed() < budget,
        "{:?} >= {budget:?}",
        revoked.elapsed()
    );
    assert!(closed_by_server(&mut stream, Duration::from_secs(5)).await);
    // The revoked token mints nothing any more.
    let (status, _) = request(
        server.addr,
        "POST",
        "/api/v1/auth/sse-ticket",
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(status, 401);
    server.shutdown().await;
}

/// Finding 3: live tickets are capped per user (429 with a detail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_flood_is_refused_per_user() {
    let server = Server::start(AppConfig::default(), ServeConfig::default()).await;
    let token = server.token(Duration::from_secs(3600));
    for _ in 0..20 {
        server.ticket(&token).await;
    }
    let (status, body) = request(
        server.addr,
        "POST",
        "/api/v1/auth/sse-ticket",
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).ok(),
        Some(json!({"detail": "SSE ticket limit (20) reached"}))
    );
    server.shutdown().await;
}

/// Finding 4: stream opens (and the repository lookups behind the 404) are
/// rate-limited per user, and connections are capped per client address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_rate_limited_and_connections_capped() {
    let server = Server::start(
        AppConfig {
            open_rate: 1.0,
            open_burst: 5,
            ..AppConfig::default()
        },
        ServeConfig {
            max_connections_per_ip: 3,
            ..ServeConfig::default()
        },
    )
    .await;
    let token = server.token(Duration::from_secs(3600));
    let auth = format!("Bearer {token}");
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let (status, _) = request(
            server.addr,
            "GET",
            "/api/v1/attackers/nobody/events",
            &[("Authorization", &auth)],
        )
        .await;
        statuses.push(status);
    }
    assert_eq!(&statuses[..5], &[404; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");

    // Three held connections (each answered, so counted); the fourth is
    // closed at accept; one closed frees its slot.
    let local = IpAddr::from([127, 0, 0, 1]);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(hold(server.addr, local).await);
    }
    assert!(
        refused(server.addr, local).await,
        "a fourth from one address"
    );
    held.pop();
    held.push(hold(server.addr, local).await);
    drop(held);
    server.shutdown().await;
}

/// Finding 4: `DECNET_MAX_CONNECTIONS` caps the connections of every
/// address together, and a closed one frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_per_instance_across_addresses() {
    let server = Server::start(
        AppConfig::default(),
        ServeConfig {
            max_connections: 3,
            // Not the per-address cap: each address holds one at most.
            max_connections_per_ip: 2,
            ..ServeConfig::default()
        },
    )
    .await;
    // 127.0.0.0/8 is loopback on Linux: one client address per connection.
    let from = |n: u8| IpAddr::from([127, 0, 0, n]);
    let mut held = Vec::new();
    for n in 2..5 {
        held.push(hold(server.addr, from(n)).await);
    }
    assert!(
        refused(server.addr, from(5)).await,
        "a fourth connection, from an address holding none"
    );
    // One closes: its slot goes to the next address.
    held.remove(0);
    held.push(hold(server.addr, from(5)).await);
    assert!(refused(server.addr, from(6)).await, "the cap holds again");
    drop(held);
    server.shutdown().await;
}

/// Finding 5: a topic with `"` and a newline never becomes a label; the
/// scrape stays parseable and counts it under `other`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_topics_never_become_metric_labels() {
    let server = Server::start(AppConfig::default(), ServeConfig::default()).await;
    let token = server.token(Duration::from_secs(3600));
    let ticket = server.ticket(&token).await;
    let addr = server.addr;
    let reader = tokio::spawn(async move {
        request(
            addr,
            "GET",
            &format!("/api/v1/identities/events?ticket={ticket}"),
            &[],
        )
        .await
    });
    wait_until(Duration::from_secs(5), "the stream", || {
        server.app.limiter().active() == 1
    })
    .await;
    for topic in ["identity.x\"y", "identity.formed"] {
        server
            .bus
            .publish(topic, "t", serde_json::Map::new())
            .await
            .expect("publish");
    }
    let text = server.app.metrics_text();
    wait_until(Duration::from_secs(5), "the frames to be counted", || {
        server.app.metrics_text().contains("event=\"other\"")
    })
    .await;
    assert!(!text.contains("x\\\"y") && !text.contains("x\"y"), "{text}");
    for line in server.app.metrics_text().lines() {
        assert!(
            line.starts_with('#') || line.split_whitespace().count() == 2,
            "unparseable metrics line: {line:?}"
        );
    }
    reader.abort();
    server.shutdown().await;
}

/// Finding 8: a signed token with `exp` beyond the clock opens a stream (no
/// deadline) instead of panicking; extreme `iat`/`nbf` are refused, not fatal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_times_in_a_signed_token_never_panic() {
    let server = Server::start(AppConfig::default(), ServeConfig::default()).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = |exp: u64, iat: u64, nbf: Option<u64>| {
        let mut value = json!({
            "uuid": USER, "jti": format!("jti-{exp}-{iat}"), "exp": exp, "iat": iat,
            "iss": "decnet", "aud": "decnet-dashboard", "typ": "access",
        });
        if let Some(nbf) = nbf {
            value["nbf"] = json!(nbf);
        }
        decnet_auth::encode_claims(SECRET, &value).expect("sign")
    };
    let forever = claims(u64::MAX, now, None);
    let (status, body) = request(
        server.addr,
        "POST",
        "/api/v1/auth/sse-ticket",
        &[("Authorization", &format!("Bearer {forever}"))],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for token in [
        claims(u64::MAX, u64::MAX, None),
        claims(u64::MAX, now, Some(u64::MAX)),
        claims(0, 0, Some(0)),
    ] {
        let (status, _) = request(
            server.addr,
            "POST",
            "/api/v1/auth/sse-ticket",
            &[("Authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(status, 401);
    }
    // The server is still up.
    assert_eq!(request(server.addr, "GET", "/healthz", &[]).await.0, 200);
    server.shutdown().await;
}

/// Finding 9: with an ops listener, /readyz and /metrics leave the public one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_endpoints_can_leave_the_public_listener() {
    let server = Server::start(
        AppConfig {
            ops_on_main: false,
            ..AppConfig::default()
        },
        ServeConfig::default(),
    )
    .await;
    assert_eq!(request(server.addr, "GET", "/metrics", &[]).await.0, 404);
    assert_eq!(request(server.addr, "GET", "/readyz", &[]).await.0, 404);
    assert_eq!(request(server.addr, "GET", "/healthz", &[]).await.0, 200);
    let ops = Server::serve(
        server.app.ops(),
        server.bus.clone(),
        server.repo.clone(),
        ServeConfig::default(),
    )
    .await;
    assert_eq!(request(ops.addr, "GET", "/metrics", &[]).await.0, 200);
    assert_eq!(request(ops.addr, "GET", "/readyz", &[]).await.0, 200);
    assert_eq!(
        request(ops.addr, "GET", "/api/v1/auth/sse-ticket", &[])
            .await
            .0,
        404
    );
    ops.shutdown().await;
    server.shutdown().await;
}
