//! A deliberately minimal HTTP/1.1 client for many long-lived streams.
//!
//! Just what the load generator needs, with one small buffer per connection:
//! write a request, read and parse the response head ([`read_head`]),
//! read a sized body, and de-chunk a `transfer-encoding: chunked` body
//! incrementally ([`ChunkedDecoder`]). No redirects, no pipelining; TLS is
//! the [`Io`] it runs over (see [`crate::transport`]).

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::transport::Io;

/// Largest response head accepted (it must fit the connection's buffer anyway).
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// `transfer-encoding: chunked`.
    Chunked,
    /// `content-length: n`.
    Length(usize),
    /// Neither: the body runs until the connection closes.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    /// The status code.
    pub(crate) status: u16,
    /// How the body is delimited.
    pub(crate) body: BodyKind,
    /// The `content-type` value, lowercased (empty when absent).
    pub(crate) content_type: String,
    /// Length of the head including the blank line.
    pub(crate) len: usize,
}

/// Parse a complete response head at the start of `buf`.
///
/// `Ok(None)` when the blank line that ends the head has not arrived yet.
///
/// # Errors
///
/// A status line or header that is not HTTP/1.x, a bad `content-length`, or
/// a head larger than [`MAX_HEAD`].
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<Head>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            bail!("response head larger than {MAX_HEAD} bytes");
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).context("response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1.x response: {status_line:?}");
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    let mut content_type = String::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            bail!("bad header line {line:?}");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .with_context(|| format!("bad content-length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = value.to_ascii_lowercase();
        }
    }
    let body = match (chunked, length) {
        (true, _) => BodyKind::Chunked,
        (false, Some(n)) => BodyKind::Length(n),
        (false, None) if status == 204 || status == 304 => BodyKind::Length(0),
        (false, None) => BodyKind::UntilClose,
    };
    Ok(Some(Head {
        status,
        body,
        content_type,
        len: end + 4,
    }))
}

/// Connect to `server`, from `source` (port chosen by the kernel) when given.
///
/// Binding distinct loopback source addresses lifts the ~28,000 ephemeral
/// ports limit, which applies per (source address, destination) pair.
///
/// # Errors
///
/// Socket creation, bind or connect failures.
pub(crate) async fn connect(server: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream> {
    let socket = if server.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .context("socket")?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("bind {ip}"))?;
    }
    let stream = socket.connect(server).await.context("connect")?;
    stream.set_nodelay(true).context("nodelay")?;
    Ok(stream)
}

/// A connection with its one read buffer.
///
/// `buf[start..filled]` holds bytes read but not consumed yet.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The socket (plain or TLS).
    pub(crate) stream: Io,
    /// The read buffer (its length is its capacity; never grows).
    pub(crate) buf: Box<[u8]>,
    /// Start of the unconsumed bytes.
    pub(crate) start: usize,
    /// End of the bytes read.
    pub(crate) filled: usize,
}

impl Conn {
    /// Wrap `stream` with a read buffer of `buf_size` bytes.
    pub(crate) fn new(stream: Io, buf_size: usize) -> Self {
        Conn {
            stream,
            buf: vec![0; buf_size.max(1024)].into_boxed_slice(),
            start: 0,
            filled: 0,
        }
    }

    /// Send `request` whole.
    pub(crate) async fn send(&mut self, request: &[u8]) -> Result<()> {
        self.stream.write_all(request).await.context("write")
    }

    /// Read more bytes after the unconsumed ones (compacting first).
    /// Returns how many arrived; 0 means the peer closed.
    pub(crate) async fn fill(&mut self) -> Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
        }
        if self.filled == self.buf.len() {
            bail!("read buffer full ({} bytes)", self.buf.len());
        }
        let n = self
            .stream
            .read(&mut self.buf[self.filled..])
            .await
            .context("read")?;
        self.filled += n;
        Ok(n)
    }

    /// Read a response head, leaving the body's first bytes unconsumed.
    pub(crate) async fn read_head(&mut self) -> Result<Head> {
        loop {
            if let Some(head) = parse_head(&self.buf[self.start..self.filled])? {
                self.start += head.len;
                return Ok(head);
            }
            if self.fill().await? == 0 {
                bail!("connection closed before the response head");
            }
        }
    }

    /// Read a whole (small) body, for JSON answers: sized or chunked.
    pub(crate) async fn read_body(&mut self, kind: BodyKind) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        match kind {
            BodyKind::Length(n) => {
                while self.filled - self.start < n {
                    if self.fill().await? == 0 {
                        bail!("connection closed in the response body");
                    }
                }
                body.extend_from_slice(&self.buf[self.start..self.start + n]);
                self.start += n;
            }
            BodyKind::Chunked => {
                let mut decoder = ChunkedDecoder::new();
                loop {
                    let used = decoder.decode(&self.buf[self.start..self.filled], |data| {
                        body.extend_from_slice(data);
                    })?;
                    self.start += used;
                    if decoder.is_done() {
                        break;
                    }
                    if self.fill().await? == 0 {
                        bail!("connection closed in the chunked body");
                    }
                }
            }
            BodyKind::UntilClose => {
                body.extend_from_slice(&self.buf[self.start..self.filled]);
                self.start = self.filled;
                while self.fill().await? > 0 {
                    body.extend_from_slice(&self.buf[self.start..self.filled]);
                    self.start = self.filled;
                }
            }
        }
        if body.len() > MAX_HEAD * 64 {
            bail!("response body too large");
        }
        Ok(body)
    }
}

/// Why a chunked body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkedError(&'static str);

impl std::fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad chunked encoding: {}", self.0)
    }
}

impl std::error::Error for ChunkedError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading hex digits of a chunk size.
    Size,
    /// After the size: a chunk extension, up to CR.
    Extension,
    /// Expecting the LF of the size line.
    SizeLf,
    /// Inside chunk data: this many bytes to go.
    Data(u64),
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// After the last (zero) chunk: at the start of a trailer line.
    TrailerStart,
    /// Inside a trailer line, up to CR.
    Trailer,
    /// Expecting the LF of a trailer line (`empty`: it was the blank one).
    TrailerLf { empty: bool },
    /// The body is complete.
    Done,
}

/// Incremental decoder of `transfer-encoding: chunked` (RFC 9112 §7.1).
///
/// Feed it bytes as they arrive, split anywhere; it hands the chunk data to a
/// callback without copying and keeps a few bytes of state.
#[derive(Debug, Clone)]
pub(crate) struct ChunkedDecoder {
    state: ChunkState,
    size: u64,
    digits: u8,
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub(crate) fn new() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
            size: 0,
            digits: 0,
        }
    }

    /// Whether the terminating zero chunk and trailer have been read.
    pub(crate) fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decode `input`, calling `sink` with each run of chunk data. Returns how
    /// many bytes were used: all of them, unless the body ended inside
    /// `input` (the rest belongs to the next response).
    ///
    /// # Errors
    ///
    /// A malformed size line, a chunk size over 2^40, or missing CRLF after
    /// chunk data.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        mut sink: impl FnMut(&[u8]),
    ) -> Result<usize, ChunkedError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                ChunkState::Done => return Ok(i),
                ChunkState::Data(left) => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - i);
                    sink(&input[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(left)
                    };
                    continue;
                }
                _ => {}
            }
            let byte = input[i];
            i += 1;
            self.state = match (self.state, byte) {
                (ChunkState::Size, b) if b.is_ascii_hexdigit() => {
                    if self.digits >= 10 {
                        return Err(ChunkedError("chunk size too large"));
                    }
                    let digit = (b as char).to_digit(16).unwrap_or(0);
                    self.size = self.size * 16 + u64::from(digit);
                    self.digits += 1;
                    ChunkState::Size
                }
                (ChunkState::Size, b';' | b' ' | b'\t') if self.digits > 0 => ChunkState::Extension,
                (ChunkState::Size, b'\r') if self.digits > 0 => ChunkState::SizeLf,
                (ChunkState::Size, _) => return Err(ChunkedError("bad chunk size")),
                (ChunkState::Extension, b'\r') => ChunkState::SizeLf,
                (ChunkState::Extension, b'\n') => {
                    return Err(ChunkedError("bare LF in chunk extension"));
                }
                (ChunkState::Extension, _) => ChunkState::Extension,
                (ChunkState::SizeLf, b'\n') => {
                    let size = std::mem::take(&mut self.size);
                    self.digits = 0;
                    if size == 0 {
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::Data(size)
                    }
                }
                (ChunkState::SizeLf, _) => return Err(ChunkedError("expected LF after size")),
                (ChunkState::DataCr, b'\r') => ChunkState::DataLf,
                (ChunkState::DataCr, _) => return Err(ChunkedError("expected CR after data")),
                (ChunkState::DataLf, b'\n') => ChunkState::Size,
                (ChunkState::DataLf, _) => return Err(ChunkedError("expected LF after data")),
                (ChunkState::TrailerStart, b'\r') => ChunkState::TrailerLf { empty: true },
                (ChunkState::Trailer, b'\r') => ChunkState::TrailerLf { empty: false },
                (ChunkState::TrailerStart | ChunkState::Trailer, _) => ChunkState::Trailer,
                (ChunkState::TrailerLf { empty: true }, b'\n') => ChunkState::Done,
                (ChunkState::TrailerLf { empty: false }, b'\n') => ChunkState::TrailerStart,
                (ChunkState::TrailerLf { .. }, _) => {
                    return Err(ChunkedError("expected LF in trailer"));
                }
                (ChunkState::Data(_) | ChunkState::Done, _) => {
                    return Err(ChunkedError("internal state"));
                }
            };
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode `input` whole and split at every position; all must agree.
    fn check(input: &[u8], expected: &[u8], expected_done: bool) {
        let mut splits: Vec<Vec<&[u8]>> = vec![vec![input]];
        for at in 0..=input.len() {
            splits.push(vec![&input[..at], &input[at..]]);
        }
        splits.push(input.chunks(1).collect());
        for pieces in splits {
            let mut decoder = ChunkedDecoder::new();
            let mut out = Vec::new();
            for piece in pieces {
                let used = decoder
                    .decode(piece, |d| out.extend_from_slice(d))
                    .expect("valid");
                if !decoder.is_done() {
                    assert_eq!(used, piece.len());
                }
            }
            assert_eq!(out, expected);
            assert_eq!(decoder.is_done(), expected_done);
        }
    }

    fn fails(input: &[u8]) {
        let mut decoder = ChunkedDecoder::new();
        assert!(decoder.decode(input, |_| {}).is_err(), "{input:?}");
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        check(b"5\r\nhello\r\n0\r\n\r\n", b"hello", true);
        check(
            b"b\r\n: keepalive\r\n18;ext=1\r\nevent: x\ndata: {\"a\":1}\n\n\r\n",
            b": keepaliveevent: x\ndata: {\"a\":1}\n\n",
            false,
        );
        check(
            b"A\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
            b"0123456789",
            true,
        );
        check(b"", b"", false);
    }

    #[test]
    fn decoding_stops_after_the_last_chunk() {
        let mut decoder = ChunkedDecoder::new();
        let input = b"1\r\na\r\n0\r\n\r\nHTTP/1.1 200 OK";
        let used = decoder.decode(input, |_| {}).expect("valid");
        assert!(decoder.is_done());
        assert_eq!(&input[used..], b"HTTP/1.1 200 OK");
    }

    #[test]
    fn malformed_chunks_are_errors() {
        fails(b"x\r\n");
        fails(b"\r\n");
        fails(b"5\nhello");
        fails(b"2\r\nabc");
        fails(b"2\r\nab\rX");
        fails(b"fffffffffff\r\n");
    }

    #[test]
    fn heads_parse() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n\
                    Transfer-Encoding: chunked\r\n\r\n5\r\n";
        let head = parse_head(raw).expect("valid").expect("complete");
        assert_eq!(head.status, 200);
        assert_eq!(head.body, BodyKind::Chunked);
        assert!(head.content_type.starts_with("text/event-stream"));
        assert_eq!(&raw[head.len..], b"5\r\n");

        let raw = b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 12\r\n\r\n";
        let head = parse_head(raw).expect("valid").expect("complete");
        assert_eq!((head.status, head.body), (429, BodyKind::Length(12)));

        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n").expect("valid"), None);
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
        assert!(parse_head(&[b'a'; MAX_HEAD + 1]).is_err());
    }
}
