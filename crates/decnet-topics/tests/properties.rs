//! Property tests for topic building and matching.

use decnet_topics::{ROOTS, matches, topic};
use proptest::prelude::*;

fn segment() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,12}"
}

proptest! {
    #[test]
    fn built_topic_matches_itself_and_its_root(
        root_idx in 0..ROOTS.len(),
        leaf in prop::collection::vec(segment(), 1..5),
    ) {
        let root = ROOTS[root_idx];
        let leaf = leaf.join(".");
        let built = topic(root, &leaf).expect("valid segments build a topic");
        prop_assert!(matches(built.as_str(), built.as_str()));
        let under_root = format!("{root}.>");
        prop_assert!(matches(&under_root, built.as_str()));
        prop_assert!(!matches(&under_root, root));
    }

    #[test]
    fn star_never_matches_an_empty_token(
        prefix in prop::collection::vec(segment(), 0..3),
        suffix in prop::collection::vec(segment(), 0..3),
    ) {
        let mut pattern_tokens: Vec<String> = prefix.clone();
        pattern_tokens.push("*".into());
        pattern_tokens.extend(suffix.iter().cloned());
        let mut topic_tokens = prefix;
        topic_tokens.push(String::new());
        topic_tokens.extend(suffix);
        prop_assert!(!matches(&pattern_tokens.join("."), &topic_tokens.join(".")));
    }

    #[test]
    fn star_matches_any_one_nonempty_token(
        prefix in prop::collection::vec(segment(), 0..3),
        token in segment(),
    ) {
        let mut pattern_tokens = prefix.clone();
        pattern_tokens.push("*".into());
        let mut topic_tokens = prefix;
        topic_tokens.push(token.clone());
        prop_assert!(matches(&pattern_tokens.join("."), &topic_tokens.join(".")));
        topic_tokens.push(token);
        prop_assert!(!matches(&pattern_tokens.join("."), &topic_tokens.join(".")));
    }
}
