//! Kinesis record → stream records: de-aggregates KPL records, parses every stream record
//! document (v1: an event, or a gap record, `"kind": "gap"`; v2: an event to join on its
//! `batch_id`, a batch record, `"kind": "batch"`, or a gap record) and checks it against the
//! record's rules. What fails is kept with its reason for the `rejected` table; nothing is
//! dropped.

use tern_protocol::limits::{event_name_problem, gap_problem, MAX_ID_BYTES};
use tern_protocol::{
    BatchRecord, EventRecordV2, GapRecord, StreamRecord, BATCH_KIND, GAP_KIND, RECORD_VERSION,
    RECORD_VERSIONS, RECORD_VERSION_2,
};

/// Machine-readable reasons a record goes to `rejected`.
pub mod reason {
    /// Not a JSON document (or not UTF-8, or a damaged aggregate).
    pub const NOT_JSON: &str = "not_json";
    /// JSON, but not a stream record of its version: a field missing or of the wrong type.
    pub const SCHEMA: &str = "schema";
    /// A record version this lake does not know.
    pub const UNKNOWN_VERSION: &str = "unknown_version";
    /// A stream record whose values break its rules (empty ids, `seq` 0, a bad name), or a v2
    /// event whose batch record is another install's or app's.
    pub const INVALID_VALUE: &str = "invalid_value";
    /// A v2 event record whose batch record (same `batch_id`) was never read before it.
    pub const NO_BATCH: &str = "no_batch";
    /// Every reason, for metrics and docs.
    pub const ALL: [&str; 5] = [NOT_JSON, SCHEMA, UNKNOWN_VERSION, INVALID_VALUE, NO_BATCH];
}

/// One user record of a Kinesis record, decoded.
#[derive(Debug)]
pub enum Decoded {
    /// A valid stream record (v1, or a v2 event joined with its batch record by [`join`]).
    Event(Box<StreamRecord>),
    /// A valid v2 event record, still to be joined with its batch record ([`join`]).
    EventV2(Box<EventRecordV2>),
    /// A valid v2 batch record: what the event records of one upload share.
    Batch(Box<BatchRecord>),
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

/// Parses and checks one stream record document. A v2 event comes back as
/// [`Decoded::EventV2`], for the caller to [`join`] with its batch record.
pub fn decode(document: &[u8]) -> Decoded {
    let record: StreamRecord = match serde_json::from_slice(document) {
        Ok(record) => record,
        Err(e) => {
            let reason = match e.classify() {
                serde_json::error::Category::Data => {
                    let kind = kind_of(document);
                    match kind.as_deref() {
                        Some(GAP_KIND) => return decode_gap(document),
                        Some(BATCH_KIND) => return decode_batch(document),
                        _ => {}
                    }
                    // A record of another version fails on its fields; say so first.
                    match version_of(document) {
                        Some(v) if v == u64::from(RECORD_VERSION_2) => {
                            return decode_event_v2(document, kind.as_deref())
                        }
                        Some(v) if v != u64::from(RECORD_VERSION) => return unknown_version(v),
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
    if record.v == RECORD_VERSION_2 {
        // A v2 event that also carries the shared fields: those of its batch record count.
        return decode_event_v2(document, kind_of(document).as_deref());
    }
    if record.v != RECORD_VERSION {
        return unknown_version(u64::from(record.v));
    }
    match event_problem(
        record.seq,
        &record.install_id,
        &[
            ("app_id", &record.app_id),
            ("collector_id", &record.collector_id),
        ],
        &record.name,
    ) {
        Some(message) => Decoded::Rejected {
            reason: reason::INVALID_VALUE,
            message,
        },
        None => Decoded::Event(Box::new(record)),
    }
}

/// [`decode`], then the cleansing `rules` on an event; an event the rules make invalid is
/// rejected, saying so. A v2 event gets the rules when it is joined ([`join`]).
pub fn decode_with(document: &[u8], rules: &crate::rules::Rules) -> Decoded {
    match decode(document) {
        Decoded::Event(event) => apply_rules(event, rules),
        other => other,
    }
}

/// A v2 `event` joined with its upload's `batch` record (`None`: none was found), then the
/// cleansing `rules`: the v1 [`StreamRecord`] it stands for (with `v` 2), or why not.
pub fn join(
    event: EventRecordV2,
    batch: Option<&BatchRecord>,
    rules: &crate::rules::Rules,
) -> Decoded {
    let Some(batch) = batch else {
        return Decoded::Rejected {
            reason: reason::NO_BATCH,
            message: format!(
                "batch_id {}: no batch record of it was read before this event",
                event.batch_id
            ),
        };
    };
    match event.join(batch) {
        Ok(record) => apply_rules(Box::new(record), rules),
        Err(message) => Decoded::Rejected {
            reason: reason::INVALID_VALUE,
            message: format!("batch record: {message}"),
        },
    }
}

fn apply_rules(mut event: Box<StreamRecord>, rules: &crate::rules::Rules) -> Decoded {
    match rules.apply(&mut event) {
        None => Decoded::Event(event),
        Some(message) => Decoded::Rejected {
            reason: reason::INVALID_VALUE,
            message,
        },
    }
}

fn unknown_version(v: u64) -> Decoded {
    Decoded::Rejected {
        reason: reason::UNKNOWN_VERSION,
        message: format!(
            "record version {v}; this lake reads {}",
            RECORD_VERSIONS.map(|v| v.to_string()).join(" and ")
        ),
    }
}

/// Parses and checks a v2 event record (`kind`: the document's, if it has one).
fn decode_event_v2(document: &[u8], kind: Option<&str>) -> Decoded {
    if let Some(kind) = kind {
        // A v2 record with a kind is never an event (`record.v2.schema.json`).
        return Decoded::Rejected {
            reason: reason::SCHEMA,
            message: format!("kind {kind:?}: not a kind of stream record v2"),
        };
    }
    let event: EventRecordV2 = match serde_json::from_slice(document) {
        Ok(event) => event,
        Err(e) => {
            return Decoded::Rejected {
                reason: reason::SCHEMA,
                message: format!("v2 event record: {e}"),
            }
        }
    };
    match event_problem(
        event.seq,
        &event.install_id,
        &[("app_id", &event.app_id)],
        &event.name,
    ) {
        Some(message) => Decoded::Rejected {
            reason: reason::INVALID_VALUE,
            message,
        },
        None => Decoded::EventV2(Box::new(event)),
    }
}

/// Parses and checks a batch record (a document whose `kind` is `"batch"`; v2 only).
fn decode_batch(document: &[u8]) -> Decoded {
    let batch: BatchRecord = match serde_json::from_slice(document) {
        Ok(batch) => batch,
        Err(e) => {
            return Decoded::Rejected {
                reason: match version_of(document) {
                    Some(v) if !known_version(v) => reason::UNKNOWN_VERSION,
                    _ => reason::SCHEMA,
                },
                message: format!("batch record: {e}"),
            }
        }
    };
    if batch.v != RECORD_VERSION_2 {
        if !known_version(u64::from(batch.v)) {
            return unknown_version(u64::from(batch.v));
        }
        return Decoded::Rejected {
            reason: reason::SCHEMA,
            message: format!(
                "batch record: version {} has no batch records; they are v{RECORD_VERSION_2}",
                batch.v
            ),
        };
    }
    match ids_problem(
        &batch.install_id,
        &[
            ("app_id", &batch.app_id),
            ("collector_id", &batch.collector_id),
        ],
    ) {
        Some(message) => Decoded::Rejected {
            reason: reason::INVALID_VALUE,
            message: format!("batch record: {message}"),
        },
        None => Decoded::Batch(Box::new(batch)),
    }
}

fn known_version(v: u64) -> bool {
    RECORD_VERSIONS.iter().any(|known| u64::from(*known) == v)
}

/// Parses and checks a gap record (a document whose `kind` is `"gap"`), of either version.
fn decode_gap(document: &[u8]) -> Decoded {
    let gap: GapRecord = match serde_json::from_slice(document) {
        Ok(gap) => gap,
        Err(e) => {
            return Decoded::Rejected {
                reason: match version_of(document) {
                    Some(v) if !known_version(v) => reason::UNKNOWN_VERSION,
                    _ => reason::SCHEMA,
                },
                message: format!("gap record: {e}"),
            }
        }
    };
    if !known_version(u64::from(gap.v)) {
        return unknown_version(u64::from(gap.v));
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

/// What breaks the rules of an event record (`record.v1.schema.json`,
/// `record.v2.schema.json`) that its types do not already enforce.
fn event_problem(
    seq: u64,
    install_id: &str,
    ids: &[(&str, &String)],
    name: &str,
) -> Option<String> {
    if seq == 0 {
        return Some("seq: must be at least 1".into());
    }
    if let Some(problem) = ids_problem(install_id, ids) {
        return Some(problem);
    }
    event_name_problem(name).map(|p| format!("name: {p}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = crate::fixtures::GOOD_RECORD;

    fn reason_of(doc: &str) -> &'static str {
        match decode(doc.as_bytes()) {
            Decoded::Event(_) => "ok",
            Decoded::EventV2(_) => "event_v2",
            Decoded::Batch(_) => "batch",
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
            reason_of(&GOOD.replace("\"v\":1", "\"v\":3")),
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
        assert_eq!(reason_of(&GAP.replace("\"v\":1", "\"v\":2")), "gap");
        assert_eq!(
            reason_of(&GAP.replace("\"v\":1", "\"v\":3")),
            reason::UNKNOWN_VERSION
        );
        assert_eq!(
            reason_of(&GAP.replace("\"reason\":\"cap_count\",", "")),
            reason::SCHEMA
        );
    }

    use crate::fixtures::{good_record, v2_parts};
    use crate::rules::Rules;
    use tern_protocol::BatchRecord;

    fn doc(value: &impl serde::Serialize) -> String {
        serde_json::to_string(value).unwrap()
    }

    /// `value` as JSON with `field` set to `to` (or removed, for `Value::Null`).
    fn with(value: &impl serde::Serialize, field: &str, to: serde_json::Value) -> String {
        let mut json = serde_json::to_value(value).unwrap();
        let object = json.as_object_mut().unwrap();
        if to.is_null() {
            object.remove(field);
        } else {
            object.insert(field.into(), to);
        }
        json.to_string()
    }

    #[test]
    fn v2_event_records_are_read_and_checked_like_v1_events() {
        let (event, _) = v2_parts(&good_record());
        match decode(doc(&event).as_bytes()) {
            Decoded::EventV2(read) => assert_eq!(*read, event),
            other => panic!("{other:?}"),
        }
        let bad = [
            (with(&event, "seq", 0.into()), reason::INVALID_VALUE),
            (with(&event, "install_id", "".into()), reason::INVALID_VALUE),
            (
                with(&event, "install_id", "i".repeat(MAX_ID_BYTES + 1).into()),
                reason::INVALID_VALUE,
            ),
            (with(&event, "app_id", "".into()), reason::INVALID_VALUE),
            (
                with(&event, "name", "9 bad name".into()),
                reason::INVALID_VALUE,
            ),
            (
                with(&event, "batch_id", serde_json::Value::Null),
                reason::SCHEMA,
            ),
            (
                with(&event, "event_id", "not-a-uuid".into()),
                reason::SCHEMA,
            ),
            // A v2 record with a kind is never an event.
            (with(&event, "kind", "session".into()), reason::SCHEMA),
            (with(&event, "v", 3.into()), reason::UNKNOWN_VERSION),
        ];
        for (document, expected) in bad {
            assert_eq!(reason_of(&document), expected, "{document}");
        }
        // A v2 record that also carries the v1 fields is a v2 event: its batch record counts.
        assert_eq!(reason_of(&GOOD.replace("\"v\":1", "\"v\":2")), "event_v2");
    }

    #[test]
    fn batch_records_are_read_and_checked() {
        let (_, batch) = v2_parts(&good_record());
        match decode(doc(&batch).as_bytes()) {
            Decoded::Batch(read) => assert_eq!(*read, batch),
            other => panic!("{other:?}"),
        }
        let bad = [
            (with(&batch, "install_id", "".into()), reason::INVALID_VALUE),
            (
                with(&batch, "install_id", "i".repeat(MAX_ID_BYTES + 1).into()),
                reason::INVALID_VALUE,
            ),
            (with(&batch, "app_id", "".into()), reason::INVALID_VALUE),
            (
                with(&batch, "collector_id", "".into()),
                reason::INVALID_VALUE,
            ),
            (
                with(&batch, "context", serde_json::Value::Null),
                reason::SCHEMA,
            ),
            (with(&batch, "events", (-1).into()), reason::SCHEMA),
            // Batch records are v2 only.
            (with(&batch, "v", 1.into()), reason::SCHEMA),
            (with(&batch, "v", 3.into()), reason::UNKNOWN_VERSION),
        ];
        for (document, expected) in bad {
            assert_eq!(reason_of(&document), expected, "{document}");
        }
        // A batch record is never read as an event, whatever else it carries.
        let (event, _) = v2_parts(&good_record());
        assert_eq!(
            reason_of(&with(&batch, "event_id", event.event_id.to_string().into())),
            "batch"
        );
    }

    #[test]
    fn a_joined_v2_event_is_the_v1_event_but_for_v() {
        let v1 = good_record();
        let (event, batch) = v2_parts(&v1);
        match join(event, Some(&batch), &Rules::default()) {
            Decoded::Event(joined) => {
                assert_eq!(joined.v, RECORD_VERSION_2);
                assert_eq!(StreamRecord { v: 1, ..*joined }, v1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_v2_event_without_its_batch_record_or_with_another_installs_is_rejected() {
        let (event, batch) = v2_parts(&good_record());
        let reject = |decoded: Decoded| match decoded {
            Decoded::Rejected { reason, message } => (reason, message),
            other => panic!("{other:?}"),
        };
        let (reason, message) = reject(join(event.clone(), None, &Rules::default()));
        assert_eq!(reason, reason::NO_BATCH);
        assert!(message.contains(&event.batch_id.to_string()), "{message}");
        let other_install = BatchRecord {
            install_id: "i-2".into(),
            ..batch.clone()
        };
        let (reason, message) =
            reject(join(event.clone(), Some(&other_install), &Rules::default()));
        assert_eq!(reason, reason::INVALID_VALUE);
        assert!(message.contains("install_id"), "{message}");
        let other_app = BatchRecord {
            app_id: "blog".into(),
            ..batch
        };
        let (reason, message) = reject(join(event, Some(&other_app), &Rules::default()));
        assert_eq!(reason, reason::INVALID_VALUE);
        assert!(message.contains("app_id"), "{message}");
    }

    #[test]
    fn the_rules_apply_to_a_v2_event_when_it_is_joined() {
        let (event, batch) = v2_parts(&good_record());
        let rename = Rules {
            rename: [("checkout".to_owned(), "purchase".to_owned())].into(),
            ..Rules::default()
        };
        match join(event.clone(), Some(&batch), &rename) {
            Decoded::Event(joined) => assert_eq!(joined.name, "purchase"),
            other => panic!("{other:?}"),
        }
        let invalid = Rules {
            rename: [("checkout".to_owned(), "9 bad".to_owned())].into(),
            ..Rules::default()
        };
        match join(event.clone(), Some(&batch), &invalid) {
            Decoded::Rejected { reason, .. } => assert_eq!(reason, reason::INVALID_VALUE),
            other => panic!("{other:?}"),
        }
        // Not before: decode_with leaves a v2 event to its join.
        match decode_with(doc(&event).as_bytes(), &invalid) {
            Decoded::EventV2(read) => assert_eq!(read.name, "checkout"),
            other => panic!("{other:?}"),
        }
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
