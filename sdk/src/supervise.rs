//! Keeping the SDK's threads alive: a thread that panics is logged, counted and restarted; and
//! the checkpoint thread, which copies the WAL into the database file off the writer's path.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::shared::Shared;
use crate::store::Checkpointer;

/// Pause before restarting an SDK thread after a panic: a panic that repeats costs one log line
/// a second, not a busy loop.
pub const THREAD_RESTART_DELAY: Duration = Duration::from_secs(1);
/// How often the checkpoint thread copies the WAL into the database file. A checkpoint fsyncs,
/// and an fsync can stall for hundreds of milliseconds when the device's storage is busy, so it
/// never runs on the writer (whose commits only append to the WAL): one second keeps the WAL to
/// about a second of events.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

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

/// Checkpoints the WAL every [`CHECKPOINT_INTERVAL`] until `stop` closes. Failures are only
/// logged: the WAL keeps every commit until a later checkpoint succeeds, and SQLite checkpoints
/// once more when the store's connection closes.
pub(crate) fn run_checkpoints(mut checkpointer: Checkpointer, stop: &Receiver<()>) {
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_INTERVAL) {
        if let Err(e) = checkpointer.checkpoint() {
            tracing::debug!(error = %e, "WAL checkpoint failed; the next one retries");
        }
    }
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
