//! The conformance suite on NATS (a real server from `DECNET_TEST_NATS_URL`),
//! and restart / start-while-down tests on PRIVATE `nats-server` processes.
#![cfg(feature = "nats")]

mod conformance;

/// A URL the client cannot parse is a `ConnectError` (no server needed).
#[tokio::test]
async fn invalid_url_is_a_connect_error() {
    let config = decnet_bus::BusConfig {
        kind: decnet_bus::BusKind::Nats,
        nats_url: Some("nats://:::/bad url".to_owned()),
        ..decnet_bus::BusConfig::default()
    };
    let res = decnet_bus::Bus::connect(&config).await;
    assert!(
        matches!(res, Err(decnet_bus::ConnectError::InvalidUrl { .. })),
        "{res:?}"
    );
}

mod svc_nats {
    use std::sync::Arc;
    use std::time::Duration;

    use decnet_bus::{Bus, BusConfig, BusKind, ConnectionState, NatsBus, NatsConfig};
    use futures::FutureExt;
    use serde_json::Map;
    use test_support::Service;
    use test_support::servers::NatsServer;

    use crate::conformance::{
        Harness, next_event, prefix, publish_until_received, record_states, wait_state,
    };

    fn harness(url: String) -> Harness {
        Harness::new(decnet_bus::BusKind::Nats, false, move |options| {
            let url = url.clone();
            async move {
                let config = NatsConfig {
                    url,
                    ..NatsConfig::default()
                };
                match NatsBus::connect(config).await {
                    Ok(nats) => Bus::from_backend_with(Arc::new(nats), options),
                    Err(err) => panic!("nats connect: {err}"),
                }
            }
            .boxed()
        })
    }

    crate::conformance_suite!(harness(test_support::require_service!(Service::Nats)));

    async fn connect(url: String) -> Bus {
        let config = BusConfig {
            kind: BusKind::Nats,
            nats_url: Some(url),
            ..BusConfig::default()
        };
        match Bus::connect(&config).await {
            Ok(bus) => bus,
            Err(err) => panic!("connect: {err}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscription_survives_server_restart() {
        let _shared = test_support::require_service!(Service::Nats);
        let mut server = NatsServer::start();
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
        let _shared = test_support::require_service!(Service::Nats);
        let port = test_support::free_port();
        let bus = connect(format!("nats://127.0.0.1:{port}")).await;
        assert_eq!(bus.state(), ConnectionState::Reconnecting);
        let topic = format!("{}.late", prefix());
        let Ok(mut subscription) = bus.subscribe(&topic).await else {
            panic!("subscribe while down")
        };
        let server = tokio::task::spawn_blocking(move || NatsServer::start_on(port)).await;
        let Ok(_server) = server else { panic!("start") };
        wait_state(&bus, ConnectionState::Connected, Duration::from_secs(10)).await;
        assert!(
            publish_until_received(&bus, &topic, &mut subscription, Duration::from_secs(10)).await,
            "subscription made while down never received"
        );
    }
}
