//! Server-Sent Events (SSE) framing: an encoder into [`bytes::Bytes`] and a spec-conforming decoder.
//!
//! # What it is
//!
//! The byte format of `text/event-stream`, as the WHATWG HTML standard defines it
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html>).
//! The service uses the encoder to build each frame once and share it between streams;
//! tests and tools use the decoder to read a stream back the way a browser's `EventSource` does.
//!
//! # What it is not
//!
//! No I/O, no async, no HTTP: it does not set headers, flush, time keepalives or reconnect.
//! It knows nothing of bus topics or event payloads; `data` is opaque text (or JSON bytes).
//!
//! # Main types
//!
//! - [`Frame`]: one event frame (`id`, `event`, `retry`, `data`), encoded with [`Frame::encode`] or [`Frame::encode_into`].
//! - [`encode_event_json`]: the hot path, `id` + `event` + pre-serialized JSON data in one exact-size allocation.
//! - [`comment`], [`retry`], [`keepalive`] and [`KEEPALIVE`]: the fixed frames the service sends first and when idle.
//! - [`EncodeError`]: an event name, id or comment that contains CR, LF or NUL.
//! - [`Decoder`]: the incremental WHATWG "event stream interpretation", fed chunks of any size,
//!   yielding [`Decoded`] items: an [`Event`], a comment, or a `retry` value; [`decode`] does a whole buffer at once.
//!
//! ```
//! use decnet_sse::{Decoded, Decoder, Event, Frame, encode_event_json, keepalive, retry};
//!
//! let mut stream = Vec::new();
//! stream.extend_from_slice(&keepalive());
//! stream.extend_from_slice(&retry(3000));
//! stream.extend_from_slice(&Frame::new().event("snapshot").data("{\"observations\":[]}").encode()?);
//! stream.extend_from_slice(&encode_event_json(Some("41"), "observation", br#"{"topic":"t"}"#)?);
//!
//! let mut decoder = Decoder::new();
//! let items = decoder.feed(&stream);
//! assert_eq!(items, vec![
//!     Decoded::Comment("keepalive".into()),
//!     Decoded::Retry(3000),
//!     Decoded::Event(Event { event: "snapshot".into(), data: "{\"observations\":[]}".into(), id: "".into() }),
//!     Decoded::Event(Event { event: "observation".into(), data: r#"{"topic":"t"}"#.into(), id: "41".into() }),
//! ]);
//! assert_eq!(decoder.finish(), None);
//! # Ok::<(), decnet_sse::EncodeError>(())
//! ```

mod decode;
mod encode;

pub use decode::{Decoded, Decoder, Event, Truncated, decode};
pub use encode::{
    EncodeError, Frame, KEEPALIVE, comment, encode_comment_into, encode_event_json,
    encode_event_json_into, encode_retry_into, keepalive, retry,
};
