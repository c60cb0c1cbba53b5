//! One behavioural suite for every repository backend.
//!
//! Each case in [`cases`] is an `async fn(Db)`: a backend's reader, a writer
//! that seeds it, and which engine it is. The `suite!` macro runs every case
//! against:
//! - the memory backend (module `memory`);
//! - PostgreSQL (feature `postgres`, module `svc_postgres`: a fresh schema per
//!   test, migrated; skipped loudly when `DECNET_TEST_DATABASE_URL` is unset,
//!   failing under CI);
//! - SQLite (feature `sqlite`, module `sqlite`: a temporary file per test made
//!   from DECNET's DDL in `testdata/`, in WAL mode; always runs);
//! - MySQL/MariaDB (feature `mysql`, module `svc_mysql`: a database per test
//!   made from DECNET's DDL and dropped after; `DECNET_TEST_MYSQL_URL`, same
//!   skip policy).
//!
//! SQLite and MySQL have no writer (the service only reads DECNET's database):
//! their cases seed through test-only SQL (`suite/backends.rs`) that keeps the
//! memory backend's writer contract. Where DECNET's engines legitimately
//! differ (MySQL's collations, single-precision FLOAT, DATETIME without
//! fraction or zone, JSON numbers matching their text, SQLite's NUMERIC
//! affinity), a case asserts each engine's own answer. Engine-only behaviour
//! (migrations, busy writers, timeouts, schema checks) lives in the modules
//! after the macro.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use decnet_repo::{
    Attacker, CampaignRow, DbTime, HexBytes, HistogramBucket, IdentityRow, LogFilter, LogRow,
    MemoryRepository, MutationRow, Observation, OrchestratorEventRow, RepoError, User,
};

#[path = "suite/backends.rs"]
mod backends;

use backends::{Db, Engine};

fn attacker(uuid: &str) -> Attacker {
    Attacker {
        uuid: uuid.into(),
        ip: "203.0.113.7".into(),
        identity_id: None,
    }
}

fn observation(id: &str, attacker_uuid: &str, primitive: &str, ts: f64) -> Observation {
    Observation {
        id: id.into(),
        identity_ref: None,
        primitive: primitive.into(),
        value: serde_json::json!({ "id": id }),
        confidence: 0.75,
        window_start_ts: ts - 60.0,
        window_end_ts: ts,
        source: "suite".into(),
        evidence_ref: format!("evidence-{id}"),
        envelope_v: 1,
        ts,
        attacker_uuid: attacker_uuid.into(),
    }
}

fn user(uuid: &str, username: &str, tokens_valid_from: Option<SystemTime>) -> User {
    User {
        uuid: uuid.into(),
        username: username.into(),
        password_hash: "$argon2id$stub".into(),
        role: "viewer".into(),
        must_change_password: false,
        tokens_valid_from,
    }
}

fn ids(rows: &[Observation]) -> Vec<&str> {
    rows.iter().map(|row| row.id.as_str()).collect()
}

/// A datetime from text (either of DECNET's forms).
fn t(text: &str) -> DbTime {
    DbTime::parse(text).unwrap_or_else(|err| panic!("{err}"))
}

/// What `engine` gives back for a datetime it was given: PostgreSQL's
/// `timestamp` and MySQL's `DATETIME` carry no zone, and MySQL's keeps no
/// fraction (MariaDB truncates; the suite's fractions stay below .5 s so that
/// MySQL's rounding agrees).
fn stored(engine: Engine, at: DbTime) -> DbTime {
    match engine {
        Engine::Memory | Engine::Sqlite => at,
        Engine::Postgres => DbTime::naive(at.utc()),
        Engine::Mysql => {
            DbTime::from_unix_micros(at.unix_micros().div_euclid(1_000_000) * 1_000_000)
                .unwrap_or_else(|| panic!("in range"))
        }
    }
}

/// `stored` for a [`SystemTime`].
fn stored_system(engine: Engine, at: SystemTime) -> SystemTime {
    stored(
        engine,
        DbTime::from_system_time(at).unwrap_or_else(|| panic!("in range")),
    )
    .to_system_time()
}

/// The keys of a serialized row, in order.
fn keys(row: &impl serde::Serialize) -> Vec<String> {
    match serde_json::to_value(row) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        other => panic!("not an object: {other:?}"),
    }
}

fn identity(uuid: &str, updated_at: &str) -> IdentityRow {
    IdentityRow {
        uuid: uuid.into(),
        schema_version: 1,
        campaign_id: Some("campaign-1".into()),
        first_seen_at: Some(t("2026-06-20 11:00:00.250000")),
        last_seen_at: None,
        created_at: t("2026-06-20 10:00:00.000000"),
        updated_at: t(updated_at),
        confidence: Some(0.5),
        observation_count: 3,
        ja3_hashes: Some(r#"["771,4865-4866,0-23"]"#.into()),
        hassh_hashes: Some("[]".into()),
        ja4h_hashes: None,
        ja4_quic_hashes: None,
        http_versions_seen: Some(r#"["HTTP/1.1", "h2"]"#.into()),
        tls_cert_sha256: None,
        ipv6_link_local_iids: None,
        payload_simhashes: None,
        c2_endpoints: Some(r#"["203.0.113.9:4444"]"#.into()),
        kd_digraph_simhash: Some(HexBytes(vec![
            0xff, 0x00, 0x01, 0x7f, 0x80, 0xab, 0xcd, 0xfe,
        ])),
        merged_into_uuid: None,
        notes: Some("seen on web01".into()),
    }
}

fn campaign(uuid: &str, updated_at: &str) -> CampaignRow {
    CampaignRow {
        uuid: uuid.into(),
        schema_version: 2,
        first_seen_at: None,
        last_seen_at: Some(t("2026-06-20 11:30:00.125000")),
        created_at: t("2026-06-20 09:00:00.000000"),
        updated_at: t(updated_at),
        confidence: Some(0.25),
        identity_count: 4,
        ja3_hashes: Some(r#"["a", "b"]"#.into()),
        hassh_hashes: None,
        tls_cert_sha256: None,
        payload_simhashes: Some("[123, 456]".into()),
        c2_endpoints: None,
        merged_into_uuid: None,
        notes: None,
    }
}

fn event(uuid: &str, ts: &str, success: bool) -> OrchestratorEventRow {
    OrchestratorEventRow {
        uuid: uuid.into(),
        ts: t(ts),
        kind: "traffic".into(),
        protocol: "http".into(),
        action: "GET /".into(),
        src_decky_uuid: None,
        dst_decky_uuid: "decky-1".into(),
        success,
        payload: r#"{"bytes": 10, "status": 200}"#.into(),
    }
}

fn mutation(id: &str, topology: &str, state: &str, requested_at: &str) -> MutationRow {
    MutationRow {
        id: id.into(),
        topology_id: topology.into(),
        op: "add_decky".into(),
        payload: r#"{"name":"web03","lan":"dmz"}"#.into(),
        state: state.into(),
        requested_at: t(requested_at),
        applied_at: None,
        reason: None,
    }
}

fn log(timestamp: &str, decky: &str, service: &str, event_type: &str, ip: &str) -> LogRow {
    LogRow {
        id: 0,
        timestamp: t(timestamp),
        decky: decky.into(),
        service: service.into(),
        event_type: event_type.into(),
        attacker_ip: ip.into(),
        raw_line: format!("{service} {event_type} from {ip}"),
        fields: "{}".into(),
        msg: None,
        trace_id: None,
        span_id: None,
    }
}

fn log_ids(rows: &[LogRow]) -> Vec<i64> {
    rows.iter().map(|row| row.id).collect()
}

fn bucket(time: &str, count: i64) -> HistogramBucket {
    HistogramBucket {
        time: Some(time.into()),
        count,
    }
}

mod cases {
    use super::*;

    pub(crate) async fn latest_per_primitive_highest_ts_then_highest_id(db: Db) {
        let Db {
            repo, w, _guard, ..
        } = db;
        w.upsert_attacker(&attacker("a")).await.unwrap();
        w.upsert_attacker(&attacker("b")).await.unwrap();
        for row in [
            // "b.prim": the highest ts wins, whatever the insertion order.
            observation("o01", "a", "b.prim", 30.0),
            observation("o02", "a", "b.prim", 10.0),
            observation("o03", "a", "b.prim", 20.0),
            // "a.prim": three rows tie on the highest ts; the highest id wins in
            // byte order ("o9" > "o10" > "o08").
            observation("o08", "a", "a.prim", 50.0),
            observation("o9", "a", "a.prim", 50.0),
            observation("o10", "a", "a.prim", 50.0),
            observation("o11", "a", "a.prim", 49.5),
            // "C.prim": sorts before lower case in byte order.
            observation("o12", "a", "C.prim", 1.0),
            // Other attacker: later rows on the same primitives, never returned.
            observation("o20", "b", "b.prim", 99.0),
            observation("o21", "b", "a.prim", 99.0),
            observation("o22", "b", "z.prim", 99.0),
        ] {
            w.upsert_observation(&row).await.unwrap();
        }

        let latest = repo.latest_observation_per_primitive("a").await.unwrap();
        assert_eq!(ids(&latest), ["o12", "o9", "o01"]);
        let primitives: Vec<&str> = latest.iter().map(|o| o.primitive.as_str()).collect();
        assert_eq!(primitives, ["C.prim", "a.prim", "b.prim"]);
        assert!(latest.iter().all(|o| o.attacker_uuid == "a"));
        assert_eq!(latest[1], observation("o9", "a", "a.prim", 50.0));

        let other = repo.latest_observation_per_primitive("b").await.unwrap();
        assert_eq!(ids(&other), ["o21", "o20", "o22"]);
    }

    /// MySQL's FLOAT is single precision: near 1.7e9 representable values
    /// are 128 s apart, so two observations 50 s apart tie, and the highest
    /// id wins there; every other engine keeps the later one.
    pub(crate) async fn latest_per_primitive_single_precision_ties(db: Db) {
        let Db {
            repo,
            w,
            engine,
            _guard,
            ..
        } = db;
        w.upsert_attacker(&attacker("a")).await.unwrap();
        for row in [
            observation("o9", "a", "p", 1_700_000_000.0),
            observation("o10", "a", "p", 1_700_000_050.0),
            observation("o8", "a", "p", 1_699_999_000.0),
        ] {
            w.upsert_observation(&row).await.unwrap();
        }
        let latest = repo.latest_observation_per_primitive("a").await.unwrap();
        match engine {
            Engine::Mysql => {
                assert_eq!(ids(&latest), ["o9"]);
                assert_eq!(latest[0].ts, 1_700_000_000.0);
                assert_eq!(latest[0].confidence, 0.75);
            }
            _ => {
                assert_eq!(ids(&latest), ["o10"]);
                assert_eq!(latest[0].ts, 1_700_000_050.0);
            }
        }
    }

    pub(crate) async fn latest_per_primitive_empty_without_rows(db: Db) {
        let Db {
            repo, w, _guard, ..
        } = db;
        w.upsert_attacker(&attacker("quiet")).await.unwrap();
        assert!(
            repo.latest_observation_per_primitive("quiet")
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            repo.latest_observation_per_primitive("nobody")
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub(crate) async fn json_values_of_every_type_round_trip(db: Db) {
        use serde_json::json;
        let Db {
            repo,
            w,
            engine,
            _guard,
            ..
        } = db;
        w.upsert_attacker(&attacker("a")).await.unwrap();
        let values = [
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(-42),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(1.5),
            json!(-0.001),
            json!(6.02e23),
            json!(""),
            json!("plain"),
            json!("quote \" backslash \\ newline \n tab \t"),
            json!("unicode: é ß 漢字 🦀 \u{200f}عربى"),
            json!([]),
            json!([1, "two", null, true, 3.25, [4], {"five": 5}]),
            json!({}),
            json!({"k": "v", "n": 1, "f": 0.5, "b": false, "z": null}),
            json!({"nested": {"deeper": {"list": [{"a": [1, {"b": "🦀"}]}]}}, "ключ": "значение"}),
        ];
        for (n, value) in values.iter().enumerate() {
            let mut row = observation(&format!("o{n:02}"), "a", &format!("p{n:02}"), 1.0);
            row.value = value.clone();
            w.upsert_observation(&row).await.unwrap();
        }
        let latest = repo.latest_observation_per_primitive("a").await.unwrap();
        let got: Vec<&serde_json::Value> = latest.iter().map(|o| &o.value).collect();
        let mut want: Vec<serde_json::Value> = values.to_vec();
        if engine == Engine::Sqlite {
            // NUMERIC affinity: an integer literal beyond i64 is stored REAL.
            want[6] = json!(u64::MAX as f64);
        }
        let want: Vec<&serde_json::Value> = want.iter().collect();
        assert_eq!(got, want);
    }

    /// `observations.value` has NUMERIC affinity on SQLite: DECNET's
    /// `json.dumps(5000.0)` is stored as the integer 5000 (DECNET.md §2.5),
    /// and comes back as such; the other engines keep the float.
    pub(crate) async fn json_numbers_follow_each_engines_storage(db: Db) {
        use serde_json::json;
        let Db {
            repo,
            w,
            engine,
            _guard,
            ..
        } = db;
        w.upsert_attacker(&attacker("a")).await.unwrap();
        for (n, value) in [json!(5000.0), json!(42), json!(0.1), json!("5000")]
            .into_iter()
            .enumerate()
        {
            let mut row = observation(&format!("o{n}"), "a", &format!("p{n}"), 1.0);
            row.value = value;
            w.upsert_observation(&row).await.unwrap();
        }
        let latest = repo.latest_observation_per_primitive("a").await.unwrap();
        let got: Vec<serde_json::Value> = latest.into_iter().map(|o| o.value).collect();
        let first = if engine == Engine::Sqlite {
            json!(5000)
        } else {
            json!(5000.0)
        };
        assert_eq!(got, [first, json!(42), json!(0.1), json!("5000")]);
    }

    pub(crate) async fn unknown_uuids_are_none(db: Db) {
        let Db { repo, _guard, .. } = db;
        assert_eq!(
            repo.attacker_by_uuid("no-such-attacker").await.unwrap(),
            None
        );
        assert_eq!(repo.user_by_uuid("no-such-user").await.unwrap(), None);
        assert!(!repo.is_token_revoked("no-such-jti").await.unwrap());
    }

    /// MySQL compares uuids with the column's case-insensitive collation, as
    /// DECNET's own lookup there does; every other engine is exact.
    pub(crate) async fn uuid_lookups_follow_the_engines_collation(db: Db) {
        let Db {
            repo,
            w,
            engine,
            _guard,
            ..
        } = db;
        w.upsert_attacker(&attacker("att-abc")).await.unwrap();
        w.create_user(&user("user-abc", "alice", None))
            .await
            .unwrap();
        w.revoke_token(
            "jti-abc",
            "user-abc",
            UNIX_EPOCH + Duration::from_secs(2_000_000_000),
        )
        .await
        .unwrap();
        let folds = engine == Engine::Mysql;
        let found = repo.attacker_by_uuid("ATT-ABC").await.unwrap();
        assert_eq!(found.map(|a| a.uuid), folds.then(|| "att-abc".to_owned()));
        let found = repo.user_by_uuid("User-ABC").await.unwrap();
        assert_eq!(found.map(|u| u.uuid), folds.then(|| "user-abc".to_owned()));
        assert_eq!(repo.is_token_revoked("JTI-ABC").await.unwrap(), folds);
    }

    pub(crate) async fn attackers_upsert_and_read_back(db: Db) {
        let Db {
            repo, w, _guard, ..
        } = db;
        let mut a = attacker("a");
        w.upsert_attacker(&a).await.unwrap();
        assert_eq!(repo.attacker_by_uuid("a").await.unwrap(), Some(a.clone()));
        a.ip = "198.51.100.1".into();
        a.identity_id = Some("identity-1".into());
        w.upsert_attacker(&a).await.unwrap();
        assert_eq!(repo.attacker_by_uuid("a").await.unwrap(), Some(a));
    }

    pub(crate) async fn attackers_of_identity_sorted(db: Db) {
        let Db {
            repo, w, _guard, ..
        } = db;
        for (uuid, identity) in [
            ("a3", Some("id-1")),
            ("a1", Some("id-1")),
            ("a4", Some("id-2")),
            ("a2", Some("id-1")),
            ("a5", None),
        ] {
            w.upsert_attacker(&Attacker {
                identity_id: identity.map(str::to_owned),
                ..attacker(uuid)
            })
            .await
            .unwrap();
        }
        assert_eq!(
            repo.attackers_of_identity("id-1").await.unwrap(),
            ["a1", "a2", "a3"]
        );
        assert_eq!(repo.attackers_of_identity("id-2").await.unwrap(), ["a4"]);
        assert!(repo.attackers_of_identity("id-x").await.unwrap().is_empty());
    }

    pub(crate) async fn revoke_then_is_token_revoked(db: Db) {
        let Db {
            repo, w, _guard, ..
        } = db;
        let expires = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        assert!(!repo.is_token_revoked("jti-1").await.unwrap());
        w.revoke_token("jti-1", "user-1", expires).await.unwrap();
        assert!(repo.is_token_revoked("jti-1").await.unwrap());
        // Revoking twice is not an error.
        w.revoke_token("jti-1", "user-1", expires).await.unwrap();
        assert!(repo.is_token_revoked("jti-1").await.unwrap());
        assert!(!repo.is_token_revoked("jti-2").await.unwrap());
    }

    /// The verifier's snapshot reads: every user (as `user_by_uuid` reads
    /// it, without the hash) and every revoked jti, expired rows included,
    /// within the limit.
    pub(crate) async fn bulk_account_reads_list_every_user_and_jti(db: Db) {
        let Db {
            repo, w, _guard, ..
        } = db;
        assert_eq!(repo.all_users(10).await.unwrap(), Some(Vec::new()));
        assert_eq!(repo.revoked_jtis(10).await.unwrap(), Some(Vec::new()));
        let cutoff = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for (uuid, name, tvf) in [
            ("user-1", "alice", None),
            ("user-2", "bob", Some(cutoff)),
            ("user-3", "carol", None),
        ] {
            w.create_user(&user(uuid, name, tvf)).await.unwrap();
        }
        let long_gone = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let later = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        for (jti, expires) in [("jti-1", later), ("jti-old", long_gone), ("jti-2", later)] {
            w.revoke_token(jti, "user-1", expires).await.unwrap();
        }
        w.delete_user("user-3").await.unwrap();

        let mut users = repo.all_users(10).await.unwrap().expect("a bulk read");
        users.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        let mut expected = Vec::new();
        for uuid in ["user-1", "user-2"] {
            let one = repo.user_by_uuid(uuid).await.unwrap().expect("the user");
            expected.push(User {
                password_hash: String::new(),
                ..one
            });
        }
        assert_eq!(users, expected);
        let mut jtis = repo.revoked_jtis(10).await.unwrap().expect("a bulk read");
        jtis.sort();
        assert_eq!(jtis, ["jti-1", "jti-2", "jti-old"]);

        assert_eq!(repo.all_users(1).await.unwrap().map(|u| u.len()), Some(1));
        assert_eq!(
            repo.revoked_jtis(2).await.unwrap().map(|j| j.len()),
            Some(2)
        );
    }

    pub(crate) async fn upsert_observation_is_idempotent_on_evidence_and_primitive(db: Db) {
        let Db {
            repo, w, _guard, ..
        } = db;
        w.upsert_attacker(&attacker("a")).await.unwrap();
        let first = observation("o1", "a", "p", 10.0);
        w.upsert_observation(&first).await.unwrap();
        w.upsert_observation(&first).await.unwrap();
        assert_eq!(
            repo.latest_observation_per_primitive("a").await.unwrap(),
            std::slice::from_ref(&first)
        );

        // Same (evidence_ref, primitive), new content: replaces the row, even
        // with a lower ts (it is the same observation, corrected).
        let mut corrected = first.clone();
        corrected.id = "o1-corrected".into();
        corrected.value = serde_json::json!({"corrected": true});
        corrected.confidence = 0.25;
        corrected.ts = 5.0;
        w.upsert_observation(&corrected).await.unwrap();
        assert_eq!(
            repo.latest_observation_per_primitive("a").await.unwrap(),
            [corrected.clone()]
        );

        // Same evidence, another primitive: a second row.
        let mut other = first.clone();
        other.id = "o2".into();
        other.primitive = "q".into();
        w.upsert_observation(&other).await.unwrap();
        assert_eq!(
            repo.latest_observation_per_primitive("a").await.unwrap(),
            [corrected, other]
        );
    }

    pub(crate) async fn observation_of_unknown_attacker_is_invalid_data(db: Db) {
        let Db { w, _guard, .. } = db;
        let err = w
            .upsert_observation(&observation("o1", "ghost", "p", 1.0))
            .await;
        assert!(matches!(err, Err(RepoError::InvalidData(_))), "{err:?}");
    }

    pub(crate) async fn reused_observation_id_is_invalid_data(db: Db) {
        let Db {
            repo, w, _guard, ..
        } = db;
        w.upsert_attacker(&attacker("a")).await.unwrap();
        w.upsert_observation(&observation("o1", "a", "p", 1.0))
            .await
            .unwrap();
        let mut clash = observation("o1", "a", "q", 2.0);
        clash.evidence_ref = "another-evidence".into();
        let err = w.upsert_observation(&clash).await;
        assert!(matches!(err, Err(RepoError::InvalidData(_))), "{err:?}");
        assert_eq!(
            ids(&repo.latest_observation_per_primitive("a").await.unwrap()),
            ["o1"]
        );
    }

    pub(crate) async fn tokens_valid_from_round_trips(db: Db) {
        let Db {
            repo,
            w,
            engine,
            _guard,
            ..
        } = db;
        let whole = UNIX_EPOCH + Duration::from_secs(1_714_000_000);
        // Microsecond precision: what PostgreSQL and SQLite keep (MySQL's
        // DATETIME keeps whole seconds).
        let sub_second = UNIX_EPOCH + Duration::new(1_714_000_000, 123_456_000);
        for (uuid, valid_from) in [("u1", Some(whole)), ("u2", Some(sub_second)), ("u3", None)] {
            let u = user(uuid, &format!("name-{uuid}"), valid_from);
            w.create_user(&u).await.unwrap();
            let got = repo.user_by_uuid(uuid).await.unwrap().unwrap();
            let expected = valid_from.map(|at| stored_system(engine, at));
            assert_eq!(
                got,
                User {
                    tokens_valid_from: expected,
                    ..u
                }
            );
        }
    }

    pub(crate) async fn create_user_replaces_by_uuid(db: Db) {
        let Db {
            repo, w, _guard, ..
        } = db;
        let mut u = user("u1", "alice", None);
        w.create_user(&u).await.unwrap();
        u.role = "admin".into();
        u.must_change_password = true;
        u.username = "alice2".into();
        u.tokens_valid_from = Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        w.create_user(&u).await.unwrap();
        assert_eq!(repo.user_by_uuid("u1").await.unwrap(), Some(u));
    }

    pub(crate) async fn taken_username_is_invalid_data(db: Db) {
        let Db {
            repo, w, _guard, ..
        } = db;
        w.create_user(&user("u1", "alice", None)).await.unwrap();
        let err = w.create_user(&user("u2", "alice", None)).await;
        assert!(matches!(err, Err(RepoError::InvalidData(_))), "{err:?}");
        assert_eq!(repo.user_by_uuid("u2").await.unwrap(), None);
    }

    pub(crate) async fn delete_user_removes_it(db: Db) {
        let Db {
            repo, w, _guard, ..
        } = db;
        w.create_user(&user("u1", "alice", None)).await.unwrap();
        w.create_user(&user("u2", "bob", None)).await.unwrap();
        w.delete_user("u1").await.unwrap();
        assert_eq!(repo.user_by_uuid("u1").await.unwrap(), None);
        assert!(repo.user_by_uuid("u2").await.unwrap().is_some());
        // Unknown uuid: not an error.
        w.delete_user("u1").await.unwrap();
        w.delete_user("never-existed").await.unwrap();
    }

    pub(crate) async fn set_attacker_identity_links_and_unlinks(db: Db) {
        let Db {
            repo, w, _guard, ..
        } = db;
        w.upsert_attacker(&attacker("a")).await.unwrap();
        w.set_attacker_identity("a", Some("identity-1"))
            .await
            .unwrap();
        let got = repo.attacker_by_uuid("a").await.unwrap().unwrap();
        assert_eq!(got.identity_id.as_deref(), Some("identity-1"));
        assert_eq!(got.ip, "203.0.113.7");
        w.set_attacker_identity("a", None).await.unwrap();
        assert_eq!(
            repo.attacker_by_uuid("a")
                .await
                .unwrap()
                .unwrap()
                .identity_id,
            None
        );
        let err = w.set_attacker_identity("ghost", Some("identity-1")).await;
        assert!(matches!(err, Err(RepoError::InvalidData(_))), "{err:?}");
    }

    pub(crate) async fn ping_answers(db: Db) {
        let Db { repo, _guard, .. } = db;
        repo.ping().await.unwrap();
    }

    /// The identity snapshot: the 50 newest unmerged by `updated_at` (ties:
    /// highest uuid first), every column in DECNET's order, datetimes as
    /// pydantic renders them, fingerprint lists as JSON text, the SimHash as
    /// hex.
    pub(crate) async fn identity_snapshot_shape_order_and_limit(db: Db) {
        let Db {
            repo,
            w,
            engine,
            _guard,
            ..
        } = db;
        for n in 0..53 {
            let at = format!("2026-06-20 12:{n:02}:00.000000");
            w.upsert_identity(&identity(&format!("id-{n:02}"), &at))
                .await
                .unwrap();
        }
        // Newer, but merged into another: never in the snapshot.
        let mut merged = identity("id-merged", "2026-06-20 13:30:00.000000");
        merged.merged_into_uuid = Some("id-00".into());
        w.upsert_identity(&merged).await.unwrap();
        // Two tied newest: the highest uuid first.
        w.upsert_identity(&identity("tie-a", "2026-06-20 13:00:00.000000"))
            .await
            .unwrap();
        w.upsert_identity(&identity("tie-b", "2026-06-20 13:00:00.000000"))
            .await
            .unwrap();

        let rows = repo.recent_identities(50).await.unwrap();
        let uuids: Vec<&str> = rows.iter().map(|r| r.uuid.as_str()).collect();
        let mut expected = vec!["tie-b".to_owned(), "tie-a".to_owned()];
        expected.extend((5..53).rev().map(|n| format!("id-{n:02}")));
        assert_eq!(uuids, expected);

        let newest = &rows[2];
        let mut want = identity("id-52", "2026-06-20 12:52:00.000000");
        want.first_seen_at = want.first_seen_at.map(|at| stored(engine, at));
        assert_eq!(newest, &want);
        assert_eq!(
            keys(newest),
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
            ]
        );
        let json = serde_json::to_value(newest).unwrap();
        assert_eq!(json["updated_at"], "2026-06-20T12:52:00");
        assert_eq!(
            json["first_seen_at"],
            if engine == Engine::Mysql {
                "2026-06-20T11:00:00"
            } else {
                "2026-06-20T11:00:00.250000"
            }
        );
        assert_eq!(json["last_seen_at"], serde_json::Value::Null);
        assert_eq!(json["ja3_hashes"], r#"["771,4865-4866,0-23"]"#);
        assert_eq!(json["kd_digraph_simhash"], "ff00017f80abcdfe");
        assert_eq!(json["confidence"], 0.5);

        assert_eq!(repo.recent_identities(3).await.unwrap().len(), 3);
        assert!(repo.recent_identities(0).await.unwrap().is_empty());
    }

    pub(crate) async fn campaign_snapshot_shape_order_and_limit(db: Db) {
        let Db {
            repo,
            w,
            engine,
            _guard,
            ..
        } = db;
        for n in 0..52 {
            let at = format!("2026-06-20 14:{n:02}:00.000000");
            w.upsert_campaign(&campaign(&format!("c-{n:02}"), &at))
                .await
                .unwrap();
        }
        let mut merged = campaign("c-merged", "2026-06-20 15:30:00.000000");
        merged.merged_into_uuid = Some("c-00".into());
        w.upsert_campaign(&merged).await.unwrap();

        let rows = repo.recent_campaigns(50).await.unwrap();
        let uuids: Vec<String> = rows.iter().map(|r| r.uuid.clone()).collect();
        let expected: Vec<String> = (2..52).rev().map(|n| format!("c-{n:02}")).collect();
        assert_eq!(uuids, expected);
        let mut want = campaign("c-51", "2026-06-20 14:51:00.000000");
        want.last_seen_at = want.last_seen_at.map(|at| stored(engine, at));
        assert_eq!(rows[0], want);
        assert_eq!(
            keys(&rows[0]),
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
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(json["created_at"], "2026-06-20T09:00:00");
        assert_eq!(json["payload_simhashes"], "[123, 456]");
    }

    pub(crate) async fn orchestrator_snapshot_newest_first(db: Db) {
        let Db {
            repo, w, _guard, ..
        } = db;
        for n in 0..53 {
            let ts = format!("2026-06-20 08:{n:02}:00.000000");
            w.insert_orchestrator_event(&event(&format!("ev-{n:02}"), &ts, n % 2 == 0))
                .await
                .unwrap();
        }
        w.insert_orchestrator_event(&event("tie-1", "2026-06-20 09:00:00.000000", true))
            .await
            .unwrap();
        w.insert_orchestrator_event(&event("tie-2", "2026-06-20 09:00:00.000000", false))
            .await
            .unwrap();
        let err = w
            .insert_orchestrator_event(&event("tie-2", "2026-06-20 09:00:00.000000", false))
            .await;
        assert!(matches!(err, Err(RepoError::InvalidData(_))), "{err:?}");

        let rows = repo.recent_orchestrator_events(50).await.unwrap();
        let uuids: Vec<String> = rows.iter().map(|r| r.uuid.clone()).collect();
        let mut expected = vec!["tie-2".to_owned(), "tie-1".to_owned()];
        expected.extend((5..53).rev().map(|n| format!("ev-{n:02}")));
        assert_eq!(uuids, expected);
        assert_eq!(rows[2], event("ev-52", "2026-06-20 08:52:00.000000", true));
        assert!(!rows[3].success);
        assert_eq!(
            keys(&rows[2]),
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
        let json = serde_json::to_value(&rows[2]).unwrap();
        assert_eq!(json["ts"], "2026-06-20T08:52:00");
        assert_eq!(json["success"], true);
        assert_eq!(json["payload"], r#"{"bytes": 10, "status": 200}"#);
    }

    /// Pending newest first, then applying newest first (ties: highest id
    /// first); other states and other topologies left out; `applied_at`
    /// written aware renders with `Z` where the engine keeps the zone.
    pub(crate) async fn topology_snapshot_pending_then_applying(db: Db) {
        let Db {
            repo,
            w,
            engine,
            _guard,
            ..
        } = db;
        w.upsert_topology("topo-1", "maze one", "active")
            .await
            .unwrap();
        w.upsert_topology("topo-2", "maze two", "pending")
            .await
            .unwrap();
        w.upsert_topology("topo-3", "maze three", "degraded")
            .await
            .unwrap();
        let err = w.upsert_topology("topo-4", "maze one", "active").await;
        assert!(matches!(err, Err(RepoError::InvalidData(_))), "{err:?}");

        let mut applying_old = mutation("m3", "topo-1", "applying", "2026-06-20 12:00:02.000000");
        applying_old.applied_at = Some(t("2026-06-20T12:00:05.254321+00:00"));
        applying_old.reason = Some("in progress".into());
        for m in [
            mutation("m1", "topo-1", "pending", "2026-06-20 12:00:01.000000"),
            mutation("m2", "topo-1", "pending", "2026-06-20 12:00:03.000000"),
            applying_old.clone(),
            mutation("m4", "topo-1", "applying", "2026-06-20 12:00:04.000000"),
            mutation("m5", "topo-1", "applied", "2026-06-20 12:00:09.000000"),
            mutation("m6", "topo-1", "failed", "2026-06-20 12:00:09.000000"),
            mutation("m7", "topo-1", "pending", "2026-06-20 12:00:03.000000"),
            mutation("m8", "topo-2", "pending", "2026-06-20 12:00:09.000000"),
        ] {
            w.upsert_mutation(&m).await.unwrap();
        }

        let snapshot = repo.topology_snapshot("topo-1").await.unwrap().unwrap();
        assert_eq!(snapshot.status, "active");
        let order: Vec<&str> = snapshot.in_flight.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(order, ["m7", "m2", "m1", "m4", "m3"]);
        let m3 = &snapshot.in_flight[4];
        let mut want = applying_old;
        want.applied_at = want.applied_at.map(|at| stored(engine, at));
        assert_eq!(m3, &want);
        assert_eq!(
            keys(m3),
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
        let json = serde_json::to_value(m3).unwrap();
        assert_eq!(json["requested_at"], "2026-06-20T12:00:02");
        assert_eq!(
            json["applied_at"],
            match engine {
                Engine::Memory | Engine::Sqlite => "2026-06-20T12:00:05.254321Z",
                Engine::Postgres => "2026-06-20T12:00:05.254321",
                Engine::Mysql => "2026-06-20T12:00:05",
            }
        );
        assert_eq!(json["payload"], r#"{"name":"web03","lan":"dmz"}"#);

        let two = repo.topology_snapshot("topo-2").await.unwrap().unwrap();
        assert_eq!(two.status, "pending");
        assert_eq!(two.in_flight.len(), 1);
        let three = repo.topology_snapshot("topo-3").await.unwrap().unwrap();
        assert_eq!(
            (three.status.as_str(), three.in_flight.len()),
            ("degraded", 0)
        );
        assert_eq!(repo.topology_snapshot("no-such").await.unwrap(), None);
    }

    pub(crate) async fn max_log_id_is_zero_when_empty(db: Db) {
        let Db {
            repo, w, _guard, ..
        } = db;
        assert_eq!(repo.max_log_id().await.unwrap(), 0);
        let mut last = 0;
        for n in 0..3 {
            last = w
                .insert_log(&log(&format!("2026-06-20 12:00:0{n}"), "d", "s", "e", "ip"))
                .await
                .unwrap();
        }
        assert_eq!(repo.max_log_id().await.unwrap(), last);
        assert_eq!(last, 3);
    }

    pub(crate) async fn logs_after_id_ascend_from_the_cursor_within_the_limit(db: Db) {
        let Db {
            repo, w, _guard, ..
        } = db;
        for n in 0..5 {
            w.insert_log(&log(&format!("2026-06-20 12:00:0{n}"), "d", "s", "e", "ip"))
                .await
                .unwrap();
        }
        let all = LogFilter::default();
        assert_eq!(
            log_ids(&repo.logs_after_id(0, 2, &all).await.unwrap()),
            [1, 2]
        );
        assert_eq!(
            log_ids(&repo.logs_after_id(2, 50, &all).await.unwrap()),
            [3, 4, 5]
        );
        assert!(repo.logs_after_id(5, 50, &all).await.unwrap().is_empty());
        assert_eq!(repo.logs_after_id(-1, 50, &all).await.unwrap().len(), 5);
        assert!(repo.logs_after_id(0, 0, &all).await.unwrap().is_empty());
    }

    /// A `logs` frame row: DECNET's column order, naive timestamp without a
    /// fraction when it has none, `fields` as a JSON string.
    pub(crate) async fn log_row_shape(db: Db) {
        let Db {
            repo, w, _guard, ..
        } = db;
        let mut row = log(
            "2026-06-20 11:59:58.000000",
            "web01",
            "ssh",
            "login",
            "203.0.113.7",
        );
        row.fields = r#"{"username":"root"}"#.into();
        row.msg = Some("Accepted password".into());
        row.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        let id = w.insert_log(&row).await.unwrap();
        let got = repo
            .logs_after_id(0, 50, &LogFilter::default())
            .await
            .unwrap();
        assert_eq!(got, [LogRow { id, ..row }]);
        assert_eq!(
            keys(&got[0]),
            [
                "id",
                "timestamp",
                "decky",
                "service",
                "event_type",
                "attacker_ip",
                "raw_line",
                "fields",
                "msg",
                "trace_id",
                "span_id",
            ]
        );
        let json = serde_json::to_value(&got[0]).unwrap();
        assert_eq!(json["timestamp"], "2026-06-20T11:59:58");
        assert_eq!(json["fields"], r#"{"username":"root"}"#);
        assert_eq!(json["span_id"], serde_json::Value::Null);
    }

    /// The rows every search case below reads.
    async fn seed_search_logs(w: &dyn decnet_repo::RepositoryWriter) {
        let rows = [
            (
                "2026-06-20 12:00:00",
                "web01",
                "ssh",
                "login",
                "203.0.113.7",
                "Accepted password for root from 203.0.113.7",
                r#"{"user": "root", "port": 22, "ok": true}"#,
            ),
            (
                "2026-06-20 12:05:00",
                "web02",
                "http",
                "request",
                "198.51.100.2",
                "GET /index.php 50% done_x",
                r#"{"user": "admin", "path": "/index.php", "username": "admin"}"#,
            ),
            (
                "2026-06-20 12:10:00",
                "db01",
                "mysql",
                "login",
                "Unknown",
                "auth failure for user Root",
                r#"{"user": "ROOT", "port": "22"}"#,
            ),
            (
                "2026-06-21 00:00:01",
                "web01",
                "SSH",
                "logout",
                "203.0.113.7",
                "session closed",
                r#"{"user.name": "x", "username": "root"}"#,
            ),
            (
                "2026-06-20 12:15:00",
                "",
                "ftp",
                "",
                "192.0.2.1",
                r"back\slash here",
                "{}",
            ),
        ];
        for (timestamp, decky, service, event_type, ip, raw, fields) in rows {
            let mut row = log(timestamp, decky, service, event_type, ip);
            row.raw_line = raw.into();
            row.fields = fields.into();
            w.insert_log(&row).await.unwrap();
        }
    }

    async fn search(repo: &dyn decnet_repo::Repository, search: &str) -> Vec<i64> {
        let filter = LogFilter::new(Some(search), None, None);
        let rows = repo
            .logs_after_id(0, 50, &filter)
            .await
            .unwrap_or_else(|err| panic!("{search:?}: {err}"));
        log_ids(&rows)
    }

    /// `key:value` on the four columns: equality, with each engine's
    /// collation (case-insensitive on MySQL).
    pub(crate) async fn search_column_equality(db: Db) {
        let Db {
            repo,
            w,
            engine,
            _guard,
            ..
        } = db;
        seed_search_logs(w.as_ref()).await;
        let repo = repo.as_ref();
        let mysql = engine == Engine::Mysql;
        assert_eq!(search(repo, "decky:web01").await, [1, 4]);
        assert_eq!(
            search(repo, "service:ssh").await,
            if mysql { vec![1, 4] } else { vec![1] }
        );
        assert_eq!(search(repo, "event:login").await, [1, 3]);
        for key in ["attacker", "attacker-ip", "attacker_ip"] {
            assert_eq!(
                search(repo, &format!("{key}:203.0.113.7")).await,
                [1, 4],
                "{key}"
            );
        }
        assert_eq!(search(repo, "attacker:Unknown").await, [3]);
        // An empty value matches the empty string.
        assert_eq!(search(repo, "decky:").await, [5]);
        assert_eq!(search(repo, "event:").await, [5]);
        assert_eq!(
            search(repo, "decky:WEB01").await,
            if mysql { vec![1, 4] } else { vec![] }
        );
        // Terms AND together.
        assert_eq!(search(repo, "decky:web01 event:logout").await, [4]);
        assert_eq!(
            search(repo, "decky:web01 event:request").await,
            Vec::<i64>::new()
        );
    }

    /// A bare token: `LIKE %token%` on raw_line, decky, service and
    /// attacker_ip, ASCII case folded, `%` and `_` as wildcards; quotes group
    /// words; a backslash is literal except on MySQL, where it escapes.
    pub(crate) async fn search_free_text(db: Db) {
        let Db {
            repo,
            w,
            engine,
            _guard,
            ..
        } = db;
        seed_search_logs(w.as_ref()).await;
        let repo = repo.as_ref();
        assert_eq!(search(repo, "ssh").await, [1, 4]);
        assert_eq!(search(repo, "root").await, [1, 3]);
        assert_eq!(search(repo, "ROOT").await, [1, 3]);
        assert_eq!(search(repo, "50%").await, [2]);
        assert_eq!(search(repo, "d_ne").await, [2]);
        assert_eq!(search(repo, "GET%php").await, [2]);
        assert_eq!(search(repo, "Unknown").await, [3]);
        // Not event_type, msg or fields.
        assert_eq!(search(repo, "logout").await, Vec::<i64>::new());
        assert_eq!(search(repo, "username").await, Vec::<i64>::new());
        // Quoting groups words; an unbalanced quote splits on white space.
        assert_eq!(search(repo, r#""for root""#).await, [1]);
        assert_eq!(search(repo, "'user Root'").await, [3]);
        assert_eq!(search(repo, r#""for root"#).await, Vec::<i64>::new());
        assert_eq!(search(repo, "ssh web01").await, [1, 4]);
        // shlex turns `back\\slash` into `back\slash`.
        assert_eq!(
            search(repo, r"back\\slash").await,
            if engine == Engine::Mysql {
                vec![]
            } else {
                vec![5]
            }
        );
    }

    /// Any other key is a top-level JSON key of `fields`: SQLite (and the
    /// memory backend and PostgreSQL, which follow it) compares a text bind
    /// with `json_extract`, so only JSON strings match; MySQL unquotes, so
    /// numbers match their text and booleans `true`/`false`.
    pub(crate) async fn search_json_keys(db: Db) {
        let Db {
            repo,
            w,
            engine,
            _guard,
            ..
        } = db;
        seed_search_logs(w.as_ref()).await;
        let repo = repo.as_ref();
        let mysql = engine == Engine::Mysql;
        // Case-sensitive everywhere (MySQL's JSON_UNQUOTE gives utf8mb4_bin).
        assert_eq!(search(repo, "user:root").await, [1]);
        assert_eq!(search(repo, "user:admin").await, [2]);
        assert_eq!(
            search(repo, "port:22").await,
            if mysql { vec![1, 3] } else { vec![3] }
        );
        assert_eq!(
            search(repo, "ok:true").await,
            if mysql { vec![1] } else { vec![] }
        );
        // The key is reduced to [A-Za-z0-9_]: `user.name` is `username`.
        assert_eq!(search(repo, "user.name:root").await, [4]);
        // Nothing left of the key: the token is ignored.
        assert_eq!(search(repo, "%.:x").await, [1, 2, 3, 4, 5]);
        // Only the first colon splits: the value keeps the rest.
        assert_eq!(search(repo, "path:/index.php:x").await, Vec::<i64>::new());
        assert_eq!(search(repo, "path:/index.php").await, [2]);
        // Each token binds its own value.
        assert_eq!(search(repo, "user:admin username:admin").await, [2]);
        assert_eq!(
            search(repo, "user:admin username:root").await,
            Vec::<i64>::new()
        );
        assert_eq!(search(repo, "decky:web01 username:root").await, [4]);
    }

    /// Malformed `fields` JSON under a JSON-key term fails the query on
    /// SQLite (and memory, PostgreSQL); MariaDB's JSON_EXTRACT returns NULL
    /// with a warning, so the row just does not match.
    pub(crate) async fn search_json_key_on_malformed_fields(db: Db) {
        let Db {
            repo,
            w,
            engine,
            _guard,
            ..
        } = db;
        let mut row = log("2026-06-20 12:00:00", "web01", "ssh", "login", "ip");
        row.fields = "{not json".into();
        w.insert_log(&row).await.unwrap();
        let mut good = row.clone();
        good.fields = r#"{"user": "root"}"#.into();
        w.insert_log(&good).await.unwrap();

        let filter = LogFilter::new(Some("user:root"), None, None);
        let res = repo.logs_after_id(0, 50, &filter).await;
        match engine {
            Engine::Mysql => assert_eq!(log_ids(&res.unwrap()), [2]),
            _ => assert!(matches!(res, Err(RepoError::Query(_))), "{res:?}"),
        }
        // Without a JSON-key term the row is read like any other.
        let plain = LogFilter::new(Some("web01"), None, None);
        assert_eq!(
            log_ids(&repo.logs_after_id(0, 50, &plain).await.unwrap()),
            [1, 2]
        );
    }

    /// Time bounds are bound as strings: text comparison with the stored
    /// `YYYY-MM-DD HH:MM:SS.ffffff` on SQLite (memory and PostgreSQL follow
    /// it), server-side conversion to DATETIME on MySQL.
    pub(crate) async fn time_bounds(db: Db) {
        let Db {
            repo,
            w,
            engine,
            _guard,
            ..
        } = db;
        for ts in [
            "2026-06-20 11:59:59",
            "2026-06-20 12:00:00",
            "2026-06-20 12:00:01",
            "2026-06-21 00:00:00",
        ] {
            w.insert_log(&log(ts, "d", "s", "e", "ip")).await.unwrap();
        }
        let window = |start: Option<&str>, end: Option<&str>| {
            let repo = repo.clone();
            let filter = LogFilter::new(None, start, end);
            async move { log_ids(&repo.logs_after_id(0, 50, &filter).await.unwrap()) }
        };
        let mysql = engine == Engine::Mysql;
        assert_eq!(window(Some("2026-06-20 12:00:00"), None).await, [2, 3, 4]);
        // The stored text has `.000000`: an end on that second excludes it
        // as text; MySQL compares datetimes.
        assert_eq!(
            window(None, Some("2026-06-20 12:00:00")).await,
            if mysql { vec![1, 2] } else { vec![1] }
        );
        assert_eq!(
            window(Some("2026-06-20 12:00:00"), Some("2026-06-20 12:00:01")).await,
            if mysql { vec![2, 3] } else { vec![2] }
        );
        // A `T` sorts after the space: as text a start excludes the whole
        // day and an end includes it.
        assert_eq!(
            window(Some("2026-06-20T12:00:00"), None).await,
            if mysql { vec![2, 3, 4] } else { vec![4] }
        );
        assert_eq!(
            window(None, Some("2026-06-20T00:00:00")).await,
            if mysql { vec![] } else { vec![1, 2, 3] }
        );
        // Empty bounds are absent.
        assert_eq!(window(Some(""), Some("")).await, [1, 2, 3, 4]);
        if !mysql {
            // Prefixes act as prefixes.
            assert_eq!(window(Some("2026-06-21"), None).await, [4]);
            assert_eq!(window(None, Some("2026-06-20 12")).await, [1]);
            assert_eq!(window(Some("2026-06"), None).await, [1, 2, 3, 4]);
            // A purely numeric bound is a number, below every text.
            for numeric in ["2026", " 2026 ", "1e3", "-1"] {
                assert_eq!(window(Some(numeric), None).await, [1, 2, 3, 4], "{numeric}");
                assert_eq!(
                    window(None, Some(numeric)).await,
                    Vec::<i64>::new(),
                    "{numeric}"
                );
            }
            // Text that only looks numeric stays text ('I' sorts after digits).
            assert_eq!(window(Some("0x10"), None).await, [1, 2, 3, 4]);
            assert_eq!(window(None, Some("Infinity")).await, [1, 2, 3, 4]);
            assert_eq!(window(Some("Infinity"), None).await, Vec::<i64>::new());
            assert_eq!(window(None, Some("3")).await, Vec::<i64>::new());
        }
    }

    /// 900 s buckets on the epoch grid, non-empty only, ascending, the
    /// filters applied. SQLite up to 3.4x reads the time at millisecond
    /// precision, so 10:14:59.999999 is in the 10:15 bucket (memory and
    /// PostgreSQL follow it); MySQL stores whole seconds (MariaDB truncates).
    pub(crate) async fn histogram_buckets(db: Db) {
        let Db {
            repo,
            w,
            ms_rounding,
            _guard,
            ..
        } = db;
        for (ts, service) in [
            ("2026-06-20 10:00:00.000000", "ssh"),
            ("2026-06-20 10:14:59.999400", "ssh"),
            ("2026-06-20 10:14:59.999999", "ssh"),
            ("2026-06-20 10:15:00.000000", "ssh"),
            ("2026-06-20 11:00:00.000000", "ssh"),
            ("2026-06-20 11:05:00.000000", "http"),
        ] {
            w.insert_log(&log(ts, "web01", service, "e", "ip"))
                .await
                .unwrap();
        }
        let all = LogFilter::default();
        let got = repo.log_histogram(&all, 15).await.unwrap();
        if !ms_rounding {
            assert_eq!(
                got,
                [
                    bucket("2026-06-20 10:00:00", 3),
                    bucket("2026-06-20 10:15:00", 1),
                    bucket("2026-06-20 11:00:00", 2),
                ]
            );
        } else {
            assert_eq!(
                got,
                [
                    bucket("2026-06-20 10:00:00", 2),
                    bucket("2026-06-20 10:15:00", 2),
                    bucket("2026-06-20 11:00:00", 2),
                ]
            );
        }
        let http = LogFilter::new(Some("service:http"), None, None);
        assert_eq!(
            repo.log_histogram(&http, 15).await.unwrap(),
            [bucket("2026-06-20 11:00:00", 1)]
        );
        let late = LogFilter::new(None, Some("2026-06-20 10:15:00"), None);
        assert_eq!(
            repo.log_histogram(&late, 60).await.unwrap(),
            [
                bucket("2026-06-20 10:00:00", 1),
                bucket("2026-06-20 11:00:00", 2)
            ]
        );
        assert_eq!(
            repo.log_histogram(&all, 60).await.unwrap(),
            [
                bucket("2026-06-20 10:00:00", 4),
                bucket("2026-06-20 11:00:00", 2)
            ]
        );
        // An interval of 0 minutes is 1.
        let minutes = repo.log_histogram(&all, 0).await.unwrap();
        assert_eq!(minutes.len(), 5);
        assert_eq!(minutes[0].time.as_deref(), Some("2026-06-20 10:00:00"));
        let nothing = LogFilter::new(Some("decky:nowhere"), None, None);
        assert!(repo.log_histogram(&nothing, 15).await.unwrap().is_empty());
    }

    pub(crate) async fn log_stats_count_logs_attackers_and_deckies(db: Db) {
        let Db {
            repo, w, _guard, ..
        } = db;
        assert_eq!(
            repo.log_stats().await.unwrap(),
            decnet_repo::LogStats::default()
        );
        for ip in ["198.51.100.1", "198.51.100.1", "Unknown", "198.51.100.2"] {
            w.insert_log(&log("2026-06-20 12:00:00", "d", "s", "e", ip))
                .await
                .unwrap();
        }
        w.upsert_topology("topo-1", "maze", "active").await.unwrap();
        for (name, state) in [
            ("web01", "running"),
            ("web02", "running"),
            ("web03", "failed"),
            ("web04", "torn_down"),
        ] {
            w.insert_topology_decky("topo-1", name, state)
                .await
                .unwrap();
        }
        assert_eq!(
            repo.log_stats().await.unwrap(),
            decnet_repo::LogStats {
                total_logs: 4,
                unique_attackers: 3,
                running_topology_deckies: 2,
                topology_deckies: 4,
            }
        );
        // The filters of /stream never apply to stats.
    }
}

/// Run every case in `cases` against each backend.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::cases::$case(super::backends::memory()).await;
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod svc_postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let url = test_support::require_service!(test_support::Service::Postgres);
                    super::cases::$case(super::backends::postgres(&url).await).await;
                }
            )*
        }

        #[cfg(feature = "sqlite")]
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    super::cases::$case(super::backends::sqlite::db().await).await;
                }
            )*
        }

        #[cfg(feature = "mysql")]
        mod svc_mysql {
            $(
                #[tokio::test]
                async fn $case() {
                    let url = test_support::require_service!(test_support::Service::Mysql);
                    super::cases::$case(super::backends::mysql::db(&url).await).await;
                }
            )*
        }
    };
}

suite!(
    latest_per_primitive_highest_ts_then_highest_id,
    latest_per_primitive_single_precision_ties,
    latest_per_primitive_empty_without_rows,
    json_values_of_every_type_round_trip,
    json_numbers_follow_each_engines_storage,
    unknown_uuids_are_none,
    uuid_lookups_follow_the_engines_collation,
    attackers_upsert_and_read_back,
    attackers_of_identity_sorted,
    revoke_then_is_token_revoked,
    bulk_account_reads_list_every_user_and_jti,
    upsert_observation_is_idempotent_on_evidence_and_primitive,
    observation_of_unknown_attacker_is_invalid_data,
    reused_observation_id_is_invalid_data,
    tokens_valid_from_round_trips,
    create_user_replaces_by_uuid,
    taken_username_is_invalid_data,
    delete_user_removes_it,
    set_attacker_identity_links_and_unlinks,
    ping_answers,
    identity_snapshot_shape_order_and_limit,
    campaign_snapshot_shape_order_and_limit,
    orchestrator_snapshot_newest_first,
    topology_snapshot_pending_then_applying,
    max_log_id_is_zero_when_empty,
    logs_after_id_ascend_from_the_cursor_within_the_limit,
    log_row_shape,
    search_column_equality,
    search_free_text,
    search_json_keys,
    search_json_key_on_malformed_fields,
    time_bounds,
    histogram_buckets,
    log_stats_count_logs_attackers_and_deckies,
);

#[tokio::test]
async fn memory_switched_off_is_unavailable() {
    use decnet_repo::Repository;
    let memory = MemoryRepository::new();
    memory.set_available(false);
    let repo: std::sync::Arc<dyn Repository> = std::sync::Arc::new(memory.clone());
    assert!(repo.ping().await.is_err_and(|err| err.is_unavailable()));
    memory.set_available(true);
    repo.ping().await.unwrap();
}

#[cfg(feature = "postgres")]
mod pg {
    //! PostgreSQL helpers, and PostgreSQL-only tests in `svc_postgres`.

    use decnet_repo::{MIGRATIONS, PgConfig, PgRepository};

    /// A repository in `schema`, migrated.
    pub(crate) async fn migrated(url: &str, schema: &str) -> PgRepository {
        let repo = PgRepository::connect(PgConfig {
            pool_size: 4,
            ..PgConfig::new(url).with_schema(schema)
        })
        .expect("config");
        let applied = repo.migrate().await.expect("migrate");
        assert_eq!(applied.len(), MIGRATIONS.len());
        repo
    }

    mod svc_postgres {
        use std::time::{Duration, Instant, UNIX_EPOCH};

        use decnet_repo::prelude::*;
        use decnet_repo::{MIGRATIONS, PgConfig, PgRepository, RepoError};
        use test_support::Service;
        use test_support::pg::{connect_in_schema, fresh_schema};

        fn all_versions() -> Vec<i32> {
            MIGRATIONS.iter().map(|(version, _, _)| *version).collect()
        }

        #[tokio::test]
        async fn migrate_is_idempotent() {
            let url = test_support::require_service!(Service::Postgres);
            let (schema, _guard) = fresh_schema(&url).await;
            let repo = PgRepository::connect(PgConfig::new(&url).with_schema(&schema)).unwrap();
            assert_eq!(repo.migrate().await.unwrap(), all_versions());
            assert_eq!(repo.migrate().await.unwrap(), Vec::<i32>::new());
            let client = connect_in_schema(&url, &schema).await;
            let recorded: Vec<i32> = client
                .query(
                    "SELECT version FROM decnet_events_schema_version ORDER BY version",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|row| row.get(0))
                .collect();
            assert_eq!(recorded, all_versions());
        }

        #[tokio::test]
        async fn migrate_creates_a_missing_schema() {
            let url = test_support::require_service!(Service::Postgres);
            let (schema, _guard) = fresh_schema(&url).await;
            let inner = format!("{schema}_inner");
            let repo = PgRepository::connect(PgConfig::new(&url).with_schema(&inner)).unwrap();
            let applied = repo.migrate().await;
            // Cleanup of the second schema whatever happened.
            test_support::pg::drop_schema(&url, &inner).await.unwrap();
            assert_eq!(applied.unwrap(), all_versions());
        }

        #[tokio::test]
        async fn concurrent_migrations_apply_once() {
            let url = test_support::require_service!(Service::Postgres);
            let (schema, _guard) = fresh_schema(&url).await;
            let repos: Vec<PgRepository> = (0..4)
                .map(|_| PgRepository::connect(PgConfig::new(&url).with_schema(&schema)).unwrap())
                .collect();
            let handles: Vec<_> = repos
                .into_iter()
                .map(|repo| tokio::spawn(async move { repo.migrate().await }))
                .collect();
            let mut total = Vec::new();
            for handle in handles {
                total.extend(handle.await.unwrap().unwrap());
            }
            assert_eq!(total, all_versions());
        }

        #[tokio::test]
        async fn migrate_keeps_existing_decnet_tables_and_rows() {
            let url = test_support::require_service!(Service::Postgres);
            let (schema, _guard) = fresh_schema(&url).await;
            let client = connect_in_schema(&url, &schema).await;
            // A DECNET database as its own ORM made it: extra columns, other index
            // names, a `timestamp` column, and rows.
            client
                .batch_execute(
                    "CREATE TABLE users (uuid text PRIMARY KEY, username text UNIQUE NOT NULL,
                     password_hash text NOT NULL, role text NOT NULL DEFAULT 'viewer',
                     must_change_password boolean NOT NULL DEFAULT false,
                     tokens_valid_from timestamp NULL, created_by text);
                 CREATE TABLE attackers (uuid text PRIMARY KEY, ip text NOT NULL,
                     identity_id text NULL, first_seen timestamptz NOT NULL DEFAULT now(),
                     last_seen timestamptz NOT NULL DEFAULT now(), country text);
                 CREATE TABLE observations (id text PRIMARY KEY, identity_ref text NULL,
                     primitive text NOT NULL, value jsonb NOT NULL,
                     confidence double precision NOT NULL,
                     window_start_ts double precision NOT NULL,
                     window_end_ts double precision NOT NULL, source text NOT NULL,
                     evidence_ref text NOT NULL, envelope_v integer NOT NULL,
                     ts double precision NOT NULL,
                     attacker_uuid text NOT NULL REFERENCES attackers(uuid),
                     extra text, UNIQUE (evidence_ref, primitive));
                 CREATE INDEX ix_decnet_obs ON observations (attacker_uuid, primitive, ts);
                 INSERT INTO users VALUES ('u1', 'alice', 'h', 'admin', false,
                     '2024-01-02 03:04:05', 'seed');
                 INSERT INTO attackers (uuid, ip, country) VALUES ('a1', '192.0.2.1', 'NL');
                 INSERT INTO observations VALUES ('o1', NULL, 'p', '{\"x\": 1}', 0.5, 1, 2,
                     'decnet', 'ev1', 1, 3, 'a1', 'kept');",
                )
                .await
                .unwrap();

            let repo = PgRepository::connect(PgConfig::new(&url).with_schema(&schema)).unwrap();
            assert_eq!(repo.migrate().await.unwrap(), all_versions());

            let row = client
                .query_one(
                    "SELECT u.created_by, a.country, o.extra,
                        (SELECT count(*) FROM pg_index i
                             WHERE i.indrelid = 'observations'::regclass
                               AND ARRAY(SELECT unnest(i.indkey::int2[])) = ARRAY(
                                   SELECT a.attnum
                                   FROM unnest(ARRAY['attacker_uuid', 'primitive', 'ts'])
                                       WITH ORDINALITY AS c(name, ord)
                                   JOIN pg_attribute a
                                       ON a.attrelid = i.indrelid AND a.attname = c.name
                                   ORDER BY c.ord))
                 FROM users u, attackers a, observations o",
                    &[],
                )
                .await
                .unwrap();
            assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("seed"));
            assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("NL"));
            assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("kept"));
            assert_eq!(row.get::<_, i64>(3), 1, "no duplicate index built");

            // And the repository reads the old rows.
            let alice = repo.user_by_uuid("u1").await.unwrap().unwrap();
            assert_eq!(alice.role, "admin");
            assert_eq!(
                alice.tokens_valid_from,
                Some(UNIX_EPOCH + Duration::from_secs(1_704_164_645)) // 2024-01-02T03:04:05Z
            );
            let latest = repo.latest_observation_per_primitive("a1").await.unwrap();
            assert_eq!(latest.len(), 1);
            assert_eq!(latest[0].value, serde_json::json!({"x": 1}));
        }

        #[tokio::test]
        async fn timestamp_without_time_zone_reads_and_writes_as_utc() {
            let url = test_support::require_service!(Service::Postgres);
            let (schema, _guard) = fresh_schema(&url).await;
            let client = connect_in_schema(&url, &schema).await;
            // The repository's sessions run in a non-UTC TimeZone (an option kept
            // from the URL), to show the binary path does not depend on it.
            let sep = if url.contains('?') { '&' } else { '?' };
            let url_ny = format!("{url}{sep}options=-c%20TimeZone%3DAmerica/New_York");
            let repo = PgRepository::connect(PgConfig::new(&url_ny).with_schema(&schema)).unwrap();
            repo.migrate().await.unwrap();
            client
                .batch_execute(
                    "ALTER TABLE users ALTER COLUMN tokens_valid_from TYPE timestamp
                     USING tokens_valid_from AT TIME ZONE 'UTC';
                 SET TimeZone = 'Asia/Tokyo';
                 INSERT INTO users (uuid, username, password_hash, tokens_valid_from)
                     VALUES ('u1', 'alice', 'h', '2024-03-01 12:34:56.789012');",
                )
                .await
                .unwrap();
            let valid_from = repo
                .user_by_uuid("u1")
                .await
                .unwrap()
                .unwrap()
                .tokens_valid_from;
            // 2024-03-01T12:34:56.789012Z
            let expected = UNIX_EPOCH + Duration::new(1_709_296_496, 789_012_000);
            assert_eq!(valid_from, Some(expected));

            // Writing through the repository stores the UTC wall clock.
            let mut bob = repo.user_by_uuid("u1").await.unwrap().unwrap();
            bob.uuid = "u2".into();
            bob.username = "bob".into();
            bob.tokens_valid_from = Some(UNIX_EPOCH + Duration::new(1_704_164_645, 500_000_000));
            repo.create_user(&bob).await.unwrap();
            let text: String = client
                .query_one(
                    "SELECT tokens_valid_from::text FROM users WHERE uuid = 'u2'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(text, "2024-01-02 03:04:05.5");
            assert_eq!(repo.user_by_uuid("u2").await.unwrap(), Some(bob));
        }

        #[tokio::test]
        async fn exhausted_pool_is_unavailable_after_wait_timeout() {
            let url = test_support::require_service!(Service::Postgres);
            let (schema, _guard) = fresh_schema(&url).await;
            let wait = Duration::from_millis(300);
            let repo = PgRepository::connect(PgConfig {
                pool_size: 1,
                wait_timeout: wait,
                ..PgConfig::new(&url).with_schema(&schema)
            })
            .unwrap();
            repo.migrate().await.unwrap();

            // Hold the only pooled connection: a call blocked on a table lock.
            let mut locker = connect_in_schema(&url, &schema).await;
            let tx = locker.transaction().await.unwrap();
            tx.batch_execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
                .await
                .unwrap();
            let blocked = tokio::spawn({
                let repo = repo.clone();
                async move { repo.user_by_uuid("u1").await }
            });
            // Until the blocked call waits on the lock (so holds the pool's
            // connection): its lock request is in pg_locks, not granted.
            let locked = &tx;
            test_support::http::poll_until(
                Duration::from_secs(5),
                "the call blocked on the lock",
                || async move {
                    let waiting: i64 = locked
                        .query_one(
                            "SELECT count(*) FROM pg_locks \
                             WHERE relation = 'users'::regclass AND NOT granted",
                            &[],
                        )
                        .await
                        .unwrap()
                        .get(0);
                    (waiting >= 1).then_some(())
                },
            )
            .await;

            let started = Instant::now();
            let err = repo.ping().await;
            let elapsed = started.elapsed();
            assert!(matches!(err, Err(RepoError::Unavailable(_))), "{err:?}");
            assert!(elapsed >= wait - Duration::from_millis(50), "{elapsed:?}");
            assert!(elapsed < wait + Duration::from_secs(1), "{elapsed:?}");

            // Released, the blocked call completes and the pool serves again.
            tx.rollback().await.unwrap();
            assert_eq!(blocked.await.unwrap().unwrap(), None);
            repo.ping().await.unwrap();
        }

        #[tokio::test]
        async fn statement_timeout_is_unavailable() {
            let url = test_support::require_service!(Service::Postgres);
            let (schema, _guard) = fresh_schema(&url).await;
            let repo = PgRepository::connect(PgConfig {
                statement_timeout: Some(Duration::from_millis(200)),
                ..PgConfig::new(&url).with_schema(&schema)
            })
            .unwrap();
            repo.migrate().await.unwrap();
            let mut locker = connect_in_schema(&url, &schema).await;
            let tx = locker.transaction().await.unwrap();
            tx.batch_execute("LOCK TABLE attackers IN ACCESS EXCLUSIVE MODE")
                .await
                .unwrap();
            let started = Instant::now();
            let err = repo.attacker_by_uuid("a").await;
            assert!(matches!(err, Err(RepoError::Unavailable(_))), "{err:?}");
            assert!(started.elapsed() < Duration::from_secs(2));
            tx.rollback().await.unwrap();
            assert_eq!(repo.attacker_by_uuid("a").await.unwrap(), None);
        }

        #[tokio::test]
        async fn sql_error_is_query() {
            let url = test_support::require_service!(Service::Postgres);
            let (schema, _guard) = fresh_schema(&url).await;
            // Not migrated: the tables do not exist in this schema.
            let repo = PgRepository::connect(PgConfig::new(&url).with_schema(&schema)).unwrap();
            let err = repo.attacker_by_uuid("a").await;
            assert!(matches!(err, Err(RepoError::Query(_))), "{err:?}");
            repo.ping().await.unwrap();
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres_offline {
    //! PostgreSQL backend behaviour that needs no server.

    use std::time::{Duration, Instant};

    use decnet_repo::prelude::*;
    use decnet_repo::{PgConfig, PgRepository, RepoError};

    fn quick(url: &str) -> PgConfig {
        PgConfig {
            connect_timeout: Duration::from_millis(500),
            wait_timeout: Duration::from_millis(500),
            ..PgConfig::new(url)
        }
    }

    async fn assert_unavailable_within(repo: PgRepository, bound: Duration) {
        let started = Instant::now();
        let results = [
            repo.ping().await.map(drop),
            repo.attacker_by_uuid("a").await.map(drop),
            repo.latest_observation_per_primitive("a").await.map(drop),
            repo.user_by_uuid("u").await.map(drop),
            repo.is_token_revoked("j").await.map(drop),
        ];
        let elapsed = started.elapsed();
        for res in results {
            assert!(matches!(res, Err(RepoError::Unavailable(_))), "{res:?}");
        }
        assert!(elapsed < bound, "{elapsed:?}");
    }

    #[tokio::test]
    async fn unreachable_database_is_unavailable_fast() {
        // Port 1: nothing listens, the connection is refused at once.
        let repo = PgRepository::connect(quick("postgres://postgres@127.0.0.1:1/x")).unwrap();
        assert_unavailable_within(repo.clone(), Duration::from_secs(2)).await;
        let err = repo.migrate().await;
        assert!(matches!(err, Err(RepoError::Unavailable(_))), "{err:?}");
    }

    #[tokio::test]
    async fn silent_server_is_unavailable_within_connect_timeout() {
        // A listener that accepts and never answers: the start-up handshake
        // hangs, and only the connect timeout ends it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let repo = PgRepository::connect(quick(&format!("postgres://postgres@127.0.0.1:{port}/x")))
            .unwrap();
        // Five calls, each bounded by the 500 ms connect timeout.
        assert_unavailable_within(repo, Duration::from_millis(5 * 500 + 1500)).await;
        holder.abort();
    }

    #[test]
    fn connect_does_not_need_a_runtime_or_a_server() {
        let repo = PgRepository::connect(PgConfig::new("postgres://postgres@127.0.0.1:1/x"));
        assert!(repo.is_ok());
    }
}

#[cfg(feature = "postgres")]
mod pg_decnet {
    //! PostgreSQL: the schema check, and `migrate` refusing DECNET's schema.

    mod svc_postgres {
        use decnet_repo::{PgConfig, PgRepository, RepoError, SchemaItem};
        use test_support::Service;
        use test_support::pg::{connect_in_schema, fresh_schema};

        #[tokio::test]
        async fn migrate_refuses_a_database_with_alembic_version() {
            let url = test_support::require_service!(Service::Postgres);
            let (schema, _guard) = fresh_schema(&url).await;
            let client = connect_in_schema(&url, &schema).await;
            client
                .batch_execute(
                    "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
                     INSERT INTO alembic_version VALUES ('4a914b1d62a0');",
                )
                .await
                .unwrap();
            let repo = PgRepository::connect(PgConfig::new(&url).with_schema(&schema)).unwrap();
            let err = repo.migrate().await;
            assert!(matches!(err, Err(RepoError::DecnetOwnsSchema)), "{err:?}");
            let message = err.map(drop).unwrap_err().to_string();
            assert!(message.contains("alembic_version"), "{message}");
            assert!(message.contains("DECNET"), "{message}");
            // Nothing was created.
            let created: i64 = client
                .query_one(
                    "SELECT count(*) FROM information_schema.tables
                     WHERE table_schema = $1 AND table_name <> 'alembic_version'",
                    &[&schema],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(created, 0);
        }

        #[tokio::test]
        async fn check_schema_names_what_is_missing() {
            let url = test_support::require_service!(Service::Postgres);
            let (schema, _guard) = fresh_schema(&url).await;
            let repo = PgRepository::connect(PgConfig::new(&url).with_schema(&schema)).unwrap();
            // Nothing there yet: every table is named.
            match repo.check_schema().await {
                Err(RepoError::Schema(mismatch)) => {
                    assert_eq!(mismatch.missing.len(), decnet_repo::REQUIRED_COLUMNS.len());
                    assert!(mismatch.missing.contains(&SchemaItem::Table("logs".into())));
                }
                other => panic!("{other:?}"),
            }
            repo.migrate().await.unwrap();
            repo.check_schema().await.unwrap();
            let client = connect_in_schema(&url, &schema).await;
            client
                .batch_execute(
                    "DROP TABLE topology_mutations;
                     ALTER TABLE users DROP COLUMN tokens_valid_from;
                     ALTER TABLE logs DROP COLUMN span_id;",
                )
                .await
                .unwrap();
            let err = repo.check_schema().await.map(drop).unwrap_err();
            let message = err.to_string();
            for named in [
                "table topology_mutations",
                "column users.tokens_valid_from",
                "column logs.span_id",
            ] {
                assert!(message.contains(named), "{message}");
            }
        }
    }
}

#[cfg(feature = "sqlite")]
mod sqlite_only {
    //! SQLite: read-only, DECNET's writer holding locks, missing files,
    //! deadlines, the schema check.

    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use decnet_repo::prelude::*;
    use decnet_repo::{LogFilter, RepoError, SqliteConfig, SqliteRepository};
    use sqlx_core::connection::Connection;
    use sqlx_core::executor::Executor;
    use sqlx_core::query_scalar::query_scalar;

    use crate::backends::sqlite::{create, temp_path};

    const INSERT_LOG: &str = "INSERT INTO logs (timestamp, decky, service, event_type, \
         attacker_ip, raw_line, fields) VALUES ('2026-06-20 12:00:00.000000', 'd', 's', 'e', \
         'ip', 'raw', '{}')";

    fn repo(path: &std::path::Path, busy: Duration) -> SqliteRepository {
        SqliteRepository::connect(SqliteConfig {
            busy_timeout: busy,
            acquire_timeout: Duration::from_millis(500),
            ..SqliteConfig::new(path)
        })
        .unwrap()
    }

    /// In WAL mode (DECNET's) a reader never waits for the writer: with a
    /// write transaction open and uncommitted rows in it, every read answers
    /// at once with the last committed state.
    #[tokio::test]
    async fn wal_reader_reads_through_an_open_write_transaction() {
        let (file, pool) = create(true).await;
        let mut writer = pool.acquire().await.unwrap();
        writer.execute(INSERT_LOG).await.unwrap();
        writer.execute("BEGIN IMMEDIATE").await.unwrap();
        writer.execute(INSERT_LOG).await.unwrap();
        writer.execute(INSERT_LOG).await.unwrap();

        let reader = repo(file.path(), Duration::from_secs(5));
        let started = Instant::now();
        assert_eq!(reader.max_log_id().await.unwrap(), 1);
        let rows = reader
            .logs_after_id(0, 50, &LogFilter::default())
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(reader.log_stats().await.unwrap().total_logs, 1);
        reader.check_schema().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );

        writer.execute("COMMIT").await.unwrap();
        assert_eq!(reader.max_log_id().await.unwrap(), 3);
        drop(file);
    }

    /// DECNET's writer closed cleanly (the last connection checkpoints and
    /// removes `-wal` and `-shm`): a read-only reader still opens the WAL
    /// database, SQLite recreating the shared-memory file beside it.
    #[tokio::test]
    async fn wal_reader_opens_after_the_writer_closed() {
        let (file, pool) = create(true).await;
        pool.acquire()
            .await
            .unwrap()
            .execute(INSERT_LOG)
            .await
            .unwrap();
        pool.close().await;
        let mut wal = file.path().to_path_buf().into_os_string();
        wal.push("-wal");
        assert!(
            !std::path::Path::new(&wal).exists(),
            "the writer's close removed the WAL"
        );
        let reader = repo(file.path(), Duration::from_secs(5));
        assert_eq!(reader.max_log_id().await.unwrap(), 1);
        reader.check_schema().await.unwrap();
        drop(file);
    }

    /// In rollback-journal mode a committing writer locks readers out; the
    /// busy timeout makes the reader wait it out instead of failing with
    /// "database is locked".
    #[tokio::test]
    async fn rollback_journal_reader_waits_for_the_writer_within_busy_timeout() {
        let (file, pool) = create(false).await;
        let mut writer = pool.acquire().await.unwrap();
        // A reserved lock (BEGIN IMMEDIATE) does not stop readers.
        writer.execute("BEGIN IMMEDIATE").await.unwrap();
        writer.execute(INSERT_LOG).await.unwrap();
        let reader = repo(file.path(), Duration::from_secs(5));
        assert_eq!(reader.max_log_id().await.unwrap(), 0);
        writer.execute("COMMIT").await.unwrap();

        // An exclusive lock does, for as long as the writer holds it.
        writer.execute("BEGIN EXCLUSIVE").await.unwrap();
        writer.execute(INSERT_LOG).await.unwrap();
        let hold = Duration::from_millis(400);
        let release = tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            writer.execute("COMMIT").await.unwrap();
            writer
        });
        let started = Instant::now();
        let max = reader.max_log_id().await;
        let waited = started.elapsed();
        assert_eq!(max.unwrap(), 2, "read after the commit, no lock error");
        assert!(waited >= hold - Duration::from_millis(100), "{waited:?}");
        drop(release.await.unwrap());
        drop(file);
    }

    /// Past the busy timeout the call fails as "unavailable", never as a
    /// query error.
    #[tokio::test]
    async fn writer_holding_past_busy_timeout_is_unavailable() {
        let (file, pool) = create(false).await;
        let mut writer = pool.acquire().await.unwrap();
        writer.execute("BEGIN EXCLUSIVE").await.unwrap();
        writer.execute(INSERT_LOG).await.unwrap();
        let reader = repo(file.path(), Duration::from_millis(200));
        let started = Instant::now();
        let err = reader.max_log_id().await;
        assert!(matches!(err, Err(RepoError::Unavailable(_))), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // And the call deadline bounds a call whatever the busy timeout.
        let bounded = SqliteRepository::connect(SqliteConfig {
            busy_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_millis(300),
            ..SqliteConfig::new(file.path())
        })
        .unwrap();
        let started = Instant::now();
        let err = bounded.latest_observation_per_primitive("a").await;
        assert!(matches!(err, Err(RepoError::Unavailable(_))), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        writer.execute("ROLLBACK").await.unwrap();
        assert_eq!(reader.max_log_id().await.unwrap(), 0);
        drop(file);
    }

    #[tokio::test]
    async fn missing_file_is_unavailable_fast_and_never_created() {
        let file = temp_path();
        let reader = repo(file.path(), Duration::from_secs(5));
        let started = Instant::now();
        let results = [
            reader.ping().await.map(drop),
            reader.user_by_uuid("u").await.map(drop),
            reader.attacker_by_uuid("a").await.map(drop),
            reader.latest_observation_per_primitive("a").await.map(drop),
            reader.recent_identities(50).await.map(drop),
            reader.topology_snapshot("t").await.map(drop),
            reader.max_log_id().await.map(drop),
            reader.check_schema().await,
        ];
        for res in results {
            assert!(matches!(res, Err(RepoError::Unavailable(_))), "{res:?}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(!file.path().exists(), "a reader must not create the file");
    }

    /// The connections are read-only: the file's journal mode is left as
    /// DECNET set it, and nothing the repository runs can write.
    #[tokio::test]
    async fn reader_never_writes() {
        let (file, pool) = create(true).await;
        let reader = repo(file.path(), Duration::from_secs(5));
        reader.ping().await.unwrap();
        let mut conn = pool.acquire().await.unwrap();
        let mode: String = query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        drop(conn);
        // The same options the repository uses refuse a write.
        let options = sqlx_sqlite::SqliteConnectOptions::new()
            .filename(file.path())
            .read_only(true)
            .pragma("query_only", "ON");
        let mut ro = sqlx_sqlite::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        assert!(ro.execute(INSERT_LOG).await.is_err());
        drop(file);
    }

    #[tokio::test]
    async fn check_schema_names_what_is_missing() {
        let (file, pool) = create(true).await;
        let reader = Arc::new(repo(file.path(), Duration::from_secs(5)));
        reader.check_schema().await.unwrap();
        let mut conn = pool.acquire().await.unwrap();
        conn.execute(
            "DROP TABLE topology_deckies; ALTER TABLE observations DROP COLUMN envelope_v; \
             ALTER TABLE users DROP COLUMN role;",
        )
        .await
        .unwrap();
        match reader.check_schema().await {
            Err(RepoError::Schema(mismatch)) => {
                let message = mismatch.to_string();
                for named in [
                    "table topology_deckies",
                    "column observations.envelope_v",
                    "column users.role",
                ] {
                    assert!(message.contains(named), "{message}");
                }
                assert_eq!(mismatch.missing.len(), 3, "{message}");
            }
            other => panic!("{other:?}"),
        }
        // An empty file (no tables) lacks everything.
        let empty = temp_path();
        let pool = crate::backends::sqlite::writer_pool(empty.path(), true);
        pool.acquire()
            .await
            .unwrap()
            .execute("VACUUM")
            .await
            .unwrap();
        let err = repo(empty.path(), Duration::from_secs(5))
            .check_schema()
            .await;
        assert!(
            matches!(&err, Err(RepoError::Schema(m)) if m.missing.len() == decnet_repo::REQUIRED_COLUMNS.len()),
            "{err:?}"
        );
        drop(file);
    }

    /// Aware text (DECNET's mutator) and the ORM's naive text in one column
    /// both read, and a value the engine turned into a number is refused as
    /// invalid data rather than a panic.
    #[tokio::test]
    async fn odd_stored_values_read_or_fail_as_invalid_data() {
        let (file, pool) = create(true).await;
        let mut conn = pool.acquire().await.unwrap();
        conn.execute(
            "INSERT INTO topologies (id, name, mode, config_snapshot, status, status_changed_at, \
             created_at, version, needs_resync, email_personas, language_default) VALUES \
             ('t', 'n', 'unihost', '{}', 'active', '2026-06-20 12:00:00.000000', \
             '2026-06-20 12:00:00.000000', 1, 0, '[]', 'en');
             INSERT INTO topology_mutations VALUES ('m1', 't', 'add_lan', '{}', 'applying', \
             '2026-06-20 12:00:00.000000', '2026-06-20T14:00:05+02:00', NULL);
             INSERT INTO logs (timestamp, decky, service, event_type, attacker_ip, raw_line, \
             fields) VALUES (20260620, 'd', 's', 'e', 'ip', 'raw', '{}');",
        )
        .await
        .unwrap();
        let reader = repo(file.path(), Duration::from_secs(5));
        let snapshot = reader.topology_snapshot("t").await.unwrap().unwrap();
        let applied = snapshot.in_flight[0].applied_at.unwrap();
        assert_eq!(applied.to_string(), "2026-06-20T12:00:05Z");
        let err = reader.logs_after_id(0, 50, &LogFilter::default()).await;
        assert!(matches!(err, Err(RepoError::InvalidData(_))), "{err:?}");
        // DECNET's histogram gives such a row a NULL bucket.
        let buckets = reader
            .log_histogram(&LogFilter::default(), 15)
            .await
            .unwrap();
        assert_eq!(
            buckets,
            [decnet_repo::HistogramBucket {
                time: None,
                count: 1
            }]
        );
        drop(file);
    }
}

#[cfg(feature = "mysql")]
mod mysql_only {
    //! MySQL/MariaDB: the schema check, read-only sessions, time bounds.

    mod svc_mysql {
        use std::time::{Duration, Instant};

        use decnet_repo::prelude::*;
        use decnet_repo::{MysqlConfig, MysqlRepository, RepoError};
        use sqlx_core::connection::{ConnectOptions, Connection};
        use sqlx_core::executor::Executor;
        use test_support::Service;

        use crate::backends::mysql::{fresh_database, url_for};

        fn repo(url: &str) -> MysqlRepository {
            MysqlRepository::connect(MysqlConfig {
                acquire_timeout: Duration::from_secs(2),
                ..MysqlConfig::from_url(url).unwrap()
            })
            .unwrap()
        }

        async fn conn(url: &str) -> sqlx_mysql::MySqlConnection {
            let options: sqlx_mysql::MySqlConnectOptions = url.parse().unwrap();
            options.connect().await.unwrap()
        }

        #[tokio::test]
        async fn check_schema_names_what_is_missing() {
            let server = test_support::require_service!(Service::Mysql);
            let db = fresh_database(&server).await;
            let url = url_for(&server, db.name());
            let reader = repo(&url);
            reader.check_schema().await.unwrap();
            let mut admin = conn(&url).await;
            admin
                .execute(
                    "SET foreign_key_checks = 0; DROP TABLE topology_mutations; \
                     ALTER TABLE attacker_identities DROP COLUMN kd_digraph_simhash; \
                     ALTER TABLE logs DROP COLUMN msg;",
                )
                .await
                .unwrap();
            let err = reader.check_schema().await.map(drop).unwrap_err();
            let message = err.to_string();
            for named in [
                "table topology_mutations",
                "column attacker_identities.kd_digraph_simhash",
                "column logs.msg",
            ] {
                assert!(message.contains(named), "{message}");
            }
            admin.close().await.ok();
        }

        /// Every session the repository opens is read-only: the server itself
        /// refuses a write on a session set up that way.
        #[tokio::test]
        async fn sessions_are_read_only() {
            let server = test_support::require_service!(Service::Mysql);
            let db = fresh_database(&server).await;
            let url = url_for(&server, db.name());
            let mut session = conn(&url).await;
            session
                .execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .await
                .unwrap();
            let err = session
                .execute("INSERT INTO revoked_tokens VALUES ('j', 'u', '2026-01-01', '2026-01-01')")
                .await;
            assert!(err.is_err(), "{err:?}");
            session.close().await.ok();
        }

        /// Puts the server's global time zone back when dropped.
        struct GlobalZone {
            server: String,
            previous: String,
        }

        impl Drop for GlobalZone {
            fn drop(&mut self) {
                let server = self.server.clone();
                let previous = self.previous.clone();
                let _ = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    runtime.block_on(async {
                        let mut admin = crate::backends::mysql::admin(&server).await;
                        let sql = format!("SET GLOBAL time_zone = '{previous}'");
                        admin
                            .execute(sqlx_core::sql_str::AssertSqlSafe(sql))
                            .await
                            .expect("restore the global time zone");
                    });
                })
                .join();
            }
        }

        /// DECNET's bucket expression uses the session time zone; the
        /// repository pins its sessions to +00:00, so a server whose default
        /// zone is +05:30 still gives buckets on the UTC hour.
        #[tokio::test]
        async fn histogram_buckets_ignore_the_servers_time_zone() {
            let server = test_support::require_service!(Service::Mysql);
            let db = fresh_database(&server).await;
            let url = url_for(&server, db.name());
            let mut writer = conn(&url).await;
            writer
                .execute(
                    "INSERT INTO logs (timestamp, decky, service, event_type, attacker_ip, \
                     raw_line, fields) VALUES ('2026-06-20 10:59:59', 'd', 's', 'e', 'ip', 'r', \
                     '{}'), ('2026-06-20 11:00:00', 'd', 's', 'e', 'ip', 'r', '{}')",
                )
                .await
                .unwrap();
            let previous: String =
                sqlx_core::query_scalar::query_scalar("SELECT CAST(@@GLOBAL.time_zone AS CHAR)")
                    .fetch_one(&mut writer)
                    .await
                    .unwrap();
            writer
                .execute("SET GLOBAL time_zone = '+05:30'")
                .await
                .unwrap();
            let _restore = GlobalZone {
                server: server.clone(),
                previous,
            };
            writer.close().await.ok();
            // A new pool: its sessions start in the server's +05:30.
            let reader = repo(&url);
            let buckets = reader
                .log_histogram(&decnet_repo::LogFilter::default(), 60)
                .await
                .unwrap();
            let times: Vec<Option<&str>> = buckets.iter().map(|b| b.time.as_deref()).collect();
            assert_eq!(
                times,
                [Some("2026-06-20 10:00:00"), Some("2026-06-20 11:00:00")]
            );
        }

        #[tokio::test]
        async fn unknown_database_is_unavailable() {
            let server = test_support::require_service!(Service::Mysql);
            let reader = repo(&url_for(&server, "no_such_database_here"));
            let started = Instant::now();
            let err = reader.ping().await;
            assert!(matches!(err, Err(RepoError::Unavailable(_))), "{err:?}");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{:?}",
                started.elapsed()
            );
        }
    }
}

#[cfg(feature = "mysql")]
mod mysql_offline {
    //! MySQL backend behaviour that needs no server.

    use std::time::{Duration, Instant};

    use decnet_repo::prelude::*;
    use decnet_repo::{MysqlConfig, MysqlRepository, RepoError};

    fn quick(url: &str) -> MysqlRepository {
        MysqlRepository::connect(MysqlConfig {
            acquire_timeout: Duration::from_millis(500),
            ..MysqlConfig::from_url(url).unwrap()
        })
        .unwrap()
    }

    async fn assert_unavailable_within(repo: MysqlRepository, bound: Duration) {
        let started = Instant::now();
        let results = [
            repo.ping().await.map(drop),
            repo.attacker_by_uuid("a").await.map(drop),
            repo.latest_observation_per_primitive("a").await.map(drop),
            repo.user_by_uuid("u").await.map(drop),
            repo.logs_after_id(0, 50, &decnet_repo::LogFilter::default())
                .await
                .map(drop),
            repo.topology_snapshot("t").await.map(drop),
            repo.check_schema().await,
        ];
        let elapsed = started.elapsed();
        for res in results {
            assert!(matches!(res, Err(RepoError::Unavailable(_))), "{res:?}");
        }
        assert!(elapsed < bound, "{elapsed:?}");
    }

    #[tokio::test]
    async fn refused_connection_is_unavailable_within_acquire_timeout() {
        // Port 1: nothing listens; sqlx retries until the acquire timeout.
        let repo = quick("mysql://root@127.0.0.1:1/x");
        assert_unavailable_within(repo, Duration::from_millis(7 * 500 + 1500)).await;
    }

    #[tokio::test]
    async fn silent_server_is_unavailable_within_acquire_timeout() {
        // Accepts and never sends the handshake.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let repo = quick(&format!("mysql://root@127.0.0.1:{port}/x"));
        assert_unavailable_within(repo, Duration::from_millis(7 * 500 + 1500)).await;
        holder.abort();
    }
}

#[cfg(feature = "sqlite")]
mod sqlite_offline {
    use decnet_repo::{SqliteConfig, SqliteRepository};

    #[test]
    fn connect_does_not_need_a_runtime_or_a_file() {
        let repo = SqliteRepository::connect(
            SqliteConfig::from_url("sqlite+aiosqlite:////nonexistent/decnet.db").unwrap(),
        );
        assert!(repo.is_ok());
    }
}
