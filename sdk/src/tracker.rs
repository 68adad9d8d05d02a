//! The tracker: the public API ([`Tracker`], its [`Config`] and its [`Stats`]) and the threads
//! it starts.
//!
//! `track()` validates and stamps an event on the calling thread and hands it to the writer
//! thread (`writer`) through a bounded queue; the writer commits groups of events to SQLite;
//! the uploader thread (`upload::scheduler`) cuts batches, sends them and deletes them on
//! acknowledgement; `supervise` restarts a thread that panicked, runs the checkpoints and
//! writes the `seq` reservations ahead of the writer's need (on the checkpoint thread).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crossbeam_channel::{bounded, SendTimeoutError, Sender, TrySendError};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tern_protocol::limits::{
    context_problem, event_name_problem, id_problem, properties_problem, MAX_PROPERTIES_BYTES,
    MAX_PROPERTIES_DEPTH,
};
use tern_protocol::Context;
use uuid::Uuid;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::json_size;
use crate::policy::Policy;
use crate::shared::{lock, read, write, Counters, Identity, Session, Shared};
use crate::store::{drop_reason, gap_reason, meta_key, Pending, SeqMarks, Store};
use crate::supervise::{run_checkpoints, supervise};
use crate::transport::{self, Transport};
use crate::upload::scheduler::{latest_next_attempt, run_uploader, LastFailure};
use crate::writer::{run_writer, Command, Properties, Tracked};

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

/// The clocks read when the app tracked an event, for [`Tracker::track_captured`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Captured {
    /// The device's wall clock at the call: the event's `created_at`.
    pub created_at: DateTime<Utc>,
    /// The tracker's monotonic clock at the call ([`Tracker::uptime_ms`]), which the collector's
    /// clock-skew correction compares with the batch's.
    pub uptime_ms: u64,
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
    /// Wakes the checkpoint thread at shutdown, after `checkpoint_stop` is dropped.
    seq_marks: SeqMarks,
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
        let seq_marks = store.seq_marks();
        store.set_max_file_bytes(config.policy.max_file_bytes)?;
        // A wall clock moved back since the last run must not stall the uploads.
        store.clamp_next_attempts(latest_next_attempt(
            &config.policy,
            Utc::now().timestamp_millis(),
        ))?;
        let identity = Identity::load(&store)?;
        let session = Session::load(&store)?;
        let opted_out = store.meta(meta_key::OPT_OUT)?.as_deref() == Some("1");
        let last_failure =
            LastFailure::from_meta(store.meta(meta_key::UPLOAD_LAST_FAILURE)?.as_deref());
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
            unreported_queue_drops: AtomicU64::new(0),
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
            .spawn({
                let seq_marks = seq_marks.clone();
                move || run_checkpoints(checkpointer, &seq_marks, &checkpoint_stop_rx)
            })?;
        Ok(Self {
            shared,
            open: RwLock::new(true),
            commands,
            wake,
            checkpoint_stop: Mutex::new(Some(checkpoint_stop)),
            seq_marks,
            threads: Mutex::new(vec![writer, uploader, checkpoint]),
        })
    }

    /// The install's stable id.
    pub fn install_id(&self) -> &str {
        &self.shared.install_id
    }

    /// The monotonic clock the events' `uptime_ms` come from (milliseconds; see `clock`).
    pub fn uptime_ms(&self) -> u64 {
        self.shared.clock.uptime_ms()
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
    pub fn track(&self, name: &str, properties: Map<String, Value>) -> Result<Option<Uuid>> {
        let clock = &self.shared.clock;
        let captured = Captured {
            created_at: clock.wall(),
            uptime_ms: clock.uptime_ms(),
        };
        self.track_captured(name, properties, captured, Duration::ZERO)
    }

    /// [`Tracker::track`] with the properties as the JSON text of an object (see
    /// [`Tracker::track_captured_json`]).
    pub fn track_json(&self, name: &str, properties: &str) -> Result<Option<Uuid>> {
        let clock = &self.shared.clock;
        let captured = Captured {
            created_at: clock.wall(),
            uptime_ms: clock.uptime_ms(),
        };
        self.track_captured_json(name, properties, captured, Duration::ZERO)
    }

    /// Records an event captured earlier: what [`Tracker::track`] does, with the clocks read
    /// when the app called (see [`Captured`]), for the bindings' queue, which calls this from
    /// its own thread many events at a time. Waits at most `wait` for room in the hand-off
    /// queue before dropping the event as `queue_full` (`track()` waits for none: it runs on the
    /// app's thread; the bindings' drain thread may wait, which is how a full writer pushes back
    /// on their queue).
    pub fn track_captured(
        &self,
        name: &str,
        mut properties: Map<String, Value>,
        captured: Captured,
        wait: Duration,
    ) -> Result<Option<Uuid>> {
        if !self.admit(name, captured.created_at)? {
            return Ok(None);
        }
        let shared = &*self.shared;
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
        self.hand_over(name, Properties::Map(properties), user_id, captured, wait)
    }

    /// [`Tracker::track_captured`] with the properties as the JSON text of an object, as the
    /// bindings' layers encode them. Text the collector would take is stored as it is, checked
    /// without building a tree (`json_size::json_object_fits`) and never serialized again;
    /// with super-properties to merge, or text over a limit or not a JSON object, the text is
    /// parsed and the event takes [`Tracker::track_captured`]'s path (and its refusal's words).
    pub fn track_captured_json(
        &self,
        name: &str,
        properties: &str,
        captured: Captured,
        wait: Duration,
    ) -> Result<Option<Uuid>> {
        if !self.admit(name, captured.created_at)? {
            return Ok(None);
        }
        let as_text = {
            let identity = read(&self.shared.identity);
            (identity.super_properties.is_empty()
                && json_size::json_object_fits(
                    properties,
                    MAX_PROPERTIES_BYTES,
                    MAX_PROPERTIES_DEPTH,
                ))
            .then(|| identity.user_id.clone())
        };
        // serde_json has the last word on the syntax: what it refuses, or what the scan could
        // not pass, its parse measures exactly and words.
        let text = as_text.and_then(|user_id| {
            let raw = RawValue::from_string(properties.to_owned()).ok()?;
            Some((raw, user_id))
        });
        let Some((raw, user_id)) = text else {
            let map = properties_from_json(properties).map_err(|problem| self.invalid(problem))?;
            return self.track_captured(name, map, captured, wait);
        };
        if let Some(problem) = id_problem("user_id", user_id.as_deref()) {
            return Err(self.invalid(problem));
        }
        self.hand_over(name, Properties::Json(raw), user_id, captured, wait)
    }

    /// The checks before an event's own: the tracker open, not opted out (`false`: discard the
    /// event), a valid name, storage not failing (else the event is dropped and counted).
    fn admit(&self, name: &str, created_at: DateTime<Utc>) -> Result<bool> {
        let shared = &*self.shared;
        if shared.stopping.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        if shared.opted_out.load(Ordering::Relaxed) {
            return Ok(false);
        }
        if let Some(problem) = event_name_problem(name) {
            return Err(self.invalid(problem));
        }
        let now_ms = created_at.timestamp_millis();
        let failed_at = shared.storage_failed_at_ms.load(Ordering::Relaxed);
        let retry_ms = i64::try_from(shared.policy.storage_retry_after.as_millis()).unwrap_or(0);
        if failed_at != 0 && now_ms.saturating_sub(failed_at) < retry_ms {
            shared.record_drop(drop_reason::STORAGE_ERROR, 1);
            return Err(Error::StorageFailing(
                "the last write to the buffer failed".into(),
            ));
        }
        Ok(true)
    }

    /// Stamps a checked event and hands it to the writer (see [`Tracker::track_captured`]).
    fn hand_over(
        &self,
        name: &str,
        properties: Properties,
        user_id: Option<String>,
        captured: Captured,
        wait: Duration,
    ) -> Result<Option<Uuid>> {
        let shared = &*self.shared;
        let session_id = self.touch_session(captured.created_at.timestamp_millis());
        let event_id = Uuid::now_v7();
        let tracked = Tracked {
            event_id,
            name: name.to_owned(),
            created_at: captured.created_at,
            uptime_ms: captured.uptime_ms,
            properties,
            user_id,
            session_id,
        };
        let open = read(&self.open);
        if !*open {
            return Err(Error::Closed);
        }
        let sent = if wait.is_zero() {
            self.commands
                .try_send(Command::Track(tracked))
                .map_err(|e| matches!(e, TrySendError::Full(_)))
        } else {
            self.commands
                .send_timeout(Command::Track(tracked), wait)
                .map_err(|e| matches!(e, SendTimeoutError::Timeout(_)))
        };
        match sent {
            Ok(()) => Ok(Some(event_id)),
            Err(true) => {
                shared.record_drop(drop_reason::QUEUE_FULL, 1);
                Err(Error::QueueFull(shared.policy.queue_capacity))
            }
            Err(false) => Err(Error::Closed),
        }
    }

    /// Counts events that a foreign layer dropped before they reached [`Tracker::track`] (its
    /// own queue was full): reported to the collector like the events dropped here on a full
    /// hand-off queue (`queue_full`).
    pub fn record_dropped(&self, events: u64) {
        if events > 0 {
            self.shared.record_drop(drop_reason::QUEUE_FULL, events);
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
        self.persist(meta_key::USER_ID, user_id.unwrap_or_default());
    }

    /// Sets properties added to every event tracked from now on (an event's own properties win
    /// on a name clash). Replaces the previous set.
    pub fn set_super_properties(&self, properties: Map<String, Value>) -> Result<()> {
        let json = serde_json::to_string(&properties)?;
        write(&self.shared.identity).super_properties = properties;
        self.persist(meta_key::SUPER_PROPERTIES, json);
        Ok(())
    }

    /// Forgets the user id and the super-properties and starts a new session (a user logged
    /// out). The install id stays: it identifies the installation, not the person.
    pub fn reset(&self) {
        *write(&self.shared.identity) = Identity::default();
        lock(&self.shared.session).id.clear();
        self.persist(meta_key::USER_ID, String::new());
        self.persist(meta_key::SUPER_PROPERTIES, "{}".to_owned());
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
            Command::Meta(meta_key::OPT_OUT, "0".into())
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
        let (pending, stored_drops, mut gaps, pending_gap_reports) = {
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
        let queue_drops = shared.unreported_queue_drops.load(Ordering::SeqCst);
        if queue_drops > 0 {
            *gaps.entry(gap_reason::QUEUE_FULL.to_owned()).or_default() += queue_drops;
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
        self.seq_marks.wake_checkpoint_thread();
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

/// The context as the batches carry it, refused (as the collector would refuse every batch
/// Properties from the JSON text of an object, or why not (the words of a refusal).
pub fn properties_from_json(json: &str) -> std::result::Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("properties must be a JSON object".into()),
        Err(e) => Err(format!("properties are not valid JSON: {e}")),
    }
}

/// carrying it) when it is over the protocol's limit.
fn context_json(context: &Context) -> Result<String> {
    if let Some(problem) = context_problem(context) {
        return Err(Error::Config(problem));
    }
    Ok(serde_json::to_string(context)?)
}
