//! A reconnect with the shipped backoff (1 s to 5 min): after attempts that got no answer,
//! `network_available()` sends the backlog at once, also after the app restarted; after the
//! collector answered 503 with `Retry-After`, it waits out the backoff. Against the real
//! collector and Kinesis server; the device's buffer is read as SQLite, as QA would.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use rusqlite::{Connection, OpenFlags};
use tern_sdk::{Policy, Tracker};
use tern_tests::fault_proxy::Faults;
use tern_tests::process::{free_port, CollectorOptions, FaultProxyProcess};
use tern_tests::{device_config, sample_event, unique_stream, Collector, Kinesalite};

const EVENTS: usize = 20;
/// Connectivity failures caused before the network comes back: the shipped backoff is then
/// 16-32 s.
const FAILURES: u64 = 5;
/// A bound for waits that only a broken build reaches (not a measurement).
const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `done` every 10 ms until it holds; panics after [`PATIENCE`].
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_only(db: &Path) -> Connection {
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

/// The stored next attempt of the one batch in the buffer, ms since the epoch.
fn next_attempt_ms(db: &Path) -> i64 {
    read_only(db)
        .query_row("SELECT next_attempt_ms FROM batches", [], |r| r.get(0))
        .unwrap()
}

fn last_failure(db: &Path) -> Option<String> {
    read_only(db)
        .query_row(
            "SELECT value FROM meta WHERE key = 'upload_last_failure'",
            [],
            |r| r.get(0),
        )
        .ok()
}

fn track(tracker: &Tracker) -> HashSet<String> {
    (0..EVENTS)
        .map(|i| {
            let (name, properties) = sample_event(i);
            tracker
                .track(name, properties)
                .unwrap()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Waits until the buffer is empty; returns when that was seen (ms since the epoch).
fn delivered_at(tracker: &Tracker) -> i64 {
    wait_until("the buffer drained", || tracker.stats().pending.events == 0);
    Utc::now().timestamp_millis()
}

fn assert_in_stream(kinesis: &Kinesalite, stream: &str, tracked: &HashSet<String>) {
    let records = kinesis
        .reader(stream)
        .unwrap()
        .read_until(Duration::from_secs(10), |r| r.len() >= tracked.len())
        .unwrap();
    let read: HashSet<String> = records
        .iter()
        .map(|r| r.record.event_id.to_string())
        .collect();
    assert_eq!(&read, tracked, "the tracked events reached the stream");
}

#[test]
fn after_connectivity_failures_network_available_delivers_at_once_even_after_a_restart(
) -> anyhow::Result<()> {
    let kinesis = Kinesalite::start()?;
    let stream = unique_stream("reconnect");
    kinesis.create_stream(&stream, 1)?;
    // No network: nothing listens on the collector's port yet.
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("device.db");
    let shipped = Policy::default();
    assert_eq!(shipped.retry_max_delay, Duration::from_secs(300));

    let tracker = Tracker::new(device_config(db.clone(), &url, shipped.clone(), 0))?;
    let tracked = track(&tracker);
    // Each flush() sends at once (the backoff came from connectivity failures) and fails.
    for failures in 1..=FAILURES {
        assert!(tracker.flush(Duration::from_secs(5))?, "events durable");
        wait_until("an attempt failed", || {
            tracker.stats().upload_failures >= failures
        });
    }
    assert_eq!(last_failure(&db).as_deref(), Some("connectivity"));
    let due = next_attempt_ms(&db);
    let waiting = due - Utc::now().timestamp_millis();
    assert!(
        waiting > 10_000,
        "the shipped backoff after {FAILURES} failures is long: {waiting} ms"
    );
    // The app is closed while offline; the kind of the failure is read back at the next start.
    drop(tracker);

    let mut options = CollectorOptions::new(&kinesis.endpoint, &stream);
    options.listen = SocketAddr::from(([127, 0, 0, 1], port));
    let _collector = Collector::start(&options)?;
    let tracker = Tracker::new(device_config(db.clone(), &url, shipped, 0))?;
    assert_eq!(
        next_attempt_ms(&db),
        due,
        "the backoff survived the restart"
    );
    tracker.network_available();
    let at = delivered_at(&tracker);
    assert!(
        at < due,
        "delivered {} ms before the backoff ended, not after it",
        due - at
    );
    assert_in_stream(&kinesis, &stream, &tracked);
    assert_eq!(last_failure(&db).as_deref(), Some("none"));
    Ok(())
}

#[test]
fn after_a_503_with_retry_after_network_available_waits_out_the_backoff() -> anyhow::Result<()> {
    let kinesis = Kinesalite::start()?;
    let stream = unique_stream("reconnect503");
    kinesis.create_stream(&stream, 1)?;
    // The collector is reachable; the stream behind it is not: it answers 503 + Retry-After.
    let proxy = FaultProxyProcess::start(&kinesis.endpoint, &[])?;
    proxy.set(&Faults {
        outage: true,
        ..Faults::default()
    })?;
    let collector = Collector::start(&CollectorOptions::new(&proxy.url, &stream))?;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("device.db");

    let tracker = Tracker::new(device_config(
        db.clone(),
        &collector.url,
        Policy::default(),
        0,
    ))?;
    let tracked = track(&tracker);
    assert!(tracker.flush(Duration::from_secs(5))?, "events durable");
    wait_until("an attempt failed", || tracker.stats().upload_failures >= 1);
    assert_eq!(last_failure(&db).as_deref(), Some("server"));
    let due = next_attempt_ms(&db);

    // The stream is back and the platform says the network is: the collector's answer holds.
    proxy.set(&Faults::default())?;
    tracker.network_available();
    tracker.on_foreground();
    tracker.flush(Duration::from_secs(5))?;
    let at = delivered_at(&tracker);
    assert!(
        at >= due,
        "delivered {} ms before the collector's Retry-After ended",
        due - at
    );
    assert_in_stream(&kinesis, &stream, &tracked);
    assert_eq!(tracker.stats().upload_failures, 1, "{:?}", tracker.stats());
    Ok(())
}
