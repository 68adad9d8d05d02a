//! One PutRecords call and its per-record results.

use std::time::Instant;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;

use crate::limits::PUT_RECORDS_ATTEMPT_TIMEOUT;
use crate::metrics::Metrics;

use super::record::Entry;

/// What happened to one record of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryResult {
    /// It has a sequence number: it is in the stream.
    Written,
    /// It failed with this Kinesis error code.
    Failed(String),
}

/// Sends one PutRecords call. `Err` means the call failed as a whole (network, timeout, 5xx,
/// throttled request): none of its records is known to be written.
pub async fn put_records(
    client: &Client,
    stream: &str,
    entries: &[Entry],
    metrics: &Metrics,
) -> Result<Vec<EntryResult>, String> {
    let records = entries
        .iter()
        .map(|e| {
            PutRecordsRequestEntry::builder()
                .data(Blob::new(e.data.to_vec()))
                .partition_key(e.partition_key.clone())
                .build()
                .map_err(|err| err.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let call = client
        .put_records()
        .stream_name(stream)
        .set_records(Some(records))
        .send();
    let result = tokio::time::timeout(PUT_RECORDS_ATTEMPT_TIMEOUT, call).await;
    metrics
        .put_records_latency
        .observe(started.elapsed().as_secs_f64());
    let output = match result {
        Err(_) => {
            return Err(format!(
                "PutRecords timed out after {PUT_RECORDS_ATTEMPT_TIMEOUT:?}"
            ))
        }
        Ok(Err(e)) => {
            use aws_sdk_kinesis::error::ProvideErrorMetadata;
            return Err(match e.code() {
                Some(code) => format!("PutRecords failed: {code}: {}", e.message().unwrap_or("")),
                None => format!(
                    "PutRecords failed: {}",
                    aws_sdk_kinesis::error::DisplayErrorContext(e)
                ),
            });
        }
        Ok(Ok(output)) => output,
    };
    let results = output.records();
    if results.len() != entries.len() {
        return Err(format!(
            "PutRecords answered {} results for {} records",
            results.len(),
            entries.len()
        ));
    }
    Ok(results
        .iter()
        .map(|r| match (r.sequence_number(), r.error_code()) {
            (Some(_), None) => EntryResult::Written,
            (_, code) => EntryResult::Failed(code.unwrap_or("MissingSequenceNumber").to_owned()),
        })
        .collect())
}
