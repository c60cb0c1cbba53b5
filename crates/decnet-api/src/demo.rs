//! The embedded demo: seeded rows and synthetic events for every stream
//! kind, so a newcomer sees each stream live within seconds of `cargo run`
//! (the binary runs it on its in-process backends; an embedder may run it on
//! its own to try the endpoints).

use std::sync::Arc;
use std::time::Duration;

use decnet_bus::Bus;
use decnet_repo::{
    Attacker, DbTime, IdentityRow, LogRow, MutationRow, Observation, OrchestratorEventRow,
    RepoError, RepositoryWriter, User,
};
use serde_json::{Map, Value, json};

/// The demo attacker's uuid (stable, so docs and scripts can name it).
pub const DEMO_ATTACKER: &str = "5f0c7a52-3d0b-4c36-9a51-6a8f1e2d7b10";
/// The demo attacker's identity.
pub const DEMO_IDENTITY: &str = "b7e4c0de-1d2e-4f60-8a9b-0c1d2e3f4a5b";
/// The demo user (role admin).
pub const DEMO_USER: &str = "0e9d8c7b-6a5f-4e3d-9c2b-1a0f9e8d7c6b";
/// The demo topology.
pub const DEMO_TOPOLOGY: &str = "c0ffee00-5eed-4a11-9e55-70b0109ee001";

const PRIMITIVES: &[(&str, &str)] = &[
    ("motor.input_modality", "keyboard"),
    ("motor.shell_mastery.tab_completion", "frequent"),
    ("cognitive.cognitive_load", "moderate"),
    ("linguistic.locale", "en-US"),
];

/// Now, as a database time (a clock outside the years 1-9999 gives the
/// earliest representable time rather than a panic).
fn now() -> DbTime {
    DbTime::from_system_time(std::time::SystemTime::now())
        .unwrap_or(DbTime::naive(time::PrimitiveDateTime::MIN))
}

/// Seed the demo user, attacker, identity, topology and a few rows of every
/// table a snapshot reads.
///
/// # Errors
///
/// When the repository refuses the rows.
pub async fn seed(repo: &dyn RepositoryWriter) -> Result<(), RepoError> {
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
    let ts = decnet_bus::now_ts();
    for (n, (primitive, value)) in PRIMITIVES.iter().enumerate() {
        repo.upsert_observation(&observation(n as u64, primitive, json!(value), ts))
            .await?;
    }
    let at = now();
    repo.upsert_identity(&IdentityRow {
        uuid: DEMO_IDENTITY.into(),
        schema_version: 1,
        campaign_id: None,
        first_seen_at: Some(at),
        last_seen_at: Some(at),
        created_at: at,
        updated_at: at,
        confidence: Some(0.8),
        observation_count: PRIMITIVES.len() as i64,
        ja3_hashes: Some("[\"771,4865-4866\"]".into()),
        hassh_hashes: None,
        ja4h_hashes: None,
        ja4_quic_hashes: None,
        http_versions_seen: None,
        tls_cert_sha256: None,
        ipv6_link_local_iids: None,
        payload_simhashes: None,
        c2_endpoints: None,
        kd_digraph_simhash: Some(decnet_repo::HexBytes(vec![
            0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3,
        ])),
        merged_into_uuid: None,
        notes: Some("demo identity".into()),
    })
    .await?;
    repo.upsert_topology(DEMO_TOPOLOGY, "demo-maze", "active")
        .await?;
    repo.upsert_mutation(&MutationRow {
        id: "demo-mutation-1".into(),
        topology_id: DEMO_TOPOLOGY.into(),
        op: "add_decky".into(),
        payload: "{\"name\":\"web01\"}".into(),
        state: "pending".into(),
        requested_at: at,
        applied_at: None,
        reason: None,
    })
    .await?;
    repo.insert_topology_decky(DEMO_TOPOLOGY, "web01", "running")
        .await?;
    repo.insert_orchestrator_event(&OrchestratorEventRow {
        uuid: "demo-orchestrator-0".into(),
        ts: at,
        kind: "traffic".into(),
        protocol: "tcp".into(),
        action: "probe".into(),
        src_decky_uuid: None,
        dst_decky_uuid: "web01".into(),
        success: true,
        payload: "{\"bytes\": 512}".into(),
    })
    .await?;
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

/// Publish one synthetic event a second, cycling through every stream kind,
/// and add a log line for `/stream`; forever.
pub async fn generate(bus: Bus, repo: Arc<dyn RepositoryWriter>) {
    let mut n: u64 = 100;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        n += 1;
        let ts = decnet_bus::now_ts();
        let (topic, event_type, payload) = match n % 10 {
            1 => (
                "identity.observation.linked".to_owned(),
                "observation.linked",
                json!({"identity_uuid": DEMO_IDENTITY, "observation_uuid": DEMO_ATTACKER}),
            ),
            2 => (
                "campaign.identity.assigned".to_owned(),
                "identity.assigned",
                json!({"campaign_uuid": "demo-campaign", "identity_uuid": DEMO_IDENTITY}),
            ),
            3 => (
                "attacker.scored".to_owned(),
                "scored",
                json!({"attacker_uuid": DEMO_ATTACKER, "score": (n % 100) as f64 / 100.0, "band": "medium"}),
            ),
            4 => (
                format!("orchestrator.traffic.web0{}", n % 3),
                "traffic",
                json!({"src": "web01", "dst": "db01", "bytes": n * 10}),
            ),
            5 => (
                format!("topology.{DEMO_TOPOLOGY}.status"),
                "status",
                json!({"state": "active", "reason": null}),
            ),
            6 => (
                "attacker.fingerprint_rotated".to_owned(),
                "fingerprint_rotated",
                json!({"attacker_uuid": DEMO_ATTACKER, "old": format!("fp-{}", n - 1), "new": format!("fp-{n}")}),
            ),
            8 => (
                "decky.web01.service_added".to_owned(),
                "",
                json!({"decky_name": "web01", "service_name": "ssh", "topology_id": DEMO_TOPOLOGY, "services": ["ssh"]}),
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
        let log = LogRow {
            id: 0,
            timestamp: now(),
            decky: format!("web0{}", n % 3),
            service: ["ssh", "http", "ftp"][(n % 3) as usize].into(),
            event_type: "login_attempt".into(),
            attacker_ip: "203.0.113.66".into(),
            raw_line: format!("demo login attempt {n}"),
            fields: json!({"username": "root", "attempt": n}).to_string(),
            msg: None,
            trace_id: None,
            span_id: None,
        };
        if let Err(error) = repo.insert_log(&log).await {
            tracing::warn!(%error, "demo: could not store a log line");
        }
    }
}

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// The repository refused the demo rows.
    #[error("seeding the demo data")]
    Seed(#[from] RepoError),
    /// The demo token could not be minted.
    #[error("minting the demo token")]
    Token(#[from] decnet_auth::MintError),
}

/// The running demo: its event generator stops when this is dropped.
#[derive(Debug)]
pub struct Demo {
    /// A 24-hour token of the demo user.
    pub token: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Seed the demo rows, start publishing the synthetic events on `bus`, and
/// mint the demo user's 24-hour token with `secret`.
///
/// # Errors
///
/// [`DemoError`] when the rows or the token cannot be made.
pub async fn start(
    repo: Arc<dyn RepositoryWriter>,
    bus: Bus,
    secret: &[u8],
) -> Result<Demo, DemoError> {
    seed(repo.as_ref()).await?;
    let (token, _) =
        decnet_auth::mint_access_token(secret, DEMO_USER, Duration::from_secs(24 * 3600))?;
    Ok(Demo {
        token,
        task: tokio::spawn(generate(bus, repo)),
    })
}

/// What a newcomer is told: what is running, the token, the console link
/// and copy-paste commands for every stream.
pub fn banner(addr: std::net::SocketAddr, tls: bool, token: &str) -> String {
    let base = format!("{}://{addr}", if tls { "https" } else { "http" });
    format!(
        "\n\
decnet-events demo is running on {base} (memory bus, memory database, synthetic events)\n\
\n\
  demo attacker: {attacker}\n\
  demo topology: {topology}\n\
  token (24 h):  {token}\n\
\n\
Console:  {base}/#token={token}&kind=attacker&key={attacker}&also=identities\n\
\n\
Mint a ticket, then open a stream (tickets are single-use, 60 s):\n\
\n\
  TOKEN={token}\n\
  TICKET=$(curl -s -X POST -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/auth/sse-ticket | sed 's/.*\"ticket\": *\"\\([^\"]*\\)\".*/\\1/')\n\
  curl -N \"{base}/api/v1/attackers/{attacker}/events?ticket=$TICKET\"\n\
\n\
Other streams: /api/v1/identities/events, /api/v1/campaigns/events, /api/v1/orchestrator/events/stream,\n\
/api/v1/topologies/{topology}/events, /api/v1/stream\n",
        attacker = DEMO_ATTACKER,
        topology = DEMO_TOPOLOGY,
    )
}
