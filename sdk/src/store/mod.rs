//! The SQLite buffer: events wait here until the collector has acknowledged them.
//!
//! Opened in steps (lock → setup → create or upgrade → load), WAL with `synchronous=NORMAL`,
//! every write in an IMMEDIATE transaction. Counts of pending events and bytes are kept in
//! memory, loaded once at open, so the hot path never runs `COUNT(*)`.
//!
//! One concern per file: the schema, its upgrades and the `meta` keys (`schema`); opening, with
//! the recovery of a corrupt or set-back buffer (`recovery`); batches (`batches`); the
//! quarantine (`quarantine`); the caps and the opt-out purge (`caps`); gap reports (`gaps`);
//! the identity file (`identity`). This file holds the [`Store`] and what every part uses.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use tern_protocol::SeqRange;
use uuid::Uuid;

use crate::error::{Error, Result};
pub use identity::SeqMarks;
use identity::{IdentityFile, Reserved, IDENTITY_KEYS};
use schema::{meta_set, BUSY_TIMEOUT};

const INSERT_EVENT: &str = include_str!("../../sql/insert_event.sql");
const COUNT_PENDING: &str = include_str!("../../sql/count_pending.sql");

mod batches;
mod caps;
mod gaps;
mod identity;
mod quarantine;
mod recovery;
mod schema;

pub use batches::{BatchRow, Split};
pub use caps::{Caps, CapsProgress};
pub use gaps::{merge_ranges, ranges_of};
pub use identity::IDENTITY_SUFFIX;
pub use quarantine::QuarantineCaps;
pub use recovery::is_corruption;
pub use schema::VERSION;
pub(crate) use schema::{meta_get, meta_key};
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
    /// Who the install is and what the user chose, beside the buffer (see `identity`); shared
    /// with the uploader's [`SeqMarks`], which write their marks without the store's lock.
    identity: Arc<Mutex<IdentityFile>>,
    /// The identity file's `seq` reservation, read by the writer without its lock.
    reserved: Arc<Reserved>,
    /// The file ceiling set with [`Store::set_max_file_bytes`], set again on a fresh buffer.
    max_file_bytes: Option<u64>,
    /// How many times the buffer was replaced while open (corruption found at run time), so
    /// that the [`Checkpointer`] opens the new file.
    generation: Arc<AtomicU64>,
}

impl Store {
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
            reserved: identity.reserved(),
            identity: Arc::new(Mutex::new(identity)),
            max_file_bytes: None,
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The identity file, behind its own lock (taken after the store's, never before it).
    fn identity(&self) -> MutexGuard<'_, IdentityFile> {
        self.identity.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The identity file's `seq` marks, for the uploader and the checkpoint thread to write
    /// without the store's lock (see [`SeqMarks`]).
    pub fn seq_marks(&self) -> SeqMarks {
        SeqMarks::new(Arc::clone(&self.identity), Arc::clone(&self.reserved))
    }

    /// A second connection that checkpoints this buffer's WAL (see [`Checkpointer`]).
    pub fn checkpointer(&self) -> Result<Checkpointer> {
        Checkpointer::open(&self.path, Arc::clone(&self.generation))
    }

    /// Reads what the store keeps in memory: the install id (created on first use), the next
    /// `seq` and the counts of what waits. It reads every event row once (`count_pending`), so
    /// damaged event pages are found here, at open, not at the first upload.
    fn load(conn: &Connection) -> Result<Loaded> {
        let install_id = match meta_get(conn, meta_key::INSTALL_ID)? {
            Some(id) => id,
            None => {
                let id = Uuid::now_v7().to_string();
                meta_set(conn, meta_key::INSTALL_ID, &id)?;
                id
            }
        };
        let stored_next: u64 = meta_get(conn, meta_key::NEXT_SEQ)?
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
            return self.identity().get(key);
        }
        meta_get(&self.conn, key)
    }

    /// Sets a value of the `meta` table; for the user id, the super-properties and the opt-out
    /// choice, of the identity file.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        if IDENTITY_KEYS.contains(&key) {
            return self.identity().set(key, value);
        }
        meta_set(&self.conn, key, value)
    }

    /// Stores `events` in one transaction (group commit), with `meta` updates and drop counts
    /// (reason, events) riding along: either all of it is committed or none. The identity file
    /// is written first when it must be (the values that live there, and a new `seq`
    /// reservation when the block ran out before the checkpoint thread wrote the next one): a
    /// failed buffer commit leaves it ahead, never behind.
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
        let count = events.len() as u64;
        if !identity_meta.is_empty() || !self.reserved.covers(highest, count) {
            self.identity().write(&identity_meta, highest, count)?;
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        add_drops(&tx, drops)?;
        let mut bytes = 0u64;
        let mut max_seq = 0u64;
        {
            let mut insert = tx.prepare_cached(INSERT_EVENT)?;
            let mut id = Uuid::encode_buffer();
            for e in events {
                let len = e.body.len() as u64;
                insert.execute(params![
                    e.seq,
                    &*e.event_id.hyphenated().encode_lower(&mut id),
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
            meta_set(&tx, meta_key::NEXT_SEQ, &next_seq.to_string())?;
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

    /// Numbers `count` events that were dropped before they were stored and reports them as a
    /// gap of `reason`: their `seq`s are used up, so received + reported = issued still holds.
    pub fn give_up_new_seqs(&mut self, reason: &str, count: u64, now_ms: i64) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        let first = self.next_seq;
        let last = first.saturating_add(count - 1);
        self.identity().write(&[], last, 0)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        gaps::record(&tx, reason, &[SeqRange { first, last }], now_ms)?;
        meta_set(&tx, meta_key::NEXT_SEQ, &(last + 1).to_string())?;
        tx.commit()?;
        self.next_seq = last + 1;
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

/// What a checkpoint found in the WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalState {
    /// Frames (pages) in the WAL; it starts again from 0 at the first commit after a checkpoint
    /// that copied every frame.
    pub frames: u64,
    /// Of those, the frames the checkpoint left behind: a reader still needs them, or they were
    /// committed while it ran.
    pub left: u64,
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

    /// The WAL file's size now (0 when there is none): it grows while commits append past its
    /// end, and stays when a checkpoint let them write it again from the beginning.
    pub fn wal_bytes(&self) -> u64 {
        std::fs::metadata(sibling(&self.path, "-wal")).map_or(0, |m| m.len())
    }

    /// One passive checkpoint: what the WAL held and what it left behind (busy or newer frames).
    /// After the store replaced a corrupt buffer, the new file is opened first (the old
    /// connection still reads the file that was moved aside).
    pub fn checkpoint(&mut self) -> Result<WalState> {
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
        let frames = u64::try_from(log).unwrap_or(0);
        Ok(WalState {
            frames,
            left: frames.saturating_sub(u64::try_from(done).unwrap_or(0)),
        })
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

fn parse_uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| Error::Config(format!("corrupt id {s:?} in the database: {e}")))
}

#[cfg(test)]
mod tests;
