//! Property: whatever the encoder accepts, the decoder reads back as a browser would,
//! however the bytes are cut into chunks.

use decnet_sse::{Decoded, Decoder, EncodeError, Event, Frame, comment, encode_event_json};
use proptest::prelude::*;
use proptest::sample::Index;

/// Text built from pieces that stress the format: every line ending, NUL, the colon and space
/// the parser looks for, the BOM, multi-byte UTF-8, and any other char.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => prop::char::range('a', 'z').prop_map(String::from),
        1 => Just("\r\n".to_owned()),
        1 => Just("\r".to_owned()),
        1 => Just("\n".to_owned()),
        1 => Just("\0".to_owned()),
        1 => Just(" ".to_owned()),
        1 => Just(":".to_owned()),
        1 => Just("\u{FEFF}".to_owned()),
        1 => Just("é".to_owned()),
        1 => Just("😀".to_owned()),
        2 => any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

#[derive(Debug, Clone)]
struct FrameSpec {
    id: Option<String>,
    event: Option<String>,
    retry: Option<u64>,
    data: Option<String>,
}

impl FrameSpec {
    fn frame(&self) -> Frame<'_> {
        Frame {
            id: self.id.as_deref(),
            event: self.event.as_deref(),
            retry: self.retry,
            data: self.data.as_deref(),
        }
    }
}

fn frame_spec() -> impl Strategy<Value = FrameSpec> {
    (
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(prop_oneof![0..10_000u64, any::<u64>()]),
        prop::option::weighted(0.8, text()),
    )
        .prop_map(|(id, event, retry, data)| FrameSpec {
            id,
            event,
            retry,
            data,
        })
}

#[derive(Debug, Clone)]
enum Item {
    Frame(FrameSpec),
    Comment(String),
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        4 => frame_spec().prop_map(Item::Frame),
        1 => text().prop_map(Item::Comment),
    ]
}

fn has_forbidden(text: &str) -> bool {
    text.contains(['\r', '\n', '\0'])
}

/// How the client sees data: lines joined with LF, whatever the line endings were.
fn normalize(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

/// Encodes an item, checking the encoder refuses exactly what it must.
fn encode(item: &Item) -> Option<Vec<u8>> {
    match item {
        Item::Comment(text) => {
            let res = comment(text);
            assert_eq!(
                res.is_err(),
                has_forbidden(text),
                "comment {text:?}: {res:?}"
            );
            res.ok().map(|bytes| bytes.to_vec())
        }
        Item::Frame(spec) => {
            let frame = spec.frame();
            let res = frame.encode();
            let bad_id = spec.id.as_deref().is_some_and(has_forbidden);
            let bad_event = spec.event.as_deref().is_some_and(has_forbidden);
            match &res {
                Err(EncodeError::InvalidId { .. }) => assert!(bad_id, "{spec:?}"),
                Err(EncodeError::InvalidEventName { .. }) => {
                    assert!(bad_event && !bad_id, "{spec:?}");
                }
                Err(err) => panic!("unexpected {err:?} for {spec:?}"),
                Ok(bytes) => {
                    assert!(!bad_id && !bad_event, "{spec:?} accepted");
                    assert_eq!(bytes.len(), frame.encoded_len(), "{spec:?}");
                }
            }
            // The JSON fast path agrees byte for byte when it can express the frame.
            if let (Some(event), None) = (frame.event, frame.retry) {
                let data = frame.data.unwrap_or_default();
                if frame.data.is_some() {
                    let fast = encode_event_json(frame.id, event, data.as_bytes());
                    assert_eq!(fast, res, "{spec:?}");
                }
            }
            res.ok().map(|bytes| bytes.to_vec())
        }
    }
}

/// What a client decodes from the accepted items, in order.
fn model(items: &[&Item]) -> Vec<Decoded> {
    let mut out = Vec::new();
    let mut last_id = String::new();
    for item in items {
        match item {
            Item::Comment(text) => out.push(Decoded::Comment(text.clone())),
            Item::Frame(spec) => {
                if let Some(ms) = spec.retry {
                    out.push(Decoded::Retry(ms));
                }
                if let Some(id) = &spec.id {
                    last_id.clone_from(id);
                }
                if let Some(data) = &spec.data {
                    let event = spec.event.as_deref().filter(|event| !event.is_empty());
                    out.push(Decoded::Event(Event {
                        event: event.unwrap_or("message").to_owned(),
                        data: normalize(data),
                        id: last_id.clone(),
                    }));
                }
            }
        }
    }
    out
}

/// Feeds `bytes` cut at `cuts` and returns everything decoded, checking the stream ends cleanly.
fn decode_chunked(bytes: &[u8], cuts: &[Index]) -> Vec<Decoded> {
    let mut positions: Vec<usize> = cuts.iter().map(|cut| cut.index(bytes.len() + 1)).collect();
    positions.push(0);
    positions.push(bytes.len());
    positions.sort_unstable();
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    for pair in positions.windows(2) {
        decoder.feed_into(&bytes[pair[0]..pair[1]], &mut out);
    }
    assert_eq!(
        decoder.finish(),
        None,
        "encoded frames end on an event boundary"
    );
    out
}

proptest! {
    #[test]
    fn single_frame_round_trips(spec in frame_spec(), cuts in prop::collection::vec(any::<Index>(), 0..8)) {
        let item = Item::Frame(spec);
        if let Some(bytes) = encode(&item) {
            prop_assert_eq!(decode_chunked(&bytes, &cuts), model(&[&item]));
        }
    }

    #[test]
    fn stream_of_frames_round_trips(
        items in prop::collection::vec(item(), 1..8),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        let mut stream = Vec::new();
        let mut accepted = Vec::new();
        for item in &items {
            if let Some(bytes) = encode(item) {
                stream.extend_from_slice(&bytes);
                accepted.push(item);
            }
        }
        prop_assert_eq!(decode_chunked(&stream, &cuts), model(&accepted));
    }

    /// The decoder side alone: the same stream with a leading BOM and each line ending
    /// rewritten as CRLF, CR or LF at random decodes the same, under random chunking
    /// (so a CRLF is often split between two chunks).
    #[test]
    fn any_line_endings_and_bom_decode_the_same(
        items in prop::collection::vec(item(), 1..8),
        bom in any::<bool>(),
        endings in prop::collection::vec(0..3u8, 1..32),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        let mut stream = Vec::new();
        let mut accepted = Vec::new();
        if bom {
            stream.extend_from_slice("\u{FEFF}".as_bytes());
        }
        let mut ending = endings.iter().cycle();
        for item in &items {
            if let Some(bytes) = encode(item) {
                // The encoder writes LF only as a line ending: data is split and the rest refuses LF.
                // A CR line ending followed directly by an LF one would read as one CRLF,
                // so after a CR the next line ending is never a lone LF.
                for &byte in &bytes {
                    if byte != b'\n' {
                        stream.push(byte);
                        continue;
                    }
                    let after_cr = stream.last() == Some(&b'\r');
                    match ending.next() {
                        Some(0) => stream.extend_from_slice(b"\r\n"),
                        Some(1) => stream.push(b'\r'),
                        _ if after_cr => stream.extend_from_slice(b"\r\n"),
                        _ => stream.push(b'\n'),
                    }
                }
                accepted.push(item);
            }
        }
        prop_assert_eq!(decode_chunked(&stream, &cuts), model(&accepted));
    }
}
