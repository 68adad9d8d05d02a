//! The uploader thread: sends the batches, oldest first, when they are due, and decides from
//! each answer what becomes of the batch and how long to back off.

use std::sync::atomic::Ordering;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::encode::encode_batch;
use super::{send, Outcome};
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::shared::{enforce_caps, persist_drops, read, recover_if_corrupt, Shared};
use crate::store::{meta_key, BatchRow, QuarantineCaps, Split, Store};
use crate::transport::Transport;

/// The uploader thread: a cycle at every wake-up (enough events waiting, a flush, the network
/// back) and after every wait it set itself; returns when the tracker stops.
pub(crate) fn run_uploader(shared: &Shared, transport: &dyn Transport, wake: &Receiver<()>) {
    let mut wait = shared.policy.flush_interval;
    loop {
        match wake.recv_timeout(wait) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let upload_now = shared.upload_now.swap(false, Ordering::SeqCst);
        if shared.opted_out.load(Ordering::SeqCst) {
            wait = shared.policy.flush_interval;
            continue;
        }
        wait = match deliver_due(shared, transport, upload_now) {
            Ok(wait) => wait,
            Err(e) => {
                tracing::error!(error = %e, "upload cycle failed");
                recover_if_corrupt(&mut shared.store(), &e);
                shared.policy.flush_interval
            }
        };
    }
}

/// Sends batches, oldest first, until the buffer is empty or a batch must wait; returns how long
/// to sleep before the next cycle. With `upload_now`, a batch waiting out a backoff that came
/// from connectivity failures is sent at once.
fn deliver_due(shared: &Shared, transport: &dyn Transport, upload_now: bool) -> Result<Duration> {
    let policy = &shared.policy;
    shared.store().set_in_flight(None);
    enforce_caps(shared)?;
    loop {
        if shared.stopping.load(Ordering::SeqCst) || shared.opted_out.load(Ordering::SeqCst) {
            return Ok(policy.flush_interval);
        }
        let now = Utc::now().timestamp_millis();
        let (batch, bodies, highest, marks) = {
            let mut store = shared.store();
            let batch = match store.oldest_batch()? {
                Some(b) => b,
                None => {
                    // Drops counted while the writer had nothing to commit (track() refusing
                    // events after a storage failure) ride with this batch too.
                    persist_drops(shared, &mut store);
                    let context = read(&shared.context).clone();
                    let cut = store.cut_batch_unmarked(
                        policy.max_batch_events,
                        policy.max_batch_bytes,
                        &context,
                        now,
                    )?;
                    match cut {
                        Some(b) => b,
                        None => return Ok(policy.flush_interval),
                    }
                }
            };
            let latest = latest_next_attempt(policy, now);
            let mut next_attempt_ms = batch.next_attempt_ms;
            if next_attempt_ms > latest {
                // The wall clock moved back while it waited: bring it within reach, for good.
                store.clamp_next_attempts(latest)?;
                next_attempt_ms = latest;
            }
            let last_failure = LastFailure::from_u8(shared.last_failure.load(Ordering::SeqCst));
            if !attempt_due(next_attempt_ms, now, last_failure, upload_now) {
                let until_due = Duration::from_millis((next_attempt_ms - now).unsigned_abs());
                return Ok(until_due.min(policy.flush_interval));
            }
            let bodies = store.batch_bodies(batch.batch_id)?;
            let highest = store.batch_highest_seq(&batch)?;
            // From here until its answer is handled, the caps leave this batch alone.
            store.set_in_flight(Some(batch.batch_id));
            (batch, bodies, highest, store.seq_marks())
        };
        // The identity file's marks are written without the store's lock (see `SeqMarks`):
        // durably before the batch is first sent, whether it was cut just now or in an earlier
        // run of the app.
        if let Err(e) = marks.mark_batched(highest) {
            shared.store().set_in_flight(None);
            return Err(e);
        }
        let outcome = match encode_batch(&batch, &shared.install_id, bodies, &shared.clock) {
            // What was written down no longer parses (a damaged row, or a context from another
            // SDK version): it never will. Quarantined like a batch the collector refused, out
            // of the way of the batches behind it.
            Err(Error::Json(e)) => {
                Outcome::Rejected(format!("the stored batch cannot be encoded: {e}"))
            }
            Err(e) => {
                shared.store().set_in_flight(None);
                return Err(e);
            }
            Ok(encoded) if encoded.body.len() > policy.max_batch_compressed_bytes => {
                Outcome::TooLarge(format!(
                    "{} bytes compressed, over the SDK's limit of {}",
                    encoded.body.len(),
                    policy.max_batch_compressed_bytes
                ))
            }
            Ok(encoded) => send(
                transport,
                &shared.endpoint,
                &shared.write_key,
                &encoded,
                policy.request_timeout,
            ),
        };
        let mut store = shared.store();
        store.set_in_flight(None);
        let failure = match outcome {
            Outcome::Unreachable(_) => LastFailure::Connectivity,
            Outcome::Retry { .. } | Outcome::Unauthorized(_) => LastFailure::Server,
            Outcome::Delivered
            | Outcome::PartlyRefused(_)
            | Outcome::Conflict(_)
            | Outcome::TooLarge(_)
            | Outcome::Rejected(_) => LastFailure::None,
        };
        set_last_failure(shared, &store, failure);
        match outcome {
            Outcome::Delivered => {
                store.delete_batch_unmarked(&batch)?;
                // Counted before the lock goes: whoever sees the buffer drained sees it counted.
                shared
                    .counters
                    .batches_delivered
                    .fetch_add(1, Ordering::Relaxed);
                drop(store);
                marks.mark_acked(highest);
            }
            Outcome::Unreachable(reason) => {
                let delay = connectivity_backoff(policy, batch.attempts + 1);
                return fail(shared, &mut store, &batch, delay, &reason);
            }
            Outcome::Retry { after, reason } => {
                let after = after.unwrap_or_default().min(policy.max_retry_after);
                let delay = backoff(policy, batch.attempts + 1).max(after);
                return fail(shared, &mut store, &batch, delay, &reason);
            }
            Outcome::Unauthorized(reason) => {
                tracing::warn!("the collector refused the write key; uploads pause");
                return fail(
                    shared,
                    &mut store,
                    &batch,
                    policy.unauthorized_pause,
                    &reason,
                );
            }
            Outcome::TooLarge(reason) => match store.split_batch(&batch, now)? {
                Split::Halves | Split::Gone => {}
                Split::SingleEvent => {
                    tracing::warn!(%reason, "a single event is too large to upload; quarantined");
                    store.quarantine_batch(&batch, &reason, now, &QuarantineCaps::from(policy))?;
                }
            },
            Outcome::PartlyRefused(refused) => {
                let quarantined = store.settle_partly_refused(
                    &batch,
                    &refused,
                    now,
                    &QuarantineCaps::from(policy),
                )?;
                tracing::warn!(
                    batch_id = %batch.batch_id,
                    refused = quarantined,
                    "the collector refused events of a batch; they were quarantined"
                );
                shared
                    .counters
                    .batches_delivered
                    .fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Conflict(reason) => {
                // Nothing was written under the new id yet: the same content goes at once.
                if let Some(renewed) = store.renew_batch_id(&batch, now)? {
                    tracing::warn!(
                        %reason,
                        old = %batch.batch_id,
                        new = %renewed.batch_id,
                        "batch_id already used for other content; sending under a new one"
                    );
                }
            }
            // A batch of gap reports only has nothing to quarantine; an older collector may
            // refuse a batch without events: keep the reports and try again later.
            Outcome::Rejected(reason) if batch.event_count == 0 => {
                let delay = backoff(policy, batch.attempts + 1);
                return fail(shared, &mut store, &batch, delay, &reason);
            }
            Outcome::Rejected(reason) => {
                if store.quarantine_batch(&batch, &reason, now, &QuarantineCaps::from(policy))? {
                    tracing::warn!(%reason, batch_id = %batch.batch_id, "a batch was quarantined");
                }
            }
        }
    }
}

fn fail(
    shared: &Shared,
    store: &mut Store,
    batch: &BatchRow,
    delay: Duration,
    reason: &str,
) -> Result<Duration> {
    shared
        .counters
        .upload_failures
        .fetch_add(1, Ordering::Relaxed);
    let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
    let next = Utc::now().timestamp_millis() + delay_ms;
    store.record_failure(batch.batch_id, batch.attempts + 1, next, reason)?;
    tracing::debug!(batch_id = %batch.batch_id, ?delay, reason, "upload failed; will retry");
    Ok(delay.min(shared.policy.flush_interval))
}

/// What the last upload attempt ended with, which decides whether its backoff may be skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum LastFailure {
    /// It did not fail (or nothing was sent yet).
    None = 0,
    /// No answer came: no network, DNS, connect, TLS, a timeout before any response.
    Connectivity = 1,
    /// The server answered, but not with an acknowledgement (5xx, 429, 401, ...).
    Server = 2,
}

impl LastFailure {
    pub(crate) fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Connectivity,
            2 => Self::Server,
            _ => Self::None,
        }
    }

    pub(crate) fn from_meta(value: Option<&str>) -> Self {
        match value {
            Some("connectivity") => Self::Connectivity,
            Some("server") => Self::Server,
            _ => Self::None,
        }
    }

    pub(crate) fn as_meta(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Connectivity => "connectivity",
            Self::Server => "server",
        }
    }
}

/// Remembers what the last attempt ended with, in memory and (when it changed) in `meta`. A
/// failed write only costs the skip after a restart: it is logged, not returned.
fn set_last_failure(shared: &Shared, store: &Store, failure: LastFailure) {
    let before = shared.last_failure.swap(failure as u8, Ordering::SeqCst);
    if before != failure as u8 {
        if let Err(e) = store.set_meta(meta_key::UPLOAD_LAST_FAILURE, failure.as_meta()) {
            tracing::warn!(error = %e, "could not remember the kind of the last upload failure");
        }
    }
}

/// Whether the oldest batch, whose next attempt is due at `next_attempt_ms`, is sent at
/// `now_ms`: when due, or at once when asked (`upload_now`: the network is back, the app came
/// to the foreground, a flush) if its backoff came from attempts that got no answer. A backoff
/// after a server's answer is always waited out.
fn attempt_due(next_attempt_ms: i64, now_ms: i64, last: LastFailure, upload_now: bool) -> bool {
    next_attempt_ms <= now_ms || (upload_now && last == LastFailure::Connectivity)
}

/// The latest next-attempt time that can be legitimate at `now` (ms since the epoch).
pub(crate) fn latest_next_attempt(policy: &Policy, now_ms: i64) -> i64 {
    let longest = i64::try_from(policy.longest_retry_delay().as_millis()).unwrap_or(i64::MAX);
    now_ms.saturating_add(longest)
}

/// Exponential backoff with jitter for the `attempt`-th consecutive failure (1-based).
fn backoff(policy: &Policy, attempt: u32) -> Duration {
    exponential(policy.retry_min_delay, policy.retry_max_delay, attempt)
}

/// [`backoff`] after attempts that got no answer, at most
/// [`Policy::max_connectivity_retry_delay`] with its jitter: the delay before jitter stops at
/// half of it, so that devices still spread their attempts over the second half.
fn connectivity_backoff(policy: &Policy, attempt: u32) -> Duration {
    let cap = policy.max_connectivity_retry_delay;
    let max = policy.retry_max_delay.min(cap / 2);
    exponential(policy.retry_min_delay.min(max), max, attempt).min(cap)
}

/// Exponential delays from `min` to `max`, each plus a random jitter of up to itself.
fn exponential(min: Duration, max: Duration, attempt: u32) -> Duration {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_backoff_from_connectivity_failures_is_skipped_when_asked() {
        let (due, now) = (10_000, 1_000);
        for last in [
            LastFailure::None,
            LastFailure::Connectivity,
            LastFailure::Server,
        ] {
            assert!(attempt_due(now, now, last, false), "{last:?}: due now");
            assert!(
                !attempt_due(due, now, last, false),
                "{last:?}: not due, not asked"
            );
        }
        assert!(attempt_due(due, now, LastFailure::Connectivity, true));
        assert!(!attempt_due(due, now, LastFailure::Server, true));
        assert!(!attempt_due(due, now, LastFailure::None, true));
    }

    #[test]
    fn the_kind_of_the_last_failure_survives_its_meta_form() {
        for last in [
            LastFailure::None,
            LastFailure::Connectivity,
            LastFailure::Server,
        ] {
            assert_eq!(LastFailure::from_meta(Some(last.as_meta())), last);
            assert_eq!(LastFailure::from_u8(last as u8), last);
        }
        assert_eq!(LastFailure::from_meta(None), LastFailure::None);
    }

    #[test]
    fn the_connectivity_backoff_stops_at_its_cap_and_the_servers_does_not() {
        let policy = Policy::default();
        let cap = policy.max_connectivity_retry_delay;
        assert!(cap < policy.retry_max_delay, "the cap is what bounds it");
        let late: Vec<Duration> = (12..40)
            .map(|attempt| connectivity_backoff(&policy, attempt))
            .collect();
        assert!(late.iter().all(|d| *d <= cap && *d >= cap / 2), "{late:?}");
        // Jitter still spreads the attempts of devices that went offline together.
        assert!(late.iter().any(|d| *d != late[0]), "{late:?}");
        assert!((12..40).any(|attempt| backoff(&policy, attempt) > cap));
        // The first attempts back off as the server's do.
        let first = connectivity_backoff(&policy, 1);
        assert!(first >= policy.retry_min_delay && first <= 2 * policy.retry_min_delay);
    }
}
