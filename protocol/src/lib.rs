//! The one definition of Tern's formats, shared by the SDK and the collector.
//!
//! * [`wire`]: wire format v1, the body of `POST /v1/batch` that the SDK sends to the collector.
//! * [`record`]: stream records v1 and v2, the JSON objects the collector writes to Kinesis.
//! * [`limits`]: the limits both sides agree on, each with its reason.
//!
//! The JSON Schemas in `protocol/schema/` describe the same formats for other languages; tests
//! check real payloads against them.

#[cfg(feature = "aggregate")]
pub mod aggregate;
pub mod limits;
pub mod record;
pub mod wire;

pub use record::{
    BatchRecord, DeadLetterRecord, EventRecordV2, GapRecord, StreamRecord, BATCH_KIND, GAP_KIND,
    RECORD_VERSION, RECORD_VERSIONS, RECORD_VERSION_2,
};
pub use wire::{
    drop_reason, gap_reason, AppInfo, Batch, BatchAck, Context, DeviceInfo, ErrorBody, Event, Gap,
    OsInfo, RefusedEvent, SdkInfo, SeqRange, BATCH_PATH, WIRE_VERSION,
};

/// JSON Schema of the wire format v1 batch body.
pub const BATCH_SCHEMA: &str = include_str!("../schema/batch.v1.schema.json");
/// JSON Schema of the stream record v1.
pub const RECORD_SCHEMA: &str = include_str!("../schema/record.v1.schema.json");
/// JSON Schema of the stream record v2 (event, batch and gap records).
pub const RECORD_V2_SCHEMA: &str = include_str!("../schema/record.v2.schema.json");
/// JSON Schema of a clean record: a row of the lake's `events` table on the cleansed stream.
pub const CLEAN_RECORD_SCHEMA: &str = include_str!("../schema/clean-record.v1.schema.json");
