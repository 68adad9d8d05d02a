//! `tern-lake compact`: the lake's upkeep, safe to run while ingest runs.
//!
//! 1. **Compaction.** Ingest commits every few seconds, so each partition collects thousands of
//!    small files, and late events keep adding files to old days. Every partition with two or
//!    more small files (below [`COMPACT_SMALL_FILE_BYTES`]), whatever its day, has them
//!    bin-packed into files of up to [`COMPACT_TARGET_FILE_BYTES`], one commit per partition:
//!    `remove` the small files and `add` the new ones, both with `dataChange = false`, as
//!    delta-rs's OPTIMIZE commits them (operation `OPTIMIZE`).
//! 2. **VACUUM** deletes the files that commits removed longer ago than the retention
//!    (delta-rs `VacuumMode::Lite`), keeping every file a named snapshot's version reads
//!    (`with_keep_versions`), then the files no commit ever referenced once they are
//!    [`ORPHAN_MIN_AGE`] old (`VacuumMode::Full`).
//! 3. **Expired log entries** are removed up to the oldest named snapshot's version only, so
//!    that every snapshot stays readable by time travel (`docs/lake.md`, *Snapshots*).
//!
//! Why not delta-rs's `OptimizeBuilder` itself: in deltalake 1.1.3 its commit drops the
//! application transactions given to it, and the conflict checker ignores removes with
//! `dataChange = false`. Two OPTIMIZE runs planned from one version then both commit, and the
//! rows of the files both rewrote are in the table twice (the test
//! `delta_rs_optimize_twice_from_one_version_duplicates_rows` shows it). Each compaction commit
//! here carries a `txn` of its own ([`compaction_app_id`]): a second compactor's commit then
//! conflicts, and it plans that partition again from the table as it is.
//!
//! Against ingest: an ingest commit only adds files and carries the stream's `txn`s; a
//! compaction commit reads no predicate and carries another `txn`. delta-rs's conflict check
//! lets either land after the other (it rebases the commit onto the newer version), so neither
//! waits for nor loses the other's rows; only a changed table metadata makes a compaction
//! commit fail, and that is tried again ([`COMPACT_COMMIT_ATTEMPTS`]).
//!
//! [`COMPACT_SMALL_FILE_BYTES`]: crate::limits::COMPACT_SMALL_FILE_BYTES
//! [`COMPACT_TARGET_FILE_BYTES`]: crate::limits::COMPACT_TARGET_FILE_BYTES
//! [`ORPHAN_MIN_AGE`]: crate::limits::ORPHAN_MIN_AGE
//! [`COMPACT_COMMIT_ATTEMPTS`]: crate::limits::COMPACT_COMMIT_ATTEMPTS

mod plan;
mod rewrite;
mod run;
mod summary;
mod vacuum;

#[cfg(test)]
mod tests;

pub use self::rewrite::compaction_app_id;
pub use self::run::{run, CompactArgs, TABLES};
pub use self::summary::{Summary, TableSummary};
