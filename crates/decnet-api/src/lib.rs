//! The HTTP application of decnet-events, as a library.
//!
//! What it is: every endpoint decnet-events serves ([`App`]): the six
//! streams of DECNET's dashboard (Bearer or single-use ticket
//! authentication, the 404 / 429 / 503 answers before any stream byte, the
//! SSE response), the ticket endpoint, `/healthz`, `/readyz`, `/metrics`,
//! CORS, the access log with secrets redacted; [`RepositoryBreaker`], which
//! turns requests away at once while the database is down or hung; one
//! [`Refusal`] type for every error answer; [`JwtSession`], the adapter
//! between decnet-auth and decnet-stream; and [`serve`], which runs an
//! [`App`] on a listener with connection watchdogs (write progress, session
//! expiry enforced outside the body, connection caps) and drains on
//! shutdown, the hub and the probe task included.
//! What it is not: a configuration reader or a backend chooser. The binary
//! (`bins/decnet-events`) reads the environment through [`settings`] and
//! builds the backends; an embedder builds its own [`AppParts`].
//!
//! Mount it in your own hyper service ([`App::serves`] then [`App::handle`];
//! `examples/embed.rs` is a whole program mounting the attacker stream):
//!
//! ```no_run
//! # async fn run(app: decnet_api::App) {
//! use http_body_util::{BodyExt, Full};
//! let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
//!     let app = app.clone();
//!     async move {
//!         if app.serves(&request) {
//!             return Ok::<_, std::convert::Infallible>(app.handle(request).await);
//!         }
//!         let body = Full::new(bytes::Bytes::from("mine")).map_err(|n| match n {}).boxed_unsync();
//!         Ok(hyper::Response::new(body))
//!     }
//! });
//! # let _ = service;
//! # }
//! ```

mod access_log;
mod app;
mod assemble;
mod auth;
mod body;
mod breaker;
mod conn;
mod console;
mod cors;
pub mod demo;
mod h1stream;
pub mod healthcheck;
mod metrics;
mod proxy;
mod query;
mod rate;
mod refusal;
mod routes;
mod serve;
pub mod settings;
mod tls;

pub use access_log::AccessLog;
pub use app::{App, AppConfig, AppParts, MAX_BODY_BYTES};
pub use assemble::Backends;
pub use auth::{
    JwtSession, REVALIDATE_EVERY, REVOCATION_BUDGET, VERIFIER_CACHE_TTL, authenticate_bearer,
    bearer, redeem_ticket,
};
pub use body::{Body, BoxError, full};
pub use breaker::{
    BreakerConfig, BreakerCounters, BreakerOpen, ProbeTask, RepositoryBreaker, TripCause,
    is_breaker_open,
};
pub use conn::ConnCtx;
pub use console::CONSOLE_CSP;
pub use cors::Cors;
pub use metrics::Metrics;
pub use proxy::{Upstream, UpstreamConfig, UpstreamError};
pub use query::{param as query_param, redacted as redacted_query};
pub use refusal::{RETRY_AFTER_SECS, Refusal, UNAUTHORIZED_DETAIL};
pub use routes::{ConsoleAsset, Route, StreamRoute};
pub use serve::{ServeConfig, serve};
pub use tls::{Tls, TlsError};
