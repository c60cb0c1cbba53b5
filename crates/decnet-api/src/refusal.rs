//! [`Refusal`]: every non-200 answer the API gives, mapped to a response in
//! one place.

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use serde_json::json;

use crate::body::{Body, full};

/// `Retry-After` sent with every 503 and 429 from a limit.
pub const RETRY_AFTER_SECS: u32 = 5;

/// The one 401 detail, whatever rule failed (a prober learns nothing).
pub const UNAUTHORIZED_DETAIL: &str = "Could not validate credentials";

/// Why a request was refused: the status, the JSON `detail`, extra headers,
/// and the label the open-attempt metric counts it under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: StatusCode,
    /// The `{"detail": ...}` message.
    pub detail: String,
    /// Headers beyond `content-type` (`WWW-Authenticate`, `Retry-After`, `Allow`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The `result` label of `decnet_sse_streams_opened_total`.
    pub label: &'static str,
    /// A structured `detail` instead of the message (FastAPI's developer
    /// 422 bodies).
    pub detail_json: Option<serde_json::Value>,
}

impl Refusal {
    fn new(status: StatusCode, detail: impl Into<String>, label: &'static str) -> Self {
        Self {
            status,
            detail: detail.into(),
            headers: Vec::new(),
            label,
            detail_json: None,
        }
    }

    fn with(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// 401 `Could not validate credentials` with `WWW-Authenticate: Bearer`.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            UNAUTHORIZED_DETAIL,
            "unauthorized",
        )
        .with(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    /// 403 with DECNET's message for `reason`.
    pub fn forbidden(reason: &decnet_auth::Forbidden) -> Self {
        Self::new(StatusCode::FORBIDDEN, reason.to_string(), "forbidden")
    }

    /// 404 with `detail` (`Attacker not found`, `Topology not found`, `Not Found`).
    pub fn not_found(detail: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail, "not_found")
    }

    /// 405 `Method Not Allowed` with `Allow: <methods>`.
    pub fn method_not_allowed(allow: &str) -> Self {
        let refusal = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
            "error",
        );
        match HeaderValue::from_str(allow) {
            Ok(value) => refusal.with(header::ALLOW, value),
            Err(_) => refusal,
        }
    }

    /// 413 `Request body too large`.
    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body too large",
            "error",
        )
    }

    /// 415 as DECNET's content-type middleware answers it: plain text, before
    /// authentication (see [`Refusal::into_response`]).
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type — Content-Type must be application/json",
            "error",
        )
    }

    /// 422 `Invalid request parameters` (DECNET's wording outside developer mode).
    pub fn invalid_parameters() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request parameters",
            "invalid",
        )
    }

    /// 429 with `detail` and `Retry-After`.
    pub fn too_many(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, detail, "limited")
            .with(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS))
    }

    /// 429 `SSE connection limit (N) reached` (DECNET's per-user cap text).
    pub fn stream_limit(limit: usize) -> Self {
        Self::too_many(format!("SSE connection limit ({limit}) reached"))
    }

    /// 503 with `detail` and `Retry-After`.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail, "unavailable")
            .with(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS))
    }

    /// 503 `Service temporarily unavailable` (a repository or store is down,
    /// or the repository's circuit breaker is open: the same answer, so a
    /// client cannot tell the two apart and retries either way).
    pub fn backend_down() -> Self {
        Self::unavailable("Service temporarily unavailable")
    }

    /// 503 `SSE server at capacity` (the instance-wide stream cap).
    pub fn at_capacity() -> Self {
        Self::unavailable("SSE server at capacity")
    }

    /// 503 `Server shutting down`.
    pub fn shutting_down() -> Self {
        Self::unavailable("Server shutting down")
    }

    /// 501 with `detail` (an `Upgrade` request the pass-through refuses).
    pub fn not_implemented(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, detail, "error")
    }

    /// 502 with `detail` (the upstream is unreachable or broke the exchange).
    pub fn bad_gateway(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, detail, "unavailable")
    }

    /// 504 with `detail` (the upstream took too long).
    pub fn gateway_timeout(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, detail, "unavailable")
    }

    /// The response: `{"detail": ...}` as `application/json`, with the
    /// headers (a 415 is DECNET's plain text).
    pub fn into_response(self) -> Response<Body> {
        let (body, content_type) = if self.status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            (self.detail.clone(), "text/plain; charset=utf-8")
        } else {
            let detail = self
                .detail_json
                .clone()
                .unwrap_or_else(|| serde_json::Value::String(self.detail.clone()));
            (json!({ "detail": detail }).to_string(), "application/json")
        };
        let mut response = Response::new(full(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

impl From<&decnet_auth::AuthError> for Refusal {
    fn from(error: &decnet_auth::AuthError) -> Self {
        if error.is_unavailable() {
            // The breaker logged its opening once; not every refusal since.
            if !crate::breaker::is_breaker_open(error) {
                tracing::warn!(%error, "repository unavailable during authentication");
            }
            Refusal::backend_down()
        } else {
            Refusal::unauthorized()
        }
    }
}

impl From<&decnet_auth::LimitError> for Refusal {
    fn from(error: &decnet_auth::LimitError) -> Self {
        match error {
            decnet_auth::LimitError::PerUser { limit } => Refusal::stream_limit(*limit),
            _ => Refusal::at_capacity(),
        }
    }
}

impl From<&decnet_auth::TicketError> for Refusal {
    fn from(error: &decnet_auth::TicketError) -> Self {
        match error {
            decnet_auth::TicketError::UserLimit { limit } => {
                Refusal::too_many(format!("SSE ticket limit ({limit}) reached"))
            }
            decnet_auth::TicketError::Full { .. } => Refusal::at_capacity(),
            other => {
                tracing::warn!(error = %other, "ticket store failed");
                Refusal::backend_down()
            }
        }
    }
}

impl From<&decnet_stream::OpenError> for Refusal {
    fn from(error: &decnet_stream::OpenError) -> Self {
        match error {
            decnet_stream::OpenError::Repository(error) => {
                if !crate::breaker::is_breaker_open(error) {
                    tracing::warn!(%error, "repository unavailable opening a stream");
                }
                Refusal::backend_down()
            }
            decnet_stream::OpenError::NotFound => Refusal::not_found("Not Found"),
            decnet_stream::OpenError::ShuttingDown => Refusal::shutting_down(),
            other => {
                tracing::warn!(error = %other, "stream could not be opened");
                Refusal::backend_down()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_headers_and_labels() {
        let r = Refusal::unauthorized();
        assert_eq!(
            (r.status, r.label),
            (StatusCode::UNAUTHORIZED, "unauthorized")
        );
        assert_eq!(r.headers[0].0, header::WWW_AUTHENTICATE);
        let r = Refusal::backend_down();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers[0], (header::RETRY_AFTER, HeaderValue::from(5u32)));
        assert_eq!(
            Refusal::stream_limit(5).detail,
            "SSE connection limit (5) reached"
        );
        let response = Refusal::method_not_allowed("GET").into_response();
        assert_eq!(response.headers()[header::ALLOW], "GET");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
}
