//! Completeness end to end: a device whose buffer cap drops events while it is offline reports
//! every dropped `seq` as a gap record in the stream, and the lake's completeness query finds
//! every `seq` received or reported lost (real SDK, collector, kinesalite and `tern-lake`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tern_protocol::gap_reason;
use tern_sdk::{Policy, Tracker};
use tern_tests::lake::{completeness_query, ingest_until_caught_up, sql};
use tern_tests::lb::LoadBalancer;
use tern_tests::process::CollectorOptions;
use tern_tests::{device_config, sample_event, unique_stream, Collector, Kinesalite};

const TRACKED: u64 = 300;
const CAP: u64 = 40;

#[test]
fn a_capped_devices_gaps_reach_the_stream_and_the_lake_counts_every_seq() {
    let kinesis = Kinesalite::start().unwrap();
    let stream = unique_stream("gaps");
    kinesis.create_stream(&stream, 1).unwrap();
    let collector = Collector::start(&CollectorOptions::new(&kinesis.endpoint, &stream)).unwrap();
    let address = collector.url.trim_start_matches("http://").parse().unwrap();
    // The device's network: down while it tracks.
    let network = LoadBalancer::start(vec![address]).unwrap();
    network.set_link(false);

    let dir = tempfile::tempdir().unwrap();
    let policy = Policy {
        max_buffer_events: CAP,
        retry_min_delay: Duration::from_millis(100),
        retry_max_delay: Duration::from_millis(500),
        ..Policy::realtime()
    };
    let tracker = Tracker::new(device_config(
        dir.path().join("device.db"),
        &network.url(),
        policy,
        0,
    ))
    .unwrap();
    let mut tracked = Vec::new();
    for i in 0..TRACKED {
        let (name, properties) = sample_event(i as usize);
        tracked.push(tracker.track(name, properties).unwrap().unwrap());
    }
    // Stored, and capped, before the network returns.
    let deadline = Instant::now() + Duration::from_secs(30);
    while tracker.stats().pending.events > CAP {
        assert!(Instant::now() < deadline, "the cap was not applied");
        std::thread::sleep(Duration::from_millis(50));
    }
    network.set_link(true);
    tracker.network_available();
    assert!(
        tracker.flush_and_wait(Duration::from_secs(60)).unwrap(),
        "the device drained"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while tracker.stats().pending_gap_reports > 0 {
        assert!(Instant::now() < deadline, "gap reports still waiting");
        tracker.flush(Duration::from_secs(1)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let install = tracker.install_id().to_owned();
    tracker.shutdown();

    // In the stream: every seq once, as an event or inside a gap record.
    let mut reader = kinesis.reader(&stream).unwrap();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        events.extend(reader.read().unwrap());
        let seqs: BTreeSet<u64> = events.iter().map(|r| r.record.seq).collect();
        let covered = reader.gaps().iter().map(|g| g.count).sum::<u64>() + seqs.len() as u64;
        if covered >= TRACKED || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Copies of a resent batch carry the same event_id and seq.
    let received: BTreeSet<u64> = events.iter().map(|r| r.record.seq).collect();
    let gaps = reader.gaps().to_vec();
    assert!(
        !gaps.is_empty(),
        "the cap dropped events: gap records expected"
    );
    let mut reported = BTreeSet::new();
    for gap in &gaps {
        assert_eq!(gap.install_id, install);
        assert_eq!(gap.reason, gap_reason::CAP_COUNT, "{gap:?}");
        assert_eq!(gap.count, gap.ranges.iter().map(|r| r.len()).sum::<u64>());
        for range in &gap.ranges {
            for seq in range.first..=range.last {
                assert!(reported.insert(seq), "seq {seq} reported lost twice");
            }
        }
    }
    assert!(
        received.is_disjoint(&reported),
        "a seq both received and reported lost"
    );
    let all: BTreeSet<u64> = received.union(&reported).copied().collect();
    assert_eq!(
        all,
        (1..=TRACKED).collect::<BTreeSet<u64>>(),
        "received + reported lost = issued"
    );
    assert!(
        received.len() as u64 >= CAP,
        "the newest {CAP} events were kept and delivered: {}",
        received.len()
    );
    // The events that arrived are the ones tracked, newest kept: seq i is tracked[i - 1].
    for r in &events {
        assert_eq!(r.record.event_id, tracked[(r.record.seq - 1) as usize]);
    }

    // In the lake: the completeness query of docs/analysis.md finds nothing missing.
    let lake = dir.path().join("lake");
    ingest_until_caught_up(&kinesis.endpoint, &stream, &lake, &[]).unwrap();
    let rows = sql(&lake, &completeness_query().unwrap(), None).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["install_id"].as_str().unwrap(), install);
    assert_eq!(row["issued"].as_i64().unwrap(), TRACKED as i64, "{row:?}");
    assert_eq!(
        row["received"].as_i64().unwrap(),
        received.len() as i64,
        "{row:?}"
    );
    assert_eq!(
        row["reported_lost"].as_i64().unwrap(),
        reported.len() as i64,
        "{row:?}"
    );
    assert_eq!(row["not_arrived"].as_i64().unwrap(), 0, "{row:?}");
}
