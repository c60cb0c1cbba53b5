//! Runs the encoder vectors (`testdata/sse_frames.json` at the workspace root) against the
//! public API, and decodes every expected frame back.

use std::path::{Path, PathBuf};

use decnet_sse::{Decoded, Event, Frame, comment, decode, encode_event_json, retry};
use serde_json::Value;

/// The vectors, in the workspace's own `testdata/` (see testdata/README.md).
const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/sse_frames.json"
);

fn vectors_path() -> PathBuf {
    let path = Path::new(VECTORS).to_path_buf();
    assert!(
        path.is_file(),
        "SSE test vectors missing at {}",
        path.display()
    );
    path
}

fn str_field<'v>(case: &'v Value, key: &str) -> Option<&'v str> {
    case.get(key).map(|value| {
        value
            .as_str()
            .unwrap_or_else(|| panic!("`{key}` must be a string in {case}"))
    })
}

/// What the decoder should read back from a frame built from these fields.
fn expected_items(case: &Value) -> Vec<Decoded> {
    if let Some(text) = str_field(case, "comment") {
        return vec![Decoded::Comment(text.to_owned())];
    }
    let mut items = Vec::new();
    if let Some(ms) = case.get("retry").and_then(Value::as_u64) {
        items.push(Decoded::Retry(ms));
    }
    if let Some(data) = str_field(case, "data") {
        let event = str_field(case, "event").filter(|event| !event.is_empty());
        items.push(Decoded::Event(Event {
            event: event.unwrap_or("message").to_owned(),
            data: data.replace("\r\n", "\n").replace('\r', "\n"),
            id: str_field(case, "id").unwrap_or_default().to_owned(),
        }));
    }
    items
}

#[test]
#[allow(
    clippy::print_stdout,
    reason = "the case count is the point of the output"
)]
fn shared_vectors() {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    let file: Value = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{} is not valid JSON: {err}", path.display()));
    let cases = file["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("{} has no `cases` array", path.display()));

    let mut ran = 0;
    for case in cases {
        let name = str_field(case, "name").unwrap_or("<unnamed>");
        let retry_ms = case.get("retry").map(|value| {
            value
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: `retry` must be a u64"))
        });
        let frame = Frame {
            id: str_field(case, "id"),
            event: str_field(case, "event"),
            retry: retry_ms,
            data: str_field(case, "data"),
        };
        let encoded = match str_field(case, "comment") {
            Some(text) => comment(text),
            None => frame.encode(),
        };

        if case.get("error").and_then(Value::as_bool) == Some(true) {
            assert!(
                encoded.is_err(),
                "{name}: expected an error, got {encoded:?}"
            );
            if let (Some(event), Some(data)) = (frame.event, frame.data) {
                assert!(
                    encode_event_json(frame.id, event, data.as_bytes()).is_err(),
                    "{name}: the JSON path must refuse it too"
                );
            }
            ran += 1;
            continue;
        }

        let expected = str_field(case, "expected")
            .unwrap_or_else(|| panic!("{name}: needs `expected` or `error: true`"));
        let encoded = encoded.unwrap_or_else(|err| panic!("{name}: refused: {err}"));
        assert_eq!(
            String::from_utf8_lossy(&encoded),
            expected,
            "{name}: encoded bytes"
        );

        // The other ways to build the same frame give the same bytes.
        if frame == Frame::new().retry(retry_ms.unwrap_or_default()) {
            assert_eq!(
                &retry(retry_ms.unwrap_or_default())[..],
                expected.as_bytes(),
                "{name}: retry()"
            );
        }
        if let (Some(event), Some(data), None) = (frame.event, frame.data, frame.retry) {
            let fast = encode_event_json(frame.id, event, data.as_bytes())
                .unwrap_or_else(|err| panic!("{name}: JSON path refused: {err}"));
            assert_eq!(&fast[..], expected.as_bytes(), "{name}: encode_event_json");
        }

        // Round trip through the decoder.
        assert_eq!(
            decode(expected.as_bytes()),
            expected_items(case),
            "{name}: decoded"
        );
        ran += 1;
    }

    println!("ran {ran} SSE vector cases from {}", path.display());
    assert_eq!(
        ran,
        cases.len(),
        "every case in {} must run",
        path.display()
    );
    assert!(ran > 0, "{} has no cases", path.display());
}
