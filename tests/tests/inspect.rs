//! `tern-inspect` reads a live SDK buffer (read-only, while the tracker runs).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tern_sdk::{Policy, Tracker};
use tern_tests::capture::CaptureServer;
use tern_tests::device_config;
use tern_tests::process::binary;

fn inspect(db: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(binary("tern-inspect").unwrap())
        .arg(db)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tern-inspect {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn stats_list_and_export_of_a_live_buffer() {
    let server = CaptureServer::start(503, "retry-after: 3600\r\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("device.db");
    let policy = Policy {
        flush_at_count: 5,
        max_batch_events: 5,
        ..Policy::default()
    };
    let tracker = Tracker::new(device_config(db.clone(), &server.url(), policy, 0)).unwrap();
    for i in 0..12 {
        let name = if i % 3 == 0 {
            "checkout"
        } else {
            "screen_view"
        };
        tracker.track(name, Map::new()).unwrap();
    }
    tracker.flush(Duration::from_secs(5)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.requests().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));

    let stats: Value = serde_json::from_str(&inspect(&db, &["stats", "--json"])).unwrap();
    assert_eq!(stats["pending_events"], 12);
    assert_eq!(stats["install_id"].as_str(), Some(tracker.install_id()));
    assert_eq!(stats["schema_version"], 3);
    let batches = stats["batches"].as_array().unwrap();
    assert_eq!(
        batches.len(),
        1,
        "one batch in flight, the rest waits behind it"
    );
    assert_eq!(batches[0]["events"], 5);
    assert_eq!(batches[0]["attempts"], 1);
    assert!(batches[0]["last_error"].as_str().unwrap().contains("503"));
    assert!(batches[0]["next_attempt"].is_string());

    let text = inspect(&db, &["stats"]);
    assert!(text.contains("pending events   12"), "{text}");
    assert!(text.contains("batches in flight: 1"), "{text}");

    let listed: Vec<Value> =
        serde_json::from_str(&inspect(&db, &["list", "--name", "checkout", "--json"])).unwrap();
    assert_eq!(listed.len(), 4);
    assert!(listed.iter().all(|e| e["name"] == "checkout"));
    let limited: Vec<Value> =
        serde_json::from_str(&inspect(&db, &["list", "--limit", "3", "--json"])).unwrap();
    assert_eq!(
        limited
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );

    let exported = inspect(&db, &["export", "--jsonl"]);
    let lines: Vec<Value> = exported
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12);
    assert!(lines
        .iter()
        .all(|e| e["event_id"].is_string() && e["seq"].is_u64()));

    // The tracker keeps working while QA reads.
    tracker.track("after_inspect", Map::new()).unwrap();
    assert!(tracker.flush(Duration::from_secs(5)).unwrap());
    assert_eq!(tracker.stats().pending.events, 13);
}

#[test]
fn quarantined_events_are_exported_with_their_batch_and_reason() {
    let server = CaptureServer::start(400, "").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("device.db");
    let policy = Policy {
        flush_interval: Duration::from_millis(100),
        ..Policy::default()
    };
    let tracker = Tracker::new(device_config(db.clone(), &server.url(), policy, 0)).unwrap();
    let ids: Vec<String> = (0..3)
        .map(|_| {
            tracker
                .track("refused", Map::new())
                .unwrap()
                .unwrap()
                .to_string()
        })
        .collect();
    tracker.flush(Duration::from_secs(5)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tracker.stats().pending.quarantined_batches == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines: Vec<Value> = inspect(&db, &["export", "--jsonl", "--quarantine"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let exported: Vec<&str> = lines
        .iter()
        .map(|l| l["event"]["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(exported, ids);
    assert!(lines
        .iter()
        .all(|l| l["batch_id"] == lines[0]["batch_id"]
            && l["reason"].as_str().unwrap().contains("400")));
    // The buffer itself holds nothing: quarantined events are not pending.
    assert_eq!(inspect(&db, &["export", "--jsonl"]), "");
    // Their seqs wait as a gap report (this server refuses that batch too).
    let stats: Value = serde_json::from_str(&inspect(&db, &["stats", "--json"])).unwrap();
    let gaps = stats["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{stats}");
    assert_eq!(gaps[0]["reason"], "quarantine");
    assert_eq!(gaps[0]["ranges"], "1-3");
    assert_eq!(gaps[0]["count"], 3);
    let text = inspect(&db, &["stats"]);
    assert!(
        text.contains("pending gap reports (seqs given up on, not yet acknowledged): 1"),
        "{text}"
    );
}
