//! What `compact` reports, per table and for the lake.

use serde::Serialize;

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
