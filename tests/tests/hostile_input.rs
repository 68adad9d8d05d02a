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
    // the SDK retried forever; an invalid event, refused alone (partial accept).
    let mut absurd_uptime = valid.clone();
    absurd_uptime["clock_id"] = json!("clock-1");
    absurd_uptime["sent_uptime_ms"] = json!(100_000_000_000_000_000u64);
    absurd_uptime["events"][0]["clock_id"] = json!("clock-1");
    absurd_uptime["events"][0]["uptime_ms"] = json!(0);
    // A context is copied into every record: 500 events × a 1 MB context would be 500 MB of
    // records from a few KB of zstd. Refused at parse time.
    let mut big_context = valid.clone();
    big_context["context"]["device"] = json!({ "model": "m".repeat(1_000_000) });
    big_context["events"] = json!((1..=500)
        .map(|seq| json!({
            "event_id": uuid::Uuid::now_v7(), "seq": seq, "name": "ok",
            "created_at": "2026-11-24T10:00:00.000Z", "properties": {}
        }))
        .collect::<Vec<_>>());
    let big_context = zstd(&serde_json::to_vec(&big_context).unwrap());
    assert!(big_context.len() < 200 * 1024, "{}", big_context.len());
    let mut long_clock_id = valid_batch();
    long_clock_id["clock_id"] = json!("c".repeat(100_000));
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
            "a 1 MB context copied into 500 records",
            Some("zstd"),
            big_context,
            400,
            "invalid_batch",
        ),
        (
            "a 100 KB clock_id",
            None,
            serde_json::to_vec(&long_clock_id).unwrap(),
            400,
            "invalid_batch",
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
    let mut refused = std::collections::BTreeMap::new();
    for (_, _, _, _, code) in &cases {
        *refused.entry(*code).or_insert(0.0) += 1.0;
    }
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
    // Each refusal is counted by its reason, also those before any batch decoded.
    for (code, n) in refused {
        let series = format!("tern_collector_requests_refused_total{{reason=\"{code}\"}}");
        assert_eq!(collector.metric(&series).unwrap(), n, "{series}");
    }
    // Invalid events (no dead-letter stream) are refused alone: 200, listed in the answer.
    for (what, body, reason) in [
        ("seq 0", &bad_seq, "invalid_seq"),
        ("sent_uptime_ms 1e17", &absurd_uptime, "invalid_timestamp"),
    ] {
        // Each its own batch: these were cut from one batch, and a batch_id acknowledged with
        // other events is a conflict (409).
        let mut body = body.clone();
        body["batch_id"] = json!(uuid::Uuid::now_v7());
        let response = client
            .post(format!("{}/v1/batch", collector.url))
            .bearer_auth(WRITE_KEY)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{what}");
        let ack: tern_protocol::BatchAck = serde_json::from_str(&response.text().unwrap()).unwrap();
        assert_eq!((ack.accepted, ack.refused.len()), (0, 1), "{what}");
        assert_eq!(ack.refused[0].reason, reason, "{what}");
    }
    // Unknown fields are tolerated within v1 (a newer SDK talking to this collector).
    for (what, body) in [
        ("unknown top-level key", &unknown),
        ("unknown event key", &unknown_event_key),
    ] {
        let mut body = body.clone();
        body["batch_id"] = json!(uuid::Uuid::now_v7());
        let body = &body;
        let response = client
            .post(format!("{}/v1/batch", collector.url))
            .bearer_auth(WRITE_KEY)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).unwrap())
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{what}");
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

/// A slow-loris client (headers trickling in a byte at a time) is cut off after the header
/// read timeout, while other clients are served meanwhile.
#[test]
fn a_client_trickling_its_headers_is_dropped_while_others_are_served() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    let kinesis = Kinesalite::start().unwrap();
    let stream = unique_stream("slowloris");
    kinesis.create_stream(&stream, 1).unwrap();
    let mut options = CollectorOptions::new(&kinesis.endpoint, &stream);
    options.extra_args = vec!["--header-read-timeout-ms".into(), "1000".into()];
    let collector = Collector::start(&options).unwrap();
    let addr = collector.url.trim_start_matches("http://").to_owned();

    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    let trickle = std::thread::spawn(move || {
        let headers = b"POST /v1/batch HTTP/1.1\r\nHost: tern\r\nAuthorization: Bearer x\r\n";
        // Bounded only so that a collector without the timeout fails the test instead of
        // hanging it; the server is expected to close long before.
        let give_up = Instant::now() + Duration::from_secs(30);
        for byte in headers.iter().cycle() {
            if Instant::now() > give_up {
                return false;
            }
            if slow.write_all(&[*byte]).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        unreachable!("cycle() never ends")
    });
    // Meanwhile an ordinary client is served.
    let response = Client::new()
        .post(format!("{}/v1/batch", collector.url))
        .bearer_auth(WRITE_KEY)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&valid_batch()).unwrap())
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        trickle.join().unwrap(),
        "the collector closed the trickling connection"
    );

    // A connection that sends nothing at all is closed too (no request ever starts).
    let mut idle = std::net::TcpStream::connect(&addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 64];
    match idle.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0, "closed without an answer"),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "still open: {e}"
        ),
    }
}
