//! The `compact` command: its flags, and each table's compaction, VACUUM and log cleanup in
//! turn.

use std::time::Duration;

use clap::Args;
use deltalake::DeltaTable;

use super::plan::plan;
use super::rewrite::compact_partition;
use super::summary::{Summary, TableSummary};
use super::vacuum::{clean_logs, vacuum};
use crate::error::Result;
use crate::limits::DEFAULT_VACUUM_RETENTION;
use crate::query;
use crate::snapshot;
use crate::table::{self, BATCHES, EVENTS, GAPS, RAW, REJECTED};

/// The tables `compact` looks after (those that exist).
pub const TABLES: [&str; 5] = [EVENTS, GAPS, BATCHES, REJECTED, RAW];

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
