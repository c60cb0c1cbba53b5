//! The event envelope: [`Event`], its wire encoding and its lenient decoder.

use std::fmt;
use std::marker::PhantomData;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The largest body [`Event::decode`] accepts by default: 1 MiB, as DECNET.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;

/// The envelope version this crate writes.
pub const ENVELOPE_VERSION: u32 = 1;

/// One bus event: the envelope every DECNET publisher writes.
///
/// On the wire it is the JSON object
/// `{"v":1,"id":"<hex uuid>","topic":"..","type":"..","ts":<float>,"payload":{..}}`
/// (see [`Event::to_json`]). On receipt the topic comes from the transport's
/// subject, never from the body (see [`Event::decode`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Envelope version (`1`).
    pub v: u32,
    /// Event id: a random UUID v4 as 32 lowercase hex characters when this
    /// crate creates it; whatever string the publisher sent otherwise.
    pub id: String,
    /// The topic (NATS subject / Redis channel) the event was published on.
    pub topic: String,
    /// The event type (`"type"` on the wire); `""` when absent.
    pub event_type: String,
    /// Publication time in seconds since the Unix epoch.
    pub ts: f64,
    /// The event body; always a JSON object.
    pub payload: Map<String, Value>,
}

/// Why a received body was not turned into an [`Event`].
///
/// The bus drops such a body, logs it and counts it
/// ([`crate::CountersSnapshot::decode_failures`]); the subscription goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body has no bytes at all.
    #[error("empty message body")]
    Empty,
    /// The body is larger than the configured maximum.
    #[error("message body of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Size of the body in bytes.
        size: usize,
        /// The maximum in force.
        max: usize,
    },
    /// The body is not valid JSON (or not valid UTF-8).
    #[error("message body is not valid JSON: {0}")]
    NotJson(String),
    /// The body is JSON, but not an object (an array, a string, a number...).
    #[error("message body is not a JSON object")]
    NotAnObject,
    /// The `payload` field is present and not an object or `null`.
    #[error("payload is not a JSON object")]
    PayloadNotObject,
}

/// A fresh event id: a random UUID v4 as 32 lowercase hex characters.
pub fn new_event_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Seconds since the Unix epoch, as a float (0.0 if the clock is before 1970).
pub fn now_ts() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The wire shape written by [`Event::to_json`]; the field order is the wire order.
#[derive(Serialize)]
struct WireOut<'a> {
    v: u32,
    id: &'a str,
    topic: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    ts: f64,
    payload: &'a Map<String, Value>,
}

/// The wire shape read by [`Event::decode`]: every field optional and lenient.
/// `topic` is deliberately absent, so a body's `topic` is ignored.
#[derive(Deserialize)]
struct WireIn {
    #[serde(default)]
    v: Lenient<u32>,
    #[serde(default)]
    id: Lenient<String>,
    #[serde(default, rename = "type")]
    event_type: Lenient<String>,
    #[serde(default)]
    ts: Lenient<f64>,
    #[serde(default)]
    payload: Option<Value>,
}

impl Event {
    /// A new event on `topic`, with a fresh id, `ts` = now and `v` = 1.
    ///
    /// The topic is not validated here; [`crate::Bus::publish_event`] does that.
    pub fn new(
        topic: impl Into<String>,
        event_type: impl Into<String>,
        payload: Map<String, Value>,
    ) -> Event {
        Event {
            v: ENVELOPE_VERSION,
            id: new_event_id(),
            topic: topic.into(),
            event_type: event_type.into(),
            ts: now_ts(),
            payload,
        }
    }

    /// The wire JSON of this event:
    /// `{"v":1,"id":"..","topic":"..","type":"..","ts":..,"payload":{..}}`.
    ///
    /// A non-finite `ts` is written as `null` (receivers then use their own clock).
    pub fn to_json(&self) -> Vec<u8> {
        let wire = WireOut {
            v: self.v,
            id: &self.id,
            topic: &self.topic,
            event_type: &self.event_type,
            ts: self.ts,
            payload: &self.payload,
        };
        // Serializing string fields, a float and a string-keyed map into a Vec
        // cannot fail; the fallback only exists so this function cannot panic.
        serde_json::to_vec(&wire).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// Decode a received body into an event, DECNET-compatibly.
    ///
    /// - The topic is always `subject` (the transport's subject or channel);
    ///   a `topic` field in the body is ignored, so a publisher cannot spoof it.
    /// - Missing fields get DECNET's defaults: `payload` `{}` (also when
    ///   `null`), `type` `""`, `v` 1, `ts` now, `id` a fresh random hex uuid.
    /// - Lenient typing: an optional field of the wrong JSON type is treated as
    ///   missing and defaulted (`"ts": "abc"` -> now, `"type": 5` -> `""`,
    ///   `"v": -1` -> 1). An `id` that is empty or contains a control character
    ///   (it ends up in an SSE `id:` line) is replaced by a fresh one. `ts`
    ///   may be an integer. Only `payload` is strict (see errors).
    /// - Parsed with simd-json on a private copy of `body`.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Empty`] for an empty body, [`DecodeError::TooLarge`] when
    /// `body.len() > max_bytes`, [`DecodeError::NotJson`] for invalid JSON,
    /// [`DecodeError::NotAnObject`] for JSON that is not an object, and
    /// [`DecodeError::PayloadNotObject`] for a `payload` that is neither an
    /// object nor `null`.
    pub fn decode(subject: &str, body: &[u8], max_bytes: usize) -> Result<Event, DecodeError> {
        if body.is_empty() {
            return Err(DecodeError::Empty);
        }
        if body.len() > max_bytes {
            return Err(DecodeError::TooLarge {
                size: body.len(),
                max: max_bytes,
            });
        }
        let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
        if first != Some(b'{') {
            // Tell "valid JSON of another kind" from "not JSON" (rare path).
            return match serde_json::from_slice::<IgnoredAny>(body) {
                Ok(_) => Err(DecodeError::NotAnObject),
                Err(err) => Err(DecodeError::NotJson(err.to_string())),
            };
        }
        let mut copy = body.to_vec();
        let wire: WireIn = simd_json::serde::from_slice(&mut copy)
            .map_err(|err| DecodeError::NotJson(err.to_string()))?;
        let payload = match wire.payload {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => return Err(DecodeError::PayloadNotObject),
        };
        let id = match wire.id.0 {
            Some(id) if !id.is_empty() && !id.chars().any(char::is_control) => id,
            _ => new_event_id(),
        };
        Ok(Event {
            v: wire.v.0.unwrap_or(ENVELOPE_VERSION),
            id,
            topic: subject.to_owned(),
            event_type: wire.event_type.0.unwrap_or_default(),
            ts: wire.ts.0.filter(|ts| ts.is_finite()).unwrap_or_else(now_ts),
            payload,
        })
    }
}

// === lenient field decoding ===

/// A field that decodes to `Some` when the JSON value has a usable type and to
/// `None` (later defaulted) otherwise, consuming whatever value is there.
struct Lenient<T>(Option<T>);

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Lenient(None)
    }
}

/// Conversions from JSON scalars a lenient field accepts.
trait FromScalar: Sized {
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_str(_: &str) -> Option<Self> {
        None
    }
}

impl FromScalar for u32 {
    fn from_u64(n: u64) -> Option<Self> {
        u32::try_from(n).ok()
    }
    fn from_i64(n: i64) -> Option<Self> {
        u32::try_from(n).ok()
    }
}

impl FromScalar for f64 {
    #[allow(clippy::cast_precision_loss, reason = "epoch seconds fit an f64")]
    fn from_u64(n: u64) -> Option<Self> {
        Some(n as f64)
    }
    #[allow(clippy::cast_precision_loss, reason = "epoch seconds fit an f64")]
    fn from_i64(n: i64) -> Option<Self> {
        Some(n as f64)
    }
    fn from_f64(n: f64) -> Option<Self> {
        Some(n)
    }
}

impl FromScalar for String {
    fn from_str(s: &str) -> Option<Self> {
        Some(s.to_owned())
    }
}

struct LenientVisitor<T>(PhantomData<T>);

impl<'de, T: FromScalar> Visitor<'de> for LenientVisitor<T> {
    type Value = Lenient<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        Ok(Lenient(T::from_i64(n)))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Lenient(T::from_u64(n)))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
        Ok(Lenient(T::from_f64(n)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Lenient(T::from_str(s)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Lenient(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Lenient(None))
    }
}

impl<'de, T: FromScalar> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LenientVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MAX: usize = DEFAULT_MAX_MESSAGE_BYTES;

    fn decode(body: &str) -> Result<Event, DecodeError> {
        Event::decode("a.b", body.as_bytes(), MAX)
    }

    fn ok(body: &str) -> Event {
        match decode(body) {
            Ok(event) => event,
            Err(err) => panic!("{body}: {err}"),
        }
    }

    fn check_err(body: &str, expected: &DecodeError) {
        assert_eq!(decode(body).as_ref().err(), Some(expected), "{body}");
    }

    fn is_hex_id(id: &str) -> bool {
        id.len() == 32
            && id
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    }

    #[test]
    fn new_event_fields() {
        let event = Event::new("a.b", "t", Map::new());
        assert_eq!(event.v, 1);
        assert!(is_hex_id(&event.id), "{}", event.id);
        assert!(event.ts > 1.6e9);
        assert_ne!(event.id, Event::new("a.b", "t", Map::new()).id);
    }

    #[test]
    fn round_trip_and_wire_order() {
        let mut payload = Map::new();
        payload.insert("k".into(), json!([1, "x", {"y": null}]));
        let event = Event {
            v: 1,
            id: "0123456789abcdef0123456789abcdef".into(),
            topic: "a.b".into(),
            event_type: "kind".into(),
            ts: 1_700_000_000.5,
            payload,
        };
        let json = String::from_utf8(event.to_json()).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"v":1,"id":"0123456789abcdef0123456789abcdef","topic":"a.b","type":"kind","ts":1700000000.5,"payload":{"k":[1,"x",{"y":null}]}}"#
        );
        assert_eq!(ok(&json), event);
    }

    #[test]
    fn defaults_for_missing_fields() {
        let before = now_ts();
        let event = ok("{}");
        assert_eq!(event.v, 1);
        assert!(is_hex_id(&event.id));
        assert_eq!(event.topic, "a.b");
        assert_eq!(event.event_type, "");
        assert!(event.ts >= before && event.ts <= now_ts());
        assert!(event.payload.is_empty());
    }

    #[test]
    fn null_payload_is_empty_object() {
        assert!(ok(r#"{"payload": null}"#).payload.is_empty());
    }

    #[test]
    fn topic_comes_from_subject() {
        let event = ok(r#"{"topic": "spoofed.topic", "type": "x"}"#);
        assert_eq!(event.topic, "a.b");
        assert_eq!(event.event_type, "x");
    }

    #[test]
    fn ts_integer_and_float() {
        assert_eq!(ok(r#"{"ts": 1700000000}"#).ts, 1_700_000_000.0);
        assert_eq!(ok(r#"{"ts": 1700000000.25}"#).ts, 1_700_000_000.25);
        assert_eq!(ok(r#"{"ts": -5}"#).ts, -5.0);
    }

    #[test]
    fn wrong_typed_fields_default() {
        let before = now_ts();
        let event = ok(
            r#"{"v": "one", "id": 7, "type": 5, "ts": "abc", "payload": {"a": 1}, "extra": [1,2]}"#,
        );
        assert_eq!(event.v, 1);
        assert!(is_hex_id(&event.id));
        assert_eq!(event.event_type, "");
        assert!(event.ts >= before);
        assert_eq!(event.payload.get("a"), Some(&json!(1)));

        let event = ok(r#"{"v": -1, "id": {"x": [1]}, "type": [1, {"a": 2}], "ts": null}"#);
        assert_eq!(event.v, 1);
        assert!(is_hex_id(&event.id));
        assert_eq!(event.event_type, "");
        assert!(event.ts >= before);
        assert_eq!(ok(r#"{"v": 2}"#).v, 2);
        assert_eq!(ok(r#"{"v": 99999999999}"#).v, 1);
        assert_eq!(ok(r#"{"type": true}"#).event_type, "");
        assert_eq!(ok(r#"{"ts": false}"#).payload, Map::new());
    }

    #[test]
    fn id_kept_or_replaced() {
        assert_eq!(ok(r#"{"id": "given-id"}"#).id, "given-id");
        assert!(is_hex_id(&ok(r#"{"id": ""}"#).id));
        assert!(is_hex_id(&ok(r#"{"id": "a\nid: x"}"#).id));
    }

    #[test]
    fn errors() {
        assert_eq!(
            Event::decode("a.b", b"", MAX).err(),
            Some(DecodeError::Empty)
        );
        assert_eq!(
            Event::decode("a.b", b"{}", 1).err(),
            Some(DecodeError::TooLarge { size: 2, max: 1 })
        );
        assert!(matches!(decode("not json"), Err(DecodeError::NotJson(_))));
        assert!(matches!(decode("{\"a\": "), Err(DecodeError::NotJson(_))));
        assert!(matches!(decode("{oops}"), Err(DecodeError::NotJson(_))));
        assert!(matches!(decode("   "), Err(DecodeError::NotJson(_))));
        assert!(matches!(
            Event::decode("a.b", b"{\"type\": \"\xff\"}", MAX),
            Err(DecodeError::NotJson(_))
        ));
        check_err("[1, 2]", &DecodeError::NotAnObject);
        check_err(" \"str\"", &DecodeError::NotAnObject);
        check_err("42", &DecodeError::NotAnObject);
        check_err("null", &DecodeError::NotAnObject);
        check_err(r#"{"payload": [1]}"#, &DecodeError::PayloadNotObject);
        check_err(r#"{"payload": "x"}"#, &DecodeError::PayloadNotObject);
        check_err(r#"{"payload": 3}"#, &DecodeError::PayloadNotObject);
        check_err(r#"{"payload": true}"#, &DecodeError::PayloadNotObject);
    }

    #[test]
    fn size_limit_is_inclusive() {
        let body = br#"{"type":"x"}"#;
        assert!(Event::decode("a.b", body, body.len()).is_ok());
        assert!(Event::decode("a.b", body, body.len() - 1).is_err());
    }

    #[test]
    fn error_messages_are_lowercase() {
        for err in [
            DecodeError::Empty,
            DecodeError::NotAnObject,
            DecodeError::PayloadNotObject,
        ] {
            let msg = err.to_string();
            assert!(msg.starts_with(|c: char| c.is_lowercase()), "{msg}");
            assert!(!msg.ends_with('.'));
        }
    }
}
