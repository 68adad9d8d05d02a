//! The collector's KPL aggregation mode, checked by an independent reader: the Python package
//! `aws-kinesis-agg` de-aggregates the stream and must find every event (installed into .venv by
//! `make test`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use tern_sdk::{Policy, Tracker};
use tern_tests::process::CollectorOptions;
use tern_tests::{
    device_config, sample_event, unique_stream, workspace_root, Collector, Kinesalite,
};

#[test]
fn aws_kinesis_agg_finds_every_event_in_the_aggregated_stream() {
    let python = workspace_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make test` (it creates .venv)",
        python.display()
    );
    let kinesis = Kinesalite::start().unwrap();
    let stream = unique_stream("agg");
    kinesis.create_stream(&stream, 2).unwrap();
    let mut options = CollectorOptions::new(&kinesis.endpoint, &stream);
    options.extra_args = vec!["--aggregate".into()];
    let collector = Collector::start(&options).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut tracked = HashSet::new();
    // No upload before the flush: an upload cycle running while the app still tracks can cut
    // a batch of the one event committed last, and an upload of one event is a plain record
    // (`docs/stream-record.md`), not the aggregated record this test looks for.
    let policy = Policy {
        flush_at_count: usize::MAX,
        flush_interval: Duration::from_secs(3600),
        ..Policy::default()
    };
    for device in 0..3 {
        let tracker = Tracker::new(device_config(
            dir.path().join(format!("d{device}.db")),
            &collector.url,
            policy.clone(),
            device,
        ))
        .unwrap();
        for i in 0..700 {
            let (name, properties) = sample_event(i);
            tracked.insert(
                tracker
                    .track(name, properties)
                    .unwrap()
                    .unwrap()
                    .to_string(),
            );
        }
        assert!(tracker.flush_and_wait(Duration::from_secs(30)).unwrap());
    }
    let raw = kinesis.reader(&stream).unwrap().read_raw().unwrap();
    assert!(
        raw.len() < tracked.len() / 50,
        "{} Kinesis records for {} events: aggregated",
        raw.len(),
        tracked.len()
    );
    assert!(raw
        .iter()
        .all(|r| r.data.starts_with(&[0xF3, 0x89, 0x9A, 0xC2])));

    let output = Command::new(&python)
        .arg(workspace_root().join("tools/consumer/deaggregate_stream.py"))
        .args(["--endpoint", &kinesis.endpoint, "--stream", &stream])
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .current_dir(workspace_root().join("tools/consumer"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let found: HashSet<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(found.len(), tracked.len(), "distinct events de-aggregated");
    assert_eq!(
        found, tracked,
        "aws-kinesis-agg found exactly the tracked events"
    );
}

/// tern-loadgen's read-back understands aggregated records: against a collector running with
/// `--aggregate` it finds every acknowledged event (it used to report them all lost).
#[test]
fn loadgen_reads_back_an_aggregated_stream() {
    let kinesis = Kinesalite::start().unwrap();
    let stream = unique_stream("agg-loadgen");
    kinesis.create_stream(&stream, 2).unwrap();
    let mut options = CollectorOptions::new(&kinesis.endpoint, &stream);
    options.extra_args = vec!["--aggregate".into()];
    let collector = Collector::start(&options).unwrap();
    let report = tern_tests::process::loadgen(&[
        "--collector",
        &collector.url,
        "--events",
        "4000",
        "--devices",
        "4",
        "--batch",
        "200",
        "--kinesis-endpoint",
        &kinesis.endpoint,
        "--stream",
        &stream,
        "--max-seconds",
        "120",
        "--read-timeout-seconds",
        "30",
    ])
    .unwrap();
    eprintln!("{report:#?}");
    assert_eq!(report.events_acked, 4_000);
    assert_eq!(report.delivered_unique, 4_000);
    assert_eq!(report.lost, 0);
    let raw = kinesis.reader(&stream).unwrap().read_raw().unwrap();
    assert!(
        raw.len() < 400,
        "{} records for 4 000 events: aggregated",
        raw.len()
    );
}
