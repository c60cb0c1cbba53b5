//! JWT verification under DECNET's trust contract.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use decnet_repo::{AccountReader, RepoError, User};
use futures::FutureExt;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Deserializer, Serialize};
use tracing::{debug, warn};

use crate::cache::TtlCache;
use crate::mint::{AUDIENCE, ISSUER, TOKEN_TYPE_ACCESS};
use crate::snapshot::{Revoked, Snapshot, Users};

/// How many users (and, separately, how many revocation answers) the optional
/// caches hold at most. The oldest entries are evicted first.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// How many users (and, separately, how many revoked jtis) the shared
/// snapshots hold at most. A table with more rows is not snapshotted: its
/// keys are looked up one by one (through the caches), and the overflow is
/// logged and counted ([`VerifierStats::snapshot_overflows`]).
pub const DEFAULT_SNAPSHOT_CAPACITY: u32 = 10_000;

/// Tokens longer than this are refused before any decoding (DECNET's tokens are
/// a few hundred bytes).
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The clock the verifier reads, in whole seconds since the Unix epoch.
///
/// The default reads the system clock; tests install their own with
/// [`TokenVerifier::with_clock`].
type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// What the verifier needs to know, built by the binary from its configuration.
#[derive(Clone)]
pub struct VerifierConfig {
    /// The HS256 signing secret (`DECNET_JWT_SECRET`). An empty secret makes
    /// every token fail verification.
    pub secret: Vec<u8>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds
    /// (`DECNET_JWT_LEEWAY_SECS`). DECNET uses 0.
    pub leeway_secs: u64,
    /// When `Some`, user rows and revocation answers are cached for this long
    /// (DECNET uses 10 s), at most [`DEFAULT_CACHE_CAPACITY`] of each, and
    /// [`TokenVerifier::revalidate`] reads the users and the revoked jtis as
    /// shared snapshots: one query per table per `cache_ttl` (concurrent
    /// refreshes coalesce), however many streams revalidate, for tables of at most
    /// [`DEFAULT_SNAPSHOT_CAPACITY`] rows (bigger ones are looked up key by
    /// key through the caches). [`TokenVerifier::verify`] never reads the
    /// snapshots, only the per-key caches, so a key it has not seen is read
    /// fresh. `None`: every check reads the repository.
    ///
    /// Staleness window: a revocation (jti denylisted, `tokens_valid_from`
    /// moved, user deleted, role or `must_change_password` changed) can take up
    /// to this long to be seen by [`TokenVerifier::verify`] and
    /// [`TokenVerifier::revalidate`]. A stream that revalidates every `n`
    /// seconds therefore notices a revocation within `n + cache_ttl` seconds:
    /// to honour DESIGN.md's 30 s, revalidate every `30 - cache_ttl` seconds.
    pub cache_ttl: Option<Duration>,
}

impl VerifierConfig {
    /// A configuration with DECNET's defaults: leeway 0 s, no cache.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret: secret.into(),
            leeway_secs: 0,
            cache_ttl: None,
        }
    }
}

impl fmt::Debug for VerifierConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifierConfig")
            .field("secret", &"<redacted>")
            .field("leeway_secs", &self.leeway_secs)
            .field("cache_ttl", &self.cache_ttl)
            .finish()
    }
}

/// Who a verified token speaks for.
///
/// `role` and `must_change_password` come from the user's row at verification
/// time (not from the token); `jti`, `iat` and `exp` from the token, so a
/// stream (or a ticket minted from this identity) can be ended when that token
/// expires or is revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The user's uuid.
    pub user_uuid: String,
    /// The user's role (`viewer`, `admin`, ...).
    pub role: String,
    /// Whether the user must change their password before using the API.
    pub must_change_password: bool,
    /// The token's unique id.
    pub jti: String,
    /// The token's issue time, epoch seconds.
    pub iat: u64,
    /// The token's expiry, epoch seconds.
    pub exp: u64,
}

impl Identity {
    /// When the token behind this identity expires, as a [`SystemTime`], or
    /// `None` when `exp` is beyond what the clock can represent (a signed
    /// token may carry any number; such a token is still refused by
    /// [`TokenVerifier::revalidate`] once `now >= exp`, which never happens).
    pub fn expires_at(&self) -> Option<SystemTime> {
        UNIX_EPOCH.checked_add(Duration::from_secs(self.exp))
    }
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token is not valid, whatever the rule it broke (HTTP 401
    /// `Could not validate credentials`). The reason is logged at `debug`,
    /// never returned.
    #[error("could not validate credentials")]
    Unauthorized,
    /// The repository failed while the token was being checked, so no answer
    /// can be given (HTTP 503 with `Retry-After`, never 401).
    ///
    /// Every [`RepoError`] lands here, unreachable database or not: a server
    /// side failure must not log the user out. Use
    /// [`RepoError::is_unavailable`] on the source to tell them apart.
    #[error("repository unavailable")]
    Unavailable(#[source] RepoError),
}

impl AuthError {
    /// Whether this is a server-side failure (retry later) rather than bad
    /// credentials.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, AuthError::Unavailable(_))
    }
}

/// The payload fields the rules look at. Every field is optional here so that
/// a missing one is refused by an explicit rule; a field of the wrong type
/// fails deserialization, which is refused too.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default, deserialize_with = "numeric_date")]
    iat: Option<u64>,
    #[serde(default, deserialize_with = "numeric_date")]
    exp: Option<u64>,
    #[serde(default, deserialize_with = "numeric_date")]
    nbf: Option<u64>,
}

/// A JSON NumericDate: a non-negative integer, or a finite non-negative float
/// truncated to whole seconds (as PyJWT's `int()` does). Anything else, `null`
/// included, is an error.
fn numeric_date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a non-negative number of seconds")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom("negative NumericDate"))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            // 2^53: beyond it floats are not whole seconds anyway.
            if v.is_finite() && (0.0..9_007_199_254_740_992.0).contains(&v) {
                // In range and non-negative: the cast only drops the fraction,
                // which is the intent (whole seconds, as PyJWT's int()).
                Ok(Some(v.trunc() as u64))
            } else {
                Err(E::custom("NumericDate out of range"))
            }
        }
    }
    deserializer.deserialize_any(Visitor)
}

/// Verifies DECNET access tokens and re-checks the identities they yield.
///
/// The rules (DESIGN.md "JWT rules"), each failure the same
/// [`AuthError::Unauthorized`]:
/// - the header's `alg` is exactly HS256 (`none`, HS384, RS256, ... refused)
///   and the signature verifies with the configured secret;
/// - `exp`, `iat`, `iss`, `aud`, `uuid` and `jti` are present; `iss` is the
///   string `"decnet"`, `aud` is `"decnet-dashboard"` (or a list holding it),
///   the payload's `typ` is `"access"`;
/// - with `now` from the clock and `leeway` from the config (0 by default):
///   refused when `now >= exp + leeway`, when `iat > now + leeway`, and when an
///   `nbf` is present and `nbf > now + leeway`;
/// - the user `uuid` exists; the token's `iat` is not earlier than the user's
///   `tokens_valid_from` floored to whole seconds (a token issued in the cutoff's
///   own second stays valid); the `jti` is not in `revoked_tokens`.
///
/// The time rules are checked here against an injectable clock
/// ([`TokenVerifier::with_clock`])
/// (jsonwebtoken's own `exp` / `nbf` checks read the system clock and are
/// switched off; its leeway is still set to the configured value, never its
/// 60 s default).
///
/// Cheap to clone: the caches, snapshots and the repository handle are shared.
#[derive(Clone)]
pub struct TokenVerifier {
    key: Option<Arc<DecodingKey>>,
    validation: Arc<Validation>,
    leeway: u64,
    repo: Arc<dyn AccountReader>,
    users: Option<Arc<TtlCache<String, User>>>,
    revoked: Option<Arc<TtlCache<String, bool>>>,
    snapshots: Option<Arc<Snapshots>>,
    lookups: Arc<AtomicU64>,
    clock: Clock,
}

/// The shared snapshots of a verifier with a cache.
struct Snapshots {
    users: Snapshot<Users>,
    revoked: Snapshot<Revoked>,
    overflows: Arc<AtomicU64>,
}

/// Which reads answer a check.
///
/// A first verification (a stream or ticket being opened) asks per key, so a
/// jti revoked or a user deleted a moment ago is refused at once unless that
/// very key was answered within the cache TTL; the shared snapshots, which
/// can be up to one TTL old for every key, answer only the revalidation of
/// streams already open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Per-key cache, then the repository.
    PerKey,
    /// The shared snapshots, then as [`Read::PerKey`].
    Shared,
}

/// What a [`TokenVerifier`] has read so far (for metrics and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifierStats {
    /// Bulk reads of the users table (one per `cache_ttl` at most).
    pub user_snapshots: u64,
    /// Bulk reads of the revoked jtis (one per `cache_ttl` at most).
    pub revoked_snapshots: u64,
    /// Snapshots refused because the table held more than
    /// [`DEFAULT_SNAPSHOT_CAPACITY`] rows (its keys are then looked up one
    /// by one).
    pub snapshot_overflows: u64,
    /// Single-key reads (`user_by_uuid`, `is_token_revoked`): without a
    /// cache, every check; with one, cache misses the snapshots could not
    /// answer.
    pub key_lookups: u64,
}

/// Bulk reads of at most `cap` rows, `None` past it (logged, counted).
fn capped<T>(
    rows: Option<Vec<T>>,
    cap: u32,
    table: &'static str,
    overflows: &AtomicU64,
) -> Option<Vec<T>> {
    let rows = rows?;
    if rows.len() > usize::try_from(cap).unwrap_or(usize::MAX) {
        overflows.fetch_add(1, Ordering::Relaxed);
        warn!(
            table,
            cap, "more rows than the verifier snapshots: checking keys one by one"
        );
        return None;
    }
    Some(rows)
}

impl Snapshots {
    fn new(repo: &Arc<dyn AccountReader>, ttl: Duration, cap: u32) -> Self {
        let overflows = Arc::new(AtomicU64::new(0));
        let (repo_users, over_users) = (repo.clone(), overflows.clone());
        let users = Snapshot::new(ttl, move || {
            let (repo, overflows) = (repo_users.clone(), over_users.clone());
            async move {
                let rows = repo.all_users(cap.saturating_add(1)).await?;
                Ok(capped(rows, cap, "users", &overflows)
                    .map(|rows| rows.into_iter().map(|u| (u.uuid.clone(), u)).collect()))
            }
            .boxed()
        });
        let (repo_revoked, over_revoked) = (repo.clone(), overflows.clone());
        let revoked = Snapshot::new(ttl, move || {
            let (repo, overflows) = (repo_revoked.clone(), over_revoked.clone());
            async move {
                let rows = repo.revoked_jtis(cap.saturating_add(1)).await?;
                Ok(capped(rows, cap, "revoked_tokens", &overflows).map(Revoked::new))
            }
            .boxed()
        });
        Self {
            users,
            revoked,
            overflows,
        }
    }
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("secret", &"<redacted>")
            .field("leeway_secs", &self.leeway)
            .field("cached", &self.users.is_some())
            .finish_non_exhaustive()
    }
}

/// Log why a token was refused (never the token) and return the one error.
fn refuse(reason: &'static str, user: Option<&str>) -> AuthError {
    debug!(reason, user = user.unwrap_or("-"), "token refused");
    AuthError::Unauthorized
}

/// A fixed description of a decoding failure. The error's own text can quote
/// parts of the token (serde messages do), so it is never logged.
fn decode_failure(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm => "algorithm not allowed",
        ErrorKind::MissingRequiredClaim(_) => "required claim missing",
        ErrorKind::InvalidClaimFormat(_) => "claim of the wrong type",
        ErrorKind::InvalidIssuer => "wrong iss",
        ErrorKind::InvalidAudience => "wrong aud",
        ErrorKind::Json(_) => "payload or header is not the expected JSON",
        ErrorKind::Base64(_) | ErrorKind::Utf8(_) => "not base64url / UTF-8",
        _ => "malformed token",
    }
}

/// Whether `iat` falls before the whole-second floor of `tokens_valid_from`.
fn before_cutoff(iat: u64, tokens_valid_from: Option<SystemTime>) -> bool {
    match tokens_valid_from.map(|t| t.duration_since(UNIX_EPOCH)) {
        // `as_secs` floors: a token from the cutoff's own second stays valid.
        Some(Ok(since_epoch)) => iat < since_epoch.as_secs(),
        // No cutoff, or one before 1970 (no NumericDate is earlier).
        None | Some(Err(_)) => false,
    }
}

impl TokenVerifier {
    /// A verifier with `config`, reading users and revocations from `repo`
    /// (any [`AccountReader`]: a DECNET backend of decnet-repo, or an
    /// embedder's own user store).
    ///
    /// An empty secret is logged as a warning; every token is then refused.
    pub fn new(config: VerifierConfig, repo: Arc<dyn AccountReader>) -> Self {
        let key = if config.secret.is_empty() {
            warn!("JWT secret is empty: every token will be refused");
            None
        } else {
            DecodingKey::from_secret(&config.secret).ok().map(Arc::new)
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        // jsonwebtoken's default is 60 s; DECNET's is 0. The time rules are
        // checked in `verify` with our clock, but never leave the default here.
        validation.leeway = config.leeway_secs;
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.validate_aud = true;

        let (users, revoked, snapshots) = match config.cache_ttl {
            Some(ttl) if !ttl.is_zero() => (
                Some(Arc::new(TtlCache::new(ttl, DEFAULT_CACHE_CAPACITY))),
                Some(Arc::new(TtlCache::new(ttl, DEFAULT_CACHE_CAPACITY))),
                Some(Arc::new(Snapshots::new(
                    &repo,
                    ttl,
                    DEFAULT_SNAPSHOT_CAPACITY,
                ))),
            ),
            _ => (None, None, None),
        };
        Self {
            key,
            validation: Arc::new(validation),
            leeway: config.leeway_secs,
            repo,
            users,
            revoked,
            snapshots,
            lookups: Arc::new(AtomicU64::new(0)),
            clock: Arc::new(crate::unix_now),
        }
    }

    /// Replace the snapshots' row cap ([`DEFAULT_SNAPSHOT_CAPACITY`]). For
    /// tests of the overflow path; no effect without a cache.
    #[must_use]
    pub fn with_snapshot_capacity(mut self, cap: u32) -> Self {
        if let (Some(_), Some(ttl)) = (&self.snapshots, self.users.as_ref().map(|c| c.ttl())) {
            self.snapshots = Some(Arc::new(Snapshots::new(&self.repo, ttl, cap)));
        }
        self
    }

    /// What this verifier (and its clones) have read so far.
    pub fn stats(&self) -> VerifierStats {
        let snapshots = self.snapshots.as_deref();
        VerifierStats {
            user_snapshots: snapshots.map_or(0, |s| s.users.refreshes()),
            revoked_snapshots: snapshots.map_or(0, |s| s.revoked.refreshes()),
            snapshot_overflows: snapshots.map_or(0, |s| s.overflows.load(Ordering::Relaxed)),
            key_lookups: self.lookups.load(Ordering::Relaxed),
        }
    }

    /// Replace the clock (epoch seconds) the time rules read. For tests.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Verify `token` and return the identity it speaks for.
    ///
    /// # Errors
    ///
    /// [`AuthError::Unauthorized`] when any rule fails (see the type's docs);
    /// [`AuthError::Unavailable`] when the repository fails while the user or
    /// the revocation list is read.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let claims = self.decode(token)?;
        let now = (self.clock)();
        let leeway = self.leeway;

        let Some(exp) = claims.exp else {
            return Err(refuse("exp missing", None));
        };
        let Some(iat) = claims.iat else {
            return Err(refuse("iat missing", None));
        };
        let Some(uuid) = claims.uuid.filter(|u| !u.is_empty()) else {
            return Err(refuse("uuid missing", None));
        };
        let user = Some(uuid.as_str());
        if claims.iss.as_deref() != Some(ISSUER) {
            return Err(refuse("wrong iss", user));
        }
        if claims.typ.as_deref() != Some(TOKEN_TYPE_ACCESS) {
            return Err(refuse("wrong or missing typ", user));
        }
        let Some(jti) = claims.jti.filter(|j| !j.is_empty()) else {
            return Err(refuse("jti missing", user));
        };
        if now >= exp.saturating_add(leeway) {
            return Err(refuse("expired", user));
        }
        if iat > now.saturating_add(leeway) {
            return Err(refuse("iat in the future", user));
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(leeway))
        {
            return Err(refuse("nbf in the future", user));
        }

        let user_row = self.current_user(&uuid, &jti, iat, Read::PerKey).await?;
        Ok(Identity {
            user_uuid: uuid,
            role: user_row.role,
            must_change_password: user_row.must_change_password,
            jti,
            iat,
            exp,
        })
    }

    /// Re-check an identity from [`verify`](Self::verify) (or from a redeemed
    /// ticket) against the clock and the repository. Long-lived streams call
    /// this at least every 30 s and end with "Session expired" on
    /// [`AuthError::Unauthorized`].
    ///
    /// With a cache configured, answers can be up to `cache_ttl` old (see
    /// [`VerifierConfig::cache_ttl`]).
    ///
    /// # Errors
    ///
    /// [`AuthError::Unauthorized`] when the token has expired
    /// (`now >= exp + leeway`), its `jti` has been revoked, the user was
    /// deleted, the user's `tokens_valid_from` moved past its `iat`, or the user
    /// may no longer stream (role not `viewer` / `admin`, or a password change
    /// now required). [`AuthError::Unavailable`] when the repository fails; the
    /// caller decides whether a stream survives that.
    pub async fn revalidate(&self, identity: &Identity) -> Result<(), AuthError> {
        let user = Some(identity.user_uuid.as_str());
        if (self.clock)() >= identity.exp.saturating_add(self.leeway) {
            return Err(refuse("expired", user));
        }
        let row = self
            .current_user(
                &identity.user_uuid,
                &identity.jti,
                identity.iat,
                Read::Shared,
            )
            .await?;
        if crate::roles::check(&row.role, row.must_change_password).is_err() {
            return Err(refuse("no longer allowed to stream", user));
        }
        Ok(())
    }

    /// Signature, algorithm, `iss` / `aud` presence and values, claim types.
    fn decode(&self, token: &str) -> Result<RawClaims, AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(refuse("empty or oversized token", None));
        }
        let Some(key) = self.key.as_deref() else {
            return Err(refuse("no signing secret configured", None));
        };
        if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
            // A build with both or neither jsonwebtoken crypto features would
            // panic inside `decode`; fail closed instead.
            warn!("jsonwebtoken has no crypto provider: every token will be refused");
            return Err(refuse("no crypto provider", None));
        }
        jsonwebtoken::decode::<RawClaims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| refuse(decode_failure(e.kind()), None))
    }

    /// The user row, after the user-level and token-level revocation checks.
    async fn current_user(
        &self,
        uuid: &str,
        jti: &str,
        iat: u64,
        read: Read,
    ) -> Result<User, AuthError> {
        let (user, revoked) = tokio::join!(self.user(uuid, read), self.is_revoked(jti, read));
        // A definite "no" wins over a failure of the other lookup.
        if matches!(revoked, Ok(true)) {
            return Err(refuse("jti revoked", Some(uuid)));
        }
        if matches!(user, Ok(None)) {
            return Err(refuse("unknown user", Some(uuid)));
        }
        let user = user.map_err(AuthError::Unavailable)?;
        revoked.map_err(AuthError::Unavailable)?;
        let Some(user) = user else {
            return Err(refuse("unknown user", Some(uuid)));
        };
        if before_cutoff(iat, user.tokens_valid_from) {
            return Err(refuse("issued before tokens_valid_from", Some(uuid)));
        }
        Ok(user)
    }

    /// The user row, through the snapshot and the cache when they are
    /// configured. A uuid the snapshot lacks is asked of the repository (a
    /// new user, or one a case-insensitive collation matches), and only
    /// existing users are cached, so a new user is never refused from either.
    async fn user(&self, uuid: &str, read: Read) -> Result<Option<User>, RepoError> {
        if let (Read::Shared, Some(snapshots)) = (read, &self.snapshots)
            && let Some(user) = snapshots
                .users
                .get()
                .await?
                .contents
                .as_ref()
                .and_then(|users| users.get(uuid))
        {
            return Ok(Some(user.clone()));
        }
        if let Some(user) = self.users.as_ref().and_then(|cache| cache.get(uuid)) {
            return Ok(Some(user));
        }
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let user = self.repo.user_by_uuid(uuid).await?;
        if let (Some(cache), Some(user)) = (&self.users, &user) {
            cache.insert(uuid.to_owned(), user.clone());
        }
        Ok(user)
    }

    /// Whether `jti` is denylisted, through the snapshot and the cache when
    /// they are configured (the snapshot answers whatever the engine's
    /// collation, or leaves the jti to the repository).
    async fn is_revoked(&self, jti: &str, read: Read) -> Result<bool, RepoError> {
        if let (Read::Shared, Some(snapshots)) = (read, &self.snapshots)
            && let Some(revoked) = snapshots
                .revoked
                .get()
                .await?
                .contents
                .as_ref()
                .and_then(|set| set.lookup(jti))
        {
            return Ok(revoked);
        }
        if let Some(revoked) = self.revoked.as_ref().and_then(|cache| cache.get(jti)) {
            return Ok(revoked);
        }
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let revoked = self.repo.is_token_revoked(jti).await?;
        if let Some(cache) = &self.revoked {
            cache.insert(jti.to_owned(), revoked);
        }
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoff_is_floored_to_whole_seconds() {
        let tvf = UNIX_EPOCH + Duration::from_millis(1_000_500);
        assert!(!before_cutoff(1_000, Some(tvf)));
        assert!(before_cutoff(999, Some(tvf)));
        assert!(!before_cutoff(1_001, Some(tvf)));
        assert!(!before_cutoff(0, None));
        assert!(!before_cutoff(
            0,
            UNIX_EPOCH.checked_sub(Duration::from_secs(5))
        ));
    }

    fn parse(json: &str) -> Result<RawClaims, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn numeric_dates_accept_integers_and_truncate_floats() {
        let c = parse(r#"{"iat": 10, "exp": 20.9, "nbf": 0}"#).expect("parse");
        assert_eq!((c.iat, c.exp, c.nbf), (Some(10), Some(20), Some(0)));
        assert!(parse(r#"{"iat": 10}"#).is_ok_and(|c| c.exp.is_none()));
    }

    #[test]
    fn numeric_dates_refuse_other_types() {
        for bad in [
            r#"{"iat": -1}"#,
            r#"{"iat": "10"}"#,
            r#"{"iat": null}"#,
            r#"{"exp": true}"#,
            r#"{"exp": 1e300}"#,
            r#"{"nbf": -0.5}"#,
            r#"{"iat": [1]}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_debug_redacts_the_secret() {
        let config = VerifierConfig::new("hunter2-secret");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let verifier =
            TokenVerifier::new(config, Arc::new(decnet_repo::MemoryRepository::default()));
        assert!(!format!("{verifier:?}").contains("hunter2"));
    }
}
