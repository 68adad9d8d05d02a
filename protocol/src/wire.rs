//! Wire format v1: what the SDK POSTs to the collector and what the collector answers.
//!
//! `POST /v1/batch` with `Authorization: Bearer <write key>`, `Content-Type: application/json`
//! and `Content-Encoding: zstd` (or `gzip`, or none). The body is one [`Batch`]. See
//! `docs/protocol.md` for the full contract and `schema/batch.v1.schema.json` for its schema.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Version of the wire format described here.
pub const WIRE_VERSION: u32 = 1;

/// Path of the batch endpoint.
pub const BATCH_PATH: &str = "/v1/batch";

/// One upload: events of one install, with the context they share.
///
/// `batch_id` and `events` are fixed when the SDK first cuts the batch and never change across
/// retries; `sent_at` and `sent_uptime_ms` are refreshed at each attempt.
///
/// The event type is a parameter so that the SDK can send events it stored already serialized
/// (`Batch<Box<RawValue>>`) without parsing them again; the collector reads `Batch<Event>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch<E = Event> {
    /// UUID v7 chosen when the batch was cut; stable across retries.
    pub batch_id: Uuid,
    /// Stable identifier of the app installation that produced the events.
    pub install_id: String,
    /// Device wall clock at this attempt.
    #[serde(with = "rfc3339")]
    pub sent_at: DateTime<Utc>,
    /// Monotonic milliseconds of `clock_id` at this attempt (see `docs/protocol.md`, clocks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_uptime_ms: Option<u64>,
    /// Identifier of the monotonic clock `sent_uptime_ms` is read from: the device's boot where
    /// the platform tells it, else one per process run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_id: Option<String>,
    /// The SDK that built the batch.
    pub sdk: SdkInfo,
    /// Context shared by every event of the batch.
    pub context: Context,
    /// The events, in `seq` order.
    pub events: Vec<E>,
    /// Events the SDK dropped on the device since its previous report, by reason (one of
    /// [`drop_reason::ALL`]), so that loss is visible on the server. Sent once, with the first
    /// batch cut after the drops (and with its retries).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dropped: BTreeMap<String, u64>,
    /// Events the SDK gave up on after giving them a `seq`, each report once (with its retries):
    /// the collector writes each as a gap record to the stream, so that consumers can tell
    /// "lost for good" from "not arrived yet". A batch may carry gaps and no events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<Gap>,
}

/// A range of `seq` numbers of one install that will never arrive, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// UUID v7 chosen when the SDK recorded the gap; a resent gap carries the same one, so
    /// consumers deduplicate gap records on it as they do events on `event_id`.
    pub gap_id: Uuid,
    /// Why the events were given up on: one of [`gap_reason::ALL`].
    pub reason: String,
    /// The `seq` numbers given up on, as ascending, disjoint inclusive ranges.
    pub ranges: Vec<SeqRange>,
    /// How many `seq` numbers the ranges hold.
    pub count: u64,
    /// Device wall clock when the SDK gave up on them.
    #[serde(with = "rfc3339")]
    pub at: DateTime<Utc>,
}

impl Gap {
    /// The `seq` numbers the ranges hold (the value `count` must have).
    pub fn seqs_in_ranges(&self) -> u64 {
        self.ranges.iter().map(SeqRange::len).sum()
    }
}

/// An inclusive range of `seq` numbers, `first <= last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqRange {
    /// First `seq` of the range.
    pub first: u64,
    /// Last `seq` of the range (inclusive).
    pub last: u64,
}

impl SeqRange {
    /// Number of `seq` numbers in the range (0 if it is reversed).
    pub fn len(&self) -> u64 {
        if self.last < self.first {
            0
        } else {
            self.last - self.first + 1
        }
    }

    /// Whether the range holds no `seq` (it is reversed).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why the SDK gave up on events that had a `seq`: the `reason` of a [`Gap`].
pub mod gap_reason {
    /// The buffer held more events than its cap; the oldest were dropped.
    pub const CAP_COUNT: &str = "cap_count";
    /// The buffer held more bytes than its cap; the oldest were dropped.
    pub const CAP_BYTES: &str = "cap_bytes";
    /// The events waited longer than the buffer's age cap.
    pub const CAP_AGE: &str = "cap_age";
    /// The collector refused them (or the batch holding them); they are kept in the device's
    /// quarantine for inspection and never sent again.
    pub const QUARANTINE: &str = "quarantine";
    /// They were refused and the quarantine was full, so they were deleted at once.
    pub const QUARANTINE_CAP: &str = "quarantine_cap";
    /// The user opted out and the pending events were deleted (reported after a later opt-in,
    /// since nothing leaves the device while opted out).
    pub const OPT_OUT: &str = "opt_out";
    /// The buffer was found corrupt and moved aside: every `seq` it may have held unsent.
    pub const STORAGE_LOST: &str = "storage_lost";
    /// The app tracked faster than the SDK could store: a hand-off queue (the SDK's, or the
    /// Kotlin/Python layer's in front of it) stayed full and the events were dropped before
    /// they were stored; the SDK numbered them only to report them.
    pub const QUEUE_FULL: &str = "queue_full";

    /// Every reason above.
    pub const ALL: [&str; 8] = [
        CAP_COUNT,
        CAP_BYTES,
        CAP_AGE,
        QUARANTINE,
        QUARANTINE_CAP,
        OPT_OUT,
        STORAGE_LOST,
        QUEUE_FULL,
    ];
}

/// Why the SDK dropped events on the device: the keys of [`Batch::dropped`].
pub mod drop_reason {
    /// The hand-off queue between `track()` and the writer was full.
    pub const QUEUE_FULL: &str = "queue_full";
    /// Storing failed (disk full, I/O error).
    pub const STORAGE_ERROR: &str = "storage_error";
    /// The buffer held more events than its cap.
    pub const BUFFER_EVENTS_CAP: &str = "buffer_events_cap";
    /// The buffer held more bytes than its cap.
    pub const BUFFER_BYTES_CAP: &str = "buffer_bytes_cap";
    /// The event waited longer than the buffer's age cap.
    pub const BUFFER_AGE_CAP: &str = "buffer_age_cap";
    /// The database file was corrupt and was moved aside.
    pub const CORRUPT_DATABASE: &str = "corrupt_database";
    /// A single event was larger than the limits (counted by earlier SDK versions; `track()`
    /// now refuses such an event with an error instead).
    pub const TOO_LARGE: &str = "too_large";
    /// A quarantined batch was dropped to keep the quarantine within its caps.
    pub const QUARANTINE_CAP: &str = "quarantine_cap";

    /// Every reason above; the collector labels any other as `other`.
    pub const ALL: [&str; 8] = [
        QUEUE_FULL,
        STORAGE_ERROR,
        BUFFER_EVENTS_CAP,
        BUFFER_BYTES_CAP,
        BUFFER_AGE_CAP,
        CORRUPT_DATABASE,
        TOO_LARGE,
        QUARANTINE_CAP,
    ];
}

/// Name and version of the SDK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SdkInfo {
    /// SDK name, e.g. `tern-sdk-kotlin`.
    pub name: String,
    /// SDK version.
    pub version: String,
}

/// What is known about the app and the device, set once by the host platform.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// The app.
    #[serde(default)]
    pub app: AppInfo,
    /// The device.
    #[serde(default)]
    pub device: DeviceInfo,
    /// The operating system.
    #[serde(default)]
    pub os: OsInfo,
    /// BCP 47 locale, e.g. `de-CH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// IANA time zone, e.g. `Europe/Zurich`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// The app that tracks events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppInfo {
    /// Bundle or package identifier, e.g. `com.example.shop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Marketing version, e.g. `4.2.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Build number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
}

/// The device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Manufacturer, e.g. `Google`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// Model, e.g. `Pixel 8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// The operating system.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsInfo {
    /// `Android`, `iOS`, `Linux`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// OS version, e.g. `15`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// One tracked event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// UUID v7 stamped at `track()`; the key consumers deduplicate on.
    pub event_id: Uuid,
    /// Per-install sequence number, starting at 1, never reused; a `seq` the SDK gives up on
    /// is reported in a [`Gap`].
    pub seq: u64,
    /// Event name (see `limits::event_name_problem`).
    pub name: String,
    /// Device wall clock at `track()`.
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// Monotonic milliseconds of `clock_id` at `track()`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
    /// Identifier of the monotonic clock `uptime_ms` is read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_id: Option<String>,
    /// Free-form properties, a JSON object.
    #[serde(default)]
    pub properties: Map<String, Value>,
    /// The identified user, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The session the event belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// Body of a 200 answer: every valid event of the batch is in the stream, and every invalid one
/// is listed in `refused` (and, if the collector has one, written to the dead-letter stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAck {
    /// The acknowledged batch.
    pub batch_id: Uuid,
    /// Events written to the stream.
    pub accepted: u32,
    /// Refused events also written to the dead-letter stream (0 without one).
    #[serde(default)]
    pub dead_lettered: u32,
    /// The events of the batch that were not written to the stream, each with its reason. The
    /// SDK keeps them in its quarantine and reports them as a `quarantine` gap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<RefusedEvent>,
    /// Gap reports of the batch written to the stream.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gaps: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An event of an acknowledged batch that was not written to the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedEvent {
    /// The refused event.
    pub event_id: Uuid,
    /// Its `seq`.
    pub seq: u64,
    /// Machine-readable reason, as in dead letters: `invalid_name`, `invalid_seq`,
    /// `invalid_id`, `invalid_properties`, `invalid_timestamp`, `record_too_large`.
    pub reason: String,
    /// What was wrong, for a human.
    pub message: String,
}

/// Body of every error answer (4xx, 5xx).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable reason, e.g. `malformed_json`, `unauthorized`, `stream_unavailable`.
    pub error: String,
    /// What went wrong, for a human.
    pub message: String,
}

/// RFC 3339 timestamps in UTC with millisecond precision (`2026-11-24T21:34:56.123Z`); any
/// RFC 3339 offset is accepted on input and converted to UTC.
pub mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserializer, Serializer};

    /// Serialize as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    /// Parse any RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        d.deserialize_str(TimestampVisitor)
    }

    /// Reads the timestamp from the input where it lies when the input allows it, so that no
    /// `String` is allocated for it (`Cow<str>` always allocates one).
    struct TimestampVisitor;

    impl serde::de::Visitor<'_> for TimestampVisitor {
        type Value = DateTime<Utc>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            // What `String`'s own visitor says, as before this visitor.
            f.write_str("a string")
        }

        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| E::custom(format!("invalid RFC 3339 timestamp {s:?}: {e}")))
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
            match std::str::from_utf8(v) {
                Ok(s) => self.visit_str(s),
                Err(_) => Err(E::invalid_value(serde::de::Unexpected::Bytes(v), &self)),
            }
        }
    }
}
