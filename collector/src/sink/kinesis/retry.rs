//! When failed records are sent again. Every error code Kinesis documents for PutRecords
//! entries (throughput exceeded, internal failure, KMS throttling) is transient, so every
//! failed record is retried until the upload's deadline.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::limits::{RETRY_MAX_DELAY, RETRY_MIN_DELAY};

/// The Kinesis error code of a throttled record: backpressure, not a fault.
pub const THROTTLED: &str = "ProvisionedThroughputExceededException";

/// Delay before the `attempt`-th retry (1-based): exponential with jitter, between
/// [`RETRY_MIN_DELAY`] and twice [`RETRY_MAX_DELAY`].
pub fn delay(attempt: u32) -> Duration {
    ExponentialBuilder::default()
        .with_min_delay(RETRY_MIN_DELAY)
        .with_max_delay(RETRY_MAX_DELAY)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(RETRY_MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_bounded() {
        assert!(delay(1) >= RETRY_MIN_DELAY);
        for attempt in 1..50 {
            assert!(delay(attempt) <= RETRY_MAX_DELAY * 2);
        }
    }
}
