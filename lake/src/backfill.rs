//! `tern-lake backfill --from DATE --to DATE`: rebuilds those `event_date` partitions of
//! `events` (and those arrival dates of `rejected`) from `raw` with today's cleansing rules.
//!
//! - Only the days whose rows change are replaced, each table in one Delta transaction
//!   (`replaceWhere`): readers see a day's old rows or its new ones, never a mix.
//! - A second run finds nothing to change and commits nothing.
//! - It runs beside ingest. It reads only the raw records that `events` already holds the
//!   position of (ingest archives a record in `raw` just before it commits its rows to
//!   `events`): the rows still in flight are ingest's to write, never both. Its replace reads the
//!   days it replaces, so an ingest commit to one of them in between (a late event) makes it
//!   compute again; ingest's commits to other days do not. Nothing is lost.
//! - Copies are removed as ingest does: the first copy by arrival wins, and an event whose copy
//!   is kept in a day outside the range (its `event_time` moved across midnight) is left there.
//! - A row that stays keeps its `ingested_at`; a new one takes its raw record's.
//! - `--dry-run` prints, per day, the rows that would be added, removed and changed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Days, NaiveDate, Utc};
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::TimestampMicrosecondType;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use serde::Serialize;
use serde_json::json;
use tern_protocol::StreamRecord;

use crate::checkpoint::{self, compare_sequence, Position};
use crate::clean::rows_json;
use crate::decode::{self, Decoded};
use crate::error::{Error, Result};
use crate::limits::{
    BACKFILL_ATTEMPTS, BACKFILL_RAW_SLACK_DAYS, COMMIT_RETRY_MAX, COMMIT_RETRY_MIN,
};
use crate::query;
use crate::rules::Rules;
use crate::table::{self, EventColumns, Provenance, RejectedRow};

/// What to backfill.
#[derive(Debug, Clone)]
pub struct Options {
    /// The lake.
    pub lake: String,
    /// The stream ingest reads (its commit lock is taken).
    pub stream: String,
    /// First day (UTC), included.
    pub from: NaiveDate,
    /// Last day, included.
    pub to: NaiveDate,
    /// The cleansing rules to apply.
    pub rules: Rules,
    /// Only say what would change.
    pub dry_run: bool,
}

/// Rows of one day that a backfill adds, removes, changes and keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DayChange {
    /// The day.
    pub date: NaiveDate,
    /// Rows that are new.
    pub added: u64,
    /// Rows that go.
    pub removed: u64,
    /// Rows with the same key and other values.
    pub changed: u64,
    /// Rows kept as they are.
    pub unchanged: u64,
}

impl DayChange {
    fn changes(&self) -> bool {
        self.added + self.removed + self.changed > 0
    }
}

/// What a backfill did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Whether nothing was written.
    pub dry_run: bool,
    /// Raw records read.
    pub raw_records: u64,
    /// `events`, per `event_date`.
    pub events: Vec<DayChange>,
    /// `rejected`, per arrival date.
    pub rejected: Vec<DayChange>,
    /// The `events` version written, if any.
    pub events_version: Option<u64>,
    /// The `rejected` version written, if any.
    pub rejected_version: Option<u64>,
    /// Attempts made (more than one when ingest committed to the same days meanwhile).
    pub attempts: u32,
}

/// Runs a backfill, trying again after a conflicting commit.
pub async fn run(options: &Options) -> Result<Report> {
    if options.from > options.to {
        return Err(Error::Config(format!(
            "from: {} is after to: {}",
            options.from, options.to
        )));
    }
    let mut delay = COMMIT_RETRY_MIN;
    for attempt in 1..=BACKFILL_ATTEMPTS {
        match attempt_once(options).await {
            Ok(mut report) => {
                report.attempts = attempt;
                return Ok(report);
            }
            Err(error) if table::is_conflict(&error) => {
                tracing::info!(%error, attempt, "another commit came first; computing again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(COMMIT_RETRY_MAX);
            }
            Err(error) => return Err(error),
        }
    }
    Err(Error::Config(format!(
        "backfill: {BACKFILL_ATTEMPTS} attempts all met another commit to the same days; run it again"
    )))
}

/// The rows a backfill computes from `raw`.
#[derive(Default)]
struct Rebuilt {
    raw_records: u64,
    events: Vec<(StreamRecord, Provenance, i64)>,
    rejects: Vec<RejectedRow>,
}

async fn attempt_once(options: &Options) -> Result<Report> {
    let Some(raw) = table::open(&options.lake, table::RAW).await? else {
        return Err(Error::Config(format!(
            "lake {}: no raw table; run `tern-lake ingest` (which keeps every record in raw) first",
            options.lake
        )));
    };
    let mut events = table::open_events(&options.lake).await?;
    let mut rejected = table::open_rejected(&options.lake).await?;
    let ctx = query::new_session()?;
    query::register(&ctx, table::RAW, &raw).await?;
    query::register(&ctx, table::EVENTS, &events).await?;
    query::register(&ctx, table::REJECTED, &rejected).await?;

    let (from, to) = (options.from, options.to);
    let neighbours = (
        from - Days::new(1),
        to.checked_add_days(Days::new(1)).unwrap_or(to),
    );
    // Copies kept by ingest in the days beside the range stay there.
    let kept_beside: HashSet<String> = query::collect(
        &ctx,
        &format!(
            "SELECT event_id FROM events WHERE event_date IN (DATE '{}', DATE '{}')",
            neighbours.0, neighbours.1
        ),
    )
    .await?
    .iter()
    .flat_map(strings_of_first)
    .collect();
    let held = held_positions(&ctx, &events, &options.stream).await?;
    let rebuilt = read_raw(&ctx, options, &kept_beside, &held).await?;

    // `events`: the rows there now, and the rows rebuilt.
    let old = conformed(
        query::collect(
            &ctx,
            &format!("SELECT * FROM events WHERE event_date BETWEEN DATE '{from}' AND DATE '{to}'"),
        )
        .await?,
    )?;
    let old_ingested = ingested_by_id(&old)?;
    let mut columns = EventColumns::default();
    let mut ingested = Vec::with_capacity(rebuilt.events.len());
    for (event, from, raw_ingested) in &rebuilt.events {
        columns.push(event, from);
        ingested.push(
            old_ingested
                .get(&event.event_id.to_string())
                .copied()
                .unwrap_or(*raw_ingested),
        );
    }
    let new = columns.finish_each(&ingested)?;
    let event_days = diff(&old, &new, &["event_id"], "event_date")?;

    // `rejected`: by arrival date, keyed by where the record was read.
    let old_rejected = query::collect(
        &ctx,
        &format!("SELECT * FROM rejected WHERE arrived_date BETWEEN DATE '{from}' AND DATE '{to}'"),
    )
    .await?
    .iter()
    .map(|b| table::conform(b, &table::rejected_schema()))
    .collect::<Result<Vec<_>>>()?;
    let new_rejected = table::rejected_batch(&rebuilt.rejects, Utc::now())?;
    let rejected_key = ["shard_id", "sequence_number", "sub_sequence"];
    let rejected_days = diff(&old_rejected, &new_rejected, &rejected_key, "arrived_date")?;

    let mut report = Report {
        dry_run: options.dry_run,
        raw_records: rebuilt.raw_records,
        events: event_days.clone(),
        rejected: rejected_days.clone(),
        ..Report::default()
    };
    if options.dry_run {
        return Ok(report);
    }
    let changed = |days: &[DayChange]| -> Vec<NaiveDate> {
        days.iter()
            .filter(|d| d.changes())
            .map(|d| d.date)
            .collect()
    };
    let event_changed = changed(&event_days);
    if !event_changed.is_empty() {
        let batch = keep_rows(&new, "event_date", &event_changed)?;
        report.events_version =
            Some(replace(&mut events, batch, "event_date", &event_changed, &report).await?);
    }
    let rejected_changed = changed(&rejected_days);
    if !rejected_changed.is_empty() {
        let batch = keep_rows(&new_rejected, "arrived_date", &rejected_changed)?;
        report.rejected_version = Some(
            replace(
                &mut rejected,
                batch,
                "arrived_date",
                &rejected_changed,
                &report,
            )
            .await?,
        );
    }
    Ok(report)
}

/// Reads `raw` from the day before `from` on, in arrival order, and decodes every record with
/// the rules: the first copy of each event in the range (unless `kept_beside` holds it), and
/// the rejects that arrived in the range.
async fn read_raw(
    ctx: &deltalake::datafusion::prelude::SessionContext,
    options: &Options,
    kept_beside: &HashSet<String>,
    held: &HashMap<String, Position>,
) -> Result<Rebuilt> {
    let start = options.from - Days::new(BACKFILL_RAW_SLACK_DAYS.unsigned_abs());
    let sql = format!(
        "SELECT shard_id, sequence_number, arrived_at, ingested_at, data FROM raw \
         WHERE arrived_date >= DATE '{start}' \
         ORDER BY arrived_at, shard_id, length(sequence_number), sequence_number"
    );
    let mut out = Rebuilt::default();
    let mut seen: HashSet<u128> = HashSet::new();
    let in_range = |d: NaiveDate| d >= options.from && d <= options.to;
    for batch in query::collect(ctx, &sql).await? {
        let shard = cast_strings(batch.column(0))?;
        let sequence = cast_strings(batch.column(1))?;
        let arrived = micros_of(batch.column(2))?;
        let ingested = micros_of(batch.column(3))?;
        let data = deltalake::arrow::compute::cast(
            batch.column(4),
            &deltalake::arrow::datatypes::DataType::Binary,
        )?;
        let data = data.as_binary::<i32>();
        for row in 0..batch.num_rows() {
            let in_events = match held.get(shard.value(row)) {
                Some(Position::End) => true,
                Some(Position::After(to)) => compare_sequence(sequence.value(row), to).is_le(),
                None => false,
            };
            if !in_events {
                // Archived, its rows not committed yet: ingest writes them.
                continue;
            }
            out.raw_records += 1;
            let shard_id: Arc<str> = Arc::from(shard.value(row));
            let sequence_number: Arc<str> = Arc::from(sequence.value(row));
            let arrived_at = timestamp(arrived.value(row))?;
            let raw_ingested = ingested.value(row);
            for (sub_sequence, document) in decode::user_records(data.value(row)) {
                let from = Provenance {
                    shard_id: Arc::clone(&shard_id),
                    sequence_number: Arc::clone(&sequence_number),
                    sub_sequence,
                    arrived_at,
                };
                match decode::decode_with(document, &options.rules) {
                    Decoded::Event(event) => {
                        if !seen.insert(event.event_id.as_u128()) {
                            continue;
                        }
                        if in_range(event.event_time.date_naive())
                            && !kept_beside.contains(&event.event_id.to_string())
                        {
                            out.events.push((*event, from, raw_ingested));
                        }
                    }
                    Decoded::Gap(_) => {}
                    Decoded::Rejected { reason, message } => {
                        if in_range(arrived_at.date_naive()) {
                            out.rejects.push(RejectedRow {
                                from,
                                reason,
                                message,
                                data: document.to_vec(),
                                ingested_at: Some(timestamp(raw_ingested)?),
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// How far `events` holds each shard that `raw` has records of.
async fn held_positions(
    ctx: &deltalake::datafusion::prelude::SessionContext,
    events: &DeltaTable,
    stream: &str,
) -> Result<HashMap<String, Position>> {
    let mut held = HashMap::new();
    for batch in query::collect(ctx, "SELECT DISTINCT shard_id FROM raw").await? {
        for shard in strings_of_first(&batch) {
            if let Some(position) = checkpoint::read(events, stream, &shard).await? {
                held.insert(shard, position);
            }
        }
    }
    Ok(held)
}

/// Per day (column `date`), how `new` differs from `old`, rows matched by the `key` columns
/// and compared in their JSON form.
fn diff(
    old: &[RecordBatch],
    new: &RecordBatch,
    key: &[&str],
    date: &str,
) -> Result<Vec<DayChange>> {
    let mut before: HashMap<String, (NaiveDate, String)> = HashMap::new();
    for batch in old {
        let keys = keys_of(batch, key)?;
        let dates = dates_of(batch, date)?;
        for ((k, d), json) in keys.into_iter().zip(dates).zip(rows_json(batch)?) {
            before.insert(k, (d, json));
        }
    }
    let mut days: BTreeMap<NaiveDate, DayChange> = BTreeMap::new();
    let keys = keys_of(new, key)?;
    let dates = dates_of(new, date)?;
    for ((k, d), json) in keys.into_iter().zip(dates).zip(rows_json(new)?) {
        match before.remove(&k) {
            None => day(&mut days, d).added += 1,
            Some((old_date, _)) if old_date != d => {
                day(&mut days, old_date).removed += 1;
                day(&mut days, d).added += 1;
            }
            Some((_, old_json)) if old_json == json => day(&mut days, d).unchanged += 1,
            Some(_) => day(&mut days, d).changed += 1,
        }
    }
    for (_, (d, _)) in before {
        day(&mut days, d).removed += 1;
    }
    Ok(days.into_values().collect())
}

fn day(days: &mut BTreeMap<NaiveDate, DayChange>, date: NaiveDate) -> &mut DayChange {
    days.entry(date).or_insert_with(|| DayChange {
        date,
        ..DayChange::default()
    })
}

/// The rows of `batch` whose `date` column is one of `dates`.
fn keep_rows(batch: &RecordBatch, date: &str, dates: &[NaiveDate]) -> Result<RecordBatch> {
    let days = dates_of(batch, date)?;
    let mask: deltalake::arrow::array::BooleanArray =
        days.iter().map(|d| Some(dates.contains(d))).collect();
    Ok(deltalake::arrow::compute::filter_record_batch(
        batch, &mask,
    )?)
}

/// Replaces the partitions `dates` of `table` (partitioned by `column`) with `batch`, in one
/// transaction.
async fn replace(
    table: &mut DeltaTable,
    batch: RecordBatch,
    column: &str,
    dates: &[NaiveDate],
    report: &Report,
) -> Result<u64> {
    let list = dates
        .iter()
        .map(|d| format!("DATE '{d}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let predicate = format!("{column} IN ({list})");
    let metadata = HashMap::from([(
        "tern-lake-backfill".to_owned(),
        json!({ "dates": dates, "events": report.events, "rejected": report.rejected }),
    )]);
    let properties = CommitProperties::default().with_metadata(metadata);
    let written = table
        .clone()
        .write(vec![batch])
        .with_save_mode(SaveMode::Overwrite)
        .with_replace_where(predicate)
        .with_commit_properties(properties)
        .await?;
    let version = written.version().unwrap_or_default() as u64;
    *table = written;
    Ok(version)
}

fn conformed(batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    batches.iter().map(table::conform_events).collect()
}

fn ingested_by_id(batches: &[RecordBatch]) -> Result<HashMap<String, i64>> {
    let mut out = HashMap::new();
    for batch in batches {
        let ids = keys_of(batch, &["event_id"])?;
        let column = batch
            .column_by_name("ingested_at")
            .ok_or_else(|| Error::Config("events rows without ingested_at".into()))?;
        let at = micros_of(column)?;
        for (i, id) in ids.into_iter().enumerate() {
            out.insert(id, at.value(i));
        }
    }
    Ok(out)
}

/// The `key` columns of each row joined into one string.
fn keys_of(batch: &RecordBatch, key: &[&str]) -> Result<Vec<String>> {
    let columns = key
        .iter()
        .map(|name| {
            let column = batch
                .column_by_name(name)
                .ok_or_else(|| Error::Config(format!("rows without column {name}")))?;
            Ok(deltalake::arrow::compute::cast(
                column,
                &deltalake::arrow::datatypes::DataType::Utf8,
            )?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((0..batch.num_rows())
        .map(|row| {
            columns
                .iter()
                .map(|c| {
                    let c = c.as_string::<i32>();
                    if c.is_null(row) {
                        String::new()
                    } else {
                        c.value(row).to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect())
}

fn dates_of(batch: &RecordBatch, column: &str) -> Result<Vec<NaiveDate>> {
    let values = batch
        .column_by_name(column)
        .ok_or_else(|| Error::Config(format!("rows without column {column}")))?;
    let values =
        deltalake::arrow::compute::cast(values, &deltalake::arrow::datatypes::DataType::Date32)?;
    let values = values.as_primitive::<deltalake::arrow::datatypes::Date32Type>();
    (0..values.len())
        .map(|i| {
            NaiveDate::default()
                .checked_add_signed(chrono::Duration::days(i64::from(values.value(i))))
                .ok_or_else(|| Error::Config("date out of range".into()))
        })
        .collect()
}

fn strings_of_first(batch: &RecordBatch) -> Vec<String> {
    keys_of(batch, &[batch.schema().field(0).name()]).unwrap_or_default()
}

fn cast_strings(
    column: &deltalake::arrow::array::ArrayRef,
) -> Result<deltalake::arrow::array::StringArray> {
    Ok(
        deltalake::arrow::compute::cast(column, &deltalake::arrow::datatypes::DataType::Utf8)?
            .as_string::<i32>()
            .clone(),
    )
}

fn micros_of(
    column: &deltalake::arrow::array::ArrayRef,
) -> Result<deltalake::arrow::array::PrimitiveArray<TimestampMicrosecondType>> {
    Ok(deltalake::arrow::compute::cast(
        column,
        &deltalake::arrow::datatypes::DataType::Timestamp(
            deltalake::arrow::datatypes::TimeUnit::Microsecond,
            Some("UTC".into()),
        ),
    )?
    .as_primitive::<TimestampMicrosecondType>()
    .clone())
}

fn timestamp(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .ok_or_else(|| Error::Config(format!("timestamp {micros} out of range")))
}
