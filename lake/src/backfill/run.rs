//! A backfill's run: the rows now and the rows rebuilt, compared per day, and the days that
//! change replaced, each table in one transaction; computed again after a conflicting commit.

use std::collections::{HashMap, HashSet};

use chrono::{Days, NaiveDate, Utc};
use deltalake::arrow::array::RecordBatch;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use serde_json::json;

use super::columns::{conformed, ingested_by_id, strings_of_first};
use super::diff::{diff, keep_rows};
use super::options::Options;
use super::raw::{held_positions, read_raw};
use super::report::{DayChange, Report};
use crate::error::{Error, Result};
use crate::limits::{BACKFILL_ATTEMPTS, COMMIT_RETRY_MAX, COMMIT_RETRY_MIN};
use crate::query;
use crate::table::{self, EventColumns};

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
    // Ingest commits a batch record to `batches` before the `events` commit that holds its
    // position: every one that a held v2 event joined is there.
    let batches = table::open(&options.lake, table::BATCHES).await?;
    let rebuilt = read_raw(&ctx, options, &kept_beside, &held, batches.as_ref()).await?;

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
