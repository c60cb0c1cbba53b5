//! The test vectors in the workspace's `testdata/` (see testdata/README.md),
//! read at test time so new cases count automatically.

use std::path::PathBuf;

use decnet_topics::{matches, sse_event_name, validate_pattern, validate_topic};

fn load(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read test vectors {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn cases(doc: &serde_json::Value) -> &Vec<serde_json::Value> {
    doc["cases"].as_array().expect("a `cases` array")
}

#[test]
fn wildcard_matches_vectors() {
    let doc = load("wildcard_matches.json");
    let mut ran = 0;
    for case in cases(&doc) {
        let pattern = case[0].as_str().expect("pattern");
        let topic = case[1].as_str().expect("topic");
        let expected = case[2].as_bool().expect("expected");
        assert!(
            validate_pattern(pattern).is_ok(),
            "vector pattern {pattern:?} must be valid"
        );
        assert_eq!(
            matches(pattern, topic),
            expected,
            "matches({pattern:?}, {topic:?})"
        );
        if expected {
            assert!(
                validate_topic(topic).is_ok(),
                "matched topic {topic:?} must be valid"
            );
        }
        ran += 1;
    }
    assert_eq!(ran, cases(&doc).len());
    assert!(ran > 0, "no vectors");
    eprintln!("wildcard_matches.json: {ran} cases passed");
}

#[test]
fn sse_event_names_vectors() {
    let doc = load("sse_event_names.json");
    let mut ran = 0;
    for case in cases(&doc) {
        let topic = case[0].as_str().expect("topic");
        let expected = case[1].as_str().expect("event name");
        assert_eq!(sse_event_name(topic), expected, "sse_event_name({topic:?})");
        ran += 1;
    }
    assert!(ran > 0, "no vectors");
    eprintln!("sse_event_names.json: {ran} cases passed");
}
