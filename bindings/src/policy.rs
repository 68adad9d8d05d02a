//! The upload and buffer settings an app may tune, as the bindings' builders see them.
//!
//! Defaults come from the SDK's [`Policy`] (so there is one source of every number), and the
//! limits are those the SDK and the collector already have: a batch larger than the collector
//! takes would be refused there, and a zero count, size or delay would make the SDK spin or
//! keep nothing. The other settings of [`Policy`] (queue capacity, request timeout, the pauses
//! after a refused write key or a failing disk, the longest `Retry-After`, the file ceiling)
//! protect the SDK itself and stay at their defaults.

use std::time::Duration;

use tern_protocol::limits::{MAX_BODY_BYTES, MAX_DECOMPRESSED_BYTES, MAX_EVENTS_PER_BATCH};
use tern_sdk::policy::{MAX_BUFFER_BYTES, MAX_FILE_BYTES};
use tern_sdk::Policy;

use crate::ApiError;

/// The settings of [`Policy`] that an app may tune; build one from [`default_upload_policy`]
/// (or [`realtime_upload_policy`]) and change fields. Durations are in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct UploadPolicy {
    /// Upload what waits at least this often (default 10 s).
    pub flush_interval_ms: u64,
    /// Upload as soon as this many events wait unbatched (default 100).
    pub flush_at_count: u32,
    /// Most events in one batch (default 250; at most the collector's 500).
    pub max_batch_events: u32,
    /// Most uncompressed bytes of events in one batch (default 512 KiB; at most the collector's
    /// 5 MiB decompressed limit).
    pub max_batch_bytes: u64,
    /// Most compressed bytes of one upload (default 512 KiB; at most the collector's 1 MiB body
    /// limit).
    pub max_batch_compressed_bytes: u64,
    /// Most events the buffer keeps; beyond, the oldest are dropped and reported as a gap
    /// (default 100 000).
    pub max_buffer_events: u64,
    /// Most bytes of event JSON the buffer keeps; beyond, the oldest are dropped and reported
    /// (default 32 MiB).
    pub max_buffer_bytes: u64,
    /// Oldest event the buffer keeps; older ones are dropped and reported (default 30 days).
    pub max_event_age_ms: u64,
    /// Most batches kept in quarantine after the collector refused them (default 50; 0 keeps
    /// none).
    pub max_quarantine_batches: u64,
    /// Most bytes of event JSON kept in quarantine (default 4 MiB; 0 keeps none).
    pub max_quarantine_bytes: u64,
    /// First retry delay after a failed upload, before jitter (default 1 s).
    pub retry_min_delay_ms: u64,
    /// Longest retry delay (default 5 minutes).
    pub retry_max_delay_ms: u64,
    /// Longest retry delay after attempts that got no answer (offline; default 60 s), so that
    /// a device whose platform gives no "network is back" signal still uploads soon after.
    pub max_connectivity_retry_delay_ms: u64,
    /// A session ends after this long without a tracked event (default 30 minutes).
    pub session_timeout_ms: u64,
}

/// The SDK's default policy: uploads every 10 s or 100 events.
#[uniffi::export]
pub fn default_upload_policy() -> UploadPolicy {
    UploadPolicy::from(&Policy::default())
}

/// The SDK's realtime preset: uploads at every event and every 500 ms (events readable in under
/// 2 s), at the cost of a radio wake-up per burst of events.
#[uniffi::export]
pub fn realtime_upload_policy() -> UploadPolicy {
    UploadPolicy::from(&Policy::realtime())
}

/// Refuses a policy with a value out of range, naming the field; the builders call it when
/// they build, and the tracker again when it starts.
#[uniffi::export]
pub fn check_upload_policy(policy: UploadPolicy) -> Result<(), ApiError> {
    match policy_problem(&policy) {
        Some(reason) => Err(ApiError::InvalidInput { reason }),
        None => Ok(()),
    }
}

/// Why `p` cannot be used, or `None`.
fn policy_problem(p: &UploadPolicy) -> Option<String> {
    // The collector refuses a batch over these limits as a whole, so a larger setting would
    // make every batch fail.
    let batch_limits = [
        (
            "max_batch_events",
            u64::from(p.max_batch_events),
            MAX_EVENTS_PER_BATCH,
            "the collector's limit of events per batch",
        ),
        (
            "max_batch_bytes",
            p.max_batch_bytes,
            MAX_DECOMPRESSED_BYTES,
            "the collector's limit of decompressed bytes per batch",
        ),
        (
            "max_batch_compressed_bytes",
            p.max_batch_compressed_bytes,
            MAX_BODY_BYTES,
            "the collector's limit of bytes per request",
        ),
    ];
    for (field, value, limit, why) in batch_limits {
        if value == 0 || value > limit as u64 {
            return Some(format!(
                "{field} must be between 1 and {limit} ({why}), not {value}"
            ));
        }
    }
    // Zero would make the SDK spin (an interval, a count, a retry delay) or keep nothing (a
    // buffer cap: every event would be dropped as it is stored).
    let at_least_one = [
        ("flush_interval_ms", p.flush_interval_ms),
        ("flush_at_count", u64::from(p.flush_at_count)),
        ("max_buffer_events", p.max_buffer_events),
        ("max_buffer_bytes", p.max_buffer_bytes),
        ("max_event_age_ms", p.max_event_age_ms),
        ("retry_min_delay_ms", p.retry_min_delay_ms),
        (
            "max_connectivity_retry_delay_ms",
            p.max_connectivity_retry_delay_ms,
        ),
        ("session_timeout_ms", p.session_timeout_ms),
    ];
    for (field, value) in at_least_one {
        if value == 0 {
            return Some(format!("{field} must be at least 1, not 0"));
        }
    }
    if p.retry_min_delay_ms > p.retry_max_delay_ms {
        return Some(format!(
            "retry_min_delay_ms ({}) must not exceed retry_max_delay_ms ({})",
            p.retry_min_delay_ms, p.retry_max_delay_ms
        ));
    }
    None
}

impl From<&Policy> for UploadPolicy {
    fn from(p: &Policy) -> Self {
        Self {
            flush_interval_ms: millis(p.flush_interval),
            flush_at_count: u32::try_from(p.flush_at_count).unwrap_or(u32::MAX),
            max_batch_events: u32::try_from(p.max_batch_events).unwrap_or(u32::MAX),
            max_batch_bytes: p.max_batch_bytes as u64,
            max_batch_compressed_bytes: p.max_batch_compressed_bytes as u64,
            max_buffer_events: p.max_buffer_events,
            max_buffer_bytes: p.max_buffer_bytes,
            max_event_age_ms: millis(p.max_event_age),
            max_quarantine_batches: p.max_quarantine_batches,
            max_quarantine_bytes: p.max_quarantine_bytes,
            retry_min_delay_ms: millis(p.retry_min_delay),
            retry_max_delay_ms: millis(p.retry_max_delay),
            max_connectivity_retry_delay_ms: millis(p.max_connectivity_retry_delay),
            session_timeout_ms: millis(p.session_timeout),
        }
    }
}

impl UploadPolicy {
    /// The SDK's policy with these settings, the others at their defaults; refused when a value
    /// is out of range.
    pub(crate) fn to_policy(&self) -> Result<Policy, ApiError> {
        if let Some(reason) = policy_problem(self) {
            return Err(ApiError::InvalidInput { reason });
        }
        // The file ceiling is a multiple of the buffer's byte cap (room for SQLite's overhead
        // and the quarantine); a larger cap raises it in proportion, a smaller one keeps it.
        let file_ceiling_ratio = MAX_FILE_BYTES / MAX_BUFFER_BYTES;
        Ok(Policy {
            flush_at_count: usize::try_from(self.flush_at_count).unwrap_or(usize::MAX),
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            max_batch_events: usize::try_from(self.max_batch_events).unwrap_or(usize::MAX),
            max_batch_bytes: usize::try_from(self.max_batch_bytes).unwrap_or(usize::MAX),
            max_batch_compressed_bytes: usize::try_from(self.max_batch_compressed_bytes)
                .unwrap_or(usize::MAX),
            max_buffer_events: self.max_buffer_events,
            max_buffer_bytes: self.max_buffer_bytes,
            max_event_age: Duration::from_millis(self.max_event_age_ms),
            max_file_bytes: MAX_FILE_BYTES
                .max(self.max_buffer_bytes.saturating_mul(file_ceiling_ratio)),
            max_quarantine_batches: self.max_quarantine_batches,
            max_quarantine_bytes: self.max_quarantine_bytes,
            retry_min_delay: Duration::from_millis(self.retry_min_delay_ms),
            retry_max_delay: Duration::from_millis(self.retry_max_delay_ms),
            max_connectivity_retry_delay: Duration::from_millis(
                self.max_connectivity_retry_delay_ms,
            ),
            session_timeout: Duration::from_millis(self.session_timeout_ms),
            ..Policy::default()
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

    use super::*;

    #[test]
    fn the_defaults_and_the_realtime_preset_are_the_sdks() {
        assert_eq!(
            default_upload_policy().to_policy().unwrap(),
            Policy::default()
        );
        assert_eq!(
            realtime_upload_policy().to_policy().unwrap(),
            Policy::realtime()
        );
    }

    #[test]
    fn every_tuned_setting_reaches_the_sdks_policy() {
        let tuned = UploadPolicy {
            flush_interval_ms: 1_001,
            flush_at_count: 7,
            max_batch_events: 11,
            max_batch_bytes: 12_345,
            max_batch_compressed_bytes: 23_456,
            max_buffer_events: 99,
            max_buffer_bytes: 64 * 1024 * 1024,
            max_event_age_ms: 3_600_000,
            max_quarantine_batches: 3,
            max_quarantine_bytes: 0,
            retry_min_delay_ms: 250,
            retry_max_delay_ms: 60_000,
            max_connectivity_retry_delay_ms: 20_000,
            session_timeout_ms: 120_000,
        };
        let policy = tuned.to_policy().unwrap();
        assert_eq!(UploadPolicy::from(&policy), tuned);
        assert_eq!(
            policy.max_file_bytes,
            4 * 64 * 1024 * 1024,
            "the ceiling follows the cap"
        );
        let small = UploadPolicy {
            max_buffer_bytes: 1024,
            ..default_upload_policy()
        };
        assert_eq!(small.to_policy().unwrap().max_file_bytes, MAX_FILE_BYTES);
    }

    #[test]
    fn values_out_of_range_are_refused_with_the_fields_name() {
        let refused = |p: UploadPolicy| match check_upload_policy(p) {
            Err(ApiError::InvalidInput { reason }) => reason,
            other => panic!("accepted: {other:?}"),
        };
        let d = default_upload_policy;
        assert!(refused(UploadPolicy {
            max_batch_events: 501,
            ..d()
        })
        .contains("max_batch_events"));
        assert!(refused(UploadPolicy {
            max_batch_events: 0,
            ..d()
        })
        .contains("max_batch_events"));
        assert!(refused(UploadPolicy {
            max_batch_compressed_bytes: MAX_BODY_BYTES as u64 + 1,
            ..d()
        })
        .contains("max_batch_compressed_bytes"));
        assert!(refused(UploadPolicy {
            max_batch_bytes: MAX_DECOMPRESSED_BYTES as u64 + 1,
            ..d()
        })
        .contains("max_batch_bytes"));
        assert!(refused(UploadPolicy {
            flush_at_count: 0,
            ..d()
        })
        .contains("flush_at_count"));
        assert!(refused(UploadPolicy {
            flush_interval_ms: 0,
            ..d()
        })
        .contains("flush_interval_ms"));
        assert!(refused(UploadPolicy {
            max_buffer_events: 0,
            ..d()
        })
        .contains("max_buffer_events"));
        assert!(refused(UploadPolicy {
            retry_min_delay_ms: 10_000,
            retry_max_delay_ms: 1_000,
            ..d()
        })
        .contains("retry_min_delay_ms"));
        assert!(check_upload_policy(UploadPolicy {
            max_batch_events: 500,
            ..d()
        })
        .is_ok());
    }
}
