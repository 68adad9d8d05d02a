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
