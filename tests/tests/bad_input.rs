//! Bad input gets a clear 4xx, nothing is written, and the collector keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::Duration;

use reqwest::blocking::Client;
use serde_json::json;
use tern_protocol::ErrorBody;
use tern_tests::process::CollectorOptions;
use tern_tests::{unique_stream, Collector, Kinesalite, WRITE_KEY};

fn batch(install: &str, name: &str) -> serde_json::Value {
    json!({
        "batch_id": uuid::Uuid::now_v7(),
        "install_id": install,
        "sent_at": "2026-11-24T10:00:00.000Z",
        "sdk": { "name": "test", "version": "0" },
        "context": {},
        "events": [{
            "event_id": uuid::Uuid::now_v7(),
            "seq": 1,
            "name": name,
            "created_at": "2026-11-24T09:59:59.000Z",
            "properties": { "k": "v" }
        }]
    })
}

fn post(
    client: &Client,
    url: &str,
    key: Option<&str>,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> anyhow::Result<(u16, String)> {
    let mut request = client
        .post(format!("{url}/v1/batch"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(encoding) = encoding {
        request = request.header("content-encoding", encoding);
    }
    let response = request.send()?;
    Ok((response.status().as_u16(), response.text()?))
}

fn reason(body: &str) -> ErrorBody {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("error body {body:?} is not JSON: {e}"))
}

#[test]
fn bad_keys_and_bodies_are_refused_with_a_reason_and_nothing_is_written() -> anyhow::Result<()> {
    let kinesis = Kinesalite::start()?;
    let stream = unique_stream("bad");
    kinesis.create_stream(&stream, 1)?;
    let collector = Collector::start(&CollectorOptions::new(&kinesis.endpoint, &stream))?;
    let client = Client::new();
    let valid = serde_json::to_vec(&batch("install-bad", "checkout"))?;
    let zstd = |b: &[u8]| zstd::bulk::compress(b, 3).expect("compress");

    let (status, body) = post(
        &client,
        &collector.url,
        Some("wrong-key"),
        Some("zstd"),
        zstd(&valid),
    )?;
    assert_eq!(status, 401, "{body}");
    assert_eq!(reason(&body).error, "unauthorized");
    let (status, _) = post(&client, &collector.url, None, Some("zstd"), zstd(&valid))?;
    assert_eq!(status, 401);

    let (status, body) = post(
        &client,
        &collector.url,
        Some(WRITE_KEY),
        Some("zstd"),
        b"this is not zstd".to_vec(),
    )?;
    assert_eq!(status, 400, "{body}");
    let r = reason(&body);
    assert_eq!(r.error, "malformed_encoding");
    assert!(r.message.contains("zstd"), "{}", r.message);

    let (status, body) = post(
        &client,
        &collector.url,
        Some(WRITE_KEY),
        Some("zstd"),
        zstd(b"{\"not\": \"a batch\"}"),
    )?;
    assert_eq!(status, 400, "{body}");
    let r = reason(&body);
    assert_eq!(r.error, "malformed_json");
    assert!(
        r.message.contains("batch_id") || r.message.contains("not"),
        "{}",
        r.message
    );

    let (status, body) = post(
        &client,
        &collector.url,
        Some(WRITE_KEY),
        None,
        b"{]".to_vec(),
    )?;
    assert_eq!(status, 400, "{body}");

    let (status, body) = post(
        &client,
        &collector.url,
        Some(WRITE_KEY),
        Some("br"),
        valid.clone(),
    )?;
    assert_eq!(status, 415, "{body}");

    // Without a dead-letter stream, an invalid event is refused alone: 200, listed in the
    // answer, nothing written for it.
    let invalid = serde_json::to_vec(&batch("install-bad", "has spaces"))?;
    let (status, body) = post(
        &client,
        &collector.url,
        Some(WRITE_KEY),
        Some("zstd"),
        zstd(&invalid),
    )?;
    assert_eq!(status, 200, "{body}");
    let ack: tern_protocol::BatchAck = serde_json::from_str(&body)?;
    assert_eq!(ack.accepted, 0);
    assert_eq!(ack.refused.len(), 1);
    assert_eq!(ack.refused[0].reason, "invalid_name");

    let mut reader = kinesis.reader(&stream)?;
    assert!(
        reader.read()?.is_empty(),
        "nothing was written for refused uploads"
    );

    // The collector keeps serving: a valid batch, zstd, gzip and plain, is accepted.
    for (encoding, body) in [
        (Some("zstd"), zstd(&valid)),
        (
            Some("gzip"),
            gzip(&serde_json::to_vec(&batch("install-gzip", "checkout"))?),
        ),
        (
            None,
            serde_json::to_vec(&batch("install-plain", "checkout"))?,
        ),
    ] {
        let (status, body) = post(&client, &collector.url, Some(WRITE_KEY), encoding, body)?;
        assert_eq!(status, 200, "{encoding:?}: {body}");
        let ack: tern_protocol::BatchAck = serde_json::from_str(&body)?;
        assert_eq!(ack.accepted, 1);
    }
    let records = reader.read_until(Duration::from_secs(10), |r| r.len() >= 3)?;
    assert_eq!(records.len(), 3);
    assert_eq!(
        collector.metric("tern_collector_requests_total{status=\"401\"}")?,
        2.0
    );
    // Refused before any batch decoded: counted by reason all the same.
    for (reason, n) in [
        ("unauthorized", 2.0),
        ("malformed_encoding", 1.0),
        ("malformed_json", 2.0),
        ("unsupported_encoding", 1.0),
    ] {
        let series = format!("tern_collector_requests_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(collector.metric(&series)?, n, "{series}");
    }
    assert_eq!(
        collector.metric("tern_collector_requests_total{status=\"200\"}")?,
        4.0
    );
    // The invalid event was received and refused: the sums balance.
    let received = collector.metric("tern_collector_events_received_total")?;
    let delivered = collector.metric("tern_collector_events_delivered_total")?;
    let refused =
        collector.metric("tern_collector_events_refused_total{reason=\"invalid_name\"}")?;
    assert_eq!((received, delivered, refused), (4.0, 3.0, 1.0));
    Ok(())
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    encoder.write_all(data).expect("write to a Vec");
    encoder.finish().expect("finish to a Vec")
}

#[test]
fn a_write_key_over_its_rate_limit_gets_429_with_retry_after() -> anyhow::Result<()> {
    let kinesis = Kinesalite::start()?;
    let stream = unique_stream("rate");
    kinesis.create_stream(&stream, 1)?;
    let mut options = CollectorOptions::new(&kinesis.endpoint, &stream);
    options.extra_args = vec!["--rate-limit-events-per-second".into(), "100".into()];
    let collector = Collector::start(&options)?;
    let client = Client::new();
    let big = |n: usize| {
        let mut b = batch("install-rate", "checkout");
        let event = b["events"][0].clone();
        b["events"] = serde_json::Value::Array(
            (0..n)
                .map(|i| {
                    let mut e = event.clone();
                    e["event_id"] = json!(uuid::Uuid::now_v7());
                    e["seq"] = json!(i + 1);
                    e
                })
                .collect(),
        );
        serde_json::to_vec(&b).expect("JSON")
    };
    // The burst allows one full batch (500 events); the next 300 within the second do not fit.
    let (status, body) = post(&client, &collector.url, Some(WRITE_KEY), None, big(400))?;
    assert_eq!(status, 200, "{body}");
    let response = client
        .post(format!("{}/v1/batch", collector.url))
        .bearer_auth(WRITE_KEY)
        .header("content-type", "application/json")
        .body(big(300))
        .send()?;
    assert_eq!(response.status().as_u16(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str()?.parse()?;
    assert!((1..=5).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(reason(&response.text()?).error, "rate_limited");
    assert_eq!(
        collector.metric("tern_collector_events_rejected_total{reason=\"rate_limited\"}")?,
        300.0
    );
    Ok(())
}

/// Batch ids are chosen by clients: a resend is recognised by (app, batch id), so another app
/// that happens to send the same batch id is written, not answered from the cache.
#[test]
fn a_batch_id_reused_by_another_app_is_written_not_taken_for_a_resend() -> anyhow::Result<()> {
    let kinesis = Kinesalite::start()?;
    let stream = unique_stream("tenancy");
    kinesis.create_stream(&stream, 1)?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("collector.toml");
    std::fs::write(&config, "[keys.write_keys]\nother-key = \"other-app\"\n")?;
    let mut options = CollectorOptions::new(&kinesis.endpoint, &stream);
    options.extra_args = vec!["--config".into(), config.display().to_string()];
    let collector = Collector::start(&options)?;
    let client = Client::new();

    let first = batch("install-a", "checkout");
    let mut second = batch("install-b", "checkout");
    second["batch_id"] = first["batch_id"].clone();
    let (status, body) = post(
        &client,
        &collector.url,
        Some(WRITE_KEY),
        None,
        serde_json::to_vec(&first)?,
    )?;
    assert_eq!(status, 200, "{body}");
    // A true resend by the same app is answered from memory.
    let (status, body) = post(
        &client,
        &collector.url,
        Some(WRITE_KEY),
        None,
        serde_json::to_vec(&first)?,
    )?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        collector.metric("tern_collector_events_duplicate_total")?,
        1.0
    );
    let (status, body) = post(
        &client,
        &collector.url,
        Some("other-key"),
        None,
        serde_json::to_vec(&second)?,
    )?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        collector.metric("tern_collector_events_duplicate_total")?,
        1.0,
        "the other app's batch is not a duplicate"
    );
    let records = kinesis
        .reader(&stream)?
        .read_until(Duration::from_secs(10), |r| r.len() >= 2)?;
    let apps: Vec<&str> = records.iter().map(|r| r.record.app_id.as_str()).collect();
    assert_eq!(apps, ["test-app", "other-app"]);
    Ok(())
}

/// Within v1 unknown fields are ignored, not refused (a newer SDK talking to an older
/// collector loses nothing): the batch is accepted, its events are in the stream, and each
/// ignored field is counted by where it was.
#[test]
fn unknown_fields_are_accepted_and_counted() -> anyhow::Result<()> {
    let kinesis = Kinesalite::start()?;
    let stream = unique_stream("unknown");
    kinesis.create_stream(&stream, 1)?;
    let collector = Collector::start(&CollectorOptions::new(&kinesis.endpoint, &stream))?;
    let mut body = batch("install-unknown", "checkout");
    body["compression_hint"] = json!("zstd-19");
    body["events"][0]["priority"] = json!(3);
    let (status, text) = post(
        &Client::new(),
        &collector.url,
        Some(WRITE_KEY),
        None,
        serde_json::to_vec(&body)?,
    )?;
    assert_eq!(status, 200, "{text}");
    let records = kinesis
        .reader(&stream)?
        .read_until(Duration::from_secs(10), |r| !r.is_empty())?;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].record.name, "checkout");
    for location in ["batch", "event"] {
        let series = format!("tern_collector_unknown_fields_total{{location=\"{location}\"}}");
        assert_eq!(collector.metric(&series)?, 1.0, "{series}");
    }
    Ok(())
}

/// A `batch_id` this collector acknowledged, sent again with other events, is answered 409
/// `batch_id_conflict` and counted, never acknowledged without writing; the same content again
/// gets the cached acknowledgement.
#[test]
fn a_reused_batch_id_with_other_events_gets_409() -> anyhow::Result<()> {
    let kinesis = Kinesalite::start()?;
    let stream = unique_stream("conflict");
    kinesis.create_stream(&stream, 1)?;
    let collector = Collector::start(&CollectorOptions::new(&kinesis.endpoint, &stream))?;
    let client = Client::new();
    let first = batch("install-conflict", "checkout");
    let send = |body: &serde_json::Value| {
        post(
            &client,
            &collector.url,
            Some(WRITE_KEY),
            None,
            serde_json::to_vec(body).expect("JSON"),
        )
    };
    let (status, text) = send(&first)?;
    assert_eq!(status, 200, "{text}");
    let acked: tern_protocol::BatchAck = serde_json::from_str(&text)?;
    // The same batch again (its ack was lost): the same answer.
    let (status, text) = send(&first)?;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<tern_protocol::BatchAck>(&text)?,
        acked
    );
    // The same batch_id with another event: refused.
    let mut other = batch("install-conflict", "checkout");
    other["batch_id"] = first["batch_id"].clone();
    let (status, text) = send(&other)?;
    assert_eq!(status, 409, "{text}");
    assert_eq!(reason(&text).error, "batch_id_conflict");
    // Another seq under the same event_id is other content too.
    let mut reseq = first.clone();
    reseq["events"][0]["seq"] = json!(2);
    let (status, _) = send(&reseq)?;
    assert_eq!(status, 409);
    assert_eq!(
        collector.metric("tern_collector_requests_refused_total{reason=\"batch_id_conflict\"}")?,
        2.0
    );
    let records = kinesis
        .reader(&stream)?
        .read_until(Duration::from_secs(3), |r| r.len() > 1)?;
    assert_eq!(records.len(), 1, "only the first batch was written");
    Ok(())
}
