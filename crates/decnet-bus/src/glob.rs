//! NATS pattern -> Redis `PSUBSCRIBE` glob translation.

/// Translate a NATS-style pattern into a Redis glob that matches AT LEAST the
/// topics the pattern matches.
///
/// Token by token: `*` -> `*`, `>` -> `*`, and literal tokens have the glob
/// metacharacters `*`, `?`, `[`, `]` and `\` escaped with a backslash. A
/// glob `*` also matches dots (and `>` becomes a single `*`), so the glob
/// over-matches: every received message must be re-checked with
/// [`decnet_topics::matches`], which [`crate::Subscription`] does.
///
/// ```
/// use decnet_bus::nats_pattern_to_redis_glob;
/// assert_eq!(nats_pattern_to_redis_glob("attacker.observation.>"), "attacker.observation.*");
/// assert_eq!(nats_pattern_to_redis_glob("a[b].c"), r"a\[b\].c");
/// ```
pub fn nats_pattern_to_redis_glob(pattern: &str) -> String {
    let mut glob = String::with_capacity(pattern.len() + 4);
    for (idx, token) in pattern.split('.').enumerate() {
        if idx > 0 {
            glob.push('.');
        }
        match token {
            "*" | ">" => glob.push('*'),
            literal => {
                for c in literal.chars() {
                    if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                        glob.push('\\');
                    }
                    glob.push(c);
                }
            }
        }
    }
    glob
}

#[cfg(test)]
mod tests {
    use super::nats_pattern_to_redis_glob;

    fn check(pattern: &str, glob: &str) {
        assert_eq!(nats_pattern_to_redis_glob(pattern), glob, "{pattern}");
    }

    #[test]
    fn wildcards() {
        check("a.*", "a.*");
        check("a.>", "a.*");
        check(">", "*");
        check("*", "*");
        check("*.*.c", "*.*.c");
        check("a.*.>", "a.*.*");
    }

    #[test]
    fn literals() {
        check("a.b", "a.b");
        check("attacker.observation.motor", "attacker.observation.motor");
        check("a-b_c.d", "a-b_c.d");
    }

    #[test]
    fn escaping() {
        check("a[b].c", r"a\[b\].c");
        check("x?y", r"x\?y");
        check(r"back\slash.t", r"back\\slash.t");
        check("a]b.[", r"a\]b.\[");
        check("q?.*", r"q\?.*");
    }
}
