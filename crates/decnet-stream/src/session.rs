//! The seam through which a stream learns that the session behind it ended.

use std::time::SystemTime;

use futures::future::BoxFuture;

/// What a periodic re-check of a stream's session found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionVerdict {
    /// The session is still valid.
    Valid,
    /// The token expired or was revoked: end the stream with `Session expired`.
    Ended,
    /// The check could not be made (e.g. the database is down); try again later.
    Unknown,
}

/// The session (JWT) a stream was opened with, as the stream sees it.
///
/// The binary implements it with the auth crate; this crate only calls it, so
/// the stream core stays free of JWT and HTTP concerns.
pub trait SessionCheck: Send + Sync + 'static {
    /// When the token behind the stream expires, if it does.
    fn expires_at(&self) -> Option<SystemTime>;

    /// Re-check revocation (jti denylist, `tokens_valid_from`, user deleted,
    /// role no longer allowed). Called every `HubConfig::revalidate_every`.
    fn revalidate(&self) -> BoxFuture<'static, SessionVerdict>;
}
