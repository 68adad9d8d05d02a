//! Kinesis record → stream records: de-aggregates KPL records, parses every stream record v1
//! document (an event, or a gap record: `"kind": "gap"`) and checks it against the record's
//! rules. What fails is kept with its reason for the `rejected` table; nothing is dropped.

use tern_protocol::limits::{event_name_problem, gap_problem, MAX_ID_BYTES};
use tern_protocol::{GapRecord, StreamRecord, GAP_KIND, RECORD_VERSION};

/// Machine-readable reasons a record goes to `rejected`.
pub mod reason {
    /// Not a JSON document (or not UTF-8, or a damaged aggregate).
    pub const NOT_JSON: &str = "not_json";
    /// JSON, but not a stream record v1: a field missing or of the wrong type.
    pub const SCHEMA: &str = "schema";
    /// A record version this lake does not know.
    pub const UNKNOWN_VERSION: &str = "unknown_version";
    /// A stream record v1 whose values break its rules (empty ids, `seq` 0, a bad name).
    pub const INVALID_VALUE: &str = "invalid_value";
    /// Every reason, for metrics and docs.
    pub const ALL: [&str; 4] = [NOT_JSON, SCHEMA, UNKNOWN_VERSION, INVALID_VALUE];
}

/// One user record of a Kinesis record, decoded.
#[derive(Debug)]
pub enum Decoded {
    /// A valid stream record.
    Event(Box<StreamRecord>),
    /// A valid gap record: `seq` numbers of an install that will never arrive.
    Gap(Box<GapRecord>),
    /// A document that is not one, with why.
    Rejected {
        /// One of [`reason::ALL`].
        reason: &'static str,
        /// What was wrong, for a person.
        message: String,
    },
}

/// The user records of a Kinesis record's data: one for a plain record, each packed document
/// for a KPL aggregate. Each comes with its index inside the aggregate (`None` for a plain
/// record) and its bytes.
pub fn user_records(data: &[u8]) -> Vec<(Option<i32>, &[u8])> {
    match tern_protocol::aggregate::deaggregate(data) {
        Some(records) => records
            .into_iter()
            .enumerate()
            .map(|(i, r)| (Some(i32::try_from(i).unwrap_or(i32::MAX)), r))
            .collect(),
        None => vec![(None, data)],
    }
}

/// Parses and checks one stream record document.
pub fn decode(document: &[u8]) -> Decoded {
    let record: StreamRecord = match serde_json::from_slice(document) {
        Ok(record) => record,
        Err(e) => {
            let reason = match e.classify() {
                serde_json::error::Category::Data => {
                    if kind_of(document).as_deref() == Some(GAP_KIND) {
                        return decode_gap(document);
                    }
                    // A record of another version fails on its fields; say so first.
                    match version_of(document) {
                        Some(v) if v != u64::from(RECORD_VERSION) => {
                            return Decoded::Rejected {
                                reason: reason::UNKNOWN_VERSION,
                                message: format!(
                                    "record version {v}; this lake reads {RECORD_VERSION}"
                                ),
                            }
                        }
                        _ => reason::SCHEMA,
                    }
                }
                _ => reason::NOT_JSON,
            };
            return Decoded::Rejected {
                reason,
                message: e.to_string(),
            };
        }
    };
    if record.v != RECORD_VERSION {
        return Decoded::Rejected {
            reason: reason::UNKNOWN_VERSION,
            message: format!(
                "record version {}; this lake reads {RECORD_VERSION}",
                record.v
            ),
        };
    }
    match value_problem(&record) {
        Some(message) => Decoded::Rejected {
            reason: reason::INVALID_VALUE,
            message,
        },
        None => Decoded::Event(Box::new(record)),
    }
}

/// [`decode`], then the cleansing `rules` on an event; an event the rules make invalid is
/// rejected, saying so.
pub fn decode_with(document: &[u8], rules: &crate::rules::Rules) -> Decoded {
    match decode(document) {
        Decoded::Event(mut event) => match rules.apply(&mut event) {
            None => Decoded::Event(event),
            Some(message) => Decoded::Rejected {
                reason: reason::INVALID_VALUE,
                message,
            },
        },
        other => other,
    }
}

/// Parses and checks a gap record (a document whose `kind` is `"gap"`).
fn decode_gap(document: &[u8]) -> Decoded {
    let gap: GapRecord = match serde_json::from_slice(document) {
        Ok(gap) => gap,
        Err(e) => {
            return Decoded::Rejected {
                reason: match version_of(document) {
                    Some(v) if v != u64::from(RECORD_VERSION) => reason::UNKNOWN_VERSION,
                    _ => reason::SCHEMA,
                },
                message: format!("gap record: {e}"),
            }
        }
    };
    if gap.v != RECORD_VERSION {
        return Decoded::Rejected {
            reason: reason::UNKNOWN_VERSION,
            message: format!("record version {}; this lake reads {RECORD_VERSION}", gap.v),
        };
    }
    match gap_record_problem(&gap) {
        Some(message) => Decoded::Rejected {
            reason: reason::INVALID_VALUE,
            message: format!("gap record: {message}"),
        },
        None => Decoded::Gap(Box::new(gap)),
    }
}

/// What breaks the rules of a gap record that its types do not enforce.
fn gap_record_problem(gap: &GapRecord) -> Option<String> {
    if let Some(problem) = ids_problem(
        &gap.install_id,
        &[("app_id", &gap.app_id), ("collector_id", &gap.collector_id)],
    ) {
        return Some(problem);
    }
    gap_problem(&gap.reason, &gap.ranges, gap.count)
}

/// The `kind` of a document, if it has one (event records have none).
fn kind_of(document: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Kind {
        kind: String,
    }
    serde_json::from_slice::<Kind>(document)
        .ok()
        .map(|k| k.kind)
}

fn version_of(document: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Version {
        v: u64,
    }
    serde_json::from_slice::<Version>(document)
        .ok()
        .map(|v| v.v)
}

/// An `install_id` that is empty or longer than a partition key, or another field that is empty.
fn ids_problem(install_id: &str, fields: &[(&str, &String)]) -> Option<String> {
    if install_id.is_empty() {
        return Some("install_id: empty".into());
    }
    if install_id.len() > MAX_ID_BYTES {
        return Some(format!(
            "install_id: {} bytes, over {MAX_ID_BYTES}",
            install_id.len()
        ));
    }
    fields
        .iter()
        .find(|(_, value)| value.is_empty())
        .map(|(field, _)| format!("{field}: empty"))
}

/// What breaks the rules of `record/v1.schema.json` that its types do not already enforce.
fn value_problem(record: &StreamRecord) -> Option<String> {
    if record.seq == 0 {
        return Some("seq: must be at least 1".into());
    }
    if let Some(problem) = ids_problem(
        &record.install_id,
        &[
            ("app_id", &record.app_id),
            ("collector_id", &record.collector_id),
        ],
    ) {
        return Some(problem);
    }
    event_name_problem(&record.name).map(|p| format!("name: {p}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = crate::fixtures::GOOD_RECORD;

    fn reason_of(doc: &str) -> &'static str {
        match decode(doc.as_bytes()) {
            Decoded::Event(_) => "ok",
            Decoded::Gap(_) => "gap",
            Decoded::Rejected { reason, .. } => reason,
        }
    }

    #[test]
    fn every_reason_is_told_apart() {
        assert_eq!(reason_of(GOOD), "ok");
        assert_eq!(reason_of("not json at all"), reason::NOT_JSON);
        assert_eq!(reason_of("{\"v\":1,"), reason::NOT_JSON);
        assert_eq!(reason_of(r#"{"v":1,"event_id":"x"}"#), reason::SCHEMA);
        assert_eq!(
            reason_of(&GOOD.replace("\"v\":1", "\"v\":2")),
            reason::UNKNOWN_VERSION
        );
        assert_eq!(reason_of(r#"{"v":7}"#), reason::UNKNOWN_VERSION);
        assert_eq!(
            reason_of(&GOOD.replace("\"seq\":42", "\"seq\":0")),
            reason::INVALID_VALUE
        );
        assert_eq!(
            reason_of(&GOOD.replace("\"checkout\"", "\"9 bad name\"")),
            reason::INVALID_VALUE
        );
    }

    const GAP: &str = r#"{"v":1,"kind":"gap","gap_id":"019ab7b2-4b00-7aaa-8bbb-dddddddddddd",
        "app_id":"shop","install_id":"i-1","reason":"cap_count",
        "ranges":[{"first":3,"last":5},{"first":9,"last":9}],"count":4,
        "at":"2026-11-24T21:34:50.001Z","received_at":"2026-11-24T21:34:57.190Z",
        "batch_id":"019ab7b2-4c1e-7d2a-9f3e-5a1b2c3d4e5f",
        "sdk":{"name":"tern-sdk-kotlin","version":"0.1.0"},"collector_id":"c-1"}"#;

    #[test]
    fn gap_records_are_told_from_events_and_checked() {
        assert_eq!(reason_of(GAP), "gap");
        // A gap record is never read as an event, whatever else it carries.
        assert_eq!(
            reason_of(&GAP.replace(
                "\"gap_id\"",
                "\"event_id\":\"019ab7b2-4b00-7aaa-8bbb-cccccccccccc\",\"gap_id\""
            )),
            "gap"
        );
        assert_eq!(
            reason_of(&GAP.replace("\"count\":4", "\"count\":5")),
            reason::INVALID_VALUE
        );
        assert_eq!(
            reason_of(&GAP.replace("\"first\":9", "\"first\":4")),
            reason::INVALID_VALUE
        );
        assert_eq!(
            reason_of(&GAP.replace("\"first\":3", "\"first\":0")),
            reason::INVALID_VALUE
        );
        assert_eq!(
            reason_of(&GAP.replace("\"v\":1", "\"v\":2")),
            reason::UNKNOWN_VERSION
        );
        assert_eq!(
            reason_of(&GAP.replace("\"reason\":\"cap_count\",", "")),
            reason::SCHEMA
        );
    }

    #[test]
    fn aggregates_are_unpacked_and_plain_records_pass() {
        let records: Vec<Vec<u8>> = (0..3)
            .map(|_| tern_protocol::aggregate::user_record(GOOD.as_bytes()))
            .collect();
        let data = tern_protocol::aggregate::seal("i-1", &records);
        let users = user_records(&data);
        assert_eq!(users.len(), 3);
        assert_eq!(users[2].0, Some(2));
        assert_eq!(users[0].1, GOOD.as_bytes());
        assert_eq!(user_records(b"plain"), vec![(None, &b"plain"[..])]);
    }
}
