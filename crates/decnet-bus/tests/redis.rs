//! The conformance suite on Redis (a real server from `DECNET_TEST_REDIS_URL`),
//! and restart / start-while-down tests on PRIVATE `redis-server` processes.
#![cfg(feature = "redis")]

mod conformance;

/// A URL the client cannot parse is a `ConnectError` (no server needed).
#[tokio::test]
async fn invalid_url_is_a_connect_error() {
    let config = decnet_bus::BusConfig {
        kind: decnet_bus::BusKind::Redis,
        redis_url: Some("http://not-redis".to_owned()),
        ..decnet_bus::BusConfig::default()
    };
    let res = decnet_bus::Bus::connect(&config).await;
    assert!(
        matches!(res, Err(decnet_bus::ConnectError::InvalidUrl { .. })),
        "{res:?}"
    );
}

mod svc_redis {
    use std::sync::Arc;
    use std::time::Duration;

    use decnet_bus::{Bus, BusConfig, BusKind, ConnectionState, RedisBus, RedisConfig};
    use futures::FutureExt;
    use serde_json::Map;
    use test_support::Service;
    use test_support::servers::RedisServer;

    use crate::conformance::{
        Harness, next_event, prefix, publish_until_received, record_states, wait_state,
    };

    fn harness(url: String) -> Harness {
        Harness::new(decnet_bus::BusKind::Redis, false, move |options| {
            let url = url.clone();
            async move {
                let config = RedisConfig {
                    url,
                    ..RedisConfig::default()
                };
                match RedisBus::connect(config).await {
                    Ok(redis) => Bus::from_backend_with(Arc::new(redis), options),
                    Err(err) => panic!("redis connect: {err}"),
                }
            }
            .boxed()
        })
    }

    crate::conformance_suite!(harness(test_support::require_service!(Service::Redis)));

    /// A channel name with CR/LF under a subscribed pattern (anyone can
    /// PUBLISH to any channel) is dropped and counted, never delivered: it
    /// would otherwise end up in an SSE frame.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn channels_that_are_not_topics_are_dropped_and_counted() {
        let url = test_support::require_service!(Service::Redis);
        let root = prefix();
        let bus = connect(url.clone()).await;
        wait_state(&bus, ConnectionState::Connected, Duration::from_secs(5)).await;
        let mut subscription = bus
            .subscribe(&format!("{root}.>"))
            .await
            .expect("subscribe");
        let client = redis::Client::open(url.as_str()).expect("client");
        let mut raw = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let envelope = r#"{"type":"forged","payload":{}}"#;
        for channel in [
            format!("{root}.x\r\nevent: error"),
            format!("{root}.tab\there"),
        ] {
            let _: i64 = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(envelope)
                .query_async(&mut raw)
                .await
                .expect("publish");
        }
        let topic = format!("{root}.fine");
        bus.publish(&topic, "fine", Map::new())
            .await
            .expect("publish");
        let event = next_event(&mut subscription, "the valid event").await;
        assert_eq!(
            event.topic, topic,
            "the invalid channels never reach a subscriber"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while bus.counters().invalid_topics < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not counted: {:?}",
                bus.counters()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn connect(url: String) -> Bus {
        let config = BusConfig {
            kind: BusKind::Redis,
            redis_url: Some(url),
            ..BusConfig::default()
        };
        match Bus::connect(&config).await {
            Ok(bus) => bus,
            Err(err) => panic!("connect: {err}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscription_survives_server_restart() {
        let _shared = test_support::require_service!(Service::Redis);
        let mut server = RedisServer::start();
        let bus = connect(server.url()).await;
        wait_state(&bus, ConnectionState::Connected, Duration::from_secs(5)).await;
        let seen = record_states(&bus);
        let topic = format!("{}.restart", prefix());
        let Ok(mut subscription) = bus.subscribe(&topic).await else {
            panic!("subscribe")
        };
        assert!(bus.publish(&topic, "before", Map::new()).await.is_ok());
        assert_eq!(
            next_event(&mut subscription, "before").await.event_type,
            "before"
        );

        server.kill();
        wait_state(&bus, ConnectionState::Reconnecting, Duration::from_secs(5)).await;
        assert_eq!(bus.state(), ConnectionState::Reconnecting);
        // Publishing while Redis is down fails fast, is counted, never panics.
        for _ in 0..2 {
            let started = std::time::Instant::now();
            let res = bus.publish(&topic, "while-down", Map::new()).await;
            assert!(
                matches!(res, Err(decnet_bus::PublishError::Transport(_))),
                "{res:?}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{:?}",
                started.elapsed()
            );
        }
        assert_eq!(bus.counters().publish_failures, 2);
        let server = tokio::task::spawn_blocking(move || {
            server.restart();
            server
        })
        .await;
        let Ok(_server) = server else {
            panic!("restart")
        };

        assert!(
            publish_until_received(&bus, &topic, &mut subscription, Duration::from_secs(15)).await,
            "delivery did not resume on the same subscription"
        );
        assert_eq!(bus.state(), ConnectionState::Connected);
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let reconnecting = seen
            .iter()
            .position(|s| *s == ConnectionState::Reconnecting);
        let connected = seen.iter().rposition(|s| *s == ConnectionState::Connected);
        assert!(
            matches!((reconnecting, connected), (Some(r), Some(c)) if r < c),
            "states seen: {seen:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bus_created_while_server_down_connects_later() {
        let _shared = test_support::require_service!(Service::Redis);
        let port = test_support::free_port();
        let bus = connect(format!("redis://127.0.0.1:{port}")).await;
        assert_eq!(bus.state(), ConnectionState::Reconnecting);
        let topic = format!("{}.late", prefix());
        let Ok(mut subscription) = bus.subscribe(&topic).await else {
            panic!("subscribe while down")
        };
        let server = tokio::task::spawn_blocking(move || RedisServer::start_on(port)).await;
        let Ok(_server) = server else { panic!("start") };
        wait_state(&bus, ConnectionState::Connected, Duration::from_secs(10)).await;
        assert!(
            publish_until_received(&bus, &topic, &mut subscription, Duration::from_secs(10)).await,
            "subscription made while down never received"
        );
    }
}
