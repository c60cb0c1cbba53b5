//! Faults, against the real binary and servers of the test's own (issue 14,
//! item 1): the bus killed and restarted with 100 streams open (NATS,
//! Redis, DECNET's UNIX-socket broker), Redis as the ticket store down,
//! PostgreSQL down and PostgreSQL hung (SIGSTOP). Each measures its figures
//! ([`reliability::record`]): time to `/readyz` 503, time to ready again,
//! time until live events reach every open stream again, time to a 503.
//!
//! Fast variant: one kill cycle each. `DECNET_SOAK=1` (`cargo xtask soak`):
//! five cycles, the worst of each figure recorded.

mod reliability;

use std::time::Duration;

use reliability::{
    BusSpec, Database, Service, ServiceConfig, Streams, at_most, exactly, ms, observation,
    poll_until, scaled, token,
};
use test_support::Service as Svc;
use test_support::decnet_broker::TestBroker;
use test_support::pg_server::PgServer;
use test_support::servers::{NatsServer, RedisServer};

/// Streams held open through every fault.
const STREAMS: usize = 100;
/// Live events must reach every stream within this of the bus's restart.
const RESUME_TARGET: Duration = Duration::from_secs(5);
/// A refused or hung database must turn new streams away within this (the
/// repository's circuit breaker: one probe interval, 250 ms, plus one probe
/// timeout, 500 ms, at worst for a hung one).
const REFUSED_503_TARGET: Duration = Duration::from_secs(1);

/// A bus broker of the test's own, killed and restarted.
enum Broker {
    Nats(NatsServer),
    Redis(RedisServer),
    Unix(TestBroker),
}

impl Broker {
    async fn start(kind: &str) -> Broker {
        match kind {
            "nats" => Broker::Nats(tokio::task::block_in_place(NatsServer::start)),
            "redis" => Broker::Redis(tokio::task::block_in_place(RedisServer::start)),
            _ => Broker::Unix(
                TestBroker::start_in_temp_dir()
                    .await
                    .expect("start the DECNET broker stand-in"),
            ),
        }
    }

    fn spec(&self) -> BusSpec {
        match self {
            Broker::Nats(server) => BusSpec::Nats(server.url()),
            Broker::Redis(server) => BusSpec::Redis(server.url()),
            Broker::Unix(broker) => BusSpec::Unix(broker.path().to_owned()),
        }
    }

    async fn kill(&mut self) {
        match self {
            Broker::Nats(server) => tokio::task::block_in_place(|| server.kill()),
            Broker::Redis(server) => tokio::task::block_in_place(|| server.kill()),
            Broker::Unix(broker) => broker.kill().await,
        }
    }

    async fn restart(&mut self) {
        match self {
            Broker::Nats(server) => tokio::task::block_in_place(|| server.restart()),
            Broker::Redis(server) => tokio::task::block_in_place(|| server.restart()),
            Broker::Unix(broker) => broker.restart().await.expect("restart the broker"),
        }
    }
}

/// Kill the bus with [`STREAMS`] streams open and restart it: no stream
/// ends, `/readyz` goes 503 then 200, live events reach every stream again
/// within [`RESUME_TARGET`] of the restart.
async fn bus_killed_and_restarted(kind: &str, test: &'static str) {
    let Some(pg) = test_support::service_url(Svc::Postgres) else {
        return;
    };
    let db = Database::shared(&pg).await;
    let mut broker = Broker::start(kind).await;
    let spec = broker.spec();
    let backend = format!("{}+postgres", spec.label());
    let service = Service::start(&ServiceConfig::new(spec.clone(), &db.url)).await;
    let token = token(&db.user().await);
    let attacker = db.attacker().await;
    let mut streams = Streams::open(service.addr, &token, &attacker, STREAMS).await;
    let publisher = spec.publisher().await.expect("a real bus");
    // Warm-up: the whole path works before the fault.
    streams
        .deliver_everywhere(&publisher, Duration::from_secs(20), |n| {
            observation(&attacker, n)
        })
        .await;

    let (mut to_503, mut to_ready, mut to_resume) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..scaled(1, 5) {
        broker.kill().await;
        to_503 = to_503.max(service.wait_readyz(503, Duration::from_secs(15)).await);
        assert_eq!(streams.ended(), 0, "a stream ended while the bus was down");
        broker.restart().await;
        let restarted = tokio::time::Instant::now();
        to_ready = to_ready.max(service.wait_ready(Duration::from_secs(20)).await);
        streams
            .deliver_everywhere(&publisher, Duration::from_secs(30), |n| {
                observation(&attacker, n)
            })
            .await;
        to_resume = to_resume.max(restarted.elapsed());
    }
    at_most(
        test,
        &backend,
        "bus killed: time to /readyz 503",
        ms(to_503),
        "ms",
        5000.0,
    );
    at_most(
        test,
        &backend,
        "bus restarted: time to /readyz 200",
        ms(to_ready),
        "ms",
        5000.0,
    );
    at_most(
        test,
        &backend,
        "bus restarted: live events on all 100 streams",
        ms(to_resume),
        "ms",
        ms(RESUME_TARGET),
    );
    exactly(
        test,
        &backend,
        "streams ended by the fault",
        streams.ended() as f64,
        "streams",
        0.0,
    );
}

/// The time `POST` the ticket endpoint takes and its answer.
async fn timed_mint(service: &Service, token: &str) -> (Duration, test_support::http::Response) {
    let started = tokio::time::Instant::now();
    let response = service.post_ticket(token).await;
    (started.elapsed(), response)
}

/// Ask for a stream with a fresh token (not in the verifier's cache) while
/// the database is away: the time the refusal took and the refusal.
///
/// # Panics
///
/// When no complete answer comes within 30 s (a stream that opened, or a
/// request that hangs).
async fn timed_refusal(
    service: &Service,
    user: &str,
    attacker: &str,
) -> (Duration, test_support::http::Response) {
    let auth = format!("Bearer {}", token(user));
    let path = test_support::http::events_path(attacker, None);
    let started = tokio::time::Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        test_support::http::try_request(service.addr, "GET", &path, &[("authorization", &auth)]),
    )
    .await
    .unwrap_or_else(|_| panic!("no complete answer within 30 s while the database is away"))
    .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (started.elapsed(), answer)
}

/// The database refused (killed) or hung (SIGSTOP) with streams open: new
/// streams get 503 + Retry-After within 1 s either way, open streams
/// keep receiving live events, `/readyz` says 503, and it recovers.
async fn database_fault(hang: bool, test: &'static str) {
    if test_support::service_url(Svc::Postgres).is_none() {
        return;
    }
    let mut pg = tokio::task::block_in_place(PgServer::start);
    let db = Database::private(&pg.url()).await;
    let broker = TestBroker::start_in_temp_dir()
        .await
        .expect("start the DECNET broker stand-in");
    let spec = BusSpec::Unix(broker.path().to_owned());
    let backend = "unix+postgres";
    let service = Service::start(&ServiceConfig::new(spec.clone(), &db.url)).await;
    let user = db.user().await;
    let attacker = db.attacker().await;
    let count = scaled(20, STREAMS);
    let mut streams = Streams::open(service.addr, &token(&user), &attacker, count).await;
    let publisher = spec.publisher().await.expect("a real bus");
    streams
        .deliver_everywhere(&publisher, Duration::from_secs(20), |n| {
            observation(&attacker, n)
        })
        .await;
    // Drop the writer's pool: the fault is the service's alone.
    drop(db);

    let (fault, target) = if hang {
        tokio::task::block_in_place(|| pg.hang());
        // A hung database never answers: the breaker's probe times out
        // (DECNET_SSE_REPO_PROBE_TIMEOUT_MS) and the waiting open is cut
        // short, long before the open's own deadline (5 s) or the
        // repository's call deadline (12 s).
        ("hung", REFUSED_503_TARGET)
    } else {
        tokio::task::block_in_place(|| pg.kill());
        ("down", REFUSED_503_TARGET)
    };
    let mut worst = Duration::ZERO;
    for _ in 0..scaled(3, 10) {
        let (took, refused) = timed_refusal(&service, &user, &attacker).await;
        refused.assert_503();
        worst = worst.max(took);
    }
    at_most(
        test,
        backend,
        if hang {
            "database hung: new stream 503 + Retry-After, worst"
        } else {
            "database down: new stream 503 + Retry-After, worst"
        },
        ms(worst),
        "ms",
        ms(target),
    );
    let live = streams
        .deliver_everywhere(&publisher, Duration::from_secs(20), |n| {
            observation(&attacker, n)
        })
        .await;
    at_most(
        test,
        backend,
        if hang {
            "database hung: live events on every open stream"
        } else {
            "database down: live events on every open stream"
        },
        ms(live),
        "ms",
        ms(RESUME_TARGET),
    );
    let not_ready = service.wait_readyz(503, Duration::from_secs(15)).await;
    at_most(
        test,
        backend,
        if hang {
            "database hung: time to /readyz 503"
        } else {
            "database down: time to /readyz 503"
        },
        ms(not_ready),
        "ms",
        5000.0,
    );

    let recovering = tokio::time::Instant::now();
    if hang {
        tokio::task::block_in_place(|| pg.resume());
    } else {
        tokio::task::block_in_place(|| pg.restart());
    }
    service.wait_ready(Duration::from_secs(30)).await;
    poll_until(
        Duration::from_secs(30),
        "a new stream opens again",
        || async {
            service
                .try_open(&token(&user), &attacker)
                .await
                .is_ok()
                .then_some(())
        },
    )
    .await;
    at_most(
        test,
        backend,
        if hang {
            "database resumed: time to a new stream"
        } else {
            "database restarted: time to a new stream"
        },
        ms(recovering.elapsed()),
        "ms",
        10_000.0,
    );
    exactly(
        test,
        backend,
        &format!("streams ended by the database {fault}"),
        streams.ended() as f64,
        "streams",
        0.0,
    );
}

mod svc_postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unix_bus_killed_and_restarted_with_100_streams_open() {
        bus_killed_and_restarted(
            "unix",
            "unix_bus_killed_and_restarted_with_100_streams_open",
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn database_down_new_streams_503_open_streams_live() {
        database_fault(false, "database_down_new_streams_503_open_streams_live").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn database_hung_new_streams_503_open_streams_live() {
        database_fault(true, "database_hung_new_streams_503_open_streams_live").await;
    }

    mod svc_nats {
        use super::*;

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn nats_bus_killed_and_restarted_with_100_streams_open() {
            if test_support::service_url(Svc::Nats).is_none() {
                return;
            }
            bus_killed_and_restarted(
                "nats",
                "nats_bus_killed_and_restarted_with_100_streams_open",
            )
            .await;
        }
    }

    mod svc_redis {
        use super::*;

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn redis_bus_killed_and_restarted_with_100_streams_open() {
            if test_support::service_url(Svc::Redis).is_none() {
                return;
            }
            bus_killed_and_restarted(
                "redis",
                "redis_bus_killed_and_restarted_with_100_streams_open",
            )
            .await;
        }

        /// Redis as the ticket store goes away: minting answers 503 +
        /// Retry-After at once (never hangs), and mints again once Redis
        /// is back.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn redis_ticket_store_down_minting_503_then_recovers() {
            let test = "redis_ticket_store_down_minting_503_then_recovers";
            let Some(pg) = test_support::service_url(Svc::Postgres) else {
                return;
            };
            if test_support::service_url(Svc::Redis).is_none() {
                return;
            }
            let db = Database::shared(&pg).await;
            let mut redis = tokio::task::block_in_place(RedisServer::start);
            let backend = "memory+postgres, redis tickets";
            let config = ServiceConfig::new(BusSpec::Memory, &db.url)
                .var("DECNET_TICKET_STORE", "redis")
                .var(decnet_bus::ENV_REDIS_URL, redis.url());
            let service = Service::start(&config).await;
            let token = token(&db.user().await);
            let (_, minted) = timed_mint(&service, &token).await;
            assert_eq!(minted.status, 200, "{}", minted.text());

            let (mut worst, mut recovery) = (Duration::ZERO, Duration::ZERO);
            for _ in 0..scaled(1, 5) {
                tokio::task::block_in_place(|| redis.kill());
                for _ in 0..scaled(5, 20) {
                    let (took, refused) = timed_mint(&service, &token).await;
                    refused.assert_503();
                    worst = worst.max(took);
                }
                tokio::task::block_in_place(|| redis.restart());
                let back = tokio::time::Instant::now();
                poll_until(Duration::from_secs(20), "minting again", || async {
                    (timed_mint(&service, &token).await.1.status == 200).then_some(())
                })
                .await;
                recovery = recovery.max(back.elapsed());
            }
            at_most(
                test,
                backend,
                "Redis restarted: time to mint again, worst",
                ms(recovery),
                "ms",
                5000.0,
            );
            at_most(
                test,
                backend,
                "Redis down: mint 503 + Retry-After, worst",
                ms(worst),
                "ms",
                1000.0,
            );
        }
    }
}
