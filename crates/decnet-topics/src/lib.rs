//! Topic names of the DECNET message bus, and the rules that go with them.
//!
//! What it is: the constants and validated builders for the topics the
//! attacker stream and identity re-keying use (`attacker.observation.<primitive>`,
//! `attacker.scored`, `attribution.profile.state_changed`, `identity.merged`, ...),
//! pattern validation and matching with NATS wildcard semantics ([`matches`]),
//! and the bus-topic to SSE `event:` name table ([`sse_event_name`]).
//! What it is not: a bus. There is no I/O and nothing async here, so every
//! other crate (and every DECNET service that embeds them) can depend on it.
//!
//! Main items:
//! - [`Topic`] and [`TopicPattern`], validated newtypes with checked constructors;
//! - builders: [`observation`], [`attribution`], [`identity`], [`topic`];
//! - [`matches`] (pattern, topic) with `*` = exactly one non-empty token and
//!   `>` = one or more trailing tokens;
//! - [`sse_event_name`].
//!
//! ```
//! use decnet_topics::{matches, observation, sse_event_name};
//!
//! let topic = observation("motor.shell_mastery.tab_completion")?;
//! assert_eq!(topic.as_str(), "attacker.observation.motor.shell_mastery.tab_completion");
//! assert!(matches("attacker.observation.>", topic.as_str()));
//! assert_eq!(sse_event_name(topic.as_str()), "observation");
//! # Ok::<(), decnet_topics::TopicError>(())
//! ```

use std::fmt;

// === roots ===

/// Root of per-attacker events (`attacker.*`).
pub const ATTACKER: &str = "attacker";
/// Root of attribution-engine events (`attribution.*`).
pub const ATTRIBUTION: &str = "attribution";
/// Root of identity-graph events (`identity.*`).
pub const IDENTITY: &str = "identity";
/// Root of deception-network topology events (`topology.*`).
pub const TOPOLOGY: &str = "topology";
/// Root of platform health and control events (`system.*`).
pub const SYSTEM: &str = "system";

/// Every root of the DECNET topic hierarchy.
pub const ROOTS: [&str; 5] = [ATTACKER, ATTRIBUTION, IDENTITY, TOPOLOGY, SYSTEM];

// === leaves (relative to their root, as DECNET names them) ===

/// `attacker.observation.<primitive>`: the prefix under [`ATTACKER`].
pub const ATTACKER_OBSERVATION_PREFIX: &str = "observation";
/// `attacker.fingerprint_rotated`.
pub const ATTACKER_FINGERPRINT_ROTATED: &str = "fingerprint_rotated";
/// `attacker.scored`.
pub const ATTACKER_SCORED: &str = "scored";
/// `attribution.profile.state_changed`.
pub const ATTRIBUTION_PROFILE_STATE_CHANGED: &str = "profile.state_changed";
/// `attribution.profile.multi_actor_suspected`.
pub const ATTRIBUTION_PROFILE_MULTI_ACTOR_SUSPECTED: &str = "profile.multi_actor_suspected";
/// `identity.formed`.
pub const IDENTITY_FORMED: &str = "formed";
/// `identity.observation.linked`.
pub const IDENTITY_OBSERVATION_LINKED: &str = "observation.linked";
/// `identity.merged`.
pub const IDENTITY_MERGED: &str = "merged";
/// `identity.unmerged`.
pub const IDENTITY_UNMERGED: &str = "unmerged";

// === full topics and patterns the attacker stream uses ===

/// Full topic `attacker.fingerprint_rotated`.
pub const TOPIC_ATTACKER_FINGERPRINT_ROTATED: &str = "attacker.fingerprint_rotated";
/// Full topic `attacker.scored`.
pub const TOPIC_ATTACKER_SCORED: &str = "attacker.scored";
/// Full topic `attribution.profile.state_changed`.
pub const TOPIC_ATTRIBUTION_STATE_CHANGED: &str = "attribution.profile.state_changed";
/// Full topic `attribution.profile.multi_actor_suspected`.
pub const TOPIC_ATTRIBUTION_MULTI_ACTOR_SUSPECTED: &str =
    "attribution.profile.multi_actor_suspected";
/// Full topic `identity.formed`.
pub const TOPIC_IDENTITY_FORMED: &str = "identity.formed";
/// Full topic `identity.observation.linked`.
pub const TOPIC_IDENTITY_OBSERVATION_LINKED: &str = "identity.observation.linked";
/// Full topic `identity.merged`.
pub const TOPIC_IDENTITY_MERGED: &str = "identity.merged";
/// Full topic `identity.unmerged`.
pub const TOPIC_IDENTITY_UNMERGED: &str = "identity.unmerged";

/// Pattern for every observation: `attacker.observation.>`.
pub const PATTERN_ATTACKER_OBSERVATIONS: &str = "attacker.observation.>";
/// Pattern for every attribution event: `attribution.>`.
pub const PATTERN_ATTRIBUTION: &str = "attribution.>";
/// Pattern for every identity event: `identity.>`.
pub const PATTERN_IDENTITY: &str = "identity.>";

/// The patterns an attacker stream needs, in the order DECNET subscribes them,
/// plus `identity.>` for live re-keying.
pub const ATTACKER_STREAM_PATTERNS: [&str; 5] = [
    PATTERN_ATTACKER_OBSERVATIONS,
    TOPIC_ATTACKER_FINGERPRINT_ROTATED,
    TOPIC_ATTACKER_SCORED,
    PATTERN_ATTRIBUTION,
    PATTERN_IDENTITY,
];

// === errors ===

/// Why a topic, pattern or segment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The whole topic or pattern is empty.
    #[error("topic is empty")]
    Empty,
    /// A token between dots is empty (`a..b`, `.a`, `a.`).
    #[error("empty token in {0:?}")]
    EmptyToken(String),
    /// A token contains whitespace or a control character.
    #[error("whitespace or control character in {0:?}")]
    Whitespace(String),
    /// A concrete topic (not a pattern) contains `*` or `>`.
    #[error("wildcard in topic {0:?} (only patterns may contain '*' or '>')")]
    WildcardInTopic(String),
    /// A pattern uses a wildcard inside a token (`a*`) or `>` before the end.
    #[error("misplaced wildcard in pattern {0:?}")]
    MisplacedWildcard(String),
    /// A single segment given to a builder contains a `.`.
    #[error("segment {0:?} must not contain '.'")]
    DotInSegment(String),
    /// The root is not one of [`ROOTS`].
    #[error("unknown topic root {0:?}")]
    UnknownRoot(String),
}

// === validation ===

fn check_token_chars(token: &str, whole: &str) -> Result<(), TopicError> {
    if token.is_empty() {
        return Err(TopicError::EmptyToken(whole.to_owned()));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TopicError::Whitespace(whole.to_owned()));
    }
    Ok(())
}

/// Check a dotted path of concrete tokens (no wildcards).
fn validate_dotted(path: &str) -> Result<(), TopicError> {
    if path.is_empty() {
        return Err(TopicError::Empty);
    }
    for token in path.split('.') {
        check_token_chars(token, path)?;
        if token.contains(['*', '>']) {
            return Err(TopicError::WildcardInTopic(path.to_owned()));
        }
    }
    Ok(())
}

/// Check one segment for a builder: non-empty, no `.`, `*`, `>` or whitespace.
///
/// # Errors
///
/// The [`TopicError`] naming the first rule the segment breaks.
pub fn validate_segment(segment: &str) -> Result<(), TopicError> {
    if segment.contains('.') {
        return Err(TopicError::DotInSegment(segment.to_owned()));
    }
    validate_dotted(segment)
}

/// Check a concrete topic: dot-separated non-empty tokens, no wildcards, no whitespace.
///
/// # Errors
///
/// The [`TopicError`] naming the first rule the topic breaks.
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    validate_dotted(topic)
}

/// Check a subscription pattern: like a topic, but a token may be exactly `*`,
/// and the last token may be exactly `>`.
///
/// # Errors
///
/// The [`TopicError`] naming the first rule the pattern breaks.
pub fn validate_pattern(pattern: &str) -> Result<(), TopicError> {
    if pattern.is_empty() {
        return Err(TopicError::Empty);
    }
    let n_tokens = pattern.split('.').count();
    for (idx, token) in pattern.split('.').enumerate() {
        check_token_chars(token, pattern)?;
        match token {
            "*" => {}
            ">" if idx + 1 == n_tokens => {}
            _ if token.contains(['*', '>']) => {
                return Err(TopicError::MisplacedWildcard(pattern.to_owned()));
            }
            _ => {}
        }
    }
    Ok(())
}

// === newtypes ===

/// A validated concrete topic such as `attacker.scored`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(String);

impl Topic {
    /// Parse and validate a concrete topic.
    ///
    /// # Errors
    ///
    /// See [`validate_topic`].
    pub fn parse(topic: impl Into<String>) -> Result<Self, TopicError> {
        let topic = topic.into();
        validate_topic(&topic)?;
        Ok(Self(topic))
    }

    /// The topic as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first token (the root).
    pub fn root(&self) -> &str {
        self.0.split('.').next().unwrap_or(&self.0)
    }

    /// Unwrap into the inner `String`.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A validated subscription pattern such as `attacker.observation.>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPattern(String);

impl TopicPattern {
    /// Parse and validate a pattern.
    ///
    /// # Errors
    ///
    /// See [`validate_pattern`].
    pub fn parse(pattern: impl Into<String>) -> Result<Self, TopicError> {
        let pattern = pattern.into();
        validate_pattern(&pattern)?;
        Ok(Self(pattern))
    }

    /// The pattern as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `topic` matches this pattern (see [`matches`]).
    pub fn matches(&self, topic: &str) -> bool {
        matches(&self.0, topic)
    }

    /// Whether the pattern contains a wildcard token.
    pub fn has_wildcards(&self) -> bool {
        self.0.split('.').any(|t| t == "*" || t == ">")
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TopicPattern {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<Topic> for TopicPattern {
    fn from(topic: Topic) -> Self {
        Self(topic.0)
    }
}

// === builders ===

/// Build `<root>.<leaf>` where `leaf` may be dotted (`profile.state_changed`).
///
/// # Errors
///
/// [`TopicError::UnknownRoot`] for a root outside [`ROOTS`]; otherwise the
/// error for the first invalid token of `leaf`.
pub fn topic(root: &str, leaf: &str) -> Result<Topic, TopicError> {
    if !ROOTS.contains(&root) {
        return Err(TopicError::UnknownRoot(root.to_owned()));
    }
    validate_dotted(leaf)?;
    Ok(Topic(format!("{root}.{leaf}")))
}

/// Build `attacker.<leaf>`, e.g. `attacker.scored`.
///
/// # Errors
///
/// See [`topic`].
pub fn attacker(leaf: &str) -> Result<Topic, TopicError> {
    topic(ATTACKER, leaf)
}

/// Build `attacker.observation.<primitive>`; dotted primitives such as
/// `motor.shell_mastery.tab_completion` are allowed, as in DECNET.
///
/// # Errors
///
/// The error for the first invalid token of `primitive`.
pub fn observation(primitive: &str) -> Result<Topic, TopicError> {
    validate_dotted(primitive)?;
    Ok(Topic(format!(
        "{ATTACKER}.{ATTACKER_OBSERVATION_PREFIX}.{primitive}"
    )))
}

/// Build `attribution.<leaf>`, e.g. `attribution.profile.state_changed`.
///
/// # Errors
///
/// See [`topic`].
pub fn attribution(leaf: &str) -> Result<Topic, TopicError> {
    topic(ATTRIBUTION, leaf)
}

/// Build `identity.<leaf>`, e.g. `identity.merged`.
///
/// # Errors
///
/// See [`topic`].
pub fn identity(leaf: &str) -> Result<Topic, TopicError> {
    topic(IDENTITY, leaf)
}

/// Build `<root>.>`, the pattern for everything under `root`.
///
/// # Errors
///
/// The error for an invalid `root` segment.
pub fn all_under(root: &str) -> Result<TopicPattern, TopicError> {
    validate_segment(root)?;
    Ok(TopicPattern(format!("{root}.>")))
}

// === matching ===

/// Whether `topic` matches `pattern` with NATS semantics.
///
/// `*` matches exactly one non-empty token; `>` (last token only) matches one
/// or more trailing tokens; any other token matches itself. An empty token in
/// the topic never matches a wildcard, and a malformed pattern matches nothing
/// it would not match literally. No allocation.
pub fn matches(pattern: &str, topic: &str) -> bool {
    let mut pattern_tokens = pattern.split('.');
    let mut topic_tokens = topic.split('.');
    loop {
        match (pattern_tokens.next(), topic_tokens.next()) {
            (Some(">"), Some(t)) => {
                // `>` must be last, and every remaining topic token non-empty.
                return pattern_tokens.next().is_none()
                    && !t.is_empty()
                    && topic_tokens.all(|rest| !rest.is_empty());
            }
            (Some("*"), Some(t)) => {
                if t.is_empty() {
                    return false;
                }
            }
            (Some(p), Some(t)) => {
                if p != t || p.is_empty() {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}

// === SSE event names ===

/// The SSE `event:` name for a bus topic, as DECNET's attacker stream names it.
///
/// `attacker.observation.<anything>` -> `observation`;
/// `attacker.fingerprint_rotated` -> `fingerprint.rotated`;
/// `attacker.scored` -> `attacker.scored`;
/// `attribution.profile.state_changed` -> `attribution.state_changed`;
/// `attribution.profile.multi_actor_suspected` -> `attribution.multi_actor_suspected`;
/// any other topic passes through unchanged.
pub fn sse_event_name(topic: &str) -> &str {
    if topic.starts_with("attacker.observation.") {
        return "observation";
    }
    match topic {
        TOPIC_ATTACKER_FINGERPRINT_ROTATED => "fingerprint.rotated",
        TOPIC_ATTACKER_SCORED => "attacker.scored",
        TOPIC_ATTRIBUTION_STATE_CHANGED => "attribution.state_changed",
        TOPIC_ATTRIBUTION_MULTI_ACTOR_SUSPECTED => "attribution.multi_actor_suspected",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_pattern(pattern: &str, ok: bool) {
        assert_eq!(validate_pattern(pattern).is_ok(), ok, "pattern {pattern:?}");
    }

    fn check_topic(topic: &str, ok: bool) {
        assert_eq!(validate_topic(topic).is_ok(), ok, "topic {topic:?}");
    }

    #[test]
    fn patterns() {
        check_pattern("a.b", true);
        check_pattern("a.*", true);
        check_pattern(">", true);
        check_pattern("*.>", true);
        check_pattern("a.>.b", false);
        check_pattern("a*", false);
        check_pattern("a.b>", false);
        check_pattern("", false);
        check_pattern("a..b", false);
        check_pattern(".a", false);
        check_pattern("a.", false);
        check_pattern("a b", false);
        check_pattern("a.\tb", false);
    }

    #[test]
    fn topics() {
        check_topic("attacker.scored", true);
        check_topic(
            "attacker.observation.motor.shell_mastery.tab_completion",
            true,
        );
        check_topic("a.*", false);
        check_topic("a.>", false);
        check_topic("a..b", false);
        check_topic("", false);
        check_topic("a b", false);
        check_topic("a\nb", false);
    }

    #[test]
    fn segments() {
        assert!(validate_segment("scored").is_ok());
        assert_eq!(
            validate_segment("a.b"),
            Err(TopicError::DotInSegment("a.b".into()))
        );
        assert_eq!(validate_segment(""), Err(TopicError::Empty));
        assert!(validate_segment("a*").is_err());
        assert!(validate_segment("a>").is_err());
        assert!(validate_segment("a b").is_err());
    }

    #[test]
    fn builders() {
        assert_eq!(
            attribution(ATTRIBUTION_PROFILE_STATE_CHANGED)
                .map(Topic::into_string)
                .as_deref(),
            Ok(TOPIC_ATTRIBUTION_STATE_CHANGED)
        );
        assert_eq!(
            identity(IDENTITY_OBSERVATION_LINKED)
                .map(Topic::into_string)
                .as_deref(),
            Ok(TOPIC_IDENTITY_OBSERVATION_LINKED)
        );
        assert_eq!(
            attacker(ATTACKER_SCORED).map(Topic::into_string).as_deref(),
            Ok(TOPIC_ATTACKER_SCORED)
        );
        assert_eq!(
            topic("nope", "x"),
            Err(TopicError::UnknownRoot("nope".into()))
        );
        assert!(observation("motor.shell_mastery.tab_completion").is_ok());
        assert!(observation("motor..x").is_err());
        assert!(observation("").is_err());
        assert!(observation("*").is_err());
        assert_eq!(
            all_under(ATTRIBUTION).map(|p| p.to_string()).as_deref(),
            Ok(PATTERN_ATTRIBUTION)
        );
        for pattern in ATTACKER_STREAM_PATTERNS {
            assert!(validate_pattern(pattern).is_ok(), "{pattern}");
        }
        assert_eq!(
            Topic::parse("attacker.scored").map(|t| t.root().to_owned()),
            Ok("attacker".into())
        );
        assert!(TopicPattern::parse("a.>").is_ok_and(|p| p.has_wildcards()));
    }

    #[test]
    fn matching_edge_cases() {
        assert!(!matches("a.>", "a.b."));
        assert!(!matches("a.>", "a..b"));
        assert!(!matches("", ""));
        assert!(!matches("a..b", "a..b"));
        assert!(!matches(">.a", "x.a"));
        assert!(matches("a.b", "a.b"));
    }
}
