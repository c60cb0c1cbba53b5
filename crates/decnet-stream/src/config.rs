//! [`HubConfig`]: the tunables of the hub and of every stream it serves.

use std::time::Duration;

/// Tunables of the hub and of every stream it serves.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Send `: keepalive` after this long without a frame (`DECNET_SSE_KEEPALIVE_SECS`).
    pub keepalive: Duration,
    /// Frames a stream may have queued before it is resynced (`DECNET_SSE_QUEUE_MAX`).
    pub queue_max: usize,
    /// Bytes a stream may have queued before it is resynced
    /// (`DECNET_SSE_QUEUE_MAX_BYTES`; a single larger frame is still sent).
    pub queue_max_bytes: usize,
    /// Live frames kept per stream key for resuming (`DECNET_SSE_REPLAY`).
    pub replay_capacity: usize,
    /// Bytes kept by every replay ring together (`DECNET_SSE_REPLAY_MAX_BYTES`).
    pub replay_max_bytes: usize,
    /// How long a ring outlives the last stream on its key
    /// (`DECNET_SSE_REPLAY_GRACE_SECS`).
    pub replay_grace: Duration,
    /// The reconnect hint sent as `retry:` at the start of every stream.
    pub retry: Duration,
    /// How often an open stream re-checks its session for revocation.
    pub revalidate_every: Duration,
    /// How long a stream stays open while its session cannot be re-checked
    /// (the repository is down) before it ends
    /// (`DECNET_SSE_SESSION_UNVERIFIED_SECS`).
    pub session_unknown_max: Duration,
    /// Shared hub subscriptions (the default) or one set per stream.
    #[cfg(feature = "ablation")]
    pub mode: crate::ablation::SubscriptionMode,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            keepalive: Duration::from_secs(15),
            queue_max: 256,
            queue_max_bytes: 8 << 20,
            replay_capacity: 256,
            replay_max_bytes: 64 << 20,
            replay_grace: Duration::from_secs(300),
            retry: Duration::from_secs(3),
            revalidate_every: Duration::from_secs(10),
            session_unknown_max: Duration::from_secs(300),
            #[cfg(feature = "ablation")]
            mode: crate::ablation::SubscriptionMode::Shared,
        }
    }
}
