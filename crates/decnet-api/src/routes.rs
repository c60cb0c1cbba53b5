//! Which route a request is: dispatch, allowed methods and metric labels.

use http::Method;

/// DECNET's streams, by the kind name the stream hub knows them by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamRoute {
    /// `GET /api/v1/attackers/{attacker_uuid}/events`
    Attacker,
    /// `GET /api/v1/identities/events`
    Identities,
    /// `GET /api/v1/campaigns/events`
    Campaigns,
    /// `GET /api/v1/orchestrator/events/stream`
    Orchestrator,
    /// `GET /api/v1/topologies/{topology_id}/events`
    Topology,
}

impl StreamRoute {
    /// The stream hub's kind name.
    pub fn kind(self) -> &'static str {
        match self {
            StreamRoute::Attacker => "attacker",
            StreamRoute::Identities => "identities",
            StreamRoute::Campaigns => "campaigns",
            StreamRoute::Orchestrator => "orchestrator",
            StreamRoute::Topology => "topology",
        }
    }

    /// The 404 detail when the path parameter names nothing.
    pub fn not_found(self) -> &'static str {
        match self {
            StreamRoute::Attacker => "Attacker not found",
            StreamRoute::Topology => "Topology not found",
            _ => "Not Found",
        }
    }
}

/// The console page's two assets (served only with the page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsoleAsset {
    /// `GET /console.js`
    Script,
    /// `GET /console.css`
    Style,
}

/// One route of the API, with its path parameter (percent-decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /`: the console page.
    Console,
    /// `GET /console.js`, `GET /console.css`: the page's script and style.
    ConsoleAsset(ConsoleAsset),
    /// `GET /healthz`
    Healthz,
    /// `GET /readyz`
    Readyz,
    /// `GET /metrics`
    Metrics,
    /// `POST /api/v1/auth/sse-ticket`
    Ticket,
    /// A bus-fed stream and its key (`""` for the kind-wide streams).
    Stream(StreamRoute, String),
    /// `GET /api/v1/stream`: logs, stats and histogram.
    Logs,
    /// Anything else.
    NotFound,
}

/// `/api/v1/<prefix>{param}<suffix>` with one non-empty segment as param.
fn param<'a>(path: &'a str, prefix: &str, suffix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)?
        .strip_suffix(suffix)
        .filter(|p| !p.is_empty() && !p.contains('/'))
}

impl Route {
    /// The route of `raw_path` (the request's path, percent-encoded as sent).
    pub fn parse(raw_path: &str) -> Route {
        let path = percent_encoding::percent_decode_str(raw_path).decode_utf8_lossy();
        match &*path {
            "/" => Route::Console,
            "/console.js" => Route::ConsoleAsset(ConsoleAsset::Script),
            "/console.css" => Route::ConsoleAsset(ConsoleAsset::Style),
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" => Route::Metrics,
            "/api/v1/auth/sse-ticket" => Route::Ticket,
            "/api/v1/stream" => Route::Logs,
            "/api/v1/identities/events" => Route::Stream(StreamRoute::Identities, String::new()),
            "/api/v1/campaigns/events" => Route::Stream(StreamRoute::Campaigns, String::new()),
            "/api/v1/orchestrator/events/stream" => {
                Route::Stream(StreamRoute::Orchestrator, String::new())
            }
            p => {
                if let Some(uuid) = param(p, "/api/v1/attackers/", "/events") {
                    Route::Stream(StreamRoute::Attacker, uuid.to_owned())
                } else if let Some(id) = param(p, "/api/v1/topologies/", "/events") {
                    Route::Stream(StreamRoute::Topology, id.to_owned())
                } else {
                    Route::NotFound
                }
            }
        }
    }

    /// The route template, for metric labels (never the raw path).
    pub fn label(&self) -> &'static str {
        match self {
            Route::Console => "/",
            Route::ConsoleAsset(ConsoleAsset::Script) => "/console.js",
            Route::ConsoleAsset(ConsoleAsset::Style) => "/console.css",
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::Ticket => "/api/v1/auth/sse-ticket",
            Route::Logs => "/api/v1/stream",
            Route::Stream(StreamRoute::Attacker, _) => "/api/v1/attackers/{attacker_uuid}/events",
            Route::Stream(StreamRoute::Identities, _) => "/api/v1/identities/events",
            Route::Stream(StreamRoute::Campaigns, _) => "/api/v1/campaigns/events",
            Route::Stream(StreamRoute::Orchestrator, _) => "/api/v1/orchestrator/events/stream",
            Route::Stream(StreamRoute::Topology, _) => "/api/v1/topologies/{topology_id}/events",
            Route::NotFound => "unmatched",
        }
    }

    /// The methods the route answers.
    pub fn allowed(&self) -> &'static [Method] {
        match self {
            Route::Ticket => &[Method::POST],
            Route::NotFound => &[],
            _ => &[Method::GET],
        }
    }

    /// Whether the route is one of the operations endpoints (`/healthz`,
    /// `/readyz`, `/metrics`).
    pub fn is_ops(&self) -> bool {
        matches!(self, Route::Healthz | Route::Readyz | Route::Metrics)
    }

    /// Whether the route is the console page or one of its assets (served
    /// only when `AppConfig::console` is on).
    pub fn is_console(&self) -> bool {
        matches!(self, Route::Console | Route::ConsoleAsset(_))
    }

    /// Every route template the API serves (the OpenAPI check reads this).
    pub fn templates() -> &'static [&'static str] {
        &[
            "/",
            "/console.js",
            "/console.css",
            "/healthz",
            "/readyz",
            "/metrics",
            "/api/v1/auth/sse-ticket",
            "/api/v1/stream",
            "/api/v1/attackers/{attacker_uuid}/events",
            "/api/v1/identities/events",
            "/api/v1/campaigns/events",
            "/api/v1/orchestrator/events/stream",
            "/api/v1/topologies/{topology_id}/events",
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(route: StreamRoute, key: &str) -> Route {
        Route::Stream(route, key.to_owned())
    }

    #[test]
    fn routes() {
        assert_eq!(
            Route::parse("/api/v1/attackers/abc/events"),
            stream(StreamRoute::Attacker, "abc")
        );
        assert_eq!(Route::parse("/api/v1/attackers//events"), Route::NotFound);
        assert_eq!(
            Route::parse("/api/v1/attackers/a/b/events"),
            Route::NotFound
        );
        assert_eq!(
            Route::parse("/api/v1/attackers/a%20b/events"),
            stream(StreamRoute::Attacker, "a b")
        );
        assert_eq!(
            Route::parse("/api/v1/attackers/a%2Fb/events"),
            Route::NotFound
        );
        assert_eq!(
            Route::parse("/api/v1/topologies/T-1/events"),
            stream(StreamRoute::Topology, "T-1")
        );
        assert_eq!(
            Route::parse("/api/v1/identities/events"),
            stream(StreamRoute::Identities, "")
        );
        assert_eq!(
            Route::parse("/api/v1/campaigns/events"),
            stream(StreamRoute::Campaigns, "")
        );
        assert_eq!(
            Route::parse("/api/v1/orchestrator/events/stream"),
            stream(StreamRoute::Orchestrator, "")
        );
        assert_eq!(Route::parse("/api/v1/stream"), Route::Logs);
        assert_eq!(Route::parse("/api/v1/auth/sse-ticket"), Route::Ticket);
        assert_eq!(Route::parse("/nope"), Route::NotFound);
        assert_eq!(Route::parse("/"), Route::Console);
        assert_eq!(
            Route::parse("/console.js"),
            Route::ConsoleAsset(ConsoleAsset::Script)
        );
        assert_eq!(
            Route::parse("/console.css"),
            Route::ConsoleAsset(ConsoleAsset::Style)
        );
        assert_eq!(Route::parse("/console.html"), Route::NotFound);
        assert_eq!(Route::parse("/console.js/x"), Route::NotFound);
        assert_eq!(Route::parse("/api/v1/identities/x"), Route::NotFound);
    }

    #[test]
    fn labels_are_templates() {
        for path in [
            "/api/v1/attackers/x/events",
            "/api/v1/topologies/y/events",
            "/",
            "/console.js",
            "/console.css",
            "/zzz",
        ] {
            let label = Route::parse(path).label();
            assert!(
                label == "unmatched" || Route::templates().contains(&label),
                "{label}"
            );
        }
    }
}
