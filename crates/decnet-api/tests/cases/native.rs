//! What only DECNET's own backends have: its SQLite writer holding a write
//! transaction, its MySQL server restarted, its UNIX-socket broker restarted
//! with a stream of every kind open.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use test_support::http::{ITEM_TIMEOUT, SseStream};
use test_support::servers::MariadbServer;

use crate::common::*;

const IDENTITIES: &str = "/api/v1/identities/events";
const CAMPAIGNS: &str = "/api/v1/campaigns/events";
const ORCHESTRATOR: &str = "/api/v1/orchestrator/events/stream";
const LOGS: &str = "/api/v1/stream";

/// `/readyz` answers `status` (polled, bounded).
async fn wait_readyz(server: &TestServer, status: u16, within: Duration) {
    poll_until(within, &format!("/readyz {status}"), || async {
        (server.request("GET", "/readyz", &[]).await.status == status).then_some(())
    })
    .await;
}

/// An observation row for `attacker`, as DECNET's writer inserts one.
fn insert_observation(id: &str, attacker: &str, value: &str) -> String {
    format!(
        "INSERT INTO observations (id, identity_ref, primitive, value, confidence, \
         window_start_ts, window_end_ts, source, evidence_ref, envelope_v, ts, attacker_uuid) \
         VALUES ('{id}', NULL, 'motor.held', '\"{value}\"', 0.5, 1.0, 2.0, 'decnet', \
         'evidence-{id}', 1, 2.0, '{attacker}')"
    )
}

/// DECNET's writer holds a write transaction (`BEGIN IMMEDIATE`, rows
/// inserted, uncommitted) on the SQLite file while clients open streams:
/// each gets its snapshot of the committed state at once, no `database is
/// locked` reaches anyone; after the commit a new stream sees the rows.
pub(crate) async fn sqlite_busy_writer(world: World) {
    let attacker = world.attacker(None).await;
    world
        .observation(&attacker, "b-1", "motor.seed", json!("seeded"), 1.0)
        .await;
    let server = world.server().await;
    let token = world.token(&world.user("viewer").await);
    // A user the verifier has not read yet: its first lookup (the ticket's
    // mint) runs under the held lock too.
    let fresh = world.token(&world.user("viewer").await);
    let db = world.sqlite().expect("a SQLite world");

    let held = db
        .begin_immediate(&format!(
            "{}; INSERT INTO logs (timestamp, decky, service, event_type, attacker_ip, \
             raw_line, fields) VALUES ('2026-06-20 12:00:00.000000', 'web01', 'ssh', \
             'login', '203.0.113.7', 'held', '{{}}')",
            insert_observation("b-2", &attacker, "uncommitted")
        ))
        .await;
    let started = Instant::now();
    let mut stream = server.open_with_ticket(&fresh, &attacker).await;
    let snapshot = stream.expect_snapshot().await;
    let values: Vec<&Value> = snapshot["observations"]
        .as_array()
        .expect("observations")
        .iter()
        .map(|o| &o["value"])
        .collect();
    assert_eq!(values, [&json!("seeded")], "the committed state only");
    let mut identities = server.open_path_with_bearer(&token, IDENTITIES).await;
    assert_eq!(
        identities.expect_snapshot().await,
        json!({"identities": []})
    );
    let mut logs = server.open_path_with_bearer(&token, LOGS).await;
    logs.expect_preamble().await;
    let stats = logs.next_event(ITEM_TIMEOUT).await;
    let stats: Value = serde_json::from_str(&stats.data).expect("json");
    assert_eq!(stats["type"], "stats");
    assert_eq!(stats["data"]["total_logs"], 0, "uncommitted rows unseen");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the readers waited for the writer: {took:?}"
    );
    assert_eq!(server.request("GET", "/readyz", &[]).await.status, 200);
    // Live delivery goes on meanwhile.
    let event = observation_event(&attacker, "motor.live", json!(1));
    let frame = deliver(&world.bus, &mut stream, &event).await;
    assert_live_frame(&frame, &event, "observation");
    held.commit().await;

    let mut after = server.open_with_bearer(&token, &attacker).await;
    let snapshot = after.expect_snapshot().await;
    let mut values: Vec<Value> = snapshot["observations"]
        .as_array()
        .expect("observations")
        .iter()
        .map(|o| o["value"].clone())
        .collect();
    values.sort_by_key(|v| v.to_string());
    assert_eq!(values, [json!("seeded"), json!("uncommitted")]);
    // No error frame reached the streams opened under the lock.
    let event = observation_event(&attacker, "motor.after_commit", json!(2));
    let frame = deliver(&world.bus, &mut stream, &event).await;
    assert_live_frame(&frame, &event, "observation");
}

/// Run `f` on the MariaDB fixture off the runtime's thread (it blocks).
async fn on_mariadb(
    mut server: MariadbServer,
    f: impl FnOnce(&mut MariadbServer) + Send + 'static,
) -> MariadbServer {
    tokio::task::spawn_blocking(move || {
        f(&mut server);
        server
    })
    .await
    .expect("the MariaDB fixture")
}

/// The private MariaDB killed and restarted under an open attacker stream:
/// the stream stays open and live events keep flowing throughout, `/readyz`
/// says 503 while the database is away, and after the restart new streams
/// get their snapshot again (the data survived).
pub(crate) async fn mysql_restart() {
    // The skip policy first: this test needs MariaDB's binaries.
    if test_support::service_url(test_support::Service::Mysql).is_none() {
        return;
    }
    let mariadb = tokio::task::spawn_blocking(MariadbServer::start)
        .await
        .expect("start a private MariaDB");
    let world = World::unix_mysql(&mariadb.url()).await;
    let attacker = world.attacker(None).await;
    world
        .observation(&attacker, "m-1", "motor.seed", json!("seeded"), 1.0)
        .await;
    let server = world.server().await;
    let token = world.token(&world.user("viewer").await);
    let mut stream = server.open_with_bearer(&token, &attacker).await;
    assert_eq!(
        stream.expect_snapshot().await["observations"][0]["value"],
        "seeded"
    );
    let event = observation_event(&attacker, "motor.before", json!(1));
    let frame = deliver(&world.bus, &mut stream, &event).await;
    assert_live_frame(&frame, &event, "observation");

    let mariadb = on_mariadb(mariadb, MariadbServer::kill).await;
    wait_readyz(&server, 503, Duration::from_secs(15)).await;
    // The open stream does not need the database for live events.
    for n in 0..3 {
        let event = observation_event(&attacker, "motor.while_down", json!(n));
        let frame = deliver(&world.bus, &mut stream, &event).await;
        assert_live_frame(&frame, &event, "observation");
    }

    let _mariadb = on_mariadb(mariadb, MariadbServer::restart).await;
    wait_readyz(&server, 200, Duration::from_secs(30)).await;
    let event = observation_event(&attacker, "motor.after", json!(2));
    let frame = deliver(&world.bus, &mut stream, &event).await;
    assert_live_frame(&frame, &event, "observation");
    // New streams: a fresh ticket (users read again) and the snapshot.
    let other = world.token(&world.user("viewer").await);
    let mut fresh = server.open_with_ticket(&other, &attacker).await;
    assert_eq!(
        fresh.expect_snapshot().await["observations"][0]["value"],
        "seeded"
    );
    let event = observation_event(&attacker, "motor.fresh", json!(3));
    let frame = deliver(&world.bus, &mut fresh, &event).await;
    assert_live_frame(&frame, &event, "observation");
    stream.next_event(ITEM_TIMEOUT).await;
    drop((fresh, stream, server));
    drop(world);
}

/// One stream of each of the six kinds open (five for one user, the
/// `/stream` for another: the per-user cap is 5), the broker killed and
/// restarted on the same path: `/readyz` 503 then 200, and every stream,
/// still open, gets its kind's live events again (`/stream` its new rows).
pub(crate) async fn bus_restart_with_every_kind_open(world: World) {
    let Some((broker, mut world)) = restartable(world).await else {
        return;
    };
    world
        .writer
        .upsert_topology("T1", "net-T1", "active")
        .await
        .expect("seed");
    let server = world
        .server_with(|s| s.logs.poll_every = Duration::from_millis(100))
        .await;
    let (first_user, second_user) = (world.user("viewer").await, world.user("viewer").await);
    let (first, second) = (world.token(&first_user), world.token(&second_user));
    let attacker = world.attacker(None).await;
    let topology = "/api/v1/topologies/T1/events".to_owned();
    // (path, one live event of the kind)
    let kinds: Vec<(String, Box<dyn Fn() -> decnet_bus::Event>)> = vec![
        (events_path(&attacker, None), {
            let attacker = attacker.clone();
            Box::new(move || observation_event(&attacker, "motor.kinds", json!(new_uuid())))
        }),
        (
            IDENTITIES.to_owned(),
            Box::new(|| event("identity.formed", "formed", json!({"m": new_uuid()}))),
        ),
        (
            CAMPAIGNS.to_owned(),
            Box::new(|| event("campaign.formed", "formed", json!({"m": new_uuid()}))),
        ),
        (
            ORCHESTRATOR.to_owned(),
            Box::new(|| event("orchestrator.traffic.web01", "", json!({"m": new_uuid()}))),
        ),
        (
            topology,
            Box::new(|| event("topology.T1.status", "", json!({"m": new_uuid()}))),
        ),
    ];
    let mut streams: Vec<SseStream> = Vec::new();
    for (path, _) in &kinds {
        let mut stream = server.open_path_with_bearer(&first, path).await;
        stream.expect_snapshot().await;
        streams.push(stream);
    }
    let mut logs = server.open_path_with_bearer(&second, LOGS).await;
    logs.expect_preamble().await;
    for (stream, (path, make)) in streams.iter_mut().zip(&kinds) {
        let event = make();
        let frame = deliver(&world.bus, stream, &event).await;
        assert!(is_frame_of(&frame, &event), "{path}");
    }

    let broker = broker.cycle(false, &mut world).await;
    wait_readyz(&server, 503, Duration::from_secs(15)).await;
    let _broker = broker.cycle(true, &mut world).await;
    poll_until(Duration::from_secs(20), "/readyz 200", || async {
        let readyz = server.request("GET", "/readyz", &[]).await;
        (readyz.status == 200 && readyz.json()["hub"] == "subscribed").then_some(())
    })
    .await;

    for (stream, (path, make)) in streams.iter_mut().zip(&kinds) {
        let (event, frame) =
            deliver_eventually(&world.bus, stream, Duration::from_secs(20), make).await;
        assert!(is_frame_of(&frame, &event), "{path}");
    }
    // `/stream` polls the database, not the bus: a new row arrives.
    let id = world
        .writer
        .insert_log(&decnet_repo::LogRow {
            id: 0,
            timestamp: decnet_repo::DbTime::parse("2026-06-20 12:00:00").expect("datetime"),
            decky: "web01".into(),
            service: "ssh".into(),
            event_type: "login".into(),
            attacker_ip: "203.0.113.7".into(),
            raw_line: "after the restart".into(),
            fields: "{}".into(),
            msg: None,
            trace_id: None,
            span_id: None,
        })
        .await
        .expect("insert a log");
    loop {
        let frame = logs.next_event(Duration::from_secs(10)).await;
        assert_eq!(frame.event, "message", "{frame:?}");
        let data: Value = serde_json::from_str(&frame.data).expect("json");
        if data["type"] == "logs" {
            assert_eq!(data["data"][0]["id"], id, "{data}");
            assert_eq!(frame.id, id.to_string());
            break;
        }
    }
    assert_eq!(server.app.limiter().active_for(&first_user), 5);
    assert_eq!(server.app.limiter().active_for(&second_user), 1);
}

/// The world with a broker the test may kill (its own on `unix`).
async fn restartable(world: World) -> Option<(crate::cases::PrivateBroker, World)> {
    if world.backend.restamps() {
        return Some((crate::cases::PrivateBroker::InWorld, world));
    }
    let backend = world.backend;
    drop(world);
    crate::cases::PrivateBroker::world(backend).await
}
