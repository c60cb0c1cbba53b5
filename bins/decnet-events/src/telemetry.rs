//! Logging and tracing: the only place a subscriber is installed.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Default filter when `RUST_LOG` is unset: our crates at info, the rest at warn.
const DEFAULT_FILTER: &str =
    "warn,decnet_events=info,decnet_stream=info,decnet_bus=info,decnet_auth=info,decnet_repo=info";

/// Install the tracing subscriber (fmt to stderr, filtered by `RUST_LOG`).
pub(crate) fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // A second init (tests, subcommands) is harmless: keep the first.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
}
