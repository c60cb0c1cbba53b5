//! [`Upstream`]: the pass-through to DECNET's own API, so the dashboard
//! needs one base URL (`DECNET_EVENTS_UPSTREAM`).
//!
//! Every request the [`crate::App`] does not serve itself is forwarded:
//! method, path, query, end-to-end headers and the body, streamed both ways
//! (hyper's back-pressure bounds the memory of a large upload or download).
//! Hop-by-hop headers are removed in both directions, `Host` becomes the
//! upstream's and the `X-Forwarded-For` / `-Proto` / `-Host` trio is added.
//! The upstream's answer is passed through untouched otherwise (its CORS
//! headers included). Bounded: the connect, the wait for the response head
//! and every wait for a body chunk have timeouts; the pool keeps few idle
//! connections. `Upgrade` requests (WebSocket) are refused with 501: DECNET's
//! API has no such endpoint.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{Body, BoxError};
use crate::refusal::Refusal;

/// Where DECNET's API is and how long it may take.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The upstream's authority (`127.0.0.1:8001`).
    pub authority: Authority,
    /// A path prefix put before every forwarded path (`""` for none).
    pub prefix: String,
    /// Bound on establishing a TCP connection (504 beyond).
    pub connect_timeout: Duration,
    /// Bound on the wait for the response head once the request is sent
    /// (504 beyond).
    pub response_timeout: Duration,
    /// Bound on every wait for the next body chunk, either way (the transfer
    /// is cut beyond).
    pub idle_timeout: Duration,
}

/// Why an upstream URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// Not a URL.
    #[error("not a URL")]
    Invalid,
    /// Only `http://` upstreams are supported (DECNET's API listens on
    /// plain HTTP behind its host).
    #[error("only http:// upstreams are supported")]
    Scheme,
    /// A query or fragment has no meaning for a base URL.
    #[error("the URL must not have a query")]
    Query,
}

impl UpstreamConfig {
    /// The config of `url` (`http://host:port[/prefix]`) with the default
    /// timeouts: connect 5 s, response head 60 s, body idle 120 s.
    ///
    /// # Errors
    ///
    /// [`UpstreamError`] when the URL is not `http://` with an authority.
    pub fn new(url: &str) -> Result<UpstreamConfig, UpstreamError> {
        let uri: Uri = url.parse().map_err(|_| UpstreamError::Invalid)?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(UpstreamError::Scheme);
        }
        let authority = uri.authority().cloned().ok_or(UpstreamError::Invalid)?;
        if uri.query().is_some() {
            return Err(UpstreamError::Query);
        }
        Ok(UpstreamConfig {
            authority,
            prefix: uri.path().trim_end_matches('/').to_owned(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
        })
    }
}

/// The pass-through: a pooled HTTP/1.1 client of the upstream. Cheap to
/// clone.
#[derive(Clone)]
pub struct Upstream {
    config: UpstreamConfig,
    host: HeaderValue,
    client: Client<HttpConnector, Body>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How a forwarded request ended (the `result` label of
/// `decnet_upstream_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The upstream answered (whatever its status).
    Answered,
    /// No connection could be made (502).
    Unreachable,
    /// The connect or the response head took too long (504).
    Timeout,
    /// The upstream broke the exchange (502).
    BadResponse,
    /// An `Upgrade` request (501).
    Upgrade,
}

impl Outcome {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Unreachable => "unreachable",
            Outcome::Timeout => "timeout",
            Outcome::BadResponse => "bad_response",
            Outcome::Upgrade => "upgrade_refused",
        }
    }
}

/// What a connection tells the pass-through about the client side.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientSide {
    /// The client's address.
    pub(crate) peer: Option<SocketAddr>,
    /// Whether the client came over TLS.
    pub(crate) secure: bool,
}

impl Upstream {
    /// A client of the upstream in `config`.
    pub fn new(config: UpstreamConfig) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(32)
            .build(connector);
        let host = HeaderValue::from_str(config.authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Upstream {
            config,
            host,
            client,
        }
    }

    /// The upstream URI of a request for `uri`.
    fn target(&self, uri: &Uri) -> Result<Uri, http::Error> {
        let path_and_query = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.config.authority.clone())
            .path_and_query(format!("{}{path_and_query}", self.config.prefix))
            .build()
    }

    /// Forward `request` and stream the answer back.
    pub(crate) async fn forward<B>(
        &self,
        request: Request<B>,
        client: ClientSide,
    ) -> (Response<Body>, Outcome)
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if is_upgrade(request.headers()) {
            let refusal = Refusal::not_implemented("Upgrade requests are not forwarded");
            return (refusal.into_response(), Outcome::Upgrade);
        }
        let (mut parts, body) = request.into_parts();
        let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let Ok(target) = self.target(&parts.uri) else {
            let refusal = Refusal::bad_gateway("Upstream request could not be built");
            return (refusal.into_response(), Outcome::BadResponse);
        };
        strip_hop_by_hop(&mut parts.headers);
        forwarded_headers(&mut parts.headers, client, original_host);
        parts.headers.insert(header::HOST, self.host.clone());
        parts.uri = target;
        parts.version = Version::HTTP_11;
        let body = Idle::new(body, self.config.idle_timeout).boxed_unsync();
        let sent = self.client.request(Request::from_parts(parts, body));
        let answer = match tokio::time::timeout(self.config.response_timeout, sent).await {
            Err(_) => Err(Outcome::Timeout),
            Ok(Err(error)) if error.is_connect() => {
                tracing::warn!(upstream = %self.config.authority, error = %error, "upstream unreachable");
                Err(if timed_out(&error) {
                    Outcome::Timeout
                } else {
                    Outcome::Unreachable
                })
            }
            Ok(Err(error)) => {
                tracing::warn!(upstream = %self.config.authority, error = %error, "upstream exchange failed");
                Err(Outcome::BadResponse)
            }
            Ok(Ok(answer)) => Ok(answer),
        };
        match answer {
            Ok(answer) => {
                let (mut parts, body) = answer.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                let body = Idle::new(body, self.config.idle_timeout).boxed_unsync();
                (Response::from_parts(parts, body), Outcome::Answered)
            }
            Err(outcome) => {
                let refusal = match outcome {
                    Outcome::Timeout => Refusal::gateway_timeout("Upstream timed out"),
                    Outcome::Unreachable => Refusal::bad_gateway("Upstream unreachable"),
                    _ => Refusal::bad_gateway("Bad response from upstream"),
                };
                (refusal.into_response(), outcome)
            }
        }
    }
}

/// Whether the connect error was a timeout.
fn timed_out(error: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Whether the request asks to switch protocols.
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        || headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// The hop-by-hop headers of RFC 9110 §7.6.1 (and the legacy ones), plus
/// every header the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// `X-Forwarded-For` (appended to what a proxy before us said),
/// `X-Forwarded-Proto` and `X-Forwarded-Host` (ours: replaced).
fn forwarded_headers(headers: &mut HeaderMap, client: ClientSide, host: Option<HeaderValue>) {
    if let Some(peer) = client.peer {
        let ip = peer.ip().to_string();
        let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(before) if !before.trim().is_empty() => format!("{before}, {ip}"),
            _ => ip,
        };
        if let Ok(value) = HeaderValue::from_str(&chain) {
            headers.insert("x-forwarded-for", value);
        }
    }
    let proto = if client.secure { "https" } else { "http" };
    headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    match host {
        Some(host) => {
            headers.insert("x-forwarded-host", host);
        }
        None => {
            headers.remove("x-forwarded-host");
        }
    }
}

/// A body whose producer must deliver each chunk within `timeout` of being
/// asked for it (time the consumer spends not asking does not count).
struct Idle<B> {
    inner: Pin<Box<B>>,
    timeout: Duration,
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> Idle<B> {
    fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner: Box::pin(inner),
            timeout,
            waiting: None,
        }
    }
}

/// The error a body ends with when its producer went quiet.
#[derive(Debug, thiserror::Error)]
#[error("no body data for {0:?}")]
struct IdleTimeout(Duration);

impl<B> HttpBody for Idle<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = this.inner.as_mut().poll_frame(cx) {
            this.waiting = None;
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let sleep = this
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.waiting = None;
                Poll::Ready(Some(Err(Box::new(IdleTimeout(timeout)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let config = UpstreamConfig::new("http://127.0.0.1:8001").expect("plain");
        assert_eq!(config.authority.as_str(), "127.0.0.1:8001");
        assert_eq!(config.prefix, "");
        let config = UpstreamConfig::new("http://decnet:8001/inner/").expect("prefix");
        assert_eq!(config.prefix, "/inner");
        assert_eq!(
            UpstreamConfig::new("https://x:1").err(),
            Some(UpstreamError::Scheme)
        );
        assert_eq!(
            UpstreamConfig::new("http://x:1/?a=b").err(),
            Some(UpstreamError::Query)
        );
        assert_eq!(
            UpstreamConfig::new("not a url").err(),
            Some(UpstreamError::Invalid)
        );
        assert_eq!(
            UpstreamConfig::new("/just/a/path").err(),
            Some(UpstreamError::Scheme)
        );
    }

    #[test]
    fn targets_keep_path_and_query() {
        let upstream = Upstream::new(UpstreamConfig::new("http://u:9/p").expect("url"));
        let target = upstream
            .target(&"/api/v1/logs?limit=5&search=a%20b".parse().expect("uri"))
            .expect("target");
        assert_eq!(
            target.to_string(),
            "http://u:9/p/api/v1/logs?limit=5&search=a%20b"
        );
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "content-type"]);
    }

    #[test]
    fn forwarded_for_chains_and_the_rest_is_ours() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.7"));
        headers.insert("x-forwarded-host", HeaderValue::from_static("spoofed"));
        let client = ClientSide {
            peer: Some("192.0.2.1:5555".parse().expect("addr")),
            secure: true,
        };
        forwarded_headers(
            &mut headers,
            client,
            Some(HeaderValue::from_static("dash:8000")),
        );
        assert_eq!(headers["x-forwarded-for"], "198.51.100.7, 192.0.2.1");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-host"], "dash:8000");
    }

    #[test]
    fn upgrades_are_recognised() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(is_upgrade(&headers));
        assert!(!is_upgrade(&HeaderMap::new()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_producer_ends_the_body() {
        let (_tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let mut body = Idle::new(http_body_util::StreamBody::new(rx), Duration::from_secs(3));
        let started = tokio::time::Instant::now();
        let frame = body.frame().await.expect("an error frame");
        assert!(frame.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
