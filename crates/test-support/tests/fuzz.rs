//! Property-based fuzzing of the stand-in DECNET broker's frame parser
//! (`TestBroker`: its `line`, `exactly` and `frame` readers), over its
//! socket: random bytes, and streams of well-formed frames with one
//! mutation each, every case on a connection of its own to one running
//! broker.
//!
//! For each case the broker must not panic (a panic hook counts panics in
//! any thread, its tasks' included), must close the connection having
//! written nothing to it (DECNET.md §1.7: no error frames; nothing else
//! publishes while it is open), must record exactly the close reason a
//! reference model of §1.2/§1.3/§1.7 written here predicts (none for a clean
//! end or `BYE`), and must keep serving a well-behaved pair of connections
//! that lives through the whole run: a `PUB` on one arrives as an `EVT` on
//! the other after every case.
//!
//! Case count: `PROPTEST_CASES` (default 256; `cargo xtask soak` runs
//! more); failures are kept in `proptest-regressions/fuzz.txt`.
#![cfg(unix)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Client, WAIT, frame, subscriber};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{FileFailurePersistence, TestRunner};
use serde_json::{Value, json};
use test_support::decnet_broker::{BrokerConfig, CloseReason, TestBroker};
use tokio::io::AsyncWriteExt as _;

/// Largest header line, LF included (DECNET.md §1.2).
const HEADER_LIMIT: usize = 4096;
/// Largest body, inclusive.
const BODY_LIMIT: u32 = 1024 * 1024;
/// asyncio's `StreamReader` limit: no LF within it fails the line.
const STREAM_LIMIT: usize = 64 * 1024;

/// Cases per property: proptest's `PROPTEST_CASES` (default 256; `cargo
/// xtask soak` runs more); failures are kept in `proptest-regressions/fuzz.txt`.
fn config() -> ProptestConfig {
    ProptestConfig::with_failure_persistence(FileFailurePersistence::Direct(
        "proptest-regressions/fuzz.txt",
    ))
}

// ======================================================================
// The reference model
// ======================================================================

/// Python's `str.strip()` whitespace, on ASCII.
fn python_space(byte: u8) -> bool {
    matches!(
        byte,
        b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0x1c..=0x1f
    )
}

/// What DECNET's server does with a connection that sends `bytes` and then
/// ends its side: `None` for a normal end (a clean EOF between frames, or
/// `BYE`), else the §1.7 reason it closes for. Written from DECNET.md
/// (§1.2 framing, §1.3 verbs, §1.7 errors), not from the broker's code.
fn model(bytes: &[u8]) -> Option<CloseReason> {
    let mut rest = bytes;
    loop {
        let Some(lf) = rest.iter().position(|b| *b == b'\n') else {
            return match rest.len() {
                0 => None,
                n if n > STREAM_LIMIT => Some(CloseReason::HeaderTooLong),
                _ => Some(CloseReason::EofMidHeader),
            };
        };
        let line = &rest[..=lf];
        if line.len() > HEADER_LIMIT {
            return Some(CloseReason::HeaderTooLong);
        }
        let header = {
            let mut end = line.len();
            while end > 0 && matches!(line[end - 1], b'\r' | b'\n') {
                end -= 1;
            }
            &line[..end]
        };
        if !header.is_ascii() {
            return Some(CloseReason::NonAsciiHeader);
        }
        if header.is_empty() {
            return Some(CloseReason::EmptyHeader);
        }
        let (verb, args) = match header.iter().position(|b| *b == b' ') {
            Some(space) => (&header[..space], &header[space + 1..]),
            None => (header, &header[header.len()..]),
        };
        let verb = String::from_utf8_lossy(verb).into_owned();
        if !["HELLO", "PUB", "SUB", "UNSUB", "EVT", "BYE"].contains(&verb.as_str()) {
            return Some(CloseReason::UnknownVerb(verb));
        }
        rest = &rest[lf + 1..];
        let Some((length, after)) = rest.split_first_chunk::<4>() else {
            return Some(CloseReason::EofMidFrame);
        };
        let length = u32::from_be_bytes(*length);
        if length > BODY_LIMIT {
            return Some(CloseReason::BodyTooLarge(length));
        }
        let length = usize::try_from(length).expect("at most 1 MiB");
        if after.len() < length {
            return Some(CloseReason::EofMidFrame);
        }
        let (body, after) = after.split_at(length);
        rest = after;
        let start = args.iter().position(|b| !python_space(*b));
        let end = args.iter().rposition(|b| !python_space(*b));
        let args_empty = start.is_none() || end.is_none();
        match verb.as_str() {
            "HELLO" | "UNSUB" => {}
            "SUB" if args_empty => return Some(CloseReason::SubWithoutPattern),
            "SUB" => {}
            "PUB" if args_empty => return Some(CloseReason::PubWithoutTopic),
            "PUB" if body.is_empty() => {}
            "PUB" => match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(_)) => {}
                Ok(_) => return Some(CloseReason::BodyNotObject),
                Err(_) => return Some(CloseReason::BodyNotJson),
            },
            "BYE" => return None,
            _ => return Some(CloseReason::EvtFromClient),
        }
    }
}

#[test]
fn the_model_agrees_with_the_documented_cases() {
    for (bytes, expected) in [
        (frame("HELLO api", b""), None),
        (frame("SUB attacker.>", b"ignored"), None),
        (frame("PUB x", b"{}"), None),
        (frame("PUB x", b""), None),
        (frame("BYE", b""), None),
        ([frame("BYE", b""), b"garbage".to_vec()].concat(), None),
        (
            b"FOO x\n".to_vec(),
            Some(CloseReason::UnknownVerb("FOO".into())),
        ),
        (
            frame("PUB\tx", b""),
            Some(CloseReason::UnknownVerb("PUB\tx".into())),
        ),
        (b"\r\n\0\0\0\0".to_vec(), Some(CloseReason::EmptyHeader)),
        (
            frame("PUB caf\u{e9}", b"{}"),
            Some(CloseReason::NonAsciiHeader),
        ),
        (frame("PUB   ", b"{}"), Some(CloseReason::PubWithoutTopic)),
        (frame("SUB", b""), Some(CloseReason::SubWithoutPattern)),
        (frame("PUB x", b"[1]"), Some(CloseReason::BodyNotObject)),
        (frame("PUB x", b"{"), Some(CloseReason::BodyNotJson)),
        (frame("EVT x", b"{}"), Some(CloseReason::EvtFromClient)),
        (b"PUB x".to_vec(), Some(CloseReason::EofMidHeader)),
        (b"PUB x\n\0\0".to_vec(), Some(CloseReason::EofMidFrame)),
        (
            b"PUB x\n\x00\x10\x00\x01".to_vec(),
            Some(CloseReason::BodyTooLarge(BODY_LIMIT + 1)),
        ),
        (
            frame(&format!("SUB {}", "a".repeat(HEADER_LIMIT - 5)), b""),
            None,
        ),
        (
            frame(&format!("SUB {}", "a".repeat(HEADER_LIMIT - 4)), b""),
            Some(CloseReason::HeaderTooLong),
        ),
        (vec![b'a'; STREAM_LIMIT], Some(CloseReason::EofMidHeader)),
        (
            vec![b'a'; STREAM_LIMIT + 1],
            Some(CloseReason::HeaderTooLong),
        ),
    ] {
        assert_eq!(
            model(&bytes),
            expected,
            "{:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

// ======================================================================
// The broker under test, and its well-behaved pair
// ======================================================================

/// Panics in any thread since the hook was installed.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
}

/// One broker for a whole property, a subscriber and a publisher that stay
/// connected throughout.
struct World {
    broker: TestBroker,
    /// Subscribed to `topic` only.
    subscriber: tokio::sync::Mutex<Client>,
    /// Publishes on `topic` after every case.
    publisher: tokio::sync::Mutex<Client>,
    topic: String,
    probes: AtomicUsize,
}

impl World {
    async fn start() -> World {
        // No heartbeat while the run lasts (the one at start reaches nobody):
        // a fuzzed connection then has nothing to receive.
        let broker = TestBroker::start_in_temp_dir_with(BrokerConfig {
            heartbeat_interval: Duration::from_secs(24 * 3600),
            ..BrokerConfig::default()
        })
        .await
        .expect("start the broker");
        let topic = format!("probe.{}", uuid::Uuid::new_v4().simple());
        let subscriber = subscriber(&broker, "watcher", &[topic.as_str()]).await;
        let mut publisher = Client::connect(&broker).await;
        publisher.send(&frame("HELLO publisher", b"")).await;
        assert!(
            broker
                .wait_until(WAIT, |b| b.stats().connections == 2)
                .await
        );
        World {
            broker,
            subscriber: tokio::sync::Mutex::new(subscriber),
            publisher: tokio::sync::Mutex::new(publisher),
            topic,
            probes: AtomicUsize::new(0),
        }
    }

    /// Feed `bytes` to a new connection, end its side, and check what the
    /// broker did with it and that it still serves the pair.
    async fn case(&self, bytes: &[u8]) -> Result<(), TestCaseError> {
        let shown = || {
            let head = &bytes[..bytes.len().min(200)];
            format!("{} bytes: {:?}", bytes.len(), String::from_utf8_lossy(head))
        };
        let expected = model(bytes);
        let before = self.broker.stats().closes.len();
        let mut client = Client::connect(&self.broker).await;
        client.send_lossy(bytes).await;
        let _ = client.stream.shutdown().await;
        prop_assert!(
            client.read_to_close(WAIT).await,
            "the connection stayed open ({})",
            shown()
        );
        prop_assert!(
            client.buf.is_empty(),
            "the broker wrote {:?} ({})",
            String::from_utf8_lossy(&client.buf),
            shown()
        );
        prop_assert!(
            self.broker
                .wait_until(WAIT, |b| b.stats().connections == 2)
                .await,
            "the fuzzed connection is still registered ({})",
            shown()
        );
        let closes = self.broker.stats().closes;
        prop_assert_eq!(
            &closes[before..],
            expected.as_slice(),
            "close reason ({})",
            shown()
        );
        prop_assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a panic ({})", shown());
        self.probe().await
    }

    /// A `PUB` from the publisher reaches the subscriber as the next `EVT`.
    async fn probe(&self) -> Result<(), TestCaseError> {
        let n = self.probes.fetch_add(1, Ordering::Relaxed);
        let body = json!({"type": "probe", "payload": {"n": n}}).to_string();
        self.publisher
            .lock()
            .await
            .send(&frame(&format!("PUB {}", self.topic), body.as_bytes()))
            .await;
        let evt = self.subscriber.lock().await.evt().await;
        prop_assert_eq!(&evt.topic, &self.topic);
        prop_assert_eq!(&evt.body["payload"], &json!({"n": n}));
        Ok(())
    }
}

/// Run `strategy`'s cases against one [`World`].
fn run(strategy: impl Strategy<Value = Vec<u8>>) {
    count_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let world = runtime.block_on(World::start());
    let mut runner = TestRunner::new(config());
    let result = runner.run(&strategy, |bytes| runtime.block_on(world.case(&bytes)));
    if let Err(error) = result {
        panic!("{error}");
    }
    // The pair is still served after the whole run.
    runtime
        .block_on(world.probe())
        .unwrap_or_else(|e| panic!("{e}"));
}

// ======================================================================
// Strategies
// ======================================================================

/// Bytes a frame is made of, more often than chance gives them.
fn frame_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => any::<u8>(),
        2 => proptest::sample::select(b"HELLOPUBSUNVTY ".to_vec()),
        2 => proptest::sample::select(b"\n\r\t\x00\x01\xff{}[]\":,.>*a1".to_vec()),
    ]
}

/// Random bytes: uniformly random, or from a frame-like alphabet.
fn random_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        prop::collection::vec(frame_byte(), 0..512),
    ]
}

/// A topic or pattern as the wire carries it (anything without CR/LF; the
/// broker checks no syntax).
fn topic() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}(\\.[a-z*>]{1,6}){0,3}",
        "[ -~]{0,16}",
        Just(String::new()),
    ]
}

/// A JSON body for `PUB`: mostly objects, sometimes not.
fn pub_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => ("[a-z]{0,8}", any::<i64>(), "[ -~]{0,12}").prop_map(|(t, n, s)| {
            json!({"type": t, "payload": {"n": n, "s": s}}).to_string().into_bytes()
        }),
        1 => Just(Vec::new()),
        1 => Just(b"[1,2]".to_vec()),
        1 => "[ -~]{0,12}".prop_map(String::into_bytes),
    ]
}

/// One frame a client may send, well-formed at the framing level.
fn well_formed_frame() -> impl Strategy<Value = Vec<u8>> {
    let padding = proptest::sample::select(vec!["", " ", "  ", "\r", " \r"]);
    prop_oneof![
        4 => (topic(), pub_body(), padding.clone())
            .prop_map(|(t, body, pad)| frame(&format!("PUB {t}{pad}"), &body)),
        3 => (topic(), padding.clone(), prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(p, pad, junk)| frame(&format!("SUB {p}{pad}"), &junk)),
        2 => (topic(), padding.clone())
            .prop_map(|(p, pad)| frame(&format!("UNSUB {p}{pad}"), b"")),
        2 => ("[ -~]{0,12}", padding).prop_map(|(n, pad)| frame(&format!("HELLO {n}{pad}"), b"")),
        1 => Just(frame("BYE", b"")),
    ]
}

/// One change to a stream of frames.
#[derive(Debug, Clone)]
enum Mutation {
    /// Left as it is.
    None,
    /// One byte replaced.
    Replace(Index, u8),
    /// Bytes inserted.
    Insert(Index, Vec<u8>),
    /// Bytes removed.
    Delete(Index, usize),
    /// The stream cut short.
    Truncate(Index),
    /// A frame's length prefix replaced (the first LF's next four bytes,
    /// after the `Index`'s position).
    Length(Index, u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let length = prop_oneof![any::<u32>(), (BODY_LIMIT - 2)..=(BODY_LIMIT + 2), 0u32..64,];
    prop_oneof![
        1 => Just(Mutation::None),
        3 => (any::<Index>(), frame_byte()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        2 => (any::<Index>(), prop::collection::vec(frame_byte(), 1..16))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        2 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), length).prop_map(|(i, n)| Mutation::Length(i, n)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutation: &Mutation) -> Vec<u8> {
    if bytes.is_empty() {
        return bytes;
    }
    match mutation {
        Mutation::None => {}
        Mutation::Replace(at, byte) => {
            let at = at.index(bytes.len());
            bytes[at] = *byte;
        }
        Mutation::Insert(at, inserted) => {
            let at = at.index(bytes.len() + 1);
            bytes.splice(at..at, inserted.iter().copied());
        }
        Mutation::Delete(at, n) => {
            let at = at.index(bytes.len());
            let end = (at + n).min(bytes.len());
            bytes.drain(at..end);
        }
        Mutation::Truncate(at) => bytes.truncate(at.index(bytes.len())),
        Mutation::Length(at, length) => {
            let from = at.index(bytes.len());
            if let Some(lf) = bytes[from..].iter().position(|b| *b == b'\n') {
                let start = from + lf + 1;
                if start + 4 <= bytes.len() {
                    bytes[start..start + 4].copy_from_slice(&length.to_be_bytes());
                }
            }
        }
    }
    bytes
}

/// A stream of well-formed frames with one mutation.
fn mutated_frames() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(well_formed_frame(), 0..8), mutation())
        .prop_map(|(frames, mutation)| apply(frames.concat(), &mutation))
}

/// Header lines and length prefixes at the limits: a `SUB` line of 4090 to
/// 4100 bytes, an unterminated line around 64 KiB, a length around 1 MiB
/// with no body.
fn at_the_limits() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (HEADER_LIMIT - 6..HEADER_LIMIT + 6)
            .prop_map(|n| frame(&format!("SUB {}", "p".repeat(n - 5)), b"")),
        (STREAM_LIMIT - 2..STREAM_LIMIT + 3).prop_map(|n| vec![b'a'; n]),
        ((BODY_LIMIT - 1)..=(BODY_LIMIT + 1)).prop_map(|n| {
            let mut bytes = b"PUB x\n".to_vec();
            bytes.extend_from_slice(&n.to_be_bytes());
            bytes
        }),
    ]
}

// ======================================================================
// The properties
// ======================================================================

#[test]
fn random_bytes_close_silently_and_the_broker_serves_on() {
    run(random_bytes());
}

#[test]
fn mutated_frame_streams_close_as_documented_and_the_broker_serves_on() {
    run(mutated_frames());
}

#[test]
fn limits_close_as_documented_and_the_broker_serves_on() {
    run(at_the_limits());
}
