//! Unit tests of `compact`: bin-packing, and two compactions planned from one version.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use deltalake::kernel::Remove;
use deltalake::{DeltaTable, Path};

use super::plan::{bin_pack, plan, Candidate};
use super::rewrite::{compact_partition, rewrite_and_commit};
use super::summary::TableSummary;
use crate::query;
use crate::table::{self, Provenance, RejectedRow, REJECTED};

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
