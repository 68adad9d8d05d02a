//! Collector decode benchmarks: `cargo bench -p tern-collector --bench decode` (see
//! docs/BENCHMARKS.md, *Collector*). One upload of 100 sample events (tern-loadgen's shape),
//! parsed the collector's way (borrowed, unknown fields counted) and, as the floor, by
//! serde_json alone into the same types without counting unknown fields; then parsed and made
//! into stream records (v2), the whole of the collector's work on a body between its
//! decompression and the PutRecords call.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // benchmark code

use std::collections::BTreeMap;

use chrono::Utc;
use criterion::{Criterion, Throughput};
use tern_collector::decode::{self, DecodedBatch};
use tern_collector::enrich::{prepare, Upload};
use tern_protocol::{Batch, Event, SdkInfo};
use uuid::Uuid;

const EVENTS: usize = 100;

fn batch_json() -> Vec<u8> {
    let events: Vec<Event> = (1..=EVENTS)
        .map(|seq| {
            let (name, properties) = tern_sample::event(seq);
            Event {
                event_id: Uuid::now_v7(),
                seq: seq as u64,
                name: name.to_owned(),
                created_at: Utc::now(),
                uptime_ms: None,
                clock_id: None,
                properties,
                user_id: Some("user-1".into()),
                session_id: None,
            }
        })
        .collect();
    let batch = Batch {
        batch_id: Uuid::now_v7(),
        install_id: Uuid::now_v7().to_string(),
        sent_at: Utc::now(),
        sent_uptime_ms: None,
        clock_id: None,
        sdk: SdkInfo {
            name: "tern-bench".into(),
            version: "1".into(),
        },
        context: serde_json::from_value(tern_sample::context()).unwrap(),
        events,
        dropped: BTreeMap::new(),
        gaps: Vec::new(),
    };
    serde_json::to_vec(&batch).unwrap()
}

fn main() {
    let json = batch_json();
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.bench_function("parse, unknown fields counted", |b| {
        b.iter(|| {
            let mut unknown = 0u32;
            let batch = decode::parse_noting_unknown_fields(&json, |_| unknown += 1).unwrap();
            assert_eq!(batch.events.len(), EVENTS);
            unknown
        })
    });
    g.bench_function("serde_json alone (floor)", |b| {
        b.iter(|| {
            let text = std::str::from_utf8(&json).unwrap();
            let batch: DecodedBatch<'_> = serde_json::from_str(text).unwrap();
            assert_eq!(batch.events.len(), EVENTS);
        })
    });
    g.bench_function("parse and records v2", |b| {
        let upload = Upload {
            app_id: "bench",
            received_at: Utc::now(),
            collector_id: "bench",
            record_version: tern_protocol::RECORD_VERSION_2,
        };
        b.iter(|| {
            let batch = decode::parse_noting_unknown_fields(&json, |_| {}).unwrap();
            let prepared = prepare(&batch, &upload, false).unwrap();
            assert_eq!(prepared.records.len(), EVENTS);
            prepared
        })
    });
    g.finish();
    c.final_summary();
}
