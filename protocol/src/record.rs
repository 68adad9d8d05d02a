//! Stream record v1: the JSON object the collector writes to Kinesis for each event.
//!
//! This is the contract other teams read (`docs/stream-record.md`,
//! `schema/record.v1.schema.json`). The partition key of every record is its `install_id`, so
//! the events of one install stay in order on one shard.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::wire::{rfc3339, Context, SdkInfo, SeqRange};

/// Version of the stream record described here; written in every record as `v`.
pub const RECORD_VERSION: u32 = 1;

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
    /// Record format version ([`RECORD_VERSION`]).
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
