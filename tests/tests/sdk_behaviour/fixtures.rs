//! The setup the SDK behaviour tests share: a device (a directory with the SDK's files) whose
//! trackers talk to a capture server, policies that make tests quick, servers that answer as a
//! test needs, and readers of what was sent and what is on disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde_json::{Map, Value};
use tempfile::TempDir;
use tern_sdk::{Policy, Tracker};
use tern_tests::capture::{CaptureServer, Captured, Reply};
use tern_tests::{device_config, sample_event};

/// A policy that uploads at once and retries fast, so tests are quick.
pub fn fast() -> Policy {
    Policy {
        flush_at_count: 1_000_000,
        flush_interval: Duration::from_millis(100),
        retry_min_delay: Duration::from_millis(50),
        retry_max_delay: Duration::from_millis(200),
        ..Policy::default()
    }
}

/// `fast()` with every legitimate delay short: a next attempt further than 200 ms away can only
/// come from a wall clock that moved back.
pub fn fast_and_bounded() -> Policy {
    Policy {
        unauthorized_pause: Duration::from_millis(200),
        max_retry_after: Duration::from_millis(200),
        ..fast()
    }
}

/// One app install: a temporary directory holding the SDK's buffer (`device.db`) and identity
/// file, and the URL its trackers upload to. The directory goes when the device is dropped.
pub struct Device {
    dir: TempDir,
    url: String,
}

impl Device {
    /// A fresh install uploading to `server`.
    pub fn new(server: &CaptureServer) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            url: server.url(),
        }
    }

    /// The directory of its files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The SDK's buffer.
    pub fn db(&self) -> PathBuf {
        self.dir().join("device.db")
    }

    /// The URL its trackers upload to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A tracker on its files, as the app starts one.
    pub fn tracker(&self, policy: Policy) -> Tracker {
        Tracker::new(device_config(self.db(), &self.url, policy, 0)).expect("tracker")
    }

    /// Stops `tracker` and starts another on the same files, as an app restart does.
    pub fn restart(&self, tracker: Tracker, policy: Policy) -> Tracker {
        drop(tracker);
        self.tracker(policy)
    }

    /// A tracker whose file may grow to 256 KiB only (SQLite's `max_page_count`: past it,
    /// writes fail as on a full disk), retrying storage every 200 ms and uploading only on
    /// `flush()`.
    pub fn small_disk_tracker(&self) -> Tracker {
        self.tracker(Policy {
            max_file_bytes: 256 * 1024,
            flush_interval: Duration::from_secs(3600),
            storage_retry_after: Duration::from_millis(200),
            ..fast()
        })
    }

    /// The buffer opened read-only, beside the tracker.
    pub fn read_only(&self) -> Connection {
        Connection::open_with_flags(self.db(), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
    }

    /// The buffer opened for writing, to damage it as a bug or a bad flash page would; waits
    /// up to 5 s for the tracker's lock.
    pub fn writable(&self) -> Connection {
        let conn = Connection::open(self.db()).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn
    }

    /// Events in the buffer's file.
    pub fn stored_events(&self) -> u64 {
        self.read_only()
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .unwrap()
    }

    /// The one quarantined batch: its events and the reason.
    pub fn quarantined(&self) -> (Vec<Value>, String) {
        let (events, reason): (String, String) = self
            .read_only()
            .query_row("SELECT events, reason FROM quarantine", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        (serde_json::from_str(&events).unwrap(), reason)
    }

    /// Replaces the buffer with bytes that are no SQLite database, as a damaged flash page or
    /// a half-written file would leave it; the identity file stays.
    pub fn corrupt_buffer(&self) {
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(self.dir().join(format!("device.db{suffix}")));
        }
        std::fs::write(self.db(), vec![0x5a; 8192]).unwrap();
    }
}

/// Flushes and waits until nothing is pending, failing the test (with the tracker's stats) if
/// that takes longer than `within`.
pub fn assert_drained(tracker: &Tracker, within: Duration) {
    assert!(
        tracker.flush_and_wait(within).unwrap(),
        "not drained within {within:?}: {:?}",
        tracker.stats()
    );
}

/// Tracks `n` sample events.
pub fn track_n(tracker: &Tracker, n: usize) {
    for i in 0..n {
        let (name, properties) = sample_event(i);
        tracker.track(name, properties).expect("track");
    }
}

/// Whether `done` became true within 20 s (polled every 20 ms).
pub fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// An answer with `status`, no extra headers and `body` (`None`: the collector's).
pub fn reply(status: u16, body: Option<&str>) -> Reply {
    Reply {
        status,
        headers: String::new(),
        body: body.map(str::to_owned),
    }
}

/// A server answering 503 until the flag is set, then 200.
pub fn switchable_server() -> (CaptureServer, Arc<AtomicBool>) {
    let up = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&up);
    let server = CaptureServer::start_with(Box::new(move |_| {
        (
            if flag.load(Ordering::SeqCst) {
                200
            } else {
                503
            },
            String::new(),
        )
    }))
    .unwrap();
    (server, up)
}

/// Batches the server acknowledged (answered 200), in order.
pub type Acked = Arc<Mutex<Vec<Value>>>;

/// Like [`switchable_server`], also keeping the batches it acknowledged.
pub fn switchable_acking_server() -> (CaptureServer, Arc<AtomicBool>, Acked) {
    let up = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let (flag, kept) = (Arc::clone(&up), Arc::clone(&acked));
    let server = CaptureServer::start_with(Box::new(move |request| {
        if !flag.load(Ordering::SeqCst) {
            return (503, String::new());
        }
        if let Some(batch) = request.batch() {
            kept.lock().unwrap().push(batch);
        }
        (200, String::new())
    }))
    .unwrap();
    (server, up, acked)
}

/// A server answering the first requests with `first`, one each, then like the collector.
pub fn first_answers(first: Vec<Reply>) -> CaptureServer {
    let calls = AtomicUsize::new(0);
    CaptureServer::start_replying(Box::new(move |_| {
        let i = calls.fetch_add(1, Ordering::SeqCst);
        first.get(i).cloned().unwrap_or(reply(200, None))
    }))
    .unwrap()
}

/// The events of one request's batch.
pub fn events_of(request: &Captured) -> Vec<Value> {
    request.batch().expect("a batch")["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Every event `server` received, resends included, in order.
pub fn events_sent(server: &CaptureServer) -> Vec<Value> {
    server.requests().iter().flat_map(events_of).collect()
}

/// The `seq` numbers a batch reports as given up on, with their reasons.
pub fn gap_seqs(batch: &Value) -> Vec<(String, u64)> {
    let mut seqs = Vec::new();
    for gap in batch["gaps"].as_array().cloned().unwrap_or_default() {
        let reason = gap["reason"].as_str().unwrap().to_owned();
        let mut n = 0;
        for range in gap["ranges"].as_array().unwrap() {
            let (first, last) = (
                range["first"].as_u64().unwrap(),
                range["last"].as_u64().unwrap(),
            );
            n += last - first + 1;
            seqs.extend((first..=last).map(|s| (reason.clone(), s)));
        }
        assert_eq!(gap["count"].as_u64(), Some(n), "{gap}");
        assert!(gap["gap_id"].as_str().is_some());
    }
    seqs
}

/// Received + reported lost = issued: every seq from 1 to `last` once, delivered or in a gap.
pub fn assert_every_seq_once(delivered: &[u64], gaps: &[(String, u64)], last: u64) {
    let mut all: Vec<u64> = delivered
        .iter()
        .copied()
        .chain(gaps.iter().map(|(_, s)| *s))
        .collect();
    all.sort_unstable();
    assert_eq!(all, (1..=last).collect::<Vec<_>>());
}

/// Every `seq` delivered or reported as a gap, over acknowledged batches (a batch_id counted
/// once, whatever its retries).
pub fn delivered_and_gaps(batches: &[Value]) -> (Vec<u64>, Vec<(String, u64)>) {
    let mut seen = std::collections::BTreeSet::new();
    let (mut delivered, mut gaps) = (Vec::new(), Vec::new());
    for batch in batches {
        if !seen.insert(batch["batch_id"].to_string()) {
            continue;
        }
        delivered.extend(
            batch["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["seq"].as_u64().unwrap()),
        );
        gaps.extend(gap_seqs(batch));
    }
    (delivered, gaps)
}

/// ~4 KB of properties: some 60 events fill [`Device::small_disk_tracker`]'s disk.
pub fn big_properties() -> Map<String, Value> {
    let Value::Object(big) = serde_json::json!({ "blob": "x".repeat(4000) }) else {
        unreachable!()
    };
    big
}
