//! Opening the buffer, and corruption recovery: a buffer SQLite reports corrupt, at open or
//! while in use, is moved aside (kept for QA, within bounds) and replaced by a fresh one that
//! keeps the identity and reports the `seq` numbers that may have been lost; a buffer that a
//! power loss set back is found at open by the identity file's marks.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, TransactionBehavior};
use tern_protocol::{gap_reason, SeqRange};

use super::gaps;
use super::identity::{IdentityFile, IDENTITY_KEYS, IDENTITY_SUFFIX};
use super::schema::{meta_get, meta_key, meta_set, open_connection};
use super::{lock, sibling, Store};
use crate::error::{Error, Result};

/// Corrupt buffers moved aside (`<db>.corrupt-<ms>`) kept for QA: the newest two show what
/// went wrong; more would only hold more of the user's events on the device.
pub const MAX_CORRUPT_COPIES: usize = 2;
/// Oldest corrupt copy kept: a week is long enough for QA to fetch it from a test device.
pub const MAX_CORRUPT_COPY_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

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
                let known = store.identity().install_id().is_some();
                store.adopt_identity()?;
                let sent = store.identity().batched_through();
                if known && buffer_last < sent.max(store.identity().acked_through()) {
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
                let known = store.identity().install_id().is_some();
                store.adopt_identity()?;
                if known {
                    store.report_storage_lost(0, now_ms)?;
                }
                store.set_meta(meta_key::RECOVERED_FROM, &moved.display().to_string())?;
                prune_corrupt_copies(path, MAX_CORRUPT_COPIES, MAX_CORRUPT_COPY_AGE, now_ms);
                Ok(store)
            }
            Err(e) => Err(e),
        }
    }

    /// Takes the install id from the identity file, or fills a new identity file from the
    /// buffer's `meta` values (the first start after an upgrade, or a new install).
    fn adopt_identity(&mut self) -> Result<()> {
        let known = self.identity().install_id().map(str::to_owned);
        if let Some(id) = known {
            if id != self.install_id {
                meta_set(&self.conn, meta_key::INSTALL_ID, &id)?;
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
        self.identity().initialize(
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
        let first = self.identity().acked_through().max(buffer_last) + 1;
        let last = self.identity().reserved_through();
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
        meta_set(&tx, meta_key::NEXT_SEQ, &next_seq.to_string())?;
        tx.commit()?;
        self.next_seq = next_seq;
        Ok(())
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
        self.set_meta(meta_key::RECOVERED_FROM, &moved.display().to_string())?;
        prune_corrupt_copies(&self.path, MAX_CORRUPT_COPIES, MAX_CORRUPT_COPY_AGE, now_ms);
        Ok(moved)
    }
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
pub(super) fn prune_corrupt_copies(path: &Path, keep: usize, max_age: Duration, now_ms: i64) {
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
