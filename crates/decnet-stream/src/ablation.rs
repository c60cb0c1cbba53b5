//! The benchmark ablation (feature `ablation`): every stream subscribes to
//! the bus on its own and filters and encodes every event itself, as DECNET's
//! Python service does. It exists to measure what the shared hub buys; it is
//! not compiled into production builds.

use std::sync::Arc;

use decnet_bus::Bus;
use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::config::HubConfig;
use crate::frames::live_frame;
use crate::kind::{KeyInfo, Route, StreamKind};
use crate::queue::{FrameQueue, Pushed};
use crate::registry::Shared;
use crate::stats::add;
use crate::stream::Driver;

/// How streams get their events from the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubscriptionMode {
    /// One set of bus subscriptions per process; each event is routed through
    /// the index and encoded once. The production mode.
    #[default]
    Shared,
    /// Each stream subscribes to its kind's patterns on its own and filters
    /// every event itself, encoding its own frames. No replay ring and no
    /// live identity re-keying in this mode.
    PerConnection,
}

/// Aborts a task when dropped (the per-connection pump of a stream).
pub(crate) struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// In per-connection mode, give `driver` a pump of its own.
pub(crate) fn attach(
    driver: &mut Driver,
    bus: &Bus,
    kind: &Arc<dyn StreamKind>,
    key: &Arc<str>,
    info: &KeyInfo,
    config: &HubConfig,
) {
    if config.mode != SubscriptionMode::PerConnection || bus.kind().is_null() {
        return;
    }
    let queue = driver.queue();
    let shared = Arc::downgrade(driver.shared());
    driver._pump = Some(AbortOnDrop(tokio::spawn(pump(
        bus.clone(),
        kind.clone(),
        key.clone(),
        info.identity.clone(),
        queue,
        shared,
    ))));
}

async fn pump(
    bus: Bus,
    kind: Arc<dyn StreamKind>,
    key: Arc<str>,
    identity: Option<String>,
    queue: Arc<FrameQueue>,
    shared: std::sync::Weak<Shared>,
) {
    let mut subscriptions = Vec::new();
    for pattern in kind.patterns() {
        match bus.subscribe(pattern).await {
            Ok(subscription) => subscriptions.push(subscription),
            Err(error) => {
                tracing::warn!(%pattern, %error, "per-connection subscribe failed");
                return;
            }
        }
    }
    let mut merged = futures::stream::select_all(subscriptions);
    while let Some(event) = merged.next().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        add(&shared.counters.events_received, 1);
        let wanted = match kind.route(&event) {
            Route::Keys(keys) => keys.iter().any(|k| **k == *key),
            Route::Followers(id) => identity.as_deref() == Some(id),
            Route::All => key.is_empty(),
            Route::Rekey | Route::Drop => false,
        };
        if !wanted {
            continue;
        }
        let name = kind.event_name(&event.topic);
        add(&shared.counters.frames_encoded, 1);
        add(&shared.counters.frames_enqueued, 1);
        if let Pushed::Lagged(n) = queue.push(live_frame(&event, &name)) {
            add(&shared.counters.frames_dropped, n);
        }
    }
}
