//! The SDK against real HTTP answers and real SQLite files: quarantine, splitting, pausing,
//! caps and drop reports, opt-out, a full disk, identity and sessions.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Map, Value};
use tern_sdk::{Error, Policy, Tracker};
use tern_tests::capture::{CaptureServer, Captured};
use tern_tests::{device_config, sample_event};

/// A policy that uploads at once and retries fast, so tests are quick.
fn fast() -> Policy {
    Policy {
        flush_at_count: 1_000_000,
        flush_interval: Duration::from_millis(100),
        retry_min_delay: Duration::from_millis(50),
        retry_max_delay: Duration::from_millis(200),
        ..Policy::default()
    }
}

fn tracker(dir: &Path, url: &str, policy: Policy) -> Tracker {
    Tracker::new(device_config(dir.join("device.db"), url, policy, 0)).expect("tracker")
}

fn track_n(tracker: &Tracker, n: usize) {
    for i in 0..n {
        let (name, properties) = sample_event(i);
        tracker.track(name, properties).expect("track");
    }
}

fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A server answering 503 until the flag is set, then 200.
fn switchable_server() -> (CaptureServer, Arc<AtomicBool>) {
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

fn events_of(request: &Captured) -> Vec<Value> {
    request.batch().expect("a batch")["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn read_only(dir: &Path) -> Connection {
    Connection::open_with_flags(dir.join("device.db"), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

#[test]
fn a_malformed_batch_is_quarantined_never_deleted_nor_resent() {
    let server = CaptureServer::start(400, "").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path(), &server.url(), fast());
    track_n(&t, 7);
    t.flush(Duration::from_secs(5)).unwrap();
    assert!(
        wait_for(|| t.stats().pending.quarantined_batches == 1),
        "{:?}",
        t.stats()
    );
    std::thread::sleep(Duration::from_millis(500));
    let requests = server.requests();
    assert_eq!(
        requests.iter().filter(|r| !events_of(r).is_empty()).count(),
        1,
        "a quarantined batch is not sent again"
    );
    // What follows is the report of the quarantined seqs, alone in its batch: this server
    // refuses it too, so it is kept and retried (never quarantined: it holds no events).
    for later in &requests[1..] {
        let batch = later.batch().unwrap();
        assert_eq!(batch["batch_id"], requests[1].batch().unwrap()["batch_id"]);
        let seqs: Vec<u64> = gap_seqs(&batch).into_iter().map(|(_, s)| s).collect();
        assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    }
    let stats = t.stats();
    assert_eq!(
        (stats.pending.events, stats.pending.quarantined_events),
        (0, 7)
    );
    let (events, reason): (String, String) = read_only(dir.path())
        .query_row("SELECT events, reason FROM quarantine", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(reason.contains("400"), "{reason}");
    let kept: Vec<Value> = serde_json::from_str(&events).unwrap();
    assert_eq!(
        kept,
        events_of(&server.requests()[0]),
        "the exact events are kept"
    );
}

#[test]
fn a_413_splits_the_batch_until_it_fits() {
    // Too large above 2 events: 9 events must go out as halves of halves.
    let server = CaptureServer::start_with(Box::new(|r: &Captured| {
        let n = r
            .batch()
            .map_or(0, |b| b["events"].as_array().map_or(0, Vec::len));
        (if n > 2 { 413 } else { 200 }, String::new())
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path(), &server.url(), fast());
    track_n(&t, 9);
    assert!(
        t.flush_and_wait(Duration::from_secs(20)).unwrap(),
        "{:?}",
        t.stats()
    );
    let requests = server.requests();
    let accepted: Vec<Value> = requests
        .iter()
        .filter(|r| events_of(r).len() <= 2)
        .flat_map(events_of)
        .collect();
    let seqs: Vec<u64> = accepted
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=9).collect::<Vec<_>>(),
        "every event once, in order"
    );
    let first_id = &requests[0].batch().unwrap()["batch_id"];
    assert!(
        requests
            .iter()
            .filter(|r| events_of(r).len() <= 2)
            .all(|r| &r.batch().unwrap()["batch_id"] != first_id),
        "halves get new batch ids"
    );
}

#[test]
fn an_unknown_write_key_pauses_uploads_and_keeps_the_data() {
    let server = CaptureServer::start(401, "").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path(), &server.url(), fast());
    track_n(&t, 5);
    t.flush(Duration::from_secs(5)).unwrap();
    assert!(wait_for(|| !server.requests().is_empty()));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(server.requests().len(), 1, "no retry storm after a 401");
    assert_eq!(t.stats().pending.events, 5);
    // The pause survives a restart: the next attempt time is in the database.
    drop(t);
    let t = tracker(dir.path(), &server.url(), fast());
    t.flush(Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        server.requests().len(),
        1,
        "a restart does not hammer the collector"
    );
    assert_eq!(t.stats().pending.events, 5);
}

/// The `seq` numbers a batch reports as given up on, with their reasons.
fn gap_seqs(batch: &Value) -> Vec<(String, u64)> {
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

/// Batches the server acknowledged (answered 200), in order.
type Acked = Arc<std::sync::Mutex<Vec<Value>>>;

/// Like [`switchable_server`], also keeping the batches it acknowledged.
fn switchable_acking_server() -> (CaptureServer, Arc<AtomicBool>, Acked) {
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

/// Received + reported lost = issued: every seq from 1 to `last` once, delivered or in a gap.
fn assert_every_seq_once(delivered: &[u64], gaps: &[(String, u64)], last: u64) {
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
fn delivered_and_gaps(batches: &[Value]) -> (Vec<u64>, Vec<(String, u64)>) {
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

#[test]
fn a_capped_devices_dropped_seqs_all_arrive_as_gaps() {
    let (server, up, acked) = switchable_acking_server();
    let dir = tempfile::tempdir().unwrap();
    let policy = Policy {
        max_buffer_events: 100,
        flush_interval: Duration::from_secs(3600),
        ..fast()
    };
    let t = tracker(dir.path(), &server.url(), policy);
    track_n(&t, 500);
    t.flush(Duration::from_secs(5)).unwrap();
    let stats = t.stats();
    assert!(stats.pending.events <= 100, "{stats:?}");
    assert_eq!(
        stats.gaps.get("cap_count").copied(),
        Some(500 - stats.pending.events)
    );
    assert_eq!(
        stats.dropped.get("buffer_events_cap"),
        None,
        "no count-only report"
    );
    up.store(true, Ordering::SeqCst);
    assert!(t.flush_and_wait(Duration::from_secs(20)).unwrap());
    assert!(wait_for(|| t.stats().pending_gap_reports == 0));
    let (delivered, gaps) = delivered_and_gaps(&acked.lock().unwrap());
    assert!(!gaps.is_empty());
    assert!(
        gaps.iter().all(|(reason, _)| reason == "cap_count"),
        "{gaps:?}"
    );
    assert_every_seq_once(&delivered, &gaps, 500);
    // The oldest were dropped.
    assert_eq!(delivered.iter().min(), Some(&401));
}

#[test]
fn opting_out_purges_the_buffer_and_stops_collection_across_restarts() {
    let server = CaptureServer::start(503, "").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(
        dir.path(),
        &server.url(),
        Policy {
            flush_interval: Duration::from_secs(3600),
            ..fast()
        },
    );
    track_n(&t, 10);
    t.flush(Duration::from_secs(5)).unwrap();
    assert_eq!(t.stats().pending.events, 10);
    t.set_opt_out(true).unwrap();
    t.flush(Duration::from_secs(5)).unwrap();
    assert_eq!(t.stats().pending.events, 0);
    assert_eq!(t.track("ignored", Map::new()).unwrap(), None);
    drop(t);
    let count: i64 = read_only(dir.path())
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 0, "nothing is left on disk");
    let inspected = tern_sdk::inspect::Inspector::open(&dir.path().join("device.db"))
        .unwrap()
        .stats()
        .unwrap();
    assert!(inspected.opted_out, "tern-inspect reads the identity file");
    let t = tracker(dir.path(), &server.url(), fast());
    assert!(t.stats().opted_out, "the choice is remembered");
    assert_eq!(t.track("ignored", Map::new()).unwrap(), None);
    t.set_opt_out(false).unwrap();
    assert!(t.track("counted", Map::new()).unwrap().is_some());
    // An opt-in and then an opt-out queued behind a burst reach the writer together: the last
    // choice is the one remembered.
    track_n(&t, 3_000);
    t.set_opt_out(false).unwrap();
    t.set_opt_out(true).unwrap();
    t.flush(Duration::from_secs(5)).unwrap();
    drop(t);
    let t = tracker(dir.path(), &server.url(), fast());
    assert!(t.stats().opted_out, "the last choice is remembered");
}

/// A tracker whose file may grow to 256 KiB only (SQLite's `max_page_count`: past it, writes
/// fail as on a full disk), retrying storage every 200 ms and uploading only on `flush()`.
fn small_disk_tracker(dir: &Path, url: &str) -> Tracker {
    let policy = Policy {
        max_file_bytes: 256 * 1024,
        flush_interval: Duration::from_secs(3600),
        storage_retry_after: Duration::from_millis(200),
        ..fast()
    };
    tracker(dir, url, policy)
}

/// ~4 KB of properties: some 60 events fill the small disk.
fn big_properties() -> Map<String, Value> {
    let Value::Object(big) = json!({ "blob": "x".repeat(4000) }) else {
        unreachable!()
    };
    big
}

#[test]
fn a_full_disk_makes_track_fail_and_count_drops_never_crash() {
    let (server, up) = switchable_server();
    let dir = tempfile::tempdir().unwrap();
    let t = small_disk_tracker(dir.path(), &server.url());
    let big = big_properties();
    let mut refused = None;
    for i in 0..2_000 {
        match t.track("big_event", big.clone()) {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
        if i % 10 == 0 {
            t.flush(Duration::from_secs(5)).unwrap();
        }
    }
    let (at, error) = refused.expect("track() reports the full disk");
    assert!(matches!(error, Error::StorageFailing(_)), "{error}");
    assert!(at < 2_000);
    let stats = t.stats();
    assert!(
        stats.dropped.get("storage_error").copied().unwrap_or(0) >= 1,
        "{stats:?}"
    );
    assert!(
        stats.pending.events > 0,
        "what was stored before the disk filled is kept"
    );
    // Once the collector takes the buffered events, space is free again and tracking resumes.
    up.store(true, Ordering::SeqCst);
    assert!(t.flush_and_wait(Duration::from_secs(20)).unwrap());
    std::thread::sleep(Duration::from_millis(250));
    assert!(t.track("after", Map::new()).unwrap().is_some());
    assert!(t.flush(Duration::from_secs(5)).unwrap());
    assert_eq!(t.stats().pending.events, 1);
}

#[test]
fn events_accepted_before_the_disk_filled_are_kept_and_written_once_it_frees() {
    let (server, up) = switchable_server();
    let dir = tempfile::tempdir().unwrap();
    let t = small_disk_tracker(dir.path(), &server.url());
    let big = big_properties();
    // The app goes on tracking while the disk is full, as apps do.
    let (mut accepted, mut refused) = (Vec::new(), 0u64);
    for i in 0..400 {
        match t.track("big_event", big.clone()) {
            Ok(id) => accepted.push(id.expect("not opted out")),
            Err(Error::StorageFailing(_)) => refused += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
        if i % 10 == 0 {
            let _ = t.flush(Duration::from_secs(5)).unwrap();
        }
    }
    assert!(refused > 0, "the file filled up");
    assert!(
        !t.flush(Duration::from_secs(5)).unwrap(),
        "flush() does not call durable what waits in memory for the disk"
    );
    let stats = t.stats();
    assert_eq!(
        stats.dropped.get("storage_error").copied().unwrap_or(0),
        refused,
        "only the events refused at track() are counted lost: {stats:?}"
    );
    // The collector takes the buffer, space frees, and the writer stores what waited.
    up.store(true, Ordering::SeqCst);
    assert!(t.flush_and_wait(Duration::from_secs(30)).unwrap());
    let delivered: std::collections::HashSet<String> = server
        .requests()
        .iter()
        .flat_map(events_of)
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    let missing: Vec<_> = accepted
        .iter()
        .filter(|id| !delivered.contains(&id.to_string()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} accepted events never delivered",
        missing.len(),
        accepted.len()
    );
}

#[test]
fn a_stored_batch_that_no_longer_parses_is_quarantined_and_the_rest_flows() {
    let (server, up) = switchable_server();
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path(), &server.url(), fast());
    track_n(&t, 5);
    t.flush(Duration::from_secs(5)).unwrap();
    assert!(
        wait_for(|| !server.requests().is_empty()),
        "a batch was cut and sent"
    );
    drop(t);
    // Damage what was written down: its context and its drop report no longer parse.
    Connection::open(dir.path().join("device.db"))
        .unwrap()
        .execute_batch("UPDATE batches SET context = '{', dropped = 'not json';")
        .unwrap();
    up.store(true, Ordering::SeqCst);
    let t = tracker(dir.path(), &server.url(), fast());
    let after = t.track("after", Map::new()).unwrap().unwrap();
    assert!(
        t.flush_and_wait(Duration::from_secs(20)).unwrap(),
        "{:?}",
        t.stats()
    );
    let last = server.requests().last().map(events_of).unwrap_or_default();
    assert_eq!(last.len(), 1, "the batch behind the damaged one: {last:?}");
    assert_eq!(last[0]["event_id"], after.to_string());
    let stats = t.stats();
    assert_eq!(stats.pending.quarantined_batches, 1, "{stats:?}");
    assert_eq!(stats.pending.quarantined_events, 5, "{stats:?}");
    let reason: String = read_only(dir.path())
        .query_row("SELECT reason FROM quarantine", [], |r| r.get(0))
        .unwrap();
    assert!(reason.contains("cannot be encoded"), "{reason}");
}

#[test]
fn identity_sessions_and_super_properties_travel_with_events() {
    let server = CaptureServer::start(200, "").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path(), &server.url(), fast());
    t.identify(Some("user-7".into()));
    let Value::Object(supers) = json!({ "plan": "pro", "screen": "overridden-by-event" }) else {
        unreachable!()
    };
    t.set_super_properties(supers).unwrap();
    t.track(
        "one",
        json!({ "screen": "home" }).as_object().cloned().unwrap(),
    )
    .unwrap();
    assert!(matches!(
        t.track("bad name", Map::new()),
        Err(Error::InvalidEvent(_))
    ));
    t.reset();
    t.track("two", Map::new()).unwrap();
    assert!(t.flush_and_wait(Duration::from_secs(10)).unwrap());
    let events: Vec<Value> = server.requests().iter().flat_map(events_of).collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["user_id"], "user-7");
    assert_eq!(events[0]["properties"]["plan"], "pro");
    assert_eq!(
        events[0]["properties"]["screen"], "home",
        "the event's own property wins"
    );
    assert!(events[1].get("user_id").is_none(), "reset forgets the user");
    assert!(
        events[1]["properties"].get("plan").is_none(),
        "reset forgets super-properties"
    );
    assert_ne!(
        events[0]["session_id"], events[1]["session_id"],
        "reset starts a new session"
    );
    assert_eq!(t.stats().rejected_invalid, 1);
    // A second tracker on the same file gets a clear error.
    match Tracker::new(device_config(
        dir.path().join("device.db"),
        &server.url(),
        fast(),
        0,
    )) {
        Err(Error::AlreadyOpen(_)) => {}
        other => panic!("expected AlreadyOpen, got {:?}", other.err()),
    }
}

#[test]
fn a_batch_in_flight_is_never_dropped_by_the_caps_and_its_answer_still_counts() {
    // The first upload is held until the test has made the writer enforce the caps, then
    // answered 413; every later upload is accepted.
    let arrived = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let (seen, go) = (Arc::clone(&arrived), Arc::clone(&release));
    let server = CaptureServer::start_with(Box::new(move |_| {
        if seen.swap(true, Ordering::SeqCst) {
            return (200, String::new());
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while !go.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        (413, String::new())
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = Policy {
        max_buffer_events: 20,
        ..fast()
    };
    let t = tracker(dir.path(), &server.url(), policy);
    track_n(&t, 10);
    t.flush(Duration::from_secs(5)).unwrap();
    assert!(wait_for(|| arrived.load(Ordering::SeqCst)));
    // While events 1..=10 are on the wire, 30 more arrive: 40 > 20, so 20 must go.
    track_n(&t, 30);
    assert!(t.flush(Duration::from_secs(5)).unwrap());
    release.store(true, Ordering::SeqCst);
    assert!(
        t.flush_and_wait(Duration::from_secs(20)).unwrap(),
        "the uploader survived the answer: {:?}",
        t.stats()
    );
    let stats = t.stats();
    let dropped = stats.gaps.get("cap_count").copied().unwrap_or(0);
    let delivered: Vec<u64> = server.requests()[1..]
        .iter()
        .flat_map(events_of)
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(dropped, 20, "{stats:?}");
    assert_eq!(
        delivered.len() as u64 + dropped,
        40,
        "every event delivered or dropped, none both: {delivered:?}"
    );
    assert!(
        (1..=10).all(|s| delivered.contains(&s)),
        "the batch in flight was split and delivered, not dropped: {delivered:?}"
    );
    assert_eq!(stats.thread_panics, 0);
}

#[test]
fn a_4xx_that_is_not_the_collectors_refusal_keeps_the_batch_and_retries_it() {
    // A wrong path, a proxy, a portal: 404, 405, 407, 415 and a 400 without the collector's
    // error body, then the real collector answers.
    use tern_tests::capture::Reply;
    let answers = [
        (404, "<html>Not Found</html>"),
        (405, ""),
        (407, "proxy auth"),
        (415, "{}"),
        (400, "<html>Bad Request</html>"),
    ];
    let server = first_answers(
        answers
            .iter()
            .map(|(status, body)| Reply {
                status: *status,
                headers: String::new(),
                body: Some((*body).to_owned()),
            })
            .collect(),
    );
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path(), &server.url(), fast());
    track_n(&t, 6);
    assert!(
        t.flush_and_wait(Duration::from_secs(30)).unwrap(),
        "{:?}",
        t.stats()
    );
    let stats = t.stats();
    assert_eq!(stats.pending.quarantined_batches, 0, "{stats:?}");
    assert_eq!(stats.upload_failures, 5);
    let requests = server.requests();
    assert_eq!(requests.len(), 6);
    let first = requests[0].batch().unwrap();
    for r in &requests {
        let b = r.batch().unwrap();
        assert_eq!(b["batch_id"], first["batch_id"], "the same batch each time");
        assert_eq!(b["events"], first["events"]);
    }
}

/// A server answering the first `n` requests with `first`, then like the collector.
fn first_answers(first: Vec<tern_tests::capture::Reply>) -> CaptureServer {
    let calls = std::sync::atomic::AtomicUsize::new(0);
    CaptureServer::start_replying(Box::new(move |_| {
        let i = calls.fetch_add(1, Ordering::SeqCst);
        first.get(i).cloned().unwrap_or(tern_tests::capture::Reply {
            status: 200,
            headers: String::new(),
            body: None,
        })
    }))
    .unwrap()
}

#[test]
fn a_redirect_is_not_followed_and_the_batch_is_kept() {
    use tern_tests::capture::Reply;
    // Following the redirect would GET the other server, whose 200 would delete the batch.
    let elsewhere = CaptureServer::start(200, "").unwrap();
    let to = |status| Reply {
        status,
        headers: format!("location: {}/v1/batch\r\n", elsewhere.url()),
        body: Some(String::new()),
    };
    let server = first_answers(vec![to(301), to(302), to(307)]);
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path(), &server.url(), fast());
    track_n(&t, 4);
    assert!(
        t.flush_and_wait(Duration::from_secs(30)).unwrap(),
        "{:?}",
        t.stats()
    );
    assert!(elsewhere.requests().is_empty(), "no redirect was followed");
    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    assert!(requests
        .iter()
        .all(|r| r.batch().unwrap()["batch_id"] == requests[0].batch().unwrap()["batch_id"]));
    assert_eq!(t.stats().upload_failures, 3);
}

#[test]
fn a_2xx_counts_only_with_the_acknowledgement_of_the_batch_sent() {
    use tern_tests::capture::Reply;
    let reply = |status, body: &str| Reply {
        status,
        headers: String::new(),
        body: Some(body.to_owned()),
    };
    let other_batch = json!({ "batch_id": uuid::Uuid::now_v7(), "accepted": 4 }).to_string();
    let server = first_answers(vec![
        reply(200, "<html>Sign in to the airport Wi-Fi</html>"),
        reply(204, ""),
        reply(200, &other_batch),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path(), &server.url(), fast());
    track_n(&t, 4);
    assert!(
        t.flush_and_wait(Duration::from_secs(30)).unwrap(),
        "{:?}",
        t.stats()
    );
    let requests = server.requests();
    // Had an earlier 2xx counted, the batch would have been deleted after one request.
    assert_eq!(
        requests.len(),
        4,
        "delivered at the fourth answer, the real ack"
    );
    assert!(requests
        .iter()
        .all(|r| r.batch().unwrap()["batch_id"] == requests[0].batch().unwrap()["batch_id"]));
    assert_eq!(t.stats().upload_failures, 3);
    assert_eq!(t.stats().batches_delivered, 1);
}

/// `fast()` with every legitimate delay short: a next attempt further than 200 ms away can only
/// come from a wall clock that moved back.
fn fast_and_bounded() -> Policy {
    Policy {
        unauthorized_pause: Duration::from_millis(200),
        max_retry_after: Duration::from_millis(200),
        ..fast()
    }
}

#[test]
fn a_next_attempt_days_away_after_the_clock_moved_back_does_not_stall_uploads() {
    let (server, up) = switchable_server();
    let dir = tempfile::tempdir().unwrap();
    let days_ahead = || chrono::Utc::now().timestamp_millis() + 5 * 24 * 3600 * 1000;
    let push_next_attempt = |dir: &Path| {
        let conn = Connection::open(dir.join("device.db")).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.execute("UPDATE batches SET next_attempt_ms = ?1", [days_ahead()])
            .unwrap()
    };

    // While running: the stored time is days away, as after the clock went back by days. (Should
    // an attempt be on the wire at the moment of the update, its failure overwrites the time and
    // this phase proves nothing; attempts last a millisecond every 50-200 ms, so that is rare.
    // The phase at start below is exact.)
    let t = tracker(dir.path(), &server.url(), fast_and_bounded());
    track_n(&t, 3);
    t.flush(Duration::from_secs(5)).unwrap();
    assert!(wait_for(|| !server.requests().is_empty()));
    assert_eq!(push_next_attempt(dir.path()), 1);
    up.store(true, Ordering::SeqCst);
    assert!(
        t.flush_and_wait(Duration::from_secs(20)).unwrap(),
        "{:?}",
        t.stats()
    );

    // At start: the same, found in the file.
    up.store(false, Ordering::SeqCst);
    track_n(&t, 3);
    t.flush(Duration::from_secs(5)).unwrap();
    let seen = server.requests().len();
    assert!(wait_for(|| server.requests().len() > seen));
    drop(t);
    assert_eq!(push_next_attempt(dir.path()), 1);
    up.store(true, Ordering::SeqCst);
    let t = tracker(dir.path(), &server.url(), fast_and_bounded());
    assert!(
        t.flush_and_wait(Duration::from_secs(20)).unwrap(),
        "{:?}",
        t.stats()
    );
}

#[test]
fn a_retry_after_of_days_is_cut_to_the_policys_maximum() {
    use tern_tests::capture::Reply;
    let unavailable = |retry_after: &str| Reply {
        status: 503,
        headers: format!("retry-after: {retry_after}\r\n"),
        body: None,
    };
    let server = first_answers(vec![
        unavailable("999999999"),
        unavailable("Fri, 01 Jan 2100 00:00:00 GMT"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path(), &server.url(), fast_and_bounded());
    track_n(&t, 3);
    assert!(
        t.flush_and_wait(Duration::from_secs(20)).unwrap(),
        "{:?}",
        t.stats()
    );
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn a_logged_out_user_stays_logged_out_across_restarts() {
    let server = CaptureServer::start(200, "").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let restart = |t: Tracker| {
        drop(t);
        tracker(dir.path(), &server.url(), fast())
    };
    let t = tracker(dir.path(), &server.url(), fast());
    t.identify(Some("user-1".into()));
    t.identify(None);
    let t = restart(t);
    t.track("after_identify_none", Map::new()).unwrap();
    t.identify(Some("user-2".into()));
    t.reset();
    let t = restart(t);
    t.track("after_reset", Map::new()).unwrap();
    t.identify(Some(String::new()));
    let t = restart(t);
    t.track("after_empty_id", Map::new()).unwrap();
    t.identify(Some("user-3".into()));
    let t = restart(t);
    t.track("identified", Map::new()).unwrap();
    assert!(t.flush_and_wait(Duration::from_secs(10)).unwrap());
    let events: Vec<Value> = server.requests().iter().flat_map(events_of).collect();
    let users: Vec<(&str, Option<&str>)> = events
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["user_id"].as_str()))
        .collect();
    assert_eq!(
        users,
        [
            ("after_identify_none", None),
            ("after_reset", None),
            ("after_empty_id", None),
            ("identified", Some("user-3")),
        ]
    );
}

#[test]
fn track_refuses_at_once_what_the_collector_would_refuse() {
    use tern_protocol::limits::{MAX_ID_BYTES, MAX_PROPERTIES_BYTES, MAX_PROPERTIES_DEPTH};
    let server = CaptureServer::start(200, "").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path(), &server.url(), fast());
    let object = |v: Value| v.as_object().cloned().unwrap();
    // `{"blob":"…"}` serialized is exactly `len` bytes.
    let blob = |len: usize| object(json!({ "blob": "x".repeat(len - r#"{"blob":""}"#.len()) }));
    let nested = |depth: usize| {
        let mut v = json!(1);
        for _ in 1..depth {
            v = json!({ "a": v });
        }
        object(json!({ "a": v }))
    };
    let refused =
        |r: tern_sdk::Result<Option<uuid::Uuid>>| matches!(r, Err(Error::InvalidEvent(_)));

    assert!(refused(t.track("big", blob(MAX_PROPERTIES_BYTES + 1))));
    assert!(refused(t.track("deep", nested(MAX_PROPERTIES_DEPTH + 1))));
    // Super-properties count: they are part of what is sent.
    t.set_super_properties(object(json!({ "plan": "pro" })))
        .unwrap();
    assert!(refused(t.track("big", blob(MAX_PROPERTIES_BYTES - 5))));
    t.set_super_properties(Map::new()).unwrap();
    t.identify(Some("u".repeat(MAX_ID_BYTES + 1)));
    assert!(refused(t.track("long_user", Map::new())));
    t.identify(Some("u".repeat(MAX_ID_BYTES)));
    assert_eq!(t.stats().rejected_invalid, 4);

    // Right at the limits, events are taken, sent, and the collector would take them too.
    t.track("at_limits", blob(MAX_PROPERTIES_BYTES)).unwrap();
    t.track("deep_enough", nested(MAX_PROPERTIES_DEPTH))
        .unwrap();
    assert!(t.flush_and_wait(Duration::from_secs(10)).unwrap());
    let events: Vec<Value> = server.requests().iter().flat_map(events_of).collect();
    let names: Vec<&str> = events.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["at_limits", "deep_enough"],
        "nothing refused was stored"
    );
    for e in &events {
        let event: tern_protocol::Event = serde_json::from_value(e.clone()).unwrap();
        assert_eq!(tern_protocol::limits::event_problem(&event), None);
    }
    assert_eq!(t.stats().dropped.get("too_large"), None);

    // A context the collector would refuse with every batch is refused when it is set.
    let mut context = device_config(dir.path().join("x.db"), "", fast(), 0).context;
    context.locale = Some("l".repeat(tern_protocol::limits::MAX_CONTEXT_BYTES));
    assert!(matches!(t.set_context(&context), Err(Error::Config(_))));
    let mut config = device_config(dir.path().join("other.db"), &server.url(), fast(), 0);
    config.context = context;
    assert!(matches!(Tracker::new(config), Err(Error::Config(_))));
}

#[test]
fn every_event_accepted_while_shutting_down_is_written() {
    // Threads track as fast as they can while the tracker shuts down: each event either got Ok
    // and is in the file, or got an error.
    let server = CaptureServer::start(503, "retry-after: 3600\r\n").unwrap();
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let t = Arc::new(tracker(dir.path(), &server.url(), fast()));
        let trackers: Vec<_> = (0..3)
            .map(|_| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    let mut accepted = 0u64;
                    for i in 0.. {
                        let (name, properties) = sample_event(i);
                        match t.track(name, properties) {
                            Ok(Some(_)) => accepted += 1,
                            Err(Error::Closed) => return accepted,
                            _ => {}
                        }
                    }
                    accepted
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20 + 10 * round));
        t.shutdown();
        let accepted: u64 = trackers.into_iter().map(|h| h.join().unwrap()).sum();
        drop(t);
        let written: u64 = read_only(dir.path())
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert!(accepted > 0);
        assert_eq!(written, accepted, "round {round}: accepted but not written");
    }
}

#[test]
fn an_ack_refusing_one_of_ten_events_quarantines_exactly_that_one() {
    use tern_tests::capture::Reply;
    // Stands in for the collector's partial accept: the 7th event of the batch is refused.
    let server = CaptureServer::start_replying(Box::new(|request| {
        let batch = request.batch().expect("a batch");
        let events = batch["events"].as_array().cloned().unwrap_or_default();
        let refused: Vec<Value> = events
            .iter()
            .filter(|e| e["seq"] == 7)
            .map(|e| {
                json!({
                    "event_id": e["event_id"],
                    "seq": e["seq"],
                    "reason": "invalid_properties",
                    "message": "properties are not acceptable",
                })
            })
            .collect();
        let body = json!({
            "batch_id": batch["batch_id"],
            "accepted": events.len() - refused.len(),
            "refused": refused,
        });
        Reply {
            status: 200,
            headers: String::new(),
            body: Some(body.to_string()),
        }
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path(), &server.url(), fast());
    track_n(&t, 10);
    assert!(t.flush_and_wait(Duration::from_secs(20)).unwrap());
    assert!(wait_for(|| t.stats().pending_gap_reports == 0));
    let stats = t.stats();
    assert_eq!(stats.pending.events, 0, "the 9 accepted are deleted");
    assert_eq!(
        (
            stats.pending.quarantined_batches,
            stats.pending.quarantined_events
        ),
        (1, 1),
        "{stats:?}"
    );
    assert_eq!(stats.gaps.get("quarantine"), Some(&1));
    let requests = server.requests();
    let first = requests[0].batch().unwrap();
    let seventh = first["events"][6].clone();
    assert_eq!(seventh["seq"], 7);
    // The quarantine holds exactly the refused event, with the collector's reason.
    let (events, reason): (String, String) = read_only(dir.path())
        .query_row("SELECT events, reason FROM quarantine", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let kept: Vec<Value> = serde_json::from_str(&events).unwrap();
    assert_eq!(kept, vec![seventh]);
    assert!(reason.contains("invalid_properties"), "{reason}");
    // The next upload reports seq 7 as a quarantine gap; nothing is sent twice.
    let later: Vec<Value> = requests[1..].iter().filter_map(Captured::batch).collect();
    assert!(later
        .iter()
        .all(|b| b["events"].as_array().unwrap().is_empty()));
    let gaps: Vec<(String, u64)> = later.iter().flat_map(gap_seqs).collect();
    assert_eq!(gaps, vec![("quarantine".to_owned(), 7)]);
}

#[test]
fn a_batch_id_conflict_resends_the_batch_under_a_new_id_and_loses_nothing() {
    use tern_tests::capture::Reply;
    let conflict = Reply {
        status: 409,
        headers: String::new(),
        body: Some(
            json!({"error": "batch_id_conflict", "message": "seen before with other events"})
                .to_string(),
        ),
    };
    let server = first_answers(vec![conflict]);
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path(), &server.url(), fast());
    track_n(&t, 5);
    assert!(t.flush_and_wait(Duration::from_secs(20)).unwrap());
    let requests: Vec<Value> = server
        .requests()
        .iter()
        .filter_map(Captured::batch)
        .collect();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_ne!(requests[0]["batch_id"], requests[1]["batch_id"]);
    assert_eq!(
        requests[0]["events"], requests[1]["events"],
        "the same events"
    );
    let seqs: Vec<u64> = requests[1]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=5).collect::<Vec<_>>());
    let stats = t.stats();
    assert_eq!(
        (stats.pending.events, stats.pending.quarantined_events),
        (0, 0)
    );
    assert_eq!(stats.batches_delivered, 1);
}

/// Replaces the buffer of the tracker in `dir` with bytes that are no SQLite database, as a
/// damaged flash page or a half-written file would leave it; the identity file stays.
fn corrupt_buffer(dir: &Path) {
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("device.db{suffix}")));
    }
    std::fs::write(dir.join("device.db"), vec![0x5a; 8192]).unwrap();
}

#[test]
fn a_corrupt_buffer_keeps_the_identity_continues_seq_and_reports_storage_lost() {
    let (server, up, acked) = switchable_acking_server();
    up.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path(), &server.url(), fast());
    let install_id = t.install_id().to_owned();
    t.identify(Some("user-9".into()));
    track_n(&t, 5);
    assert!(t.flush_and_wait(Duration::from_secs(10)).unwrap());
    // Five more wait in the buffer when it is lost.
    up.store(false, Ordering::SeqCst);
    track_n(&t, 5);
    assert!(t.flush(Duration::from_secs(5)).unwrap());
    drop(t);
    corrupt_buffer(dir.path());
    up.store(true, Ordering::SeqCst);
    let t = tracker(dir.path(), &server.url(), fast());
    assert_eq!(t.install_id(), install_id, "the install keeps its id");
    t.track("after", Map::new()).unwrap();
    assert!(t.flush_and_wait(Duration::from_secs(10)).unwrap());
    assert!(wait_for(|| t.stats().pending_gap_reports == 0));
    let batches = acked.lock().unwrap().clone();
    assert!(batches
        .iter()
        .all(|b| b["install_id"] == install_id.as_str()));
    let (delivered, gaps) = delivered_and_gaps(&batches);
    let after: Vec<Value> = batches
        .iter()
        .flat_map(|b| b["events"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["name"] == "after")
        .collect();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["user_id"], "user-9", "the user id survives");
    let after_seq = after[0]["seq"].as_u64().unwrap();
    assert!(after_seq > 10, "seq continues, never reused: {after_seq}");
    assert!(
        gaps.iter().all(|(reason, _)| reason == "storage_lost"),
        "{gaps:?}"
    );
    // The five lost events are in the gap.
    assert_every_seq_once(&delivered, &gaps, after_seq);
    assert!(gaps.iter().any(|(_, s)| *s == 6) && gaps.iter().any(|(_, s)| *s == 10));
}

#[test]
fn an_opted_out_user_stays_opted_out_after_a_corrupt_buffer() {
    let (server, up, acked) = switchable_acking_server();
    up.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path(), &server.url(), fast());
    t.set_opt_out(true).unwrap();
    t.flush(Duration::from_secs(5)).unwrap();
    drop(t);
    corrupt_buffer(dir.path());
    let t = tracker(dir.path(), &server.url(), fast());
    assert!(t.stats().opted_out, "the choice survives the buffer");
    assert_eq!(t.track("ignored", Map::new()).unwrap(), None);
    t.flush(Duration::from_secs(5)).unwrap();
    // Several upload cycles pass (100 ms each); nothing leaves the device.
    std::thread::sleep(Duration::from_millis(500));
    assert!(acked.lock().unwrap().is_empty(), "nothing uploaded");
    assert_eq!(t.stats().pending.events, 0);
}
