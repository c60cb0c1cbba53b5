//! The cases, each written once and run on every backend pair by
//! `e2e.rs`. Ported from the suite that ran the binary as a subprocess;
//! the wire expectations that changed on purpose are marked `Wire change:`.

mod kinds;
mod logs;
mod native;

pub(crate) use kinds::*;
pub(crate) use logs::*;
pub(crate) use native::*;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use decnet_api::Cors;
use serde_json::{Value, json};
use test_support::http::{self, ITEM_TIMEOUT, Response, SseStream, TICKET_PATH};
use test_support::servers::{NatsServer, RedisServer};

use crate::common::*;

// ---------------------------------------------------------------------------
// 1. POST /api/v1/auth/sse-ticket
// ---------------------------------------------------------------------------

pub(crate) async fn ticket_endpoint(world: World) {
    let server = world.server().await;

    for role in ["viewer", "admin"] {
        let user = world.user(role).await;
        let response = server.post_ticket(&world.token(&user)).await;
        assert_eq!(response.status, 200, "{role}: {}", response.text());
        assert!(
            response
                .header("content-type")
                .is_some_and(|c| c.starts_with("application/json"))
        );
        let body = object(response.json());
        let mut keys: Vec<&str> = body.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["expires_in", "ticket"], "{body:?}");
        assert_eq!(body["expires_in"], 60);
        let ticket = body["ticket"].as_str().expect("ticket is a string");
        assert_eq!(ticket.len(), 43, "32 bytes base64url unpadded: {ticket}");
        assert!(
            ticket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "base64url alphabet: {ticket}"
        );
    }

    // Tickets are random.
    let viewer = world.user("viewer").await;
    let token = world.token(&viewer);
    assert_ne!(server.ticket(&token).await, server.ticket(&token).await);

    // 401: no header, garbage, wrong scheme. Wire change: the header is
    // read as DECNET's `_bearer_from_header` reads it (exactly `Bearer `,
    // case-sensitive); any other form counts as no header, which on this
    // route is the same 401.
    server.request("POST", TICKET_PATH, &[]).await.assert_401();
    let lowercase = format!("bearer {token}");
    let double_space = format!("Bearer  {token}");
    for header in [
        "Bearer garbage",
        "Bearer a.b.c",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Token abc",
        lowercase.as_str(),
        double_space.as_str(),
    ] {
        server
            .request("POST", TICKET_PATH, &[("authorization", header)])
            .await
            .assert_401();
    }

    // 401: expired.
    let now = world.clock.now_secs();
    let mut expired = world.claims(&viewer);
    expired.iat = now - 120;
    expired.exp = now - 60;
    server.post_ticket(&world.sign(&expired)).await.assert_401();
    // Expiring this very second: `now >= exp` is refused (leeway 0).
    let mut edge = world.claims(&viewer);
    edge.exp = now;
    server.post_ticket(&world.sign(&edge)).await.assert_401();

    // 401: signed with another secret.
    let foreign = decnet_auth::encode_claims(b"another-secret", &world.claims(&viewer))
        .expect("sign with another secret");
    server.post_ticket(&foreign).await.assert_401();

    // 401: unknown user.
    server
        .post_ticket(&world.token(&new_uuid()))
        .await
        .assert_401();

    // 401: revoked jti (a row in revoked_tokens), never used before.
    let (revoked, claims) = world.token_claims(&viewer, Duration::from_secs(3600));
    world.revoke(&claims).await;
    server.post_ticket(&revoked).await.assert_401();

    // 401: no jti, wrong audience, wrong typ, wrong issuer.
    let mut no_jti = serde_json::to_value(world.claims(&viewer)).expect("claims");
    no_jti.as_object_mut().expect("object").remove("jti");
    server
        .post_ticket(&world.sign_value(&no_jti))
        .await
        .assert_401();
    let mut wrong_aud = world.claims(&viewer);
    wrong_aud.aud = "somebody-else".into();
    server
        .post_ticket(&world.sign(&wrong_aud))
        .await
        .assert_401();
    let mut refresh = world.claims(&viewer);
    refresh.typ = "refresh".into();
    server.post_ticket(&world.sign(&refresh)).await.assert_401();
    let mut wrong_iss = world.claims(&viewer);
    wrong_iss.iss = "not-decnet".into();
    server
        .post_ticket(&world.sign(&wrong_iss))
        .await
        .assert_401();

    // 401: not yet valid (nbf or iat in the future; leeway is 0).
    let mut future_nbf = world.claims(&viewer);
    future_nbf.nbf = Some(now + 60);
    server
        .post_ticket(&world.sign(&future_nbf))
        .await
        .assert_401();
    let mut future_iat = world.claims(&viewer);
    future_iat.iat = now + 60;
    server
        .post_ticket(&world.sign(&future_iat))
        .await
        .assert_401();

    // tokens_valid_from: a token issued before it is revoked; after, fine.
    let moved = new_uuid();
    world
        .put_user(&user_row(
            &moved,
            "viewer",
            false,
            Some(SystemTime::now() + Duration::from_secs(5)),
        ))
        .await;
    server.post_ticket(&world.token(&moved)).await.assert_401();
    let long_ago = new_uuid();
    world
        .put_user(&user_row(
            &long_ago,
            "viewer",
            false,
            Some(SystemTime::now() - Duration::from_secs(60)),
        ))
        .await;
    assert_eq!(
        server.post_ticket(&world.token(&long_ago)).await.status,
        200
    );

    // 403: must change password (checked before the role), and a role that
    // may not stream.
    let must_change = world.user_with("viewer", true).await;
    server
        .post_ticket(&world.token(&must_change))
        .await
        .assert_detail(
            403,
            "Password change required before accessing this resource",
        );
    let auditor_must_change = world.user_with("auditor", true).await;
    server
        .post_ticket(&world.token(&auditor_must_change))
        .await
        .assert_detail(
            403,
            "Password change required before accessing this resource",
        );
    let auditor = world.user("auditor").await;
    server
        .post_ticket(&world.token(&auditor))
        .await
        .assert_detail(403, "Insufficient permissions");
}

// ---------------------------------------------------------------------------
// 2. GET events: authentication, tickets, 404, headers
// ---------------------------------------------------------------------------

#[track_caller]
fn assert_stream_headers(stream: &SseStream) {
    assert!(
        stream
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream")),
        "content-type {:?}",
        stream.header("content-type")
    );
    assert_eq!(stream.header("cache-control"), Some("no-cache"));
    assert_eq!(stream.header("x-accel-buffering"), Some("no"));
}

pub(crate) async fn events_authentication(world: World) {
    let server = world.server().await;
    let user = world.user("viewer").await;
    let token = world.token(&user);
    let attacker = world.attacker(None).await;
    let path = events_path(&attacker, None);

    // No credentials: 401, for a real and for an unknown attacker alike
    // (authentication comes before the 404).
    server.request("GET", &path, &[]).await.assert_401();
    server
        .request("GET", &events_path(&new_uuid(), None), &[])
        .await
        .assert_401();
    server
        .request("GET", &format!("{path}?ticket="), &[])
        .await
        .assert_401();
    server
        .request("GET", &format!("{path}?ticket=not-a-ticket"), &[])
        .await
        .assert_401();

    // A raw JWT in the query never authenticates.
    server
        .request("GET", &format!("{path}?token={token}"), &[])
        .await
        .assert_401();
    server
        .request("GET", &format!("{path}?access_token={token}"), &[])
        .await
        .assert_401();

    // A ticket works once.
    let ticket = server.ticket(&token).await;
    let ticket_path = events_path(&attacker, Some(&ticket));
    let mut stream = SseStream::open(server.addr, &ticket_path, &[]).await;
    assert_eq!(stream.status, 200);
    assert_stream_headers(&stream);
    let snapshot = stream.expect_snapshot().await;
    assert_eq!(
        snapshot,
        json!({"attacker_uuid": attacker, "observations": []})
    );
    drop(stream);
    server.request("GET", &ticket_path, &[]).await.assert_401();

    // A ticket spent on an unknown attacker: 404, and it is consumed.
    let ticket = server.ticket(&token).await;
    server
        .request("GET", &events_path(&new_uuid(), Some(&ticket)), &[])
        .await
        .assert_detail(404, "Attacker not found");
    server
        .request("GET", &events_path(&attacker, Some(&ticket)), &[])
        .await
        .assert_401();

    // A ticket minted for one attacker's page opens any attacker (tickets
    // are bound to the user, not the attacker), and still only once.
    let other = world.attacker(None).await;
    let ticket = server.ticket(&token).await;
    let mut stream = SseStream::open(server.addr, &events_path(&other, Some(&ticket)), &[]).await;
    stream.expect_snapshot().await;
    drop(stream);

    // Bearer header auth.
    let mut stream = server.open_with_bearer(&token, &attacker).await;
    assert_stream_headers(&stream);
    stream.expect_snapshot().await;
    drop(stream);

    // Bearer: bad token 401, unknown attacker 404, role gate 403.
    server
        .request("GET", &path, &[("authorization", "Bearer nope")])
        .await
        .assert_401();
    server
        .request("GET", &path, &[("authorization", "Basic abc")])
        .await
        .assert_401();
    let auth = format!("Bearer {token}");
    server
        .request(
            "GET",
            &events_path(&new_uuid(), None),
            &[("authorization", &auth)],
        )
        .await
        .assert_detail(404, "Attacker not found");
    let auditor = world.user("auditor").await;
    let auditor_auth = format!("Bearer {}", world.token(&auditor));
    server
        .request("GET", &path, &[("authorization", &auditor_auth)])
        .await
        .assert_detail(403, "Insufficient permissions");
    let must_change = world.user_with("viewer", true).await;
    let must_change_auth = format!("Bearer {}", world.token(&must_change));
    server
        .request("GET", &path, &[("authorization", &must_change_auth)])
        .await
        .assert_detail(
            403,
            "Password change required before accessing this resource",
        );

    // A Bearer header that fails is not rescued by a valid ticket, and the
    // ticket is not spent by the attempt (it is never looked at).
    let ticket = server.ticket(&token).await;
    let rescued = events_path(&attacker, Some(&ticket));
    server
        .request("GET", &rescued, &[("authorization", "Bearer nope")])
        .await
        .assert_401();
    let mut stream = SseStream::open(server.addr, &rescued, &[]).await;
    stream.expect_snapshot().await;
    drop(stream);

    // Wire change: a malformed Authorization header (not exactly `Bearer
    // <token>`) counts as absent, as DECNET's `_bearer_from_header` has it:
    // the stream falls back to its ticket.
    let lowercase = format!("bearer {token}");
    for header in [
        "Basic abc",
        "Bearer",
        "Bearer ",
        "Token x",
        lowercase.as_str(),
    ] {
        let ticket = server.ticket(&token).await;
        let path = events_path(&attacker, Some(&ticket));
        let mut stream = SseStream::open(server.addr, &path, &[("authorization", header)]).await;
        stream.expect_snapshot().await;
        drop(stream);
        server
            .request("GET", &path, &[("authorization", header)])
            .await
            .assert_401();
    }
}

// ---------------------------------------------------------------------------
// 2a. Two instances: tickets (Redis: shared, single-use; memory: local)
//     and one bus subscription each
// ---------------------------------------------------------------------------

pub(crate) async fn tickets_across_instances(world: World) {
    let one = world.server().await;
    let two = world.server().await;
    let token = world.token(&world.user("viewer").await);
    let attacker = world.attacker(None).await;

    let ticket = one.ticket(&token).await;
    let path = events_path(&attacker, Some(&ticket));
    if world.backend.shared_tickets() {
        // Minted on one, redeemed on two, then spent everywhere.
        let mut stream = SseStream::open(two.addr, &path, &[]).await;
        stream.expect_snapshot().await;
        one.request("GET", &path, &[]).await.assert_401();
        two.request("GET", &path, &[]).await.assert_401();
    } else {
        // Memory tickets are local to the instance that minted them.
        two.request("GET", &path, &[]).await.assert_401();
        let mut stream = SseStream::open(one.addr, &path, &[]).await;
        stream.expect_snapshot().await;
        one.request("GET", &path, &[]).await.assert_401();
    }

    // Each instance has its own subscription: both streams get the event.
    let mut on_one = one.open_with_bearer(&token, &attacker).await;
    on_one.expect_snapshot().await;
    let mut on_two = two.open_with_bearer(&token, &attacker).await;
    on_two.expect_snapshot().await;
    let event = observation_event(&attacker, "motor.scale_out", json!(1));
    let frame = deliver(&world.bus, &mut on_one, &event).await;
    assert_live_frame(&frame, &event, "observation");
    let frame = on_two.next_event(ITEM_TIMEOUT).await;
    assert_live_frame(&frame, &event, "observation");
}

// ---------------------------------------------------------------------------
// 2b. Per-user connection limit and slot release
// ---------------------------------------------------------------------------

pub(crate) async fn connection_limit(world: World) {
    // A short keepalive: a closed client is noticed at the next write.
    let server = world
        .server_with(|s| {
            s.max_per_user = 2;
            s.hub.keepalive = Duration::from_millis(100);
        })
        .await;
    let user = world.user("viewer").await;
    let token = world.token(&user);
    let attacker = world.attacker(None).await;

    let mut first = server.open_with_bearer(&token, &attacker).await;
    first.expect_snapshot().await;
    let mut second = server.open_with_ticket(&token, &attacker).await;
    second.expect_snapshot().await;
    assert_eq!(server.app.limiter().active_for(&user), 2);

    // The third is refused with a real 429, before any stream byte...
    let ticket = server.ticket(&token).await;
    let ticket_path = events_path(&attacker, Some(&ticket));
    let refused = server.request("GET", &ticket_path, &[]).await;
    refused.assert_detail(429, "SSE connection limit (2) reached");
    assert_eq!(refused.header("retry-after"), Some("5"));
    // ...and the ticket is consumed all the same.
    server.request("GET", &ticket_path, &[]).await.assert_401();
    let auth = format!("Bearer {token}");
    let bearer_path = events_path(&attacker, None);
    server
        .request("GET", &bearer_path, &[("authorization", &auth)])
        .await
        .assert_detail(429, "SSE connection limit (2) reached");

    // The limit is per user.
    let other_user = world.user("viewer").await;
    let mut other = server
        .open_with_bearer(&world.token(&other_user), &attacker)
        .await;
    other.expect_snapshot().await;
    drop(other);

    // Closing a stream frees its slot.
    drop(first);
    let closed = tokio::time::Instant::now();
    poll_until(Duration::from_secs(10), "a freed slot", || async {
        (server.app.limiter().active_for(&user) == 1).then_some(())
    })
    .await;
    eprintln!("slot freed {:?} after the client closed", closed.elapsed());
    let mut third = server.open_with_bearer(&token, &attacker).await;
    third.expect_snapshot().await;

    // Both open streams of the attacker get the same live frame.
    let event = observation_event(&attacker, "motor.input_modality", json!("keyboard"));
    let frame = deliver(&world.bus, &mut second, &event).await;
    assert_live_frame(&frame, &event, "observation");
    let frame = third.next_event(ITEM_TIMEOUT).await;
    assert_live_frame(&frame, &event, "observation");

    // DECNET_SSE_MAX_TOTAL: the instance-wide cap is a 503 with Retry-After.
    let capped = world.server_with(|s| s.max_total = Some(1)).await;
    let mut only = capped.open_with_bearer(&token, &attacker).await;
    only.expect_snapshot().await;
    let auth = format!("Bearer {}", world.token(&other_user));
    let response = capped
        .request("GET", &bearer_path, &[("authorization", &auth)])
        .await;
    response.assert_503();
    response.assert_detail(503, "SSE server at capacity");
}

// ---------------------------------------------------------------------------
// 2b'. The open rate (new in the restructure: DECNET_SSE_OPEN_RATE and
//      DECNET_SSE_OPEN_BURST, 5/s with a burst of 20 per user)
// ---------------------------------------------------------------------------

pub(crate) async fn open_rate_limit(world: World) {
    let server = world.server().await;
    let settings = world.settings();
    assert_eq!((settings.app.open_rate, settings.app.open_burst), (5.0, 20));
    let user = world.user("viewer").await;
    let auth = format!("Bearer {}", world.token(&user));
    // Every authenticated open counts, a 404 too (the rate bounds the
    // repository lookups): a burst of 20, then 429 before the lookup.
    let unknown = events_path(&new_uuid(), None);
    for _ in 0..20 {
        server
            .request("GET", &unknown, &[("authorization", &auth)])
            .await
            .assert_detail(404, "Attacker not found");
    }
    let limited = server
        .request("GET", &unknown, &[("authorization", &auth)])
        .await;
    limited.assert_detail(429, "SSE open rate limit reached");
    assert_eq!(limited.header("retry-after"), Some("5"));
    // Per user: another user is not limited.
    let other = format!("Bearer {}", world.token(&world.user("viewer").await));
    server
        .request("GET", &unknown, &[("authorization", &other)])
        .await
        .assert_detail(404, "Attacker not found");
    // Unauthenticated requests never reach the bucket.
    server.request("GET", &unknown, &[]).await.assert_401();
    // One second later (on the moved clock), five more.
    world.advance(Duration::from_secs(1)).await;
    for _ in 0..5 {
        server
            .request("GET", &unknown, &[("authorization", &auth)])
            .await
            .assert_detail(404, "Attacker not found");
    }
    server
        .request("GET", &unknown, &[("authorization", &auth)])
        .await
        .assert_detail(429, "SSE open rate limit reached");
    let text = server.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"decnet_sse_streams_opened_total{kind="attacker",result="limited"}"#
        ),
        Some(2.0),
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// 2c. Slow consumer: resync instead of silent loss; others unaffected
// ---------------------------------------------------------------------------

pub(crate) async fn slow_consumer(world: World) {
    // 200 frames of 16 KiB (3.2 MB): far more than a stalled client's path
    // holds (a 64 KiB send buffer, an 8 KiB receive window, hyper's 8 KiB
    // write buffer, a 16-frame queue). Published four at a time, each batch
    // once the reading client has the previous one.
    const EVENTS: usize = 200;
    const BATCH: usize = 4;
    let server = world.server_with(|s| s.hub.queue_max = 16).await;
    let token = world.token(&world.user("viewer").await);
    let attacker = world.attacker(None).await;
    world
        .observation(&attacker, "s-1", "motor.seed", json!("seeded"), 1.0)
        .await;
    let auth = format!("Bearer {token}");
    let mut slow = SseStream::open_small_window(
        server.addr,
        &events_path(&attacker, None),
        &[("authorization", &auth)],
        8 * 1024,
    )
    .await;
    slow.expect_snapshot().await;
    let mut fast = server.open_with_bearer(&token, &attacker).await;
    fast.expect_snapshot().await;
    let warm = observation_event(&attacker, "motor.flood", json!("warm"));
    deliver(&world.bus, &mut fast, &warm).await;
    slow.next_event(ITEM_TIMEOUT).await;

    let pad = "p".repeat(16 * 1024);
    let events: Vec<decnet_bus::Event> = (0..EVENTS)
        .map(|n| observation_event(&attacker, "motor.flood", json!({"n": n, "pad": pad})))
        .collect();
    // Every frame, in order: by payload (DECNET's broker restamps ids).
    let want: Vec<Value> = events
        .iter()
        .map(|e| Value::Object(e.payload.clone()))
        .collect();
    let (progress, mut read) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < EVENTS {
            let frame = fast.next_event(Duration::from_secs(20)).await;
            assert_eq!(
                frame.event,
                "observation",
                "the reading stream lagged after {} frames: {frame:?}",
                got.len()
            );
            let data: Value = serde_json::from_str(&frame.data).expect("json");
            got.push(data["payload"].clone());
            progress.send_replace(got.len());
        }
        got
    });
    let started = tokio::time::Instant::now();
    for (n, batch) in events.chunks(BATCH).enumerate() {
        for event in batch {
            publish(&world.bus, event).await;
        }
        let sent = (n + 1) * BATCH;
        tokio::time::timeout(Duration::from_secs(20), read.wait_for(|got| *got >= sent))
            .await
            .unwrap_or_else(|_| panic!("the reading stream did not get {sent} frames"))
            .expect("the reader is running");
    }
    let published_in = started.elapsed();
    let got = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the reading stream finished")
        .expect("the reading stream did not panic");
    assert!(got == want, "the reading stream gets every frame, in order");
    // The stalled stream did not hold the bus or the other stream back.
    assert!(
        published_in < Duration::from_secs(15),
        "publishing took {published_in:?}"
    );

    // The stalled client now reads: a resync with the count, a fresh
    // snapshot, and the newest events after it.
    let marker = observation_event(&attacker, "motor.flood", json!("marker"));
    publish(&world.bus, &marker).await;
    let mut seen = Vec::new();
    loop {
        let frame = slow.next_event(Duration::from_secs(10)).await;
        let done = frame.event == "observation" && is_frame_of(&frame, &marker);
        seen.push(frame);
        if done {
            break;
        }
    }
    let kinds: Vec<&str> = seen.iter().map(|f| f.event.as_str()).collect();
    let resync = kinds
        .iter()
        .position(|k| *k == "resync")
        .unwrap_or_else(|| panic!("no resync among {} frames: {kinds:?}", seen.len()));
    let data: Value = serde_json::from_str(&seen[resync].data).expect("json");
    assert_eq!(data["reason"], "lagged", "{data}");
    assert!(data["dropped"].as_u64().is_some_and(|n| n > 0), "{data}");
    assert_eq!(
        kinds[resync + 1],
        "snapshot",
        "a fresh snapshot follows: {kinds:?}"
    );
    let snapshot: Value = serde_json::from_str(&seen[resync + 1].data).expect("json");
    assert_eq!(snapshot["observations"][0]["value"], "seeded");
    assert!(
        seen.len() < EVENTS,
        "{} frames reached the stalled client: nothing was dropped?",
        seen.len()
    );
    assert!(server.metric("decnet_sse_resyncs_total").await >= 1.0);
    assert!(server.metric("decnet_sse_frames_dropped_total").await >= 1.0);
    eprintln!(
        "stalled client: {} frames after {EVENTS} events, resync {data}",
        seen.len()
    );
}

// ---------------------------------------------------------------------------
// 3. Body: snapshot, live frames, routing, keepalive
// ---------------------------------------------------------------------------

pub(crate) async fn stream_body(world: World) {
    let server = world.server().await;
    let user = world.user("viewer").await;
    let token = world.token(&user);
    let identity = new_uuid();
    let attacker = world.attacker(Some(&identity)).await;
    let other_attacker = world.attacker(None).await;

    // Several rows per primitive; JSON values of several types.
    // a.linguistic.locale: a tie on ts 300 goes to the highest id (o-a2).
    world
        .observation(
            &attacker,
            "o-a1",
            "a.linguistic.locale",
            json!("en-US"),
            300.0,
        )
        .await;
    let a = world
        .observation(&attacker, "o-a2", "a.linguistic.locale", json!(true), 300.0)
        .await;
    world
        .observation(&attacker, "o-a9", "a.linguistic.locale", json!(1), 250.0)
        .await;
    // b.motor.input: the higher ts wins whatever the id.
    let b = world
        .observation(
            &attacker,
            "o-b1",
            "b.motor.input",
            json!({"k": [1, 2.5, null], "s": "x", "nested": {"ok": false}}),
            200.0,
        )
        .await;
    world
        .observation(&attacker, "o-b2", "b.motor.input", json!("older"), 100.5)
        .await;
    let c = world
        .observation(&attacker, "o-c1", "c.cognitive.load", json!(42), 50.125)
        .await;
    let d = world
        .observation(
            &attacker,
            "o-d1",
            "d.linguistic.pause_ms",
            json!(3.75),
            10.0,
        )
        .await;
    let e = world
        .observation(
            &attacker,
            "o-e1",
            "e.misc.tags",
            json!(["a", 1, null]),
            11.0,
        )
        .await;
    let f = world
        .observation(&attacker, "o-f1", "f.misc.nothing", Value::Null, 12.0)
        .await;
    // Another attacker's rows never show.
    world
        .observation(
            &other_attacker,
            "o-x1",
            "a.linguistic.locale",
            json!("fr"),
            999.0,
        )
        .await;

    let mut stream = server.open_with_ticket(&token, &attacker).await;
    // `: keepalive` first, then `retry: 3000`, then the snapshot.
    let snapshot = stream.expect_snapshot().await;
    let expected: Vec<Value> = [&a, &b, &c, &d, &e, &f]
        .iter()
        .map(|o| {
            json!({
                "primitive": o.primitive,
                "value": o.value,
                "confidence": o.confidence,
                "ts": o.ts,
                "source": o.source,
            })
        })
        .collect();
    assert_eq!(
        snapshot,
        json!({"attacker_uuid": attacker, "observations": expected}),
        "latest per primitive, sorted by primitive"
    );
    for observation in snapshot["observations"].as_array().expect("array") {
        let mut keys: Vec<&str> = observation
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["confidence", "primitive", "source", "ts", "value"]);
    }

    // Live frames: id = event id, the DESIGN event names, data = envelope minus v/id.
    let cases = [
        (
            observation_event(&attacker, "motor.typing_cadence", json!({"wpm": 73})),
            "observation",
        ),
        (
            observation_event(&attacker, "a.b.c.deep", json!(["x", 2])),
            "observation",
        ),
        (
            event(
                "attacker.fingerprint_rotated",
                "fingerprint_rotated",
                json!({"attacker_uuid": attacker, "old": "fp-1", "new": "fp-2"}),
            ),
            "fingerprint.rotated",
        ),
        (
            event(
                "attacker.scored",
                "scored",
                json!({"attacker_uuid": attacker, "score": 0.91, "band": "high"}),
            ),
            "attacker.scored",
        ),
        (
            attribution_event(&identity, "state"),
            "attribution.state_changed",
        ),
        (
            event(
                "attribution.profile.multi_actor_suspected",
                "multi_actor_suspected",
                json!({"identity_uuid": identity, "actors": 2}),
            ),
            "attribution.multi_actor_suspected",
        ),
        (
            event(
                "attribution.profile.other_thing",
                "",
                json!({"identity_uuid": identity}),
            ),
            "attribution.profile.other_thing",
        ),
    ];
    for (event, name) in &cases {
        let frame = deliver(&world.bus, &mut stream, event).await;
        assert_live_frame(&frame, event, name);
    }

    // Not for this attacker: another attacker, an unknown one, no
    // attacker_uuid at all. Each is followed by one for this attacker on
    // the SAME topic (ordered), which must be the next frame.
    let topic_primitive = "motor.routing";
    let strangers = [
        observation_event(&other_attacker, topic_primitive, json!(1)),
        observation_event(&new_uuid(), topic_primitive, json!(2)),
        event(
            &format!("attacker.observation.{topic_primitive}"),
            "observation",
            json!({"primitive": topic_primitive}),
        ),
    ];
    for stranger in &strangers {
        publish(&world.bus, stranger).await;
        let mine = observation_event(&attacker, topic_primitive, json!("mine"));
        let frame = deliver(&world.bus, &mut stream, &mine).await;
        assert_live_frame(&frame, &mine, "observation");
    }
    for stranger in [
        event(
            "attacker.scored",
            "scored",
            json!({"attacker_uuid": other_attacker, "score": 0.1}),
        ),
        event("attacker.scored", "scored", json!({"attacker_uuid": 17})),
    ] {
        publish(&world.bus, &stranger).await;
        let mine = event(
            "attacker.scored",
            "scored",
            json!({"attacker_uuid": attacker}),
        );
        let frame = deliver(&world.bus, &mut stream, &mine).await;
        assert_live_frame(&frame, &mine, "attacker.scored");
    }

    // attribution.* follows this attacker's identity only.
    publish(&world.bus, &attribution_event(&new_uuid(), "someone else")).await;
    let mine = attribution_event(&identity, "mine");
    let frame = deliver(&world.bus, &mut stream, &mine).await;
    assert_live_frame(&frame, &mine, "attribution.state_changed");
    // An attacker uuid is not an identity.
    publish(&world.bus, &attribution_event(&attacker, "attacker uuid")).await;
    let mine = attribution_event(&identity, "mine again");
    deliver(&world.bus, &mut stream, &mine).await;

    // Idle: `: keepalive` every DECNET_SSE_KEEPALIVE_SECS (15 s by
    // default), on the moved clock: none early, then one per interval. On
    // a real bus, one jump only (see `World::advance`: a second one right
    // after the first would time out the broker pings the first started).
    let keepalive = world.settings().hub.keepalive;
    assert_eq!(keepalive, Duration::from_secs(15));
    stream.expect_no_event(Duration::from_millis(100)).await;
    let jumps = if world.backend == Backend::Memory {
        3
    } else {
        1
    };
    for n in 0..jumps {
        world.advance(keepalive).await;
        assert_eq!(
            stream.next_item(ITEM_TIMEOUT).await,
            Decoded::Comment("keepalive".into()),
            "keepalive {n} after {keepalive:?} idle"
        );
    }
    // And the stream is still live after them.
    let last = observation_event(&attacker, "motor.after_idle", json!(1));
    let frame = deliver(&world.bus, &mut stream, &last).await;
    assert_live_frame(&frame, &last, "observation");
}

// ---------------------------------------------------------------------------
// 3b. Identity re-keying, live
// ---------------------------------------------------------------------------

/// Publish an `identity.*` event and wait until the hub applied it.
async fn rekey(server: &TestServer, world: &World, topic: &str, payload: Value) {
    const SERIES: &str = "decnet_sse_identity_rekeys_total";
    let before = server.metric(SERIES).await;
    publish(&world.bus, &event(topic, "identity", payload)).await;
    poll_until(Duration::from_secs(10), "the re-key to apply", || async {
        (server.metric(SERIES).await > before).then_some(())
    })
    .await;
}

/// `old` identity's events no longer arrive; `new` identity's do.
async fn assert_follows(world: &World, stream: &mut SseStream, old: &str, new: &str) {
    publish(&world.bus, &attribution_event(old, "old")).await;
    let mine = attribution_event(new, "new");
    let frame = deliver(&world.bus, stream, &mine).await;
    assert_live_frame(&frame, &mine, "attribution.state_changed");
}

pub(crate) async fn identity_rekeying(world: World) {
    let server = world.server().await;
    let token = world.token(&world.user("viewer").await);
    let [i1, i2, i3, i4] = [new_uuid(), new_uuid(), new_uuid(), new_uuid()];
    let attacker = world.attacker(Some(&i1)).await;
    let mut stream = server.open_with_ticket(&token, &attacker).await;
    stream.expect_snapshot().await;

    // At open, the identity comes from the database.
    assert_follows(&world, &mut stream, &i2, &i1).await;

    // identity.formed moves the attacker to i2: i1's events stop.
    rekey(
        &server,
        &world,
        "identity.formed",
        json!({"identity_uuid": i2, "observation_uuids": [new_uuid(), attacker]}),
    )
    .await;
    assert_follows(&world, &mut stream, &i1, &i2).await;

    // identity.observation.linked moves it to i3.
    rekey(
        &server,
        &world,
        "identity.observation.linked",
        json!({"identity_uuid": i3, "observation_uuid": attacker}),
    )
    .await;
    assert_follows(&world, &mut stream, &i2, &i3).await;

    // identity.merged (loser i3 into winner i4): the loser's events stop.
    rekey(
        &server,
        &world,
        "identity.merged",
        json!({"winner_uuid": i4, "loser_uuid": i3}),
    )
    .await;
    assert_follows(&world, &mut stream, &i3, &i4).await;

    // None of the identity.* events was forwarded (each would have come
    // before the frames that followed it), and the stream is still live.
    let event = observation_event(&attacker, "motor.after_rekey", json!(1));
    let frame = deliver(&world.bus, &mut stream, &event).await;
    assert_live_frame(&frame, &event, "observation");
}

// ---------------------------------------------------------------------------
// 3c. Malformed bus messages
// ---------------------------------------------------------------------------

pub(crate) async fn malformed_bus_messages(world: World) {
    const FAILURES: &str = "decnet_bus_decode_failures_total";
    let server = world.server().await;
    let token = world.token(&world.user("viewer").await);
    let attacker = world.attacker(None).await;
    let mut stream = server.open_with_ticket(&token, &attacker).await;
    stream.expect_snapshot().await;

    let primitive = "motor.malformed";
    let topic = format!("attacker.observation.{primitive}");
    let valid = observation_event(&attacker, primitive, json!(0));
    deliver(&world.bus, &mut stream, &valid).await;
    let before = server.metric(FAILURES).await;

    let mut oversize = br#"{"payload":{"attacker_uuid":""#.to_vec();
    oversize.extend_from_slice(attacker.as_bytes());
    oversize.extend_from_slice(br#"","pad":""#);
    oversize.resize(oversize.len() + 2 * 1024 * 1024, b'x');
    oversize.extend_from_slice(br#""}}"#);
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("not JSON", b"this is { not json".to_vec()),
        ("a JSON array", b"[1, 2, 3]".to_vec()),
        ("a JSON string", br#""just a string""#.to_vec()),
        (
            "payload a list",
            format!(r#"{{"payload": ["{attacker}"]}}"#).into_bytes(),
        ),
        ("payload a string", br#"{"payload": "x"}"#.to_vec()),
        ("payload a number", br#"{"payload": 5}"#.to_vec()),
        ("~2 MiB", oversize),
    ];
    // Decode failures the service must count: every body that reaches it.
    // NATS' default max_payload is 1 MiB, so on NATS the oversize body never
    // reaches the service (the client or the broker refuses it); on Redis
    // and memory it does, and must be dropped by the service's 1 MiB limit.
    // DECNET's broker closes the connection on a body that is not a JSON
    // object or is over 1 MiB, so the unix client refuses those before
    // sending; it forwards a non-object `payload`, which the service drops.
    let nats = world.backend == Backend::PgNats;
    let unix = world.backend.restamps();
    let refusable = |what: &str| {
        (nats && what == "~2 MiB")
            || (unix
                && [
                    "empty",
                    "not JSON",
                    "a JSON array",
                    "a JSON string",
                    "~2 MiB",
                ]
                .contains(&what))
    };
    let mut expected_failures = 0.0;
    let mut refused = Vec::new();
    for (what, body) in bodies {
        let oversize = body.len() > 1024 * 1024;
        match world.bus.publish_raw(&topic, Bytes::from(body)).await {
            Ok(()) if oversize && nats => {}
            Ok(()) => expected_failures += 1.0,
            Err(error) => refused.push(format!("{what}: {error}")),
        }
    }
    assert!(
        refused
            .iter()
            .all(|r| refusable(r.split(':').next().unwrap_or_default())),
        "the bus refused {refused:?}"
    );
    if unix {
        assert_eq!(refused.len(), 5, "the unix client refused {refused:?}");
    }

    // The stream goes on: the next valid event on the same topic arrives,
    // and none of the malformed bodies became a frame.
    let (event, frame) =
        deliver_eventually(&world.bus, &mut stream, Duration::from_secs(10), || {
            observation_event(&attacker, primitive, json!("after"))
        })
        .await;
    assert_live_frame(&frame, &event, "observation");

    // Each delivered malformed body was counted.
    poll_until(
        Duration::from_secs(5),
        "decode failures to be counted",
        || async {
            let now = server.metric(FAILURES).await;
            (now >= before + expected_failures).then_some(())
        },
    )
    .await;

    // And again, to show the topic's subscription is intact.
    let again = observation_event(&attacker, primitive, json!("again"));
    let frame = deliver(&world.bus, &mut stream, &again).await;
    assert_live_frame(&frame, &again, "observation");
    // A body naming a topic of its own cannot re-route itself.
    let spoof = format!(
        r#"{{"topic": "attacker.scored", "id": "spoof-{}", "type": "scored", "payload": {{"attacker_uuid": "{attacker}"}}}}"#,
        new_uuid()
    );
    world
        .bus
        .publish_raw(&topic, Bytes::from(spoof))
        .await
        .expect("publish raw");
    let frame = stream.next_event(ITEM_TIMEOUT).await;
    assert_eq!(frame.event, "observation", "{frame:?}");
    let data: Value = serde_json::from_str(&frame.data).expect("json");
    assert_eq!(data["topic"], topic.as_str());
    // DECNET's broker builds a new envelope (its own id); the others carry
    // the body's.
    assert_eq!(frame.id.starts_with("spoof-"), !unix, "{frame:?}");
}

// ---------------------------------------------------------------------------
// 4. Resume with Last-Event-ID
// ---------------------------------------------------------------------------

pub(crate) async fn resume(world: World) {
    // A short keepalive: closed clients are noticed (and their streams
    // released) at once.
    let server = world
        .server_with(|s| {
            s.max_per_user = 10;
            s.hub.keepalive = Duration::from_millis(100);
        })
        .await;
    let token = world.token(&world.user("viewer").await);
    let identity = new_uuid();
    let attacker = world.attacker(Some(&identity)).await;
    world
        .observation(&attacker, "r-1", "motor.seed", json!("seeded"), 1.0)
        .await;
    let new_event = |n: u32| observation_event(&attacker, "motor.resume", json!(n));

    let mut first = server.open_with_ticket(&token, &attacker).await;
    first.expect_snapshot().await;
    let mut events = Vec::new();
    for n in 1..=3 {
        let event = new_event(n);
        deliver(&world.bus, &mut first, &event).await;
        events.push(event);
    }
    let last_seen = wire_id(&events[2]);

    // An observer keeps a stream open and tells us when the events
    // published while `first` is away have been routed. The ring holds
    // attribution frames routed to the attacker too.
    let mut observer = server.open_with_bearer(&token, &attacker).await;
    observer.expect_snapshot().await;
    drop(first);
    for event in [new_event(4), attribution_event(&identity, "while away")] {
        deliver(&world.bus, &mut observer, &event).await;
        events.push(event);
    }
    let names = |events: &[decnet_bus::Event]| -> Vec<&'static str> {
        events
            .iter()
            .map(|e| {
                if e.topic.starts_with("attribution.") {
                    "attribution.state_changed"
                } else {
                    "observation"
                }
            })
            .collect()
    };

    // Header: keepalive + retry, then exactly the missed frames, no snapshot.
    let ticket = server.ticket(&token).await;
    let mut resumed = SseStream::open(
        server.addr,
        &events_path(&attacker, Some(&ticket)),
        &[("last-event-id", &last_seen)],
    )
    .await;
    resumed.expect_preamble().await;
    for (missed, name) in events[3..5].iter().zip(names(&events[3..5])) {
        let frame = resumed.next_event(ITEM_TIMEOUT).await;
        assert_live_frame(&frame, missed, name);
    }
    // Then live frames (the next event is live, not a snapshot).
    let live = new_event(6);
    deliver(&world.bus, &mut resumed, &live).await;
    observer.next_event(ITEM_TIMEOUT).await;
    events.push(live);

    // Query parameter, from an older id: frames 3..=6.
    let ticket = server.ticket(&token).await;
    let mut resumed_query = SseStream::open(
        server.addr,
        &format!(
            "{}&last_event_id={}",
            events_path(&attacker, Some(&ticket)),
            wire_id(&events[1])
        ),
        &[],
    )
    .await;
    resumed_query.expect_preamble().await;
    for (missed, name) in events[2..6].iter().zip(names(&events[2..6])) {
        let frame = resumed_query.next_event(ITEM_TIMEOUT).await;
        assert_live_frame(&frame, missed, name);
    }
    let live = new_event(7);
    deliver(&world.bus, &mut resumed_query, &live).await;
    events.push(live);

    // `?lastEventId=` (DECNET's spelling), from the newest id: nothing to
    // replay, and no snapshot.
    let auth = format!("Bearer {token}");
    let mut up_to_date = SseStream::open(
        server.addr,
        &format!(
            "{}?lastEventId={}",
            events_path(&attacker, None),
            wire_id(&events[6])
        ),
        &[("authorization", &auth)],
    )
    .await;
    up_to_date.expect_preamble().await;
    let next = new_event(8);
    deliver(&world.bus, &mut up_to_date, &next).await;
    events.push(next);

    // An unknown id: the snapshot, as for a new client.
    let ticket = server.ticket(&token).await;
    let mut unknown = SseStream::open(
        server.addr,
        &events_path(&attacker, Some(&ticket)),
        &[("last-event-id", "no-such-event-id")],
    )
    .await;
    let snapshot = unknown.expect_snapshot().await;
    assert_eq!(snapshot["observations"][0]["value"], "seeded");

    // Every stream closed (a tab away): events published meanwhile are
    // still replayed to the tab that comes back (grace 300 s).
    drop((observer, resumed, resumed_query, up_to_date, unknown));
    let hub = server.app.hub().clone();
    poll_until(Duration::from_secs(10), "every stream released", || {
        let hub = hub.clone();
        async move { (hub.stats().streams_active == 0).then_some(()) }
    })
    .await;
    let encoded = server.metric("decnet_sse_frames_encoded_total").await;
    let away = [new_event(9), new_event(10)];
    for event in &away {
        publish(&world.bus, event).await;
    }
    poll_until(
        Duration::from_secs(5),
        "the events to be routed",
        || async {
            (server.metric("decnet_sse_frames_encoded_total").await >= encoded + 2.0).then_some(())
        },
    )
    .await;
    let ticket = server.ticket(&token).await;
    let mut back = SseStream::open(
        server.addr,
        &events_path(&attacker, Some(&ticket)),
        &[("last-event-id", &wire_id(&events[7]))],
    )
    .await;
    back.expect_preamble().await;
    for event in &away {
        let frame = back.next_event(ITEM_TIMEOUT).await;
        assert_live_frame(&frame, event, "observation");
    }
    drop(back);
    poll_until(Duration::from_secs(10), "the last stream released", || {
        let hub = hub.clone();
        async move { (hub.stats().streams_active == 0).then_some(()) }
    })
    .await;
    assert!(server.metric("decnet_sse_tracked_keys").await >= 1.0);

    // DECNET_SSE_REPLAY_GRACE_SECS (300 s) after the last stream closed
    // (plus a sweep, every 10 s at most), the ring is gone: the snapshot.
    let grace = world.settings().hub.replay_grace;
    assert_eq!(grace, Duration::from_secs(300));
    world.advance(grace + Duration::from_secs(11)).await;
    poll_until(Duration::from_secs(10), "the ring to expire", || async {
        (server.metric("decnet_sse_tracked_keys").await == 0.0).then_some(())
    })
    .await;
    let mut late = SseStream::open(
        server.addr,
        &events_path(&attacker, None),
        &[
            ("authorization", &auth),
            ("last-event-id", &wire_id(&away[1])),
        ],
    )
    .await;
    late.expect_snapshot().await;
}

// ---------------------------------------------------------------------------
// 5. Repository unreachable: 503 + Retry-After, never 401/404
// ---------------------------------------------------------------------------

pub(crate) async fn repository_unavailable(backend: Backend) {
    let Some(world) = World::unreachable_repository(backend).await else {
        return;
    };
    let server = world.start(world.settings(), world.repository()).await;
    server.wait_connected().await;
    let healthz = server.request("GET", "/healthz", &[]).await;
    assert_eq!(
        (healthz.status, healthz.json()),
        (200, json!({"status": "ok"}))
    );
    // /readyz: 503, naming each component (the bus is connected, so only
    // the repository is at fault).
    let readyz = server.request("GET", "/readyz", &[]).await;
    assert_eq!(readyz.status, 503, "{}", readyz.text());
    assert_eq!(
        readyz.json(),
        json!({
            "status": "not ready",
            "bus": {"kind": backend.bus_kind(), "state": "connected"},
            "repository": "unavailable",
            "hub": "subscribed",
        })
    );

    // A well-signed token for a user nobody can look up.
    let token = world.token(&new_uuid());
    let started = tokio::time::Instant::now();
    let response = server.post_ticket(&token).await;
    response.assert_503();
    response.assert_detail(503, "Service temporarily unavailable");
    let auth = format!("Bearer {token}");
    for attacker in [new_uuid(), new_uuid()] {
        server
            .request(
                "GET",
                &events_path(&attacker, None),
                &[("authorization", &auth)],
            )
            .await
            .assert_503();
    }
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "503s took {:?}",
        started.elapsed()
    );
    let metrics = server.metrics().await;
    assert!(
        metric(
            &metrics,
            r#"decnet_sse_streams_opened_total{kind="attacker",result="unavailable"}"#
        )
        .is_some_and(|n| n >= 2.0),
        "{metrics}"
    );
    // Still alive.
    assert_eq!(server.request("GET", "/healthz", &[]).await.status, 200);
}

// ---------------------------------------------------------------------------
// 6. Ops: metrics, 404/405/413, CORS, health, the access log
// ---------------------------------------------------------------------------

pub(crate) async fn ops_endpoints(world: World) {
    let (logs, _logging) = LogCapture::start();
    let server = world
        .server_with(|s| s.app.cors = Cors::new(vec!["http://dash.example".to_owned()]))
        .await;

    // Health and readiness.
    let healthz = server.request("GET", "/healthz", &[]).await;
    assert_eq!(
        (healthz.status, healthz.json()),
        (200, json!({"status": "ok"}))
    );
    let readyz = server.request("GET", "/readyz", &[]).await;
    assert_eq!(readyz.status, 200);
    assert_eq!(
        readyz.json(),
        json!({
            "status": "ready",
            "bus": {"kind": world.backend.bus_kind(), "state": "connected"},
            "repository": "ok",
            "hub": "subscribed",
        })
    );

    // Metrics: Prometheus text.
    let response = server.request("GET", "/metrics", &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = response.text();
    assert!(
        text.contains("# TYPE decnet_sse_streams_active gauge"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    assert_eq!(metric(&text, "decnet_bus_connected"), Some(1.0), "{text}");

    let user = world.user("viewer").await;
    let token = world.token(&user);
    let attacker = world.attacker(None).await;
    server
        .request("GET", &events_path(&attacker, None), &[])
        .await
        .assert_401();
    let mut stream = server.open_with_ticket(&token, &attacker).await;
    stream.expect_snapshot().await;
    let event = observation_event(&attacker, "motor.metrics", json!(1));
    deliver(&world.bus, &mut stream, &event).await;
    let text = server.metrics().await;
    // Wire change: streams and frames are labelled by kind, and
    // `decnet_sse_tracked_attackers` became `decnet_sse_tracked_keys`.
    for (series, at_least) in [
        ("decnet_sse_streams_active", 1.0),
        (r#"decnet_sse_streams_active_by_kind{kind="attacker"}"#, 1.0),
        ("decnet_sse_connection_slots_used", 1.0),
        ("decnet_sse_tracked_keys", 1.0),
        (
            r#"decnet_sse_streams_opened_total{kind="attacker",result="ok"}"#,
            1.0,
        ),
        (
            r#"decnet_sse_streams_opened_total{kind="attacker",result="unauthorized"}"#,
            1.0,
        ),
        (
            r#"decnet_sse_frames_sent_total{kind="attacker",event="observation"}"#,
            1.0,
        ),
        ("decnet_sse_frames_encoded_total", 1.0),
        (r#"decnet_tickets_redeemed_total{result="ok"}"#, 1.0),
        ("decnet_tickets_minted_total", 1.0),
        ("decnet_hub_events_received_total", 1.0),
        ("decnet_bus_events_received_total", 1.0),
    ] {
        assert!(
            metric(&text, series).is_some_and(|n| n >= at_least),
            "{series} >= {at_least}:\n{text}"
        );
    }
    for series in [
        r#"decnet_sse_streams_active_by_kind{kind="identities"}"#,
        r#"decnet_sse_streams_active_by_kind{kind="topology"}"#,
        "decnet_sse_frames_dropped_total",
        "decnet_sse_resyncs_total",
        "decnet_sse_sessions_expired_total",
    ] {
        assert_eq!(metric(&text, series), Some(0.0), "{series}:\n{text}");
    }
    if world.backend == Backend::Memory {
        // (A shared bus carries other tests' malformed bodies too.)
        assert_eq!(
            metric(&text, "decnet_bus_decode_failures_total"),
            Some(0.0),
            "{text}"
        );
    }
    assert!(
        !text.contains("decnet_sse_tracked_attackers"),
        "the old name is gone:\n{text}"
    );
    assert!(
        text.contains(
            r#"decnet_http_request_duration_seconds_count{route="/api/v1/attackers/{attacker_uuid}/events",status="200"}"#
        ),
        "request latency by route template:\n{text}"
    );
    // DECNET's broker only carries JSON objects (its client refuses the
    // rest): there a non-object payload is what the service cannot decode.
    let undecodable: &'static [u8] = if world.backend.restamps() {
        br#"{"type": "x", "payload": ["not an object"]}"#
    } else {
        b"{oops"
    };
    world
        .bus
        .publish_raw(
            "attacker.observation.motor.metrics",
            Bytes::from_static(undecodable),
        )
        .await
        .expect("publish raw");
    poll_until(
        Duration::from_secs(5),
        "a counted decode failure",
        || async { (server.metric("decnet_bus_decode_failures_total").await >= 1.0).then_some(()) },
    )
    .await;

    // Unknown path, wrong method.
    for path in [
        "/nope",
        "/api/v1/attackers//events",
        "/api/v1/attackers/a/b/events",
        "/api/v1/stream/extra",
    ] {
        server
            .request("GET", path, &[])
            .await
            .assert_detail(404, "Not Found");
    }
    let response = server.request("GET", TICKET_PATH, &[]).await;
    response.assert_detail(405, "Method Not Allowed");
    assert_eq!(response.header("allow"), Some("POST"));
    let response = server
        .request("POST", &events_path(&attacker, None), &[])
        .await;
    response.assert_detail(405, "Method Not Allowed");
    assert_eq!(response.header("allow"), Some("GET"));
    // A declared body over the limit is refused before anything else.
    server
        .request(
            "POST",
            TICKET_PATH,
            &[
                ("content-length", "1048576"),
                ("authorization", &format!("Bearer {token}")),
            ],
        )
        .await
        .assert_detail(413, "Request body too large");
    // A body that is not JSON on the ticket endpoint: 415 in DECNET's
    // plain text, before authentication (its content-type middleware).
    let response = server
        .request(
            "POST",
            TICKET_PATH,
            &[("content-type", "text/plain"), ("content-length", "2")],
        )
        .await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (
            415,
            "Unsupported Media Type — Content-Type must be application/json"
        )
    );
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    // The same body typed as JSON reaches authentication.
    server
        .request(
            "POST",
            TICKET_PATH,
            &[
                ("content-type", "application/json"),
                ("content-length", "2"),
            ],
        )
        .await
        .assert_401();
    // A request head over 8 KiB (`ServeConfig::max_head_bytes`): hyper's 431, no body.
    let filler = "a".repeat(9 * 1024);
    let response = server
        .request("GET", "/healthz", &[("x-filler", &filler)])
        .await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (431, ""),
        "{:?}",
        response.headers
    );

    // CORS preflight from the dashboard's origin. Wire change: answered as
    // Starlette's CORSMiddleware does (200 `OK`, its method and header
    // lists, max-age 600), and without Access-Control-Allow-Credentials.
    let preflight = |origin: &'static str| {
        let addr = server.addr;
        async move {
            http::request(
                addr,
                "OPTIONS",
                TICKET_PATH,
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", "authorization"),
                ],
            )
            .await
        }
    };
    let assert_preflight_headers = |response: &Response| {
        assert_eq!(
            response.header("access-control-allow-methods"),
            Some("GET, POST, PUT, PATCH, DELETE, OPTIONS")
        );
        assert_eq!(
            response.header("access-control-allow-headers"),
            Some(
                "Accept, Accept-Language, Authorization, Content-Language, Content-Type, Last-Event-ID"
            )
        );
        assert_eq!(response.header("access-control-max-age"), Some("600"));
        assert_eq!(response.header("vary"), Some("Origin"));
        assert!(
            response
                .header("access-control-allow-credentials")
                .is_none(),
            "{:?}",
            response.headers
        );
    };
    let allowed = preflight("http://dash.example").await;
    assert_eq!(
        (allowed.status, allowed.text().as_str()),
        (200, "OK"),
        "{:?}",
        allowed.headers
    );
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("http://dash.example")
    );
    assert_preflight_headers(&allowed);
    let denied = preflight("http://evil.example").await;
    assert_eq!(
        (denied.status, denied.text().as_str()),
        (400, "Disallowed CORS origin")
    );
    assert!(
        denied.header("access-control-allow-origin").is_none(),
        "{:?}",
        denied.headers
    );
    assert_preflight_headers(&denied);

    // The actual request carries the header for the allowed origin only.
    let auth = format!("Bearer {token}");
    let response = server
        .request(
            "POST",
            TICKET_PATH,
            &[("authorization", &auth), ("origin", "http://dash.example")],
        )
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("http://dash.example")
    );
    assert_eq!(response.header("vary"), Some("Origin"));
    assert!(
        response
            .header("access-control-allow-credentials")
            .is_none()
    );
    let response = server
        .request(
            "POST",
            TICKET_PATH,
            &[("authorization", &auth), ("origin", "http://evil.example")],
        )
        .await;
    assert_eq!(response.status, 200);
    assert!(response.header("access-control-allow-origin").is_none());
    // Errors carry it too (a dashboard can read the 401).
    let response = server
        .request("POST", TICKET_PATH, &[("origin", "http://dash.example")])
        .await;
    response.assert_401();
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("http://dash.example")
    );

    // Access logs never contain a ticket, a JWT or the secret.
    let path = format!(
        "{}?token={token}&access_token={token}&last_event_id=visible-1",
        events_path(&attacker, None)
    );
    server.request("GET", &path, &[]).await.assert_401();
    let ticket = server.ticket(&token).await;
    let path = format!(
        "{}&last_event_id=visible-2",
        events_path(&attacker, Some(&ticket))
    );
    let mut stream = SseStream::open(server.addr, &path, &[]).await;
    stream.expect_snapshot().await;
    drop(stream);
    let log = poll_until(Duration::from_secs(5), "the access log", || async {
        let log = logs.text();
        (log.contains("visible-1") && log.contains("visible-2")).then_some(log)
    })
    .await;
    assert!(log.contains("decnet_events::access"), "{log}");
    assert!(log.contains("[redacted]"), "{log}");
    assert!(!log.contains(&token), "the JWT was logged:\n{log}");
    assert!(!log.contains(&ticket), "a ticket was logged:\n{log}");
    assert!(
        !log.contains(&world.secret),
        "the secret was logged:\n{log}"
    );
}

/// The settings `vars` give, the rest unset (the binary's reading of them).
fn settings_from(vars: &[(&str, &str)]) -> decnet_api::settings::Settings {
    decnet_api::settings::Settings::from_lookup(&|name| {
        vars.iter()
            .find(|(var, _)| *var == name)
            .map(|(_, value)| (*value).to_owned())
    })
    .unwrap_or_else(|e| panic!("settings {vars:?}: {e:?}"))
}

/// `DECNET_CORS_ORIGINS=*` with `DECNET_CORS_ALLOW_WILDCARD=true`, read as
/// the binary reads them: any origin (`null` too) is answered
/// `Access-Control-Allow-Origin: *`, preflight and stream alike, never with
/// credentials.
pub(crate) async fn cors_wildcard(world: World) {
    let cors = settings_from(&[
        ("DECNET_CORS_ORIGINS", "*"),
        ("DECNET_CORS_ALLOW_WILDCARD", "true"),
    ])
    .app
    .cors;
    let server = world.server_with(|s| s.app.cors = cors).await;
    let assert_star = |response: &::http::HeaderMap, what: &str| {
        assert_eq!(
            response
                .get("access-control-allow-origin")
                .and_then(|v| v.to_str().ok()),
            Some("*"),
            "{what}: {response:?}"
        );
        assert!(
            response.get("access-control-allow-credentials").is_none(),
            "{what}: {response:?}"
        );
    };
    for origin in ["https://anywhere.example", "null"] {
        let preflight = http::request(
            server.addr,
            "OPTIONS",
            TICKET_PATH,
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "authorization"),
            ],
        )
        .await;
        assert_eq!(
            (preflight.status, preflight.text().as_str()),
            (200, "OK"),
            "{origin}"
        );
        assert_star(&preflight.headers, origin);
    }

    let user = world.user("viewer").await;
    let token = world.token(&user);
    let attacker = world.attacker(None).await;
    let origin = ("origin", "https://anywhere.example");
    let auth = format!("Bearer {token}");
    let minted = server
        .request("POST", TICKET_PATH, &[("authorization", &auth), origin])
        .await;
    assert_eq!(minted.status, 200, "{}", minted.text());
    assert_star(&minted.headers, "the ticket");
    let ticket = minted.json()["ticket"].as_str().expect("ticket").to_owned();
    let mut stream = SseStream::open(
        server.addr,
        &events_path(&attacker, Some(&ticket)),
        &[origin],
    )
    .await;
    assert_star(&stream.headers, "the stream");
    stream.expect_snapshot().await;
    let event = observation_event(&attacker, "motor.cors_wildcard", json!(1));
    let frame = deliver(&world.bus, &mut stream, &event).await;
    assert_live_frame(&frame, &event, "observation");
}

/// The access-log lines `logs` holds for requests whose query carries
/// `probe=<marker>-<n>`: the `n`s, in order.
fn logged_probes(logs: &LogCapture, marker: &str) -> Vec<String> {
    let needle = format!("probe={marker}-");
    logs.text()
        .lines()
        .filter(|line| line.contains("decnet_events::access"))
        .filter_map(|line| {
            let (_, rest) = line.split_once(&needle)?;
            Some(
                rest.split(|c: char| !c.is_ascii_alphanumeric())
                    .next()?
                    .to_owned(),
            )
        })
        .collect()
}

/// `DECNET_ACCESS_LOG_SAMPLE`, `DECNET_ACCESS_LOG_SKIP` and
/// `DECNET_ACCESS_LOG=false`, read as the binary reads them, in the log a
/// subscriber captures: one request in N (errors always), skipped routes
/// never (errors included), nothing at all when off.
pub(crate) async fn access_log_controls(world: World) {
    let (logs, _logging) = LogCapture::start();
    let settings = settings_from(&[
        ("DECNET_ACCESS_LOG_SAMPLE", "3"),
        (
            "DECNET_ACCESS_LOG_SKIP",
            "/healthz, /api/v1/auth/sse-ticket",
        ),
    ]);
    assert_eq!(settings.app.access_log.every, 3);
    let server = world
        .server_with(|s| s.app.access_log = settings.app.access_log)
        .await;
    // Seven successes, then three errors: requests 0, 3 and 6 are the
    // sampled ones; every error is logged whatever its place.
    for n in 0..7 {
        let response = server
            .request("GET", &format!("/readyz?probe=sampled-{n}"), &[])
            .await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
    for n in 0..3 {
        server
            .request("GET", &format!("/nope?probe=error-{n}"), &[])
            .await
            .assert_detail(404, "Not Found");
    }
    // Skipped routes, an error among them: never logged.
    for n in 0..3 {
        assert_eq!(
            server
                .request("GET", &format!("/healthz?probe=skipped-{n}"), &[])
                .await
                .status,
            200
        );
    }
    server
        .request("POST", &format!("{TICKET_PATH}?probe=skipped-401"), &[])
        .await
        .assert_401();
    // The last request logged is a marker: everything before it is in.
    server
        .request("GET", "/nope?probe=fence-0", &[])
        .await
        .assert_detail(404, "Not Found");
    poll_until(Duration::from_secs(5), "the fence in the log", || async {
        (!logged_probes(&logs, "fence").is_empty()).then_some(())
    })
    .await;
    assert_eq!(
        logged_probes(&logs, "sampled"),
        ["0", "3", "6"],
        "{}",
        logs.text()
    );
    assert_eq!(
        logged_probes(&logs, "error"),
        ["0", "1", "2"],
        "{}",
        logs.text()
    );
    assert!(
        logged_probes(&logs, "skipped").is_empty(),
        "{}",
        logs.text()
    );

    // Off: nothing, errors included; the same requests on a server with
    // the default log prove the capture sees them.
    let off = settings_from(&[("DECNET_ACCESS_LOG", "false")])
        .app
        .access_log;
    assert!(!off.enabled);
    let quiet = world.server_with(|s| s.app.access_log = off).await;
    let loud = world.server().await;
    for (marker, server) in [("off", &quiet), ("on", &loud)] {
        assert_eq!(
            server
                .request("GET", &format!("/healthz?probe={marker}-ok"), &[])
                .await
                .status,
            200
        );
        server
            .request("GET", &format!("/nope?probe={marker}-error"), &[])
            .await
            .assert_detail(404, "Not Found");
    }
    poll_until(
        Duration::from_secs(5),
        "the default log's lines",
        || async { (logged_probes(&logs, "on").len() == 2).then_some(()) },
    )
    .await;
    assert_eq!(logged_probes(&logs, "on"), ["ok", "error"]);
    assert!(logged_probes(&logs, "off").is_empty(), "{}", logs.text());
}

// ---------------------------------------------------------------------------
// 7. Session expiry and revocation
// ---------------------------------------------------------------------------

pub(crate) async fn session_expiry(world: World) {
    let server = world
        .server_with(|s| s.app.ticket_ttl = Duration::from_secs(2))
        .await;
    let user = world.user("viewer").await;
    let attacker = world.attacker(None).await;
    // DECNET_SSE_TICKET_TTL: a ticket left unused past its 2 s is refused.
    let patient = world.token(&world.user("viewer").await);
    let response = server.post_ticket(&patient).await;
    assert_eq!(response.json()["expires_in"], 2, "{}", response.text());
    let stale_ticket = response.json()["ticket"]
        .as_str()
        .expect("ticket")
        .to_owned();
    let (token, claims) = world.token_claims(&user, Duration::from_secs(4));
    let mut via_ticket = server.open_with_ticket(&token, &attacker).await;
    via_ticket.expect_snapshot().await;
    let mut via_bearer = server.open_with_bearer(&token, &attacker).await;
    via_bearer.expect_snapshot().await;
    // Still live before the expiry.
    let event = observation_event(&attacker, "motor.before_expiry", json!(1));
    deliver(&world.bus, &mut via_ticket, &event).await;
    via_bearer.next_event(ITEM_TIMEOUT).await;

    // The token's 4 s pass (on the moved clock): both streams end.
    world.advance(Duration::from_secs(5)).await;
    let within = Duration::from_secs(5);
    tokio::join!(
        expect_session_expired(&mut via_ticket, within),
        expect_session_expired(&mut via_bearer, within),
    );
    assert!(
        world.clock.now_secs() >= claims.exp,
        "ended before exp {} (now {})",
        claims.exp,
        world.clock.now_secs()
    );
    assert_eq!(
        server.app.hub().stats().sessions_expired,
        2,
        "both ended by their session"
    );
    // The token is now refused outright.
    server.post_ticket(&token).await.assert_401();
    // The ticket minted before the wait has expired. Redis keeps its own
    // clock: there, wait (boundedly) until Redis has dropped the key.
    if let Some(store) = &server.redis_tickets {
        let key = store.key_of(&stale_ticket);
        let url = world.bus_url.clone().expect("redis url");
        let client = redis::Client::open(url).expect("redis url");
        let connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis");
        poll_until(Duration::from_secs(5), "Redis to expire the ticket", || {
            let key = key.clone();
            let mut connection = connection.clone();
            async move {
                let exists: i64 = redis::cmd("EXISTS")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await
                    .expect("EXISTS");
                (exists == 0).then_some(())
            }
        })
        .await;
    }
    server
        .request("GET", &events_path(&attacker, Some(&stale_ticket)), &[])
        .await
        .assert_401();
    // The memory store knows the ticket expired; Redis drops it with the
    // key's TTL, so there it is simply unknown.
    let result = if world.backend.shared_tickets() {
        "unknown"
    } else {
        "expired"
    };
    let series = format!("decnet_tickets_redeemed_total{{result=\"{result}\"}}");
    assert!(server.metric(&series).await >= 1.0, "{series}");
    assert!(server.metric("decnet_sse_sessions_expired_total").await >= 2.0);
}

pub(crate) async fn session_revocation(world: World) {
    let server = world.server().await;
    let attacker = world.attacker(None).await;
    let open = |token: String, ticket: bool| {
        let server = &server;
        let attacker = &attacker;
        async move {
            let mut stream = if ticket {
                server.open_with_ticket(&token, attacker).await
            } else {
                server.open_with_bearer(&token, attacker).await
            };
            stream.expect_snapshot().await;
            stream
        }
    };

    // One stream per way a session can be revoked (DESIGN: jti denylisted,
    // tokens_valid_from moved past iat, user deleted, role no longer
    // allowed), plus must_change_password, plus one that stays.
    let jti_user = world.user("viewer").await;
    let (jti_token, jti_claims) = world.token_claims(&jti_user, Duration::from_secs(3600));
    let mut jti_ticket = open(jti_token.clone(), true).await;
    let mut jti_bearer = open(jti_token.clone(), false).await;
    let moved_user = world.user("viewer").await;
    let mut moved = open(world.token(&moved_user), true).await;
    let deleted_user = world.user("viewer").await;
    let mut deleted = open(world.token(&deleted_user), false).await;
    let demoted_user = world.user("admin").await;
    let mut demoted = open(world.token(&demoted_user), true).await;
    let must_change_user = world.user("viewer").await;
    let mut must_change = open(world.token(&must_change_user), false).await;
    let kept_user = world.user("viewer").await;
    let mut kept = open(world.token(&kept_user), true).await;

    world.revoke(&jti_claims).await;
    world
        .put_user(&user_row(
            &moved_user,
            "viewer",
            false,
            Some(SystemTime::now() + Duration::from_secs(2)),
        ))
        .await;
    world
        .writer
        .delete_user(&deleted_user)
        .await
        .expect("delete user");
    world
        .put_user(&user_row(&demoted_user, "auditor", false, None))
        .await;
    world
        .put_user(&user_row(&must_change_user, "viewer", true, None))
        .await;

    // DESIGN: within 30 s of the revocation. The verifier caches users for
    // 10 s and streams re-check every 10 s (the binary's settings): 30 s
    // on the moved clock, then the re-checks run (real time, real I/O).
    assert_eq!(
        world.settings().hub.revalidate_every,
        decnet_api::REVALIDATE_EVERY
    );
    world.advance(decnet_api::REVOCATION_BUDGET).await;
    let within = Duration::from_secs(10);
    tokio::join!(
        expect_session_expired(&mut jti_ticket, within),
        expect_session_expired(&mut jti_bearer, within),
        expect_session_expired(&mut moved, within),
        expect_session_expired(&mut deleted, within),
        expect_session_expired(&mut demoted, within),
        expect_session_expired(&mut must_change, within),
    );
    server.post_ticket(&jti_token).await.assert_401();
    assert_eq!(
        server.metric("decnet_sse_sessions_expired_total").await,
        6.0
    );

    // The untouched session is still live.
    let event = observation_event(&attacker, "motor.after_revocation", json!(1));
    let frame = deliver(&world.bus, &mut kept, &event).await;
    assert_live_frame(&frame, &event, "observation");
}

// ---------------------------------------------------------------------------
// 8. Broker restart: the same open stream gets live events again
// ---------------------------------------------------------------------------

/// A private broker (never the shared one) that a test kills and restarts.
pub(crate) enum PrivateBroker {
    Nats(NatsServer),
    Redis(RedisServer),
    /// The world's own DECNET broker stand-in (`unix` pairs).
    InWorld,
}

impl PrivateBroker {
    /// A world on `backend` with a private broker, or `None` (skipped) when
    /// a service it needs is not configured.
    pub(crate) async fn world(backend: Backend) -> Option<(PrivateBroker, World)> {
        if backend.restamps() {
            return Some((PrivateBroker::InWorld, World::new(backend).await?));
        }
        // The skip policy first: this test needs the bus service's binary.
        test_support::service_url(match backend {
            Backend::PgRedis => test_support::Service::Redis,
            _ => test_support::Service::Nats,
        })?;
        let broker = PrivateBroker::start(backend).await;
        let world = World::with_bus(backend, Some(broker.url())).await?;
        Some((broker, world))
    }

    /// Start one (blocking work, off the runtime's thread).
    async fn start(backend: Backend) -> PrivateBroker {
        tokio::task::spawn_blocking(move || match backend {
            Backend::PgNats => PrivateBroker::Nats(NatsServer::start()),
            Backend::PgRedis => PrivateBroker::Redis(RedisServer::start()),
            other => unreachable!("{other:?}: no broker process"),
        })
        .await
        .expect("start the private broker")
    }

    fn url(&self) -> String {
        match self {
            PrivateBroker::Nats(server) => server.url(),
            PrivateBroker::Redis(server) => server.url(),
            PrivateBroker::InWorld => unreachable!("the world knows its socket"),
        }
    }

    /// Kill (`restart: false`) or restart it, off the runtime's thread.
    pub(crate) async fn cycle(self, restart: bool, world: &mut World) -> PrivateBroker {
        if let PrivateBroker::InWorld = self {
            let broker = world.broker();
            if restart {
                broker.restart().await.expect("restart the broker");
            } else {
                broker.kill().await;
            }
            return self;
        }
        tokio::task::spawn_blocking(move || {
            let mut broker = self;
            match (&mut broker, restart) {
                (PrivateBroker::Nats(server), false) => server.kill(),
                (PrivateBroker::Nats(server), true) => server.restart(),
                (PrivateBroker::Redis(server), false) => server.kill(),
                (PrivateBroker::Redis(server), true) => server.restart(),
                (PrivateBroker::InWorld, _) => {}
            }
            broker
        })
        .await
        .expect("cycle the private broker")
    }
}

pub(crate) async fn broker_restart(backend: Backend) {
    let Some((broker, mut world)) = PrivateBroker::world(backend).await else {
        return;
    };
    let server = world.server().await;

    let token = world.token(&world.user("viewer").await);
    let attacker = world.attacker(None).await;
    let mut stream = server.open_with_bearer(&token, &attacker).await;
    stream.expect_snapshot().await;
    let event = observation_event(&attacker, "motor.before_restart", json!(1));
    let frame = deliver(&world.bus, &mut stream, &event).await;
    assert_live_frame(&frame, &event, "observation");

    let broker = broker.cycle(false, &mut world).await;
    poll_until(Duration::from_secs(15), "/readyz 503", || async {
        let readyz = server.request("GET", "/readyz", &[]).await;
        (readyz.status == 503 && readyz.json()["bus"]["state"] != "connected").then_some(())
    })
    .await;
    let _broker = broker.cycle(true, &mut world).await;
    poll_until(Duration::from_secs(20), "/readyz 200", || async {
        let readyz = server.request("GET", "/readyz", &[]).await;
        (readyz.status == 200 && readyz.json()["hub"] == "subscribed").then_some(())
    })
    .await;

    // The SAME stream receives live events again.
    let (event, frame) =
        deliver_eventually(&world.bus, &mut stream, Duration::from_secs(20), || {
            observation_event(&attacker, "motor.after_restart", json!(2))
        })
        .await;
    assert_live_frame(&frame, &event, "observation");
    let (event, frame) =
        deliver_eventually(&world.bus, &mut stream, Duration::from_secs(10), || {
            scored_event(&attacker)
        })
        .await;
    assert_live_frame(&frame, &event, "attacker.scored");
    assert_eq!(server.metric("decnet_bus_connected").await, 1.0);
}

// ---------------------------------------------------------------------------
// 9. Graceful shutdown
// ---------------------------------------------------------------------------

pub(crate) async fn graceful_shutdown(world: World) {
    let mut server = world
        .server_with(|s| s.serve.shutdown_grace = Duration::from_secs(5))
        .await;
    let token = world.token(&world.user("viewer").await);
    let attacker = world.attacker(None).await;
    let mut stream = server.open_with_ticket(&token, &attacker).await;
    stream.expect_snapshot().await;
    let event = observation_event(&attacker, "motor.before_shutdown", json!(1));
    deliver(&world.bus, &mut stream, &event).await;

    let addr = server.addr;
    let (took, items) = tokio::join!(
        server.stop(Duration::from_secs(8)),
        stream.expect_eof(Duration::from_secs(8)),
    );
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    // Ended cleanly: no error frame, no event at all.
    assert!(
        items.iter().all(|item| matches!(item, Decoded::Comment(_))),
        "{items:?}"
    );
    assert!(server.app.hub().is_shut_down());
    assert_eq!(server.app.hub().stats().streams_active, 0);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
