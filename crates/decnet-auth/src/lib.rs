//! Authentication for DECNET's event streams.
//!
//! What it is: the checks that stand between a request and an SSE stream.
//! - [`TokenVerifier`] verifies a dashboard JWT under DECNET's trust contract
//!   (HS256 only, pinned `iss` / `aud` / `typ`, `jti` required, no clock leeway
//!   by default, revocation through `tokens_valid_from` and the `revoked_tokens`
//!   denylist) and turns it into an [`Identity`]. Long-lived streams call
//!   [`TokenVerifier::revalidate`] periodically so a session ends when its token
//!   expires or is revoked.
//! - [`authorize_stream`] is the role gate (`viewer` and `admin` may stream;
//!   `must_change_password` is refused first), with DECNET's exact messages in
//!   [`Forbidden`].
//! - [`TicketStore`] (a dyn-compatible trait) mints and redeems single-use,
//!   short-lived opaque [`Ticket`]s for the browser's `EventSource`, which
//!   cannot send headers, within [`TicketLimits`]. [`MemoryTicketStore`]
//!   serves one process; `RedisTicketStore` (feature `redis`) makes redemption
//!   single-use across every instance behind a load balancer, under keyed
//!   hashes and MACs so neither a Redis dump nor a Redis writer yields a
//!   ticket.
//! - [`ConnectionLimiter`] caps concurrent streams per user (and optionally in
//!   total) with an RAII [`ConnectionSlot`] released on drop, including when the
//!   task holding it is cancelled.
//! - [`mint_access_token`] and [`encode_claims`] sign tokens for operators
//!   (`decnet-events mint-token`), the embedded demo and tests.
//!
//! What it is not: a login service (it never sees passwords and never issues
//! refresh tokens), an HTTP layer (status codes and response bodies belong to
//! the HTTP crate), or a writer of the user tables (it only reads them through
//! a [`decnet_repo::AccountReader`]).
//!
//! Secrets: no function here logs a JWT, a ticket value or the signing secret.
//! [`Ticket`]'s `Debug` and `Display` redact the value, and
//! [`VerifierConfig`]'s `Debug` redacts the secret. Failure reasons are logged
//! at `debug` level with the user's uuid at most.
//!
//! The flow in the server, end to end:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use decnet_auth::{
//!     ConnectionLimiter, MemoryTicketStore, TicketStore, TokenVerifier, VerifierConfig,
//!     authorize_stream, mint_access_token,
//! };
//! use decnet_repo::{MemoryRepository, RepositoryWriter, User};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let repo = MemoryRepository::new();
//! repo.create_user(&User {
//!     uuid: "u1".into(),
//!     username: "alice".into(),
//!     password_hash: String::new(),
//!     role: "viewer".into(),
//!     must_change_password: false,
//!     tokens_valid_from: None,
//! })
//! .await?;
//! let secret = b"a-long-random-secret".to_vec();
//! let verifier = TokenVerifier::new(VerifierConfig::new(secret.clone()), Arc::new(repo));
//!
//! // POST /api/v1/auth/sse-ticket with `Authorization: Bearer <jwt>`.
//! let (jwt, _claims) = mint_access_token(&secret, "u1", Duration::from_secs(900))?;
//! let identity = verifier.verify(&jwt).await?; // 401 / 503
//! authorize_stream(&identity)?; // 403
//! let tickets: Arc<dyn TicketStore> = Arc::new(MemoryTicketStore::default());
//! let ticket = tickets.mint(&identity, Duration::from_secs(60)).await?;
//!
//! // GET /api/v1/attackers/{uuid}/events?ticket=...
//! let identity = tickets.redeem(ticket.expose()).await?.ok_or("401")?;
//! verifier.revalidate(&identity).await?; // and again every <= 30 s
//! let limiter = ConnectionLimiter::new(5, None);
//! let _slot = limiter.try_acquire(&identity.user_uuid)?; // 429; held by the body
//! # Ok(())
//! # }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(demo())
//! #     .map_err(|e| e.to_string())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Errors: [`AuthError`] keeps "the credentials are bad" (one
//! [`AuthError::Unauthorized`], whatever rule failed: answer 401) apart from
//! "the repository failed" ([`AuthError::Unavailable`]: answer 503).
//! [`TicketError`] and [`LimitError`] follow the same idea.

mod cache;
mod limiter;
mod mint;
mod roles;
mod snapshot;
mod ticket;
mod verifier;

pub use limiter::{ConnectionLimiter, ConnectionSlot, LimitError};
pub use mint::{
    AUDIENCE, Claims, ISSUER, MintError, TOKEN_TYPE_ACCESS, encode_claims, generate_secret,
    mint_access_token,
};
pub use roles::{Forbidden, ROLE_ADMIN, ROLE_VIEWER, authorize_stream};
pub use ticket::{
    DEFAULT_REDIS_PREFIX, MAX_TICKET_TTL, MemoryTicketStore, TICKET_LEN, Ticket, TicketCounters,
    TicketError, TicketLimits, TicketStore,
};
#[cfg(feature = "redis")]
pub use ticket::{RedisTicketConfig, RedisTicketStore};
pub use verifier::{
    AuthError, DEFAULT_CACHE_CAPACITY, DEFAULT_SNAPSHOT_CAPACITY, Identity, TokenVerifier,
    VerifierConfig, VerifierStats,
};

/// Boxed error source kept inside this crate's errors.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Seconds since the Unix epoch, from the system clock (0 if the clock is set
/// before 1970).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
