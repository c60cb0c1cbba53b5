//! MemoryBus fan-out: 1,000 subscribers on one pattern, N events.
//!
//! Run: `cargo bench -p decnet-bus --bench fanout`. Prints deliveries/s for
//! (1) publish only (enqueue into 1,000 queues, nobody reading) and
//! (2) end to end (1,000 subscriber tasks receive and decode every event).
#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::time::Instant;

use decnet_bus::{Bus, MemoryConfig};
use futures::StreamExt;
use serde_json::{Map, Value, json};

const SUBSCRIBERS: usize = 1000;
const EVENTS: usize = 1000;

fn payload() -> Map<String, Value> {
    match json!({"attacker_uuid": "8c3f1e2a-5b7d-4e9f-a1c2-3d4e5f6a7b8c", "value": {"ratio": 0.82}})
    {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

async fn publish_only() {
    let bus = Bus::memory_with(MemoryConfig {
        queue_capacity: EVENTS,
    });
    let mut subscriptions = Vec::with_capacity(SUBSCRIBERS);
    for _ in 0..SUBSCRIBERS {
        subscriptions.push(bus.subscribe("bench.>").await);
    }
    let payload = payload();
    let started = Instant::now();
    for _ in 0..EVENTS {
        let _ = bus
            .publish("bench.fanout.x", "bench", payload.clone())
            .await;
    }
    let elapsed = started.elapsed();
    let deliveries = (SUBSCRIBERS * EVENTS) as f64;
    println!(
        "publish only: {SUBSCRIBERS} subscribers x {EVENTS} events in {:.3} s = {:.2} M deliveries/s ({:.1} us per publish)",
        elapsed.as_secs_f64(),
        deliveries / elapsed.as_secs_f64() / 1e6,
        elapsed.as_secs_f64() * 1e6 / EVENTS as f64
    );
    drop(subscriptions);
}

async fn end_to_end() {
    let bus = Bus::memory_with(MemoryConfig {
        queue_capacity: EVENTS,
    });
    let mut tasks = Vec::with_capacity(SUBSCRIBERS);
    for _ in 0..SUBSCRIBERS {
        let Ok(mut subscription) = bus.subscribe("bench.>").await else {
            panic!("subscribe")
        };
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while n < EVENTS {
                if subscription.next().await.is_none() {
                    break;
                }
                n += 1;
            }
            n
        }));
    }
    let payload = payload();
    let started = Instant::now();
    for _ in 0..EVENTS {
        let _ = bus
            .publish("bench.fanout.x", "bench", payload.clone())
            .await;
    }
    let mut received = 0;
    for task in tasks {
        received += task.await.unwrap_or(0);
    }
    let elapsed = started.elapsed();
    assert_eq!(received, SUBSCRIBERS * EVENTS, "lost events");
    println!(
        "end to end:   {SUBSCRIBERS} subscribers x {EVENTS} events in {:.3} s = {:.2} M deliveries/s (decode included), dropped {}",
        elapsed.as_secs_f64(),
        received as f64 / elapsed.as_secs_f64() / 1e6,
        bus.counters().dropped
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let Ok(runtime) = runtime else {
        panic!("tokio runtime")
    };
    for _ in 0..3 {
        runtime.block_on(publish_only());
    }
    for _ in 0..3 {
        runtime.block_on(end_to_end());
    }
}
