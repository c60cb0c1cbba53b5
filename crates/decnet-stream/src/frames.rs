//! The SSE frames the attacker stream sends, encoded from bus events and rows.

use bytes::Bytes;
use decnet_bus::Event;
use decnet_repo::Observation;
use serde::Serialize;

/// `event: error` with `{"message":"Stream interrupted"}`.
pub(crate) const INTERRUPTED: &[u8] =
    b"event: error\ndata: {\"message\":\"Stream interrupted\"}\n\n";
/// `event: error` with `{"message":"Session expired"}`.
pub(crate) const SESSION_EXPIRED: &[u8] =
    b"event: error\ndata: {\"message\":\"Session expired\"}\n\n";

#[derive(Serialize)]
struct LiveData<'a> {
    topic: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    ts: f64,
    payload: &'a serde_json::Map<String, serde_json::Value>,
}

/// Encode a live bus event as `id: <event id>\nevent: <name>\ndata: <json>\n\n`.
///
/// The data is the envelope minus `v` and `id`: `{"topic","type","ts","payload"}`.
/// The event name comes from [`decnet_topics::sse_event_name`]. An event id
/// that cannot be sent in an SSE `id:` field (CR, LF or NUL) is left out, so the
/// frame is still delivered (it just cannot be resumed from).
pub fn live_frame(event: &Event) -> Bytes {
    let data = LiveData {
        topic: &event.topic,
        event_type: &event.event_type,
        ts: event.ts,
        payload: &event.payload,
    };
    // Serializing borrowed strings, a finite-or-null float and a JSON map
    // cannot fail; fall back to an empty object rather than panic.
    let json = serde_json::to_vec(&data).unwrap_or_else(|_| b"{}".to_vec());
    let name = decnet_topics::sse_event_name(&event.topic);
    decnet_sse::encode_event_json(Some(&event.id), name, &json)
        .or_else(|_| decnet_sse::encode_event_json(None, name, &json))
        .unwrap_or_else(|_| Bytes::from_static(INTERRUPTED))
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
struct SnapshotData<'a> {
    attacker_uuid: &'a str,
    observations: Vec<SnapshotObservation<'a>>,
}

/// Encode `event: snapshot` with `{"attacker_uuid", "observations": [...]}`,
/// observations in the order given (the repository sorts them by primitive).
pub fn snapshot_frame(attacker_uuid: &str, observations: &[Observation]) -> Bytes {
    let data = SnapshotData {
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
    };
    let json = serde_json::to_vec(&data).unwrap_or_else(|_| b"{}".to_vec());
    decnet_sse::encode_event_json(None, "snapshot", &json)
        .unwrap_or_else(|_| Bytes::from_static(INTERRUPTED))
}

/// Encode `event: resync` with `{"reason":"lagged","dropped":<n>}`.
pub fn lagged_resync_frame(dropped: u64) -> Bytes {
    let json = format!("{{\"reason\":\"lagged\",\"dropped\":{dropped}}}");
    decnet_sse::encode_event_json(None, "resync", json.as_bytes())
        .unwrap_or_else(|_| Bytes::from_static(INTERRUPTED))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(topic: &str, id: &str) -> Event {
        let mut payload = serde_json::Map::new();
        payload.insert("attacker_uuid".into(), "a1".into());
        payload.insert("b".into(), 1.into());
        Event {
            v: 1,
            id: id.into(),
            topic: topic.into(),
            event_type: "observation".into(),
            ts: 1767225600.5,
            payload,
        }
    }

    #[test]
    fn live_frame_bytes() {
        let frame = live_frame(&event("attacker.observation.motor.x", "abc"));
        assert_eq!(
            &frame[..],
            b"id: abc\nevent: observation\ndata: {\"topic\":\"attacker.observation.motor.x\",\"type\":\"observation\",\"ts\":1767225600.5,\"payload\":{\"attacker_uuid\":\"a1\",\"b\":1}}\n\n"
        );
    }

    #[test]
    fn live_frame_with_unsendable_id_drops_the_id() {
        let frame = live_frame(&event("attacker.scored", "a\nb"));
        assert!(frame.starts_with(b"event: attacker.scored\ndata: "));
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
            &snapshot_frame("a1", &[obs])[..],
            b"event: snapshot\ndata: {\"attacker_uuid\":\"a1\",\"observations\":[{\"primitive\":\"motor.x\",\"value\":{\"k\":[1,\"two\"]},\"confidence\":0.5,\"ts\":10.0,\"source\":\"behave\"}]}\n\n"
        );
        assert_eq!(
            &snapshot_frame("a1", &[])[..],
            b"event: snapshot\ndata: {\"attacker_uuid\":\"a1\",\"observations\":[]}\n\n"
        );
    }

    #[test]
    fn resync_bytes() {
        assert_eq!(
            &lagged_resync_frame(7)[..],
            b"event: resync\ndata: {\"reason\":\"lagged\",\"dropped\":7}\n\n"
        );
    }
}
