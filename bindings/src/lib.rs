//! Tern bindings: the SDK for Kotlin, Swift and Python through uniffi (proc-macros, no UDL).
//!
//! The exported surface is small on purpose: a [`Tracker`] object, a [`TrackerConfig`] record
//! with its [`UploadPolicy`] (defaults and limits from the SDK's `Policy`, see [`policy`]),
//! [`PendingStats`] and an [`ApiError`] with few variants, mapped from the SDK's error in one
//! place; and the [`HttpClient`] foreign trait through which the app's platform performs the
//! uploads' HTTP requests (the hand-written layers pass HttpURLConnection, URLSession or urllib
//! by default), so that the library carries no HTTP or TLS stack. Properties cross the FFI as a
//! JSON object string; the hand-written Kotlin, Swift and Python layers encode their native maps.
//! A panic in Rust never unwinds into the host app: uniffi catches it at the boundary and raises
//! it as an error in the calling language (the release profile keeps `panic = "unwind"` for that
//! reason), and an exception thrown by an app's [`HttpClient`] is a failed upload attempt, never
//! a panic (see [`TransportError`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use serde_json::{Map, Value};
use tern_sdk::{AppInfo, Context, DeviceInfo, OsInfo};

pub mod handoff;
pub mod policy;

pub use handoff::{handoff_limits, HandoffLimits, Refusal, RefusalKind};
pub use policy::{
    check_upload_policy, default_upload_policy, realtime_upload_policy, UploadPolicy,
};

uniffi::setup_scaffolding!();

/// Errors seen by the app.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum ApiError {
    /// The event or argument is invalid (bad name, properties not a JSON object, a policy
    /// value out of range).
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// Why.
        reason: String,
    },
    /// The event was dropped and counted (queue full, storage failing).
    #[error("event dropped: {reason}")]
    Dropped {
        /// Why.
        reason: String,
    },
    /// The tracker could not start or is unusable (file locked, unreadable, bad config).
    #[error("tracker unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The tracker was shut down.
    #[error("the tracker is shut down")]
    Closed,
}

impl From<tern_sdk::Error> for ApiError {
    fn from(e: tern_sdk::Error) -> Self {
        use tern_sdk::Error as E;
        let reason = e.to_string();
        match e {
            E::InvalidEvent(_) | E::Json(_) => Self::InvalidInput { reason },
            E::QueueFull(_) | E::StorageFailing(_) => Self::Dropped { reason },
            E::Closed => Self::Closed,
            E::Storage(_)
            | E::Io(_)
            | E::Config(_)
            | E::AlreadyOpen(_)
            | E::SchemaTooNew { .. } => Self::Unavailable { reason },
        }
    }
}

/// One POST of an upload attempt, for [`HttpClient::post`].
#[derive(Debug, Clone, uniffi::Record)]
pub struct HttpRequest {
    /// The full URL (`{endpoint}/v1/batch`).
    pub url: String,
    /// Headers to send, exactly these (the client adds `Content-Length`).
    pub headers: HashMap<String, String>,
    /// The body, sent as is (zstd-compressed JSON).
    pub body: Vec<u8>,
    /// The longest the request may take, connection included.
    pub timeout_ms: u64,
    /// Most bytes of the answer's body worth reading.
    pub max_response_bytes: u64,
}

/// The HTTP answer, whatever its status.
#[derive(Debug, Clone, uniffi::Record)]
pub struct HttpResponse {
    /// The status code; 3xx, 4xx and 5xx included.
    pub status: u16,
    /// The raw `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The raw `Location` header, if any (reported, never followed).
    pub location: Option<String>,
    /// The body, or its first `max_response_bytes` bytes.
    pub body: Vec<u8>,
}

/// Why no HTTP answer came.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum TransportError {
    /// DNS, connection, TLS or timeout failure: the SDK keeps the batch and retries it.
    #[error("network error: {reason}")]
    Network {
        /// Why, for the SDK's log.
        reason: String,
    },
}

/// Anything else an app's client throws (a `RuntimeException`, a Python `ValueError`, ...)
/// arrives as this; it is a failed attempt like a network error, retried with backoff, never a
/// panic.
impl From<uniffi::UnexpectedUniFFICallbackError> for TransportError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        // Kotlin hands over the whole stack trace; its first line names the exception.
        let first_line = e.reason.lines().next().unwrap_or_default();
        Self::Network {
            reason: format!("the HTTP client failed: {first_line}"),
        }
    }
}

/// Performs the HTTP request of an upload attempt, on the SDK's uploader thread (never the main
/// thread; one request at a time), synchronously.
///
/// POST exactly `request.headers` and `request.body` to `request.url`; **do not follow
/// redirects** (a followed 301/302 turns the POST into a GET whose 200 would delete the batch);
/// honour `request.timeout_ms`; return every HTTP answer, 3xx/4xx/5xx included, as an
/// [`HttpResponse`]; throw [`TransportError::Network`] only when no answer came. Whether the
/// batch was delivered is decided in Rust from the answer (status, `Retry-After`, the
/// acknowledgement of this batch in the body).
#[uniffi::export(foreign)]
pub trait HttpClient: Send + Sync {
    /// Sends the request and returns the answer.
    fn post(&self, request: HttpRequest) -> Result<HttpResponse, TransportError>;
}

/// The app's [`HttpClient`] as the SDK's transport.
struct ForeignTransport(Arc<dyn HttpClient>);

impl tern_sdk::Transport for ForeignTransport {
    fn post(&self, request: &tern_sdk::HttpRequest<'_>) -> Result<tern_sdk::HttpResponse, String> {
        let request = HttpRequest {
            url: request.url.clone(),
            headers: request.headers.iter().cloned().collect(),
            body: request.body.to_vec(),
            timeout_ms: u64::try_from(request.timeout.as_millis()).unwrap_or(u64::MAX),
            max_response_bytes: request.max_response_bytes,
        };
        match self.0.post(request) {
            Ok(r) => Ok(tern_sdk::HttpResponse {
                status: r.status,
                retry_after: r.retry_after,
                location: r.location,
                body: r.body,
            }),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// How to start a tracker; context fields are optional.
#[derive(Debug, Clone, uniffi::Record)]
pub struct TrackerConfig {
    /// Path of the SQLite buffer (in the app's private files).
    pub db_path: String,
    /// Collector base URL.
    pub endpoint: String,
    /// The app's write key.
    pub write_key: String,
    /// When to upload and what the buffer keeps: [`default_upload_policy`] (every 10 s or 100
    /// events), [`realtime_upload_policy`] (every event and every 500 ms), or either with
    /// settings changed; refused at start when a value is out of range.
    pub policy: UploadPolicy,
    /// App id (bundle/package).
    pub app_id: Option<String>,
    /// App version.
    pub app_version: Option<String>,
    /// App build.
    pub app_build: Option<String>,
    /// OS name.
    pub os_name: Option<String>,
    /// OS version.
    pub os_version: Option<String>,
    /// Device manufacturer.
    pub device_manufacturer: Option<String>,
    /// Device model.
    pub device_model: Option<String>,
    /// Locale (BCP 47).
    pub locale: Option<String>,
    /// Time zone (IANA).
    pub timezone: Option<String>,
}

/// What waits in the buffer and what was lost, for a debug screen.
#[derive(Debug, Clone, uniffi::Record)]
pub struct PendingStats {
    /// Events not yet acknowledged by the collector.
    pub pending_events: u64,
    /// Their bytes.
    pub pending_bytes: u64,
    /// Batches the collector refused as malformed, kept aside.
    pub quarantined_batches: u64,
    /// Events dropped on the device since the install (all reasons).
    pub dropped_events: u64,
    /// Whether the user opted out.
    pub opted_out: bool,
}

/// The tracker.
#[derive(uniffi::Object)]
pub struct Tracker {
    /// The install's stable id, also known after `shutdown()`.
    install_id: String,
    state: RwLock<State>,
}

/// A tracker runs until `shutdown()`, which drops the SDK's tracker at once: the foreign object
/// may live on until the host's garbage collector runs, but the database and its lock are
/// released, so a new tracker can open the same file right away (once a call still running on
/// another thread returns: it holds the tracker until then).
///
/// The lock around the state is held only to read or swap it, never during a call into the
/// SDK: `track()` on the main thread never waits behind `flush_and_wait()` or `shutdown()` on
/// another.
enum State {
    Running(Arc<tern_sdk::Tracker>),
    /// What the buffer held when the tracker shut down.
    Closed(PendingStats),
}

fn properties(json: &str) -> Result<Map<String, Value>, ApiError> {
    tern_sdk::properties_from_json(json).map_err(|reason| ApiError::InvalidInput { reason })
}

#[uniffi::export]
impl Tracker {
    /// Opens the buffer and starts the SDK's threads; uploads go through `http_client`.
    #[uniffi::constructor]
    pub fn new(
        config: TrackerConfig,
        http_client: Arc<dyn HttpClient>,
    ) -> Result<Arc<Self>, ApiError> {
        let context = Context {
            app: AppInfo {
                id: config.app_id,
                version: config.app_version,
                build: config.app_build,
            },
            device: DeviceInfo {
                manufacturer: config.device_manufacturer,
                model: config.device_model,
            },
            os: OsInfo {
                name: config.os_name,
                version: config.os_version,
            },
            locale: config.locale,
            timezone: config.timezone,
        };
        let inner = tern_sdk::Tracker::new(tern_sdk::Config {
            db_path: config.db_path.into(),
            endpoint: config.endpoint,
            write_key: config.write_key,
            policy: config.policy.to_policy()?,
            context,
            transport: Some(Arc::new(ForeignTransport(http_client))),
        })?;
        Ok(Arc::new(Self {
            install_id: inner.install_id().to_owned(),
            state: RwLock::new(State::Running(Arc::new(inner))),
        }))
    }

    /// The install's id.
    pub fn install_id(&self) -> String {
        self.install_id.clone()
    }

    /// Tracks an event; `properties_json` is a JSON object. Returns the event id (`None` after
    /// opt-out). Never blocks and never touches the disk on the calling thread. The Kotlin and
    /// Python layers call [`Tracker::track_many`] instead, many events per crossing (see
    /// [`handoff`]); Swift calls this.
    pub fn track(&self, name: String, properties_json: String) -> Result<Option<String>, ApiError> {
        self.running(|t| {
            Ok(t.track_json(&name, &properties_json)?
                .map(|id| id.to_string()))
        })
    }

    /// Sets (or clears) the user id of the following events.
    pub fn identify(&self, user_id: Option<String>) {
        if let Some(t) = self.tracker() {
            t.identify(user_id);
        }
    }

    /// Sets properties added to every following event (a JSON object).
    pub fn set_super_properties(&self, properties_json: String) -> Result<(), ApiError> {
        let properties = properties(&properties_json)?;
        self.running(|t| Ok(t.set_super_properties(properties)?))
    }

    /// Forgets the user and super-properties; starts a new session.
    pub fn reset(&self) {
        if let Some(t) = self.tracker() {
            t.reset();
        }
    }

    /// Waits (at most `timeout_ms`) until what was tracked is durable, then uploads.
    pub fn flush(&self, timeout_ms: u64) -> Result<bool, ApiError> {
        self.running(|t| Ok(t.flush(Duration::from_millis(timeout_ms))?))
    }

    /// Flushes and waits (at most `timeout_ms`) until the collector acknowledged everything.
    pub fn flush_and_wait(&self, timeout_ms: u64) -> Result<bool, ApiError> {
        self.running(|t| Ok(t.flush_and_wait(Duration::from_millis(timeout_ms))?))
    }

    /// The app went to the background: upload now (does not block).
    pub fn on_background(&self) {
        if let Some(t) = self.tracker() {
            t.on_background();
        }
    }

    /// The app came to the foreground.
    pub fn on_foreground(&self) {
        if let Some(t) = self.tracker() {
            t.on_foreground();
        }
    }

    /// The platform says the network is back (NWPathMonitor, ConnectivityManager): upload now,
    /// skipping a backoff that came from connectivity failures (a server's backoff holds).
    pub fn network_available(&self) {
        if let Some(t) = self.tracker() {
            t.network_available();
        }
    }

    /// Opts the user out (stops collection, purges the buffer) or back in.
    pub fn set_opt_out(&self, opted_out: bool) -> Result<(), ApiError> {
        self.running(|t| Ok(t.set_opt_out(opted_out)?))
    }

    /// What waits in the buffer (after `shutdown()`: what waited when it shut down).
    pub fn pending_stats(&self) -> PendingStats {
        let tracker = match &*self.state() {
            State::Running(t) => Arc::clone(t),
            State::Closed(stats) => return stats.clone(),
        };
        pending_stats(&tracker)
    }

    /// Stops the SDK's threads and closes the buffer (its file can be opened again at once);
    /// buffered events stay for the next start. Later calls answer [`ApiError::Closed`].
    pub fn shutdown(&self) {
        let Some(tracker) = self.tracker() else {
            return;
        };
        // Stopping the threads can take as long as an upload in progress: without the lock,
        // so that calls on other threads answer at once (`Closed` once it is done).
        tracker.shutdown();
        let stats = pending_stats(&tracker);
        let mut state = self
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Replacing the state drops the last reference to the SDK's tracker (unless a call on
        // another thread still holds one), which closes the database.
        *state = State::Closed(stats);
    }
}

impl Tracker {
    /// The state, also after a panic elsewhere poisoned the lock (uniffi turned that panic into
    /// an error; the state itself is always whole).
    fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The running tracker, if any, taken from the state without keeping the lock.
    fn tracker(&self) -> Option<Arc<tern_sdk::Tracker>> {
        match &*self.state() {
            State::Running(t) => Some(Arc::clone(t)),
            State::Closed(_) => None,
        }
    }

    /// Runs `f` on the running tracker, or answers [`ApiError::Closed`].
    fn running<T>(
        &self,
        f: impl FnOnce(&tern_sdk::Tracker) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        match self.tracker() {
            Some(t) => f(&t),
            None => Err(ApiError::Closed),
        }
    }
}

fn pending_stats(tracker: &tern_sdk::Tracker) -> PendingStats {
    let stats = tracker.stats();
    PendingStats {
        pending_events: stats.pending.events,
        pending_bytes: stats.pending.bytes,
        quarantined_batches: stats.pending.quarantined_batches,
        // Losses before a seq (counts) and after (gap reports); quarantined events are kept.
        dropped_events: stats.dropped.values().sum::<u64>()
            + stats
                .gaps
                .iter()
                .filter(|(reason, _)| reason.as_str() != tern_sdk::store::gap_reason::QUARANTINE)
                .map(|(_, n)| n)
                .sum::<u64>(),
        opted_out: stats.opted_out,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

    use std::sync::mpsc;
    use std::sync::Mutex;

    use super::*;

    /// A client whose every request hangs until the test lets it go, then fails.
    struct HangingClient {
        entered: Mutex<Option<mpsc::Sender<()>>>,
        release: Mutex<mpsc::Receiver<()>>,
    }

    impl HttpClient for HangingClient {
        fn post(&self, _: HttpRequest) -> Result<HttpResponse, TransportError> {
            if let Some(entered) = self.entered.lock().unwrap().take() {
                let _ = entered.send(());
            }
            let _ = self.release.lock().unwrap().recv();
            Err(TransportError::Network {
                reason: "released".into(),
            })
        }
    }

    fn config(dir: &std::path::Path) -> TrackerConfig {
        TrackerConfig {
            db_path: dir.join("app.db").display().to_string(),
            endpoint: "http://127.0.0.1:9".into(),
            write_key: "key".into(),
            policy: realtime_upload_policy(),
            app_id: None,
            app_version: None,
            app_build: None,
            os_name: None,
            os_version: None,
            device_manufacturer: None,
            device_model: None,
            locale: None,
            timezone: None,
        }
    }

    /// A client that never gets an answer.
    struct Offline;

    impl HttpClient for Offline {
        fn post(&self, _: HttpRequest) -> Result<HttpResponse, TransportError> {
            Err(TransportError::Network {
                reason: "offline".into(),
            })
        }
    }

    /// A wall clock a minute ago, whole seconds, as a track call carries it.
    fn a_minute_ago() -> chrono::DateTime<chrono::Utc> {
        let t = chrono::Utc::now().timestamp() - 60;
        chrono::DateTime::from_timestamp(t, 0).unwrap()
    }

    /// Appends a call of the hand-off format: a track call dated a minute ago, an identify
    /// with a user id.
    fn call(out: &mut Vec<u8>, op: u8, strings: &[&str]) {
        out.push(op);
        if op == handoff::TRACK {
            out.extend_from_slice(&a_minute_ago().timestamp_millis().to_le_bytes());
            out.extend_from_slice(&0i64.to_le_bytes());
        }
        if op == handoff::IDENTIFY {
            out.push(1);
        }
        for s in strings {
            handoff::tests::str(out, s);
        }
    }

    #[test]
    fn track_many_takes_the_calls_in_order_and_names_each_it_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let tracker = Tracker::new(config(dir.path()), Arc::new(Offline)).unwrap();
        let mut calls = Vec::new();
        call(&mut calls, handoff::TRACK, &["first", "{}"]);
        call(&mut calls, handoff::IDENTIFY, &["user-1"]);
        call(&mut calls, handoff::TRACK, &["has spaces", "{}"]);
        call(&mut calls, handoff::SUPER_PROPERTIES, &["[1]"]);
        call(&mut calls, handoff::TRACK, &["second", r#"{"a":1}"#]);
        let refusals = tracker.track_many(calls, 1_000_000_000, 3);
        assert_eq!(
            refusals
                .iter()
                .map(|r| (r.index, r.call.as_str(), r.event_name.as_deref(), r.kind))
                .collect::<Vec<_>>(),
            vec![
                (2, "track", Some("has spaces"), RefusalKind::InvalidInput),
                (3, "setSuperProperties", None, RefusalKind::InvalidInput),
            ]
        );
        assert!(tracker.flush(10_000).unwrap());
        let stats = tracker.pending_stats();
        assert_eq!(stats.pending_events, 2);
        assert_eq!(stats.dropped_events, 3, "the queue's drops are counted");
        let mut jsonl = Vec::new();
        tern_sdk::inspect::Inspector::open(&dir.path().join("app.db"))
            .unwrap()
            .export_jsonl(&mut jsonl)
            .unwrap();
        let rows: Vec<Value> = jsonl
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0]["name"], "first");
        assert_eq!(rows[0].get("user_id"), None, "tracked before identify()");
        assert_eq!(rows[1]["name"], "second");
        assert_eq!(rows[1]["user_id"], "user-1");
        // The event is dated by the wall clock read at the call.
        let at =
            chrono::DateTime::parse_from_rfc3339(rows[0]["created_at"].as_str().unwrap()).unwrap();
        assert!(
            (a_minute_ago() - at.to_utc()).num_seconds().abs() <= 1,
            "{at}"
        );
        tracker.shutdown();
        let mut later = Vec::new();
        call(&mut later, handoff::TRACK, &["late", "{}"]);
        call(&mut later, handoff::RESET, &[]);
        let refusals = tracker.track_many(later, 0, 0);
        assert_eq!(
            refusals.iter().map(|r| r.kind).collect::<Vec<_>>(),
            vec![RefusalKind::Closed, RefusalKind::Closed]
        );
    }

    #[test]
    fn track_answers_at_once_while_shutdown_waits_for_an_upload_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let client = Arc::new(HangingClient {
            entered: Mutex::new(Some(entered_tx)),
            release: Mutex::new(release_rx),
        });
        let tracker = Tracker::new(config(dir.path()), client).unwrap();
        tracker.track("first".into(), "{}".into()).unwrap();
        entered
            .recv_timeout(Duration::from_secs(10))
            .expect("the upload started");
        // shutdown() waits for the uploader, which is stuck in the request.
        let closing = {
            let tracker = Arc::clone(&tracker);
            std::thread::spawn(move || tracker.shutdown())
        };
        std::thread::sleep(Duration::from_millis(100));
        let (answer_tx, answer) = mpsc::channel();
        let tracking = {
            let tracker = Arc::clone(&tracker);
            std::thread::spawn(move || {
                let _ = answer_tx.send(tracker.track("second".into(), "{}".into()));
            })
        };
        // track() answers while the request still hangs (before the release below).
        let result = answer.recv_timeout(Duration::from_secs(10));
        release.send(()).unwrap();
        closing.join().unwrap();
        tracking.join().unwrap();
        let result = result.expect("track() answered while shutdown() was waiting");
        assert!(
            matches!(result, Err(ApiError::Closed) | Ok(Some(_))),
            "{result:?}"
        );
        assert!(matches!(
            tracker.track("third".into(), "{}".into()),
            Err(ApiError::Closed)
        ));
    }
}
