//! `GET /api/v1/topologies/{topology_id}/events`: one MazeNET topology.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use decnet_bus::Event;
use decnet_repo::{MutationRow, RepoError, TopologyReader};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;

use crate::frames::snapshot_frame;
use crate::kind::{KeyInfo, Route, StreamKind, payload_str};

/// The topology stream: `topology.<id>.>` (lifecycle: status, mutations) and
/// `decky.>` events whose `payload.topology_id` is the stream's topology
/// (fleet deckies carry none and are dropped); snapshot = status and the
/// in-flight mutations. One `topology.>` subscription serves every topology.
pub struct TopologyKind {
    reader: Arc<dyn TopologyReader>,
}

impl TopologyKind {
    /// The kind, reading topologies from `reader`.
    pub fn new(reader: Arc<dyn TopologyReader>) -> Self {
        Self { reader }
    }
}

#[derive(Serialize)]
struct Snapshot<'a> {
    topology_id: &'a str,
    status: &'a str,
    in_flight: &'a [MutationRow],
}

/// DECNET's naming: split the topic into at most three parts; fewer than
/// three is the topic itself; `decky.<name>.<tail>` is `decky.<tail>`;
/// otherwise `<tail>` (`topology.T.mutation.applied` -> `mutation.applied`).
pub(crate) fn topology_event_name(topic: &str) -> Cow<'_, str> {
    let mut parts = topic.splitn(3, '.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("decky"), Some(_), Some(tail)) => Cow::Owned(format!("decky.{tail}")),
        (Some(_), Some(_), Some(tail)) => Cow::Borrowed(tail),
        _ => Cow::Borrowed(topic),
    }
}

/// The topology ids a `topology.*` topic can belong to: DECNET subscribes
/// `topology.<id>.>` per stream, so `topology.a.b.status` is for id `a` and
/// for id `a.b` (ids are path strings and may contain dots).
fn topology_keys(topic: &str) -> Vec<Cow<'_, str>> {
    let Some(rest) = topic.strip_prefix("topology.") else {
        return Vec::new();
    };
    rest.match_indices('.')
        .map(|(dot, _)| Cow::Borrowed(&rest[..dot]))
        .filter(|key| !key.is_empty())
        .collect()
}

impl StreamKind for TopologyKind {
    fn name(&self) -> &'static str {
        "topology"
    }

    fn patterns(&self) -> &'static [&'static str] {
        &["topology.>", "decky.>"]
    }

    fn route<'e>(&self, event: &'e Event) -> Route<'e> {
        let topic = event.topic.as_str();
        if topic.starts_with("decky.") {
            match payload_str(event, "topology_id") {
                Some(id) => Route::Keys(vec![Cow::Borrowed(id)]),
                None => Route::Drop,
            }
        } else {
            let keys = topology_keys(topic);
            if keys.is_empty() {
                Route::Drop
            } else {
                Route::Keys(keys)
            }
        }
    }

    fn event_name<'t>(&self, topic: &'t str) -> Cow<'t, str> {
        topology_event_name(topic)
    }

    fn known_event_names(&self) -> &'static [&'static str] {
        &[
            "mutation.enqueued",
            "mutation.applying",
            "mutation.applied",
            "mutation.failed",
            "status",
            "decky.service_added",
            "decky.service_removed",
        ]
    }

    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyInfo>, RepoError>> {
        async move {
            Ok(self
                .reader
                .topology_snapshot(key)
                .await?
                .map(|_| KeyInfo::default()))
        }
        .boxed()
    }

    fn snapshot<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, RepoError>> {
        async move {
            Ok(self.reader.topology_snapshot(key).await?.map(|snapshot| {
                snapshot_frame(&Snapshot {
                    topology_id: key,
                    status: &snapshot.status,
                    in_flight: &snapshot.in_flight,
                })
            }))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_decnet() {
        for (topic, name) in [
            ("topology.T.status", "status"),
            ("topology.T.mutation.applied", "mutation.applied"),
            ("topology.T.mutation.enqueued", "mutation.enqueued"),
            ("decky.web01.service_added", "decky.service_added"),
            ("decky.web01.state", "decky.state"),
            (
                "decky.web01.service_config_changed",
                "decky.service_config_changed",
            ),
            ("topology.T", "topology.T"),
            ("decky.x", "decky.x"),
        ] {
            assert_eq!(topology_event_name(topic), name, "{topic}");
        }
    }

    #[test]
    fn keys_of_a_topic() {
        assert_eq!(topology_keys("topology.T.status"), ["T"]);
        assert_eq!(topology_keys("topology.a.b.status"), ["a", "a.b"]);
        assert!(topology_keys("topology.T").is_empty());
        assert!(topology_keys("other.T.x").is_empty());
    }

    #[test]
    fn routes() {
        let kind = TopologyKind::new(Arc::new(decnet_repo::MemoryRepository::new()));
        let mut payload = serde_json::Map::new();
        payload.insert("topology_id".into(), "T1".into());
        let decky = Event::new("decky.web01.service_added", "", payload);
        assert_eq!(kind.route(&decky), Route::Keys(vec![Cow::Borrowed("T1")]));
        let fleet = Event::new("decky.web01.service_added", "", serde_json::Map::new());
        assert_eq!(kind.route(&fleet), Route::Drop);
        let status = Event::new("topology.T2.status", "", serde_json::Map::new());
        assert_eq!(kind.route(&status), Route::Keys(vec![Cow::Borrowed("T2")]));
    }
}
