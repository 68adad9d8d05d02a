//! `tern-lake compact`: the lake's upkeep, safe to run while ingest runs.
//!
//! 1. **Compaction.** Ingest commits every few seconds, so each partition collects thousands of
//!    small files, and late events keep adding files to old days. Every partition with two or
//!    more small files (below [`COMPACT_SMALL_FILE_BYTES`]), whatever its day, has them
//!    bin-packed into files of up to [`COMPACT_TARGET_FILE_BYTES`], one commit per partition:
//!    `remove` the small files and `add` the new ones, both with `dataChange = false`, as
//!    delta-rs's OPTIMIZE commits them (operation `OPTIMIZE`).
//! 2. **VACUUM** deletes the files that commits removed longer ago than the retention
//!    (delta-rs `VacuumMode::Lite`), keeping every file a named snapshot's version reads
//!    (`with_keep_versions`), then the files no commit ever referenced once they are
//!    [`ORPHAN_MIN_AGE`] old (`VacuumMode::Full`).
//! 3. **Expired log entries** are removed up to the oldest named snapshot's version only, so
//!    that every snapshot stays readable by time travel (`docs/lake.md`, *Snapshots*).
//!
//! Why not delta-rs's `OptimizeBuilder` itself: in deltalake 1.1.3 its commit drops the
//! application transactions given to it, and the conflict checker ignores removes with
//! `dataChange = false`. Two OPTIMIZE runs planned from one version then both commit, and the
//! rows of the files both rewrote are in the table twice (the test
//! `delta_rs_optimize_twice_from_one_version_duplicates_rows` shows it). Each compaction commit
//! here carries a `txn` of its own ([`compaction_app_id`]): a second compactor's commit then
//! conflicts, and it plans that partition again from the table as it is.
//!
//! Against ingest: an ingest commit only adds files and carries the stream's `txn`s; a
//! compaction commit reads no predicate and carries another `txn`. delta-rs's conflict check
//! lets either land after the other (it rebases the commit onto the newer version), so neither
//! waits for nor loses the other's rows; only a changed table metadata makes a compaction
//! commit fail, and that is tried again ([`COMPACT_COMMIT_ATTEMPTS`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use clap::Args;
use deltalake::arrow::array::{new_null_array, ArrayRef, RecordBatch, StringArray};
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::prelude::{ParquetReadOptions, SessionContext};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Remove, Transaction};
use deltalake::logstore::object_store::ObjectStoreExt as _;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::protocol::DeltaOperation;
use deltalake::table::config::TablePropertiesExt as _;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, Path};
use futures_util::StreamExt as _;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::limits::{
    COMPACT_COMMIT_ATTEMPTS, COMPACT_RETRY_MAX, COMPACT_RETRY_MIN, COMPACT_SMALL_FILE_BYTES,
    COMPACT_TARGET_FILE_BYTES, DEFAULT_VACUUM_RETENTION, ORPHAN_MIN_AGE,
};
use crate::query;
use crate::snapshot;
use crate::table::{self, EVENTS, GAPS, RAW, REJECTED};

/// The tables `compact` looks after (those that exist).
pub const TABLES: [&str; 4] = [EVENTS, GAPS, REJECTED, RAW];

/// Flags of `tern-lake compact`.
#[derive(Debug, Args)]
pub struct CompactArgs {
    /// Directory or URI of the lake.
    #[arg(long, env = "TERN_LAKE_LAKE")]
    pub lake: String,
    /// VACUUM deletes files that commits removed longer ago than this. A query, a time travel
    /// or a `snapshot create` running longer than this can lose its files: keep the default
    /// unless nothing else reads the lake (0 in tests).
    #[arg(long, default_value_t = DEFAULT_VACUUM_RETENTION.as_secs() / 3600)]
    pub retention_hours: u64,
    /// Only plan: print what would be compacted and deleted, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// What `compact` did to one table (with `--dry-run`, what it would do).
#[derive(Debug, Default, Clone, Serialize)]
pub struct TableSummary {
    /// The table's name.
    pub table: String,
    /// Table version before.
    pub version_before: u64,
    /// Table version after compaction, VACUUM and their commits.
    pub version_after: u64,
    /// Data files of the latest version before.
    pub files_before: usize,
    /// Data files of the latest version after (new ingest files included).
    pub files_after: usize,
    /// Partitions of the table.
    pub partitions: usize,
    /// Most files in one partition, before.
    pub max_files_per_partition_before: usize,
    /// Most files in one partition, after.
    pub max_files_per_partition_after: usize,
    /// Partitions whose small files were compacted.
    pub partitions_compacted: usize,
    /// Their keys (`event_date=2025-01-31`): old days that late events added files to too.
    pub compacted_partitions: Vec<String>,
    /// Small files replaced by compaction.
    pub files_compacted: usize,
    /// Bytes of those files.
    pub bytes_compacted: u64,
    /// Files compaction wrote.
    pub files_written: usize,
    /// Compaction commits.
    pub commits: usize,
    /// Commits (ingest's) that landed between a compaction's plan and its commit, which
    /// delta-rs checked and rebased the compaction commit onto, summed over its commits.
    pub rebased: u64,
    /// Compaction attempts that failed and were planned again.
    pub retries: u64,
    /// Files VACUUM deleted.
    pub vacuum_files_removed: usize,
    /// Expired log entries removed.
    pub log_files_removed: usize,
    /// Versions whose files VACUUM kept for named snapshots.
    pub kept_versions: Vec<u64>,
}

/// What `compact` did to the lake.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Nothing was changed.
    pub dry_run: bool,
    /// The VACUUM retention used.
    pub retention_hours: u64,
    /// One entry per table that exists.
    pub tables: Vec<TableSummary>,
}

/// The `txn` app id every compaction commit of `table` carries, so that two compactions of
/// one table conflict. Not under `tern-lake/`, where ingest's stream ids live.
pub fn compaction_app_id(table: &str) -> String {
    format!("tern-lake-compact/{table}")
}

/// Runs `compact` over every table of the lake.
pub async fn run(args: &CompactArgs) -> Result<Summary> {
    let retention = Duration::from_secs(args.retention_hours.saturating_mul(3600));
    let kept: Vec<u64> = snapshot::list(&args.lake)
        .await?
        .iter()
        .map(|s| s.version)
        .collect();
    let mut tables = Vec::new();
    for name in TABLES {
        let Some(table) = table::open(&args.lake, name).await? else {
            continue;
        };
        let keep = if name == EVENTS {
            kept.clone()
        } else {
            Vec::new()
        };
        tables.push(maintain(table, name, retention, &keep, args.dry_run).await?);
    }
    Ok(Summary {
        dry_run: args.dry_run,
        retention_hours: args.retention_hours,
        tables,
    })
}

/// Compaction, VACUUM and log cleanup of one table.
async fn maintain(
    mut table: DeltaTable,
    name: &str,
    retention: Duration,
    keep: &[u64],
    dry_run: bool,
) -> Result<TableSummary> {
    let mut summary = TableSummary {
        table: name.to_owned(),
        version_before: version(&table),
        kept_versions: keep.to_vec(),
        ..TableSummary::default()
    };
    let (plans, before) = plan(&table, None)?;
    summary.files_before = before.files;
    summary.partitions = before.partitions;
    summary.max_files_per_partition_before = before.max_per_partition;
    if dry_run {
        for p in &plans {
            summary.partitions_compacted += 1;
            summary.compacted_partitions.push(p.key.clone());
            for bin in &p.bins {
                summary.files_compacted += bin.len();
                summary.bytes_compacted += bin.iter().map(|f| f.size).sum::<u64>();
                summary.files_written += 1;
            }
        }
    } else {
        let ctx = query::new_session()?;
        for p in plans {
            compact_partition(&ctx, &mut table, name, p, &mut summary).await?;
        }
    }
    let (mut table, removed) = vacuum(table, retention, keep, dry_run).await?;
    summary.vacuum_files_removed = removed;
    if !dry_run {
        summary.log_files_removed = clean_logs(&table, keep).await?;
    }
    table.update_state().await?;
    let (_, after) = plan(&table, None)?;
    summary.files_after = after.files;
    summary.max_files_per_partition_after = after.max_per_partition;
    summary.version_after = version(&table);
    Ok(summary)
}

fn version(table: &DeltaTable) -> u64 {
    table.version().unwrap_or(0)
}

/// A small file to compact.
#[derive(Debug, Clone)]
struct Candidate {
    path: Path,
    size: u64,
    modified: i64,
    remove: Remove,
}

/// One partition's compaction: its values and groups of files, each rewritten as one file.
#[derive(Debug, Clone)]
struct PartitionPlan {
    /// `column=value/...`, as in the table's directories.
    key: String,
    values: HashMap<String, Option<String>>,
    bins: Vec<Vec<Candidate>>,
}

/// Files of a table version.
#[derive(Debug, Clone, Copy, Default)]
struct FileCounts {
    files: usize,
    partitions: usize,
    max_per_partition: usize,
}

/// A partition's values, its small files, and how many files it has in all.
type PartitionFiles = (HashMap<String, Option<String>>, Vec<Candidate>, usize);

/// The partitions of `table` (or only the one whose key is `only`) with two or more small
/// files, their small files in groups of at most the target size (oldest first).
fn plan(table: &DeltaTable, only: Option<&str>) -> Result<(Vec<PartitionPlan>, FileCounts)> {
    let state = table.snapshot()?;
    let partition_columns = state.metadata().partition_columns().to_vec();
    // Per partition key: its values, its small files, and how many files it has.
    let mut partitions: BTreeMap<String, PartitionFiles> = BTreeMap::new();
    let mut counts = FileCounts::default();
    for file in state.log_data() {
        counts.files += 1;
        let values = file.partition_values_map();
        let key = partition_key(&partition_columns, &values);
        let entry = partitions
            .entry(key)
            .or_insert_with(|| (values, Vec::new(), 0));
        entry.2 += 1;
        let size = u64::try_from(file.size()).unwrap_or(0);
        if size < COMPACT_SMALL_FILE_BYTES {
            entry.1.push(Candidate {
                path: file.object_store_path(),
                size,
                modified: file.modification_time(),
                remove: file.remove_action(false),
            });
        }
    }
    counts.partitions = partitions.len();
    counts.max_per_partition = partitions.values().map(|p| p.2).max().unwrap_or(0);
    let plans = partitions
        .into_iter()
        .filter(|(key, _)| only.is_none_or(|o| o == key))
        .filter_map(|(key, (values, mut files, _))| {
            files.sort_by(|a, b| (a.modified, &a.path).cmp(&(b.modified, &b.path)));
            let bins = bin_pack(files, COMPACT_TARGET_FILE_BYTES);
            (!bins.is_empty()).then_some(PartitionPlan { key, values, bins })
        })
        .collect();
    Ok((plans, counts))
}

/// `files` in order, in groups of at most `target` bytes; groups of one file are left out (a
/// rewrite would change nothing).
fn bin_pack(files: Vec<Candidate>, target: u64) -> Vec<Vec<Candidate>> {
    let mut bins: Vec<Vec<Candidate>> = Vec::new();
    let mut current: Vec<Candidate> = Vec::new();
    let mut size = 0;
    for file in files {
        if !current.is_empty() && size + file.size > target {
            bins.push(std::mem::take(&mut current));
            size = 0;
        }
        size += file.size;
        current.push(file);
    }
    bins.push(current);
    bins.retain(|b| b.len() > 1);
    bins
}

fn partition_key(columns: &[String], values: &HashMap<String, Option<String>>) -> String {
    columns
        .iter()
        .map(|c| {
            let value = values.get(c).cloned().flatten();
            format!(
                "{c}={}",
                value.as_deref().unwrap_or("__HIVE_DEFAULT_PARTITION__")
            )
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Compacts one partition, planning it again after a failed attempt (another compactor's
/// commit, files deleted meanwhile, a storage error), up to [`COMPACT_COMMIT_ATTEMPTS`] times.
async fn compact_partition(
    ctx: &SessionContext,
    table: &mut DeltaTable,
    name: &str,
    mut plan_now: PartitionPlan,
    summary: &mut TableSummary,
) -> Result<()> {
    let mut delay = COMPACT_RETRY_MIN;
    let mut attempt = 1;
    loop {
        match rewrite_and_commit(ctx, table, name, &plan_now).await {
            Ok((rebased, written)) => {
                summary.partitions_compacted += 1;
                summary.compacted_partitions.push(plan_now.key.clone());
                summary.commits += 1;
                summary.rebased += rebased;
                summary.files_written += written;
                for bin in &plan_now.bins {
                    summary.files_compacted += bin.len();
                    summary.bytes_compacted += bin.iter().map(|f| f.size).sum::<u64>();
                }
                tracing::info!(
                    table = name,
                    partition = %plan_now.key,
                    files = plan_now.bins.iter().map(Vec::len).sum::<usize>(),
                    written,
                    rebased,
                    "compacted"
                );
                return Ok(());
            }
            Err(error) if attempt < COMPACT_COMMIT_ATTEMPTS => {
                summary.retries += 1;
                tracing::warn!(
                    table = name,
                    partition = %plan_now.key,
                    %error,
                    conflict = table::is_conflict(&error),
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    "compaction failed; planning the partition again"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(COMPACT_RETRY_MAX);
                attempt += 1;
                table.update_state().await?;
                match plan(table, Some(&plan_now.key))?.0.pop() {
                    Some(again) => plan_now = again,
                    // Another compactor did it.
                    None => return Ok(()),
                }
            }
            Err(error) => {
                return Err(Error::Compact(format!(
                    "compaction of {name} partition {} failed {attempt} times, last: {error}; \
                     its files are as they were, run compact again",
                    plan_now.key
                )))
            }
        }
    }
}

/// Rewrites each group of the plan as one file and commits them in place of the small files;
/// the table moves to the new version. Returns how many commits it was rebased over and the
/// number of files written.
async fn rewrite_and_commit(
    ctx: &SessionContext,
    table: &mut DeltaTable,
    name: &str,
    plan: &PartitionPlan,
) -> Result<(u64, usize)> {
    table.update_datafusion_session(&ctx.state())?;
    let mut writer =
        RecordBatchWriter::for_table(table)?.with_target_file_size(COMPACT_TARGET_FILE_BYTES);
    let schema = writer.arrow_schema();
    let log_store = table.log_store();
    let mut actions = Vec::new();
    for bin in &plan.bins {
        let uris: Vec<String> = bin.iter().map(|f| log_store.to_uri(&f.path)).collect();
        let mut stream = ctx
            .read_parquet(uris, ParquetReadOptions::default())
            .await?
            .execute_stream()
            .await?;
        while let Some(batch) = stream.next().await {
            writer
                .write(with_partition(&batch?, &schema, &plan.values)?)
                .await?;
        }
        for mut add in writer.flush().await? {
            add.data_change = false;
            actions.push(Action::Add(add));
        }
    }
    let written = actions.len();
    actions.extend(
        plan.bins
            .iter()
            .flatten()
            .map(|f| Action::Remove(f.remove.clone())),
    );
    let now_ms = Utc::now().timestamp_millis();
    let read_version = table.version().unwrap_or(0);
    let properties = CommitProperties::default()
        .with_application_transaction(Transaction {
            app_id: compaction_app_id(name),
            version: now_ms,
            last_updated: Some(now_ms),
        })
        .with_metadata([("readVersion".to_owned(), serde_json::json!(read_version))]);
    let operation = DeltaOperation::Optimize {
        predicate: Some(plan.key.clone()),
        target_size: COMPACT_TARGET_FILE_BYTES as i64,
    };
    let finalized = CommitBuilder::from(properties)
        .with_actions(actions)
        .build(Some(table.snapshot()?), table.log_store(), operation)
        .await?;
    // Commits (ingest's) landed between the plan and this commit: delta-rs checked each and
    // rebased this one onto them.
    let rebased = finalized.version().saturating_sub(read_version + 1);
    table.state = Some(finalized.snapshot());
    Ok((rebased, written))
}

/// `batch` (a data file's columns) with the partition's values added, in `schema`'s order and
/// types.
fn with_partition(
    batch: &RecordBatch,
    schema: &SchemaRef,
    values: &HashMap<String, Option<String>>,
) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let column: ArrayRef = match values.get(field.name()) {
                Some(Some(value)) => Arc::new(StringArray::from(vec![value.as_str(); rows])),
                Some(None) => return Ok(new_null_array(field.data_type(), rows)),
                None => batch.column_by_name(field.name()).cloned().ok_or_else(|| {
                    Error::Compact(format!("a data file has no column {}", field.name()))
                })?,
            };
            Ok(deltalake::arrow::compute::cast(&column, field.data_type())?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// VACUUM: files removed longer ago than `retention` (except those `keep`'s versions read),
/// then files no commit referenced, once [`ORPHAN_MIN_AGE`] old. Returns the table and how
/// many files were (or, dry, would be) deleted.
///
/// Each pass is planned dry first: delta-rs counts a file an earlier VACUUM already deleted
/// as deleted again while its tombstone stays in the log (the table's
/// `delta.deletedFileRetentionDuration`), so the files that still exist are counted here, and
/// a pass with nothing to delete is not run (it would only add two commits).
async fn vacuum(
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
async fn clean_logs(table: &DeltaTable, keep: &[u64]) -> Result<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Provenance, RejectedRow};

    /// A `rejected` table under a fresh lake with `commits` commits of 5 rows, all in today's
    /// partition: as many small files.
    async fn small_files(commits: usize) -> (tempfile::TempDir, DeltaTable) {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().to_str().unwrap().to_owned();
        let mut table = table::open_rejected(&lake).await.unwrap();
        for c in 0..commits {
            let rows: Vec<RejectedRow> = (0..5)
                .map(|i| RejectedRow {
                    from: Provenance {
                        shard_id: Arc::from("shardId-000000000000"),
                        sequence_number: Arc::from(format!("{}", c * 5 + i).as_str()),
                        sub_sequence: None,
                        arrived_at: Utc::now(),
                    },
                    reason: "not_json",
                    message: "test".into(),
                    data: vec![1, 2, 3],
                    ingested_at: None,
                })
                .collect();
            let batch = table::rejected_batch(&rows, Utc::now()).unwrap();
            table::commit(&mut table, Some(batch), Vec::new(), HashMap::new())
                .await
                .unwrap();
        }
        (dir, table)
    }

    async fn rows(table: &DeltaTable) -> i64 {
        let mut table = table.clone();
        table.update_state().await.unwrap();
        let ctx = query::new_session().unwrap();
        query::register(&ctx, "t", &table).await.unwrap();
        let batches = query::collect(&ctx, "SELECT count(*) FROM t")
            .await
            .unwrap();
        batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<deltalake::arrow::array::Int64Array>()
            .unwrap()
            .value(0)
    }

    fn file_count(table: &DeltaTable) -> usize {
        table.snapshot().unwrap().log_data().into_iter().count()
    }

    #[tokio::test]
    async fn two_compactions_planned_from_one_version_never_both_land() {
        let (_dir, table) = small_files(6).await;
        let (plans, counts) = plan(&table, None).unwrap();
        assert_eq!(counts.files, 6);
        assert_eq!(plans.len(), 1);
        let ctx = query::new_session().unwrap();
        let mut first = table.clone();
        let mut second = table.clone();
        rewrite_and_commit(&ctx, &mut first, REJECTED, &plans[0])
            .await
            .unwrap();
        let error = rewrite_and_commit(&ctx, &mut second, REJECTED, &plans[0])
            .await
            .unwrap_err();
        assert!(table::is_conflict(&error), "{error}");
        assert_eq!(rows(&table).await, 30, "no row twice");
        // The loser plans again from the table as it is: nothing left to do.
        let mut summary = TableSummary::default();
        compact_partition(&ctx, &mut second, REJECTED, plans[0].clone(), &mut summary)
            .await
            .unwrap();
        assert_eq!(summary.retries, 1);
        assert_eq!(summary.commits, 0);
        assert_eq!(file_count(&second), 1);
        assert_eq!(rows(&table).await, 30);
    }

    /// Why `compact` does not call delta-rs's OPTIMIZE (see the module's documentation). If
    /// this fails, delta-rs detects the second OPTIMIZE's conflict now and `compact` could
    /// use `OptimizeBuilder` instead.
    #[tokio::test]
    async fn delta_rs_optimize_twice_from_one_version_duplicates_rows() {
        let (_dir, table) = small_files(4).await;
        let (_, first) = table.clone().optimize().await.unwrap();
        assert_eq!(first.num_files_removed, 4);
        let second = table.clone().optimize().await;
        assert!(second.is_ok(), "delta-rs now refuses the second OPTIMIZE");
        assert_eq!(rows(&table).await, 40, "every row twice");
    }

    fn candidate(size: u64, modified: i64) -> Candidate {
        Candidate {
            path: Path::from(format!("p={modified}/f.parquet")),
            size,
            modified,
            remove: Remove {
                path: String::new(),
                data_change: false,
                deletion_timestamp: None,
                extended_file_metadata: None,
                partition_values: None,
                size: None,
                tags: None,
                deletion_vector: None,
                base_row_id: None,
                default_row_commit_version: None,
            },
        }
    }

    #[test]
    fn bins_stay_under_the_target_and_single_files_are_left_alone() {
        let bins = bin_pack(
            vec![
                candidate(40, 1),
                candidate(40, 2),
                candidate(40, 3),
                candidate(90, 4),
                candidate(5, 5),
            ],
            100,
        );
        let sizes: Vec<Vec<u64>> = bins
            .iter()
            .map(|b| b.iter().map(|c| c.size).collect())
            .collect();
        // 40+40 | 40 alone (dropped) | 90+5 would be 95: one group.
        assert_eq!(sizes, vec![vec![40, 40], vec![90, 5]]);
        assert!(bin_pack(vec![candidate(10, 1)], 100).is_empty());
        assert!(bin_pack(Vec::new(), 100).is_empty());
    }
}
