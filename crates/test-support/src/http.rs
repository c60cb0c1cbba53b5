//! A small HTTP/1.1 client for tests of decnet-events, in process or as a
//! process: hyper's `client::conn::http1` over a plain `TcpStream`, one
//! connection per request (dropping a response or a stream closes it), and
//! [`SseStream`], which reads a `text/event-stream` body incrementally
//! through `decnet_sse::Decoder`.
//!
//! Every call is bounded: [`request`] fails the test after [`HTTP_TIMEOUT`],
//! and each read of a stream takes its own deadline.
//!
//! ```no_run
//! # async fn example(addr: std::net::SocketAddr) {
//! use test_support::http::{self, SseStream};
//! let health = http::request(addr, "GET", "/healthz", &[]).await;
//! assert_eq!(health.status, 200);
//! let mut stream = SseStream::open(addr, &http::events_path("a-uuid", None), &[
//!     ("authorization", "Bearer <jwt>"),
//! ])
//! .await;
//! let snapshot = stream.expect_snapshot().await;
//! # let _ = snapshot;
//! # }
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use decnet_sse::Decoded;
use http::HeaderMap;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// Default bound for one HTTP exchange.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound for the next SSE item.
pub const ITEM_TIMEOUT: Duration = Duration::from_secs(5);
/// The ticket route.
pub const TICKET_PATH: &str = "/api/v1/auth/sse-ticket";
/// The `Could not validate credentials` detail of every 401.
pub const UNAUTHORIZED: &str = "Could not validate credentials";

/// The events route of `attacker`, with `?ticket=` when given.
pub fn events_path(attacker: &str, ticket: Option<&str>) -> String {
    match ticket {
        Some(ticket) => format!("/api/v1/attackers/{attacker}/events?ticket={ticket}"),
        None => format!("/api/v1/attackers/{attacker}/events"),
    }
}

/// `path` with `?ticket=<ticket>` (or `&ticket=` when it has a query).
pub fn with_ticket(path: &str, ticket: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}ticket={ticket}")
}

/// A complete HTTP response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Response {
    /// One header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    ///
    /// # Panics
    ///
    /// When it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// Assert `{"detail": <detail>}` with `status` and a JSON content type.
    ///
    /// # Panics
    ///
    /// When it is anything else.
    #[track_caller]
    pub fn assert_detail(&self, status: u16, detail: &str) {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(self.json(), json!({ "detail": detail }));
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "content-type {:?}",
            self.header("content-type")
        );
    }

    /// Assert the 401 DECNET sends: the detail and `WWW-Authenticate: Bearer`.
    ///
    /// # Panics
    ///
    /// When it is anything else.
    #[track_caller]
    pub fn assert_401(&self) {
        self.assert_detail(401, UNAUTHORIZED);
        assert_eq!(self.header("www-authenticate"), Some("Bearer"));
    }

    /// Assert a 503 with `Retry-After`.
    ///
    /// # Panics
    ///
    /// When it is anything else.
    #[track_caller]
    pub fn assert_503(&self) {
        assert_eq!(self.status, 503, "body: {}", self.text());
        assert!(
            self.header("retry-after").is_some(),
            "503 without Retry-After: {:?}",
            self.headers
        );
    }
}

/// Aborts a spawned task on drop (the client connection: dropping it closes
/// the socket).
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Exchange {
    parts: http::response::Parts,
    body: Incoming,
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    connection: AbortOnDrop,
}

/// One request on a new connection, optionally with a fixed (small) socket
/// receive buffer, which turns off receive-window autotuning: a client that
/// does not read then pushes back on the server after a few kilobytes.
async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    recv_buffer: Option<u32>,
) -> Result<Exchange, String> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|e| format!("socket: {e}"))?;
    if let Some(size) = recv_buffer {
        socket
            .set_recv_buffer_size(size)
            .map_err(|e| format!("SO_RCVBUF: {e}"))?;
    }
    let tcp = socket
        .connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let connection = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("build request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let (parts, body) = response.into_parts();
    Ok(Exchange {
        parts,
        body,
        sender,
        connection,
    })
}

/// One request, reading the whole body.
///
/// # Errors
///
/// A description of what failed (connect, handshake, send, body).
pub async fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, String> {
    let exchange = exchange(addr, method, path, headers, None).await?;
    let body = exchange
        .body
        .collect()
        .await
        .map_err(|e| format!("read body: {e}"))?
        .to_bytes();
    Ok(Response {
        status: exchange.parts.status.as_u16(),
        headers: exchange.parts.headers,
        body,
    })
}

/// One request, reading the whole body.
///
/// # Panics
///
/// When it fails or takes longer than [`HTTP_TIMEOUT`].
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    match tokio::time::timeout(HTTP_TIMEOUT, try_request(addr, method, path, headers)).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => panic!("{method} {path}: {error}"),
        Err(_) => panic!("{method} {path}: no complete answer within {HTTP_TIMEOUT:?}"),
    }
}

/// What reading an SSE body produced next.
#[derive(Debug)]
pub enum Next {
    /// A decoded item.
    Item(Decoded),
    /// The body ended cleanly.
    Eof,
    /// The body failed (connection reset, truncated chunk).
    Error(String),
    /// Nothing within the time given.
    Timeout,
}

/// An open SSE response, read incrementally. Dropping it closes the
/// connection.
pub struct SseStream {
    /// Status (200).
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    body: Incoming,
    decoder: decnet_sse::Decoder,
    queue: VecDeque<Decoded>,
    ended: bool,
    /// What keeps the connection open (its sender and task), dropped with
    /// the stream.
    _connection: Box<dyn std::any::Any + Send + Sync>,
}

impl std::fmt::Debug for SseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseStream")
            .field("status", &self.status)
            .field("queued", &self.queue.len())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl SseStream {
    /// GET `path`: `Ok` with the open stream on 200, `Err` with the whole
    /// response otherwise.
    ///
    /// # Panics
    ///
    /// When the connection fails or no response head arrives within
    /// [`HTTP_TIMEOUT`].
    pub async fn try_open(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<SseStream, Response> {
        SseStream::try_open_with(addr, path, headers, None).await
    }

    /// GET `path`, which must answer 200.
    ///
    /// # Panics
    ///
    /// On any other answer, or as [`SseStream::try_open`].
    #[track_caller]
    pub fn open<'a>(
        addr: SocketAddr,
        path: &'a str,
        headers: &'a [(&'a str, &'a str)],
    ) -> impl Future<Output = SseStream> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            match SseStream::try_open(addr, path, headers).await {
                Ok(stream) => stream,
                Err(response) => panic!(
                    "{caller}: GET {path}: expected a 200 stream, got {} {}",
                    response.status,
                    response.text()
                ),
            }
        }
    }

    /// GET `path` over a socket whose receive buffer is `recv_buffer` bytes
    /// (no autotuning), which must answer 200: a client that can fall behind.
    ///
    /// # Panics
    ///
    /// As [`SseStream::open`].
    pub async fn open_small_window(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        recv_buffer: u32,
    ) -> SseStream {
        match SseStream::try_open_with(addr, path, headers, Some(recv_buffer)).await {
            Ok(stream) => stream,
            Err(response) => panic!(
                "GET {path}: expected a 200 stream, got {} {}",
                response.status,
                response.text()
            ),
        }
    }

    async fn try_open_with(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        recv_buffer: Option<u32>,
    ) -> Result<SseStream, Response> {
        let exchange = tokio::time::timeout(
            HTTP_TIMEOUT,
            exchange(addr, "GET", path, headers, recv_buffer),
        )
        .await
        .unwrap_or_else(|_| panic!("GET {path}: no response head within {HTTP_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = exchange.parts.status.as_u16();
        if status != 200 {
            let body = tokio::time::timeout(HTTP_TIMEOUT, exchange.body.collect())
                .await
                .unwrap_or_else(|_| panic!("GET {path}: {status} body did not end"))
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(Response {
                status,
                headers: exchange.parts.headers,
                body,
            });
        }
        Ok(SseStream {
            status,
            headers: exchange.parts.headers,
            body: exchange.body,
            decoder: decnet_sse::Decoder::new(),
            queue: VecDeque::new(),
            ended: false,
            _connection: Box::new((exchange.sender, exchange.connection)),
        })
    }

    /// A stream from a response received some other way (over TLS, over
    /// HTTP/2: any client of the test's own), read as [`SseStream::open`]'s
    /// are; `connection` (the client's sender, its connection task) is held
    /// as long as the stream and dropped with it.
    pub fn from_response(
        response: hyper::Response<Incoming>,
        connection: impl Send + Sync + 'static,
    ) -> SseStream {
        let (parts, body) = response.into_parts();
        SseStream {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            decoder: decnet_sse::Decoder::new(),
            queue: VecDeque::new(),
            ended: false,
            _connection: Box::new(connection),
        }
    }

    /// One response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The next item, end, error or timeout.
    pub async fn try_next(&mut self, within: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Next::Item(item);
            }
            if self.ended {
                return Next::Eof;
            }
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => return Next::Timeout,
                Ok(None) => {
                    self.ended = true;
                    return Next::Eof;
                }
                Ok(Some(Err(error))) => {
                    self.ended = true;
                    return Next::Error(error.to_string());
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        let items = self.decoder.feed(&data);
                        self.queue.extend(items);
                    }
                }
            }
        }
    }

    /// The next item.
    ///
    /// # Panics
    ///
    /// On end, error or timeout.
    #[track_caller]
    pub fn next_item(&mut self, within: Duration) -> impl Future<Output = Decoded> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            match self.try_next(within).await {
                Next::Item(item) => item,
                other => panic!("{caller}: expected an SSE item within {within:?}, got {other:?}"),
            }
        }
    }

    /// The next dispatched event, skipping comments (keepalives) and `retry`.
    ///
    /// # Panics
    ///
    /// On end, error or timeout.
    #[track_caller]
    pub fn next_event(&mut self, within: Duration) -> impl Future<Output = decnet_sse::Event> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            let deadline = tokio::time::Instant::now() + within;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self.try_next(left).await {
                    Next::Item(Decoded::Event(event)) => return event,
                    Next::Item(_) => {}
                    other => {
                        panic!("{caller}: expected an SSE event within {within:?}, got {other:?}")
                    }
                }
            }
        }
    }

    /// Read until the body ends cleanly; every item read on the way.
    ///
    /// # Panics
    ///
    /// On a transport error, or when it does not end within `within`.
    #[track_caller]
    pub fn expect_eof(&mut self, within: Duration) -> impl Future<Output = Vec<Decoded>> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            let deadline = tokio::time::Instant::now() + within;
            let mut items = Vec::new();
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self.try_next(left).await {
                    Next::Item(item) => items.push(item),
                    Next::Eof => return items,
                    Next::Error(error) => panic!(
                        "{caller}: expected a clean end of stream, got error {error} after {items:?}"
                    ),
                    Next::Timeout => {
                        panic!("{caller}: stream did not end within {within:?}; read {items:?}")
                    }
                }
            }
        }
    }

    /// Assert that no event (comments allowed) arrives within `within`.
    ///
    /// # Panics
    ///
    /// On an event, an end or an error.
    pub async fn expect_no_event(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_next(left).await {
                Next::Timeout => return,
                Next::Item(Decoded::Event(event)) => panic!("unexpected event {event:?}"),
                Next::Item(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The opening of every stream: `: keepalive`, then `retry: 3000`.
    ///
    /// # Panics
    ///
    /// On anything else.
    pub async fn expect_preamble(&mut self) {
        assert_eq!(
            self.next_item(ITEM_TIMEOUT).await,
            Decoded::Comment("keepalive".into()),
            "a stream starts with the keepalive comment"
        );
        assert_eq!(
            self.next_item(ITEM_TIMEOUT).await,
            Decoded::Retry(3000),
            "then the retry hint"
        );
    }

    /// The preamble then the `snapshot` event (which carries no id); its data.
    ///
    /// # Panics
    ///
    /// On anything else.
    pub async fn expect_snapshot(&mut self) -> Value {
        self.expect_preamble().await;
        let event = self.next_event(ITEM_TIMEOUT).await;
        assert_eq!(event.event, "snapshot", "{event:?}");
        // The decoder reports the stream's last event id (WHATWG's rule), so
        // this holds for a stream's first event only, where it is used.
        assert!(event.id.is_empty(), "a snapshot carries no id: {event:?}");
        serde_json::from_str(&event.data).expect("snapshot data is JSON")
    }
}

/// Serve HTTP/1.1 with `handler` on a free loopback port until the test's
/// runtime ends (a stand-in server: DECNET's API behind the pass-through,
/// say); returns its address.
///
/// # Panics
///
/// When no loopback port can be bound.
pub async fn serve_http1<F, Fut, B>(handler: F) -> SocketAddr
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<http::Response<B>, std::convert::Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("the bound address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handler))
                    .await;
            });
        }
    });
    addr
}

/// The value of `series` (a metric name with its labels, exactly as
/// exposed) in a Prometheus text exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
}

/// Poll `check` every 20 ms until it returns `Some`, for at most `within`.
///
/// # Panics
///
/// Past `within`, naming `what` was awaited.
pub async fn poll_until<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
