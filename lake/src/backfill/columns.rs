//! Columns of query results read as keys, dates, strings and times.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::TimestampMicrosecondType;

use crate::error::{Error, Result};
use crate::table;

pub(super) fn conformed(batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    batches.iter().map(table::conform_events).collect()
}

pub(super) fn ingested_by_id(batches: &[RecordBatch]) -> Result<HashMap<String, i64>> {
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
pub(super) fn keys_of(batch: &RecordBatch, key: &[&str]) -> Result<Vec<String>> {
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

pub(super) fn dates_of(batch: &RecordBatch, column: &str) -> Result<Vec<NaiveDate>> {
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

pub(super) fn strings_of_first(batch: &RecordBatch) -> Vec<String> {
    keys_of(batch, &[batch.schema().field(0).name()]).unwrap_or_default()
}

pub(super) fn cast_strings(
    column: &deltalake::arrow::array::ArrayRef,
) -> Result<deltalake::arrow::array::StringArray> {
    Ok(
        deltalake::arrow::compute::cast(column, &deltalake::arrow::datatypes::DataType::Utf8)?
            .as_string::<i32>()
            .clone(),
    )
}

pub(super) fn micros_of(
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

pub(super) fn timestamp(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .ok_or_else(|| Error::Config(format!("timestamp {micros} out of range")))
}
