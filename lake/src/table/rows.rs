//! Rows of the side tables (`raw`, `rejected`, `gaps`) as batches, and where a row was read
//! from.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{
    ArrayRef, BinaryBuilder, Date32Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
};
use tern_protocol::GapRecord;

use super::schema::{
    arrow_schema, date_days, gap_columns, micros, raw_columns, rejected_columns, timestamps,
};
use crate::error::Result;

/// Where a row was read from.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The Kinesis shard.
    pub shard_id: Arc<str>,
    /// The Kinesis record's sequence number.
    pub sequence_number: Arc<str>,
    /// Index inside a KPL aggregate, `None` for a plain record.
    pub sub_sequence: Option<i32>,
    /// When Kinesis accepted the record.
    pub arrived_at: DateTime<Utc>,
}

/// A Kinesis record for `raw`.
#[derive(Debug, Clone)]
pub struct RawRow {
    /// The shard it was read from.
    pub shard_id: Arc<str>,
    /// The record as read.
    pub record: crate::source::KinesisRecord,
}

/// `rows` as one `raw` batch.
pub fn raw_batch(rows: &[RawRow], ingested_at: DateTime<Utc>) -> Result<RecordBatch> {
    let mut shard_id = StringBuilder::new();
    let mut sequence_number = StringBuilder::new();
    let mut partition_key = StringBuilder::new();
    let mut arrived_at = timestamps();
    let mut ingested = timestamps();
    let mut data = BinaryBuilder::new();
    let mut arrived_date = Date32Builder::new();
    for row in rows {
        shard_id.append_value(&row.shard_id);
        sequence_number.append_value(&row.record.sequence_number);
        partition_key.append_value(&row.record.partition_key);
        arrived_at.append_value(micros(row.record.arrived_at));
        ingested.append_value(micros(ingested_at));
        data.append_value(&row.record.data);
        arrived_date.append_value(date_days(row.record.arrived_at));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(shard_id.finish()),
        Arc::new(sequence_number.finish()),
        Arc::new(partition_key.finish()),
        Arc::new(arrived_at.finish()),
        Arc::new(ingested.finish()),
        Arc::new(data.finish()),
        Arc::new(arrived_date.finish()),
    ];
    Ok(RecordBatch::try_new(arrow_schema(&raw_columns()), columns)?)
}

/// A record for `rejected`.
#[derive(Debug, Clone)]
pub struct RejectedRow {
    /// Where it was read.
    pub from: Provenance,
    /// One of [`crate::decode::reason::ALL`].
    pub reason: &'static str,
    /// What was wrong.
    pub message: String,
    /// The user record's bytes, as read.
    pub data: Vec<u8>,
    /// When it was first written (a backfill keeps it); `None`: at this commit.
    pub ingested_at: Option<DateTime<Utc>>,
}

/// `rows` as one `rejected` batch.
pub fn rejected_batch(rows: &[RejectedRow], ingested_at: DateTime<Utc>) -> Result<RecordBatch> {
    let mut shard_id = StringBuilder::new();
    let mut sequence_number = StringBuilder::new();
    let mut sub_sequence = Int32Builder::new();
    let mut arrived_at = timestamps();
    let mut ingested = timestamps();
    let mut reason = StringBuilder::new();
    let mut message = StringBuilder::new();
    let mut data = BinaryBuilder::new();
    let mut arrived_date = Date32Builder::new();
    for row in rows {
        shard_id.append_value(&row.from.shard_id);
        sequence_number.append_value(&row.from.sequence_number);
        sub_sequence.append_option(row.from.sub_sequence);
        arrived_at.append_value(micros(row.from.arrived_at));
        ingested.append_value(micros(row.ingested_at.unwrap_or(ingested_at)));
        reason.append_value(row.reason);
        message.append_value(&row.message);
        data.append_value(&row.data);
        arrived_date.append_value(date_days(row.from.arrived_at));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(shard_id.finish()),
        Arc::new(sequence_number.finish()),
        Arc::new(sub_sequence.finish()),
        Arc::new(arrived_at.finish()),
        Arc::new(ingested.finish()),
        Arc::new(reason.finish()),
        Arc::new(message.finish()),
        Arc::new(data.finish()),
        Arc::new(arrived_date.finish()),
    ];
    Ok(RecordBatch::try_new(
        arrow_schema(&rejected_columns()),
        columns,
    )?)
}

/// `gaps` as one batch: a row per range of each gap record.
pub fn gaps_batch(
    gaps: &[(GapRecord, Provenance)],
    ingested_at: DateTime<Utc>,
) -> Result<RecordBatch> {
    let mut gap_id = StringBuilder::new();
    let mut install_id = StringBuilder::new();
    let mut app_id = StringBuilder::new();
    let mut reason = StringBuilder::new();
    let mut seq_first = Int64Builder::new();
    let mut seq_last = Int64Builder::new();
    let mut gap_count = Int64Builder::new();
    let mut at = timestamps();
    let mut received_at = timestamps();
    let mut batch_id = StringBuilder::new();
    let mut collector_id = StringBuilder::new();
    let mut sdk_name = StringBuilder::new();
    let mut sdk_version = StringBuilder::new();
    let mut shard_id = StringBuilder::new();
    let mut sequence_number = StringBuilder::new();
    let mut sub_sequence = Int32Builder::new();
    let mut arrived_at = timestamps();
    let mut ingested = timestamps();
    let mut received_date = Date32Builder::new();
    let long = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    for (gap, from) in gaps {
        for range in &gap.ranges {
            gap_id.append_value(gap.gap_id.to_string());
            install_id.append_value(&gap.install_id);
            app_id.append_value(&gap.app_id);
            reason.append_value(&gap.reason);
            seq_first.append_value(long(range.first));
            seq_last.append_value(long(range.last));
            gap_count.append_value(long(gap.count));
            at.append_value(micros(gap.at));
            received_at.append_value(micros(gap.received_at));
            batch_id.append_value(gap.batch_id.to_string());
            collector_id.append_value(&gap.collector_id);
            sdk_name.append_value(&gap.sdk.name);
            sdk_version.append_value(&gap.sdk.version);
            shard_id.append_value(&from.shard_id);
            sequence_number.append_value(&from.sequence_number);
            sub_sequence.append_option(from.sub_sequence);
            arrived_at.append_value(micros(from.arrived_at));
            ingested.append_value(micros(ingested_at));
            received_date.append_value(date_days(gap.received_at));
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(gap_id.finish()),
        Arc::new(install_id.finish()),
        Arc::new(app_id.finish()),
        Arc::new(reason.finish()),
        Arc::new(seq_first.finish()),
        Arc::new(seq_last.finish()),
        Arc::new(gap_count.finish()),
        Arc::new(at.finish()),
        Arc::new(received_at.finish()),
        Arc::new(batch_id.finish()),
        Arc::new(collector_id.finish()),
        Arc::new(sdk_name.finish()),
        Arc::new(sdk_version.finish()),
        Arc::new(shard_id.finish()),
        Arc::new(sequence_number.finish()),
        Arc::new(sub_sequence.finish()),
        Arc::new(arrived_at.finish()),
        Arc::new(ingested.finish()),
        Arc::new(received_date.finish()),
    ];
    Ok(RecordBatch::try_new(arrow_schema(&gap_columns()), columns)?)
}
