//! The SDK against real HTTP answers and real SQLite files: quarantine, splitting, pausing,
//! caps and drop reports, opt-out, a full disk, identity and sessions.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod fixtures;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fixtures::*;
use serde_json::{json, Map, Value};
use tern_sdk::{Error, Policy, Tracker};
use tern_tests::capture::{CaptureServer, Captured, Reply};
use tern_tests::{device_config, sample_event};

#[test]
fn a_malformed_batch_is_quarantined_never_deleted_nor_resent() {
    let server = CaptureServer::start(400, "").unwrap();
    let device = Device::new(&server);
    let t = device.tracker(fast());
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
    let (kept, reason) = device.quarantined();
    assert!(reason.contains("400"), "{reason}");
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
    let device = Device::new(&server);
    let t = device.tracker(fast());
    track_n(&t, 9);
    assert_drained(&t, Duration::from_secs(20));
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
    let device = Device::new(&server);
    let t = device.tracker(fast());
    track_n(&t, 5);
    t.flush(Duration::from_secs(5)).unwrap();
    assert!(wait_for(|| !server.requests().is_empty()));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(server.requests().len(), 1, "no retry storm after a 401");
    assert_eq!(t.stats().pending.events, 5);
    // The pause survives a restart: the next attempt time is in the database.
    let t = device.restart(t, fast());
    t.flush(Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        server.requests().len(),
        1,
        "a restart does not hammer the collector"
    );
    assert_eq!(t.stats().pending.events, 5);
}

#[test]
fn a_capped_devices_dropped_seqs_all_arrive_as_gaps() {
    let (server, up, acked) = switchable_acking_server();
    let device = Device::new(&server);
    let t = device.tracker(Policy {
        max_buffer_events: 100,
        flush_interval: Duration::from_secs(3600),
        ..fast()
    });
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
    assert_drained(&t, Duration::from_secs(20));
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
    let device = Device::new(&server);
    let t = device.tracker(Policy {
        flush_interval: Duration::from_secs(3600),
        ..fast()
    });
    track_n(&t, 10);
    t.flush(Duration::from_secs(5)).unwrap();
    assert_eq!(t.stats().pending.events, 10);
    t.set_opt_out(true).unwrap();
    t.flush(Duration::from_secs(5)).unwrap();
    assert_eq!(t.stats().pending.events, 0);
    assert_eq!(t.track("ignored", Map::new()).unwrap(), None);
    drop(t);
    assert_eq!(device.stored_events(), 0, "nothing is left on disk");
    let inspected = tern_sdk::inspect::Inspector::open(&device.db())
        .unwrap()
        .stats()
        .unwrap();
    assert!(inspected.opted_out, "tern-inspect reads the identity file");
    let t = device.tracker(fast());
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
    let t = device.restart(t, fast());
    assert!(t.stats().opted_out, "the last choice is remembered");
}

#[test]
fn a_full_disk_makes_track_fail_and_count_drops_never_crash() {
    let (server, up) = switchable_server();
    let device = Device::new(&server);
    let t = device.small_disk_tracker();
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
    assert_drained(&t, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(250));
    assert!(t.track("after", Map::new()).unwrap().is_some());
    assert!(t.flush(Duration::from_secs(5)).unwrap());
    assert_eq!(t.stats().pending.events, 1);
}

#[test]
fn events_accepted_before_the_disk_filled_are_kept_and_written_once_it_frees() {
    let (server, up) = switchable_server();
    let device = Device::new(&server);
    let t = device.small_disk_tracker();
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
    assert_drained(&t, Duration::from_secs(30));
    let delivered: std::collections::HashSet<String> = events_sent(&server)
        .iter()
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
    let device = Device::new(&server);
    let t = device.tracker(fast());
    track_n(&t, 5);
    t.flush(Duration::from_secs(5)).unwrap();
    assert!(
        wait_for(|| !server.requests().is_empty()),
        "a batch was cut and sent"
    );
    drop(t);
    // Damage what was written down: its context and its drop report no longer parse.
    device
        .writable()
        .execute_batch("UPDATE batches SET context = '{', dropped = 'not json';")
        .unwrap();
    up.store(true, Ordering::SeqCst);
    let t = device.tracker(fast());
    let after = t.track("after", Map::new()).unwrap().unwrap();
    assert_drained(&t, Duration::from_secs(20));
    let last = server.requests().last().map(events_of).unwrap_or_default();
    assert_eq!(last.len(), 1, "the batch behind the damaged one: {last:?}");
    assert_eq!(last[0]["event_id"], after.to_string());
    let stats = t.stats();
    assert_eq!(stats.pending.quarantined_batches, 1, "{stats:?}");
    assert_eq!(stats.pending.quarantined_events, 5, "{stats:?}");
    let (_, reason) = device.quarantined();
    assert!(reason.contains("cannot be encoded"), "{reason}");
}

#[test]
fn identity_sessions_and_super_properties_travel_with_events() {
    let server = CaptureServer::start(200, "").unwrap();
    let device = Device::new(&server);
    let t = device.tracker(fast());
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
    assert_drained(&t, Duration::from_secs(10));
    let events: Vec<Value> = events_sent(&server);
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
    match Tracker::new(device_config(device.db(), device.url(), fast(), 0)) {
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
    let device = Device::new(&server);
    let t = device.tracker(Policy {
        max_buffer_events: 20,
        ..fast()
    });
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
            .map(|(status, body)| reply(*status, Some(body)))
            .collect(),
    );
    let device = Device::new(&server);
    let t = device.tracker(fast());
    track_n(&t, 6);
    assert_drained(&t, Duration::from_secs(30));
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

#[test]
fn a_redirect_is_not_followed_and_the_batch_is_kept() {
    // Following the redirect would GET the other server, whose 200 would delete the batch.
    let elsewhere = CaptureServer::start(200, "").unwrap();
    let to = |status| Reply {
        status,
        headers: format!("location: {}/v1/batch\r\n", elsewhere.url()),
        body: Some(String::new()),
    };
    let server = first_answers(vec![to(301), to(302), to(307)]);
    let device = Device::new(&server);
    let t = device.tracker(fast());
    track_n(&t, 4);
    assert_drained(&t, Duration::from_secs(30));
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
    let other_batch = json!({ "batch_id": uuid::Uuid::now_v7(), "accepted": 4 }).to_string();
    let server = first_answers(vec![
        reply(200, Some("<html>Sign in to the airport Wi-Fi</html>")),
        reply(204, Some("")),
        reply(200, Some(&other_batch)),
    ]);
    let device = Device::new(&server);
    let t = device.tracker(fast());
    track_n(&t, 4);
    assert_drained(&t, Duration::from_secs(30));
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

#[test]
fn a_next_attempt_days_away_after_the_clock_moved_back_does_not_stall_uploads() {
    let (server, up) = switchable_server();
    let device = Device::new(&server);
    let days_ahead = || chrono::Utc::now().timestamp_millis() + 5 * 24 * 3600 * 1000;
    let push_next_attempt = || {
        device
            .writable()
            .execute("UPDATE batches SET next_attempt_ms = ?1", [days_ahead()])
            .unwrap()
    };

    // While running: the stored time is days away, as after the clock went back by days. (Should
    // an attempt be on the wire at the moment of the update, its failure overwrites the time and
    // this phase proves nothing; attempts last a millisecond every 50-200 ms, so that is rare.
    // The phase at start below is exact.)
    let t = device.tracker(fast_and_bounded());
    track_n(&t, 3);
    t.flush(Duration::from_secs(5)).unwrap();
    assert!(wait_for(|| !server.requests().is_empty()));
    assert_eq!(push_next_attempt(), 1);
    up.store(true, Ordering::SeqCst);
    assert_drained(&t, Duration::from_secs(20));

    // At start: the same, found in the file.
    up.store(false, Ordering::SeqCst);
    track_n(&t, 3);
    t.flush(Duration::from_secs(5)).unwrap();
    let seen = server.requests().len();
    assert!(wait_for(|| server.requests().len() > seen));
    drop(t);
    assert_eq!(push_next_attempt(), 1);
    up.store(true, Ordering::SeqCst);
    let t = device.tracker(fast_and_bounded());
    assert_drained(&t, Duration::from_secs(20));
}

#[test]
fn a_retry_after_of_days_is_cut_to_the_policys_maximum() {
    let unavailable = |retry_after: &str| Reply {
        status: 503,
        headers: format!("retry-after: {retry_after}\r\n"),
        body: None,
    };
    let server = first_answers(vec![
        unavailable("999999999"),
        unavailable("Fri, 01 Jan 2100 00:00:00 GMT"),
    ]);
    let device = Device::new(&server);
    let t = device.tracker(fast_and_bounded());
    track_n(&t, 3);
    assert_drained(&t, Duration::from_secs(20));
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn a_logged_out_user_stays_logged_out_across_restarts() {
    let server = CaptureServer::start(200, "").unwrap();
    let device = Device::new(&server);
    let restart = |t: Tracker| device.restart(t, fast());
    let t = device.tracker(fast());
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
    assert_drained(&t, Duration::from_secs(10));
    let events: Vec<Value> = events_sent(&server);
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
    let device = Device::new(&server);
    let t = device.tracker(fast());
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
    assert_drained(&t, Duration::from_secs(10));
    let events: Vec<Value> = events_sent(&server);
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
    let mut context = device_config(device.dir().join("x.db"), "", fast(), 0).context;
    context.locale = Some("l".repeat(tern_protocol::limits::MAX_CONTEXT_BYTES));
    assert!(matches!(t.set_context(&context), Err(Error::Config(_))));
    let mut config = device_config(device.dir().join("other.db"), device.url(), fast(), 0);
    config.context = context;
    assert!(matches!(Tracker::new(config), Err(Error::Config(_))));
}

#[test]
fn every_event_accepted_while_shutting_down_is_written() {
    // Threads track as fast as they can while the tracker shuts down: each event either got Ok
    // and is in the file, or got an error.
    let server = CaptureServer::start(503, "retry-after: 3600\r\n").unwrap();
    for round in 0..10 {
        let device = Device::new(&server);
        let t = Arc::new(device.tracker(fast()));
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
        assert!(accepted > 0);
        assert_eq!(
            device.stored_events(),
            accepted,
            "round {round}: accepted but not written"
        );
    }
}

#[test]
fn an_ack_refusing_one_of_ten_events_quarantines_exactly_that_one() {
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
        reply(200, Some(&body.to_string()))
    }))
    .unwrap();
    let device = Device::new(&server);
    let t = device.tracker(fast());
    track_n(&t, 10);
    assert_drained(&t, Duration::from_secs(20));
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
    let (kept, reason) = device.quarantined();
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
    let conflict = reply(
        409,
        Some(
            &json!({"error": "batch_id_conflict", "message": "seen before with other events"})
                .to_string(),
        ),
    );
    let server = first_answers(vec![conflict]);
    let device = Device::new(&server);
    let t = device.tracker(fast());
    track_n(&t, 5);
    assert_drained(&t, Duration::from_secs(20));
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

#[test]
fn a_corrupt_buffer_keeps_the_identity_continues_seq_and_reports_storage_lost() {
    let (server, up, acked) = switchable_acking_server();
    up.store(true, Ordering::SeqCst);
    let device = Device::new(&server);
    let t = device.tracker(fast());
    let install_id = t.install_id().to_owned();
    t.identify(Some("user-9".into()));
    track_n(&t, 5);
    assert_drained(&t, Duration::from_secs(10));
    // Five more wait in the buffer when it is lost.
    up.store(false, Ordering::SeqCst);
    track_n(&t, 5);
    assert!(t.flush(Duration::from_secs(5)).unwrap());
    drop(t);
    device.corrupt_buffer();
    up.store(true, Ordering::SeqCst);
    let t = device.tracker(fast());
    assert_eq!(t.install_id(), install_id, "the install keeps its id");
    t.track("after", Map::new()).unwrap();
    assert_drained(&t, Duration::from_secs(10));
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
    let device = Device::new(&server);
    let t = device.tracker(fast());
    t.set_opt_out(true).unwrap();
    t.flush(Duration::from_secs(5)).unwrap();
    drop(t);
    device.corrupt_buffer();
    let t = device.tracker(fast());
    assert!(t.stats().opted_out, "the choice survives the buffer");
    assert_eq!(t.track("ignored", Map::new()).unwrap(), None);
    t.flush(Duration::from_secs(5)).unwrap();
    // Several upload cycles pass (100 ms each); nothing leaves the device.
    std::thread::sleep(Duration::from_millis(500));
    assert!(acked.lock().unwrap().is_empty(), "nothing uploaded");
    assert_eq!(t.stats().pending.events, 0);
}
