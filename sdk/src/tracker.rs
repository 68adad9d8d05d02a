//! The tracker: the public API and the two threads behind it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use serde_json::{Map, Value};
use tern_protocol::limits::event_name_problem;
use tern_protocol::{Context, Event};
use uuid::Uuid;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::policy::{Policy, MAX_GROUP_COMMIT};
use crate::store::{BatchRow, Pending, Store, StoredEvent};
use crate::upload::{self, Outcome};

/// How to build a [`Tracker`].
#[derive(Debug, Clone)]
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
}

/// Counters of what happened to tracked events, for QA and for the host app's diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// What waits in the buffer.
    pub pending: Pending,
    /// Events dropped because the hand-off queue was full.
    pub dropped_queue_full: u64,
    /// Events dropped because storing them failed (disk full, I/O error).
    pub dropped_storage_error: u64,
    /// Events refused as invalid at `track()`.
    pub rejected_invalid: u64,
    /// Batches acknowledged by the collector.
    pub batches_delivered: u64,
    /// Upload attempts that failed.
    pub upload_failures: u64,
}

/// An event between `track()` and the writer: stamped, not yet numbered.
struct Tracked {
    event_id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
    uptime_ms: u64,
    properties: Map<String, Value>,
    user_id: Option<String>,
}

enum Command {
    Track(Tracked),
    /// Answer once everything sent before is committed.
    Sync(Sender<()>),
    Stop,
}

#[derive(Default)]
struct Counters {
    dropped_queue_full: AtomicU64,
    dropped_storage_error: AtomicU64,
    rejected_invalid: AtomicU64,
    batches_delivered: AtomicU64,
    upload_failures: AtomicU64,
}

struct Shared {
    store: Mutex<Store>,
    install_id: String,
    policy: Policy,
    endpoint: String,
    write_key: String,
    context: RwLock<String>,
    user_id: RwLock<Option<String>>,
    clock: Clock,
    counters: Counters,
    stopping: AtomicBool,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        // A poisoned lock means a thread panicked mid-operation; SQLite's transactions keep the
        // file consistent, so carrying on with the connection is safe.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The SDK's entry point. Cheap to call from any thread; all I/O happens on its own threads.
pub struct Tracker {
    shared: Arc<Shared>,
    commands: Sender<Command>,
    wake: Sender<()>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Tracker {
    /// Opens the buffer and starts the writer and uploader threads.
    pub fn new(config: Config) -> Result<Self> {
        if config.endpoint.is_empty() {
            return Err(Error::Config("endpoint is empty".into()));
        }
        let store = Store::open(&config.db_path)?;
        let shared = Arc::new(Shared {
            install_id: store.install_id().to_owned(),
            store: Mutex::new(store),
            context: RwLock::new(serde_json::to_string(&config.context)?),
            policy: config.policy,
            endpoint: config.endpoint,
            write_key: config.write_key,
            user_id: RwLock::new(None),
            clock: Clock::new(),
            counters: Counters::default(),
            stopping: AtomicBool::new(false),
        });
        let (commands, command_rx) = bounded(shared.policy.queue_capacity);
        let (wake, wake_rx) = bounded(1);
        let writer = {
            let shared = Arc::clone(&shared);
            let wake = wake.clone();
            std::thread::Builder::new()
                .name("tern-writer".into())
                .spawn(move || run_writer(&shared, &command_rx, &wake))?
        };
        let uploader = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("tern-uploader".into())
                .spawn(move || run_uploader(&shared, &wake_rx))?
        };
        Ok(Self {
            shared,
            commands,
            wake,
            threads: Mutex::new(vec![writer, uploader]),
        })
    }

    /// The install's stable id.
    pub fn install_id(&self) -> &str {
        &self.shared.install_id
    }

    /// Records an event. Validates and stamps it on the calling thread and hands it to the
    /// writer; never touches disk or network. If the hand-off queue is full the event is
    /// dropped, counted, and [`Error::QueueFull`] returned: the app's thread never blocks.
    pub fn track(&self, name: &str, properties: Map<String, Value>) -> Result<()> {
        if self.shared.stopping.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        if let Some(problem) = event_name_problem(name) {
            self.shared
                .counters
                .rejected_invalid
                .fetch_add(1, Ordering::Relaxed);
            return Err(Error::InvalidEvent(problem));
        }
        let tracked = Tracked {
            event_id: Uuid::now_v7(),
            name: name.to_owned(),
            created_at: self.shared.clock.wall(),
            uptime_ms: self.shared.clock.uptime_ms(),
            properties,
            user_id: self
                .shared
                .user_id
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        };
        match self.commands.try_send(Command::Track(tracked)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.shared
                    .counters
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                Err(Error::QueueFull(self.shared.policy.queue_capacity))
            }
            Err(TrySendError::Disconnected(_)) => Err(Error::Closed),
        }
    }

    /// Sets the user id sent with the events tracked from now on (`None` to forget it).
    pub fn identify(&self, user_id: Option<String>) {
        *self
            .shared
            .user_id
            .write()
            .unwrap_or_else(|p| p.into_inner()) = user_id;
    }

    /// Replaces the context sent with batches cut from now on.
    pub fn set_context(&self, context: &Context) -> Result<()> {
        let json = serde_json::to_string(context)?;
        *self
            .shared
            .context
            .write()
            .unwrap_or_else(|p| p.into_inner()) = json;
        Ok(())
    }

    /// Waits until every event tracked before this call is durable (at most `timeout`), then
    /// asks the uploader to send what waits. Returns whether durability was reached in time.
    pub fn flush(&self, timeout: Duration) -> Result<bool> {
        let (ack, acked) = bounded(1);
        self.commands
            .send_timeout(Command::Sync(ack), timeout)
            .map_err(|_| Error::Closed)?;
        let durable = acked.recv_timeout(timeout).is_ok();
        let _ = self.wake.try_send(());
        Ok(durable)
    }

    /// Flushes, then waits until the collector has acknowledged everything in the buffer or
    /// `timeout` passes. Returns whether the buffer is empty. For tests, tools and shutdown.
    pub fn flush_and_wait(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        self.flush(timeout)?;
        while Instant::now() < deadline {
            if self.shared.store().pending().events == 0 {
                return Ok(true);
            }
            let _ = self.wake.try_send(());
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(self.shared.store().pending().events == 0)
    }

    /// Counters and buffer size.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            pending: self.shared.store().pending(),
            dropped_queue_full: c.dropped_queue_full.load(Ordering::Relaxed),
            dropped_storage_error: c.dropped_storage_error.load(Ordering::Relaxed),
            rejected_invalid: c.rejected_invalid.load(Ordering::Relaxed),
            batches_delivered: c.batches_delivered.load(Ordering::Relaxed),
            upload_failures: c.upload_failures.load(Ordering::Relaxed),
        }
    }

    /// Stops both threads after the writer has committed what was tracked. Idempotent.
    /// Events still in the buffer stay there for the next start.
    pub fn shutdown(&self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        // The queue may be full; a blocking send waits for the writer to make room.
        let _ = self.commands.send(Command::Stop);
        let _ = self.wake.try_send(());
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
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

fn run_writer(shared: &Shared, commands: &Receiver<Command>, wake: &Sender<()>) {
    let mut group = Vec::with_capacity(MAX_GROUP_COMMIT);
    let mut syncs = Vec::new();
    while let Ok(first) = commands.recv() {
        let mut stop = false;
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Track(t) => group.push(t),
                Command::Sync(ack) => syncs.push(ack),
                Command::Stop => {
                    stop = true;
                    break;
                }
            }
            if group.len() < MAX_GROUP_COMMIT {
                next = commands.try_recv().ok();
            }
        }
        commit_group(shared, &mut group);
        for ack in syncs.drain(..) {
            let _ = ack.send(());
        }
        if shared.store().pending().unbatched_events >= shared.policy.flush_at_count as u64 {
            let _ = wake.try_send(());
        }
        if stop {
            break;
        }
    }
}

fn commit_group(shared: &Shared, group: &mut Vec<Tracked>) {
    if group.is_empty() {
        return;
    }
    let mut store = shared.store();
    let first_seq = store.next_seq();
    let count = group.len() as u64;
    let rows: Result<Vec<StoredEvent>> = group
        .drain(..)
        .zip(first_seq..)
        .map(|(t, seq)| {
            let event = Event {
                event_id: t.event_id,
                seq,
                name: t.name,
                created_at: t.created_at,
                uptime_ms: Some(t.uptime_ms),
                clock_id: Some(shared.clock.id().to_owned()),
                properties: t.properties,
                user_id: t.user_id,
                session_id: None,
            };
            Ok(StoredEvent {
                seq,
                event_id: event.event_id,
                created_at_ms: event.created_at.timestamp_millis(),
                body: serde_json::to_string(&event)?,
                name: event.name,
            })
        })
        .collect();
    let result = rows.and_then(|rows| store.insert_events(&rows).map(|()| rows.len()));
    if let Err(e) = result {
        tracing::error!(error = %e, count, "could not store tracked events; they are dropped");
        // The group is one transaction: nothing of it was committed.
        shared
            .counters
            .dropped_storage_error
            .fetch_add(count, Ordering::Relaxed);
    }
}

fn run_uploader(shared: &Shared, wake: &Receiver<()>) {
    let client = match reqwest::blocking::Client::builder()
        .timeout(shared.policy.request_timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client; uploads are off");
            return;
        }
    };
    let mut wait = shared.policy.flush_interval;
    loop {
        match wake.recv_timeout(wait) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        wait = match deliver_due(shared, &client) {
            Ok(wait) => wait,
            Err(e) => {
                tracing::error!(error = %e, "upload cycle failed");
                shared.policy.flush_interval
            }
        };
    }
}

/// Sends batches, oldest first, until the buffer is empty or a batch must wait; returns how long
/// to sleep before the next cycle.
fn deliver_due(shared: &Shared, client: &reqwest::blocking::Client) -> Result<Duration> {
    let policy = &shared.policy;
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return Ok(policy.flush_interval);
        }
        let now = now_ms();
        let (batch, bodies) = {
            let mut store = shared.store();
            let batch = match store.oldest_batch()? {
                Some(b) => b,
                None => {
                    let context = shared
                        .context
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    match store.cut_batch(
                        policy.max_batch_events,
                        policy.max_batch_bytes,
                        &context,
                        now,
                    )? {
                        Some(b) => b,
                        None => return Ok(policy.flush_interval),
                    }
                }
            };
            if batch.next_attempt_ms > now {
                let until_due = Duration::from_millis((batch.next_attempt_ms - now) as u64);
                return Ok(until_due.min(policy.flush_interval));
            }
            let bodies = store.batch_bodies(batch.batch_id)?;
            (batch, bodies)
        };
        let encoded = upload::encode_batch(
            batch.batch_id,
            &shared.install_id,
            &batch.context,
            bodies,
            &shared.clock,
        )?;
        match upload::send(client, &shared.endpoint, &shared.write_key, &encoded) {
            Outcome::Delivered => {
                shared.store().delete_batch(&batch)?;
                shared
                    .counters
                    .batches_delivered
                    .fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Retry { after, reason } => {
                let delay = backoff(policy, batch.attempts + 1).max(after.unwrap_or_default());
                return fail(shared, &batch, delay, &reason);
            }
            Outcome::Unauthorized(reason) => {
                tracing::warn!("the collector refused the write key; uploads pause");
                return fail(shared, &batch, policy.unauthorized_pause, &reason);
            }
            Outcome::TooLarge(reason) | Outcome::Rejected(reason) => {
                tracing::warn!(%reason, "the collector refused a batch");
                return fail(shared, &batch, policy.retry_max_delay, &reason);
            }
        }
    }
}

fn fail(shared: &Shared, batch: &BatchRow, delay: Duration, reason: &str) -> Result<Duration> {
    shared
        .counters
        .upload_failures
        .fetch_add(1, Ordering::Relaxed);
    let next = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
    shared
        .store()
        .record_failure(batch.batch_id, batch.attempts + 1, next, reason)?;
    tracing::debug!(batch_id = %batch.batch_id, ?delay, reason, "upload failed; will retry");
    Ok(delay.min(shared.policy.flush_interval))
}

/// Exponential backoff with jitter for the `attempt`-th consecutive failure (1-based).
fn backoff(policy: &Policy, attempt: u32) -> Duration {
    ExponentialBuilder::default()
        .with_min_delay(policy.retry_min_delay)
        .with_max_delay(policy.retry_max_delay)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(policy.retry_max_delay)
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}
