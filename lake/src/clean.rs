//! The cleansed stream (`tern-lake ingest --clean-stream NAME`): every row committed to
//! `events`, published once more to a Kinesis stream for online features, in the JSON form of
//! the table row (`protocol/schema/clean-record.v1.schema.json`, `docs/clean-record.md`).
//!
//! Publishing follows the commit, and what has been published is part of the commit's `txn`
//! bookkeeping: each commit records the `ingested_at` of the last commit whose rows were all
//! accepted (its *mark*). At start, rows committed after the mark are published again, so a
//! crash between a commit and its publish loses nothing; those rows are the stream's only
//! duplicates, and `tern_lake_clean_republished` counts them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::{
    DataType, Date32Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use deltalake::kernel::Transaction;

use crate::error::{Error, Result};
use crate::limits::{
    CLEAN_RETRY_MAX, CLEAN_RETRY_MIN, PUT_RECORDS_MAX_BYTES, PUT_RECORDS_MAX_RECORDS,
};
use crate::metrics::Metrics;

/// The `txn` app id holding the mark of worker `worker` (`I/N`) publishing `stream`'s rows to
/// `clean`.
pub fn mark_app_id(stream: &str, clean: &str, worker: &str) -> String {
    format!(
        "tern-lake-clean/{stream}/{clean}/{}",
        worker.replace('/', "of")
    )
}

/// The `txn` action recording `mark` (microseconds since the epoch).
pub fn mark_txn(app_id: &str, mark: i64, now_ms: i64) -> Transaction {
    Transaction {
        app_id: app_id.to_owned(),
        version: mark,
        last_updated: Some(now_ms),
    }
}

/// One row as a clean record: its partition key (`install_id`), its `arrived_at` (for the
/// latency metric) and its JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct CleanRecord {
    /// `install_id`.
    pub partition_key: String,
    /// When the raw record arrived in the raw stream.
    pub arrived_at: DateTime<Utc>,
    /// The JSON document.
    pub json: String,
}

/// Columns whose strings are JSON documents, embedded as objects, not strings.
const JSON_COLUMNS: [&str; 2] = ["properties", "context"];

/// The rows of `batch` (an `events` batch, as written or as read) as clean records: one JSON
/// object per row, with the table's column names in its order, timestamps in RFC 3339 UTC with
/// microseconds, dates as `YYYY-MM-DD`, and `properties` and `context` as JSON objects.
pub fn records(batch: &RecordBatch) -> Result<Vec<CleanRecord>> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| Error::Config(format!("events has no column {name}")))
    };
    let install = column("install_id")?.as_string::<i32>();
    let arrived = column("arrived_at")?.as_primitive::<TimestampMicrosecondType>();
    rows_json(batch)?
        .into_iter()
        .enumerate()
        .map(|(row, json)| {
            Ok(CleanRecord {
                partition_key: install.value(row).to_owned(),
                arrived_at: from_micros(arrived.value(row))?,
                json,
            })
        })
        .collect()
}

/// Every row of `batch` (a batch in a lake table's written schema) as one JSON object, as
/// [`records`] describes; binary columns as lowercase hex.
pub fn rows_json(batch: &RecordBatch) -> Result<Vec<String>> {
    let schema = batch.schema();
    let names = schema
        .fields()
        .iter()
        .map(|f| serde_json::to_string(f.name()))
        .collect::<serde_json::Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut json = String::with_capacity(1024);
        json.push('{');
        for (i, field) in schema.fields().iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(&names[i]);
            json.push(':');
            let array = batch.column(i);
            if array.is_null(row) {
                json.push_str("null");
                continue;
            }
            match array.data_type() {
                DataType::Utf8 => {
                    let value = array.as_string::<i32>().value(row);
                    if JSON_COLUMNS.contains(&field.name().as_str()) {
                        // Written by the lake from parsed JSON: a JSON document.
                        json.push_str(value);
                    } else {
                        json.push_str(&serde_json::to_string(value)?);
                    }
                }
                DataType::Binary => {
                    json.push('"');
                    for b in array.as_binary::<i32>().value(row) {
                        let _ = write!(json, "{b:02x}");
                    }
                    json.push('"');
                }
                DataType::Int64 => {
                    let _ = write!(json, "{}", array.as_primitive::<Int64Type>().value(row));
                }
                DataType::Int32 => {
                    let _ = write!(json, "{}", array.as_primitive::<Int32Type>().value(row));
                }
                DataType::Timestamp(TimeUnit::Microsecond, _) => {
                    let micros = array.as_primitive::<TimestampMicrosecondType>().value(row);
                    let _ = write!(json, "\"{}\"", rfc3339(micros)?);
                }
                DataType::Date32 => {
                    let days = array.as_primitive::<Date32Type>().value(row);
                    let date = NaiveDate::default()
                        .checked_add_signed(chrono::Duration::days(i64::from(days)))
                        .ok_or_else(|| Error::Config(format!("date {days} out of range")))?;
                    let _ = write!(json, "\"{date}\"");
                }
                other => {
                    return Err(Error::Config(format!(
                        "column {} has type {other}, which has no JSON form here",
                        field.name()
                    )))
                }
            }
        }
        json.push('}');
        out.push(json);
    }
    Ok(out)
}

fn from_micros(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .ok_or_else(|| Error::Config(format!("timestamp {micros} out of range")))
}

fn rfc3339(micros: i64) -> Result<String> {
    Ok(from_micros(micros)?.to_rfc3339_opts(SecondsFormat::Micros, true))
}

/// A publisher to one cleansed stream.
pub struct CleanStream {
    client: Client,
    name: String,
}

impl CleanStream {
    /// A publisher to stream `name`.
    pub fn new(client: Client, name: String) -> Self {
        Self { client, name }
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Publishes `records`, retrying failed calls and failed records with backoff until every
    /// one is accepted. Returns `false` if `stopping` was set while a retry waited (what is not
    /// accepted then is published again at the next start, from the mark).
    pub async fn publish(
        &self,
        records: &[CleanRecord],
        metrics: &Metrics,
        stopping: &AtomicBool,
    ) -> bool {
        let mut pending: Vec<&CleanRecord> = records.iter().collect();
        let mut delay = CLEAN_RETRY_MIN;
        while !pending.is_empty() {
            let (chunk, rest) = split_call(&pending);
            match self.put(&chunk).await {
                Ok(failed) if failed.is_empty() => {
                    let now = Utc::now();
                    for r in &chunk {
                        let seconds = (now - r.arrived_at).num_milliseconds().max(0) as f64;
                        metrics.clean_latency.observe(seconds / 1000.0);
                    }
                    metrics.clean_published.inc_by(chunk.len() as u64);
                    pending = rest;
                    delay = CLEAN_RETRY_MIN;
                    continue;
                }
                Ok(failed) => {
                    metrics.clean_publish_retries.inc_by(failed.len() as u64);
                    metrics
                        .clean_published
                        .inc_by((chunk.len() - failed.len()) as u64);
                    tracing::warn!(
                        stream = self.name,
                        failed = failed.len(),
                        of = chunk.len(),
                        retry_in_ms = delay.as_millis() as u64,
                        "cleansed stream refused records; trying them again"
                    );
                    let mut again: Vec<&CleanRecord> = failed.iter().map(|&i| chunk[i]).collect();
                    again.extend(rest);
                    pending = again;
                }
                Err(error) => {
                    metrics.clean_publish_retries.inc();
                    tracing::warn!(
                        stream = self.name,
                        %error,
                        retry_in_ms = delay.as_millis() as u64,
                        "cannot publish to the cleansed stream; trying again"
                    );
                }
            }
            if stopping.load(Ordering::SeqCst) {
                return false;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(CLEAN_RETRY_MAX);
        }
        true
    }

    /// One PutRecords call; the indexes of the records it did not accept.
    async fn put(&self, chunk: &[&CleanRecord]) -> Result<Vec<usize>> {
        let entries = chunk
            .iter()
            .map(|r| {
                PutRecordsRequestEntry::builder()
                    .partition_key(&r.partition_key)
                    .data(Blob::new(r.json.as_bytes()))
                    .build()
                    .map_err(|e| Error::Kinesis(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let output = self
            .client
            .put_records()
            .stream_name(&self.name)
            .set_records(Some(entries))
            .send()
            .await
            .map_err(|e| {
                Error::Kinesis(aws_sdk_kinesis::error::DisplayErrorContext(e).to_string())
            })?;
        Ok(output
            .records()
            .iter()
            .enumerate()
            .filter(|(_, r)| r.error_code().is_some())
            .map(|(i, _)| i)
            .collect())
    }
}

/// The first records of `pending` that fit one PutRecords call, and the rest.
fn split_call<'a>(pending: &[&'a CleanRecord]) -> (Vec<&'a CleanRecord>, Vec<&'a CleanRecord>) {
    let mut bytes = 0;
    let mut n = 0;
    for r in pending {
        let size = r.json.len() + r.partition_key.len();
        if n == PUT_RECORDS_MAX_RECORDS || (n > 0 && bytes + size > PUT_RECORDS_MAX_BYTES) {
            break;
        }
        bytes += size;
        n += 1;
    }
    (pending[..n].to_vec(), pending[n..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(bytes: usize) -> CleanRecord {
        CleanRecord {
            partition_key: "i".into(),
            arrived_at: Utc::now(),
            json: "x".repeat(bytes),
        }
    }

    #[test]
    fn calls_respect_the_record_and_byte_limits() {
        let many: Vec<CleanRecord> = (0..1200).map(|_| record(10)).collect();
        let refs: Vec<&CleanRecord> = many.iter().collect();
        let (first, rest) = split_call(&refs);
        assert_eq!(first.len(), PUT_RECORDS_MAX_RECORDS);
        assert_eq!(rest.len(), 1200 - PUT_RECORDS_MAX_RECORDS);
        let big: Vec<CleanRecord> = (0..10).map(|_| record(900 * 1024)).collect();
        let refs: Vec<&CleanRecord> = big.iter().collect();
        let (first, _) = split_call(&refs);
        let bytes: usize = first.iter().map(|r| r.json.len() + 1).sum();
        assert!(
            bytes <= PUT_RECORDS_MAX_BYTES && first.len() == 5,
            "{}",
            first.len()
        );
    }
}
