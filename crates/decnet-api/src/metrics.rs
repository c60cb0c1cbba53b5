//! The `/metrics` endpoint: Prometheus text from prometheus-client.
//!
//! Request-level metrics are registered metrics updated by the server;
//! everything the libraries count (hub, bus, tickets, limiter) is read at
//! scrape time by a collector, so the hot paths only touch their own atomics.
//! Every label value is from a fixed set (route templates, result names,
//! each stream kind's known event names or `other`): nothing a client or a
//! bus publisher sends becomes a label.

use std::sync::Arc;

use decnet_auth::{ConnectionLimiter, TicketStore};
use decnet_bus::{Bus, ConnectionState};
use decnet_stream::StreamHub;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::breaker::RepositoryBreaker;

/// Labels of the request latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    /// The route template (`/api/v1/attackers/{uuid}/events`), never the raw path.
    pub(crate) route: &'static str,
    /// The response status code.
    pub(crate) status: u16,
}

/// Labels of the stream-open counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    /// The stream kind (`attacker`, `identities`, ..., `logs`).
    pub(crate) kind: &'static str,
    /// `ok`, `unauthorized`, `forbidden`, `not_found`, `limited`, `invalid`,
    /// `unavailable`, `error`.
    pub(crate) result: &'static str,
}

/// Labels of the pass-through counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct UpstreamLabels {
    /// `answered`, `unreachable`, `timeout`, `bad_response`, `upgrade_refused`.
    pub(crate) result: &'static str,
}

/// Labels of the HTTP/1.1 stream counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct WriterLabels {
    /// `own` (written by the connection task after the hand-over) or `hyper`.
    pub(crate) writer: &'static str,
}

/// The server's own metrics plus a view of the libraries' counters.
pub struct Metrics {
    registry: Registry,
    /// Request latency (time to response head; streams count until their headers).
    pub(crate) request_seconds: Family<RouteLabels, Histogram>,
    /// Stream open attempts by result.
    pub(crate) streams_opened: Family<ResultLabels, Counter>,
    /// Requests forwarded to DECNET's API, by how they ended.
    pub(crate) upstream_requests: Family<UpstreamLabels, Counter>,
    /// HTTP/1.1 streams by who wrote them.
    pub(crate) http1_streams: Family<WriterLabels, Counter>,
    /// Connections `serve` holds now.
    pub(crate) connections_open: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Build the registry with the live views of `hub`, `bus`, `tickets`,
    /// `limiter` and `breaker`.
    pub(crate) fn new(
        hub: StreamHub,
        bus: Bus,
        tickets: Arc<dyn TicketStore>,
        limiter: ConnectionLimiter,
        breaker: RepositoryBreaker,
        extra: Vec<Box<dyn Collector>>,
    ) -> Self {
        let mut registry = Registry::default();
        let request_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
        });
        registry.register(
            "decnet_http_request_duration_seconds",
            "HTTP request latency until the response head, by route and status",
            request_seconds.clone(),
        );
        let streams_opened = Family::<ResultLabels, Counter>::default();
        registry.register(
            "decnet_sse_streams_opened",
            "Stream open attempts by kind and result",
            streams_opened.clone(),
        );
        let upstream_requests = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "decnet_upstream_requests",
            "Requests forwarded to DECNET's API (DECNET_EVENTS_UPSTREAM), by result",
            upstream_requests.clone(),
        );
        let http1_streams = Family::<WriterLabels, Counter>::default();
        registry.register(
            "decnet_sse_http1_streams",
            "HTTP/1.1 streams by writer: own (the connection task, after the hand-over from hyper) or hyper (DECNET_SSE_HTTP1_HANDOVER=false, HTTP/1.0, Connection: close, a request with a body, or a socket still busy with the previous response)",
            http1_streams.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "decnet_http_connections_open",
            "Connections held now by serve() (plain, HTTPS and HTTP/2 alike), from accept to close; capped by DECNET_MAX_CONNECTIONS",
            connections_open.clone(),
        );
        registry.register_collector(Box::new(LiveView {
            hub,
            bus,
            tickets,
            limiter,
            breaker,
        }));
        for collector in extra {
            registry.register_collector(collector);
        }
        Self {
            registry,
            request_seconds,
            streams_opened,
            upstream_requests,
            http1_streams,
            connections_open,
        }
    }

    /// Count an HTTP/1.1 stream by its writer.
    pub(crate) fn http1_stream(&self, writer: &'static str) {
        self.http1_streams
            .get_or_create(&WriterLabels { writer })
            .inc();
    }

    /// Count a stream open attempt.
    pub(crate) fn stream_result(&self, kind: &'static str, result: &'static str) {
        self.streams_opened
            .get_or_create(&ResultLabels { kind, result })
            .inc();
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

struct LiveView {
    hub: StreamHub,
    bus: Bus,
    tickets: Arc<dyn TicketStore>,
    limiter: ConnectionLimiter,
    breaker: RepositoryBreaker,
}

/// The queries made through the service's repository, by read.
pub(crate) struct RepositoryView(pub(crate) decnet_repo::QueryCounts);

impl std::fmt::Debug for RepositoryView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepositoryView").finish_non_exhaustive()
    }
}

impl Collector for RepositoryView {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let rows: Vec<_> = self
            .0
            .all()
            .into_iter()
            .map(|(read, n)| (vec![("read", read.name())], n))
            .collect();
        labelled_counter(
            &mut encoder,
            "decnet_repository_queries",
            "Queries made to the database, by read (the repository method)",
            &rows,
        )
    }
}

impl std::fmt::Debug for LiveView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveView").finish_non_exhaustive()
    }
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// A counter family; each row is its label pairs (fixed strings) and value.
fn labelled_counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(Vec<(&'static str, &'static str)>, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, count) in rows {
        ConstCounter::new(*count).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

/// A gauge family; each row is its label pairs (fixed strings) and value.
fn labelled_gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(Vec<(&'static str, &'static str)>, i64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for LiveView {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let hub = self.hub.stats();
        let e = &mut encoder;
        gauge(
            e,
            "decnet_sse_streams_active",
            "Streams open now (every kind)",
            gauge_of(hub.streams_active),
        )?;
        let by_kind: Vec<_> = hub
            .kinds
            .iter()
            .map(|k| (vec![("kind", k.kind)], gauge_of(k.streams_active)))
            .collect();
        labelled_gauge(
            e,
            "decnet_sse_streams_active_by_kind",
            "Streams open now, by kind",
            &by_kind,
        )?;
        gauge(
            e,
            "decnet_sse_connection_slots_used",
            "Connection slots held",
            i64::try_from(self.limiter.active()).unwrap_or(i64::MAX),
        )?;
        gauge(
            e,
            "decnet_sse_tracked_keys",
            "Stream keys (attackers, topologies, firehoses) with open streams or a live replay ring",
            gauge_of(hub.tracked_keys),
        )?;
        gauge(
            e,
            "decnet_sse_replay_bytes",
            "Bytes held by every replay ring",
            gauge_of(hub.ring_bytes),
        )?;
        let frames: Vec<_> = hub
            .kinds
            .iter()
            .flat_map(|k| {
                k.frames_by_event
                    .iter()
                    .map(|(name, n)| (vec![("kind", k.kind), ("event", *name)], *n))
            })
            .collect();
        labelled_counter(
            e,
            "decnet_sse_frames_sent",
            "Live frames delivered to streams, by kind and SSE event name (unknown names: other)",
            &frames,
        )?;
        counter(
            e,
            "decnet_sse_frames_encoded",
            "Live frames encoded (once per event and kind)",
            hub.frames_encoded,
        )?;
        counter(
            e,
            "decnet_sse_frames_dropped",
            "Frames dropped from lagging streams",
            hub.frames_dropped,
        )?;
        counter(
            e,
            "decnet_sse_resyncs",
            "Resyncs sent to lagging streams",
            hub.resyncs,
        )?;
        counter(
            e,
            "decnet_sse_resumed",
            "Streams resumed from a replay ring",
            hub.resumed,
        )?;
        counter(
            e,
            "decnet_sse_replay_skipped",
            "Live frames not kept for replay (byte budget spent)",
            hub.ring_skipped,
        )?;
        counter(
            e,
            "decnet_sse_sessions_expired",
            "Streams ended by session expiry or revocation",
            hub.sessions_expired,
        )?;
        counter(
            e,
            "decnet_sse_identity_rekeys",
            "Identity re-keys applied to tracked attackers",
            hub.rekeys,
        )?;
        counter(
            e,
            "decnet_hub_events_received",
            "Bus events received by the stream hub",
            hub.events_received,
        )?;
        counter(
            e,
            "decnet_hub_events_unrouted",
            "Bus events no stream wanted",
            hub.events_unrouted,
        )?;

        let bus = self.bus.counters();
        counter(
            e,
            "decnet_bus_events_received",
            "Bus messages received (all subscriptions)",
            bus.received,
        )?;
        counter(
            e,
            "decnet_bus_decode_failures",
            "Bus messages dropped as malformed",
            bus.decode_failures,
        )?;
        counter(
            e,
            "decnet_bus_invalid_topics",
            "Bus messages dropped because their subject is not a valid topic",
            bus.invalid_topics,
        )?;
        counter(
            e,
            "decnet_bus_dropped",
            "Bus messages dropped by full subscriber queues",
            bus.dropped,
        )?;
        counter(e, "decnet_bus_published", "Events published", bus.published)?;
        counter(
            e,
            "decnet_bus_publish_failures",
            "Publishes that failed",
            bus.publish_failures,
        )?;
        let connected = i64::from(self.bus.state() == ConnectionState::Connected);
        gauge(
            e,
            "decnet_bus_connected",
            "1 when the bus is connected",
            connected,
        )?;

        let breaker = self.breaker.counters();
        gauge(
            e,
            "decnet_repository_up",
            "1 while the repository answers its probes (the circuit breaker is closed)",
            i64::from(breaker.up),
        )?;
        counter(
            e,
            "decnet_repository_fast_fails",
            "Repository calls refused at once (or cut short) because the breaker was open",
            breaker.fast_fails,
        )?;
        let trips: Vec<_> = breaker
            .trips_by_cause()
            .map(|(cause, n)| (vec![("cause", cause.label())], n))
            .collect();
        labelled_counter(
            e,
            "decnet_repository_trips",
            "Times the repository's circuit breaker opened, by cause",
            &trips,
        )?;

        let tickets = self.tickets.counters();
        counter(
            e,
            "decnet_tickets_minted",
            "SSE tickets minted",
            tickets.minted,
        )?;
        counter(
            e,
            "decnet_tickets_refused",
            "SSE ticket mints refused by the per-user or total cap",
            tickets.refused,
        )?;
        gauge(
            e,
            "decnet_tickets_live",
            "Live SSE tickets held (memory store)",
            gauge_of(tickets.live),
        )?;
        labelled_counter(
            e,
            "decnet_tickets_redeemed",
            "SSE ticket redemptions by result",
            &[
                (vec![("result", "ok")], tickets.redeemed_ok),
                (vec![("result", "unknown")], tickets.redeemed_unknown),
                (vec![("result", "expired")], tickets.redeemed_expired),
                (vec![("result", "forged")], tickets.redeemed_forged),
            ],
        )?;
        counter(
            e,
            "decnet_ticket_store_failures",
            "Ticket store operations that failed",
            tickets.failures,
        )?;
        Ok(())
    }
}
