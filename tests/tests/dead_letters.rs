//! Dead letters against the real Kinesis server: an invalid event whose dead letter would be
//! over the 1 MiB record limit is cut to fit, so its upload is acknowledged instead of failing
//! with 503 (and being resent, with its valid events written again, forever).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::{Duration, Instant};

use serde_json::json;
use tern_collector::dead_letter::TRUNCATED_NOTE;
use tern_collector::sink::kinesis::limits::MAX_RECORD_BYTES;
use tern_protocol::{BatchAck, DeadLetterRecord};
use tern_tests::process::CollectorOptions;
use tern_tests::{unique_stream, Collector, Kinesalite, WRITE_KEY};

#[test]
fn an_event_too_large_for_a_dead_letter_is_cut_to_fit_and_its_batch_is_acknowledged(
) -> anyhow::Result<()> {
    let kinesis = Kinesalite::start()?;
    let stream = unique_stream("dl-main");
    let dead_letters = unique_stream("dl-big");
    kinesis.create_stream(&stream, 1)?;
    kinesis.create_stream(&dead_letters, 1)?;
    let mut options = CollectorOptions::new(&kinesis.endpoint, &stream);
    options.dead_letter_stream = Some(dead_letters.clone());
    let collector = Collector::start(&options)?;

    let now = chrono::Utc::now();
    let event = |seq: u64, name: String| {
        json!({
            "event_id": uuid::Uuid::now_v7(), "seq": seq, "name": name,
            "created_at": now, "properties": { "k": "v" }
        })
    };
    let two_mib = 2 * 1024 * 1024;
    let mut huge_user = event(3, "login".into());
    huge_user["user_id"] = json!("u".repeat(1024 * 1024 + 1));
    let events = vec![
        event(1, "checkout".into()),
        event(2, "n".repeat(two_mib)),
        huge_user,
        event(4, "search".into()),
        event(5, "screen_view".into()),
    ];
    let id = |i: usize| events[i]["event_id"].as_str().unwrap().to_owned();
    let (valid_ids, invalid_ids) = ([id(0), id(3), id(4)], [id(1), id(2)]);
    let batch = json!({
        "batch_id": uuid::Uuid::now_v7(),
        "install_id": "install-big-dead-letter",
        "sent_at": now,
        "sdk": { "name": "test", "version": "0" },
        "context": {},
        "events": events,
    });
    // Over 3 MiB of JSON: under the 5 MiB decompressed limit, and a few KiB compressed.
    let body = zstd::bulk::compress(&serde_json::to_vec(&batch)?, 3)?;
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/v1/batch", collector.url))
        .bearer_auth(WRITE_KEY)
        .header("content-type", "application/json")
        .header("content-encoding", "zstd")
        .body(body)
        .send()?;
    let status = response.status().as_u16();
    let text = response.text()?;
    assert_eq!(status, 200, "{text}");
    let ack: BatchAck = serde_json::from_str(&text)?;
    assert_eq!((ack.accepted, ack.dead_lettered), (3, 2));

    let valid = kinesis
        .reader(&stream)?
        .read_until(Duration::from_secs(10), |r| r.len() >= 3)?;
    let written: Vec<String> = valid
        .iter()
        .map(|r| r.record.event_id.to_string())
        .collect();
    assert_eq!(written, valid_ids);

    let mut reader = kinesis.reader(&dead_letters)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut raw = Vec::new();
    while raw.len() < 2 && Instant::now() < deadline {
        raw.extend(reader.read_raw()?);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        raw.len(),
        2,
        "both dead letters are in the dead-letter stream"
    );
    let mut letters = Vec::new();
    for r in &raw {
        assert!(r.data.len() + r.partition_key.len() <= MAX_RECORD_BYTES);
        letters.push(serde_json::from_slice::<DeadLetterRecord>(&r.data)?);
    }
    let found: Vec<(&str, &str)> = letters
        .iter()
        .map(|l| (l.event["event_id"].as_str().unwrap(), l.reason.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (invalid_ids[0].as_str(), "invalid_name"),
            (invalid_ids[1].as_str(), "invalid_id"),
        ]
    );
    assert_eq!(letters[0].event[TRUNCATED_NOTE]["name"], two_mib);
    assert_eq!(letters[1].event[TRUNCATED_NOTE]["user_id"], 1024 * 1024 + 1);
    assert_eq!(letters[1].event["seq"], 3);

    let metric = |name: &str| collector.metric(name);
    assert_eq!(metric("tern_collector_events_delivered_total")?, 3.0);
    assert_eq!(metric("tern_collector_events_dead_lettered_total")?, 2.0);
    assert_eq!(
        metric("tern_collector_requests_total{status=\"503\"}")?,
        0.0
    );
    Ok(())
}

/// Partial accept: a batch of ten events with one invalid is answered 200, with or without a
/// dead-letter stream. The nine valid events are in the stream (read back from the Kinesis
/// server), the invalid one is listed in `refused` with its `event_id`, `seq` and reason, and
/// is in the dead-letter stream when there is one. Every event is counted once.
#[test]
fn one_invalid_event_among_ten_is_refused_alone_with_and_without_a_dead_letter_stream(
) -> anyhow::Result<()> {
    let kinesis = Kinesalite::start()?;
    for with_dead_letters in [false, true] {
        let stream = unique_stream("partial");
        kinesis.create_stream(&stream, 1)?;
        let mut options = CollectorOptions::new(&kinesis.endpoint, &stream);
        let dead_letters = unique_stream("partial-dl");
        if with_dead_letters {
            kinesis.create_stream(&dead_letters, 1)?;
            options.dead_letter_stream = Some(dead_letters.clone());
        }
        let collector = Collector::start(&options)?;
        let now = chrono::Utc::now();
        let events: Vec<serde_json::Value> = (1..=10u64)
            .map(|seq| {
                json!({
                    "event_id": uuid::Uuid::now_v7(), "seq": seq,
                    // seq 6 has a name the wire format refuses.
                    "name": if seq == 6 { "not a valid name!" } else { "checkout" },
                    "created_at": now, "properties": { "k": "v" }
                })
            })
            .collect();
        let invalid_id: uuid::Uuid = serde_json::from_value(events[5]["event_id"].clone())?;
        let batch = json!({
            "batch_id": uuid::Uuid::now_v7(),
            "install_id": "install-partial",
            "sent_at": now,
            "sdk": { "name": "test", "version": "0" },
            "context": {},
            "events": events,
        });
        let response = reqwest::blocking::Client::new()
            .post(format!("{}/v1/batch", collector.url))
            .bearer_auth(WRITE_KEY)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&batch)?)
            .send()?;
        let what = if with_dead_letters { "with" } else { "without" };
        assert_eq!(
            response.status().as_u16(),
            200,
            "{what} a dead-letter stream"
        );
        let ack: BatchAck = serde_json::from_str(&response.text()?)?;
        assert_eq!(ack.accepted, 9, "{what}");
        assert_eq!(ack.dead_lettered, u32::from(with_dead_letters), "{what}");
        assert_eq!(ack.refused.len(), 1, "{what}: {:?}", ack.refused);
        let refused = &ack.refused[0];
        assert_eq!(
            (refused.event_id, refused.seq, refused.reason.as_str()),
            (invalid_id, 6, "invalid_name"),
            "{what}"
        );
        assert!(!refused.message.is_empty());

        let written = kinesis
            .reader(&stream)?
            .read_until(Duration::from_secs(10), |r| r.len() >= 9)?;
        let mut seqs: Vec<u64> = written.iter().map(|r| r.record.seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 7, 8, 9, 10], "{what}");

        let refused_series = "tern_collector_events_refused_total{reason=\"invalid_name\"}";
        if with_dead_letters {
            let mut reader = kinesis.reader(&dead_letters)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut letters: Vec<DeadLetterRecord> = Vec::new();
            while letters.is_empty() && Instant::now() < deadline {
                for raw in reader.read_raw()? {
                    letters.push(serde_json::from_slice(&raw.data)?);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            assert_eq!(letters.len(), 1);
            assert_eq!(letters[0].reason, "invalid_name");
            assert_eq!(letters[0].event["seq"], 6);
            assert_eq!(collector.metric(refused_series)?, 0.0);
            assert_eq!(
                collector.metric("tern_collector_events_dead_lettered_total")?,
                1.0
            );
        } else {
            assert_eq!(collector.metric(refused_series)?, 1.0);
            assert_eq!(
                collector.metric("tern_collector_events_dead_lettered_total")?,
                0.0
            );
        }
        assert_eq!(
            collector.metric("tern_collector_events_delivered_total")?,
            9.0
        );
        assert_eq!(
            collector.metric("tern_collector_events_received_total")?,
            10.0
        );
    }
    Ok(())
}
