//! The buffer's schema: its version, the SQL that creates it and the upgrades from older
//! versions (`upgrade_from`), the connection's settings, and the keys of the `meta` table.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::error::{Error, Result};

/// Current schema version (`PRAGMA user_version`). Bump it, add an arm to [`upgrade_from`] and a
/// migration test with an old-schema fixture whenever `sql/schema.sql` changes.
pub const VERSION: i64 = 3;

const SCHEMA: &str = include_str!("../../sql/schema.sql");
const UPGRADE_V1_TO_V2: &str = include_str!("../../sql/upgrade_v1_to_v2.sql");
const UPGRADE_V2_TO_V3: &str = include_str!("../../sql/upgrade_v2_to_v3.sql");

/// How long a write waits for another connection's lock (tern-inspect reading, say).
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes of WAL file kept after a checkpoint resets it; beyond, the file is truncated, so a
/// burst does not leave a large WAL on the device's disk.
const WAL_SIZE_LIMIT: u64 = 4 * 1024 * 1024;

/// Keys of the `meta` table. Those of `identity::IDENTITY_KEYS` are kept in the identity file
/// instead (see [`super::Store::meta`]).
pub mod meta_key {
    /// The install's stable id (UUID v7); also the identity file's.
    pub const INSTALL_ID: &str = "install_id";
    /// The `seq` the next stored event gets.
    pub const NEXT_SEQ: &str = "next_seq";
    /// The user id of `identify()`; "" for none.
    pub const USER_ID: &str = "user_id";
    /// The super-properties, a JSON object.
    pub const SUPER_PROPERTIES: &str = "super_properties";
    /// The opt-out choice: "1" opted out, "0" (or none) collecting.
    pub const OPT_OUT: &str = "opt_out";
    /// The current session's id.
    pub const SESSION_ID: &str = "session_id";
    /// When the current session last tracked an event, ms since the Unix epoch.
    pub const SESSION_LAST_ACTIVITY_MS: &str = "session_last_activity_ms";
    /// Where the last corrupt buffer was moved aside, for QA.
    pub const RECOVERED_FROM: &str = "recovered_from";
    /// What the last upload attempt ended with, so that a backoff from connectivity failures
    /// can still be skipped after the app restarts.
    pub const UPLOAD_LAST_FAILURE: &str = "upload_last_failure";
}

pub(super) fn open_connection(path: &Path) -> Result<Connection> {
    let mut conn = Connection::open(path)?;
    setup(&conn)?;
    create_or_upgrade(&mut conn)?;
    // A cheap read of every table we use: a damaged header or schema fails here, at open.
    conn.query_row("SELECT COUNT(*) FROM meta", [], |r| r.get::<_, i64>(0))?;
    Ok(conn)
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

pub(super) fn create_or_upgrade(conn: &mut Connection) -> Result<()> {
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

pub(crate) fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

pub(super) fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )?;
    Ok(())
}
