//! The lake's feeds for data science, against kinesalite: the cleansed stream (once per event,
//! nothing missing after a SIGKILL between commit and publish), the raw archive, and backfill
//! (exactly the affected days rewritten, in one transaction each, beside a running ingest, and
//! a no-op the second time).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use serde_json::Value;
use tern_tests::lake::{
    backfill, batch, ingest_until_caught_up, latest_version, post, put_records, sql, sql_number,
    start_ingest, stream_record,
};
use tern_tests::process::{CollectorOptions, FaultProxyProcess};
use tern_tests::{unique_stream, Collector, Kinesalite};

/// Every record of the cleansed stream `stream` read so far: (event_id, partition key, JSON).
fn clean_records(kinesis: &Kinesalite, stream: &str) -> Vec<(String, String, Value)> {
    let mut reader = kinesis.reader(stream).unwrap();
    reader
        .read_raw()
        .unwrap()
        .into_iter()
        .map(|r| {
            let doc: Value = serde_json::from_slice(&r.data).unwrap();
            (
                doc["event_id"].as_str().unwrap().to_owned(),
                r.partition_key,
                doc,
            )
        })
        .collect()
}

/// Events sent twice (through a plain and an aggregating collector) come out of the cleansed
/// stream once each, valid against the clean record schema and equal to their table rows; then,
/// with the cleansed stream refusing every write, ingest commits rows it cannot publish, is
/// SIGKILLed, and the next start publishes them: none missing, and no row published twice.
#[test]
fn the_cleansed_stream_carries_every_row_once_even_after_a_kill_between_commit_and_publish() {
    let kinesis = Kinesalite::start().unwrap();
    let stream = unique_stream("feeds-raw");
    let clean = unique_stream("feeds-clean");
    kinesis.create_stream(&stream, 2).unwrap();
    kinesis.create_stream(&clean, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let plain = Collector::start(&CollectorOptions::new(&kinesis.endpoint, &stream)).unwrap();
    let mut options = CollectorOptions::new(&kinesis.endpoint, &stream);
    options.extra_args = vec!["--aggregate".into()];
    let aggregating = Collector::start(&options).unwrap();
    let client = reqwest::blocking::Client::new();
    let mut sent = HashSet::new();
    let send = |installs: std::ops::Range<usize>| {
        let mut ids = Vec::new();
        for i in installs {
            let (body, batch_ids) = batch(&format!("install-{i}"), 1, 25, Utc::now());
            for url in [&plain.url, &aggregating.url] {
                assert_eq!(post(&client, url, &body).unwrap(), 200);
            }
            ids.extend(batch_ids.iter().map(ToString::to_string));
        }
        ids
    };

    // 1. Published once each.
    sent.extend(send(0..8));
    let summary = ingest_until_caught_up(
        &kinesis.endpoint,
        &stream,
        &lake,
        &["--clean-stream", &clean],
    )
    .unwrap();
    assert_eq!(summary["clean_published"], 200, "{summary}");
    let first = clean_records(&kinesis, &clean);
    let schema: Value = serde_json::from_str(tern_protocol::CLEAN_RECORD_SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let rows: HashMap<String, serde_json::Map<String, Value>> =
        sql(&lake, "SELECT * FROM events", None)
            .unwrap()
            .into_iter()
            .map(|r| (r["event_id"].as_str().unwrap().to_owned(), r))
            .collect();
    for (id, key, doc) in &first {
        if let Err(e) = validator.validate(doc) {
            panic!("clean record {doc} breaks its schema: {e}");
        }
        assert_eq!(doc["install_id"].as_str(), Some(key.as_str()));
        // The JSON form of the table row: same columns, same values (the JSON columns as objects).
        let row = &rows[id];
        // `tern-lake sql --format json` leaves out nulls; the clean record writes them.
        let present: HashSet<&String> = doc
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, _)| k)
            .collect();
        assert_eq!(present, row.keys().collect(), "{doc}");
        for column in [
            "name",
            "install_id",
            "seq",
            "shard_id",
            "sequence_number",
            "batch_id",
        ] {
            assert_eq!(doc[column], row[column], "{column} of {id}");
        }
        let properties: Value = serde_json::from_str(row["properties"].as_str().unwrap()).unwrap();
        assert_eq!(doc["properties"], properties);
    }
    let ids: Vec<&String> = first.iter().map(|(id, _, _)| id).collect();
    let unique: HashSet<&String> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "a row published twice");
    assert_eq!(unique.len(), sent.len(), "every event once");

    // 2. Committed, not published, killed; published at the next start.
    let proxy = FaultProxyProcess::start(&kinesis.endpoint, &[]).unwrap();
    proxy
        .set(&tern_tests::fault_proxy::Faults {
            error_share: 1.0,
            ..Default::default()
        })
        .unwrap();
    let before = sql_number(&lake, "SELECT count(*) AS n FROM events", None).unwrap();
    // Sent first, so that the first commit holds them all (its publish then waits for good).
    sent.extend(send(8..16));
    let mut ingest = start_ingest(
        &proxy.url,
        &stream,
        &lake,
        &["--clean-stream", &clean, "--commit-interval-ms", "300"],
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while sql_number(&lake, "SELECT count(*) AS n FROM events", None).unwrap() < before + 200 {
        assert!(
            Instant::now() < deadline,
            "ingest did not commit the new rows"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        proxy.stats().unwrap().requests_failed > 0,
        "the publish was never refused: the crash did not come between commit and publish"
    );
    ingest.kill();
    assert_eq!(
        clean_records(&kinesis, &clean).len(),
        first.len(),
        "nothing new reached the cleansed stream while it refused writes"
    );
    let summary = ingest_until_caught_up(
        &kinesis.endpoint,
        &stream,
        &lake,
        &["--clean-stream", &clean],
    )
    .unwrap();
    assert_eq!(summary["clean_republished"], 200, "{summary}");
    let all = clean_records(&kinesis, &clean);
    let ids: Vec<&String> = all.iter().map(|(id, _, _)| id).collect();
    let unique: HashSet<String> = ids.iter().map(|s| (*s).clone()).collect();
    assert_eq!(ids.len(), unique.len(), "a row published twice");
    assert_eq!(unique, sent, "the cleansed stream holds every event");
    // Nothing new: a restart publishes nothing again.
    let summary = ingest_until_caught_up(
        &kinesis.endpoint,
        &stream,
        &lake,
        &["--clean-stream", &clean],
    )
    .unwrap();
    assert_eq!(summary["clean_published"], 0, "{summary}");
    // The raw archive holds every Kinesis record read, once.
    let raw = sql_number(&lake, "SELECT count(*) AS n FROM raw", None).unwrap();
    let distinct = sql_number(
        &lake,
        "SELECT count(DISTINCT shard_id || '/' || sequence_number) AS n FROM raw",
        None,
    )
    .unwrap();
    assert_eq!(raw, distinct, "a raw record archived twice");
    let read = kinesis.reader(&stream).unwrap().read_raw().unwrap().len();
    assert_eq!(raw as usize, read, "raw holds every record of the stream");
}

/// The number of each name in `day`.
fn names_on(lake: &Path, day: NaiveDate) -> BTreeMap<String, i64> {
    try_names_on(lake, day).unwrap()
}

fn try_names_on(lake: &Path, day: NaiveDate) -> anyhow::Result<BTreeMap<String, i64>> {
    Ok(sql(
        lake,
        &format!(
            "SELECT name, count(*) AS n FROM events WHERE event_date = DATE '{day}' GROUP BY name"
        ),
        None,
    )?
    .into_iter()
    .map(|r| {
        (
            r["name"].as_str().unwrap().to_owned(),
            r["n"].as_i64().unwrap(),
        )
    })
    .collect())
}

/// The partitions a table version's commit touched (added or removed files in).
fn partitions_touched(lake: &Path, version: i64) -> HashSet<String> {
    let log = std::fs::read_to_string(lake.join(format!("events/_delta_log/{version:020}.json")))
        .unwrap();
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|a| {
            a.get("add")
                .or_else(|| a.get("remove"))
                .and_then(|f| f["path"].as_str())
                .map(|p| p.split('/').next().unwrap().to_owned())
        })
        .collect()
}

/// A cleansing rule (lower-case names) added after three days were ingested: the dry run names
/// the one day it changes, the backfill rewrites exactly that day in one commit while ingest
/// keeps committing new events, a reader never sees the day half old and half new, nothing is
/// lost or doubled, and a second run changes nothing.
#[test]
fn a_backfill_after_a_rule_change_rewrites_exactly_the_affected_days_once() {
    let kinesis = Kinesalite::start().unwrap();
    let stream = unique_stream("feeds-backfill");
    kinesis.create_stream(&stream, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let today = Utc::now();
    let day = |n: i64| today - chrono::Duration::days(n);
    let (mixed_day, plain_day, other_day) = (day(3), day(2), day(1));
    let mut records = Vec::new();
    for (install, at) in [("a", mixed_day), ("b", plain_day), ("c", other_day)] {
        for seq in 1..=40u64 {
            let mut r = stream_record(&format!("install-{install}"), seq, at);
            if install == "a" && seq % 2 == 0 {
                r.name = r.name.to_uppercase();
            }
            records.push(r);
        }
    }
    let mut expected: HashSet<String> = records.iter().map(|r| r.event_id.to_string()).collect();
    kinesis
        .block_on(put_records(kinesis.client(), &stream, &records))
        .unwrap();
    ingest_until_caught_up(&kinesis.endpoint, &stream, &lake, &[]).unwrap();
    let mixed = mixed_day.date_naive();
    let old_names = names_on(&lake, mixed);
    assert!(old_names
        .keys()
        .any(|n| n.chars().any(|c| c.is_ascii_uppercase())));
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, "lowercase_names = true\n").unwrap();
    let rules_arg = rules.to_str().unwrap();
    let (from, to) = (mixed, other_day.date_naive());

    // The dry run names the change and writes nothing.
    let version = latest_version(&lake).unwrap();
    let dry = backfill(
        &lake,
        &stream,
        from,
        to,
        &["--rules", rules_arg, "--dry-run"],
    )
    .unwrap();
    assert_eq!(latest_version(&lake).unwrap(), version, "a dry run wrote");
    let days = dry["events"].as_array().unwrap();
    assert_eq!(days.len(), 3, "{dry}");
    for d in days {
        let changed = d["changed"].as_u64().unwrap();
        let (added, removed) = (d["added"].as_u64().unwrap(), d["removed"].as_u64().unwrap());
        assert_eq!((added, removed), (0, 0), "{d}");
        if d["date"] == mixed.to_string() {
            assert_eq!(changed, 20, "{d}");
        } else {
            assert_eq!(changed, 0, "{d}");
            assert_eq!(d["unchanged"], 40, "{d}");
        }
    }

    // Ingest keeps committing today's events while the backfill runs; a reader watches the day.
    let mut ingest = start_ingest(
        &kinesis.endpoint,
        &stream,
        &lake,
        &["--commit-interval-ms", "200", "--rules", rules_arg],
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let read_errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader = {
        let (stop, seen, lake) = (Arc::clone(&stop), Arc::clone(&seen), lake.clone());
        let errors = Arc::clone(&read_errors);
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Ok(names) = try_names_on(&lake, mixed) else {
                    // Counted, not a failure: an answer is what must never be a mix.
                    errors.fetch_add(1, Ordering::SeqCst);
                    continue;
                };
                let upper: i64 = names
                    .iter()
                    .filter(|(n, _)| n.chars().any(|c| c.is_ascii_uppercase()))
                    .map(|(_, n)| n)
                    .sum();
                let total: i64 = names.values().sum();
                seen.lock().unwrap().push((upper, total));
            }
        })
    };
    let writer = {
        let (stop, endpoint, stream) =
            (Arc::clone(&stop), kinesis.endpoint.clone(), stream.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let client = runtime.block_on(tern_tests::kinesis::client(&endpoint));
            let mut ids = Vec::new();
            let mut seq = 0;
            while !stop.load(Ordering::SeqCst) {
                let records: Vec<_> = (0..10)
                    .map(|_| {
                        seq += 1;
                        stream_record("install-live", seq, Utc::now())
                    })
                    .collect();
                runtime
                    .block_on(put_records(&client, &stream, &records))
                    .unwrap();
                ids.extend(records.iter().map(|r| r.event_id.to_string()));
                std::thread::sleep(Duration::from_millis(100));
            }
            ids
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let report = backfill(&lake, &stream, from, to, &["--rules", rules_arg]).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    reader.join().unwrap();
    expected.extend(writer.join().unwrap());
    assert_eq!(ingest.terminate(Duration::from_secs(30)), Some(0));
    ingest_until_caught_up(&kinesis.endpoint, &stream, &lake, &["--rules", rules_arg]).unwrap();

    let version = report["events_version"].as_i64().expect("a commit");
    assert_eq!(
        partitions_touched(&lake, version),
        HashSet::from([format!("event_date={mixed}")]),
        "the backfill rewrote other days: {report}"
    );
    let new_names = names_on(&lake, mixed);
    assert!(
        new_names.keys().all(|n| *n == n.to_lowercase()),
        "{new_names:?}"
    );
    assert_eq!(new_names.values().sum::<i64>(), 40);
    for (upper, total) in seen.lock().unwrap().iter() {
        assert_eq!(*total, 40, "a reader saw the day with {total} rows");
        assert!(
            *upper == 0 || *upper == 20,
            "a reader saw {upper} old names of 20 beside new ones"
        );
    }
    assert!(!seen.lock().unwrap().is_empty());
    eprintln!(
        "reader: {} answers, {} failed reads",
        seen.lock().unwrap().len(),
        read_errors.load(Ordering::SeqCst)
    );
    let rows = sql_number(&lake, "SELECT count(*) AS n FROM events", None).unwrap();
    let found: HashSet<String> = sql(&lake, "SELECT event_id FROM events", None)
        .unwrap()
        .into_iter()
        .map(|r| r["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        found, expected,
        "every event, from before and during the backfill"
    );
    assert_eq!(rows as usize, expected.len(), "no event twice");

    // The second run changes nothing.
    let version = latest_version(&lake).unwrap();
    let again = backfill(&lake, &stream, from, to, &["--rules", rules_arg]).unwrap();
    assert_eq!(again["events_version"], Value::Null, "{again}");
    assert_eq!(latest_version(&lake).unwrap(), version);
    for d in again["events"].as_array().unwrap() {
        assert_eq!(
            (&d["added"], &d["removed"], &d["changed"]),
            (&Value::from(0), &Value::from(0), &Value::from(0)),
            "{again}"
        );
    }
}
