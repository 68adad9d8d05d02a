//! One PutRecords call of 500 records, with its answer read by the SDK or by the collector's
//! answer reader (`sink/kinesis/answer.rs`): `cargo bench -p tern-collector --bench put_records`
//! (see docs/BENCHMARKS.md, *Collector*). Both clients send the same request body (the
//! collector's, written from the record buffer) to the same local endpoint, which answers every
//! record written with Kinesis's sequence numbers and shard id, so the difference between the
//! two is what reading the answer costs.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // benchmark code

use aws_config::BehaviorVersion;
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::config::{Credentials, Region};
use aws_sdk_kinesis::Client;
use bytes::Bytes;
use criterion::{Criterion, Throughput};
use tern_collector::metrics::Metrics;
use tern_collector::sink::kinesis::config::client_reading_answers;
use tern_collector::sink::kinesis::service::{put_records, EntryResult};
use tern_collector::sink::kinesis::Entry;

/// Records per call: the most one PutRecords call takes, as at saturation.
const RECORDS: usize = 500;
/// Bytes per record: a v2 event record (docs/BENCHMARKS.md, *Fourth round*).
const RECORD_BYTES: usize = 455;

/// Kinesis's answer for `n` records, all written: 56-digit sequence numbers, as it gives them.
fn answer(n: usize) -> String {
    let records: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "SequenceNumber": format!("4964{:052}", 1_000_000_000u64 + i as u64),
                "ShardId": "shardId-000000000003",
            })
        })
        .collect();
    serde_json::json!({ "FailedRecordCount": 0, "Records": records, "EncryptionType": "NONE" })
        .to_string()
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = answer(RECORDS);
    let url = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(move || {
            let answer = answer.clone();
            async move { answer }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    });
    let config = rt.block_on(
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&url)
            .credentials_provider(Credentials::new("bench", "bench", None, None, "bench"))
            .retry_config(RetryConfig::disabled())
            .load(),
    );
    let ours = client_reading_answers(&config);
    let sdk = Client::new(&config);
    let entries: Vec<Entry> = (0..RECORDS)
        .map(|i| Entry {
            data: Bytes::from(vec![b'x'; RECORD_BYTES]),
            partition_key: format!("install-{}", i % 64).into(),
        })
        .collect();
    let metrics = Metrics::new();

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("put_records");
    group.throughput(Throughput::Elements(RECORDS as u64));
    for (name, client) in [
        ("answer read by the SDK", &sdk),
        ("answer read by the collector", &ours),
    ] {
        let results = rt
            .block_on(put_records(client, "s", &entries, &metrics))
            .unwrap();
        assert_eq!(results, vec![EntryResult::Written; RECORDS]);
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(put_records(client, "s", &entries, &metrics))
                    .unwrap()
            })
        });
    }
    group.finish();
    c.final_summary();
}
