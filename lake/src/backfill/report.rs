//! What a backfill changes, per day, and what it reports.

use chrono::NaiveDate;
use serde::Serialize;

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
    pub(super) fn changes(&self) -> bool {
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
