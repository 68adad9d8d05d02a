//! What an app tunes: the [`Policy`] and its defaults, each with its reason. Limits the app
//! has no say in live with the module that owns them (the writer's group size, the store's
//! corrupt copies, ...); numbers shared with the collector come from `tern_protocol::limits`.

use std::time::Duration;

use tern_protocol::limits::{MAX_BODY_BYTES, MAX_EVENTS_PER_BATCH, SDK_REQUEST_TIMEOUT};

/// Upload and buffer policy of a [`crate::Tracker`].
///
/// The defaults suit an app that wants its events in the stream within 30 s at p99 while waking
/// the radio at most every 10 s; [`Policy::realtime`] trades battery for sub-2 s latency.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Upload as soon as this many events wait unbatched.
    pub flush_at_count: usize,
    /// Upload what waits at least this often.
    pub flush_interval: Duration,
    /// Most events in one batch.
    pub max_batch_events: usize,
    /// Most uncompressed bytes of events in one batch.
    pub max_batch_bytes: usize,
    /// Capacity of the hand-off queue between `track()` and the writer thread.
    pub queue_capacity: usize,
    /// Timeout of one upload request, connect included.
    pub request_timeout: Duration,
    /// First retry delay after a failed upload (before jitter).
    pub retry_min_delay: Duration,
    /// Longest retry delay.
    pub retry_max_delay: Duration,
    /// Longest retry delay after failures that got no answer at all (no network, DNS, connect,
    /// TLS, timeout), jitter included: bounds how long a device whose platform never says "the
    /// network is back" waits once it is.
    pub max_connectivity_retry_delay: Duration,
    /// Delay before trying again after the collector refused the write key (401).
    pub unauthorized_pause: Duration,
    /// Longest `Retry-After` honoured; a longer one is cut to this.
    pub max_retry_after: Duration,
    /// Most compressed bytes of one upload; a larger batch is split before it is sent.
    pub max_batch_compressed_bytes: usize,
    /// Most events the buffer keeps; beyond, the oldest are dropped and counted.
    pub max_buffer_events: u64,
    /// Most bytes (event JSON) the buffer keeps; beyond, the oldest are dropped and counted.
    pub max_buffer_bytes: u64,
    /// Oldest event the buffer keeps; older ones are dropped and counted.
    pub max_event_age: Duration,
    /// Hard ceiling of the database file; writes past it fail like on a full disk.
    pub max_file_bytes: u64,
    /// Most batches kept in quarantine; beyond, the oldest are dropped and counted.
    pub max_quarantine_batches: u64,
    /// Most bytes (event JSON) kept in quarantine; beyond, the oldest batches are dropped and
    /// counted.
    pub max_quarantine_bytes: u64,
    /// A session ends after this long without a tracked event.
    pub session_timeout: Duration,
    /// After a storage failure, `track()` refuses events at once for this long before trying the
    /// disk again, so a full disk costs the app nothing but a counter.
    pub storage_retry_after: Duration,
}

/// Default upload interval: 10 s keeps the radio mostly idle; with the collector's answer well
/// under a second, events are readable in under 30 s at p99 on a device that is online.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// Default count trigger: 100 events (~10-20 KiB compressed) is worth waking the radio for.
pub const DEFAULT_FLUSH_AT_COUNT: usize = 100;
/// Events per batch: half the collector's limit (one PutRecords call), so that a batch is never
/// refused for its count.
pub const MAX_BATCH_EVENTS: usize = MAX_EVENTS_PER_BATCH / 2;
/// Uncompressed bytes per batch: 512 KiB compresses to well under the collector's body limit
/// (`MAX_BODY_BYTES`, 1 MiB) and its decompressed limit (`MAX_DECOMPRESSED_BYTES`, 5 MiB), even
/// for incompressible properties.
pub const MAX_BATCH_BYTES: usize = 512 * 1024;
/// Hand-off queue capacity: at ~1 KiB per queued event, 10 000 events bound the queue's memory
/// to ~10 MiB while absorbing bursts far larger than the writer's group size.
pub const QUEUE_CAPACITY: usize = 10_000;
/// Upload request timeout: the protocol's, which the collector's acknowledgement deadline stays
/// well within, so that the collector answers 503 before the SDK gives up on the request.
pub const REQUEST_TIMEOUT: Duration = SDK_REQUEST_TIMEOUT;
/// First retry after 1 s: a blip of the network heals in about that time.
pub const RETRY_MIN_DELAY: Duration = Duration::from_secs(1);
/// Retries back off to at most 5 minutes: a device offline for days costs few wake-ups.
pub const RETRY_MAX_DELAY: Duration = Duration::from_secs(300);
/// Longest wait after connectivity failures: 60 s. A device whose platform gives no network
/// signal then tries again within 60 s of the network's return, and delivers its backlog well
/// within the 120 s promise (the `network outage` row of docs/RELIABILITY.md measures it);
/// an attempt with no network fails at once, so one a minute costs little battery.
pub const MAX_CONNECTIVITY_RETRY_DELAY: Duration = Duration::from_secs(60);
/// A refused write key is a configuration error that a release fixes; retry hourly meanwhile.
pub const UNAUTHORIZED_PAUSE: Duration = Duration::from_secs(3600);
/// Longest `Retry-After` honoured: the collector asks for seconds; a server asking for more than
/// an hour (or an HTTP-date far away) is misconfigured, and must not stall a buffer for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Compressed upload limit: half the collector's body limit.
pub const MAX_BATCH_COMPRESSED_BYTES: usize = MAX_BODY_BYTES / 2;
/// Buffer cap in events: 100 000 events is days of heavy use offline.
pub const MAX_BUFFER_EVENTS: u64 = 100_000;
/// Buffer cap in bytes: 32 MiB of event JSON (~100 000 events of ~300 B) is little next to the
/// app's own data, and SQLite stays fast at that size.
pub const MAX_BUFFER_BYTES: u64 = 32 * 1024 * 1024;
/// Age cap: the protocol's, so that the collector never refuses a buffered event for its age
/// (events older than 30 days have lost most of their value; a phone that comes back after a
/// month still delivers the last 30 days).
pub use tern_protocol::limits::MAX_BUFFERED_EVENT_AGE;
/// Hard file ceiling: 4x the byte cap leaves room for SQLite's overhead and the quarantine.
pub const MAX_FILE_BYTES: u64 = 4 * MAX_BUFFER_BYTES;
/// Quarantine cap in batches: QA needs a few examples of a malformed batch, not thousands.
pub const MAX_QUARANTINE_BATCHES: u64 = 50;
/// Quarantine cap in bytes: 4 MiB, an eighth of the buffer's byte cap, so that the quarantine
/// can never fill the database file.
pub const MAX_QUARANTINE_BYTES: u64 = 4 * 1024 * 1024;
/// Session timeout: 30 minutes of inactivity, the common analytics definition.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Storage back-off: one disk probe per second at most while storage fails.
pub const STORAGE_RETRY_AFTER: Duration = Duration::from_secs(1);

impl Default for Policy {
    fn default() -> Self {
        Self {
            flush_at_count: DEFAULT_FLUSH_AT_COUNT,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            max_batch_events: MAX_BATCH_EVENTS,
            max_batch_bytes: MAX_BATCH_BYTES,
            queue_capacity: QUEUE_CAPACITY,
            request_timeout: REQUEST_TIMEOUT,
            retry_min_delay: RETRY_MIN_DELAY,
            retry_max_delay: RETRY_MAX_DELAY,
            max_connectivity_retry_delay: MAX_CONNECTIVITY_RETRY_DELAY,
            unauthorized_pause: UNAUTHORIZED_PAUSE,
            max_retry_after: MAX_RETRY_AFTER,
            max_batch_compressed_bytes: MAX_BATCH_COMPRESSED_BYTES,
            max_buffer_events: MAX_BUFFER_EVENTS,
            max_buffer_bytes: MAX_BUFFER_BYTES,
            max_event_age: MAX_BUFFERED_EVENT_AGE,
            max_file_bytes: MAX_FILE_BYTES,
            max_quarantine_batches: MAX_QUARANTINE_BATCHES,
            max_quarantine_bytes: MAX_QUARANTINE_BYTES,
            session_timeout: SESSION_TIMEOUT,
            storage_retry_after: STORAGE_RETRY_AFTER,
        }
    }
}

impl Policy {
    /// The longest delay before a batch's next attempt that this policy can ask for. A stored
    /// next-attempt time further away than this from now comes from a wall clock that moved
    /// back; it is cut to now + this.
    pub fn longest_retry_delay(&self) -> Duration {
        self.retry_max_delay
            .max(self.unauthorized_pause)
            .max(self.max_retry_after)
    }

    /// Sub-2-second delivery: upload every 500 ms and at every event. Costs a radio wake-up per
    /// burst of events; meant for foreground, interactive use cases.
    pub fn realtime() -> Self {
        Self {
            flush_at_count: 1,
            flush_interval: Duration::from_millis(500),
            ..Self::default()
        }
    }
}
