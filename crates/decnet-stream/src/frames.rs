//! The SSE frames every stream kind sends, encoded from bus events and rows.

use bytes::Bytes;
use decnet_bus::Event;
use serde::Serialize;

/// `event: error` with `{"message":"Stream interrupted"}`.
pub const INTERRUPTED: &[u8] = b"event: error\ndata: {\"message\":\"Stream interrupted\"}\n\n";
/// `event: error` with `{"message":"Session expired"}`.
pub const SESSION_EXPIRED: &[u8] = b"event: error\ndata: {\"message\":\"Session expired\"}\n\n";

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
/// The data is the envelope minus `v` and `id`: `{"topic","type","ts","payload"}`
/// (every bus stream of DECNET sends this shape). An event id that cannot be
/// sent in an SSE `id:` field (CR, LF or NUL) is left out, so the frame is
/// still delivered (it just cannot be resumed from); an event name that
/// cannot be sent yields the `Stream interrupted` frame (never, for names
/// derived from valid topics).
pub fn live_frame(event: &Event, name: &str) -> Bytes {
    let data = LiveData {
        topic: &event.topic,
        event_type: &event.event_type,
        ts: event.ts,
        payload: &event.payload,
    };
    // Serializing borrowed strings, a finite-or-null float and a JSON map
    // cannot fail; fall back to an empty object rather than panic.
    let json = serde_json::to_vec(&data).unwrap_or_else(|_| b"{}".to_vec());
    decnet_sse::encode_event_json(Some(&event.id), name, &json)
        .or_else(|_| decnet_sse::encode_event_json(None, name, &json))
        .unwrap_or_else(|_| Bytes::from_static(INTERRUPTED))
}

/// Encode `event: snapshot` with `data` serialized as compact JSON.
pub fn snapshot_frame(data: &impl Serialize) -> Bytes {
    named_frame("snapshot", data)
}

/// Encode `event: <name>` with `data` as compact JSON and no id.
pub fn named_frame(name: &str, data: &impl Serialize) -> Bytes {
    let json = serde_json::to_vec(data).unwrap_or_else(|_| b"{}".to_vec());
    decnet_sse::encode_event_json(None, name, &json)
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
        let frame = live_frame(&event("attacker.observation.motor.x", "abc"), "observation");
        assert_eq!(
            &frame[..],
            b"id: abc\nevent: observation\ndata: {\"topic\":\"attacker.observation.motor.x\",\"type\":\"observation\",\"ts\":1767225600.5,\"payload\":{\"attacker_uuid\":\"a1\",\"b\":1}}\n\n"
        );
    }

    #[test]
    fn live_frame_with_unsendable_id_drops_the_id() {
        let frame = live_frame(&event("attacker.scored", "a\nb"), "attacker.scored");
        assert!(frame.starts_with(b"event: attacker.scored\ndata: "));
    }

    #[test]
    fn resync_bytes() {
        assert_eq!(
            &lagged_resync_frame(7)[..],
            b"event: resync\ndata: {\"reason\":\"lagged\",\"dropped\":7}\n\n"
        );
    }
}
