//! CORS as DECNET's API answers it (Starlette's `CORSMiddleware` with
//! DECNET's settings): listed origins are echoed with `Vary: Origin`, no
//! credentials, methods GET POST PUT PATCH DELETE OPTIONS, request headers
//! `Authorization`, `Content-Type`, `Last-Event-ID` (plus the CORS-safelisted
//! ones), max-age 600.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::body::{Body, full};

/// `Access-Control-Allow-Methods` of a preflight.
const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
/// `Access-Control-Allow-Headers` of a preflight (sorted, as Starlette sends it).
const ALLOW_HEADERS: &str =
    "Accept, Accept-Language, Authorization, Content-Language, Content-Type, Last-Event-ID";
const ALLOWED_METHODS: [Method; 6] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// The allowed dashboard origins (`DECNET_CORS_ORIGINS`). Never a wildcard:
/// the settings refuse `*`, as DECNET does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cors {
    origins: Vec<String>,
}

impl Cors {
    /// CORS for exactly these origins (`scheme://host[:port]`, no trailing `/`).
    pub fn new(origins: Vec<String>) -> Self {
        Self { origins }
    }

    /// The allowed origins.
    pub fn origins(&self) -> &[String] {
        &self.origins
    }

    fn allowed(&self, origin: &HeaderValue) -> bool {
        origin
            .to_str()
            .is_ok_and(|o| self.origins.iter().any(|allowed| allowed == o))
    }

    /// Whether this request is a CORS preflight (`OPTIONS` with an `Origin`
    /// and `Access-Control-Request-Method`).
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(header::ORIGIN)
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// What a preflight asks that is not allowed: `origin`, `method`,
    /// `headers`, in Starlette's order.
    fn failures(&self, headers: &HeaderMap) -> Vec<&'static str> {
        let origin = headers.get(header::ORIGIN);
        let mut failures = Vec::new();
        if !origin.is_some_and(|o| self.allowed(o)) {
            failures.push("origin");
        }
        let method_ok = headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .is_some_and(|m| ALLOWED_METHODS.contains(&m));
        if !method_ok {
            failures.push("method");
        }
        let requested = headers
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let allowed_headers: Vec<String> = ALLOW_HEADERS
            .split(", ")
            .map(str::to_ascii_lowercase)
            .collect();
        let headers_ok = requested
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .all(|h| allowed_headers.contains(&h));
        if !headers_ok {
            failures.push("headers");
        }
        failures
    }

    /// The preflight answer: 200 `OK`, or 400 `Disallowed CORS origin`
    /// (`method`, `headers`, comma-joined) as Starlette words it.
    pub fn preflight(&self, headers: &HeaderMap) -> Response<Body> {
        let origin = headers.get(header::ORIGIN);
        let failures = self.failures(headers);
        let (status, text) = if failures.is_empty() {
            (StatusCode::OK, "OK".to_owned())
        } else {
            (
                StatusCode::BAD_REQUEST,
                format!("Disallowed CORS {}", failures.join(", ")),
            )
        };
        let mut response = Response::new(full(Bytes::from(text)));
        *response.status_mut() = status;
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        h.append(header::VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = origin.filter(|o| self.allowed(o)) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
        response
    }

    /// Add the CORS headers of a simple (non-preflight) response.
    pub fn decorate(&self, request: &HeaderMap, response: &mut Response<Body>) {
        let Some(origin) = request.get(header::ORIGIN) else {
            return;
        };
        let headers = response.headers_mut();
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        if self.allowed(origin) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    fn cors() -> Cors {
        Cors::new(vec!["http://localhost:8080".into()])
    }

    #[test]
    fn preflight_from_an_allowed_origin() {
        let request = headers(&[
            ("origin", "http://localhost:8080"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type",
            ),
        ]);
        assert!(Cors::is_preflight(&Method::OPTIONS, &request));
        let response = cors().preflight(&request);
        assert_eq!(response.status(), StatusCode::OK);
        let h = response.headers();
        assert_eq!(h["access-control-allow-origin"], "http://localhost:8080");
        assert_eq!(h["access-control-allow-methods"], ALLOW_METHODS);
        assert_eq!(h["access-control-max-age"], "600");
        assert!(h.get("access-control-allow-credentials").is_none());
    }

    #[test]
    fn preflight_failures_are_worded_like_starlette() {
        let check = |pairs: &[(&'static str, &'static str)], expected: &[&str]| {
            let request = headers(pairs);
            assert_eq!(cors().failures(&request), expected);
            assert_eq!(cors().preflight(&request).status(), StatusCode::BAD_REQUEST);
        };
        check(
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "POST"),
            ],
            &["origin"],
        );
        check(
            &[
                ("origin", "null"),
                ("access-control-request-method", "TRACE"),
            ],
            &["origin", "method"],
        );
        check(
            &[
                ("origin", "http://localhost:8080"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-evil"),
            ],
            &["headers"],
        );
    }

    #[test]
    fn simple_responses_echo_listed_origins_only() {
        let mut response = Response::new(full("x"));
        cors().decorate(
            &headers(&[("origin", "http://localhost:8080")]),
            &mut response,
        );
        assert_eq!(
            response.headers()["access-control-allow-origin"],
            "http://localhost:8080"
        );
        assert_eq!(response.headers()["vary"], "Origin");
        let mut response = Response::new(full("x"));
        cors().decorate(&headers(&[("origin", "null")]), &mut response);
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none()
        );
    }
}
