//! Gap reports in the buffer: `seq` numbers the SDK gave up on, kept until a batch that carries
//! them is acknowledged (`docs/sdk.md`, *Gaps*).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tern_protocol::limits::{MAX_GAPS_PER_BATCH, MAX_RANGES_PER_GAP};
use tern_protocol::{Gap, SeqRange};
use uuid::Uuid;

use crate::error::{Error, Result};

const GAPS_PENDING: &str = include_str!("../../sql/gaps_pending.sql");
const GAPS_OF_BATCH: &str = include_str!("../../sql/gaps_of_batch.sql");
const GAP_INSERT: &str = include_str!("../../sql/gap_insert.sql");
const GAP_TOTALS_ADD: &str = include_str!("../../sql/gap_totals_add.sql");

/// The ascending, disjoint ranges that hold exactly `seqs` (in any order, repeats allowed).
pub fn ranges_of(seqs: &[u64]) -> Vec<SeqRange> {
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut ranges: Vec<SeqRange> = Vec::new();
    for seq in sorted {
        match ranges.last_mut() {
            Some(r) if r.last.checked_add(1) == Some(seq) => r.last = seq,
            _ => ranges.push(SeqRange {
                first: seq,
                last: seq,
            }),
        }
    }
    ranges
}

/// The union of two lists of ranges, as ascending, disjoint ranges (touching ones joined).
pub fn merge_ranges(a: &[SeqRange], b: &[SeqRange]) -> Vec<SeqRange> {
    let mut all: Vec<SeqRange> = a
        .iter()
        .chain(b)
        .filter(|r| !r.is_empty())
        .copied()
        .collect();
    all.sort_unstable_by_key(|r| (r.first, r.last));
    let mut merged: Vec<SeqRange> = Vec::with_capacity(all.len());
    for r in all {
        match merged.last_mut() {
            Some(m) if r.first <= m.last.saturating_add(1) => m.last = m.last.max(r.last),
            _ => merged.push(r),
        }
    }
    merged
}

/// Records that the SDK gave up on `ranges` for `reason` at `now_ms`: merged into the pending
/// gap of that reason that no batch has carried yet, or a new gap with a fresh UUID v7.
pub(super) fn record(
    tx: &Transaction<'_>,
    reason: &str,
    ranges: &[SeqRange],
    now_ms: i64,
) -> Result<()> {
    let added: u64 = ranges.iter().map(SeqRange::len).sum();
    if added == 0 {
        return Ok(());
    }
    let open: Option<(String, String)> = tx
        .query_row(
            "SELECT gap_id, ranges FROM gaps
             WHERE batch_id IS NULL AND fixed = 0 AND reason = ?1
             ORDER BY at_ms DESC, gap_id DESC LIMIT 1",
            [reason],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match open {
        Some((gap_id, json)) => {
            let merged = merge_ranges(&parse_ranges(&json)?, ranges);
            let count: u64 = merged.iter().map(SeqRange::len).sum();
            tx.execute(
                "UPDATE gaps SET ranges = ?2, count = ?3 WHERE gap_id = ?1",
                params![gap_id, serde_json::to_string(&merged)?, count],
            )?;
        }
        None => {
            let merged = merge_ranges(ranges, &[]);
            tx.execute(
                GAP_INSERT,
                params![
                    Uuid::now_v7().to_string(),
                    reason,
                    serde_json::to_string(&merged)?,
                    added,
                    now_ms,
                    Option::<String>::None,
                    0
                ],
            )?;
        }
    }
    tx.execute(GAP_TOTALS_ADD, params![reason, added])?;
    Ok(())
}

/// Fixes pending gaps into the batch `batch_id` being cut: at most [`MAX_GAPS_PER_BATCH`]
/// reports of at most [`MAX_RANGES_PER_GAP`] ranges each (a longer gap is split, the first part
/// keeping its `gap_id`); what does not fit stays pending for the next batch. Returns the
/// reports, in the order the batch sends them.
pub(super) fn fix_into_batch(tx: &Transaction<'_>, batch_id: Uuid) -> Result<Vec<Gap>> {
    let pending: Vec<(String, String, String, i64, bool)> = {
        let mut stmt = tx.prepare_cached(GAPS_PENDING)?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(4)?, r.get(5)?))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let id = batch_id.to_string();
    let mut fixed = Vec::new();
    for (gap_id, reason, json, at_ms, was_fixed) in pending {
        if fixed.len() >= MAX_GAPS_PER_BATCH {
            break;
        }
        let ranges = parse_ranges(&json)?;
        let chunks: Vec<&[SeqRange]> = ranges.chunks(MAX_RANGES_PER_GAP).collect();
        if chunks.len() <= 1 {
            tx.execute(
                "UPDATE gaps SET batch_id = ?2, fixed = 1 WHERE gap_id = ?1",
                params![gap_id, id],
            )?;
            fixed.push(gap(&gap_id, &reason, ranges, at_ms)?);
            continue;
        }
        tx.execute("DELETE FROM gaps WHERE gap_id = ?1", [&gap_id])?;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let part_id = if i == 0 {
                gap_id.clone()
            } else {
                Uuid::now_v7().to_string()
            };
            let fits = fixed.len() < MAX_GAPS_PER_BATCH;
            let count: u64 = chunk.iter().map(SeqRange::len).sum();
            tx.execute(
                GAP_INSERT,
                params![
                    part_id,
                    reason,
                    serde_json::to_string(chunk)?,
                    count,
                    at_ms,
                    fits.then(|| id.clone()),
                    fits || was_fixed
                ],
            )?;
            if fits {
                fixed.push(gap(&part_id, &reason, chunk.to_vec(), at_ms)?);
            }
        }
    }
    Ok(fixed)
}

/// The gap reports a batch carries.
pub(super) fn of_batch(conn: &Connection, batch_id: Uuid) -> Result<Vec<Gap>> {
    let mut stmt = conn.prepare_cached(GAPS_OF_BATCH)?;
    let rows = stmt.query_map([batch_id.to_string()], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get(4)?,
        ))
    })?;
    let rows: Vec<(String, String, String, i64)> = rows.collect::<rusqlite::Result<_>>()?;
    rows.into_iter()
        .map(|(gap_id, reason, json, at_ms)| gap(&gap_id, &reason, parse_ranges(&json)?, at_ms))
        .collect()
}

/// Puts the reports of a batch that will never be sent (dropped by a cap, quarantined) back
/// among the pending ones, unchanged: the next batch cut carries them.
pub(super) fn release(tx: &Transaction<'_>, batch_id: Uuid) -> Result<()> {
    tx.execute(
        "UPDATE gaps SET batch_id = NULL WHERE batch_id = ?1",
        [batch_id.to_string()],
    )?;
    Ok(())
}

/// Moves the reports of batch `from` to batch `to` (a new `batch_id`, or a split's first half).
pub(super) fn move_to(tx: &Transaction<'_>, from: Uuid, to: Uuid) -> Result<()> {
    tx.execute(
        "UPDATE gaps SET batch_id = ?2 WHERE batch_id = ?1",
        [from.to_string(), to.to_string()],
    )?;
    Ok(())
}

/// Forgets the reports of an acknowledged batch.
pub(super) fn delete_of_batch(tx: &Transaction<'_>, batch_id: Uuid) -> Result<()> {
    tx.execute(
        "DELETE FROM gaps WHERE batch_id = ?1",
        [batch_id.to_string()],
    )?;
    Ok(())
}

/// Reports not yet acknowledged: (reports, `seq` numbers they hold).
pub(super) fn pending_counts(conn: &Connection) -> Result<(u64, u64)> {
    Ok(conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(count), 0) FROM gaps",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

/// `seq` numbers given up on since the install, by reason.
pub(super) fn totals(conn: &Connection) -> Result<BTreeMap<String, u64>> {
    let mut stmt = conn.prepare_cached("SELECT reason, seqs FROM gap_totals ORDER BY reason")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn gap(gap_id: &str, reason: &str, ranges: Vec<SeqRange>, at_ms: i64) -> Result<Gap> {
    Ok(Gap {
        gap_id: Uuid::parse_str(gap_id).map_err(|e| {
            Error::Config(format!("corrupt gap id {gap_id:?} in the database: {e}"))
        })?,
        reason: reason.to_owned(),
        count: ranges.iter().map(SeqRange::len).sum(),
        ranges,
        at: DateTime::<Utc>::from_timestamp_millis(at_ms).unwrap_or_default(),
    })
}

fn parse_ranges(json: &str) -> Result<Vec<SeqRange>> {
    Ok(serde_json::from_str(json)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(first: u64, last: u64) -> SeqRange {
        SeqRange { first, last }
    }

    #[test]
    fn seqs_become_ascending_disjoint_ranges() {
        assert_eq!(
            ranges_of(&[5, 1, 2, 3, 7, 8, 3]),
            vec![r(1, 3), r(5, 5), r(7, 8)]
        );
        assert!(ranges_of(&[]).is_empty());
        assert_eq!(
            ranges_of(&[u64::MAX, u64::MAX - 1]),
            vec![r(u64::MAX - 1, u64::MAX)]
        );
    }

    #[test]
    fn merging_joins_touching_and_overlapping_ranges() {
        assert_eq!(
            merge_ranges(&[r(1, 3), r(10, 12)], &[r(4, 5), r(11, 20), r(30, 30)]),
            vec![r(1, 5), r(10, 20), r(30, 30)]
        );
    }
}
