//! The access log: one `tracing` event per request (target
//! `decnet_events::access`), secrets redacted, hostile characters escaped,
//! optionally sampled or silenced per route.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};

use crate::query;

/// Access log settings (`DECNET_ACCESS_LOG`, `DECNET_ACCESS_LOG_SAMPLE`,
/// `DECNET_ACCESS_LOG_SKIP`).
#[derive(Debug, Clone)]
pub struct AccessLog {
    /// Whether requests are logged at all.
    pub enabled: bool,
    /// Log one request in `every` (1 = all). Errors (status >= 400) are
    /// always logged.
    pub every: u64,
    /// Route templates never logged (e.g. `/healthz`, `/metrics`).
    pub skip: Vec<String>,
    counter: Arc<AtomicU64>,
}

impl Default for AccessLog {
    fn default() -> Self {
        Self::new(true, 1, Vec::new())
    }
}

impl AccessLog {
    /// Settings: on or off, one in `every`, routes to skip.
    pub fn new(enabled: bool, every: u64, skip: Vec<String>) -> Self {
        Self {
            enabled,
            every: every.max(1),
            skip,
            counter: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Log one request to `route` (a template, or `upstream`) (never the Authorization header, never a ticket or
    /// token value).
    #[allow(clippy::too_many_arguments, reason = "one field per log field")]
    pub(crate) fn record(
        &self,
        route: &'static str,
        peer: Option<SocketAddr>,
        method: &Method,
        path: &str,
        query: Option<&str>,
        status: StatusCode,
        latency: Duration,
    ) {
        if !self.enabled || self.skip.iter().any(|s| s == route) {
            return;
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        if self.every > 1 && !n.is_multiple_of(self.every) && status.as_u16() < 400 {
            return;
        }
        let peer = peer.map_or_else(|| "-".to_owned(), |p| p.to_string());
        tracing::info!(
            target: "decnet_events::access",
            peer = %peer,
            method = %method,
            path = %escape(path),
            query = %escape(&query::redacted(query)),
            status = status.as_u16(),
            latency_ms = latency.as_secs_f64() * 1000.0,
            "request"
        );
    }
}

/// Whether `c` must not reach a log line raw: controls, and the Unicode
/// bidirectional overrides and isolates that reorder what a reader sees.
fn hostile(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every hostile character written as `\u{XXXX}`.
pub(crate) fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(hostile) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hostile(c) {
            out.push_str(&format!("\\u{{{:04x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_overrides_are_escaped() {
        assert_eq!(escape("/api/v1/x"), "/api/v1/x");
        assert_eq!(escape("/a\nb\u{1b}[31m"), "/a\\u{000a}b\\u{001b}[31m");
        assert_eq!(escape("/evil\u{202e}gpj.exe"), "/evil\\u{202e}gpj.exe");
        assert_eq!(escape("/\u{2066}x\u{2069}"), "/\\u{2066}x\\u{2069}");
        assert_eq!(escape("/café"), "/café");
    }
}
