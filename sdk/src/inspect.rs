//! Read-only views of an SDK buffer for QA (`tern-inspect`): safe to use while the app runs,
//! thanks to WAL (readers never block the writer, and see a consistent snapshot).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::error::Result;
use crate::store::meta_get;
use crate::store::meta_key;

/// A buffer opened read-only.
pub struct Inspector {
    conn: Connection,
    /// The identity file beside the buffer, when there is one: the truth of the opt-out choice.
    identity: Option<Connection>,
}

/// Everything `tern-inspect DB stats` shows.
#[derive(Debug, Clone, Serialize)]
pub struct BufferStats {
    /// The install id.
    pub install_id: Option<String>,
    /// Schema version of the file.
    pub schema_version: i64,
    /// The next sequence number.
    pub next_seq: Option<u64>,
    /// Whether the user opted out.
    pub opted_out: bool,
    /// Events waiting for acknowledgement.
    pub pending_events: u64,
    /// Their bytes (uncompressed JSON).
    pub pending_bytes: u64,
    /// Of those, events not yet in a batch.
    pub unbatched_events: u64,
    /// Batches cut and not yet acknowledged, oldest first.
    pub batches: Vec<BatchInfo>,
    /// Drop counts by reason.
    pub drops: BTreeMap<String, DropInfo>,
    /// Quarantined batches, newest first.
    pub quarantine: Vec<QuarantineInfo>,
    /// Gap reports not yet acknowledged (`seq` numbers given up on), oldest first.
    pub gaps: Vec<GapInfo>,
    /// Where a corrupt file was moved to, if that ever happened.
    pub recovered_from: Option<String>,
}

/// A batch in flight.
#[derive(Debug, Clone, Serialize)]
pub struct BatchInfo {
    /// Its id.
    pub batch_id: String,
    /// Events in it.
    pub events: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Upload attempts so far.
    pub attempts: u32,
    /// Earliest next attempt.
    pub next_attempt: Option<String>,
    /// The last failure.
    pub last_error: Option<String>,
}

/// Drops of one reason.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DropInfo {
    /// Since the install.
    pub total: u64,
    /// Not yet reported to the collector.
    pub unreported: u64,
}

/// A gap report not yet acknowledged.
#[derive(Debug, Clone, Serialize)]
pub struct GapInfo {
    /// Its id.
    pub gap_id: String,
    /// Why the `seq` numbers were given up on.
    pub reason: String,
    /// The ranges, as `first-last` (or `seq`), comma-separated.
    pub ranges: String,
    /// How many `seq` numbers.
    pub count: u64,
    /// When the SDK gave up on them.
    pub at: Option<String>,
    /// The batch that carries it, or none while it waits for the next batch cut.
    pub batch_id: Option<String>,
}

/// A quarantined batch.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantineInfo {
    /// Its id.
    pub batch_id: String,
    /// When it was quarantined.
    pub quarantined_at: Option<String>,
    /// The collector's answer.
    pub reason: String,
    /// Events in it.
    pub events: u64,
}

/// One buffered event.
#[derive(Debug, Clone, Serialize)]
pub struct EventInfo {
    /// Sequence number.
    pub seq: u64,
    /// Event id.
    pub event_id: String,
    /// Name.
    pub name: String,
    /// Device time of `track()`.
    pub created_at: Option<String>,
    /// Bytes of its JSON.
    pub bytes: u64,
    /// The batch it is in, if any.
    pub batch_id: Option<String>,
}

fn time(ms: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Stored ranges (`[{"first":1,"last":5}]`) as `1-5`; the stored text when it does not parse.
fn ranges_text(json: &str) -> String {
    match serde_json::from_str::<Vec<tern_protocol::SeqRange>>(json) {
        Ok(ranges) => ranges
            .iter()
            .map(|r| {
                if r.first == r.last {
                    r.first.to_string()
                } else {
                    format!("{}-{}", r.first, r.last)
                }
            })
            .collect::<Vec<_>>()
            .join(","),
        Err(_) => json.to_owned(),
    }
}

impl Inspector {
    /// Opens `path` read-only; never creates, upgrades or locks it.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut identity_path = path.as_os_str().to_owned();
        identity_path.push(crate::store::IDENTITY_SUFFIX);
        let identity = Connection::open_with_flags(
            identity_path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ok();
        Ok(Self { conn, identity })
    }

    /// The opt-out choice: from the identity file, or from the buffer of an older SDK.
    fn opt_out(&self) -> Result<Option<String>> {
        let from_identity = self.identity.as_ref().and_then(|conn| {
            conn.query_row(
                "SELECT value FROM identity WHERE key = 'opt_out'",
                [],
                |r| r.get(0),
            )
            .ok()
        });
        match from_identity {
            Some(value) => Ok(Some(value)),
            None => meta_get(&self.conn, meta_key::OPT_OUT),
        }
    }

    /// Buffer, batches, drops and quarantine, read from one snapshot of the database, so the
    /// counts agree with each other even while the app writes.
    pub fn stats(&self) -> Result<BufferStats> {
        let snapshot = self.conn.unchecked_transaction()?;
        let (pending_events, pending_bytes, unbatched_events) = snapshot.query_row(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0), COALESCE(SUM(batch_id IS NULL), 0) FROM events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let batches = snapshot
            .prepare(
                "SELECT batch_id, event_count, bytes, attempts, next_attempt_ms, last_error
                 FROM batches ORDER BY created_at_ms, batch_id",
            )?
            .query_map([], |r| {
                Ok(BatchInfo {
                    batch_id: r.get(0)?,
                    events: r.get(1)?,
                    bytes: r.get(2)?,
                    attempts: r.get(3)?,
                    next_attempt: time(r.get(4)?).filter(|_| r.get::<_, i64>(4).unwrap_or(0) > 0),
                    last_error: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let drops = snapshot
            .prepare("SELECT reason, total, unreported FROM drops ORDER BY reason")?
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    DropInfo {
                        total: r.get(1)?,
                        unreported: r.get(2)?,
                    },
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let quarantine = snapshot
            .prepare(
                "SELECT batch_id, quarantined_at_ms, reason, event_count FROM quarantine
                 ORDER BY quarantined_at_ms DESC",
            )?
            .query_map([], |r| {
                Ok(QuarantineInfo {
                    batch_id: r.get(0)?,
                    quarantined_at: time(r.get(1)?),
                    reason: r.get(2)?,
                    events: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let schema_version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        // Gap reports came with schema 3; an older file (not yet opened by a newer SDK) has none.
        let gaps = if schema_version >= 3 {
            snapshot
                .prepare("SELECT gap_id, reason, ranges, count, at_ms, batch_id FROM gaps ORDER BY gap_id")?
                .query_map([], |r| {
                    Ok(GapInfo {
                        gap_id: r.get(0)?,
                        reason: r.get(1)?,
                        ranges: ranges_text(&r.get::<_, String>(2)?),
                        count: r.get(3)?,
                        at: time(r.get(4)?),
                        batch_id: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?
        } else {
            Vec::new()
        };
        Ok(BufferStats {
            install_id: meta_get(&snapshot, meta_key::INSTALL_ID)?,
            schema_version,
            next_seq: meta_get(&snapshot, meta_key::NEXT_SEQ)?.and_then(|s| s.parse().ok()),
            opted_out: self.opt_out()?.as_deref() == Some("1"),
            pending_events,
            pending_bytes,
            unbatched_events,
            batches,
            drops,
            quarantine,
            gaps,
            recovered_from: meta_get(&snapshot, meta_key::RECOVERED_FROM)?,
        })
    }

    /// Buffered events, oldest first, optionally only those named `name`.
    pub fn list(&self, limit: u64, name: Option<&str>) -> Result<Vec<EventInfo>> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, event_id, name, created_at_ms, bytes, batch_id FROM events
             WHERE ?1 IS NULL OR name = ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(rusqlite::params![name, limit], |r| {
            Ok(EventInfo {
                seq: r.get(0)?,
                event_id: r.get(1)?,
                name: r.get(2)?,
                created_at: time(r.get(3)?),
                bytes: r.get(4)?,
                batch_id: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Writes every quarantined event as one JSON line, `{"batch_id", "reason", "event"}`,
    /// oldest batch first; a batch whose stored events do not parse is one line with its
    /// `events_raw` text instead. Returns how many lines.
    pub fn export_quarantine_jsonl(&self, out: &mut dyn Write) -> Result<u64> {
        let mut stmt = self.conn.prepare(
            "SELECT batch_id, reason, events FROM quarantine ORDER BY quarantined_at_ms, batch_id",
        )?;
        let mut rows = stmt.query([])?;
        let mut n = 0;
        while let Some(row) = rows.next()? {
            let (batch_id, reason, events): (String, String, String) =
                (row.get(0)?, row.get(1)?, row.get(2)?);
            let lines = match serde_json::from_str::<Vec<serde_json::Value>>(&events) {
                Ok(events) => events
                    .into_iter()
                    .map(|event| serde_json::json!({ "batch_id": batch_id, "reason": reason, "event": event }))
                    .collect(),
                Err(_) => vec![
                    serde_json::json!({ "batch_id": batch_id, "reason": reason, "events_raw": events }),
                ],
            };
            for line in lines {
                writeln!(out, "{line}")?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Writes every buffered event as one JSON line (wire format v1), oldest first; returns how
    /// many.
    pub fn export_jsonl(&self, out: &mut dyn Write) -> Result<u64> {
        let mut stmt = self.conn.prepare("SELECT body FROM events ORDER BY seq")?;
        let mut rows = stmt.query([])?;
        let mut n = 0;
        while let Some(row) = rows.next()? {
            let body: String = row.get(0)?;
            writeln!(out, "{body}")?;
            n += 1;
        }
        Ok(n)
    }
}
