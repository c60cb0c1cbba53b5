//! Property-based fuzzing of the SSE decoder (and of the encoder's
//! buffer-appending entry points) with outside input: arbitrary bytes,
//! arbitrary chunking.
//!
//! The reference is the WHATWG "event stream interpretation" written out
//! here the way the spec states it: decode the WHOLE stream as UTF-8 first
//! (U+FFFD for invalid sequences), drop one leading BOM, then split lines on
//! CRLF, CR or LF and process fields. The decoder splits bytes first and
//! decodes per line; the properties check that this, and any chunking, give
//! the spec's result. Case count: `PROPTEST_CASES` (default 256).

use bytes::BytesMut;
use decnet_sse::{
    Decoded, Decoder, EncodeError, Event, Frame, Truncated, encode_comment_into, encode_event_json,
    encode_event_json_into, encode_retry_into, retry,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;

/// Cases per property: proptest's `PROPTEST_CASES` (default 256; `cargo xtask
/// soak` runs more); failures are kept in `proptest-regressions/fuzz.txt`.
fn config() -> ProptestConfig {
    ProptestConfig::with_failure_persistence(FileFailurePersistence::Direct(
        "proptest-regressions/fuzz.txt",
    ))
}

/// The spec's processing model over a whole stream.
#[derive(Debug, Default)]
struct Model {
    items: Vec<Decoded>,
    data: String,
    event_type: String,
    id_buffer: String,
    last_event_id: String,
    retry: Option<u64>,
}

impl Model {
    fn run(input: &[u8]) -> (Model, Option<Truncated>) {
        let text = String::from_utf8_lossy(input);
        let text = text.strip_prefix('\u{FEFF}').unwrap_or(&text);
        let mut model = Model::default();
        // Lines end at CRLF, CR or LF; what follows the last ending is an
        // unterminated line, dropped at end of stream.
        let mut rest = text;
        while let Some(end) = rest.find(['\r', '\n']) {
            model.line(&rest[..end]);
            let skip = if rest[end..].starts_with("\r\n") {
                2
            } else {
                1
            };
            rest = &rest[end + skip..];
        }
        // The unterminated tail, in RAW bytes: what follows the last CR or
        // LF, or the whole input (less a complete leading BOM) when none.
        let tail_bytes = match input.iter().rposition(|b| *b == b'\r' || *b == b'\n') {
            Some(last) => input.len() - last - 1,
            None if input.starts_with(b"\xEF\xBB\xBF") => input.len() - 3,
            None => input.len(),
        };
        let truncated = Truncated {
            partial_line: tail_bytes,
            undispatched_data: !model.data.is_empty(),
        };
        let end = (truncated.partial_line != 0 || truncated.undispatched_data).then_some(truncated);
        (model, end)
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            let comment = comment.strip_prefix(' ').unwrap_or(comment);
            self.items.push(Decoded::Comment(comment.to_owned()));
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event_type = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.id_buffer = value.to_owned(),
            // "If the field value consists of only ASCII digits": base ten.
            // Beyond u64 the decoder ignores it (documented).
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse::<u64>() {
                    self.retry = Some(ms);
                    self.items.push(Decoded::Retry(ms));
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        self.last_event_id = self.id_buffer.clone();
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        let event_type = std::mem::take(&mut self.event_type);
        self.items.push(Decoded::Event(Event {
            event: if event_type.is_empty() {
                "message".to_owned()
            } else {
                event_type
            },
            data,
            id: self.last_event_id.clone(),
        }));
    }
}

/// What a decoder saw: the items, its last event id and retry, and what
/// `finish` reported.
#[derive(Debug, PartialEq)]
struct Outcome {
    items: Vec<Decoded>,
    last_event_id: String,
    retry: Option<u64>,
    end: Option<Truncated>,
}

/// Feed `input` cut at `cuts` (empty chunks included when cuts coincide).
fn decode_chunked(input: &[u8], cuts: &[Index]) -> Outcome {
    let mut positions: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
    positions.extend([0, input.len()]);
    positions.sort_unstable();
    let mut decoder = Decoder::new();
    let mut items = Vec::new();
    for pair in positions.windows(2) {
        decoder.feed_into(&input[pair[0]..pair[1]], &mut items);
    }
    let last_event_id = decoder.last_event_id().to_owned();
    let retry = decoder.retry();
    Outcome {
        items,
        last_event_id,
        retry,
        end: decoder.finish(),
    }
}

fn check_against_model(input: &[u8], cuts: &[Index]) -> Result<(), TestCaseError> {
    let (model, end) = Model::run(input);
    let expected = Outcome {
        items: model.items,
        last_event_id: model.last_event_id,
        retry: model.retry,
        end,
    };
    let whole = decode_chunked(input, &[]);
    prop_assert_eq!(
        &whole,
        &expected,
        "whole input {:?}",
        String::from_utf8_lossy(input)
    );
    let chunked = decode_chunked(input, cuts);
    prop_assert_eq!(&chunked, &expected, "chunked at {:?}", cuts);
    // decode() is the whole-buffer shortcut.
    prop_assert_eq!(decnet_sse::decode(input), expected.items);
    Ok(())
}

/// Bytes that are mostly SSE: field names, separators, every line ending,
/// the BOM and its prefixes, invalid and multi-byte UTF-8, NUL, digits.
fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => prop::sample::select(vec![
            &b"data"[..], b"event", b"id", b"retry", b"data:", b"data: ", b"event: ", b"id: ",
            b"retry: ", b":", b" ", b"\r", b"\n", b"\r\n", b"\n\n", b"\r\r", b"\xEF\xBB\xBF",
            b"\xEF", b"\xEF\xBB", b"\xFF", b"\xE2\x82", b"\xE2\x82\xAC", b"\xF0\x9F\x98\x80",
            b"\xED\xA0\x80", b"\0", b"7", b"0", b"18446744073709551616", b"x", b"message",
            b"Data", b"\t",
        ]).prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>(), 0..6),
        1 => "[a-z0-9 :]{0,8}".prop_map(String::into_bytes),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

fn cuts() -> impl Strategy<Value = Vec<Index>> {
    prop::collection::vec(any::<Index>(), 0..16)
}

/// Text with no CR, LF or NUL (what the encoder takes for names and ids).
fn single_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z.:_ ]{0,12}",
        any::<String>().prop_map(|s| s.replace(['\r', '\n', '\0'], "")),
    ]
}

/// Text for data: anything, with line breaks of every kind.
fn multi_line() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[ -~]{0,40}",
        1 => prop::sample::select(vec!["\r\n", "\r", "\n", "\n\n", "\0", "\u{FEFF}", "é😀"])
            .prop_map(str::to_owned),
        1 => any::<String>(),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

fn normalize(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary bytes: the decoder's items, last event id, retry and
    /// truncation report equal the spec's, whole and under any chunking.
    #[test]
    fn decode_random_bytes(input in prop::collection::vec(any::<u8>(), 0..300), cuts in cuts()) {
        check_against_model(&input, &cuts)?;
    }

    /// Bytes built from SSE's own tokens (so fields, comments and
    /// dispatches actually happen), same checks.
    #[test]
    fn decode_sse_like_bytes(input in sse_bytes(), cuts in cuts()) {
        check_against_model(&input, &cuts)?;
    }

    /// Fed one byte at a time, the decoder agrees with itself fed whole.
    #[test]
    fn decode_byte_at_a_time(input in sse_bytes()) {
        let cuts: Vec<Index> = Vec::new();
        let whole = decode_chunked(&input, &cuts);
        let mut decoder = Decoder::new();
        let mut items = Vec::new();
        for byte in &input {
            decoder.feed_into(std::slice::from_ref(byte), &mut items);
        }
        prop_assert_eq!(&items, &whole.items);
        prop_assert_eq!(decoder.last_event_id(), whole.last_event_id.as_str());
        prop_assert_eq!(decoder.finish(), whole.end);
    }

    /// encode_event_json with ANY bytes as the JSON (CR and LF included,
    /// invalid UTF-8 too): one event, data as the client reads it.
    #[test]
    fn event_json_round_trip(
        id in prop::option::of(single_line()),
        event in single_line(),
        json in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            multi_line().prop_map(String::into_bytes),
        ],
        cuts in cuts(),
    ) {
        let frame = encode_event_json(id.as_deref(), &event, &json).expect("valid id and event");
        let outcome = decode_chunked(&frame, &cuts);
        let expected_id = id.clone().unwrap_or_default();
        prop_assert_eq!(outcome.end, None);
        prop_assert_eq!(&outcome.last_event_id, &expected_id);
        prop_assert_eq!(outcome.items, vec![Decoded::Event(Event {
            event: if event.is_empty() { "message".to_owned() } else { event.clone() },
            data: normalize(&String::from_utf8_lossy(&json)),
            id: expected_id,
        })]);
    }

    /// The appending encoders leave the buffer untouched on error and
    /// append exactly what the one-shot encoders return on success.
    #[test]
    fn appending_encoders(
        prefix in prop::collection::vec(any::<u8>(), 0..16),
        id in prop::option::of(multi_line()),
        event in multi_line(),
        json in multi_line(),
        comment in multi_line(),
        ms in any::<u64>(),
    ) {
        let bad = |s: &str| s.contains(['\r', '\n', '\0']);

        let mut buf = BytesMut::from(&prefix[..]);
        let res = encode_event_json_into(id.as_deref(), &event, json.as_bytes(), &mut buf);
        let one_shot = encode_event_json(id.as_deref(), &event, json.as_bytes());
        match (&res, &one_shot) {
            (Ok(()), Ok(bytes)) => {
                prop_assert!(!id.as_deref().is_some_and(bad) && !bad(&event));
                prop_assert_eq!(&buf[prefix.len()..], &bytes[..]);
                prop_assert_eq!(&buf[..prefix.len()], &prefix[..]);
            }
            (Err(a), Err(b)) => {
                prop_assert_eq!(a, b);
                prop_assert_eq!(&buf[..], &prefix[..], "buffer touched on error");
                let id_bad = id.as_deref().is_some_and(bad);
                match a {
                    EncodeError::InvalidId { .. } => prop_assert!(id_bad),
                    EncodeError::InvalidEventName { .. } => prop_assert!(!id_bad && bad(&event)),
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
            _ => prop_assert!(false, "into {:?} vs one-shot {:?}", res, one_shot),
        }

        let mut buf = BytesMut::from(&prefix[..]);
        match encode_comment_into(&comment, &mut buf) {
            Ok(()) => {
                prop_assert!(!bad(&comment));
                let items = decnet_sse::decode(&buf[prefix.len()..]);
                prop_assert_eq!(items, vec![Decoded::Comment(comment.clone())]);
            }
            Err(EncodeError::InvalidComment { byte, at }) => {
                prop_assert_eq!(&buf[..], &prefix[..], "buffer touched on error");
                prop_assert_eq!(comment.as_bytes().get(at), Some(&byte));
                prop_assert!(!bad(&comment[..at]), "not the first forbidden byte");
            }
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }

        let mut buf = BytesMut::from(&prefix[..]);
        encode_retry_into(ms, &mut buf);
        prop_assert_eq!(&buf[prefix.len()..], &retry(ms)[..]);
        prop_assert_eq!(decnet_sse::decode(&buf[prefix.len()..]), vec![Decoded::Retry(ms)]);
    }

    /// Frames with every field, data full of line breaks: encoded_len is
    /// exact, and a stream of them decodes to what was sent, in any chunking.
    #[test]
    fn frames_round_trip(
        frames in prop::collection::vec(
            (prop::option::of(single_line()), prop::option::of(single_line()),
             prop::option::of(any::<u64>()), prop::option::of(multi_line())),
            1..6),
        cuts in cuts(),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        let mut last_id = String::new();
        for (id, event, ms, data) in &frames {
            let frame = Frame { id: id.as_deref(), event: event.as_deref(), retry: *ms, data: data.as_deref() };
            let bytes = frame.encode().expect("valid id and event");
            prop_assert_eq!(bytes.len(), frame.encoded_len());
            stream.extend_from_slice(&bytes);
            if let Some(ms) = ms {
                expected.push(Decoded::Retry(*ms));
            }
            if let Some(id) = id {
                last_id.clone_from(id);
            }
            if let Some(data) = data {
                let name = event.as_deref().filter(|e| !e.is_empty()).unwrap_or("message");
                expected.push(Decoded::Event(Event {
                    event: name.to_owned(),
                    data: normalize(data),
                    id: last_id.clone(),
                }));
            }
        }
        let outcome = decode_chunked(&stream, &cuts);
        prop_assert_eq!(outcome.items, expected);
        prop_assert_eq!(outcome.end, None);
        prop_assert_eq!(outcome.last_event_id, last_id);
    }
}

/// The reference model on the spec's own examples, so that it is itself
/// checked against something.
#[test]
fn model_on_spec_examples() {
    let (model, end) = Model::run(b"data: YHOO\ndata: +2\ndata: 10\n\n");
    assert_eq!(
        model.items,
        [Decoded::Event(Event {
            event: "message".into(),
            data: "YHOO\n+2\n10".into(),
            id: String::new()
        })]
    );
    assert_eq!(end, None);
    let (model, end) =
        Model::run(b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n");
    let events: Vec<_> = model
        .items
        .iter()
        .filter_map(|item| match item {
            Decoded::Event(e) => Some((e.data.as_str(), e.id.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(events, [("first event", "1"), ("second event", "")]);
    assert_eq!(
        end,
        Some(Truncated {
            partial_line: 0,
            undispatched_data: true
        })
    );
    let (model, _) = Model::run(b"data\n\ndata\ndata\n\ndata:");
    assert_eq!(model.items.len(), 2);
}
