//! VACUUM and the removal of expired log entries, both sparing what named snapshots read.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use deltalake::logstore::object_store::ObjectStoreExt as _;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::table::config::TablePropertiesExt as _;
use deltalake::{DeltaTable, Path};

use crate::error::{Error, Result};
use crate::limits::ORPHAN_MIN_AGE;

/// VACUUM: files removed longer ago than `retention` (except those `keep`'s versions read),
/// then files no commit referenced, once [`ORPHAN_MIN_AGE`] old. Returns the table and how
/// many files were (or, dry, would be) deleted.
///
/// Each pass is planned dry first: delta-rs counts a file an earlier VACUUM already deleted
/// as deleted again while its tombstone stays in the log (the table's
/// `delta.deletedFileRetentionDuration`), so the files that still exist are counted here, and
/// a pass with nothing to delete is not run (it would only add two commits).
pub(super) async fn vacuum(
    table: DeltaTable,
    retention: Duration,
    keep: &[u64],
    dry_run: bool,
) -> Result<(DeltaTable, usize)> {
    let store = table.object_store();
    let mut table = table;
    let mut removed_before: HashSet<String> = HashSet::new();
    let mut deleted = 0;
    for (mode, keep_for) in [
        (VacuumMode::Lite, retention),
        (VacuumMode::Full, retention.max(ORPHAN_MIN_AGE)),
    ] {
        let period = chrono::Duration::from_std(keep_for)
            .map_err(|e| Error::Config(format!("retention-hours: {e}")))?;
        let builder = |table: DeltaTable, dry: bool| {
            let builder = table
                .vacuum()
                .with_mode(mode.clone())
                .with_retention_period(period)
                // The retention is the operator's choice (`--retention-hours`), not the table's.
                .with_enforce_retention_duration(false)
                .with_dry_run(dry);
            if keep.is_empty() {
                builder
            } else {
                builder.with_keep_versions(keep)
            }
        };
        let (planned_on, plan) = builder(table, true).await?;
        table = planned_on;
        let mut present = 0;
        for file in &plan.files_deleted {
            if removed_before.contains(file) {
                continue;
            }
            let path = Path::parse(file).unwrap_or_else(|_| Path::from(file.as_str()));
            match store.head(&path).await {
                Ok(_) => present += 1,
                Err(deltalake::ObjectStoreError::NotFound { .. }) => {}
                Err(e) => return Err(Error::Delta(e.into())),
            }
        }
        removed_before.extend(plan.files_deleted);
        deleted += present;
        if present > 0 && !dry_run {
            table = builder(table, false).await?.0;
        }
    }
    Ok((table, deleted))
}

/// Removes log entries older than the table's log retention, but never those a named
/// snapshot's version needs: up to the last checkpoint at or before the oldest snapshot.
pub(super) async fn clean_logs(table: &DeltaTable, keep: &[u64]) -> Result<usize> {
    let Some(latest) = table.version() else {
        return Ok(0);
    };
    let oldest_kept = keep.iter().min().map_or(latest, |v| (*v).min(latest));
    let retention = table.snapshot()?.table_config().log_retention_duration();
    let cutoff = Utc::now().timestamp_millis()
        - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX / 2);
    Ok(deltalake::checkpoints::cleanup_expired_logs_for(
        oldest_kept,
        table.log_store().as_ref(),
        cutoff,
        None,
    )
    .await?)
}
