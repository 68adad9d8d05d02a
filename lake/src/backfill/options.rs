//! What a backfill is asked to do.

use chrono::NaiveDate;

use crate::rules::Rules;

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
