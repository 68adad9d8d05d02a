//! `tern-lake compact` and `tern-lake snapshot` against kinesalite and real `tern-lake`
//! processes: compaction beside a running ingest loses and duplicates nothing and leaves fewer
//! files per partition; a named snapshot reads the same rows, byte for byte, after more ingest,
//! compaction, VACUUM and log cleanup, and Python `deltalake` computes the same checksum.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tern_tests::lake::{
    compact, compact_table, ingest_until_caught_up, put_records, python_tool, snapshot, sql,
    sql_number, sql_with, start_ingest, stream_record,
};
use tern_tests::{unique_stream, workspace_root, Kinesalite};

/// Every id sent is in `events` once, and nothing else is.
fn assert_exactly_once(lake: &Path, sent: &HashSet<String>) {
    let found: Vec<String> = sql(lake, "SELECT event_id FROM events", None)
        .unwrap()
        .into_iter()
        .map(|r| r["event_id"].as_str().unwrap().to_owned())
        .collect();
    let distinct: HashSet<String> = found.iter().cloned().collect();
    let missing = sent.difference(&distinct).count();
    assert_eq!(missing, 0, "{missing} events sent are not in the table");
    assert_eq!(
        distinct.len(),
        sent.len(),
        "rows that were never sent are in the table"
    );
    assert_eq!(
        found.len(),
        distinct.len(),
        "count(*) = count(DISTINCT event_id)"
    );
    let counts = sql(
        lake,
        "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events",
        None,
    )
    .unwrap();
    assert_eq!(counts[0]["n"], counts[0]["d"], "{counts:?}");
}

fn files_per_day(lake: &Path) -> BTreeMap<String, u64> {
    let table = python_tool("read_table.py", lake, &[]).unwrap();
    serde_json::from_value(table["files_per_day"].clone()).unwrap()
}

fn day_key(t: DateTime<Utc>) -> String {
    format!("event_date={}", t.date_naive())
}

/// Ingest commits every 100 ms while records keep arriving, today's and late ones (3 and 9
/// days old); `tern-lake compact` (VACUUM retention 0) runs four times meanwhile. Every event
/// is then in `events` once, old days were compacted too, and each day ends in one file.
#[test]
fn compaction_during_ingest_loses_nothing_and_files_per_partition_drop() {
    let kinesis = Kinesalite::start().unwrap();
    let stream = unique_stream("lake-compact");
    kinesis.create_stream(&stream, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let now = Utc::now();
    let days = [
        now,
        now - chrono::Duration::days(3),
        now - chrono::Duration::days(9),
    ];
    let mut sent = HashSet::new();
    let first: Vec<_> = (1..=30)
        .map(|seq| stream_record("install-0", seq, days[seq as usize % 3]))
        .collect();
    kinesis
        .block_on(put_records(kinesis.client(), &stream, &first))
        .unwrap();
    sent.extend(first.iter().map(|r| r.event_id.to_string()));
    ingest_until_caught_up(&kinesis.endpoint, &stream, &lake, &[]).unwrap();

    let mut ingest = start_ingest(
        &kinesis.endpoint,
        &stream,
        &lake,
        &["--commit-interval-ms", "100"],
    )
    .unwrap();
    let stop = AtomicBool::new(false);
    let mut rounds: Vec<Value> = Vec::new();
    std::thread::scope(|scope| {
        let producer = scope.spawn(|| {
            let mut sent = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let records: Vec<_> = (0..10)
                    .map(|i| {
                        let seq = n * 10 + i + 1;
                        stream_record(
                            &format!("install-{}", n % 5 + 1),
                            seq,
                            days[(seq % 3) as usize],
                        )
                    })
                    .collect();
                kinesis
                    .block_on(put_records(kinesis.client(), &stream, &records))
                    .unwrap();
                sent.extend(records.iter().map(|r| r.event_id.to_string()));
                n += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            sent
        });
        std::thread::sleep(Duration::from_millis(1500));
        for _ in 0..4 {
            let summary = compact(&lake, &["--retention-hours", "0"]).unwrap();
            eprintln!("compact during ingest: {summary}");
            rounds.push(compact_table(&summary, "events").unwrap().clone());
            std::thread::sleep(Duration::from_millis(700));
        }
        stop.store(true, Ordering::SeqCst);
        sent.extend(producer.join().unwrap());
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        ingest.terminate(Duration::from_secs(30)),
        Some(0),
        "SIGTERM: commit and exit 0"
    );
    // Whatever the last commit before SIGTERM did not hold.
    ingest_until_caught_up(&kinesis.endpoint, &stream, &lake, &[]).unwrap();
    assert!(sent.len() > 300, "only {} events sent", sent.len());
    assert_exactly_once(&lake, &sent);

    // Compaction ran while ingest committed, on today and on the late days.
    let compacted: HashSet<String> = rounds
        .iter()
        .flat_map(|r| r["compacted_partitions"].as_array().unwrap().clone())
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    for day in days {
        assert!(
            compacted.contains(&day_key(day)),
            "{} never compacted during ingest: {compacted:?}",
            day_key(day)
        );
    }
    for round in &rounds {
        let (removed, written) = (
            round["files_compacted"].as_u64().unwrap(),
            round["files_written"].as_u64().unwrap(),
        );
        assert!(written < removed || removed == 0, "{round}");
    }
    let rebased: u64 = rounds.iter().map(|r| r["rebased"].as_u64().unwrap()).sum();
    eprintln!("compaction commits rebased onto ingest commits: {rebased}");

    // With ingest stopped: every day has several files, one after compaction.
    let before = files_per_day(&lake);
    assert_eq!(before.len(), 3, "{before:?}");
    assert!(
        before.values().any(|&n| n > 1),
        "ingest kept committing, so some day has several files again: {before:?}"
    );
    let summary = compact(&lake, &["--retention-hours", "0"]).unwrap();
    let events = compact_table(&summary, "events").unwrap();
    let after = files_per_day(&lake);
    assert_eq!(
        after.values().copied().collect::<Vec<_>>(),
        vec![1, 1, 1],
        "one file per day after compaction: {after:?} (before {before:?})"
    );
    assert_eq!(events["max_files_per_partition_after"], 1, "{events}");
    assert_exactly_once(&lake, &sent);
    // An independent reader sees the same rows.
    let python = python_tool("read_table.py", &lake, &[]).unwrap();
    assert_eq!(python["rows"].as_u64().unwrap() as usize, sent.len());
    assert_eq!(
        python["distinct_ids"].as_u64().unwrap() as usize,
        sent.len()
    );
}

fn python_set_properties(lake: &Path, properties: &[(&str, &str)]) {
    let properties: serde_json::Map<String, Value> = properties
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
        .collect();
    let script = "import json, sys\nfrom deltalake import DeltaTable\n\
                  DeltaTable(sys.argv[1]).alter.set_table_properties(json.loads(sys.argv[2]))\n\
                  import os; os._exit(0)\n";
    let output = Command::new(workspace_root().join(".venv/bin/python"))
        .args(["-c", script])
        .arg(lake.join("events"))
        .arg(Value::Object(properties).to_string())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn log_versions(lake: &Path) -> Vec<u64> {
    let mut versions: Vec<u64> = std::fs::read_dir(lake.join("events/_delta_log"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json")?.parse().ok()
        })
        .collect();
    versions.sort_unstable();
    versions
}

/// A snapshot taken, then more ingest, compaction, VACUUM with retention 0 and log cleanup
/// past a newer checkpoint: `sql --snapshot` returns the same full rows, `snapshot verify`
/// agrees, and Python `deltalake` at the snapshot's version computes the same checksum.
#[test]
fn a_snapshot_reads_the_same_rows_after_ingest_compaction_and_vacuum() {
    let kinesis = Kinesalite::start().unwrap();
    let stream = unique_stream("lake-snapshot");
    kinesis.create_stream(&stream, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let now = Utc::now();
    let late = now - chrono::Duration::days(4);
    let mut seq = 0u64;
    let mut round = |kinesis: &Kinesalite, count: u64| {
        let records: Vec<_> = (0..count)
            .map(|i| {
                seq += 1;
                stream_record("install-1", seq, if i % 4 == 0 { late } else { now })
            })
            .collect();
        kinesis
            .block_on(put_records(kinesis.client(), &stream, &records))
            .unwrap();
        let summary = ingest_until_caught_up(&kinesis.endpoint, &stream, &lake, &[]).unwrap();
        assert_eq!(summary["rows_written"], count, "{summary}");
    };
    round(&kinesis, 20);
    // A checkpoint every 5 versions, so that one falls before the snapshot and others after.
    python_set_properties(&lake, &[("delta.checkpointInterval", "5")]);
    for _ in 0..4 {
        round(&kinesis, 10);
    }

    let created: Value =
        serde_json::from_str(&snapshot(&lake, "create", Some("train"), &[]).unwrap()).unwrap();
    let version = created["version"].as_i64().unwrap();
    let rows = created["rows"].as_u64().unwrap();
    assert_eq!(rows, 60, "{created}");
    assert!(
        version >= 5,
        "a checkpoint at or before the snapshot: {created}"
    );
    let query = "SELECT * FROM events ORDER BY event_id";
    let at_create = sql_with(&lake, query, &["--snapshot", "train"]).unwrap();
    assert_eq!(at_create.len() as u64, rows);
    let python = python_tool(
        "snapshot_checksum.py",
        &lake,
        &["--version", &version.to_string()],
    )
    .unwrap();
    assert_eq!(python["rows"].as_u64(), Some(rows), "{python}");
    assert_eq!(
        python["checksum"], created["checksum"],
        "{python} vs {created}"
    );
    let again = snapshot(&lake, "create", Some("train"), &[]).unwrap_err();
    assert!(
        again.to_string().contains("already exists"),
        "creating an existing name: {again}"
    );

    // More ingest in the snapshot's days, in several commits (several files to compact that
    // the snapshot does not read), past two more checkpoints.
    for _ in 0..8 {
        round(&kinesis, 10);
    }
    // Expired log entries from now on; ingest must not clean them (the snapshot turned that
    // off), compact only up to the snapshot.
    python_set_properties(
        &lake,
        &[("delta.logRetentionDuration", "interval 1 second")],
    );
    round(&kinesis, 10);
    std::thread::sleep(Duration::from_millis(1500));
    let before_compact = log_versions(&lake);
    assert_eq!(
        before_compact[0], 0,
        "ingest cleaned the log: {before_compact:?}"
    );

    let summary = compact(&lake, &["--retention-hours", "0"]).unwrap();
    eprintln!("compact: {summary}");
    let events = compact_table(&summary, "events").unwrap();
    assert_eq!(
        events["kept_versions"],
        serde_json::json!([version]),
        "{events}"
    );
    assert!(
        events["partitions_compacted"].as_u64().unwrap() >= 2,
        "{events}"
    );
    assert!(
        events["vacuum_files_removed"].as_u64().unwrap() > 0,
        "VACUUM deleted the files compacted after the snapshot: {events}"
    );
    assert!(
        events["log_files_removed"].as_u64().unwrap() > 0,
        "log entries before the snapshot's checkpoint were cleaned: {events}"
    );
    let logs = log_versions(&lake);
    assert!(
        logs[0] > 0 && logs[0] <= version as u64,
        "log kept from a checkpoint at or before {version}: {logs:?}"
    );
    assert!(
        sql(&lake, "SELECT count(*) FROM events", Some(0)).is_err(),
        "version 0 is gone with its log entry"
    );

    // The snapshot: the same rows, the same checksum, from Tern and from Python.
    let after = sql_with(&lake, query, &["--snapshot", "train"]).unwrap();
    assert_eq!(after.len(), at_create.len());
    assert!(after == at_create, "the snapshot's rows changed");
    let verified: Value =
        serde_json::from_str(&snapshot(&lake, "verify", Some("train"), &[]).unwrap()).unwrap();
    assert_eq!(verified["verified"], true, "{verified}");
    assert_eq!(verified["checksum"], created["checksum"]);
    let python = python_tool(
        "snapshot_checksum.py",
        &lake,
        &["--version", &version.to_string()],
    )
    .unwrap();
    assert_eq!(python["checksum"], created["checksum"], "{python}");
    // The latest version has everything.
    assert_eq!(
        sql_number(&lake, "SELECT count(*) FROM events", None).unwrap(),
        60 + 90
    );
    // `snapshot list` shows it; --snapshot and --as-of together are refused.
    let listed = snapshot(&lake, "list", None, &["--format", "json"]).unwrap();
    let listed: Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(listed["name"], "train");
    assert_eq!(listed["version"], version);
    assert_eq!(listed["rows"], rows);
    assert_eq!(listed["checksum"], created["checksum"]);
    assert!(sql_with(&lake, query, &["--snapshot", "train", "--as-of", "1"]).is_err());
}
