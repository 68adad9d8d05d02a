//! When failed records are sent again, and which failures are faults of the request itself.
//!
//! Every failed record is retried until the upload's deadline, whatever the error: an upload is
//! acknowledged only when all of its records are in the stream, so giving up early would only
//! turn into a 503 sooner (the SDK keeps the batch either way). Errors that retrying cannot fix
//! ([`is_permanent`]) are logged at `error` so that an operator sees them.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use super::limits::{PUT_RETRY_MAX_DELAY, PUT_RETRY_MAX_DELAY_THROTTLED, PUT_RETRY_MIN_DELAY};

/// The Kinesis error code of a throttled record: backpressure, not a fault.
pub const THROTTLED: &str = "ProvisionedThroughputExceededException";

/// Error codes of a whole PutRecords call that mean "slow down" rather than "broken".
const THROTTLING_CALL_ERRORS: [&str; 4] = [
    THROTTLED,
    "LimitExceededException",
    "ThrottlingException",
    "KMSThrottlingException",
];

/// Error codes that retrying the same request cannot fix: a malformed or oversized request, a
/// missing stream, missing permissions, an unusable KMS key, bad credentials.
const PERMANENT_ERRORS: [&str; 11] = [
    "ValidationException",
    "InvalidArgumentException",
    "ResourceNotFoundException",
    "AccessDeniedException",
    "KMSAccessDeniedException",
    "KMSDisabledException",
    "KMSInvalidStateException",
    "KMSNotFoundException",
    "KMSOptInRequired",
    "UnrecognizedClientException",
    "ExpiredTokenException",
];

/// Whether an error code means Kinesis is pacing us.
pub fn is_throttling(code: &str) -> bool {
    THROTTLING_CALL_ERRORS.contains(&code)
}

/// Whether retrying cannot fix an error (it still is retried until the deadline: see above).
pub fn is_permanent(code: &str) -> bool {
    PERMANENT_ERRORS.contains(&code)
}

/// The label value of an error code: a known Kinesis code, or `other` (codes come from the
/// network, and label values must stay few).
pub fn code_label(code: &str) -> &'static str {
    THROTTLING_CALL_ERRORS
        .iter()
        .chain(&PERMANENT_ERRORS)
        .chain(&[
            "InternalFailure",
            "ServiceUnavailable",
            "timeout",
            "network",
        ])
        .find(|known| **known == code)
        .copied()
        .unwrap_or("other")
}

/// The backoff of one upload's retries.
///
/// Two things grow the delay, each an exponential backoff of its own (backon's, without jitter)
/// with its own ceiling, and the longer delay wins: attempts that wrote nothing (a failed call,
/// an outage) grow it up to [`PUT_RETRY_MAX_DELAY`]; attempts with throttled records grow it up to
/// [`PUT_RETRY_MAX_DELAY_THROTTLED`] even if other records got through, since throttling is Kinesis
/// pacing us (backpressure). An attempt that made progress without throttling (a few records
/// failed with `InternalFailure`, say) retries the rest after the shortest delay.
#[derive(Debug)]
pub struct Backoff {
    fruitless: Growth,
    throttled: Growth,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            fruitless: Growth::new(PUT_RETRY_MAX_DELAY),
            throttled: Growth::new(PUT_RETRY_MAX_DELAY_THROTTLED),
        }
    }
}

impl Backoff {
    /// Records how an attempt went.
    pub fn after_attempt(&mut self, progressed: bool, throttled: bool) {
        if progressed {
            self.fruitless.reset();
        } else {
            self.fruitless.grow();
        }
        if throttled {
            self.throttled.grow();
        } else {
            self.throttled.reset();
        }
    }

    /// The delay without jitter: exponential from [`PUT_RETRY_MIN_DELAY`], the longer of the two
    /// growths.
    pub fn base_delay(&self) -> Duration {
        self.fruitless
            .delay
            .max(self.throttled.delay)
            .unwrap_or(PUT_RETRY_MIN_DELAY)
            .max(PUT_RETRY_MIN_DELAY)
    }

    /// The delay before the next attempt: between half of [`Backoff::base_delay`] and all of it
    /// ("equal jitter": uploads retrying together spread out, and the mean stays at 3/4 of the
    /// base, which matters when ten attempts must fit one ack deadline).
    pub fn delay(&self) -> Duration {
        let half = self.base_delay() / 2;
        // backon adds a random part of up to the delay itself.
        ExponentialBuilder::default()
            .with_min_delay(half)
            .with_max_delay(half)
            .with_jitter()
            .build()
            .next()
            .unwrap_or(half)
    }
}

/// One growth of the delay: [`PUT_RETRY_MIN_DELAY`], doubling on each [`Growth::grow`] up to its
/// ceiling, back to nothing on [`Growth::reset`].
#[derive(Debug)]
struct Growth {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    /// The delay of the last growth; `None` until it grows.
    delay: Option<Duration>,
}

impl Growth {
    fn new(ceiling: Duration) -> Self {
        let builder = ExponentialBuilder::default()
            .with_min_delay(PUT_RETRY_MIN_DELAY)
            .with_max_delay(ceiling)
            .without_max_times();
        Self {
            builder,
            delays: builder.build(),
            delay: None,
        }
    }

    fn grow(&mut self) {
        // Without a limit of times (nor of total delay) the delays never run out; were they
        // to, the last one stays.
        self.delay = self.delays.next().or(self.delay);
    }

    fn reset(&mut self) {
        self.delays = self.builder.build();
        self.delay = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(outcomes: &[(bool, bool)]) -> Backoff {
        let mut backoff = Backoff::default();
        for (progressed, throttled) in outcomes {
            backoff.after_attempt(*progressed, *throttled);
        }
        backoff
    }

    #[test]
    fn delays_grow_and_stay_bounded() {
        let mut backoff = Backoff::default();
        for _ in 1..50 {
            backoff.after_attempt(false, false);
            let delay = backoff.delay();
            let base = backoff.base_delay();
            assert!(delay >= base / 2 && delay <= base, "{delay:?} for {base:?}");
            assert!(delay <= PUT_RETRY_MAX_DELAY, "{delay:?}");
        }
        assert_eq!(backoff.base_delay(), PUT_RETRY_MAX_DELAY);
    }

    /// Partial progress under throttling used to reset the delay to the minimum, so a throttled
    /// shard was hit again every ~50 ms; now the delay grows while throttling lasts.
    #[test]
    fn throttling_grows_the_delay_even_when_some_records_get_through() {
        let throttled = after(&[(true, true); 3]);
        assert_eq!(throttled.base_delay(), PUT_RETRY_MIN_DELAY * 4);
        assert!(throttled.delay() >= PUT_RETRY_MIN_DELAY * 2);
        let long = after(&[(true, true); 20]);
        assert_eq!(long.base_delay(), PUT_RETRY_MAX_DELAY_THROTTLED);
        assert!(long.delay() >= PUT_RETRY_MAX_DELAY_THROTTLED / 2);
        assert!(long.delay() <= PUT_RETRY_MAX_DELAY_THROTTLED);
        // Progress without throttling retries the rest soon.
        let recovered = after(&[(true, true), (true, true), (true, false)]);
        assert_eq!(recovered.base_delay(), PUT_RETRY_MIN_DELAY);
        // A failed call after throttled progress starts its own growth from the bottom, and
        // its ceiling is the longer one.
        let failed = after(&[(true, true), (true, true), (true, true), (false, false)]);
        assert_eq!(failed.base_delay(), PUT_RETRY_MIN_DELAY);
        let outage = after(&[(false, false); 10]);
        assert_eq!(outage.base_delay(), PUT_RETRY_MAX_DELAY);
    }

    #[test]
    fn codes_are_classified_and_labels_stay_few() {
        assert!(is_throttling(THROTTLED));
        assert!(!is_permanent(THROTTLED));
        assert!(is_permanent("ValidationException"));
        assert!(is_permanent("ResourceNotFoundException"));
        assert!(!is_permanent("InternalFailure"));
        assert_eq!(code_label("ValidationException"), "ValidationException");
        assert_eq!(code_label("timeout"), "timeout");
        assert_eq!(code_label("SomethingNew"), "other");
    }
}
