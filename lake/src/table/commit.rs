//! Commits: rows and the shards' checkpoints (`txn`s) in one table version, and telling a
//! conflict from a storage failure.

use std::collections::HashMap;

use deltalake::arrow::array::RecordBatch;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError};
use serde_json::Value;

use crate::error::{Error, Result};

/// Writes `batch` (if it has rows) and commits it with `txns` and `metadata` as one table
/// version; the table's state moves to that version. Returns the version.
pub async fn commit(
    table: &mut DeltaTable,
    batch: Option<RecordBatch>,
    txns: Vec<Transaction>,
    metadata: HashMap<String, Value>,
) -> Result<u64> {
    let mut actions = Vec::new();
    if let Some(batch) = batch.filter(|b| b.num_rows() > 0) {
        let mut writer = RecordBatchWriter::for_table(table)?;
        writer.write(batch).await?;
        actions.extend(writer.flush().await?.into_iter().map(Action::Add));
    }
    let partition_by = Some(table.snapshot()?.metadata().partition_columns().to_vec());
    let mut metadata = metadata;
    // Delta's `commitInfo.readVersion`: the version this commit was planned on, so the log
    // shows which commits it was rebased over (another writer's, a compaction's).
    metadata.insert("readVersion".to_owned(), Value::from(table.version()));
    let properties = CommitProperties::default()
        .with_application_transactions(txns)
        .with_metadata(metadata);
    let finalized = CommitBuilder::from(properties)
        .with_actions(actions)
        .build(
            Some(table.snapshot()?),
            table.log_store(),
            DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by,
                predicate: None,
            },
        )
        .await?;
    let version = finalized.version();
    table.state = Some(finalized.snapshot());
    Ok(version)
}

/// Whether a commit failed because another writer's commit got in first (and this one must
/// take that in before it tries again), as opposed to a storage failure.
pub fn is_conflict(error: &Error) -> bool {
    matches!(
        error,
        Error::Delta(
            DeltaTableError::Transaction { .. } | DeltaTableError::VersionAlreadyExists(_)
        )
    )
}
