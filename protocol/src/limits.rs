//! Limits of the wire format that the SDK and the collector both enforce.
//!
//! The SDK keeps below them so that the collector never has to reject a batch it built; the
//! collector enforces them because anything on the internet can call it.

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
}
