//! The tracker: the public API and the two threads behind it.
//!
//! `track()` validates and stamps an event on the calling thread and hands it to the writer
//! thread through a bounded queue; the writer commits groups of events to SQLite; the uploader
//! thread cuts batches, sends them and deletes them on acknowledgement.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use serde_json::{Map, Value};
use tern_protocol::limits::{
    context_problem, event_name_problem, id_problem, properties_problem, MAX_PROPERTIES_BYTES,
    MAX_PROPERTIES_DEPTH,
};
use tern_protocol::{Context, Event};
use uuid::Uuid;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::json_size;
use crate::policy::{
    Policy, CHECKPOINT_INTERVAL, MAX_CAP_DROP_SLICE, MAX_GROUP_COMMIT, MAX_UNSTORED_EVENTS,
    THREAD_RESTART_DELAY,
};
use crate::store::{drop_reason, BatchRow, Checkpointer, Pending, Split, Store, StoredEvent};
use crate::transport::{self, Transport};
use crate::upload::{self, Outcome};

/// How to build a [`Tracker`].
#[derive(Clone)]
pub struct Config {
    /// The SQLite buffer file; created if missing.
    pub db_path: PathBuf,
    /// Base URL of the collector, e.g. `https://collector.example.com`.
    pub endpoint: String,
    /// The app's write key.
    pub write_key: String,
    /// Upload and buffer policy.
    pub policy: Policy,
    /// App, device and OS context, sent once per batch.
    pub context: Context,
    /// What performs the uploads' HTTP requests: the platform's client in the mobile library
    /// (bindings/). `None` takes [`transport::ReqwestTransport`] when the `http-reqwest`
    /// feature is on (the default) and is a [`Error::Config`] without it.
    pub transport: Option<Arc<dyn Transport>>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("db_path", &self.db_path)
            .field("endpoint", &self.endpoint)
            // Never the write key in a log.
            .field("policy", &self.policy)
            .field("context", &self.context)
            .field(
                "transport",
                &self.transport.as_ref().map_or("default", |_| "custom"),
            )
            .finish_non_exhaustive()
    }
}

/// What happened to tracked events, for QA and for the host app's diagnostics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// What waits in the buffer.
    pub pending: Pending,
    /// Events dropped on the device before they had a `seq`, since the install, by reason (see
    /// `store::drop_reason`): a full queue, failed storage, a corrupt buffer's unknown content.
    pub dropped: BTreeMap<String, u64>,
    /// `seq` numbers given up on since the install, by gap reason (see `store::gap_reason`):
    /// each is (or will be) reported to the collector in a gap report.
    pub gaps: BTreeMap<String, u64>,
    /// Gap reports not yet acknowledged by the collector.
    pub pending_gap_reports: u64,
    /// Events refused as invalid at `track()` (the caller got an error for each).
    pub rejected_invalid: u64,
    /// Batches acknowledged by the collector since the tracker started.
    pub batches_delivered: u64,
    /// Upload attempts that failed since the tracker started.
    pub upload_failures: u64,
    /// Panics caught in the SDK's writer and uploader threads since the tracker started; each
    /// was logged and its thread restarted. Anything but 0 is a bug worth reporting.
    pub thread_panics: u64,
    /// Whether the user opted out.
    pub opted_out: bool,
}

/// An event between `track()` and the writer: stamped, not yet numbered.
struct Tracked {
    event_id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
    uptime_ms: u64,
    properties: Map<String, Value>,
    user_id: Option<String>,
    session_id: String,
}

enum Command {
    Track(Tracked),
    /// Answer once everything sent before is committed.
    Sync(Sender<bool>),
    /// Wake the uploader once everything sent before is committed.
    Upload,
    /// Persist a `meta` value with the next commit.
    Meta(&'static str, String),
    /// Delete everything buffered (opt-out).
    Purge,
    Stop,
}

#[derive(Default)]
struct Counters {
    rejected_invalid: AtomicU64,
    batches_delivered: AtomicU64,
    upload_failures: AtomicU64,
    thread_panics: AtomicU64,
}

#[derive(Default)]
struct Identity {
    user_id: Option<String>,
    super_properties: Map<String, Value>,
}

struct Session {
    id: String,
    last_activity_ms: i64,
}

struct Shared {
    store: Mutex<Store>,
    install_id: String,
    policy: Policy,
    endpoint: String,
    write_key: String,
    context: RwLock<String>,
    identity: RwLock<Identity>,
    session: Mutex<Session>,
    clock: Clock,
    counters: Counters,
    /// Drops counted but not yet written to the `drops` table.
    unpersisted_drops: Mutex<BTreeMap<&'static str, u64>>,
    /// When storing last failed (ms since epoch), 0 when it works.
    storage_failed_at_ms: AtomicI64,
    opted_out: AtomicBool,
    stopping: AtomicBool,
    /// The platform said the network is back, or the app asked for an upload: the next cycle
    /// ignores a backoff that came from connectivity failures.
    upload_now: AtomicBool,
    /// What the last upload attempt ended with, as a [`LastFailure`] (persisted in `meta`).
    last_failure: AtomicU8,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a thread panicked mid-operation; SQLite's transactions keep the
    // file consistent and the other values are plain data, so carrying on is safe.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    fn record_drop(&self, reason: &'static str, n: u64) {
        *lock(&self.unpersisted_drops).entry(reason).or_default() += n;
    }
}

/// The SDK's entry point. Cheap to call from any thread; all I/O happens on its own threads.
pub struct Tracker {
    shared: Arc<Shared>,
    /// Whether commands may still be sent to the writer. Senders hold it for reading while
    /// they send; `shutdown()` closes it (for writing) before it sends `Stop`, so a command is
    /// either ahead of `Stop` in the queue, and handled, or refused with [`Error::Closed`].
    open: RwLock<bool>,
    commands: Sender<Command>,
    wake: Sender<()>,
    /// Dropped at shutdown, which ends the checkpoint thread.
    checkpoint_stop: Mutex<Option<Sender<()>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Tracker {
    /// Opens the buffer and starts the writer, uploader and checkpoint threads.
    pub fn new(config: Config) -> Result<Self> {
        if config.endpoint.is_empty() {
            return Err(Error::Config("endpoint is empty".into()));
        }
        let transport = config
            .transport
            .or_else(transport::default_transport)
            .ok_or_else(|| {
                Error::Config(
                    "transport: no HTTP transport given, and tern-sdk was built without the \
                     http-reqwest feature"
                        .into(),
                )
            })?;
        let mut store = Store::open(&config.db_path)?;
        let checkpointer = store.checkpointer()?;
        store.set_max_file_bytes(config.policy.max_file_bytes)?;
        // A wall clock moved back since the last run must not stall the uploads.
        store.clamp_next_attempts(latest_next_attempt(
            &config.policy,
            Utc::now().timestamp_millis(),
        ))?;
        let identity = Identity {
            // "" is how "no user" is stored (and how older versions stored it).
            user_id: store.meta("user_id")?.filter(|id| !id.is_empty()),
            super_properties: match store.meta("super_properties")? {
                Some(json) => serde_json::from_str(&json)?,
                None => Map::new(),
            },
        };
        let session = Session {
            id: store.meta("session_id")?.unwrap_or_default(),
            last_activity_ms: store
                .meta("session_last_activity_ms")?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        };
        let opted_out = store.meta("opt_out")?.as_deref() == Some("1");
        let last_failure = LastFailure::from_meta(store.meta(LAST_FAILURE_KEY)?.as_deref());
        let shared = Arc::new(Shared {
            install_id: store.install_id().to_owned(),
            store: Mutex::new(store),
            context: RwLock::new(context_json(&config.context)?),
            policy: config.policy,
            endpoint: config.endpoint,
            write_key: config.write_key,
            identity: RwLock::new(identity),
            session: Mutex::new(session),
            clock: Clock::new(),
            counters: Counters::default(),
            unpersisted_drops: Mutex::new(BTreeMap::new()),
            storage_failed_at_ms: AtomicI64::new(0),
            opted_out: AtomicBool::new(opted_out),
            stopping: AtomicBool::new(false),
            upload_now: AtomicBool::new(false),
            last_failure: AtomicU8::new(last_failure as u8),
        });
        let (commands, command_rx) = bounded(shared.policy.queue_capacity);
        let (wake, wake_rx) = bounded(1);
        let writer = {
            let shared = Arc::clone(&shared);
            let wake = wake.clone();
            std::thread::Builder::new()
                .name("tern-writer".into())
                .spawn(move || {
                    supervise("writer", &shared, || {
                        run_writer(&shared, &command_rx, &wake)
                    });
                })?
        };
        let uploader = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("tern-uploader".into())
                // The default transport lives and dies on this thread (see `ReqwestTransport`).
                .spawn(move || {
                    supervise("uploader", &shared, || {
                        run_uploader(&shared, &*transport, &wake_rx)
                    });
                })?
        };
        let (checkpoint_stop, checkpoint_stop_rx) = bounded::<()>(0);
        let checkpoint = std::thread::Builder::new()
            .name("tern-checkpoint".into())
            .spawn(move || run_checkpoints(checkpointer, &checkpoint_stop_rx))?;
        Ok(Self {
            shared,
            open: RwLock::new(true),
            commands,
            wake,
            checkpoint_stop: Mutex::new(Some(checkpoint_stop)),
            threads: Mutex::new(vec![writer, uploader, checkpoint]),
        })
    }

    /// The install's stable id.
    pub fn install_id(&self) -> &str {
        &self.shared.install_id
    }

    /// Records an event. Validates and stamps it on the calling thread and hands it to the
    /// writer; never touches disk or network, never blocks.
    ///
    /// Errors: an event the collector would refuse ([`Error::InvalidEvent`]: a bad name,
    /// properties, with the super-properties merged in, over 64 KiB serialized or nested deeper
    /// than 16 levels, a user id over 256 bytes; the checks of `tern_protocol::limits`, counted
    /// in [`Stats::rejected_invalid`]); a full hand-off queue
    /// ([`Error::QueueFull`]: the event is dropped and counted as `queue_full`); storage that
    /// failed within the last [`Policy::storage_retry_after`] ([`Error::StorageFailing`]:
    /// dropped and counted as `storage_error`). After `set_opt_out(true)`, events are discarded
    /// and `Ok(None)` is returned.
    ///
    /// Returns the event's `event_id`, under which it will appear in the stream.
    pub fn track(&self, name: &str, mut properties: Map<String, Value>) -> Result<Option<Uuid>> {
        let shared = &*self.shared;
        if shared.stopping.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        if shared.opted_out.load(Ordering::Relaxed) {
            return Ok(None);
        }
        if let Some(problem) = event_name_problem(name) {
            return Err(self.invalid(problem));
        }
        let created_at = shared.clock.wall();
        let now_ms = created_at.timestamp_millis();
        let failed_at = shared.storage_failed_at_ms.load(Ordering::Relaxed);
        let retry_ms = i64::try_from(shared.policy.storage_retry_after.as_millis()).unwrap_or(0);
        if failed_at != 0 && now_ms.saturating_sub(failed_at) < retry_ms {
            shared.record_drop(drop_reason::STORAGE_ERROR, 1);
            return Err(Error::StorageFailing(
                "the last write to the buffer failed".into(),
            ));
        }
        let user_id = {
            let identity = read(&shared.identity);
            for (k, v) in &identity.super_properties {
                properties.entry(k.clone()).or_insert_with(|| v.clone());
            }
            identity.user_id.clone()
        };
        // The collector's own checks, so that an event accepted here is never refused there.
        // Measuring the properties without serializing them keeps this cheap; only an event
        // over a limit pays for the protocol's check, which words the error.
        let properties_fit =
            json_size::fits(&properties, MAX_PROPERTIES_BYTES, MAX_PROPERTIES_DEPTH);
        if let Some(problem) = id_problem("user_id", user_id.as_deref()).or_else(|| {
            (!properties_fit)
                .then(|| properties_problem(&properties))
                .flatten()
        }) {
            return Err(self.invalid(problem));
        }
        let session_id = self.touch_session(now_ms);
        let event_id = Uuid::now_v7();
        let tracked = Tracked {
            event_id,
            name: name.to_owned(),
            created_at,
            uptime_ms: shared.clock.uptime_ms(),
            properties,
            user_id,
            session_id,
        };
        let open = read(&self.open);
        if !*open {
            return Err(Error::Closed);
        }
        match self.commands.try_send(Command::Track(tracked)) {
            Ok(()) => Ok(Some(event_id)),
            Err(TrySendError::Full(_)) => {
                shared.record_drop(drop_reason::QUEUE_FULL, 1);
                Err(Error::QueueFull(shared.policy.queue_capacity))
            }
            Err(TrySendError::Disconnected(_)) => Err(Error::Closed),
        }
    }

    /// Counts an event refused at `track()` and builds its error.
    fn invalid(&self, problem: String) -> Error {
        self.shared
            .counters
            .rejected_invalid
            .fetch_add(1, Ordering::Relaxed);
        Error::InvalidEvent(problem)
    }

    /// The current session id, starting a new session after the inactivity timeout.
    fn touch_session(&self, now_ms: i64) -> String {
        let timeout = i64::try_from(self.shared.policy.session_timeout.as_millis()).unwrap_or(0);
        let mut session = lock(&self.shared.session);
        if session.id.is_empty() || now_ms.saturating_sub(session.last_activity_ms) > timeout {
            session.id = Uuid::now_v7().to_string();
        }
        session.last_activity_ms = now_ms;
        session.id.clone()
    }

    /// Sets the user id sent with the events tracked from now on (`None`, or `Some("")`, to
    /// forget it). Remembered across restarts. An id over 256 bytes (the wire format's limit)
    /// makes every following `track()` fail with [`Error::InvalidEvent`] until it is replaced.
    pub fn identify(&self, user_id: Option<String>) {
        let user_id = user_id.filter(|id| !id.is_empty());
        write(&self.shared.identity).user_id = user_id.clone();
        self.persist("user_id", user_id.unwrap_or_default());
    }

    /// Sets properties added to every event tracked from now on (an event's own properties win
    /// on a name clash). Replaces the previous set.
    pub fn set_super_properties(&self, properties: Map<String, Value>) -> Result<()> {
        let json = serde_json::to_string(&properties)?;
        write(&self.shared.identity).super_properties = properties;
        self.persist("super_properties", json);
        Ok(())
    }

    /// Forgets the user id and the super-properties and starts a new session (a user logged
    /// out). The install id stays: it identifies the installation, not the person.
    pub fn reset(&self) {
        *write(&self.shared.identity) = Identity::default();
        lock(&self.shared.session).id.clear();
        self.persist("user_id", String::new());
        self.persist("super_properties", "{}".to_owned());
    }

    /// Replaces the context sent with batches cut from now on.
    pub fn set_context(&self, context: &Context) -> Result<()> {
        let json = context_json(context)?;
        *write(&self.shared.context) = json;
        Ok(())
    }

    /// Stops collecting and purges the buffer (`true`), or resumes collecting (`false`). The
    /// choice is remembered across restarts.
    pub fn set_opt_out(&self, opted_out: bool) -> Result<()> {
        self.shared.opted_out.store(opted_out, Ordering::SeqCst);
        let command = if opted_out {
            Command::Purge
        } else {
            Command::Meta("opt_out", "0".into())
        };
        self.send(command, Duration::from_secs(5))
    }

    /// Sends a command to the writer, waiting at most `wait` for room; [`Error::Closed`] once
    /// the tracker is shut down (see `open`).
    fn send(&self, command: Command, wait: Duration) -> Result<()> {
        let open = read(&self.open);
        if !*open {
            return Err(Error::Closed);
        }
        self.commands
            .send_timeout(command, wait)
            .map_err(|_| Error::Closed)
    }

    /// The app went to the background: upload what waits now, without blocking the caller.
    pub fn on_background(&self) {
        let _ = self.send(Command::Upload, Duration::ZERO);
    }

    /// The app came to the foreground: a session that timed out while in the background ends
    /// with the next event; anything waiting is uploaded at once, unless the collector asked
    /// to wait (see [`Tracker::network_available`]).
    pub fn on_foreground(&self) {
        self.upload_now();
    }

    /// The platform says the network is back (`NWPathMonitor`, `ConnectivityManager`): anything
    /// waiting is uploaded at once, even during the backoff that follows attempts that got no
    /// answer (no network, DNS, connect, TLS, timeout). A backoff the collector asked for (a 5xx,
    /// a 429, its `Retry-After`) still holds: the server is what failed, not the network.
    /// Never blocks.
    pub fn network_available(&self) {
        self.upload_now();
    }

    /// Asks the uploader for a cycle that ignores a connectivity backoff.
    fn upload_now(&self) {
        self.shared.upload_now.store(true, Ordering::SeqCst);
        let _ = self.wake.try_send(());
    }

    fn persist(&self, key: &'static str, value: String) {
        // The queue may be full under a burst; meta changes are rare and small: wait briefly.
        let _ = self.send(Command::Meta(key, value), Duration::from_secs(1));
    }

    /// Waits until every event tracked before this call is durable (at most `timeout`), then
    /// asks the uploader to send what waits at once (as [`Tracker::network_available`] does: a
    /// backoff the collector asked for still holds). Returns whether durability was reached in
    /// time.
    pub fn flush(&self, timeout: Duration) -> Result<bool> {
        let (ack, acked) = bounded(1);
        self.send(Command::Sync(ack), timeout)?;
        let durable = acked.recv_timeout(timeout).unwrap_or(false);
        self.upload_now();
        Ok(durable)
    }

    /// Flushes, then waits until the collector has acknowledged everything in the buffer or
    /// `timeout` passes. Returns whether the buffer is empty. For tests, tools and shutdown.
    pub fn flush_and_wait(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut durable = self.flush(timeout)?;
        loop {
            if durable && self.shared.store().pending().events == 0 {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            let _ = self.wake.try_send(());
            std::thread::sleep(Duration::from_millis(20));
            if !durable {
                // Events still wait in the writer's memory for the disk: ask it to try again.
                durable = self.flush(deadline.saturating_duration_since(Instant::now()))?;
            }
        }
    }

    /// Counters and buffer size.
    pub fn stats(&self) -> Stats {
        let shared = &*self.shared;
        let c = &shared.counters;
        let (pending, stored_drops, gaps, pending_gap_reports) = {
            let store = shared.store();
            (
                store.pending(),
                store.drops().unwrap_or_default(),
                store.gap_totals().unwrap_or_default(),
                store.pending_gaps().map_or(0, |(reports, _)| reports),
            )
        };
        let mut dropped: BTreeMap<String, u64> = stored_drops
            .into_iter()
            .map(|(reason, (total, _))| (reason, total))
            .collect();
        for (reason, n) in lock(&shared.unpersisted_drops).iter() {
            *dropped.entry((*reason).to_owned()).or_default() += n;
        }
        Stats {
            pending,
            dropped,
            gaps,
            pending_gap_reports,
            rejected_invalid: c.rejected_invalid.load(Ordering::Relaxed),
            batches_delivered: c.batches_delivered.load(Ordering::Relaxed),
            upload_failures: c.upload_failures.load(Ordering::Relaxed),
            thread_panics: c.thread_panics.load(Ordering::Relaxed),
            opted_out: shared.opted_out.load(Ordering::Relaxed),
        }
    }

    /// Stops both threads after the writer has committed what was tracked. Idempotent.
    /// Events still in the buffer stay there for the next start. A `track()` racing with it on
    /// another thread either returns `Ok` and its event is committed, or returns
    /// [`Error::Closed`]; never `Ok` for an event that is not written.
    pub fn shutdown(&self) {
        {
            // Waits for the senders that got in before; refuses all that come after.
            let mut open = write(&self.open);
            if !*open {
                return;
            }
            *open = false;
        }
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Nothing can be queued behind Stop now. The queue may be full; a blocking send waits
        // for the writer to make room.
        let _ = self.commands.send(Command::Stop);
        let _ = self.wake.try_send(());
        lock(&self.checkpoint_stop).take();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs one of the SDK's threads, restarting it after a panic (logged and counted) so that a
/// bug cannot silently stop the buffer or the uploads for the rest of the app's life.
fn supervise(name: &str, shared: &Shared, run: impl Fn()) {
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

/// The context as the batches carry it, refused (as the collector would refuse every batch
/// carrying it) when it is over the protocol's limit.
fn context_json(context: &Context) -> Result<String> {
    if let Some(problem) = context_problem(context) {
        return Err(Error::Config(problem));
    }
    Ok(serde_json::to_string(context)?)
}

/// Checkpoints the WAL every [`CHECKPOINT_INTERVAL`] until `stop` closes. Failures are only
/// logged: the WAL keeps every commit until a later checkpoint succeeds, and SQLite checkpoints
/// once more when the store's connection closes.
fn run_checkpoints(mut checkpointer: Checkpointer, stop: &Receiver<()>) {
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_INTERVAL) {
        if let Err(e) = checkpointer.checkpoint() {
            tracing::debug!(error = %e, "WAL checkpoint failed; the next one retries");
        }
    }
}

/// What the writer gathered from the queue for one commit.
#[derive(Default)]
struct Group {
    events: Vec<Tracked>,
    meta: Vec<(&'static str, String)>,
    syncs: Vec<Sender<bool>>,
    upload: bool,
    purge: bool,
    stop: bool,
}

/// What a failed commit (a full disk) left in the writer's memory, written first by the next
/// commit: events already numbered from the store's next `seq` (nothing else can commit events
/// before them), and meta changes in the order they were made.
#[derive(Default)]
struct Unstored {
    rows: Vec<StoredEvent>,
    meta: Vec<(&'static str, String)>,
}

impl Unstored {
    fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.meta.is_empty()
    }
}

fn run_writer(shared: &Shared, commands: &Receiver<Command>, wake: &Sender<()>) {
    let mut unstored = Unstored::default();
    loop {
        // While a commit failed, wake up on the storage back-off to try again even if the app
        // tracks nothing more.
        let first = if unstored.is_empty() {
            match commands.recv() {
                Ok(command) => Some(command),
                Err(_) => break,
            }
        } else {
            match commands.recv_timeout(shared.policy.storage_retry_after) {
                Ok(command) => Some(command),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        };
        let mut group = Group::default();
        let mut next = first;
        while let Some(command) = next.take() {
            match command {
                Command::Track(t) => group.events.push(t),
                Command::Sync(ack) => group.syncs.push(ack),
                Command::Upload => group.upload = true,
                Command::Meta(key, value) => group.meta.push((key, value)),
                Command::Purge => {
                    // Everything tracked before the opt-out goes too. The choice is written
                    // in its place among the meta changes, so a later opt-in in the same group
                    // wins and an earlier one does not.
                    group.events.clear();
                    unstored.rows.clear();
                    group.meta.push(("opt_out", "1".into()));
                    group.purge = true;
                }
                Command::Stop => group.stop = true,
            }
            if !group.stop && group.events.len() < MAX_GROUP_COMMIT {
                next = commands.try_recv().ok();
            }
        }
        if group.purge {
            let mut store = shared.store();
            lock(&shared.unpersisted_drops).clear();
            if let Err(e) = store.purge(Utc::now().timestamp_millis()) {
                tracing::error!(error = %e, "could not purge the buffer after opt-out");
            }
        }
        commit_group(shared, &mut group, &mut unstored);
        let durable = unstored.rows.is_empty();
        for ack in group.syncs.drain(..) {
            let _ = ack.send(durable);
        }
        let unbatched = shared.store().pending().unbatched_events;
        if group.upload || unbatched >= shared.policy.flush_at_count as u64 {
            let _ = wake.try_send(());
        }
        if group.stop {
            break;
        }
    }
    if !unstored.rows.is_empty() {
        tracing::error!(
            events = unstored.rows.len(),
            "the tracker stopped while storage failed; events not stored are dropped"
        );
        shared.record_drop(drop_reason::STORAGE_ERROR, unstored.rows.len() as u64);
    }
}

fn commit_group(shared: &Shared, group: &mut Group, unstored: &mut Unstored) {
    let mut store = shared.store();
    let next_seq = store.next_seq();
    let count = group.events.len() as u64;
    let clock_id = shared.clock.id().to_owned();
    let mut rows = std::mem::take(&mut unstored.rows);
    rows.reserve(group.events.len());
    let mut unserializable = 0;
    // After the rows that wait in memory, and never below the store's next seq (which jumps
    // past the reserved block when a corrupt buffer was replaced).
    let mut seq_next = rows.last().map_or(next_seq, |r| r.seq + 1).max(next_seq);
    for t in group.events.drain(..) {
        let seq = seq_next;
        let event = Event {
            event_id: t.event_id,
            seq,
            name: t.name,
            created_at: t.created_at,
            uptime_ms: Some(t.uptime_ms),
            clock_id: Some(clock_id.clone()),
            properties: t.properties,
            user_id: t.user_id,
            session_id: Some(t.session_id),
        };
        // Its size and shape were checked at track().
        let body = match serde_json::to_string(&event) {
            Ok(body) => body,
            Err(_) => {
                unserializable += 1;
                continue;
            }
        };
        seq_next += 1;
        rows.push(StoredEvent {
            seq,
            event_id: event.event_id,
            created_at_ms: event.created_at.timestamp_millis(),
            body,
            name: event.name,
        });
    }
    if unserializable > 0 {
        // Cannot happen for JSON values; counted rather than lost should that ever change.
        tracing::error!(
            events = unserializable,
            "events that do not serialize dropped"
        );
        shared.record_drop(drop_reason::STORAGE_ERROR, unserializable);
    }
    let mut meta_changes = std::mem::take(&mut unstored.meta);
    meta_changes.append(&mut group.meta);
    if rows.is_empty() && meta_changes.is_empty() {
        persist_drops(shared, &mut store);
        return;
    }
    // Drops counted in memory (full queue, failed storage) are committed with the events, in
    // the same transaction; if it fails, they go back to memory for the next commit.
    let drops = std::mem::take(&mut *lock(&shared.unpersisted_drops));
    let drop_list: Vec<(&str, u64)> = drops.iter().map(|(r, n)| (*r, *n)).collect();
    let mut meta: Vec<(&str, &str)> = meta_changes.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let session = {
        let s = lock(&shared.session);
        (s.id.clone(), s.last_activity_ms.to_string())
    };
    if !rows.is_empty() {
        meta.push(("session_id", &session.0));
        meta.push(("session_last_activity_ms", &session.1));
    }
    match store.insert_events(&rows, &meta, &drop_list) {
        Ok(()) => {
            shared.storage_failed_at_ms.store(0, Ordering::Relaxed);
        }
        Err(e) => {
            shared
                .storage_failed_at_ms
                .store(Utc::now().timestamp_millis(), Ordering::Relaxed);
            recover_if_corrupt(&mut store, &e);
            // The group is one transaction: nothing of it was committed. Its events and meta
            // changes wait in memory for the next commit; past the bound the newest go.
            restore_drops(shared, drops);
            let over = rows.len().saturating_sub(MAX_UNSTORED_EVENTS);
            rows.truncate(MAX_UNSTORED_EVENTS);
            if over > 0 {
                shared.record_drop(drop_reason::STORAGE_ERROR, over as u64);
            }
            tracing::error!(
                error = %e,
                count,
                waiting = rows.len(),
                dropped = over,
                "could not store tracked events; kept in memory to retry"
            );
            drop(meta);
            unstored.rows = rows;
            unstored.meta = meta_changes;
            return;
        }
    }
    drop(store);
    if let Err(e) = enforce_caps(shared) {
        tracing::error!(error = %e, "could not enforce the buffer caps");
        recover_if_corrupt(&mut shared.store(), &e);
    }
}

/// Replaces the buffer when `error` says SQLite found it corrupt, as at open (see
/// [`Store::recover_from_corruption`]): otherwise every later statement would fail the same way.
fn recover_if_corrupt(store: &mut Store, error: &Error) {
    if !crate::store::is_corruption(error) {
        return;
    }
    if let Err(e) = store.recover_from_corruption() {
        tracing::error!(error = %e, "could not replace the corrupt buffer; trying again later");
    }
}

/// Enforces the buffer caps in slices of [`MAX_CAP_DROP_SLICE`] events, letting go of the store
/// between slices: dropping tens of thousands of rows must not keep the other thread (or the
/// app calling `stats()`) waiting for the whole of it.
fn enforce_caps(shared: &Shared) -> Result<u64> {
    let caps = shared.policy.caps();
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
fn persist_drops(shared: &Shared, store: &mut Store) {
    let drops = std::mem::take(&mut *lock(&shared.unpersisted_drops));
    if drops.is_empty() {
        return;
    }
    let list: Vec<(&str, u64)> = drops.iter().map(|(r, n)| (*r, *n)).collect();
    if store.add_drops(&list).is_err() {
        restore_drops(shared, drops);
    }
}

/// Puts drop counts that could not be written back among those counted in memory.
fn restore_drops(shared: &Shared, drops: BTreeMap<&'static str, u64>) {
    let mut unpersisted = lock(&shared.unpersisted_drops);
    for (reason, n) in drops {
        *unpersisted.entry(reason).or_default() += n;
    }
}

fn run_uploader(shared: &Shared, transport: &dyn Transport, wake: &Receiver<()>) {
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
        let (batch, bodies) = {
            let mut store = shared.store();
            let batch = match store.oldest_batch()? {
                Some(b) => b,
                None => {
                    // Drops counted while the writer had nothing to commit (track() refusing
                    // events after a storage failure) ride with this batch too.
                    persist_drops(shared, &mut store);
                    let context = read(&shared.context).clone();
                    let cut = store.cut_batch(
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
            // From here until its answer is handled, the caps leave this batch alone.
            store.set_in_flight(Some(batch.batch_id));
            (batch, bodies)
        };
        let outcome = match upload::encode_batch(&batch, &shared.install_id, bodies, &shared.clock)
        {
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
            Ok(encoded) => upload::send(
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
                store.delete_batch(&batch)?;
                shared
                    .counters
                    .batches_delivered
                    .fetch_add(1, Ordering::Relaxed);
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
                    store.quarantine_batch(&batch, &reason, now, &policy.quarantine_caps())?;
                }
            },
            Outcome::PartlyRefused(refused) => {
                let quarantined = store.settle_partly_refused(
                    &batch,
                    &refused,
                    now,
                    &policy.quarantine_caps(),
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
                if store.quarantine_batch(&batch, &reason, now, &policy.quarantine_caps())? {
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

/// The `meta` key of what the last upload attempt ended with, so that a backoff from
/// connectivity failures can still be skipped after the app restarts.
const LAST_FAILURE_KEY: &str = "upload_last_failure";

/// What the last upload attempt ended with, which decides whether its backoff may be skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum LastFailure {
    /// It did not fail (or nothing was sent yet).
    None = 0,
    /// No answer came: no network, DNS, connect, TLS, a timeout before any response.
    Connectivity = 1,
    /// The server answered, but not with an acknowledgement (5xx, 429, 401, ...).
    Server = 2,
}

impl LastFailure {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Connectivity,
            2 => Self::Server,
            _ => Self::None,
        }
    }

    fn from_meta(value: Option<&str>) -> Self {
        match value {
            Some("connectivity") => Self::Connectivity,
            Some("server") => Self::Server,
            _ => Self::None,
        }
    }

    fn as_meta(self) -> &'static str {
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
        if let Err(e) = store.set_meta(LAST_FAILURE_KEY, failure.as_meta()) {
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
fn latest_next_attempt(policy: &Policy, now_ms: i64) -> i64 {
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
