//! The SQLite buffer: events wait here until the collector has acknowledged them.
//!
//! Opened in steps (lock → setup → create or upgrade → load), WAL with `synchronous=NORMAL`,
//! every write in an IMMEDIATE transaction. Counts of pending events and bytes are kept in
//! memory, loaded once at open, so the hot path never runs `COUNT(*)`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{
    params, Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior,
};
use tern_protocol::{Gap, RefusedEvent, SeqRange};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::policy::{MAX_CORRUPT_COPIES, MAX_CORRUPT_COPY_AGE, WAL_SIZE_LIMIT};
use identity::{IdentityFile, IDENTITY_KEYS};

/// Current schema version (`PRAGMA user_version`). Bump it, add an arm to [`upgrade_from`] and a
/// migration test with an old-schema fixture whenever `sql/schema.sql` changes.
pub const VERSION: i64 = 3;

const SCHEMA: &str = include_str!("../sql/schema.sql");
const UPGRADE_V1_TO_V2: &str = include_str!("../sql/upgrade_v1_to_v2.sql");
const UPGRADE_V2_TO_V3: &str = include_str!("../sql/upgrade_v2_to_v3.sql");
const INSERT_EVENT: &str = include_str!("../sql/insert_event.sql");
const UNBATCHED_EVENTS: &str = include_str!("../sql/unbatched_events.sql");
const BATCH_EVENTS: &str = include_str!("../sql/batch_events.sql");
const BATCH_ROWS: &str = include_str!("../sql/batch_rows.sql");
const NEXT_BATCH: &str = include_str!("../sql/next_batch.sql");
const BATCH_SIZE: &str = include_str!("../sql/batch_size.sql");
const OLDEST_DROPPABLE: &str = include_str!("../sql/oldest_droppable.sql");
const COUNT_PENDING: &str = include_str!("../sql/count_pending.sql");
const UNBATCHED_FROM: &str = include_str!("../sql/unbatched_from.sql");
const RETURN_DROP_REPORT: &str = include_str!("../sql/return_drop_report.sql");
const QUARANTINE_INSERT: &str = include_str!("../sql/quarantine_insert.sql");
const QUARANTINE_OLDEST: &str = include_str!("../sql/quarantine_oldest.sql");

/// How long a write waits for another connection's lock (tern-inspect reading, say).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

mod gaps;
mod identity;

pub use identity::IDENTITY_SUFFIX;

pub use gaps::{merge_ranges, ranges_of};
/// Why events were dropped on the device before they had a `seq`; the names are sent to the
/// collector.
pub use tern_protocol::drop_reason;
/// Why the SDK gave up on events that had a `seq`: the reasons of gap reports.
pub use tern_protocol::gap_reason;

/// An event ready to be stored: its wire JSON and the columns we query by.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Per-install sequence number.
    pub seq: u64,
    /// The event's id.
    pub event_id: Uuid,
    /// Event name.
    pub name: String,
    /// Creation time, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// The event serialized in wire format v1.
    pub body: String,
}

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

/// What waits in the buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    /// Events not yet acknowledged by the collector.
    pub events: u64,
    /// Their bytes (uncompressed wire JSON).
    pub bytes: u64,
    /// Of those events, how many are not yet in a batch.
    pub unbatched_events: u64,
    /// Batches the collector refused as malformed, kept aside.
    pub quarantined_batches: u64,
    /// Events in those batches.
    pub quarantined_events: u64,
    /// Their bytes (event JSON).
    pub quarantined_bytes: u64,
}

/// Caps on the quarantine; over a cap, the oldest quarantined batches are dropped and counted
/// as `quarantine_cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuarantineCaps {
    /// Most batches.
    pub max_batches: u64,
    /// Most bytes of event JSON.
    pub max_bytes: u64,
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

/// One stored event of a batch, as the quarantine takes it.
struct BatchEventRow {
    seq: u64,
    event_id: String,
    body: String,
}

/// The oldest event a cap may drop.
struct Oldest {
    seq: u64,
    batch_id: Option<String>,
    created_at_ms: i64,
}

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

/// What [`Store::load`] reads from a database.
struct Loaded {
    install_id: String,
    next_seq: u64,
    pending: Pending,
}

/// The SDK's SQLite buffer.
pub struct Store {
    conn: Connection,
    install_id: String,
    next_seq: u64,
    pending: Pending,
    /// The batch the uploader is sending right now: the caps never drop it, since the
    /// collector's answer decides its fate (otherwise an event could be both delivered and
    /// counted as dropped).
    in_flight: Option<Uuid>,
    /// Held for the store's life: a second tracker on the same file gets a clear error.
    _lock: File,
    /// The database file, for its corrupt copies.
    path: PathBuf,
    /// Who the install is and what the user chose, beside the buffer (see `identity`).
    identity: IdentityFile,
    /// The file ceiling set with [`Store::set_max_file_bytes`], set again on a fresh buffer.
    max_file_bytes: Option<u64>,
    /// How many times the buffer was replaced while open (corruption found at run time), so
    /// that the [`Checkpointer`] opens the new file.
    generation: Arc<AtomicU64>,
}

impl Store {
    /// Opens (creating or upgrading) the buffer at `path` and its identity file
    /// (`<path>.identity`). A file that is not a usable SQLite database, or whose tables fail to
    /// read as SQLite reports corruption while they are loaded, is moved aside (kept for QA as
    /// `<path>.corrupt-<ms>`) and a fresh buffer created; the identity file keeps the install
    /// id, the user id, the super-properties and the opt-out choice, `seq` continues after the
    /// reserved block, and the `seq` numbers that may have been lost are reported as a
    /// `storage_lost` gap (see [`Store::report_storage_lost`]).
    ///
    /// Power loss: the buffer commits with `synchronous=NORMAL`, so a power loss may undo its
    /// last commits. The identity file (`synchronous=FULL`) reserves every `seq` before it is
    /// stored and marks the highest `seq` cut into a batch before the batch is sent. A buffer
    /// whose last `seq` is below that mark lost events that may have reached the collector:
    /// `seq` continues after the reserved block (never reused for another event) and the lost
    /// numbers are reported as `storage_lost`. Events not yet cut into a batch when the power
    /// went may be lost without a report: no one outside the device ever saw their `seq`, and it
    /// is given to the next events.
    pub fn open(path: &Path) -> Result<Self> {
        let lock = lock(path)?;
        let identity = IdentityFile::open(&sibling(path, IDENTITY_SUFFIX))?;
        // The connection is dropped with the error, before the file is moved.
        let opened = open_connection(path).and_then(|conn| Ok((Self::load(&conn)?, conn)));
        let now_ms = chrono::Utc::now().timestamp_millis();
        match opened {
            Ok((loaded, conn)) => {
                prune_corrupt_copies(path, MAX_CORRUPT_COPIES, MAX_CORRUPT_COPY_AGE, now_ms);
                let buffer_last = loaded.next_seq - 1;
                let mut store = Self::new(conn, loaded, lock, path, identity);
                let known = store.identity.install_id().is_some();
                store.adopt_identity()?;
                let sent = store.identity.batched_through();
                if known && buffer_last < sent.max(store.identity.acked_through()) {
                    tracing::error!("the buffer is older than its identity file (power loss?)");
                    store.report_storage_lost(buffer_last, now_ms)?;
                }
                Ok(store)
            }
            Err(e) if is_corruption(&e) => {
                let moved = move_aside(path)?;
                tracing::error!(error = %e, moved = %moved.display(), "corrupt buffer moved aside");
                let conn = open_connection(path)?;
                let loaded = Self::load(&conn)?;
                let mut store = Self::new(conn, loaded, lock, path, identity);
                let known = store.identity.install_id().is_some();
                store.adopt_identity()?;
                if known {
                    store.report_storage_lost(0, now_ms)?;
                }
                store.set_meta("recovered_from", &moved.display().to_string())?;
                prune_corrupt_copies(path, MAX_CORRUPT_COPIES, MAX_CORRUPT_COPY_AGE, now_ms);
                Ok(store)
            }
            Err(e) => Err(e),
        }
    }

    /// Takes the install id from the identity file, or fills a new identity file from the
    /// buffer's `meta` values (the first start after an upgrade, or a new install).
    fn adopt_identity(&mut self) -> Result<()> {
        if let Some(id) = self.identity.install_id() {
            let id = id.to_owned();
            if id != self.install_id {
                meta_set(&self.conn, "install_id", &id)?;
                self.install_id = id;
            }
            return Ok(());
        }
        let mut values = Vec::new();
        for key in IDENTITY_KEYS {
            if let Some(value) = meta_get(&self.conn, key)? {
                values.push((key, value));
            }
        }
        let first_pending: Option<u64> =
            self.conn
                .query_row("SELECT MIN(seq) FROM events", [], |r| r.get(0))?;
        let next_seq = self.next_seq;
        self.identity.initialize(
            &self.install_id.clone(),
            &values,
            next_seq,
            first_pending.unwrap_or(next_seq),
        )
    }

    /// Reports as a `storage_lost` gap the `seq` numbers that a lost buffer (corrupt, or undone
    /// by a power loss) may have held: from the lowest not known to be acknowledged, nor still
    /// in the buffer (above `buffer_last`), to the end of the reserved block; `seq` continues
    /// after the block, so none of them is ever given to another event.
    fn report_storage_lost(&mut self, buffer_last: u64, now_ms: i64) -> Result<()> {
        let first = self.identity.acked_through().max(buffer_last) + 1;
        let last = self.identity.reserved_through();
        let next_seq = self.next_seq.max(last + 1);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if first <= last {
            gaps::record(
                &tx,
                gap_reason::STORAGE_LOST,
                &[SeqRange { first, last }],
                now_ms,
            )?;
            tracing::error!(
                first,
                last,
                "buffer lost: seq numbers reported as storage_lost"
            );
        }
        meta_set(&tx, "next_seq", &next_seq.to_string())?;
        tx.commit()?;
        self.next_seq = next_seq;
        Ok(())
    }

    fn new(
        conn: Connection,
        loaded: Loaded,
        lock: File,
        path: &Path,
        identity: IdentityFile,
    ) -> Self {
        Self {
            conn,
            install_id: loaded.install_id,
            next_seq: loaded.next_seq,
            pending: loaded.pending,
            in_flight: None,
            _lock: lock,
            path: path.to_owned(),
            identity,
            max_file_bytes: None,
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Corruption found while the buffer is in use (SQLite answered a statement with
    /// `SQLITE_CORRUPT` or `SQLITE_NOTADB`) is handled as at open: the file is moved aside, a
    /// fresh buffer takes its place with the same identity, `seq` continues after the reserved
    /// block, and the `seq` numbers the file may have held unacknowledged are reported as a
    /// `storage_lost` gap. Returns the path of the corrupt copy.
    pub fn recover_from_corruption(&mut self) -> Result<PathBuf> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        // Closed before the file moves: its WAL goes with it.
        let closed = std::mem::replace(&mut self.conn, Connection::open_in_memory()?);
        if let Err((_, e)) = closed.close() {
            tracing::warn!(error = %e, "closing the corrupt buffer failed");
        }
        let moved = move_aside(&self.path)?;
        tracing::error!(moved = %moved.display(), "corrupt buffer found while running; moved aside");
        let conn = open_connection(&self.path)?;
        let loaded = Self::load(&conn)?;
        self.conn = conn;
        self.install_id = loaded.install_id;
        self.next_seq = loaded.next_seq;
        self.pending = loaded.pending;
        self.in_flight = None;
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(max) = self.max_file_bytes {
            self.set_max_file_bytes(max)?;
        }
        self.adopt_identity()?;
        self.report_storage_lost(0, now_ms)?;
        self.set_meta("recovered_from", &moved.display().to_string())?;
        prune_corrupt_copies(&self.path, MAX_CORRUPT_COPIES, MAX_CORRUPT_COPY_AGE, now_ms);
        Ok(moved)
    }

    /// A second connection that checkpoints this buffer's WAL (see [`Checkpointer`]).
    pub fn checkpointer(&self) -> Result<Checkpointer> {
        Checkpointer::open(&self.path, Arc::clone(&self.generation))
    }

    /// Reads what the store keeps in memory: the install id (created on first use), the next
    /// `seq` and the counts of what waits. It reads every event row once (`count_pending`), so
    /// damaged event pages are found here, at open, not at the first upload.
    fn load(conn: &Connection) -> Result<Loaded> {
        let install_id = match meta_get(conn, "install_id")? {
            Some(id) => id,
            None => {
                let id = Uuid::now_v7().to_string();
                meta_set(conn, "install_id", &id)?;
                id
            }
        };
        let stored_next: u64 = meta_get(conn, "next_seq")?
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let max_seq: u64 =
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?;
        Ok(Loaded {
            install_id,
            next_seq: stored_next.max(max_seq + 1),
            pending: count_pending(conn)?,
        })
    }

    /// The install's stable id.
    pub fn install_id(&self) -> &str {
        &self.install_id
    }

    /// The sequence number the next stored event gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// What waits in the buffer.
    pub fn pending(&self) -> Pending {
        self.pending
    }

    /// Counts what waits from the tables again (`COUNT(*)`: not for the hot path), for after a
    /// panic interrupted an operation between its commit and its update of the counts.
    pub fn recount(&mut self) -> Result<()> {
        self.pending = count_pending(&self.conn)?;
        Ok(())
    }

    /// Marks the batch being sent (or none): the caps leave it alone until its answer is in.
    pub fn set_in_flight(&mut self, batch_id: Option<Uuid>) {
        self.in_flight = batch_id;
    }

    /// A value of the `meta` table; for the user id, the super-properties and the opt-out
    /// choice, of the identity file.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        if IDENTITY_KEYS.contains(&key) {
            return self.identity.get(key);
        }
        meta_get(&self.conn, key)
    }

    /// Sets a value of the `meta` table; for the user id, the super-properties and the opt-out
    /// choice, of the identity file.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        if IDENTITY_KEYS.contains(&key) {
            return self.identity.set(key, value);
        }
        meta_set(&self.conn, key, value)
    }

    /// Stores `events` in one transaction (group commit), with `meta` updates and drop counts
    /// (reason, events) riding along: either all of it is committed or none. The identity file
    /// is written first (the values that live there, and a new `seq` reservation when the
    /// block is used up): a failed buffer commit leaves it ahead, never behind.
    pub fn insert_events(
        &mut self,
        events: &[StoredEvent],
        meta: &[(&str, &str)],
        drops: &[(&str, u64)],
    ) -> Result<()> {
        let (identity_meta, meta): (Vec<(&str, &str)>, _) = meta
            .iter()
            .partition(|(key, _)| IDENTITY_KEYS.contains(key));
        let highest = events.iter().map(|e| e.seq).max().unwrap_or(0);
        self.identity.write(&identity_meta, highest)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        add_drops(&tx, drops)?;
        let mut bytes = 0u64;
        let mut max_seq = 0u64;
        {
            let mut insert = tx.prepare_cached(INSERT_EVENT)?;
            for e in events {
                let len = e.body.len() as u64;
                insert.execute(params![
                    e.seq,
                    e.event_id.to_string(),
                    e.name,
                    e.created_at_ms,
                    e.body,
                    len
                ])?;
                bytes += len;
                max_seq = max_seq.max(e.seq);
            }
        }
        let next_seq = self.next_seq.max(max_seq + 1);
        if !events.is_empty() {
            meta_set(&tx, "next_seq", &next_seq.to_string())?;
        }
        for (key, value) in meta {
            meta_set(&tx, key, value)?;
        }
        tx.commit()?;
        self.next_seq = next_seq;
        let n = events.len() as u64;
        self.pending.events += n;
        self.pending.unbatched_events += n;
        self.pending.bytes += bytes;
        Ok(())
    }

    /// Adds to the drop counts (reason, events).
    pub fn add_drops(&mut self, drops: &[(&str, u64)]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        add_drops(&tx, drops)?;
        tx.commit()?;
        Ok(())
    }

    /// Drop counts by reason: (total ever, not yet reported to the collector).
    pub fn drops(&self) -> Result<BTreeMap<String, (u64, u64)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT reason, total, unreported FROM drops ORDER BY reason")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// `seq` numbers given up on since the install (gap reports, sent or not), by reason.
    pub fn gap_totals(&self) -> Result<BTreeMap<String, u64>> {
        gaps::totals(&self.conn)
    }

    /// Gap reports not yet acknowledged: (reports, `seq` numbers they hold).
    pub fn pending_gaps(&self) -> Result<(u64, u64)> {
        gaps::pending_counts(&self.conn)
    }

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

    /// Cuts a new batch from the oldest unbatched events, at most `max_events` of them and at
    /// most `max_bytes` (but always at least one event, if any waits), and attaches the drop
    /// counts not yet reported and the pending gap reports (see `gaps::fix_into_batch`). A batch
    /// may hold gap reports and no events. Returns `None` when nothing waits.
    pub fn cut_batch(
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
        // Durable before the batch exists, so before it is first sent: a buffer that later
        // comes back without it (a power loss) is then known to have lost events the collector
        // may hold. Should the commit fail, the mark is only ahead, which costs a skipped block
        // at worst, never a reused seq.
        self.identity.mark_batched(highest_seq(&batch, last))?;
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
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let last = batch_last_seq(&tx, batch.batch_id)?;
        let (events, bytes) = delete_batch(&tx, batch.batch_id)?;
        tx.commit()?;
        self.mark_acked(highest_seq(batch, last));
        self.pending.events = self.pending.events.saturating_sub(events);
        self.pending.bytes = self.pending.bytes.saturating_sub(bytes);
        Ok(events)
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

    /// Raises the identity file's acknowledged-through mark. A failure is only logged: the batch
    /// is settled already, and a mark left behind only widens a later `storage_lost` report.
    fn mark_acked(&mut self, seq: u64) {
        if let Err(e) = self.identity.mark_acked(seq) {
            tracing::warn!(error = %e, "could not write the acknowledged-through mark");
        }
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

    /// Limits the database file to `max_bytes` (SQLite's `max_page_count`): past it, writes
    /// fail with "database or disk is full", as on a full disk.
    pub fn set_max_file_bytes(&mut self, max_bytes: u64) -> Result<()> {
        self.max_file_bytes = Some(max_bytes);
        let page_size: u64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let pages = (max_bytes / page_size.max(1)).max(1);
        self.conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
        Ok(())
    }
}

/// The lock file beside the database: one tracker per file.
fn lock(path: &Path) -> Result<File> {
    let lock_path = sibling(path, ".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::AlreadyOpen(path.display().to_string())),
        Err(TryLockError::Error(e)) => Err(e.into()),
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn open_connection(path: &Path) -> Result<Connection> {
    let mut conn = Connection::open(path)?;
    setup(&conn)?;
    create_or_upgrade(&mut conn)?;
    // A cheap read of every table we use: a damaged header or schema fails here, at open.
    conn.query_row("SELECT COUNT(*) FROM meta", [], |r| r.get::<_, i64>(0))?;
    Ok(conn)
}

/// Whether SQLite found the database file corrupt (or not a database at all).
pub fn is_corruption(e: &Error) -> bool {
    matches!(
        e,
        Error::Storage(rusqlite::Error::SqliteFailure(f, _))
            if matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// Moves a corrupt database and its WAL files aside, returning the new path of the database.
fn move_aside(path: &Path) -> Result<PathBuf> {
    let stamp = chrono::Utc::now().timestamp_millis();
    let target = sibling(path, &format!(".corrupt-{stamp}"));
    std::fs::rename(path, &target)?;
    for suffix in ["-wal", "-shm"] {
        let from = sibling(path, suffix);
        if from.exists() {
            std::fs::rename(&from, sibling(&target, suffix))?;
        }
    }
    Ok(target)
}

/// Deletes the corrupt copies of the buffer at `path` (with their `-wal`/`-shm`) beyond the
/// newest `keep`, and those older than `max_age`. Best effort: a copy that cannot be deleted
/// now is tried again at the next open.
fn prune_corrupt_copies(path: &Path, keep: usize, max_age: Duration, now_ms: i64) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!("{}.corrupt-", name.to_string_lossy());
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut copies: Vec<(i64, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let file = entry.file_name().to_string_lossy().into_owned();
            let stamp: i64 = file.strip_prefix(&prefix)?.parse().ok()?;
            Some((stamp, entry.path()))
        })
        .collect();
    copies.sort_unstable_by_key(|c| std::cmp::Reverse(c.0));
    let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
    for (i, (stamp, copy)) in copies.iter().enumerate() {
        if i < keep && now_ms.saturating_sub(*stamp) <= max_age_ms {
            continue;
        }
        for file in [copy.clone(), sibling(copy, "-wal"), sibling(copy, "-shm")] {
            if let Err(e) = std::fs::remove_file(&file) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(error = %e, "could not delete a corrupt copy of the buffer");
                }
            }
        }
    }
}

fn setup(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // journal_mode answers with a row; read it so that a file that cannot be WAL is an error.
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Config(format!(
            "the database refused WAL mode (got {mode})"
        )));
    }
    // Commits append to the WAL without an fsync (synchronous=NORMAL); the fsyncs of a
    // checkpoint are left to the [`Checkpointer`] on its own connection and thread, so that a
    // slow disk never holds up a commit.
    conn.execute_batch(&format!(
        "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; PRAGMA wal_autocheckpoint=0; \
         PRAGMA journal_size_limit={WAL_SIZE_LIMIT};"
    ))?;
    Ok(())
}

/// Copies the WAL into the database file from a connection of its own. `PASSIVE` never waits
/// for the writer or for readers (such as `tern-inspect`), and the writer never waits for it.
pub struct Checkpointer {
    conn: Connection,
    path: PathBuf,
    /// The store's replacement count, and the one this connection was opened at.
    generation: Arc<AtomicU64>,
    opened_at: u64,
}

impl Checkpointer {
    /// Opens a second connection to the buffer at `path`, which [`Store::open`] opened first.
    fn open(path: &Path, generation: Arc<AtomicU64>) -> Result<Self> {
        let opened_at = generation.load(Ordering::SeqCst);
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(Self {
            conn,
            path: path.to_owned(),
            generation,
            opened_at,
        })
    }

    /// One passive checkpoint; returns the WAL frames it left behind (busy or newer frames).
    /// After the store replaced a corrupt buffer, the new file is opened first (the old
    /// connection still reads the file that was moved aside).
    pub fn checkpoint(&mut self) -> Result<u64> {
        let generation = self.generation.load(Ordering::SeqCst);
        if generation != self.opened_at {
            let conn = Connection::open(&self.path)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            self.conn = conn;
            self.opened_at = generation;
        }
        let (log, done): (i64, i64) =
            self.conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get(1)?, r.get(2)?))
                })?;
        Ok(u64::try_from(log - done).unwrap_or(0))
    }
}

fn create_or_upgrade(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > VERSION {
        return Err(Error::SchemaTooNew {
            found: version,
            supported: VERSION,
        });
    }
    if version == VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if version == 0 {
        tx.execute_batch(SCHEMA)?;
    } else {
        for from in version..VERSION {
            upgrade_from(&tx, from)?;
        }
    }
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Upgrades a database of schema `version` to `version + 1`.
fn upgrade_from(conn: &Connection, version: i64) -> Result<()> {
    match version {
        1 => conn.execute_batch(UPGRADE_V1_TO_V2)?,
        2 => conn.execute_batch(UPGRADE_V2_TO_V3)?,
        _ => {
            return Err(Error::Config(format!(
                "no upgrade from schema version {version}"
            )))
        }
    }
    Ok(())
}

fn insert_batch(tx: &Transaction<'_>, batch: &BatchRow, now_ms: i64) -> Result<()> {
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

/// Deletes a batch, its events and the gap reports still attached to it; returns the events and bytes actually deleted, which are
/// what the in-memory counts must lose (nothing, when the batch was already gone).
fn delete_batch(tx: &Transaction<'_>, batch_id: Uuid) -> Result<(u64, u64)> {
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
fn batch_last_seq(tx: &Transaction<'_>, batch_id: Uuid) -> Result<u64> {
    Ok(tx.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM events WHERE batch_id = ?1",
        [batch_id.to_string()],
        |r| r.get(0),
    )?)
}

/// The highest `seq` a batch accounts for: of its events (`last_event_seq`) and of its gap
/// reports.
fn highest_seq(batch: &BatchRow, last_event_seq: u64) -> u64 {
    batch
        .gaps
        .iter()
        .flat_map(|gap| gap.ranges.iter().map(|r| r.last))
        .fold(last_event_seq, u64::max)
}

/// Puts the drop counts a batch carried back among those not yet reported, for a batch that
/// will never be sent (dropped by a cap, quarantined): the next batch cut reports them.
fn return_drop_report(tx: &Transaction<'_>, batch_id: Uuid) -> Result<()> {
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

/// Counts what waits, from the tables.
fn count_pending(conn: &Connection) -> Result<Pending> {
    Ok(conn.query_row(COUNT_PENDING, [], |r| {
        Ok(Pending {
            events: r.get(0)?,
            bytes: r.get(1)?,
            unbatched_events: r.get(2)?,
            quarantined_batches: r.get(3)?,
            quarantined_events: r.get(4)?,
            quarantined_bytes: r.get(5)?,
        })
    })?)
}

fn add_drops(tx: &Transaction<'_>, drops: &[(&str, u64)]) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO drops (reason, total, unreported) VALUES (?1, ?2, ?2)
         ON CONFLICT(reason) DO UPDATE SET total = total + excluded.total,
                                           unreported = unreported + excluded.unreported",
    )?;
    for (reason, n) in drops.iter().filter(|(_, n)| *n > 0) {
        stmt.execute(params![reason, n])?;
    }
    Ok(())
}

pub(crate) fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )?;
    Ok(())
}

fn parse_uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| Error::Config(format!("corrupt id {s:?} in the database: {e}")))
}

#[cfg(test)]
mod tests;
