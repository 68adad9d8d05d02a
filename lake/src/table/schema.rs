//! The tables' columns and the Arrow schemas they are written with; rows read by a query put
//! back in them; times and dates in their Arrow form.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use deltalake::arrow::array::{ArrayRef, RecordBatch, TimestampMicrosecondBuilder};
use deltalake::arrow::datatypes::{DataType as ArrowType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::DataType;

use crate::error::{Error, Result};

/// A column: name, Delta type, nullable.
pub(super) type Column = (&'static str, DataType, bool);

/// The `events` columns, in order. The first [`EVENTS_INDEXED_COLUMNS`] get file statistics
/// (min/max), so filters on them skip files.
pub(super) fn event_columns() -> Vec<Column> {
    [
        ("event_id", DataType::STRING, false),
        ("event_time", DataType::TIMESTAMP, false),
        ("received_at", DataType::TIMESTAMP, false),
        ("name", DataType::STRING, false),
        ("install_id", DataType::STRING, false),
        ("seq", DataType::LONG, false),
        ("app_id", DataType::STRING, false),
        ("user_id", DataType::STRING, true),
        ("session_id", DataType::STRING, true),
        ("created_at", DataType::TIMESTAMP, false),
        ("arrived_at", DataType::TIMESTAMP, false),
        ("ingested_at", DataType::TIMESTAMP, false),
        ("sent_at", DataType::TIMESTAMP, false),
    ]
    .into_iter()
    .chain(context_columns())
    .chain([
        ("batch_id", DataType::STRING, false),
        ("collector_id", DataType::STRING, false),
        ("v", DataType::INTEGER, false),
        ("shard_id", DataType::STRING, false),
        ("sequence_number", DataType::STRING, false),
        ("sub_sequence", DataType::INTEGER, true),
        ("properties", DataType::STRING, false),
        ("context", DataType::STRING, false),
        ("event_date", DataType::DATE, false),
    ])
    .collect()
}

/// The typed columns of a batch's context and SDK, in the order `events` and `batches` hold
/// them.
fn context_columns() -> [Column; 11] {
    [
        ("app_package", DataType::STRING, true),
        ("app_version", DataType::STRING, true),
        ("app_build", DataType::STRING, true),
        ("os_name", DataType::STRING, true),
        ("os_version", DataType::STRING, true),
        ("device_manufacturer", DataType::STRING, true),
        ("device_model", DataType::STRING, true),
        ("locale", DataType::STRING, true),
        ("timezone", DataType::STRING, true),
        ("sdk_name", DataType::STRING, false),
        ("sdk_version", DataType::STRING, false),
    ]
}

/// Columns of `events` with file statistics: the ones queries filter on. The JSON columns after
/// them would only make the statistics large.
pub const EVENTS_INDEXED_COLUMNS: usize = 12;

pub(super) fn rejected_columns() -> Vec<Column> {
    vec![
        ("shard_id", DataType::STRING, false),
        ("sequence_number", DataType::STRING, false),
        ("sub_sequence", DataType::INTEGER, true),
        ("arrived_at", DataType::TIMESTAMP, false),
        ("ingested_at", DataType::TIMESTAMP, false),
        ("reason", DataType::STRING, false),
        ("message", DataType::STRING, false),
        ("data", DataType::BINARY, false),
        ("arrived_date", DataType::DATE, false),
    ]
}

/// The `gaps` columns: one row per range of a gap record, so that SQL sums `seq_last -
/// seq_first + 1` without unpacking JSON.
pub(super) fn gap_columns() -> Vec<Column> {
    vec![
        ("gap_id", DataType::STRING, false),
        ("install_id", DataType::STRING, false),
        ("app_id", DataType::STRING, false),
        ("reason", DataType::STRING, false),
        ("seq_first", DataType::LONG, false),
        ("seq_last", DataType::LONG, false),
        ("gap_count", DataType::LONG, false),
        ("at", DataType::TIMESTAMP, false),
        ("received_at", DataType::TIMESTAMP, false),
        ("batch_id", DataType::STRING, false),
        ("collector_id", DataType::STRING, false),
        ("sdk_name", DataType::STRING, false),
        ("sdk_version", DataType::STRING, false),
        ("shard_id", DataType::STRING, false),
        ("sequence_number", DataType::STRING, false),
        ("sub_sequence", DataType::INTEGER, true),
        ("arrived_at", DataType::TIMESTAMP, false),
        ("ingested_at", DataType::TIMESTAMP, false),
        ("received_date", DataType::DATE, false),
    ]
}

/// The `batches` columns: one row per batch record (stream record v2) read, resends included;
/// the context and SDK as `events` has them (typed columns and the `context` JSON), so that a
/// v2 event joined with a row is the event as `events` holds it.
pub(super) fn batch_columns() -> Vec<Column> {
    [
        ("batch_id", DataType::STRING, false),
        ("install_id", DataType::STRING, false),
        ("app_id", DataType::STRING, false),
        ("received_at", DataType::TIMESTAMP, false),
        ("sent_at", DataType::TIMESTAMP, false),
        ("collector_id", DataType::STRING, false),
        ("events", DataType::LONG, false),
    ]
    .into_iter()
    .chain(context_columns())
    .chain([
        ("v", DataType::INTEGER, false),
        ("shard_id", DataType::STRING, false),
        ("sequence_number", DataType::STRING, false),
        ("sub_sequence", DataType::INTEGER, true),
        ("arrived_at", DataType::TIMESTAMP, false),
        ("ingested_at", DataType::TIMESTAMP, false),
        ("context", DataType::STRING, false),
        ("received_date", DataType::DATE, false),
    ])
    .collect()
}

/// Columns of `batches` with file statistics: `batch_id` first (a UUIDv7, so files of other
/// days are skipped by the lookup of one), up to `collector_id`.
pub const BATCHES_INDEXED_COLUMNS: usize = 6;

/// The `raw` columns: a Kinesis record as read, so that any day can be replayed after the
/// stream's retention has dropped it (`tern-lake backfill`).
pub(super) fn raw_columns() -> Vec<Column> {
    vec![
        ("shard_id", DataType::STRING, false),
        ("sequence_number", DataType::STRING, false),
        ("partition_key", DataType::STRING, false),
        ("arrived_at", DataType::TIMESTAMP, false),
        ("ingested_at", DataType::TIMESTAMP, false),
        ("data", DataType::BINARY, false),
        ("arrived_date", DataType::DATE, false),
    ]
}

pub(super) fn arrow_schema(columns: &[Column]) -> SchemaRef {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, ty, nullable)| {
            let arrow = if *ty == DataType::STRING {
                ArrowType::Utf8
            } else if *ty == DataType::TIMESTAMP {
                ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            } else if *ty == DataType::LONG {
                ArrowType::Int64
            } else if *ty == DataType::INTEGER {
                ArrowType::Int32
            } else if *ty == DataType::DATE {
                ArrowType::Date32
            } else {
                ArrowType::Binary
            };
            Field::new(*name, arrow, *nullable)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// The Arrow schema `events` is written with.
pub fn events_schema() -> SchemaRef {
    arrow_schema(&event_columns())
}

/// `batch` (rows of `events` as a query read them: any column order, view or dictionary types)
/// in the schema `events` is written with.
pub fn conform_events(batch: &RecordBatch) -> Result<RecordBatch> {
    conform(batch, &events_schema())
}

/// `batch` (rows of a lake table as a query read them) in `schema`, the one it is written
/// with: columns by name, cast to the written types.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let column = batch
                .column_by_name(field.name())
                .ok_or_else(|| Error::Config(format!("rows without column {}", field.name())))?;
            Ok(deltalake::arrow::compute::cast(column, field.data_type())?)
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The Arrow schema `rejected` is written with.
pub fn rejected_schema() -> SchemaRef {
    arrow_schema(&rejected_columns())
}

pub(super) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn days(date: NaiveDate) -> i32 {
    // Days since 1970-01-01 fit an i32 for every date chrono can hold.
    (date - NaiveDate::default()).num_days() as i32
}

/// The UTC date of `t` as an Arrow/Delta `DATE` (days since the epoch).
pub fn date_days(t: DateTime<Utc>) -> i32 {
    days(t.date_naive())
}

pub(super) fn timestamps() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}
