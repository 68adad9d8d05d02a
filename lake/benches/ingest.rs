//! Ingest cost per stage, in CPU time, so that a noisy machine still gives comparable numbers:
//! decode (de-aggregation check, JSON parse, checks; and the same events as stream record v2,
//! decoded and joined with their batch records), dedup (window and commit-set lookups),
//! write (Arrow columns, Parquet files, the Delta commit). Also writes the same rows as Parquet
//! for `tools/lake/bench_write.py` (Python `deltalake.write_deltalake`, the anchor), and
//! measures the peak RSS of loading a dedup window of N ids in a fresh process.
//!
//! `tools/bench-lake.sh` runs it; see `docs/BENCHMARKS.md`.
//!
//! ```text
//! cargo bench -p tern-lake --bench ingest -- stages --rows 300000 --out DIR
//! cargo bench -p tern-lake --bench ingest -- window --rows 1000000 --out DIR
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is a failed run

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde_json::json;
use tern_lake::decode::{self, Decoded};
use tern_lake::dedup::DedupWindow;
use tern_lake::join::{BatchCache, Known};
use tern_lake::limits::{BATCH_CACHE_RECORDS, DEFAULT_COMMIT_ROWS, DEFAULT_DEDUP_WINDOW};
use tern_lake::table::{self, EventColumns, Provenance};
use tern_protocol::{BatchRecord, EventRecordV2, StreamRecord, BATCH_KIND, RECORD_VERSION_2};
use uuid::Uuid;

/// CPU seconds (user + system) of this process so far, all threads.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

/// A stream record document as the collector writes it, with 8 properties.
fn document(i: usize) -> Vec<u8> {
    const NAMES: [&str; 5] = [
        "screen_view",
        "button_tap",
        "add_to_cart",
        "checkout",
        "search",
    ];
    let now = Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    serde_json::to_vec(&json!({
        "v": 1,
        "event_id": Uuid::now_v7(),
        "app_id": "shop",
        "install_id": format!("019ab7a0-0000-7000-8000-{:012}", i % 5000),
        "seq": i + 1,
        "name": NAMES[i % NAMES.len()],
        "created_at": now, "event_time": now, "sent_at": now, "received_at": now,
        "properties": {
            "i": i, "screen": "product", "item_id": format!("sku-{:05}", i * 7919 % 100_000),
            "price": (i % 500) as f64 + 0.99, "currency": "EUR", "quantity": i % 4 + 1,
            "in_stock": !i.is_multiple_of(3), "experiment": { "name": "new_checkout", "variant": "a" }
        },
        "context": {
            "app": { "id": "com.example.shop", "version": "4.2.0", "build": "420" },
            "device": { "manufacturer": "Google", "model": "Pixel 9" },
            "os": { "name": "Android", "version": "15" },
            "locale": "de-CH", "timezone": "Europe/Zurich"
        },
        "batch_id": Uuid::now_v7(),
        "sdk": { "name": "tern-sdk-kotlin", "version": "0.1.0" },
        "collector_id": "tern-4f5a6b7c8d9e"
    }))
    .unwrap()
}

/// `events` as the stream record v2 documents a collector writes: a batch record for every 100
/// events (one upload), then their event records.
fn v2_documents(events: &[StreamRecord]) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(events.len() + events.len() / 100 + 1);
    for upload in events.chunks(100) {
        let first = &upload[0];
        let batch_id = Uuid::now_v7();
        let batch = BatchRecord {
            v: RECORD_VERSION_2,
            kind: BATCH_KIND.to_owned(),
            batch_id,
            app_id: first.app_id.clone(),
            install_id: first.install_id.clone(),
            sent_at: first.sent_at,
            received_at: first.received_at,
            context: first.context.clone(),
            sdk: first.sdk.clone(),
            collector_id: first.collector_id.clone(),
            events: upload.len() as u64,
        };
        out.push(serde_json::to_vec(&batch).unwrap());
        for e in upload {
            let event = EventRecordV2 {
                v: RECORD_VERSION_2,
                event_id: e.event_id,
                app_id: e.app_id.clone(),
                install_id: first.install_id.clone(),
                seq: e.seq,
                name: e.name.clone(),
                created_at: e.created_at,
                event_time: e.event_time,
                properties: e.properties.clone(),
                user_id: e.user_id.clone(),
                session_id: e.session_id.clone(),
                batch_id,
            };
            out.push(serde_json::to_vec(&event).unwrap());
        }
    }
    out
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; the mode is the first word that is not a flag.
    let mode = args
        .iter()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .cloned()
        .unwrap_or_default();
    let rows: usize = arg(&args, "--rows", "300000").parse().unwrap();
    let out = std::path::PathBuf::from(arg(&args, "--out", "target/bench-lake"));
    std::fs::create_dir_all(&out).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match mode.as_str() {
        "stages" => runtime.block_on(stages(rows, &out)),
        "window" => runtime.block_on(window(rows, &out)),
        "window-load" => runtime.block_on(window_load(&out)),
        _ => eprintln!("modes: stages | window (see the file's doc comment)"),
    }
}

async fn stages(rows: usize, out: &std::path::Path) {
    let documents: Vec<Vec<u8>> = (0..rows).map(document).collect();
    let bytes: usize = documents.iter().map(Vec::len).sum();
    // The same documents, one per line, for the Python end-to-end anchor.
    let mut lines = Vec::with_capacity(bytes + rows);
    for d in &documents {
        lines.extend_from_slice(d);
        lines.push(b'\n');
    }
    std::fs::write(out.join("documents.jsonl"), lines).unwrap();

    let (cpu, wall) = (cpu_seconds(), Instant::now());
    let mut events: Vec<StreamRecord> = Vec::with_capacity(rows);
    for data in &documents {
        for (_, doc) in decode::user_records(data) {
            if let Decoded::Event(e) = decode::decode(doc) {
                events.push(*e);
            }
        }
    }
    let decode_cpu = cpu_seconds() - cpu;
    let decode_wall = wall.elapsed().as_secs_f64();
    assert_eq!(events.len(), rows);

    // The same events as stream record v2: a batch record per upload of 100, then its events;
    // decoded and joined from the batch record cache, as ingest does.
    let v2_documents = v2_documents(&events);
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    let mut cache = BatchCache::new(BATCH_CACHE_RECORDS);
    let rules = tern_lake::rules::Rules::default();
    let mut joined = 0;
    for doc in &v2_documents {
        match decode::decode(doc) {
            Decoded::Batch(b) => cache.insert(*b),
            Decoded::EventV2(e) => {
                let batch = match cache.get(&e.batch_id) {
                    Some(Known::Batch(b)) => Some(Arc::clone(b)),
                    _ => None,
                };
                if let Decoded::Event(_) = decode::join(*e, batch.as_deref(), &rules) {
                    joined += 1;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    let decode_v2_cpu = cpu_seconds() - cpu;
    let decode_v2_wall = wall.elapsed().as_secs_f64();
    assert_eq!(joined, rows);

    // The window already holds a day of other ids, as in steady state.
    let mut window = DedupWindow::new(DEFAULT_DEDUP_WINDOW);
    for _ in 0..rows {
        window.insert(&Uuid::now_v7(), Utc::now());
    }
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    let mut pending = HashSet::with_capacity(rows);
    let mut kept = 0;
    for e in &events {
        if !window.contains(&e.event_id) && pending.insert(e.event_id.as_u128()) {
            kept += 1;
        }
    }
    for e in &events {
        window.insert(&e.event_id, e.received_at);
    }
    let dedup_cpu = cpu_seconds() - cpu;
    let dedup_wall = wall.elapsed().as_secs_f64();
    assert_eq!(kept, rows);

    let lake = out.join("lake-tern");
    let _ = std::fs::remove_dir_all(&lake);
    let mut table = table::open_events(lake.to_str().unwrap()).await.unwrap();
    let from = Provenance {
        shard_id: Arc::from("shardId-000000000000"),
        sequence_number: Arc::from("49590338271490256608559692538361571095921575989136588898"),
        sub_sequence: None,
        arrived_at: Utc::now(),
    };
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    let mut batches = Vec::new();
    for chunk in events.chunks(DEFAULT_COMMIT_ROWS) {
        let mut columns = EventColumns::default();
        for e in chunk {
            columns.push(e, &from);
        }
        let batch = columns.finish(Utc::now()).unwrap();
        batches.push(batch.clone());
        table::commit(&mut table, Some(batch), Vec::new(), HashMap::new())
            .await
            .unwrap();
    }
    let write_cpu = cpu_seconds() - cpu;
    let write_wall = wall.elapsed().as_secs_f64();

    // The same rows for the Python anchor.
    let file = std::fs::File::create(out.join("rows.parquet")).unwrap();
    let mut writer =
        deltalake::parquet::arrow::ArrowWriter::try_new(file, batches[0].schema(), None).unwrap();
    for b in &batches {
        writer.write(b).unwrap();
    }
    writer.close().unwrap();

    let per_core = |cpu: f64| rows as f64 / cpu.max(1e-9);
    let total = decode_cpu + dedup_cpu + write_cpu;
    println!(
        "{}",
        json!({
            "rows": rows,
            "document_bytes_avg": bytes / rows,
            "commit_rows": DEFAULT_COMMIT_ROWS,
            "decode": { "cpu_s": decode_cpu, "wall_s": decode_wall, "rows_per_cpu_s": per_core(decode_cpu) },
            "decode_v2": { "cpu_s": decode_v2_cpu, "wall_s": decode_v2_wall, "rows_per_cpu_s": per_core(decode_v2_cpu) },
            "dedup": { "cpu_s": dedup_cpu, "wall_s": dedup_wall, "rows_per_cpu_s": per_core(dedup_cpu) },
            "write": { "cpu_s": write_cpu, "wall_s": write_wall, "rows_per_cpu_s": per_core(write_cpu) },
            "total": { "cpu_s": total, "rows_per_cpu_s": per_core(total) },
        })
    );
}

/// Writes `rows` events received now into a lake, then loads its dedup window in a fresh
/// process and reports that process's peak RSS.
async fn window(rows: usize, out: &std::path::Path) {
    let lake = out.join("lake-window");
    let _ = std::fs::remove_dir_all(&lake);
    let mut table = table::open_events(lake.to_str().unwrap()).await.unwrap();
    let from = Provenance {
        shard_id: Arc::from("shardId-000000000000"),
        sequence_number: Arc::from("1"),
        sub_sequence: None,
        arrived_at: Utc::now(),
    };
    let mut written = 0;
    while written < rows {
        let n = DEFAULT_COMMIT_ROWS.min(rows - written);
        let mut columns = EventColumns::default();
        for i in written..written + n {
            let e: StreamRecord = serde_json::from_slice(&document(i)).unwrap();
            columns.push(&e, &from);
        }
        table::commit(
            &mut table,
            Some(columns.finish(Utc::now()).unwrap()),
            Vec::new(),
            HashMap::new(),
        )
        .await
        .unwrap();
        written += n;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["window-load", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    print!("{}", String::from_utf8_lossy(&output.stdout));
}

async fn window_load(out: &std::path::Path) {
    let lake = out.join("lake-window");
    let before = peak_rss_mib();
    let table = table::open_events(lake.to_str().unwrap()).await.unwrap();
    let ctx = tern_lake::query::new_session().unwrap();
    let mut window = DedupWindow::new(DEFAULT_DEDUP_WINDOW);
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    tern_lake::query::load_window(&ctx, &table, &mut window)
        .await
        .unwrap();
    println!(
        "{}",
        json!({
            "window_ids": window.len(),
            "load_cpu_s": cpu_seconds() - cpu,
            "load_wall_s": wall.elapsed().as_secs_f64(),
            "peak_rss_mib_before": before,
            "peak_rss_mib": peak_rss_mib(),
        })
    );
}
