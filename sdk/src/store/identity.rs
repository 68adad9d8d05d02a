//! The identity file: who the install is and what the user chose, beside the buffer.
//!
//! A small SQLite file (`<buffer>.identity`) written with `synchronous=FULL`, so that what it
//! holds survives a corrupt buffer and a power loss: the `install_id`, the user id, the
//! super-properties, the opt-out choice, and three `seq` marks:
//! - `seq_reserved_through`: every `seq` ever given out is at most this. The writer takes seqs
//!   from a reserved block, and once half of it is used up asks the checkpoint thread to write
//!   the next reservation ([`SeqMarks::reserve_ahead`]), so this file is written once per
//!   [`SEQ_RESERVATION`] events or so (more in a burst, see [`reservation`]), not per event, and
//!   not by the writer: it writes a reservation itself only when its block ran out first.
//! - `batched_through`: the highest `seq` ever cut into a batch, written before the batch is
//!   first sent. A buffer whose last `seq` is below it lost sent events (a power loss).
//! - `acked_through`: every `seq` at most this was acknowledged by the collector (as an event
//!   or in a gap report it wrote). Batches go in `seq` order, so one mark is enough.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crossbeam_channel::{bounded, Receiver, Sender};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::schema::{meta_key, BUSY_TIMEOUT};
use crate::error::{Error, Result};

/// `seq` numbers reserved at a time in the identity file (written with `synchronous=FULL`):
/// the identity file is written once per thousand events, not per event, and a recovery skips
/// at most this many numbers (reported as a `storage_lost` gap) to be sure none is reused.
pub const SEQ_RESERVATION: u64 = 1_000;
/// Commits of the current size a reservation covers during a burst: the writer commits up to
/// 2 000 events at a time then, and a reservation per commit would put the identity file's
/// durable write (a journal, four fsyncs; tens of milliseconds when the disk is busy) in every
/// commit, stalling the writer while the app's queue waits.
pub const RESERVED_COMMITS: u64 = 10;
/// The largest reservation: what a recovery after a burst may skip (and report as
/// `storage_lost`) beyond the numbers really given out.
pub const MAX_SEQ_RESERVATION: u64 = 20_000;

/// The block reserved for a commit of `events` events: [`SEQ_RESERVATION`], or
/// [`RESERVED_COMMITS`] commits of this size, at most [`MAX_SEQ_RESERVATION`].
pub fn reservation(events: u64) -> u64 {
    SEQ_RESERVATION
        .max(events.saturating_mul(RESERVED_COMMITS))
        .min(MAX_SEQ_RESERVATION)
}

/// The next reservation is asked for once less than this share of the current one is left
/// (a divisor: one half). A durable write takes tens of milliseconds when the disk is busy,
/// during a burst over a hundred; half a block of ten commits leaves the writer five commits
/// to go on with while the checkpoint thread writes it.
pub const RESERVE_AHEAD_DIVISOR: u64 = 2;

/// Schema version of the identity file (`PRAGMA user_version`).
pub const VERSION: i64 = 1;

const SCHEMA: &str = include_str!("../../sql/identity_schema.sql");
const IDENTITY_SET: &str = include_str!("../../sql/identity_set.sql");
const IDENTITY_GET: &str = include_str!("../../sql/identity_get.sql");

/// What the file name of the identity file adds to the buffer's.
pub const IDENTITY_SUFFIX: &str = ".identity";

/// Keys of the buffer's `meta` table whose truth is the identity file: reads and writes of
/// these go there.
pub const IDENTITY_KEYS: [&str; 3] = [
    meta_key::USER_ID,
    meta_key::SUPER_PROPERTIES,
    meta_key::OPT_OUT,
];

const INSTALL_ID: &str = meta_key::INSTALL_ID;
const SEQ_RESERVED_THROUGH: &str = "seq_reserved_through";
const BATCHED_THROUGH: &str = "batched_through";
const ACKED_THROUGH: &str = "acked_through";

/// The open identity file, with its `seq` marks kept in memory.
pub(super) struct IdentityFile {
    conn: Connection,
    install_id: Option<String>,
    reserved: Arc<Reserved>,
    batched_through: u64,
    acked_through: u64,
}

impl IdentityFile {
    /// Opens (creating) the identity file at `path`.
    pub(super) fn open(path: &Path) -> Result<Self> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Written rarely and must survive a power loss: a rollback journal, fsynced at commit.
        conn.execute_batch("PRAGMA journal_mode=DELETE; PRAGMA synchronous=FULL;")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > VERSION {
            return Err(Error::SchemaTooNew {
                found: version,
                supported: VERSION,
            });
        }
        if version < VERSION {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(SCHEMA)?;
            tx.pragma_update(None, "user_version", VERSION)?;
            tx.commit()?;
        }
        let mark =
            |key| -> Result<u64> { Ok(get(&conn, key)?.and_then(|v| v.parse().ok()).unwrap_or(0)) };
        let (reserved_through, batched_through, acked_through) = (
            mark(SEQ_RESERVED_THROUGH)?,
            mark(BATCHED_THROUGH)?,
            mark(ACKED_THROUGH)?,
        );
        let install_id = get(&conn, INSTALL_ID)?;
        Ok(Self {
            conn,
            install_id,
            reserved: Arc::new(Reserved::new(reserved_through)),
            batched_through,
            acked_through,
        })
    }

    /// The install id, once the file holds one (`None` on a first start).
    pub(super) fn install_id(&self) -> Option<&str> {
        self.install_id.as_deref()
    }

    /// Every `seq` given out is at most this.
    pub(super) fn reserved_through(&self) -> u64 {
        self.reserved.through()
    }

    /// The reservation, for the writer to read without this file's lock.
    pub(super) fn reserved(&self) -> Arc<Reserved> {
        Arc::clone(&self.reserved)
    }

    /// The highest `seq` cut into a batch.
    pub(super) fn batched_through(&self) -> u64 {
        self.batched_through
    }

    /// Every `seq` at most this was acknowledged.
    pub(super) fn acked_through(&self) -> u64 {
        self.acked_through
    }

    /// Fills a new identity file: from the buffer's `meta` values on the first start after an
    /// upgrade (the install keeps its id and continues its `seq`), or a new install's. Every
    /// `seq` below `next_seq` counts as given out; those below `first_pending` as acknowledged.
    pub(super) fn initialize(
        &mut self,
        install_id: &str,
        values: &[(&str, String)],
        next_seq: u64,
        first_pending: u64,
    ) -> Result<()> {
        let last = next_seq.saturating_sub(1);
        let acked = first_pending.saturating_sub(1).min(last);
        let (reserved_text, acked_text) = (last.to_string(), acked.to_string());
        let mut all: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend([
            (SEQ_RESERVED_THROUGH, reserved_text.as_str()),
            (ACKED_THROUGH, acked_text.as_str()),
            (BATCHED_THROUGH, acked_text.as_str()),
            // Last: a file with an install id is a filled one.
            (INSTALL_ID, install_id),
        ]);
        self.set_all(&all)?;
        self.install_id = Some(install_id.to_owned());
        self.reserved.set(last);
        self.acked_through = acked;
        self.batched_through = acked;
        Ok(())
    }

    /// A value of the identity file.
    pub(super) fn get(&self, key: &str) -> Result<Option<String>> {
        get(&self.conn, key)
    }

    /// Writes one value (one statement: its own durable transaction).
    pub(super) fn set(&self, key: &str, value: &str) -> Result<()> {
        self.conn
            .prepare_cached(IDENTITY_SET)?
            .execute([key, value])?;
        Ok(())
    }

    /// Writes `values` in one durable transaction, with a new reservation (see [`reservation`])
    /// when `max_seq` (the highest `seq` about to be stored, 0 for none; `events` of them) is
    /// beyond the reserved block. Called before the buffer commits: no `seq` is stored before
    /// it is reserved durably.
    pub(super) fn write(
        &mut self,
        values: &[(&str, &str)],
        max_seq: u64,
        events: u64,
    ) -> Result<()> {
        let reserve = max_seq > self.reserved.through();
        if values.is_empty() && !reserve {
            return Ok(());
        }
        let reserved = max_seq.saturating_add(reservation(events));
        let reserved_text = reserved.to_string();
        let mut all = values.to_vec();
        if reserve {
            all.push((SEQ_RESERVED_THROUGH, reserved_text.as_str()));
        }
        self.set_all(&all)?;
        if reserve {
            self.reserved.set(reserved);
        }
        Ok(())
    }

    /// Writes the reservation the writer asked for ahead of its need, if it is still beyond
    /// the one written.
    fn reserve_wanted(&mut self) -> Result<()> {
        let wanted = self.reserved.wanted.swap(0, Ordering::SeqCst);
        if wanted > self.reserved.through() {
            self.set_all(&[(SEQ_RESERVED_THROUGH, &wanted.to_string())])?;
            self.reserved.set(wanted);
        }
        Ok(())
    }

    /// Raises the batched-through mark to `seq` (durably) before a batch holding it is sent.
    pub(super) fn mark_batched(&mut self, seq: u64) -> Result<()> {
        if seq > self.batched_through {
            self.set_all(&[(BATCHED_THROUGH, &seq.to_string())])?;
            self.batched_through = seq;
        }
        Ok(())
    }

    /// Raises the acknowledged-through mark to `seq`.
    pub(super) fn mark_acked(&mut self, seq: u64) -> Result<()> {
        if seq > self.acked_through {
            self.set_all(&[(ACKED_THROUGH, &seq.to_string())])?;
            self.acked_through = seq;
        }
        Ok(())
    }

    fn set_all(&mut self, values: &[(&str, &str)]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(IDENTITY_SET)?;
            for (key, value) in values {
                stmt.execute([key, value])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// The `seq` reservation as the writer reads it, without the identity file's lock (which the
/// uploader's marks hold through their durable writes), and its wish for the next one.
pub(super) struct Reserved {
    /// Every `seq` at most this is reserved durably: raised only after the identity file holds
    /// it.
    through: AtomicU64,
    /// The reservation the writer asked for ahead of its need (0 for none).
    wanted: AtomicU64,
    /// Wakes the checkpoint thread ([`SeqMarks::reserve_ahead`]); holds at most one wake-up.
    wake: Sender<()>,
    woken: Receiver<()>,
}

impl Reserved {
    fn new(through: u64) -> Self {
        let (wake, woken) = bounded(1);
        Self {
            through: AtomicU64::new(through),
            wanted: AtomicU64::new(0),
            wake,
            woken,
        }
    }

    /// Every `seq` at most this is reserved durably.
    pub(super) fn through(&self) -> u64 {
        self.through.load(Ordering::SeqCst)
    }

    fn set(&self, through: u64) {
        self.through.fetch_max(through, Ordering::SeqCst);
    }

    /// Whether `max_seq` (the highest `seq` of a commit of `events` events) is reserved already;
    /// when less than half the block is left beyond it, asks the checkpoint thread for the next
    /// block ([`reservation`] beyond `max_seq`), so that the writer rarely writes one itself.
    pub(super) fn covers(&self, max_seq: u64, events: u64) -> bool {
        let through = self.through();
        if max_seq > through {
            return false;
        }
        let block = reservation(events);
        if through - max_seq < block / RESERVE_AHEAD_DIVISOR {
            self.wanted
                .fetch_max(max_seq.saturating_add(block), Ordering::SeqCst);
            self.wake();
        }
        true
    }

    /// Wakes the checkpoint thread.
    fn wake(&self) {
        // A full channel has a wake-up waiting already.
        let _ = self.wake.try_send(());
    }
}

/// The identity file's `seq` marks, shared with the store. Each mark is a durable write (a
/// journal and its fsyncs), and on a filesystem that orders data before metadata (ext4's
/// default) an fsync waits for the disk's other pending writes too: during a burst of
/// tracking, 0.1 to 1.5 s, measured. They are written through this handle by threads that do
/// not hold the store's lock, so that the writer's commits (and the app's queue behind them)
/// rarely wait for them: the uploader writes `batched_through` before a batch is sent and
/// `acked_through` after its answer is settled; the checkpoint thread writes the next
/// `seq_reserved_through` when the writer asks for it.
#[derive(Clone)]
pub struct SeqMarks {
    file: Arc<Mutex<IdentityFile>>,
    reserved: Arc<Reserved>,
}

impl SeqMarks {
    pub(super) fn new(file: Arc<Mutex<IdentityFile>>, reserved: Arc<Reserved>) -> Self {
        Self { file, reserved }
    }

    fn file(&self) -> MutexGuard<'_, IdentityFile> {
        self.file.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Raises `batched_through` to `seq`, durably, before a batch accounting for `seq` is sent
    /// (nothing is written when the mark is there already).
    pub fn mark_batched(&self, seq: u64) -> Result<()> {
        self.file().mark_batched(seq)
    }

    /// Raises `acked_through` to `seq`. A failure is only logged: the batch is settled already,
    /// and a mark left behind only widens a later `storage_lost` report.
    pub fn mark_acked(&self, seq: u64) {
        if let Err(e) = self.file().mark_acked(seq) {
            tracing::warn!(error = %e, "could not write the acknowledged-through mark");
        }
    }

    /// Where the writer's requests for a reservation ahead of its need arrive (one waits at
    /// most): the checkpoint thread waits on it, then calls [`SeqMarks::reserve_ahead`].
    pub fn reserve_requests(&self) -> &Receiver<()> {
        &self.reserved.woken
    }

    /// Wakes the checkpoint thread as a request would (one that finds nothing to write writes
    /// nothing): how the tracker's shutdown makes it look at its stop signal.
    pub fn wake_checkpoint_thread(&self) {
        self.reserved.wake();
    }

    /// Writes the reservation the writer asked for, if it is still beyond the one written: the
    /// checkpoint thread's work, so that the reservation's durable write is off the writer's
    /// path and the store's lock. A failure is left to the writer: it writes the reservation
    /// itself when its block runs out, and a failure then fails its commit, which it reports.
    pub fn reserve_ahead(&self) {
        let _ = self.file().reserve_wanted();
    }
}

fn get(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(IDENTITY_GET)?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_covers_ten_commits_of_a_burst_within_its_bounds() {
        assert_eq!(reservation(0), SEQ_RESERVATION);
        assert_eq!(reservation(1), SEQ_RESERVATION);
        assert_eq!(reservation(100), SEQ_RESERVATION);
        assert_eq!(reservation(250), 2_500);
        assert_eq!(reservation(2_000), MAX_SEQ_RESERVATION);
        assert_eq!(reservation(u64::MAX), MAX_SEQ_RESERVATION);
    }
}
