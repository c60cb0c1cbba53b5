//! The embedded demo: a seeded attacker and synthetic events, so a newcomer
//! sees a live stream within seconds of `cargo run`.

use std::time::Duration;

use decnet_bus::Bus;
use decnet_repo::{Attacker, Observation, Repo, Repository, User};
use serde_json::{Map, Value, json};

/// The demo attacker's uuid (stable, so docs and scripts can name it).
pub(crate) const DEMO_ATTACKER: &str = "5f0c7a52-3d0b-4c36-9a51-6a8f1e2d7b10";
/// The demo attacker's identity.
pub(crate) const DEMO_IDENTITY: &str = "b7e4c0de-1d2e-4f60-8a9b-0c1d2e3f4a5b";
/// The demo user (role admin).
pub(crate) const DEMO_USER: &str = "0e9d8c7b-6a5f-4e3d-9c2b-1a0f9e8d7c6b";

const PRIMITIVES: &[(&str, &str)] = &[
    ("motor.input_modality", "keyboard"),
    ("motor.shell_mastery.tab_completion", "frequent"),
    ("cognitive.cognitive_load", "moderate"),
    ("linguistic.locale", "en-US"),
];

/// Seed the demo user and attacker with a few observations.
///
/// # Errors
///
/// When the repository refuses the rows.
pub(crate) async fn seed(repo: &Repo) -> Result<(), decnet_repo::RepoError> {
    repo.create_user(&User {
        uuid: DEMO_USER.into(),
        username: "demo".into(),
        password_hash: "!".into(),
        role: "admin".into(),
        must_change_password: false,
        tokens_valid_from: None,
    })
    .await?;
    repo.upsert_attacker(&Attacker {
        uuid: DEMO_ATTACKER.into(),
        ip: "203.0.113.66".into(),
        identity_id: Some(DEMO_IDENTITY.into()),
    })
    .await?;
    let now = decnet_bus::now_ts();
    for (n, (primitive, value)) in PRIMITIVES.iter().enumerate() {
        repo.upsert_observation(&observation(n as u64, primitive, json!(value), now))
            .await?;
    }
    Ok(())
}

fn observation(n: u64, primitive: &str, value: Value, ts: f64) -> Observation {
    Observation {
        id: format!("demo-{n:08}"),
        identity_ref: Some(DEMO_IDENTITY.into()),
        primitive: primitive.into(),
        value,
        confidence: 0.5 + (n % 5) as f64 / 10.0,
        window_start_ts: ts - 30.0,
        window_end_ts: ts,
        source: "demo".into(),
        evidence_ref: format!("demo-evidence-{n}"),
        envelope_v: 1,
        ts,
        attacker_uuid: DEMO_ATTACKER.into(),
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Publish synthetic events for the demo attacker forever (one a second).
pub(crate) async fn generate(bus: Bus, repo: Repo) {
    let mut n: u64 = 100;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        n += 1;
        let ts = decnet_bus::now_ts();
        let (topic, event_type, payload) = match n % 10 {
            3 => (
                "attacker.scored".to_owned(),
                "scored",
                json!({"attacker_uuid": DEMO_ATTACKER, "score": (n % 100) as f64 / 100.0, "band": "medium"}),
            ),
            6 => (
                "attacker.fingerprint_rotated".to_owned(),
                "fingerprint_rotated",
                json!({"attacker_uuid": DEMO_ATTACKER, "old": format!("fp-{}", n - 1), "new": format!("fp-{n}")}),
            ),
            9 => (
                "attribution.profile.state_changed".to_owned(),
                "state_changed",
                json!({"identity_uuid": DEMO_IDENTITY, "from": "forming", "to": "stable"}),
            ),
            _ => {
                let (primitive, base) = PRIMITIVES[(n as usize) % PRIMITIVES.len()];
                let value = json!({"label": base, "sample": n});
                let row = observation(n, primitive, value.clone(), ts);
                if let Err(error) = repo.upsert_observation(&row).await {
                    tracing::warn!(%error, "demo: could not store observation");
                }
                (
                    format!("attacker.observation.{primitive}"),
                    "observation",
                    json!({"attacker_uuid": DEMO_ATTACKER, "primitive": primitive, "value": value,
                           "confidence": row.confidence, "source": "demo"}),
                )
            }
        };
        if let Err(error) = bus.publish(&topic, event_type, object(payload)).await {
            tracing::warn!(%error, "demo: publish failed");
        }
    }
}
