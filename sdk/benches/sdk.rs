//! SDK benchmarks: `cargo bench -p tern-sdk --bench sdk` (see docs/BENCHMARKS.md).
//!
//! 1. `track()` on the calling thread: percentiles of single calls, then criterion's mean.
//! 2. Durable events/s: the store's group commit alone (one thread), and the whole tracker
//!    pipeline (track → writer thread → SQLite, until `flush()` confirms durability).
//! 3. Wire bytes per event, zstd (the SDK's level) against gzip-6, on the same batches.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // benchmark code

use std::io::Write;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use serde_json::json;
use tern_sdk::store::{Store, StoredEvent};
use tern_sdk::upload::ZSTD_LEVEL;
use tern_sdk::{Config, Context, Policy, Tracker};
use uuid::Uuid;

fn context() -> Context {
    serde_json::from_value(json!({
        "app": { "id": "com.example.shop", "version": "4.2.0", "build": "420" },
        "device": { "manufacturer": "Google", "model": "Pixel 8" },
        "os": { "name": "Android", "version": "15" },
        "locale": "de-CH",
        "timezone": "Europe/Zurich"
    }))
    .unwrap()
}

fn tracker(dir: &std::path::Path) -> Tracker {
    Tracker::new(Config {
        db_path: dir.join("bench.db"),
        // Nothing listens there: uploads fail and back off; the benchmark measures the buffer.
        endpoint: "http://127.0.0.1:9".into(),
        write_key: "bench".into(),
        policy: Policy {
            queue_capacity: 2_000_000,
            flush_interval: Duration::from_secs(3600),
            flush_at_count: usize::MAX,
            max_buffer_events: u64::MAX,
            max_buffer_bytes: u64::MAX,
            max_file_bytes: u64::MAX,
            ..Policy::default()
        },
        context: context(),
        transport: None,
    })
    .unwrap()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

/// track() percentiles: each call timed on its own (Instant costs ~20 ns, included).
fn track_percentiles() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path());
    let events: Vec<_> = (0..1024).map(tern_sample::event).collect();
    for i in 0..20_000 {
        let (name, properties) = &events[i % 1024];
        t.track(name, properties.clone()).unwrap();
    }
    t.flush(Duration::from_secs(30)).unwrap();
    let mut samples = Vec::with_capacity(200_000);
    for i in 0..200_000 {
        let (name, properties) = &events[i % 1024];
        let p = properties.clone();
        let start = Instant::now();
        t.track(name, p).unwrap();
        samples.push(start.elapsed().as_nanos() as u64);
        if i % 10_000 == 9_999 {
            // Let the writer keep up, as an app's bursts are followed by pauses.
            t.flush(Duration::from_secs(30)).unwrap();
        }
    }
    samples.sort_unstable();
    println!(
        "track() on the calling thread, 200000 calls: p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
        percentile(&samples, 50.0),
        percentile(&samples, 99.0),
        percentile(&samples, 99.9),
        samples[samples.len() - 1]
    );
}

/// zstd vs gzip-6 on the same realistic batches, as the SDK builds them: at the SDK's level and
/// batch size, and for other levels and sizes, for the record.
fn wire_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<StoredEvent> = (0..5_000).map(|i| stored(i as u64 + 1)).collect();
    let clock = tern_sdk::clock::Clock::new();
    let ctx = serde_json::to_string(&context()).unwrap();
    for per_batch in [50, 100, tern_sdk::policy::MAX_BATCH_EVENTS] {
        let mut store = Store::open(&dir.path().join(format!("wire-{per_batch}.db"))).unwrap();
        store.insert_events(&events, &[], &[]).unwrap();
        // The JSON of each batch exactly as the SDK sends it (decoded back from its zstd body).
        let mut jsons = Vec::new();
        let mut sdk_bytes = 0;
        while let Some(batch) = store.cut_batch(per_batch, usize::MAX, &ctx, 0).unwrap() {
            let bodies = store.batch_bodies(batch.batch_id).unwrap();
            let encoded =
                tern_sdk::upload::encode_batch(&batch, store.install_id(), bodies, &clock).unwrap();
            sdk_bytes += encoded.body.len();
            jsons.push(zstd::stream::decode_all(encoded.body.as_slice()).unwrap());
            store.delete_batch(&batch).unwrap();
        }
        let n = events.len() as f64;
        let raw: usize = jsons.iter().map(Vec::len).sum();
        let gzip: usize = jsons
            .iter()
            .map(|j| {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
                gz.write_all(j).unwrap();
                gz.finish().unwrap().len()
            })
            .sum();
        let zstd_at = |level: i32| -> usize {
            jsons
                .iter()
                .map(|j| zstd::bulk::compress(j, level).unwrap().len())
                .sum()
        };
        println!(
            "wire bytes per event, batches of {per_batch}: JSON {:.1}, gzip-6 {:.1}, SDK zstd-{ZSTD_LEVEL} {:.1} ({:.3} x gzip)",
            raw as f64 / n,
            gzip as f64 / n,
            sdk_bytes as f64 / n,
            sdk_bytes as f64 / gzip as f64,
        );
        for level in [3, 6, 9, 12, 15, 19] {
            let started = Instant::now();
            let bytes = zstd_at(level);
            let per_batch_us = started.elapsed().as_micros() as f64 / jsons.len() as f64;
            println!(
                "    zstd-{level:<2} {:.1} B/event = {:.3} x gzip-6, {per_batch_us:.0} us per batch",
                bytes as f64 / n,
                bytes as f64 / gzip as f64
            );
        }
    }
}

fn stored(seq: u64) -> StoredEvent {
    let (name, properties) = tern_sample::event(seq as usize);
    let event = tern_protocol::Event {
        event_id: Uuid::now_v7(),
        seq,
        name: name.to_owned(),
        created_at: chrono::Utc::now(),
        uptime_ms: Some(seq * 137),
        clock_id: Some("0190a0b0c0d07e8f9a0b1c2d3e4f5a6b".to_owned()),
        properties,
        user_id: Some("user-1234".to_owned()),
        session_id: Some("0190a0b0-c0d0-7e8f-9a0b-1c2d3e4f5a6b".to_owned()),
    };
    StoredEvent {
        seq,
        event_id: event.event_id,
        name: event.name.clone(),
        created_at_ms: event.created_at.timestamp_millis(),
        body: serde_json::to_string(&event).unwrap(),
    }
}

fn bench_track(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path());
    let (_, props) = tern_sample::event(3);
    let mut group = c.benchmark_group("track");
    group.throughput(Throughput::Elements(1));
    group.bench_function("track_call", |b| {
        // Timed in slices of 10 000 calls; between slices, untimed, the writer catches up (an
        // app's bursts are followed by pauses), so the queue never fills.
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(10_000);
                let inputs: Vec<_> = (0..n).map(|_| props.clone()).collect();
                let start = Instant::now();
                for p in inputs {
                    t.track("checkout", p).unwrap();
                }
                total += start.elapsed();
                t.flush(Duration::from_secs(60)).unwrap();
                left -= n;
            }
            total
        })
    });
    group.finish();
    t.flush(Duration::from_secs(60)).unwrap();
}

fn bench_durable(c: &mut Criterion) {
    const GROUP: usize = 2_000;
    let mut group = c.benchmark_group("durable");
    group.sample_size(10);
    group.throughput(Throughput::Elements(GROUP as u64));
    {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("store.db")).unwrap();
        let mut next = 1u64;
        group.bench_function("store_group_commit_2000", |b| {
            b.iter_batched(
                || {
                    let rows: Vec<_> = (next..next + GROUP as u64).map(stored).collect();
                    next += GROUP as u64;
                    rows
                },
                |rows| store.insert_events(&rows, &[], &[]).unwrap(),
                BatchSize::LargeInput,
            )
        });
    }
    {
        let dir = tempfile::tempdir().unwrap();
        let t = tracker(dir.path());
        let events: Vec<_> = (0..GROUP).map(tern_sample::event).collect();
        group.bench_function("tracker_track_to_durable_2000", |b| {
            b.iter_batched(
                || events.clone(),
                |events| {
                    for (name, properties) in events {
                        t.track(name, properties).unwrap();
                    }
                    assert!(t.flush(Duration::from_secs(60)).unwrap());
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn main() {
    track_percentiles();
    wire_bytes();
    let mut c = Criterion::default().configure_from_args();
    bench_track(&mut c);
    bench_durable(&mut c);
    c.final_summary();
}
