//! Nothing this crate logs contains a JWT, a signature or a ticket value, even
//! at the most verbose level.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use decnet_auth::{
    AUDIENCE, ISSUER, TOKEN_TYPE_ACCESS, TicketStore, TokenVerifier, VerifierConfig, encode_claims,
};
use decnet_repo::prelude::*;
use decnet_repo::{MemoryRepository, User};
use serde_json::json;

const SECRET: &[u8] = b"log-test-secret-do-not-print";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

#[tokio::test]
async fn tokens_tickets_and_secret_never_reach_the_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let repo = MemoryRepository::new();
    repo.create_user(&User {
        uuid: "u1".into(),
        username: "alice".into(),
        password_hash: String::new(),
        role: "viewer".into(),
        must_change_password: false,
        tokens_valid_from: None,
    })
    .await
    .expect("seed");
    let verifier = TokenVerifier::new(
        VerifierConfig::new(SECRET),
        std::sync::Arc::new(repo.clone()),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = |typ: &str, uuid: &str, jti: &str| {
        json!({"uuid": uuid, "iss": ISSUER, "aud": AUDIENCE, "typ": typ,
               "jti": jti, "iat": now, "exp": now + 60})
    };

    let mut secrets = Vec::new();
    let good = encode_claims(SECRET, &claims(TOKEN_TYPE_ACCESS, "u1", "jti-good")).expect("sign");
    let identity = verifier.verify(&good).await.expect("valid");
    secrets.push(good);
    for token in [
        encode_claims(SECRET, &claims("refresh", "u1", "jti-a")).expect("sign"),
        encode_claims(SECRET, &claims(TOKEN_TYPE_ACCESS, "nobody", "jti-b")).expect("sign"),
        encode_claims(b"wrong-secret", &claims(TOKEN_TYPE_ACCESS, "u1", "jti-c")).expect("sign"),
        encode_claims(
            SECRET,
            &json!({"uuid": ["not", "a", "string"], "iss": ISSUER,
            "aud": AUDIENCE, "exp": now + 60}),
        )
        .expect("sign"),
        "eyJhbGciOiJub25lIn0.eyJ1dWlkIjoidTEifQ.".to_owned(),
    ] {
        assert!(verifier.verify(&token).await.is_err());
        secrets.push(token);
    }
    repo.set_available(false);
    let down = encode_claims(SECRET, &claims(TOKEN_TYPE_ACCESS, "u1", "jti-d")).expect("sign");
    assert!(verifier.verify(&down).await.is_err());
    secrets.push(down);

    let tickets = decnet_auth::MemoryTicketStore::default();
    let ticket = tickets
        .mint(&identity, Duration::from_secs(60))
        .await
        .expect("mint");
    tickets.redeem(ticket.expose()).await.expect("redeem");
    tickets.redeem(ticket.expose()).await.expect("redeem");
    tracing::debug!(?ticket, "a caller logging the ticket's Debug");
    secrets.push(ticket.expose().to_owned());

    let logs = captured.text();
    assert!(logs.contains("token refused"), "nothing captured: {logs}");
    assert!(!logs.contains(std::str::from_utf8(SECRET).expect("utf8")));
    for secret in &secrets {
        for part in secret.split('.').filter(|p| p.len() > 8) {
            assert!(!logs.contains(part), "logs leak {part}:\n{logs}");
        }
    }
}
