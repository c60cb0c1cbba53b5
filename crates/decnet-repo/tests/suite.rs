//! One behavioural suite for every repository backend.
//!
//! Each case in [`cases`] is an `async fn(Repo)` (a repository that also
//! writes, so the case can seed it); the `suite!` macro runs it
//! against the memory backend (module `memory`) and, with feature `postgres`,
//! against PostgreSQL (module `svc_postgres`: each test in a fresh schema,
//! skipped loudly when `DECNET_TEST_DATABASE_URL` is unset, failing under CI).
//! PostgreSQL-only behaviour (migrations, timestamp column types, timeouts)
//! lives in `svc_postgres::specific` and `postgres_offline`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use decnet_repo::{
    Attacker, MemoryRepository, Observation, RepoError, Repository, RepositoryWriter, User,
};

/// Every reader and the writer: what a case needs from a backend.
trait ReadWrite: Repository + RepositoryWriter {}
impl<T: Repository + RepositoryWriter> ReadWrite for T {}

/// The backend a case runs against.
type Repo = Arc<dyn ReadWrite>;

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

mod cases {
    use super::*;

    pub(crate) async fn latest_per_primitive_highest_ts_then_highest_id(repo: Repo) {
        repo.upsert_attacker(&attacker("a")).await.unwrap();
        repo.upsert_attacker(&attacker("b")).await.unwrap();
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
            repo.upsert_observation(&row).await.unwrap();
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

    pub(crate) async fn latest_per_primitive_empty_without_rows(repo: Repo) {
        repo.upsert_attacker(&attacker("quiet")).await.unwrap();
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

    pub(crate) async fn json_values_of_every_type_round_trip(repo: Repo) {
        use serde_json::json;
        repo.upsert_attacker(&attacker("a")).await.unwrap();
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
            repo.upsert_observation(&row).await.unwrap();
        }
        let latest = repo.latest_observation_per_primitive("a").await.unwrap();
        let got: Vec<&serde_json::Value> = latest.iter().map(|o| &o.value).collect();
        let want: Vec<&serde_json::Value> = values.iter().collect();
        assert_eq!(got, want);
    }

    pub(crate) async fn unknown_uuids_are_none(repo: Repo) {
        assert_eq!(
            repo.attacker_by_uuid("no-such-attacker").await.unwrap(),
            None
        );
        assert_eq!(repo.user_by_uuid("no-such-user").await.unwrap(), None);
        assert!(!repo.is_token_revoked("no-such-jti").await.unwrap());
    }

    pub(crate) async fn attackers_upsert_and_read_back(repo: Repo) {
        let mut a = attacker("a");
        repo.upsert_attacker(&a).await.unwrap();
        assert_eq!(repo.attacker_by_uuid("a").await.unwrap(), Some(a.clone()));
        a.ip = "198.51.100.1".into();
        a.identity_id = Some("identity-1".into());
        repo.upsert_attacker(&a).await.unwrap();
        assert_eq!(repo.attacker_by_uuid("a").await.unwrap(), Some(a));
    }

    pub(crate) async fn revoke_then_is_token_revoked(repo: Repo) {
        let expires = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        assert!(!repo.is_token_revoked("jti-1").await.unwrap());
        repo.revoke_token("jti-1", "user-1", expires).await.unwrap();
        assert!(repo.is_token_revoked("jti-1").await.unwrap());
        // Revoking twice is not an error.
        repo.revoke_token("jti-1", "user-1", expires).await.unwrap();
        assert!(repo.is_token_revoked("jti-1").await.unwrap());
        assert!(!repo.is_token_revoked("jti-2").await.unwrap());
    }

    pub(crate) async fn upsert_observation_is_idempotent_on_evidence_and_primitive(repo: Repo) {
        repo.upsert_attacker(&attacker("a")).await.unwrap();
        let first = observation("o1", "a", "p", 10.0);
        repo.upsert_observation(&first).await.unwrap();
        repo.upsert_observation(&first).await.unwrap();
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
        repo.upsert_observation(&corrected).await.unwrap();
        assert_eq!(
            repo.latest_observation_per_primitive("a").await.unwrap(),
            [corrected.clone()]
        );

        // Same evidence, another primitive: a second row.
        let mut other = first.clone();
        other.id = "o2".into();
        other.primitive = "q".into();
        repo.upsert_observation(&other).await.unwrap();
        assert_eq!(
            repo.latest_observation_per_primitive("a").await.unwrap(),
            [corrected, other]
        );
    }

    pub(crate) async fn observation_of_unknown_attacker_is_invalid_data(repo: Repo) {
        let err = repo
            .upsert_observation(&observation("o1", "ghost", "p", 1.0))
            .await;
        assert!(matches!(err, Err(RepoError::InvalidData(_))), "{err:?}");
    }

    pub(crate) async fn reused_observation_id_is_invalid_data(repo: Repo) {
        repo.upsert_attacker(&attacker("a")).await.unwrap();
        repo.upsert_observation(&observation("o1", "a", "p", 1.0))
            .await
            .unwrap();
        let mut clash = observation("o1", "a", "q", 2.0);
        clash.evidence_ref = "another-evidence".into();
        let err = repo.upsert_observation(&clash).await;
        assert!(matches!(err, Err(RepoError::InvalidData(_))), "{err:?}");
        assert_eq!(
            ids(&repo.latest_observation_per_primitive("a").await.unwrap()),
            ["o1"]
        );
    }

    pub(crate) async fn tokens_valid_from_round_trips(repo: Repo) {
        let whole = UNIX_EPOCH + Duration::from_secs(1_714_000_000);
        // Microsecond precision: what PostgreSQL keeps.
        let sub_second = UNIX_EPOCH + Duration::new(1_714_000_000, 123_456_000);
        for (uuid, valid_from) in [("u1", Some(whole)), ("u2", Some(sub_second)), ("u3", None)] {
            let u = user(uuid, &format!("name-{uuid}"), valid_from);
            repo.create_user(&u).await.unwrap();
            let got = repo.user_by_uuid(uuid).await.unwrap().unwrap();
            assert_eq!(got, u);
            assert_eq!(got.tokens_valid_from, valid_from);
        }
    }

    pub(crate) async fn create_user_replaces_by_uuid(repo: Repo) {
        let mut u = user("u1", "alice", None);
        repo.create_user(&u).await.unwrap();
        u.role = "admin".into();
        u.must_change_password = true;
        u.username = "alice2".into();
        u.tokens_valid_from = Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        repo.create_user(&u).await.unwrap();
        assert_eq!(repo.user_by_uuid("u1").await.unwrap(), Some(u));
    }

    pub(crate) async fn taken_username_is_invalid_data(repo: Repo) {
        repo.create_user(&user("u1", "alice", None)).await.unwrap();
        let err = repo.create_user(&user("u2", "alice", None)).await;
        assert!(matches!(err, Err(RepoError::InvalidData(_))), "{err:?}");
        assert_eq!(repo.user_by_uuid("u2").await.unwrap(), None);
    }

    pub(crate) async fn delete_user_removes_it(repo: Repo) {
        repo.create_user(&user("u1", "alice", None)).await.unwrap();
        repo.create_user(&user("u2", "bob", None)).await.unwrap();
        repo.delete_user("u1").await.unwrap();
        assert_eq!(repo.user_by_uuid("u1").await.unwrap(), None);
        assert!(repo.user_by_uuid("u2").await.unwrap().is_some());
        // Unknown uuid: not an error.
        repo.delete_user("u1").await.unwrap();
        repo.delete_user("never-existed").await.unwrap();
    }

    pub(crate) async fn set_attacker_identity_links_and_unlinks(repo: Repo) {
        repo.upsert_attacker(&attacker("a")).await.unwrap();
        repo.set_attacker_identity("a", Some("identity-1"))
            .await
            .unwrap();
        let got = repo.attacker_by_uuid("a").await.unwrap().unwrap();
        assert_eq!(got.identity_id.as_deref(), Some("identity-1"));
        assert_eq!(got.ip, "203.0.113.7");
        repo.set_attacker_identity("a", None).await.unwrap();
        assert_eq!(
            repo.attacker_by_uuid("a")
                .await
                .unwrap()
                .unwrap()
                .identity_id,
            None
        );
        let err = repo
            .set_attacker_identity("ghost", Some("identity-1"))
            .await;
        assert!(matches!(err, Err(RepoError::InvalidData(_))), "{err:?}");
    }

    pub(crate) async fn ping_answers(repo: Repo) {
        repo.ping().await.unwrap();
    }
}

/// Run every case in `cases` against each backend.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::cases::$case(std::sync::Arc::new(super::MemoryRepository::new())).await;
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod svc_postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let url = test_support::require_service!(test_support::Service::Postgres);
                    let (schema, _guard) = test_support::pg::fresh_schema(&url).await;
                    let repo = super::pg::migrated(&url, &schema).await;
                    super::cases::$case(std::sync::Arc::new(repo)).await;
                }
            )*
        }
    };
}

suite!(
    latest_per_primitive_highest_ts_then_highest_id,
    latest_per_primitive_empty_without_rows,
    json_values_of_every_type_round_trip,
    unknown_uuids_are_none,
    attackers_upsert_and_read_back,
    revoke_then_is_token_revoked,
    upsert_observation_is_idempotent_on_evidence_and_primitive,
    observation_of_unknown_attacker_is_invalid_data,
    reused_observation_id_is_invalid_data,
    tokens_valid_from_round_trips,
    create_user_replaces_by_uuid,
    taken_username_is_invalid_data,
    delete_user_removes_it,
    set_attacker_identity_links_and_unlinks,
    ping_answers,
);

#[tokio::test]
async fn memory_switched_off_is_unavailable() {
    let memory = MemoryRepository::new();
    memory.set_available(false);
    let repo: Repo = Arc::new(memory.clone());
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
            tokio::time::sleep(Duration::from_millis(200)).await;

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
