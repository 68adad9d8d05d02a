//! The lake's tables by name: where each lives, opening it, and creating it the first time.

use std::collections::HashMap;

use deltalake::kernel::StructField;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder};
use url::Url;

use super::schema::{
    batch_columns, event_columns, gap_columns, raw_columns, rejected_columns, Column,
    BATCHES_INDEXED_COLUMNS, EVENTS_INDEXED_COLUMNS,
};
use crate::error::{Error, Result};

/// Name of the events table under the lake.
pub const EVENTS: &str = "events";
/// Name of the rejected records table under the lake.
pub const REJECTED: &str = "rejected";
/// Name of the gaps table under the lake.
pub const GAPS: &str = "gaps";
/// Name of the batch records table (stream record v2) under the lake.
pub const BATCHES: &str = "batches";
/// Name of the raw archive under the lake: every Kinesis record exactly as read.
pub const RAW: &str = "raw";

/// The URL of table `name` under `lake` (a directory or a URI); a local directory is created.
pub fn table_url(lake: &str, name: &str) -> Result<Url> {
    if lake.contains("://") {
        register_object_stores();
        let base = if lake.ends_with('/') {
            lake.to_owned()
        } else {
            format!("{lake}/")
        };
        return Url::parse(&base)
            .and_then(|u| u.join(&format!("{name}/")))
            .map_err(|e| Error::Config(format!("lake: {lake:?} is not a URI: {e}")));
    }
    let dir = std::path::Path::new(lake).join(name);
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    Url::from_directory_path(&dir)
        .map_err(|()| Error::Config(format!("lake: {} is not an absolute path", dir.display())))
}

/// Makes `s3://` lakes known to delta-rs (once). Commits there rely on S3's conditional writes
/// (`If-None-Match`), so concurrent writers need no lock service.
fn register_object_stores() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| deltalake::aws::register_handlers(None));
}

/// Opens table `name` under `lake`, if it exists.
pub async fn open(lake: &str, name: &str) -> Result<Option<DeltaTable>> {
    let mut table = DeltaTableBuilder::from_url(table_url(lake, name)?)?.build()?;
    // Asked first, so that a table not created yet is an answer, not a logged load error.
    if !table.verify_deltatable_existence().await? {
        return Ok(None);
    }
    table.load().await?;
    Ok(Some(table))
}

/// Opens table `name` under `lake`, creating it first if it does not exist.
async fn open_or_create(
    lake: &str,
    name: &str,
    columns: Vec<Column>,
    partition: &str,
    configuration: HashMap<String, Option<String>>,
) -> Result<DeltaTable> {
    if let Some(table) = open(lake, name).await? {
        return Ok(table);
    }
    let table = DeltaTableBuilder::from_url(table_url(lake, name)?)?.build()?;
    let fields: Vec<StructField> = columns
        .into_iter()
        .map(|(name, ty, nullable)| StructField::new(name, ty, nullable))
        .collect();
    let created = table
        .create()
        .with_table_name(name)
        .with_columns(fields)
        .with_partition_columns([partition])
        .with_configuration(configuration)
        .with_save_mode(SaveMode::Ignore)
        .await;
    match created {
        Ok(table) => Ok(table),
        // Another worker created it at the same moment.
        Err(error) => match open(lake, name).await? {
            Some(table) => Ok(table),
            None => Err(error.into()),
        },
    }
}

/// Opens (creating if needed) `events` under `lake`.
pub async fn open_events(lake: &str) -> Result<DeltaTable> {
    let configuration = HashMap::from([(
        "delta.dataSkippingNumIndexedCols".to_owned(),
        Some(EVENTS_INDEXED_COLUMNS.to_string()),
    )]);
    open_or_create(lake, EVENTS, event_columns(), "event_date", configuration).await
}

/// Opens (creating if needed) `rejected` under `lake`.
pub async fn open_rejected(lake: &str) -> Result<DeltaTable> {
    // Statistics for the columns before `data`: min/max of raw bytes help no query.
    let configuration = HashMap::from([(
        "delta.dataSkippingNumIndexedCols".to_owned(),
        Some("7".to_owned()),
    )]);
    open_or_create(
        lake,
        REJECTED,
        rejected_columns(),
        "arrived_date",
        configuration,
    )
    .await
}

/// Opens (creating if needed) `gaps` under `lake`.
pub async fn open_gaps(lake: &str) -> Result<DeltaTable> {
    open_or_create(lake, GAPS, gap_columns(), "received_date", HashMap::new()).await
}

/// Opens (creating if needed) `batches` under `lake`.
pub async fn open_batches(lake: &str) -> Result<DeltaTable> {
    let configuration = HashMap::from([(
        "delta.dataSkippingNumIndexedCols".to_owned(),
        Some(BATCHES_INDEXED_COLUMNS.to_string()),
    )]);
    open_or_create(
        lake,
        BATCHES,
        batch_columns(),
        "received_date",
        configuration,
    )
    .await
}

/// Opens (creating if needed) `raw` under `lake`.
pub async fn open_raw(lake: &str) -> Result<DeltaTable> {
    // Statistics for the columns before `data`.
    let configuration = HashMap::from([(
        "delta.dataSkippingNumIndexedCols".to_owned(),
        Some("5".to_owned()),
    )]);
    open_or_create(lake, RAW, raw_columns(), "arrived_date", configuration).await
}
