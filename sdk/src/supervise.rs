//! Keeping the SDK's threads alive: a thread that panics is logged, counted and restarted; and
//! the checkpoint thread, which copies the WAL into the database file off the writer's path and
//! writes the next `seq` reservation before the writer needs it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};

use crate::shared::Shared;
use crate::store::{Checkpointer, SeqMarks};

/// Pause before restarting an SDK thread after a panic: a panic that repeats costs one log line
/// a second, not a busy loop.
pub const THREAD_RESTART_DELAY: Duration = Duration::from_secs(1);
/// How often the checkpoint thread copies the WAL into the database file. A checkpoint fsyncs,
/// and an fsync can stall for hundreds of milliseconds when the device's storage is busy, so it
/// never runs on the writer (whose commits only append to the WAL).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// WAL growth, in bytes per second, above which the app is tracking flat out (a burst) and the
/// checkpoints wait. About 25 000 events a second of a few hundred bytes: far above what an app
/// tracks for more than a moment. During a burst every checkpoint's fsync held up the writer's
/// appends to the WAL on the same disk, up to 230 ms each in the JVM's flat-out benchmark
/// (`docs/BENCHMARKS.md`), past the 100 ms a foreign `track()` waits for room before it drops the
/// event, and gained nothing: the WAL starts again from its beginning only at a commit that
/// finds every frame copied, which never happens while commits keep coming, so it grew anyway.
pub const BURST_WAL_BYTES_PER_SECOND: u64 = 16 * 1024 * 1024;
/// How often the checkpoint thread looks at the WAL's growth while it waits out a burst.
pub const BURST_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Longest a burst puts the checkpoints off. What a power loss may undo is what no checkpoint
/// (or the kernel's own write-back, after about 30 s) made durable, so a burst longer than this
/// gets its checkpoint anyway, stalls and all.
pub const MAX_CHECKPOINT_DEFERRAL: Duration = Duration::from_secs(30);

/// Runs one of the SDK's threads, restarting it after a panic (logged and counted) so that a
/// bug cannot silently stop the buffer or the uploads for the rest of the app's life.
pub(crate) fn supervise(name: &str, shared: &Shared, run: impl Fn()) {
    restart_on_panic(name, THREAD_RESTART_DELAY, run, || {
        shared
            .counters
            .thread_panics
            .fetch_add(1, Ordering::Relaxed);
        // The panic may have come between a commit and the update of the counts.
        if let Err(e) = shared.store().recount() {
            tracing::error!(error = %e, "could not recount the buffer");
        }
        !shared.stopping.load(Ordering::SeqCst)
    });
}

/// Runs `run` until it returns; after a panic, logs it, calls `on_panic` and, if that says to
/// go on, runs it again after `delay`.
fn restart_on_panic(name: &str, delay: Duration, run: impl Fn(), on_panic: impl Fn() -> bool) {
    loop {
        let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&run)) else {
            return;
        };
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(thread = name, %message, "SDK thread panicked; restarting it");
        if !on_panic() {
            return;
        }
        std::thread::sleep(delay);
    }
}

/// Checkpoints the WAL every [`CHECKPOINT_INTERVAL`] until `stop` closes, except while the WAL
/// grows faster than [`BURST_WAL_BYTES_PER_SECOND`] (for at most
/// [`MAX_CHECKPOINT_DEFERRAL`]): then the first checkpoint comes as soon as the burst ends.
/// Failures are only logged: the WAL keeps every commit until a later checkpoint succeeds, and
/// SQLite checkpoints once more when the store's connection closes.
///
/// Between checkpoints it writes each `seq` reservation the writer asks for ahead of its need
/// ([`SeqMarks::reserve_ahead`]): the identity file's durable write, tens of milliseconds when
/// the disk is busy, stays off the writer and the store's lock. The tracker's shutdown closes
/// `stop`, then wakes the thread ([`SeqMarks::wake_checkpoint_thread`]).
pub(crate) fn run_checkpoints(
    mut checkpointer: Checkpointer,
    marks: &SeqMarks,
    stop: &Receiver<()>,
) {
    let mut next_look = Instant::now() + CHECKPOINT_INTERVAL;
    let mut seen = (Instant::now(), checkpointer.wal_bytes());
    let mut burst_since: Option<Instant> = None;
    loop {
        let asked = marks.reserve_requests().recv_deadline(next_look).is_ok();
        if let Err(TryRecvError::Disconnected) = stop.try_recv() {
            return;
        }
        if asked {
            marks.reserve_ahead();
            continue;
        }
        let now = (Instant::now(), checkpointer.wal_bytes());
        let in_burst = in_burst(seen, now);
        seen = now;
        if in_burst && burst_since.get_or_insert(now.0).elapsed() < MAX_CHECKPOINT_DEFERRAL {
            next_look = now.0 + BURST_CHECK_INTERVAL;
            continue;
        }
        burst_since = None;
        if let Err(e) = checkpointer.checkpoint() {
            tracing::debug!(error = %e, "WAL checkpoint failed; the next one retries");
        }
        seen = (Instant::now(), checkpointer.wal_bytes());
        next_look = seen.0 + CHECKPOINT_INTERVAL;
    }
}

/// Whether the WAL grew faster than [`BURST_WAL_BYTES_PER_SECOND`] between two looks (time,
/// WAL file bytes). A WAL written again from its beginning does not grow the file.
fn in_burst(before: (Instant, u64), after: (Instant, u64)) -> bool {
    let grew = u128::from(after.1.saturating_sub(before.1));
    let millis = after.0.duration_since(before.0).as_millis().max(1);
    grew * 1000 / millis > u128::from(BURST_WAL_BYTES_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_panicking_thread_body_is_counted_and_run_again() {
        let runs = AtomicUsize::new(0);
        let panics = AtomicUsize::new(0);
        restart_on_panic(
            "test",
            Duration::ZERO,
            || {
                if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("a bug");
                }
            },
            || {
                panics.fetch_add(1, Ordering::SeqCst);
                true
            },
        );
        assert_eq!(runs.load(Ordering::SeqCst), 3, "run again after each panic");
        assert_eq!(panics.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn only_a_wal_growing_faster_than_the_burst_rate_puts_checkpoints_off() {
        let t0 = Instant::now();
        let second = t0 + Duration::from_secs(1);
        let mib = 1024 * 1024;
        // A phone tracking steadily grows the WAL by kilobytes a second.
        assert!(!in_burst((t0, 4 * mib), (second, 4 * mib + 64 * 1024)));
        // A WAL written again from its beginning, or cut back, does not grow.
        assert!(!in_burst((t0, 64 * mib), (second, 4 * mib)));
        assert!(!in_burst((t0, 4 * mib), (second, 4 * mib)));
        // A flat-out burst grows it by tens of megabytes a second, whatever the look's interval.
        assert!(in_burst((t0, 0), (second, 90 * mib)));
        let tenth = t0 + Duration::from_millis(100);
        assert!(in_burst((t0, 0), (tenth, 9 * mib)));
        assert!(!in_burst((t0, 0), (tenth, mib)));
        // Two looks at the same instant do not divide by zero.
        assert!(!in_burst((t0, 0), (t0, 0)));
    }

    #[test]
    fn a_stopping_tracker_does_not_restart_a_panicked_thread() {
        let runs = AtomicUsize::new(0);
        restart_on_panic(
            "test",
            Duration::ZERO,
            || {
                runs.fetch_add(1, Ordering::SeqCst);
                panic!("a bug");
            },
            || false,
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
