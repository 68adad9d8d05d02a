//! Events tracked while the collector is down stay in SQLite and are delivered once it is up.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use rusqlite::Connection;
use tern_sdk::{Policy, Tracker};
use tern_tests::process::{free_port, CollectorOptions};
use tern_tests::{device_config, sample_event, unique_stream, Collector, Kinesalite};

const EVENTS: usize = 300;

#[test]
fn events_wait_in_sqlite_until_the_collector_is_up() -> anyhow::Result<()> {
    let kinesis = Kinesalite::start()?;
    let stream = unique_stream("down");
    kinesis.create_stream(&stream, 1)?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("device.db");

    let policy = Policy {
        flush_at_count: 50,
        flush_interval: Duration::from_millis(200),
        retry_min_delay: Duration::from_millis(100),
        retry_max_delay: Duration::from_millis(500),
        ..Policy::default()
    };
    let tracker = Tracker::new(device_config(db.clone(), &url, policy, 0))?;
    for i in 0..EVENTS {
        let (name, properties) = sample_event(i);
        tracker.track(name, properties)?;
    }
    assert!(tracker.flush(Duration::from_secs(5))?, "events durable");
    // Give the uploader time to fail against the closed port a few times.
    assert!(
        !tracker.flush_and_wait(Duration::from_secs(2))?,
        "nothing can be delivered yet"
    );
    assert!(tracker.stats().upload_failures > 0, "{:?}", tracker.stats());

    // Read the SQLite file itself, as QA would: every event is there.
    let stored: Vec<String> = {
        let conn = Connection::open(&db)?;
        let mut stmt = conn.prepare("SELECT event_id FROM events ORDER BY seq")?;
        let ids = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        ids
    };
    assert_eq!(stored.len(), EVENTS);

    let mut options = CollectorOptions::new(&kinesis.endpoint, &stream);
    options.listen = SocketAddr::from(([127, 0, 0, 1], port));
    let _collector = Collector::start(&options)?;
    assert!(
        tracker.flush_and_wait(Duration::from_secs(30))?,
        "delivered after the collector came up: {:?}",
        tracker.stats()
    );

    let records = kinesis
        .reader(&stream)?
        .read_until(Duration::from_secs(10), |r| r.len() >= EVENTS)?;
    let read: HashSet<String> = records
        .iter()
        .map(|r| r.record.event_id.to_string())
        .collect();
    let stored: HashSet<String> = stored.into_iter().collect();
    assert_eq!(read, stored, "exactly the stored events reached the stream");
    let conn = Connection::open(&db)?;
    let left: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
    assert_eq!(left, 0, "acknowledged events are deleted");
    Ok(())
}
