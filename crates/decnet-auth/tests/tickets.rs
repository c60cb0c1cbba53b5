//! Ticket stores: one conformance suite run against every backend, plus the
//! backend-specific cases (memory time and bounds, Redis keys, expiry and
//! outages). Redis cases live in `mod svc_redis`.

use std::sync::Arc;
use std::time::Duration;

use decnet_auth::{
    Identity, MemoryTicketStore, TICKET_LEN, Ticket, TicketError, TicketLimits, TicketStore,
};
use tokio::sync::Barrier;

fn identity(user: &str) -> Identity {
    Identity {
        user_uuid: user.to_owned(),
        role: "viewer".to_owned(),
        must_change_password: false,
        jti: format!("jti-of-{user}"),
        iat: 1_700_000_000,
        exp: 1_700_003_600,
    }
}

fn assert_ticket_format(ticket: &Ticket) {
    let value = ticket.expose();
    assert_eq!(value.len(), TICKET_LEN, "length");
    assert!(
        value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "base64url alphabet only"
    );
    assert!(!value.contains('='), "no padding");
    assert_eq!(format!("{ticket:?}"), "Ticket(<redacted>)");
    assert!(!format!("{ticket}").contains(value));
}

/// The behaviour every backend must share.
async fn conformance(store: Arc<dyn TicketStore>) {
    let before = store.counters();
    let alice = identity("alice");
    let ticket = store
        .mint(&alice, Duration::from_secs(60))
        .await
        .expect("mint");
    assert_ticket_format(&ticket);
    assert_eq!(ticket.ttl(), Duration::from_secs(60));

    // Redeemed once, with the identity (jti and exp of the JWT included).
    let redeemed = store.redeem(ticket.expose()).await.expect("redeem");
    assert_eq!(redeemed, Some(alice.clone()));
    // Never twice.
    assert_eq!(store.redeem(ticket.expose()).await.expect("redeem"), None);

    // Unknown and malformed tickets are simply unknown.
    let unknown = "A".repeat(TICKET_LEN);
    assert_eq!(store.redeem(&unknown).await.expect("redeem"), None);
    for malformed in ["", "short", "../../etc", "*", &"x".repeat(10_000)] {
        assert_eq!(store.redeem(malformed).await.expect("redeem"), None);
    }

    // Tickets are independent and distinct.
    let bob = identity("bob");
    let a = store
        .mint(&alice, Duration::from_secs(60))
        .await
        .expect("mint");
    let b = store
        .mint(&bob, Duration::from_secs(60))
        .await
        .expect("mint");
    assert_ne!(a.expose(), b.expose());
    assert_eq!(store.redeem(b.expose()).await.expect("redeem"), Some(bob));
    assert_eq!(store.redeem(a.expose()).await.expect("redeem"), Some(alice));

    // Another handle on the same store shares the tickets.
    let clone = Arc::clone(&store);
    let c = store
        .mint(&identity("carol"), Duration::from_secs(60))
        .await
        .expect("mint");
    assert!(clone.redeem(c.expose()).await.expect("redeem").is_some());
    assert_eq!(store.redeem(c.expose()).await.expect("redeem"), None);

    let after = store.counters();
    assert_eq!(after.minted - before.minted, 4);
    assert_eq!(after.redeemed_ok - before.redeemed_ok, 4);
    assert_eq!(after.redeemed_unknown - before.redeemed_unknown, 8);
    assert_eq!(after.failures, before.failures);
}

/// 100 concurrent redemptions of one ticket, spread over `stores` (handles on
/// the same backing store, e.g. several server instances): exactly one wins.
async fn exactly_one_winner(stores: Vec<Arc<dyn TicketStore>>) {
    let ticket = stores[0]
        .mint(&identity("racer"), Duration::from_secs(60))
        .await
        .expect("mint");
    let value: Arc<str> = Arc::from(ticket.expose());
    let barrier = Arc::new(Barrier::new(100));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let store = Arc::clone(&stores[i % stores.len()]);
        let value = Arc::clone(&value);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.redeem(&value).await
        }));
    }
    let mut winners = 0;
    for task in tasks {
        let result = task.await.expect("task");
        if result.expect("redeem").is_some() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

/// The live-ticket caps every backend enforces: per user (429) and in total
/// (503), freed by redemption.
async fn caps(store: Arc<dyn TicketStore>, per_user: usize, total: usize) {
    let ttl = Duration::from_secs(60);
    let mut held = Vec::new();
    for _ in 0..per_user {
        held.push(store.mint(&identity("capped"), ttl).await.expect("mint"));
    }
    let refused = store.mint(&identity("capped"), ttl).await;
    assert!(
        matches!(refused, Err(TicketError::UserLimit { limit }) if limit == per_user),
        "{refused:?}"
    );
    // Redeeming one frees a slot.
    let first = held.remove(0);
    assert!(
        store
            .redeem(first.expose())
            .await
            .expect("redeem")
            .is_some()
    );
    held.push(
        store
            .mint(&identity("capped"), ttl)
            .await
            .expect("slot freed"),
    );
    // Other users until the store is full.
    let mut n = 0;
    let full = loop {
        match store
            .mint(&identity(&format!("filler-{}", n / per_user)), ttl)
            .await
        {
            Ok(ticket) => held.push(ticket),
            Err(error) => break error,
        }
        n += 1;
        assert!(n <= total, "the total cap never refused");
    };
    assert!(
        matches!(full, TicketError::Full { limit } if limit == total),
        "{full:?}"
    );
    assert_eq!(held.len(), total);
    assert!(store.counters().refused >= 2);
}

fn memory(limits: TicketLimits) -> (MemoryTicketStore, Arc<dyn TicketStore>) {
    let memory = MemoryTicketStore::new(limits);
    let store: Arc<dyn TicketStore> = Arc::new(memory.clone());
    (memory, store)
}

#[tokio::test]
async fn memory_conformance() {
    conformance(memory(TicketLimits::default()).1).await;
}

#[tokio::test]
async fn memory_caps() {
    let limits = TicketLimits {
        per_user: 3,
        total: 10,
    };
    caps(memory(limits).1, 3, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_exactly_one_winner_among_100_concurrent_redemptions() {
    for _ in 0..20 {
        exactly_one_winner(vec![memory(TicketLimits::default()).1]).await;
    }
}

#[tokio::test(start_paused = true)]
async fn memory_expired_ticket_is_refused_and_removed() {
    let (memory, store) = memory(TicketLimits::default());
    let ticket = store
        .mint(&identity("alice"), Duration::from_secs(60))
        .await
        .expect("mint");
    tokio::time::advance(Duration::from_secs(59)).await;
    let live = store
        .mint(&identity("bob"), Duration::from_secs(60))
        .await
        .expect("mint");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(memory.len(), 2);
    // Exactly at its TTL the first one has expired: refused, and deleted.
    assert_eq!(store.redeem(ticket.expose()).await.expect("redeem"), None);
    assert_eq!(memory.len(), 1);
    assert_eq!(store.counters().redeemed_expired, 1);
    assert_eq!(store.redeem(ticket.expose()).await.expect("redeem"), None);
    assert_eq!(store.counters().redeemed_unknown, 1);
    // The other is still live.
    assert!(store.redeem(live.expose()).await.expect("redeem").is_some());
    assert!(memory.is_empty());
}

/// The review's flood: tens of thousands of mints left unredeemed. With the
/// caps the map never holds more than `total`, and the background sweep gives
/// the memory back once they expire, with no further mint.
#[tokio::test(start_paused = true)]
async fn memory_mint_flood_is_bounded_and_swept() {
    let (memory, store) = memory(TicketLimits {
        per_user: 20,
        total: 5_000,
    });
    let ttl = Duration::from_secs(60);
    let mut refused = 0;
    for n in 0..40_000 {
        match store.mint(&identity(&format!("u{}", n % 2_000)), ttl).await {
            Ok(_) => {}
            Err(TicketError::UserLimit { .. } | TicketError::Full { .. }) => refused += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(memory.len(), 5_000);
    assert_eq!(refused, 35_000);
    assert_eq!(store.counters().live, 5_000);
    tokio::time::sleep(ttl + Duration::from_secs(20)).await;
    assert!(memory.is_empty(), "{} left", memory.len());
    assert_eq!(memory.held_by("u1"), 0);
}

#[cfg(feature = "redis")]
mod svc_redis {
    use super::*;
    use decnet_auth::{RedisTicketConfig, RedisTicketStore};
    use test_support::servers::RedisServer;
    use test_support::{Service, require_service};

    const SECRET: &[u8] = b"a-ticket-test-secret-of-32-bytes!";

    fn config(url: &str, prefix: &str) -> RedisTicketConfig {
        RedisTicketConfig {
            prefix: prefix.to_owned(),
            ..RedisTicketConfig::new(url, SECRET)
        }
    }

    fn prefix() -> String {
        format!("decnet-auth-test:{}:", test_support::unique_suffix())
    }

    async fn connect(config: RedisTicketConfig) -> RedisTicketStore {
        RedisTicketStore::connect(config).await.expect("connect")
    }

    async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
        redis::Client::open(url)
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect")
    }

    async fn keys(url: &str, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut raw(url).await)
            .await
            .expect("keys");
        keys.sort();
        keys
    }

    #[tokio::test]
    async fn redis_conformance() {
        let url = require_service!(Service::Redis);
        conformance(Arc::new(connect(config(&url, &prefix())).await)).await;
    }

    #[tokio::test]
    async fn redis_caps() {
        let url = require_service!(Service::Redis);
        let store = connect(RedisTicketConfig {
            limits: TicketLimits {
                per_user: 3,
                total: 10,
            },
            ..config(&url, &prefix())
        })
        .await;
        caps(Arc::new(store), 3, 10).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redis_exactly_one_winner_among_100_concurrent_redemptions() {
        let url = require_service!(Service::Redis);
        let prefix = prefix();
        // Four independent connections: four server instances sharing Redis.
        let mut stores: Vec<Arc<dyn TicketStore>> = Vec::new();
        for _ in 0..4 {
            stores.push(Arc::new(connect(config(&url, &prefix)).await));
        }
        for _ in 0..10 {
            exactly_one_winner(stores.clone()).await;
        }
    }

    /// Neither a Redis dump nor `KEYS` shows a ticket: keys are keyed hashes
    /// and the record holds no ticket; the TTL is the ticket's.
    #[tokio::test]
    async fn redis_stores_no_ticket_in_clear() {
        let url = require_service!(Service::Redis);
        let prefix = prefix();
        let store = connect(config(&url, &prefix)).await;
        let alice = identity("alice");
        let ticket = store
            .mint(&alice, Duration::from_secs(60))
            .await
            .expect("mint");
        let key = store.key_of(ticket.expose());
        assert!(!key.contains(ticket.expose()));
        assert!(key.starts_with(&format!("{prefix}sse_ticket:")));
        let all = keys(&url, &prefix).await;
        assert!(all.contains(&key), "{all:?}");
        let mut conn = raw(&url).await;
        let mut dump = String::new();
        for key in &all {
            let kind: String = redis::cmd("TYPE")
                .arg(key)
                .query_async(&mut conn)
                .await
                .expect("type");
            let text: Vec<String> = match kind.as_str() {
                "string" => vec![
                    redis::cmd("GET")
                        .arg(key)
                        .query_async(&mut conn)
                        .await
                        .expect("get"),
                ],
                "zset" => redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
                    .expect("zrange"),
                other => panic!("unexpected key type {other}"),
            };
            dump.push_str(key);
            dump.push_str(&text.join("\n"));
        }
        assert!(
            !dump.contains(ticket.expose()),
            "a ticket in the clear in Redis"
        );
        assert!(dump.contains("alice"), "the record names its user");
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("ttl");
        assert!((58..=60).contains(&ttl), "ttl {ttl}");
        assert_eq!(
            store.redeem(ticket.expose()).await.expect("redeem"),
            Some(alice)
        );
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("exists");
        assert_eq!(exists, 0, "redeemed ticket is deleted");
    }

    /// A Redis writer cannot forge: a record written without the secret, or a
    /// genuine record moved under another ticket's key, is refused.
    #[tokio::test]
    async fn redis_writer_cannot_forge_a_ticket() {
        let url = require_service!(Service::Redis);
        let prefix = prefix();
        let store = connect(config(&url, &prefix)).await;
        let mut conn = raw(&url).await;

        let forged = "B".repeat(TICKET_LEN);
        let json = serde_json::to_string(&identity("mallory")).expect("json");
        let _: () = redis::cmd("SET")
            .arg(store.key_of(&forged))
            .arg(format!("mallory\nAAAA\n{json}"))
            .arg("EX")
            .arg(60)
            .query_async(&mut conn)
            .await
            .expect("set");
        assert_eq!(store.redeem(&forged).await.expect("redeem"), None);

        let genuine = store
            .mint(&identity("alice"), Duration::from_secs(60))
            .await
            .expect("mint");
        let record: String = redis::cmd("GET")
            .arg(store.key_of(genuine.expose()))
            .query_async(&mut conn)
            .await
            .expect("get");
        let other = "C".repeat(TICKET_LEN);
        let _: () = redis::cmd("SET")
            .arg(store.key_of(&other))
            .arg(&record)
            .arg("EX")
            .arg(60)
            .query_async(&mut conn)
            .await
            .expect("set");
        assert_eq!(store.redeem(&other).await.expect("redeem"), None);
        assert_eq!(store.counters().redeemed_forged, 2);
        // A store with another secret cannot read genuine tickets either.
        let stranger = connect(RedisTicketConfig {
            secret: b"another-secret-of-at-least-32-chars".to_vec(),
            ..config(&url, &prefix)
        })
        .await;
        assert_eq!(
            stranger.redeem(genuine.expose()).await.expect("redeem"),
            None
        );
        assert!(
            store
                .redeem(genuine.expose())
                .await
                .expect("redeem")
                .is_some()
        );
    }

    #[tokio::test]
    async fn redis_default_prefix_is_decnets() {
        assert_eq!(decnet_auth::DEFAULT_REDIS_PREFIX, "decnet:");
        assert_eq!(
            RedisTicketConfig::new("redis://x", SECRET).prefix,
            "decnet:"
        );
    }

    #[tokio::test]
    async fn redis_expired_ticket_is_refused_and_gone() {
        let url = require_service!(Service::Redis);
        let prefix = prefix();
        let store = connect(config(&url, &prefix)).await;
        let ticket = store
            .mint(&identity("alice"), Duration::from_secs(1))
            .await
            .expect("mint");
        // Sub-second TTLs round up to whole seconds (EX granularity).
        let short = store
            .mint(&identity("alice"), Duration::from_millis(10))
            .await
            .expect("mint");
        assert_eq!(short.ttl(), Duration::from_secs(1));
        let keys = [store.key_of(ticket.expose()), store.key_of(short.expose())];
        let mut conn = raw(&url).await;
        // Wait (bounded) until Redis itself expires both keys.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let exists: i64 = redis::cmd("EXISTS")
                .arg(&keys[..])
                .query_async(&mut conn)
                .await
                .expect("exists");
            if exists == 0 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "never expired");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(store.redeem(ticket.expose()).await.expect("redeem"), None);
        assert_eq!(store.redeem(short.expose()).await.expect("redeem"), None);
    }

    #[tokio::test]
    async fn redis_unreachable_at_connect_is_unavailable_quickly() {
        // Needs no Redis: the point is a port where none answers.
        let port = test_support::free_port();
        let started = tokio::time::Instant::now();
        let result = RedisTicketStore::connect(RedisTicketConfig {
            timeout: Duration::from_millis(300),
            ..config(&format!("redis://127.0.0.1:{port}"), "x:")
        })
        .await;
        assert!(
            matches!(result, Err(TicketError::Unavailable(_))),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn redis_silent_server_times_out_as_unavailable() {
        // A TCP peer that accepts and never answers: the timeout must fire.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let started = tokio::time::Instant::now();
        let result = RedisTicketStore::connect(RedisTicketConfig {
            timeout: Duration::from_millis(300),
            ..config(&format!("redis://{addr}"), "x:")
        })
        .await;
        assert!(
            matches!(result, Err(TicketError::Unavailable(_))),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        hold.abort();
    }

    #[tokio::test]
    async fn redis_outage_after_connect_is_unavailable_and_bounded() {
        // Only runs where the shared Redis is configured (so Redis tooling is
        // installed); the server it kills is its own.
        let _shared = require_service!(Service::Redis);
        let mut server = RedisServer::start();
        let store = connect(RedisTicketConfig {
            timeout: Duration::from_millis(500),
            ..config(&server.url(), "outage:")
        })
        .await;
        let ticket = store
            .mint(&identity("alice"), Duration::from_secs(60))
            .await
            .expect("mint");
        server.kill();
        let started = tokio::time::Instant::now();
        let redeemed = store.redeem(ticket.expose()).await;
        assert!(
            matches!(redeemed, Err(TicketError::Unavailable(_))),
            "{redeemed:?}"
        );
        let minted = store.mint(&identity("bob"), Duration::from_secs(60)).await;
        assert!(
            matches!(minted, Err(TicketError::Unavailable(_))),
            "{minted:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(store.counters().failures, 2);
    }
}
