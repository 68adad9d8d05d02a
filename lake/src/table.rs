//! The lake's Delta tables: `events` (one row per `event_id`, partitioned by `event_date`),
//! `gaps` (one row per `seq` range the SDKs reported lost, partitioned by the date it arrived),
//! `rejected` (what could not be read as a stream record, partitioned by arrival date) and `raw`
//! (every Kinesis record as read, partitioned by arrival date), their schemas, and commits that
//! carry the shards' checkpoints.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use deltalake::arrow::array::{
    ArrayRef, BinaryBuilder, Date32Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::{DataType as ArrowType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, DataType, StructField, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use serde_json::Value;
use tern_protocol::{GapRecord, StreamRecord};
use url::Url;

use crate::error::{Error, Result};

/// Name of the events table under the lake.
pub const EVENTS: &str = "events";
/// Name of the rejected records table under the lake.
pub const REJECTED: &str = "rejected";
/// Name of the gaps table under the lake.
pub const GAPS: &str = "gaps";
/// Name of the raw archive under the lake: every Kinesis record exactly as read.
pub const RAW: &str = "raw";

/// Where a row was read from.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The Kinesis shard.
    pub shard_id: Arc<str>,
    /// The Kinesis record's sequence number.
    pub sequence_number: Arc<str>,
    /// Index inside a KPL aggregate, `None` for a plain record.
    pub sub_sequence: Option<i32>,
    /// When Kinesis accepted the record.
    pub arrived_at: DateTime<Utc>,
}

/// A column: name, Delta type, nullable.
type Column = (&'static str, DataType, bool);

/// The `events` columns, in order. The first [`EVENTS_INDEXED_COLUMNS`] get file statistics
/// (min/max), so filters on them skip files.
fn event_columns() -> Vec<Column> {
    vec![
        ("event_id", DataType::STRING, false),
        ("event_time", DataType::TIMESTAMP, false),
        ("received_at", DataType::TIMESTAMP, false),
        ("name", DataType::STRING, false),
        ("install_id", DataType::STRING, false),
        ("seq", DataType::LONG, false),
        ("app_id", DataType::STRING, false),
        ("user_id", DataType::STRING, true),
        ("session_id", DataType::STRING, true),
        ("created_at", DataType::TIMESTAMP, false),
        ("arrived_at", DataType::TIMESTAMP, false),
        ("ingested_at", DataType::TIMESTAMP, false),
        ("sent_at", DataType::TIMESTAMP, false),
        ("app_package", DataType::STRING, true),
        ("app_version", DataType::STRING, true),
        ("app_build", DataType::STRING, true),
        ("os_name", DataType::STRING, true),
        ("os_version", DataType::STRING, true),
        ("device_manufacturer", DataType::STRING, true),
        ("device_model", DataType::STRING, true),
        ("locale", DataType::STRING, true),
        ("timezone", DataType::STRING, true),
        ("sdk_name", DataType::STRING, false),
        ("sdk_version", DataType::STRING, false),
        ("batch_id", DataType::STRING, false),
        ("collector_id", DataType::STRING, false),
        ("v", DataType::INTEGER, false),
        ("shard_id", DataType::STRING, false),
        ("sequence_number", DataType::STRING, false),
        ("sub_sequence", DataType::INTEGER, true),
        ("properties", DataType::STRING, false),
        ("context", DataType::STRING, false),
        ("event_date", DataType::DATE, false),
    ]
}

/// Columns of `events` with file statistics: the ones queries filter on. The JSON columns after
/// them would only make the statistics large.
pub const EVENTS_INDEXED_COLUMNS: usize = 12;

fn rejected_columns() -> Vec<Column> {
    vec![
        ("shard_id", DataType::STRING, false),
        ("sequence_number", DataType::STRING, false),
        ("sub_sequence", DataType::INTEGER, true),
        ("arrived_at", DataType::TIMESTAMP, false),
        ("ingested_at", DataType::TIMESTAMP, false),
        ("reason", DataType::STRING, false),
        ("message", DataType::STRING, false),
        ("data", DataType::BINARY, false),
        ("arrived_date", DataType::DATE, false),
    ]
}

/// The `gaps` columns: one row per range of a gap record, so that SQL sums `seq_last -
/// seq_first + 1` without unpacking JSON.
fn gap_columns() -> Vec<Column> {
    vec![
        ("gap_id", DataType::STRING, false),
        ("install_id", DataType::STRING, false),
        ("app_id", DataType::STRING, false),
        ("reason", DataType::STRING, false),
        ("seq_first", DataType::LONG, false),
        ("seq_last", DataType::LONG, false),
        ("gap_count", DataType::LONG, false),
        ("at", DataType::TIMESTAMP, false),
        ("received_at", DataType::TIMESTAMP, false),
        ("batch_id", DataType::STRING, false),
        ("collector_id", DataType::STRING, false),
        ("sdk_name", DataType::STRING, false),
        ("sdk_version", DataType::STRING, false),
        ("shard_id", DataType::STRING, false),
        ("sequence_number", DataType::STRING, false),
        ("sub_sequence", DataType::INTEGER, true),
        ("arrived_at", DataType::TIMESTAMP, false),
        ("ingested_at", DataType::TIMESTAMP, false),
        ("received_date", DataType::DATE, false),
    ]
}

/// The `raw` columns: a Kinesis record as read, so that any day can be replayed after the
/// stream's retention has dropped it (`tern-lake backfill`).
fn raw_columns() -> Vec<Column> {
    vec![
        ("shard_id", DataType::STRING, false),
        ("sequence_number", DataType::STRING, false),
        ("partition_key", DataType::STRING, false),
        ("arrived_at", DataType::TIMESTAMP, false),
        ("ingested_at", DataType::TIMESTAMP, false),
        ("data", DataType::BINARY, false),
        ("arrived_date", DataType::DATE, false),
    ]
}

fn arrow_schema(columns: &[Column]) -> SchemaRef {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, ty, nullable)| {
            let arrow = if *ty == DataType::STRING {
                ArrowType::Utf8
            } else if *ty == DataType::TIMESTAMP {
                ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            } else if *ty == DataType::LONG {
                ArrowType::Int64
            } else if *ty == DataType::INTEGER {
                ArrowType::Int32
            } else if *ty == DataType::DATE {
                ArrowType::Date32
            } else {
                ArrowType::Binary
            };
            Field::new(*name, arrow, *nullable)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// The Arrow schema `events` is written with.
pub fn events_schema() -> SchemaRef {
    arrow_schema(&event_columns())
}

/// `batch` (rows of `events` as a query read them: any column order, view or dictionary types)
/// in the schema `events` is written with.
pub fn conform_events(batch: &RecordBatch) -> Result<RecordBatch> {
    conform(batch, &events_schema())
}

/// `batch` (rows of a lake table as a query read them) in `schema`, the one it is written
/// with: columns by name, cast to the written types.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let column = batch
                .column_by_name(field.name())
                .ok_or_else(|| Error::Config(format!("rows without column {}", field.name())))?;
            Ok(deltalake::arrow::compute::cast(column, field.data_type())?)
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

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

/// Opens (creating if needed) `raw` under `lake`.
pub async fn open_raw(lake: &str) -> Result<DeltaTable> {
    // Statistics for the columns before `data`.
    let configuration = HashMap::from([(
        "delta.dataSkippingNumIndexedCols".to_owned(),
        Some("5".to_owned()),
    )]);
    open_or_create(lake, RAW, raw_columns(), "arrived_date", configuration).await
}

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

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn days(date: NaiveDate) -> i32 {
    // Days since 1970-01-01 fit an i32 for every date chrono can hold.
    (date - NaiveDate::default()).num_days() as i32
}

/// The UTC date of `t` as an Arrow/Delta `DATE` (days since the epoch).
pub fn date_days(t: DateTime<Utc>) -> i32 {
    days(t.date_naive())
}

fn timestamps() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

/// Rows of `events`, column by column.
pub struct EventColumns {
    schema: SchemaRef,
    event_id: StringBuilder,
    event_time: TimestampMicrosecondBuilder,
    received_at: TimestampMicrosecondBuilder,
    name: StringBuilder,
    install_id: StringBuilder,
    seq: Int64Builder,
    app_id: StringBuilder,
    user_id: StringBuilder,
    session_id: StringBuilder,
    created_at: TimestampMicrosecondBuilder,
    arrived_at: TimestampMicrosecondBuilder,
    sent_at: TimestampMicrosecondBuilder,
    app_package: StringBuilder,
    app_version: StringBuilder,
    app_build: StringBuilder,
    os_name: StringBuilder,
    os_version: StringBuilder,
    device_manufacturer: StringBuilder,
    device_model: StringBuilder,
    locale: StringBuilder,
    timezone: StringBuilder,
    sdk_name: StringBuilder,
    sdk_version: StringBuilder,
    batch_id: StringBuilder,
    collector_id: StringBuilder,
    v: Int32Builder,
    shard_id: StringBuilder,
    sequence_number: StringBuilder,
    sub_sequence: Int32Builder,
    properties: StringBuilder,
    context: StringBuilder,
    event_date: Date32Builder,
    rows: usize,
    json: Vec<u8>,
}

impl Default for EventColumns {
    fn default() -> Self {
        Self {
            schema: arrow_schema(&event_columns()),
            event_id: StringBuilder::new(),
            event_time: timestamps(),
            received_at: timestamps(),
            name: StringBuilder::new(),
            install_id: StringBuilder::new(),
            seq: Int64Builder::new(),
            app_id: StringBuilder::new(),
            user_id: StringBuilder::new(),
            session_id: StringBuilder::new(),
            created_at: timestamps(),
            arrived_at: timestamps(),
            sent_at: timestamps(),
            app_package: StringBuilder::new(),
            app_version: StringBuilder::new(),
            app_build: StringBuilder::new(),
            os_name: StringBuilder::new(),
            os_version: StringBuilder::new(),
            device_manufacturer: StringBuilder::new(),
            device_model: StringBuilder::new(),
            locale: StringBuilder::new(),
            timezone: StringBuilder::new(),
            sdk_name: StringBuilder::new(),
            sdk_version: StringBuilder::new(),
            batch_id: StringBuilder::new(),
            collector_id: StringBuilder::new(),
            v: Int32Builder::new(),
            shard_id: StringBuilder::new(),
            sequence_number: StringBuilder::new(),
            sub_sequence: Int32Builder::new(),
            properties: StringBuilder::new(),
            context: StringBuilder::new(),
            event_date: Date32Builder::new(),
            rows: 0,
            json: Vec::new(),
        }
    }
}

impl EventColumns {
    /// Rows added so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Adds one event.
    pub fn push(&mut self, r: &StreamRecord, from: &Provenance) {
        self.event_id.append_value(
            r.event_id
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer()),
        );
        self.event_time.append_value(micros(r.event_time));
        self.received_at.append_value(micros(r.received_at));
        self.name.append_value(&r.name);
        self.install_id.append_value(&r.install_id);
        self.seq
            .append_value(i64::try_from(r.seq).unwrap_or(i64::MAX));
        self.app_id.append_value(&r.app_id);
        self.user_id.append_option(r.user_id.as_deref());
        self.session_id.append_option(r.session_id.as_deref());
        self.created_at.append_value(micros(r.created_at));
        self.arrived_at.append_value(micros(from.arrived_at));
        self.sent_at.append_value(micros(r.sent_at));
        let c = &r.context;
        self.app_package.append_option(c.app.id.as_deref());
        self.app_version.append_option(c.app.version.as_deref());
        self.app_build.append_option(c.app.build.as_deref());
        self.os_name.append_option(c.os.name.as_deref());
        self.os_version.append_option(c.os.version.as_deref());
        self.device_manufacturer
            .append_option(c.device.manufacturer.as_deref());
        self.device_model.append_option(c.device.model.as_deref());
        self.locale.append_option(c.locale.as_deref());
        self.timezone.append_option(c.timezone.as_deref());
        self.sdk_name.append_value(&r.sdk.name);
        self.sdk_version.append_value(&r.sdk.version);
        self.batch_id.append_value(
            r.batch_id
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer()),
        );
        self.collector_id.append_value(&r.collector_id);
        self.v.append_value(i32::try_from(r.v).unwrap_or(i32::MAX));
        self.shard_id.append_value(&from.shard_id);
        self.sequence_number.append_value(&from.sequence_number);
        self.sub_sequence.append_option(from.sub_sequence);
        append_json(&mut self.properties, &mut self.json, &r.properties);
        append_json(&mut self.context, &mut self.json, &r.context);
        self.event_date.append_value(date_days(r.event_time));
        self.rows += 1;
    }

    /// The rows as one batch, with `ingested_at` for all of them; the builders start empty
    /// again.
    pub fn finish(&mut self, ingested_at: DateTime<Utc>) -> Result<RecordBatch> {
        let mut ingested = timestamps();
        ingested.append_value_n(micros(ingested_at), self.rows);
        self.finish_with(ingested)
    }

    /// The rows as one batch, row `i` with `ingested_at[i]` (microseconds); the builders
    /// start empty again.
    pub fn finish_each(&mut self, ingested_at: &[i64]) -> Result<RecordBatch> {
        let mut ingested = timestamps();
        ingested.append_slice(ingested_at);
        self.finish_with(ingested)
    }

    fn finish_with(&mut self, mut ingested: TimestampMicrosecondBuilder) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.event_time.finish()),
            Arc::new(self.received_at.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.install_id.finish()),
            Arc::new(self.seq.finish()),
            Arc::new(self.app_id.finish()),
            Arc::new(self.user_id.finish()),
            Arc::new(self.session_id.finish()),
            Arc::new(self.created_at.finish()),
            Arc::new(self.arrived_at.finish()),
            Arc::new(ingested.finish()),
            Arc::new(self.sent_at.finish()),
            Arc::new(self.app_package.finish()),
            Arc::new(self.app_version.finish()),
            Arc::new(self.app_build.finish()),
            Arc::new(self.os_name.finish()),
            Arc::new(self.os_version.finish()),
            Arc::new(self.device_manufacturer.finish()),
            Arc::new(self.device_model.finish()),
            Arc::new(self.locale.finish()),
            Arc::new(self.timezone.finish()),
            Arc::new(self.sdk_name.finish()),
            Arc::new(self.sdk_version.finish()),
            Arc::new(self.batch_id.finish()),
            Arc::new(self.collector_id.finish()),
            Arc::new(self.v.finish()),
            Arc::new(self.shard_id.finish()),
            Arc::new(self.sequence_number.finish()),
            Arc::new(self.sub_sequence.finish()),
            Arc::new(self.properties.finish()),
            Arc::new(self.context.finish()),
            Arc::new(self.event_date.finish()),
        ];
        self.rows = 0;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// Appends `value` serialized as JSON, through the reused buffer `json`.
fn append_json(column: &mut StringBuilder, json: &mut Vec<u8>, value: &impl serde::Serialize) {
    json.clear();
    // Serializing a parsed JSON map or a plain struct into memory cannot fail, and serde_json
    // writes UTF-8 only.
    let _ = serde_json::to_writer(&mut *json, value);
    column.append_value(std::str::from_utf8(json).unwrap_or_default());
}

/// A Kinesis record for `raw`.
#[derive(Debug, Clone)]
pub struct RawRow {
    /// The shard it was read from.
    pub shard_id: Arc<str>,
    /// The record as read.
    pub record: crate::source::KinesisRecord,
}

/// `rows` as one `raw` batch.
pub fn raw_batch(rows: &[RawRow], ingested_at: DateTime<Utc>) -> Result<RecordBatch> {
    let mut shard_id = StringBuilder::new();
    let mut sequence_number = StringBuilder::new();
    let mut partition_key = StringBuilder::new();
    let mut arrived_at = timestamps();
    let mut ingested = timestamps();
    let mut data = BinaryBuilder::new();
    let mut arrived_date = Date32Builder::new();
    for row in rows {
        shard_id.append_value(&row.shard_id);
        sequence_number.append_value(&row.record.sequence_number);
        partition_key.append_value(&row.record.partition_key);
        arrived_at.append_value(micros(row.record.arrived_at));
        ingested.append_value(micros(ingested_at));
        data.append_value(&row.record.data);
        arrived_date.append_value(date_days(row.record.arrived_at));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(shard_id.finish()),
        Arc::new(sequence_number.finish()),
        Arc::new(partition_key.finish()),
        Arc::new(arrived_at.finish()),
        Arc::new(ingested.finish()),
        Arc::new(data.finish()),
        Arc::new(arrived_date.finish()),
    ];
    Ok(RecordBatch::try_new(arrow_schema(&raw_columns()), columns)?)
}

/// The Arrow schema `rejected` is written with.
pub fn rejected_schema() -> SchemaRef {
    arrow_schema(&rejected_columns())
}

/// A record for `rejected`.
#[derive(Debug, Clone)]
pub struct RejectedRow {
    /// Where it was read.
    pub from: Provenance,
    /// One of [`crate::decode::reason::ALL`].
    pub reason: &'static str,
    /// What was wrong.
    pub message: String,
    /// The user record's bytes, as read.
    pub data: Vec<u8>,
    /// When it was first written (a backfill keeps it); `None`: at this commit.
    pub ingested_at: Option<DateTime<Utc>>,
}

/// `rows` as one `rejected` batch.
pub fn rejected_batch(rows: &[RejectedRow], ingested_at: DateTime<Utc>) -> Result<RecordBatch> {
    let mut shard_id = StringBuilder::new();
    let mut sequence_number = StringBuilder::new();
    let mut sub_sequence = Int32Builder::new();
    let mut arrived_at = timestamps();
    let mut ingested = timestamps();
    let mut reason = StringBuilder::new();
    let mut message = StringBuilder::new();
    let mut data = BinaryBuilder::new();
    let mut arrived_date = Date32Builder::new();
    for row in rows {
        shard_id.append_value(&row.from.shard_id);
        sequence_number.append_value(&row.from.sequence_number);
        sub_sequence.append_option(row.from.sub_sequence);
        arrived_at.append_value(micros(row.from.arrived_at));
        ingested.append_value(micros(row.ingested_at.unwrap_or(ingested_at)));
        reason.append_value(row.reason);
        message.append_value(&row.message);
        data.append_value(&row.data);
        arrived_date.append_value(date_days(row.from.arrived_at));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(shard_id.finish()),
        Arc::new(sequence_number.finish()),
        Arc::new(sub_sequence.finish()),
        Arc::new(arrived_at.finish()),
        Arc::new(ingested.finish()),
        Arc::new(reason.finish()),
        Arc::new(message.finish()),
        Arc::new(data.finish()),
        Arc::new(arrived_date.finish()),
    ];
    Ok(RecordBatch::try_new(
        arrow_schema(&rejected_columns()),
        columns,
    )?)
}

/// `gaps` as one batch: a row per range of each gap record.
pub fn gaps_batch(
    gaps: &[(GapRecord, Provenance)],
    ingested_at: DateTime<Utc>,
) -> Result<RecordBatch> {
    let mut gap_id = StringBuilder::new();
    let mut install_id = StringBuilder::new();
    let mut app_id = StringBuilder::new();
    let mut reason = StringBuilder::new();
    let mut seq_first = Int64Builder::new();
    let mut seq_last = Int64Builder::new();
    let mut gap_count = Int64Builder::new();
    let mut at = timestamps();
    let mut received_at = timestamps();
    let mut batch_id = StringBuilder::new();
    let mut collector_id = StringBuilder::new();
    let mut sdk_name = StringBuilder::new();
    let mut sdk_version = StringBuilder::new();
    let mut shard_id = StringBuilder::new();
    let mut sequence_number = StringBuilder::new();
    let mut sub_sequence = Int32Builder::new();
    let mut arrived_at = timestamps();
    let mut ingested = timestamps();
    let mut received_date = Date32Builder::new();
    let long = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    for (gap, from) in gaps {
        for range in &gap.ranges {
            gap_id.append_value(gap.gap_id.to_string());
            install_id.append_value(&gap.install_id);
            app_id.append_value(&gap.app_id);
            reason.append_value(&gap.reason);
            seq_first.append_value(long(range.first));
            seq_last.append_value(long(range.last));
            gap_count.append_value(long(gap.count));
            at.append_value(micros(gap.at));
            received_at.append_value(micros(gap.received_at));
            batch_id.append_value(gap.batch_id.to_string());
            collector_id.append_value(&gap.collector_id);
            sdk_name.append_value(&gap.sdk.name);
            sdk_version.append_value(&gap.sdk.version);
            shard_id.append_value(&from.shard_id);
            sequence_number.append_value(&from.sequence_number);
            sub_sequence.append_option(from.sub_sequence);
            arrived_at.append_value(micros(from.arrived_at));
            ingested.append_value(micros(ingested_at));
            received_date.append_value(date_days(gap.received_at));
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(gap_id.finish()),
        Arc::new(install_id.finish()),
        Arc::new(app_id.finish()),
        Arc::new(reason.finish()),
        Arc::new(seq_first.finish()),
        Arc::new(seq_last.finish()),
        Arc::new(gap_count.finish()),
        Arc::new(at.finish()),
        Arc::new(received_at.finish()),
        Arc::new(batch_id.finish()),
        Arc::new(collector_id.finish()),
        Arc::new(sdk_name.finish()),
        Arc::new(sdk_version.finish()),
        Arc::new(shard_id.finish()),
        Arc::new(sequence_number.finish()),
        Arc::new(sub_sequence.finish()),
        Arc::new(arrived_at.finish()),
        Arc::new(ingested.finish()),
        Arc::new(received_date.finish()),
    ];
    Ok(RecordBatch::try_new(arrow_schema(&gap_columns()), columns)?)
}
