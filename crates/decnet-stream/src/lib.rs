//! The stream core of decnet-events: every live stream of DECNET's dashboard
//! as one kind among several, on one hub.
//!
//! What it is: a [`StreamHub`] that owns the process-wide bus subscriptions
//! (the union of every [`StreamKind`]'s patterns, each once), routes each
//! event through one index keyed by kind and stream key (attacker uuid,
//! topology id, or the kind-wide key of the firehose streams) and by followed
//! identity, encodes it into an SSE frame **once** per kind, and hands the
//! same [`bytes::Bytes`] to every [`EventStream`] that wants it. Each stream
//! is a `futures::Stream<Item = Bytes>` ready to be used as an HTTP body:
//! keepalive comment and `retry:` hint, the snapshot (or the missed frames
//! from the key's replay ring when resuming), live frames, idle keepalives,
//! `resync` after a lagged queue, and an `error` frame on failure or when its
//! session ends ([`SessionWatch`]).
//! What it is not: an HTTP layer. There are no HTTP types here; the HTTP
//! crate decides status codes, headers and authentication.
//!
//! The kinds ([`kinds`]): [`AttackerKind`] (`/attackers/{uuid}/events`),
//! [`IdentitiesKind`], [`CampaignsKind`], [`OrchestratorKind`] and
//! [`TopologyKind`]; [`decnet_kinds`] builds all five over one repository.
//! Adding a kind is one module implementing [`StreamKind`] and one entry in
//! that list.
//!
//! Work per bus event is proportional to the number of streams that receive
//! it: an event for a key nobody watches costs one hash lookup.
//!
//! Main types: [`StreamHub`], [`StreamKind`], [`Route`], [`HubConfig`],
//! [`OpenOptions`], [`EventStream`], [`SessionCheck`], [`SessionWatch`],
//! [`HubStats`].

#[cfg(feature = "ablation")]
mod ablation;
mod config;
mod frames;
mod hub;
mod index;
mod kind;
pub mod kinds;
mod logs;
mod queue;
mod registry;
mod session;
mod stats;
mod stream;

#[cfg(feature = "ablation")]
pub use ablation::SubscriptionMode;
pub use config::HubConfig;
pub use frames::{
    INTERRUPTED, SESSION_EXPIRED, lagged_resync_frame, live_frame, named_frame, snapshot_frame,
};
pub use hub::{OpenError, OpenOptions, StreamHub};
pub use kind::{KIND_WIDE_KEY, KeyInfo, KindId, Rekey, Route, StreamKind};
pub use kinds::{
    AttackerKind, CampaignsKind, IdentitiesKind, OrchestratorKind, TopologyKind, decnet_kinds,
};
pub use logs::{LOGS_INTERRUPTED, LogConfig, LogHub, LogHubStats, LogParams, lax_int};
pub use session::{SessionCheck, SessionEnd, SessionVerdict, SessionWatch};
pub use stats::{HubStats, KindStats, OTHER_EVENT};
pub use stream::EventStream;
