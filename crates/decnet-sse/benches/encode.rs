//! Encode throughput of one live event frame, the per-bus-event hot path.
//!
//! Plain `Instant` loop (no criterion): warm up, then encode for about two seconds per case (eight timed rounds)
//! and report frames/s and MB/s of the median round (MB = 10^6 bytes of encoded frame output).
//! Run with `cargo bench -p decnet-sse`.

#![allow(clippy::print_stdout, reason = "a benchmark reports to the terminal")]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use decnet_sse::{Frame, encode_event_json, encode_event_json_into};

const WARM_UP: Duration = Duration::from_millis(500);
const RUN: Duration = Duration::from_secs(2);
const ROUNDS: u32 = 8;
const BATCH: u64 = 1024;
const ID: &str = "01JGZ8Q4X7M2R5T9W3Y6B8N0PK";
const EVENT: &str = "observation";

/// A bus envelope of the shape the service forwards, padded to about 300 bytes.
fn payload() -> String {
    let mut json = String::from(concat!(
        r#"{"topic":"attacker.observation.motor.input_modality","type":"observation","ts":1767225600.123,"#,
        r#""payload":{"attacker_uuid":"5f0c6a2e-9b1d-4e7a-8c3f-2d6b9e1a4c70","primitive":"motor.input_modality","#,
        r#""value":{"modality":"keyboard","cadence_ms":142},"confidence":0.87,"source":"sensor-07","note":""#,
    ));
    while json.len() < 296 {
        json.push('x');
    }
    json.push_str(r#""}}"#);
    json
}

/// Runs `encode` in batches for `RUN`, split into `ROUNDS` timed rounds, and prints the median round's rates
/// (and the best round's frames/s: on a shared VM the median shows the typical cost, the best the unloaded one).
fn measure(name: &str, mut encode: impl FnMut() -> usize) {
    let warm_up_end = Instant::now() + WARM_UP;
    while Instant::now() < warm_up_end {
        for _ in 0..BATCH {
            black_box(encode());
        }
    }
    let round_time = RUN / ROUNDS;
    // (frames per second, bytes per second) of each round.
    let mut rounds: Vec<(f64, f64)> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            let mut frames = 0u64;
            let mut bytes = 0u64;
            while start.elapsed() < round_time {
                for _ in 0..BATCH {
                    bytes += black_box(encode()) as u64;
                }
                frames += BATCH;
            }
            let secs = start.elapsed().as_secs_f64();
            (frames as f64 / secs, bytes as f64 / secs)
        })
        .collect();
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (median_fps, median_bps) = rounds[rounds.len() / 2];
    let best_fps = rounds.last().map_or(0.0, |round| round.0);
    println!(
        "{name:<40} {median_fps:>11.0} frames/s {:>8.1} MB/s {:>6.1} ns/frame (best round {best_fps:.0} frames/s)",
        median_bps / 1e6,
        1e9 / median_fps,
    );
}

fn main() {
    let json = payload();
    let frame_len = encode_event_json(Some(ID), EVENT, json.as_bytes())
        .map(|frame| frame.len())
        .unwrap_or_default();
    println!(
        "decnet-sse encode: {}-byte JSON payload, {frame_len}-byte frame, {}s per case in {ROUNDS} rounds after {}ms warm-up",
        json.len(),
        RUN.as_secs(),
        WARM_UP.as_millis(),
    );

    measure("encode_event_json -> Bytes (new alloc)", || {
        let frame: Bytes = encode_event_json(
            Some(black_box(ID)),
            black_box(EVENT),
            black_box(json.as_bytes()),
        )
        .unwrap_or_default();
        frame.len()
    });

    let frame = Frame::new().id(ID).event(EVENT).data(&json);
    measure("Frame::encode -> Bytes (new alloc)", || {
        black_box(frame)
            .encode()
            .map(|bytes| bytes.len())
            .unwrap_or_default()
    });

    let mut buf = BytesMut::with_capacity(64 * 1024);
    measure("encode_event_json_into reused BytesMut", || {
        buf.clear();
        let _res = encode_event_json_into(
            Some(black_box(ID)),
            black_box(EVENT),
            black_box(json.as_bytes()),
            &mut buf,
        );
        buf.len()
    });

    measure("Frame::encode_into reused BytesMut", || {
        buf.clear();
        let _res = black_box(frame).encode_into(&mut buf);
        buf.len()
    });
}
