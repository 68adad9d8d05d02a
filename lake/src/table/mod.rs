//! The lake's Delta tables: `events` (one row per `event_id`, partitioned by `event_date`),
//! `gaps` (one row per `seq` range the SDKs reported lost, partitioned by the date it arrived),
//! `batches` (one row per batch record of stream record v2, partitioned by the date it arrived),
//! `rejected` (what could not be read as a stream record, partitioned by arrival date) and `raw`
//! (every Kinesis record as read, partitioned by arrival date), their schemas, and commits that
//! carry the shards' checkpoints.

mod batches;
mod commit;
mod events;
mod open;
mod rows;
mod schema;

pub use self::batches::{batch_records, batches_batch, StoredBatch};
pub use self::commit::{commit, is_conflict};
pub use self::events::EventColumns;
pub use self::open::{
    open, open_batches, open_events, open_gaps, open_raw, open_rejected, table_url, BATCHES,
    EVENTS, GAPS, RAW, REJECTED,
};
pub use self::rows::{gaps_batch, raw_batch, rejected_batch, Provenance, RawRow, RejectedRow};
pub use self::schema::{
    conform, conform_events, date_days, events_schema, rejected_schema, EVENTS_INDEXED_COLUMNS,
};
