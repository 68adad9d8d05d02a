//! Every limit and default of the lake in one place, each with its reason.

use std::time::Duration;

/// How often buffered rows are committed by default. Freshness (stream arrival → visible in the
/// table) is at most this plus one poll and one commit: 10 s keeps p99 under the 15 s target and
/// far inside the 120 s creation → readable budget, while making 8 640 commits a day, not 86 400.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(10);

/// Rows that force a commit before the interval ends: bounds the buffer (a row holds about
/// 1 KiB in memory, so about 100 MiB) and keeps files of a size readers like.
pub const DEFAULT_COMMIT_ROWS: usize = 100_000;

/// How far back (by `received_at`) the in-memory set of `event_id`s reaches by default. The SDK
/// resends a batch whose acknowledgement was lost within minutes to hours; 48 h covers a phone
/// that was offline over a weekend day. An older duplicate is still caught, by a look into its
/// `event_date` partition ([`PARTITION_CHECK_SLACK`]).
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(48 * 3600);

/// An event whose `event_time` is earlier than the window's start plus this slack may have a
/// copy older than the window, so its partition is checked: clock correction can move a copy's
/// `event_time` by the device's clock error, which the collector bounds far below an hour.
pub const PARTITION_CHECK_SLACK: Duration = Duration::from_secs(3600);

/// Days on either side of an event's `event_date` searched for an older copy: a resent copy's
/// `event_time` is recomputed, and near midnight it can fall on the neighbouring day.
pub const PARTITION_CHECK_DAYS: i64 = 1;

/// Records asked for in one GetRecords call: the Kinesis maximum (10 000 records, 10 MiB).
pub const GET_RECORDS_LIMIT: i32 = 10_000;

/// Wait before polling a shard again after it returned nothing new. A shard serves 5
/// GetRecords calls per second shared by every consumer; the KCL waits 1 s too.
pub const IDLE_POLL: Duration = Duration::from_secs(1);

/// First wait after `ProvisionedThroughputExceededException` on a shard; it doubles up to
/// [`THROTTLE_BACKOFF_MAX`] and resets after a good read.
pub const THROTTLE_BACKOFF_MIN: Duration = Duration::from_millis(200);

/// Longest wait between reads of a throttled shard: a few seconds of lag, never a stop.
pub const THROTTLE_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// First wait after a failed commit (storage error, or another writer's commit in between); it
/// doubles up to [`COMMIT_RETRY_MAX`]. A commit is retried until it lands: nothing read is ever
/// given up.
pub const COMMIT_RETRY_MIN: Duration = Duration::from_millis(200);

/// Longest wait between commit attempts.
pub const COMMIT_RETRY_MAX: Duration = Duration::from_secs(30);

/// How often the shard list is read again when nothing forces it, to find shards a reshard
/// created and parents another worker finished.
pub const SHARD_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Decimal digits of a sequence number stored in one Delta `txn` version (a signed 64-bit
/// number holds any 18 digits). Kinesis sequence numbers have up to 129 digits.
pub const CHECKPOINT_CHUNK_DIGITS: usize = 18;

/// Records in one PutRecords call to the cleansed stream: the Kinesis maximum.
pub const PUT_RECORDS_MAX_RECORDS: usize = 500;

/// Bytes (data and partition keys) in one PutRecords call: the Kinesis maximum of 5 MiB.
pub const PUT_RECORDS_MAX_BYTES: usize = 5 * 1024 * 1024;

/// First wait after the cleansed stream refused a call or some records (throttling, an
/// outage); it doubles up to [`CLEAN_RETRY_MAX`]. Publishing never gives up: the table waits
/// for the stream, and a stop leaves the rest to the next start.
pub const CLEAN_RETRY_MIN: Duration = Duration::from_millis(100);

/// Longest wait between publish attempts: short enough that the cleansed stream catches up
/// within seconds of the end of an outage.
pub const CLEAN_RETRY_MAX: Duration = Duration::from_secs(5);

/// Days before `--from` whose raw records a backfill also reads: a copy of an event may
/// arrive before its corrected `event_time` by up to the device's clock error, which the
/// collector bounds far below a day.
pub const BACKFILL_RAW_SLACK_DAYS: i64 = 1;

/// Times a backfill computes and commits again after ingest (or another writer) committed to
/// the days it replaces meanwhile; each attempt re-reads `raw`, so nothing either wrote is lost.
pub const BACKFILL_ATTEMPTS: u32 = 20;
/// Size a compacted file aims at: the 128 MiB that Parquet readers (Spark, Trino, DataFusion)
/// are tuned for, and what one partition's rewrite holds in flight at most.
pub const COMPACT_TARGET_FILE_BYTES: u64 = 128 * 1024 * 1024;

/// Files below this size are compacted. Half the target: a file already that large gains little
/// from a rewrite, and a partition of big files and one late small file then rewrites only the
/// small ones, not the day's 100 MiB again for every late event.
pub const COMPACT_SMALL_FILE_BYTES: u64 = COMPACT_TARGET_FILE_BYTES / 2;

/// Attempts at one partition's compaction commit. Conflicts come only from another compactor
/// (each compaction commit carries a `txn` of its own, so two never both land) or a metadata
/// change; ingest's appends are rebased over by delta-rs. Giving up loses nothing: the files stay
/// as they were, and the next run compacts them.
pub const COMPACT_COMMIT_ATTEMPTS: u32 = 8;

/// First wait after a failed compaction commit; it doubles up to [`COMPACT_RETRY_MAX`].
pub const COMPACT_RETRY_MIN: Duration = Duration::from_millis(200);

/// Longest wait between compaction commit attempts: 8 attempts then take under a minute.
pub const COMPACT_RETRY_MAX: Duration = Duration::from_secs(10);

/// How long VACUUM keeps a file after a commit removed it, by default: Delta's own default
/// (`delta.deletedFileRetentionDuration`), so that a query or a time travel of the last week
/// still finds its files. Named snapshots keep theirs regardless.
pub const DEFAULT_VACUUM_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// A file that no commit ever referenced (a failed commit attempt's, a crashed writer's) is
/// deleted only once this old, whatever the retention: a writer's file is unreferenced from its
/// upload to its commit, and no commit attempt takes a day.
pub const ORPHAN_MIN_AGE: Duration = Duration::from_secs(24 * 3600);

/// Longest snapshot name: a file name (`_snapshots/NAME.json`) on every object store.
pub const SNAPSHOT_NAME_MAX: usize = 128;

/// Batch records (stream record v2) held in memory for the event records that join on them,
/// the oldest read forgotten first. The collector writes an upload's events right after its
/// batch record, on the same shard, so a batch record is needed for as long as the records of
/// the uploads in flight at once on the shards of one worker come between it and its last
/// event: far fewer than 50 000. A record is about 0.5 KiB with its context, so about 25 MiB;
/// one forgotten too early is found again in `batches`, only slower.
pub const BATCH_CACHE_RECORDS: usize = 50_000;
