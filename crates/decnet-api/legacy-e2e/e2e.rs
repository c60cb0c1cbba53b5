//! End-to-end tests of the `decnet-events` binary: the real process, real
//! PostgreSQL, and NATS or Redis (see `common/mod.rs` for the harness).
//!
//! Each case is written once, as an `async fn` in `cases`, and run against
//! PostgreSQL + NATS and PostgreSQL + Redis by the `matrix!` modules. Test
//! paths carry the markers of every service they need (`svc_postgres`,
//! `svc_nats`, `svc_redis`), so `--skip svc_nats` filters out exactly the
//! tests that need NATS. Without the `DECNET_TEST_*_URL` variables the service
//! tests print SKIPPED and return (and fail under `CI`).

mod common;

/// Generate one `#[tokio::test]` per case, each building its own [`common::Ctx`].
macro_rules! matrix {
    ($flavor:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(ctx) = crate::common::Ctx::new($flavor).await {
                    crate::cases::$case(ctx).await;
                }
            }
        )*
    };
}

macro_rules! all_cases {
    ($flavor:expr) => {
        matrix!(
            $flavor;
            ticket_endpoint,
            events_authentication,
            tickets_across_instances,
            connection_limit,
            slow_consumer,
            stream_body,
            identity_rekeying,
            malformed_bus_messages,
            resume,
            ops_endpoints,
            session_expiry,
            session_revocation,
            broker_restart,
            graceful_shutdown,
        );
    };
}

mod svc_postgres {
    mod svc_nats {
        all_cases!(crate::common::Flavor::Nats);
    }
    mod svc_redis {
        all_cases!(crate::common::Flavor::Redis);
    }
}

/// Repository unreachable: these need the bus, not PostgreSQL.
mod svc_nats {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repository_unavailable() {
        crate::cases::repository_unavailable(crate::common::Flavor::Nats).await;
    }
}

mod svc_redis {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repository_unavailable() {
        crate::cases::repository_unavailable(crate::common::Flavor::Redis).await;
    }
}

/// Configuration errors: no service needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_exit_64() {
    cases::config_errors().await;
}

/// The embedded default (memory bus, memory repository): no service needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_demo() {
    cases::embedded_demo().await;
}

mod cases {
    use std::time::{Duration, Instant, SystemTime};

    use bytes::Bytes;
    use decnet_sse::Decoded;
    use serde_json::{Value, json};
    use test_support::servers::{NatsServer, RedisServer};

    use decnet_repo::Repository as _;

    use crate::common::*;

    // -----------------------------------------------------------------------
    // 1. POST /api/v1/auth/sse-ticket
    // -----------------------------------------------------------------------

    pub(crate) async fn ticket_endpoint(ctx: Ctx) {
        // The schema was migrated by `decnet-events migrate`; a second run is a no-op.
        assert!(
            ctx.migrate_output.contains("applied migrations"),
            "first migrate: {}",
            ctx.migrate_output
        );
        let again = migrate(&ctx.db_url).await;
        assert!(
            again.stdout.contains("up to date"),
            "second migrate: {}",
            again.stdout
        );

        let server = ctx.start_server(&[]).await;

        for role in ["viewer", "admin"] {
            let user = ctx.user(role).await;
            let response = server.post_ticket(&ctx.token(&user)).await;
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
        let viewer = ctx.user("viewer").await;
        let token = ctx.token(&viewer);
        assert_ne!(server.ticket(&token).await, server.ticket(&token).await);

        // 401: no header, garbage, wrong scheme.
        server.request("POST", TICKET_PATH, &[]).await.assert_401();
        for header in [
            "Bearer garbage",
            "Bearer a.b.c",
            "Bearer",
            "Basic dXNlcjpwYXNz",
            "Token abc",
        ] {
            server
                .request("POST", TICKET_PATH, &[("authorization", header)])
                .await
                .assert_401();
        }

        // 401: expired.
        let mut expired = ctx.claims(&viewer);
        expired.iat = unix_now() - 120;
        expired.exp = unix_now() - 60;
        server.post_ticket(&ctx.sign(&expired)).await.assert_401();

        // 401: signed with another secret.
        let (foreign, _) =
            decnet_auth::mint_access_token(b"another-secret", &viewer, Duration::from_secs(3600))
                .expect("mint");
        server.post_ticket(&foreign).await.assert_401();

        // 401: unknown user.
        server
            .post_ticket(&ctx.token(&new_uuid()))
            .await
            .assert_401();

        // 401: revoked jti (a row in revoked_tokens), never used before.
        let (revoked, claims) = ctx.token_claims(&viewer, Duration::from_secs(3600));
        ctx.revoke(&claims).await;
        server.post_ticket(&revoked).await.assert_401();

        // 401: no jti, wrong audience, wrong typ.
        let mut no_jti = serde_json::to_value(ctx.claims(&viewer)).expect("claims");
        no_jti.as_object_mut().expect("object").remove("jti");
        server
            .post_ticket(&ctx.sign_value(&no_jti))
            .await
            .assert_401();
        let mut wrong_aud = ctx.claims(&viewer);
        wrong_aud.aud = "somebody-else".into();
        server.post_ticket(&ctx.sign(&wrong_aud)).await.assert_401();
        let mut refresh = ctx.claims(&viewer);
        refresh.typ = "refresh".into();
        server.post_ticket(&ctx.sign(&refresh)).await.assert_401();

        // 401: not yet valid (nbf or iat in the future; leeway is 0).
        let mut future_nbf = ctx.claims(&viewer);
        future_nbf.nbf = Some(unix_now() + 60);
        server
            .post_ticket(&ctx.sign(&future_nbf))
            .await
            .assert_401();
        let mut future_iat = ctx.claims(&viewer);
        future_iat.iat = unix_now() + 60;
        server
            .post_ticket(&ctx.sign(&future_iat))
            .await
            .assert_401();

        // tokens_valid_from: a token issued before it is revoked; after, fine.
        let moved = new_uuid();
        ctx.put_user(&user_row(
            &moved,
            "viewer",
            false,
            Some(SystemTime::now() + Duration::from_secs(5)),
        ))
        .await;
        server.post_ticket(&ctx.token(&moved)).await.assert_401();
        let long_ago = new_uuid();
        ctx.put_user(&user_row(
            &long_ago,
            "viewer",
            false,
            Some(SystemTime::now() - Duration::from_secs(60)),
        ))
        .await;
        assert_eq!(server.post_ticket(&ctx.token(&long_ago)).await.status, 200);

        // 403: must change password (checked before the role), and a role
        // that may not stream.
        let must_change = ctx.user_with("viewer", true).await;
        server
            .post_ticket(&ctx.token(&must_change))
            .await
            .assert_detail(
                403,
                "Password change required before accessing this resource",
            );
        let auditor_must_change = ctx.user_with("auditor", true).await;
        server
            .post_ticket(&ctx.token(&auditor_must_change))
            .await
            .assert_detail(
                403,
                "Password change required before accessing this resource",
            );
        let auditor = ctx.user("auditor").await;
        server
            .post_ticket(&ctx.token(&auditor))
            .await
            .assert_detail(403, "Insufficient permissions");
    }

    // -----------------------------------------------------------------------
    // 2. GET events: authentication, tickets, 404, headers
    // -----------------------------------------------------------------------

    fn assert_stream_headers(stream: &SseStream) {
        let header = |name: &str| {
            stream
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert!(
            header("content-type").is_some_and(|c| c.starts_with("text/event-stream")),
            "content-type {:?}",
            header("content-type")
        );
        assert_eq!(header("cache-control").as_deref(), Some("no-cache"));
        assert_eq!(header("x-accel-buffering").as_deref(), Some("no"));
    }

    pub(crate) async fn events_authentication(ctx: Ctx) {
        let server = ctx.start_server(&[]).await;
        let user = ctx.user("viewer").await;
        let token = ctx.token(&user);
        let attacker = ctx.attacker(None).await;
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
        // are bound to the user, not the attacker) - and still only once.
        let other = ctx.attacker(None).await;
        let ticket = server.ticket(&token).await;
        let mut stream =
            SseStream::open(server.addr, &events_path(&other, Some(&ticket)), &[]).await;
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
        let auditor = ctx.user("auditor").await;
        let auth = format!("Bearer {}", ctx.token(&auditor));
        server
            .request("GET", &path, &[("authorization", &auth)])
            .await
            .assert_detail(403, "Insufficient permissions");
        // A Bearer header that fails is not rescued by a valid ticket.
        let ticket = server.ticket(&token).await;
        server
            .request(
                "GET",
                &events_path(&attacker, Some(&ticket)),
                &[("authorization", "Bearer nope")],
            )
            .await
            .assert_401();
    }

    // -----------------------------------------------------------------------
    // 2a. Two instances: tickets (Redis: shared, single-use; memory: local)
    //     and one bus subscription each
    // -----------------------------------------------------------------------

    pub(crate) async fn tickets_across_instances(ctx: Ctx) {
        let one = ctx.start_server(&[]).await;
        let two = ctx.start_server(&[]).await;
        let token = ctx.token(&ctx.user("viewer").await);
        let attacker = ctx.attacker(None).await;

        let ticket = one.ticket(&token).await;
        let path = events_path(&attacker, Some(&ticket));
        match ctx.flavor {
            Flavor::Redis => {
                // Minted on one, redeemed on two, then spent everywhere.
                let mut stream = SseStream::open(two.addr, &path, &[]).await;
                stream.expect_snapshot().await;
                one.request("GET", &path, &[]).await.assert_401();
                two.request("GET", &path, &[]).await.assert_401();
            }
            Flavor::Nats => {
                // Memory tickets are local to the instance that minted them.
                two.request("GET", &path, &[]).await.assert_401();
                let mut stream = SseStream::open(one.addr, &path, &[]).await;
                stream.expect_snapshot().await;
                one.request("GET", &path, &[]).await.assert_401();
            }
        }

        // Each instance has its own subscription: both streams get the event.
        let mut on_one = one.open_with_bearer(&token, &attacker).await;
        on_one.expect_snapshot().await;
        let mut on_two = two.open_with_bearer(&token, &attacker).await;
        on_two.expect_snapshot().await;
        let event = observation_event(&attacker, "motor.scale_out", json!(1));
        let frame = deliver(&ctx.bus, &mut on_one, &event).await;
        assert_live_frame(&frame, &event, "observation");
        let frame = on_two.next_event(ITEM_TIMEOUT).await;
        assert_live_frame(&frame, &event, "observation");
    }

    // -----------------------------------------------------------------------
    // 2b. Per-user connection limit and slot release
    // -----------------------------------------------------------------------

    pub(crate) async fn connection_limit(ctx: Ctx) {
        // Keepalive 1 s: a closed client is noticed at the next write.
        let server = ctx
            .start_server(&[
                ("DECNET_SSE_MAX_PER_USER", "2"),
                ("DECNET_SSE_KEEPALIVE_SECS", "1"),
            ])
            .await;
        let user = ctx.user("viewer").await;
        let token = ctx.token(&user);
        let attacker = ctx.attacker(None).await;

        let mut first = server.open_with_bearer(&token, &attacker).await;
        first.expect_snapshot().await;
        let mut second = server.open_with_ticket(&token, &attacker).await;
        second.expect_snapshot().await;

        // The third is refused with a real 429, before any stream byte...
        let ticket = server.ticket(&token).await;
        let ticket_path = events_path(&attacker, Some(&ticket));
        server
            .request("GET", &ticket_path, &[])
            .await
            .assert_detail(429, "SSE connection limit (2) reached");
        // ...and the ticket is consumed all the same.
        server.request("GET", &ticket_path, &[]).await.assert_401();
        let auth = format!("Bearer {token}");
        let bearer_path = events_path(&attacker, None);
        server
            .request("GET", &bearer_path, &[("authorization", &auth)])
            .await
            .assert_detail(429, "SSE connection limit (2) reached");

        // The limit is per user.
        let other_user = ctx.user("viewer").await;
        let mut other = server
            .open_with_bearer(&ctx.token(&other_user), &attacker)
            .await;
        other.expect_snapshot().await;
        drop(other);

        // Closing a stream frees its slot.
        drop(first);
        let closed = Instant::now();
        let mut third = poll_until(Duration::from_secs(10), "a freed slot", || async {
            match SseStream::try_open(server.addr, &bearer_path, &[("authorization", &auth)]).await
            {
                Ok(stream) => Some(stream),
                Err(response) => {
                    response.assert_detail(429, "SSE connection limit (2) reached");
                    None
                }
            }
        })
        .await;
        eprintln!("slot freed {:?} after the client closed", closed.elapsed());
        third.expect_snapshot().await;

        // Both open streams of the attacker get the same live frame.
        let event = observation_event(&attacker, "motor.input_modality", json!("keyboard"));
        let frame = deliver(&ctx.bus, &mut second, &event).await;
        assert_live_frame(&frame, &event, "observation");
        let frame = third.next_event(ITEM_TIMEOUT).await;
        assert_live_frame(&frame, &event, "observation");

        // DECNET_SSE_MAX_TOTAL: the instance-wide cap is a 503 with Retry-After.
        let capped = ctx.start_server(&[("DECNET_SSE_MAX_TOTAL", "1")]).await;
        let mut only = capped.open_with_bearer(&token, &attacker).await;
        only.expect_snapshot().await;
        let auth = format!("Bearer {}", ctx.token(&other_user));
        let response = capped
            .request("GET", &bearer_path, &[("authorization", &auth)])
            .await;
        response.assert_503();
        response.assert_detail(503, "SSE server at capacity");
    }

    // -----------------------------------------------------------------------
    // 2c. Slow consumer: resync instead of silent loss; others unaffected
    // -----------------------------------------------------------------------

    pub(crate) async fn slow_consumer(ctx: Ctx) {
        // 320 frames of 64 KiB (20 MB): far more than a stalled client's path
        // holds (server send buffer <= 4 MB, 8 KiB receive window, a 64-frame
        // queue), paced so that a client that does read keeps up.
        const EVENTS: usize = 320;
        let server = ctx.start_server(&[("DECNET_SSE_QUEUE_MAX", "64")]).await;
        let token = ctx.token(&ctx.user("viewer").await);
        let attacker = ctx.attacker(None).await;
        ctx.observation(&attacker, "s-1", "motor.seed", json!("seeded"), 1.0)
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
        deliver(&ctx.bus, &mut fast, &warm).await;
        slow.next_event(ITEM_TIMEOUT).await;

        let pad = "p".repeat(64 * 1024);
        let events: Vec<decnet_bus::Event> = (0..EVENTS)
            .map(|n| observation_event(&attacker, "motor.flood", json!({"n": n, "pad": pad})))
            .collect();
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
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
                got.push(frame.id);
            }
            got
        });
        let started = Instant::now();
        for batch in events.chunks(4) {
            for event in batch {
                publish(&ctx.bus, event).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let published_in = started.elapsed();
        let got = tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .expect("the reading stream finished")
            .expect("the reading stream did not panic");
        assert_eq!(got, ids, "the reading stream gets every frame, in order");
        // The stalled stream did not hold the bus back (4 events / 20 ms).
        assert!(
            published_in < Duration::from_secs(10),
            "publishing took {published_in:?}"
        );

        // The stalled client now reads: a resync with the count, a fresh
        // snapshot, and the newest events after it.
        let marker = observation_event(&attacker, "motor.flood", json!("marker"));
        publish(&ctx.bus, &marker).await;
        let mut seen = Vec::new();
        loop {
            let frame = slow.next_event(Duration::from_secs(10)).await;
            let done = frame.id == marker.id && frame.event == "observation";
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

    // -----------------------------------------------------------------------
    // 3. Body: snapshot, live frames, routing, keepalive
    // -----------------------------------------------------------------------

    pub(crate) async fn stream_body(ctx: Ctx) {
        let server = ctx
            .start_server(&[("DECNET_SSE_KEEPALIVE_SECS", "1")])
            .await;
        let user = ctx.user("viewer").await;
        let token = ctx.token(&user);
        let identity = new_uuid();
        let attacker = ctx.attacker(Some(&identity)).await;
        let other_attacker = ctx.attacker(None).await;

        // Several rows per primitive; JSON values of several types.
        // a.linguistic.locale: a tie on ts 300 goes to the highest id (o-a2).
        ctx.observation(
            &attacker,
            "o-a1",
            "a.linguistic.locale",
            json!("en-US"),
            300.0,
        )
        .await;
        let a = ctx
            .observation(&attacker, "o-a2", "a.linguistic.locale", json!(true), 300.0)
            .await;
        ctx.observation(&attacker, "o-a9", "a.linguistic.locale", json!(1), 250.0)
            .await;
        // b.motor.input: the higher ts wins whatever the id.
        let b = ctx
            .observation(
                &attacker,
                "o-b1",
                "b.motor.input",
                json!({"k": [1, 2.5, null], "s": "x", "nested": {"ok": false}}),
                200.0,
            )
            .await;
        ctx.observation(&attacker, "o-b2", "b.motor.input", json!("older"), 100.5)
            .await;
        let c = ctx
            .observation(&attacker, "o-c1", "c.cognitive.load", json!(42), 50.125)
            .await;
        let d = ctx
            .observation(
                &attacker,
                "o-d1",
                "d.linguistic.pause_ms",
                json!(3.75),
                10.0,
            )
            .await;
        let e = ctx
            .observation(
                &attacker,
                "o-e1",
                "e.misc.tags",
                json!(["a", 1, null]),
                11.0,
            )
            .await;
        let f = ctx
            .observation(&attacker, "o-f1", "f.misc.nothing", Value::Null, 12.0)
            .await;
        // Another attacker's rows never show.
        ctx.observation(
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
        ];
        for (event, name) in &cases {
            let frame = deliver(&ctx.bus, &mut stream, event).await;
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
            publish(&ctx.bus, stranger).await;
            let mine = observation_event(&attacker, topic_primitive, json!("mine"));
            let frame = deliver(&ctx.bus, &mut stream, &mine).await;
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
            publish(&ctx.bus, &stranger).await;
            let mine = event(
                "attacker.scored",
                "scored",
                json!({"attacker_uuid": attacker}),
            );
            let frame = deliver(&ctx.bus, &mut stream, &mine).await;
            assert_live_frame(&frame, &mine, "attacker.scored");
        }

        // attribution.* follows this attacker's identity only.
        publish(&ctx.bus, &attribution_event(&new_uuid(), "someone else")).await;
        let mine = attribution_event(&identity, "mine");
        let frame = deliver(&ctx.bus, &mut stream, &mine).await;
        assert_live_frame(&frame, &mine, "attribution.state_changed");
        // An attacker uuid is not an identity.
        publish(&ctx.bus, &attribution_event(&attacker, "attacker uuid")).await;
        let mine = attribution_event(&identity, "mine again");
        deliver(&ctx.bus, &mut stream, &mine).await;

        // Idle: `: keepalive` about every DECNET_SSE_KEEPALIVE_SECS (1 s).
        let mut keepalives = Vec::new();
        let started = Instant::now();
        while keepalives.len() < 2 {
            match stream.next_item(Duration::from_secs(3)).await {
                Decoded::Comment(comment) => {
                    assert_eq!(comment, "keepalive");
                    keepalives.push(started.elapsed());
                }
                other => panic!("idle stream sent {other:?}"),
            }
        }
        let gap = keepalives[1] - keepalives[0];
        assert!(
            gap >= Duration::from_millis(700) && gap <= Duration::from_millis(2500),
            "keepalives {keepalives:?}"
        );
    }

    // -----------------------------------------------------------------------
    // 3b. Identity re-keying, live
    // -----------------------------------------------------------------------

    /// Publish an `identity.*` event and wait until the hub applied it.
    async fn rekey(server: &TestServer, ctx: &Ctx, topic: &str, payload: Value) {
        const SERIES: &str = "decnet_sse_identity_rekeys_total";
        let before = server.metric(SERIES).await;
        publish(&ctx.bus, &event(topic, "identity", payload)).await;
        poll_until(Duration::from_secs(10), "the re-key to apply", || async {
            (server.metric(SERIES).await > before).then_some(())
        })
        .await;
    }

    /// `old` identity's events no longer arrive; `new` identity's do.
    async fn assert_follows(ctx: &Ctx, stream: &mut SseStream, old: &str, new: &str) {
        publish(&ctx.bus, &attribution_event(old, "old")).await;
        let mine = attribution_event(new, "new");
        let frame = deliver(&ctx.bus, stream, &mine).await;
        assert_live_frame(&frame, &mine, "attribution.state_changed");
    }

    pub(crate) async fn identity_rekeying(ctx: Ctx) {
        let server = ctx.start_server(&[]).await;
        let token = ctx.token(&ctx.user("viewer").await);
        let [i1, i2, i3, i4] = [new_uuid(), new_uuid(), new_uuid(), new_uuid()];
        let attacker = ctx.attacker(Some(&i1)).await;
        let mut stream = server.open_with_ticket(&token, &attacker).await;
        stream.expect_snapshot().await;

        // At open, the identity comes from the database.
        assert_follows(&ctx, &mut stream, &i2, &i1).await;

        // identity.formed moves the attacker to i2: i1's events stop.
        rekey(
            &server,
            &ctx,
            "identity.formed",
            json!({"identity_uuid": i2, "observation_uuids": [new_uuid(), attacker]}),
        )
        .await;
        assert_follows(&ctx, &mut stream, &i1, &i2).await;

        // identity.observation.linked moves it to i3.
        rekey(
            &server,
            &ctx,
            "identity.observation.linked",
            json!({"identity_uuid": i3, "observation_uuid": attacker}),
        )
        .await;
        assert_follows(&ctx, &mut stream, &i2, &i3).await;

        // identity.merged (loser i3 into winner i4): the loser's events stop.
        rekey(
            &server,
            &ctx,
            "identity.merged",
            json!({"winner_uuid": i4, "loser_uuid": i3}),
        )
        .await;
        assert_follows(&ctx, &mut stream, &i3, &i4).await;

        // None of the identity.* events was forwarded (each would have come
        // before the frames that followed it), and the stream is still live.
        let event = observation_event(&attacker, "motor.after_rekey", json!(1));
        let frame = deliver(&ctx.bus, &mut stream, &event).await;
        assert_live_frame(&frame, &event, "observation");
    }

    // -----------------------------------------------------------------------
    // 3c. Malformed bus messages
    // -----------------------------------------------------------------------

    pub(crate) async fn malformed_bus_messages(ctx: Ctx) {
        const FAILURES: &str = "decnet_bus_decode_failures_total";
        let server = ctx.start_server(&[]).await;
        let token = ctx.token(&ctx.user("viewer").await);
        let attacker = ctx.attacker(None).await;
        let mut stream = server.open_with_ticket(&token, &attacker).await;
        stream.expect_snapshot().await;

        let primitive = "motor.malformed";
        let topic = format!("attacker.observation.{primitive}");
        let valid = observation_event(&attacker, primitive, json!(0));
        deliver(&ctx.bus, &mut stream, &valid).await;
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
        // NATS' default max_payload is 1 MiB, so on NATS the oversize body
        // never reaches the service (the client or the broker refuses it);
        // on Redis it does, and must be dropped by the service's 1 MiB limit.
        let mut expected_failures = 0.0;
        let mut refused = Vec::new();
        for (what, body) in bodies {
            let oversize = body.len() > 1024 * 1024;
            match ctx.bus.publish_raw(&topic, Bytes::from(body)).await {
                Ok(()) if oversize && ctx.flavor == Flavor::Nats => {}
                Ok(()) => expected_failures += 1.0,
                Err(error) => refused.push(format!("{what}: {error}")),
            }
        }
        match ctx.flavor {
            Flavor::Redis => assert!(refused.is_empty(), "Redis refused {refused:?}"),
            Flavor::Nats => assert!(
                refused.iter().all(|r| r.starts_with("~2 MiB")),
                "NATS refused {refused:?}"
            ),
        }

        // The stream goes on: the next valid event on the same topic arrives,
        // and none of the malformed bodies became a frame.
        let (event, frame) =
            deliver_eventually(&ctx.bus, &mut stream, Duration::from_secs(10), || {
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
        let frame = deliver(&ctx.bus, &mut stream, &again).await;
        assert_live_frame(&frame, &again, "observation");
        // A body naming a topic of its own cannot re-route itself.
        let spoof = format!(
            r#"{{"topic": "attacker.scored", "id": "spoof-{}", "type": "scored", "payload": {{"attacker_uuid": "{attacker}"}}}}"#,
            new_uuid()
        );
        ctx.bus
            .publish_raw(&topic, Bytes::from(spoof))
            .await
            .expect("publish raw");
        let frame = stream.next_event(ITEM_TIMEOUT).await;
        assert_eq!(frame.event, "observation", "{frame:?}");
        let data: Value = serde_json::from_str(&frame.data).expect("json");
        assert_eq!(data["topic"], topic.as_str());
        assert!(frame.id.starts_with("spoof-"), "{frame:?}");
    }

    // -----------------------------------------------------------------------
    // 4. Resume with Last-Event-ID
    // -----------------------------------------------------------------------

    pub(crate) async fn resume(ctx: Ctx) {
        let server = ctx.start_server(&[("DECNET_SSE_MAX_PER_USER", "10")]).await;
        let token = ctx.token(&ctx.user("viewer").await);
        let identity = new_uuid();
        let attacker = ctx.attacker(Some(&identity)).await;
        ctx.observation(&attacker, "r-1", "motor.seed", json!("seeded"), 1.0)
            .await;
        let new_event = |n: u32| observation_event(&attacker, "motor.resume", json!(n));

        let mut first = server.open_with_ticket(&token, &attacker).await;
        first.expect_snapshot().await;
        let mut events = Vec::new();
        for n in 1..=3 {
            let event = new_event(n);
            deliver(&ctx.bus, &mut first, &event).await;
            events.push(event);
        }
        let last_seen = events[2].id.clone();

        // An observer keeps a stream open and tells us when the events
        // published while `first` is away have been routed. The ring holds
        // attribution frames routed to the attacker too.
        let mut observer = server.open_with_bearer(&token, &attacker).await;
        observer.expect_snapshot().await;
        drop(first);
        for event in [new_event(4), attribution_event(&identity, "while away")] {
            deliver(&ctx.bus, &mut observer, &event).await;
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
        deliver(&ctx.bus, &mut resumed, &live).await;
        observer.next_event(ITEM_TIMEOUT).await;
        events.push(live);

        // Query parameter, from an older id: frames 3..=6.
        let ticket = server.ticket(&token).await;
        let mut resumed_query = SseStream::open(
            server.addr,
            &format!(
                "{}&last_event_id={}",
                events_path(&attacker, Some(&ticket)),
                events[1].id
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
        deliver(&ctx.bus, &mut resumed_query, &live).await;
        events.push(live);

        // Resuming from the newest id: nothing to replay, and no snapshot.
        let auth = format!("Bearer {token}");
        let mut up_to_date = SseStream::open(
            server.addr,
            &events_path(&attacker, None),
            &[("authorization", &auth), ("last-event-id", &events[6].id)],
        )
        .await;
        up_to_date.expect_preamble().await;
        let next = new_event(8);
        deliver(&ctx.bus, &mut up_to_date, &next).await;
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
        let encoded = server.metric("decnet_sse_frames_encoded_total").await;
        let away = [new_event(9), new_event(10)];
        for event in &away {
            publish(&ctx.bus, event).await;
        }
        poll_until(
            Duration::from_secs(5),
            "the events to be routed",
            || async {
                (server.metric("decnet_sse_frames_encoded_total").await >= encoded + 2.0)
                    .then_some(())
            },
        )
        .await;
        let ticket = server.ticket(&token).await;
        let mut back = SseStream::open(
            server.addr,
            &events_path(&attacker, Some(&ticket)),
            &[("last-event-id", &events[7].id)],
        )
        .await;
        back.expect_preamble().await;
        for event in &away {
            let frame = back.next_event(ITEM_TIMEOUT).await;
            assert_live_frame(&frame, event, "observation");
        }

        // DECNET_SSE_REPLAY_GRACE_SECS: after it, the ring is gone (snapshot).
        let brief = ctx
            .start_server(&[("DECNET_SSE_REPLAY_GRACE_SECS", "1")])
            .await;
        let mut stream = brief.open_with_bearer(&token, &attacker).await;
        stream.expect_snapshot().await;
        let event = new_event(11);
        deliver(&ctx.bus, &mut stream, &event).await;
        drop(stream);
        // Released, plus the 1 s grace, plus a sweep (<= 1 s).
        poll_until(Duration::from_secs(10), "the ring to expire", || async {
            (brief.metric("decnet_sse_tracked_attackers").await == 0.0).then_some(())
        })
        .await;
        let mut late = SseStream::open(
            brief.addr,
            &events_path(&attacker, None),
            &[("authorization", &auth), ("last-event-id", &event.id)],
        )
        .await;
        late.expect_snapshot().await;
    }

    // -----------------------------------------------------------------------
    // 5. Repository unreachable: 503 + Retry-After, never 401/404
    // -----------------------------------------------------------------------

    pub(crate) async fn repository_unavailable(flavor: Flavor) {
        let Some(bus_url) = test_support::service_url(flavor.service()) else {
            return;
        };
        let secret = format!("e2e-{}", new_uuid());
        let mut env = flavor.server_env(&bus_url);
        env.extend([
            ("DECNET_JWT_SECRET".to_owned(), secret.clone()),
            ("DECNET_DB_TYPE".to_owned(), "postgres".to_owned()),
            (
                "DECNET_DATABASE_URL".to_owned(),
                "postgres://postgres@127.0.0.1:1/x".to_owned(),
            ),
        ]);
        let mut server = TestServer::spawn(&env, Some("serve"), false);
        server
            .wait_for("/healthz", 200, READY_TIMEOUT, |body| {
                body == &json!({"status": "ok"})
            })
            .await;
        // /readyz: 503, naming each component (wait for the bus to connect
        // so only the repository is at fault).
        server
            .wait_for("/readyz", 503, READY_TIMEOUT, |body| {
                body["bus"]["state"] == "connected"
            })
            .await;
        let readyz = server.request("GET", "/readyz", &[]).await;
        assert_eq!(readyz.status, 503);
        let body = readyz.json();
        assert_eq!(body["repository"], "unavailable", "{body}");
        assert_eq!(body["bus"]["kind"], flavor.bus_type(), "{body}");
        assert_eq!(body["status"], "not ready", "{body}");

        // A well-signed token for a user nobody can look up.
        let (token, _) = decnet_auth::mint_access_token(
            secret.as_bytes(),
            &new_uuid(),
            Duration::from_secs(600),
        )
        .expect("mint");
        let started = Instant::now();
        server.post_ticket(&token).await.assert_503();
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
        // Still alive.
        let healthz = server.request("GET", "/healthz", &[]).await;
        assert_eq!(healthz.status, 200);
    }

    // -----------------------------------------------------------------------
    // 6. Ops: metrics, 404/405, CORS, health
    // -----------------------------------------------------------------------

    pub(crate) async fn ops_endpoints(ctx: Ctx) {
        // RUST_LOG=info: the access log is on, to check what it leaves out.
        let server = ctx
            .start_server(&[
                ("DECNET_CORS_ORIGINS", "http://dash.example"),
                ("RUST_LOG", "info"),
            ])
            .await;

        // Health and readiness.
        let healthz = server.request("GET", "/healthz", &[]).await;
        assert_eq!(healthz.status, 200);
        let readyz = server.request("GET", "/readyz", &[]).await;
        assert_eq!(readyz.status, 200);
        let body = readyz.json();
        assert_eq!(body["status"], "ready", "{body}");
        assert_eq!(body["repository"], "ok", "{body}");
        assert_eq!(body["bus"]["kind"], ctx.flavor.bus_type(), "{body}");
        assert_eq!(body["bus"]["state"], "connected", "{body}");

        // Metrics: Prometheus text.
        let response = server.request("GET", "/metrics", &[]).await;
        assert_eq!(response.status, 200);
        assert!(
            response
                .header("content-type")
                .is_some_and(|c| c.starts_with("text/plain")),
            "{:?}",
            response.header("content-type")
        );
        let text = response.text();
        assert!(
            text.contains("# TYPE decnet_sse_streams_active gauge"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
        assert_eq!(metric(&text, "decnet_bus_connected"), Some(1.0), "{text}");

        let token = ctx.token(&ctx.user("viewer").await);
        let attacker = ctx.attacker(None).await;
        let mut stream = server.open_with_ticket(&token, &attacker).await;
        stream.expect_snapshot().await;
        assert!(server.metric("decnet_sse_streams_active").await >= 1.0);
        let event = observation_event(&attacker, "motor.metrics", json!(1));
        deliver(&ctx.bus, &mut stream, &event).await;
        let text = server.metrics().await;
        assert!(
            metric(
                &text,
                r#"decnet_sse_frames_sent_total{event="observation"}"#
            )
            .is_some_and(|n| n >= 1.0),
            "{text}"
        );
        assert!(
            metric(&text, r#"decnet_tickets_redeemed_total{result="ok"}"#)
                .is_some_and(|n| n >= 1.0),
            "{text}"
        );
        ctx.bus
            .publish_raw(
                "attacker.observation.motor.metrics",
                Bytes::from_static(b"{oops"),
            )
            .await
            .expect("publish raw");
        poll_until(
            Duration::from_secs(5),
            "a counted decode failure",
            || async {
                (server.metric("decnet_bus_decode_failures_total").await >= 1.0).then_some(())
            },
        )
        .await;

        // Unknown path, wrong method.
        for path in [
            "/nope",
            "/api/v1/attackers//events",
            "/api/v1/attackers/a/b/events",
        ] {
            server
                .request("GET", path, &[])
                .await
                .assert_detail(404, "Not Found");
        }
        let response = server.request("GET", TICKET_PATH, &[]).await;
        response.assert_detail(405, "Method Not Allowed");
        assert_eq!(response.header("allow"), Some("POST"));
        server
            .request("POST", &events_path(&attacker, None), &[])
            .await
            .assert_detail(405, "Method Not Allowed");
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

        // CORS preflight from the dashboard's origin.
        let preflight = |origin: &'static str| {
            let addr = server.addr;
            async move {
                request(
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
        let allowed = preflight("http://dash.example").await;
        assert_eq!(allowed.status, 200, "{}", allowed.text());
        assert_eq!(
            allowed.header("access-control-allow-origin"),
            Some("http://dash.example")
        );
        assert!(
            allowed
                .header("access-control-allow-headers")
                .is_some_and(|h| h.to_ascii_lowercase().contains("authorization")),
            "{:?}",
            allowed.headers
        );
        assert!(
            allowed
                .header("access-control-allow-methods")
                .is_some_and(|h| h.contains("POST")),
            "{:?}",
            allowed.headers
        );
        let denied = preflight("http://evil.example").await;
        assert!(
            denied.header("access-control-allow-origin").is_none(),
            "{:?}",
            denied.headers
        );

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
        let response = server
            .request(
                "POST",
                TICKET_PATH,
                &[("authorization", &auth), ("origin", "http://evil.example")],
            )
            .await;
        assert_eq!(response.status, 200);
        assert!(response.header("access-control-allow-origin").is_none());

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
        let stderr = poll_until(Duration::from_secs(5), "the access log", || async {
            let stderr = server.stderr();
            (stderr.contains("visible-1") && stderr.contains("visible-2")).then_some(stderr)
        })
        .await;
        assert!(stderr.contains("[redacted]"), "{stderr}");
        assert!(!stderr.contains(&token), "the JWT was logged:\n{stderr}");
        assert!(!stderr.contains(&ticket), "a ticket was logged:\n{stderr}");
        assert!(
            !stderr.contains(&ctx.secret),
            "the secret was logged:\n{stderr}"
        );
    }

    // -----------------------------------------------------------------------
    // 7. Session expiry and revocation
    // -----------------------------------------------------------------------

    /// The stream ends with exactly `event: error` `{"message":"Session expired"}`
    /// then EOF, within `within`.
    async fn expect_session_expired(stream: &mut SseStream, within: Duration) {
        let items = stream.expect_eof(within).await;
        let events: Vec<&decnet_sse::Event> = items
            .iter()
            .filter_map(|item| match item {
                Decoded::Event(event) => Some(event),
                _ => None,
            })
            .collect();
        assert_eq!(events.len(), 1, "{items:?}");
        assert_eq!(events[0].event, "error");
        assert_eq!(
            serde_json::from_str::<Value>(&events[0].data).expect("json"),
            json!({"message": "Session expired"})
        );
    }

    pub(crate) async fn session_expiry(ctx: Ctx) {
        let server = ctx.start_server(&[("DECNET_SSE_TICKET_TTL", "2")]).await;
        let user = ctx.user("viewer").await;
        let attacker = ctx.attacker(None).await;
        // DECNET_SSE_TICKET_TTL: a ticket left unused past its 2 s is refused.
        let patient = ctx.token(&ctx.user("viewer").await);
        let response = server.post_ticket(&patient).await;
        assert_eq!(response.json()["expires_in"], 2, "{}", response.text());
        let stale_ticket = response.json()["ticket"]
            .as_str()
            .expect("ticket")
            .to_owned();
        let (token, claims) = ctx.token_claims(&user, Duration::from_secs(4));
        let mut via_ticket = server.open_with_ticket(&token, &attacker).await;
        via_ticket.expect_snapshot().await;
        let mut via_bearer = server.open_with_bearer(&token, &attacker).await;
        via_bearer.expect_snapshot().await;
        // Still live before the expiry.
        let event = observation_event(&attacker, "motor.before_expiry", json!(1));
        deliver(&ctx.bus, &mut via_ticket, &event).await;
        via_bearer.next_event(ITEM_TIMEOUT).await;

        let within = Duration::from_secs(8);
        tokio::join!(
            expect_session_expired(&mut via_ticket, within),
            expect_session_expired(&mut via_bearer, within),
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        assert!(
            now >= claims.exp as f64 - 0.05,
            "ended before exp {} (now {now})",
            claims.exp
        );
        // The token is now refused outright.
        server.post_ticket(&token).await.assert_401();
        // The ticket minted before the wait has expired (>= 4 s ago).
        server
            .request("GET", &events_path(&attacker, Some(&stale_ticket)), &[])
            .await
            .assert_401();
        // The memory store knows the ticket expired; Redis drops it with
        // the key's TTL, so there it is simply unknown.
        let result = match ctx.flavor {
            Flavor::Nats => "expired",
            Flavor::Redis => "unknown",
        };
        let series = format!("decnet_tickets_redeemed_total{{result=\"{result}\"}}");
        assert!(server.metric(&series).await >= 1.0, "{series}");
    }

    pub(crate) async fn session_revocation(ctx: Ctx) {
        let server = ctx.start_server(&[]).await;
        let attacker = ctx.attacker(None).await;
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

        // One stream per way a session can be revoked (DESIGN: jti
        // denylisted, tokens_valid_from moved past iat, user deleted, role no
        // longer allowed), plus must_change_password, plus one that stays.
        let jti_user = ctx.user("viewer").await;
        let (jti_token, jti_claims) = ctx.token_claims(&jti_user, Duration::from_secs(3600));
        let mut jti_ticket = open(jti_token.clone(), true).await;
        let mut jti_bearer = open(jti_token.clone(), false).await;
        let moved_user = ctx.user("viewer").await;
        let mut moved = open(ctx.token(&moved_user), true).await;
        let deleted_user = ctx.user("viewer").await;
        let mut deleted = open(ctx.token(&deleted_user), false).await;
        let demoted_user = ctx.user("admin").await;
        let mut demoted = open(ctx.token(&demoted_user), true).await;
        let must_change_user = ctx.user("viewer").await;
        let mut must_change = open(ctx.token(&must_change_user), false).await;
        let kept_user = ctx.user("viewer").await;
        let mut kept = open(ctx.token(&kept_user), true).await;

        ctx.revoke(&jti_claims).await;
        ctx.put_user(&user_row(
            &moved_user,
            "viewer",
            false,
            Some(SystemTime::now() + Duration::from_secs(2)),
        ))
        .await;
        ctx.repo
            .delete_user(&deleted_user)
            .await
            .expect("delete user");
        ctx.put_user(&user_row(&demoted_user, "auditor", false, None))
            .await;
        ctx.put_user(&user_row(&must_change_user, "viewer", true, None))
            .await;
        let started = Instant::now();

        // DESIGN: within 30 s of the revocation (+5 s of slack for a busy machine).
        let within = Duration::from_secs(35);
        tokio::join!(
            expect_session_expired(&mut jti_ticket, within),
            expect_session_expired(&mut jti_bearer, within),
            expect_session_expired(&mut moved, within),
            expect_session_expired(&mut deleted, within),
            expect_session_expired(&mut demoted, within),
            expect_session_expired(&mut must_change, within),
        );
        eprintln!("revoked streams ended after {:?}", started.elapsed());
        server.post_ticket(&jti_token).await.assert_401();
        assert!(server.metric("decnet_sse_sessions_expired_total").await >= 6.0);

        // The untouched session is still live.
        let event = observation_event(&attacker, "motor.after_revocation", json!(1));
        let frame = deliver(&ctx.bus, &mut kept, &event).await;
        assert_live_frame(&frame, &event, "observation");
    }

    // -----------------------------------------------------------------------
    // 8. Broker restart: the same open stream gets live events again
    // -----------------------------------------------------------------------

    enum PrivateBroker {
        Nats(NatsServer),
        Redis(RedisServer),
    }

    impl PrivateBroker {
        fn start(flavor: Flavor) -> PrivateBroker {
            tokio::task::block_in_place(|| match flavor {
                Flavor::Nats => PrivateBroker::Nats(NatsServer::start()),
                Flavor::Redis => PrivateBroker::Redis(RedisServer::start()),
            })
        }

        fn url(&self) -> String {
            match self {
                PrivateBroker::Nats(server) => server.url(),
                PrivateBroker::Redis(server) => server.url(),
            }
        }

        fn kill(&mut self) {
            tokio::task::block_in_place(|| match self {
                PrivateBroker::Nats(server) => server.kill(),
                PrivateBroker::Redis(server) => server.kill(),
            });
        }

        fn restart(&mut self) {
            tokio::task::block_in_place(|| match self {
                PrivateBroker::Nats(server) => server.restart(),
                PrivateBroker::Redis(server) => server.restart(),
            });
        }
    }

    pub(crate) async fn broker_restart(ctx: Ctx) {
        let mut broker = PrivateBroker::start(ctx.flavor);
        let url = broker.url();
        let bus = ctx.flavor.connect_bus(&url).await;
        let mut env = ctx.server_env();
        env.extend(ctx.flavor.server_env(&url));
        let mut server = ctx.start_server_with(&env, &bus).await;

        let token = ctx.token(&ctx.user("viewer").await);
        let attacker = ctx.attacker(None).await;
        let mut stream = server.open_with_bearer(&token, &attacker).await;
        stream.expect_snapshot().await;
        let event = observation_event(&attacker, "motor.before_restart", json!(1));
        let frame = deliver(&bus, &mut stream, &event).await;
        assert_live_frame(&frame, &event, "observation");

        broker.kill();
        server
            .wait_for("/readyz", 503, Duration::from_secs(15), |body| {
                body["bus"]["state"] != "connected"
            })
            .await;
        broker.restart();
        server
            .wait_for("/readyz", 200, Duration::from_secs(20), |body| {
                body["hub"] == "subscribed"
            })
            .await;

        // The SAME stream receives live events again.
        let (event, frame) = deliver_eventually(&bus, &mut stream, Duration::from_secs(20), || {
            observation_event(&attacker, "motor.after_restart", json!(2))
        })
        .await;
        assert_live_frame(&frame, &event, "observation");
        let (event, frame) = deliver_eventually(&bus, &mut stream, Duration::from_secs(10), || {
            event_scored(&attacker)
        })
        .await;
        assert_live_frame(&frame, &event, "attacker.scored");
        assert_eq!(server.metric("decnet_bus_connected").await, 1.0);
    }

    fn event_scored(attacker: &str) -> decnet_bus::Event {
        event(
            "attacker.scored",
            "scored",
            json!({"attacker_uuid": attacker, "score": 0.5}),
        )
    }

    // -----------------------------------------------------------------------
    // 9. Graceful shutdown
    // -----------------------------------------------------------------------

    pub(crate) async fn graceful_shutdown(ctx: Ctx) {
        let mut server = ctx
            .start_server(&[("DECNET_SHUTDOWN_GRACE_SECS", "5")])
            .await;
        let token = ctx.token(&ctx.user("viewer").await);
        let attacker = ctx.attacker(None).await;
        let mut stream = server.open_with_ticket(&token, &attacker).await;
        stream.expect_snapshot().await;
        let event = observation_event(&attacker, "motor.before_shutdown", json!(1));
        deliver(&ctx.bus, &mut stream, &event).await;

        let addr = server.addr;
        let started = Instant::now();
        let (status, items) = tokio::join!(
            server.terminate(Duration::from_secs(8)),
            stream.expect_eof(Duration::from_secs(8)),
        );
        assert!(
            status.success(),
            "exit status {status:?}\nstderr:\n{}",
            server.stderr()
        );
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "shutdown took {:?}",
            started.elapsed()
        );
        // Ended cleanly: no error frame, no event at all.
        assert!(
            items.iter().all(|item| matches!(item, Decoded::Comment(_))),
            "{items:?}"
        );
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    // -----------------------------------------------------------------------
    // 10. Configuration errors
    // -----------------------------------------------------------------------

    async fn serve_with(vars: &[(&str, &str)]) -> Finished {
        let mut command = std::process::Command::new(BIN);
        command.env_clear();
        for key in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(key) {
                command.env(key, value);
            }
        }
        command.arg("serve").env(
            "DECNET_BIND",
            format!("127.0.0.1:{}", test_support::free_port()),
        );
        for (key, value) in vars {
            command.env(key, value);
        }
        run_to_end(command, Duration::from_secs(15)).await
    }

    pub(crate) async fn config_errors() {
        let bad_number = serve_with(&[("DECNET_SSE_MAX_PER_USER", "abc")]).await;
        assert_eq!(bad_number.status.code(), Some(64), "{bad_number:?}");
        assert!(
            bad_number.stderr.contains("DECNET_SSE_MAX_PER_USER"),
            "{}",
            bad_number.stderr
        );

        let no_secret = serve_with(&[
            ("DECNET_DB_TYPE", "postgres"),
            (
                "DECNET_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/postgres",
            ),
        ])
        .await;
        assert_eq!(no_secret.status.code(), Some(64), "{no_secret:?}");
        assert!(
            no_secret.stderr.contains("DECNET_JWT_SECRET"),
            "{}",
            no_secret.stderr
        );
        assert!(
            !no_secret.stderr.contains("DECNET_DATABASE_URL"),
            "{}",
            no_secret.stderr
        );

        // Every bad variable is reported at once, and a secret is never echoed.
        let several = serve_with(&[
            ("DECNET_SSE_KEEPALIVE_SECS", "0"),
            ("DECNET_DB_TYPE", "mysql"),
            ("DECNET_JWT_SECRET", "hunter2-hunter2"),
        ])
        .await;
        assert_eq!(several.status.code(), Some(64), "{several:?}");
        for var in ["DECNET_SSE_KEEPALIVE_SECS", "DECNET_DB_TYPE"] {
            assert!(several.stderr.contains(var), "{var}: {}", several.stderr);
        }
        assert!(!several.stderr.contains("hunter2"), "{}", several.stderr);
    }

    // -----------------------------------------------------------------------
    // 11. Embedded default
    // -----------------------------------------------------------------------

    pub(crate) async fn embedded_demo() {
        let mut server = TestServer::spawn(&[], None, true);
        let (attacker, token) =
            poll_until(Duration::from_secs(20), "the demo banner on stdout", || {
                let stdout = server.stdout();
                async move {
                    let field = |label: &str| {
                        stdout
                            .lines()
                            .find_map(|line| line.trim().strip_prefix(label))
                            .map(|rest| rest.trim().to_owned())
                    };
                    Some((field("demo attacker:")?, field("token (24 h):")?))
                }
            })
            .await;
        assert_eq!(attacker.len(), 36, "{attacker}");
        assert_eq!(token.split('.').count(), 3, "{token}");
        server.wait_ready().await;

        let mut stream = server.open_with_ticket(&token, &attacker).await;
        let snapshot = stream.expect_snapshot().await;
        assert_eq!(snapshot["attacker_uuid"], attacker.as_str());
        assert!(
            snapshot["observations"]
                .as_array()
                .is_some_and(|o| !o.is_empty()),
            "{snapshot}"
        );

        let deadline = Instant::now() + Duration::from_secs(6);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no live observation within 6 s");
            let frame = stream.next_event(left).await;
            assert!(!frame.id.is_empty(), "live frames carry an id: {frame:?}");
            if frame.event == "observation" {
                let data: Value = serde_json::from_str(&frame.data).expect("json");
                assert!(
                    data["topic"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("attacker.observation.")),
                    "{data}"
                );
                assert_eq!(data["payload"]["attacker_uuid"], attacker.as_str());
                break;
            }
        }
    }
}
