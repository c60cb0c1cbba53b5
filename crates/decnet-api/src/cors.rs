//! CORS as DECNET's API answers it (Starlette's `CORSMiddleware` with
//! DECNET's settings): listed origins are echoed with `Vary: Origin`, no
//! credentials, methods GET POST PUT PATCH DELETE OPTIONS, request headers
//! `Authorization`, `Content-Type`, `Last-Event-ID` (plus the CORS-safelisted
//! ones), max-age 600.
//!
//! `DECNET_CORS_ORIGINS=*` (accepted only with `DECNET_CORS_ALLOW_WILDCARD=true`)
//! is Starlette's `allow_origins=["*"]` without credentials: every answer to
//! a request with an `Origin` carries `Access-Control-Allow-Origin: *`
//! (never the reflected origin, never `Vary: Origin`, never
//! `Access-Control-Allow-Credentials`). Every origin is allowed, `null`
//! (sandboxed frames, `file:` pages) included: `*` lets a page read the
//! answer to a request it made with its own Bearer token or ticket, and a
//! browser exposes no answer to a request with cookies under `*`.

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

/// The allowed dashboard origins (`DECNET_CORS_ORIGINS`). An entry `*`
/// (which the settings accept only with `DECNET_CORS_ALLOW_WILDCARD=true`)
/// allows any origin, answered `Access-Control-Allow-Origin: *`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cors {
    origins: Vec<String>,
    /// An entry is `*`: any origin, answered `*`.
    any: bool,
}

/// `Access-Control-Allow-Origin` of the wildcard.
const ANY_ORIGIN: &str = "*";

impl Cors {
    /// CORS for exactly these origins (`scheme://host[:port]`, no trailing
    /// `/`), or for any origin when one of them is `*`.
    pub fn new(origins: Vec<String>) -> Self {
        let any = origins.iter().any(|o| o == ANY_ORIGIN);
        Self { origins, any }
    }

    /// The allowed origins, as configured (`*` included).
    pub fn origins(&self) -> &[String] {
        &self.origins
    }

    fn allowed(&self, origin: &HeaderValue) -> bool {
        self.any
            || origin
                .to_str()
                .is_ok_and(|o| self.origins.iter().any(|allowed| allowed == o))
    }

    /// What an allowed `origin` is answered: `*` under the wildcard (the
    /// answer does not vary by origin), else the origin itself, with
    /// `Vary: Origin`.
    fn allow(&self, origin: &HeaderValue, headers: &mut HeaderMap) {
        if self.any {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static(ANY_ORIGIN),
            );
        } else if self.allowed(origin) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
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
        if !self.any {
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        if let Some(origin) = origin {
            self.allow(origin, h);
        }
        response
    }

    /// Add the CORS headers of a simple (non-preflight) response.
    pub fn decorate(&self, request: &HeaderMap, response: &mut Response<Body>) {
        let Some(origin) = request.get(header::ORIGIN) else {
            return;
        };
        let headers = response.headers_mut();
        if !self.any {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        self.allow(origin, headers);
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

    fn wildcard() -> Cors {
        Cors::new(vec!["*".into()])
    }

    #[test]
    fn the_wildcard_allows_any_origin_as_a_star_without_credentials() {
        for origin in ["https://anywhere.example", "http://localhost:8080", "null"] {
            let request = headers(&[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "authorization, last-event-id",
                ),
            ]);
            assert!(wildcard().failures(&request).is_empty(), "{origin}");
            let response = wildcard().preflight(&request);
            assert_eq!(response.status(), StatusCode::OK, "{origin}");
            let h = response.headers();
            assert_eq!(h["access-control-allow-origin"], "*", "{origin}");
            assert_eq!(h["access-control-allow-methods"], ALLOW_METHODS);
            assert_eq!(h["access-control-allow-headers"], ALLOW_HEADERS);
            assert!(h.get("access-control-allow-credentials").is_none());
            assert!(h.get("vary").is_none(), "a * answer does not vary");

            let mut response = Response::new(full("x"));
            wildcard().decorate(&headers(&[("origin", origin)]), &mut response);
            let h = response.headers();
            assert_eq!(h["access-control-allow-origin"], "*", "{origin}");
            assert!(h.get("access-control-allow-credentials").is_none());
            assert!(h.get("vary").is_none());
        }
    }

    #[test]
    fn the_wildcard_still_refuses_methods_and_headers_and_ignores_origin_less_requests() {
        let request = headers(&[
            ("origin", "https://anywhere.example"),
            ("access-control-request-method", "TRACE"),
            ("access-control-request-headers", "x-evil"),
        ]);
        assert_eq!(wildcard().failures(&request), ["method", "headers"]);
        assert_eq!(
            wildcard().preflight(&request).status(),
            StatusCode::BAD_REQUEST
        );
        // A listed origin beside `*` changes nothing: any origin, as `*`.
        let mixed = Cors::new(vec!["https://a.example".into(), "*".into()]);
        let mut response = Response::new(full("x"));
        mixed.decorate(&headers(&[("origin", "https://b.example")]), &mut response);
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        // No Origin, no CORS headers (not a cross-origin request).
        let mut response = Response::new(full("x"));
        wildcard().decorate(&HeaderMap::new(), &mut response);
        assert!(response.headers().is_empty());
    }
}
