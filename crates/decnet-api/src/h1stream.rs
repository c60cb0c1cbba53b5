//! HTTP/1.1 streams written by the connection task rather than by hyper.
//!
//! hyper keeps two 8 KiB buffers per HTTP/1.1 connection (its read buffer,
//! reserved again to watch for EOF while a response streams, and its write
//! buffer for heads and chunk sizes) for as long as the connection lives:
//! two thirds of what an idle stream costs (docs/BENCHMARKS.md, "Idle
//! memory"). hyper has no hand-over for a response in progress, so the
//! handler hands the stream's response to the connection task instead of
//! returning it ([`ConnCtx::offer`]); the task takes the socket back from
//! hyper ([`hyper::server::conn::http1::Connection::into_parts`], between
//! two messages: the request is read, nothing of its response written) and
//! [`write_stream`] writes the head and the chunked body itself. Frames go
//! out of the stream's shared `Bytes` with `writev`, EOF is watched with a
//! read into a stack buffer: the stream holds no buffer of its own. When
//! the stream ends the socket goes back to a new hyper connection
//! ([`Rewind`] replays what the client sent meanwhile), so keep-alive works
//! as it does with hyper.
//!
//! The bytes on the wire are hyper's: the status line, the response's
//! headers in order, `transfer-encoding: chunked`, `date`, then one chunk
//! (upper-case hex size) per body frame and `0\r\n\r\n` at the end.
//!
//! [`ConnCtx::offer`]: crate::conn::ConnCtx::offer

use std::io::{self, IoSlice, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode, Version, header};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::Body;

/// Marks a response as an event stream (set by `sse_response`): only those
/// are written by [`write_stream`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventStreamResponse;

/// Whether `request` may have its stream written by [`write_stream`]: a GET
/// over HTTP/1.1 without a body that does not ask to close (hyper handles
/// the rest, as it always did).
pub(crate) fn eligible<B: http_body::Body>(request: &Request<B>) -> bool {
    request.method() == Method::GET
        && request.version() == Version::HTTP_11
        && request.body().is_end_stream()
        && !request
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| {
                v.to_str().is_ok_and(|v| {
                    v.split(',')
                        .any(|token| token.trim().eq_ignore_ascii_case("close"))
                })
            })
}

/// Whether `response` is a stream [`write_stream`] can carry.
pub(crate) fn is_stream(response: &Response<Body>) -> bool {
    response.status() == StatusCode::OK
        && response.extensions().get::<EventStreamResponse>().is_some()
}

/// A socket with bytes already read from it in front (what hyper had read
/// past the request, and what the client sent while the stream ran).
#[derive(Debug)]
pub(crate) struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    /// `inner` with nothing in front.
    pub(crate) fn new(inner: T) -> Self {
        Self {
            prefix: Bytes::new(),
            inner,
        }
    }

    /// `inner` with `prefix` read first.
    pub(crate) fn with_prefix(inner: T, prefix: Bytes) -> Self {
        Self { prefix, inner }
    }

    /// The socket and the bytes not read yet.
    pub(crate) fn into_parts(self) -> (T, Bytes) {
        (self.inner, self.prefix)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How a stream written by [`write_stream`] ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The body ended and its last chunk went out: the connection may serve
    /// another request, starting with these bytes the client already sent.
    Complete(Bytes),
    /// The client closed its side, a write or read failed, or the body
    /// failed: the connection is done.
    Closed,
}

/// The head hyper would write for `response` to a GET.
fn head(response: &http::response::Parts) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(response.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(
        response
            .status
            .canonical_reason()
            .unwrap_or_default()
            .as_bytes(),
    );
    head.extend_from_slice(b"\r\n");
    for (name, value) in &response.headers {
        // Framing is ours: a length or encoding set upstream would lie.
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    if !response.headers.contains_key(header::DATE) {
        head.extend_from_slice(b"date: ");
        head.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// One chunk of the body on its way out: its size line, its data (the
/// frame's own `Bytes`, not copied), its CRLF.
struct Chunk {
    size: [u8; 18],
    size_len: usize,
    data: Bytes,
    sent: usize,
}

impl Chunk {
    fn new(data: Bytes) -> Self {
        let mut size = [0u8; 18];
        let size_len = {
            let mut line = std::io::Cursor::new(&mut size[..]);
            // 16 hex digits and CRLF fit in 18 bytes whatever the length.
            let _ = write!(line, "{:X}\r\n", data.len());
            usize::try_from(line.position()).unwrap_or(0)
        };
        Self {
            size,
            size_len,
            data,
            sent: 0,
        }
    }

    /// The last chunk: `0\r\n\r\n`.
    fn last() -> Self {
        Self::new(Bytes::new())
    }

    fn total(&self) -> usize {
        self.size_len + self.data.len() + 2
    }

    fn is_sent(&self) -> bool {
        self.sent >= self.total()
    }

    /// What is left to write, as up to three slices.
    fn remaining(&self) -> [IoSlice<'_>; 3] {
        let size = &self.size[..self.size_len];
        let crlf: &[u8] = b"\r\n";
        // How much of the part starting at `start` is already out.
        let skip = |start: usize, len: usize| self.sent.saturating_sub(start).min(len);
        let data_start = self.size_len;
        let crlf_start = self.size_len + self.data.len();
        [
            IoSlice::new(&size[skip(0, size.len())..]),
            IoSlice::new(&self.data[skip(data_start, self.data.len())..]),
            IoSlice::new(&crlf[skip(crlf_start, crlf.len())..]),
        ]
    }
}

/// What the client sends while its stream runs is kept for the next
/// request, up to `limit` bytes; past that the socket is no longer read
/// (the client's writes back up; a close is then seen by a failed write).
struct Incoming {
    kept: BytesMut,
    limit: usize,
    reading: bool,
}

/// Write `response` (an event stream: see [`is_stream`]) to `io`, head and
/// body, until the body ends or the client goes away.
///
/// `prefix` is what the client sent past the request before the hand-over;
/// it is returned, with whatever follows, in [`Ended::Complete`]. The
/// caller bounds the time a write may stay pending (the write watchdog).
pub(crate) async fn write_stream<T>(
    io: &mut T,
    response: Response<Body>,
    prefix: Bytes,
    limit: usize,
) -> Ended
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (parts, mut body) = response.into_parts();
    let head = head(&parts);
    drop(parts);
    if io.write_all(&head).await.is_err() {
        return Ended::Closed;
    }
    drop(head);
    let mut incoming = Incoming {
        // A copy: `prefix` may share a larger buffer.
        kept: BytesMut::from(&prefix[..]),
        limit,
        reading: true,
    };
    let mut chunk: Option<Chunk> = None;
    let mut last = false;
    let mut unflushed = true;
    let ended = std::future::poll_fn(|cx| {
        // The client's side first: EOF ends the stream (hyper does the
        // same), anything else is kept for the next request.
        if let Err(()) = watch_incoming(io, cx, &mut incoming) {
            return Poll::Ready(false);
        }
        loop {
            if let Some(out) = &mut chunk {
                match Pin::new(&mut *io).poll_write_vectored(cx, &out.remaining()) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(false),
                    Poll::Ready(Ok(n)) => {
                        out.sent = out.sent.saturating_add(n);
                        unflushed = true;
                        if !out.is_sent() {
                            continue;
                        }
                        chunk = None;
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            if last {
                return match Pin::new(&mut *io).poll_flush(cx) {
                    Poll::Ready(result) => Poll::Ready(result.is_ok()),
                    Poll::Pending => Poll::Pending,
                };
            }
            // Only once the socket took everything: a slow client holds
            // back its stream's body (whose queue then resyncs it).
            match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        chunk = Some(Chunk::new(data));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    tracing::debug!(%error, "stream body failed");
                    return Poll::Ready(false);
                }
                Poll::Ready(None) => {
                    chunk = Some(Chunk::last());
                    last = true;
                }
                Poll::Pending => {
                    // TLS: the records written so far go out now.
                    if unflushed {
                        match Pin::new(&mut *io).poll_flush(cx) {
                            Poll::Ready(Ok(())) => unflushed = false,
                            Poll::Ready(Err(_)) => return Poll::Ready(false),
                            Poll::Pending => {}
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    })
    .await;
    // The body (and its stream's slot) is released before the connection
    // goes on.
    drop(body);
    if ended {
        Ended::Complete(incoming.kept.freeze())
    } else {
        Ended::Closed
    }
}

/// Read what the client sent; `Err` when it closed or the read failed.
fn watch_incoming<T: AsyncRead + Unpin>(
    io: &mut T,
    cx: &mut Context<'_>,
    incoming: &mut Incoming,
) -> Result<(), ()> {
    while incoming.reading {
        let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); 512];
        let mut buf = ReadBuf::uninit(&mut scratch);
        match Pin::new(&mut *io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => return Err(()),
            Poll::Ready(Ok(())) => {
                incoming.kept.extend_from_slice(buf.filled());
                if incoming.kept.len() >= incoming.limit {
                    incoming.reading = false;
                }
            }
            Poll::Ready(Err(_)) => return Err(()),
            Poll::Pending => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use tokio::io::{AsyncReadExt, DuplexStream};

    use super::*;
    use crate::body::BoxError;

    /// An event stream's response with `frames`, then the end.
    fn stream_response(frames: &[&'static str]) -> Response<Body> {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = frames
            .iter()
            .map(|f| Ok(Frame::data(Bytes::from_static(f.as_bytes()))))
            .collect();
        let body = StreamBody::new(futures::stream::iter(frames));
        let mut response = Response::new(BodyExt::boxed_unsync(body));
        response.extensions_mut().insert(EventStreamResponse);
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        h.insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-cache"),
        );
        h.insert("x-accel-buffering", http::HeaderValue::from_static("no"));
        h.append(header::VARY, http::HeaderValue::from_static("origin"));
        h.append(
            header::VARY,
            http::HeaderValue::from_static("access-control-request-method"),
        );
        response
    }

    /// Read until the last chunk, with a deadline.
    async fn read_to_last_chunk(client: &mut DuplexStream) -> Vec<u8> {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), async {
            while !out.ends_with(b"0\r\n\r\n") {
                let mut buf = [0u8; 1024];
                let n = client.read(&mut buf).await.expect("read");
                assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&out));
                out.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("the last chunk in time");
        out
    }

    /// The `date` line's value replaced: it is the only part that depends
    /// on the clock.
    fn without_date(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes)
            .split("\r\n")
            .map(|line| {
                if line.starts_with("date: ") {
                    "date: *"
                } else {
                    line
                }
            })
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    #[test]
    fn chunk_sizes_are_upper_case_hex() {
        for (len, line) in [
            (0, "0\r\n"),
            (9, "9\r\n"),
            (26, "1A\r\n"),
            (4096, "1000\r\n"),
            (0xBEEF, "BEEF\r\n"),
        ] {
            let chunk = Chunk::new(Bytes::from(vec![b'x'; len]));
            assert_eq!(&chunk.size[..chunk.size_len], line.as_bytes());
            assert_eq!(chunk.total(), line.len() + len + 2);
        }
    }

    #[test]
    fn a_partly_sent_chunk_resumes_where_it_stopped() {
        let mut chunk = Chunk::new(Bytes::from_static(b"data: x\n\n"));
        let whole: Vec<u8> = chunk.remaining().iter().flat_map(|s| s.to_vec()).collect();
        assert_eq!(whole, b"9\r\ndata: x\n\n\r\n");
        for sent in 0..=whole.len() {
            chunk.sent = sent;
            let rest: Vec<u8> = chunk.remaining().iter().flat_map(|s| s.to_vec()).collect();
            assert_eq!(rest, whole[sent..], "after {sent} bytes");
        }
        assert!(chunk.is_sent());
    }

    /// The same response written by hyper and by `write_stream` gives the
    /// same bytes (the date aside), even when the socket takes a few bytes
    /// at a time.
    #[tokio::test]
    async fn the_bytes_are_the_ones_hyper_writes() {
        let frames = [
            "retry: 3000\n\n",
            "id: 1\ndata: {\"a\":1}\n\n",
            ": keepalive\n\n",
        ];
        // hyper.
        let (mut client, server) = tokio::io::duplex(64);
        let conn = hyper::server::conn::http1::Builder::new().serve_connection(
            hyper_util::rt::TokioIo::new(server),
            hyper::service::service_fn(move |_request| async move {
                Ok::<_, Infallible>(stream_response(&frames))
            }),
        );
        let served = tokio::spawn(conn);
        client
            .write_all(b"GET /api/v1/stream HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("write");
        let by_hyper = read_to_last_chunk(&mut client).await;
        drop(client);
        let _ = served.await;
        // Ours, through a socket that takes 7 bytes at a time.
        let (mut client, mut server) = tokio::io::duplex(7);
        let writer = tokio::spawn(async move {
            write_stream(&mut server, stream_response(&frames), Bytes::new(), 8192).await
        });
        let by_us = read_to_last_chunk(&mut client).await;
        assert_eq!(without_date(&by_us), without_date(&by_hyper));
        assert!(without_date(&by_us).contains("\r\ndate: *\r\n\r\n"));
        let ended = tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("ends")
            .expect("no panic");
        assert_eq!(ended, Ended::Complete(Bytes::new()));
    }

    /// Read until `what` arrived, with a deadline.
    async fn read_until(client: &mut DuplexStream, what: &[u8]) {
        let mut seen = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), async {
            while !seen.windows(what.len()).any(|w| w == what) {
                let mut buf = [0u8; 512];
                let n = client.read(&mut buf).await.expect("read");
                assert!(n > 0, "closed early");
                seen.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("in time");
    }

    /// What the client sent before and during the stream comes back, in
    /// order, for the next request.
    #[tokio::test]
    async fn bytes_the_client_sends_meanwhile_are_kept_in_order() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, BoxError>>();
        let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(rx)));
        response.extensions_mut().insert(EventStreamResponse);
        let (mut client, mut server) = tokio::io::duplex(4096);
        let writer = tokio::spawn(async move {
            write_stream(&mut server, response, Bytes::from_static(b"GET /a"), 8192).await
        });
        // Each part is in the socket before the frame that wakes the
        // writer, which reads the client's side first.
        for (part, frame) in [
            (&b" HTTP/1.1\r\n"[..], "data: 1\n\n"),
            (&b"Host: t\r\n\r\n"[..], "data: 2\n\n"),
        ] {
            client.write_all(part).await.expect("write");
            tx.unbounded_send(Ok(Frame::data(Bytes::from(frame))))
                .expect("send");
            read_until(&mut client, frame.as_bytes()).await;
        }
        drop(tx);
        read_until(&mut client, b"0\r\n\r\n").await;
        let ended = tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("ends")
            .expect("no panic");
        assert_eq!(
            ended,
            Ended::Complete(Bytes::from_static(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n"))
        );
    }

    /// Past the limit the socket is no longer read: nothing is lost, the
    /// rest waits in the socket.
    #[tokio::test]
    async fn what_is_kept_is_bounded() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, BoxError>>();
        let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(rx)));
        response.extensions_mut().insert(EventStreamResponse);
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let writer = tokio::spawn(async move {
            let ended = write_stream(&mut server, response, Bytes::new(), 1024).await;
            (ended, server)
        });
        client.write_all(&[b'x'; 4096]).await.expect("write");
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"data: 1\n\n"))))
            .expect("send");
        read_until(&mut client, b"data: 1\n\n").await;
        drop(tx);
        read_until(&mut client, b"0\r\n\r\n").await;
        let (ended, mut server) = tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("ends")
            .expect("no panic");
        let Ended::Complete(kept) = ended else {
            panic!("ended {ended:?}");
        };
        // Read 512 bytes at a time up to the limit.
        assert!((1024..1024 + 512).contains(&kept.len()), "{}", kept.len());
        let mut rest = vec![0u8; 4096 - kept.len()];
        server
            .read_exact(&mut rest)
            .await
            .expect("the rest is still there");
        assert!(rest.iter().all(|b| *b == b'x'));
    }

    /// A client that closes its side ends the stream and drops its body.
    #[tokio::test]
    async fn a_client_that_closes_ends_the_stream() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, BoxError>>();
        let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(rx)));
        response.extensions_mut().insert(EventStreamResponse);
        let (mut client, mut server) = tokio::io::duplex(4096);
        let writer =
            tokio::spawn(
                async move { write_stream(&mut server, response, Bytes::new(), 8192).await },
            );
        let mut head = [0u8; 16];
        client.read_exact(&mut head).await.expect("the head");
        assert_eq!(&head, b"HTTP/1.1 200 OK\r");
        drop(client);
        let ended = tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("ends")
            .expect("no panic");
        assert_eq!(ended, Ended::Closed);
        // The body was dropped: its sender sees the receiver gone.
        assert!(
            tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"x"))))
                .is_err()
        );
    }
}
