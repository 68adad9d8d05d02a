//! Limits of the wire format that the SDK and the collector both enforce.
//!
//! The SDK keeps below them so that the collector never has to reject a batch it built; the
//! collector enforces them because anything on the internet can call it.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::wire::{gap_reason, Context, Event, SeqRange};

/// Largest compressed request body the collector reads. An SDK batch stays far below
/// (see the SDK's `Policy`); the bound keeps a hostile client from making us buffer more.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Largest decompressed batch body. 5 MiB: one Kinesis PutRecords request's worth, so one upload
/// can never need more than one request's memory.
pub const MAX_DECOMPRESSED_BYTES: usize = 5 * 1024 * 1024;

/// Most events in one batch: the number of records one PutRecords call accepts.
pub const MAX_EVENTS_PER_BATCH: usize = 500;

/// Longest event name, in bytes. Long enough for `screen_view:settings/notifications`, short
/// enough to be a column name in any warehouse.
pub const MAX_EVENT_NAME_BYTES: usize = 128;

/// Largest `properties` object of one event, serialized. Kinesis records are at most 1 MiB and
/// the record also carries the context; 64 KiB leaves ample room and catches runaway payloads.
pub const MAX_PROPERTIES_BYTES: usize = 64 * 1024;

/// Deepest nesting of JSON accepted anywhere in a batch (serde_json's own recursion limit is
/// 128; we stop earlier so that nesting is a clear 400, not a parser failure).
pub const MAX_JSON_DEPTH: usize = 32;

/// Longest identifier (`install_id`, `user_id`, `session_id`), in bytes. Kinesis partition keys
/// are at most 256 characters and `install_id` is the partition key.
pub const MAX_ID_BYTES: usize = 256;

/// Largest serialized `context` of a batch. The collector copies it into each of up to 500
/// records, so 4 KiB costs at most 2 MiB per upload; app, device, OS, locale and time zone take
/// ~300 bytes.
pub const MAX_CONTEXT_BYTES: usize = 4 * 1024;

/// Longest `sdk.name` and `sdk.version`, each, in bytes: also copied into every record;
/// `tern-sdk-kotlin` and a semantic version with build metadata fit many times.
pub const MAX_SDK_FIELD_BYTES: usize = 128;

/// Longest `clock_id` (batch or event), in bytes: the SDK sends `boot-` and a 36-character UUID.
pub const MAX_CLOCK_ID_BYTES: usize = 64;

/// Deepest nesting inside one event's `properties` (the object itself is depth 1). The batch
/// wraps properties in three more levels (`{ "events": [ { "properties": ...`), so 16 keeps any
/// valid event far below [`MAX_JSON_DEPTH`] for the whole body; analytics properties rarely
/// nest beyond three levels.
pub const MAX_PROPERTIES_DEPTH: usize = 16;

/// Most gap reports in one batch. The SDK merges the gaps of one reason into ranges, so even a
/// device that dropped events all day reports a handful; the bound keeps a hostile batch from
/// making the collector write thousands of records for it.
pub const MAX_GAPS_PER_BATCH: usize = 64;

/// Most `seq` ranges in one gap report. Caps drop the oldest events, so their ranges are mostly
/// contiguous; 256 ranges of 16-byte pairs keep a gap record far below 1 MiB.
pub const MAX_RANGES_PER_GAP: usize = 256;

/// How long an SDK waits for the collector's answer to one upload, connect included. The SDK
/// uses it as its request timeout; the collector must answer within it (its acknowledgement
/// deadline is a third of it, checked when its configuration loads), or the answer is never
/// heard and the batch is sent again.
pub const SDK_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Oldest event an SDK buffer keeps: 30 days. Older events have lost most of their value; a
/// phone that comes back after a month still delivers its last 30 days. The collector accepts
/// events up to twice as old (its `MAX_ACCEPTED_EVENT_AGE`), so a buffered event is never
/// refused for its age.
pub const MAX_BUFFERED_EVENT_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why a gap report (or a gap record) breaks the format, naming the field (`reason`,
/// `ranges`, `ranges[j]`, `count`), or `None`: consumers count `seq` numbers from it, so both
/// the collector and the lake refuse a malformed one.
pub fn gap_problem(reason: &str, ranges: &[SeqRange], count: u64) -> Option<String> {
    if !gap_reason::ALL.contains(&reason) {
        return Some(format!("reason: not one of {}", gap_reason::ALL.join(", ")));
    }
    if ranges.is_empty() || ranges.len() > MAX_RANGES_PER_GAP {
        return Some(format!(
            "ranges: {} ranges; must be 1 to {MAX_RANGES_PER_GAP}",
            ranges.len()
        ));
    }
    let mut previous_last = 0u64;
    for (j, range) in ranges.iter().enumerate() {
        if range.first == 0 || range.first > range.last {
            return Some(format!("ranges[{j}]: must have 1 <= first <= last"));
        }
        if j > 0 && range.first <= previous_last {
            return Some(format!(
                "ranges[{j}]: ranges must be ascending and disjoint"
            ));
        }
        previous_last = range.last;
    }
    // Disjoint ranges of u64 seqs: the sum cannot overflow unless they cover all of u64, which
    // 256 ranges starting at 1 cannot; checked all the same.
    let seqs = ranges
        .iter()
        .try_fold(0u64, |total, range| total.checked_add(range.len()));
    if seqs != Some(count) {
        return Some(format!(
            "count: {count} but the ranges hold {}",
            seqs.map_or_else(|| "more than 2^64".to_owned(), |n| n.to_string())
        ));
    }
    None
}

/// Why an event name is not acceptable, or `None` when it is.
///
/// Names are 1 to [`MAX_EVENT_NAME_BYTES`] bytes of ASCII letters, digits and `_ . : / -`,
/// starting with a letter: safe as a metric label, a file name and a warehouse column.
pub fn event_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("event name is empty".to_owned());
    }
    if name.len() > MAX_EVENT_NAME_BYTES {
        return Some(format!(
            "event name is {} bytes, over the limit of {MAX_EVENT_NAME_BYTES}",
            name.len()
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Some("event name must start with an ASCII letter".to_owned());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '/' | '-')))
    {
        return Some(format!(
            "event name contains {c:?}; allowed are ASCII letters, digits and _ . : / -"
        ));
    }
    None
}

/// Why an event's `properties` are not acceptable, or `None` when they are: serialized size up
/// to [`MAX_PROPERTIES_BYTES`], nesting up to [`MAX_PROPERTIES_DEPTH`].
pub fn properties_problem(properties: &Map<String, Value>) -> Option<String> {
    properties_depth_problem(properties)
        .or_else(|| properties_size_problem(serialized_len(properties)))
}

/// Bytes of `properties` as JSON (`usize::MAX` if they cannot be serialized: over any limit).
fn serialized_len(properties: &Map<String, Value>) -> usize {
    serde_json::to_vec(properties).map_or(usize::MAX, |v| v.len())
}

/// The nesting half of [`properties_problem`]: deeper than [`MAX_PROPERTIES_DEPTH`].
pub fn properties_depth_problem(properties: &Map<String, Value>) -> Option<String> {
    properties_nesting_problem(properties_depth(properties))
}

/// Nesting depth of properties: the object itself is depth 1, each object or array within
/// one more.
pub fn properties_depth(properties: &Map<String, Value>) -> usize {
    1 + properties.values().map(value_depth).max().unwrap_or(0)
}

/// [`properties_depth_problem`] given the properties' nesting depth (the object itself is depth
/// 1), for a caller that holds them in a type of its own (the collector's borrowed parse).
pub fn properties_nesting_problem(depth: usize) -> Option<String> {
    (depth > MAX_PROPERTIES_DEPTH).then(|| {
        format!("properties nest {depth} levels deep, over the limit of {MAX_PROPERTIES_DEPTH}")
    })
}

/// The size half of [`properties_problem`], given the properties' serialized size (for a
/// caller that serializes them anyway and need not do it twice).
pub fn properties_size_problem(size: usize) -> Option<String> {
    (size > MAX_PROPERTIES_BYTES)
        .then(|| format!("properties are {size} bytes, over the limit of {MAX_PROPERTIES_BYTES}"))
}

/// Nesting depth of one JSON value: scalars 0, an object or array 1 more than its deepest child.
/// Recursion is bounded by the parser's own depth limit, which ran before.
fn value_depth(value: &Value) -> usize {
    match value {
        Value::Object(m) => 1 + m.values().map(value_depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Why a batch's `context` is not acceptable (serialized over [`MAX_CONTEXT_BYTES`]), or `None`.
pub fn context_problem(context: &Context) -> Option<String> {
    let size = serde_json::to_vec(context).map_or(usize::MAX, |v| v.len());
    (size > MAX_CONTEXT_BYTES)
        .then(|| format!("context: {size} bytes serialized, over the limit of {MAX_CONTEXT_BYTES}"))
}

/// Why an optional identifier (`user_id`, `session_id`) is not acceptable, or `None`.
pub fn id_problem(field: &str, id: Option<&str>) -> Option<String> {
    match id {
        Some("") => Some(format!("{field} is empty; leave it out instead")),
        Some(v) if v.len() > MAX_ID_BYTES => {
            Some(format!("{field} is {} bytes, over {MAX_ID_BYTES}", v.len()))
        }
        _ => None,
    }
}

/// Why one event cannot go to the stream, or `None` if it is fine, as `(code, message)`.
///
/// The collector sends such an event to the dead-letter stream with the code; the SDK applies
/// the same checks in `track()`, so that an event it accepted is never refused downstream.
pub fn event_problem(event: &Event) -> Option<(&'static str, String)> {
    event_problem_but_properties_size(event).or_else(|| {
        properties_size_problem(serialized_len(&event.properties))
            .map(|p| ("invalid_properties", p))
    })
}

/// [`event_problem`] but for the serialized size of `properties`, which the caller checks with
/// [`properties_size_problem`] on the bytes it serializes anyway (the collector, which writes
/// them into the record). Same checks, same order, same answers otherwise.
pub fn event_problem_but_properties_size(event: &Event) -> Option<(&'static str, String)> {
    event_fields_problem(
        &event.name,
        event.seq,
        event.user_id.as_deref(),
        event.session_id.as_deref(),
    )
    .or_else(|| properties_depth_problem(&event.properties).map(|p| ("invalid_properties", p)))
}

/// The checks of [`event_problem_but_properties_size`] before the properties' (name, `seq`,
/// `user_id`, `session_id`, in that order), on the fields alone: for a caller that holds the
/// event in a type of its own (the collector's borrowed parse) and then checks the properties
/// with [`properties_nesting_problem`] and [`properties_size_problem`].
pub fn event_fields_problem(
    name: &str,
    seq: u64,
    user_id: Option<&str>,
    session_id: Option<&str>,
) -> Option<(&'static str, String)> {
    if let Some(p) = event_name_problem(name) {
        return Some(("invalid_name", p));
    }
    if seq == 0 {
        return Some(("invalid_seq", "seq starts at 1".into()));
    }
    for (field, id) in [("user_id", user_id), ("session_id", session_id)] {
        if let Some(p) = id_problem(field, id) {
            return Some(("invalid_id", p));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(event_name_problem("checkout"), None);
        assert_eq!(event_name_problem("screen_view:settings/a-b.c"), None);
        assert!(event_name_problem("").is_some());
        assert!(event_name_problem("1abc").is_some());
        assert!(event_name_problem("has space").is_some());
        assert!(event_name_problem(&"a".repeat(MAX_EVENT_NAME_BYTES + 1)).is_some());
        assert_eq!(event_name_problem(&"a".repeat(MAX_EVENT_NAME_BYTES)), None);
    }

    fn nested(depth: usize) -> Map<String, Value> {
        let mut v = Value::from(1);
        for _ in 1..depth {
            v = serde_json::json!({ "a": v });
        }
        let mut m = Map::new();
        m.insert("a".into(), v);
        m
    }

    #[test]
    fn properties() {
        assert_eq!(properties_problem(&Map::new()), None);
        assert_eq!(properties_problem(&nested(MAX_PROPERTIES_DEPTH)), None);
        assert!(properties_problem(&nested(MAX_PROPERTIES_DEPTH + 1)).is_some());
        let mut big = Map::new();
        big.insert("a".into(), Value::from("x".repeat(MAX_PROPERTIES_BYTES)));
        assert!(properties_problem(&big).is_some());
    }

    #[test]
    fn ids() {
        assert_eq!(id_problem("user_id", None), None);
        assert_eq!(id_problem("user_id", Some("u1")), None);
        assert!(id_problem("user_id", Some("")).is_some());
        assert!(id_problem("user_id", Some(&"u".repeat(MAX_ID_BYTES + 1))).is_some());
    }
}
