//! Envelope decode: `Event::decode` (simd-json) against serde_json, on a
//! realistic ~300-byte observation envelope and a ~4 KiB one.
//!
//! Run: `cargo bench -p decnet-bus --bench decode`. Plain `Instant` loops,
//! no harness; prints ns/op and MB/s.
#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::hint::black_box;
use std::time::{Duration, Instant};

use decnet_bus::{DEFAULT_MAX_MESSAGE_BYTES, Event};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The same envelope shape, decoded strictly with serde (no leniency).
#[derive(Deserialize)]
#[allow(dead_code, reason = "fields are decoded to be measured, not read")]
struct StrictWire {
    v: Option<u32>,
    id: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    ts: Option<f64>,
    payload: Option<Value>,
}

fn envelope(extra_evidence: usize) -> Vec<u8> {
    let mut payload = json!({
        "attacker_uuid": "8c3f1e2a-5b7d-4e9f-a1c2-3d4e5f6a7b8c",
        "primitive": "motor.shell_mastery.tab_completion",
        "value": {"ratio": 0.82, "samples": 41},
        "confidence": 0.91,
        "window_start_ts": 1_732_800_000.0,
        "window_end_ts": 1_732_800_300.0,
        "source": "sniffer"
    });
    if extra_evidence > 0 {
        let evidence: Vec<Value> = (0..extra_evidence)
            .map(|n| json!({"seq": n, "cmd": "ls -la /etc/", "dt_ms": 113 + n, "tab": n % 3 == 0}))
            .collect();
        if let Some(map) = payload.as_object_mut() {
            map.insert("evidence".into(), Value::Array(evidence));
        }
    }
    let payload: Map<String, Value> = match payload {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let mut event = Event::new(
        "attacker.observation.motor.shell_mastery.tab_completion",
        "observation",
        payload,
    );
    event.ts = 1_732_800_301.123_456;
    event.to_json()
}

/// Run `f` for about `budget` in 3 rounds; return the best round's ns per
/// call (the machine is shared: the minimum is the least disturbed figure).
fn measure(budget: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..1000 {
        f(); // warm-up
    }
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let mut iterations: u64 = 0;
        let started = Instant::now();
        let mut batch = 256;
        while started.elapsed() < budget / 3 {
            for _ in 0..batch {
                f();
            }
            iterations += batch;
            batch = (batch * 2).min(65_536);
        }
        best = best.min(started.elapsed().as_nanos() as f64 / iterations as f64);
    }
    best
}

fn report(name: &str, size: usize, ns: f64) {
    let mb_s = size as f64 / ns * 1e9 / 1e6;
    println!("{name:<44} {size:>6} B {ns:>10.0} ns/op {mb_s:>9.1} MB/s");
}

fn main() {
    let budget = Duration::from_secs(3);
    let subject = "attacker.observation.motor.shell_mastery.tab_completion";
    for body in [envelope(0), envelope(62)] {
        let size = body.len();
        assert!(Event::decode(subject, &body, DEFAULT_MAX_MESSAGE_BYTES).is_ok());
        let ns = measure(budget, || {
            let event = Event::decode(subject, black_box(&body), DEFAULT_MAX_MESSAGE_BYTES);
            black_box(event.is_ok());
        });
        report("Event::decode (simd-json, lenient)", size, ns);
        let ns = measure(budget, || {
            let mut copy = black_box(&body).clone();
            let wire: Result<StrictWire, _> = simd_json::serde::from_slice(&mut copy);
            black_box(wire.is_ok());
        });
        report("simd_json::serde::from_slice (strict)", size, ns);
        let ns = measure(budget, || {
            let wire: Result<StrictWire, _> = serde_json::from_slice(black_box(&body));
            black_box(wire.is_ok());
        });
        report("serde_json::from_slice (strict)", size, ns);
        let ns = measure(budget, || {
            let parsed: Result<serde::de::IgnoredAny, _> = serde_json::from_slice(black_box(&body));
            black_box(parsed.is_ok());
        });
        report("serde_json parse only (IgnoredAny)", size, ns);
        let ns = measure(budget, || {
            let mut copy = black_box(&body).clone();
            let tape = simd_json::to_tape(&mut copy);
            black_box(tape.is_ok());
        });
        report("simd_json::to_tape parse only", size, ns);
    }
}
