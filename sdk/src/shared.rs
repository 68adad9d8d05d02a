//! The state the tracker shares with its threads: the store behind its lock, what the app set
//! (identity, session, context, opt-out), the counters, and the store chores both threads do
//! (caps, drop counts, corruption).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

use chrono::Utc;
use serde_json::{Map, Value};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::store::{drop_reason, gap_reason, is_corruption, meta_key, Caps, Store};

/// Most events a buffer cap drops per hold of the store lock (a whole batch may add up to one
/// batch more): a few milliseconds of deletes, so the writer and the uploader never wait
/// longer than that for each other when a cap drops tens of thousands of events.
pub const MAX_CAP_DROP_SLICE: u64 = 1_000;

/// What happened since the tracker started, for [`crate::Stats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) rejected_invalid: AtomicU64,
    pub(crate) batches_delivered: AtomicU64,
    pub(crate) upload_failures: AtomicU64,
    pub(crate) thread_panics: AtomicU64,
}

/// Who tracks: added to every event at `track()`.
#[derive(Default)]
pub(crate) struct Identity {
    pub(crate) user_id: Option<String>,
    pub(crate) super_properties: Map<String, Value>,
}

/// The current session: a new one starts after the policy's inactivity timeout.
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) last_activity_ms: i64,
}

impl Identity {
    /// The user id and super-properties remembered from the last run.
    pub(crate) fn load(store: &Store) -> Result<Self> {
        Ok(Self {
            // "" is how "no user" is stored (and how older versions stored it).
            user_id: store.meta(meta_key::USER_ID)?.filter(|id| !id.is_empty()),
            super_properties: match store.meta(meta_key::SUPER_PROPERTIES)? {
                Some(json) => serde_json::from_str(&json)?,
                None => Map::new(),
            },
        })
    }
}

impl Session {
    /// The session of the last run (a new one starts with the next event if it timed out).
    pub(crate) fn load(store: &Store) -> Result<Self> {
        Ok(Self {
            id: store.meta(meta_key::SESSION_ID)?.unwrap_or_default(),
            last_activity_ms: store
                .meta(meta_key::SESSION_LAST_ACTIVITY_MS)?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        })
    }
}

/// What the tracker and its threads share.
pub(crate) struct Shared {
    pub(crate) store: Mutex<Store>,
    pub(crate) install_id: String,
    pub(crate) policy: Policy,
    pub(crate) endpoint: String,
    pub(crate) write_key: String,
    pub(crate) context: RwLock<String>,
    pub(crate) identity: RwLock<Identity>,
    pub(crate) session: Mutex<Session>,
    pub(crate) clock: Clock,
    pub(crate) counters: Counters,
    /// Drops counted but not yet written to the `drops` table.
    pub(crate) unpersisted_drops: Mutex<BTreeMap<&'static str, u64>>,
    /// Events dropped on a full hand-off queue, not yet numbered and reported as a `queue_full`
    /// gap (see `report_queue_drops`).
    pub(crate) unreported_queue_drops: AtomicU64,
    /// When storing last failed (ms since epoch), 0 when it works.
    pub(crate) storage_failed_at_ms: AtomicI64,
    pub(crate) opted_out: AtomicBool,
    pub(crate) stopping: AtomicBool,
    /// The platform said the network is back, or the app asked for an upload: the next cycle
    /// ignores a backoff that came from connectivity failures.
    pub(crate) upload_now: AtomicBool,
    /// What the last upload attempt ended with, as a `upload::scheduler::LastFailure` (persisted in
    /// `meta`).
    pub(crate) last_failure: AtomicU8,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a thread panicked mid-operation; SQLite's transactions keep the
    // file consistent and the other values are plain data, so carrying on is safe.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// Counts `n` events dropped before they had a `seq`. A full hand-off queue is a loss the
    /// app caused and the stream must show: those become a `queue_full` gap record; the other
    /// reasons are drop counts reported with the next batch.
    pub(crate) fn record_drop(&self, reason: &'static str, n: u64) {
        if reason == drop_reason::QUEUE_FULL {
            self.unreported_queue_drops.fetch_add(n, Ordering::SeqCst);
            return;
        }
        *lock(&self.unpersisted_drops).entry(reason).or_default() += n;
    }
}

/// Replaces the buffer when `error` says SQLite found it corrupt, as at open (see
/// [`Store::recover_from_corruption`]): otherwise every later statement would fail the same way.
pub(crate) fn recover_if_corrupt(store: &mut Store, error: &Error) {
    if !is_corruption(error) {
        return;
    }
    if let Err(e) = store.recover_from_corruption() {
        tracing::error!(error = %e, "could not replace the corrupt buffer; trying again later");
    }
}

/// Enforces the buffer caps in slices of [`MAX_CAP_DROP_SLICE`] events, letting go of the store
/// between slices: dropping tens of thousands of rows must not keep the other thread (or the
/// app calling `stats()`) waiting for the whole of it.
pub(crate) fn enforce_caps(shared: &Shared) -> Result<u64> {
    let caps = Caps::from(&shared.policy);
    let mut dropped = 0;
    loop {
        let progress = shared.store().enforce_caps_bounded(
            &caps,
            Utc::now().timestamp_millis(),
            MAX_CAP_DROP_SLICE,
        )?;
        dropped += progress.dropped;
        if progress.done {
            return Ok(dropped);
        }
        std::thread::yield_now();
    }
}

/// Moves the drops counted in memory into the `drops` table (to be reported with the next
/// batch). On failure they stay in memory for the next try.
pub(crate) fn persist_drops(shared: &Shared, store: &mut Store) {
    let drops = std::mem::take(&mut *lock(&shared.unpersisted_drops));
    if drops.is_empty() {
        return;
    }
    let list: Vec<(&str, u64)> = drops.iter().map(|(r, n)| (*r, *n)).collect();
    if store.add_drops(&list).is_err() {
        restore_drops(shared, drops);
    }
}

/// Numbers the events dropped on a full hand-off queue and records them as a `queue_full` gap,
/// so that the stream shows the loss (received + reported = issued). Called only when no event
/// waits in memory with a `seq` (right after a commit), so the numbers are fresh. On failure the
/// count stays in memory for the next commit.
pub(crate) fn report_queue_drops(shared: &Shared, store: &mut Store) {
    let n = shared.unreported_queue_drops.swap(0, Ordering::SeqCst);
    if n == 0 {
        return;
    }
    let now_ms = Utc::now().timestamp_millis();
    if let Err(e) = store.give_up_new_seqs(gap_reason::QUEUE_FULL, n, now_ms) {
        tracing::error!(error = %e, events = n, "could not report the events a full queue dropped; trying again later");
        shared.unreported_queue_drops.fetch_add(n, Ordering::SeqCst);
    }
}

/// Puts drop counts that could not be written back among those counted in memory.
pub(crate) fn restore_drops(shared: &Shared, drops: BTreeMap<&'static str, u64>) {
    let mut unpersisted = lock(&shared.unpersisted_drops);
    for (reason, n) in drops {
        *unpersisted.entry(reason).or_default() += n;
    }
}
