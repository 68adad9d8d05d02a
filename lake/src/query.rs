//! DataFusion over the lake's tables: the session analysts query (`tern-lake sql`) and the
//! lookups ingest makes (the dedup window, older duplicates).

use std::sync::Arc;

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::TimestampMicrosecondType;
use deltalake::datafusion::datasource::TableProvider;
use deltalake::datafusion::prelude::{ParquetReadOptions, SessionContext};
use deltalake::DeltaTable;

use crate::dedup::DedupWindow;
use crate::error::Result;
use crate::table::{self, BATCHES, EVENTS, GAPS, RAW, REJECTED};

/// Which version of the tables to read.
#[derive(Debug, Clone, Default)]
pub enum AsOf {
    /// The latest.
    #[default]
    Latest,
    /// A table version (of `events`; `rejected` is read at its latest).
    Version(u64),
    /// The versions current at a time (RFC 3339).
    Timestamp(String),
}

/// A session with JSON functions (`json_get_str(properties, 'screen')`, ...).
pub fn new_session() -> Result<SessionContext> {
    let mut ctx = SessionContext::new();
    datafusion_functions_json::register_all(&mut ctx)?;
    Ok(ctx)
}

/// Registers `table` in `ctx` as `name`, replacing what was there.
pub async fn register(ctx: &SessionContext, name: &str, table: &DeltaTable) -> Result<()> {
    let provider: Arc<dyn TableProvider> = table.table_provider().await?;
    table.update_datafusion_session(&ctx.state())?;
    ctx.deregister_table(name)?;
    ctx.register_table(name, provider)?;
    Ok(())
}

/// A session over the lake under `lake` with `events`, `gaps`, `batches`, `rejected` and `raw`
/// registered (those that exist), as of `as_of` (for `events`; the others at their latest).
pub async fn lake_session(lake: &str, as_of: &AsOf) -> Result<SessionContext> {
    let ctx = new_session()?;
    for name in [EVENTS, GAPS, BATCHES, REJECTED, RAW] {
        let Some(mut table) = table::open(lake, name).await? else {
            continue;
        };
        if name == EVENTS {
            match as_of {
                AsOf::Latest => {}
                AsOf::Version(v) => table.load_version(*v).await?,
                AsOf::Timestamp(t) => {
                    let at = chrono::DateTime::parse_from_rfc3339(t)
                        .map_err(|e| {
                            crate::error::Error::Config(format!(
                                "as-of: {t:?} is not RFC 3339: {e}"
                            ))
                        })?
                        .with_timezone(&chrono::Utc);
                    table.load_with_datetime(at).await?;
                }
            }
        }
        register(&ctx, name, &table).await?;
    }
    Ok(ctx)
}

/// Runs `sql` and collects its result.
pub async fn collect(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    Ok(ctx.sql(sql).await?.collect().await?)
}

/// Fills `window` from `events`: every `event_id` received within it.
pub async fn load_window(
    ctx: &SessionContext,
    events: &DeltaTable,
    window: &mut DedupWindow,
) -> Result<()> {
    if events.get_file_uris()?.next().is_none() {
        return Ok(());
    }
    register(ctx, EVENTS, events).await?;
    let start = window.start(chrono::Utc::now());
    let sql = format!(
        "SELECT event_id, received_at FROM events WHERE received_at >= TIMESTAMP '{}'",
        start.format("%Y-%m-%dT%H:%M:%S%.6fZ")
    );
    window.absorb(id_pairs(collect(ctx, &sql).await?)?);
    Ok(())
}

/// Every `gap_id` in `gaps`.
pub async fn gap_ids(
    ctx: &SessionContext,
    gaps: &DeltaTable,
) -> Result<std::collections::HashSet<u128>> {
    let mut ids = std::collections::HashSet::new();
    if gaps.get_file_uris()?.next().is_none() {
        return Ok(ids);
    }
    register(ctx, GAPS, gaps).await?;
    for batch in collect(ctx, "SELECT DISTINCT gap_id FROM gaps").await? {
        let column = deltalake::arrow::compute::cast(
            batch.column(0),
            &deltalake::arrow::datatypes::DataType::Utf8,
        )?;
        let column = column.as_string::<i32>();
        for i in 0..batch.num_rows() {
            if let Ok(id) = uuid::Uuid::parse_str(column.value(i)) {
                ids.insert(id.as_u128());
            }
        }
    }
    Ok(ids)
}

/// `(event_id, received_at µs)` of every row in the parquet files `uris` (files of `events`).
pub async fn ids_in_files(
    ctx: &SessionContext,
    events: &DeltaTable,
    uris: Vec<String>,
) -> Result<Vec<(String, i64)>> {
    if uris.is_empty() {
        return Ok(Vec::new());
    }
    // The files' store (an S3 bucket, say) must be known to the session.
    events.update_datafusion_session(&ctx.state())?;
    let frame = ctx
        .read_parquet(uris, ParquetReadOptions::default())
        .await?
        .select_columns(&["event_id", "received_at"])?;
    id_pairs(frame.collect().await?)
}

/// `(event_id, received_at µs)` of the rows a query selected (those two columns, in order).
pub fn id_pairs(batches: Vec<RecordBatch>) -> Result<Vec<(String, i64)>> {
    let mut out = Vec::new();
    for batch in batches {
        let ids = deltalake::arrow::compute::cast(
            batch.column(0),
            &deltalake::arrow::datatypes::DataType::Utf8,
        )?;
        let ids = ids.as_string::<i32>();
        let at = deltalake::arrow::compute::cast(
            batch.column(1),
            &deltalake::arrow::datatypes::DataType::Timestamp(
                deltalake::arrow::datatypes::TimeUnit::Microsecond,
                Some("UTC".into()),
            ),
        )?;
        let at = at.as_primitive::<TimestampMicrosecondType>();
        for i in 0..batch.num_rows() {
            if ids.is_valid(i) {
                out.push((ids.value(i).to_owned(), at.value(i)));
            }
        }
    }
    Ok(out)
}

/// The rows of `batch` (rows of `events`) whose shard `worker` reads.
pub fn owned_rows(batch: &RecordBatch, worker: &crate::source::Worker) -> Result<RecordBatch> {
    let batch = table::conform_events(batch)?;
    if worker.count <= 1 {
        return Ok(batch);
    }
    let shard = batch
        .column_by_name("shard_id")
        .map(|c| c.as_string::<i32>().clone())
        .ok_or_else(|| crate::error::Error::Config("events rows without shard_id".into()))?;
    let mask: deltalake::arrow::array::BooleanArray = (0..batch.num_rows())
        .map(|i| Some(worker.owns(shard.value(i))))
        .collect();
    Ok(deltalake::arrow::compute::filter_record_batch(
        &batch, &mask,
    )?)
}

/// The largest value of timestamp `column` in `batch`, in microseconds.
pub fn max_micros(batch: &RecordBatch, column: &str) -> Result<Option<i64>> {
    let Some(values) = batch.column_by_name(column) else {
        return Ok(None);
    };
    let values = deltalake::arrow::compute::cast(
        values,
        &deltalake::arrow::datatypes::DataType::Timestamp(
            deltalake::arrow::datatypes::TimeUnit::Microsecond,
            Some("UTC".into()),
        ),
    )?;
    Ok(deltalake::arrow::compute::max(
        values.as_primitive::<TimestampMicrosecondType>(),
    ))
}
