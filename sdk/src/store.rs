//! The SQLite buffer: events wait here until the collector has acknowledged them.
//!
//! Opened in steps (setup → create or upgrade → load), WAL with `synchronous=NORMAL`, every
//! write in an IMMEDIATE transaction. Counts of pending events and bytes are kept in memory,
//! loaded once at open, so the hot path never runs `COUNT(*)`.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use uuid::Uuid;

use crate::error::{Error, Result};

/// Current schema version (`PRAGMA user_version`). Bump it, add an arm to [`upgrade_from`] and a
/// migration test with an old-schema fixture whenever `sql/schema.sql` changes.
pub const VERSION: i64 = 1;

const SCHEMA: &str = include_str!("../sql/schema.sql");
const INSERT_EVENT: &str = include_str!("../sql/insert_event.sql");
const UNBATCHED_EVENTS: &str = include_str!("../sql/unbatched_events.sql");
const BATCH_EVENTS: &str = include_str!("../sql/batch_events.sql");
const NEXT_BATCH: &str = include_str!("../sql/next_batch.sql");

/// How long a write waits for another connection's lock (tern-inspect reading, say).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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
}

/// The SDK's SQLite buffer.
pub struct Store {
    conn: Connection,
    install_id: String,
    next_seq: u64,
    pending: Pending,
}

impl Store {
    /// Opens (creating or upgrading) the buffer at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = Connection::open(path)?;
        setup(&conn)?;
        create_or_upgrade(&mut conn)?;
        let install_id = match meta_get(&conn, "install_id")? {
            Some(id) => id,
            None => {
                let id = Uuid::now_v7().to_string();
                meta_set(&conn, "install_id", &id)?;
                id
            }
        };
        let stored_next: u64 = meta_get(&conn, "next_seq")?
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let max_seq: u64 =
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?;
        let pending = conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0), COALESCE(SUM(batch_id IS NULL), 0) FROM events",
            [],
            |r| {
                Ok(Pending {
                    events: r.get(0)?,
                    bytes: r.get(1)?,
                    unbatched_events: r.get(2)?,
                })
            },
        )?;
        Ok(Self {
            conn,
            install_id,
            next_seq: stored_next.max(max_seq + 1),
            pending,
        })
    }

    /// The install's stable id.
    pub fn install_id(&self) -> &str {
        &self.install_id
    }

    /// The sequence number the next tracked event gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// What waits in the buffer.
    pub fn pending(&self) -> Pending {
        self.pending
    }

    /// Stores `events` in one transaction (group commit).
    pub fn insert_events(&mut self, events: &[StoredEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
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
        meta_set(&tx, "next_seq", &next_seq.to_string())?;
        tx.commit()?;
        self.next_seq = next_seq;
        let n = events.len() as u64;
        self.pending.events += n;
        self.pending.unbatched_events += n;
        self.pending.bytes += bytes;
        Ok(())
    }

    /// The batch to send next: the oldest one already cut (a retry), if any.
    pub fn oldest_batch(&self) -> Result<Option<BatchRow>> {
        let mut stmt = self.conn.prepare_cached(NEXT_BATCH)?;
        let row = stmt
            .query_row([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    BatchRow {
                        batch_id: Uuid::nil(),
                        context: r.get(1)?,
                        event_count: r.get(2)?,
                        bytes: r.get(3)?,
                        attempts: r.get(4)?,
                        next_attempt_ms: r.get(5)?,
                    },
                ))
            })
            .optional()?;
        row.map(|(id, mut batch)| {
            batch.batch_id = parse_uuid(&id)?;
            Ok(batch)
        })
        .transpose()
    }

    /// Cuts a new batch from the oldest unbatched events, at most `max_events` of them and at
    /// most `max_bytes` (but always at least one event). Returns `None` when nothing waits.
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
        let Some(first) = first else {
            return Ok(None);
        };
        let batch_id = Uuid::now_v7();
        tx.execute(
            "INSERT INTO batches (batch_id, created_at_ms, context, event_count, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![batch_id.to_string(), now_ms, context, count, bytes],
        )?;
        let updated = tx.execute(
            "UPDATE events SET batch_id = ?1 WHERE seq BETWEEN ?2 AND ?3 AND batch_id IS NULL",
            params![batch_id.to_string(), first, last],
        )?;
        debug_assert_eq!(updated as u64, count);
        tx.commit()?;
        self.pending.unbatched_events = self.pending.unbatched_events.saturating_sub(count);
        Ok(Some(BatchRow {
            batch_id,
            context: context.to_owned(),
            event_count: count,
            bytes,
            attempts: 0,
            next_attempt_ms: 0,
        }))
    }

    /// The wire JSON of a batch's events, in `seq` order: exactly what every attempt sends.
    pub fn batch_bodies(&self, batch_id: Uuid) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(BATCH_EVENTS)?;
        let rows = stmt.query_map([batch_id.to_string()], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Forgets an acknowledged batch and its events.
    pub fn delete_batch(&mut self, batch: &BatchRow) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let id = batch.batch_id.to_string();
        tx.execute("DELETE FROM events WHERE batch_id = ?1", [&id])?;
        tx.execute("DELETE FROM batches WHERE batch_id = ?1", [&id])?;
        tx.commit()?;
        self.pending.events = self.pending.events.saturating_sub(batch.event_count);
        self.pending.bytes = self.pending.bytes.saturating_sub(batch.bytes);
        Ok(())
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
    conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")?;
    Ok(())
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
        upgrade_from(&tx, version)?;
    }
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Upgrades a database of schema `version` (older than [`VERSION`]) one step at a time.
// One arm per old version is added as the schema evolves.
#[allow(clippy::match_single_binding)]
fn upgrade_from(_conn: &Connection, version: i64) -> Result<()> {
    match version {
        // Version 1 is the first schema: nothing is older.
        _ => Err(Error::Config(format!(
            "no upgrade from schema version {version}"
        ))),
    }
}

fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>> {
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
mod tests {
    use super::*;

    fn event(seq: u64) -> StoredEvent {
        StoredEvent {
            seq,
            event_id: Uuid::now_v7(),
            name: "e".into(),
            created_at_ms: 0,
            body: format!("{{\"seq\":{seq}}}"),
        }
    }

    #[test]
    fn counts_survive_reopen_and_batches_are_stable() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.db");
        let install_id;
        {
            let mut store = Store::open(&path)?;
            install_id = store.install_id().to_owned();
            store.insert_events(&(1..=10).map(event).collect::<Vec<_>>())?;
            let batch = store.cut_batch(4, usize::MAX, "{}", 1)?.expect("a batch");
            assert_eq!(batch.event_count, 4);
            assert_eq!(store.pending().unbatched_events, 6);
        }
        let mut store = Store::open(&path)?;
        assert_eq!(store.install_id(), install_id);
        assert_eq!(store.next_seq(), 11);
        assert_eq!(store.pending().events, 10);
        assert_eq!(store.pending().unbatched_events, 6);
        let batch = store.oldest_batch()?.expect("the batch cut before");
        let bodies = store.batch_bodies(batch.batch_id)?;
        assert_eq!(bodies, (1..=4).map(|s| event(s).body).collect::<Vec<_>>());
        store.delete_batch(&batch)?;
        assert_eq!(store.pending().events, 6);
        assert!(store.oldest_batch()?.is_none());
        Ok(())
    }

    #[test]
    fn batches_respect_the_byte_limit_but_take_at_least_one_event() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let mut store = Store::open(&dir.path().join("t.db"))?;
        store.insert_events(&(1..=3).map(event).collect::<Vec<_>>())?;
        let one = store.cut_batch(10, 1, "{}", 1)?.expect("a batch");
        assert_eq!(one.event_count, 1);
        let rest = store.cut_batch(10, 1 << 20, "{}", 1)?.expect("a batch");
        assert_eq!(rest.event_count, 2);
        assert!(store.cut_batch(10, 1 << 20, "{}", 1)?.is_none());
        Ok(())
    }

    #[test]
    fn next_seq_does_not_reuse_numbers_of_delivered_events() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.db");
        {
            let mut store = Store::open(&path)?;
            store.insert_events(&(1..=3).map(event).collect::<Vec<_>>())?;
            let batch = store.cut_batch(10, usize::MAX, "{}", 1)?.expect("a batch");
            store.delete_batch(&batch)?;
        }
        assert_eq!(Store::open(&path)?.next_seq(), 4);
        Ok(())
    }
}
