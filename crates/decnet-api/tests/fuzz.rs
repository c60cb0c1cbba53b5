//! Property-based fuzzing of what decnet-api reads from the request line:
//! the path ([`Route::parse`]) and the query string ([`query_param`], and
//! [`redacted_query`], which the access log records).
//!
//! References written here: a percent-decoder and a route table matched
//! on the decoded path (the documented contract: exact templates, one
//! non-empty path segment per parameter), and an
//! `application/x-www-form-urlencoded` parser from the WHATWG URL
//! standard. The redaction property computes the secret values from the
//! generated query. Case count: `PROPTEST_CASES` (default 256).

use decnet_api::{Route, StreamRoute, query_param, redacted_query};
use http::Method;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Cases per property: proptest's `PROPTEST_CASES` (default 256; `cargo xtask
/// soak` runs more); failures are kept in `proptest-regressions/fuzz.txt`.
fn config() -> ProptestConfig {
    ProptestConfig::with_failure_persistence(FileFailurePersistence::Direct(
        "proptest-regressions/fuzz.txt",
    ))
}

// === the path ===

/// Percent-decoding (RFC 3986): `%` and two hex digits is a byte, anything
/// else is itself; the bytes then read as UTF-8 with U+FFFD replacements.
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(u8::try_from(hi * 16 + lo).expect("a byte"));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The route table, matched on the decoded path.
fn route_model(decoded: &str) -> Route {
    let fixed = [
        ("/", Route::Console),
        ("/healthz", Route::Healthz),
        ("/readyz", Route::Readyz),
        ("/metrics", Route::Metrics),
        ("/api/v1/auth/sse-ticket", Route::Ticket),
        ("/api/v1/stream", Route::Logs),
        (
            "/api/v1/identities/events",
            Route::Stream(StreamRoute::Identities, String::new()),
        ),
        (
            "/api/v1/campaigns/events",
            Route::Stream(StreamRoute::Campaigns, String::new()),
        ),
        (
            "/api/v1/orchestrator/events/stream",
            Route::Stream(StreamRoute::Orchestrator, String::new()),
        ),
    ];
    if let Some((_, route)) = fixed.iter().find(|(path, _)| *path == decoded) {
        return route.clone();
    }
    let templated = [
        ("/api/v1/attackers/", "/events", StreamRoute::Attacker),
        ("/api/v1/topologies/", "/events", StreamRoute::Topology),
    ];
    for (prefix, suffix, kind) in templated {
        if decoded.len() > prefix.len() + suffix.len()
            && decoded.starts_with(prefix)
            && decoded.ends_with(suffix)
        {
            let key = &decoded[prefix.len()..decoded.len() - suffix.len()];
            if !key.contains('/') {
                return Route::Stream(kind, key.to_owned());
            }
        }
    }
    Route::NotFound
}

/// The template a stream route came from, with its key put back.
fn render(route: &Route) -> Option<String> {
    let Route::Stream(kind, key) = route else {
        return None;
    };
    Some(match kind {
        StreamRoute::Attacker => format!("/api/v1/attackers/{key}/events"),
        StreamRoute::Topology => format!("/api/v1/topologies/{key}/events"),
        StreamRoute::Identities => "/api/v1/identities/events".to_owned(),
        StreamRoute::Campaigns => "/api/v1/campaigns/events".to_owned(),
        StreamRoute::Orchestrator => "/api/v1/orchestrator/events/stream".to_owned(),
    })
}

/// Paths built from the pieces that make routing interesting.
fn pathish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        8 => prop::sample::select(vec![
            "/", "//", "api", "v1", "attackers", "topologies", "identities", "campaigns",
            "orchestrator", "events", "stream", "auth", "sse-ticket", "healthz", "readyz",
            "metrics", "abc", "T-1", "..", ".", "%2F", "%2f", "%2e%2e", "%2E", "%", "%z",
            "%4", "%41", "%C3%A9", "%FF", "%00", "%20", "+", "é", "😀", "?", "#", ";", "\\",
            "/api/v1/attackers/", "/events", "/api/v1/topologies/", "%2Fevents",
            "/api/v1/identities/events", "/api/v1/stream",
        ]).prop_map(str::to_owned),
        1 => any::<char>().prop_map(String::from),
        1 => "[a-zA-Z0-9%]{1,6}",
    ];
    prop_oneof![
        10 => prop::collection::vec(piece, 0..12).prop_map(|p| p.concat()),
        1 => any::<String>(),
        1 => (0usize..20_000).prop_map(|n| format!("/api/v1/attackers/{}/events", "a".repeat(n))),
    ]
}

/// A path parameter: any text without `/` (after decoding), non-empty.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9-]{1,36}",
        any::<String>().prop_filter_map("a key", |s| {
            let s = s.replace('/', "");
            (!s.is_empty()).then_some(s)
        }),
        Just("..".to_owned()),
        Just("%2F".to_owned()),
        Just("events".to_owned()),
    ]
}

/// `key` percent-encoded in a random way: every byte of a `%`, `/`, `?` or
/// `#` (and of any non-ASCII character, which a URI cannot carry raw),
/// other bytes encoded when the flag for their position says so.
fn encode_key(key: &str, flags: &[bool]) -> String {
    let mut out = String::new();
    for (i, c) in key.chars().enumerate() {
        let must = !c.is_ascii() || matches!(c, '%' | '/' | '?' | '#') || c.is_ascii_control();
        let want = flags.get(i % flags.len().max(1)).copied().unwrap_or(false);
        if must || want {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                if want && b % 2 == 0 {
                    out.push_str(&format!("%{b:02x}"));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn check_route(raw: &str) -> Result<Route, TestCaseError> {
    let route = Route::parse(raw);
    let decoded = percent_decode(raw);
    prop_assert_eq!(
        &route,
        &route_model(&decoded),
        "raw {:?} decoded {:?}",
        raw,
        decoded
    );
    // A stream route is exactly its template with the key put back.
    if let Some(rendered) = render(&route) {
        prop_assert_eq!(&rendered, &decoded);
    }
    // Labels are templates, never the raw path.
    let label = route.label();
    prop_assert!(
        label == "unmatched" || Route::templates().contains(&label),
        "{}",
        label
    );
    prop_assert_eq!(label == "unmatched", route == Route::NotFound);
    let allowed = route.allowed();
    match route {
        Route::Ticket => prop_assert_eq!(allowed, &[Method::POST][..]),
        Route::NotFound => prop_assert!(allowed.is_empty()),
        _ => prop_assert_eq!(allowed, &[Method::GET][..]),
    }
    prop_assert_eq!(
        route.is_ops(),
        matches!(route, Route::Healthz | Route::Readyz | Route::Metrics)
    );
    Ok(route)
}

proptest! {
    #![proptest_config(config())]

    /// Random paths (percent-encodings, `..`, double slashes, unicode,
    /// very long): the route of the decoded path, by the table, and only
    /// exact templates are streams.
    #[test]
    fn routes_of_random_paths(raw in pathish()) {
        check_route(&raw)?;
    }

    /// A templated path with any key, encoded any way, is that stream with
    /// exactly that key; with a slash or nothing in its place, it is not.
    #[test]
    fn routes_of_templated_paths(
        key in key(),
        flags in prop::collection::vec(any::<bool>(), 1..8),
        topology in any::<bool>(),
    ) {
        let (prefix, kind) = if topology {
            ("/api/v1/topologies/", StreamRoute::Topology)
        } else {
            ("/api/v1/attackers/", StreamRoute::Attacker)
        };
        let raw = format!("{prefix}{}/events", encode_key(&key, &flags));
        let route = check_route(&raw)?;
        prop_assert_eq!(&route, &Route::Stream(kind, key.clone()));
        prop_assert!(route.label().contains('{'), "{}", route.label());
        for broken in [
            format!("{prefix}/events"),
            format!("{prefix}{}/x/events", encode_key(&key, &flags)),
            format!("{prefix}{}%2Fx/events", encode_key(&key, &flags)),
            format!("{prefix}{}/events/", encode_key(&key, &flags)),
            format!("/{prefix}{}/events", encode_key(&key, &flags)),
        ] {
            let route = check_route(&broken)?;
            prop_assert_eq!(route, Route::NotFound, "{}", broken);
        }
    }
}

// === the query ===

/// The WHATWG `application/x-www-form-urlencoded` parser: split on `&`,
/// skip empty sequences, split at the first `=`, `+` is a space, then
/// percent-decode (lossy UTF-8).
fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|seq| !seq.is_empty())
        .map(|seq| {
            let (name, value) = seq.split_once('=').unwrap_or((seq, ""));
            let decode = |s: &str| percent_decode(&s.replace('+', " "));
            (decode(name), decode(value))
        })
        .collect()
}

const SECRETS: [&str; 3] = ["ticket", "token", "access_token"];

/// What the access log must record: each `&`-separated piece as sent,
/// except that a piece whose decoded name is a secret keeps its raw name
/// and gets the value `[redacted]`.
fn redaction_model(query: &str) -> String {
    let pieces: Vec<String> = query
        .split('&')
        .map(|piece| {
            let raw_name = piece.split_once('=').map_or(piece, |(name, _)| name);
            let name = form_pairs(raw_name)
                .into_iter()
                .next()
                .map(|(name, _)| name)
                .unwrap_or_default();
            if SECRETS.contains(&name.as_str()) {
                format!("{raw_name}=[redacted]")
            } else {
                piece.to_owned()
            }
        })
        .collect();
    format!("?{}", pieces.join("&"))
}

fn query_name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "ticket", "token", "access_token", "t%69cket", "%74oken", "access%5Ftoken",
            "access%5ftoken", "%74%69%63%6B%65%74", "TICKET", "Ticket", "ticket%00", "ticket ",
            "tic+ket", "ticket%3D", "ticket%26", "tickets", "xticket", "last_event_id",
            "lastEventId", "search", "a", "", "%", "%zz", "é", "ticket%C3%A9",
        ]).prop_map(str::to_owned),
        1 => "[a-z_%0-9+]{0,8}",
    ]
}

fn query_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[A-Za-z0-9_-]{0,43}",
        2 => "[A-Za-z0-9_%+=.:/ -]{0,20}",
        1 => prop::sample::select(vec![
            "%", "%2", "%zz", "%26", "%3D", "+", "=", "==", "[redacted]", "%5Bredacted%5D",
        ]).prop_map(str::to_owned),
        1 => any::<String>().prop_map(|s| s.replace('&', "")),
    ]
}

/// A query string: pieces `name`, `name=`, `name=value`, empty pieces,
/// joined by `&`.
fn queryish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        6 => (query_name(), query_value()).prop_map(|(n, v)| format!("{n}={v}")),
        1 => query_name(),
        1 => query_name().prop_map(|n| format!("{n}=")),
        1 => Just(String::new()),
        1 => query_value(),
    ];
    prop_oneof![
        10 => prop::collection::vec(piece, 0..8).prop_map(|p| p.join("&")),
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// query_param: the LAST pair with that decoded name, decoded; `None`
    /// without a query or without the name.
    #[test]
    fn query_params(query in queryish(), name in prop_oneof![
        prop::sample::select(vec![
            "ticket", "token", "last_event_id", "lastEventId", "search", "a", "", "é", "tic ket",
        ]).prop_map(str::to_owned),
        query_name().prop_map(|n| percent_decode(&n.replace('+', " "))),
    ]) {
        let expected = form_pairs(&query)
            .into_iter()
            .rfind(|(n, _)| *n == name)
            .map(|(_, v)| v);
        prop_assert_eq!(query_param(Some(&query), &name), expected);
        prop_assert_eq!(query_param(None, &name), None);
    }

    /// redacted_query keeps every piece as sent but the secrets, and no
    /// secret value survives: decoded, every ticket/token/access_token
    /// is `[redacted]`, and no raw secret value appears unless the kept
    /// text holds it anyway.
    #[test]
    fn redaction_hides_every_secret(query in queryish()) {
        let shown = redacted_query(Some(&query));
        prop_assert_eq!(&shown, &redaction_model(&query));
        prop_assert_eq!(redacted_query(None), "");
        let shown_query = shown.strip_prefix('?').expect("a leading ?");
        // Same pieces, in the same order.
        prop_assert_eq!(shown_query.split('&').count(), query.split('&').count());
        // Decoded, nothing a handler would read as a secret is visible.
        for (name, value) in form_pairs(shown_query) {
            if SECRETS.contains(&name.as_str()) {
                prop_assert_eq!(value, "[redacted]", "{:?} visible in {:?}", name, shown);
            }
        }
        for secret in SECRETS {
            if let Some(value) = query_param(Some(shown_query), secret) {
                prop_assert_eq!(value, "[redacted]");
            }
        }
        // Raw: the value text of each secret piece is gone, unless the
        // text that is legitimately kept (the leading `?`, the other
        // pieces, the names) contains it by itself.
        let kept: String = query
            .split('&')
            .map(|piece| {
                let raw_name = piece.split_once('=').map_or(piece, |(name, _)| name);
                let decoded = form_pairs(raw_name).into_iter().next().map(|(n, _)| n).unwrap_or_default();
                if SECRETS.contains(&decoded.as_str()) {
                    format!("{raw_name}=[redacted]")
                } else {
                    piece.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\u{0}");
        let kept = format!("?\u{0}{kept}");
        for piece in query.split('&') {
            let Some((raw_name, raw_value)) = piece.split_once('=') else { continue };
            let decoded = form_pairs(raw_name).into_iter().next().map(|(n, _)| n).unwrap_or_default();
            if SECRETS.contains(&decoded.as_str()) && !raw_value.is_empty() && !kept.contains(raw_value) {
                prop_assert!(!shown.contains(raw_value), "{:?} visible in {:?}", raw_value, shown);
            }
        }
    }
}

/// The reference decoder on its edge cases.
#[test]
fn reference_decoders() {
    assert_eq!(percent_decode("a%2Fb%2fc"), "a/b/c");
    assert_eq!(percent_decode("%"), "%");
    assert_eq!(percent_decode("%4"), "%4");
    assert_eq!(percent_decode("%zz%41"), "%zzA");
    assert_eq!(percent_decode("%C3%A9"), "é");
    assert_eq!(percent_decode("%FF"), "\u{FFFD}");
    assert_eq!(
        form_pairs("a=1&&b&c=%20+x&=v"),
        [
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), String::new()),
            ("c".to_owned(), "  x".to_owned()),
            (String::new(), "v".to_owned()),
        ]
    );
}

/// Dot segments are not normalised (neither does DECNET's stack): `..`
/// and `.` are keys like any other, and the handler answers 404 for an
/// attacker that does not exist. Encoded or not, the route is the same.
#[test]
fn dot_segments_are_keys_not_navigation() {
    for raw in [
        "/api/v1/attackers/../events",
        "/api/v1/attackers/%2e%2e/events",
        "/api/v1/attackers/%2E./events",
    ] {
        assert_eq!(
            Route::parse(raw),
            Route::Stream(StreamRoute::Attacker, "..".into()),
            "{raw}"
        );
    }
    assert_eq!(
        Route::parse("/api/v1/attackers/../../events"),
        Route::NotFound
    );
    assert_eq!(Route::parse("/api/v1/x/../stream"), Route::NotFound);
    assert_eq!(Route::parse("//api/v1/stream"), Route::NotFound);
    assert_eq!(Route::parse("/api/v1//stream"), Route::NotFound);
}
