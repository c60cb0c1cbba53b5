//! HTTPS and HTTP/2 through `serve()`, with hyper's client over rustls:
//! ALPN picks h2 or HTTP/1.1 on one port; more than 100 streams share one
//! HTTP/2 connection and every one gets the live event; the per-user cap,
//! session expiry and shutdown act per HTTP/2 stream; a certificate reload
//! serves the new certificate to new connections and keeps open streams.
//! Below hyper (the `h2` crate, raw frames): keepalive comments and PINGs,
//! the access log, GOAWAY before the streams end at shutdown, and the
//! flow-control windows the server gives (64 KiB a stream, 1 MiB a
//! connection).

mod capture;
mod front;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use capture::LogCapture;
use decnet_api::Tls;
use decnet_sse::{Decoded, Decoder};
use front::Front;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use test_support::http::SseStream;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long any one expected thing may take.
const DEADLINE: Duration = Duration::from_secs(20);

fn testdata(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/tls")).join(name)
}

fn tls(which: &str) -> Arc<Tls> {
    Tls::load(
        testdata(&format!("cert-{which}.pem")),
        testdata(&format!("key-{which}.pem")),
    )
    .expect("the test certificate loads")
}

/// A client that trusts only certificate `trust` and offers `alpn`.
fn client_config(trust: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(testdata(&format!("cert-{trust}.pem"))).expect("pem")
    {
        roots
            .add(cert.expect("certificate"))
            .expect("a usable root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn handshake(
    front: &Front,
    trust: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(front.addr).await?;
    let name = ServerName::try_from("localhost").expect("server name");
    TlsConnector::from(client_config(trust, alpn))
        .connect(name, tcp)
        .await
}

type H2 = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// An HTTP/2 connection (ALPN `h2`) to `front`, trusting `trust`.
async fn h2(front: &Front, trust: &str) -> H2 {
    let tls = handshake(front, trust, &[b"h2", b"http/1.1"])
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    sender
}

fn get(front: &Front, path: &str, token: Option<&str>) -> Request<Empty<Bytes>> {
    let mut request = Request::get(format!("https://localhost:{}{path}", front.addr.port()));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.body(Empty::new()).expect("request")
}

/// An open stream's body, decoded as a browser would.
struct Sse {
    body: Incoming,
    decoder: Decoder,
    seen: Vec<decnet_sse::Event>,
}

impl Sse {
    fn new(body: Incoming) -> Self {
        Self {
            body,
            decoder: Decoder::new(),
            seen: Vec::new(),
        }
    }

    /// The next event named `name` (earlier ones are skipped), within the deadline.
    async fn event(&mut self, name: &str) -> decnet_sse::Event {
        let wait = async {
            loop {
                if let Some(i) = self.seen.iter().position(|e| e.event == name) {
                    return self.seen.remove(i);
                }
                let frame = self
                    .body
                    .frame()
                    .await
                    .unwrap_or_else(|| panic!("the stream ended before `{name}`"))
                    .expect("a body frame");
                if let Some(data) = frame.data_ref() {
                    for item in self.decoder.feed(data) {
                        if let Decoded::Event(event) = item {
                            self.seen.push(event);
                        }
                    }
                }
            }
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .unwrap_or_else(|_| panic!("no `{name}` event within {DEADLINE:?}"))
    }

    /// Read until the body ends; whether it ended cleanly.
    async fn end(&mut self) -> Result<(), hyper::Error> {
        let wait = async {
            while let Some(frame) = self.body.frame().await {
                frame?;
            }
            Ok(())
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .expect("the stream ends within the deadline")
    }
}

async fn open(sender: &mut H2, request: Request<Empty<Bytes>>) -> Sse {
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    Sse::new(response.into_body())
}

#[tokio::test]
async fn alpn_chooses_h2_or_http1_on_one_port() {
    let front = Front::start(&[], Some(tls("a"))).await;
    let mut sender = h2(&front, "a").await;
    let response = sender
        .send_request(get(&front, "/healthz", None))
        .await
        .expect("h2 response");
    assert_eq!(
        (response.status(), response.version()),
        (StatusCode::OK, Version::HTTP_2)
    );

    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let tls = handshake(&front, "a", alpn).await.expect("TLS handshake");
        assert_ne!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        let request = Request::get("/healthz")
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("h1 response");
        assert_eq!(
            (response.status(), response.version()),
            (StatusCode::OK, Version::HTTP_11)
        );
    }

    // Plain HTTP on the TLS port is no request at all.
    let mut plain = TcpStream::connect(front.addr).await.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(DEADLINE, plain.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "{buf:?} / {read:?}"
    );
    front.stop(DEADLINE).await.expect("serve");
}

#[tokio::test]
async fn a_hundred_and_twenty_streams_share_one_h2_connection() {
    const STREAMS: usize = 120;
    let cap = STREAMS.to_string();
    let front = Front::start(
        &[
            ("DECNET_SSE_MAX_PER_USER", &cap),
            ("DECNET_SSE_OPEN_BURST", "1000"),
        ],
        Some(tls("a")),
    )
    .await;
    let (_, token) = front.user(Duration::from_secs(3600)).await;
    let attacker = front.attacker().await;
    let path = format!("/api/v1/attackers/{attacker}/events");
    let mut sender = h2(&front, "a").await;
    let opens = (0..STREAMS).map(|_| {
        let mut sender = sender.clone();
        let request = get(&front, &path, Some(&token));
        async move { open(&mut sender, request).await }
    });
    let mut streams = futures::future::join_all(opens).await;
    for stream in &mut streams {
        stream.event("snapshot").await;
    }
    assert_eq!(
        front.app.limiter().active(),
        STREAMS,
        "every stream holds its slot"
    );

    // One more is over the user's cap: a 429 on the same connection.
    let response = sender
        .send_request(get(&front, &path, Some(&token)))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "5");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).expect("json")["detail"],
        format!("SSE connection limit ({STREAMS}) reached")
    );

    // One publish reaches every multiplexed stream.
    front.observe(&attacker, "over-h2").await;
    for stream in &mut streams {
        let event = stream.event("observation").await;
        assert!(event.data.contains("over-h2"), "{}", event.data);
    }
    let metrics = front.app.metrics_text();
    assert!(
        metrics.contains(&format!(
            "decnet_sse_streams_opened_total{{kind=\"attacker\",result=\"ok\"}} {STREAMS}"
        )),
        "{metrics}"
    );
    // Closing the streams frees their slots.
    drop(streams);
    let freed = async {
        while front.app.limiter().active() != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(DEADLINE, freed)
        .await
        .expect("every slot is released once the client resets its streams");
    front.stop(DEADLINE).await.expect("serve");
}

#[tokio::test]
async fn an_expired_session_ends_its_stream_and_not_the_connection() {
    let front = Front::start(&[], Some(tls("a"))).await;
    let (uuid, long) = front.user(Duration::from_secs(3600)).await;
    // A token of the same user that expires in 1 to 2 s (exp is whole seconds).
    let short =
        decnet_auth::mint_access_token(front::SECRET.as_bytes(), &uuid, Duration::from_secs(2))
            .expect("token")
            .0;
    let attacker = front.attacker().await;
    let path = format!("/api/v1/attackers/{attacker}/events");
    let mut sender = h2(&front, "a").await;
    let mut expiring = open(&mut sender, get(&front, &path, Some(&short))).await;
    let mut lasting = open(&mut sender, get(&front, &path, Some(&long))).await;
    expiring.event("snapshot").await;
    lasting.event("snapshot").await;

    let error = expiring.event("error").await;
    assert!(error.data.contains("expired"), "{}", error.data);
    expiring
        .end()
        .await
        .expect("the expired stream ends cleanly");

    // The other stream on the same connection lives on, and the connection
    // takes new requests.
    front.observe(&attacker, "still-here").await;
    assert!(
        lasting
            .event("observation")
            .await
            .data
            .contains("still-here")
    );
    let response = sender
        .send_request(get(&front, "/healthz", None))
        .await
        .expect("the connection is still open");
    assert_eq!(response.status(), StatusCode::OK);
    front.stop(DEADLINE).await.expect("serve");
}

#[tokio::test]
async fn a_reloaded_certificate_serves_new_connections_and_keeps_open_streams() {
    let dir = std::env::temp_dir().join(format!("decnet-tls-{}", test_support::unique_suffix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(testdata("cert-a.pem"), &cert).expect("copy");
    std::fs::copy(testdata("key-a.pem"), &key).expect("copy");
    let tls = Tls::load(&cert, &key).expect("load");
    let front = Front::start(&[], Some(tls.clone())).await;
    let (_, token) = front.user(Duration::from_secs(3600)).await;
    let attacker = front.attacker().await;
    let mut sender = h2(&front, "a").await;
    let mut stream = open(
        &mut sender,
        get(
            &front,
            &format!("/api/v1/attackers/{attacker}/events"),
            Some(&token),
        ),
    )
    .await;
    stream.event("snapshot").await;

    // A renewal: new files, then the reload (the binary does this on SIGHUP).
    std::fs::copy(testdata("cert-b.pem"), &cert).expect("copy");
    std::fs::copy(testdata("key-b.pem"), &key).expect("copy");
    tls.reload().expect("reload");
    assert!(
        handshake(&front, "a", &[b"h2"]).await.is_err(),
        "a new connection no longer gets certificate a"
    );
    let mut renewed = h2(&front, "b").await;
    let response = renewed
        .send_request(get(&front, "/healthz", None))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);

    // A bad file keeps the current certificate.
    std::fs::write(&key, "not a key").expect("write");
    assert!(tls.reload().is_err());
    assert!(handshake(&front, "b", &[b"h2"]).await.is_ok());

    // The stream opened under certificate a never noticed.
    front.observe(&attacker, "after-reload").await;
    assert!(
        stream
            .event("observation")
            .await
            .data
            .contains("after-reload")
    );
    front.stop(DEADLINE).await.expect("serve");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn shutdown_ends_every_h2_stream_cleanly() {
    let front = Front::start(&[], Some(tls("a"))).await;
    let (_, token) = front.user(Duration::from_secs(3600)).await;
    let attacker = front.attacker().await;
    let path = format!("/api/v1/attackers/{attacker}/events");
    let mut sender = h2(&front, "a").await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream = open(&mut sender, get(&front, &path, Some(&token))).await;
        stream.event("snapshot").await;
        streams.push(stream);
    }
    let stopping = tokio::spawn(front.stop(DEADLINE));
    for stream in &mut streams {
        stream
            .end()
            .await
            .expect("each stream ends without an error");
    }
    stopping
        .await
        .expect("stop task")
        .expect("serve() returns Ok");
}

// ---------------------------------------------------------------------------
// HTTP/2 details: keepalives, the access log, GOAWAY, flow-control windows
// ---------------------------------------------------------------------------

/// An open stream over HTTP/2 through hyper's client, read with
/// test-support's SSE reader (every item, comments included).
async fn open_items(sender: &mut H2, request: Request<Empty<Bytes>>) -> SseStream {
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(
        (response.status(), response.version()),
        (StatusCode::OK, Version::HTTP_2)
    );
    SseStream::from_response(response, sender.clone())
}

/// Raw HTTP/2 frames over TLS, to see what hyper's and h2's clients answer
/// for themselves (PINGs).
struct RawH2 {
    tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

/// One HTTP/2 frame as received: type, flags, stream id, payload.
#[derive(Debug)]
struct RawFrame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

const FRAME_SETTINGS: u8 = 0x4;
const FRAME_PING: u8 = 0x6;
const FLAG_ACK: u8 = 0x1;

impl RawH2 {
    /// A TLS connection with ALPN `h2`, the client preface and an empty
    /// SETTINGS frame sent.
    async fn connect(front: &Front) -> RawH2 {
        use tokio::io::AsyncWriteExt as _;
        let tls = handshake(front, "a", &[b"h2"]).await.expect("TLS");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut raw = RawH2 {
            tls,
            buf: Vec::new(),
        };
        raw.tls
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .expect("preface");
        raw.send(FRAME_SETTINGS, 0, 0, &[]).await;
        raw
    }

    async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        use tokio::io::AsyncWriteExt as _;
        let len = u32::try_from(payload.len()).expect("a small frame");
        let mut frame = len.to_be_bytes()[1..].to_vec();
        frame.extend_from_slice(&[kind, flags]);
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        self.tls.write_all(&frame).await.expect("write a frame");
    }

    /// The next frame from the server, within `within`.
    async fn frame(&mut self, within: Duration) -> RawFrame {
        use tokio::io::AsyncReadExt as _;
        let read = async {
            loop {
                if self.buf.len() >= 9 {
                    let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]);
                    let len = usize::try_from(len).expect("usize");
                    if self.buf.len() >= 9 + len {
                        let head: Vec<u8> = self.buf.drain(..9).collect();
                        return RawFrame {
                            kind: head[3],
                            flags: head[4],
                            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]])
                                & 0x7fff_ffff,
                            payload: self.buf.drain(..len).collect(),
                        };
                    }
                }
                let mut chunk = [0u8; 16 * 1024];
                let n = self.tls.read(&mut chunk).await.expect("read");
                assert!(n > 0, "the server closed the connection");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        };
        tokio::time::timeout(within, read)
            .await
            .unwrap_or_else(|_| panic!("no frame within {within:?}"))
    }
}

#[tokio::test]
async fn keepalives_reach_h2_streams_as_comments_and_idle_h2_connections_get_pings() {
    let front = Front::start_tuned(
        &[("DECNET_SSE_KEEPALIVE_SECS", "1")],
        Some(tls("a")),
        |serve| serve.tcp_keepalive = Duration::from_secs(1),
    )
    .await;
    let (_, token) = front.user(Duration::from_secs(3600)).await;
    let attacker = front.attacker().await;
    let mut sender = h2(&front, "a").await;
    let path = format!("/api/v1/attackers/{attacker}/events");
    let mut stream = open_items(&mut sender, get(&front, &path, Some(&token))).await;
    stream.expect_snapshot().await;
    // Idle: a keepalive comment every second, on the HTTP/2 stream.
    for _ in 0..2 {
        let started = tokio::time::Instant::now();
        match stream.try_next(Duration::from_secs(5)).await {
            test_support::http::Next::Item(Decoded::Comment(text)) => {
                assert_eq!(text, "keepalive");
            }
            test_support::http::Next::Item(other) => panic!("unexpected {other:?}"),
            other => panic!("no keepalive within 5 s: {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    // And the connection under it: the server PINGs an idle peer (every
    // second here), which answers, and is PINGed again.
    let mut raw = RawH2::connect(&front).await;
    let mut pings = 0;
    while pings < 2 {
        let frame = raw.frame(Duration::from_secs(10)).await;
        match (frame.kind, frame.flags & FLAG_ACK) {
            (FRAME_SETTINGS, 0) => raw.send(FRAME_SETTINGS, FLAG_ACK, 0, &[]).await,
            (FRAME_PING, 0) => {
                assert_eq!((frame.stream, frame.payload.len()), (0, 8), "{frame:?}");
                raw.send(FRAME_PING, FLAG_ACK, 0, &frame.payload).await;
                pings += 1;
            }
            _ => {}
        }
    }
    front.stop(DEADLINE).await.expect("serve");
}

#[tokio::test]
async fn the_access_log_records_h2_requests() {
    let (logs, _logging) = LogCapture::start();
    let front = Front::start(&[("DECNET_ACCESS_LOG", "true")], Some(tls("a"))).await;
    let (_, token) = front.user(Duration::from_secs(3600)).await;
    let attacker = front.attacker().await;
    let mut sender = h2(&front, "a").await;
    let response = sender
        .send_request(get(&front, "/healthz?probe=1", None))
        .await
        .expect("response");
    assert_eq!(response.version(), Version::HTTP_2);
    let path = format!("/api/v1/attackers/{attacker}/events");
    let refused = sender
        .send_request(get(&front, &path, None))
        .await
        .expect("response");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let mut stream = open_items(&mut sender, get(&front, &path, Some(&token))).await;
    stream.expect_snapshot().await;
    drop(stream);
    front.stop(DEADLINE).await.expect("serve");

    let text = logs.text();
    let access: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("decnet_events::access"))
        .collect();
    for (method, path, query, status) in [
        ("GET", "/healthz", "probe=1", 200),
        ("GET", path.as_str(), "-", 401),
        ("GET", path.as_str(), "-", 200),
    ] {
        let fields = [
            format!("method={method}"),
            format!("path={path}"),
            format!("status={status}"),
            "peer=127.0.0.1:".to_owned(),
        ];
        assert!(
            access
                .iter()
                .any(|line| fields.iter().all(|f| line.contains(f.as_str()))
                    && (query == "-" || line.contains(&format!("query=?{query}")))),
            "no access record {fields:?} among:\n{}",
            access.join("\n")
        );
    }
}

/// One HTTP/2 connection through the `h2` crate itself (ALPN `h2`, trusting
/// certificate a), its driver spawned; the watch reports the server's
/// `SETTINGS_MAX_CONCURRENT_STREAMS` as the client last saw it.
async fn raw_h2_client(
    front: &Front,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::sync::watch::Receiver<usize>,
) {
    let tls = handshake(front, "a", &[b"h2"]).await.expect("TLS");
    let (sender, mut connection) = h2::client::handshake(tls).await.expect("h2 handshake");
    let (settings, watch) = tokio::sync::watch::channel(0usize);
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| {
            let polled = std::pin::Pin::new(&mut connection).poll(cx);
            settings.send_replace(connection.max_concurrent_send_streams());
            polled
        })
        .await;
    });
    (sender, watch)
}

/// A GET of `path` with `token`, its request side ended or, with
/// `keep_sending`, left open (so the client may send on it); its response
/// once the head arrives.
async fn open_h2_stream(
    sender: &mut h2::client::SendRequest<Bytes>,
    front: &Front,
    path: &str,
    token: &str,
    keep_sending: bool,
) -> (h2::SendStream<Bytes>, h2::RecvStream) {
    let request = Request::get(format!("https://localhost:{}{path}", front.addr.port()))
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .expect("request");
    let ready = std::future::poll_fn(|cx| sender.poll_ready(cx));
    tokio::time::timeout(DEADLINE, ready)
        .await
        .expect("ready in time")
        .expect("the connection takes a stream");
    let (response, send) = sender.send_request(request, !keep_sending).expect("send");
    let response = tokio::time::timeout(DEADLINE, response)
        .await
        .expect("a response head in time")
        .expect("a response");
    assert_eq!(response.status(), StatusCode::OK);
    (send, response.into_body())
}

/// Read a stream's body until it ends (releasing the window as it goes);
/// an error is a reset.
async fn read_to_end(body: &mut h2::RecvStream) -> Result<(), h2::Error> {
    let read = async {
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        Ok(())
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("the stream ends within the deadline")
}

#[tokio::test]
async fn shutdown_sends_goaway_before_the_h2_streams_end() {
    let front = Front::start(&[], Some(tls("a"))).await;
    let (_, token) = front.user(Duration::from_secs(3600)).await;
    let attacker = front.attacker().await;
    let path = format!("/api/v1/attackers/{attacker}/events");
    let (mut sender, _) = raw_h2_client(&front).await;
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let (_, mut body) = open_h2_stream(&mut sender, &front, &path, &token, false).await;
        // The snapshot's bytes arrive first.
        let first = tokio::time::timeout(DEADLINE, body.data())
            .await
            .expect("the first bytes in time")
            .expect("data")
            .expect("no reset");
        assert!(!first.is_empty());
        bodies.push(body);
    }
    let stopping = tokio::spawn(front.stop(DEADLINE));
    for body in &mut bodies {
        read_to_end(body).await.expect("each stream ends cleanly");
        // The frames are handled in order: by the time a stream's end is
        // read, the GOAWAY that came before it has been too.
        let ready = std::future::poll_fn(|cx| std::task::Poll::Ready(sender.poll_ready(cx))).await;
        let error = match ready {
            std::task::Poll::Ready(Err(error)) => error,
            other => panic!("a stream ended before the GOAWAY: {other:?}"),
        };
        assert!(error.is_go_away() && error.is_remote(), "{error:?}");
        assert_eq!(error.reason(), Some(h2::Reason::NO_ERROR), "{error:?}");
    }
    stopping
        .await
        .expect("stop task")
        .expect("serve() returns Ok");
}

#[tokio::test]
async fn h2_windows_are_64_kib_per_stream_and_1_mib_per_connection() {
    const WINDOW: u32 = 64 * 1024;
    const CONNECTION_WINDOW: u32 = 1024 * 1024;
    // One stream more than the connection window can feed at 64 KiB each.
    let streams = CONNECTION_WINDOW / WINDOW + 1;
    let cap = streams.to_string();
    let front = Front::start(
        &[
            ("DECNET_SSE_MAX_PER_USER", &cap),
            ("DECNET_SSE_OPEN_BURST", "1000"),
        ],
        Some(tls("a")),
    )
    .await;
    let (_, token) = front.user(Duration::from_secs(3600)).await;
    let attacker = front.attacker().await;
    let path = format!("/api/v1/attackers/{attacker}/events");
    let (mut sender, mut settings) = raw_h2_client(&front).await;
    // SETTINGS_MAX_CONCURRENT_STREAMS, as the server sent it.
    let max_streams =
        tokio::time::timeout(DEADLINE, settings.wait_for(|n| *n != 0 && *n != usize::MAX))
            .await
            .expect("the server's SETTINGS in time")
            .map(|n| *n)
            .expect("the connection runs");
    assert_eq!(max_streams, 256, "SETTINGS_MAX_CONCURRENT_STREAMS");

    let mut open = Vec::new();
    for _ in 0..streams {
        open.push(open_h2_stream(&mut sender, &front, &path, &token, true).await);
    }
    // Ask for more than a stream's window on each: what the client may send
    // is what the server's windows allow it.
    for (send, _) in &mut open {
        send.reserve_capacity(2 * WINDOW as usize);
    }
    let capacities = |open: &Vec<(h2::SendStream<Bytes>, h2::RecvStream)>| -> Vec<u32> {
        open.iter()
            .map(|(send, _)| u32::try_from(send.capacity()).expect("u32"))
            .collect()
    };
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while capacities(&open).iter().sum::<u32>() < CONNECTION_WINDOW {
        assert!(
            tokio::time::Instant::now() < deadline,
            "capacity {:?} never reached the connection window",
            capacities(&open)
        );
        tokio::task::yield_now().await;
    }
    let capacities = capacities(&open);
    assert!(
        capacities.iter().all(|c| *c <= WINDOW),
        "no stream beyond 64 KiB: {capacities:?}"
    );
    assert_eq!(
        capacities.iter().sum::<u32>(),
        CONNECTION_WINDOW,
        "1 MiB for the connection: {capacities:?}"
    );
    assert_eq!(
        capacities.iter().filter(|c| **c == WINDOW).count(),
        usize::try_from(streams - 1).expect("usize"),
        "{capacities:?}"
    );
    drop(open);
    front.stop(DEADLINE).await.expect("serve");
}
