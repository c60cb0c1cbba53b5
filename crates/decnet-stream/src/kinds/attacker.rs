//! `GET /api/v1/attackers/{attacker_uuid}/events`: one attacker's behaviour.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use decnet_bus::Event;
use decnet_repo::{AttackerReader, Observation, RepoError};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;

use crate::frames::snapshot_frame;
use crate::kind::{KeyInfo, Rekey, Route, StreamKind, payload_str};

/// The patterns of the attacker stream, in the order DECNET subscribes them,
/// plus `identity.>` for live re-keying.
const PATTERNS: &[&str] = &decnet_topics::ATTACKER_STREAM_PATTERNS;

/// The names DECNET's dashboard listens for on this stream.
const KNOWN: &[&str] = &[
    "observation",
    "fingerprint.rotated",
    "attacker.scored",
    "attribution.state_changed",
    "attribution.multi_actor_suspected",
];

/// The attacker stream: `attacker.*` events whose `payload.attacker_uuid` is
/// the stream's attacker, `attribution.*` events whose
/// `payload.identity_uuid` is the identity it follows (re-keyed live by
/// `identity.formed`, `identity.observation.linked`, `identity.merged` and
/// `identity.unmerged`); snapshot = the latest observation per primitive.
pub struct AttackerKind {
    reader: Arc<dyn AttackerReader>,
}

impl AttackerKind {
    /// The kind, reading attackers and observations from `reader`.
    pub fn new(reader: Arc<dyn AttackerReader>) -> Self {
        Self { reader }
    }
}

impl std::fmt::Debug for AttackerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttackerKind")
    }
}

fn is_attacker_topic(topic: &str) -> bool {
    topic.starts_with("attacker.observation.")
        || topic == decnet_topics::TOPIC_ATTACKER_FINGERPRINT_ROTATED
        || topic == decnet_topics::TOPIC_ATTACKER_SCORED
}

#[derive(Serialize)]
struct SnapshotObservation<'a> {
    primitive: &'a str,
    value: &'a serde_json::Value,
    confidence: f64,
    ts: f64,
    source: &'a str,
}

#[derive(Serialize)]
struct Snapshot<'a> {
    attacker_uuid: &'a str,
    observations: Vec<SnapshotObservation<'a>>,
}

/// `event: snapshot` with `{"attacker_uuid", "observations": [...]}`,
/// observations in the order given (the repository sorts them by primitive).
pub fn attacker_snapshot_frame(attacker_uuid: &str, observations: &[Observation]) -> Bytes {
    snapshot_frame(&Snapshot {
        attacker_uuid,
        observations: observations
            .iter()
            .map(|o| SnapshotObservation {
                primitive: &o.primitive,
                value: &o.value,
                confidence: o.confidence,
                ts: o.ts,
                source: &o.source,
            })
            .collect(),
    })
}

/// The identity changes an `identity.*` event carries.
pub(crate) fn identity_rekeys(event: &Event) -> Vec<Rekey> {
    match event.topic.as_str() {
        decnet_topics::TOPIC_IDENTITY_FORMED => {
            let Some(identity) = payload_str(event, "identity_uuid") else {
                return Vec::new();
            };
            event
                .payload
                .get("observation_uuids")
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(serde_json::Value::as_str)
                .map(|key| Rekey::Follow {
                    key: key.to_owned(),
                    identity: identity.to_owned(),
                })
                .collect()
        }
        decnet_topics::TOPIC_IDENTITY_OBSERVATION_LINKED => {
            match (
                payload_str(event, "identity_uuid"),
                payload_str(event, "observation_uuid"),
            ) {
                (Some(identity), Some(key)) => vec![Rekey::Follow {
                    key: key.to_owned(),
                    identity: identity.to_owned(),
                }],
                _ => Vec::new(),
            }
        }
        decnet_topics::TOPIC_IDENTITY_MERGED => {
            match (
                payload_str(event, "winner_uuid"),
                payload_str(event, "loser_uuid"),
            ) {
                (Some(winner), Some(loser)) if winner != loser => vec![Rekey::Merge {
                    loser: loser.to_owned(),
                    winner: winner.to_owned(),
                }],
                _ => Vec::new(),
            }
        }
        decnet_topics::TOPIC_IDENTITY_UNMERGED => match payload_str(event, "resurrected_uuid") {
            Some(identity) => vec![Rekey::Resurrect {
                identity: identity.to_owned(),
            }],
            None => Vec::new(),
        },
        _ => Vec::new(),
    }
}

impl StreamKind for AttackerKind {
    fn name(&self) -> &'static str {
        "attacker"
    }

    fn patterns(&self) -> &'static [&'static str] {
        PATTERNS
    }

    fn route<'e>(&self, event: &'e Event) -> Route<'e> {
        let topic = event.topic.as_str();
        if is_attacker_topic(topic) {
            match payload_str(event, "attacker_uuid") {
                Some(key) => Route::Keys(vec![Cow::Borrowed(key)]),
                None => Route::Drop,
            }
        } else if topic.starts_with("attribution.") {
            match payload_str(event, "identity_uuid") {
                Some(identity) => Route::Followers(identity),
                None => Route::Drop,
            }
        } else if topic.starts_with("identity.") {
            Route::Rekey
        } else {
            Route::Drop
        }
    }

    fn event_name<'t>(&self, topic: &'t str) -> Cow<'t, str> {
        Cow::Borrowed(decnet_topics::sse_event_name(topic))
    }

    fn known_event_names(&self) -> &'static [&'static str] {
        KNOWN
    }

    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyInfo>, RepoError>> {
        async move {
            Ok(self
                .reader
                .attacker_by_uuid(key)
                .await?
                .map(|attacker| KeyInfo {
                    identity: attacker.identity_id,
                }))
        }
        .boxed()
    }

    fn snapshot<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, RepoError>> {
        async move {
            let rows = self.reader.latest_observation_per_primitive(key).await?;
            Ok(Some(attacker_snapshot_frame(key, &rows)))
        }
        .boxed()
    }

    fn rekeys(&self, event: &Event) -> Vec<Rekey> {
        identity_rekeys(event)
    }

    fn followers_of<'a>(
        &'a self,
        identity: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, RepoError>> {
        self.reader.attackers_of_identity(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(topic: &str, payload: serde_json::Value) -> Event {
        let serde_json::Value::Object(payload) = payload else {
            panic!("object")
        };
        Event::new(topic, "t", payload)
    }

    #[test]
    fn snapshot_bytes() {
        let obs = Observation {
            id: "1".into(),
            identity_ref: None,
            primitive: "motor.x".into(),
            value: serde_json::json!({"k": [1, "two"]}),
            confidence: 0.5,
            window_start_ts: 0.0,
            window_end_ts: 1.0,
            source: "behave".into(),
            evidence_ref: "e".into(),
            envelope_v: 1,
            ts: 10.0,
            attacker_uuid: "a1".into(),
        };
        assert_eq!(
            &attacker_snapshot_frame("a1", &[obs])[..],
            b"event: snapshot\ndata: {\"attacker_uuid\":\"a1\",\"observations\":[{\"primitive\":\"motor.x\",\"value\":{\"k\":[1,\"two\"]},\"confidence\":0.5,\"ts\":10.0,\"source\":\"behave\"}]}\n\n"
        );
        assert_eq!(
            &attacker_snapshot_frame("a1", &[])[..],
            b"event: snapshot\ndata: {\"attacker_uuid\":\"a1\",\"observations\":[]}\n\n"
        );
    }

    #[test]
    fn rekeys_of_every_identity_event() {
        use serde_json::json;
        let formed = event(
            "identity.formed",
            json!({"identity_uuid": "i", "observation_uuids": ["a", 5, "b"]}),
        );
        assert_eq!(
            identity_rekeys(&formed),
            vec![
                Rekey::Follow {
                    key: "a".into(),
                    identity: "i".into()
                },
                Rekey::Follow {
                    key: "b".into(),
                    identity: "i".into()
                },
            ]
        );
        let linked = event(
            "identity.observation.linked",
            json!({"identity_uuid": "i", "observation_uuid": "a"}),
        );
        assert_eq!(
            identity_rekeys(&linked),
            vec![Rekey::Follow {
                key: "a".into(),
                identity: "i".into()
            }]
        );
        let merged = event(
            "identity.merged",
            json!({"winner_uuid": "w", "loser_uuid": "l"}),
        );
        assert_eq!(
            identity_rekeys(&merged),
            vec![Rekey::Merge {
                loser: "l".into(),
                winner: "w".into()
            }]
        );
        let self_merge = event(
            "identity.merged",
            json!({"winner_uuid": "w", "loser_uuid": "w"}),
        );
        assert!(identity_rekeys(&self_merge).is_empty());
        let unmerged = event(
            "identity.unmerged",
            json!({"resurrected_uuid": "r", "former_winner_uuid": "w"}),
        );
        assert_eq!(
            identity_rekeys(&unmerged),
            vec![Rekey::Resurrect {
                identity: "r".into()
            }]
        );
        assert!(identity_rekeys(&event("identity.campaign.assigned", json!({}))).is_empty());
        assert!(
            identity_rekeys(&event(
                "identity.formed",
                json!({"observation_uuids": ["a"]})
            ))
            .is_empty()
        );
    }

    #[test]
    fn routes() {
        use serde_json::json;
        let kind = AttackerKind::new(Arc::new(decnet_repo::MemoryRepository::new()));
        let scored = event("attacker.scored", json!({"attacker_uuid": "a1"}));
        assert_eq!(kind.route(&scored), Route::Keys(vec![Cow::Borrowed("a1")]));
        let anonymous = event("attacker.scored", json!({"attacker_uuid": 5}));
        assert_eq!(kind.route(&anonymous), Route::Drop);
        let attribution = event("attribution.anything", json!({"identity_uuid": "i"}));
        assert_eq!(kind.route(&attribution), Route::Followers("i"));
        assert_eq!(
            kind.route(&event("identity.merged", json!({}))),
            Route::Rekey
        );
        assert_eq!(
            kind.route(&event("attacker.other", json!({"attacker_uuid": "a1"}))),
            Route::Drop
        );
    }
}
