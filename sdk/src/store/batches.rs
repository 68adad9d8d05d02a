//! Batches: cut from the oldest unbatched events, sent as they were cut on every attempt,
//! deleted on acknowledgement, retried on a schedule that survives restarts, renewed or split
//! when the collector asks.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use tern_protocol::Gap;
use uuid::Uuid;

use super::{gaps, parse_uuid, Store};
use crate::error::Result;

const UNBATCHED_EVENTS: &str = include_str!("../../sql/unbatched_events.sql");
const BATCH_EVENTS: &str = include_str!("../../sql/batch_events.sql");
const NEXT_BATCH: &str = include_str!("../../sql/next_batch.sql");
const BATCH_SIZE: &str = include_str!("../../sql/batch_size.sql");
const RETURN_DROP_REPORT: &str = include_str!("../../sql/return_drop_report.sql");

/// A batch cut for upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRow {
    /// Stable id of the batch, sent with every attempt.
    pub batch_id: Uuid,
    /// Context JSON captured when the batch was cut.
    pub context: String,
    /// Drop counts (reason → count) captured when the batch was cut.
    pub dropped: BTreeMap<String, u64>,
    /// Gap reports fixed into the batch when it was cut.
    pub gaps: Vec<Gap>,
    /// Number of events.
    pub event_count: u64,
    /// Uncompressed bytes of the events.
    pub bytes: u64,
    /// Upload attempts so far.
    pub attempts: u32,
    /// Earliest time of the next attempt, ms since the Unix epoch.
    pub next_attempt_ms: i64,
}

/// What [`Store::split_batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Two new batches, of consecutive events, replace it.
    Halves,
    /// It holds a single event: nothing to split.
    SingleEvent,
    /// It is no longer stored (a cap or an opt-out removed it meanwhile): nothing to do.
    Gone,
}

impl Store {
    /// The batch to send next: the oldest one already cut (a retry), if any.
    pub fn oldest_batch(&self) -> Result<Option<BatchRow>> {
        let mut stmt = self.conn.prepare_cached(NEXT_BATCH)?;
        let row = stmt
            .query_row([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(6)?,
                    BatchRow {
                        batch_id: Uuid::nil(),
                        context: r.get(1)?,
                        dropped: BTreeMap::new(),
                        gaps: Vec::new(),
                        event_count: r.get(2)?,
                        bytes: r.get(3)?,
                        attempts: r.get(4)?,
                        next_attempt_ms: r.get(5)?,
                    },
                ))
            })
            .optional()?;
        row.map(|(id, dropped, mut batch)| {
            batch.batch_id = parse_uuid(&id)?;
            if let Some(dropped) = dropped {
                batch.dropped = parse_drop_report(&dropped);
            }
            batch.gaps = gaps::of_batch(&self.conn, batch.batch_id)?;
            Ok(batch)
        })
        .transpose()
    }

    /// Cuts a new batch (see [`Store::cut_batch_unmarked`]) and raises the identity file's
    /// `batched_through` mark to it.
    pub fn cut_batch(
        &mut self,
        max_events: usize,
        max_bytes: usize,
        context: &str,
        now_ms: i64,
    ) -> Result<Option<BatchRow>> {
        let batch = self.cut_batch_unmarked(max_events, max_bytes, context, now_ms)?;
        if let Some(batch) = &batch {
            let highest = self.batch_highest_seq(batch)?;
            self.identity().mark_batched(highest)?;
        }
        Ok(batch)
    }

    /// Cuts a new batch from the oldest unbatched events, at most `max_events` of them and at
    /// most `max_bytes` (but always at least one event, if any waits), and attaches the drop
    /// counts not yet reported and the pending gap reports (see `gaps::fix_into_batch`). A batch
    /// may hold gap reports and no events. Returns `None` when nothing waits. The identity
    /// file's `batched_through` must reach [`Store::batch_highest_seq`] before the batch is sent
    /// ([`SeqMarks::mark_batched`]): a buffer that later comes back without it (a power loss) is
    /// then known to have lost events the collector may hold.
    pub fn cut_batch_unmarked(
        &mut self,
        max_events: usize,
        max_bytes: usize,
        context: &str,
        now_ms: i64,
    ) -> Result<Option<BatchRow>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (first, last, count, bytes) = {
            let mut stmt = tx.prepare_cached(UNBATCHED_EVENTS)?;
            let mut rows = stmt.query([max_events as i64])?;
            let (mut first, mut last, mut count, mut bytes) = (None, 0u64, 0u64, 0u64);
            while let Some(row) = rows.next()? {
                let seq: u64 = row.get(0)?;
                let len: u64 = row.get(1)?;
                if count > 0 && bytes + len > max_bytes as u64 {
                    break;
                }
                first.get_or_insert(seq);
                last = seq;
                count += 1;
                bytes += len;
            }
            (first, last, count, bytes)
        };
        let has_gaps: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM gaps WHERE batch_id IS NULL)",
            [],
            |r| r.get(0),
        )?;
        if first.is_none() && !has_gaps {
            return Ok(None);
        }
        let dropped: BTreeMap<String, u64> = {
            let mut stmt =
                tx.prepare_cached("SELECT reason, unreported FROM drops WHERE unreported > 0")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        tx.execute("UPDATE drops SET unreported = 0 WHERE unreported > 0", [])?;
        let mut batch = BatchRow {
            batch_id: Uuid::now_v7(),
            context: context.to_owned(),
            dropped,
            gaps: Vec::new(),
            event_count: count,
            bytes,
            attempts: 0,
            next_attempt_ms: 0,
        };
        insert_batch(&tx, &batch, now_ms)?;
        if let Some(first) = first {
            tx.execute(
                "UPDATE events SET batch_id = ?1 WHERE seq BETWEEN ?2 AND ?3 AND batch_id IS NULL",
                params![batch.batch_id.to_string(), first, last],
            )?;
        }
        batch.gaps = gaps::fix_into_batch(&tx, batch.batch_id)?;
        tx.commit()?;
        self.pending.unbatched_events = self.pending.unbatched_events.saturating_sub(count);
        Ok(Some(batch))
    }

    /// The wire JSON of a batch's events, in `seq` order: exactly what every attempt sends.
    pub fn batch_bodies(&self, batch_id: Uuid) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(BATCH_EVENTS)?;
        let rows = stmt.query_map([batch_id.to_string()], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Forgets an acknowledged batch and its events; returns how many events were deleted (0
    /// when a cap or an opt-out removed the batch meanwhile: the counts change by what was
    /// actually stored).
    pub fn delete_batch(&mut self, batch: &BatchRow) -> Result<u64> {
        let highest = self.batch_highest_seq(batch)?;
        let events = self.delete_batch_unmarked(batch)?;
        self.mark_acked(highest);
        Ok(events)
    }

    /// Forgets an acknowledged batch and its events, as [`Store::delete_batch`] does, but leaves
    /// the identity file's `acked_through` mark to the caller ([`SeqMarks::mark_acked`]).
    pub fn delete_batch_unmarked(&mut self, batch: &BatchRow) -> Result<u64> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (events, bytes) = delete_batch(&tx, batch.batch_id)?;
        tx.commit()?;
        self.pending.events = self.pending.events.saturating_sub(events);
        self.pending.bytes = self.pending.bytes.saturating_sub(bytes);
        Ok(events)
    }

    /// The highest `seq` a stored batch accounts for (its events' and its gap reports'): what
    /// the identity file's marks must reach for it.
    pub fn batch_highest_seq(&self, batch: &BatchRow) -> Result<u64> {
        Ok(highest_seq(
            batch,
            batch_last_seq(&self.conn, batch.batch_id)?,
        ))
    }

    /// Records a failed attempt and when to try again; this survives a restart, so a restarted
    /// app does not hammer the collector.
    pub fn record_failure(
        &mut self,
        batch_id: Uuid,
        attempts: u32,
        next_attempt_ms: i64,
        error: &str,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE batches SET attempts = ?2, next_attempt_ms = ?3, last_error = ?4
             WHERE batch_id = ?1",
            params![batch_id.to_string(), attempts, next_attempt_ms, error],
        )?;
        Ok(())
    }

    /// Brings every next-attempt time later than `latest_ms` back to `latest_ms`, returning how
    /// many batches changed. The times are wall-clock: after the clock moved back by days, a
    /// stored time would otherwise stall uploads for those days.
    pub fn clamp_next_attempts(&mut self, latest_ms: i64) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE batches SET next_attempt_ms = ?1 WHERE next_attempt_ms > ?1",
            [latest_ms],
        )?)
    }

    /// Raises the identity file's acknowledged-through mark. A failure is only logged: the batch
    /// is settled already, and a mark left behind only widens a later `storage_lost` report.
    pub(super) fn mark_acked(&mut self, seq: u64) {
        self.seq_marks().mark_acked(seq);
    }

    /// Gives a batch the collector answered `batch_id_conflict` (409) a fresh `batch_id`, same
    /// events and reports, as if just cut; returns it, or `None` when it is no longer stored.
    pub fn renew_batch_id(&mut self, batch: &BatchRow, now_ms: i64) -> Result<Option<BatchRow>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM batches WHERE batch_id = ?1)",
            [batch.batch_id.to_string()],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(None);
        }
        let renewed = BatchRow {
            batch_id: Uuid::now_v7(),
            attempts: 0,
            next_attempt_ms: 0,
            ..batch.clone()
        };
        insert_batch(&tx, &renewed, now_ms)?;
        tx.execute(
            "UPDATE events SET batch_id = ?2 WHERE batch_id = ?1",
            [batch.batch_id.to_string(), renewed.batch_id.to_string()],
        )?;
        gaps::move_to(&tx, batch.batch_id, renewed.batch_id)?;
        tx.execute(
            "DELETE FROM batches WHERE batch_id = ?1",
            [batch.batch_id.to_string()],
        )?;
        tx.commit()?;
        Ok(Some(renewed))
    }

    /// Splits a batch the collector found too large into two new batches (new ids: a split is
    /// not a retry) of consecutive events, as they are stored now.
    pub fn split_batch(&mut self, batch: &BatchRow, now_ms: i64) -> Result<Split> {
        let id = batch.batch_id.to_string();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rows: Vec<(u64, u64)> = {
            let mut stmt = tx
                .prepare_cached("SELECT seq, bytes FROM events WHERE batch_id = ?1 ORDER BY seq")?;
            let rows = stmt.query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        match rows.len() {
            0 => {
                gaps::release(&tx, batch.batch_id)?;
                delete_batch(&tx, batch.batch_id)?;
                tx.commit()?;
                return Ok(Split::Gone);
            }
            1 => return Ok(Split::SingleEvent),
            _ => {}
        }
        let (first_half, second_half) = rows.split_at(rows.len() / 2);
        for (i, half) in [first_half, second_half].into_iter().enumerate() {
            // With two rows or more, neither half is empty; the check costs nothing.
            let (Some(first), Some(last)) = (half.first(), half.last()) else {
                continue;
            };
            let part = BatchRow {
                batch_id: Uuid::now_v7(),
                context: batch.context.clone(),
                // The drop report rides with the first half only.
                dropped: if i == 0 {
                    batch.dropped.clone()
                } else {
                    BTreeMap::new()
                },
                gaps: Vec::new(),
                event_count: half.len() as u64,
                bytes: half.iter().map(|(_, b)| b).sum(),
                attempts: 0,
                next_attempt_ms: 0,
            };
            insert_batch(&tx, &part, now_ms)?;
            tx.execute(
                "UPDATE events SET batch_id = ?1 WHERE batch_id = ?2 AND seq BETWEEN ?3 AND ?4",
                params![part.batch_id.to_string(), id, first.0, last.0],
            )?;
            if i == 0 {
                // So do the gap reports.
                gaps::move_to(&tx, batch.batch_id, part.batch_id)?;
            }
        }
        tx.execute("DELETE FROM batches WHERE batch_id = ?1", [&id])?;
        tx.commit()?;
        Ok(Split::Halves)
    }
}

pub(super) fn insert_batch(tx: &Transaction<'_>, batch: &BatchRow, now_ms: i64) -> Result<()> {
    let dropped = if batch.dropped.is_empty() {
        None
    } else {
        Some(serde_json::to_string(&batch.dropped)?)
    };
    tx.execute(
        "INSERT INTO batches (batch_id, created_at_ms, context, event_count, bytes, dropped)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            batch.batch_id.to_string(),
            now_ms,
            batch.context,
            batch.event_count,
            batch.bytes,
            dropped
        ],
    )?;
    Ok(())
}

/// Deletes a batch, its events and the gap reports still attached to it; returns the events and bytes actually deleted, which are
/// what the in-memory counts must lose (nothing, when the batch was already gone).
pub(super) fn delete_batch(tx: &Transaction<'_>, batch_id: Uuid) -> Result<(u64, u64)> {
    let id = batch_id.to_string();
    let (events, bytes) = tx
        .prepare_cached(BATCH_SIZE)?
        .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    tx.execute("DELETE FROM events WHERE batch_id = ?1", [&id])?;
    gaps::delete_of_batch(tx, batch_id)?;
    tx.execute("DELETE FROM batches WHERE batch_id = ?1", [&id])?;
    Ok((events, bytes))
}

/// The highest `seq` of a batch's stored events (0 for none).
pub(super) fn batch_last_seq(conn: &Connection, batch_id: Uuid) -> Result<u64> {
    Ok(conn.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM events WHERE batch_id = ?1",
        [batch_id.to_string()],
        |r| r.get(0),
    )?)
}

/// The highest `seq` a batch accounts for: of its events (`last_event_seq`) and of its gap
/// reports.
pub(super) fn highest_seq(batch: &BatchRow, last_event_seq: u64) -> u64 {
    batch
        .gaps
        .iter()
        .flat_map(|gap| gap.ranges.iter().map(|r| r.last))
        .fold(last_event_seq, u64::max)
}

/// Puts the drop counts a batch carried back among those not yet reported, for a batch that
/// will never be sent (dropped by a cap, quarantined): the next batch cut reports them.
pub(super) fn return_drop_report(tx: &Transaction<'_>, batch_id: Uuid) -> Result<()> {
    let dropped: Option<Option<String>> = tx
        .query_row(
            "SELECT dropped FROM batches WHERE batch_id = ?1",
            [batch_id.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    let Some(json) = dropped.flatten() else {
        return Ok(());
    };
    let dropped = parse_drop_report(&json);
    let mut stmt = tx.prepare_cached(RETURN_DROP_REPORT)?;
    for (reason, n) in dropped.iter().filter(|(_, n)| **n > 0) {
        stmt.execute(params![reason, n])?;
    }
    Ok(())
}

/// A batch's stored drop report. A damaged one must not hold up the batch, nor the batches
/// behind it, nor a cap or quarantine that removes it: the events matter more than the counts,
/// so it is read as empty (and logged).
fn parse_drop_report(json: &str) -> BTreeMap<String, u64> {
    serde_json::from_str(json).unwrap_or_else(|e| {
        tracing::error!(error = %e, "a batch's drop report does not parse; read as empty");
        BTreeMap::new()
    })
}
