//! What the buffer keeps: over a cap on events, bytes or age, the oldest events are dropped and
//! reported as a gap; after an opt-out, nothing.

use std::time::Duration;

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use tern_protocol::gap_reason;

use super::batches::{delete_batch, return_drop_report};
use super::gaps::{self, ranges_of};
use super::recovery::prune_corrupt_copies;
use super::{parse_uuid, Pending, Store};
use crate::error::Result;
use crate::policy::Policy;

const OLDEST_DROPPABLE: &str = include_str!("../../sql/oldest_droppable.sql");
const UNBATCHED_FROM: &str = include_str!("../../sql/unbatched_from.sql");

/// Caps on what the buffer keeps; over a cap, the oldest events are dropped and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Most events.
    pub max_events: u64,
    /// Most bytes of event JSON.
    pub max_bytes: u64,
    /// Oldest event kept, as an age in milliseconds.
    pub max_age_ms: i64,
}

impl From<&Policy> for Caps {
    /// The buffer caps of `policy`.
    fn from(policy: &Policy) -> Self {
        Self {
            max_events: policy.max_buffer_events,
            max_bytes: policy.max_buffer_bytes,
            max_age_ms: i64::try_from(policy.max_event_age.as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// How far one call of [`Store::enforce_caps_bounded`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapsProgress {
    /// Events dropped by this call.
    pub dropped: u64,
    /// Whether the buffer is within its caps (or nothing more may be dropped); `false` when
    /// the call stopped at its bound with more perhaps to drop.
    pub done: bool,
}

/// The oldest event a cap may drop.
struct Oldest {
    seq: u64,
    batch_id: Option<String>,
    created_at_ms: i64,
}

impl Store {
    /// Drops the oldest events until the buffer is within `caps`, counting them by reason.
    /// Events in a batch are dropped with their whole batch, so that no batch ever changes.
    /// Returns how many events were dropped. See [`Store::enforce_caps_bounded`] to do it in
    /// slices.
    pub fn enforce_caps(&mut self, caps: &Caps, now_ms: i64) -> Result<u64> {
        Ok(self.enforce_caps_bounded(caps, now_ms, u64::MAX)?.dropped)
    }

    /// Like [`Store::enforce_caps`], but stops once about `max_events` events were dropped (a
    /// batch goes whole, so the last slice may pass it by one batch), so that a caller holding
    /// a lock around the store can let others in between slices.
    pub fn enforce_caps_bounded(
        &mut self,
        caps: &Caps,
        now_ms: i64,
        max_events: u64,
    ) -> Result<CapsProgress> {
        let mut dropped = 0;
        let cutoff = now_ms.saturating_sub(caps.max_age_ms);
        let done = |dropped| {
            Ok(CapsProgress {
                dropped,
                done: true,
            })
        };
        loop {
            if dropped >= max_events {
                return Ok(CapsProgress {
                    dropped,
                    done: false,
                });
            }
            let Some(oldest) = self.oldest_droppable()? else {
                return done(dropped);
            };
            let reason = if self.pending.events > caps.max_events {
                gap_reason::CAP_COUNT
            } else if self.pending.bytes > caps.max_bytes {
                gap_reason::CAP_BYTES
            } else if oldest.created_at_ms < cutoff {
                gap_reason::CAP_AGE
            } else {
                return done(dropped);
            };
            let n = self.drop_oldest(&oldest, reason, caps, now_ms, max_events - dropped)?;
            if n == 0 {
                // Nothing could go (counts out of step with the tables): stop, do not spin.
                return done(dropped);
            }
            dropped += n;
        }
    }

    /// The oldest stored event that a cap may drop: any but those of the batch in flight.
    fn oldest_droppable(&self) -> Result<Option<Oldest>> {
        let in_flight = self.in_flight.map(|id| id.to_string());
        Ok(self
            .conn
            .prepare_cached(OLDEST_DROPPABLE)?
            .query_row([in_flight], |r| {
                Ok(Oldest {
                    seq: r.get(0)?,
                    batch_id: r.get(1)?,
                    created_at_ms: r.get(2)?,
                })
            })
            .optional()?)
    }

    /// Drops one slice of the oldest events (a whole batch, or a run of unbatched events).
    fn drop_oldest(
        &mut self,
        oldest: &Oldest,
        reason: &str,
        caps: &Caps,
        now_ms: i64,
        max_events: u64,
    ) -> Result<u64> {
        let cutoff = now_ms.saturating_sub(caps.max_age_ms);
        let first_seq = oldest.seq;
        let mut seqs: Vec<u64> = Vec::new();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (events, bytes, unbatched): (u64, u64, u64) = match &oldest.batch_id {
            Some(id) => {
                let id = parse_uuid(id)?;
                // The batch will never be sent: the reports it carried go to the next.
                return_drop_report(&tx, id)?;
                gaps::release(&tx, id)?;
                seqs = tx
                    .prepare_cached("SELECT seq FROM events WHERE batch_id = ?1")?
                    .query_map([id.to_string()], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                let (n, b) = delete_batch(&tx, id)?;
                (n, b, 0)
            }
            None => {
                // Unbatched events: drop just enough of them (all that are too old, or the
                // excess over the count cap, or enough bytes), oldest first.
                let excess = self.pending.events.saturating_sub(caps.max_events).max(1);
                let excess_bytes = self.pending.bytes.saturating_sub(caps.max_bytes);
                let mut stmt = tx.prepare_cached(UNBATCHED_FROM)?;
                let limit = i64::try_from(max_events.max(1)).unwrap_or(i64::MAX);
                let mut rows = stmt.query(params![first_seq, limit])?;
                let (mut n, mut b, mut last) = (0u64, 0u64, first_seq);
                while let Some(row) = rows.next()? {
                    let (seq, len, created): (u64, u64, i64) =
                        (row.get(0)?, row.get(1)?, row.get(2)?);
                    let needed = match reason {
                        gap_reason::CAP_AGE => created < cutoff,
                        gap_reason::CAP_BYTES => b < excess_bytes,
                        _ => n < excess,
                    };
                    if !needed {
                        break;
                    }
                    n += 1;
                    b += len;
                    last = seq;
                    seqs.push(seq);
                }
                drop(rows);
                drop(stmt);
                if n > 0 {
                    tx.execute(
                        "DELETE FROM events WHERE batch_id IS NULL AND seq BETWEEN ?1 AND ?2",
                        params![first_seq, last],
                    )?;
                }
                (n, b, n)
            }
        };
        gaps::record(&tx, reason, &ranges_of(&seqs), now_ms)?;
        tx.commit()?;
        self.pending.events = self.pending.events.saturating_sub(events);
        self.pending.bytes = self.pending.bytes.saturating_sub(bytes);
        self.pending.unbatched_events = self.pending.unbatched_events.saturating_sub(unbatched);
        tracing::warn!(reason, events, "buffer cap reached: oldest events dropped");
        Ok(events)
    }

    /// Deletes every event, batch, quarantined batch and drop count (opt-out), and every other
    /// copy of them: the deleted rows' bytes are overwritten (`secure_delete`), the WAL is
    /// checkpointed and truncated, and the corrupt copies moved aside earlier are deleted. The
    /// `seq` numbers of the deleted events become an `opt_out` gap report, which (like every
    /// upload) waits for a later opt-in; the gap reports kept hold no event data.
    pub fn purge(&mut self, now_ms: i64) -> Result<()> {
        self.conn.pragma_update(None, "secure_delete", true)?;
        let purged = self.purge_rows(now_ms);
        self.conn.pragma_update(None, "secure_delete", false)?;
        purged?;
        // Pages freed whole may keep their old bytes on the free list: rebuild the file. Then
        // the WAL, which still holds old pages, is copied into the database file and emptied.
        self.conn.execute_batch("VACUUM")?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        prune_corrupt_copies(&self.path, 0, Duration::ZERO, now_ms);
        Ok(())
    }

    fn purge_rows(&mut self, now_ms: i64) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let seqs: Vec<u64> = tx
            .prepare("SELECT seq FROM events")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        tx.execute_batch(
            "UPDATE gaps SET batch_id = NULL; DELETE FROM events; DELETE FROM batches; \
             DELETE FROM quarantine; DELETE FROM drops;",
        )?;
        gaps::record(&tx, gap_reason::OPT_OUT, &ranges_of(&seqs), now_ms)?;
        tx.commit()?;
        self.pending = Pending::default();
        Ok(())
    }
}
