//! Property-based fuzzing of the parsers of decnet-bus that read outside
//! input: the envelope decoder ([`Event::decode`], fed by every broker), the
//! frame codec of DECNET's UNIX-socket bus ([`unix_proto`]) and the NATS
//! pattern to Redis glob translation.
//!
//! Each property compares against a small reference model written here, so
//! "does not panic" is never the only thing checked. Case count:
//! `PROPTEST_CASES` (default 256; `cargo xtask soak` runs more).

use std::collections::HashSet;

use bytes::BytesMut;
use decnet_bus::unix_proto::{
    EncodeError, Frame, FrameDecoder, FrameError, MAX_BODY_BYTES, MAX_HEADER_BYTES, Verb, encode,
};
use decnet_bus::{DecodeError, Event, nats_pattern_to_redis_glob, now_ts};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Map, Value, json};

/// Cases per property: proptest's `PROPTEST_CASES` (default 256; `cargo xtask
/// soak` runs more); failures are kept in `proptest-regressions/fuzz.txt`.
fn config() -> ProptestConfig {
    ProptestConfig::with_failure_persistence(FileFailurePersistence::Direct(
        "proptest-regressions/fuzz.txt",
    ))
}

// ======================================================================
// The envelope decoder
// ======================================================================

/// Any JSON value, a few levels deep, with the scalars that stress a
/// decoder: every integer range, any finite float, any string.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// A value for one envelope field: often of the right type, sometimes of
/// any type (the decoder is lenient and must default those).
fn field(good: BoxedStrategy<Value>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        2 => Just(None),
        4 => good.prop_map(Some),
        2 => json_value().prop_map(Some),
    ]
}

/// A JSON object shaped like an envelope (every field optional, any
/// extra keys), in random key order.
fn envelope_value() -> impl Strategy<Value = Value> {
    let v = prop_oneof![
        Just(json!(1)),
        any::<u32>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
    ]
    .boxed();
    let id = prop_oneof![
        "[0-9a-f]{32}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
        Just(json!("")),
        Just(json!("a\nid: x")),
    ]
    .boxed();
    let event_type = any::<String>().prop_map(Value::String).boxed();
    let ts = prop_oneof![
        (1.0e9f64..2.0e9).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
    ]
    .boxed();
    let payload = prop_oneof![
        Just(json!({})),
        Just(Value::Null),
        prop::collection::vec((any::<String>(), json_value()), 0..4)
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
    ]
    .boxed();
    let topic = any::<String>().prop_map(Value::String).boxed();
    (
        field(v),
        field(id),
        field(event_type),
        field(ts),
        field(payload),
        field(topic),
        prop::collection::vec(("[a-z]{1,6}", json_value()), 0..3),
    )
        .prop_flat_map(|(v, id, ty, ts, payload, topic, extra)| {
            let mut pairs: Vec<(String, Value)> = Vec::new();
            for (name, value) in [
                ("v", v),
                ("id", id),
                ("type", ty),
                ("ts", ts),
                ("payload", payload),
                ("topic", topic),
            ] {
                if let Some(value) = value {
                    pairs.push((name.to_owned(), value));
                }
            }
            for (key, value) in extra {
                if !["v", "id", "type", "ts", "payload", "topic"].contains(&key.as_str()) {
                    pairs.push((key, value));
                }
            }
            Just(pairs).prop_shuffle()
        })
        .prop_map(|pairs| Value::Object(pairs.into_iter().collect()))
}

fn is_hex_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What [`Event::decode`] must make of a JSON object (the documented
/// lenient rules), checked field by field; `before`/`after` bound a
/// defaulted `ts`.
fn check_against_model(
    subject: &str,
    object: &Map<String, Value>,
    decoded: &Result<Event, DecodeError>,
    before: f64,
    after: f64,
) -> Result<(), TestCaseError> {
    let payload = match object.get("payload") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => {
            prop_assert_eq!(decoded, &Err(DecodeError::PayloadNotObject));
            return Ok(());
        }
    };
    let event = match decoded {
        Ok(event) => event,
        Err(err) => return Err(TestCaseError::fail(format!("{err} for {object:?}"))),
    };
    prop_assert_eq!(&event.topic, subject, "topic comes from the subject");
    prop_assert_eq!(&event.payload, &payload);
    let v = object
        .get("v")
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(1);
    prop_assert_eq!(event.v, v);
    match object.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() && !id.chars().any(char::is_control) => {
            prop_assert_eq!(&event.id, id);
        }
        _ => prop_assert!(is_hex_id(&event.id), "fresh id, got {:?}", event.id),
    }
    let event_type = object.get("type").and_then(Value::as_str).unwrap_or("");
    prop_assert_eq!(&event.event_type, event_type);
    match object
        .get("ts")
        .and_then(Value::as_f64)
        .filter(|ts| ts.is_finite())
    {
        Some(ts) => prop_assert_eq!(event.ts.to_bits(), ts.to_bits(), "ts {}", ts),
        None => prop_assert!(
            event.ts >= before && event.ts <= after,
            "defaulted ts {} outside [{before}, {after}]",
            event.ts
        ),
    }
    Ok(())
}

/// The top-level keys of a JSON object, duplicates kept; `None` when the
/// text is not a JSON object.
fn top_level_keys(body: &[u8]) -> Option<Vec<String>> {
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                        keys.push(key);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_slice::<Keys>(body).ok().map(|k| k.0)
}

/// The envelope fields the decoder reads (a repeat of one is refused by
/// serde's derive; DECNET's `json.loads` would keep the last).
const READ_FIELDS: [&str; 5] = ["v", "id", "type", "ts", "payload"];

fn repeats_a_read_field(keys: &[String]) -> bool {
    let mut seen = HashSet::new();
    keys.iter()
        .filter(|k| READ_FIELDS.contains(&k.as_str()))
        .any(|k| !seen.insert(k.clone()))
}

/// The structural checks every decode result must pass, whatever the body.
fn check_outcome(
    subject: &str,
    body: &[u8],
    max: usize,
    decoded: &Result<Event, DecodeError>,
) -> Result<(), TestCaseError> {
    match decoded {
        Err(DecodeError::Empty) => prop_assert!(body.is_empty()),
        Err(DecodeError::TooLarge { size, max: limit }) => {
            prop_assert!(!body.is_empty());
            prop_assert_eq!((*size, *limit), (body.len(), max));
            prop_assert!(body.len() > max);
        }
        Err(_) => prop_assert!(!body.is_empty() && body.len() <= max),
        Ok(event) => {
            prop_assert!(!body.is_empty() && body.len() <= max);
            prop_assert_eq!(&event.topic, subject);
            prop_assert!(!event.id.is_empty() && !event.id.chars().any(char::is_control));
            prop_assert!(event.ts.is_finite());
            // What the decoder accepted is a JSON object to serde_json too.
            let reparsed = serde_json::from_slice::<Value>(body);
            prop_assert!(
                matches!(reparsed, Ok(Value::Object(_))),
                "accepted what serde_json reads as {:?}",
                reparsed
            );
        }
    }
    Ok(())
}

/// Whether `body` holds an integer literal outside `i64::MIN..=u64::MAX`
/// (outside strings). serde_json reads one as a float; simd-json refuses
/// the body, which no DECNET publisher can produce (orjson refuses to
/// write integers beyond 64 bits).
fn has_big_integer(body: &[u8]) -> bool {
    let mut in_string = false;
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if b == b'-' || b.is_ascii_digit() {
            let start = i;
            i += 1;
            while i < body.len()
                && matches!(body[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
            {
                i += 1;
            }
            let literal = &body[start..i];
            let is_integer = !literal.iter().any(|c| matches!(c, b'.' | b'e' | b'E'));
            if is_integer {
                let text = String::from_utf8_lossy(literal);
                if text.parse::<i64>().is_err() && text.parse::<u64>().is_err() {
                    return true;
                }
            }
            continue;
        }
        i += 1;
    }
    false
}

/// Decode `body` and compare with the reference: serde_json's reading of
/// the same bytes plus the lenient field rules.
fn check_decode(subject: &str, body: &[u8], max: usize) -> Result<(), TestCaseError> {
    let before = now_ts();
    let decoded = Event::decode(subject, body, max);
    let after = now_ts();
    check_outcome(subject, body, max, &decoded)?;
    if body.is_empty() || body.len() > max {
        return Ok(());
    }
    match serde_json::from_slice::<Value>(body) {
        // JSON's grammar allows a lone surrogate escape (`"\ud800"`), which
        // serde_json cannot put in a String: not an object either way.
        Err(_) if decoded == Err(DecodeError::NotAnObject) => prop_assert!(
            body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{'),
            "an object refused as not an object"
        ),
        Err(_) => prop_assert!(
            matches!(decoded, Err(DecodeError::NotJson(_))),
            "serde_json refuses {:?}, decoder gave {:?}",
            String::from_utf8_lossy(body),
            decoded
        ),
        Ok(Value::Object(_)) if has_big_integer(body) => prop_assert!(
            matches!(decoded, Err(DecodeError::NotJson(_))),
            "big integer accepted: {:?}",
            decoded
        ),
        Ok(Value::Object(object)) => {
            let keys = top_level_keys(body).unwrap_or_default();
            if repeats_a_read_field(&keys) {
                prop_assert!(matches!(decoded, Err(DecodeError::NotJson(_))));
            } else {
                check_against_model(subject, &object, &decoded, before, after)?;
            }
        }
        Ok(_) => prop_assert_eq!(decoded, Err(DecodeError::NotAnObject)),
    }
    Ok(())
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    Flip(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Truncate(Index),
    Duplicate(Index, Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    let structural = prop::sample::select(b"{}[]\":,\\ 0-.eE\xff\x00\x01".to_vec());
    prop_oneof![
        (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Edit::Flip(i, x)),
        (any::<Index>(), prop_oneof![structural, any::<u8>()])
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<Index>().prop_map(Edit::Delete),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::Duplicate(a, b)),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let len = bytes.len();
    match edit {
        Edit::Flip(i, x) if len > 0 => bytes[i.index(len)] ^= x,
        Edit::Insert(i, b) => bytes.insert(i.index(len + 1), *b),
        Edit::Delete(i) if len > 0 => {
            bytes.remove(i.index(len));
        }
        Edit::Truncate(i) => bytes.truncate(i.index(len + 1)),
        Edit::Duplicate(a, b) if len > 0 => {
            let (x, y) = (a.index(len), b.index(len));
            let (from, to) = (x.min(y), x.max(y));
            let piece = bytes[from..to].to_vec();
            let at = to;
            bytes.splice(at..at, piece);
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes and any limit: a typed result that respects the limit,
    /// and agrees with serde_json on what is JSON at all.
    #[test]
    fn decode_random_bytes(
        body in prop::collection::vec(any::<u8>(), 0..512),
        max in prop_oneof![Just(usize::MAX), 0usize..600],
    ) {
        check_decode("a.b", &body, max)?;
    }

    /// Text made of JSON's own tokens, so that much of it is almost JSON.
    #[test]
    fn decode_json_like_text(
        pieces in prop::collection::vec(prop::sample::select(vec![
            "{", "}", "[", "]", ":", ",", " ", "\"", "\\", "\"payload\"", "\"v\"", "\"ts\"",
            "\"id\"", "\"type\"", "null", "true", "1", "-0", "1e5", "2.5", "\"x\"",
            "\"\\u0000\"", "\"\\ud800\"", "18446744073709551616", "1e400", "\t", "\n",
        ]), 0..24),
    ) {
        let body = pieces.concat();
        check_decode("a.b", body.as_bytes(), usize::MAX)?;
    }

    /// Envelope-shaped objects: every field follows the lenient rules.
    #[test]
    fn decode_envelope_objects(
        envelope in envelope_value(),
        subject in "[a-z]{1,8}(\\.[a-z*>]{1,8}){0,3}",
        pretty in any::<bool>(),
    ) {
        let body = if pretty {
            serde_json::to_vec_pretty(&envelope)
        } else {
            serde_json::to_vec(&envelope)
        }.expect("a Value serializes");
        check_decode(&subject, &body, usize::MAX)?;
    }

    /// Any JSON value at all (mostly not objects).
    #[test]
    fn decode_any_json(value in json_value(), leading in "[ \t\r\n]{0,3}") {
        let mut body = leading.into_bytes();
        body.extend(serde_json::to_vec(&value).expect("a Value serializes"));
        check_decode("a.b", &body, usize::MAX)?;
    }

    /// Valid envelopes mutated byte by byte.
    #[test]
    fn decode_mutated_envelopes(
        envelope in envelope_value(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let mut body = serde_json::to_vec(&envelope).expect("a Value serializes");
        for e in &edits {
            apply(&mut body, e);
        }
        check_decode("a.b", &body, usize::MAX)?;
    }

    /// An event written by `to_json` decodes to itself (topic from the subject).
    #[test]
    fn to_json_round_trips(
        envelope in envelope_value(),
        id in "[!-~]{1,40}",
        event_type in any::<String>(),
        ts in prop_oneof![1.0e9f64..2.0e9, -1.0e12f64..1.0e12],
    ) {
        let payload = match envelope.get("payload") {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        };
        let event = Event {
            v: 1,
            id,
            topic: "x.y".into(),
            event_type,
            ts,
            payload,
        };
        let body = event.to_json();
        let decoded = Event::decode("x.y", &body, body.len());
        prop_assert_eq!(decoded, Ok(event));
    }

    /// The size limit is exact: `len` bytes decode under a limit of `len`
    /// and are refused with `TooLarge` under `len - 1`, whatever they hold.
    #[test]
    fn size_limit_is_exact(envelope in envelope_value(), pad in 0usize..64) {
        let mut body = serde_json::to_vec(&envelope).expect("a Value serializes");
        body.extend(std::iter::repeat_n(b' ', pad));
        let at_limit = Event::decode("a.b", &body, body.len());
        let refused = matches!(at_limit, Err(DecodeError::TooLarge { .. }));
        prop_assert!(!refused, "refused at the limit");
        let under = Event::decode("a.b", &body, body.len() - 1);
        prop_assert_eq!(
            under,
            Err(DecodeError::TooLarge { size: body.len(), max: body.len() - 1 })
        );
    }
}

/// A body one byte over the default 1 MiB limit is refused as too large
/// (before any parsing), and the same body at the limit is parsed.
#[test]
fn oversized_payload_is_refused_before_parsing() {
    let max = decnet_bus::DEFAULT_MAX_MESSAGE_BYTES;
    let mut body = br#"{"type":"x","payload":{"pad":""#.to_vec();
    let tail = br#""}}"#;
    body.resize(max - tail.len(), b'a');
    body.extend_from_slice(tail);
    assert_eq!(body.len(), max);
    let event = Event::decode("a.b", &body, max).expect("a body of exactly the limit decodes");
    assert_eq!(event.event_type, "x");
    body.insert(1, b' ');
    assert_eq!(
        Event::decode("a.b", &body, max),
        Err(DecodeError::TooLarge { size: max + 1, max })
    );
    // Garbage of the same size is refused as too large too, not parsed.
    assert_eq!(
        Event::decode("a.b", &vec![0xff; max + 1], max),
        Err(DecodeError::TooLarge { size: max + 1, max })
    );
}

/// Nesting deeper than the parser's limit is a typed error, not a stack
/// overflow.
#[test]
fn deep_nesting_is_a_typed_error() {
    for depth in [2_000usize, 200_000] {
        let mut body = String::from(r#"{"payload":{"a":"#);
        body.push_str(&"[".repeat(depth));
        body.push_str(&"]".repeat(depth));
        body.push_str("}}");
        let decoded = Event::decode("a.b", body.as_bytes(), usize::MAX);
        assert!(
            matches!(decoded, Err(DecodeError::NotJson(_))),
            "{depth}: {decoded:?}"
        );
    }
}

// ======================================================================
// The UNIX-socket frame codec
// ======================================================================

const LENGTH_BYTES: usize = 4;

/// Python's `str.strip()` whitespace in the ASCII range, written out.
const PY_WHITESPACE: &[u8] = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f";

fn py_strip(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !PY_WHITESPACE.contains(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !PY_WHITESPACE.contains(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

const VERBS: [Verb; 6] = [
    Verb::Hello,
    Verb::Pub,
    Verb::Sub,
    Verb::Unsub,
    Verb::Evt,
    Verb::Bye,
];

/// The reference decoder: the whole stream at once, as DOCUMENTED in
/// `unix_proto` (and DECNET's reader). Returns the frames, the first error
/// (or `Ok` for a clean end), and the body length of every frame whose
/// length prefix was accepted.
fn reference_decode(stream: &[u8]) -> (Vec<Frame>, Result<(), FrameError>, Vec<usize>) {
    let mut frames = Vec::new();
    let mut lengths = Vec::new();
    let mut rest = stream;
    loop {
        if rest.is_empty() {
            return (frames, Ok(()), lengths);
        }
        let window = &rest[..rest.len().min(MAX_HEADER_BYTES)];
        let Some(lf) = window.iter().position(|b| *b == b'\n') else {
            let err = if rest.len() >= MAX_HEADER_BYTES {
                FrameError::HeaderTooLong {
                    max: MAX_HEADER_BYTES,
                }
            } else {
                FrameError::Truncated { part: "header" }
            };
            return (frames, Err(err), lengths);
        };
        let mut line = &rest[..=lf];
        rest = &rest[lf + 1..];
        while let [head @ .., b'\r' | b'\n'] = line {
            line = head;
        }
        if !line.is_ascii() {
            return (frames, Err(FrameError::NonAsciiHeader), lengths);
        }
        if line.is_empty() {
            return (frames, Err(FrameError::EmptyHeader), lengths);
        }
        let (verb_text, args) = match line.iter().position(|b| *b == b' ') {
            Some(sp) => (&line[..sp], &line[sp + 1..]),
            None => (line, &b""[..]),
        };
        let Some(verb) = VERBS
            .iter()
            .copied()
            .find(|v| v.as_str().as_bytes() == verb_text)
        else {
            let shown = &verb_text[..verb_text.len().min(32)];
            return (
                frames,
                Err(FrameError::UnknownVerb(
                    String::from_utf8_lossy(shown).into_owned(),
                )),
                lengths,
            );
        };
        let args = String::from_utf8(py_strip(args).to_vec()).expect("ASCII checked");
        if rest.len() < LENGTH_BYTES {
            return (
                frames,
                Err(FrameError::Truncated { part: "length" }),
                lengths,
            );
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let len_usize = usize::try_from(len).expect("usize holds u32");
        if len_usize > MAX_BODY_BYTES {
            return (
                frames,
                Err(FrameError::BodyTooLarge {
                    len,
                    max: MAX_BODY_BYTES,
                }),
                lengths,
            );
        }
        lengths.push(len_usize);
        rest = &rest[LENGTH_BYTES..];
        if rest.len() < len_usize {
            return (frames, Err(FrameError::Truncated { part: "body" }), lengths);
        }
        frames.push(Frame {
            verb,
            args,
            body: bytes::Bytes::copy_from_slice(&rest[..len_usize]),
        });
        rest = &rest[len_usize..];
    }
}

/// Feed `stream` to a [`FrameDecoder`] cut at `cuts`, checking the buffer
/// bounds at every step. Returns the frames and the end result.
fn incremental_decode(
    stream: &[u8],
    cuts: &[Index],
    largest_body: usize,
) -> Result<(Vec<Frame>, Result<(), FrameError>), TestCaseError> {
    let mut positions: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
    positions.extend([0, stream.len()]);
    positions.sort_unstable();
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut fed = 0usize;
    for pair in positions.windows(2) {
        buf.extend_from_slice(&stream[pair[0]..pair[1]]);
        fed += pair[1] - pair[0];
        loop {
            let capacity_before = buf.capacity();
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => {
                    // Waiting: for a header (< 4096 bytes without LF), a
                    // length (< 4 bytes) or a checked body.
                    prop_assert!(
                        buf.len() < MAX_HEADER_BYTES.max(largest_body),
                        "holding {} bytes",
                        buf.len()
                    );
                    break;
                }
                Err(err) => {
                    // A refused frame reserves nothing (consumed bytes
                    // only shrink the capacity from the front).
                    prop_assert!(buf.capacity() <= capacity_before, "{}", err);
                    // The error sticks.
                    prop_assert_eq!(decoder.decode(&mut buf), Err(err.clone()));
                    prop_assert_eq!(decoder.finish(&buf), Err(err.clone()));
                    return Ok((frames, Err(err)));
                }
            }
            // Never more room than what was fed plus one legal body, with
            // the allocator's doubling.
            let bound = 2 * (fed + largest_body + MAX_HEADER_BYTES);
            prop_assert!(
                buf.capacity() <= bound,
                "capacity {} over {}",
                buf.capacity(),
                bound
            );
        }
    }
    let end = decoder.finish(&buf);
    Ok((frames, end))
}

/// Compare the incremental decoder on `stream` (cut at `cuts`) with the
/// reference, and with itself fed whole.
fn check_stream(stream: &[u8], cuts: &[Index]) -> Result<(), TestCaseError> {
    let (ref_frames, ref_end, lengths) = reference_decode(stream);
    let largest_body = lengths.iter().copied().max().unwrap_or(0);
    let (frames, end) = incremental_decode(stream, cuts, largest_body)?;
    let (whole_frames, whole_end) = incremental_decode(stream, &[], largest_body)?;
    prop_assert_eq!(&frames, &whole_frames, "chunking changed the frames");
    prop_assert_eq!(&end, &whole_end, "chunking changed the end");
    prop_assert_eq!(&frames, &ref_frames);
    prop_assert_eq!(&end, &ref_end);
    Ok(())
}

/// Printable ASCII and the whitespace DECNET strips, for frame arguments.
fn args() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[!-~]{0,20}",
        2 => "[ -~\t\x0b\x0c\x1c-\x1f]{0,40}",
        1 => "[ -~\x00-\x7f]{0,20}",
        1 => "[a-z.*>]{4090,4100}",
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        20 => prop::collection::vec(any::<u8>(), 0..300),
        1 => (MAX_BODY_BYTES - 1..=MAX_BODY_BYTES + 1).prop_map(|n| vec![b'x'; n]),
    ]
}

/// What `encode` must refuse, in its documented order.
fn encode_model(verb: Verb, args: &str, body: &[u8]) -> Result<usize, EncodeError> {
    if args.contains(['\r', '\n']) {
        return Err(EncodeError::LineBreakInArgs);
    }
    if !args.is_ascii() {
        return Err(EncodeError::NonAsciiHeader);
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(EncodeError::BodyTooLarge {
            len: body.len(),
            max: MAX_BODY_BYTES,
        });
    }
    let mut header = format!("{} {args}", verb.as_str()).into_bytes();
    while header.last().is_some_and(|b| PY_WHITESPACE.contains(b)) {
        header.pop();
    }
    let header_len = header.len() + 1;
    if header_len > MAX_HEADER_BYTES {
        return Err(EncodeError::HeaderTooLong {
            len: header_len,
            max: MAX_HEADER_BYTES,
        });
    }
    Ok(header_len)
}

/// One piece of a random stream: a valid frame or some garbage.
#[derive(Debug, Clone)]
enum Piece {
    Frame(Verb, String, Vec<u8>),
    Garbage(Vec<u8>),
    Length(u32),
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        6 => (prop::sample::select(VERBS.to_vec()), "[ -~]{0,12}",
              prop::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(v, a, b)| Piece::Frame(v, a, b)),
        2 => prop::collection::vec(any::<u8>(), 0..20).prop_map(Piece::Garbage),
        1 => prop::sample::select(vec![
            b"PUB x\n".to_vec(), b"\r\n".to_vec(), b"\n".to_vec(), b"BYE".to_vec(),
            b"pub".to_vec(), b" ".to_vec(), b"\xc3\xa9".to_vec(),
        ]).prop_map(Piece::Garbage),
        1 => prop_oneof![
            Just(0u32), Just(u32::MAX), Just(1 << 20), Just((1 << 20) + 1), any::<u32>(),
        ].prop_map(Piece::Length),
    ]
}

fn render(pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Frame(verb, args, body) => {
                if let Ok(bytes) = encode(*verb, args, body) {
                    out.extend_from_slice(&bytes);
                }
            }
            Piece::Garbage(bytes) => out.extend_from_slice(bytes),
            Piece::Length(n) => out.extend_from_slice(&n.to_be_bytes()),
        }
    }
    out
}

proptest! {
    #![proptest_config(config())]

    /// Random bytes in random chunks: the decoder agrees with the
    /// reference, chunking changes nothing, and the buffer stays bounded.
    #[test]
    fn frames_random_bytes(
        stream in prop::collection::vec(any::<u8>(), 0..5000),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        check_stream(&stream, &cuts)?;
    }

    /// Streams of valid frames mixed with garbage and odd length prefixes.
    #[test]
    fn frames_mixed_streams(
        pieces in prop::collection::vec(piece(), 0..12),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        check_stream(&render(&pieces), &cuts)?;
    }

    /// Headers with no LF for longer than the limit fail as soon as the
    /// limit is reached, however they arrive.
    #[test]
    fn frames_endless_header(
        fill in prop::sample::select(b"PUB a.b\r\t x".to_vec()),
        extra in 0usize..64,
        cuts in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let stream = vec![fill; MAX_HEADER_BYTES + extra];
        check_stream(&stream, &cuts)?;
        let (_, end, _) = reference_decode(&stream);
        prop_assert_eq!(end, Err(FrameError::HeaderTooLong { max: MAX_HEADER_BYTES }));
    }

    /// encode refuses exactly what it documents, and what it writes decodes
    /// back to the verb, the stripped args and the body, in any chunking.
    #[test]
    fn frames_encode_round_trip(
        frames in prop::collection::vec(
            (prop::sample::select(VERBS.to_vec()), args(), body()), 1..5),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (verb, args, body) in &frames {
            let model = encode_model(*verb, args, body);
            let encoded = encode(*verb, args, body);
            match (&model, &encoded) {
                (Ok(header_len), Ok(bytes)) => {
                    prop_assert_eq!(bytes.len(), header_len + LENGTH_BYTES + body.len());
                    stream.extend_from_slice(bytes);
                    expected.push(Frame {
                        verb: *verb,
                        args: String::from_utf8(py_strip(args.as_bytes()).to_vec())
                            .expect("ASCII"),
                        body: bytes::Bytes::copy_from_slice(body),
                    });
                }
                (Err(want), Err(got)) => prop_assert_eq!(want, got),
                _ => prop_assert!(false, "encode {:?}, model {:?}", encoded.map(|b| b.len()), model),
            }
        }
        let (ref_frames, ref_end, _) = reference_decode(&stream);
        prop_assert_eq!(&ref_frames, &expected);
        prop_assert_eq!(ref_end, Ok(()));
        check_stream(&stream, &cuts)?;
    }
}

// ======================================================================
// NATS pattern -> Redis glob
// ======================================================================

/// Redis' `stringmatchlen` (util.c), on bytes: `*`, `?`, `[...]` with `^`
/// and ranges, and `\` escaping the next byte. Written from the Redis
/// documentation of `PSUBSCRIBE`/`KEYS` patterns.
fn redis_glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| redis_glob_match(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && redis_glob_match(rest, &text[1..]),
        Some((b'[', rest)) => {
            let Some((&c, text_rest)) = text.split_first() else {
                return false;
            };
            let (negate, mut p) = match rest.split_first() {
                Some((b'^', after)) => (true, after),
                _ => (false, rest),
            };
            let mut matched = false;
            loop {
                match p {
                    [] => break,
                    [b']', after @ ..] => {
                        p = after;
                        break;
                    }
                    [b'\\', x, after @ ..] => {
                        matched |= *x == c;
                        p = after;
                    }
                    [lo, b'-', hi, after @ ..] if *hi != b']' => {
                        let (lo, hi) = if lo <= hi { (*lo, *hi) } else { (*hi, *lo) };
                        matched |= (lo..=hi).contains(&c);
                        p = after;
                    }
                    [x, after @ ..] => {
                        matched |= *x == c;
                        p = after;
                    }
                }
            }
            matched != negate && redis_glob_match(p, text_rest)
        }
        Some((b'\\', rest)) if !rest.is_empty() => {
            text.first() == rest.first() && redis_glob_match(&rest[1..], &text[1..])
        }
        Some((x, rest)) => text.first() == Some(x) && redis_glob_match(rest, &text[1..]),
    }
}

/// Tokens that collide often and carry every glob metacharacter.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "a", "b", "ab", "*", ">", "?", "[", "]", "\\", "[a]", "a*", "*a", "a?b", "^",
            "-", "a-z", "[^a]", "\\*", "é", "",
        ]).prop_map(str::to_owned),
        1 => "[a-c*?\\[\\]\\\\>^-]{1,4}",
    ]
}

fn dotted(max_tokens: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(token(), 1..=max_tokens).prop_map(|t| t.join("."))
}

/// A dotted string with no wildcard token (the `*` and `>` tokens are
/// replaced; `*` or `>` inside a longer token stays).
fn literal(max_tokens: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(token(), 1..=max_tokens).prop_map(|tokens| {
        let tokens: Vec<String> = tokens
            .into_iter()
            .map(|t| {
                if t == "*" || t == ">" {
                    format!("{t}{t}")
                } else {
                    t
                }
            })
            .collect();
        tokens.join(".")
    })
}

/// A pattern made from a topic: some tokens replaced by `*`, the tail
/// perhaps by `>`.
fn pattern_from(topic: &str, stars: &[bool], tail: Option<usize>) -> String {
    let mut tokens: Vec<&str> = topic.split('.').collect();
    for (t, star) in tokens.iter_mut().zip(stars) {
        if *star {
            *t = "*";
        }
    }
    if let Some(keep) = tail {
        let keep = keep % tokens.len();
        tokens.truncate(keep);
        tokens.push(">");
    }
    tokens.join(".")
}

proptest! {
    #![proptest_config(config())]

    /// The glob matches AT LEAST what the NATS pattern matches, for any
    /// pattern and topic (the Redis backend relies on it and re-checks).
    #[test]
    fn glob_over_matches(pattern in dotted(4), topic in dotted(5)) {
        let glob = nats_pattern_to_redis_glob(&pattern);
        if decnet_topics::matches(&pattern, &topic) {
            prop_assert!(
                redis_glob_match(glob.as_bytes(), topic.as_bytes()),
                "{pattern:?} matches {topic:?} but its glob {glob:?} does not"
            );
        }
    }

    /// Patterns derived from the topic, so that they do match: the glob
    /// must match too.
    #[test]
    fn glob_matches_derived_patterns(
        topic in dotted(5),
        stars in prop::collection::vec(any::<bool>(), 5),
        tail in prop::option::of(any::<usize>()),
    ) {
        let pattern = pattern_from(&topic, &stars, tail);
        let glob = nats_pattern_to_redis_glob(&pattern);
        if decnet_topics::matches(&pattern, &topic) {
            prop_assert!(redis_glob_match(glob.as_bytes(), topic.as_bytes()), "{glob:?} {topic:?}");
        }
    }

    /// Without wildcard tokens the glob is exact: escaping leaves no
    /// metacharacter active, so it matches the pattern's own text only.
    #[test]
    fn glob_of_a_literal_is_exact(pattern in literal(4), topic in dotted(4)) {
        let glob = nats_pattern_to_redis_glob(&pattern);
        prop_assert!(redis_glob_match(glob.as_bytes(), pattern.as_bytes()), "{glob:?}");
        prop_assert_eq!(
            redis_glob_match(glob.as_bytes(), topic.as_bytes()),
            topic == pattern,
            "{:?} vs {:?}", glob, topic
        );
    }

    /// Any string at all translates, and only by escaping and by turning
    /// `>` tokens into `*`: undoing the escapes gives the pattern back with
    /// `>` tokens as `*`.
    #[test]
    fn glob_is_the_pattern_escaped(pattern in prop_oneof![any::<String>(), dotted(5)]) {
        let glob = nats_pattern_to_redis_glob(&pattern);
        let mut unescaped = String::new();
        let mut chars = glob.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                let next = chars.next();
                prop_assert!(
                    matches!(next, Some('*' | '?' | '[' | ']' | '\\')),
                    "needless escape of {:?} in {:?}", next, glob
                );
                unescaped.extend(next);
            } else {
                prop_assert!(
                    !matches!(c, '?' | '[' | ']') ,
                    "unescaped {:?} in {:?}", c, glob
                );
                unescaped.push(c);
            }
        }
        let expected: Vec<&str> = pattern
            .split('.')
            .map(|t| if t == ">" { "*" } else { t })
            .collect();
        prop_assert_eq!(unescaped, expected.join("."));
    }
}

/// The reference glob matcher itself, on Redis' documented examples.
#[test]
fn reference_glob_matcher_examples() {
    let m = |p: &str, t: &str| redis_glob_match(p.as_bytes(), t.as_bytes());
    assert!(m("h?llo", "hello") && m("h?llo", "hallo") && !m("h?llo", "hllo"));
    assert!(m("h*llo", "hllo") && m("h*llo", "heeeello"));
    assert!(m("h[ae]llo", "hello") && !m("h[ae]llo", "hillo"));
    assert!(m("h[^e]llo", "hallo") && !m("h[^e]llo", "hello"));
    assert!(m("h[a-b]llo", "hbllo") && !m("h[a-b]llo", "hcllo"));
    assert!(m(r"h\*llo", "h*llo") && !m(r"h\*llo", "hello"));
    assert!(m(r"a\[b\].c", "a[b].c"));
}
