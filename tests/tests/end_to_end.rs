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
