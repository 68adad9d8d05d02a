//! Every limit and default of the collector, in one place, each with its reason.
//!
//! Wire-format limits shared with the SDK live in `tern_protocol::limits` (re-exported here);
//! the limits of the Kinesis API, beside the sink, in `crate::sink::kinesis::limits`. A number
//! that follows from another is derived from it here, in code.

use std::time::Duration;

pub use tern_protocol::limits::*;

use crate::sink::kinesis::limits::MAX_RECORD_BYTES;

/// Longest string field (`name`, `user_id`, `session_id`, ...) of an event kept in its dead
/// letter when the whole event would not fit a record; a longer one is cut to this prefix, with a
/// note of its size. 128 times the longest valid id: plenty to see what a client sent. Escaped
/// for JSON a string grows at most 6×, so three such fields take under 300 KiB.
pub const MAX_DEAD_LETTER_FIELD_BYTES: usize = 16 * 1024;

/// Largest serialized `properties` kept in a dead letter when the whole event would not fit a
/// record; larger ones are replaced by a note of their size. Half a record: with the cut string
/// fields and the letter's own fields the dead letter stays under [`MAX_RECORD_BYTES`].
pub const MAX_DEAD_LETTER_PROPERTIES_BYTES: usize = MAX_RECORD_BYTES / 2;

/// Longest `message` of the minimal dead letter, the last resort when even the cut event does not
/// fit. The collector's messages are a line of text; the bound keeps that letter small whatever
/// a message may come to hold.
pub const MAX_DEAD_LETTER_MESSAGE_BYTES: usize = 1024;

/// Longest app id of a write key (config check). It is copied into every record and dead letter:
/// as long as the longest client id ([`MAX_ID_BYTES`]), negligible against [`MAX_RECORD_BYTES`].
pub const MAX_APP_ID_BYTES: usize = 256;

/// Longest `instance_id` (config check): copied into every record and dead letter, like the app id.
pub const MAX_INSTANCE_ID_BYTES: usize = 256;

/// How long an upload may take, from its arrival to its answer, before it is answered 503:
/// 10 s, a third of the SDK's request timeout ([`SDK_REQUEST_TIMEOUT`]), so the SDK hears the
/// answer with time to spare. A configured deadline must stay below that timeout (config check).
pub const DEFAULT_ACK_DEADLINE: Duration =
    Duration::from_millis(SDK_REQUEST_TIMEOUT.as_millis() as u64 / 3);

/// `Retry-After` sent with 503 when the stream did not take a batch in time: long enough for a
/// throttled shard to recover, short against the 120 s end-to-end budget.
pub const RETRY_AFTER_STREAM_UNAVAILABLE: Duration = Duration::from_secs(5);

/// How long a slow client may take to send its request body (or until the ack deadline, if
/// sooner): then it gets 408.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Default time a client may take to send its request line and headers, from the moment the
/// connection is ready for a request (also the longest a kept-alive connection may idle). A
/// phone sends its few hundred bytes of headers in one packet; 10 s covers a slow radio, and a
/// slow-loris client holds a connection no longer.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most connections served at once; beyond, the collector stops accepting until one closes.
/// Each costs a task and a read buffer of up to [`MAX_CONNECTION_BUFFER_BYTES`]: 4 096 × 64 KiB
/// bounds that memory to 256 MiB at worst, typically a few MiB.
pub const MAX_CONNECTIONS: usize = 4096;

/// Largest read buffer of one connection (request line, headers, body chunks). hyper's default
/// is ~400 KiB; SDK headers are a few hundred bytes.
pub const MAX_CONNECTION_BUFFER_BYTES: usize = 64 * 1024;

/// Uploads decoded (decompressed, parsed, enriched) at once per CPU core. Decoding is CPU-bound,
/// so more at once gains nothing; each can hold up to ~3 × [`MAX_DECOMPRESSED_BYTES`] before
/// its records are reserved, so this bounds that memory too (2 × 15 MiB per core).
pub const DECODES_PER_CORE: usize = 2;

/// Bytes per record beyond the event's own properties, context and SDK fields, for the
/// reservation made before building records (keys, ids, timestamps, app and collector ids).
/// Only an estimate: the reservation is corrected to the records' real size once built.
pub const RECORD_OVERHEAD_ESTIMATE: usize = 1024;

/// Most bytes of records one upload may hold. Far above any SDK batch (at most 5 MiB of JSON,
/// plus 2 MiB of copied context); a batch whose records would exceed it gets 413 and the SDK
/// splits it. The in-flight bound must hold at least this much (config check).
pub const MAX_UPLOAD_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// Default bound on the bytes of uploads being processed (bodies being read, decoded batches,
/// records waiting for Kinesis).
/// 256 MiB keeps the collector far below its 1 GiB container limit however slow Kinesis gets;
/// above it new uploads get 503 at once and the SDKs back off.
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: usize = 256 * 1024 * 1024;

/// `Retry-After` sent when the collector sheds load: short, since it frees within an ack deadline.
pub const RETRY_AFTER_OVERLOADED: Duration = Duration::from_secs(2);

/// How many acknowledged batch ids an instance remembers to answer a resend without writing it
/// again: ~100 000 × ~100 bytes = ~10 MiB, minutes of traffic at 1 000 uploads/s.
pub const ACKED_BATCHES_REMEMBERED: usize = 100_000;

/// Default time a SIGTERM'd collector gives in-flight uploads to finish: twice the ack deadline
/// (20 s).
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration =
    Duration::from_millis(DEFAULT_ACK_DEADLINE.as_millis() as u64 * 2);

/// Default time a SIGTERM'd collector keeps serving while unready, before it refuses new
/// connections: the load balancer must notice first. 15 s is above Kubernetes' default readiness
/// period (10 s, one failed probe). AWS ALB's defaults (30 s interval × 2 unhealthy checks; target
/// groups also deregister on their own) need 60 s or more: there, set it to interval ×
/// unhealthy threshold. With the shutdown deadline the exit takes up to 35 s: set
/// `terminationGracePeriodSeconds` above that.
pub const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::from_secs(15);

/// How often readiness asks Kinesis whether the stream answers.
pub const READINESS_INTERVAL: Duration = Duration::from_secs(5);

/// Consecutive readiness checks that must agree before readiness flips (hysteresis).
pub const READINESS_FLIP_AFTER: u32 = 2;

/// Oldest corrected event time accepted into the stream: 60 days. An SDK buffer drops events
/// older than [`MAX_BUFFERED_EVENT_AGE`] (30 days), so anything beyond twice that is a broken
/// clock or a forged event (dead-lettered).
pub const MAX_ACCEPTED_EVENT_AGE: Duration =
    Duration::from_secs(MAX_BUFFERED_EVENT_AGE.as_secs() * 2);

/// Past the body limit the collector reads on (discarding, never storing) up to this many bytes,
/// so an ordinary client receives its 413 rather than a reset mid-send; then it cuts off.
pub const MAX_DRAINED_BYTES: usize = 16 * 1024 * 1024;

/// Largest first allocation of an upload's record buffer (all its records, one after the other;
/// `enrich::prepare`): sized from the first record times the events, so that a typical upload
/// (500 records of ~1 KB) needs one allocation, but capped at a Kinesis request's worth.
pub const MAX_FIRST_RECORDS_BUFFER_BYTES: usize = 5 * 1024 * 1024;

/// Largest decompressed batch decoded on the async worker that received it rather than on the
/// blocking pool: parsing and enriching 64 KiB of JSON takes well under a millisecond, less than
/// the two thread hand-offs cost at saturation; larger batches (up to 5 MiB) go to the pool.
pub const INLINE_DECODE_MAX_BYTES: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    /// The derived limits keep the values they had as literals.
    #[test]
    fn derived_limits_keep_their_values() {
        assert_eq!(DEFAULT_ACK_DEADLINE, Duration::from_secs(10));
        assert_eq!(DEFAULT_SHUTDOWN_DEADLINE, Duration::from_secs(20));
        assert_eq!(MAX_ACCEPTED_EVENT_AGE, Duration::from_secs(60 * 24 * 3600));
        assert_eq!(MAX_DEAD_LETTER_PROPERTIES_BYTES, 512 * 1024);
    }
}
