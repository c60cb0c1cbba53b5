//! Property-based fuzzing of topic and pattern parsing and matching with
//! random strings; what tests/properties.rs (well-formed inputs) leaves out.
//!
//! References written here: the validation rules as documented on
//! [`validate_topic`] / [`validate_pattern`] / [`validate_segment`], token
//! by token; NATS matching over token lists; and DECNET's own matcher as
//! DECNET.md 1.6 describes it. Case count: `PROPTEST_CASES` (default 256).

use decnet_topics::{
    ROOTS, Topic, TopicError, TopicPattern, all_under, matches, observation, sse_event_name, topic,
    validate_pattern, validate_segment, validate_topic,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Cases per property: proptest's `PROPTEST_CASES` (default 256; `cargo xtask
/// soak` runs more); failures are kept in `proptest-regressions/fuzz.txt`.
fn config() -> ProptestConfig {
    ProptestConfig::with_failure_persistence(FileFailurePersistence::Direct(
        "proptest-regressions/fuzz.txt",
    ))
}

/// Strings that hit every rule: dots, wildcards in and out of tokens,
/// whitespace of several kinds, control characters, non-ASCII.
fn topicish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        6 => prop::sample::select(vec![
            "a", "b", "attacker", "observation", "identity", "*", ">", ".", "..", "a*", ">b",
            "é", "x_y-z", "0",
        ]).prop_map(str::to_owned),
        1 => prop::sample::select(vec![
            " ", "\t", "\n", "\u{0}", "\u{7f}", "\u{85}", "\u{a0}", "\u{2028}", "\u{3000}",
            "\u{200b}", "\u{feff}",
        ]).prop_map(str::to_owned),
        1 => any::<char>().prop_map(String::from),
    ];
    prop_oneof![
        8 => prop::collection::vec(piece, 0..10).prop_map(|p| p.concat()),
        1 => any::<String>(),
    ]
}

/// The error the documented rules give for one token of `whole`, if any
/// (empty, then whitespace/control, then the caller's wildcard rule).
fn token_error(token: &str, whole: &str) -> Option<TopicError> {
    if token.is_empty() {
        return Some(TopicError::EmptyToken(whole.to_owned()));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(TopicError::Whitespace(whole.to_owned()));
    }
    None
}

fn topic_model(text: &str) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(TopicError::Empty);
    }
    for token in text.split('.') {
        if let Some(err) = token_error(token, text) {
            return Err(err);
        }
        if token.contains('*') || token.contains('>') {
            return Err(TopicError::WildcardInTopic(text.to_owned()));
        }
    }
    Ok(())
}

fn pattern_model(text: &str) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(TopicError::Empty);
    }
    let tokens: Vec<&str> = text.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if let Some(err) = token_error(token, text) {
            return Err(err);
        }
        let wildcard_ok = *token == "*" || (*token == ">" && i + 1 == tokens.len());
        if !wildcard_ok && (token.contains('*') || token.contains('>')) {
            return Err(TopicError::MisplacedWildcard(text.to_owned()));
        }
    }
    Ok(())
}

/// NATS matching over token lists: `*` one non-empty token, `>` one or
/// more non-empty trailing tokens, literals equal and non-empty.
fn nats_model(pattern: &[&str], topic: &[&str]) -> bool {
    match (pattern.split_first(), topic.split_first()) {
        (None, None) => true,
        (Some((&">", [])), Some(_)) => topic.iter().all(|t| !t.is_empty()),
        (Some((&"*", p_rest)), Some((t, t_rest))) => !t.is_empty() && nats_model(p_rest, t_rest),
        (Some((p, p_rest)), Some((t, t_rest))) => {
            !p.is_empty() && p == t && nats_model(p_rest, t_rest)
        }
        _ => false,
    }
}

/// DECNET's matcher (DECNET.md 1.6): literal tokens (empty ones too) equal,
/// `*` one non-empty token, `>` succeeds as soon as it is reached with a
/// topic token left, even if it is not the last pattern token.
fn decnet_model(pattern: &str, topic: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let t: Vec<&str> = topic.split('.').collect();
    for (i, token) in p.iter().enumerate() {
        if *token == ">" {
            return i < t.len();
        }
        let Some(topic_token) = t.get(i) else {
            return false;
        };
        if *token == "*" {
            if topic_token.is_empty() {
                return false;
            }
        } else if token != topic_token {
            return false;
        }
    }
    p.len() == t.len()
}

proptest! {
    #![proptest_config(config())]

    /// Topics: accepted exactly per the documented rules (same error), and
    /// whatever is accepted comes back unchanged through every accessor.
    #[test]
    fn topic_parsing(text in topicish()) {
        let expected = topic_model(&text);
        prop_assert_eq!(validate_topic(&text), expected.clone());
        match Topic::parse(text.clone()) {
            Ok(parsed) => {
                prop_assert!(expected.is_ok());
                prop_assert_eq!(parsed.as_str(), text.as_str());
                prop_assert_eq!(parsed.to_string(), text.clone());
                prop_assert_eq!(AsRef::<str>::as_ref(&parsed), text.as_str());
                prop_assert_eq!(parsed.root(), text.split('.').next().unwrap_or_default());
                // A topic is a pattern that matches itself only.
                let as_pattern = TopicPattern::from(parsed.clone());
                prop_assert!(validate_pattern(as_pattern.as_str()).is_ok());
                prop_assert!(!as_pattern.has_wildcards());
                prop_assert!(as_pattern.matches(&text));
                prop_assert_eq!(Topic::parse(parsed.to_string()), Ok(parsed.clone()));
                prop_assert_eq!(parsed.into_string(), text);
            }
            Err(err) => prop_assert_eq!(Err(err), expected),
        }
    }

    /// Patterns: same, plus `has_wildcards` tells exactly whether a `*` or
    /// `>` token is present.
    #[test]
    fn pattern_parsing(text in topicish()) {
        let expected = pattern_model(&text);
        prop_assert_eq!(validate_pattern(&text), expected.clone());
        match TopicPattern::parse(text.clone()) {
            Ok(parsed) => {
                prop_assert!(expected.is_ok());
                prop_assert_eq!(parsed.as_str(), text.as_str());
                prop_assert_eq!(parsed.to_string(), text.clone());
                prop_assert_eq!(TopicPattern::parse(parsed.to_string()), Ok(parsed.clone()));
                let wild = text.split('.').any(|t| t == "*" || t == ">");
                prop_assert_eq!(parsed.has_wildcards(), wild);
                // Every topic is a pattern; a pattern is a topic iff it has no wildcard.
                prop_assert_eq!(validate_topic(&text).is_ok(), !wild);
            }
            Err(err) => prop_assert_eq!(Err(err), expected),
        }
        if validate_topic(&text).is_ok() {
            prop_assert!(validate_pattern(&text).is_ok());
        }
    }

    /// Segments: a topic without dots (and a dot is its own error).
    #[test]
    fn segment_parsing(text in topicish()) {
        let expected = if text.contains('.') {
            Err(TopicError::DotInSegment(text.clone()))
        } else {
            topic_model(&text)
        };
        prop_assert_eq!(validate_segment(&text), expected);
    }

    /// Builders: accepted iff the root is known and the leaf is a valid
    /// dotted path, and the result is exactly `root.leaf`.
    #[test]
    fn builders(root in prop_oneof![prop::sample::select(ROOTS.to_vec()).prop_map(str::to_owned), topicish()],
                leaf in topicish()) {
        let built = topic(&root, &leaf);
        if !ROOTS.contains(&root.as_str()) {
            prop_assert_eq!(built, Err(TopicError::UnknownRoot(root.clone())));
        } else {
            match topic_model(&leaf) {
                Ok(()) => {
                    let built = built.expect("valid root and leaf");
                    prop_assert_eq!(built.as_str(), format!("{root}.{leaf}"));
                    prop_assert!(validate_topic(built.as_str()).is_ok());
                    prop_assert_eq!(built.root(), root.as_str());
                }
                Err(err) => prop_assert_eq!(built, Err(err)),
            }
        }
        match (observation(&leaf), topic_model(&leaf)) {
            (Ok(t), Ok(())) => prop_assert_eq!(t.as_str(), format!("attacker.observation.{leaf}")),
            (Err(got), Err(want)) => prop_assert_eq!(got, want),
            (got, want) => prop_assert!(false, "observation({:?}) = {:?}, model {:?}", leaf, got, want),
        }
        match all_under(&root) {
            Ok(p) => {
                prop_assert!(validate_segment(&root).is_ok());
                prop_assert_eq!(p.as_str(), format!("{root}.>"));
                prop_assert!(validate_pattern(p.as_str()).is_ok());
            }
            Err(err) => prop_assert_eq!(validate_segment(&root), Err(err)),
        }
    }

    /// Matching on any strings: equal to NATS over token lists, and never
    /// true where DECNET's matcher is false (this crate is stricter only
    /// about empty tokens and misplaced `>`).
    #[test]
    fn matching_any_strings(pattern in topicish(), topic in topicish()) {
        let got = matches(&pattern, &topic);
        let p: Vec<&str> = pattern.split('.').collect();
        let t: Vec<&str> = topic.split('.').collect();
        prop_assert_eq!(got, nats_model(&p, &t), "{:?} vs {:?}", pattern, topic);
        if got {
            prop_assert!(decnet_model(&pattern, &topic), "DECNET would not deliver");
        }
    }

    /// Valid patterns against valid topics: identical to DECNET.
    #[test]
    fn matching_valid_inputs_as_decnet(
        pattern in prop::collection::vec(prop::sample::select(vec!["a", "b", "*", "ab"]), 1..5)
            .prop_flat_map(|tokens| (Just(tokens), any::<bool>()))
            .prop_map(|(mut tokens, tail)| {
                if tail {
                    tokens.push(">");
                }
                tokens.join(".")
            }),
        topic in prop::collection::vec(prop::sample::select(vec!["a", "b", "ab", "c"]), 1..6)
            .prop_map(|tokens| tokens.join(".")),
    ) {
        prop_assert!(validate_pattern(&pattern).is_ok());
        prop_assert!(validate_topic(&topic).is_ok());
        prop_assert_eq!(matches(&pattern, &topic), decnet_model(&pattern, &topic));
    }

    /// SSE event names: the observation prefix maps to `observation`, four
    /// fixed topics are renamed, anything else passes through unchanged.
    #[test]
    fn sse_names(text in prop_oneof![
        topicish(),
        topicish().prop_map(|s| format!("attacker.observation.{s}")),
        prop::sample::select(vec![
            "attacker.fingerprint_rotated", "attacker.scored", "attribution.profile.state_changed",
            "attribution.profile.multi_actor_suspected", "attacker.observation", "attacker.observation.",
        ]).prop_map(str::to_owned),
    ]) {
        let name = sse_event_name(&text);
        let expected = if text.starts_with("attacker.observation.") {
            "observation"
        } else {
            match text.as_str() {
                "attacker.fingerprint_rotated" => "fingerprint.rotated",
                "attacker.scored" => "attacker.scored",
                "attribution.profile.state_changed" => "attribution.state_changed",
                "attribution.profile.multi_actor_suspected" => "attribution.multi_actor_suspected",
                other => other,
            }
        };
        prop_assert_eq!(name, expected);
    }
}

/// The DECNET reference matcher on DECNET.md 1.6's own examples (and its
/// quirks, where this crate deliberately differs).
#[test]
fn decnet_model_examples() {
    assert!(decnet_model("topology.>", "topology.abc.status"));
    assert!(!decnet_model("topology.>", "topology"));
    assert!(decnet_model("a..b", "a..b"));
    assert!(!matches("a..b", "a..b"));
    assert!(decnet_model("a.>.b", "a.x.y"));
    assert!(!matches("a.>.b", "a.x.y"));
    assert!(decnet_model("system.*.health", "system.bus.health"));
    assert!(decnet_model("a*", "a*"));
}
