//! [`StreamKind`]: what makes one of DECNET's streams what it is.
//!
//! A kind says which bus patterns it needs, how an event is routed to its
//! streams, what an event is called on the wire, how its snapshot is loaded,
//! and whether a stream key exists (the 404). Everything else (one
//! subscription set for all kinds, the routing index, encode-once frames, the
//! replay ring per stream key, lag and resync, keepalives, session expiry,
//! shutdown) is the hub's and is the same for every kind. Adding a kind is one
//! module implementing this trait and one entry in the list the hub is
//! started with.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use decnet_bus::Event;
use decnet_repo::RepoError;
use futures::future::BoxFuture;

/// Where a bus event goes, among the streams of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'e> {
    /// To the streams opened on one of these keys (a payload key, or a path
    /// parameter read from the topic). Several candidates when a key may
    /// itself contain dots (topology ids).
    Keys(Vec<Cow<'e, str>>),
    /// To the streams whose key currently follows this identity (the
    /// attacker stream's `attribution.*`).
    Followers(&'e str),
    /// To every stream of the kind (their one key is [`KIND_WIDE_KEY`]).
    All,
    /// Not a frame: the event changes which identity keys follow
    /// ([`StreamKind::rekeys`]).
    Rekey,
    /// Not for this kind's streams.
    Drop,
}

/// The key of the single stream family of a kind without a path parameter
/// (identities, campaigns, orchestrator): they share one replay ring.
pub const KIND_WIDE_KEY: &str = "";

/// What opening a stream on a key needs to know, read before the stream is
/// registered (so the answer can be a 404 before any slot is taken).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyInfo {
    /// The identity this key's streams follow (attacker streams), if any.
    pub identity: Option<String>,
}

/// A change to which identity an attacker key follows, from an `identity.*`
/// event (the attacker stream's live re-keying).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rekey {
    /// `key` now follows `identity`.
    Follow {
        /// The stream key (an attacker uuid).
        key: String,
        /// The identity it follows from now on.
        identity: String,
    },
    /// Every key following `loser` now follows `winner`.
    Merge {
        /// The identity merged away.
        loser: String,
        /// The identity that remains.
        winner: String,
    },
    /// The identity came back (`identity.unmerged`): which attacker keys
    /// follow it must be read again from the repository
    /// ([`StreamKind::followers_of`]).
    Resurrect {
        /// The resurrected identity.
        identity: String,
    },
}

/// One of DECNET's stream families (attackers, identities, campaigns,
/// orchestrator, topologies; `/stream` is served by the log poller instead).
///
/// Implementations hold their repository reader; every method is cheap except
/// the futures, which read the repository.
pub trait StreamKind: Send + Sync + 'static {
    /// A short name for metrics and logs: `attacker`, `identities`, ...
    fn name(&self) -> &'static str;

    /// The bus patterns this kind needs. The hub subscribes to the union of
    /// every kind's patterns, each pattern once.
    fn patterns(&self) -> &'static [&'static str];

    /// Where `event` (whose topic matched one of [`StreamKind::patterns`]) goes.
    fn route<'e>(&self, event: &'e Event) -> Route<'e>;

    /// The SSE `event:` name of a live frame for `topic`.
    fn event_name<'t>(&self, topic: &'t str) -> Cow<'t, str>;

    /// The event names this kind's clients know (the dashboard's listeners);
    /// metrics label every other name `other`, so a bus publisher cannot make
    /// the label set grow.
    fn known_event_names(&self) -> &'static [&'static str];

    /// Whether `key` exists, and what its streams need to know. `Ok(None)`
    /// answers 404. Kinds without a path parameter answer `Some` for
    /// [`KIND_WIDE_KEY`].
    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyInfo>, RepoError>>;

    /// The snapshot frame for `key`, read after the stream is registered (so
    /// nothing published meanwhile is lost). `Ok(None)` when the key vanished
    /// in between (the stream then ends with an error frame).
    fn snapshot<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, RepoError>>;

    /// For [`Route::Rekey`] events: the identity changes they carry.
    fn rekeys(&self, _event: &Event) -> Vec<Rekey> {
        Vec::new()
    }

    /// For [`Rekey::Resurrect`]: the keys that follow `identity` now, read
    /// from the repository.
    fn followers_of<'a>(
        &'a self,
        _identity: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, RepoError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// The position of a kind in the hub's list (cheap to copy into the index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KindId(pub(crate) u8);

impl fmt::Display for KindId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kind#{}", self.0)
    }
}

/// A payload string field.
pub(crate) fn payload_str<'e>(event: &'e Event, key: &str) -> Option<&'e str> {
    event.payload.get(key).and_then(serde_json::Value::as_str)
}
