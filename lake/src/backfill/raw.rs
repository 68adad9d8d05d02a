//! Reading `raw`: the records `events` holds the position of, decoded again with the rules; v2
//! events joined with the batch records read before them (or, for those read before the range,
//! in `batches`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{Days, NaiveDate};
use deltalake::arrow::array::AsArray;
use deltalake::DeltaTable;
use tern_protocol::StreamRecord;

use super::columns::{cast_strings, micros_of, strings_of_first, timestamp};
use super::options::Options;
use crate::checkpoint::{self, compare_sequence, Position};
use crate::decode::{self, Decoded};
use crate::error::Result;
use crate::join::{self, BatchCache, Candidate, Known};
use crate::limits::{BACKFILL_RAW_SLACK_DAYS, BATCH_CACHE_RECORDS};
use crate::query;
use crate::table::{Provenance, RejectedRow};

/// The rows a backfill computes from `raw`.
#[derive(Default)]
pub(super) struct Rebuilt {
    pub(super) raw_records: u64,
    pub(super) events: Vec<(StreamRecord, Provenance, i64)>,
    pub(super) rejects: Vec<RejectedRow>,
}

/// Reads `raw` from the day before `from` on, in arrival order, and decodes every record with
/// the rules: the first copy of each event in the range (unless `kept_beside` holds it), and
/// the rejects that arrived in the range. A v2 event joins the batch record of its `batch_id`
/// read last before it, as ingest did; one read before `raw`'s first day is found in
/// `batches`.
pub(super) async fn read_raw(
    ctx: &deltalake::datafusion::prelude::SessionContext,
    options: &Options,
    kept_beside: &HashSet<String>,
    held: &HashMap<String, Position>,
    batches: Option<&DeltaTable>,
) -> Result<Rebuilt> {
    let start = options.from - Days::new(BACKFILL_RAW_SLACK_DAYS.unsigned_abs());
    let sql = format!(
        "SELECT shard_id, sequence_number, arrived_at, ingested_at, data FROM raw \
         WHERE arrived_date >= DATE '{start}' \
         ORDER BY arrived_at, shard_id, length(sequence_number), sequence_number"
    );
    let mut out = Rebuilt::default();
    let mut seen: HashSet<u128> = HashSet::new();
    let mut cache = BatchCache::new(BATCH_CACHE_RECORDS);
    let in_range = |d: NaiveDate| d >= options.from && d <= options.to;
    for batch in query::collect(ctx, &sql).await? {
        let shard = cast_strings(batch.column(0))?;
        let sequence = cast_strings(batch.column(1))?;
        let arrived = micros_of(batch.column(2))?;
        let ingested = micros_of(batch.column(3))?;
        let data = deltalake::arrow::compute::cast(
            batch.column(4),
            &deltalake::arrow::datatypes::DataType::Binary,
        )?;
        let data = data.as_binary::<i32>();
        for row in 0..batch.num_rows() {
            let in_events = match held.get(shard.value(row)) {
                Some(Position::End) => true,
                Some(Position::After(to)) => compare_sequence(sequence.value(row), to).is_le(),
                None => false,
            };
            if !in_events {
                // Archived, its rows not committed yet: ingest writes them.
                continue;
            }
            out.raw_records += 1;
            let shard_id: Arc<str> = Arc::from(shard.value(row));
            let sequence_number: Arc<str> = Arc::from(sequence.value(row));
            let arrived_at = timestamp(arrived.value(row))?;
            let raw_ingested = ingested.value(row);
            for (sub_sequence, document) in decode::user_records(data.value(row)) {
                let from = Provenance {
                    shard_id: Arc::clone(&shard_id),
                    sequence_number: Arc::clone(&sequence_number),
                    sub_sequence,
                    arrived_at,
                };
                let decoded = match decode::decode_with(document, &options.rules) {
                    Decoded::EventV2(event) => {
                        let batch = batch_of(ctx, &mut cache, batches, &event, &from).await?;
                        decode::join(*event, batch.as_deref(), &options.rules)
                    }
                    other => other,
                };
                match decoded {
                    Decoded::Event(event) => {
                        if !seen.insert(event.event_id.as_u128()) {
                            continue;
                        }
                        if in_range(event.event_time.date_naive())
                            && !kept_beside.contains(&event.event_id.to_string())
                        {
                            out.events.push((*event, from, raw_ingested));
                        }
                    }
                    Decoded::Batch(batch) => cache.insert(*batch),
                    Decoded::Gap(_) => {}
                    Decoded::EventV2(event) => {
                        // `join` never answers with an unjoined event; were it to, it is
                        // rejected as ingest would.
                        if in_range(arrived_at.date_naive()) {
                            out.rejects.push(RejectedRow {
                                from,
                                reason: decode::reason::NO_BATCH,
                                message: format!("batch_id {}: not joined", event.batch_id),
                                data: document.to_vec(),
                                ingested_at: Some(timestamp(raw_ingested)?),
                            });
                        }
                    }
                    Decoded::Rejected { reason, message } => {
                        if in_range(arrived_at.date_naive()) {
                            out.rejects.push(RejectedRow {
                                from,
                                reason,
                                message,
                                data: document.to_vec(),
                                ingested_at: Some(timestamp(raw_ingested)?),
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The batch record the v2 `event` read at `at` joins: the latest of its id read, else the one
/// it follows in `batches`.
async fn batch_of(
    ctx: &deltalake::datafusion::prelude::SessionContext,
    cache: &mut BatchCache,
    batches: Option<&DeltaTable>,
    event: &tern_protocol::EventRecordV2,
    at: &Provenance,
) -> Result<Option<Arc<tern_protocol::BatchRecord>>> {
    match cache.get(&event.batch_id) {
        Some(Known::Batch(batch)) => return Ok(Some(Arc::clone(batch))),
        Some(Known::Missing) => return Ok(None),
        None => {}
    }
    let stored = match batches {
        Some(batches) => join::stored(ctx, batches, &event.batch_id).await?,
        None => Vec::new(),
    };
    let candidates: Vec<Candidate<'_>> = stored.iter().map(Candidate::from).collect();
    let found = join::pick(&candidates, at).cloned().map(Arc::new);
    let known = match &found {
        Some(batch) => Known::Batch(Arc::clone(batch)),
        None => Known::Missing,
    };
    cache.put(event.batch_id, known);
    Ok(found)
}

/// How far `events` holds each shard that `raw` has records of.
pub(super) async fn held_positions(
    ctx: &deltalake::datafusion::prelude::SessionContext,
    events: &DeltaTable,
    stream: &str,
) -> Result<HashMap<String, Position>> {
    let mut held = HashMap::new();
    for batch in query::collect(ctx, "SELECT DISTINCT shard_id FROM raw").await? {
        for shard in strings_of_first(&batch) {
            if let Some(position) = checkpoint::read(events, stream, &shard).await? {
                held.insert(shard, position);
            }
        }
    }
    Ok(held)
}
