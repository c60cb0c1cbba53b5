//! The attacker stream core of decnet-events.
//!
//! What it is: a [`StreamHub`] that owns the process-wide bus subscriptions
//! (`attacker.observation.>`, `attacker.fingerprint_rotated`, `attacker.scored`,
//! `attribution.>`, `identity.>`), routes each event through an index keyed by
//! attacker uuid and identity uuid, encodes it into an SSE frame **once**, and
//! hands the same [`bytes::Bytes`] to every [`AttackerStream`] that wants it.
//! Each stream is a `futures::Stream<Item = Bytes>` ready to be used as an HTTP
//! body: keepalive comment and `retry:` hint, the snapshot (or the missed frames
//! from the replay ring when resuming), live frames, idle keepalives, `resync`
//! after a lagged queue, and an `error` frame on failure or session expiry.
//! What it is not: an HTTP layer. There are no HTTP types here; the binary
//! decides status codes, headers and authentication.
//!
//! Work per bus event is proportional to the number of streams that receive
//! it: an event for an attacker nobody watches costs one hash lookup.
//!
//! Main types: [`StreamHub`], [`HubConfig`], [`OpenOptions`], [`AttackerStream`],
//! [`SessionCheck`], [`HubMetrics`].

mod frames;
mod hub;
mod queue;
mod session;
mod stream;

pub use frames::{lagged_resync_frame, live_frame, snapshot_frame};
pub use hub::{HubConfig, HubMetrics, OpenError, OpenOptions, StreamHub, SubscriptionMode};
pub use session::{SessionCheck, SessionVerdict};
pub use stream::AttackerStream;
