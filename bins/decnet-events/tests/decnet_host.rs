//! A stock DECNET host, reproduced: `decnet-events serve` started in
//! `/opt/decnet` with DECNET's `.env.local` (testdata/decnet.env.local, its
//! paths moved into a temporary directory) and nothing else in its
//! environment, beside DECNET's UNIX-socket broker (test-support's
//! `TestBroker` on the env file's socket path), DECNET's database (a SQLite
//! file, or a MySQL database, with DECNET's schema and rows written as DECNET
//! writes them) and DECNET's Python API (a stand-in HTTP server on the
//! upstream port). The dashboard's one base URL then serves REST through the
//! pass-through, the ticket mint, and all six streams of the dashboard with
//! tickets from that one mint: the attacker's, identities, campaigns,
//! orchestrator and a topology's, each with its snapshot from DECNET's
//! tables and a live event from DECNET's broker, and `/stream` from the
//! `logs` table.
//!
//! Every subcommand here (`serve`, `mint-token`, `publish`) reads only the
//! env file, as an operator's would.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use decnet_repo::{
    Attacker, CampaignRow, DbTime, HexBytes, IdentityRow, LogRow, MutationRow, Observation,
    OrchestratorEventRow, RepositoryWriter, User,
};
use decnet_sse::Decoded;
use http_body_util::Full;
use serde_json::{Value, json};
use test_support::decnet_broker::TestBroker;
use test_support::http::{self, Next, SseStream, events_path, with_ticket};
use test_support::process::{ChildProcess, Output};

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_decnet-events");
/// DECNET's env file as a master host has it.
const ENV_FILE: &str = include_str!("../../../testdata/decnet.env.local");
/// How long the server may take to answer `/readyz` 200.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A temporary DECNET host: `opt/decnet` (the env file, the state file),
/// `run/decnet` (the broker's socket).
struct HostDir(PathBuf);

impl HostDir {
    fn new() -> HostDir {
        let root =
            std::env::temp_dir().join(format!("decnet-host-{}", test_support::unique_suffix()));
        for dir in ["opt/decnet", "run/decnet"] {
            std::fs::create_dir_all(root.join(dir)).expect("create the host layout");
        }
        HostDir(root)
    }

    fn opt(&self) -> PathBuf {
        self.0.join("opt/decnet")
    }

    fn socket(&self) -> PathBuf {
        self.0.join("run/decnet/bus.sock")
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The database the host runs.
enum Database<'a> {
    /// DECNET's default: `DECNET_DB_TYPE=sqlite`, `DECNET_DB_PATH`.
    Sqlite(&'a Path),
    /// `DECNET_DB_TYPE=mysql` with `DECNET_DB_URL` (DECNET's `+asyncmy` form).
    Mysql(&'a str),
}

/// testdata/decnet.env.local with the host's paths under `host`, the upstream
/// at `upstream`, the database `db`, and our listener on `bind`. Every other
/// line is DECNET's, unchanged.
fn env_file(host: &HostDir, upstream: SocketAddr, db: &Database<'_>, bind: SocketAddr) -> String {
    let opt = host.opt();
    let mut text = ENV_FILE
        .replace("/run/decnet/bus.sock", &host.socket().to_string_lossy())
        .replace("/opt/decnet", &opt.to_string_lossy())
        .replace("http://127.0.0.1:8001", &format!("http://{upstream}"));
    if let Database::Mysql(url) = db {
        text = text.replace("DECNET_DB_TYPE=sqlite", "DECNET_DB_TYPE=mysql");
        let driver_url = url.replacen("mysql://", "mysql+asyncmy://", 1);
        text.push_str(&format!("DECNET_DB_URL={driver_url}\n"));
    }
    if let Database::Sqlite(path) = db {
        let line = format!("DECNET_DB_PATH={}/decnet.db", opt.to_string_lossy());
        text = text.replace(&line, &format!("DECNET_DB_PATH={}", path.to_string_lossy()));
    }
    text.push_str(&format!("DECNET_BIND={bind}\n"));
    text
}

/// The binary in the host's `/opt/decnet`, its environment cleared (only
/// `PATH` and `HOME` kept): what it knows comes from `.env.local`.
fn in_host(host: &HostDir, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args).current_dir(host.opt()).env_clear();
    for key in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(key) {
            command.env(key, value);
        }
    }
    command.env("RUST_LOG", "warn");
    command
}

/// Run a subcommand in the host to its end; its stdout.
async fn run_in_host(host: &HostDir, args: &[&str]) -> String {
    let mut command = in_host(host, args);
    let finished = tokio::task::spawn_blocking(move || {
        ChildProcess::spawn(
            "decnet-events",
            &mut command,
            Output::Capture,
            Output::Capture,
        )
        .expect("spawn decnet-events")
        .finish(Duration::from_secs(30))
    })
    .await
    .expect("join")
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(finished.status.success(), "{finished:?}");
    finished.stdout
}

/// DECNET's API, stood in for: every request answered with what it was
/// (method, path and query, the headers the pass-through adds or keeps).
async fn decnet_api() -> SocketAddr {
    http::serve_http1(
        |request: hyper::Request<hyper::body::Incoming>| async move {
            let header = |name: &str| {
                request
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let echo = json!({
                "served_by": "decnet-api",
                "method": request.method().as_str(),
                "path_and_query": request.uri().path_and_query().map(|p| p.as_str()),
                "authorization": header("authorization").is_some(),
                "x_forwarded_for": header("x-forwarded-for"),
                "x_forwarded_proto": header("x-forwarded-proto"),
            });
            let response = hyper::Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(echo.to_string())))
                .expect("response");
            Ok::<_, Infallible>(response)
        },
    )
    .await
}

/// What the test writes into DECNET's database, and what it expects back.
struct Seeded {
    user: String,
    /// A second analyst: the per-user cap (5) leaves the sixth stream to them.
    second_user: String,
    attacker: String,
    observations: Vec<Observation>,
    logs: usize,
    identity: IdentityRow,
    campaign: CampaignRow,
    orchestrator_event: OrchestratorEventRow,
    topology: String,
    mutation: MutationRow,
}

fn observation(attacker: &str, primitive: &str, value: Value, ts: f64) -> Observation {
    Observation {
        id: uuid::Uuid::new_v4().simple().to_string(),
        identity_ref: None,
        primitive: primitive.to_owned(),
        value,
        confidence: 0.75,
        window_start_ts: ts - 60.0,
        window_end_ts: ts,
        source: "sniffer".to_owned(),
        evidence_ref: "pcap:1".to_owned(),
        envelope_v: 1,
        ts,
        attacker_uuid: attacker.to_owned(),
    }
}

/// A DECNET datetime in whole seconds (MySQL's `DATETIME` keeps no
/// fraction, so the snapshot renders it as written on both engines).
fn time(text: &str) -> DbTime {
    DbTime::parse(text).expect("a DECNET datetime")
}

fn user(uuid: &str, username: &str) -> User {
    User {
        uuid: uuid.to_owned(),
        username: username.to_owned(),
        password_hash: "$2b$12$not-a-real-hash".into(),
        role: "viewer".into(),
        must_change_password: false,
        tokens_valid_from: None,
    }
}

/// Two users, an attacker with three observations over two primitives,
/// three log lines, an identity, a campaign, an orchestrator event and a
/// topology with a pending mutation, written as DECNET's services write
/// them (through decnet-repo's `testing` writers).
async fn seed(writer: Arc<dyn RepositoryWriter>) -> Seeded {
    let user_uuid = uuid::Uuid::new_v4().to_string();
    let second_user = uuid::Uuid::new_v4().to_string();
    writer
        .create_user(&user(&user_uuid, "analyst"))
        .await
        .expect("user");
    writer
        .create_user(&user(&second_user, "analyst-2"))
        .await
        .expect("user");
    let attacker = uuid::Uuid::new_v4().to_string();
    writer
        .upsert_attacker(&Attacker {
            uuid: attacker.clone(),
            ip: "203.0.113.7".into(),
            identity_id: None,
        })
        .await
        .expect("attacker");
    // Whole thousands of seconds: exact in MySQL's single-precision `ts`
    // (read back as its shortest decimal), as in SQLite's double.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let base = (now / 1000 * 1000) as f64;
    let observations = vec![
        observation(
            &attacker,
            "ssh.client_version",
            json!("SSH-2.0-old"),
            base - 30_000.0,
        ),
        observation(
            &attacker,
            "ssh.client_version",
            json!("SSH-2.0-Go"),
            base - 10_000.0,
        ),
        observation(
            &attacker,
            "http.user_agent",
            json!({"ua": "curl/8"}),
            base - 20_000.0,
        ),
    ];
    for o in &observations {
        writer.upsert_observation(o).await.expect("observation");
    }
    let logs = 3;
    for n in 0..logs {
        let at = DbTime::from_system_time(SystemTime::now()).expect("a DECNET datetime");
        writer
            .insert_log(&LogRow {
                id: 0,
                timestamp: at,
                decky: "decky-01".into(),
                service: "ssh".into(),
                event_type: "login_attempt".into(),
                attacker_ip: "203.0.113.7".into(),
                raw_line: format!("line {n}"),
                fields: json!({"username": "root"}).to_string(),
                msg: None,
                trace_id: None,
                span_id: None,
            })
            .await
            .expect("log");
    }
    let campaign = CampaignRow {
        uuid: uuid::Uuid::new_v4().to_string(),
        schema_version: 1,
        first_seen_at: Some(time("2026-06-20 10:00:00")),
        last_seen_at: Some(time("2026-06-20 11:30:00")),
        created_at: time("2026-06-20 10:00:00"),
        updated_at: time("2026-06-20 11:30:00"),
        confidence: Some(0.5),
        identity_count: 1,
        ja3_hashes: Some("[\"771,4865\"]".into()),
        hassh_hashes: None,
        tls_cert_sha256: None,
        payload_simhashes: None,
        c2_endpoints: Some("[\"198.51.100.9:443\"]".into()),
        merged_into_uuid: None,
        notes: Some("seen from two ASNs".into()),
    };
    writer.upsert_campaign(&campaign).await.expect("campaign");
    let identity = IdentityRow {
        uuid: uuid::Uuid::new_v4().to_string(),
        schema_version: 1,
        campaign_id: Some(campaign.uuid.clone()),
        first_seen_at: Some(time("2026-06-20 10:00:00")),
        last_seen_at: Some(time("2026-06-20 11:00:00")),
        created_at: time("2026-06-20 10:00:00"),
        updated_at: time("2026-06-20 11:00:00"),
        confidence: Some(0.75),
        observation_count: 3,
        ja3_hashes: Some("[\"771,4865\"]".into()),
        hassh_hashes: Some("[\"h1\"]".into()),
        ja4h_hashes: None,
        ja4_quic_hashes: None,
        http_versions_seen: Some("[\"HTTP/1.1\"]".into()),
        tls_cert_sha256: None,
        ipv6_link_local_iids: None,
        payload_simhashes: None,
        c2_endpoints: None,
        kd_digraph_simhash: Some(HexBytes(vec![0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0x01])),
        merged_into_uuid: None,
        notes: None,
    };
    writer.upsert_identity(&identity).await.expect("identity");
    let orchestrator_event = OrchestratorEventRow {
        uuid: uuid::Uuid::new_v4().to_string(),
        ts: time("2026-06-20 12:00:00"),
        kind: "traffic".into(),
        protocol: "tcp".into(),
        action: "probe".into(),
        src_decky_uuid: None,
        dst_decky_uuid: "decky-01".into(),
        success: true,
        payload: "{\"bytes\": 10}".into(),
    };
    writer
        .insert_orchestrator_event(&orchestrator_event)
        .await
        .expect("orchestrator event");
    let topology = format!("maze-{}", uuid::Uuid::new_v4().simple());
    writer
        .upsert_topology(&topology, "net-maze", "active")
        .await
        .expect("topology");
    let mutation = MutationRow {
        id: uuid::Uuid::new_v4().to_string(),
        topology_id: topology.clone(),
        op: "add_decky".into(),
        payload: "{\"name\":\"web01\"}".into(),
        state: "pending".into(),
        requested_at: time("2026-06-20 12:00:05"),
        applied_at: None,
        reason: None,
    };
    writer.upsert_mutation(&mutation).await.expect("mutation");
    Seeded {
        user: user_uuid,
        second_user,
        attacker,
        observations,
        logs,
        identity,
        campaign,
        orchestrator_event,
        topology,
        mutation,
    }
}

/// The snapshot's observations the seeded rows call for: per primitive the
/// newest, by primitive.
fn expected_observations(seeded: &Seeded) -> Value {
    let mut latest: Vec<&Observation> = Vec::new();
    for o in &seeded.observations {
        match latest.iter_mut().find(|l| l.primitive == o.primitive) {
            Some(l) if l.ts < o.ts => *l = o,
            Some(_) => {}
            None => latest.push(o),
        }
    }
    latest.sort_by(|a, b| a.primitive.cmp(&b.primitive));
    Value::Array(
        latest
            .into_iter()
            .map(|o| {
                json!({"primitive": o.primitive, "value": o.value, "confidence": o.confidence,
                       "ts": o.ts, "source": o.source})
            })
            .collect(),
    )
}

/// Wait for `/readyz` 200 with the bus connected and the hub subscribed.
async fn wait_ready(server: &mut ChildProcess, addr: SocketAddr) -> Value {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            http::try_request(addr, "GET", "/readyz", &[]),
        )
        .await;
        if let Ok(Ok(response)) = answer
            && response.status == 200
        {
            return response.json();
        }
        if let Some(status) = server.try_exit() {
            panic!("serve exited ({status})\nstderr:\n{}", server.stderr());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready within {START_TIMEOUT:?}\nstderr:\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The whole host: the broker on the env file's socket, DECNET's API on the
/// upstream port, `serve` in `/opt/decnet`; then what the dashboard does.
async fn a_stock_decnet_host(db: Database<'_>, writer: Arc<dyn RepositoryWriter>) {
    let host = HostDir::new();
    let broker = TestBroker::start(host.socket())
        .await
        .expect("DECNET's broker on the env file's socket");
    let upstream = decnet_api().await;
    let bind = SocketAddr::from(([127, 0, 0, 1], test_support::free_port()));
    std::fs::write(
        host.opt().join(".env.local"),
        env_file(&host, upstream, &db, bind),
    )
    .expect("write .env.local");
    let seeded = seed(writer).await;

    let mut command = in_host(&host, &["serve"]);
    let mut server = ChildProcess::spawn(
        "decnet-events",
        &mut command,
        Output::Capture,
        Output::Capture,
    )
    .expect("spawn serve");
    let ready = wait_ready(&mut server, bind).await;
    assert_eq!(
        ready["bus"],
        json!({"kind": "unix", "state": "connected"}),
        "{ready}"
    );
    assert_eq!(ready["repository"], "ok", "{ready}");
    assert!(
        broker.connections().len() >= 2,
        "subscriber and publisher connections at DECNET's broker: {:?}",
        broker.connections()
    );

    // The token, as an operator mints one on the host: the secret from the
    // env file.
    let token = run_in_host(&host, &["mint-token", "--user", &seeded.user])
        .await
        .trim()
        .to_owned();
    let auth = format!("Bearer {token}");

    // REST goes to DECNET's API, forwarded.
    let rest = http::request(
        bind,
        "GET",
        "/api/v1/attackers?limit=5",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(rest.status, 200, "{}", rest.text());
    let echo = rest.json();
    assert_eq!(echo["served_by"], "decnet-api", "{echo}");
    assert_eq!(
        echo["path_and_query"], "/api/v1/attackers?limit=5",
        "{echo}"
    );
    assert_eq!(echo["authorization"], true, "{echo}");
    assert_eq!(echo["x_forwarded_for"], "127.0.0.1", "{echo}");
    assert_eq!(echo["x_forwarded_proto"], "http", "{echo}");

    // The ticket mint and every stream are ours: one mint for all six.
    let second = run_in_host(&host, &["mint-token", "--user", &seeded.second_user])
        .await
        .trim()
        .to_owned();
    let second_auth = format!("Bearer {second}");
    let ticket = move |auth: String| async move {
        let response =
            http::request(bind, "POST", http::TICKET_PATH, &[("authorization", &auth)]).await;
        assert_eq!(response.status, 200, "{}", response.text());
        response.json()["ticket"]
            .as_str()
            .expect("ticket")
            .to_owned()
    };

    // The five bus-fed streams of the analyst (the per-user cap), each:
    // the snapshot from DECNET's tables, then a live event from DECNET's
    // broker, published on the host, named as DECNET names it.
    let mut open = Vec::new();
    for kind in bus_kinds(&seeded) {
        let path = with_ticket(&kind.path, &ticket(auth.clone()).await);
        let mut stream = SseStream::open(bind, &path, &[]).await;
        assert_eq!(
            stream.expect_snapshot().await,
            kind.snapshot,
            "{}",
            kind.path
        );
        let frame = live_from_broker(&host, &server, &mut stream, kind.topic, &kind.payload).await;
        let data: Value = serde_json::from_str(&frame.data).expect("live data is JSON");
        assert_eq!(frame.event, kind.name, "{}: {frame:?}", kind.path);
        assert_eq!(data["topic"], kind.topic, "{data}");
        assert_eq!(data["payload"], kind.payload, "{data}");
        assert!(!frame.id.is_empty(), "live frames carry an id: {frame:?}");
        open.push(stream);
    }

    // `/stream`, the sixth, by the second analyst: the stats frame from
    // DECNET's `logs`.
    let path = with_ticket("/api/v1/stream", &ticket(second_auth).await);
    let mut logs = SseStream::open(bind, &path, &[]).await;
    let stats = loop {
        let event = logs.next_event(Duration::from_secs(10)).await;
        let data: Value = serde_json::from_str(&event.data).expect("JSON");
        if data["type"] == "stats" {
            break data;
        }
    };
    assert_eq!(stats["data"]["total_logs"], seeded.logs, "{stats}");
    assert_eq!(stats["data"]["unique_attackers"], 1, "{stats}");

    // All six open at once, one of each kind.
    let metrics = http::request(bind, "GET", "/metrics", &[]).await.text();
    for kind in [
        "attacker",
        "identities",
        "campaigns",
        "orchestrator",
        "topology",
    ] {
        let series = format!(r#"decnet_sse_streams_active_by_kind{{kind="{kind}"}}"#);
        assert_eq!(
            http::metric(&metrics, &series),
            Some(1.0),
            "{series}\n{metrics}"
        );
    }
    // The database reads behind them, counted per read on this engine
    // (`/stream`'s first poll may come a poll interval after its stats).
    let reads = [
        "attacker_by_uuid",
        "latest_observation_per_primitive",
        "recent_identities",
        "recent_campaigns",
        "recent_orchestrator_events",
        "topology_snapshot",
        "logs_after_id",
        "log_stats",
    ];
    http::poll_until(Duration::from_secs(10), "every read counted", || async {
        let metrics = http::request(bind, "GET", "/metrics", &[]).await.text();
        reads
            .iter()
            .all(|read| {
                let series = format!(r#"decnet_repository_queries_total{{read="{read}"}}"#);
                http::metric(&metrics, &series).is_some_and(|n| n >= 1.0)
            })
            .then_some(())
    })
    .await;
    // The analyst's sixth stream would be over DECNET's cap.
    let refused = http::request(bind, "GET", "/api/v1/stream", &[("authorization", &auth)]).await;
    assert_eq!(refused.status, 429, "{}", refused.text());

    drop((open, logs));
    let status = server.terminate(Duration::from_secs(15)).expect("SIGTERM");
    assert!(status.success(), "{status}\nstderr:\n{}", server.stderr());
}

/// One bus-fed stream of the dashboard, as the host's rows and one live
/// event of its kind make it.
struct BusKind {
    path: String,
    snapshot: Value,
    topic: &'static str,
    payload: Value,
    /// The SSE `event:` name of the live frame.
    name: &'static str,
}

/// The attacker, identities, campaigns, orchestrator and topology streams
/// of the seeded host: their snapshot, and one live event each.
fn bus_kinds(seeded: &Seeded) -> Vec<BusKind> {
    let rows = |value: Result<Value, serde_json::Error>| value.expect("rows serialize");
    vec![
        BusKind {
            path: events_path(&seeded.attacker, None),
            snapshot: json!({"attacker_uuid": seeded.attacker,
                             "observations": expected_observations(seeded)}),
            topic: "attacker.observation.tcp.syn_fingerprint",
            payload: json!({"attacker_uuid": seeded.attacker, "primitive": "tcp.syn_fingerprint",
                            "value": "64:1460:mss", "confidence": 0.9, "source": "sniffer"}),
            name: "observation",
        },
        BusKind {
            path: "/api/v1/identities/events".into(),
            snapshot: json!({"identities": rows(serde_json::to_value([&seeded.identity]))}),
            topic: "identity.formed",
            payload: json!({"identity_uuid": seeded.identity.uuid}),
            name: "formed",
        },
        BusKind {
            path: "/api/v1/campaigns/events".into(),
            snapshot: json!({"campaigns": rows(serde_json::to_value([&seeded.campaign]))}),
            topic: "campaign.identity.assigned",
            payload: json!({"campaign_uuid": seeded.campaign.uuid,
                            "identity_uuid": seeded.identity.uuid}),
            name: "identity.assigned",
        },
        BusKind {
            path: "/api/v1/orchestrator/events/stream".into(),
            snapshot: json!({"events": rows(serde_json::to_value([&seeded.orchestrator_event]))}),
            topic: "orchestrator.traffic.decky-01",
            payload: json!({"action": "probe", "dst_decky_uuid": "decky-01"}),
            name: "traffic",
        },
        BusKind {
            path: format!("/api/v1/topologies/{}/events", seeded.topology),
            snapshot: json!({"topology_id": seeded.topology, "status": "active",
                             "in_flight": rows(serde_json::to_value([&seeded.mutation]))}),
            // A decky of this topology (routed by `payload.topology_id`).
            topic: "decky.web01.service_added",
            payload: json!({"topology_id": seeded.topology, "service_name": "ssh"}),
            name: "decky.service_added",
        },
    ]
}

/// Publish `payload` on `topic` through DECNET's broker with the host's
/// `publish` subcommand until `stream` gets it (bounded): nothing
/// acknowledges a subscription at DECNET's broker, so the first may beat
/// the hub's. The frame.
async fn live_from_broker(
    host: &HostDir,
    server: &ChildProcess,
    stream: &mut SseStream,
    topic: &str,
    payload: &Value,
) -> decnet_sse::Event {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let published = run_in_host(host, &["publish", topic, &payload.to_string()]).await;
        assert_eq!(published, format!("published on {topic}\n"));
        if let Next::Item(Decoded::Event(frame)) = stream.try_next(Duration::from_secs(2)).await {
            return frame;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no live {topic} frame from DECNET's broker\nstderr:\n{}",
            server.stderr()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_stock_decnet_host_on_sqlite_with_only_its_env_file() {
    let db = decnet_repo::testing::SqliteTestDb::create(true).await;
    a_stock_decnet_host(Database::Sqlite(db.path()), db.writer()).await;
}

mod svc_mysql {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_a_stock_decnet_host_on_mysql_with_only_its_env_file() {
        let server = test_support::require_service!(test_support::Service::Mysql);
        let db = decnet_repo::testing::MysqlTestDb::create(&server).await;
        a_stock_decnet_host(Database::Mysql(db.url()), db.writer()).await;
    }
}
