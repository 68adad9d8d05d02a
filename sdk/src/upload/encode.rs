//! Batch encoding: a stored batch as the wire JSON of one attempt, zstd-compressed.

use serde_json::value::RawValue;
use tern_protocol::{Batch, Context, SdkInfo};
use uuid::Uuid;

use crate::clock::Clock;
use crate::error::Result;
use crate::store::BatchRow;

/// zstd level for batches. On realistic batches of 100-250 events, level 9 is 0.81-0.82x the
/// bytes of gzip-6 for 0.25-0.55 ms of CPU per batch; level 3 (zstd's default) is only 0.90-0.97x,
/// and 15+ saves another 6 % for 17x the CPU (docs/BENCHMARKS.md). Radio time is what costs
/// battery, and a batch leaves at most every few seconds.
pub const ZSTD_LEVEL: i32 = 9;

/// A batch ready to be sent: the compressed body of one attempt.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    /// The batch's id.
    pub batch_id: Uuid,
    /// zstd-compressed wire JSON.
    pub body: Vec<u8>,
    /// Bytes before compression.
    pub raw_len: usize,
}

/// Builds the body of one attempt from the stored batch: the same `batch_id` and events every
/// time, a fresh `sent_at` and `sent_uptime_ms`.
pub fn encode_batch(
    batch: &BatchRow,
    install_id: &str,
    bodies: Vec<String>,
    clock: &Clock,
) -> Result<EncodedBatch> {
    let events = bodies
        .into_iter()
        .map(RawValue::from_string)
        .collect::<serde_json::Result<Vec<_>>>()?;
    let context: Context = serde_json::from_str(&batch.context)?;
    let batch_id = batch.batch_id;
    let batch = Batch {
        batch_id,
        install_id: install_id.to_owned(),
        sent_at: clock.wall(),
        sent_uptime_ms: Some(clock.uptime_ms()),
        clock_id: Some(clock.id().to_owned()),
        sdk: sdk_info(),
        context,
        events,
        dropped: batch.dropped.clone(),
        gaps: batch.gaps.clone(),
    };
    let json = serde_json::to_vec(&batch)?;
    let body = zstd::bulk::compress(&json, ZSTD_LEVEL)?;
    Ok(EncodedBatch {
        batch_id,
        body,
        raw_len: json.len(),
    })
}

/// This SDK's name and version, as sent in every batch.
pub fn sdk_info() -> SdkInfo {
    SdkInfo {
        name: "tern-sdk-rust".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}
