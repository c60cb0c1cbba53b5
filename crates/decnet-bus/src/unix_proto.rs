//! The frame codec of DECNET's UNIX-socket bus (the `unix` backend's wire).
//!
//! One frame is an ASCII header line `VERB args\n`, a 4-byte big-endian
//! body length that is always present (`00 00 00 00` for no body), and the
//! body. Limits: the header is at most [`MAX_HEADER_BYTES`] bytes including
//! its LF, the body at most [`MAX_BODY_BYTES`] bytes (inclusive). Verbs are
//! exactly [`Verb`]'s six, case-sensitive.
//!
//! Decoding follows DECNET's reader: the header ends at the first LF; any
//! trailing run of CR/LF bytes is stripped; the line must be ASCII and not
//! empty; it is split at the first space only (a tab does not separate the
//! verb), and the rest is trimmed of surrounding whitespace. An unknown verb
//! fails before the length is read; a length over the limit fails before the
//! body is read. Every malformed case is a [`FrameError`].
//!
//! [`FrameDecoder`] is incremental (feed it whatever the socket returned, in
//! any chunking), never panics on any input, and never asks the buffer to
//! grow beyond the frame being decoded: a header fails as soon as 4096 bytes
//! arrive without an LF, and the body's space is reserved only once its
//! length has been checked.
//!
//! ```
//! use bytes::BytesMut;
//! use decnet_bus::unix_proto::{FrameDecoder, Verb, encode};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bytes = encode(Verb::Sub, "attacker.>", b"")?;
//! assert_eq!(&bytes[..], b"SUB attacker.>\n\0\0\0\0");
//! let mut decoder = FrameDecoder::new();
//! let mut buf = BytesMut::from(&bytes[..]);
//! let frame = decoder.decode(&mut buf)?.ok_or("incomplete")?;
//! assert_eq!((frame.verb, frame.args.as_str()), (Verb::Sub, "attacker.>"));
//! # Ok(())
//! # }
//! ```

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

/// Largest header line, LF (and any CR) included.
pub const MAX_HEADER_BYTES: usize = 4096;
/// Largest body (inclusive): 1 MiB.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Size of the length prefix.
const LENGTH_BYTES: usize = 4;
/// Longest verb text kept in an [`FrameError::UnknownVerb`].
const MAX_REPORTED_VERB: usize = 32;

/// The six verbs of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `HELLO <client-name>`: optional greeting (client to broker).
    Hello,
    /// `PUB <topic>`: publish; body is a JSON object (client to broker).
    Pub,
    /// `SUB <pattern>`: subscribe (client to broker).
    Sub,
    /// `UNSUB <pattern>`: unsubscribe (client to broker).
    Unsub,
    /// `EVT <topic>`: an event; body is the envelope (broker to client).
    Evt,
    /// `BYE`: graceful close.
    Bye,
}

impl Verb {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Hello => "HELLO",
            Verb::Pub => "PUB",
            Verb::Sub => "SUB",
            Verb::Unsub => "UNSUB",
            Verb::Evt => "EVT",
            Verb::Bye => "BYE",
        }
    }

    /// The verb spelled exactly `text` (case-sensitive), if any.
    pub fn from_wire(text: &[u8]) -> Option<Verb> {
        Some(match text {
            b"HELLO" => Verb::Hello,
            b"PUB" => Verb::Pub,
            b"SUB" => Verb::Sub,
            b"UNSUB" => Verb::Unsub,
            b"EVT" => Verb::Evt,
            b"BYE" => Verb::Bye,
            _ => return None,
        })
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The verb.
    pub verb: Verb,
    /// Everything after the first space of the header, trimmed (ASCII).
    pub args: String,
    /// The raw body (possibly empty); never parsed by the codec.
    pub body: Bytes,
}

/// Why bytes received are not a valid frame. DECNET's broker closes the
/// connection on each of these; the `unix` backend drops the connection and
/// reconnects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// No LF within the first [`MAX_HEADER_BYTES`] bytes of a header.
    #[error("header line exceeds {max} bytes")]
    HeaderTooLong {
        /// The limit ([`MAX_HEADER_BYTES`]).
        max: usize,
    },
    /// The header line is empty once its trailing CR/LF run is stripped.
    #[error("empty header line")]
    EmptyHeader,
    /// The header line contains a byte outside ASCII.
    #[error("header line is not ASCII")]
    NonAsciiHeader,
    /// The verb is not one of the six (case-sensitive).
    #[error("unknown verb {0:?}")]
    UnknownVerb(String),
    /// The length prefix announces more than [`MAX_BODY_BYTES`].
    #[error("body length {len} exceeds the maximum of {max} bytes")]
    BodyTooLarge {
        /// The announced length.
        len: u32,
        /// The limit ([`MAX_BODY_BYTES`]).
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("connection closed in the middle of a frame ({part})")]
    Truncated {
        /// Which part was incomplete: `"header"`, `"length"` or `"body"`.
        part: &'static str,
    },
}

/// Why a frame cannot be written: DECNET's broker would close the
/// connection on (or its encoder refuses) each of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The arguments contain a CR or LF.
    #[error("frame arguments contain a line break")]
    LineBreakInArgs,
    /// The header would contain a byte outside ASCII.
    #[error("frame header is not ASCII")]
    NonAsciiHeader,
    /// The header would exceed [`MAX_HEADER_BYTES`].
    #[error("frame header of {len} bytes exceeds the maximum of {max} bytes")]
    HeaderTooLong {
        /// Size of the header line, LF included.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body exceeds [`MAX_BODY_BYTES`].
    #[error("frame body of {len} bytes exceeds the maximum of {max} bytes")]
    BodyTooLarge {
        /// Size of the body.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A PUB body that is not a JSON object (DECNET's broker closes the
    /// connection on one).
    #[error("publish body is not a JSON object: {0}")]
    BodyNotObject(String),
}

/// Whether `byte` is whitespace for Python's `str.strip()` (ASCII range),
/// which DECNET applies to the header arguments.
fn is_py_space(byte: u8) -> bool {
    matches!(
        byte,
        b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0x1c..=0x1f
    )
}

fn trim_py(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes {
        if !is_py_space(*first) {
            break;
        }
        bytes = rest;
    }
    while let [rest @ .., last] = bytes {
        if !is_py_space(*last) {
            break;
        }
        bytes = rest;
    }
    bytes
}

/// Encode one frame: `"<VERB> <args>"` with trailing whitespace stripped,
/// LF, the 4-byte big-endian body length, the body.
///
/// # Errors
///
/// [`EncodeError`] when `args` holds a CR or LF, the header is not ASCII or
/// longer than [`MAX_HEADER_BYTES`], or the body is larger than
/// [`MAX_BODY_BYTES`].
pub fn encode(verb: Verb, args: &str, body: &[u8]) -> Result<Bytes, EncodeError> {
    if args.contains(['\r', '\n']) {
        return Err(EncodeError::LineBreakInArgs);
    }
    if !args.is_ascii() {
        return Err(EncodeError::NonAsciiHeader);
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(EncodeError::BodyTooLarge {
            len: body.len(),
            max: MAX_BODY_BYTES,
        });
    }
    let mut header = Vec::with_capacity(verb.as_str().len() + 1 + args.len() + 1);
    header.extend_from_slice(verb.as_str().as_bytes());
    header.push(b' ');
    header.extend_from_slice(args.as_bytes());
    while header.last().is_some_and(|b| is_py_space(*b)) {
        header.pop();
    }
    header.push(b'\n');
    if header.len() > MAX_HEADER_BYTES {
        return Err(EncodeError::HeaderTooLong {
            len: header.len(),
            max: MAX_HEADER_BYTES,
        });
    }
    // Checked above: the length fits in 32 bits.
    let len = u32::try_from(body.len()).map_err(|_| EncodeError::BodyTooLarge {
        len: body.len(),
        max: MAX_BODY_BYTES,
    })?;
    let mut out = BytesMut::with_capacity(header.len() + LENGTH_BYTES + body.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(out.freeze())
}

/// Where the decoder is inside the current frame.
#[derive(Debug)]
enum State {
    /// Looking for the header's LF; `scanned` bytes hold none.
    Header { scanned: usize },
    /// Header parsed, waiting for the 4 length bytes.
    Length { verb: Verb, args: String },
    /// Length parsed, waiting for `len` body bytes.
    Body {
        verb: Verb,
        args: String,
        len: usize,
    },
}

/// An incremental frame decoder over a caller-owned [`BytesMut`].
///
/// Append received bytes to the buffer (e.g. with
/// `AsyncReadExt::read_buf`) and call [`FrameDecoder::decode`] until it
/// returns `Ok(None)`; decoded bytes are removed from the buffer. After an
/// error the decoder stays failed (the connection must be dropped). At end
/// of stream, [`FrameDecoder::finish`] tells a clean close from a truncated
/// frame.
#[derive(Debug)]
pub struct FrameDecoder {
    state: State,
    failed: Option<FrameError>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> FrameDecoder {
        FrameDecoder {
            state: State::Header { scanned: 0 },
            failed: None,
        }
    }

    /// Decode the next complete frame from the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds no complete frame yet (the
    /// partial frame stays in `buf`). Reserves space in `buf` for a body
    /// only after its length passed the limit check.
    ///
    /// # Errors
    ///
    /// The [`FrameError`] of the first malformed frame; every later call
    /// returns it again.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        match self.step(buf) {
            Ok(frame) => Ok(frame),
            Err(err) => {
                self.failed = Some(err.clone());
                Err(err)
            }
        }
    }

    fn step(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        loop {
            match &mut self.state {
                State::Header { scanned } => {
                    let limit = buf.len().min(MAX_HEADER_BYTES);
                    let start = (*scanned).min(limit);
                    let Some(offset) = buf[start..limit].iter().position(|b| *b == b'\n') else {
                        if buf.len() >= MAX_HEADER_BYTES {
                            return Err(FrameError::HeaderTooLong {
                                max: MAX_HEADER_BYTES,
                            });
                        }
                        *scanned = limit;
                        return Ok(None);
                    };
                    let line_len = start + offset + 1;
                    let (verb, args) = parse_header(&buf[..line_len])?;
                    buf.advance(line_len);
                    self.state = State::Length { verb, args };
                }
                State::Length { verb, args } => {
                    let Some(prefix) = buf.get(..LENGTH_BYTES) else {
                        return Ok(None);
                    };
                    let mut len_bytes = [0u8; LENGTH_BYTES];
                    len_bytes.copy_from_slice(prefix);
                    let len = u32::from_be_bytes(len_bytes);
                    let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
                    if len_usize > MAX_BODY_BYTES {
                        return Err(FrameError::BodyTooLarge {
                            len,
                            max: MAX_BODY_BYTES,
                        });
                    }
                    buf.advance(LENGTH_BYTES);
                    let verb = *verb;
                    let args = std::mem::take(args);
                    self.state = State::Body {
                        verb,
                        args,
                        len: len_usize,
                    };
                }
                State::Body { verb, args, len } => {
                    if buf.len() < *len {
                        // At most MAX_BODY_BYTES: the length was checked.
                        buf.reserve(*len - buf.len());
                        return Ok(None);
                    }
                    let frame = Frame {
                        verb: *verb,
                        args: std::mem::take(args),
                        body: buf.split_to(*len).freeze(),
                    };
                    self.state = State::Header { scanned: 0 };
                    return Ok(Some(frame));
                }
            }
        }
    }

    /// Check the end of the stream: `Ok` when it ended between frames.
    ///
    /// # Errors
    ///
    /// [`FrameError::Truncated`] when `buf` holds the start of a frame or a
    /// frame's header was already read; a failed decoder's error.
    pub fn finish(&self, buf: &BytesMut) -> Result<(), FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let part = match &self.state {
            State::Header { .. } if buf.is_empty() => return Ok(()),
            State::Header { .. } => "header",
            State::Length { .. } => "length",
            State::Body { .. } => "body",
        };
        Err(FrameError::Truncated { part })
    }
}

/// Parse one header line (LF included) into verb and trimmed args.
fn parse_header(line: &[u8]) -> Result<(Verb, String), FrameError> {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\r' | b'\n') {
        end -= 1;
    }
    let line = &line[..end];
    if !line.is_ascii() {
        return Err(FrameError::NonAsciiHeader);
    }
    if line.is_empty() {
        return Err(FrameError::EmptyHeader);
    }
    let (verb, rest) = match line.iter().position(|b| *b == b' ') {
        Some(space) => (&line[..space], &line[space + 1..]),
        None => (line, &[][..]),
    };
    let Some(verb) = Verb::from_wire(verb) else {
        let shown = &verb[..verb.len().min(MAX_REPORTED_VERB)];
        return Err(FrameError::UnknownVerb(
            String::from_utf8_lossy(shown).into_owned(),
        ));
    };
    // ASCII was checked, so this is valid UTF-8.
    let args = String::from_utf8_lossy(trim_py(rest)).into_owned();
    Ok((verb, args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    /// The frames of DECNET.md section 1.13 (testdata/decnet_bus_frames.json).
    fn vectors() -> Vec<Value> {
        let text = include_str!("../../../testdata/decnet_bus_frames.json");
        let doc: Value = serde_json::from_str(text).unwrap_or_default();
        let frames = doc["frames"].as_array().cloned().unwrap_or_default();
        assert_eq!(frames.len(), 5, "vectors file changed shape");
        frames
    }

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or_default())
            .collect()
    }

    fn verb_of(name: &str) -> Verb {
        Verb::from_wire(name.as_bytes()).unwrap_or_else(|| panic!("verb {name}"))
    }

    /// Decode everything in `bytes`, fed in chunks of `chunk` bytes.
    fn decode_all(bytes: &[u8], chunk: usize) -> (Vec<Frame>, Result<(), FrameError>) {
        let mut decoder = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break,
                    Err(err) => return (frames, Err(err)),
                }
            }
        }
        let end = decoder.finish(&buf);
        (frames, end)
    }

    fn check_err(bytes: &[u8], expected: FrameError) {
        let (_, res) = decode_all(bytes, bytes.len());
        assert_eq!(
            res,
            Err(expected.clone()),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
        let (_, res) = decode_all(bytes, 1);
        assert_eq!(res, Err(expected), "byte by byte");
    }

    fn check_frame(bytes: &[u8], verb: Verb, args: &str, body: &[u8]) {
        for chunk in [bytes.len(), 1, 3] {
            let (frames, end) = decode_all(bytes, chunk);
            assert_eq!(end, Ok(()));
            assert_eq!(frames.len(), 1);
            assert_eq!(frames[0].verb, verb);
            assert_eq!(frames[0].args, args);
            assert_eq!(&frames[0].body[..], body);
        }
    }

    #[test]
    fn decodes_the_documented_frames() {
        for vector in vectors() {
            let bytes = unhex(vector["hex"].as_str().unwrap_or_default());
            let verb = verb_of(vector["verb"].as_str().unwrap_or_default());
            let args = vector["args"].as_str().unwrap_or_default();
            let body = vector["body"].as_str().unwrap_or_default();
            check_frame(&bytes, verb, args, body.as_bytes());
        }
    }

    #[test]
    fn encodes_the_documented_frames() {
        for vector in vectors() {
            let bytes = unhex(vector["hex"].as_str().unwrap_or_default());
            let verb = verb_of(vector["verb"].as_str().unwrap_or_default());
            let args = vector["args"].as_str().unwrap_or_default();
            let body = vector["body"].as_str().unwrap_or_default();
            let encoded = encode(verb, args, body.as_bytes());
            assert_eq!(
                encoded.as_deref().ok(),
                Some(&bytes[..]),
                "{}",
                vector["name"]
            );
        }
    }

    #[test]
    fn several_frames_in_one_buffer() {
        let mut bytes = Vec::new();
        for vector in vectors() {
            bytes.extend(unhex(vector["hex"].as_str().unwrap_or_default()));
        }
        for chunk in [1, 2, 7, 64, bytes.len()] {
            let (frames, end) = decode_all(&bytes, chunk);
            assert_eq!(end, Ok(()));
            let verbs: Vec<Verb> = frames.iter().map(|f| f.verb).collect();
            assert_eq!(
                verbs,
                [Verb::Pub, Verb::Evt, Verb::Hello, Verb::Sub, Verb::Bye]
            );
        }
    }

    #[test]
    fn header_parsing_rules() {
        // Trailing CR/LF run stripped; rest trimmed; split at the first space only.
        check_frame(b"PUB a.b\r\n\0\0\0\0", Verb::Pub, "a.b", b"");
        check_frame(b"PUB   a.b  \n\0\0\0\0", Verb::Pub, "a.b", b"");
        check_frame(b"HELLO my name\n\0\0\0\0", Verb::Hello, "my name", b"");
        check_frame(b"PUB a\rb\n\0\0\0\0", Verb::Pub, "a\rb", b"");
        check_frame(b"BYE\n\0\0\0\0", Verb::Bye, "", b"");
        check_frame(b"SUB\n\0\0\0\0", Verb::Sub, "", b"");
        check_frame(b"SUB \t\x1f\n\0\0\0\0", Verb::Sub, "", b"");
        // The body is raw bytes, never parsed here.
        check_frame(b"SUB x\n\0\0\0\x03abc", Verb::Sub, "x", b"abc");
    }

    #[test]
    fn malformed_headers() {
        check_err(b"\n\0\0\0\0", FrameError::EmptyHeader);
        check_err(b"\r\r\n\0\0\0\0", FrameError::EmptyHeader);
        check_err(b"pub a\n\0\0\0\0", FrameError::UnknownVerb("pub".into()));
        check_err(
            b"PUB\ta\n\0\0\0\0",
            FrameError::UnknownVerb("PUB\ta".into()),
        );
        check_err(b" PUB a\n\0\0\0\0", FrameError::UnknownVerb(String::new()));
        check_err(b"PUBLISH a\n", FrameError::UnknownVerb("PUBLISH".into()));
        check_err("PUB caf\u{e9}\n".as_bytes(), FrameError::NonAsciiHeader);
        check_err(b"\xff\n", FrameError::NonAsciiHeader);
        // Unknown verb fails before the length is read.
        let (_, res) = decode_all(b"NOPE\n", 5);
        assert_eq!(res, Err(FrameError::UnknownVerb("NOPE".into())));
    }

    #[test]
    fn header_length_limit() {
        // 4096 bytes including the LF is fine...
        let mut ok = b"SUB ".to_vec();
        ok.resize(MAX_HEADER_BYTES - 1, b'a');
        ok.push(b'\n');
        ok.extend_from_slice(&[0, 0, 0, 0]);
        let (frames, end) = decode_all(&ok, 1000);
        assert_eq!((frames.len(), end), (1, Ok(())));
        // ...4097 is not.
        let mut long = b"SUB ".to_vec();
        long.resize(MAX_HEADER_BYTES, b'a');
        long.push(b'\n');
        check_err(
            &long,
            FrameError::HeaderTooLong {
                max: MAX_HEADER_BYTES,
            },
        );
        // Fails as soon as 4096 bytes hold no LF, without waiting for more.
        let mut decoder = FrameDecoder::new();
        let mut buf = BytesMut::from(&vec![b'a'; MAX_HEADER_BYTES][..]);
        assert!(matches!(
            decoder.decode(&mut buf),
            Err(FrameError::HeaderTooLong { .. })
        ));
        let mut decoder = FrameDecoder::new();
        let mut buf = BytesMut::from(&vec![b'a'; MAX_HEADER_BYTES - 1][..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
    }

    #[test]
    fn body_length_limit_is_inclusive() {
        let mut ok = b"EVT a\n".to_vec();
        ok.extend_from_slice(&u32::try_from(MAX_BODY_BYTES).unwrap_or(0).to_be_bytes());
        ok.resize(ok.len() + MAX_BODY_BYTES, b'x');
        let (frames, end) = decode_all(&ok, 64 * 1024);
        assert_eq!((frames.len(), end), (1, Ok(())));
        assert_eq!(frames[0].body.len(), MAX_BODY_BYTES);
        let too_big = u32::try_from(MAX_BODY_BYTES + 1).unwrap_or(0);
        let mut bad = b"EVT a\n".to_vec();
        bad.extend_from_slice(&too_big.to_be_bytes());
        check_err(
            &bad,
            FrameError::BodyTooLarge {
                len: too_big,
                max: MAX_BODY_BYTES,
            },
        );
        let mut huge = b"EVT a\n".to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut decoder = FrameDecoder::new();
        let mut buf = BytesMut::from(&huge[..]);
        assert!(decoder.decode(&mut buf).is_err());
        assert!(buf.capacity() < 64 * 1024, "reserved {}", buf.capacity());
    }

    #[test]
    fn truncated_streams() {
        let check = |bytes: &[u8], part: &'static str| {
            let (frames, end) = decode_all(bytes, 1);
            assert!(frames.is_empty());
            assert_eq!(end, Err(FrameError::Truncated { part }), "{bytes:?}");
        };
        check(b"PUB a", "header");
        check(b"PUB a\n\0\0", "length");
        check(b"PUB a\n\0\0\0\x05abc", "body");
        let (frames, end) = decode_all(b"", 1);
        assert!(frames.is_empty() && end.is_ok());
    }

    #[test]
    fn a_failed_decoder_stays_failed() {
        let mut decoder = FrameDecoder::new();
        let mut buf = BytesMut::from(&b"XX\nBYE\n\0\0\0\0"[..]);
        assert!(decoder.decode(&mut buf).is_err());
        assert!(decoder.decode(&mut buf).is_err());
        assert!(decoder.finish(&buf).is_err());
    }

    #[test]
    fn encoder_refusals() {
        assert_eq!(
            encode(Verb::Pub, "a\nb", b""),
            Err(EncodeError::LineBreakInArgs)
        );
        assert_eq!(
            encode(Verb::Pub, "a\rb", b""),
            Err(EncodeError::LineBreakInArgs)
        );
        assert_eq!(
            encode(Verb::Sub, "caf\u{e9}", b""),
            Err(EncodeError::NonAsciiHeader)
        );
        let long = "a".repeat(MAX_HEADER_BYTES - 4);
        assert_eq!(
            encode(Verb::Sub, &long, b""),
            Err(EncodeError::HeaderTooLong {
                len: MAX_HEADER_BYTES + 1,
                max: MAX_HEADER_BYTES
            })
        );
        assert!(encode(Verb::Sub, &long[1..], b"").is_ok());
        let body = vec![b'x'; MAX_BODY_BYTES + 1];
        assert!(matches!(
            encode(Verb::Pub, "a", &body),
            Err(EncodeError::BodyTooLarge { .. })
        ));
        assert!(encode(Verb::Pub, "a", &body[1..]).is_ok());
        // Trailing whitespace of the header is stripped, as DECNET's encoder does.
        assert_eq!(
            encode(Verb::Bye, "", b"").ok().as_deref(),
            Some(&b"BYE\n\0\0\0\0"[..])
        );
        assert_eq!(
            encode(Verb::Hello, "x  ", b"").ok().as_deref(),
            Some(&b"HELLO x\n\0\0\0\0"[..])
        );
    }

    fn arb_frame() -> impl Strategy<Value = (Verb, String, Vec<u8>)> {
        let verb = prop::sample::select(vec![
            Verb::Hello,
            Verb::Pub,
            Verb::Sub,
            Verb::Unsub,
            Verb::Evt,
            Verb::Bye,
        ]);
        // Printable ASCII args without leading/trailing whitespace (those
        // are trimmed by design), bodies of any bytes.
        let args = "[!-~]{0,2}|[!-~][ -~]{0,40}[!-~]";
        let body = prop::collection::vec(any::<u8>(), 0..300);
        (verb, args, body)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Random bytes in random chunks: no panic, and the buffer never
        /// grows past a frame's limits.
        #[test]
        fn random_bytes_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..6000),
            chunks in prop::collection::vec(1usize..600, 1..20),
        ) {
            let mut decoder = FrameDecoder::new();
            let mut buf = BytesMut::new();
            let mut rest = &bytes[..];
            let mut sizes = chunks.iter().cycle();
            while !rest.is_empty() {
                let n = sizes.next().copied().unwrap_or(1).min(rest.len());
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                while let Ok(Some(_)) = decoder.decode(&mut buf) {}
                prop_assert!(buf.capacity() <= MAX_BODY_BYTES + MAX_HEADER_BYTES + 2 * 6000);
            }
            let _ = decoder.finish(&buf);
        }

        /// Random frames starting with a valid verb: decoding never panics.
        #[test]
        fn verb_led_garbage_never_panics(
            verb in prop::sample::select(vec!["HELLO", "PUB", "SUB", "UNSUB", "EVT", "BYE"]),
            tail in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut bytes = verb.as_bytes().to_vec();
            bytes.extend(tail);
            let _ = decode_all(&bytes, 1);
            let _ = decode_all(&bytes, bytes.len());
        }

        /// encode then decode, in any chunking, gives the frames back.
        #[test]
        fn round_trip(
            frames in prop::collection::vec(arb_frame(), 1..8),
            chunk in 1usize..128,
        ) {
            let mut bytes = Vec::new();
            for (verb, args, body) in &frames {
                let encoded = encode(*verb, args, body);
                prop_assert!(encoded.is_ok());
                bytes.extend_from_slice(&encoded.unwrap_or_default());
            }
            let (decoded, end) = decode_all(&bytes, chunk);
            prop_assert_eq!(end, Ok(()));
            prop_assert_eq!(decoded.len(), frames.len());
            for (frame, (verb, args, body)) in decoded.iter().zip(&frames) {
                prop_assert_eq!(frame.verb, *verb);
                prop_assert_eq!(&frame.args, args);
                prop_assert_eq!(&frame.body[..], &body[..]);
            }
        }
    }
}
