//! The one definition of Tern's formats, shared by the SDK and the collector.
//!
//! * [`wire`]: wire format v1, the body of `POST /v1/batch` that the SDK sends to the collector.
//! * [`record`]: stream record v1, the JSON object the collector writes to Kinesis, one per event.
//! * [`limits`]: the limits both sides agree on, each with its reason.
//!
//! The JSON Schemas in `protocol/schema/` describe the same formats for other languages; tests
//! check real payloads against them.

#[cfg(feature = "aggregate")]
pub mod aggregate;
pub mod limits;
pub mod record;
pub mod wire;

pub use record::{DeadLetterRecord, GapRecord, StreamRecord, GAP_KIND, RECORD_VERSION};
pub use wire::{
    drop_reason, gap_reason, AppInfo, Batch, BatchAck, Context, DeviceInfo, ErrorBody, Event, Gap,
    OsInfo, RefusedEvent, SdkInfo, SeqRange, BATCH_PATH, WIRE_VERSION,
};

/// JSON Schema of the wire format v1 batch body.
pub const BATCH_SCHEMA: &str = include_str!("../schema/batch.v1.schema.json");
/// JSON Schema of the stream record v1.
pub const RECORD_SCHEMA: &str = include_str!("../schema/record.v1.schema.json");
/// JSON Schema of a clean record: a row of the lake's `events` table on the cleansed stream.
pub const CLEAN_RECORD_SCHEMA: &str = include_str!("../schema/clean-record.v1.schema.json");
