//! Dead letters that always fit a Kinesis record: an invalid event goes to the dead-letter
//! stream whole if it fits, else cut down, with a note of what was cut.
//!
//! The dead-letter record itself is built by `enrich`, beside the stream and gap records (which
//! is why this module does not depend on it); this module only makes it fit.

use serde_json::{Map, Value};
use tern_protocol::{DeadLetterRecord, Event};

use crate::error::RequestError;
use crate::limits::{
    MAX_DEAD_LETTER_FIELD_BYTES, MAX_DEAD_LETTER_MESSAGE_BYTES, MAX_DEAD_LETTER_PROPERTIES_BYTES,
};
use crate::sink::kinesis::Entry;

/// Key of the note, in an event copied into a dead letter, of what was cut: each cut field and
/// its original size in bytes (UTF-8 for strings, serialized JSON for `properties`; `event` for
/// the whole event, when only its ids were kept). No event has this key: unknown keys are not kept.
pub const TRUNCATED_NOTE: &str = "_tern_truncated";

/// The dead-letter entry of `letter` (whose `event` is `event`, serialized whole), under
/// `partition_key`, no larger than `max_bytes` (data and partition key) whatever the event holds,
/// so that Kinesis never refuses it (a refused dead letter used to fail its whole upload with
/// 503, resent forever). In order, the first that fits:
///
/// 1. the event whole;
/// 2. its string fields cut to [`MAX_DEAD_LETTER_FIELD_BYTES`] and its properties, if over
///    [`MAX_DEAD_LETTER_PROPERTIES_BYTES`], replaced by a size note (this always fits a Kinesis
///    record: see those limits);
/// 3. only `event_id`, `seq` and the original sizes, with the message cut to
///    [`MAX_DEAD_LETTER_MESSAGE_BYTES`]: the rest of the letter is bounded by the batch checks
///    (`install_id`) and the configuration (app id, instance id).
pub fn dead_letter_entry(
    mut letter: DeadLetterRecord,
    event: &Event,
    partition_key: &str,
    max_bytes: usize,
) -> Result<Entry, RequestError> {
    let fits = |data: &[u8]| data.len() + partition_key.len() <= max_bytes;
    let entry = |data: Vec<u8>| Entry {
        data: data.into(),
        partition_key: partition_key.into(),
    };
    let data = to_json(&letter)?;
    if fits(&data) {
        return Ok(entry(data));
    }
    let whole = std::mem::take(&mut letter.event);
    let (cut, mut sizes) = truncated_copy(whole.clone())?;
    letter.event = cut;
    let data = to_json(&letter)?;
    if fits(&data) {
        return Ok(entry(data));
    }
    sizes.insert("event".to_owned(), to_json(&whole)?.len().into());
    letter.event = serde_json::json!({
        "event_id": event.event_id,
        "seq": event.seq,
        TRUNCATED_NOTE: sizes,
    });
    letter.message = prefix(&letter.message, MAX_DEAD_LETTER_MESSAGE_BYTES).to_owned();
    Ok(entry(to_json(&letter)?))
}

/// The event (serialized to a JSON object) with every string field over
/// [`MAX_DEAD_LETTER_FIELD_BYTES`] cut to a prefix of that length, and its properties, if their
/// serialized size is over [`MAX_DEAD_LETTER_PROPERTIES_BYTES`], replaced by a note of that size;
/// also the original size of every field it cut, which it notes under [`TRUNCATED_NOTE`].
fn truncated_copy(mut event: Value) -> Result<(Value, Map<String, Value>), RequestError> {
    let mut sizes = Map::new();
    if let Value::Object(fields) = &mut event {
        for (field, value) in fields.iter_mut() {
            match value {
                Value::String(s) if s.len() > MAX_DEAD_LETTER_FIELD_BYTES => {
                    sizes.insert(field.clone(), s.len().into());
                    let end = prefix(s, MAX_DEAD_LETTER_FIELD_BYTES).len();
                    s.truncate(end);
                }
                Value::Object(_) if field == "properties" => {
                    let size = to_json(value)?.len();
                    if size > MAX_DEAD_LETTER_PROPERTIES_BYTES {
                        sizes.insert(field.clone(), size.into());
                        // In the shape dead letters have always used for cut properties.
                        *value = serde_json::json!({
                            "_tern_truncated": true,
                            "_tern_original_bytes": size,
                        });
                    }
                }
                _ => {}
            }
        }
        fields.insert(TRUNCATED_NOTE.to_owned(), Value::Object(sizes.clone()));
    }
    Ok((event, sizes))
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn prefix(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, RequestError> {
    serde_json::to_vec(value).map_err(RequestError::unserializable)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;
    use crate::sink::kinesis::limits::MAX_RECORD_BYTES;

    /// Characters that JSON escapes to six bytes each (`\u0001`): the worst case per byte.
    fn escaped(n: usize) -> String {
        "\u{1}".repeat(n)
    }

    /// When even the cut event does not fit, the letter keeps only the event's id, seq and
    /// original sizes, and a message of bounded length.
    #[test]
    fn the_last_resort_dead_letter_keeps_the_ids_and_the_sizes() {
        let e = Event {
            event_id: Uuid::now_v7(),
            seq: 1,
            name: escaped(MAX_RECORD_BYTES),
            created_at: Utc::now(),
            uptime_ms: None,
            clock_id: Some("c1".into()),
            properties: Default::default(),
            user_id: None,
            session_id: None,
        };
        let letter = DeadLetterRecord {
            v: tern_protocol::RECORD_VERSION,
            reason: "invalid_name".into(),
            message: "m".repeat(10 * MAX_DEAD_LETTER_MESSAGE_BYTES),
            app_id: "app".into(),
            install_id: "i".into(),
            batch_id: Uuid::now_v7(),
            received_at: Utc::now(),
            collector_id: "c".into(),
            event: serde_json::to_value(&e).unwrap(),
        };
        let limit = 8 * 1024;
        let entry = dead_letter_entry(letter, &e, "i", limit).unwrap();
        assert!(entry.size() <= limit, "{} bytes", entry.size());
        let letter: DeadLetterRecord = serde_json::from_slice(&entry.data).unwrap();
        assert_eq!(letter.reason, "invalid_name");
        assert_eq!(letter.message.len(), MAX_DEAD_LETTER_MESSAGE_BYTES);
        let mut fields: Vec<&str> = letter
            .event
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(fields, ["_tern_truncated", "event_id", "seq"]);
        assert_eq!(letter.event["event_id"], e.event_id.to_string());
        assert_eq!(letter.event[TRUNCATED_NOTE]["name"], MAX_RECORD_BYTES);
        let whole = to_json(&e).unwrap().len();
        assert_eq!(letter.event[TRUNCATED_NOTE]["event"], whole);
    }

    #[test]
    fn prefixes_end_on_character_boundaries() {
        assert_eq!(prefix("héllo", 2), "h");
        assert_eq!(prefix("héllo", 3), "hé");
        assert_eq!(prefix("abc", 10), "abc");
        assert_eq!(prefix("", 0), "");
    }
}
