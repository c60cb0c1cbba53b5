//! The console: the page at `GET /` and its script and style
//! (`GET /console.js`, `GET /console.css`), embedded in the binary and sent
//! with a Content-Security-Policy that allows nothing inline and nothing
//! from elsewhere.

use http::Response;
use http::header::{self, HeaderName, HeaderValue};

use crate::body::{Body, full};
use crate::routes::ConsoleAsset;

const HTML: &str = include_str!("console/console.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// The console's Content-Security-Policy: its own script, style and
/// streams, nothing inline, no `eval`, no framing, no forms, no `<base>`.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'";

/// The headers every console response carries.
fn hardened(body: &'static str, content_type: &'static str, cache: &'static str) -> Response<Body> {
    let mut response = Response::new(full(body));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONSOLE_CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

/// `GET /`: the page (never cached: it is where a token is typed).
pub(crate) fn page() -> Response<Body> {
    let mut response = hardened(HTML, "text/html; charset=utf-8", "no-store");
    // A page that opened this one keeps no handle on it (no `opener`).
    response.headers_mut().insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// `GET /console.js`, `GET /console.css` (revalidated, so an upgrade is
/// seen at the next load).
pub(crate) fn asset(asset: ConsoleAsset) -> Response<Body> {
    match asset {
        ConsoleAsset::Script => {
            hardened(SCRIPT, "application/javascript; charset=utf-8", "no-cache")
        }
        ConsoleAsset::Style => hardened(STYLE, "text/css; charset=utf-8", "no-cache"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use decnet_auth::{ConnectionLimiter, MemoryTicketStore, TokenVerifier, VerifierConfig};
    use decnet_repo::{MemoryRepository, Repository};
    use decnet_stream::{HubConfig, StreamHub};
    use http::{Method, Request, StatusCode};
    use http_body_util::BodyExt;

    use crate::app::{App, AppConfig, AppParts};

    fn new_app(config: AppConfig) -> App {
        let repo: Arc<dyn Repository> = Arc::new(MemoryRepository::new());
        let bus = decnet_bus::Bus::memory();
        let hub = StreamHub::start(
            bus.clone(),
            decnet_stream::decnet_kinds(&repo),
            HubConfig::default(),
        );
        let parts = AppParts {
            hub,
            verifier: TokenVerifier::new(
                VerifierConfig::new(b"console-test-secret-0123456789abcdef".to_vec()),
                repo.clone(),
            ),
            tickets: Arc::new(MemoryTicketStore::default()),
            limiter: ConnectionLimiter::new(5, None),
            health: repo,
            breaker: crate::RepositoryBreaker::default(),
            bus,
            logs: None,
        };
        App::new(parts, config, vec![])
    }

    async fn get(app: &App, path: &str) -> (StatusCode, http::HeaderMap, String) {
        request(app, Method::GET, path).await
    }

    async fn request(
        app: &App,
        method: Method,
        path: &str,
    ) -> (StatusCode, http::HeaderMap, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .expect("request");
        let response = app.handle(request).await;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        let text = String::from_utf8(bytes.to_vec()).expect("utf-8 body");
        (parts.status, parts.headers, text)
    }

    fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> &'a str {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header"))
    }

    fn assert_hardened(path: &str, headers: &http::HeaderMap) {
        assert_eq!(
            header(headers, "content-security-policy"),
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            "{path}"
        );
        assert_eq!(
            header(headers, "x-content-type-options"),
            "nosniff",
            "{path}"
        );
        assert_eq!(header(headers, "x-frame-options"), "DENY", "{path}");
        assert_eq!(header(headers, "referrer-policy"), "no-referrer", "{path}");
    }

    #[tokio::test]
    async fn page_and_assets_carry_the_security_headers() {
        let app = new_app(AppConfig::default());
        for (path, content_type, cache) in [
            ("/", "text/html; charset=utf-8", "no-store"),
            (
                "/console.js",
                "application/javascript; charset=utf-8",
                "no-cache",
            ),
            ("/console.css", "text/css; charset=utf-8", "no-cache"),
        ] {
            let (status, headers, body) = get(&app, path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(header(&headers, "content-type"), content_type, "{path}");
            assert_eq!(header(&headers, "cache-control"), cache, "{path}");
            assert_hardened(path, &headers);
            assert!(!body.is_empty(), "{path}");
        }
        let (_, headers, _) = get(&app, "/").await;
        assert_eq!(
            header(&headers, "cross-origin-opener-policy"),
            "same-origin"
        );
    }

    #[tokio::test]
    async fn page_links_its_assets_and_inlines_nothing() {
        let app = new_app(AppConfig::default());
        let (_, _, html) = get(&app, "/").await;
        let lower = html.to_ascii_lowercase();
        // Every <script> is an empty element with a same-origin src.
        let mut scripts = 0;
        for (at, _) in lower.match_indices("<script") {
            let tag_end = at + lower[at..].find('>').expect("tag end");
            let tag = &lower[at..=tag_end];
            assert!(tag.contains("src=\"/console.js\""), "{tag}");
            assert!(
                lower[tag_end + 1..].starts_with("</script>"),
                "inline script body at {at}"
            );
            scripts += 1;
        }
        assert_eq!(scripts, 1);
        assert!(!lower.contains("<style"), "inline <style>");
        assert!(!lower.contains("style="), "inline style attribute");
        assert!(lower.contains("<link rel=\"stylesheet\" href=\"/console.css\">"));
        // No inline event handlers (onclick=, onload=...) and no javascript: URLs.
        for (at, _) in lower.match_indices(" on") {
            let rest = &lower[at + 3..];
            let name_len = rest
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(rest.len());
            assert!(
                !(name_len > 0 && rest[name_len..].starts_with('=')),
                "inline handler near {}",
                &html[at..(at + 24).min(html.len())]
            );
        }
        assert!(!lower.contains("javascript:"));
        // Nothing from elsewhere.
        assert!(!lower.contains("http://") && !lower.contains("https://"));
    }

    #[tokio::test]
    async fn script_keeps_the_token_out_of_storage_unless_asked() {
        let app = new_app(AppConfig::default());
        let (_, _, js) = get(&app, "/console.js").await;
        // The one write to localStorage is in rememberToken, behind the opt-in box.
        assert_eq!(js.matches("localStorage.setItem").count(), 1, "one write");
        let start = js.find("function rememberToken(").expect("rememberToken");
        let end = start + js[start..].find("\n  }\n").expect("end of rememberToken");
        let body = &js[start..end];
        assert!(body.contains("localStorage.setItem"), "{body}");
        assert!(
            body.contains("if (!ui.remember.checked || !token) return;"),
            "{body}"
        );
        // Nothing else persists anything, evaluates strings or logs.
        for forbidden in [
            "sessionStorage",
            "document.cookie",
            "localStorage[",
            "eval(",
            "new Function",
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "console.log",
            "console.error",
            "console.warn",
            "console.info",
            "console.debug",
            "setAttribute('style'",
            ".style.",
        ] {
            assert!(!js.contains(forbidden), "{forbidden}");
        }
        // The token is never a query parameter: streams get the ticket.
        assert!(!js.contains("set('token'") && !js.contains("append('token'"));
        assert!(!js.contains("?token") && !js.contains("&token"));
        assert!(js.contains("q.set('ticket', ticket)"));
        // The remember box is off by default.
        let (_, _, html) = get(&app, "/").await;
        assert!(html.contains("<input id=\"remember\" type=\"checkbox\">"));
    }

    #[tokio::test]
    async fn every_control_of_the_page_is_wired() {
        let app = new_app(AppConfig::default());
        let (_, _, html) = get(&app, "/").await;
        let (_, _, js) = get(&app, "/console.js").await;
        let mut buttons = 0;
        for (at, _) in html.match_indices("<button id=\"") {
            let rest = &html[at + "<button id=\"".len()..];
            let id = &rest[..rest.find('"').expect("id end")];
            if rest.starts_with(&format!("{id}\" class=\"primary\" type=\"submit\"")) {
                assert!(js.contains("ui.form.addEventListener('submit'"), "{id}");
            } else {
                assert!(
                    js.contains(&format!("ui.{id}.addEventListener('click'")),
                    "button {id} has no click handler"
                );
            }
            buttons += 1;
        }
        // The buttons of the panel template (one per stream panel, no id).
        for (at, _) in html.match_indices("<button data-part=\"") {
            let rest = &html[at + "<button data-part=\"".len()..];
            let part = &rest[..rest.find('"').expect("part end")];
            assert!(
                js.contains(&format!("p.{part}.addEventListener('click'")),
                "panel button {part} has no click handler"
            );
            buttons += 1;
        }
        assert!(buttons >= 6, "{buttons}");
        for id in ["kind", "also", "show", "remember"] {
            assert!(
                js.contains(&format!("ui.{id}.addEventListener('change'")),
                "{id} has no change handler"
            );
        }
        // Every element the script looks up exists.
        for (at, _) in js.match_indices("$('") {
            let rest = &js[at + 3..];
            let id = &rest[..rest.find('\'').expect("id end")];
            assert!(html.contains(&format!("id=\"{id}\"")), "no element #{id}");
        }
        // Every part of a panel the script looks up is in the template.
        let mut parts = 0;
        for (at, _) in js.match_indices("part('") {
            let rest = &js[at + "part('".len()..];
            let part = &rest[..rest.find('\'').expect("part end")];
            assert!(
                html.contains(&format!("data-part=\"{part}\"")),
                "no panel part {part}"
            );
            parts += 1;
        }
        assert!(parts >= 9, "{parts}");
    }

    #[tokio::test]
    async fn the_second_stream_is_its_own_panel_with_a_state_for_tools() {
        let app = new_app(AppConfig::default());
        let (_, _, html) = get(&app, "/").await;
        let (_, _, js) = get(&app, "/console.js").await;
        let (_, _, css) = get(&app, "/console.css").await;
        // The second picker offers none and every kind the first one does.
        let select = |id: &str| {
            let start = html
                .find(&format!("<select id=\"{id}\">"))
                .unwrap_or_else(|| panic!("select #{id}"));
            let end = start + html[start..].find("</select>").expect("select end");
            html[start..end]
                .match_indices("<option value=\"")
                .map(|(at, _)| {
                    let rest = &html[start + at + "<option value=\"".len()..];
                    rest[..rest.find('"').expect("value end")].to_owned()
                })
                .collect::<Vec<_>>()
        };
        let kinds = select("kind");
        let also = select("also");
        assert_eq!(kinds.len(), 6, "{kinds:?}");
        assert_eq!(also[0], "", "none comes first: {also:?}");
        assert_eq!(also[1..], kinds[..]);
        // One template, cloned per panel, carrying the machine-readable state.
        assert_eq!(html.matches("<template id=\"paneltpl\">").count(), 1);
        assert!(
            html.contains("<section class=\"panel\" data-state=\"idle\" data-live-events=\"0\">"),
            "the template's initial state"
        );
        assert!(js.contains("const panels = [makePanel(0), makePanel(1)];"));
        assert!(js.contains("p.root.dataset.state = state;"));
        assert!(js.contains("p.root.dataset.liveEvents = String(p.live);"));
        // Every state the script sets is one of the documented ones, and the
        // ones that are not the resting states have a colour.
        let documented = ["idle", "connecting", "open", "retry", "error", "closed"];
        for (at, _) in js.match_indices("setStatus(") {
            let call = &js[at..at + js[at..].find(";\n").expect("call end")];
            if call.starts_with("setStatus(p, text, state)") {
                continue;
            }
            let state = call
                .rsplit('\'')
                .nth(1)
                .unwrap_or_else(|| panic!("no literal state: {call}"));
            assert!(documented.contains(&state), "{state} in {call}");
        }
        for state in ["connecting", "open", "retry", "error"] {
            assert!(
                css.contains(&format!(".panel[data-state=\"{state}\"]")),
                "no style for {state}"
            );
        }
        // The user's own stops are `closed`; the rest of the stops are `error`.
        assert!(js.contains("stopAll('disconnected by user', 'closed')"));
        assert!(js.contains("stop(p, 'token forgotten', 'closed')"));
        assert!(js.contains("setStatus(p, 'stopped: ' + reason, state || 'error')"));
        // Each panel has its own session, ticket and reconnect loop.
        assert!(js.contains("p.session = { panel: p, token"));
        assert!(js.contains("function isCurrent(s) { return s === s.panel.session; }"));
        assert!(!js.contains("let session"), "no page-wide session");
        // The fragment names the second stream, and never carries the token back.
        for needle in [
            "f.set('also', second.kind)",
            "f.set('alsokey', second.key)",
            "frag.get('alsokey')",
        ] {
            assert!(js.contains(needle), "{needle}");
        }
        assert!(!js.contains("f.set('token'"));
    }

    #[tokio::test]
    async fn a_stream_that_does_not_open_is_explained() {
        let app = new_app(AppConfig::default());
        let (_, _, js) = get(&app, "/console.js").await;
        // The browser queues a stream past its connections with no error:
        // after SLOW_OPEN_MS the panel says what is pending, and why on HTTP/1.1.
        assert!(js.contains("const SLOW_OPEN_MS = 8000;"));
        let start = js.find("async function open(s) {").expect("open");
        let end = start + js[start..].find("\n  }\n").expect("end of open");
        let open = &js[start..end];
        assert!(
            open.contains("watchSlowOpen(s, 'the ticket request');"),
            "{open}"
        );
        assert!(
            open.contains("watchSlowOpen(s, 'the stream request');"),
            "{open}"
        );
        let start = js.find("function watchSlowOpen(").expect("watchSlowOpen");
        let end = start + js[start..].find("\n  }\n").expect("end of watchSlowOpen");
        let watch = &js[start..end];
        for needle in [
            "if (!isCurrent(s) || s.opened) return;",
            "HTTP/1.1",
            "at most 6 connections",
            "over HTTPS",
            "'connecting')",
        ] {
            assert!(watch.contains(needle), "{needle}: {watch}");
        }
        // Cleared wherever the wait ends: opened, failed, retried, torn down.
        for function in ["function teardown(", "function onError(", "function retry("] {
            let start = js.find(function).expect(function);
            let end = start + js[start..].find("\n  }\n").expect("function end");
            assert!(
                js[start..end].contains("clearTimeout(s.slow);"),
                "{function} clears the slow-open timer"
            );
        }
        assert!(js.contains("s.opened = true;\n      clearTimeout(s.slow);"));
    }

    #[tokio::test]
    async fn script_listens_to_every_dashboard_event_name() {
        let app = new_app(AppConfig::default());
        let (_, _, js) = get(&app, "/console.js").await;
        for name in [
            "snapshot",
            "resync",
            "observation",
            "fingerprint.rotated",
            "attacker.scored",
            "attribution.state_changed",
            "attribution.multi_actor_suspected",
            "formed",
            "observation.linked",
            "merged",
            "unmerged",
            "campaign.assigned",
            "identity.assigned",
            "traffic",
            "file",
            "email",
            "mutation.enqueued",
            "mutation.applying",
            "mutation.applied",
            "mutation.failed",
            "status",
            "decky.service_added",
            "decky.service_removed",
            "decky.state",
            "message",
        ] {
            assert!(js.contains(&format!("'{name}'")), "{name}");
        }
        for path in [
            "/attackers/",
            "/identities/events",
            "/campaigns/events",
            "/orchestrator/events/stream",
            "/topologies/",
            "/stream",
            "/auth/sse-ticket",
        ] {
            assert!(js.contains(path), "{path}");
        }
    }

    #[tokio::test]
    async fn console_routes_are_get_only_and_follow_the_switch() {
        let app = new_app(AppConfig::default());
        for path in ["/", "/console.js", "/console.css"] {
            let (status, headers, _) = request(&app, Method::POST, path).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
            assert_eq!(header(&headers, "allow"), "GET", "{path}");
        }
        let (status, _, _) = get(&app, "/console.html").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let off = new_app(AppConfig {
            console: false,
            ..AppConfig::default()
        });
        for path in ["/", "/console.js", "/console.css"] {
            let (status, _, _) = get(&off, path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            let request = Request::get(path).body(()).expect("request");
            assert!(!off.serves(&request), "{path}");
        }
    }

    #[tokio::test]
    async fn console_metrics_use_the_templates() {
        let app = new_app(AppConfig::default());
        let _ = get(&app, "/console.js").await;
        let _ = get(&app, "/console.css").await;
        let text = app.metrics_text();
        assert!(text.contains("route=\"/console.js\""), "{text}");
        assert!(text.contains("route=\"/console.css\""), "{text}");
    }
}
