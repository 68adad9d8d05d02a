//! Limits of the Kinesis API and of how the sink calls it, each with its reason (Vector keeps
//! its `MAX_PAYLOAD_SIZE` and `MAX_PAYLOAD_EVENTS` beside its sink the same way).

use std::time::Duration;

/// Most records in one PutRecords call (Kinesis limit).
pub const MAX_RECORDS_PER_REQUEST: usize = 500;

/// Most bytes (data + partition keys) in one PutRecords call. Kinesis allows 10 MiB with large
/// records enabled and 5 MiB otherwise; 5 MiB works on every stream and on kinesalite.
pub const MAX_REQUEST_BYTES: usize = 5 * 1024 * 1024;

/// Largest record (data + partition key): the Kinesis default of 1 MiB.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Timeout of one PutRecords attempt. A healthy call takes tens of milliseconds; a hung one
/// must leave time within the ack deadline to retry.
pub const PUT_RECORDS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// First delay before retrying failed records (before jitter).
pub const PUT_RETRY_MIN_DELAY: Duration = Duration::from_millis(50);

/// Longest delay between retries of failed records.
pub const PUT_RETRY_MAX_DELAY: Duration = Duration::from_secs(2);

/// Longest delay between retries while Kinesis throttles but takes some records. Growing to it
/// spreads retries over Kinesis's per-second metering instead of hitting a throttled shard
/// every 50 ms; it stays short because an upload throttled at 50 % needs ~10 attempts, all
/// within the ack deadline (in the 200 000-event fault test, 9 of 800 uploads missed it, as
/// many as without growth).
pub const PUT_RETRY_MAX_DELAY_THROTTLED: Duration = Duration::from_millis(200);

/// How long the dispatcher waits for more uploads to share a call that is not full: short
/// against a PutRecords round trip (tens of ms), long enough to gather concurrent uploads.
pub const LINGER: Duration = Duration::from_millis(2);

/// Most PutRecords calls in flight for a lead submission (a v2 upload's batch record, then its
/// events: `dispatch::Linger::Lead`) to send its call without lingering. One call in flight is
/// a collector with time to spare; more is a busy one, whose calls must stay full. Measured at
/// saturation (v2, fake writes): batch records that never linger made calls 5 % smaller
/// (385-397 against 412-419 records) and gave 0.84-1.12 times the events per CPU-second (median
/// 0.92 of six rounds); with this bound the calls keep their size (401-416 records) and the
/// half-load ack p50 drops from 6.4-8.5 to 4.3-5.1 ms all the same (`docs/BENCHMARKS.md`,
/// *Seventh round*).
pub const LEAD_MAX_CALLS_IN_FLIGHT: usize = 1;

/// Queue length of submissions to the dispatcher; uploads wait (asynchronously) when it is full.
pub const DISPATCH_QUEUE: usize = 1024;
