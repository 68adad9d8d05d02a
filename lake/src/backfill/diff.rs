//! Comparing the rows now with the rows rebuilt, per day, and keeping the days that change.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use deltalake::arrow::array::RecordBatch;

use super::columns::{dates_of, keys_of};
use super::report::DayChange;
use crate::clean::rows_json;
use crate::error::Result;

/// Per day (column `date`), how `new` differs from `old`, rows matched by the `key` columns
/// and compared in their JSON form.
pub(super) fn diff(
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
pub(super) fn keep_rows(
    batch: &RecordBatch,
    date: &str,
    dates: &[NaiveDate],
) -> Result<RecordBatch> {
    let days = dates_of(batch, date)?;
    let mask: deltalake::arrow::array::BooleanArray =
        days.iter().map(|d| Some(dates.contains(d))).collect();
    Ok(deltalake::arrow::compute::filter_record_batch(
        batch, &mask,
    )?)
}
