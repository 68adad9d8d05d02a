//! Named snapshots of `events`: a table version recorded under a name, with its row count and
//! content checksum ([`crate::checksum`]), so that a training set can be read again, row for
//! row, after more ingest, compaction and VACUUM.
//!
//! A snapshot is the object `_snapshots/NAME.json` in the `events` table's own store (a
//! directory or an S3 prefix): every lake can keep it, it travels with the table, and delta-rs
//! VACUUM skips directories whose name starts with `_`. It is written with a conditional put
//! (create only), so a name is taken once, also by two processes at the same moment.
//!
//! What keeps a snapshot readable (`docs/lake.md`, *Snapshots*): VACUUM keeps the files of every
//! snapshot's version (`compact`), and the log entries of those versions stay, because the first
//! snapshot turns off delta-rs's automatic log cleanup on the table
//! (`delta.enableExpiredLogCleanup = false`, honoured by every writer, ingest's commits, VACUUM's
//! and other engines' alike) and `compact` cleans the log only up to the oldest snapshot.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use deltalake::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, UInt64Array};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::logstore::object_store::{
    self, ObjectStoreExt as _, PutMode, PutOptions, PutPayload,
};
use deltalake::table::config::TablePropertiesExt as _;
use deltalake::{DeltaTable, DeltaTableError, ObjectStore as _, Path};
use futures_util::TryStreamExt as _;
use serde::{Deserialize, Serialize};

use crate::checksum;
use crate::error::{Error, Result};
use crate::limits::SNAPSHOT_NAME_MAX;
use crate::sql::{self, OutputFormat};
use crate::table::{self, EVENTS};

/// The directory of snapshot records inside the `events` table.
pub const SNAPSHOTS_DIR: &str = "_snapshots";

/// The table property that stops delta-rs removing expired log entries after commits.
pub const LOG_CLEANUP_PROPERTY: &str = "delta.enableExpiredLogCleanup";

/// A named snapshot's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Its name.
    pub name: String,
    /// The table it pins (`events`).
    pub table: String,
    /// The table version.
    pub version: u64,
    /// When it was recorded.
    pub created: DateTime<Utc>,
    /// Rows of the table at that version.
    pub rows: u64,
    /// `sha256:…` of the rows ([`checksum::FORMAT`]).
    pub checksum: String,
    /// How the checksum was computed.
    pub checksum_format: String,
}

/// `tern-lake snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    action: SnapshotAction,
}

#[derive(Debug, Subcommand)]
enum SnapshotAction {
    /// Record the latest version of `events` under NAME, with its row count and checksum.
    Create {
        /// The name: letters, digits, `.`, `_` and `-`, starting with a letter or a digit.
        name: String,
        /// Directory or URI of the lake.
        #[arg(long, env = "TERN_LAKE_LAKE")]
        lake: String,
    },
    /// Show the snapshots: name, version, created, rows, checksum.
    List {
        /// Directory or URI of the lake.
        #[arg(long, env = "TERN_LAKE_LAKE")]
        lake: String,
        /// Output: an aligned table, CSV or JSON lines.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Read NAME's version again and compare its row count and checksum with the record.
    Verify {
        /// The snapshot's name.
        name: String,
        /// Directory or URI of the lake.
        #[arg(long, env = "TERN_LAKE_LAKE")]
        lake: String,
    },
}

/// Runs a `tern-lake snapshot` command; its answer goes to stdout.
pub async fn run(args: SnapshotArgs) -> Result<()> {
    match args.action {
        SnapshotAction::Create { name, lake } => {
            let snapshot = create(&lake, &name).await?;
            println!("{}", json_line(&snapshot)?);
        }
        SnapshotAction::List { lake, format } => {
            let snapshots = list(&lake).await?;
            sql::write_batches(
                &mut std::io::stdout().lock(),
                &[as_batch(&snapshots)?],
                format,
            )?;
        }
        SnapshotAction::Verify { name, lake } => {
            let snapshot = verify(&lake, &name).await?;
            println!(
                "{}",
                serde_json::json!({
                    "name": snapshot.name,
                    "version": snapshot.version,
                    "rows": snapshot.rows,
                    "checksum": snapshot.checksum,
                    "verified": true,
                })
            );
        }
    }
    Ok(())
}

fn json_line(snapshot: &Snapshot) -> Result<String> {
    serde_json::to_string(snapshot).map_err(|e| Error::Snapshot(e.to_string()))
}

/// Refuses a name that is not a plain file name.
pub fn check_name(name: &str) -> Result<()> {
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    let starts_well = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric());
    if !plain || !starts_well || name.len() > SNAPSHOT_NAME_MAX {
        return Err(Error::Snapshot(format!(
            "{name:?} is not a snapshot name: use 1 to {SNAPSHOT_NAME_MAX} letters, digits, \
             '.', '_' and '-', starting with a letter or a digit"
        )));
    }
    Ok(())
}

fn record_path(name: &str) -> Path {
    Path::from(format!("{SNAPSHOTS_DIR}/{name}.json"))
}

async fn events(lake: &str) -> Result<DeltaTable> {
    table::open(lake, EVENTS)
        .await?
        .ok_or_else(|| Error::Snapshot(format!("the lake {lake} has no events table yet")))
}

fn store_error(e: object_store::Error) -> Error {
    Error::Delta(DeltaTableError::from(e))
}

/// Every snapshot of the lake, oldest version first.
pub async fn list(lake: &str) -> Result<Vec<Snapshot>> {
    let Some(table) = table::open(lake, EVENTS).await? else {
        return Ok(Vec::new());
    };
    let store = table.object_store();
    let objects: Vec<_> = store
        .list(Some(&Path::from(SNAPSHOTS_DIR)))
        .try_collect()
        .await
        .map_err(store_error)?;
    let mut snapshots = Vec::new();
    for object in objects {
        if object.location.extension() != Some("json") {
            continue;
        }
        let bytes = store
            .get(&object.location)
            .await
            .map_err(store_error)?
            .bytes()
            .await
            .map_err(store_error)?;
        let snapshot: Snapshot = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Snapshot(format!("{} is not a snapshot record: {e}", object.location))
        })?;
        snapshots.push(snapshot);
    }
    snapshots.sort_by(|a, b| (a.version, &a.name).cmp(&(b.version, &b.name)));
    Ok(snapshots)
}

/// The snapshot called `name`.
pub async fn get(lake: &str, name: &str) -> Result<Snapshot> {
    check_name(name)?;
    let table = events(lake).await?;
    match table.object_store().get(&record_path(name)).await {
        Ok(found) => {
            let bytes = found.bytes().await.map_err(store_error)?;
            serde_json::from_slice(&bytes)
                .map_err(|e| Error::Snapshot(format!("the record of {name} is damaged: {e}")))
        }
        Err(object_store::Error::NotFound { .. }) => Err(Error::Snapshot(format!(
            "no snapshot {name} in {lake} (`tern-lake snapshot list` shows them)"
        ))),
        Err(e) => Err(store_error(e)),
    }
}

fn exists_error(existing: &Snapshot) -> Error {
    Error::Snapshot(format!(
        "a snapshot named {} already exists (version {}, created {}); a name is never reused, \
         pick another",
        existing.name,
        existing.version,
        existing.created.to_rfc3339()
    ))
}

/// Records the latest version of `events` as `name`.
pub async fn create(lake: &str, name: &str) -> Result<Snapshot> {
    check_name(name)?;
    // Refused before the rows are read, not only by the conditional put at the end.
    match get(lake, name).await {
        Ok(existing) => return Err(exists_error(&existing)),
        Err(Error::Snapshot(_)) => {}
        Err(e) => return Err(e),
    }
    let mut table = events(lake).await?;
    keep_log_entries(&mut table).await?;
    let version = table
        .version()
        .ok_or_else(|| Error::Snapshot("events has no version yet".into()))?;
    let rows = checksum::of_table(&table).await?;
    let snapshot = Snapshot {
        name: name.to_owned(),
        table: EVENTS.to_owned(),
        version,
        created: Utc::now(),
        rows: rows.rows,
        checksum: rows.checksum,
        checksum_format: checksum::FORMAT.to_owned(),
    };
    let body = serde_json::to_vec_pretty(&snapshot).map_err(|e| Error::Snapshot(e.to_string()))?;
    let put = table
        .object_store()
        .put_opts(
            &record_path(name),
            PutPayload::from(body),
            PutOptions::from(PutMode::Create),
        )
        .await;
    match put {
        Ok(_) => Ok(snapshot),
        Err(object_store::Error::AlreadyExists { .. }) => {
            Err(exists_error(&get(lake, name).await?))
        }
        Err(e) => Err(store_error(e)),
    }
}

/// Turns off delta-rs's log cleanup after commits on `table` (once; `compact` cleans the log
/// instead, up to the oldest snapshot). The table moves to the latest version.
async fn keep_log_entries(table: &mut DeltaTable) -> Result<()> {
    if !table
        .snapshot()?
        .table_config()
        .enable_expired_log_cleanup()
    {
        table.update_state().await?;
        return Ok(());
    }
    // A metadata commit: ingest's next commit conflicts with it, takes it in and tries again.
    let updated = table
        .clone()
        .set_tbl_properties()
        .with_properties(HashMap::from([(
            LOG_CLEANUP_PROPERTY.to_owned(),
            "false".to_owned(),
        )]))
        .await?;
    *table = updated;
    table.update_state().await?;
    Ok(())
}

/// Reads `name`'s version again; its record if rows and checksum still match, an error that
/// says what differs otherwise.
pub async fn verify(lake: &str, name: &str) -> Result<Snapshot> {
    let snapshot = get(lake, name).await?;
    if snapshot.checksum_format != checksum::FORMAT {
        return Err(Error::Snapshot(format!(
            "{name} was recorded with checksum {}, this tern-lake computes {}",
            snapshot.checksum_format,
            checksum::FORMAT
        )));
    }
    let table = at_version(lake, &snapshot).await?;
    let now = checksum::of_table(&table).await?;
    if now.rows != snapshot.rows || now.checksum != snapshot.checksum {
        return Err(Error::Snapshot(format!(
            "{name} (version {}) now reads {} rows with checksum {}, recorded {} rows with \
             checksum {}",
            snapshot.version, now.rows, now.checksum, snapshot.rows, snapshot.checksum
        )));
    }
    Ok(snapshot)
}

/// `events` loaded at the snapshot's version.
pub async fn at_version(lake: &str, snapshot: &Snapshot) -> Result<DeltaTable> {
    let mut table = events(lake).await?;
    table.load_version(snapshot.version).await.map_err(|e| {
        Error::Snapshot(format!(
            "version {} of {} cannot be read: {e}",
            snapshot.version, snapshot.name
        ))
    })?;
    Ok(table)
}

/// The snapshots as rows for `tern-lake snapshot list`.
fn as_batch(snapshots: &[Snapshot]) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("version", DataType::UInt64, false),
        Field::new("created", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("checksum", DataType::Utf8, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            snapshots.iter().map(|s| s.name.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(
            snapshots.iter().map(|s| s.version),
        )),
        Arc::new(StringArray::from_iter_values(snapshots.iter().map(|s| {
            s.created
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        }))),
        Arc::new(Int64Array::from_iter_values(
            snapshots
                .iter()
                .map(|s| i64::try_from(s.rows).unwrap_or(i64::MAX)),
        )),
        Arc::new(StringArray::from_iter_values(
            snapshots.iter().map(|s| s.checksum.as_str()),
        )),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_file_names() {
        for good in [
            "train-2024-05",
            "v1.2_final",
            "A",
            &"x".repeat(SNAPSHOT_NAME_MAX),
        ] {
            check_name(good).unwrap();
        }
        for bad in [
            "",
            ".hidden",
            "-flag",
            "a/b",
            "../x",
            "sp ace",
            "é",
            &"x".repeat(SNAPSHOT_NAME_MAX + 1),
        ] {
            let error = check_name(bad).unwrap_err();
            assert!(
                error.to_string().contains("not a snapshot name"),
                "{bad}: {error}"
            );
        }
    }
}
