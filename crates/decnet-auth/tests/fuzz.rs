//! Property-based fuzzing of what a client hands decnet-auth: the JWT of
//! `Authorization: Bearer` (through [`TokenVerifier::verify`]) and the
//! `?ticket=` of a stream (through [`MemoryTicketStore`]).
//!
//! The JWT properties never settle for "it did not panic": random strings
//! and mutated tokens must be refused unless they ARE the valid token, and
//! correctly signed tokens with random claims must be accepted exactly when
//! a reference model of DESIGN.md's rules (written here from the
//! verifier's documentation) accepts them. Tokens are signed with a known
//! secret by the crate's own `encode_claims` and, for hand-built headers,
//! by jsonwebtoken's HMAC. Case count: `PROPTEST_CASES` (default 256).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use decnet_auth::{
    AUDIENCE, AuthError, ISSUER, Identity, MemoryTicketStore, TICKET_LEN, TOKEN_TYPE_ACCESS,
    TicketLimits, TicketStore, TokenVerifier, VerifierConfig, encode_claims,
};
use decnet_repo::prelude::*;
use decnet_repo::{MemoryRepository, User};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Map, Value, json};

/// Cases per property: proptest's `PROPTEST_CASES` (default 256; `cargo xtask
/// soak` runs more); failures are kept in `proptest-regressions/fuzz.txt`.
fn config() -> ProptestConfig {
    ProptestConfig::with_failure_persistence(FileFailurePersistence::Direct(
        "proptest-regressions/fuzz.txt",
    ))
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
}

fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(future))
}

// === the fixture ===

const SECRET: &[u8] = b"decnet-auth-fuzz-secret-0123456789abcdef";
const NOW: u64 = 1_700_000_000;
/// A viewer.
const USER: &str = "5d6f3c4e-0000-4000-8000-000000000001";
/// An admin whose tokens issued before `CUTOFF` are revoked.
const CUT_USER: &str = "5d6f3c4e-0000-4000-8000-000000000002";
/// `tokens_valid_from` of `CUT_USER`: half a second into `NOW - 100`.
const CUTOFF_MILLIS: u64 = (NOW - 100) * 1000 + 500;
/// A denylisted jti.
const REVOKED_JTI: &str = "revoked-jti";

struct Fixture {
    verifier: TokenVerifier,
    clock: Arc<AtomicU64>,
    leeway: u64,
}

impl Fixture {
    fn new(leeway: u64) -> Fixture {
        let repo = MemoryRepository::new();
        block_on(async {
            repo.create_user(&user(USER, "viewer", None))
                .await
                .expect("seed user");
            let cutoff = UNIX_EPOCH + Duration::from_millis(CUTOFF_MILLIS);
            repo.create_user(&user(CUT_USER, "admin", Some(cutoff)))
                .await
                .expect("seed user");
            repo.revoke_token(
                REVOKED_JTI,
                USER,
                UNIX_EPOCH + Duration::from_secs(NOW + 86_400),
            )
            .await
            .expect("seed denylist");
        });
        let clock = Arc::new(AtomicU64::new(NOW));
        let read = Arc::clone(&clock);
        let mut config = VerifierConfig::new(SECRET);
        config.leeway_secs = leeway;
        let verifier = TokenVerifier::new(config, Arc::new(repo))
            .with_clock(move || read.load(Ordering::SeqCst));
        Fixture {
            verifier,
            clock,
            leeway,
        }
    }

    fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        block_on(self.verifier.verify(token))
    }
}

fn user(uuid: &str, role: &str, tokens_valid_from: Option<SystemTime>) -> User {
    User {
        uuid: uuid.to_owned(),
        username: format!("user-{uuid}"),
        password_hash: String::new(),
        role: role.to_owned(),
        must_change_password: false,
        tokens_valid_from,
    }
}

fn valid_claims() -> Value {
    json!({
        "uuid": USER,
        "sub": "alice",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "typ": TOKEN_TYPE_ACCESS,
        "jti": "jti-0001",
        "iat": NOW - 10,
        "exp": NOW + 3_600,
    })
}

fn sign(claims: &Value) -> String {
    encode_claims(SECRET, claims).expect("sign")
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `<header>.<claims>.<HMAC-SHA256 of the two under SECRET>`, whatever the
/// header says.
fn sign_raw(header: &[u8], claims: &[u8]) -> String {
    let message = format!("{}.{}", b64(header), b64(claims));
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET).expect("HMAC key");
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
            .expect("HMAC");
    format!("{message}.{signature}")
}

fn refused(result: &Result<Identity, AuthError>) -> bool {
    matches!(result, Err(AuthError::Unauthorized))
}

// === the reference model of the rules ===

/// A JSON NumericDate as the verifier documents it: a non-negative
/// integer, or a finite float in [0, 2^53) truncated; anything else
/// present (null included) is a claim of the wrong type.
fn numeric_date(value: &Value) -> Result<u64, ()> {
    match value {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Ok(u)
            } else if n.is_i64() {
                Err(())
            } else {
                let f = n.as_f64().ok_or(())?;
                if f.is_finite() && (0.0..9_007_199_254_740_992.0).contains(&f) {
                    Ok(f.trunc() as u64)
                } else {
                    Err(())
                }
            }
        }
        _ => Err(()),
    }
}

/// An optional string claim: absent and null are `None`, another type is
/// the wrong type.
fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, ()> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(()),
    }
}

/// `aud` is the dashboard's audience, or a list of strings holding it.
fn audience_ok(aud: Option<&Value>) -> bool {
    match aud {
        Some(Value::String(s)) => s == AUDIENCE,
        Some(Value::Array(items)) => {
            items.iter().all(Value::is_string) && items.iter().any(|v| v == AUDIENCE)
        }
        _ => false,
    }
}

/// What `verify` must return for a correctly signed HS256 token carrying
/// `claims`, at `now` with `leeway`: the identity, or `None` for refused.
fn model(claims: &Map<String, Value>, now: u64, leeway: u64) -> Option<Identity> {
    // Claim types.
    let uuid = string_claim(claims, "uuid").ok()?;
    let iss = string_claim(claims, "iss").ok()?;
    let typ = string_claim(claims, "typ").ok()?;
    let jti = string_claim(claims, "jti").ok()?;
    let date = |name: &str| claims.get(name).map(numeric_date).transpose();
    let exp = date("exp").ok()??;
    let iat = date("iat").ok()??;
    let nbf = date("nbf").ok()?;
    // Pinned values and presence.
    if iss.as_deref() != Some(ISSUER) || typ.as_deref() != Some(TOKEN_TYPE_ACCESS) {
        return None;
    }
    if !audience_ok(claims.get("aud")) {
        return None;
    }
    let uuid = uuid.filter(|u| !u.is_empty())?;
    let jti = jti.filter(|j| !j.is_empty())?;
    // Time, with the leeway.
    if now >= exp.saturating_add(leeway) || iat > now.saturating_add(leeway) {
        return None;
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return None;
    }
    // The repository.
    if jti == REVOKED_JTI {
        return None;
    }
    let role = match uuid.as_str() {
        USER => "viewer",
        CUT_USER if iat >= CUTOFF_MILLIS / 1000 => "admin",
        _ => return None,
    };
    Some(Identity {
        user_uuid: uuid,
        role: role.to_owned(),
        must_change_password: false,
        jti,
        iat,
        exp,
    })
}

// === strategies ===

/// A NumericDate-ish value: around the clock, at the edges of every
/// number type, and of the wrong type.
fn date_value() -> impl Strategy<Value = Value> {
    let near = prop_oneof![
        (NOW - 200..NOW + 200).prop_map(Value::from),
        (
            NOW - 200..NOW + 200,
            prop::sample::select(vec![0.0, 0.25, 0.5, 0.75])
        )
            .prop_map(|(s, f)| json!(s as f64 + f)),
    ];
    let edge = prop::sample::select(vec![
        json!(0),
        json!(0.0),
        json!(-0.0),
        json!(-1),
        json!(-0.5),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(u64::MAX - 1),
        json!(9_007_199_254_740_991.0),
        json!(9_007_199_254_740_992.0),
        json!(1.8446744073709552e19),
        json!(1e300),
        json!(-1e300),
        json!(NOW),
        json!(NOW as f64),
        json!(CUTOFF_MILLIS / 1000),
        json!(CUTOFF_MILLIS / 1000 - 1),
    ]);
    let wrong = prop::sample::select(vec![
        Value::Null,
        json!(true),
        json!("1700000000"),
        json!([NOW]),
        json!({"t": NOW}),
        json!(""),
    ]);
    prop_oneof![6 => near, 3 => edge, 1 => wrong]
}

/// A string claim: the right value often, near misses, wrong types.
fn string_value(right: &'static str, near: Vec<&'static str>) -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => Just(json!(right)),
        2 => prop::sample::select(near).prop_map(|s| json!(s)),
        1 => prop::sample::select(vec![
            Value::Null, json!(1), json!(true), json!([right]), json!({"v": right}),
        ]),
        1 => any::<String>().prop_map(Value::String),
    ]
}

fn aud_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => Just(json!(AUDIENCE)),
        1 => Just(json!([AUDIENCE])),
        1 => Just(json!(["other", AUDIENCE])),
        1 => Just(json!(["other"])),
        1 => Just(json!([])),
        1 => Just(json!([AUDIENCE, 1])),
        1 => prop::sample::select(vec![
            json!("decnet-dashboard "), json!("Decnet-Dashboard"), json!("decnet"), json!(""),
            Value::Null, json!(1), json!({"aud": AUDIENCE}),
        ]),
    ]
}

/// `value` most of the time, else `variant` (absent included).
fn mostly(
    value: impl Strategy<Value = Value> + 'static,
    variant: impl Strategy<Value = Value> + 'static,
) -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        8 => value.prop_map(Some),
        1 => variant.prop_map(Some),
        1 => Just(None),
    ]
    .boxed()
}

/// A claims object, each claim mostly valid (so that a fair share of the
/// tokens is accepted), else drawn from the near misses and wrong types
/// above or left out; plus junk claims.
fn claims() -> impl Strategy<Value = Map<String, Value>> {
    let iat_ok = prop_oneof![
        (NOW - 300..=NOW).prop_map(Value::from),
        (NOW - 300..NOW).prop_map(|s| json!(s as f64 + 0.5)),
    ];
    let exp_ok = prop_oneof![
        (NOW + 1..NOW + 300).prop_map(Value::from),
        (NOW..NOW + 300).prop_map(|s| json!(s as f64 + 0.75)),
    ];
    (
        mostly(
            prop::sample::select(vec![USER, CUT_USER]).prop_map(|u| json!(u)),
            string_value(
                USER,
                vec!["", "5D6F3C4E-0000-4000-8000-000000000001", "nobody"],
            ),
        ),
        mostly(
            Just(json!(ISSUER)),
            string_value(ISSUER, vec!["Decnet", "decnet ", "", "decnet-dashboard"]),
        ),
        mostly(Just(json!(AUDIENCE)), aud_value()),
        mostly(
            Just(json!(TOKEN_TYPE_ACCESS)),
            string_value(TOKEN_TYPE_ACCESS, vec!["refresh", "Access", "", "JWT"]),
        ),
        mostly(
            "jti-[0-9]{1,3}".prop_map(Value::String),
            string_value("jti-0001", vec![REVOKED_JTI, ""]),
        ),
        mostly(iat_ok, date_value()),
        mostly(exp_ok, date_value()),
        prop::option::weighted(0.3, date_value()),
        prop::collection::vec(("[a-z]{1,5}", any::<i64>()), 0..3),
    )
        .prop_map(|(uuid, iss, aud, typ, jti, iat, exp, nbf, junk)| {
            let mut map = Map::new();
            for (key, value) in junk {
                map.insert(key, Value::from(value));
            }
            for (name, value) in [
                ("uuid", uuid),
                ("iss", iss),
                ("aud", aud),
                ("typ", typ),
                ("jti", jti),
                ("iat", iat),
                ("exp", exp),
                ("nbf", nbf),
            ] {
                match value {
                    Some(value) => {
                        map.insert(name.to_owned(), value);
                    }
                    None => {
                        map.remove(name);
                    }
                }
            }
            map
        })
}

/// One edit of a token string.
#[derive(Debug, Clone)]
enum Edit {
    FlipBit(Index, u8),
    Insert(Index, char),
    Delete(Index),
    Truncate(Index),
    SwapSegments(Index, Index),
    DuplicateSegment(Index),
    DropSegment(Index),
    ChangeCase(Index),
    Append(&'static str),
    Prepend(&'static str),
    ForeignSignature,
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..7).prop_map(|(i, bit)| Edit::FlipBit(i, bit)),
        2 => (any::<Index>(), prop_oneof![
            prop::sample::select(vec!['.', '=', '-', '_', '+', '/', 'A', 'a', '0', ' ', '\0', 'é']),
            any::<char>(),
        ]).prop_map(|(i, c)| Edit::Insert(i, c)),
        2 => any::<Index>().prop_map(Edit::Delete),
        1 => any::<Index>().prop_map(Edit::Truncate),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::SwapSegments(a, b)),
        1 => any::<Index>().prop_map(Edit::DuplicateSegment),
        1 => any::<Index>().prop_map(Edit::DropSegment),
        1 => any::<Index>().prop_map(Edit::ChangeCase),
        1 => prop::sample::select(vec!["=", "==", ".", " ", "\n", "A", "%3D", ".x"]).prop_map(Edit::Append),
        1 => prop::sample::select(vec!["Bearer ", " ", ".", "A"]).prop_map(Edit::Prepend),
        1 => Just(Edit::ForeignSignature),
    ]
}

fn apply(token: &str, edit: &Edit, foreign: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let segments = || -> Vec<String> { token.split('.').map(str::to_owned).collect() };
    match edit {
        Edit::FlipBit(i, bit) if !bytes.is_empty() => {
            let at = i.index(bytes.len());
            bytes[at] ^= 1 << bit; // ASCII stays ASCII: bits 0..=6
        }
        Edit::Insert(i, c) => {
            let at = i.index(bytes.len() + 1);
            let mut buf = [0u8; 4];
            bytes.splice(at..at, c.encode_utf8(&mut buf).bytes());
        }
        Edit::Delete(i) if !bytes.is_empty() => {
            bytes.remove(i.index(bytes.len()));
        }
        Edit::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
        Edit::SwapSegments(a, b) => {
            let mut parts = segments();
            let (x, y) = (a.index(parts.len()), b.index(parts.len()));
            parts.swap(x, y);
            return parts.join(".");
        }
        Edit::DuplicateSegment(i) => {
            let mut parts = segments();
            let at = i.index(parts.len());
            let copy = parts[at].clone();
            parts.insert(at, copy);
            return parts.join(".");
        }
        Edit::DropSegment(i) => {
            let mut parts = segments();
            parts.remove(i.index(parts.len()));
            return parts.join(".");
        }
        Edit::ChangeCase(i) if !bytes.is_empty() => {
            let at = i.index(bytes.len());
            let b = bytes[at];
            bytes[at] = if b.is_ascii_lowercase() {
                b.to_ascii_uppercase()
            } else {
                b.to_ascii_lowercase()
            };
        }
        Edit::Append(s) => bytes.extend_from_slice(s.as_bytes()),
        Edit::Prepend(s) => {
            bytes.splice(0..0, s.bytes());
        }
        Edit::ForeignSignature => {
            let mut parts = segments();
            if let (Some(last), Some(sig)) = (parts.last_mut(), foreign.rsplit('.').next()) {
                *last = sig.to_owned();
            }
            return parts.join(".");
        }
        _ => {}
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Header JSON for the algorithm-confusion property.
fn header() -> impl Strategy<Value = (Vec<u8>, bool)> {
    let alg = prop_oneof![
        4 => Just(Some("HS256")),
        4 => prop::sample::select(vec![
            Some("none"), Some("None"), Some("NONE"), Some("HS384"), Some("HS512"),
            Some("RS256"), Some("ES256"), Some("PS256"), Some("EdDSA"), Some("hs256"),
            Some("HS256 "), Some(" HS256"), Some(""), Some("HS2560"), None,
        ]),
    ];
    (
        alg,
        prop::option::of(prop::sample::select(vec!["JWT", "jwt", "at+jwt", ""])),
        prop::option::of("[a-z0-9]{0,8}"),
        prop::collection::vec(("x-[a-z]{1,4}", any::<i32>()), 0..2),
    )
        .prop_map(|(alg, typ, kid, extra)| {
            let mut map = Map::new();
            if let Some(typ) = typ {
                map.insert("typ".into(), json!(typ));
            }
            if let Some(alg) = alg {
                map.insert("alg".into(), json!(alg));
            }
            if let Some(kid) = kid {
                map.insert("kid".into(), json!(kid));
            }
            for (k, v) in extra {
                map.insert(k, json!(v));
            }
            let bytes = serde_json::to_vec(&Value::Object(map)).expect("JSON");
            (bytes, alg == Some("HS256"))
        })
}

proptest! {
    #![proptest_config(config())]

    /// Random strings, and strings shaped like tokens, are refused with
    /// the one 401 error.
    #[test]
    fn jwt_random_strings_are_refused(token in prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_=+/-]{0,40}\\.[A-Za-z0-9_=+/-]{0,80}\\.[A-Za-z0-9_=+/-]{0,60}",
        "[A-Za-z0-9._-]{0,200}",
        "(ey[A-Za-z0-9_-]{4,30}\\.){2,4}[A-Za-z0-9_-]{0,43}",
    ]) {
        let fx = Fixture::new(0);
        let result = fx.verify(&token);
        prop_assert!(refused(&result), "{:?} gave {:?}", token, result);
    }

    /// Well-formed segments of random JSON and random bytes, any signature.
    #[test]
    fn jwt_random_segments_are_refused(
        header in prop_oneof![
            Just(br#"{"alg":"HS256","typ":"JWT"}"#.to_vec()),
            prop::collection::vec(any::<u8>(), 0..40),
        ],
        claims in prop_oneof![
            Just(serde_json::to_vec(&valid_claims()).expect("JSON")),
            prop::collection::vec(any::<u8>(), 0..80),
        ],
        signature in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let fx = Fixture::new(0);
        let token = format!("{}.{}.{}", b64(&header), b64(&claims), b64(&signature));
        let result = fx.verify(&token);
        prop_assert!(refused(&result), "{:?}", result);
    }

    /// A valid token, edited: refused, unless the edits gave back exactly
    /// the valid token.
    #[test]
    fn jwt_mutated_tokens_are_refused(edits in prop::collection::vec(edit(), 1..4)) {
        let fx = Fixture::new(0);
        let valid = sign(&valid_claims());
        let mut other = valid_claims();
        other["jti"] = json!("jti-0002");
        let foreign = sign(&other);
        prop_assert!(fx.verify(&valid).is_ok(), "the fixture's token verifies");
        let mut token = valid.clone();
        for e in &edits {
            token = apply(&token, e, &foreign);
        }
        let result = fx.verify(&token);
        if token == valid {
            prop_assert!(result.is_ok());
        } else {
            prop_assert!(refused(&result), "{:?} from {:?} gave {:?}", token, edits, result);
        }
    }

    /// A correct HMAC-SHA256 under any header: accepted only when the
    /// header says exactly HS256 (no alg=none, no key confusion).
    #[test]
    fn jwt_only_hs256_headers_verify((header, is_hs256) in header()) {
        let fx = Fixture::new(0);
        let claims = serde_json::to_vec(&valid_claims()).expect("JSON");
        let token = sign_raw(&header, &claims);
        let result = fx.verify(&token);
        if is_hs256 {
            prop_assert!(result.is_ok(), "{} gave {:?}", String::from_utf8_lossy(&header), result);
        } else {
            prop_assert!(refused(&result), "{} gave {:?}", String::from_utf8_lossy(&header), result);
        }
        // Without a signature, never.
        let unsigned = format!("{}.{}.", b64(&header), b64(&claims));
        prop_assert!(refused(&fx.verify(&unsigned)));
    }

    /// Correctly signed tokens with random claims (missing, wrong types,
    /// negative, float, huge, wrong iss/aud/typ, revoked jti, unknown or
    /// cut-off user) at a random clock and leeway: accepted exactly when
    /// the model accepts, with the model's identity.
    #[test]
    fn jwt_claims_follow_the_rules(
        claims in claims(),
        now in prop_oneof![NOW - 150..NOW + 150, Just(NOW), Just(0u64), Just(u64::MAX)],
        leeway in prop::sample::select(vec![0u64, 1, 30]),
    ) {
        let fx = Fixture::new(leeway);
        fx.clock.store(now, Ordering::SeqCst);
        let token = sign(&Value::Object(claims.clone()));
        let result = fx.verify(&token);
        match (model(&claims, now, fx.leeway), result) {
            (Some(expected), Ok(identity)) => {
                prop_assert_eq!(&identity, &expected);
                prop_assert!(block_on(fx.verifier.revalidate(&identity)).is_ok());
            }
            (None, Err(AuthError::Unauthorized)) => {}
            (want, got) => prop_assert!(
                false,
                "claims {} at {} leeway {}: model {:?}, verifier {:?}",
                Value::Object(claims), now, leeway, want, got
            ),
        }
    }

    /// The same claims re-encoded with any JSON spacing and key order
    /// (signed correctly) verify the same: the verifier reads JSON, not
    /// the shape jsonwebtoken writes.
    #[test]
    fn jwt_claims_json_shape_does_not_matter(
        pairs in Just(
            valid_claims().as_object().expect("object").clone().into_iter().collect::<Vec<_>>()
        ).prop_shuffle(),
        pretty in any::<bool>(),
    ) {
        let fx = Fixture::new(0);
        let reordered: Map<String, Value> = pairs.into_iter().collect();
        let bytes = if pretty {
            serde_json::to_vec_pretty(&reordered)
        } else {
            serde_json::to_vec(&reordered)
        }
        .expect("JSON");
        let token = sign_raw(br#"{"alg":"HS256","typ":"JWT"}"#, &bytes);
        let identity = fx.verify(&token).expect("the same claims verify");
        prop_assert_eq!(identity.jti, "jti-0001");
    }
}

// === tickets ===

fn identity(user: &str) -> Identity {
    Identity {
        user_uuid: user.to_owned(),
        role: "viewer".to_owned(),
        must_change_password: false,
        jti: format!("jti-{user}"),
        iat: NOW,
        exp: NOW + 3_600,
    }
}

/// One edit of a ticket that keeps it plausible: same alphabet, often the
/// same length.
#[derive(Debug, Clone)]
enum TicketEdit {
    Replace(Index, char),
    Delete(Index),
    Insert(Index, char),
    Case(Index),
    Pad(&'static str),
    Other(Index),
}

fn ticket_edit() -> impl Strategy<Value = TicketEdit> {
    let alphabet = prop::sample::select("ABCXYZabcxyz0189-_+/=. %é\0".chars().collect::<Vec<_>>());
    prop_oneof![
        3 => (any::<Index>(), alphabet.clone()).prop_map(|(i, c)| TicketEdit::Replace(i, c)),
        1 => any::<Index>().prop_map(TicketEdit::Delete),
        1 => (any::<Index>(), alphabet).prop_map(|(i, c)| TicketEdit::Insert(i, c)),
        1 => any::<Index>().prop_map(TicketEdit::Case),
        1 => prop::sample::select(vec!["=", " ", "\n", "%00", "A"]).prop_map(TicketEdit::Pad),
        1 => any::<Index>().prop_map(TicketEdit::Other),
    ]
}

fn apply_ticket(ticket: &str, edit: &TicketEdit, others: &[String]) -> String {
    let mut chars: Vec<char> = ticket.chars().collect();
    match edit {
        TicketEdit::Replace(i, c) if !chars.is_empty() => {
            let at = i.index(chars.len());
            chars[at] = *c;
        }
        TicketEdit::Delete(i) if !chars.is_empty() => {
            chars.remove(i.index(chars.len()));
        }
        TicketEdit::Insert(i, c) => chars.insert(i.index(chars.len() + 1), *c),
        TicketEdit::Case(i) if !chars.is_empty() => {
            let at = i.index(chars.len());
            let c = chars[at];
            chars[at] = if c.is_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
        }
        TicketEdit::Pad(s) => chars.extend(s.chars()),
        TicketEdit::Other(i) if !others.is_empty() => {
            // Splice half of another live ticket in.
            let other: Vec<char> = others[i.index(others.len())].chars().collect();
            let half = chars.len() / 2;
            chars.truncate(half);
            chars.extend(other.iter().skip(half));
        }
        _ => {}
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(config())]

    /// Random strings (any text, and 43-character base64url-looking text)
    /// never redeem, and leave the live tickets redeemable exactly once.
    #[test]
    fn tickets_random_strings_never_redeem(
        guesses in prop::collection::vec(prop_oneof![
            any::<String>(),
            "[A-Za-z0-9_-]{43}",
            "[A-Za-z0-9_-]{42,44}",
            "[A-Za-z0-9+/=]{43,44}",
        ], 1..8),
    ) {
        let store = MemoryTicketStore::new(TicketLimits::default());
        let minted: Vec<_> = ["u1", "u2", "u1"]
            .iter()
            .map(|u| (u, store.mint_now(&identity(u), Duration::from_secs(60)).expect("mint")))
            .collect();
        let live: BTreeSet<&str> = minted.iter().map(|(_, t)| t.expose()).collect();
        for guess in &guesses {
            prop_assume!(!live.contains(guess.as_str()));
            prop_assert_eq!(store.redeem_now(guess), None);
            let through_trait = block_on(TicketStore::redeem(&store, guess));
            prop_assert!(matches!(through_trait, Ok(None)), "{:?}", through_trait);
        }
        let counters = store.counters();
        prop_assert_eq!(counters.redeemed_unknown, 2 * guesses.len() as u64);
        prop_assert_eq!(counters.redeemed_ok, 0);
        prop_assert_eq!(counters.live, 3);
        for (user, ticket) in &minted {
            prop_assert_eq!(ticket.expose().len(), TICKET_LEN);
            prop_assert_eq!(store.redeem_now(ticket.expose()), Some(identity(user)));
            prop_assert_eq!(store.redeem_now(ticket.expose()), None);
        }
    }

    /// Live tickets edited (a character replaced, dropped or added, case
    /// changed, padding, halves of two tickets spliced) never redeem unless
    /// the edits gave back a live ticket itself.
    #[test]
    fn tickets_mutated_never_redeem(
        which in any::<Index>(),
        edits in prop::collection::vec(ticket_edit(), 1..4),
    ) {
        let store = MemoryTicketStore::new(TicketLimits::default());
        let tickets: Vec<String> = (0..3)
            .map(|i| {
                store
                    .mint_now(&identity(&format!("u{i}")), Duration::from_secs(60))
                    .expect("mint")
                    .expose()
                    .to_owned()
            })
            .collect();
        let target = which.index(tickets.len());
        let mut guess = tickets[target].clone();
        for e in &edits {
            guess = apply_ticket(&guess, e, &tickets);
        }
        match tickets.iter().position(|t| *t == guess) {
            Some(i) => prop_assert_eq!(
                store.redeem_now(&guess),
                Some(identity(&format!("u{i}")))
            ),
            None => {
                prop_assert_eq!(store.redeem_now(&guess), None, "{:?} from {:?}", guess, edits);
                // The original is untouched by the failed guess.
                prop_assert_eq!(
                    store.redeem_now(&tickets[target]),
                    Some(identity(&format!("u{target}")))
                );
            }
        }
    }
}

/// The reference model accepts the fixture's valid claims (so the
/// properties above test the rules, not a model that refuses everything).
#[test]
fn model_accepts_the_valid_claims() {
    let claims = valid_claims();
    let object = claims.as_object().expect("object");
    let identity = model(object, NOW, 0).expect("valid");
    assert_eq!(identity.role, "viewer");
    let fx = Fixture::new(0);
    assert_eq!(fx.verify(&sign(&claims)).expect("verifies"), identity);
    let mut cut = claims.clone();
    cut["uuid"] = json!(CUT_USER);
    cut["iat"] = json!(CUTOFF_MILLIS / 1000);
    assert!(model(cut.as_object().expect("object"), NOW, 0).is_some());
    assert!(fx.verify(&sign(&cut)).is_ok());
    cut["iat"] = json!(CUTOFF_MILLIS / 1000 - 1);
    assert!(model(cut.as_object().expect("object"), NOW, 0).is_none());
    assert!(refused(&fx.verify(&sign(&cut))));
}

/// The claims strategy yields a fair share of tokens the model accepts,
/// so `jwt_claims_follow_the_rules` checks acceptance as well as refusal.
#[test]
fn claims_strategy_accepts_a_fair_share() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = claims();
    let accepted = (0..1000)
        .filter(|_| {
            let claims = strategy.new_tree(&mut runner).expect("a value").current();
            model(&claims, NOW, 0).is_some()
        })
        .count();
    assert!(accepted > 100, "only {accepted} of 1000 accepted");
}

// === regressions found by the properties above ===

/// jwt_claims_follow_the_rules: serde_json's default float parser is off
/// by one ulp on some inputs, so a float NumericDate could truncate to the
/// next second: `exp: 9007199254740991.0` was read as 9007199254740990, and
/// `exp: 1700000000.9999998000000000` (PyJWT: int() = 1700000000, expired
/// at 1700000000) as 1700000001, accepted for one more second.
#[test]
fn regression_float_numeric_dates_are_parsed_exactly() {
    let fx = Fixture::new(0);
    let mut claims = valid_claims();
    claims["exp"] = json!(9_007_199_254_740_991.0_f64);
    assert_eq!(
        fx.verify(&sign(&claims)).expect("far future").exp,
        9_007_199_254_740_991
    );
    let header = br#"{"alg":"HS256","typ":"JWT"}"#;
    let raw = format!(
        r#"{{"uuid":"{USER}","iss":"{ISSUER}","aud":"{AUDIENCE}","typ":"access","jti":"j","iat":{},"exp":1700000000.9999998000000000}}"#,
        NOW - 10
    );
    let token = sign_raw(header, raw.as_bytes());
    assert!(refused(&fx.verify(&token)), "expired at its second");
    fx.clock.store(NOW - 1, Ordering::SeqCst);
    let identity = fx.verify(&token).expect("valid one second earlier");
    assert_eq!(identity.exp, NOW);
}
