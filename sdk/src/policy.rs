//! Every limit and default of the SDK, in one place, each with its reason.

use std::time::Duration;

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
    /// Delay before trying again after the collector refused the write key (401).
    pub unauthorized_pause: Duration,
}

/// Default upload interval: 10 s keeps the radio mostly idle; with the collector's answer well
/// under a second, events are readable in under 30 s at p99 on a device that is online.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// Default count trigger: 100 events (~10-20 KiB compressed) is worth waking the radio for.
pub const DEFAULT_FLUSH_AT_COUNT: usize = 100;
/// Events per batch: half the collector's limit of 500 (one PutRecords call).
pub const MAX_BATCH_EVENTS: usize = 250;
/// Uncompressed bytes per batch: 512 KiB compresses to well under the collector's 1 MiB body
/// limit and its 5 MiB decompressed limit, even for incompressible properties.
pub const MAX_BATCH_BYTES: usize = 512 * 1024;
/// Hand-off queue capacity: at ~1 KiB per queued event, 10 000 events bound the queue's memory
/// to ~10 MiB while absorbing bursts far larger than the writer's group size.
pub const QUEUE_CAPACITY: usize = 10_000;
/// Upload request timeout: longer than the collector's acknowledgement deadline (10 s), so that
/// the collector answers 503 before the SDK gives up on the request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// First retry after 1 s: a blip of the network heals in about that time.
pub const RETRY_MIN_DELAY: Duration = Duration::from_secs(1);
/// Retries back off to at most 5 minutes: a device offline for days costs few wake-ups.
pub const RETRY_MAX_DELAY: Duration = Duration::from_secs(300);
/// A refused write key is a configuration error that a release fixes; retry hourly meanwhile.
pub const UNAUTHORIZED_PAUSE: Duration = Duration::from_secs(3600);
/// Most events the writer commits in one transaction; bounds a transaction's duration.
pub const MAX_GROUP_COMMIT: usize = 2_000;

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
            unauthorized_pause: UNAUTHORIZED_PAUSE,
        }
    }
}

impl Policy {
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
