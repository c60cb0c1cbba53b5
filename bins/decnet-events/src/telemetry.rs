//! Logging and tracing: the only place a subscriber is installed.
//!
//! Logs go to stderr through `tracing-subscriber`, filtered by `RUST_LOG`,
//! as text or one JSON object per line (`DECNET_LOG_FORMAT=json`: the same
//! fields, the same redaction, since secrets are removed before a value is
//! ever recorded).
//! With the `otel` feature (on by default) and `OTEL_EXPORTER_OTLP_ENDPOINT`
//! set, spans (`api.attackers.events`, `api.sse_ticket`, ...) are also
//! exported over OTLP/HTTP; the exporter reads the standard `OTEL_*`
//! variables itself. Without the endpoint, nothing is exported and nothing
//! is said about it.

use std::io::IsTerminal as _;

use decnet_api::settings::LogFormat;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Default filter when `RUST_LOG` is unset: our crates at info, the rest at warn.
const DEFAULT_FILTER: &str = "warn,decnet_events=info,decnet_api=info,decnet_stream=info,decnet_bus=info,decnet_auth=info,decnet_repo=info";

/// Flushes exported spans when dropped at the end of `main`.
pub(crate) struct Guard {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::debug!(%error, "OpenTelemetry shutdown");
        }
    }
}

#[cfg(feature = "otel")]
fn otel_provider() -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    let endpoint_set = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|var| std::env::var(var).is_ok_and(|v| !v.trim().is_empty()));
    if !endpoint_set {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("decnet-events: OpenTelemetry export disabled: {error}");
            return None;
        }
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("decnet-events")
        .build();
    Some(
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    )
}

/// Install the tracing subscriber. Keep the guard alive until exit.
pub(crate) fn init(format: LogFormat) -> Guard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let (text, json) = match format {
        LogFormat::Text => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    // Colours on a terminal only: systemd appends stderr to
                    // a file under /var/log/decnet.
                    .with_ansi(std::io::stderr().is_terminal()),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json);
    #[cfg(feature = "otel")]
    {
        use opentelemetry::trace::TracerProvider as _;
        let provider = otel_provider();
        let layer = provider
            .as_ref()
            .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("decnet-events")));
        // A second init (subcommands, tests) is harmless: keep the first.
        let _ = registry.with(layer).try_init();
        Guard { provider }
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = registry.try_init();
        Guard {}
    }
}
