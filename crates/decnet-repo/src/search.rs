//! DECNET's `/stream` filters: the `search` token language and the time
//! bounds, parsed once into a [`LogFilter`] that every backend turns into its
//! own SQL (or, for the memory backend, evaluates in Rust).
//!
//! The language (DECNET.md §3.1): POSIX shell-style tokens (quotes group
//! words, a backslash escapes; unbalanced quotes or a trailing backslash fall
//! back to splitting on whitespace), all ANDed. A token with a `:` is split
//! at the first colon into key and value: the keys `decky`, `service`,
//! `event`, `attacker`, `attacker-ip`, `attacker_ip` are equality tests on a
//! column; any other key, reduced to `[A-Za-z0-9_]`, is a top-level JSON key
//! test on `fields` (ignored when nothing is left of the key). A token without
//! a colon is a `LIKE %token%` on `raw_line`, `decky`, `service` and
//! `attacker_ip` (OR), with `%` and `_` left as wildcards, as DECNET does.

/// A column of `logs` that a `key:value` token compares for equality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogColumn {
    /// `decky:`
    Decky,
    /// `service:`
    Service,
    /// `event:` (the `event_type` column)
    EventType,
    /// `attacker:`, `attacker-ip:`, `attacker_ip:`
    AttackerIp,
}

impl LogColumn {
    /// The SQL column name.
    pub fn as_sql(self) -> &'static str {
        match self {
            LogColumn::Decky => "decky",
            LogColumn::Service => "service",
            LogColumn::EventType => "event_type",
            LogColumn::AttackerIp => "attacker_ip",
        }
    }

    fn from_key(key: &str) -> Option<LogColumn> {
        Some(match key {
            "decky" => LogColumn::Decky,
            "service" => LogColumn::Service,
            "event" => LogColumn::EventType,
            "attacker" | "attacker-ip" | "attacker_ip" => LogColumn::AttackerIp,
            _ => return None,
        })
    }
}

/// One condition of a `search`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SearchTerm {
    /// `column = value` (an empty value matches empty strings).
    Equals {
        /// The column.
        column: LogColumn,
        /// The value, compared as text.
        value: String,
    },
    /// The top-level key `key` of the JSON object in `fields` equals `value`
    /// (compared as text; see each backend for how numbers compare).
    JsonKey {
        /// The key, already reduced to `[A-Za-z0-9_]` (safe in a JSON path).
        key: String,
        /// The value.
        value: String,
    },
    /// `LIKE %text%` on `raw_line`, `decky`, `service` or `attacker_ip`.
    Text(String),
}

/// The filters of one `/stream` query, shared by the logs poll and the
/// histogram.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct LogFilter {
    /// Every term must hold (AND).
    pub terms: Vec<SearchTerm>,
    /// `timestamp >= start_time`, compared as each engine compares a string
    /// with a datetime (text on SQLite, converted on MySQL).
    pub start_time: Option<String>,
    /// `timestamp <= end_time`, likewise.
    pub end_time: Option<String>,
}

impl LogFilter {
    /// The filter for `/stream`'s `search`, `start_time` and `end_time`
    /// parameters exactly as DECNET reads them: empty strings are absent, and
    /// nothing else is normalised (`search=null` searches for `null`).
    pub fn new(search: Option<&str>, start_time: Option<&str>, end_time: Option<&str>) -> Self {
        let non_empty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_owned);
        let terms = match search.filter(|s| !s.is_empty()) {
            None => Vec::new(),
            Some(search) => tokens(search)
                .into_iter()
                .filter_map(|token| term(&token))
                .collect(),
        };
        LogFilter {
            terms,
            start_time: non_empty(start_time),
            end_time: non_empty(end_time),
        }
    }

    /// Whether the filter lets every row through.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty() && self.start_time.is_none() && self.end_time.is_none()
    }
}

/// Whether SQLite's NUMERIC affinity turns `text` into a number when it is
/// compared with a `DATETIME` column (`logs.timestamp`): an integer or real
/// literal (optional sign, digits with an optional `.`, an optional exponent),
/// with optional leading and trailing ASCII white space, as SQLite's own
/// `sqlite3AtoF` reads it. Hexadecimal, `Infinity`, `NaN`, `1e` are text.
///
/// Such a bound is then a number, which sorts below every text value: a
/// numeric `start_time` keeps every row and a numeric `end_time` none.
pub(crate) fn sqlite_numeric(text: &str) -> bool {
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let bytes = text.as_bytes();
    let mut i = 0;
    let skip_digits = |i: &mut usize| {
        let start = *i;
        while bytes.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    while bytes.get(i).copied().is_some_and(is_space) {
        i += 1;
    }
    if matches!(bytes.get(i), Some(b'+' | b'-')) {
        i += 1;
    }
    let mut digits = skip_digits(&mut i);
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        digits += skip_digits(&mut i);
    }
    if digits == 0 {
        return false;
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if skip_digits(&mut i) == 0 {
            return false;
        }
    }
    while bytes.get(i).copied().is_some_and(is_space) {
        i += 1;
    }
    i == bytes.len()
}

fn term(token: &str) -> Option<SearchTerm> {
    match token.split_once(':') {
        Some((key, value)) => match LogColumn::from_key(key) {
            Some(column) => Some(SearchTerm::Equals {
                column,
                value: value.to_owned(),
            }),
            None => {
                let key: String = key
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                (!key.is_empty()).then(|| SearchTerm::JsonKey {
                    key,
                    value: value.to_owned(),
                })
            }
        },
        None => Some(SearchTerm::Text(token.to_owned())),
    }
}

/// Python's `shlex.split(text)` (POSIX mode, no comments), or
/// `text.split()` when that raises (unbalanced quote, trailing backslash).
///
/// Written here rather than taken from the `shlex` crate because that crate
/// follows the shell, not Python: it treats `#` at the start of a word as a
/// comment and `\r` as an ordinary byte, and DECNET's `search=#tag` must
/// search for `#tag`.
pub(crate) fn tokens(text: &str) -> Vec<String> {
    shlex_split(text).unwrap_or_else(|| {
        text.split(is_py_whitespace)
            .filter(|token| !token.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

/// Python's `str.isspace()`: Unicode `White_Space` (Rust's
/// `char::is_whitespace`) plus the separators U+001C..U+001F, which
/// `str.split()` also splits on.
fn is_py_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn shlex_split(text: &str) -> Option<Vec<String>> {
    #[derive(PartialEq)]
    enum State {
        Between,
        Word,
        Single,
        Double,
    }
    const WHITESPACE: [char; 4] = [' ', '\t', '\r', '\n'];
    let mut out = Vec::new();
    let mut word = String::new();
    let mut state = State::Between;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match state {
            State::Between | State::Word => match c {
                c if WHITESPACE.contains(&c) => {
                    if state == State::Word {
                        out.push(std::mem::take(&mut word));
                        state = State::Between;
                    }
                }
                '\\' => {
                    word.push(chars.next()?);
                    state = State::Word;
                }
                '\'' => state = State::Single,
                '"' => state = State::Double,
                c => {
                    word.push(c);
                    state = State::Word;
                }
            },
            State::Single => match c {
                '\'' => state = State::Word,
                c => word.push(c),
            },
            State::Double => match c {
                '"' => state = State::Word,
                '\\' => {
                    let next = chars.next()?;
                    // Inside double quotes a backslash escapes only `"` and
                    // itself; otherwise it stays.
                    if next != '"' && next != '\\' {
                        word.push('\\');
                    }
                    word.push(next);
                }
                c => word.push(c),
            },
        }
    }
    match state {
        State::Single | State::Double => None,
        State::Word => {
            out.push(word);
            Some(out)
        }
        State::Between => Some(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<String> {
        tokens(text)
    }

    #[test]
    fn shell_style_tokens_like_python_shlex() {
        assert_eq!(split("a b  c"), ["a", "b", "c"]);
        assert_eq!(
            split(r#"user:"John Smith" ssh"#),
            ["user:John Smith", "ssh"]
        );
        assert_eq!(split(r"a\ b c"), ["a b", "c"]);
        assert_eq!(split(r#"a"b c"d"#), ["ab cd"]);
        assert_eq!(split(r#"a "" b"#), ["a", "", "b"]);
        assert_eq!(split("'it''s'"), ["its"]);
        assert_eq!(split(r#""a\"b\\c\d""#), [r#"a"b\c\d"#]);
        assert_eq!(split("#tag x"), ["#tag", "x"]);
        assert!(split("   ").is_empty());
    }

    #[test]
    fn unbalanced_quotes_fall_back_to_whitespace() {
        assert_eq!(split(r#"say "hello world"#), ["say", "\"hello", "world"]);
        assert_eq!(split(r"trailing \"), ["trailing", "\\"]);
        // Python's str.split() also splits on U+001C..U+001F.
        assert_eq!(split("'a\u{1c}b\u{1f}c"), ["'a", "b", "c"]);
    }

    #[test]
    fn numeric_bounds_follow_sqlite_affinity() {
        for numeric in [
            "2026", " 2026 ", "+1.5", "-7", "5.", ".5", "1e3", "1E-3", "\t9\r\n",
        ] {
            assert!(sqlite_numeric(numeric), "{numeric:?}");
        }
        for text in [
            "", " ", ".", "+", "1e", "1e+", "0x10", "Infinity", "inf", "NaN", "2026-06", "1_000",
            "12:00", "1.2.3", "\u{a0}1",
        ] {
            assert!(!sqlite_numeric(text), "{text:?}");
        }
    }

    #[test]
    fn terms() {
        let filter = LogFilter::new(
            Some(
                r#"decky:web01 service: event:login attacker-ip:1.2.3.4 user.name:root :x ssh "a b""#,
            ),
            Some(""),
            Some("2026-06-20 12:00:00"),
        );
        assert_eq!(
            filter.terms,
            vec![
                SearchTerm::Equals {
                    column: LogColumn::Decky,
                    value: "web01".into()
                },
                SearchTerm::Equals {
                    column: LogColumn::Service,
                    value: String::new()
                },
                SearchTerm::Equals {
                    column: LogColumn::EventType,
                    value: "login".into()
                },
                SearchTerm::Equals {
                    column: LogColumn::AttackerIp,
                    value: "1.2.3.4".into()
                },
                SearchTerm::JsonKey {
                    key: "username".into(),
                    value: "root".into()
                },
                SearchTerm::Text("ssh".into()),
                SearchTerm::Text("a b".into()),
            ]
        );
        assert_eq!(filter.start_time, None);
        assert_eq!(filter.end_time.as_deref(), Some("2026-06-20 12:00:00"));
        assert!(LogFilter::new(Some(""), None, None).is_empty());
        assert!(LogFilter::new(Some("%:x"), None, None).is_empty());
        assert_eq!(
            LogFilter::new(Some("Decky:a"), None, None).terms,
            vec![SearchTerm::JsonKey {
                key: "Decky".into(),
                value: "a".into()
            }]
        );
        assert_eq!(
            LogFilter::new(Some("port:22:x"), None, None).terms,
            vec![SearchTerm::JsonKey {
                key: "port".into(),
                value: "22:x".into()
            }]
        );
    }
}
