//! The HTTP server: routes, authentication, JSON errors, CORS, the SSE body,
//! access logging, and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use decnet_auth::{
    AuthError, ConnectionLimiter, Forbidden, Identity, LimitError, TicketStore, TokenVerifier,
    authorize_stream,
};
use decnet_bus::{Bus, ConnectionState};
use decnet_repo::{Repo, Repository};
use decnet_stream::{OpenError, OpenOptions, SessionCheck, SessionVerdict, StreamHub};
use futures::StreamExt;
use futures::future::BoxFuture;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::metrics::Metrics;

/// The response body type: a full JSON body or an SSE stream.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body accepted (the API takes none worth more).
const MAX_BODY_BYTES: u64 = 64 * 1024;
/// Largest request head (request line and headers) accepted.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Header read timeout (slowloris protection).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// `Retry-After` sent with every 503.
const RETRY_AFTER_SECS: &str = "5";

const CONSOLE_HTML: &str = include_str!("../assets/console.html");

/// Everything a request handler needs.
pub(crate) struct AppState {
    /// The stream hub.
    pub(crate) hub: StreamHub,
    /// The repository.
    pub(crate) repo: Repo,
    /// The bus (for readiness).
    pub(crate) bus: Bus,
    /// JWT verification.
    pub(crate) verifier: Arc<TokenVerifier>,
    /// Ticket store.
    pub(crate) tickets: TicketStore,
    /// Connection slots.
    pub(crate) limiter: ConnectionLimiter,
    /// Metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// Ticket lifetime.
    pub(crate) ticket_ttl: Duration,
    /// Allowed CORS origins.
    pub(crate) cors_origins: Vec<String>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `{"detail": "<message>"}` with `status`.
fn error(status: StatusCode, detail: &str) -> Response<Body> {
    json_response(status, &json!({ "detail": detail }))
}

fn unauthorized() -> Response<Body> {
    let mut response = error(StatusCode::UNAUTHORIZED, "Could not validate credentials");
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn unavailable(detail: &str) -> Response<Body> {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, detail);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECS),
    );
    response
}

fn forbidden(reason: &Forbidden) -> Response<Body> {
    error(StatusCode::FORBIDDEN, &reason.to_string())
}

/// Which route a path is, for dispatch and for metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Console,
    Healthz,
    Readyz,
    Metrics,
    Ticket,
    Events(&'a str),
    NotFound,
}

impl Route<'_> {
    fn parse(path: &str) -> Route<'_> {
        match path {
            "/" => Route::Console,
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" => Route::Metrics,
            "/api/v1/auth/sse-ticket" => Route::Ticket,
            _ => match path
                .strip_prefix("/api/v1/attackers/")
                .and_then(|rest| rest.strip_suffix("/events"))
            {
                Some(uuid) if !uuid.is_empty() && !uuid.contains('/') => Route::Events(uuid),
                _ => Route::NotFound,
            },
        }
    }

    fn label(self) -> &'static str {
        match self {
            Route::Console => "/",
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::Ticket => "/api/v1/auth/sse-ticket",
            Route::Events(_) => "/api/v1/attackers/{uuid}/events",
            Route::NotFound => "unmatched",
        }
    }

    fn allowed(self) -> &'static [Method] {
        match self {
            Route::Ticket => &[Method::POST],
            Route::NotFound => &[],
            _ => &[Method::GET],
        }
    }
}

/// One query parameter, percent-decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| percent_decode(key) == name)
        .map(|(_, value)| percent_decode(value))
}

fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query string with `ticket`, `token` and `access_token` values redacted,
/// for logs.
fn redacted_query(query: Option<&str>) -> String {
    let Some(query) = query else {
        return String::new();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _))
                if matches!(
                    percent_decode(key).as_str(),
                    "ticket" | "token" | "access_token"
                ) =>
            {
                format!("{key}=[redacted]")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("?{}", parts.join("&"))
}

/// The Bearer token of an `Authorization` header: `Some(Err(()))` when the
/// header is present but not a usable Bearer credential.
fn bearer(headers: &HeaderMap) -> Option<Result<&str, ()>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let Ok(value) = value.to_str() else {
        return Some(Err(()));
    };
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
        Some(Ok(token.trim()))
    } else {
        Some(Err(()))
    }
}

fn auth_failure(err: &AuthError) -> Response<Body> {
    if err.is_unavailable() {
        tracing::warn!(error = %err, "repository unavailable during authentication");
        unavailable("Service temporarily unavailable")
    } else {
        unauthorized()
    }
}

/// Authenticate a Bearer JWT and apply the role gate.
async fn authenticate_bearer(state: &AppState, token: &str) -> Result<Identity, Response<Body>> {
    let identity = state
        .verifier
        .verify(token)
        .await
        .map_err(|e| auth_failure(&e))?;
    authorize_stream(&identity).map_err(|reason| forbidden(&reason))?;
    Ok(identity)
}

/// Whether `origin` is one of `DECNET_CORS_ORIGINS` (or they allow any).
fn origin_allowed(state: &AppState, origin: &str) -> bool {
    state
        .cors_origins
        .iter()
        .any(|allowed| allowed == "*" || allowed == origin)
}

fn cors_headers(state: &AppState, request_headers: &HeaderMap, response: &mut Response<Body>) {
    let Some(origin) = request_headers.get(header::ORIGIN) else {
        return;
    };
    let allowed = origin.to_str().is_ok_and(|o| origin_allowed(state, o));
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if allowed {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Retry-After, WWW-Authenticate"),
        );
    }
}

fn preflight(state: &AppState, headers: &HeaderMap, route: Route<'_>) -> Response<Body> {
    let origin_ok = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| origin_allowed(state, o));
    let method_ok = headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| m.to_str().ok())
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .is_some_and(|m| route.allowed().contains(&m));
    if !origin_ok || !method_ok {
        // Starlette's wording, which DECNET's dashboard already sees.
        let failures: Vec<&str> = [(!origin_ok, "origin"), (!method_ok, "method")]
            .into_iter()
            .filter_map(|(failed, what)| failed.then_some(what))
            .collect();
        let mut response = Response::new(full(format!("Disallowed CORS {}", failures.join(", "))));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return response;
    }
    let mut response = Response::new(full(Bytes::new()));
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, Last-Event-ID, Cache-Control"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

/// Serve one request.
pub(crate) async fn handle(
    state: Arc<AppState>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let headers = request.headers().clone();
    let route = Route::parse(&path);

    let mut response = if method == Method::OPTIONS && route != Route::NotFound {
        preflight(&state, &headers, route)
    } else if route == Route::NotFound {
        error(StatusCode::NOT_FOUND, "Not Found")
    } else if !route.allowed().contains(&method) {
        let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        let allow = route
            .allowed()
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if let Ok(allow) = HeaderValue::from_str(&allow) {
            response.headers_mut().insert(header::ALLOW, allow);
        }
        response
    } else if request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_BODY_BYTES)
    {
        error(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
    } else {
        match route {
            Route::Console => {
                let mut response = Response::new(full(CONSOLE_HTML));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                response
            }
            Route::Healthz => json_response(StatusCode::OK, &json!({"status": "ok"})),
            Route::Readyz => readyz(&state).await,
            Route::Metrics => {
                let mut response = Response::new(full(state.metrics.render()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            Route::Ticket => {
                let span = tracing::info_span!("api.sse_ticket");
                mint_ticket(&state, &headers).instrument(span).await
            }
            Route::Events(uuid) => {
                let span = tracing::info_span!("api.attackers.events", attacker_uuid = %uuid);
                events(&state, uuid, query.as_deref(), &headers)
                    .instrument(span)
                    .await
            }
            Route::NotFound => error(StatusCode::NOT_FOUND, "Not Found"),
        }
    };
    cors_headers(&state, &headers, &mut response);
    let status = response.status();
    state
        .metrics
        .request_seconds
        .get_or_create(&crate::metrics::RouteLabels {
            route: route.label(),
            status: status.as_u16(),
        })
        .observe(started.elapsed().as_secs_f64());
    // Never log the Authorization header or a ticket/token value.
    tracing::info!(
        target: "decnet_events::access",
        peer = %peer,
        method = %method,
        path = %path,
        query = %redacted_query(query.as_deref()),
        status = status.as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

async fn readyz(state: &AppState) -> Response<Body> {
    let bus_state = state.bus.state();
    let bus_ok = state.bus.kind().is_null() || bus_state == ConnectionState::Connected;
    let repo_ok = tokio::time::timeout(Duration::from_secs(2), state.repo.ping())
        .await
        .is_ok_and(|r| r.is_ok());
    let body = json!({
        "status": if bus_ok && repo_ok { "ready" } else { "not ready" },
        "bus": { "kind": state.bus.kind().as_str(), "state": bus_state.as_str() },
        "repository": if repo_ok { "ok" } else { "unavailable" },
        "hub": if state.hub.is_subscribed() { "subscribed" } else { "not subscribed" },
    });
    let status = if bus_ok && repo_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &body)
}

async fn mint_ticket(state: &AppState, headers: &HeaderMap) -> Response<Body> {
    let token = match bearer(headers) {
        Some(Ok(token)) => token,
        _ => return unauthorized(),
    };
    let identity = match authenticate_bearer(state, token).await {
        Ok(identity) => identity,
        Err(response) => return response,
    };
    match state.tickets.mint(&identity, state.ticket_ttl).await {
        Ok(ticket) => json_response(
            StatusCode::OK,
            &json!({"ticket": ticket.expose(), "expires_in": state.ticket_ttl.as_secs()}),
        ),
        Err(error) => {
            tracing::warn!(%error, user = %identity.user_uuid, "ticket store failed");
            unavailable("Service temporarily unavailable")
        }
    }
}

/// The session a stream was opened with, re-checked while it is open.
struct JwtSession {
    verifier: Arc<TokenVerifier>,
    identity: Identity,
}

impl SessionCheck for JwtSession {
    fn expires_at(&self) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_secs(self.identity.exp))
    }

    fn revalidate(&self) -> BoxFuture<'static, SessionVerdict> {
        let verifier = self.verifier.clone();
        let identity = self.identity.clone();
        Box::pin(async move {
            match verifier.revalidate(&identity).await {
                Ok(()) => SessionVerdict::Valid,
                Err(e) if e.is_unavailable() => SessionVerdict::Unknown,
                Err(_) => SessionVerdict::Ended,
            }
        })
    }
}

async fn events(
    state: &AppState,
    attacker_uuid: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Response<Body> {
    // 1. Authenticate: Bearer header, else a single-use ticket. `?token=` never.
    let identity = match bearer(headers) {
        Some(Ok(token)) => match authenticate_bearer(state, token).await {
            Ok(identity) => identity,
            Err(response) => {
                state.metrics.stream_result(result_of(response.status()));
                return response;
            }
        },
        Some(Err(())) => {
            state.metrics.stream_result("unauthorized");
            return unauthorized();
        }
        None => {
            let Some(ticket) = query_param(query, "ticket").filter(|t| !t.is_empty()) else {
                state.metrics.stream_result("unauthorized");
                return unauthorized();
            };
            let identity = match state.tickets.redeem(&ticket).await {
                Ok(Some(identity)) => identity,
                Ok(None) => {
                    state.metrics.stream_result("unauthorized");
                    return unauthorized();
                }
                Err(error) => {
                    tracing::warn!(%error, "ticket store failed");
                    state.metrics.stream_result("unavailable");
                    return unavailable("Service temporarily unavailable");
                }
            };
            // The JWT behind the ticket may have been revoked since it was minted.
            if let Err(err) = state.verifier.revalidate(&identity).await {
                state.metrics.stream_result(if err.is_unavailable() {
                    "unavailable"
                } else {
                    "unauthorized"
                });
                return auth_failure(&err);
            }
            if let Err(reason) = authorize_stream(&identity) {
                state.metrics.stream_result("forbidden");
                return forbidden(&reason);
            }
            identity
        }
    };

    // 2. The attacker (404 after auth, so probes learn nothing).
    let attacker = match state.repo.attacker_by_uuid(attacker_uuid).await {
        Ok(Some(attacker)) => attacker,
        Ok(None) => {
            state.metrics.stream_result("not_found");
            return error(StatusCode::NOT_FOUND, "Attacker not found");
        }
        Err(error) => {
            tracing::warn!(%error, "repository unavailable loading attacker");
            state.metrics.stream_result("unavailable");
            return unavailable("Service temporarily unavailable");
        }
    };

    // 3. A connection slot, before any stream byte.
    let slot = match state.limiter.try_acquire(&identity.user_uuid) {
        Ok(slot) => slot,
        Err(LimitError::PerUser { limit }) => {
            state.metrics.stream_result("limited");
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("SSE connection limit ({limit}) reached"),
            );
        }
        Err(LimitError::Global { .. }) => {
            state.metrics.stream_result("limited");
            return unavailable("SSE server at capacity");
        }
        Err(_) => {
            state.metrics.stream_result("limited");
            return unavailable("SSE server at capacity");
        }
    };

    // 4. Open: resume from Last-Event-ID (header) or ?last_event_id=.
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query_param(query, "last_event_id"))
        .filter(|id| !id.is_empty());
    let options = OpenOptions {
        last_event_id,
        session: Some(Arc::new(JwtSession {
            verifier: state.verifier.clone(),
            identity: identity.clone(),
        })),
        guard: Some(Box::new(slot)),
    };
    let stream = match state.hub.open(&attacker, options).await {
        Ok(stream) => stream,
        Err(OpenError::Repository(error)) => {
            tracing::warn!(%error, "repository unavailable loading snapshot");
            state.metrics.stream_result("unavailable");
            return unavailable("Service temporarily unavailable");
        }
        Err(_) => {
            state.metrics.stream_result("unavailable");
            return unavailable("Server shutting down");
        }
    };
    state.metrics.stream_result("ok");
    tracing::info!(user = %identity.user_uuid, attacker_uuid = %attacker.uuid, "stream opened");

    let body = StreamBody::new(stream.map(|chunk| Ok::<_, Infallible>(Frame::data(chunk))));
    let mut response = Response::new(BodyExt::boxed_unsync(body));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    response
}

fn result_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "error",
    }
}

/// Accept connections on `listener` until `shutdown` resolves, then stop
/// accepting, end every stream cleanly, and wait up to `grace` for
/// connections to close.
///
/// # Errors
///
/// Never in practice: accept errors are logged and retried.
pub(crate) async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> anyhow::Result<()> {
    // HTTP/1.1 only: browsers speak SSE over HTTP/2 only with TLS, which a
    // reverse proxy terminates; plain h2c would cost every connection the
    // protocol-detection wrapper for no client.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // hyper's read buffer grows up to this and stays with the connection:
        // 8 KiB keeps an idle stream small (request heads beyond it get 431).
        .max_buf_size(MAX_HEAD_BYTES);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let service = hyper::service::service_fn(move |request| {
                    // Boxed: hyper keeps a slot for the service future inline in
                    // every connection for its whole life, streams included; a
                    // box makes that slot one pointer.
                    let response = Box::pin(handle(state.clone(), request, peer));
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: no longer accepting; ending streams");
    state.hub.shutdown();
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!(?grace, "grace period over; dropping remaining connections"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            Route::parse("/api/v1/attackers/abc/events"),
            Route::Events("abc")
        );
        assert_eq!(Route::parse("/api/v1/attackers//events"), Route::NotFound);
        assert_eq!(
            Route::parse("/api/v1/attackers/a/b/events"),
            Route::NotFound
        );
        assert_eq!(Route::parse("/api/v1/auth/sse-ticket"), Route::Ticket);
        assert_eq!(Route::parse("/nope"), Route::NotFound);
    }

    #[test]
    fn query_params_decode_and_redact() {
        assert_eq!(
            query_param(Some("a=1&ticket=x%2By+z"), "ticket").as_deref(),
            Some("x+y z")
        );
        assert_eq!(query_param(Some("ticket"), "ticket").as_deref(), Some(""));
        assert_eq!(query_param(None, "ticket"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(
            redacted_query(Some("ticket=secret&last_event_id=5&token=jwt")),
            "?ticket=[redacted]&last_event_id=5&token=[redacted]"
        );
    }

    #[test]
    fn bearer_parsing() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&headers), Some(Ok("abc")));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer(&headers), Some(Ok("abc")));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), Some(Err(())));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert_eq!(bearer(&headers), Some(Err(())));
    }
}
