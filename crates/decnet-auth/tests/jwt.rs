//! `TokenVerifier`: one case per JWT rule (DESIGN.md "JWT rules"), and
//! `revalidate` for long-lived streams. Tokens are signed here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use decnet_auth::{
    AUDIENCE, AuthError, ISSUER, Identity, TOKEN_TYPE_ACCESS, TokenVerifier, VerifierConfig,
    encode_claims, mint_access_token,
};
use decnet_repo::prelude::*;
use decnet_repo::{MemoryRepository, User};
use serde_json::{Value, json};

const SECRET: &[u8] = b"decnet-auth-test-secret-0123456789";
const NOW: u64 = 1_700_000_000;
const USER: &str = "5d6f3c4e-0000-4000-8000-000000000001";
const JTI: &str = "jti-0001";

struct Fixture {
    repo: MemoryRepository,
    verifier: TokenVerifier,
    clock: Arc<AtomicU64>,
}

impl Fixture {
    async fn new() -> Self {
        Self::with_config(VerifierConfig::new(SECRET)).await
    }

    async fn with_config(config: VerifierConfig) -> Self {
        let repo = MemoryRepository::new();
        repo.create_user(&user(USER, "viewer"))
            .await
            .expect("seed user");
        let clock = Arc::new(AtomicU64::new(NOW));
        let read = Arc::clone(&clock);
        let verifier = TokenVerifier::new(config, std::sync::Arc::new(repo.clone()))
            .with_clock(move || read.load(Ordering::SeqCst));
        Self {
            repo,
            verifier,
            clock,
        }
    }

    fn set_now(&self, now: u64) {
        self.clock.store(now, Ordering::SeqCst);
    }

    async fn verify(&self, claims: &Value) -> Result<Identity, AuthError> {
        self.verifier.verify(&sign(claims)).await
    }

    async fn assert_accepted(&self, claims: &Value) -> Identity {
        match self.verify(claims).await {
            Ok(identity) => identity,
            Err(e) => panic!("expected acceptance of {claims}, got {e:?}"),
        }
    }

    async fn assert_refused(&self, claims: &Value) {
        self.assert_token_refused(&sign(claims)).await;
    }

    async fn assert_token_refused(&self, token: &str) {
        let result = self.verifier.verify(token).await;
        assert!(
            matches!(result, Err(AuthError::Unauthorized)),
            "expected Unauthorized, got {result:?}"
        );
    }
}

fn user(uuid: &str, role: &str) -> User {
    User {
        uuid: uuid.to_owned(),
        username: format!("user-{uuid}"),
        password_hash: "not-used".to_owned(),
        role: role.to_owned(),
        must_change_password: false,
        tokens_valid_from: None,
    }
}

/// A payload that passes every rule at `NOW`.
fn valid() -> Value {
    json!({
        "uuid": USER,
        "sub": "alice",
        "role": "viewer",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "typ": TOKEN_TYPE_ACCESS,
        "jti": JTI,
        "iat": NOW - 10,
        "exp": NOW + 3_600,
    })
}

fn with(field: &str, value: Value) -> Value {
    let mut claims = valid();
    claims[field] = value;
    claims
}

fn without(field: &str) -> Value {
    let mut claims = valid();
    claims.as_object_mut().expect("object").remove(field);
    claims
}

fn sign(claims: &Value) -> String {
    encode_claims(SECRET, claims).expect("sign")
}

fn b64(json: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).expect("json"))
}

/// A hand-built token: any header, the claims, and `signature` as given
/// (empty, or one lifted from a real HS256 token).
fn with_header(header: &Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{signature}", b64(header), b64(claims))
}

// ---- the valid case -------------------------------------------------------

#[tokio::test]
async fn valid_token_is_accepted() {
    let fx = Fixture::new().await;
    let identity = fx.assert_accepted(&valid()).await;
    assert_eq!(
        identity,
        Identity {
            user_uuid: USER.to_owned(),
            role: "viewer".to_owned(),
            must_change_password: false,
            jti: JTI.to_owned(),
            iat: NOW - 10,
            exp: NOW + 3_600,
        }
    );
}

#[tokio::test]
async fn role_and_password_flag_come_from_the_repository_not_the_token() {
    let fx = Fixture::new().await;
    let mut row = user(USER, "admin");
    row.must_change_password = true;
    fx.repo.create_user(&row).await.expect("update user");
    let identity = fx.assert_accepted(&with("role", json!("viewer"))).await;
    assert_eq!(identity.role, "admin");
    assert!(identity.must_change_password);
}

#[tokio::test]
async fn minted_token_is_accepted_on_the_real_clock() {
    let repo = MemoryRepository::new();
    repo.create_user(&user(USER, "admin")).await.expect("seed");
    let verifier = TokenVerifier::new(VerifierConfig::new(SECRET), std::sync::Arc::new(repo));
    let (token, claims) = mint_access_token(SECRET, USER, Duration::from_secs(300)).expect("mint");
    let identity = verifier
        .verify(&token)
        .await
        .expect("minted token verifies");
    assert_eq!(identity.jti, claims.jti);
    assert_eq!(identity.exp, claims.exp);
    assert_eq!(identity.role, "admin");
}

#[tokio::test]
async fn float_numeric_dates_are_accepted_as_whole_seconds() {
    let fx = Fixture::new().await;
    let mut claims = valid();
    claims["iat"] = json!((NOW - 10) as f64 + 0.75);
    claims["exp"] = json!((NOW + 60) as f64 + 0.5);
    let identity = fx.assert_accepted(&claims).await;
    assert_eq!((identity.iat, identity.exp), (NOW - 10, NOW + 60));
}

// ---- exp / iat / nbf ------------------------------------------------------

#[tokio::test]
async fn expired_token_is_refused() {
    let fx = Fixture::new().await;
    fx.assert_refused(&with("exp", json!(NOW - 1))).await;
}

#[tokio::test]
async fn token_is_refused_from_its_exp_second_on() {
    let fx = Fixture::new().await;
    fx.assert_refused(&with("exp", json!(NOW))).await;
    fx.assert_accepted(&with("exp", json!(NOW + 1))).await;
}

#[tokio::test]
async fn exp_missing_is_refused() {
    Fixture::new().await.assert_refused(&without("exp")).await;
}

#[tokio::test]
async fn iat_missing_is_refused() {
    Fixture::new().await.assert_refused(&without("iat")).await;
}

#[tokio::test]
async fn iat_in_the_future_is_refused() {
    let fx = Fixture::new().await;
    fx.assert_refused(&with("iat", json!(NOW + 1))).await;
    fx.assert_accepted(&with("iat", json!(NOW))).await;
}

#[tokio::test]
async fn nbf_in_the_future_is_refused() {
    let fx = Fixture::new().await;
    fx.assert_refused(&with("nbf", json!(NOW + 1))).await;
    fx.assert_accepted(&with("nbf", json!(NOW))).await;
}

#[tokio::test]
async fn numeric_dates_of_the_wrong_type_are_refused() {
    let fx = Fixture::new().await;
    fx.assert_refused(&with("exp", json!(format!("{}", NOW + 60))))
        .await;
    fx.assert_refused(&with("iat", json!(null))).await;
    fx.assert_refused(&with("iat", json!(-5))).await;
    fx.assert_refused(&with("nbf", json!("soon"))).await;
}

#[tokio::test]
async fn default_leeway_is_zero() {
    let fx = Fixture::new().await;
    // jsonwebtoken's own default (60 s) would accept all of these.
    fx.assert_refused(&with("exp", json!(NOW - 30))).await;
    fx.assert_refused(&with("iat", json!(NOW + 30))).await;
    fx.assert_refused(&with("nbf", json!(NOW + 30))).await;
}

#[tokio::test]
async fn configured_leeway_applies_to_exp_iat_and_nbf() {
    let mut config = VerifierConfig::new(SECRET);
    config.leeway_secs = 30;
    let fx = Fixture::with_config(config).await;
    fx.assert_accepted(&with("exp", json!(NOW - 29))).await;
    fx.assert_refused(&with("exp", json!(NOW - 30))).await;
    fx.assert_accepted(&with("iat", json!(NOW + 30))).await;
    fx.assert_refused(&with("iat", json!(NOW + 31))).await;
    fx.assert_accepted(&with("nbf", json!(NOW + 30))).await;
    fx.assert_refused(&with("nbf", json!(NOW + 31))).await;
}

// ---- iss / aud / typ / jti / uuid -----------------------------------------

#[tokio::test]
async fn wrong_iss_is_refused() {
    let fx = Fixture::new().await;
    fx.assert_refused(&with("iss", json!("not-decnet"))).await;
    fx.assert_refused(&with("iss", json!("DECNET"))).await;
    fx.assert_refused(&with("iss", json!(["decnet"]))).await;
}

#[tokio::test]
async fn iss_missing_is_refused() {
    Fixture::new().await.assert_refused(&without("iss")).await;
}

#[tokio::test]
async fn wrong_aud_is_refused() {
    let fx = Fixture::new().await;
    fx.assert_refused(&with("aud", json!("decnet-api"))).await;
    fx.assert_refused(&with("aud", json!(["decnet-api"]))).await;
    fx.assert_refused(&with("aud", json!(42))).await;
}

#[tokio::test]
async fn aud_list_holding_the_dashboard_is_accepted_as_pyjwt_does() {
    let fx = Fixture::new().await;
    fx.assert_accepted(&with("aud", json!(["other", AUDIENCE])))
        .await;
}

#[tokio::test]
async fn aud_missing_is_refused() {
    Fixture::new().await.assert_refused(&without("aud")).await;
}

#[tokio::test]
async fn wrong_typ_is_refused() {
    let fx = Fixture::new().await;
    fx.assert_refused(&with("typ", json!("refresh"))).await;
    fx.assert_refused(&with("typ", json!("Access"))).await;
}

#[tokio::test]
async fn typ_missing_is_refused() {
    Fixture::new().await.assert_refused(&without("typ")).await;
}

#[tokio::test]
async fn jti_missing_is_refused() {
    let fx = Fixture::new().await;
    fx.assert_refused(&without("jti")).await;
    fx.assert_refused(&with("jti", json!(""))).await;
    fx.assert_refused(&with("jti", json!(null))).await;
}

#[tokio::test]
async fn uuid_missing_is_refused() {
    let fx = Fixture::new().await;
    fx.assert_refused(&without("uuid")).await;
    fx.assert_refused(&with("uuid", json!(""))).await;
    fx.assert_refused(&with("uuid", json!(7))).await;
}

#[tokio::test]
async fn unknown_user_is_refused() {
    let fx = Fixture::new().await;
    fx.assert_refused(&with("uuid", json!("no-such-user")))
        .await;
}

// ---- algorithm and signature ----------------------------------------------

#[tokio::test]
async fn alg_none_is_refused() {
    let fx = Fixture::new().await;
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": alg, "typ": "JWT"});
        fx.assert_token_refused(&with_header(&header, &valid(), ""))
            .await;
        // A stolen HS256 signature glued on does not help either.
        let donor = sign(&valid());
        let signature = donor.rsplit('.').next().expect("signature");
        fx.assert_token_refused(&with_header(&header, &valid(), signature))
            .await;
    }
    // Header without any alg.
    fx.assert_token_refused(&with_header(&json!({"typ": "JWT"}), &valid(), ""))
        .await;
}

#[tokio::test]
async fn hs384_token_is_refused() {
    let fx = Fixture::new().await;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &valid(),
        &jsonwebtoken::EncodingKey::from_secret(SECRET).expect("key"),
    )
    .expect("sign HS384");
    fx.assert_token_refused(&token).await;
}

#[tokio::test]
async fn hs512_token_is_refused() {
    let fx = Fixture::new().await;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &valid(),
        &jsonwebtoken::EncodingKey::from_secret(SECRET).expect("key"),
    )
    .expect("sign HS512");
    fx.assert_token_refused(&token).await;
}

#[tokio::test]
async fn rs256_and_other_asymmetric_headers_are_refused() {
    let fx = Fixture::new().await;
    // Key confusion: a valid HS256 signature under a header claiming another
    // algorithm.
    let donor = sign(&valid());
    let signature = donor.rsplit('.').next().expect("signature");
    for alg in ["RS256", "ES256", "PS256", "EdDSA", "HS256 ", "hs256"] {
        let header = json!({"alg": alg, "typ": "JWT"});
        fx.assert_token_refused(&with_header(&header, &valid(), signature))
            .await;
    }
}

#[tokio::test]
async fn wrong_secret_is_refused() {
    let fx = Fixture::new().await;
    let token = encode_claims(b"some-other-secret", &valid()).expect("sign");
    fx.assert_token_refused(&token).await;
}

#[tokio::test]
async fn tampered_payload_is_refused() {
    let fx = Fixture::new().await;
    let token = sign(&valid());
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = b64(&with("uuid", json!("someone-else")));
    parts[1] = &forged;
    fx.assert_token_refused(&parts.join(".")).await;
}

#[tokio::test]
async fn garbage_is_refused() {
    let fx = Fixture::new().await;
    let long = "a".repeat(100_000);
    for token in [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "...",
        "Bearer x.y.z",
        long.as_str(),
    ] {
        fx.assert_token_refused(token).await;
    }
}

#[tokio::test]
async fn empty_secret_refuses_everything() {
    let repo = MemoryRepository::new();
    repo.create_user(&user(USER, "viewer")).await.expect("seed");
    let verifier = TokenVerifier::new(VerifierConfig::new(Vec::new()), std::sync::Arc::new(repo))
        .with_clock(|| NOW);
    let result = verifier.verify(&sign(&valid())).await;
    assert!(matches!(result, Err(AuthError::Unauthorized)), "{result:?}");
}

// ---- revocation ------------------------------------------------------------

async fn set_tokens_valid_from(fx: &Fixture, tvf: SystemTime) {
    let mut row = user(USER, "viewer");
    row.tokens_valid_from = Some(tvf);
    fx.repo.create_user(&row).await.expect("update user");
}

#[tokio::test]
async fn tokens_valid_from_is_floored_to_whole_seconds() {
    let fx = Fixture::new().await;
    let cutoff = NOW - 100;
    // The cutoff is 0.7 s into second `cutoff`.
    set_tokens_valid_from(
        &fx,
        UNIX_EPOCH + Duration::from_secs(cutoff) + Duration::from_millis(700),
    )
    .await;
    // Issued in the cutoff's own second: still valid.
    fx.assert_accepted(&with("iat", json!(cutoff))).await;
    // Issued the second before: revoked.
    fx.assert_refused(&with("iat", json!(cutoff - 1))).await;
    fx.assert_accepted(&with("iat", json!(cutoff + 1))).await;
}

#[tokio::test]
async fn tokens_valid_from_on_a_whole_second() {
    let fx = Fixture::new().await;
    let cutoff = NOW - 100;
    set_tokens_valid_from(&fx, UNIX_EPOCH + Duration::from_secs(cutoff)).await;
    fx.assert_accepted(&with("iat", json!(cutoff))).await;
    fx.assert_refused(&with("iat", json!(cutoff - 1))).await;
}

#[tokio::test]
async fn revoked_jti_is_refused() {
    let fx = Fixture::new().await;
    fx.assert_accepted(&valid()).await;
    fx.repo
        .revoke_token(JTI, USER, UNIX_EPOCH + Duration::from_secs(NOW + 3_600))
        .await
        .expect("revoke");
    fx.assert_refused(&valid()).await;
    // Another token of the same user is unaffected.
    fx.assert_accepted(&with("jti", json!("jti-0002"))).await;
}

#[tokio::test]
async fn repository_down_is_unavailable_not_unauthorized() {
    let fx = Fixture::new().await;
    fx.repo.set_available(false);
    let result = fx.verify(&valid()).await;
    match result {
        Err(error @ AuthError::Unavailable(_)) => assert!(error.is_unavailable()),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // A token that fails before any lookup is still plainly unauthorized.
    fx.assert_refused(&with("typ", json!("refresh"))).await;
    fx.repo.set_available(true);
    fx.assert_accepted(&valid()).await;
}

#[tokio::test]
async fn unauthorized_says_nothing_about_the_rule() {
    assert_eq!(
        AuthError::Unauthorized.to_string(),
        "could not validate credentials"
    );
    assert!(!AuthError::Unauthorized.is_unavailable());
}

// ---- caches ----------------------------------------------------------------

fn cached(ttl: Duration) -> VerifierConfig {
    let mut config = VerifierConfig::new(SECRET);
    config.cache_ttl = Some(ttl);
    config
}

#[tokio::test(start_paused = true)]
async fn cached_revocation_is_seen_within_the_cache_ttl() {
    let fx = Fixture::with_config(cached(Duration::from_secs(10))).await;
    fx.assert_accepted(&valid()).await;
    fx.repo
        .revoke_token(JTI, USER, UNIX_EPOCH + Duration::from_secs(NOW + 3_600))
        .await
        .expect("revoke");
    // Within the staleness window the cached "not revoked" still answers.
    fx.assert_accepted(&valid()).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    fx.assert_refused(&valid()).await;
}

#[tokio::test(start_paused = true)]
async fn cached_user_deletion_is_seen_within_the_cache_ttl() {
    let fx = Fixture::with_config(cached(Duration::from_secs(10))).await;
    fx.assert_accepted(&valid()).await;
    fx.repo.delete_user(USER).await.expect("delete");
    fx.assert_accepted(&valid()).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    fx.assert_refused(&valid()).await;
}

#[tokio::test(start_paused = true)]
async fn unknown_users_are_not_cached() {
    let fx = Fixture::with_config(cached(Duration::from_secs(10))).await;
    let claims = with("uuid", json!("late-user"));
    fx.assert_refused(&claims).await;
    fx.repo
        .create_user(&user("late-user", "viewer"))
        .await
        .expect("create");
    fx.assert_accepted(&claims).await;
}

#[tokio::test(start_paused = true)]
async fn cache_answers_while_the_repository_is_down() {
    let fx = Fixture::with_config(cached(Duration::from_secs(10))).await;
    fx.assert_accepted(&valid()).await;
    fx.repo.set_available(false);
    fx.assert_accepted(&valid()).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(matches!(
        fx.verify(&valid()).await,
        Err(AuthError::Unavailable(_))
    ));
}

// ---- shared snapshots --------------------------------------------------------

/// The memory repository, counting the reads the verifier makes (and, with
/// `bulk` off, a reader without bulk reads, as an embedder's may be).
struct Counting {
    repo: MemoryRepository,
    bulk: bool,
    by_uuid: AtomicU64,
    by_jti: AtomicU64,
    all_users: AtomicU64,
    all_jtis: AtomicU64,
}

impl Counting {
    fn new(repo: MemoryRepository, bulk: bool) -> Arc<Self> {
        Arc::new(Self {
            repo,
            bulk,
            by_uuid: AtomicU64::new(0),
            by_jti: AtomicU64::new(0),
            all_users: AtomicU64::new(0),
            all_jtis: AtomicU64::new(0),
        })
    }

    /// (`user_by_uuid`, `is_token_revoked`, `all_users`, `revoked_jtis`).
    fn counts(&self) -> [u64; 4] {
        [&self.by_uuid, &self.by_jti, &self.all_users, &self.all_jtis]
            .map(|n| n.load(Ordering::SeqCst))
    }
}

impl AccountReader for Counting {
    fn user_by_uuid<'a>(&'a self, uuid: &'a str) -> decnet_repo::RepoFuture<'a, Option<User>> {
        self.by_uuid.fetch_add(1, Ordering::SeqCst);
        self.repo.user_by_uuid(uuid)
    }

    fn is_token_revoked<'a>(&'a self, jti: &'a str) -> decnet_repo::RepoFuture<'a, bool> {
        self.by_jti.fetch_add(1, Ordering::SeqCst);
        self.repo.is_token_revoked(jti)
    }

    fn all_users(&self, limit: u32) -> decnet_repo::RepoFuture<'_, Option<Vec<User>>> {
        self.all_users.fetch_add(1, Ordering::SeqCst);
        if self.bulk {
            self.repo.all_users(limit)
        } else {
            Box::pin(std::future::ready(Ok(None)))
        }
    }

    fn revoked_jtis(&self, limit: u32) -> decnet_repo::RepoFuture<'_, Option<Vec<String>>> {
        self.all_jtis.fetch_add(1, Ordering::SeqCst);
        if self.bulk {
            self.repo.revoked_jtis(limit)
        } else {
            Box::pin(std::future::ready(Ok(None)))
        }
    }
}

/// `n` users with one token each, verified (as streams are opened).
async fn streams(
    n: usize,
    bulk: bool,
    cap: Option<u32>,
) -> (
    MemoryRepository,
    Arc<Counting>,
    TokenVerifier,
    Vec<Identity>,
) {
    let repo = MemoryRepository::new();
    let counting = Counting::new(repo.clone(), bulk);
    let mut verifier = TokenVerifier::new(cached(Duration::from_secs(10)), counting.clone());
    if let Some(cap) = cap {
        verifier = verifier.with_snapshot_capacity(cap);
    }
    let uuids: Vec<String> = (0..n).map(|i| format!("user-{i:04}")).collect();
    for uuid in &uuids {
        repo.create_user(&user(uuid, "viewer"))
            .await
            .expect("seed user");
    }
    let mut identities = Vec::new();
    for uuid in &uuids {
        let (token, _) = mint_access_token(SECRET, uuid, Duration::from_secs(3_600)).expect("mint");
        identities.push(verifier.verify(&token).await.expect("verified"));
    }
    (repo, counting, verifier, identities)
}

/// Revalidate every identity at once (as the streams' ticks do), each result.
async fn tick(verifier: &TokenVerifier, identities: &[Identity]) -> Vec<Result<(), AuthError>> {
    futures::future::join_all(identities.iter().map(|i| verifier.revalidate(i))).await
}

#[tokio::test(start_paused = true)]
async fn many_streams_cost_one_query_per_table_per_tick() {
    let (_, counting, verifier, identities) = streams(200, true, None).await;
    // Opening reads per key (a just-revoked key is never answered stale).
    assert_eq!(counting.counts(), [200, 200, 0, 0]);
    for round in 1..=3_u64 {
        tokio::time::advance(Duration::from_secs(10)).await;
        for result in tick(&verifier, &identities).await {
            result.expect("still valid");
        }
        // 200 concurrent revalidations, one refresh of each snapshot.
        assert_eq!(counting.counts(), [200, 200, round, round]);
    }
    let stats = verifier.stats();
    assert_eq!((stats.user_snapshots, stats.revoked_snapshots), (3, 3));
    assert_eq!((stats.key_lookups, stats.snapshot_overflows), (400, 0));
}

#[tokio::test(start_paused = true)]
async fn every_kind_of_revocation_is_seen_within_the_ttl() {
    let (repo, _, verifier, identities) = streams(6, true, None).await;
    // The first tick takes the snapshots.
    for result in tick(&verifier, &identities).await {
        result.expect("valid");
    }
    let far = UNIX_EPOCH + Duration::from_secs(4_000_000_000);
    repo.revoke_token(&identities[0].jti, &identities[0].user_uuid, far)
        .await
        .expect("revoke");
    // An expired denylist row still revokes (presence is what counts).
    repo.revoke_token(&identities[1].jti, "someone", UNIX_EPOCH)
        .await
        .expect("revoke");
    repo.delete_user(&identities[2].user_uuid)
        .await
        .expect("delete");
    let mut row = user(&identities[3].user_uuid, "auditor");
    repo.create_user(&row).await.expect("role");
    row = user(&identities[4].user_uuid, "viewer");
    row.tokens_valid_from = Some(UNIX_EPOCH + Duration::from_secs(identities[4].iat + 1));
    repo.create_user(&row).await.expect("cutoff");
    // Within the TTL the snapshots of the first tick still answer.
    for result in tick(&verifier, &identities).await {
        result.expect("not yet seen");
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    let results = tick(&verifier, &identities).await;
    for result in &results[..5] {
        assert!(matches!(result, Err(AuthError::Unauthorized)), "{result:?}");
    }
    results[5].as_ref().expect("the untouched stream stays");
    // A password change required is seen the same way.
    let mut row = user(&identities[5].user_uuid, "viewer");
    row.must_change_password = true;
    repo.create_user(&row).await.expect("flag");
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_ended(verifier.revalidate(&identities[5]).await);
}

#[tokio::test(start_paused = true)]
async fn a_new_token_revoked_after_the_snapshot_is_refused_at_once() {
    let (repo, _, verifier, identities) = streams(2, true, None).await;
    // The snapshots are taken, and stay fresh for the whole test.
    for result in tick(&verifier, &identities).await {
        result.expect("valid");
    }
    let (token, claims) =
        mint_access_token(SECRET, &identities[0].user_uuid, Duration::from_secs(3_600))
            .expect("mint");
    let far = UNIX_EPOCH + Duration::from_secs(4_000_000_000);
    repo.revoke_token(&claims.jti, &identities[0].user_uuid, far)
        .await
        .expect("revoke");
    // The snapshot does not list this jti, yet the open reads it fresh.
    assert!(matches!(
        verifier.verify(&token).await,
        Err(AuthError::Unauthorized)
    ));
    // An open stream is revalidated from the snapshot.
    verifier
        .revalidate(&identities[0])
        .await
        .expect("the other token of that user is not revoked");
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_is_unavailable_never_unauthorized() {
    let (repo, counting, verifier, identities) = streams(50, true, None).await;
    repo.set_available(false);
    tokio::time::advance(Duration::from_secs(10)).await;
    for result in tick(&verifier, &identities).await {
        assert!(
            matches!(result, Err(AuthError::Unavailable(_))),
            "{result:?}"
        );
    }
    // The outage cost one attempt per table, not one per stream, and the
    // failure answers for a second before the next attempt.
    assert_eq!(counting.counts(), [50, 50, 1, 1]);
    repo.set_available(true);
    for result in tick(&verifier, &identities).await {
        assert!(
            matches!(result, Err(AuthError::Unavailable(_))),
            "{result:?}"
        );
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    for result in tick(&verifier, &identities).await {
        result.expect("back");
    }
    assert_eq!(counting.counts(), [50, 50, 2, 2]);
}

#[tokio::test(start_paused = true)]
async fn tables_over_the_cap_are_checked_key_by_key() {
    let (repo, counting, verifier, identities) = streams(5, true, Some(3)).await;
    let far = UNIX_EPOCH + Duration::from_secs(4_000_000_000);
    for jti in ["other-1", "other-2", "other-3", identities[0].jti.as_str()] {
        repo.revoke_token(jti, "someone", far)
            .await
            .expect("revoke");
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    let results = tick(&verifier, &identities).await;
    assert!(matches!(results[0], Err(AuthError::Unauthorized)));
    for result in &results[1..] {
        result.as_ref().expect("not revoked");
    }
    let stats = verifier.stats();
    assert!(stats.snapshot_overflows >= 2, "{stats:?}");
    // 5 users > 3: looked up by uuid; 4 jtis > 3: looked up by jti.
    let [by_uuid, by_jti, _, _] = counting.counts();
    assert!(by_uuid >= 5 && by_jti >= 5, "{:?}", counting.counts());
    assert_eq!(stats.key_lookups, by_uuid + by_jti);
}

#[tokio::test(start_paused = true)]
async fn a_reader_without_bulk_reads_is_checked_key_by_key() {
    let (repo, counting, verifier, identities) = streams(3, false, None).await;
    repo.delete_user(&identities[1].user_uuid)
        .await
        .expect("delete");
    tokio::time::advance(Duration::from_secs(10)).await;
    let results = tick(&verifier, &identities).await;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(matches!(results[1], Err(AuthError::Unauthorized)));
    let [by_uuid, by_jti, all_users, all_jtis] = counting.counts();
    assert_eq!((by_uuid, by_jti), (6, 6));
    // "No bulk read" is remembered for a TTL too: asked once per tick.
    assert_eq!((all_users, all_jtis), (1, 1));
}

// ---- revalidate --------------------------------------------------------------

async fn verified() -> (Fixture, Identity) {
    let fx = Fixture::new().await;
    let identity = fx.assert_accepted(&valid()).await;
    (fx, identity)
}

fn assert_ended(result: Result<(), AuthError>) {
    assert!(
        matches!(result, Err(AuthError::Unauthorized)),
        "expected Unauthorized, got {result:?}"
    );
}

#[tokio::test]
async fn revalidate_keeps_a_valid_session() {
    let (fx, identity) = verified().await;
    fx.set_now(NOW + 1_000);
    fx.verifier
        .revalidate(&identity)
        .await
        .expect("still valid");
}

#[tokio::test]
async fn revalidate_ends_an_expired_session() {
    let (fx, identity) = verified().await;
    fx.set_now(identity.exp - 1);
    fx.verifier
        .revalidate(&identity)
        .await
        .expect("one second left");
    fx.set_now(identity.exp);
    assert_ended(fx.verifier.revalidate(&identity).await);
}

#[tokio::test]
async fn revalidate_ends_a_revoked_session() {
    let (fx, identity) = verified().await;
    fx.repo
        .revoke_token(
            &identity.jti,
            USER,
            UNIX_EPOCH + Duration::from_secs(identity.exp),
        )
        .await
        .expect("revoke");
    assert_ended(fx.verifier.revalidate(&identity).await);
}

#[tokio::test]
async fn revalidate_ends_when_tokens_valid_from_moves_past_iat() {
    let (fx, identity) = verified().await;
    // Same second as iat: still valid (floored).
    set_tokens_valid_from(
        &fx,
        UNIX_EPOCH + Duration::from_secs(identity.iat) + Duration::from_millis(999),
    )
    .await;
    fx.verifier
        .revalidate(&identity)
        .await
        .expect("same second");
    set_tokens_valid_from(&fx, UNIX_EPOCH + Duration::from_secs(identity.iat + 1)).await;
    assert_ended(fx.verifier.revalidate(&identity).await);
}

#[tokio::test]
async fn revalidate_ends_when_the_user_is_deleted() {
    let (fx, identity) = verified().await;
    fx.repo.delete_user(USER).await.expect("delete");
    assert_ended(fx.verifier.revalidate(&identity).await);
}

#[tokio::test]
async fn revalidate_ends_when_the_role_may_no_longer_stream() {
    let (fx, identity) = verified().await;
    fx.repo
        .create_user(&user(USER, "admin"))
        .await
        .expect("promote");
    fx.verifier
        .revalidate(&identity)
        .await
        .expect("admin may stream");
    fx.repo
        .create_user(&user(USER, "auditor"))
        .await
        .expect("change role");
    assert_ended(fx.verifier.revalidate(&identity).await);
}

#[tokio::test]
async fn revalidate_ends_when_a_password_change_becomes_required() {
    let (fx, identity) = verified().await;
    let mut row = user(USER, "viewer");
    row.must_change_password = true;
    fx.repo.create_user(&row).await.expect("flag");
    assert_ended(fx.verifier.revalidate(&identity).await);
}

#[tokio::test]
async fn revalidate_reports_a_repository_outage_as_unavailable() {
    let (fx, identity) = verified().await;
    fx.repo.set_available(false);
    assert!(matches!(
        fx.verifier.revalidate(&identity).await,
        Err(AuthError::Unavailable(_))
    ));
}

#[tokio::test]
async fn identity_round_trips_through_json_for_tickets() {
    let (_, identity) = verified().await;
    let json = serde_json::to_string(&identity).expect("serialize");
    let back: Identity = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, identity);
}
