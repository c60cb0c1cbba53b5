//! Signing access tokens: for operators (`mint-token`), the demo and tests.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::BoxError;

/// The `iss` claim DECNET pins on every access token.
pub const ISSUER: &str = "decnet";

/// The `aud` claim DECNET pins on every access token.
pub const AUDIENCE: &str = "decnet-dashboard";

/// The `typ` claim (in the payload) of an access token.
pub const TOKEN_TYPE_ACCESS: &str = "access";

/// The claims of a DECNET access token, as DECNET mints them.
///
/// `None` fields are left out of the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's uuid (`users.uuid`).
    pub uuid: String,
    /// The user's name, informational only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The user's role at minting, informational only: the verifier reads the
    /// role from the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Issuer; [`ISSUER`] for a valid token.
    pub iss: String,
    /// Audience; [`AUDIENCE`] for a valid token.
    pub aud: String,
    /// Token type; [`TOKEN_TYPE_ACCESS`] for a valid token.
    pub typ: String,
    /// Unique token id, the key of the revocation denylist.
    pub jti: String,
    /// Issued at, epoch seconds.
    pub iat: u64,
    /// Expires at, epoch seconds (the token is refused from this second on).
    pub exp: u64,
    /// Not before, epoch seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// The signing secret is empty.
    #[error("signing secret is empty")]
    EmptySecret,
    /// The OS random number generator failed (for the `jti`).
    #[error("random number generator failed")]
    Random(#[source] BoxError),
    /// The claims could not be serialized or signed.
    #[error("could not sign the token")]
    Sign(#[source] BoxError),
}

/// Mint an HS256 access token for `user_uuid` that [`crate::TokenVerifier`]
/// accepts (as long as the user exists): `iss`, `aud` and `typ` pinned, a fresh
/// random `jti` (a v4 uuid), `iat` = now and `exp` = now + `ttl` (whole
/// seconds, rounded down).
///
/// Returns the token and the claims inside it.
///
/// # Errors
///
/// [`MintError::EmptySecret`] for an empty secret, [`MintError::Random`] when
/// the OS random number generator fails, [`MintError::Sign`] when signing fails.
pub fn mint_access_token(
    secret: &[u8],
    user_uuid: &str,
    ttl: Duration,
) -> Result<(String, Claims), MintError> {
    let iat = crate::unix_now();
    let claims = Claims {
        uuid: user_uuid.to_owned(),
        sub: None,
        role: None,
        iss: ISSUER.to_owned(),
        aud: AUDIENCE.to_owned(),
        typ: TOKEN_TYPE_ACCESS.to_owned(),
        jti: random_jti()?,
        iat,
        exp: iat.saturating_add(ttl.as_secs()),
        nbf: None,
    };
    let token = encode_claims(secret, &claims)?;
    Ok((token, claims))
}

/// Sign any serializable claims as an HS256 JWT (header `{"typ":"JWT","alg":"HS256"}`).
///
/// Nothing is checked: tests use this to build tokens with odd, wrong or
/// missing claims (pass a [`Claims`] or a `serde_json::Value`).
///
/// # Errors
///
/// [`MintError::EmptySecret`] for an empty secret, [`MintError::Sign`] when the
/// claims do not serialize or signing fails.
pub fn encode_claims<T: Serialize>(secret: &[u8], claims: &T) -> Result<String, MintError> {
    if secret.is_empty() {
        return Err(MintError::EmptySecret);
    }
    let key = EncodingKey::from_secret(secret).map_err(|e| MintError::Sign(Box::new(e)))?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key)
        .map_err(|e| MintError::Sign(Box::new(e)))
}

/// A fresh HS256 secret: 32 bytes from the OS CSPRNG, as 64 hex characters
/// (the embedded demo's, when none is configured).
///
/// # Errors
///
/// [`MintError::Random`] when the OS generator fails.
pub fn generate_secret() -> Result<String, MintError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| MintError::Random(Box::new(e)))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A random v4 uuid from the OS CSPRNG, without panicking when it fails.
fn random_jti() -> Result<String, MintError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| MintError::Random(Box::new(e)))?;
    Ok(uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_long_and_fresh() {
        let (a, b) = (
            generate_secret().expect("random"),
            generate_secret().expect("random"),
        );
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn minted_claims_are_pinned_and_unique() {
        let (_, a) = mint_access_token(b"k", "u1", Duration::from_secs(60)).expect("mint");
        let (_, b) = mint_access_token(b"k", "u1", Duration::from_secs(60)).expect("mint");
        assert_eq!(a.iss, ISSUER);
        assert_eq!(a.aud, AUDIENCE);
        assert_eq!(a.typ, TOKEN_TYPE_ACCESS);
        assert_eq!(a.exp, a.iat + 60);
        assert_ne!(a.jti, b.jti);
        assert_eq!(a.jti.len(), 36);
        assert!(uuid::Uuid::parse_str(&a.jti).is_ok_and(|u| u.get_version_num() == 4));
    }

    #[test]
    fn empty_secret_is_refused() {
        assert!(matches!(
            mint_access_token(b"", "u1", Duration::from_secs(60)),
            Err(MintError::EmptySecret)
        ));
    }

    #[test]
    fn optional_claims_are_left_out() {
        let (token, _) = mint_access_token(b"k", "u1", Duration::from_secs(60)).expect("mint");
        let payload = token.split('.').nth(1).expect("payload");
        use base64::Engine as _;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("b64");
        let value: serde_json::Value = serde_json::from_slice(&json).expect("json");
        let object = value.as_object().expect("object");
        assert!(!object.contains_key("nbf"));
        assert!(!object.contains_key("sub"));
        assert!(!object.contains_key("role"));
    }
}
