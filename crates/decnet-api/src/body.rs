//! The response body type.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

/// A boxed error a response body may end with (only proxied bodies do).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Every response body: a full JSON or text body, or a stream.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A complete body.
pub fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
