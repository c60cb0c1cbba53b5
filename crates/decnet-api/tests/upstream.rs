//! The pass-through to DECNET's API (`DECNET_EVENTS_UPSTREAM`), end to end:
//! decnet-events through `serve()` in front of a real HTTP server of ours
//! standing in for DECNET's Python API. Every method, headers both ways,
//! 50 MiB each way in bounded memory, a slow upstream, a stalled body, an
//! upstream that is down, an `Upgrade`, our own routes staying ours, and
//! the secrets of forwarded requests (JWT, ticket and token queries,
//! cookies) absent from every log line, at trace level, in both formats.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
mod capture;
mod front;

use capture::{Format, LogCapture};
use front::Front;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

const MIB: usize = 1024 * 1024;
const CHUNK: usize = 64 * 1024;

type TestBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// `n` bytes of a fixed pattern, as a stream of 64 KiB chunks made on demand.
fn generated(n: usize) -> TestBody {
    let chunks = (0..n.div_ceil(CHUNK)).map(move |i| {
        let len = CHUNK.min(n - i * CHUNK);
        Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![(i % 251) as u8; len])))
    });
    StreamBody::new(futures::stream::iter(chunks)).boxed()
}

/// The stand-in for DECNET's API.
async fn upstream_handler(request: Request<Incoming>) -> Result<Response<TestBody>, Infallible> {
    let path = request.uri().path().to_owned();
    let query: BTreeMap<String, String> =
        form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let response = match path.as_str() {
        "/api/v1/upload" => {
            // Count the body as it streams: never held whole.
            let mut body = request.into_body();
            let (mut bytes, mut sum) = (0usize, 0u64);
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Some(data) = frame.data_ref() {
                    bytes += data.len();
                    sum += data.iter().map(|b| u64::from(*b)).sum::<u64>();
                }
            }
            Response::new(full(json!({"bytes": bytes, "sum": sum}).to_string()))
        }
        "/api/v1/download" => {
            let mib: usize = query.get("mib").and_then(|m| m.parse().ok()).unwrap_or(1);
            Response::new(generated(mib * MIB))
        }
        "/api/v1/slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Response::new(full("late"))
        }
        "/api/v1/stall" => {
            // Half a body, then nothing.
            let (tx, rx) =
                futures::channel::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
            tokio::spawn(async move {
                let mut tx = tx;
                use futures::SinkExt;
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"half")))).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(tx);
            });
            let mut response = Response::new(StreamBody::new(rx).boxed());
            response
                .headers_mut()
                .insert("content-length", http::HeaderValue::from_static("8"));
            response
        }
        _ => {
            let (parts, body) = request.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let headers: BTreeMap<String, String> = parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
                .collect();
            let echo = json!({
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "query": parts.uri.query(),
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            });
            let mut response = Response::new(full(echo.to_string()));
            let headers = response.headers_mut();
            headers.insert(
                "content-type",
                http::HeaderValue::from_static("application/json"),
            );
            headers.insert(
                "access-control-allow-origin",
                http::HeaderValue::from_static("http://upstream-says"),
            );
            headers.insert(
                "connection",
                http::HeaderValue::from_static("x-upstream-hop"),
            );
            headers.insert("x-upstream-hop", http::HeaderValue::from_static("1"));
            response
        }
    };
    Ok(response)
}

/// The upstream on a free port.
async fn start_upstream() -> SocketAddr {
    test_support::http::serve_http1(upstream_handler).await
}

/// decnet-events in front of `upstream`, configured through the settings
/// table as the binary is.
async fn start_front(upstream: &str, extra: &[(&str, &str)]) -> SocketAddr {
    let mut vars = vec![("DECNET_EVENTS_UPSTREAM", upstream)];
    vars.extend_from_slice(extra);
    let front = Front::start(&vars, None).await;
    let addr = front.addr;
    // The front serves until the test's runtime ends.
    std::mem::forget(front);
    addr
}

fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(request: Request<TestBody>) -> (StatusCode, http::HeaderMap, Bytes) {
    let response = tokio::time::timeout(Duration::from_secs(30), client().request(request))
        .await
        .expect("an answer in time")
        .expect("a response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, body)
}

fn json_of(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

/// Peak resident memory of this process (nextest runs each test alone).
fn peak_rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map(|kb| kb * 1024)
        .expect("VmHWM")
}

#[tokio::test]
async fn every_method_path_query_and_header_passes_through() {
    let upstream = start_upstream().await;
    let front = start_front(&format!("http://{upstream}"), &[]).await;
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let request = Request::builder()
            .method(method)
            .uri(format!(
                "http://{front}/api/v1/attackers/abc?limit=5&search=a%20b"
            ))
            .header("authorization", "Bearer some.jwt.value")
            .header("content-type", "application/json")
            .header("connection", "x-secret-hop")
            .header("x-secret-hop", "must not pass")
            .header("x-forwarded-for", "198.51.100.7")
            .body(full(format!("{{\"m\":\"{method}\"}}")))
            .expect("request");
        let (status, headers, body) = send(request).await;
        assert_eq!(status, StatusCode::OK, "{method}");
        let echo = json_of(&body);
        assert_eq!(echo["method"], method);
        assert_eq!(echo["path"], "/api/v1/attackers/abc");
        assert_eq!(echo["query"], "limit=5&search=a%20b");
        assert_eq!(echo["body"], format!("{{\"m\":\"{method}\"}}"));
        let seen = &echo["headers"];
        assert_eq!(seen["authorization"], "Bearer some.jwt.value");
        assert_eq!(seen["host"], upstream.to_string(), "Host is the upstream's");
        assert_eq!(seen["x-forwarded-host"], front.to_string());
        assert_eq!(seen["x-forwarded-proto"], "http");
        assert_eq!(seen["x-forwarded-for"], "198.51.100.7, 127.0.0.1");
        assert!(
            seen.get("x-secret-hop").is_none(),
            "hop-by-hop header forwarded: {seen}"
        );
        // The upstream's own headers come back, its CORS untouched; its
        // hop-by-hop ones do not.
        assert_eq!(
            headers["access-control-allow-origin"],
            "http://upstream-says"
        );
        assert!(!headers.contains_key("x-upstream-hop"));
    }
    // HEAD: the head only.
    let request = Request::head(format!("http://{front}/api/v1/health"))
        .body(full(""))
        .expect("request");
    let (status, _, body) = send(request).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
}

#[tokio::test]
async fn our_routes_stay_ours() {
    let upstream = start_upstream().await;
    let front = start_front(&format!("http://{upstream}"), &[]).await;
    let (status, _, body) = send(
        Request::get(format!("http://{front}/healthz"))
            .body(full(""))
            .expect("request"),
    )
    .await;
    assert_eq!(
        (status, json_of(&body)),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    // The container health check probes it too.
    decnet_api::healthcheck::probe_ready(front, Duration::from_secs(10))
        .await
        .expect("ready");
    // A stream without credentials is our 401, not the upstream's echo.
    let (status, _, body) = send(
        Request::get(format!("http://{front}/api/v1/identities/events"))
            .body(full(""))
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(&body)["detail"], "Could not validate credentials");
    // The ticket mint is ours too (tickets live in our store).
    let (status, _, _) = send(
        Request::post(format!("http://{front}/api/v1/auth/sse-ticket"))
            .body(full(""))
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // And /metrics counts what went upstream.
    send(
        Request::get(format!("http://{front}/api/v1/anything"))
            .body(full(""))
            .expect("request"),
    )
    .await;
    let (_, _, metrics) = send(
        Request::get(format!("http://{front}/metrics"))
            .body(full(""))
            .expect("request"),
    )
    .await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("decnet_upstream_requests_total{result=\"answered\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("route=\"upstream\""), "{metrics}");
}

#[tokio::test]
async fn fifty_mib_each_way_in_bounded_memory() {
    let upstream = start_upstream().await;
    let front = start_front(&format!("http://{upstream}"), &[]).await;
    let before = peak_rss_bytes();

    let request = Request::post(format!("http://{front}/api/v1/upload"))
        .body(generated(50 * MIB))
        .expect("request");
    let (status, _, body) = send(request).await;
    assert_eq!(status, StatusCode::OK);
    let expected_sum: u64 = (0..(50 * MIB).div_ceil(CHUNK))
        .map(|i| (i % 251) as u64 * CHUNK as u64)
        .sum();
    assert_eq!(
        json_of(&body),
        json!({"bytes": 50 * MIB, "sum": expected_sum})
    );

    let response = client()
        .request(
            Request::get(format!("http://{front}/api/v1/download?mib=50"))
                .body(full(""))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.expect("frame").data_ref() {
            received += data.len();
        }
    }
    assert_eq!(received, 50 * MIB);

    // Neither direction was held whole: 50 MiB through, far less resident.
    let grown = peak_rss_bytes().saturating_sub(before);
    assert!(grown < 24 * MIB, "peak memory grew by {} MiB", grown / MIB);
}

#[tokio::test]
async fn a_slow_upstream_is_a_504_and_a_stalled_body_is_cut() {
    let upstream = start_upstream().await;
    let front = start_front(
        &format!("http://{upstream}"),
        &[
            ("DECNET_EVENTS_UPSTREAM_TIMEOUT_SECS", "1"),
            ("DECNET_EVENTS_UPSTREAM_IDLE_TIMEOUT_SECS", "1"),
        ],
    )
    .await;
    let started = std::time::Instant::now();
    let (status, headers, body) = send(
        Request::get(format!("http://{front}/api/v1/slow"))
            .body(full(""))
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(json_of(&body), json!({"detail": "Upstream timed out"}));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    // The head arrived, then the body went quiet: the client sees the
    // transfer end early, not a hang.
    let response = client()
        .request(
            Request::get(format!("http://{front}/api/v1/stall"))
                .body(full(""))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let collected = tokio::time::timeout(Duration::from_secs(20), response.into_body().collect())
        .await
        .expect("the body ends within the idle bound");
    assert!(
        collected.is_err(),
        "a cut transfer is an error, not a short success"
    );
}

#[tokio::test]
async fn an_upstream_that_is_down_is_a_502() {
    // A port nobody listens on: bind, note, close.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let front = start_front(&format!("http://{closed}"), &[]).await;
    let (status, _, body) = send(
        Request::get(format!("http://{front}/api/v1/logs"))
            .body(full(""))
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(json_of(&body), json!({"detail": "Upstream unreachable"}));
}

#[tokio::test]
async fn upgrades_are_refused_with_501() {
    let upstream = start_upstream().await;
    let front = start_front(&format!("http://{upstream}"), &[]).await;
    let (status, _, body) = send(
        Request::get(format!("http://{front}/api/v1/ws"))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(full(""))
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(
        json_of(&body),
        json!({"detail": "Upgrade requests are not forwarded"})
    );
}

/// A random token-like secret (never anything a log would print by chance).
fn secret(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn forwarded_secrets_never_reach_the_logs_at_any_level() {
    for format in [Format::Text, Format::Json] {
        // Everything the process logs, hyper's and h2's own tracing
        // included, at trace level, in the format DECNET_LOG_FORMAT names.
        let (logs, _logging) = LogCapture::start_with("trace", format);
        let upstream = start_upstream().await;
        let front = start_front(
            &format!("http://{upstream}"),
            &[("DECNET_ACCESS_LOG", "true")],
        )
        .await;
        // A real JWT (header.payload.signature), a ticket, a token query and
        // a session cookie.
        let jwt = decnet_auth::mint_access_token(
            front::SECRET.as_bytes(),
            &uuid::Uuid::new_v4().to_string(),
            Duration::from_secs(600),
        )
        .expect("token")
        .0;
        let (ticket, token, cookie) = (secret("tkt"), secret("qtok"), secret("sess"));
        let query = format!("limit=5&ticket={ticket}&token={token}");
        for method in ["GET", "POST"] {
            let request = Request::builder()
                .method(method)
                .uri(format!("http://{front}/api/v1/attackers?{query}"))
                .header("authorization", format!("Bearer {jwt}"))
                .header("cookie", format!("session={cookie}; theme=dark"))
                .body(full("{}"))
                .expect("request");
            let (status, _, body) = send(request).await;
            assert_eq!(status, StatusCode::OK, "{method}");
            // They did pass through to DECNET's API, whole.
            let echo = json_of(&body);
            assert_eq!(echo["query"], query.as_str());
            assert_eq!(echo["headers"]["authorization"], format!("Bearer {jwt}"));
            assert!(
                echo["headers"]["cookie"]
                    .as_str()
                    .is_some_and(|c| c.contains(&cookie)),
                "{echo}"
            );
        }
        // Our own routes, given the same secrets, refuse them.
        let request = Request::get(format!("http://{front}/api/v1/identities/events?{query}"))
            .header("authorization", format!("Bearer {jwt}"))
            .header("cookie", format!("session={cookie}"))
            .body(full(""))
            .expect("request");
        let (status, _, _) = send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        let text = logs.text();
        assert!(
            text.contains("/api/v1/attackers") && text.contains("decnet_events::access"),
            "the forwarded requests were logged ({format:?}):\n{text}"
        );
        assert!(
            text.lines().count() > 20,
            "trace-level lines of hyper and the pass-through were captured too:\n{text}"
        );
        if format == Format::Json {
            for line in text.lines() {
                let parsed: Result<serde_json::Map<String, Value>, _> = serde_json::from_str(line);
                assert!(parsed.is_ok(), "not one JSON object: {line:?}");
            }
        }
        let signature = jwt.rsplit('.').next().expect("a signature");
        for (what, value) in [
            ("the JWT", jwt.as_str()),
            ("the JWT's signature", signature),
            ("the ticket", ticket.as_str()),
            ("the token query", token.as_str()),
            ("the cookie", cookie.as_str()),
        ] {
            let leaked: Vec<&str> = text.lines().filter(|l| l.contains(value)).collect();
            assert!(
                leaked.is_empty(),
                "{what} logged ({format:?}):\n{}",
                leaked.join("\n")
            );
        }
    }
}
