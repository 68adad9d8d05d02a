//! `tern-loadgen`'s engine: simulated devices speaking the real wire format to a collector, as
//! the SDK does (one batch in flight per device, the same `batch_id` and events on every resend,
//! `Retry-After` honoured), then the stream read back to count what arrived.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tern_protocol::{Batch, Context, Event, SdkInfo, BATCH_PATH};
use uuid::Uuid;

use tern_collector::sink::kinesis::aggregate::deaggregate;

use crate::kinesis::ShardReader;
use crate::{percentile, sample_event};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Collector base URL.
    pub collector: String,
    /// Write key.
    pub write_key: String,
    /// Simulated devices (concurrent uploads).
    pub devices: usize,
    /// Events per device.
    pub events_per_device: u64,
    /// Events per batch.
    pub batch_size: usize,
    /// Total target rate in events/s (`None`: as fast as acknowledgements allow).
    pub rate: Option<f64>,
    /// Kinesis endpoint and stream to read back (`None`: no read-back).
    pub read_back: Option<(String, String)>,
    /// How long to wait for the stream to hold every acknowledged event.
    pub read_timeout: Duration,
    /// Stop sending after this long, whatever is left.
    pub max_duration: Duration,
}

/// What was measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// Events in batches sent at least once.
    pub events_sent: u64,
    /// Events in acknowledged batches.
    pub events_acked: u64,
    /// Events never acknowledged (sending stopped at the time limit, or a 4xx).
    pub events_unacked: u64,
    /// Resends of a batch after a failure.
    pub resends: u64,
    /// Answers by HTTP status (0: no answer: connection refused, reset, timeout).
    pub responses: BTreeMap<u16, u64>,
    /// Distinct acknowledged events found in the stream (when read back).
    pub delivered_unique: u64,
    /// Acknowledged events missing from the stream (must be 0).
    pub lost: u64,
    /// Records in the stream beyond the first copy of an event.
    pub duplicates: u64,
    /// Acknowledged events per second of sending.
    pub events_per_s: f64,
    /// Acknowledgement latency of successful requests, ms.
    pub ack_latency_ms_p50: Option<f64>,
    /// p99 of the same.
    pub ack_latency_ms_p99: Option<f64>,
    /// Creation → readable (Kinesis arrival), s.
    pub readable_latency_s_p50: Option<f64>,
    /// p99 of the same.
    pub readable_latency_s_p99: Option<f64>,
    /// Max of the same.
    pub readable_latency_s_max: Option<f64>,
    /// Seconds spent sending.
    pub send_seconds: f64,
    /// Bytes of the acknowledged events' own JSON as sent inside their batches (without the
    /// batch's shared fields): the base of the stream's bytes per event.
    #[serde(default)]
    pub event_json_bytes_acked: u64,
}

#[derive(Default)]
struct Shared {
    acked: Vec<Uuid>,
    acked_json_bytes: u64,
    sent: u64,
    unacked: u64,
    resends: u64,
    responses: BTreeMap<u16, u64>,
    ack_ms: Vec<f64>,
}

fn context() -> Context {
    serde_json::from_value(tern_sample::context()).unwrap_or_default()
}

/// Device `device`'s events `first + 1 ..= first + n` as JSON, their ids, and their JSON's bytes.
fn batch_events(device: usize, first: u64, n: u64) -> (Vec<Box<RawValue>>, Vec<Uuid>, u64) {
    let events: Vec<Event> = (first + 1..=first + n)
        .map(|seq| {
            let (name, properties) = sample_event((device * 7919) + seq as usize);
            Event {
                event_id: Uuid::now_v7(),
                seq,
                name: name.to_owned(),
                created_at: Utc::now(),
                uptime_ms: None,
                clock_id: None,
                properties,
                user_id: Some(format!("user-{device}")),
                session_id: None,
            }
        })
        .collect();
    let ids = events.iter().map(|e| e.event_id).collect();
    let raw: Vec<Box<RawValue>> = events
        .iter()
        .filter_map(|e| serde_json::value::to_raw_value(e).ok())
        .collect();
    let json_bytes = raw.iter().map(|r| r.get().len() as u64).sum();
    (raw, ids, json_bytes)
}

/// The zstd body of one attempt at a batch (`sent_at` is now).
fn batch_body(batch_id: Uuid, install_id: String, events: &[Box<RawValue>]) -> Vec<u8> {
    let batch = Batch {
        batch_id,
        install_id,
        sent_at: Utc::now(),
        sent_uptime_ms: None,
        clock_id: None,
        sdk: SdkInfo {
            name: "tern-loadgen".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        context: context(),
        events: events.to_vec(),
        dropped: BTreeMap::new(),
        gaps: Vec::new(),
    };
    serde_json::to_vec(&batch)
        .ok()
        .and_then(|j| zstd::bulk::compress(&j, 3).ok())
        .unwrap_or_default()
}

/// Runs the load and, if asked, reads the stream back.
pub async fn run(options: Options) -> Result<Report> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(options.devices)
        .build()?;
    let shared = Arc::new(Mutex::new(Shared::default()));
    let started = Instant::now();
    let deadline = started + options.max_duration;
    let mut tasks = Vec::new();
    for device in 0..options.devices {
        let (client, options, shared) = (client.clone(), options.clone(), Arc::clone(&shared));
        tasks.push(tokio::spawn(async move {
            run_device(device, &client, &options, &shared, deadline).await;
        }));
    }
    for t in tasks {
        t.await?;
    }
    let send_seconds = started.elapsed().as_secs_f64();
    let mut s = std::mem::take(&mut *shared.lock().unwrap_or_else(|p| p.into_inner()));
    let mut report = Report {
        events_sent: s.sent,
        events_acked: s.acked.len() as u64,
        events_unacked: s.unacked,
        resends: s.resends,
        responses: s.responses.clone(),
        events_per_s: s.acked.len() as f64 / send_seconds.max(1e-9),
        ack_latency_ms_p50: percentile(&mut s.ack_ms, 50.0),
        ack_latency_ms_p99: percentile(&mut s.ack_ms, 99.0),
        send_seconds,
        event_json_bytes_acked: s.acked_json_bytes,
        ..Report::default()
    };
    if let Some((endpoint, stream)) = &options.read_back {
        let kinesis = crate::kinesis::client(endpoint).await;
        let mut reader = ShardReader::open(kinesis, stream).await?;
        let acked: HashSet<Uuid> = s.acked.iter().copied().collect();
        let mut copies: HashMap<Uuid, u64> = HashMap::new();
        let mut latencies = Vec::new();
        let mut joiner = crate::records::Joiner::default();
        let read_deadline = Instant::now() + options.read_timeout;
        loop {
            for raw in reader.read_raw().await? {
                // A collector running with --aggregate packs many events in one record.
                let events = deaggregate(&raw.data).unwrap_or_else(|| vec![&raw.data[..]]);
                for data in events {
                    // Gap and batch records are not events; an event that cannot be read
                    // (nor joined) is not delivered.
                    let Ok(crate::records::Document::Event(record)) = joiner.document(data) else {
                        continue;
                    };
                    let n = copies.entry(record.event_id).or_default();
                    *n += 1;
                    if *n == 1 {
                        latencies.push(
                            (raw.arrived_at - record.created_at).num_milliseconds() as f64 / 1000.0,
                        );
                    }
                }
            }
            let missing = acked.iter().filter(|id| !copies.contains_key(id)).count();
            if missing == 0 || Instant::now() > read_deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        report.delivered_unique = acked.iter().filter(|id| copies.contains_key(id)).count() as u64;
        report.lost = report.events_acked - report.delivered_unique;
        report.duplicates = copies.values().map(|n| n - 1).sum();
        report.readable_latency_s_p50 = percentile(&mut latencies, 50.0);
        report.readable_latency_s_p99 = percentile(&mut latencies, 99.0);
        report.readable_latency_s_max = percentile(&mut latencies, 100.0);
    }
    Ok(report)
}

async fn run_device(
    device: usize,
    client: &reqwest::Client,
    o: &Options,
    shared: &Mutex<Shared>,
    deadline: Instant,
) {
    let install_id = Uuid::now_v7().to_string();
    let url = format!("{}{}", o.collector.trim_end_matches('/'), BATCH_PATH);
    let pause = o
        .rate
        .map(|r| Duration::from_secs_f64(o.batch_size as f64 * o.devices as f64 / r.max(1e-9)));
    // Paced devices start spread over one period, as phones' uploads are: started together they
    // would keep in step and hit the collector in bursts of every device's batch at once, so
    // the measured latency would be that of the burst, not of the rate.
    if let Some(pause) = pause {
        tokio::time::sleep(pause.mul_f64(device as f64 / o.devices.max(1) as f64)).await;
    }
    let mut seq = 0u64;
    let lock = || shared.lock().unwrap_or_else(|p| p.into_inner());
    while seq < o.events_per_device && Instant::now() < deadline {
        let batch_started = Instant::now();
        let n = (o.events_per_device - seq).min(o.batch_size as u64);
        let first = seq;
        seq += n;
        // Building and compressing a batch is most of the load generator's CPU: it runs on the
        // blocking pool, so that answers from the collector are timed as they arrive, not
        // after the other devices' batches were built.
        let Ok((raw, ids, json_bytes)) =
            tokio::task::spawn_blocking(move || batch_events(device, first, n)).await
        else {
            return;
        };
        let raw = Arc::new(raw);
        let batch_id = Uuid::now_v7();
        lock().sent += n;
        let mut attempt = 0u32;
        loop {
            let body = {
                let (raw, install_id) = (Arc::clone(&raw), install_id.clone());
                tokio::task::spawn_blocking(move || batch_body(batch_id, install_id, &raw))
                    .await
                    .unwrap_or_default()
            };
            let sent = Instant::now();
            let answer = client
                .post(&url)
                .bearer_auth(&o.write_key)
                .header("content-type", "application/json")
                .header("content-encoding", "zstd")
                .body(body)
                .send()
                .await;
            let (status, retry_after) = match &answer {
                Ok(r) => (
                    r.status().as_u16(),
                    r.headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok()),
                ),
                Err(_) => (0, None),
            };
            *lock().responses.entry(status).or_default() += 1;
            match status {
                200 => {
                    let mut s = lock();
                    s.ack_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
                    s.acked.extend(&ids);
                    s.acked_json_bytes += json_bytes;
                    break;
                }
                400..=499 if status != 408 && status != 429 => {
                    lock().unacked += n;
                    break;
                }
                _ if Instant::now() >= deadline => {
                    lock().unacked += n;
                    break;
                }
                _ => {
                    attempt += 1;
                    lock().resends += 1;
                    let backoff = Duration::from_millis((50u64 << attempt.min(5)).min(2_000));
                    let wait = retry_after.map_or(backoff, |s| {
                        Duration::from_secs(s).min(Duration::from_secs(5))
                    });
                    tokio::time::sleep(wait).await;
                }
            }
        }
        if let Some(pause) = pause {
            if let Some(rest) = pause.checked_sub(batch_started.elapsed()) {
                tokio::time::sleep(rest).await;
            }
        }
    }
}
