//! Hostile input against the real collector process: every request gets a 4xx with a reason,
//! never a 5xx; memory stays bounded; the collector keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use reqwest::blocking::Client;
use serde_json::json;
use tern_tests::process::CollectorOptions;
use tern_tests::{unique_stream, Collector, Kinesalite, WRITE_KEY};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn valid_batch() -> serde_json::Value {
    json!({
        "batch_id": uuid::Uuid::now_v7(),
        "install_id": "hostile-test",
        "sent_at": "2026-11-24T10:00:00.000Z",
        "sdk": { "name": "test", "version": "0" },
        "context": {},
        "events": [{
            "event_id": uuid::Uuid::now_v7(), "seq": 1, "name": "ok",
            "created_at": "2026-11-24T10:00:00.000Z", "properties": {}
        }]
    })
}

#[test]
fn hostile_requests_get_a_4xx_with_a_reason_and_memory_stays_bounded() {
    let kinesis = Kinesalite::start().unwrap();
    let stream = unique_stream("hostile");
    kinesis.create_stream(&stream, 1).unwrap();
    let collector = Collector::start(&CollectorOptions::new(&kinesis.endpoint, &stream)).unwrap();
    let client = Client::new();
    let rss_before = rss_kib(collector.pid());

    let zstd = |b: &[u8]| zstd::bulk::compress(b, 19).unwrap();
    let bomb = zstd(&vec![b'['; 512 * 1024 * 1024]);
    assert!(
        bomb.len() < 1024 * 1024,
        "the bomb fits under the body limit: {}",
        bomb.len()
    );
    let mut valid = valid_batch();
    let mut missing = valid.clone();
    missing.as_object_mut().unwrap().remove("install_id");
    let mut unknown = valid.clone();
    unknown["surprise"] = json!(1);
    let mut unknown_event_key = valid.clone();
    unknown_event_key["events"][0]["extra"] = json!(true);
    let deep = format!(
        "{{\"batch_id\":\"{}\",\"x\":{}{}}}",
        uuid::Uuid::now_v7(),
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let mut invalid_utf8 = serde_json::to_vec(&valid).unwrap();
    let at = invalid_utf8
        .windows(4)
        .position(|w| w == b"\"ok\"")
        .unwrap();
    invalid_utf8[at + 1] = 0xff;
    let oversize: Vec<u8> = (0..3 * 1024 * 1024)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    // Matching clock ids with an absurd monotonic age (1e17 ms): once a panic and a 503 that
    // the SDK retried forever; an invalid event (refused whole without a dead-letter stream).
    let mut absurd_uptime = valid.clone();
    absurd_uptime["clock_id"] = json!("clock-1");
    absurd_uptime["sent_uptime_ms"] = json!(100_000_000_000_000_000u64);
    absurd_uptime["events"][0]["clock_id"] = json!("clock-1");
    absurd_uptime["events"][0]["uptime_ms"] = json!(0);
    valid["events"][0]["seq"] = json!(0);
    let bad_seq = valid.clone();

    // (what, Content-Encoding, body, expected status, expected error code)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "zstd decompression bomb (512 MiB of '[')",
            Some("zstd"),
            bomb,
            413,
            "payload_too_large",
        ),
        ("3 MiB body", None, oversize, 413, "payload_too_large"),
        (
            "10 000 levels of nesting",
            None,
            deep.into_bytes(),
            400,
            "json_too_deep",
        ),
        (
            "invalid UTF-8 in a string",
            None,
            invalid_utf8,
            400,
            "malformed_json",
        ),
        (
            "Content-Encoding: br",
            Some("br"),
            b"{}".to_vec(),
            415,
            "unsupported_encoding",
        ),
        (
            "gzip header, garbage inside",
            Some("gzip"),
            vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3],
            400,
            "malformed_encoding",
        ),
        (
            "missing install_id",
            None,
            serde_json::to_vec(&missing).unwrap(),
            400,
            "malformed_json",
        ),
        (
            "unknown top-level key",
            None,
            serde_json::to_vec(&unknown).unwrap(),
            400,
            "malformed_json",
        ),
        (
            "unknown event key",
            None,
            serde_json::to_vec(&unknown_event_key).unwrap(),
            400,
            "malformed_json",
        ),
        (
            "seq 0 without a dead-letter stream",
            None,
            serde_json::to_vec(&bad_seq).unwrap(),
            400,
            "invalid_event",
        ),
        (
            "sent_uptime_ms 1e17 with a matching clock_id",
            None,
            serde_json::to_vec(&absurd_uptime).unwrap(),
            400,
            "invalid_event",
        ),
        ("empty body", None, Vec::new(), 400, "malformed_json"),
        (
            "not JSON at all",
            None,
            b"\x00\x01\x02 binary".to_vec(),
            400,
            "malformed_json",
        ),
    ];
    for (what, encoding, body, status, code) in cases {
        let mut request = client
            .post(format!("{}/v1/batch", collector.url))
            .bearer_auth(WRITE_KEY)
            .header("content-type", "application/json")
            .body(body);
        if let Some(e) = encoding {
            request = request.header("content-encoding", e);
        }
        let response = request.send().unwrap();
        let got = response.status().as_u16();
        let text = response.text().unwrap();
        assert!(got < 500, "{what}: a 5xx: {got} {text}");
        assert_eq!(got, status, "{what}: {text}");
        let reason: tern_protocol::ErrorBody =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: {text}"));
        assert_eq!(reason.error, code, "{what}: {}", reason.message);
        assert!(!reason.message.is_empty(), "{what}: a reason is given");
    }
    let rss_after = rss_kib(collector.pid());
    eprintln!("collector RSS: {rss_before} KiB before, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory stayed bounded: {rss_before} → {rss_after} KiB"
    );

    // Still serving.
    let response = client
        .post(format!("{}/v1/batch", collector.url))
        .bearer_auth(WRITE_KEY)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&valid_batch()).unwrap())
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        collector
            .metric("tern_collector_requests_total{status=\"500\"}")
            .unwrap(),
        0.0
    );
}
