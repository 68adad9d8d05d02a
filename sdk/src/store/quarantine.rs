//! The quarantine: batches, or events of a batch, that the collector refused as malformed,
//! kept inspectable on the device and never sent again, within caps of their own.

use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};
use tern_protocol::{gap_reason, RefusedEvent};
use uuid::Uuid;

use super::batches::{batch_last_seq, delete_batch, highest_seq, return_drop_report, BatchRow};
use super::gaps::{self, ranges_of};
use super::{Pending, Store};
use crate::error::Result;
use crate::policy::Policy;

const BATCH_ROWS: &str = include_str!("../../sql/batch_rows.sql");
const QUARANTINE_INSERT: &str = include_str!("../../sql/quarantine_insert.sql");
const QUARANTINE_OLDEST: &str = include_str!("../../sql/quarantine_oldest.sql");

/// Caps on the quarantine; over a cap, the oldest quarantined batches are dropped and counted
/// as `quarantine_cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuarantineCaps {
    /// Most batches.
    pub max_batches: u64,
    /// Most bytes of event JSON.
    pub max_bytes: u64,
}

impl From<&Policy> for QuarantineCaps {
    /// The quarantine caps of `policy`.
    fn from(policy: &Policy) -> Self {
        Self {
            max_batches: policy.max_quarantine_batches,
            max_bytes: policy.max_quarantine_bytes,
        }
    }
}

/// One stored event of a batch, as the quarantine takes it.
struct BatchEventRow {
    seq: u64,
    event_id: String,
    body: String,
}

impl Store {
    /// Moves a batch the collector called malformed into the quarantine table, whole: kept and
    /// inspectable, never sent again, and reported as a `quarantine` gap. Over `caps`, the
    /// oldest quarantined batches are evicted (already reported: nothing new to report); were
    /// this very batch evicted (it alone is over the caps), its events are reported as
    /// `quarantine_cap` instead. The gap reports the batch carried go back to the pending ones.
    /// Returns `false`, changing nothing, when the batch holds no events any more (a cap or an
    /// opt-out removed them meanwhile).
    pub fn quarantine_batch(
        &mut self,
        batch: &BatchRow,
        reason: &str,
        now_ms: i64,
        caps: &QuarantineCaps,
    ) -> Result<bool> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rows = batch_rows(&tx, batch.batch_id)?;
        if rows.is_empty() {
            // Nothing left to keep; make sure no empty batch row lingers either.
            gaps::release(&tx, batch.batch_id)?;
            delete_batch(&tx, batch.batch_id)?;
            tx.commit()?;
            return Ok(false);
        }
        // The batch will never be sent: the reports it carried go to the next one.
        return_drop_report(&tx, batch.batch_id)?;
        gaps::release(&tx, batch.batch_id)?;
        let quarantine = quarantine_rows(self.pending, &tx, batch, &rows, reason, now_ms, caps)?;
        let (n, bytes) = delete_batch(&tx, batch.batch_id)?;
        tx.commit()?;
        self.pending.events = self.pending.events.saturating_sub(n);
        self.pending.bytes = self.pending.bytes.saturating_sub(bytes);
        (
            self.pending.quarantined_batches,
            self.pending.quarantined_events,
            self.pending.quarantined_bytes,
        ) = quarantine;
        Ok(true)
    }

    /// Settles a batch the collector acknowledged with some events refused (partial accept):
    /// the refused events (matched on `seq` and `event_id`) go to the quarantine, under the
    /// batch's id with the collector's reasons, and are reported as a `quarantine` gap (or
    /// `quarantine_cap`, see [`Store::quarantine_batch`]); the accepted ones and the batch's gap
    /// reports (written by the collector) are deleted. Returns how many events were
    /// quarantined.
    pub fn settle_partly_refused(
        &mut self,
        batch: &BatchRow,
        refused: &[RefusedEvent],
        now_ms: i64,
        caps: &QuarantineCaps,
    ) -> Result<u64> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rows: Vec<BatchEventRow> = batch_rows(&tx, batch.batch_id)?
            .into_iter()
            .filter(|row| {
                refused
                    .iter()
                    .any(|r| r.seq == row.seq && r.event_id.to_string() == row.event_id)
            })
            .collect();
        let last = batch_last_seq(&tx, batch.batch_id)?;
        let mut quarantine = None;
        if !rows.is_empty() {
            let reasons: Vec<&RefusedEvent> = refused
                .iter()
                .filter(|r| rows.iter().any(|row| row.seq == r.seq))
                .collect();
            let reason = serde_json::to_string(&reasons)?;
            quarantine = Some(quarantine_rows(
                self.pending,
                &tx,
                batch,
                &rows,
                &reason,
                now_ms,
                caps,
            )?);
        }
        let (n, bytes) = delete_batch(&tx, batch.batch_id)?;
        tx.commit()?;
        // The refused events are reported as a gap, which a later batch carries; the mark may
        // pass them: a lost buffer then loses that report, which is a rare miss, not a reuse.
        self.mark_acked(highest_seq(batch, last));
        self.pending.events = self.pending.events.saturating_sub(n);
        self.pending.bytes = self.pending.bytes.saturating_sub(bytes);
        if let Some(q) = quarantine {
            (
                self.pending.quarantined_batches,
                self.pending.quarantined_events,
                self.pending.quarantined_bytes,
            ) = q;
        }
        Ok(rows.len() as u64)
    }
}

/// Inserts `rows` of `batch` into the quarantine, reports them as a gap, and evicts the
/// oldest quarantined batches over `caps`. Returns the quarantine's new counts (batches,
/// events, bytes). The rows stay in `events`: the caller deletes them.
fn quarantine_rows(
    pending: Pending,
    tx: &Transaction<'_>,
    batch: &BatchRow,
    rows: &[BatchEventRow],
    reason: &str,
    now_ms: i64,
    caps: &QuarantineCaps,
) -> Result<(u64, u64, u64)> {
    let bodies: Vec<&str> = rows.iter().map(|r| r.body.as_str()).collect();
    let events = format!("[{}]", bodies.join(","));
    let events_len = events.len() as u64;
    let id = batch.batch_id.to_string();
    tx.execute(
        QUARANTINE_INSERT,
        params![id, now_ms, reason, batch.context, rows.len() as u64, events],
    )?;
    let mut quarantine = (
        pending.quarantined_batches + 1,
        pending.quarantined_events + rows.len() as u64,
        pending.quarantined_bytes + events_len,
    );
    let mut evicted = 0;
    let mut evicted_self = false;
    while quarantine.0 > caps.max_batches || quarantine.2 > caps.max_bytes {
        let oldest: Option<(String, u64, u64)> = tx
            .prepare_cached(QUARANTINE_OLDEST)?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((oldest_id, count, len)) = oldest else {
            break;
        };
        tx.execute("DELETE FROM quarantine WHERE batch_id = ?1", [&oldest_id])?;
        evicted_self |= oldest_id == id;
        quarantine = (
            quarantine.0.saturating_sub(1),
            quarantine.1.saturating_sub(count),
            quarantine.2.saturating_sub(len),
        );
        evicted += count;
    }
    if evicted > 0 {
        tracing::warn!(
            events = evicted,
            "quarantine cap reached: oldest batches dropped"
        );
    }
    let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    let gap_reason = if evicted_self {
        gap_reason::QUARANTINE_CAP
    } else {
        gap_reason::QUARANTINE
    };
    gaps::record(tx, gap_reason, &ranges_of(&seqs), now_ms)?;
    Ok(quarantine)
}

/// The events of a batch, in `seq` order.
fn batch_rows(tx: &Transaction<'_>, batch_id: Uuid) -> Result<Vec<BatchEventRow>> {
    let mut stmt = tx.prepare_cached(BATCH_ROWS)?;
    let rows = stmt.query_map([batch_id.to_string()], |r| {
        Ok(BatchEventRow {
            seq: r.get(0)?,
            event_id: r.get(1)?,
            body: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
