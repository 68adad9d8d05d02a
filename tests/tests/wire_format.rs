//! What the SDK really sends, and what the collector really writes, against the JSON Schemas in
//! `protocol/schema/`; and retries resend the identical batch.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::{Duration, Instant};

use serde_json::Value;
use tern_protocol::{BATCH_SCHEMA, RECORD_SCHEMA};
use tern_sdk::{Policy, Tracker};
use tern_tests::capture::{CaptureServer, Captured};
use tern_tests::process::CollectorOptions;
use tern_tests::{device_config, sample_event, unique_stream, Collector, Kinesalite};

fn validator(schema: &str) -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(schema).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("schema compiles")
}

fn assert_valid(validator: &jsonschema::Validator, doc: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "schema errors: {errors:#?}\nin {doc:#}");
}

fn decode(request: &Captured) -> Value {
    assert_eq!(request.request_line, "POST /v1/batch HTTP/1.1");
    assert_eq!(request.header("content-encoding"), Some("zstd"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {}", tern_tests::WRITE_KEY).as_str())
    );
    let json = zstd::stream::decode_all(request.body.as_slice()).expect("zstd body");
    serde_json::from_slice(&json).expect("JSON body")
}

#[test]
fn sdk_payloads_match_the_schema_and_retries_resend_the_same_batch() -> anyhow::Result<()> {
    // The server answers 503: the SDK must keep the batch and send it again, unchanged.
    let server = CaptureServer::start(503, "retry-after: 0\r\n")?;
    let dir = tempfile::tempdir()?;
    let policy = Policy {
        flush_at_count: 10,
        flush_interval: Duration::from_millis(100),
        retry_min_delay: Duration::from_millis(50),
        retry_max_delay: Duration::from_millis(200),
        ..Policy::default()
    };
    let tracker = Tracker::new(device_config(
        dir.path().join("d.db"),
        &server.url(),
        policy,
        0,
    ))?;
    tracker.identify(Some("user-42".into()));
    for i in 0..10 {
        let (name, properties) = sample_event(i);
        tracker.track(name, properties)?;
    }
    tracker.flush(Duration::from_secs(5))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.requests().len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let requests = server.requests();
    assert!(
        requests.len() >= 3,
        "the SDK retried: {} attempts",
        requests.len()
    );

    let schema = validator(BATCH_SCHEMA);
    let bodies: Vec<Value> = requests.iter().map(decode).collect();
    for body in &bodies {
        assert_valid(&schema, body);
    }
    let first = &bodies[0];
    assert_eq!(first["events"].as_array().map(Vec::len), Some(10));
    assert_eq!(first["events"][0]["user_id"], "user-42");
    for retry in &bodies[1..] {
        assert_eq!(
            retry["batch_id"], first["batch_id"],
            "same batch_id on retry"
        );
        assert_eq!(retry["events"], first["events"], "same events on retry");
        assert_eq!(retry["context"], first["context"]);
    }
    assert!(
        bodies
            .windows(2)
            .all(|w| w[0]["sent_uptime_ms"].as_u64() < w[1]["sent_uptime_ms"].as_u64()),
        "sent_uptime_ms is refreshed at each attempt"
    );
    let sent_at: Vec<_> = bodies
        .iter()
        .map(|b| chrono::DateTime::parse_from_rfc3339(b["sent_at"].as_str().unwrap()).unwrap())
        .collect();
    assert!(
        sent_at.windows(2).all(|w| w[0] < w[1]),
        "sent_at is refreshed at each attempt: {sent_at:?}"
    );
    Ok(())
}

#[test]
fn stream_records_match_the_schema() -> anyhow::Result<()> {
    let kinesis = Kinesalite::start()?;
    let stream = unique_stream("schema");
    kinesis.create_stream(&stream, 1)?;
    let collector = Collector::start(&CollectorOptions::new(&kinesis.endpoint, &stream))?;
    let dir = tempfile::tempdir()?;
    let tracker = Tracker::new(device_config(
        dir.path().join("d.db"),
        &collector.url,
        Policy::default(),
        1,
    ))?;
    for i in 0..25 {
        let (name, properties) = sample_event(i);
        tracker.track(name, properties)?;
    }
    assert!(tracker.flush_and_wait(Duration::from_secs(30))?);
    let mut reader = kinesis.reader(&stream)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut raw = Vec::new();
    while raw.len() < 25 && Instant::now() < deadline {
        raw.extend(reader.read_raw()?);
    }
    assert_eq!(raw.len(), 25);
    let schema = validator(RECORD_SCHEMA);
    for r in &raw {
        let record: Value = serde_json::from_slice(&r.data)?;
        assert_valid(&schema, &record);
        assert_eq!(
            record["install_id"].as_str(),
            Some(r.partition_key.as_str())
        );
        assert_eq!(record["context"]["os"]["name"], "iOS");
    }
    Ok(())
}

/// Gap reports become gap records in the main stream, valid against the record schema, keyed
/// by `install_id`, with the events (also in `--aggregate` mode), and the answer counts them: a
/// batch with events and two gaps, and a batch with gaps only.
#[test]
fn gap_reports_become_gap_records_that_match_the_schema() -> anyhow::Result<()> {
    use serde_json::json;
    let kinesis = Kinesalite::start()?;
    let schema = validator(RECORD_SCHEMA);
    let batch_schema = validator(BATCH_SCHEMA);
    for aggregate in [false, true] {
        let stream = unique_stream("gaps");
        kinesis.create_stream(&stream, 1)?;
        let mut options = CollectorOptions::new(&kinesis.endpoint, &stream);
        if aggregate {
            options.extra_args = vec!["--aggregate".into()];
        }
        let collector = Collector::start(&options)?;
        let now = chrono::Utc::now();
        let gap = |reason: &str, ranges: Value, count: u64| {
            json!({
                "gap_id": uuid::Uuid::now_v7(), "reason": reason, "ranges": ranges,
                "count": count, "at": now
            })
        };
        let with_events = json!({
            "batch_id": uuid::Uuid::now_v7(),
            "install_id": "install-gaps",
            "sent_at": now,
            "sdk": { "name": "test", "version": "0" },
            "context": {},
            "events": (121..=123).map(|seq| json!({
                "event_id": uuid::Uuid::now_v7(), "seq": seq, "name": "checkout",
                "created_at": now, "properties": {}
            })).collect::<Vec<_>>(),
            "gaps": [
                gap("cap_count", json!([{ "first": 1, "last": 100 }]), 100),
                gap("quarantine", json!([{ "first": 101, "last": 110 }, { "first": 115, "last": 120 }]), 16),
            ],
        });
        let gaps_only = json!({
            "batch_id": uuid::Uuid::now_v7(),
            "install_id": "install-gaps",
            "sent_at": now,
            "sdk": { "name": "test", "version": "0" },
            "context": {},
            "events": [],
            "gaps": [gap("storage_lost", json!([{ "first": 111, "last": 114 }]), 4)],
        });
        let client = reqwest::blocking::Client::new();
        for (body, events, gaps) in [(&with_events, 3, 2), (&gaps_only, 0, 1)] {
            assert_valid(&batch_schema, body);
            let response = client
                .post(format!("{}/v1/batch", collector.url))
                .bearer_auth(tern_tests::WRITE_KEY)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(body)?)
                .send()?;
            assert_eq!(response.status().as_u16(), 200, "aggregate {aggregate}");
            let ack: tern_protocol::BatchAck = serde_json::from_str(&response.text()?)?;
            assert_eq!(
                (ack.accepted, ack.gaps),
                (events, gaps),
                "aggregate {aggregate}"
            );
        }
        let mut reader = kinesis.reader(&stream)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut documents: Vec<Value> = Vec::new();
        while documents.len() < 6 && Instant::now() < deadline {
            for raw in reader.read_raw()? {
                assert_eq!(raw.partition_key, "install-gaps");
                let parts = tern_protocol::aggregate::deaggregate(&raw.data)
                    .unwrap_or_else(|| vec![&raw.data[..]]);
                for part in parts {
                    documents.push(serde_json::from_slice(part)?);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(documents.len(), 6, "aggregate {aggregate}");
        for document in &documents {
            assert_valid(&schema, document);
        }
        let mut gap_records: Vec<(String, u64)> = documents
            .iter()
            .filter(|d| d["kind"] == "gap")
            .map(|d| {
                assert!(d.get("event_id").is_none());
                (
                    d["reason"].as_str().unwrap().to_owned(),
                    d["count"].as_u64().unwrap(),
                )
            })
            .collect();
        gap_records.sort();
        assert_eq!(
            gap_records,
            [
                ("cap_count".to_owned(), 100),
                ("quarantine".to_owned(), 16),
                ("storage_lost".to_owned(), 4)
            ],
            "aggregate {aggregate}"
        );
        // Completeness: received seqs and seqs covered by gaps make up every seq issued.
        let mut covered = std::collections::BTreeSet::new();
        for d in &documents {
            if d["kind"] == "gap" {
                for range in d["ranges"].as_array().unwrap() {
                    covered
                        .extend(range["first"].as_u64().unwrap()..=range["last"].as_u64().unwrap());
                }
            } else {
                covered.insert(d["seq"].as_u64().unwrap());
            }
        }
        assert_eq!(covered, (1..=123).collect(), "aggregate {aggregate}");
        assert_eq!(
            collector.metric("tern_collector_gap_events_total{reason=\"cap_count\"}")?,
            100.0
        );
        // A schema check that can fail: an event record claiming a kind is neither variant.
        let mut forged = documents
            .iter()
            .find(|d| d.get("kind").is_none())
            .unwrap()
            .clone();
        forged["kind"] = json!("gap");
        assert!(!schema.is_valid(&forged));
    }
    Ok(())
}
