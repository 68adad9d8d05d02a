//! `tern-lake` reading stream record v2 against kinesalite: the same uploads written once as v1
//! records and once as v2 batch and event records (a resent upload with its duplicates, a batch
//! record whose events arrive after a restart whose checkpoint fell between them, an orphan
//! event and one whose batch record is another install's) give the same `events` rows but for
//! `v` and provenance; the orphan and the mismatch are in `rejected`, every batch record in
//! `batches`; a backfill from `raw` joins the v2 events as ingest did; and SIGKILLs while v2
//! uploads arrive (checkpoints between batch records and their events, crashes between the
//! `batches` and `events` commits) change none of it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Serialize;
use serde_json::{Map, Value};
use tern_protocol::{
    BatchRecord, EventRecordV2, GapRecord, SeqRange, StreamRecord, BATCH_KIND, GAP_KIND,
    RECORD_VERSION, RECORD_VERSION_2,
};
use tern_tests::lake::{backfill, ingest_until_caught_up, sql, start_ingest, stream_record};
use tern_tests::process::CollectorOptions;
use tern_tests::{unique_stream, Collector, Kinesalite};
use uuid::Uuid;

/// One upload: its batch record and its events as v1 records (which carry the batch's fields).
struct Upload {
    batch: BatchRecord,
    events: Vec<StreamRecord>,
}

impl Upload {
    fn new(install: &str, first_seq: u64, count: u64, received_at: DateTime<Utc>) -> Self {
        let batch_id = Uuid::now_v7();
        let mut context = tern_protocol::Context::default();
        context.app.version = Some("3.1.0".into());
        context.os.name = Some("Android".into());
        context.locale = Some("de-CH".into());
        let batch = BatchRecord {
            v: RECORD_VERSION_2,
            kind: BATCH_KIND.into(),
            batch_id,
            app_id: tern_tests::APP_ID.into(),
            install_id: install.into(),
            sent_at: received_at - chrono::Duration::milliseconds(400),
            received_at,
            context,
            sdk: tern_protocol::SdkInfo {
                name: "tern-sdk-kotlin".into(),
                version: "0.1.0".into(),
            },
            collector_id: "c-1".into(),
            events: count,
        };
        let mut upload = Self {
            batch,
            events: Vec::new(),
        };
        for seq in first_seq..first_seq + count {
            let mut event = stream_record(install, seq, received_at - chrono::Duration::seconds(5));
            // Upper case: the backfill's rule below has something to change.
            event.name = format!("View_{seq}");
            upload.events.push(event);
        }
        upload.share_batch();
        upload
    }

    /// The same upload resent: the same batch id and events, received again later by another
    /// collector.
    fn resent(&self, received_at: DateTime<Utc>) -> Self {
        let mut again = Self {
            batch: BatchRecord {
                sent_at: received_at - chrono::Duration::milliseconds(300),
                received_at,
                collector_id: "c-2".into(),
                ..self.batch.clone()
            },
            events: self.events.clone(),
        };
        again.share_batch();
        again
    }

    /// The batch record's fields in every v1 record, as a v1 collector writes them.
    fn share_batch(&mut self) {
        let b = &self.batch;
        for e in &mut self.events {
            e.batch_id = b.batch_id;
            e.app_id.clone_from(&b.app_id);
            e.install_id.clone_from(&b.install_id);
            e.sent_at = b.sent_at;
            e.received_at = b.received_at;
            e.context = b.context.clone();
            e.sdk = b.sdk.clone();
            e.collector_id.clone_from(&b.collector_id);
        }
    }

    /// The upload as v2 event records.
    fn v2_events(&self) -> Vec<EventRecordV2> {
        self.events.iter().map(v2_event).collect()
    }
}

/// The v2 event record of a v1 record.
fn v2_event(r: &StreamRecord) -> EventRecordV2 {
    r.to_v2(1).0
}

fn gap(v: u32, install: &str, received_at: DateTime<Utc>, gap_id: Uuid) -> GapRecord {
    GapRecord {
        v,
        kind: GAP_KIND.into(),
        gap_id,
        app_id: tern_tests::APP_ID.into(),
        install_id: install.into(),
        reason: "cap_count".into(),
        ranges: vec![SeqRange {
            first: 100,
            last: 102,
        }],
        count: 3,
        at: received_at,
        received_at,
        batch_id: Uuid::now_v7(),
        sdk: tern_protocol::SdkInfo {
            name: "tern-sdk-kotlin".into(),
            version: "0.1.0".into(),
        },
        collector_id: "c-1".into(),
    }
}

/// Writes `records` to `stream` in one PutRecords call, each with its install as partition key.
async fn put_with<T: Serialize>(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    records: &[(String, T)],
) {
    if records.is_empty() {
        return;
    }
    let entries = records
        .iter()
        .map(|(key, r)| {
            aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                .data(aws_sdk_kinesis::primitives::Blob::new(
                    serde_json::to_vec(r).unwrap(),
                ))
                .partition_key(key)
                .build()
                .unwrap()
        })
        .collect();
    let out = client
        .put_records()
        .stream_name(stream)
        .set_records(Some(entries))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_record_count(), Some(0));
}

fn put<T: Serialize>(kinesis: &Kinesalite, stream: &str, records: &[(String, T)]) {
    kinesis.block_on(put_with(kinesis.client(), stream, records));
}

/// An upload as a v2 collector writes it: the batch record accepted first, then (after
/// `pause`) the events.
async fn put_v2_with(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    upload: &Upload,
    pause: Duration,
) {
    put_with(
        client,
        stream,
        &[(upload.batch.install_id.clone(), &upload.batch)],
    )
    .await;
    tokio::time::sleep(pause).await;
    let events = upload.v2_events();
    let keyed: Vec<(String, &EventRecordV2)> =
        events.iter().map(|e| (e.install_id.clone(), e)).collect();
    put_with(client, stream, &keyed).await;
}

async fn put_v1_with(client: &aws_sdk_kinesis::Client, stream: &str, upload: &Upload) {
    let keyed: Vec<(String, &StreamRecord)> = upload
        .events
        .iter()
        .map(|e| (e.install_id.clone(), e))
        .collect();
    put_with(client, stream, &keyed).await;
}

fn put_v2(kinesis: &Kinesalite, stream: &str, upload: &Upload) {
    kinesis.block_on(put_v2_with(
        kinesis.client(),
        stream,
        upload,
        Duration::ZERO,
    ));
}

fn put_v2_events(kinesis: &Kinesalite, stream: &str, events: &[EventRecordV2]) {
    let keyed: Vec<(String, &EventRecordV2)> =
        events.iter().map(|e| (e.install_id.clone(), e)).collect();
    put(kinesis, stream, &keyed);
}

fn put_v1(kinesis: &Kinesalite, stream: &str, upload: &Upload) {
    kinesis.block_on(put_v1_with(kinesis.client(), stream, upload));
}

/// The columns of `events` that say where and when a row was read and written, or its version:
/// the only ones v1 and v2 rows may differ in.
const READ_COLUMNS: [&str; 6] = [
    "shard_id",
    "sequence_number",
    "sub_sequence",
    "arrived_at",
    "ingested_at",
    "v",
];

/// Every row of `events` without the read columns, by `event_id`.
fn event_rows(lake: &Path) -> Vec<Map<String, Value>> {
    let mut rows = sql(lake, "SELECT * FROM events ORDER BY event_id", None).unwrap();
    for row in &mut rows {
        for column in READ_COLUMNS {
            row.remove(column);
        }
    }
    rows
}

#[test]
fn a_v2_stream_gives_the_events_rows_of_the_v1_stream_of_the_same_uploads() {
    let kinesis = Kinesalite::start().unwrap();
    let (v1_stream, v2_stream) = (unique_stream("lake-v1"), unique_stream("lake-v2"));
    kinesis.create_stream(&v1_stream, 2).unwrap();
    kinesis.create_stream(&v2_stream, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (v1_lake, v2_lake) = (dir.path().join("v1"), dir.path().join("v2"));

    let now = Utc::now();
    let first = Upload::new("install-1", 1, 5, now);
    let resent = first.resent(now + chrono::Duration::seconds(30));
    let other = Upload::new("install-2", 1, 3, now);
    let restarted = Upload::new("install-3", 1, 4, now);
    let gap_id = Uuid::now_v7();

    // Phase 1: two uploads, one resent, a gap report, and the batch record of an upload whose
    // events come only after ingest stopped (its checkpoint falls between them).
    for upload in [&first, &resent, &other] {
        put_v1(&kinesis, &v1_stream, upload);
        put_v2(&kinesis, &v2_stream, upload);
    }
    put(
        &kinesis,
        &v1_stream,
        &[(
            "install-1".into(),
            gap(RECORD_VERSION, "install-1", now, gap_id),
        )],
    );
    put(
        &kinesis,
        &v2_stream,
        &[(
            "install-1".into(),
            gap(RECORD_VERSION_2, "install-1", now, gap_id),
        )],
    );
    put(
        &kinesis,
        &v2_stream,
        &[(restarted.batch.install_id.clone(), &restarted.batch)],
    );
    let v1_summary = ingest_until_caught_up(&kinesis.endpoint, &v1_stream, &v1_lake, &[]).unwrap();
    let v2_summary = ingest_until_caught_up(&kinesis.endpoint, &v2_stream, &v2_lake, &[]).unwrap();
    for summary in [&v1_summary, &v2_summary] {
        assert_eq!(summary["rows_written"], 8, "{summary}");
        assert_eq!(summary["duplicates_removed"], 5, "{summary}");
        assert_eq!(summary["rejected"], 0, "{summary}");
        assert_eq!(summary["gaps"], 1, "{summary}");
    }
    // 4 batch records, 13 events, 1 gap: each document leaves through one outcome.
    assert_eq!(v2_summary["documents_read"], 18, "{v2_summary}");
    assert_eq!(v2_summary["batches"], 4, "{v2_summary}");

    // Phase 2, a new ingest run (nothing in memory): the events of the upload whose batch
    // record was read in phase 1, an orphan event (no batch record of its batch_id is ever
    // written) and an event naming another install's batch record.
    put_v1(&kinesis, &v1_stream, &restarted);
    put_v2_events(&kinesis, &v2_stream, &restarted.v2_events());
    let mut orphan = v2_event(&stream_record("install-4", 1, now));
    orphan.batch_id = Uuid::now_v7();
    let mut mismatch = v2_event(&stream_record("install-5", 1, now));
    mismatch.batch_id = other.batch.batch_id;
    put_v2_events(&kinesis, &v2_stream, &[orphan.clone(), mismatch.clone()]);
    let v1_summary = ingest_until_caught_up(&kinesis.endpoint, &v1_stream, &v1_lake, &[]).unwrap();
    let v2_summary = ingest_until_caught_up(&kinesis.endpoint, &v2_stream, &v2_lake, &[]).unwrap();
    assert_eq!(v1_summary["rows_written"], 4, "{v1_summary}");
    assert_eq!(v2_summary["rows_written"], 4, "{v2_summary}");
    assert_eq!(v2_summary["rejected"], 2, "{v2_summary}");
    assert_eq!(v2_summary["documents_read"], 6, "{v2_summary}");

    // The same rows, value for value, but for v and where they were read.
    let (v1_rows, v2_rows) = (event_rows(&v1_lake), event_rows(&v2_lake));
    assert_eq!(v1_rows.len(), 12);
    assert_eq!(v1_rows, v2_rows);
    // The first copy of a resent upload's events wins in both: the first upload's fields.
    let kept = sql(
        &v2_lake,
        &format!(
            "SELECT DISTINCT collector_id, v FROM events WHERE batch_id = '{}'",
            first.batch.batch_id
        ),
        None,
    )
    .unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["collector_id"], "c-1");
    assert_eq!(kept[0]["v"], 2);
    let versions = sql(&v1_lake, "SELECT DISTINCT v FROM events", None).unwrap();
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(versions[0]["v"], 1);

    // The orphan and the mismatch are rejected with their reasons; v1 rejected nothing.
    let rejected = sql(
        &v2_lake,
        "SELECT reason, message, data FROM rejected ORDER BY reason",
        None,
    )
    .unwrap();
    let reasons: Vec<&str> = rejected
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["invalid_value", "no_batch"], "{rejected:?}");
    assert!(
        rejected[0]["message"]
            .as_str()
            .unwrap()
            .contains("install_id"),
        "{rejected:?}"
    );
    assert!(
        rejected[1]["message"]
            .as_str()
            .unwrap()
            .contains(&orphan.batch_id.to_string()),
        "{rejected:?}"
    );
    assert!(sql(&v1_lake, "SELECT * FROM rejected", None)
        .unwrap()
        .is_empty());

    // Every batch record read is in `batches`, the resend's too.
    let batches = sql(
        &v2_lake,
        "SELECT batch_id, install_id, collector_id, events, app_version, locale, received_at \
         FROM batches ORDER BY batch_id, received_at",
        None,
    )
    .unwrap();
    assert_eq!(batches.len(), 4, "{batches:?}");
    let of_first: Vec<&Map<String, Value>> = batches
        .iter()
        .filter(|b| b["batch_id"] == first.batch.batch_id.to_string())
        .collect();
    assert_eq!(of_first.len(), 2, "{batches:?}");
    assert_eq!(of_first[0]["collector_id"], "c-1");
    assert_eq!(of_first[1]["collector_id"], "c-2");
    assert!(batches
        .iter()
        .all(|b| b["app_version"] == "3.1.0" && b["locale"] == "de-CH"));
    // The gap report is read in both versions.
    for lake in [&v1_lake, &v2_lake] {
        let gaps = sql(lake, "SELECT gap_id FROM gaps", None).unwrap();
        assert_eq!(gaps.len(), 1, "{gaps:?}");
    }

    // Backfill from `raw`: without a rule change nothing changes; with one, every v2 event is
    // rebuilt (joined again) and renamed, none removed, and the rows still match v1's.
    let day = restarted.events[0].event_time.date_naive();
    let dry = backfill(&v2_lake, &v2_stream, day, day, &["--dry-run"]).unwrap();
    let days = dry["events"].as_array().unwrap();
    assert_eq!(days.len(), 1, "{dry}");
    assert_eq!(days[0]["unchanged"], 12, "{dry}");
    for change in ["added", "removed", "changed"] {
        assert_eq!(days[0][change], 0, "{change}: {dry}");
    }
    assert_eq!(dry["rejected"][0]["unchanged"], 2, "{dry}");
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, "lowercase_names = true\n").unwrap();
    let rules_arg = rules.to_str().unwrap();
    for (lake, stream) in [(&v1_lake, &v1_stream), (&v2_lake, &v2_stream)] {
        let report = backfill(lake, stream, day, day, &["--rules", rules_arg]).unwrap();
        let days = report["events"].as_array().unwrap();
        assert_eq!(days[0]["changed"], 12, "{report}");
        assert_eq!(days[0]["removed"], 0, "{report}");
    }
    let (v1_rows, v2_rows) = (event_rows(&v1_lake), event_rows(&v2_lake));
    assert_eq!(v1_rows, v2_rows);
    assert!(v2_rows
        .iter()
        .all(|r| r["name"].as_str().unwrap().starts_with("view_")));
}

/// SIGKILLs at random moments while v2 uploads (and resends) keep arriving: every checkpoint
/// that falls between a batch record and its events, and every crash between the `batches`
/// commit and the `events` commit, still give the rows of the v1 stream of the same uploads,
/// and every batch record once in `batches`.
#[test]
fn sigkill_while_reading_v2_gives_the_v1_rows_and_every_batch_record_once() {
    let kinesis = Kinesalite::start().unwrap();
    let (v1_stream, v2_stream) = (unique_stream("lake-v1-kill"), unique_stream("lake-v2-kill"));
    kinesis.create_stream(&v1_stream, 2).unwrap();
    kinesis.create_stream(&v2_stream, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (v1_lake, v2_lake) = (dir.path().join("v1"), dir.path().join("v2"));

    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let stop = Arc::clone(&stop);
        let endpoint = kinesis.endpoint.clone();
        let (v1_stream, v2_stream) = (v1_stream.clone(), v2_stream.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let client = tern_tests::kinesis::client(&endpoint).await;
                let mut earlier = VecDeque::new();
                let (mut uploads, mut batch_records) = (0u64, 0u64);
                while !stop.load(Ordering::SeqCst) {
                    let install = format!("install-{}", uploads % 5);
                    let upload = Upload::new(&install, uploads * 10 + 1, 10, Utc::now());
                    // A pause between the batch record and the events (a collector under
                    // load): ingest's checkpoints, and so its restarts, often fall in it.
                    put_v2_with(&client, &v2_stream, &upload, Duration::from_millis(60)).await;
                    put_v1_with(&client, &v1_stream, &upload).await;
                    batch_records += 1;
                    // A lost acknowledgement: the upload again a while later, in another
                    // commit than the first copies.
                    earlier.push_back(upload);
                    if earlier.len() > 15 {
                        let old: Upload = earlier.pop_front().unwrap();
                        let resent = old.resent(Utc::now());
                        put_v2_with(&client, &v2_stream, &resent, Duration::ZERO).await;
                        put_v1_with(&client, &v1_stream, &resent).await;
                        batch_records += 1;
                    }
                    uploads += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (uploads, batch_records)
            })
        })
    };
    let mut rng = rand::rng();
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    while kills < 8 && Instant::now() < deadline {
        let mut ingest = start_ingest(
            &kinesis.endpoint,
            &v2_stream,
            &v2_lake,
            &["--commit-interval-ms", "100"],
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1200)));
        ingest.kill();
        kills += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let (uploads, batch_records) = producer.join().unwrap();
    assert!(kills >= 6, "only {kills} kills in time");
    assert!(uploads > 25, "only {uploads} uploads");
    eprintln!("{kills} SIGKILLs, {uploads} uploads, {batch_records} batch records");
    ingest_until_caught_up(&kinesis.endpoint, &v2_stream, &v2_lake, &[]).unwrap();
    ingest_until_caught_up(&kinesis.endpoint, &v1_stream, &v1_lake, &[]).unwrap();

    let (v1_rows, v2_rows) = (event_rows(&v1_lake), event_rows(&v2_lake));
    assert_eq!(v1_rows.len() as u64, uploads * 10);
    assert_eq!(v1_rows.len(), v2_rows.len());
    for (v1, v2) in v1_rows.iter().zip(&v2_rows) {
        assert_eq!(v1, v2);
    }
    assert!(sql(&v2_lake, "SELECT * FROM rejected", None)
        .unwrap()
        .is_empty());
    let counts = sql(
        &v2_lake,
        "SELECT count(*) AS n, count(DISTINCT concat(shard_id, '/', sequence_number)) AS d \
         FROM batches",
        None,
    )
    .unwrap();
    assert_eq!(counts[0]["n"], batch_records, "{counts:?}");
    assert_eq!(counts[0]["d"], batch_records, "{counts:?}");
}

/// Collectors writing `stream`: a plain one and one writing KPL aggregates, each with `extra`.
fn collectors(kinesis: &Kinesalite, stream: &str, extra: &[&str]) -> [Collector; 2] {
    [Vec::new(), vec!["--aggregate".to_owned()]].map(|mut args| {
        let mut options = CollectorOptions::new(&kinesis.endpoint, stream);
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        options.extra_args = args;
        Collector::start(&options).unwrap()
    })
}

/// The real collector with `--record-version 2` (plain and aggregating, every upload through
/// both) and with the default v1: the lake holds the same events with the same values, but for
/// what the collector itself sets on each copy (`received_at`, the `event_time` corrected with
/// it, `collector_id`) and `v`; each v2 row carries the fields of a batch record of its upload.
#[test]
fn the_collectors_v2_records_give_the_rows_of_its_v1_records() {
    let kinesis = Kinesalite::start().unwrap();
    let (v1_stream, v2_stream) = (unique_stream("lake-v1-real"), unique_stream("lake-v2-real"));
    kinesis.create_stream(&v1_stream, 2).unwrap();
    kinesis.create_stream(&v2_stream, 2).unwrap();
    let v1 = collectors(&kinesis, &v1_stream, &[]);
    let v2 = collectors(&kinesis, &v2_stream, &["--record-version", "2"]);
    let client = reqwest::blocking::Client::new();
    let mut sent = 0;
    let mut uploads = 0;
    let three_days_ago = Utc::now() - chrono::Duration::days(3);
    for install in 0..8 {
        let created = if install == 7 {
            three_days_ago
        } else {
            Utc::now()
        };
        let (body, ids) = tern_tests::lake::batch(&format!("install-{install}"), 1, 15, created);
        for collector in v1.iter().chain(&v2) {
            assert_eq!(
                tern_tests::lake::post(&client, &collector.url, &body).unwrap(),
                200
            );
        }
        sent += ids.len();
        uploads += 1;
    }
    let dir = tempfile::tempdir().unwrap();
    let (v1_lake, v2_lake) = (dir.path().join("v1"), dir.path().join("v2"));
    let v1_summary = ingest_until_caught_up(&kinesis.endpoint, &v1_stream, &v1_lake, &[]).unwrap();
    let v2_summary = ingest_until_caught_up(&kinesis.endpoint, &v2_stream, &v2_lake, &[]).unwrap();
    for summary in [&v1_summary, &v2_summary] {
        assert_eq!(summary["rows_written"], sent, "{summary}");
        assert_eq!(summary["duplicates_removed"], sent, "{summary}");
        assert_eq!(summary["rejected"], 0, "{summary}");
    }
    // A batch record per upload and collector.
    assert_eq!(v2_summary["batches"], 2 * uploads, "{v2_summary}");

    let set_by_collector = ["received_at", "event_time", "event_date", "collector_id"];
    let rows = |lake: &Path| {
        let mut rows = event_rows(lake);
        for row in &mut rows {
            for column in set_by_collector {
                row.remove(column);
            }
        }
        rows
    };
    let (v1_rows, v2_rows) = (rows(&v1_lake), rows(&v2_lake));
    assert_eq!(v1_rows.len(), sent);
    for (v1, v2) in v1_rows.iter().zip(&v2_rows) {
        assert_eq!(v1, v2);
    }
    let unjoined = sql(
        &v2_lake,
        "SELECT count(*) AS n FROM events e LEFT JOIN batches b \
         ON e.batch_id = b.batch_id AND e.received_at = b.received_at \
         AND e.sent_at = b.sent_at AND e.collector_id = b.collector_id \
         AND e.app_version = b.app_version AND e.sdk_name = b.sdk_name \
         WHERE b.batch_id IS NULL",
        None,
    )
    .unwrap();
    assert_eq!(unjoined[0]["n"], 0, "{unjoined:?}");
    // The late upload's events are in the day they happened, as from v1.
    let late = sql(
        &v2_lake,
        "SELECT DISTINCT CAST(event_date AS VARCHAR) AS d FROM events WHERE install_id = 'install-7'",
        None,
    )
    .unwrap();
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0]["d"], three_days_ago.date_naive().to_string());
}
