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
//! - A v2 event record joins its batch record as ingest did: the one of its `batch_id` read
//!   last before it in `raw`, else (read before the days read) the one it follows in `batches`.
//! - `--dry-run` prints, per day, the rows that would be added, removed and changed.

mod columns;
mod diff;
mod options;
mod raw;
mod report;
mod run;

pub use self::options::Options;
pub use self::report::{DayChange, Report};
pub use self::run::run;
