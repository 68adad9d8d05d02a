//! The whole path with real parts: SDK trackers (each with its own SQLite file) → the collector
//! process → kinesalite → read back with GetRecords.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use tern_sdk::{Policy, Tracker};
use tern_tests::process::CollectorOptions;
use tern_tests::{device_config, sample_event, unique_stream, Collector, Kinesalite, APP_ID};

const DEVICES: usize = 5;
const EVENTS_PER_DEVICE: usize = 2_000;

#[test]
fn five_devices_times_2000_events_all_reach_the_stream() -> anyhow::Result<()> {
    let kinesis = Kinesalite::start()?;
    let stream = unique_stream("e2e");
    kinesis.create_stream(&stream, 2)?;
    let collector = Collector::start(&CollectorOptions::new(&kinesis.endpoint, &stream))?;
    let dir = tempfile::tempdir()?;

    let handles: Vec<_> = (0..DEVICES)
        .map(|n| {
            let config = device_config(
                dir.path().join(format!("device-{n}.db")),
                &collector.url,
                Policy::default(),
                n,
            );
            std::thread::spawn(move || -> anyhow::Result<String> {
                let tracker = Tracker::new(config)?;
                for i in 0..EVENTS_PER_DEVICE {
                    let (name, properties) = sample_event(i);
                    tracker.track(name, properties)?;
                }
                let delivered = tracker.flush_and_wait(Duration::from_secs(120))?;
                anyhow::ensure!(
                    delivered,
                    "device {n}: buffer not empty: {:?}",
                    tracker.stats()
                );
                Ok(tracker.install_id().to_owned())
            })
        })
        .collect();
    let mut installs = Vec::new();
    for h in handles {
        installs.push(
            h.join()
                .map_err(|_| anyhow::anyhow!("device thread panicked"))??,
        );
    }

    let expected = DEVICES * EVENTS_PER_DEVICE;
    let mut reader = kinesis.reader(&stream)?;
    let records = reader.read_until(Duration::from_secs(30), |r| r.len() >= expected)?;

    let unique: HashSet<_> = records.iter().map(|r| r.record.event_id).collect();
    assert_eq!(unique.len(), expected, "distinct event_ids read back");
    // Per install, seq must be exactly 1..=EVENTS_PER_DEVICE: a gap would be a lost event.
    let mut seqs: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for r in &records {
        assert_eq!(
            r.partition_key, r.record.install_id,
            "partition key is the install id"
        );
        assert_eq!(r.record.app_id, APP_ID);
        seqs.entry(&r.record.install_id)
            .or_default()
            .push(r.record.seq);
    }
    assert_eq!(seqs.len(), DEVICES);
    for install in &installs {
        let mut s = seqs.remove(install.as_str()).unwrap_or_default();
        s.sort_unstable();
        s.dedup();
        assert_eq!(
            s,
            (1..=EVENTS_PER_DEVICE as u64).collect::<Vec<_>>(),
            "install {install}"
        );
    }
    // Sums balance: everything received was delivered, nothing rejected.
    let delivered = collector.metric("tern_collector_events_delivered_total")?;
    let received = collector.metric("tern_collector_events_received_total")?;
    assert_eq!(received, delivered);
    assert!(delivered >= expected as f64);
    Ok(())
}

/// With `--dead-letter-stream`, a batch with invalid events is acknowledged: the valid event
/// reaches the stream, each invalid one reaches the dead-letter stream with its reason, and the
/// sums balance. Readiness needs the dead-letter stream too.
#[test]
fn invalid_events_reach_the_dead_letter_stream_with_their_reason() -> anyhow::Result<()> {
    use serde_json::json;
    use tern_protocol::{BatchAck, DeadLetterRecord};

    let kinesis = Kinesalite::start()?;
    let stream = unique_stream("dlq-main");
    let dead_letters = unique_stream("dlq");
    kinesis.create_stream(&stream, 1)?;

    // Without its dead-letter stream the collector is not ready.
    let mut options = CollectorOptions::new(&kinesis.endpoint, &stream);
    options.dead_letter_stream = Some(dead_letters.clone());
    let unready = Collector::start(&options)?;
    let status = reqwest::blocking::get(format!("{}/readyz", unready.url))?.status();
    assert_eq!(
        status.as_u16(),
        503,
        "unready while the dead-letter stream is missing"
    );
    drop(unready);

    kinesis.create_stream(&dead_letters, 1)?;
    let collector = Collector::start(&options)?;
    let status = reqwest::blocking::get(format!("{}/readyz", collector.url))?.status();
    assert_eq!(status.as_u16(), 200);

    let now = chrono::Utc::now();
    let mut too_deep = json!(1);
    for _ in 0..20 {
        too_deep = json!({ "a": too_deep });
    }
    let event = |seq: u64, name: &str, created_at: chrono::DateTime<chrono::Utc>| {
        json!({
            "event_id": uuid::Uuid::now_v7(), "seq": seq, "name": name,
            "created_at": created_at, "properties": { "k": "v" }
        })
    };
    let mut deep = event(3, "deep", now);
    deep["properties"] = json!({ "nested": too_deep });
    let events = vec![
        event(1, "checkout", now),
        event(2, "bad name!", now),
        deep,
        event(4, "ancient", now - chrono::Duration::days(400)),
    ];
    let ids: Vec<String> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let batch = json!({
        "batch_id": uuid::Uuid::now_v7(),
        "install_id": "install-dlq",
        "sent_at": now,
        "sdk": { "name": "test", "version": "0" },
        "context": {},
        "events": events,
    });
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/v1/batch", collector.url))
        .bearer_auth(tern_tests::WRITE_KEY)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&batch)?)
        .send()?;
    assert_eq!(response.status().as_u16(), 200);
    let ack: BatchAck = serde_json::from_str(&response.text()?)?;
    assert_eq!((ack.accepted, ack.dead_lettered), (1, 3));

    let valid = kinesis
        .reader(&stream)?
        .read_until(Duration::from_secs(10), |r| !r.is_empty())?;
    assert_eq!(valid.len(), 1);
    assert_eq!(valid[0].record.event_id.to_string(), ids[0]);

    let mut reader = kinesis.reader(&dead_letters)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut letters: Vec<DeadLetterRecord> = Vec::new();
    while letters.len() < 3 && std::time::Instant::now() < deadline {
        for raw in reader.read_raw()? {
            letters.push(serde_json::from_slice(&raw.data)?);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let found: Vec<(&str, &str)> = letters
        .iter()
        .map(|l| {
            (
                l.event["event_id"].as_str().unwrap_or_default(),
                l.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (ids[1].as_str(), "invalid_name"),
            (ids[2].as_str(), "invalid_properties"),
            (ids[3].as_str(), "invalid_timestamp"),
        ]
    );
    assert!(letters
        .iter()
        .all(|l| l.app_id == APP_ID && !l.message.is_empty()));

    let metric = |name: &str| collector.metric(name);
    assert_eq!(metric("tern_collector_events_received_total")?, 4.0);
    assert_eq!(metric("tern_collector_events_delivered_total")?, 1.0);
    assert_eq!(metric("tern_collector_events_dead_lettered_total")?, 3.0);
    Ok(())
}
