//! One PutRecords call and its per-record results.

use std::time::Instant;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;

use super::limits::PUT_RECORDS_ATTEMPT_TIMEOUT;
use crate::metrics::{CodeLabel, Metrics};

use super::record::Entry;
use super::retry;

/// What happened to one record of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryResult {
    /// It has a sequence number: it is in the stream.
    Written,
    /// It failed with this Kinesis error code.
    Failed(String),
}

/// Why a PutRecords call failed as a whole: none of its records is known to be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    /// The Kinesis error code, `timeout`, `network` (no answer), or `internal`.
    pub code: String,
    /// What happened.
    pub message: String,
}

impl CallError {
    /// An error of the collector itself (the dispatcher went away), not of a call.
    pub fn internal(message: &str) -> Self {
        Self {
            code: "internal".to_owned(),
            message: message.to_owned(),
        }
    }
}

/// Sends one PutRecords call. `Err` means the call failed as a whole (network, timeout, 5xx,
/// throttled or invalid request); it is counted once in `put_records_failed`, by code.
pub async fn put_records(
    client: &Client,
    stream: &str,
    entries: &[Entry],
    metrics: &Metrics,
) -> Result<Vec<EntryResult>, CallError> {
    let result = call(client, stream, entries, metrics).await;
    if let Err(e) = &result {
        metrics
            .put_records_failed
            .get_or_create(&CodeLabel {
                code: retry::code_label(&e.code).to_owned(),
            })
            .inc();
    }
    result
}

async fn call(
    client: &Client,
    stream: &str,
    entries: &[Entry],
    metrics: &Metrics,
) -> Result<Vec<EntryResult>, CallError> {
    let records = entries
        .iter()
        .map(|e| {
            PutRecordsRequestEntry::builder()
                .data(Blob::new(e.data.to_vec()))
                .partition_key(e.partition_key.clone())
                .build()
                .map_err(|err| CallError {
                    code: "ValidationException".to_owned(),
                    message: format!("record not buildable: {err}"),
                })
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
            return Err(CallError {
                code: "timeout".to_owned(),
                message: format!("PutRecords timed out after {PUT_RECORDS_ATTEMPT_TIMEOUT:?}"),
            })
        }
        Ok(Err(e)) => {
            use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
            return Err(match e.code() {
                Some(code) => CallError {
                    code: code.to_owned(),
                    message: format!("PutRecords failed: {code}: {}", e.message().unwrap_or("")),
                },
                None => CallError {
                    code: match &e {
                        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => "network",
                        _ => "other",
                    }
                    .to_owned(),
                    message: format!(
                        "PutRecords failed: {}",
                        aws_sdk_kinesis::error::DisplayErrorContext(e)
                    ),
                },
            });
        }
        Ok(Ok(output)) => output,
    };
    let results = output.records();
    if results.len() != entries.len() {
        return Err(CallError {
            code: "other".to_owned(),
            message: format!(
                "PutRecords answered {} results for {} records",
                results.len(),
                entries.len()
            ),
        });
    }
    Ok(results
        .iter()
        .map(|r| match (r.sequence_number(), r.error_code()) {
            (Some(_), None) => EntryResult::Written,
            (_, code) => EntryResult::Failed(code.unwrap_or("MissingSequenceNumber").to_owned()),
        })
        .collect())
}
