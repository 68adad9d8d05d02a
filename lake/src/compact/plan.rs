//! Planning a compaction: each partition's small files, bin-packed into groups of at most the
//! target size.

use std::collections::{BTreeMap, HashMap};

use deltalake::kernel::Remove;
use deltalake::{DeltaTable, Path};

use crate::error::Result;
use crate::limits::{COMPACT_SMALL_FILE_BYTES, COMPACT_TARGET_FILE_BYTES};

/// A small file to compact.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub(super) path: Path,
    pub(super) size: u64,
    pub(super) modified: i64,
    pub(super) remove: Remove,
}

/// One partition's compaction: its values and groups of files, each rewritten as one file.
#[derive(Debug, Clone)]
pub(super) struct PartitionPlan {
    /// `column=value/...`, as in the table's directories.
    pub(super) key: String,
    pub(super) values: HashMap<String, Option<String>>,
    pub(super) bins: Vec<Vec<Candidate>>,
}

/// Files of a table version.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct FileCounts {
    pub(super) files: usize,
    pub(super) partitions: usize,
    pub(super) max_per_partition: usize,
}

/// A partition's values, its small files, and how many files it has in all.
type PartitionFiles = (HashMap<String, Option<String>>, Vec<Candidate>, usize);

/// The partitions of `table` (or only the one whose key is `only`) with two or more small
/// files, their small files in groups of at most the target size (oldest first).
pub(super) fn plan(
    table: &DeltaTable,
    only: Option<&str>,
) -> Result<(Vec<PartitionPlan>, FileCounts)> {
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
pub(super) fn bin_pack(files: Vec<Candidate>, target: u64) -> Vec<Vec<Candidate>> {
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
