//! A partition's compaction: its groups of small files rewritten and committed in their place,
//! with a `txn` of its own, tried again from a new plan after a failure.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use deltalake::arrow::array::{new_null_array, ArrayRef, RecordBatch, StringArray};
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::prelude::{ParquetReadOptions, SessionContext};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Transaction};
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTable;
use futures_util::StreamExt as _;

use super::plan::{plan, PartitionPlan};
use super::summary::TableSummary;
use crate::error::{Error, Result};
use crate::limits::{
    COMPACT_COMMIT_ATTEMPTS, COMPACT_RETRY_MAX, COMPACT_RETRY_MIN, COMPACT_TARGET_FILE_BYTES,
};
use crate::table;

/// The `txn` app id every compaction commit of `table` carries, so that two compactions of
/// one table conflict. Not under `tern-lake/`, where ingest's stream ids live.
pub fn compaction_app_id(table: &str) -> String {
    format!("tern-lake-compact/{table}")
}

/// Compacts one partition, planning it again after a failed attempt (another compactor's
/// commit, files deleted meanwhile, a storage error), up to [`COMPACT_COMMIT_ATTEMPTS`] times.
pub(super) async fn compact_partition(
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
pub(super) async fn rewrite_and_commit(
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
