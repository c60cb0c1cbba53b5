//! The conformance suite on the memory bus, plus memory-only behaviour:
//! subscriber removal on drop, drop-oldest queues, a custom backend, and
//! `Bus::connect` for the always-compiled kinds.

mod conformance;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use conformance::{Harness, next_event};
use decnet_bus::{
    Backend, Bus, BusConfig, BusKind, BusOptions, ConnectionState, MemoryBus, MemoryConfig,
    PublishError, RawSubscription, SubscribeError,
};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde_json::Map;
use tokio::sync::watch;

fn harness() -> Harness {
    Harness::new(decnet_bus::BusKind::Memory, false, |options| {
        async move { Bus::from_backend_with(Arc::new(MemoryBus::default()), options) }.boxed()
    })
}

conformance_suite!(harness());

#[tokio::test]
async fn dropped_subscription_is_removed() {
    let memory = Arc::new(MemoryBus::default());
    let bus = Bus::from_backend(memory.clone());
    let first = bus.subscribe("a.>").await.ok();
    let second = bus.subscribe("a.*").await.ok();
    assert!(first.is_some() && second.is_some());
    assert_eq!(memory.subscriber_count(), 2);
    drop(first);
    assert_eq!(memory.subscriber_count(), 1);
    drop(second);
    assert_eq!(memory.subscriber_count(), 0);
    assert!(bus.publish("a.b", "x", Map::new()).await.is_ok());
}

#[tokio::test]
async fn full_queue_drops_oldest_without_blocking() {
    let bus = Bus::memory_with(MemoryConfig { queue_capacity: 4 });
    let Ok(mut slow) = bus.subscribe("q.t").await else {
        panic!("subscribe")
    };
    for n in 0..10 {
        let mut payload = Map::new();
        payload.insert("n".into(), n.into());
        // Never blocks although nobody reads.
        let res =
            tokio::time::timeout(Duration::from_secs(1), bus.publish("q.t", "n", payload)).await;
        assert!(matches!(res, Ok(Ok(()))));
    }
    assert_eq!(bus.counters().dropped, 6);
    for n in 6..10 {
        let event = next_event(&mut slow, "survivor").await;
        assert_eq!(event.payload.get("n"), Some(&n.into()));
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(50), slow.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn flood_of_malformed_bodies_does_not_stall() {
    let bus = Bus::memory_with(MemoryConfig {
        queue_capacity: 5000,
    });
    let Ok(mut subscription) = bus.subscribe("f.t").await else {
        panic!("subscribe")
    };
    for _ in 0..1000 {
        assert!(
            bus.publish_raw("f.t", Bytes::from_static(b"garbage"))
                .await
                .is_ok()
        );
    }
    assert!(bus.publish("f.t", "valid", Map::new()).await.is_ok());
    let event = next_event(&mut subscription, "after flood").await;
    assert_eq!(event.event_type, "valid");
    assert_eq!(bus.counters().decode_failures, 1000);
}

#[tokio::test]
async fn slow_subscriber_does_not_affect_fast_one() {
    let bus = Bus::memory_with(MemoryConfig { queue_capacity: 2 });
    let (Ok(_slow), Ok(mut fast)) = (bus.subscribe("s.t").await, bus.subscribe("s.t").await) else {
        panic!("subscribe")
    };
    for _ in 0..5 {
        assert!(bus.publish("s.t", "x", Map::new()).await.is_ok());
        next_event(&mut fast, "fast").await;
    }
    assert_eq!(bus.counters().dropped, 3);
}

/// An embedder's backend that ignores patterns and sends everything to
/// every subscriber: the Bus still delivers only matching, valid events.
struct Loopback {
    tx: tokio::sync::broadcast::Sender<(String, Bytes)>,
    state: watch::Sender<ConnectionState>,
}

impl Backend for Loopback {
    fn publish(&self, topic: &str, body: Bytes) -> BoxFuture<'_, Result<(), PublishError>> {
        let _ = self.tx.send((topic.to_owned(), body));
        futures::future::ready(Ok(())).boxed()
    }
    fn subscribe(&self, _pattern: &str) -> BoxFuture<'_, Result<RawSubscription, SubscribeError>> {
        let stream = tokio_stream::wrappers::BroadcastStream::new(self.tx.subscribe())
            .filter_map(|item| async move { item.ok() });
        let stream = RawSubscription::new(stream);
        futures::future::ready(Ok(stream)).boxed()
    }
    fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }
    fn close(&self) -> BoxFuture<'_, ()> {
        futures::future::ready(()).boxed()
    }
    fn kind(&self) -> BusKind {
        BusKind::Custom("loopback")
    }
}

#[tokio::test]
async fn custom_backend_gets_identical_semantics() {
    let (tx, _) = tokio::sync::broadcast::channel(64);
    let (state, _) = watch::channel(ConnectionState::Connected);
    let bus = Bus::from_backend(Arc::new(Loopback {
        tx: tx.clone(),
        state,
    }));
    assert_eq!(bus.kind(), BusKind::Custom("loopback"));
    assert_eq!(bus.kind().as_str(), "loopback");
    let Ok(mut subscription) = bus.subscribe("keep.*").await else {
        panic!("subscribe")
    };
    assert!(bus.publish("other.x", "skip", Map::new()).await.is_ok());
    assert!(
        bus.publish_raw("keep.x", Bytes::from_static(b"[1]"))
            .await
            .is_ok()
    );
    assert!(bus.publish("keep.x.y", "skip", Map::new()).await.is_ok());
    // A transport subject no Bus would publish: CR/LF inside a token that
    // the pattern matches. Dropped and counted, never delivered.
    let envelope = Bytes::from_static(br#"{"type":"forged","payload":{}}"#);
    assert!(
        tx.send(("keep.x\r\nevent: error".to_owned(), envelope))
            .is_ok()
    );
    assert!(bus.publish("keep.x", "keep", Map::new()).await.is_ok());
    let event = next_event(&mut subscription, "loopback").await;
    assert_eq!(event.event_type, "keep");
    assert_eq!(event.topic, "keep.x");
    assert_eq!(bus.counters().invalid_topics, 1);
    assert_eq!(bus.counters().decode_failures, 1);
    assert_eq!(bus.counters().received, 1);
    bus.close().await;
    assert!(subscription.next().await.is_none());
    assert_eq!(bus.state(), ConnectionState::Closed);
}

#[tokio::test]
async fn connect_builds_the_configured_kind() {
    for (kind, name) in [
        (BusKind::Memory, BusKind::Memory),
        (BusKind::Null, BusKind::Null),
    ] {
        let config = BusConfig {
            kind,
            ..BusConfig::default()
        };
        match Bus::connect(&config).await {
            Ok(bus) => assert_eq!(bus.kind(), name),
            Err(err) => panic!("{kind}: {err}"),
        }
    }
    let config = BusConfig {
        max_message_bytes: 100,
        ..BusConfig::default()
    };
    let bus = Bus::connect(&config).await.ok();
    assert_eq!(
        bus.map(|b| b.options()),
        Some(BusOptions {
            max_message_bytes: 100,
            ..BusOptions::default()
        })
    );
    #[cfg(not(feature = "nats"))]
    assert!(matches!(
        Bus::connect(&BusConfig {
            kind: BusKind::Nats,
            ..BusConfig::default()
        })
        .await,
        Err(decnet_bus::ConnectError::FeatureDisabled { .. })
    ));
    #[cfg(not(feature = "redis"))]
    assert!(matches!(
        Bus::connect(&BusConfig {
            kind: BusKind::Redis,
            ..BusConfig::default()
        })
        .await,
        Err(decnet_bus::ConnectError::FeatureDisabled { .. })
    ));
}

#[test]
fn subscription_can_be_dropped_outside_a_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok();
    let Some(runtime) = runtime else {
        panic!("runtime")
    };
    let memory = Arc::new(MemoryBus::default());
    let bus = Bus::from_backend(memory.clone());
    let subscription = runtime.block_on(bus.subscribe("a.b")).ok();
    drop(runtime);
    assert_eq!(memory.subscriber_count(), 1);
    drop(subscription);
    assert_eq!(memory.subscriber_count(), 0);
}
