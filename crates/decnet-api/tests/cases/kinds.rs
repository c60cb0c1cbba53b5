//! The four other bus-fed streams of DECNET's dashboard: identities,
//! campaigns, orchestrator (firehoses: every event of their root) and
//! topology (one MazeNET topology): snapshot shapes, live event names, the
//! topology's 404, resume, and the per-user cap shared by every kind.

use std::time::Duration;

use decnet_repo::{CampaignRow, DbTime, HexBytes, IdentityRow, MutationRow, OrchestratorEventRow};
use serde_json::{Value, json};
use test_support::http::{ITEM_TIMEOUT, SseStream};

use crate::common::*;

const IDENTITIES: &str = "/api/v1/identities/events";
const CAMPAIGNS: &str = "/api/v1/campaigns/events";
const ORCHESTRATOR: &str = "/api/v1/orchestrator/events/stream";

fn topology_path(id: &str) -> String {
    format!("/api/v1/topologies/{id}/events")
}

fn time(text: &str) -> DbTime {
    DbTime::parse(text).expect("datetime")
}

fn identity_row(uuid: &str, updated: &str) -> IdentityRow {
    IdentityRow {
        uuid: uuid.into(),
        schema_version: 1,
        campaign_id: Some("c-1".into()),
        first_seen_at: Some(time("2026-06-20 11:00:00.000000")),
        last_seen_at: None,
        created_at: time("2026-06-20 10:00:00.000000"),
        updated_at: time(updated),
        confidence: Some(0.5),
        observation_count: 3,
        ja3_hashes: Some("[\"a\"]".into()),
        hassh_hashes: None,
        ja4h_hashes: None,
        ja4_quic_hashes: None,
        http_versions_seen: None,
        tls_cert_sha256: None,
        ipv6_link_local_iids: None,
        payload_simhashes: None,
        c2_endpoints: None,
        // A 64-bit simhash (MySQL's BINARY(8) pads anything shorter).
        kd_digraph_simhash: Some(HexBytes(vec![0xff, 0x00, 0x10, 0, 0, 0, 0, 0x01])),
        merged_into_uuid: None,
        notes: None,
    }
}

fn campaign_row(uuid: &str, updated: &str) -> CampaignRow {
    CampaignRow {
        uuid: uuid.into(),
        schema_version: 1,
        first_seen_at: None,
        last_seen_at: Some(time("2026-06-20 11:30:00.000000")),
        created_at: time("2026-06-20 10:00:00.000000"),
        updated_at: time(updated),
        confidence: None,
        identity_count: 2,
        ja3_hashes: None,
        hassh_hashes: Some("[\"h\"]".into()),
        tls_cert_sha256: None,
        payload_simhashes: None,
        c2_endpoints: None,
        merged_into_uuid: None,
        notes: Some("seen twice".into()),
    }
}

fn orchestrator_row(uuid: &str, ts: &str, kind: &str) -> OrchestratorEventRow {
    OrchestratorEventRow {
        uuid: uuid.into(),
        ts: time(ts),
        kind: kind.into(),
        protocol: "tcp".into(),
        action: "probe".into(),
        src_decky_uuid: None,
        dst_decky_uuid: "d1".into(),
        success: true,
        payload: "{\"bytes\": 10}".into(),
    }
}

/// The keys of a JSON object, in order.
fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect()
}

/// Publish `topic` and check both streams get it, named `name`.
async fn both_get(world: &World, streams: [&mut SseStream; 2], topic: &str, name: &str) {
    let event = event(topic, "", json!({"marker": new_uuid()}));
    publish(&world.bus, &event).await;
    for stream in streams {
        let frame = stream.next_event(ITEM_TIMEOUT).await;
        assert_live_frame(&frame, &event, name);
    }
}

pub(crate) async fn identities_stream(world: World) {
    world
        .writer
        .upsert_identity(&identity_row("i-old", "2026-06-20 12:00:00.000000"))
        .await
        .expect("seed");
    world
        .writer
        .upsert_identity(&identity_row("i-new", "2026-06-20 12:00:01.500000"))
        .await
        .expect("seed");
    let mut merged = identity_row("i-merged", "2026-06-20 13:00:00.000000");
    merged.merged_into_uuid = Some("i-new".into());
    world.writer.upsert_identity(&merged).await.expect("seed");
    let server = world.server().await;
    let token = world.token(&world.user("viewer").await);

    // Unauthenticated: 401 before anything else.
    server.request("GET", IDENTITIES, &[]).await.assert_401();

    let mut a = server.open_path_with_ticket(&token, IDENTITIES).await;
    let snapshot = a.expect_snapshot().await;
    assert_eq!(keys(&snapshot), ["identities"]);
    let stored = |mut row: IdentityRow| {
        row.updated_at = world.stored(row.updated_at);
        row
    };
    let expected = serde_json::to_value([
        stored(identity_row("i-new", "2026-06-20 12:00:01.500000")),
        stored(identity_row("i-old", "2026-06-20 12:00:00.000000")),
    ])
    .expect("rows");
    assert_eq!(
        snapshot["identities"], expected,
        "unmerged only, newest updated_at first"
    );
    let row = &snapshot["identities"][0];
    assert_eq!(
        keys(row),
        [
            "uuid",
            "schema_version",
            "campaign_id",
            "first_seen_at",
            "last_seen_at",
            "created_at",
            "updated_at",
            "confidence",
            "observation_count",
            "ja3_hashes",
            "hassh_hashes",
            "ja4h_hashes",
            "ja4_quic_hashes",
            "http_versions_seen",
            "tls_cert_sha256",
            "ipv6_link_local_iids",
            "payload_simhashes",
            "c2_endpoints",
            "kd_digraph_simhash",
            "merged_into_uuid",
            "notes",
        ],
        "every column, in DECNET's order"
    );
    let fraction = if world.backend == Backend::UnixMysql {
        ""
    } else {
        ".500000"
    };
    assert_eq!(row["updated_at"], format!("2026-06-20T12:00:01{fraction}"));
    assert_eq!(row["kd_digraph_simhash"], "ff00100000000001");
    assert_eq!(row["ja3_hashes"], "[\"a\"]", "JSON lists stay text");

    let mut b = server.open_path_with_bearer(&token, IDENTITIES).await;
    b.expect_snapshot().await;
    // A firehose: every identity.* event, named by the topic minus its root.
    for (topic, name) in [
        ("identity.formed", "formed"),
        ("identity.observation.linked", "observation.linked"),
        ("identity.merged", "merged"),
        ("identity.unmerged", "unmerged"),
        ("identity.campaign.assigned", "campaign.assigned"),
        ("identity.something.new", "something.new"),
    ] {
        both_get(&world, [&mut a, &mut b], topic, name).await;
    }
    // Other roots are not for it.
    publish(&world.bus, &event("campaign.formed", "", json!({}))).await;
    publish(&world.bus, &observation_event(&new_uuid(), "x.y", json!(1))).await;
    let last = event("identity.formed", "formed", json!({"identity_uuid": "i-x"}));
    let frame = deliver(&world.bus, &mut a, &last).await;
    assert_live_frame(&frame, &last, "formed");
    b.next_event(ITEM_TIMEOUT).await;

    // Resume: the kind-wide replay ring serves the frames missed since an id.
    let missed = event("identity.merged", "merged", json!({"winner_uuid": "i-new"}));
    deliver(&world.bus, &mut b, &missed).await;
    let mut resumed = SseStream::open(
        server.addr,
        IDENTITIES,
        &[
            ("authorization", &format!("Bearer {token}")),
            ("last-event-id", &wire_id(&last)),
        ],
    )
    .await;
    resumed.expect_preamble().await;
    let frame = resumed.next_event(ITEM_TIMEOUT).await;
    assert_live_frame(&frame, &missed, "merged");
    let text = server.metrics().await;
    assert!(
        metric(
            &text,
            r#"decnet_sse_frames_sent_total{kind="identities",event="formed"}"#
        )
        .is_some_and(|n| n >= 4.0),
        "{text}"
    );
    assert!(
        metric(
            &text,
            r#"decnet_sse_frames_sent_total{kind="identities",event="other"}"#
        )
        .is_some_and(|n| n >= 2.0),
        "unknown names are labelled other:\n{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"decnet_sse_streams_active_by_kind{kind="identities"}"#
        ),
        Some(3.0)
    );
}

pub(crate) async fn campaigns_stream(world: World) {
    world
        .writer
        .upsert_campaign(&campaign_row("c-old", "2026-06-20 12:00:00.000000"))
        .await
        .expect("seed");
    world
        .writer
        .upsert_campaign(&campaign_row("c-new", "2026-06-21 08:00:00.000000"))
        .await
        .expect("seed");
    let mut merged = campaign_row("c-merged", "2026-06-22 08:00:00.000000");
    merged.merged_into_uuid = Some("c-new".into());
    world.writer.upsert_campaign(&merged).await.expect("seed");
    let server = world.server().await;
    let token = world.token(&world.user("admin").await);
    server.request("GET", CAMPAIGNS, &[]).await.assert_401();

    let mut a = server.open_path_with_ticket(&token, CAMPAIGNS).await;
    let snapshot = a.expect_snapshot().await;
    assert_eq!(keys(&snapshot), ["campaigns"]);
    let expected = serde_json::to_value([
        campaign_row("c-new", "2026-06-21 08:00:00.000000"),
        campaign_row("c-old", "2026-06-20 12:00:00.000000"),
    ])
    .expect("rows");
    assert_eq!(snapshot["campaigns"], expected);
    assert_eq!(
        keys(&snapshot["campaigns"][0]),
        [
            "uuid",
            "schema_version",
            "first_seen_at",
            "last_seen_at",
            "created_at",
            "updated_at",
            "confidence",
            "identity_count",
            "ja3_hashes",
            "hassh_hashes",
            "tls_cert_sha256",
            "payload_simhashes",
            "c2_endpoints",
            "merged_into_uuid",
            "notes",
        ]
    );
    let mut b = server.open_path_with_bearer(&token, CAMPAIGNS).await;
    b.expect_snapshot().await;
    for (topic, name) in [
        ("campaign.formed", "formed"),
        ("campaign.identity.assigned", "identity.assigned"),
        ("campaign.merged", "merged"),
        ("campaign.unmerged", "unmerged"),
    ] {
        both_get(&world, [&mut a, &mut b], topic, name).await;
    }
    publish(&world.bus, &event("identity.formed", "", json!({}))).await;
    let last = event("campaign.formed", "", json!({"campaign_uuid": "c-x"}));
    let frame = deliver(&world.bus, &mut a, &last).await;
    assert_live_frame(&frame, &last, "formed");
}

pub(crate) async fn orchestrator_stream(world: World) {
    for (uuid, ts, kind) in [
        ("e-1", "2026-06-20 12:00:00.000000", "traffic"),
        ("e-3", "2026-06-20 12:00:02.000000", "file"),
        ("e-2", "2026-06-20 12:00:01.000000", "email"),
    ] {
        world
            .writer
            .insert_orchestrator_event(&orchestrator_row(uuid, ts, kind))
            .await
            .expect("seed");
    }
    let server = world.server().await;
    let token = world.token(&world.user("viewer").await);
    server.request("GET", ORCHESTRATOR, &[]).await.assert_401();

    let mut a = server.open_path_with_ticket(&token, ORCHESTRATOR).await;
    let snapshot = a.expect_snapshot().await;
    assert_eq!(keys(&snapshot), ["events"]);
    let expected = serde_json::to_value([
        orchestrator_row("e-3", "2026-06-20 12:00:02.000000", "file"),
        orchestrator_row("e-2", "2026-06-20 12:00:01.000000", "email"),
        orchestrator_row("e-1", "2026-06-20 12:00:00.000000", "traffic"),
    ])
    .expect("rows");
    assert_eq!(snapshot["events"], expected, "newest ts first");
    assert_eq!(
        keys(&snapshot["events"][0]),
        [
            "uuid",
            "ts",
            "kind",
            "protocol",
            "action",
            "src_decky_uuid",
            "dst_decky_uuid",
            "success",
            "payload",
        ]
    );
    assert_eq!(
        snapshot["events"][0]["payload"], "{\"bytes\": 10}",
        "the stored JSON text"
    );
    let mut b = server.open_path_with_bearer(&token, ORCHESTRATOR).await;
    b.expect_snapshot().await;
    // Named by the second token.
    for (topic, name) in [
        ("orchestrator.traffic.web01", "traffic"),
        ("orchestrator.file.web02", "file"),
        ("orchestrator.email.x.y", "email"),
        ("orchestrator.file", "file"),
    ] {
        both_get(&world, [&mut a, &mut b], topic, name).await;
    }
}

pub(crate) async fn topology_stream(world: World) {
    for id in ["T1", "T2"] {
        world
            .writer
            .upsert_topology(id, &format!("net-{id}"), "active")
            .await
            .expect("seed");
    }
    let mutations: Vec<MutationRow> = [
        ("m1", "pending", "2026-06-20 12:00:00.000000"),
        ("m2", "pending", "2026-06-20 12:00:05.000000"),
        ("m3", "applying", "2026-06-20 12:00:09.000000"),
        ("m4", "applied", "2026-06-20 12:00:10.000000"),
    ]
    .into_iter()
    .map(|(id, state, at)| MutationRow {
        id: id.into(),
        topology_id: "T1".into(),
        op: "add_decky".into(),
        payload: "{\"name\":\"web01\"}".into(),
        state: state.into(),
        requested_at: time(at),
        applied_at: None,
        reason: None,
    })
    .collect();
    for mutation in &mutations {
        world.writer.upsert_mutation(mutation).await.expect("seed");
    }
    let server = world.server().await;
    let token = world.token(&world.user("viewer").await);
    let auth = format!("Bearer {token}");

    // 401 before the 404; then `Topology not found`, a ticket spent on it.
    server
        .request("GET", &topology_path("nope"), &[])
        .await
        .assert_401();
    server
        .request("GET", &topology_path("nope"), &[("authorization", &auth)])
        .await
        .assert_detail(404, "Topology not found");
    let ticket = server.ticket(&token).await;
    server
        .request(
            "GET",
            &format!("{}?ticket={ticket}", topology_path("nope")),
            &[],
        )
        .await
        .assert_detail(404, "Topology not found");
    server
        .request(
            "GET",
            &format!("{}?ticket={ticket}", topology_path("T1")),
            &[],
        )
        .await
        .assert_401();

    let mut t1 = server
        .open_path_with_ticket(&token, &topology_path("T1"))
        .await;
    let snapshot = t1.expect_snapshot().await;
    assert_eq!(keys(&snapshot), ["topology_id", "status", "in_flight"]);
    let in_flight =
        serde_json::to_value([&mutations[1], &mutations[0], &mutations[2]]).expect("mutations");
    assert_eq!(
        snapshot,
        json!({"topology_id": "T1", "status": "active", "in_flight": in_flight}),
        "pending newest first, then applying; applied ones are not in flight"
    );
    assert_eq!(
        keys(&snapshot["in_flight"][0]),
        [
            "id",
            "topology_id",
            "op",
            "payload",
            "state",
            "requested_at",
            "applied_at",
            "reason",
        ]
    );
    let mut t2 = server
        .open_path_with_bearer(&token, &topology_path("T2"))
        .await;
    assert_eq!(
        t2.expect_snapshot().await,
        json!({"topology_id": "T2", "status": "active", "in_flight": []})
    );

    // Its own lifecycle and deckies; not the other topology's, not the
    // fleet's (no topology_id).
    let applied = event(
        "topology.T1.mutation.applied",
        "",
        json!({"mutation_id": "m2"}),
    );
    let other = event("topology.T2.status", "", json!({"state": "degraded"}));
    let decky = event(
        "decky.web01.service_added",
        "",
        json!({"topology_id": "T1", "service_name": "ssh"}),
    );
    let fleet = event(
        "decky.fleet01.service_added",
        "",
        json!({"service_name": "ftp"}),
    );
    let other_decky = event("decky.web09.state", "", json!({"topology_id": "T2"}));
    let status = event("topology.T1.status", "", json!({"state": "active"}));
    for event in [&applied, &other, &decky, &fleet, &other_decky, &status] {
        publish(&world.bus, event).await;
    }
    for (event, name) in [
        (&applied, "mutation.applied"),
        (&decky, "decky.service_added"),
        (&status, "status"),
    ] {
        let frame = t1.next_event(ITEM_TIMEOUT).await;
        assert_live_frame(&frame, event, name);
    }
    for (event, name) in [(&other, "status"), (&other_decky, "decky.state")] {
        let frame = t2.next_event(ITEM_TIMEOUT).await;
        assert_live_frame(&frame, event, name);
    }
    // Ids may contain dots: `topology.a.b.status` is for `a` and for `a.b`.
    world
        .writer
        .upsert_topology("maze.v2", "net-maze-v2", "degraded")
        .await
        .expect("seed");
    let mut dotted = server
        .open_path_with_bearer(&token, &topology_path("maze.v2"))
        .await;
    assert_eq!(dotted.expect_snapshot().await["status"], "degraded");
    let enqueued = event("topology.maze.v2.mutation.enqueued", "", json!({}));
    let frame = deliver(&world.bus, &mut dotted, &enqueued).await;
    assert_live_frame(&frame, &enqueued, "v2.mutation.enqueued");
}

pub(crate) async fn per_user_cap_is_shared_across_kinds(world: World) {
    world
        .writer
        .upsert_topology("T1", "net-T1", "active")
        .await
        .expect("seed");
    let server = world.server().await;
    assert_eq!(world.settings().max_per_user, 5, "the binary's default");
    let user = world.user("viewer").await;
    let token = world.token(&user);
    let attacker = world.attacker(None).await;
    let paths = [
        events_path(&attacker, None),
        IDENTITIES.to_owned(),
        CAMPAIGNS.to_owned(),
        ORCHESTRATOR.to_owned(),
        topology_path("T1"),
    ];
    // Five mixed streams: one of each kind, tickets and Bearer alike.
    let mut open = Vec::new();
    for (n, path) in paths.iter().enumerate() {
        let mut stream = if n % 2 == 0 {
            server.open_path_with_ticket(&token, path).await
        } else {
            server.open_path_with_bearer(&token, path).await
        };
        stream.expect_snapshot().await;
        open.push(stream);
    }
    assert_eq!(server.app.limiter().active_for(&user), 5);
    // The sixth, of any kind, is refused.
    let auth = format!("Bearer {token}");
    for path in &paths {
        server
            .request("GET", path, &[("authorization", &auth)])
            .await
            .assert_detail(429, "SSE connection limit (5) reached");
    }
    // Per user: another user still opens any kind.
    let other = world.token(&world.user("viewer").await);
    let mut stream = server.open_path_with_bearer(&other, IDENTITIES).await;
    stream.expect_snapshot().await;
    drop(stream);
    // Closing a stream of one kind frees a slot for another kind.
    drop(open.remove(0));
    poll_until(Duration::from_secs(10), "a freed slot", || async {
        (server.app.limiter().active_for(&user) == 4).then_some(())
    })
    .await;
    let mut stream = server.open_path_with_bearer(&token, CAMPAIGNS).await;
    stream.expect_snapshot().await;
    let text = server.metrics().await;
    for kind in [
        "attacker",
        "identities",
        "campaigns",
        "orchestrator",
        "topology",
    ] {
        let series =
            format!(r#"decnet_sse_streams_opened_total{{kind="{kind}",result="limited"}}"#);
        assert_eq!(metric(&text, &series), Some(1.0), "{series}:\n{text}");
    }
}
