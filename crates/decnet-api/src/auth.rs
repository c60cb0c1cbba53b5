//! Who is asking: the Bearer header or the `?ticket=` of a stream, turned
//! into an [`Identity`], and the [`JwtSession`] a stream re-checks.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use decnet_auth::{Identity, TicketStore, TokenVerifier, authorize_stream};
use decnet_stream::{SessionCheck, SessionVerdict};
use futures::future::BoxFuture;
use http::HeaderMap;
use http::header;

use crate::refusal::Refusal;

/// How long after a revocation a stream may still run: DESIGN.md's 30 s.
/// The verifier cache and the revalidation interval are derived from it.
pub const REVOCATION_BUDGET: Duration = Duration::from_secs(30);

/// The verifier's cache TTL: a third of the budget.
pub const VERIFIER_CACHE_TTL: Duration = Duration::from_secs(REVOCATION_BUDGET.as_secs() / 3);

/// How often a stream re-checks its session: a revocation is seen within
/// `REVALIDATE_EVERY + VERIFIER_CACHE_TTL`, a third of the budget to spare
/// for the check itself.
pub const REVALIDATE_EVERY: Duration =
    Duration::from_secs(REVOCATION_BUDGET.as_secs() - 2 * VERIFIER_CACHE_TTL.as_secs());

/// The token of an `Authorization: Bearer <token>` header, as DECNET reads
/// it: the header must start with exactly `Bearer ` (case-sensitive, one
/// space) and what follows is the token, untrimmed. Any other form counts as
/// no header at all (a stream then falls back to its ticket).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .filter(|token| !token.is_empty())
}

/// Verify a Bearer JWT and apply the role gate.
///
/// # Errors
///
/// 401 for any token failure, 403 for the role gate, 503 when the
/// repository is down.
pub async fn authenticate_bearer(
    verifier: &TokenVerifier,
    token: &str,
) -> Result<Identity, Refusal> {
    let identity = verifier
        .verify(token)
        .await
        .map_err(|e| Refusal::from(&e))?;
    authorize_stream(&identity).map_err(|reason| Refusal::forbidden(&reason))?;
    Ok(identity)
}

/// Redeem a stream's ticket (consumed whatever happens next) and re-check
/// the JWT behind it: a ticket cannot outlive a revocation by its TTL.
///
/// # Errors
///
/// 401 for an unknown, spent, expired or revoked ticket; 403 for the role
/// gate; 503 when the ticket store or the repository is down.
pub async fn redeem_ticket(
    tickets: &dyn TicketStore,
    verifier: &TokenVerifier,
    ticket: &str,
) -> Result<Identity, Refusal> {
    let identity = match tickets.redeem(ticket).await {
        Ok(Some(identity)) => identity,
        Ok(None) => return Err(Refusal::unauthorized()),
        Err(error) => return Err(Refusal::from(&error)),
    };
    verifier
        .revalidate(&identity)
        .await
        .map_err(|e| Refusal::from(&e))?;
    authorize_stream(&identity).map_err(|reason| Refusal::forbidden(&reason))?;
    Ok(identity)
}

/// The session a stream was opened with, re-checked while it is open: the
/// adapter between decnet-auth's verifier and decnet-stream's
/// [`SessionCheck`] seam.
pub struct JwtSession {
    verifier: TokenVerifier,
    identity: Identity,
}

impl JwtSession {
    /// The session of `identity` (from a verified token or a redeemed ticket).
    pub fn new(verifier: TokenVerifier, identity: Identity) -> Arc<Self> {
        Arc::new(Self { verifier, identity })
    }
}

impl std::fmt::Debug for JwtSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSession")
            .field("user", &self.identity.user_uuid)
            .finish_non_exhaustive()
    }
}

impl SessionCheck for JwtSession {
    fn expires_at(&self) -> Option<SystemTime> {
        // Checked: `exp` is whatever a signed token says (u64 seconds).
        self.identity.expires_at()
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

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn the_revocation_budget_derives_cache_and_interval() {
        assert_eq!(VERIFIER_CACHE_TTL, Duration::from_secs(10));
        assert_eq!(REVALIDATE_EVERY, Duration::from_secs(10));
        assert!(REVALIDATE_EVERY + VERIFIER_CACHE_TTL < REVOCATION_BUDGET);
    }

    #[test]
    fn bearer_is_read_as_decnet_reads_it() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            headers
        };
        assert_eq!(bearer(&HeaderMap::new()), None);
        assert_eq!(bearer(&with("Bearer abc")), Some("abc"));
        assert_eq!(
            bearer(&with("Bearer  abc")),
            Some(" abc"),
            "untrimmed: fails as a JWT"
        );
        assert_eq!(bearer(&with("bearer abc")), None, "case-sensitive");
        assert_eq!(bearer(&with("Basic abc")), None);
        assert_eq!(bearer(&with("Bearer ")), None);
        assert_eq!(bearer(&with("Bearer")), None);
    }

    #[test]
    fn an_exp_beyond_the_clock_is_no_deadline_not_a_panic() {
        let session = JwtSession::new(
            TokenVerifier::new(
                decnet_auth::VerifierConfig::new("s"),
                Arc::new(decnet_repo::MemoryRepository::new()),
            ),
            Identity {
                user_uuid: "u".into(),
                role: "viewer".into(),
                must_change_password: false,
                jti: "j".into(),
                iat: 0,
                exp: u64::MAX,
            },
        );
        assert_eq!(session.expires_at(), None);
    }
}
