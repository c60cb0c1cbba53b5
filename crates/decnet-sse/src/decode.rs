//! The decoder: the WHATWG HTML "event stream interpretation", fed in chunks of any size.
//!
//! Spec: <https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>.
//!
//! Lines are split on bytes before they are decoded as UTF-8.
//! That gives the same result as decoding the whole stream first, as the spec does,
//! because CR, LF, `:` and space are ASCII and never part of a multi-byte sequence,
//! and an invalid sequence is replaced (with U+FFFD, per "maximal subpart", like the spec's UTF-8 decode) up to the next ASCII byte.

use std::borrow::Cow;

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// One thing the decoder found in the stream, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A dispatched event: a blank line ended a block that had at least one `data` field.
    Event(Event),
    /// A comment line (`:` first), with the text after the colon, less one leading space if there is one.
    ///
    /// Browsers ignore comments; they are reported here so tests and tools can see keepalives.
    Comment(String),
    /// A valid `retry` field: the new reconnection time in milliseconds.
    ///
    /// Per the spec this takes effect at once, not when an event is dispatched,
    /// so it is reported as its own item rather than as part of an [`Event`]
    /// (the service sends `retry:` in a frame with no data, which dispatches nothing).
    Retry(u64),
}

/// A dispatched event, as a browser's `EventSource` would deliver it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Event {
    /// The event type: the last `event` field of the block, or `"message"` when there was none or it was empty.
    pub event: String,
    /// The `data` field values of the block joined with LF (no trailing LF).
    pub data: String,
    /// The last event id at dispatch time.
    ///
    /// It persists across events until an `id` field changes it, and is `""` when none was ever set
    /// (or the last `id` field was empty).
    pub id: String,
}

/// What [`Decoder::finish`] discarded because the stream ended mid-event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Truncated {
    /// Bytes of a last line that had no line ending (dropped unprocessed).
    pub partial_line: usize,
    /// Whether `data` had been received that no blank line dispatched.
    pub undispatched_data: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bom {
    /// At stream start: this many bytes of the BOM matched so far, held back until we know.
    Pending(usize),
    /// Past the start: a BOM was stripped, or there was none.
    Done,
}

/// An incremental event stream parser that owns no I/O.
///
/// Feed it byte chunks as they arrive; chunk boundaries may fall anywhere,
/// including inside a CRLF, inside a UTF-8 sequence or inside the leading BOM.
///
/// ```
/// use decnet_sse::{Decoded, Decoder, Event};
///
/// let mut decoder = Decoder::new();
/// assert_eq!(decoder.feed(b": keepalive\n\nid: 7\nevent: obs"), vec![Decoded::Comment("keepalive".into())]);
/// let items = decoder.feed(b"ervation\ndata: {}\r\n\r\n");
/// assert_eq!(items, vec![Decoded::Event(Event { event: "observation".into(), data: "{}".into(), id: "7".into() })]);
/// assert_eq!(decoder.finish(), None);
/// ```
///
/// Per the spec it never fails: unknown fields, a malformed `retry` and an `id` containing NUL are ignored,
/// and invalid UTF-8 is replaced with U+FFFD.
/// An unterminated line is buffered whole until its line ending arrives,
/// so memory grows with the longest line; it is meant for tests and tools, not for untrusted peers without a size limit of their own.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Bytes of the current line that have no line ending yet.
    line: Vec<u8>,
    bom: Bom,
    /// The previous chunk ended with CR, so an LF starting the next chunk belongs to it.
    after_cr: bool,
    data: String,
    event_type: String,
    id_buffer: String,
    last_event_id: String,
    retry: Option<u64>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder at the start of a stream.
    #[must_use]
    pub fn new() -> Self {
        Decoder {
            line: Vec::new(),
            bom: Bom::Pending(0),
            after_cr: false,
            data: String::new(),
            event_type: String::new(),
            id_buffer: String::new(),
            last_event_id: String::new(),
            retry: None,
        }
    }

    /// Parses the next chunk and returns what it completed, in stream order.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Decoded> {
        let mut out = Vec::new();
        self.feed_into(chunk, &mut out);
        out
    }

    /// Like [`Decoder::feed`], appending to `out` instead of returning a new `Vec`.
    pub fn feed_into(&mut self, chunk: &[u8], out: &mut Vec<Decoded>) {
        let mut chunk = self.skip_bom(chunk);
        if chunk.is_empty() {
            return;
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, tail) = chunk.split_at(end);
            if self.line.is_empty() {
                self.process_line(head, out);
            } else {
                self.line.extend_from_slice(head);
                let mut line = std::mem::take(&mut self.line);
                self.process_line(&line, out);
                line.clear();
                self.line = line;
            }
            chunk = if tail.starts_with(b"\r\n") {
                tail.get(2..).unwrap_or_default()
            } else {
                if tail == b"\r" {
                    self.after_cr = true;
                }
                tail.get(1..).unwrap_or_default()
            };
        }
        self.line.extend_from_slice(chunk);
    }

    /// The last event id string: what a reconnecting client sends as `Last-Event-ID`.
    ///
    /// Per the spec it takes the value of the `id` field at each blank line, whether or not an event was dispatched.
    #[must_use]
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The reconnection time from the last valid `retry` field, if any.
    #[must_use]
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// Ends the stream.
    ///
    /// Per the spec, an event that no blank line terminated is not dispatched, and an unterminated last line is dropped.
    /// Returns what was discarded, or `None` when the stream ended cleanly between events.
    #[must_use]
    pub fn finish(self) -> Option<Truncated> {
        let held_bom = match self.bom {
            Bom::Pending(matched) => matched,
            Bom::Done => 0,
        };
        let truncated = Truncated {
            partial_line: self.line.len() + held_bom,
            undispatched_data: !self.data.is_empty(),
        };
        (truncated.partial_line != 0 || truncated.undispatched_data).then_some(truncated)
    }

    /// Strips a leading UTF-8 BOM, which may arrive split across chunks.
    fn skip_bom<'c>(&mut self, mut chunk: &'c [u8]) -> &'c [u8] {
        let Bom::Pending(mut matched) = self.bom else {
            return chunk;
        };
        while let Some((&byte, rest)) = chunk.split_first() {
            if BOM.get(matched) != Some(&byte) {
                // Not a BOM after all: the held bytes are the start of the first line.
                self.line
                    .extend_from_slice(BOM.get(..matched).unwrap_or_default());
                self.bom = Bom::Done;
                return chunk;
            }
            matched += 1;
            chunk = rest;
            if matched == BOM.len() {
                self.bom = Bom::Done;
                return chunk;
            }
        }
        self.bom = Bom::Pending(matched);
        chunk
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<Decoded>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => {
                let text = strip_one_space(line.get(1..).unwrap_or_default());
                out.push(Decoded::Comment(String::from_utf8_lossy(text).into_owned()));
                return;
            }
            Some(colon) => {
                let (name, rest) = line.split_at(colon);
                (name, strip_one_space(rest.get(1..).unwrap_or_default()))
            }
            None => (line, &[][..]),
        };
        match name {
            b"event" => set(&mut self.event_type, String::from_utf8_lossy(value)),
            b"data" => {
                self.data.push_str(&String::from_utf8_lossy(value));
                self.data.push('\n');
            }
            // An id containing NUL is ignored like an unknown field.
            b"id" if !value.contains(&0) => {
                set(&mut self.id_buffer, String::from_utf8_lossy(value));
            }
            b"retry" => {
                if let Some(ms) = parse_digits(value) {
                    self.retry = Some(ms);
                    out.push(Decoded::Retry(ms));
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Decoded>) {
        if self.last_event_id != self.id_buffer {
            self.last_event_id.clone_from(&self.id_buffer);
        }
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        if self.data.ends_with('\n') {
            self.data.pop();
        }
        let event = if self.event_type.is_empty() {
            "message".to_owned()
        } else {
            std::mem::take(&mut self.event_type)
        };
        out.push(Decoded::Event(Event {
            event,
            data: std::mem::take(&mut self.data),
            id: self.id_buffer.clone(),
        }));
    }
}

/// Decodes a complete stream in one go; an unterminated trailing event is discarded, as at EOF.
///
/// ```
/// use decnet_sse::{decode, Decoded};
///
/// assert_eq!(decode(b"retry: 3000\n\n: keepalive\n\n"), vec![Decoded::Retry(3000), Decoded::Comment("keepalive".into())]);
/// ```
#[must_use]
pub fn decode(input: &[u8]) -> Vec<Decoded> {
    let mut decoder = Decoder::new();
    let items = decoder.feed(input);
    let _discarded = decoder.finish();
    items
}

fn set(target: &mut String, value: Cow<'_, str>) {
    target.clear();
    target.push_str(&value);
}

fn strip_one_space(value: &[u8]) -> &[u8] {
    value.strip_prefix(b" ").unwrap_or(value)
}

/// The spec's "only ASCII digits, interpreted in base ten"; `None` when empty, not all digits, or over `u64::MAX`.
fn parse_digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        let digit = b.is_ascii_digit().then(|| u64::from(b - b'0'))?;
        n.checked_mul(10)?.checked_add(digit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str, id: &str) -> Decoded {
        Decoded::Event(Event {
            event: event.to_owned(),
            data: data.to_owned(),
            id: id.to_owned(),
        })
    }

    fn comment(text: &str) -> Decoded {
        Decoded::Comment(text.to_owned())
    }

    fn feed_all<'c>(chunks: impl IntoIterator<Item = &'c [u8]>) -> Vec<Decoded> {
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.feed_into(chunk, &mut out);
        }
        out
    }

    /// Decodes `input` whole, byte at a time, and split at every single position
    /// (with an empty chunk at the split, too), and expects `expected` every time.
    fn check(input: &[u8], expected: &[Decoded]) {
        assert_eq!(decode(input), expected, "whole input {input:?}");
        assert_eq!(
            feed_all(input.chunks(1)),
            expected,
            "byte at a time {input:?}"
        );
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            assert_eq!(
                feed_all([a, &[][..], b]),
                expected,
                "split at {at} {input:?}"
            );
        }
    }

    #[test]
    fn dispatch_on_blank_line() {
        check(b"data: x\n\n", &[ev("message", "x", "")]);
        check(b"data: x\n", &[]);
        check(b"data: x", &[]);
        check(
            b"data: a\n\ndata: b\n\n",
            &[ev("message", "a", ""), ev("message", "b", "")],
        );
    }

    #[test]
    fn line_endings() {
        let expected = [ev("e", "a\nb", "")];
        check(b"event: e\ndata: a\ndata: b\n\n", &expected);
        check(b"event: e\rdata: a\rdata: b\r\r", &expected);
        check(b"event: e\r\ndata: a\r\ndata: b\r\n\r\n", &expected);
        check(b"event: e\r\ndata: a\rdata: b\n\r\n", &expected);
        // LF CR is two line endings, so a blank line.
        check(
            b"data: a\n\rdata: b\n\n",
            &[ev("message", "a", ""), ev("message", "b", "")],
        );
    }

    #[test]
    fn bom_stripped_once_at_start() {
        check(b"\xEF\xBB\xBFdata: x\n\n", &[ev("message", "x", "")]);
        // A second BOM is part of the first line, so the field name is not `data`.
        check(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n", &[]);
        // Not at stream start: kept, and decoded as U+FEFF.
        check(
            b"data: \xEF\xBB\xBFx\n\n",
            &[ev("message", "\u{FEFF}x", "")],
        );
        // A partial BOM is not stripped.
        check(b"\xEF\xBBdata: x\n\n", &[]);
        check(b"\xEF\xBB:c\n", &[]);
        check(b"\xEF\n:c\n", &[comment("c")]);
    }

    #[test]
    fn comments() {
        check(b": keepalive\n\n", &[comment("keepalive")]);
        check(b":x\n", &[comment("x")]);
        check(b":  two\n", &[comment(" two")]);
        check(b":\n", &[comment("")]);
        check(
            b"data: a\n: c\ndata: b\n\n",
            &[comment("c"), ev("message", "a\nb", "")],
        );
    }

    #[test]
    fn field_without_colon_has_empty_value() {
        check(b"data\n\n", &[ev("message", "", "")]);
        check(b"data\ndata\n\n", &[ev("message", "\n", "")]);
        check(b"event\ndata: x\n\n", &[ev("message", "x", "")]);
        check(
            b"id: 1\ndata: a\n\nid\ndata: b\n\n",
            &[ev("message", "a", "1"), ev("message", "b", "")],
        );
    }

    #[test]
    fn one_leading_space_stripped() {
        check(b"data:x\n\n", &[ev("message", "x", "")]);
        check(b"data: x\n\n", &[ev("message", "x", "")]);
        check(b"data:  x\n\n", &[ev("message", " x", "")]);
        check(b"data:\tx\n\n", &[ev("message", "\tx", "")]);
        check(b"data: x \n\n", &[ev("message", "x ", "")]);
        check(b"data: a:b\n\n", &[ev("message", "a:b", "")]);
        check(b"event:  e\ndata\n\n", &[ev(" e", "", "")]);
    }

    #[test]
    fn field_names_are_exact() {
        check(b"Data: x\n\n", &[]);
        check(b"data : x\n\n", &[]);
        check(b" data: x\n\n", &[]);
        check(b"foo: bar\ndata: x\n\n", &[ev("message", "x", "")]);
    }

    #[test]
    fn event_type_resets_after_dispatch() {
        check(
            b"event: a\ndata: 1\n\ndata: 2\n\n",
            &[ev("a", "1", ""), ev("message", "2", "")],
        );
        check(b"event: a\nevent: b\ndata: 1\n\n", &[ev("b", "1", "")]);
        check(b"event:\ndata: 1\n\n", &[ev("message", "1", "")]);
        // An event type without data is dropped by the blank line.
        check(b"event: a\n\ndata: 1\n\n", &[ev("message", "1", "")]);
    }

    #[test]
    fn empty_data_buffer_not_dispatched() {
        check(b"\n\n\n", &[]);
        check(b"event: a\n\n", &[]);
        check(b"id: 1\n\n", &[]);
        // `data:` with an empty value is not an empty buffer.
        check(b"data:\n\n", &[ev("message", "", "")]);
    }

    #[test]
    fn id_persists_and_resets() {
        check(
            b"id: 1\ndata: a\n\ndata: b\n\nid: 2\n\ndata: c\n\nid:\ndata: d\n\n",
            &[
                ev("message", "a", "1"),
                ev("message", "b", "1"),
                ev("message", "c", "2"),
                ev("message", "d", ""),
            ],
        );
    }

    #[test]
    fn id_containing_nul_ignored() {
        check(
            b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
            &[ev("message", "a", "1"), ev("message", "b", "1")],
        );
        check(b"id: \0\ndata: a\n\n", &[ev("message", "a", "")]);
    }

    #[test]
    fn last_event_id_updates_at_blank_line() {
        let mut decoder = Decoder::new();
        decoder.feed(b"id: 1\n");
        assert_eq!(decoder.last_event_id(), "");
        decoder.feed(b"\n");
        assert_eq!(decoder.last_event_id(), "1");
        decoder.feed(b"id: 2\ndata: x\n\n");
        assert_eq!(decoder.last_event_id(), "2");
    }

    #[test]
    fn retry_digits_only() {
        check(b"retry: 3000\n\n", &[Decoded::Retry(3000)]);
        check(b"retry:0\n", &[Decoded::Retry(0)]);
        check(
            b"retry: 18446744073709551615\n",
            &[Decoded::Retry(u64::MAX)],
        );
        for bad in [
            &b"retry: 18446744073709551616\n"[..],
            b"retry: -1\n",
            b"retry: +1\n",
            b"retry: 1.5\n",
            b"retry: 10 \n",
            b"retry:  10\n",
            b"retry: 1e3\n",
            b"retry: \xD9\xA1\n", // ARABIC-INDIC DIGIT ONE
            b"retry:\n",
            b"retry\n",
        ] {
            check(bad, &[]);
        }
        let mut decoder = Decoder::new();
        decoder.feed(b"retry: 10\nretry: x\n");
        assert_eq!(decoder.retry(), Some(10));
    }

    #[test]
    fn retry_in_event_block_reported_before_event() {
        check(
            b"retry: 5\ndata: x\n\n",
            &[Decoded::Retry(5), ev("message", "x", "")],
        );
    }

    #[test]
    fn crlf_split_across_chunks() {
        // One line ending, not two: no blank line, so no dispatch.
        assert_eq!(feed_all([&b"data: x\r"[..], b"\n"]), []);
        assert_eq!(
            feed_all([&b"data: x\r"[..], b"\ndata: y\r\n\r", b"\n"]),
            [ev("message", "x\ny", "")]
        );
        // A CR, then empty chunks, then LF: still one line ending.
        assert_eq!(feed_all([&b"data: x\r"[..], b"", b"", b"\n"]), []);
        // CR then CR is two line endings.
        assert_eq!(
            feed_all([&b"data: x\r"[..], b"\r"]),
            [ev("message", "x", "")]
        );
    }

    #[test]
    fn byte_at_a_time() {
        let input = "\u{FEFF}: hi\r\nid: é1\r\nevent: ü\r\ndata: 😀\r\ndata\r\n\r\nretry: 7\n\n";
        let expected = [comment("hi"), ev("ü", "😀\n", "é1"), Decoded::Retry(7)];
        check(input.as_bytes(), &expected);
    }

    #[test]
    fn invalid_utf8_replaced() {
        check(b"data: a\xFFb\n\n", &[ev("message", "a\u{FFFD}b", "")]);
        // A truncated sequence before the line ending is one replacement character.
        check(b"data: \xE2\x82\n\n", &[ev("message", "\u{FFFD}", "")]);
        check(b"data: \xE2\x82\xAC\n\n", &[ev("message", "€", "")]);
        check(b"id: \xC0\ndata\n\n", &[ev("message", "", "\u{FFFD}")]);
        check(b"event: \xF0\x9F\ndata\n\n", &[ev("\u{FFFD}", "", "")]);
        check(b":\xFF\n", &[comment("\u{FFFD}")]);
        // Surrogates encoded in UTF-8 are invalid: one replacement per byte.
        check(
            b"data: \xED\xA0\x80\n\n",
            &[ev("message", "\u{FFFD}\u{FFFD}\u{FFFD}", "")],
        );
    }

    #[test]
    fn nul_in_data_and_event_kept() {
        check(b"event: a\0\ndata: \0\n\n", &[ev("a\0", "\0", "")]);
    }

    #[test]
    fn finish_reports_truncation() {
        let mut decoder = Decoder::new();
        decoder.feed(b"data: x\n\n");
        assert_eq!(decoder.finish(), None);

        let mut decoder = Decoder::new();
        assert_eq!(decoder.feed(b"data: x\n"), []);
        assert_eq!(
            decoder.finish(),
            Some(Truncated {
                partial_line: 0,
                undispatched_data: true
            })
        );

        let mut decoder = Decoder::new();
        assert_eq!(decoder.feed(b"data: x\n\n: part"), [ev("message", "x", "")]);
        assert_eq!(
            decoder.finish(),
            Some(Truncated {
                partial_line: 6,
                undispatched_data: false
            })
        );

        let mut decoder = Decoder::new();
        decoder.feed(b"\xEF\xBB");
        assert_eq!(
            decoder.finish(),
            Some(Truncated {
                partial_line: 2,
                undispatched_data: false
            })
        );

        // A trailing CR has ended its line.
        let mut decoder = Decoder::new();
        decoder.feed(b": c\r");
        assert_eq!(decoder.finish(), None);
        assert_eq!(Decoder::new().finish(), None);
    }

    #[test]
    fn parse_digits_bounds() {
        assert_eq!(parse_digits(b""), None);
        assert_eq!(parse_digits(b"007"), Some(7));
        assert_eq!(parse_digits(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_digits(b"99999999999999999999"), None);
    }
}
