//! The collector's view of a wire event, borrowed from the decompressed body.
//!
//! [`tern_protocol::Event`] owns its strings and holds `properties` as a `BTreeMap` of
//! `serde_json::Value`s: a `String` per name, id, key and string value, a tree node per entry.
//! At saturation those allocations were a third of the collector's CPU (docs/BENCHMARKS.md,
//! *Cost per event*). [`DecodedEvent`] reads the same JSON into strings that point into the
//! body (copied only when they hold escapes) and properties as sorted vectors. It accepts and
//! refuses exactly what `Event` does, with the same messages, and its properties serialize to
//! the same bytes as `Event`'s: keys in byte order, the last of duplicate keys kept, numbers
//! and strings as `Value` writes them (the tests below hold it to that). Properties whose text
//! is already in that form, as the SDKs send them, are not parsed into a tree at all: they are
//! kept as the text (see [`EventProperties`]).

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};
use tern_protocol::limits::properties_depth;
use tern_protocol::Event;
use uuid::Uuid;

use crate::error::RequestError;

/// One event of a batch as the collector parses it: [`tern_protocol::Event`]'s fields, its
/// strings borrowed from the body.
#[derive(Debug, Deserialize)]
pub struct DecodedEvent<'a> {
    /// See [`Event::event_id`].
    pub event_id: Uuid,
    /// See [`Event::seq`].
    pub seq: u64,
    /// See [`Event::name`].
    #[serde(borrow)]
    pub name: JsonStr<'a>,
    /// See [`Event::created_at`].
    #[serde(with = "tern_protocol::wire::rfc3339")]
    pub created_at: DateTime<Utc>,
    /// See [`Event::uptime_ms`].
    #[serde(default)]
    pub uptime_ms: Option<u64>,
    /// See [`Event::clock_id`].
    #[serde(default, borrow)]
    pub clock_id: Option<JsonStr<'a>>,
    /// See [`Event::properties`].
    #[serde(default, borrow)]
    pub properties: EventProperties<'a>,
    /// See [`Event::user_id`].
    #[serde(default, borrow)]
    pub user_id: Option<JsonStr<'a>>,
    /// See [`Event::session_id`].
    #[serde(default, borrow)]
    pub session_id: Option<JsonStr<'a>>,
}

/// What validation and enrichment read of an event, from the wire type or the borrowed one.
pub trait EventFields {
    /// The event's id.
    fn event_id(&self) -> Uuid;
    /// Its `seq`.
    fn seq(&self) -> u64;
    /// Its name.
    fn name(&self) -> &str;
    /// Device wall clock at `track()`.
    fn created_at(&self) -> DateTime<Utc>;
    /// Monotonic milliseconds at `track()`.
    fn uptime_ms(&self) -> Option<u64>;
    /// Its monotonic clock's id.
    fn clock_id(&self) -> Option<&str>;
    /// The identified user.
    fn user_id(&self) -> Option<&str>;
    /// The session.
    fn session_id(&self) -> Option<&str>;
    /// Nesting depth of the properties (the object itself is depth 1).
    fn properties_depth(&self) -> usize;
    /// Appends the properties as JSON, exactly as `serde_json` writes `Event::properties`.
    fn write_properties(&self, out: &mut Vec<u8>) -> Result<(), RequestError>;
    /// The event as the wire type (for refused events and dead letters, which are rare).
    fn to_event(&self) -> Event;
}

impl EventFields for Event {
    fn event_id(&self) -> Uuid {
        self.event_id
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    fn uptime_ms(&self) -> Option<u64> {
        self.uptime_ms
    }
    fn clock_id(&self) -> Option<&str> {
        self.clock_id.as_deref()
    }
    fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }
    fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }
    fn properties_depth(&self) -> usize {
        properties_depth(&self.properties)
    }
    fn write_properties(&self, out: &mut Vec<u8>) -> Result<(), RequestError> {
        serde_json::to_writer(out, &self.properties).map_err(RequestError::unserializable)
    }
    fn to_event(&self) -> Event {
        self.clone()
    }
}

impl EventFields for DecodedEvent<'_> {
    fn event_id(&self) -> Uuid {
        self.event_id
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    fn uptime_ms(&self) -> Option<u64> {
        self.uptime_ms
    }
    fn clock_id(&self) -> Option<&str> {
        self.clock_id.as_deref()
    }
    fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }
    fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }
    fn properties_depth(&self) -> usize {
        match &self.properties {
            EventProperties::Canonical { depth, .. } => *depth,
            EventProperties::Parsed(properties) => 1 + properties.max_value_depth(),
        }
    }
    fn write_properties(&self, out: &mut Vec<u8>) -> Result<(), RequestError> {
        match &self.properties {
            EventProperties::Canonical { json, .. } => {
                out.extend_from_slice(json.as_bytes());
                Ok(())
            }
            EventProperties::Parsed(properties) => {
                serde_json::to_writer(out, properties).map_err(RequestError::unserializable)
            }
        }
    }
    fn to_event(&self) -> Event {
        let owned = |s: &Option<JsonStr<'_>>| s.as_deref().map(str::to_owned);
        Event {
            event_id: self.event_id,
            seq: self.seq,
            name: self.name.to_string(),
            created_at: self.created_at,
            uptime_ms: self.uptime_ms,
            clock_id: owned(&self.clock_id),
            properties: self.properties.to_map(),
            user_id: owned(&self.user_id),
            session_id: owned(&self.session_id),
        }
    }
}

impl From<Event> for DecodedEvent<'static> {
    /// The wire type's event as the collector's, its strings and properties owned.
    fn from(event: Event) -> Self {
        let owned = |s: Option<String>| s.map(|s| JsonStr(Cow::Owned(s)));
        Self {
            event_id: event.event_id,
            seq: event.seq,
            name: JsonStr(Cow::Owned(event.name)),
            created_at: event.created_at,
            uptime_ms: event.uptime_ms,
            clock_id: owned(event.clock_id),
            properties: EventProperties::Parsed(Properties::from_map(event.properties)),
            user_id: owned(event.user_id),
            session_id: owned(event.session_id),
        }
    }
}

/// An event's `properties` as the collector holds them.
#[derive(Debug, Clone, PartialEq)]
pub enum EventProperties<'a> {
    /// Their text as it came, already what serializing them would write (keys sorted and
    /// unique, no whitespace, numbers and strings in serde_json's form; see
    /// [`super::canonical`]): copied into the record as it is, never parsed into a tree.
    Canonical {
        /// The JSON object, borrowed from the body.
        json: &'a str,
        /// Its nesting depth (the object itself is depth 1).
        depth: usize,
    },
    /// Anything else (keys out of order or repeated, whitespace…), parsed, to be serialized
    /// again.
    Parsed(Properties<'a>),
}

impl Default for EventProperties<'_> {
    fn default() -> Self {
        Self::Parsed(Properties::default())
    }
}

impl EventProperties<'_> {
    fn to_map(&self) -> Map<String, Value> {
        match self {
            // Canonical text is JSON the parse reads (super::canonical's tests hold it to
            // that); were it ever refused, the text is kept under a key, not dropped.
            Self::Canonical { json, .. } => serde_json::from_str(json).unwrap_or_else(|_| {
                Map::from_iter([("_tern_unread".to_owned(), Value::String((*json).to_owned()))])
            }),
            Self::Parsed(properties) => properties.to_map(),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for EventProperties<'a> {
    /// The value's text is taken whole (serde_json checks its syntax while skipping it, without
    /// building anything), then kept as it is if canonical, else parsed as [`Properties`]. A
    /// value the parse refuses gets that parse's message, with a position within the value:
    /// the batch's parse reads such a body again as the wire type for the message it answers.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let json = <&'de RawValue>::deserialize(d)?.get();
        Ok(match super::canonical::depth(json) {
            Some(depth) => Self::Canonical { json, depth },
            None => Self::Parsed(serde_json::from_str(json).map_err(de::Error::custom)?),
        })
    }
}

/// A JSON string, borrowed from the input unless it held escapes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct JsonStr<'a>(pub Cow<'a, str>);

impl std::ops::Deref for JsonStr<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JsonStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for JsonStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(JsonStrVisitor)
    }
}

struct JsonStrVisitor;

impl<'de> Visitor<'de> for JsonStrVisitor {
    type Value = JsonStr<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        // As `String`'s visitor: the messages of refused batches stay what they were.
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(JsonStr(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(JsonStr(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(JsonStr(Cow::Owned(v)))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        match std::str::from_utf8(v) {
            Ok(s) => self.visit_str(s),
            Err(_) => Err(E::invalid_value(de::Unexpected::Bytes(v), &self)),
        }
    }
}

/// An event's `properties`: entries sorted by key with the last of duplicate keys kept, as in
/// the `BTreeMap` of `serde_json::Map` (without its `preserve_order` feature, which Tern does
/// not enable).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties<'a>(Vec<(JsonStr<'a>, PropertyValue<'a>)>);

impl<'a> Properties<'a> {
    /// Sorts `entries` by key, keeping the last value of each key (what `Map::insert` does).
    fn from_entries(mut entries: Vec<(JsonStr<'a>, PropertyValue<'a>)>) -> Self {
        // Stable: among equal keys the input order remains, and `dedup_by` moves the later
        // value into the entry it keeps.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|later, kept| {
            if later.0 == kept.0 {
                std::mem::swap(&mut later.1, &mut kept.1);
                true
            } else {
                false
            }
        });
        Self(entries)
    }

    fn max_value_depth(&self) -> usize {
        self.0.iter().map(|(_, v)| v.depth()).max().unwrap_or(0)
    }

    fn to_map(&self) -> Map<String, Value> {
        self.0
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_value()))
            .collect()
    }

    fn from_map(map: Map<String, Value>) -> Self {
        Self(
            map.into_iter()
                .map(|(k, v)| (JsonStr(Cow::Owned(k)), PropertyValue::from_value(v)))
                .collect(),
        )
    }
}

impl Serialize for Properties<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(&*k.0, v)?;
        }
        map.end()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Properties<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(PropertiesVisitor)
    }
}

/// `serde_json::Map`'s own visitor, but for the borrowed types.
struct PropertiesVisitor;

impl<'de> Visitor<'de> for PropertiesVisitor {
    type Value = Properties<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Properties::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        // serde_json gives no size hint: room for a typical event's properties at once, not
        // grown 0 → 4 → 8 (decode benchmark: ~2 % of the parse).
        let mut entries = Vec::with_capacity(8);
        while let Some(entry) = access.next_entry()? {
            entries.push(entry);
        }
        Ok(Properties::from_entries(entries))
    }
}

/// One value inside `properties`, as `serde_json::Value` holds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum PropertyValue<'a> {
    /// `null`.
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as `Value` holds it (u64, i64 or f64).
    Number(Number),
    /// A string.
    String(JsonStr<'a>),
    /// An array.
    Array(Vec<PropertyValue<'a>>),
    /// An object.
    Object(Properties<'a>),
}

impl<'a> PropertyValue<'a> {
    fn depth(&self) -> usize {
        match self {
            Self::Object(m) => 1 + m.max_value_depth(),
            Self::Array(a) => 1 + a.iter().map(Self::depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Number(n) => Value::Number(n.clone()),
            Self::String(s) => Value::String(s.to_string()),
            Self::Array(a) => Value::Array(a.iter().map(Self::to_value).collect()),
            Self::Object(m) => Value::Object(m.to_map()),
        }
    }

    fn from_value(value: Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(b),
            Value::Number(n) => Self::Number(n),
            Value::String(s) => Self::String(JsonStr(Cow::Owned(s))),
            Value::Array(a) => Self::Array(a.into_iter().map(Self::from_value).collect()),
            Value::Object(m) => Self::Object(Properties::from_map(m)),
        }
    }
}

impl Serialize for PropertyValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => s.serialize_unit(),
            Self::Bool(b) => s.serialize_bool(*b),
            Self::Number(n) => n.serialize(s),
            Self::String(v) => s.serialize_str(v),
            Self::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Self::Object(m) => m.serialize(s),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for PropertyValue<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PropertyValueVisitor)
    }
}

/// Key with which serde_json marks a raw value inside a map. `Value`'s visitor (with the
/// `raw_value` feature, which the workspace enables) reads an object whose first key is this
/// as the JSON text of its string value; so must this one, or a hostile batch could tell them
/// apart.
pub(super) const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// `serde_json::Value`'s own visitor, but for the borrowed types.
struct PropertyValueVisitor;

impl<'de> Visitor<'de> for PropertyValueVisitor {
    type Value = PropertyValue<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(PropertyValue::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(PropertyValue::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(PropertyValue::Number(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
        Value::deserialize(de::value::I128Deserializer::new(v)).map(PropertyValue::from_value)
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
        Value::deserialize(de::value::U128Deserializer::new(v)).map(PropertyValue::from_value)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Number::from_f64(v).map_or(PropertyValue::Null, PropertyValue::Number))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(PropertyValue::String(JsonStr(Cow::Borrowed(v))))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(PropertyValue::String(JsonStr(Cow::Owned(v.to_owned()))))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(PropertyValue::String(JsonStr(Cow::Owned(v))))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(PropertyValue::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        PropertyValue::deserialize(d)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(PropertyValue::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut values = Vec::new();
        while let Some(v) = access.next_element()? {
            values.push(v);
        }
        Ok(PropertyValue::Array(values))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let Some(first) = access.next_key::<JsonStr<'de>>()? else {
            return Ok(PropertyValue::Object(Properties::default()));
        };
        if &*first == RAW_VALUE_TOKEN {
            let text = access.next_value_seed(RawValueText)?;
            return serde_json::from_str::<Value>(&text)
                .map(PropertyValue::from_value)
                .map_err(de::Error::custom);
        }
        let mut entries = vec![(first, access.next_value()?)];
        while let Some(entry) = access.next_entry()? {
            entries.push(entry);
        }
        Ok(PropertyValue::Object(Properties::from_entries(entries)))
    }
}

/// The string value of a raw-value marker, read as serde_json's `BoxedFromString` reads it.
struct RawValueText;

impl<'de> DeserializeSeed<'de> for RawValueText {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for RawValueText {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("raw value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input either parses (through the collector's batch parse, fast path and
    /// fallback) to properties that serialize to the bytes, have the depth and convert to the
    /// map that `Event`'s own parse gives, or fails with the same message.
    #[test]
    fn properties_read_and_write_as_the_wire_event_does() {
        let batch = |properties: &str| {
            format!(
                r#"{{"batch_id":"01938a2e-0000-7000-8000-000000000002","install_id":"i",
                "sent_at":"2026-11-24T10:00:00.000Z","sdk":{{"name":"t","version":"1"}},
                "context":{{}},"events":[{{"event_id":"01938a2e-0000-7000-8000-000000000001",
                "seq":1,"name":"n","created_at":"2026-11-24T10:00:00.000Z",
                "properties":{properties}}}]}}"#
            )
        };
        let inputs = [
            r#"{}"#,
            r#"{"a":1,"b":[1.5,-2,"x",null,true,{"c":{}}]}"#,
            r#"{ "b" : 1 , "a" : [ 1.0, 1e2, -0, -0.0, 12345678901234567890, -9223372036854775808, 1.5e300, 0.1 ] }"#,
            r#"{"a":1,"a":2,"b":{"z":1,"y":2,"z":3},"a":3}"#,
            r#"{"s":"tab\there \u2028 \"q\" \\ \ud83e\udd80 é","t":"\u0041"}"#,
            r#"{"n":null,"t":true,"f":false,"e":[],"o":{},"d":[[[[{"x":[{}]}]]]]}"#,
            r#"{"r":{"$serde_json::private::RawValue":"[1, 2, {\"b\":1,\"a\":2}]"}}"#,
            r#"{"r":{"$serde_json::private::RawValue":"[1"}}"#,
            r#"{"r":{"$serde_json::private::RawValue":5}}"#,
            r#"{"r":{"$serde_json::private::RawValue":"1","b":2}}"#,
            r#"{"r":{"b":2,"$serde_json::private::RawValue":"1"}}"#,
            r#"{"$serde_json::private::RawValue":"1"}"#,
            r#"{"\u0024serde_json::private::RawValue":"1"}"#,
            r#"{"r":{"\u0024serde_json::private::RawValue":"{}"}}"#,
            r#"{"a":1e400}"#,
            r#"{"a":01}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"unterminated}"#,
            r#"null"#,
            r#"[]"#,
            r#""s""#,
            r#"5"#,
        ];
        let (mut canonical, mut parsed) = (0, 0);
        for properties in inputs {
            let json = batch(properties);
            let wire = serde_json::from_str::<tern_protocol::Batch<Event>>(&json);
            match (wire, crate::decode::parse(json.as_bytes())) {
                (Ok(wire), Ok(decoded)) => {
                    let (wire, decoded) = (&wire.events[0], &decoded.events[0]);
                    let mut written = Vec::new();
                    decoded.write_properties(&mut written).unwrap();
                    assert_eq!(
                        String::from_utf8(written).unwrap(),
                        serde_json::to_string(&wire.properties).unwrap(),
                        "{properties}"
                    );
                    assert_eq!(
                        decoded.properties_depth(),
                        wire.properties_depth(),
                        "{properties}"
                    );
                    assert_eq!(&decoded.to_event(), wire, "{properties}");
                    match decoded.properties {
                        EventProperties::Canonical { .. } => canonical += 1,
                        EventProperties::Parsed(_) => parsed += 1,
                    }
                }
                (Err(wire), Err(RequestError::Malformed { message, .. })) => assert_eq!(
                    message,
                    format!("the body is not a valid v1 batch: {wire}"),
                    "{properties}"
                ),
                (wire, decoded) => panic!("{properties}: {wire:?} against {decoded:?}"),
            }
        }
        assert_eq!((canonical, parsed), (2, 9));
    }

    /// Properties as the SDK writes them (the wire type serialized) are kept as their text.
    #[test]
    fn sdk_written_properties_are_kept_as_text() {
        for i in 0..50 {
            let (_, properties) = tern_sample::event(i);
            let text = serde_json::to_string(&properties).unwrap();
            let json = format!(
                r#"{{"event_id":"01938a2e-0000-7000-8000-000000000001","seq":1,"name":"n",
                "created_at":"2026-11-24T10:00:00Z","properties":{text}}}"#
            );
            let event: DecodedEvent<'_> = serde_json::from_str(&json).unwrap();
            assert_eq!(
                event.properties,
                EventProperties::Canonical {
                    json: &text,
                    depth: 2
                }
            );
        }
    }

    /// Strings without escapes point into the input; with escapes they are unescaped copies.
    #[test]
    fn strings_are_borrowed_unless_escaped() {
        let json = r#"{"event_id":"01938a2e-0000-7000-8000-000000000001","seq":1,"name":"plain",
            "created_at":"2026-11-24T10:00:00Z","user_id":"u\u0031","properties":{ "k":"v"}}"#;
        let event: DecodedEvent<'_> = serde_json::from_str(json).unwrap();
        assert!(matches!(event.name.0, Cow::Borrowed("plain")));
        assert!(matches!(event.user_id.as_ref().unwrap().0, Cow::Owned(ref s) if s == "u1"));
        let EventProperties::Parsed(properties) = &event.properties else {
            panic!("{:?}", event.properties);
        };
        assert!(matches!(
            &properties.0[0],
            (
                JsonStr(Cow::Borrowed("k")),
                PropertyValue::String(JsonStr(Cow::Borrowed("v")))
            )
        ));
    }
}
