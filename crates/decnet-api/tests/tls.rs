//! HTTPS and HTTP/2 through `serve()`, with hyper's client over rustls:
//! ALPN picks h2 or HTTP/1.1 on one port; more than 100 streams share one
//! HTTP/2 connection and every one gets the live event; the per-user cap,
//! session expiry and shutdown act per HTTP/2 stream; a certificate reload
//! serves the new certificate to new connections and keeps open streams.

mod front;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use decnet_api::Tls;
use decnet_sse::{Decoded, Decoder};
use front::Front;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
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
