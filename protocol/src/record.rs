//! Stream records: the JSON objects the collector writes to Kinesis.
//!
//! This is the contract other teams read (`docs/stream-record.md`, `schema/record.v1.schema.json`
//! and `schema/record.v2.schema.json`). The partition key of every record is its `install_id`,
//! so the records of one install stay in order on one shard.
//!
//! * **v1** ([`StreamRecord`]): one self-contained record per event.
//! * **v2** ([`EventRecordV2`], [`BatchRecord`]): what every event of an upload shares (its
//!   clocks, context, SDK and provenance) is written once, in the upload's batch record, and each
//!   event record carries the `batch_id` to join on ([`EventRecordV2::join`] gives back the v1
//!   record). The collector writes an upload's batch record before any of its event records.
//!
//! Gap records ([`GapRecord`]) are the same in both versions but for `v`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::wire::{rfc3339, Context, SdkInfo, SeqRange};

/// Version of the self-contained stream record ([`StreamRecord`]); written in every record as `v`.
pub const RECORD_VERSION: u32 = 1;

/// Version of the stream record that writes an upload's shared fields once, in a
/// [`BatchRecord`] ([`EventRecordV2`]).
pub const RECORD_VERSION_2: u32 = 2;

/// The stream record versions a reader of this crate understands.
pub const RECORD_VERSIONS: [u32; 2] = [RECORD_VERSION, RECORD_VERSION_2];

/// One event as it stands in the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRecord {
    /// Record format version ([`RECORD_VERSION`]).
    pub v: u32,
    /// The event's unique id; duplicates in the stream always carry the same one.
    pub event_id: Uuid,
    /// The app id that the write key of the upload belongs to.
    pub app_id: String,
    /// Installation that produced the event (also the partition key).
    pub install_id: String,
    /// Per-install sequence number.
    pub seq: u64,
    /// Event name.
    pub name: String,
    /// Device wall clock at `track()`, as sent.
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// `created_at` corrected for the device clock's offset (see `docs/protocol.md`, clocks).
    #[serde(with = "rfc3339")]
    pub event_time: DateTime<Utc>,
    /// Device wall clock when the batch was sent (the attempt that got through).
    #[serde(with = "rfc3339")]
    pub sent_at: DateTime<Utc>,
    /// Collector clock when the upload arrived.
    #[serde(with = "rfc3339")]
    pub received_at: DateTime<Utc>,
    /// Event properties.
    pub properties: Map<String, Value>,
    /// App, device and OS context of the batch.
    pub context: Context,
    /// Identified user, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Session, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The batch the event arrived in.
    pub batch_id: Uuid,
    /// The SDK that sent it.
    pub sdk: SdkInfo,
    /// The collector instance that wrote it.
    pub collector_id: String,
}

/// The `kind` of a [`GapRecord`]. Event records carry no `kind`: a record whose `kind` is
/// `"gap"` is a gap record, and must never be read as an event.
pub const GAP_KIND: &str = "gap";

/// A stream record reporting `seq` numbers of one install that will never arrive (see
/// `docs/stream-record.md`, *Gaps*): received + reported lost = issued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GapRecord {
    /// Record format version: that of the stream's event records (the fields are the same).
    pub v: u32,
    /// Always [`GAP_KIND`].
    pub kind: String,
    /// Unique per gap; duplicates in the stream carry the same one. Deduplicate on it.
    pub gap_id: Uuid,
    /// The app id of the write key.
    pub app_id: String,
    /// Installation whose events are lost (also the partition key).
    pub install_id: String,
    /// Why: one of `gap_reason::ALL` (`cap_count`, `cap_bytes`, `cap_age`, `quarantine`,
    /// `quarantine_cap`, `opt_out`, `storage_lost`, `queue_full`).
    pub reason: String,
    /// The lost `seq` numbers, ascending disjoint inclusive ranges.
    pub ranges: Vec<SeqRange>,
    /// How many `seq` numbers the ranges hold.
    pub count: u64,
    /// Device wall clock when the SDK gave up on them, as sent.
    #[serde(with = "rfc3339")]
    pub at: DateTime<Utc>,
    /// Collector clock when the upload reporting it arrived.
    #[serde(with = "rfc3339")]
    pub received_at: DateTime<Utc>,
    /// The batch that reported it.
    pub batch_id: Uuid,
    /// The SDK that reported it.
    pub sdk: SdkInfo,
    /// The collector instance that wrote it.
    pub collector_id: String,
}

/// The `kind` of a [`BatchRecord`] (v2 only).
pub const BATCH_KIND: &str = "batch";

/// Stream record v2: what every event record of one upload shares, written once per upload
/// (and again when the upload is resent), before the upload's event records and with the same
/// partition key, so that a reader in shard order meets it first. Join on `batch_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// Record format version ([`RECORD_VERSION_2`]).
    pub v: u32,
    /// Always [`BATCH_KIND`].
    pub kind: String,
    /// The upload's batch id: the join key of its event records.
    pub batch_id: Uuid,
    /// The app id that the write key of the upload belongs to.
    pub app_id: String,
    /// Installation that sent the upload (also the partition key).
    pub install_id: String,
    /// Device wall clock when the batch was sent (the attempt that got through).
    #[serde(with = "rfc3339")]
    pub sent_at: DateTime<Utc>,
    /// Collector clock when the upload arrived.
    #[serde(with = "rfc3339")]
    pub received_at: DateTime<Utc>,
    /// App, device and OS context of the batch.
    pub context: Context,
    /// The SDK that sent it.
    pub sdk: SdkInfo,
    /// The collector instance that wrote it.
    pub collector_id: String,
    /// Event records of the upload written after this record (its valid events).
    pub events: u64,
}

/// Stream record v2 of one event: the event's own fields and the `batch_id` of the
/// [`BatchRecord`] that holds the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecordV2 {
    /// Record format version ([`RECORD_VERSION_2`]).
    pub v: u32,
    /// The event's unique id; duplicates in the stream always carry the same one.
    pub event_id: Uuid,
    /// The app id that the write key of the upload belongs to.
    pub app_id: String,
    /// Installation that produced the event (also the partition key).
    pub install_id: String,
    /// Per-install sequence number.
    pub seq: u64,
    /// Event name.
    pub name: String,
    /// Device wall clock at `track()`, as sent.
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// `created_at` corrected for the device clock's offset (see `docs/protocol.md`, clocks).
    #[serde(with = "rfc3339")]
    pub event_time: DateTime<Utc>,
    /// Event properties.
    pub properties: Map<String, Value>,
    /// Identified user, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Session, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The batch the event arrived in: the [`BatchRecord`] with the shared fields.
    pub batch_id: Uuid,
}

impl EventRecordV2 {
    /// The whole event: this record with the shared fields of its upload's `batch` record, as
    /// the self-contained [`StreamRecord`] (whose `v` stays this record's). An error says why
    /// `batch` is not this event's: another `batch_id`, `install_id` or `app_id`.
    pub fn join(self, batch: &BatchRecord) -> Result<StreamRecord, String> {
        if self.batch_id != batch.batch_id {
            return Err(format!(
                "batch_id: the event's is {}, its batch record's {}",
                self.batch_id, batch.batch_id
            ));
        }
        for (field, event, in_batch) in [
            ("install_id", &self.install_id, &batch.install_id),
            ("app_id", &self.app_id, &batch.app_id),
        ] {
            if event != in_batch {
                return Err(format!(
                    "{field}: the event's is {event:?}, its batch record's {in_batch:?}"
                ));
            }
        }
        Ok(StreamRecord {
            v: self.v,
            event_id: self.event_id,
            app_id: self.app_id,
            install_id: self.install_id,
            seq: self.seq,
            name: self.name,
            created_at: self.created_at,
            event_time: self.event_time,
            sent_at: batch.sent_at,
            received_at: batch.received_at,
            properties: self.properties,
            context: batch.context.clone(),
            user_id: self.user_id,
            session_id: self.session_id,
            batch_id: self.batch_id,
            sdk: batch.sdk.clone(),
            collector_id: batch.collector_id.clone(),
        })
    }
}

impl StreamRecord {
    /// This event as stream record v2: its event record, and the batch record of an upload of
    /// `events` events whose shared fields are this record's (the inverse of
    /// [`EventRecordV2::join`], but for `v`).
    pub fn to_v2(&self, events: u64) -> (EventRecordV2, BatchRecord) {
        let event = EventRecordV2 {
            v: RECORD_VERSION_2,
            event_id: self.event_id,
            app_id: self.app_id.clone(),
            install_id: self.install_id.clone(),
            seq: self.seq,
            name: self.name.clone(),
            created_at: self.created_at,
            event_time: self.event_time,
            properties: self.properties.clone(),
            user_id: self.user_id.clone(),
            session_id: self.session_id.clone(),
            batch_id: self.batch_id,
        };
        let batch = BatchRecord {
            v: RECORD_VERSION_2,
            kind: BATCH_KIND.to_owned(),
            batch_id: self.batch_id,
            app_id: self.app_id.clone(),
            install_id: self.install_id.clone(),
            sent_at: self.sent_at,
            received_at: self.received_at,
            context: self.context.clone(),
            sdk: self.sdk.clone(),
            collector_id: self.collector_id.clone(),
            events,
        };
        (event, batch)
    }
}

/// What the collector writes to the dead-letter stream for an event it could not accept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterRecord {
    /// Record format version ([`RECORD_VERSION`]).
    pub v: u32,
    /// Machine-readable reason, e.g. `invalid_name`, `record_too_large`.
    pub reason: String,
    /// What was wrong, for a human.
    pub message: String,
    /// The app id of the write key.
    pub app_id: String,
    /// Installation that sent it.
    pub install_id: String,
    /// The batch it arrived in.
    pub batch_id: Uuid,
    /// Collector clock when the upload arrived.
    #[serde(with = "rfc3339")]
    pub received_at: DateTime<Utc>,
    /// The collector instance that wrote it.
    pub collector_id: String,
    /// The event as received (possibly truncated when it alone is too large for a record).
    pub event: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v1_record() -> StreamRecord {
        serde_json::from_value(json!({
            "v": 1, "event_id": "019ab7b2-4b00-7aaa-8bbb-cccccccccccc", "app_id": "shop",
            "install_id": "i-1", "seq": 42, "name": "checkout",
            "created_at": "2026-11-24T21:34:50.001Z", "event_time": "2026-11-24T21:34:50.412Z",
            "sent_at": "2026-11-24T21:34:56.789Z", "received_at": "2026-11-24T21:34:57.190Z",
            "properties": { "total": 59.9 },
            "context": { "app": { "id": "com.example.shop", "version": "4.2.0" } },
            "user_id": "u-1", "batch_id": "019ab7b2-4c1e-7d2a-9f3e-5a1b2c3d4e5f",
            "sdk": { "name": "tern-sdk-kotlin", "version": "0.1.0" }, "collector_id": "c-1"
        }))
        .unwrap()
    }

    #[test]
    fn a_v2_event_joined_with_its_batch_record_is_the_v1_record_but_for_v() {
        let v1 = v1_record();
        let (event, batch) = v1.to_v2(1);
        let joined = event.join(&batch).unwrap();
        assert_eq!(joined.v, RECORD_VERSION_2);
        assert_eq!(StreamRecord { v: 1, ..joined }, v1);
    }

    #[test]
    fn a_batch_record_of_another_upload_install_or_app_does_not_join() {
        let (event, batch) = v1_record().to_v2(1);
        let other_batch = BatchRecord {
            batch_id: Uuid::nil(),
            ..batch.clone()
        };
        let other_install = BatchRecord {
            install_id: "i-2".into(),
            ..batch.clone()
        };
        let other_app = BatchRecord {
            app_id: "blog".into(),
            ..batch
        };
        for (batch, field) in [
            (other_batch, "batch_id"),
            (other_install, "install_id"),
            (other_app, "app_id"),
        ] {
            let err = event.clone().join(&batch).unwrap_err();
            assert!(err.starts_with(field), "{err}");
        }
    }

    #[test]
    fn v2_records_validate_against_the_v2_schema_and_not_the_v1_schema() {
        let v2 = jsonschema::validator_for(&serde_json::from_str(crate::RECORD_V2_SCHEMA).unwrap())
            .unwrap();
        let v1 = jsonschema::validator_for(&serde_json::from_str(crate::RECORD_SCHEMA).unwrap())
            .unwrap();
        let record = v1_record();
        let (event, batch) = record.to_v2(1);
        let event = serde_json::to_value(&event).unwrap();
        let batch = serde_json::to_value(&batch).unwrap();
        for doc in [&event, &batch] {
            assert!(v2.is_valid(doc), "{doc}");
            assert!(!v1.is_valid(doc), "{doc}");
        }
        assert!(!v2.is_valid(&serde_json::to_value(&record).unwrap()));
        // A batch record is never an event: it has no event_id, and a kind.
        let mut both = batch.clone();
        both["event_id"] = event["event_id"].clone();
        assert!(!v2.is_valid(&both));
    }
}
