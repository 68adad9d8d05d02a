//! Stream record v2 (`--record-version 2`) with real processes: kinesalite, the fault proxy,
//! tern-collector, tern-loadgen. Every v2 event is in the stream after its upload's batch record
//! (also when Kinesis throttles half the records), joins to what v1 writes, and validates
//! against the v2 schema.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use tern_protocol::{RECORD_SCHEMA, RECORD_V2_SCHEMA};
use tern_tests::lake::{batch, post};
use tern_tests::process::{loadgen, CollectorOptions, FaultProxyProcess};
use tern_tests::records::{Document, Joiner};
use tern_tests::{unique_stream, Collector, Kinesalite, RawRecord};

fn validator(schema: &str) -> jsonschema::Validator {
    jsonschema::validator_for(&serde_json::from_str(schema).unwrap()).unwrap()
}

fn assert_valid(validator: &jsonschema::Validator, data: &[u8]) {
    let doc: Value = serde_json::from_slice(data).unwrap();
    let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "schema errors: {errors:#?}\nin {doc:#}");
}

fn v2_options(endpoint: &str, stream: &str, aggregate: bool) -> CollectorOptions {
    let mut options = CollectorOptions::new(endpoint, stream);
    options.extra_args = vec!["--record-version".into(), "2".into()];
    if aggregate {
        options.extra_args.push("--aggregate".into());
    }
    options
}

/// Throttling half the records makes many a batch record need a second attempt: the events of
/// its upload must still land after it. tern-loadgen reads the stream back in shard order and
/// counts an event whose batch record comes later (or never) as not delivered.
#[test]
fn v2_events_always_follow_their_batch_record_even_when_kinesis_throttles() {
    let kinesis = Kinesalite::start().unwrap();
    for aggregate in [false, true] {
        let stream = unique_stream("v2-order");
        kinesis.create_stream(&stream, 2).unwrap();
        let proxy = FaultProxyProcess::start(
            &kinesis.endpoint,
            &["--throttle-share", "0.5", "--error-share", "0.05"],
        )
        .unwrap();
        let collector = Collector::start(&v2_options(&proxy.url, &stream, aggregate)).unwrap();
        let report = loadgen(&[
            "--collector",
            &collector.url,
            "--events",
            "20000",
            "--devices",
            "16",
            "--batch",
            "100",
            "--kinesis-endpoint",
            &kinesis.endpoint,
            "--stream",
            &stream,
            "--max-seconds",
            "300",
        ])
        .unwrap();
        let stats = proxy.stats().unwrap();
        eprintln!("aggregate {aggregate}: {report:#?}\n{stats:#?}");
        // Aggregated, an upload is one Kinesis record (its batch record first inside it).
        let least = if aggregate { 20 } else { 1_000 };
        assert!(
            stats.records_throttled > least,
            "throttled for real: {stats:?}"
        );
        assert_eq!(report.events_acked, 20_000);
        assert_eq!(report.lost, 0, "aggregate {aggregate}");
        assert_eq!(report.delivered_unique, 20_000);

        // Every document is a v2 record, and every event comes after its batch record.
        let mut reader = kinesis.reader(&stream).unwrap();
        let schema = validator(RECORD_V2_SCHEMA);
        let mut joiner = Joiner::default();
        let (mut batches, mut events) = (0, 0);
        for raw in reader.read_raw().unwrap() {
            let docs = tern_collector::sink::kinesis::aggregate::deaggregate(&raw.data)
                .unwrap_or_else(|| vec![&raw.data[..]]);
            for data in docs {
                assert_valid(&schema, data);
                match joiner.document(data).unwrap() {
                    Document::Batch(b) => {
                        assert_eq!(b.install_id, raw.partition_key);
                        batches += 1;
                    }
                    Document::Event(e) => {
                        assert_eq!(e.install_id, raw.partition_key);
                        events += 1;
                    }
                    Document::Gap(g) => panic!("no gap was reported: {g:?}"),
                }
            }
        }
        assert!(events >= 20_000, "{events}");
        assert!(batches >= 200, "one per upload at least: {batches}");
    }
}

/// The records a collector in v2 writes, read and joined, are those a v1 collector writes for
/// the same uploads (but for `v`, the collector's id and clock and what follows from them),
/// gap records included; each version validates against its schema, and v2 takes fewer bytes.
#[test]
fn a_v2_stream_joins_to_the_records_of_a_v1_stream_in_fewer_bytes() {
    use chrono::Utc;
    use serde_json::json;
    let kinesis = Kinesalite::start().unwrap();
    let client = reqwest::blocking::Client::new();
    let now = Utc::now();
    let mut uploads: Vec<Value> = Vec::new();
    for (i, count) in [1usize, 7, 100].into_iter().enumerate() {
        let (mut body, _) = batch(&format!("install-{i}"), 1, count, now);
        body["events"][0]["user_id"] = json!("user \"1\" é");
        uploads.push(body);
    }
    // A batch with a gap report and no events (so no batch record), and one with an invalid
    // event among valid ones (refused, listed in the answer).
    let (mut gaps_only, _) = batch("install-g", 1, 0, now);
    gaps_only["gaps"] = json!([{ "gap_id": uuid::Uuid::now_v7(), "reason": "cap_count",
        "ranges": [{ "first": 1, "last": 5 }], "count": 5, "at": now }]);
    uploads.push(gaps_only);
    let (mut partly, _) = batch("install-p", 1, 3, now);
    partly["events"][1]["name"] = json!("9 not a name");
    uploads.push(partly);

    let mut streams = BTreeMap::new();
    for version in [1u32, 2] {
        let stream = unique_stream(&format!("v{version}-same"));
        kinesis.create_stream(&stream, 1).unwrap();
        let mut options = CollectorOptions::new(&kinesis.endpoint, &stream);
        options.extra_args = vec!["--record-version".into(), version.to_string()];
        let collector = Collector::start(&options).unwrap();
        for body in &uploads {
            assert_eq!(post(&client, &collector.url, body).unwrap(), 200);
        }
        let mut reader = kinesis.reader(&stream).unwrap();
        let mut raw: Vec<RawRecord> = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        // 1 + 7 + 100 + 2 events and a gap; v2 adds 4 batch records (none for the gaps-only
        // upload).
        let expected = if version == 1 { 111 } else { 115 };
        while raw.len() < expected && std::time::Instant::now() < deadline {
            raw.extend(reader.read_raw().unwrap());
        }
        assert_eq!(raw.len(), expected, "v{version}");
        streams.insert(version, raw);
    }

    let read = |version: u32| {
        let schema = validator(if version == 1 {
            RECORD_SCHEMA
        } else {
            RECORD_V2_SCHEMA
        });
        let mut joiner = Joiner::default();
        let mut out = Vec::new();
        for raw in &streams[&version] {
            assert_valid(&schema, &raw.data);
            let doc: Value = serde_json::from_slice(&raw.data).unwrap();
            assert_eq!(doc["v"], version, "{doc}");
            match joiner.document(&raw.data).unwrap() {
                Document::Event(mut e) => {
                    assert_eq!(e.v, version);
                    // What legitimately differs between two collectors and two arrivals.
                    e.v = 0;
                    e.collector_id.clear();
                    e.received_at = now;
                    e.event_time = now;
                    out.push(json!({ "event": *e }));
                }
                Document::Gap(mut g) => {
                    assert_eq!(g.v, version);
                    g.v = 0;
                    g.collector_id.clear();
                    g.received_at = now;
                    out.push(json!({ "gap": *g }));
                }
                Document::Batch(b) => assert_eq!(version, 2, "{b:?}"),
            }
        }
        out
    };
    let (v1, v2) = (read(1), read(2));
    assert_eq!(v1.len(), 111);
    assert!(v1.iter().any(|d| d.get("gap").is_some()));
    assert_eq!(v1, v2);
    let bytes = |version: u32| -> usize { streams[&version].iter().map(|r| r.data.len()).sum() };
    let (b1, b2) = (bytes(1), bytes(2));
    eprintln!(
        "stream bytes: v1 {b1}, v2 {b2} ({:.2})",
        b2 as f64 / b1 as f64
    );
    assert!(b2 < b1 * 3 / 4, "v1 {b1} bytes, v2 {b2}");
}
