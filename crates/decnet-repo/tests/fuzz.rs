//! Property-based fuzzing of the `/stream` search language
//! ([`LogFilter::new`]) and of [`DbTime::parse`], the two parsers of
//! decnet-repo that read outside text.
//!
//! The search reference is DECNET's own code path
//! (`decnet/web/db/sqlmodel_repo/logs.py`): Python's `shlex.split` (POSIX
//! mode, `whitespace_split`, no commenters), written out here state by
//! state after CPython's `shlex.read_token`, falling back to `str.split()`
//! (Python whitespace) when it raises; then the token rules of DECNET.md
//! §3.1. Case count: `PROPTEST_CASES` (default 256).

use decnet_repo::{DbTime, LogColumn, LogFilter, SearchTerm};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Cases per property: proptest's `PROPTEST_CASES` (default 256; `cargo xtask
/// soak` runs more); failures are kept in `proptest-regressions/fuzz.txt`.
fn config() -> ProptestConfig {
    ProptestConfig::with_failure_persistence(FileFailurePersistence::Direct(
        "proptest-regressions/fuzz.txt",
    ))
}

// === the reference ===

/// `shlex.split(text)`: `None` where CPython raises `ValueError`.
fn py_shlex_split(text: &str) -> Option<Vec<String>> {
    const WHITESPACE: &str = " \t\r\n";
    #[derive(Clone, Copy, PartialEq)]
    enum St {
        Space,
        Word,
        Quote(char),
        Escape(/* escapedstate */ char),
    }
    let mut tokens = Vec::new();
    let mut chars = text.chars();
    loop {
        // One read_token call.
        let mut state = St::Space;
        let mut token = String::new();
        let mut quoted = false;
        loop {
            let next = chars.next();
            match state {
                St::Space => match next {
                    None => break,
                    Some(c) if WHITESPACE.contains(c) => {}
                    Some('\\') => state = St::Escape('a'),
                    Some(c @ ('\'' | '"')) => state = St::Quote(c),
                    Some(c) => {
                        token.push(c);
                        state = St::Word;
                    }
                },
                St::Quote(q) => {
                    quoted = true;
                    match next {
                        None => return None, // "No closing quotation"
                        Some(c) if c == q => state = St::Word,
                        Some('\\') if q == '"' => state = St::Escape(q),
                        Some(c) => token.push(c),
                    }
                }
                St::Escape(escaped) => {
                    let c = next?; // "No escaped character"
                    if escaped != 'a' && c != '\\' && c != escaped {
                        token.push('\\');
                    }
                    token.push(c);
                    state = if escaped == 'a' {
                        St::Word
                    } else {
                        St::Quote(escaped)
                    };
                }
                St::Word => match next {
                    None => break,
                    Some(c) if WHITESPACE.contains(c) => {
                        break;
                    }
                    Some(c @ ('\'' | '"')) => state = St::Quote(c),
                    Some('\\') => state = St::Escape('a'),
                    Some(c) => token.push(c),
                },
            }
        }
        if token.is_empty() && !quoted {
            // Only at the end of the input: a word always has a character
            // or a quote.
            return Some(tokens);
        }
        tokens.push(token);
    }
}

/// Python's `str.isspace()`, by code point (CPython's table).
fn py_isspace(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r'
            | '\x1c'..='\x1f'
            | ' '
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// DECNET's tokens: `shlex.split`, else `text.split()`.
fn decnet_tokens(text: &str) -> Vec<String> {
    py_shlex_split(text).unwrap_or_else(|| {
        text.split(py_isspace)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

/// DECNET's rule for one token.
fn decnet_term(token: &str) -> Option<SearchTerm> {
    let Some((key, value)) = token.split_once(':') else {
        return Some(SearchTerm::Text(token.to_owned()));
    };
    let column = match key {
        "decky" => Some(LogColumn::Decky),
        "service" => Some(LogColumn::Service),
        "event" => Some(LogColumn::EventType),
        "attacker" | "attacker-ip" | "attacker_ip" => Some(LogColumn::AttackerIp),
        _ => None,
    };
    if let Some(column) = column {
        return Some(SearchTerm::Equals {
            column,
            value: value.to_owned(),
        });
    }
    // re.sub(r"[^a-zA-Z0-9_]", "", key)
    let safe: String = key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!safe.is_empty()).then(|| SearchTerm::JsonKey {
        key: safe,
        value: value.to_owned(),
    })
}

fn decnet_terms(search: &str) -> Vec<SearchTerm> {
    if search.is_empty() {
        return Vec::new();
    }
    decnet_tokens(search)
        .iter()
        .filter_map(|t| decnet_term(t))
        .collect()
}

// === quoting ===

/// `shlex.quote`: as is when only safe characters, else single quotes
/// with each `'` written as `'"'"'`.
fn quote_single(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\"'\"'"))
    }
}

/// Double quotes, with `"` and `\` backslash-escaped.
fn quote_double(word: &str) -> String {
    let mut out = String::from("\"");
    for c in word.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// No quotes: every character that is special outside quotes escaped
/// with a backslash (an empty word needs quotes).
fn quote_backslash(word: &str) -> String {
    if word.is_empty() {
        return "''".to_owned();
    }
    let mut out = String::new();
    for c in word.chars() {
        if " \t\r\n'\"\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

// === strategies ===

/// Text rich in what the splitter reacts to.
fn searchish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        6 => prop::sample::select(vec![
            "a", "b", "ssh", " ", "  ", "\t", "\r", "\n", "'", "\"", "\\", ":", "decky:",
            "service:", "event:", "attacker:", "attacker-ip:", "attacker_ip:", "user.name:",
            "Decky:", "%", "_", "#", "é", "\u{0}", "\u{b}", "\u{c}", "\u{1c}", "\u{1f}",
            "\u{85}", "\u{a0}", "\u{2028}", "\u{3000}", "\u{200b}", "''", "\"\"", "\\\"",
        ]).prop_map(str::to_owned),
        1 => any::<char>().prop_map(String::from),
    ];
    prop_oneof![
        8 => prop::collection::vec(piece, 0..16).prop_map(|p| p.concat()),
        1 => any::<String>(),
    ]
}

/// Words for the quoting round trip: anything, including quotes,
/// backslashes, whitespace and colons.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z:._%-]{0,8}",
        prop::collection::vec(
            prop::sample::select(vec![
                "a", " ", "'", "\"", "\\", ":", "\t", "\n", "é", "decky:"
            ]),
            0..6
        )
        .prop_map(|p| p.concat()),
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Any search text: exactly DECNET's terms, and every JSON key is
    /// non-empty and `[A-Za-z0-9_]` only (it is spliced into a JSON path).
    #[test]
    fn search_terms_match_decnet(search in searchish()) {
        let filter = LogFilter::new(Some(&search), None, None);
        prop_assert_eq!(&filter.terms, &decnet_terms(&search), "search {:?}", search);
        for term in &filter.terms {
            if let SearchTerm::JsonKey { key, .. } = term {
                prop_assert!(!key.is_empty());
                prop_assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{:?}", key);
            }
        }
        prop_assert_eq!(filter.is_empty(), filter.terms.is_empty());
    }

    /// Words quoted in any of three shell styles and joined by any
    /// whitespace come back as one term per word.
    #[test]
    fn quoting_round_trips(
        words in prop::collection::vec((word(), 0..3usize), 0..6),
        separators in prop::collection::vec(prop::sample::select(vec![" ", "\t", "\r\n", "  \n"]), 6),
        leading in prop::sample::select(vec!["", " ", "\t\n"]),
    ) {
        let mut search = leading.to_owned();
        for (i, (word, style)) in words.iter().enumerate() {
            if i > 0 {
                search.push_str(separators[i % separators.len()]);
            }
            search.push_str(&match style {
                0 => quote_single(word),
                1 => quote_double(word),
                _ => quote_backslash(word),
            });
        }
        let expected: Vec<SearchTerm> = if search.is_empty() {
            Vec::new()
        } else {
            words.iter().filter_map(|(w, _)| decnet_term(w)).collect()
        };
        let filter = LogFilter::new(Some(&search), None, None);
        prop_assert_eq!(&filter.terms, &expected, "search {:?}", search);
        // The quoting is Python's too.
        let words_back: Vec<String> = words.iter().map(|(w, _)| w.clone()).collect();
        prop_assert_eq!(py_shlex_split(&search), Some(words_back));
    }

    /// The time bounds are kept verbatim, empty strings dropped.
    #[test]
    fn time_bounds_verbatim(
        search in prop::option::of(searchish()),
        start in prop::option::of(any::<String>()),
        end in prop::option::of(any::<String>()),
    ) {
        let filter = LogFilter::new(search.as_deref(), start.as_deref(), end.as_deref());
        prop_assert_eq!(filter.start_time, start.filter(|s| !s.is_empty()));
        prop_assert_eq!(filter.end_time, end.filter(|s| !s.is_empty()));
        if search.as_deref().is_none_or(str::is_empty) {
            prop_assert!(filter.terms.is_empty());
        }
    }
}

/// The reference splitter agrees with CPython on cases checked by running
/// `python3 -c 'import shlex; print(shlex.split(...))'`.
#[test]
fn reference_shlex_matches_cpython() {
    let split = |s: &str| py_shlex_split(s);
    let owned = |v: &[&str]| Some(v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
    assert_eq!(split("a b  c"), owned(&["a", "b", "c"]));
    assert_eq!(split(r#"a "" b"#), owned(&["a", "", "b"]));
    assert_eq!(split(r#""a\"b\\c\d""#), owned(&[r#"a"b\c\d"#]));
    assert_eq!(split(r"'a\'"), owned(&[r"a\"]));
    assert_eq!(split("#tag x"), owned(&["#tag", "x"]));
    assert_eq!(split("a\x0bb"), owned(&["a\x0bb"]));
    assert_eq!(split("''"), owned(&[""]));
    assert_eq!(split(""), owned(&[]));
    assert_eq!(split(r#"say "hi"#), None);
    assert_eq!(split("x \\"), None);
}

// === DbTime::parse ===

/// A two-digit field: its edge values often, any digits sometimes.
fn field(edges: &'static [&'static str]) -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(edges).prop_map(str::to_owned),
        1 => "[0-9]{2}",
    ]
    .boxed()
}

/// Valid datetimes at the ends of the calendar with large offsets.
fn edge_datetime() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["9999-12-31", "9999-12-30", "0000-01-01", "0001-01-01"]),
        prop::sample::select(vec!["T", " "]),
        prop::sample::select(vec!["00:00", "00:30", "12:00", "23:00", "23:59"]),
        prop::sample::select(vec!["", ":00", ":59.999999", ":59.9999999"]),
        prop::sample::select(vec![
            "", "Z", "+00:00", "+01:00", "-01:00", "+23:59", "-23:59", "-2359", "+1400",
        ]),
    )
        .prop_map(|(date, sep, hm, sec, zone)| format!("{date}{sep}{hm}{sec}{zone}"))
}

fn datetimeish() -> impl Strategy<Value = String> {
    let year = prop_oneof![
        prop::sample::select(vec!["0000", "0001", "1970", "2024", "9999"]).prop_map(str::to_owned),
        "[0-9]{4}",
    ];
    let month = field(&["00", "01", "02", "12", "13"]);
    let day = field(&["00", "01", "28", "29", "30", "31", "32"]);
    let hour = field(&["00", "23", "24"]);
    let minute = field(&["00", "59", "60"]);
    let frac = prop::option::of("\\.[0-9]{0,10}");
    let zone = prop::option::of(prop_oneof![
        Just("Z".to_owned()),
        Just("z".to_owned()),
        "[+-][0-9]{2}:?[0-9]{2}",
        "[+-](00|01|14|23|24):?(00|30|59|60)",
    ]);
    let time = (
        prop::sample::select(vec!["T", " ", "t"]),
        hour,
        minute,
        prop::option::of((field(&["00", "59", "60"]), frac)),
        zone,
    );
    let date = prop_oneof![
        (year, month, day).prop_map(|(y, mo, d)| format!("{y}-{mo}-{d}")),
        prop::sample::select(vec![
            "9999-12-31",
            "0000-01-01",
            "2024-02-29",
            "2023-02-29",
            "1970-01-01",
        ])
        .prop_map(str::to_owned),
    ];
    (date, prop::option::of(time), "[ \t]{0,2}").prop_map(|(date, time, pad)| {
        let mut s = format!("{pad}{date}");
        if let Some((sep, h, mi, sec, zone)) = time {
            s.push_str(&format!("{sep}{h}:{mi}"));
            if let Some((ss, frac)) = sec {
                s.push(':');
                s.push_str(&ss);
                s.push_str(&frac.unwrap_or_default());
            }
            s.push_str(&zone.unwrap_or_default());
        }
        s.push_str(&pad);
        s
    })
}

proptest! {
    #![proptest_config(config())]

    /// Any text, and datetime-shaped text at the edges of every range:
    /// never a panic; what parses is within Python's years 1-9999 and
    /// renders to text that parses back to the same instant and awareness.
    #[test]
    fn db_time_parse(text in prop_oneof![edge_datetime(), datetimeish(), any::<String>()]) {
        if let Ok(parsed) = DbTime::parse(&text) {
            prop_assert!((1..=9999).contains(&parsed.utc().year()), "{:?}", parsed);
            let rendered = parsed.to_string();
            prop_assert_eq!(DbTime::parse(&rendered), Ok(parsed), "{:?} -> {:?}", text, rendered);
            let sql = parsed.to_sql_seconds();
            let again = DbTime::parse(&sql).expect("SQL seconds form parses");
            prop_assert_eq!(
                again.unix_micros().div_euclid(1_000_000),
                parsed.unix_micros().div_euclid(1_000_000)
            );
            prop_assert!(!again.is_aware());
            prop_assert_eq!(
                DbTime::from_unix_micros(parsed.unix_micros()).map(DbTime::utc),
                Some(parsed.utc())
            );
        }
    }

    /// `from_unix_micros` is `Some` exactly within years 1-9999 (as
    /// documented), and round-trips through `unix_micros`.
    #[test]
    fn db_time_from_unix_micros(micros in prop_oneof![
        any::<i64>(),
        // Around year 1 and year 9999/10000.
        -62_135_596_800_000_000i64 - 10_000_000..-62_135_596_800_000_000 + 10_000_000,
        253_402_300_799_000_000i64 - 10_000_000..253_402_300_799_000_000 + 10_000_000,
    ]) {
        const FIRST: i64 = -62_135_596_800_000_000; // 0001-01-01T00:00:00
        const LAST: i64 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999
        let got = DbTime::from_unix_micros(micros);
        prop_assert_eq!(got.is_some(), (FIRST..=LAST).contains(&micros), "{}", micros);
        if let Some(t) = got {
            prop_assert_eq!(t.unix_micros(), micros);
            prop_assert!(!t.is_aware());
            prop_assert_eq!(DbTime::parse(&t.to_string()), Ok(t));
        }
    }
}

// === regressions found by the properties above ===

/// search_terms_match_decnet: an unbalanced quote falls back to
/// `str.split()`, which splits on U+001C..U+001F too (it kept them).
#[test]
fn regression_fallback_split_on_python_separators() {
    let terms = LogFilter::new(Some("'\u{1c}"), None, None).terms;
    assert_eq!(terms, [SearchTerm::Text("'".into())]);
    let terms = LogFilter::new(Some("\"a\u{1f}decky:x"), None, None).terms;
    assert_eq!(
        terms,
        [
            SearchTerm::Text("\"a".into()),
            SearchTerm::Equals {
                column: LogColumn::Decky,
                value: "x".into()
            }
        ]
    );
}

/// db_time_parse: an offset that moves the last representable day past
/// year 9999 in UTC panicked in `time`'s `to_offset`; it is an error now.
#[test]
fn regression_offset_past_the_last_date_is_an_error() {
    assert!(DbTime::parse("9999-12-31T23:59:59-23:59").is_err());
    assert!(DbTime::parse("9999-12-31 23:30-01:00").is_err());
    // The same offset one day earlier still parses.
    let t = DbTime::parse("9999-12-30T23:59:59-23:59").expect("in range");
    assert_eq!(t.to_string(), "9999-12-31T23:58:59Z");
}

/// db_time_parse: year 0 rendered as `-001-12-31T00:01:00Z` (not ISO, and
/// not parseable) after a positive offset; outside Python's range, refused.
#[test]
fn regression_years_outside_python_datetime_are_refused() {
    assert!(DbTime::parse("0000-01-01T00:00+23:59").is_err());
    assert!(DbTime::parse("0000-06-01").is_err());
    assert!(DbTime::parse("0001-01-01T00:00+00:01").is_err());
    let first = DbTime::parse("0001-01-01T00:01+00:01").expect("year 1");
    assert_eq!(first.to_string(), "0001-01-01T00:00:00Z");
}
