//! [`App`]: every endpoint decnet-events serves, as one request handler.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use decnet_auth::{ConnectionLimiter, Identity, TicketStore, TokenVerifier};
use decnet_bus::{Bus, ConnectionState};
use decnet_repo::Health;
use decnet_stream::{EventStream, KindId, LogHub, OpenOptions, StreamHub};
use futures::StreamExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::json;
use tracing::Instrument;

use crate::access_log::AccessLog;
use crate::auth::{JwtSession, authenticate_bearer, bearer, redeem_ticket};
use crate::body::{Body, BoxError, full};
use crate::breaker::{ProbeTask, RepositoryBreaker};
use crate::conn::ConnCtx;
use crate::cors::Cors;
use crate::metrics::{Metrics, RouteLabels};
use crate::proxy::Upstream;
use crate::query;
use crate::rate::RateLimiter;
use crate::refusal::Refusal;
use crate::routes::{Route, StreamRoute};

/// Largest request body accepted by our routes (the API reads none).
pub const MAX_BODY_BYTES: u64 = 64 * 1024;

/// The route label of forwarded requests (metrics and access log).
const UPSTREAM_LABEL: &str = "upstream";

/// The HTTP-level settings of an [`App`].
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Ticket lifetime (`DECNET_SSE_TICKET_TTL`).
    pub ticket_ttl: Duration,
    /// Allowed dashboard origins.
    pub cors: Cors,
    /// Stream opens a user may make per second, sustained
    /// (`DECNET_SSE_OPEN_RATE`; 0 = unlimited).
    pub open_rate: f64,
    /// Stream opens a user may make at once before the rate applies
    /// (`DECNET_SSE_OPEN_BURST`).
    pub open_burst: u32,
    /// Whether `/readyz` and `/metrics` are served on this listener (false
    /// when `DECNET_OPS_BIND` puts them on their own).
    pub ops_on_main: bool,
    /// Whether `GET /` serves the console page (and `GET /console.js`,
    /// `GET /console.css` its assets).
    pub console: bool,
    /// Access log settings.
    pub access_log: AccessLog,
    /// DECNET's developer mode (FastAPI's detailed 422 bodies on `/stream`).
    pub developer: bool,
    /// How long minting a ticket or opening a stream may take (credentials,
    /// the key's lookup, the snapshot) before it is a 503 with
    /// `Retry-After`, so a slow database is not waited for the repository's
    /// whole call deadline (`DECNET_SSE_OPEN_TIMEOUT_MS`). A database that
    /// hangs is refused sooner, by the [`RepositoryBreaker`].
    pub open_timeout: Duration,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            ticket_ttl: Duration::from_secs(60),
            cors: Cors::default(),
            open_rate: 5.0,
            open_burst: 20,
            ops_on_main: true,
            console: true,
            access_log: AccessLog::default(),
            developer: false,
            open_timeout: Duration::from_secs(5),
        }
    }
}

/// The parts an [`App`] is made of: the stream hub and the auth pieces.
pub struct AppParts {
    /// The stream hub (every kind it serves is routed).
    pub hub: StreamHub,
    /// JWT verification.
    pub verifier: TokenVerifier,
    /// Where tickets live.
    pub tickets: Arc<dyn TicketStore>,
    /// Per-user (and total) stream slots, shared by every kind.
    pub limiter: ConnectionLimiter,
    /// Readiness of the data layer: what the breaker probes (the
    /// repository itself, not its guarded view).
    pub health: Arc<dyn Health>,
    /// The repository's circuit breaker. Give the hub, the verifier and the
    /// log pollers the repository through [`RepositoryBreaker::guard`] so
    /// requests fail at once while it is open ([`App::from_settings`] does);
    /// without that it still drives `/readyz` and its metrics.
    pub breaker: RepositoryBreaker,
    /// The bus (for readiness and metrics).
    pub bus: Bus,
    /// The `/stream` pollers (`None`: `/stream` answers 404).
    pub logs: Option<LogHub>,
}

struct Inner {
    hub: StreamHub,
    verifier: TokenVerifier,
    tickets: Arc<dyn TicketStore>,
    limiter: ConnectionLimiter,
    health: Arc<dyn Health>,
    breaker: RepositoryBreaker,
    /// The breaker's probe task: stopped by [`App::shutdown`], or when the
    /// last clone of the application is dropped.
    probe: Option<ProbeTask>,
    bus: Bus,
    metrics: Metrics,
    config: AppConfig,
    open_rate: RateLimiter,
    kinds: [Option<KindId>; 5],
    logs: Option<LogHub>,
}

/// The decnet-events HTTP application: every route, authentication, CORS,
/// the SSE responses, the ticket endpoint, `/healthz`, `/readyz`,
/// `/metrics`, and the access log. Cheap to clone.
///
/// Serve it with [`crate::serve`], or mount it in your own hyper or axum
/// service: [`App::serves`] says whether a request is one of its routes and
/// [`App::handle`] answers it (see the crate's example).
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
    role: Role,
    /// Where requests for other routes go ([`App::with_upstream`]).
    upstream: Option<Upstream>,
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Everything (the ops endpoints too unless `ops_on_main` is off).
    Main,
    /// Only `/healthz`, `/readyz` and `/metrics` (`DECNET_OPS_BIND`).
    Ops,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

const STREAM_ROUTES: [StreamRoute; 5] = [
    StreamRoute::Attacker,
    StreamRoute::Identities,
    StreamRoute::Campaigns,
    StreamRoute::Orchestrator,
    StreamRoute::Topology,
];

fn route_index(route: StreamRoute) -> usize {
    STREAM_ROUTES.iter().position(|r| *r == route).unwrap_or(0)
}

impl App {
    /// An application over `parts` with `config`. `extra_metrics` are
    /// exposed on `/metrics` too (the binary's process collectors, say).
    pub fn new(
        parts: AppParts,
        config: AppConfig,
        extra_metrics: Vec<Box<dyn prometheus_client::collector::Collector>>,
    ) -> App {
        let metrics = Metrics::new(
            parts.hub.clone(),
            parts.bus.clone(),
            parts.tickets.clone(),
            parts.limiter.clone(),
            parts.breaker.clone(),
            extra_metrics,
        );
        let probe = parts.breaker.start(parts.health.clone());
        let kinds = STREAM_ROUTES.map(|route| parts.hub.kind_id(route.kind()));
        App {
            inner: Arc::new(Inner {
                open_rate: RateLimiter::new(config.open_rate, config.open_burst),
                hub: parts.hub,
                verifier: parts.verifier,
                tickets: parts.tickets,
                limiter: parts.limiter,
                health: parts.health,
                breaker: parts.breaker,
                probe,
                bus: parts.bus,
                metrics,
                config,
                kinds,
                logs: parts.logs,
            }),
            role: Role::Main,
            upstream: None,
        }
    }

    /// Forward every request this application does not serve itself to
    /// DECNET's API (`DECNET_EVENTS_UPSTREAM`), through [`App::call`].
    #[must_use]
    pub fn with_upstream(mut self, upstream: Upstream) -> App {
        self.upstream = Some(upstream);
        self
    }

    /// The same application serving only `/healthz`, `/readyz` and
    /// `/metrics`, for a listener of its own (`DECNET_OPS_BIND`), so a
    /// public bind does not expose them.
    pub fn ops(&self) -> App {
        App {
            inner: self.inner.clone(),
            role: Role::Ops,
            upstream: None,
        }
    }

    /// Whether `route` is served by this application on this listener.
    fn routes(&self, route: &Route) -> bool {
        let config = &self.inner.config;
        match self.role {
            Role::Ops => route.is_ops(),
            Role::Main => match route {
                Route::NotFound => false,
                Route::Readyz | Route::Metrics => config.ops_on_main,
                route if route.is_console() => config.console,
                _ => true,
            },
        }
    }

    /// The stream hub.
    pub fn hub(&self) -> &StreamHub {
        &self.inner.hub
    }

    /// The connection limiter (slots held by every stream).
    pub fn limiter(&self) -> &ConnectionLimiter {
        &self.inner.limiter
    }

    /// The repository's circuit breaker.
    pub fn breaker(&self) -> &RepositoryBreaker {
        &self.inner.breaker
    }

    /// Stop the application's background work: the hub ends every stream
    /// ([`StreamHub::shutdown`]) and the repository probe task stops.
    /// [`crate::serve`] calls it when it stops accepting; an embedder calls
    /// it at its own shutdown. Idempotent.
    pub fn shutdown(&self) {
        self.inner.hub.shutdown();
        if let Some(probe) = &self.inner.probe {
            probe.stop();
        }
    }

    /// The gauge of the connections [`crate::serve`] holds.
    pub(crate) fn connections_gauge(&self) -> prometheus_client::metrics::gauge::Gauge {
        self.inner.metrics.connections_open.clone()
    }

    /// Count an HTTP/1.1 stream by its writer (`own` or `hyper`).
    pub(crate) fn count_http1_stream(&self, writer: &'static str) {
        self.inner.metrics.http1_stream(writer);
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics_text(&self) -> String {
        self.inner.metrics.render()
    }

    /// Whether `request` is for one of this application's routes (an
    /// embedder sends the others elsewhere).
    pub fn serves<B>(&self, request: &Request<B>) -> bool {
        self.routes(&Route::parse(request.uri().path()))
    }

    /// Answer one request as [`crate::serve`] does: this application's
    /// routes through [`App::handle`], every other request forwarded to the
    /// upstream when one is set ([`App::with_upstream`]), body and all.
    pub async fn call<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Some(upstream) = self.upstream.as_ref().filter(|_| !self.serves(&request)) else {
            return self.handle(request).await;
        };
        let started = Instant::now();
        let peer = request.extensions().get::<SocketAddr>().copied();
        let secure = request
            .extensions()
            .get::<Arc<ConnCtx>>()
            .is_some_and(|c| c.is_secure());
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().map(str::to_owned);
        let (response, outcome) = upstream
            .forward(request, crate::proxy::ClientSide { peer, secure })
            .await;
        let metrics = &self.inner.metrics;
        metrics
            .upstream_requests
            .get_or_create(&crate::metrics::UpstreamLabels {
                result: outcome.label(),
            })
            .inc();
        let status = response.status();
        metrics
            .request_seconds
            .get_or_create(&RouteLabels {
                route: UPSTREAM_LABEL,
                status: status.as_u16(),
            })
            .observe(started.elapsed().as_secs_f64());
        self.inner.config.access_log.record(
            UPSTREAM_LABEL,
            peer,
            &method,
            &path,
            query.as_deref(),
            status,
            started.elapsed(),
        );
        response
    }

    /// Answer one request. The body is never read (the API takes none), so
    /// any body type will do. The peer address and the connection context
    /// come from the request's extensions when [`crate::serve`] runs the
    /// connection; an embedder may leave them out.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Body> {
        let started = Instant::now();
        let peer = request.extensions().get::<SocketAddr>().copied();
        let conn = request.extensions().get::<Arc<ConnCtx>>().cloned();
        let (parts, _body) = request.into_parts();
        let route = Route::parse(parts.uri.path());
        let query = parts.uri.query();
        let mut response = self
            .respond(&parts.method, &route, query, &parts.headers, conn.as_ref())
            .await;
        self.inner
            .config
            .cors
            .decorate(&parts.headers, &mut response);
        let status = response.status();
        self.inner
            .metrics
            .request_seconds
            .get_or_create(&RouteLabels {
                route: route.label(),
                status: status.as_u16(),
            })
            .observe(started.elapsed().as_secs_f64());
        self.inner.config.access_log.record(
            route.label(),
            peer,
            &parts.method,
            parts.uri.path(),
            query,
            status,
            started.elapsed(),
        );
        response
    }

    async fn respond(
        &self,
        method: &Method,
        route: &Route,
        query: Option<&str>,
        headers: &HeaderMap,
        conn: Option<&Arc<ConnCtx>>,
    ) -> Response<Body> {
        let config = &self.inner.config;
        if !self.routes(route) {
            return Refusal::not_found("Not Found").into_response();
        }
        if Cors::is_preflight(method, headers) {
            return config.cors.preflight(headers);
        }
        if !route.allowed().contains(method) {
            let allow: Vec<&str> = route.allowed().iter().map(Method::as_str).collect();
            return Refusal::method_not_allowed(&allow.join(", ")).into_response();
        }
        if let Some(refusal) = body_refusal(route, headers) {
            return refusal.into_response();
        }
        match route {
            Route::Console => crate::console::page(),
            Route::ConsoleAsset(asset) => crate::console::asset(*asset),
            Route::Healthz => json_response(StatusCode::OK, &json!({"status": "ok"})),
            Route::Readyz => self.readyz().await,
            Route::Metrics => {
                let mut response = Response::new(full(self.metrics_text()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            Route::Ticket => {
                let span = tracing::info_span!("api.sse_ticket");
                self.within_open_timeout(self.mint_ticket(headers))
                    .instrument(span)
                    .await
                    .unwrap_or_else(Refusal::into_response)
            }
            Route::Stream(stream, key) => {
                let span = tracing::info_span!("api.stream", kind = stream.kind(), key = %key);
                let kind = stream.kind();
                let open = self.open_stream(*stream, key, query, headers, conn);
                match self.within_open_timeout(open).instrument(span).await {
                    Ok(response) => {
                        self.inner.metrics.stream_result(kind, "ok");
                        response
                    }
                    Err(refusal) => {
                        self.inner.metrics.stream_result(kind, refusal.label);
                        refusal.into_response()
                    }
                }
            }
            Route::Logs => {
                let span = tracing::info_span!("api.stream_events");
                let open = self.open_logs(query, headers, conn);
                match self.within_open_timeout(open).instrument(span).await {
                    Ok(response) => {
                        self.inner.metrics.stream_result("logs", "ok");
                        response
                    }
                    Err(refusal) => {
                        self.inner.metrics.stream_result("logs", refusal.label);
                        refusal.into_response()
                    }
                }
            }
            Route::NotFound => Refusal::not_found("Not Found").into_response(),
        }
    }

    async fn readyz(&self) -> Response<Body> {
        let inner = &self.inner;
        let bus_state = inner.bus.state();
        let bus_ok = inner.bus.kind().is_null() || bus_state == ConnectionState::Connected;
        // The breaker's state: down as soon as it opens; while it is closed
        // this request probes too (so a repository that just failed is seen
        // now, and opens the breaker), within the probe timeout.
        let repo_ok = inner.breaker.is_up() && inner.breaker.probe(inner.health.as_ref()).await;
        let ready = bus_ok && repo_ok;
        let body = json!({
            "status": if ready { "ready" } else { "not ready" },
            "bus": { "kind": inner.bus.kind().as_str(), "state": bus_state.as_str() },
            "repository": if repo_ok { "ok" } else { "unavailable" },
            "hub": if inner.hub.is_subscribed() { "subscribed" } else { "not subscribed" },
        });
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(status, &body)
    }

    async fn mint_ticket(&self, headers: &HeaderMap) -> Result<Response<Body>, Refusal> {
        let inner = &self.inner;
        let token = bearer(headers).ok_or_else(Refusal::unauthorized)?;
        let identity = authenticate_bearer(&inner.verifier, token).await?;
        let ticket = inner
            .tickets
            .mint(&identity, inner.config.ticket_ttl)
            .await
            .map_err(|e| Refusal::from(&e))?;
        Ok(json_response(
            StatusCode::OK,
            &json!({"ticket": ticket.expose(), "expires_in": ticket.ttl().as_secs()}),
        ))
    }

    /// `open` (a stream open or a ticket mint) bounded by
    /// [`AppConfig::open_timeout`]: past it, a 503 (the open is dropped,
    /// and with it every slot and registration it holds).
    async fn within_open_timeout(
        &self,
        open: impl Future<Output = Result<Response<Body>, Refusal>>,
    ) -> Result<Response<Body>, Refusal> {
        let deadline = self.inner.config.open_timeout;
        match tokio::time::timeout(deadline, open).await {
            Ok(opened) => opened,
            Err(_elapsed) => {
                tracing::warn!(
                    deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
                    "opening a stream exceeded its deadline (repository slow or hung)"
                );
                Err(Refusal::backend_down())
            }
        }
    }

    /// Bearer header, else a single-use ticket. `?token=` never.
    async fn identify(
        &self,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Identity, Refusal> {
        let inner = &self.inner;
        if let Some(token) = bearer(headers) {
            return authenticate_bearer(&inner.verifier, token).await;
        }
        let ticket = query::param(query, "ticket")
            .filter(|t| !t.is_empty())
            .ok_or_else(Refusal::unauthorized)?;
        redeem_ticket(inner.tickets.as_ref(), &inner.verifier, &ticket).await
    }

    async fn open_stream(
        &self,
        route: StreamRoute,
        key: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        conn: Option<&Arc<ConnCtx>>,
    ) -> Result<Response<Body>, Refusal> {
        let inner = &self.inner;
        let kind =
            inner.kinds[route_index(route)].ok_or_else(|| Refusal::not_found("Not Found"))?;
        // 1. Who is asking (401 / 403 / 503), before anything else is said.
        let identity = self.identify(query, headers).await?;
        // 2. How fast: lookups are bounded per user before they reach the database.
        if !inner.open_rate.allow(&identity.user_uuid) {
            return Err(Refusal::too_many("SSE open rate limit reached"));
        }
        // 3. Whether the key exists (404 after auth, so probes learn nothing).
        let info = inner
            .hub
            .lookup(kind, key)
            .await
            .map_err(|e| Refusal::from(&e))?
            .ok_or_else(|| Refusal::not_found(route.not_found()))?;
        // 4. A slot, before any stream byte (429 / 503).
        let slot = inner
            .limiter
            .try_acquire(&identity.user_uuid)
            .map_err(|e| Refusal::from(&e))?;
        // 5. Open: resume from Last-Event-ID (header), ?last_event_id= or ?lastEventId=.
        let last_event_id = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| query::param(query, "last_event_id"))
            .or_else(|| query::param(query, "lastEventId"))
            .filter(|id| !id.is_empty());
        let mark = conn.map(|c| c.stream_mark());
        let life = mark.as_ref().map(crate::conn::StreamMark::life);
        let options = OpenOptions {
            last_event_id,
            session: Some(JwtSession::new(inner.verifier.clone(), identity.clone())),
            guard: Some(Box::new((slot, mark))),
        };
        let mut stream = inner
            .hub
            .open(kind, key, info, options)
            .await
            .map_err(|e| match e {
                decnet_stream::OpenError::NotFound => Refusal::not_found(route.not_found()),
                other => Refusal::from(&other),
            })?;
        tracing::info!(user = %identity.user_uuid, kind = route.kind(), key = %key, "stream opened");
        if let (Some(conn), Some(life)) = (conn, life)
            && let Some(watch) = stream.take_session_watch()
        {
            conn.stream_opened(watch, life);
        }
        Ok(sse_response(stream))
    }
}

impl App {
    /// `GET /api/v1/stream`: DECNET's parameters, checked after the
    /// credentials are known to be there but before a ticket is spent.
    async fn open_logs(
        &self,
        query: Option<&str>,
        headers: &HeaderMap,
        conn: Option<&Arc<ConnCtx>>,
    ) -> Result<Response<Body>, Refusal> {
        let inner = &self.inner;
        let logs = inner
            .logs
            .as_ref()
            .ok_or_else(|| Refusal::not_found("Not Found"))?;
        if bearer(headers).is_none() && query::param(query, "ticket").is_none_or(|t| t.is_empty()) {
            return Err(Refusal::unauthorized());
        }
        // lastEventId (DECNET's), or the Last-Event-ID header / ?last_event_id= (ours).
        let raw = query::param(query, "lastEventId")
            .or_else(|| {
                headers
                    .get("last-event-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            })
            .or_else(|| query::param(query, "last_event_id"));
        let last_event_id = match raw {
            None => 0,
            Some(raw) => {
                decnet_stream::lax_int(&raw).ok_or_else(|| self.invalid_int("lastEventId", &raw))?
            }
        };
        let max_output = match query::param(query, "maxOutput") {
            None => None,
            Some(raw) => Some(
                decnet_stream::lax_int(&raw).ok_or_else(|| self.invalid_int("maxOutput", &raw))?,
            ),
        };
        let identity = self.identify(query, headers).await?;
        if !inner.open_rate.allow(&identity.user_uuid) {
            return Err(Refusal::too_many("SSE open rate limit reached"));
        }
        let slot = inner
            .limiter
            .try_acquire(&identity.user_uuid)
            .map_err(|e| Refusal::from(&e))?;
        let filter = decnet_repo::LogFilter::new(
            query::param(query, "search").as_deref(),
            query::param(query, "start_time").as_deref(),
            query::param(query, "end_time").as_deref(),
        );
        let mark = conn.map(|c| c.stream_mark());
        let life = mark.as_ref().map(crate::conn::StreamMark::life);
        let options = OpenOptions {
            last_event_id: None,
            session: Some(JwtSession::new(inner.verifier.clone(), identity.clone())),
            guard: Some(Box::new((slot, mark))),
        };
        let params = decnet_stream::LogParams {
            filter,
            last_event_id,
            max_output,
        };
        let mut stream = logs
            .open(params, options)
            .await
            .map_err(|e| Refusal::from(&e))?;
        tracing::info!(user = %identity.user_uuid, kind = "logs", "stream opened");
        if let (Some(conn), Some(life)) = (conn, life)
            && let Some(watch) = stream.take_session_watch()
        {
            conn.stream_opened(watch, life);
        }
        Ok(sse_response(stream))
    }

    /// 422 for a query integer pydantic would refuse: DECNET's generic body,
    /// or FastAPI's detailed one in developer mode.
    fn invalid_int(&self, name: &str, input: &str) -> Refusal {
        let mut refusal = Refusal::invalid_parameters();
        if self.inner.config.developer {
            refusal.detail_json = Some(json!([{
                "type": "int_parsing",
                "loc": ["query", name],
                "msg": "Input should be a valid integer, unable to parse string as an integer",
                "input": input,
            }]));
        }
        refusal
    }
}

/// 413 for an oversized declared body, 415 for a typed non-JSON body on a
/// POST (DECNET's content-type middleware, which runs before auth).
fn body_refusal(route: &Route, headers: &HeaderMap) -> Option<Refusal> {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if length.parse::<u64>().is_ok_and(|n| n > MAX_BODY_BYTES) {
        return Some(Refusal::too_large());
    }
    if *route == Route::Ticket {
        let chunked = headers
            .get(header::TRANSFER_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        let has_body = !(length.is_empty() || length == "0") || chunked;
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/json"));
        if has_body && !json {
            return Some(Refusal::unsupported_media_type());
        }
    }
    None
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

/// The 200 of a stream: DECNET's headers, the frames as a chunked body.
pub(crate) fn sse_response(stream: EventStream) -> Response<Body> {
    let body = StreamBody::new(stream.map(|chunk| Ok::<_, BoxError>(Frame::data(chunk))));
    let mut response = Response::new(BodyExt::boxed_unsync(body));
    response
        .extensions_mut()
        .insert(crate::h1stream::EventStreamResponse);
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
