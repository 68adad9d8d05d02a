//! The fault proxy: a test tool between the collector and a real Kinesis server (kinesalite)
//! that injects what local servers never do — throttled records, failed and hung requests,
//! outages — so tests can prove the collector's at-least-once delivery under them. It is not a
//! Kinesis server: everything it does not refuse goes to the real one (except in `fake_writes`
//! mode, used only to benchmark the collector without a Kinesis bottleneck).
//!
//! Control: `GET /_stats` (what was injected), `POST /_fault` (a [`Faults`] JSON, replaces the
//! current one).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What to inject; shares are probabilities in 0..=1.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of PutRecords records answered with `ProvisionedThroughputExceededException` (and
    /// not written).
    pub throttle_share: f64,
    /// Share of PutRecords requests answered with HTTP 500 `InternalFailure` (nothing written).
    pub error_share: f64,
    /// Share of PutRecords requests held for `hang_ms` and then answered 500 (nothing written).
    pub hang_share: f64,
    /// How long a hung request is held.
    pub hang_ms: u64,
    /// Share of GetRecords calls answered with `ProvisionedThroughputExceededException` (a
    /// reader over its shard's 5 reads or 2 MB a second).
    pub read_throttle_share: f64,
    /// Outage: every request is refused with 503 while this is true.
    pub outage: bool,
    /// Answer PutRecords without the upstream server (fake sequence numbers). Benchmarks only.
    pub fake_writes: bool,
}

/// What the proxy did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Requests received.
    pub requests: u64,
    /// PutRecords calls received.
    pub put_records_calls: u64,
    /// Records in those calls.
    pub records: u64,
    /// Bytes of data (decoded, without the partition key) in those records: what the
    /// collector's records weigh in the stream, for benchmarks.
    #[serde(default)]
    pub record_data_bytes: u64,
    /// Records answered as throttled.
    pub records_throttled: u64,
    /// Requests answered 500.
    pub requests_failed: u64,
    /// Requests held and then failed.
    pub requests_hung: u64,
    /// Requests refused during an outage.
    pub outage_refusals: u64,
    /// GetRecords calls answered as throttled.
    pub reads_throttled: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    put_records_calls: AtomicU64,
    records: AtomicU64,
    record_data_bytes: AtomicU64,
    records_throttled: AtomicU64,
    requests_failed: AtomicU64,
    requests_hung: AtomicU64,
    outage_refusals: AtomicU64,
    reads_throttled: AtomicU64,
    fake_sequence: AtomicU64,
}

struct ProxyState {
    upstream: String,
    faults: RwLock<Faults>,
    counters: Counters,
    client: reqwest::Client,
}

/// The proxy's routes, forwarding to `upstream` (e.g. `http://127.0.0.1:4567`).
pub fn router(upstream: &str, faults: Faults) -> Router {
    let state = Arc::new(ProxyState {
        upstream: upstream.trim_end_matches('/').to_owned(),
        faults: RwLock::new(faults),
        counters: Counters::default(),
        client: reqwest::Client::new(),
    });
    Router::new()
        .route("/_stats", get(stats))
        .route("/_fault", post(set_faults))
        .fallback(forward)
        // axum's default 2 MiB body limit would answer 413 to PutRecords calls that Kinesis
        // takes (up to 5 MiB of data, ~7 MB as base64 JSON): the proxy must not add faults of
        // its own. Its client is the collector under test.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn stats(State(state): State<Arc<ProxyState>>) -> Json<Stats> {
    let c = &state.counters;
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Json(Stats {
        requests: l(&c.requests),
        put_records_calls: l(&c.put_records_calls),
        records: l(&c.records),
        record_data_bytes: l(&c.record_data_bytes),
        records_throttled: l(&c.records_throttled),
        requests_failed: l(&c.requests_failed),
        requests_hung: l(&c.requests_hung),
        outage_refusals: l(&c.outage_refusals),
        reads_throttled: l(&c.reads_throttled),
    })
}

async fn set_faults(
    State(state): State<Arc<ProxyState>>,
    Json(faults): Json<Faults>,
) -> StatusCode {
    if let Ok(mut f) = state.faults.write() {
        *f = faults;
    }
    StatusCode::NO_CONTENT
}

fn aws_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        [("content-type", "application/x-amz-json-1.1")],
        json!({ "__type": kind, "message": message }).to_string(),
    )
        .into_response()
}

async fn forward(
    State(state): State<Arc<ProxyState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let c = &state.counters;
    c.requests.fetch_add(1, Ordering::Relaxed);
    let faults = state.faults.read().map(|f| f.clone()).unwrap_or_default();
    if faults.outage {
        c.outage_refusals.fetch_add(1, Ordering::Relaxed);
        return aws_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "injected outage",
        );
    }
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if target.ends_with(".GetRecords") && rand::random::<f64>() < faults.read_throttle_share {
        c.reads_throttled.fetch_add(1, Ordering::Relaxed);
        return aws_error(
            StatusCode::BAD_REQUEST,
            "ProvisionedThroughputExceededException",
            "injected read throttling",
        );
    }
    if !target.ends_with(".PutRecords") {
        return pass(&state, &headers, body).await;
    }
    c.put_records_calls.fetch_add(1, Ordering::Relaxed);
    let roll: f64 = rand::random();
    if roll < faults.error_share {
        c.requests_failed.fetch_add(1, Ordering::Relaxed);
        return aws_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "injected failure",
        );
    }
    if roll < faults.error_share + faults.hang_share {
        c.requests_hung.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(faults.hang_ms)).await;
        return aws_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "injected hang",
        );
    }
    // The request is read borrowed (each record a slice of the body), and only rebuilt when
    // records are held back: in `fake_writes` mode the proxy stands in for Kinesis, and its
    // own cost (it shares a core with the load generator) lands in the ack latency measured.
    let Some(request) = PutRecordsRequest::parse(&body) else {
        return pass(&state, &headers, body).await;
    };
    let n_records = request.records.len();
    c.records.fetch_add(n_records as u64, Ordering::Relaxed);
    let data_bytes: u64 = request
        .records
        .iter()
        .map(|r| base64_decoded_len(&r.data))
        .sum();
    c.record_data_bytes.fetch_add(data_bytes, Ordering::Relaxed);
    let throttled: Vec<bool> = (0..n_records)
        .map(|_| faults.throttle_share > 0.0 && rand::random::<f64>() < faults.throttle_share)
        .collect();
    let kept = throttled.iter().filter(|t| !**t).count();
    // Each kept record's result entry, as JSON text, and whether it is an error.
    let upstream_results: Vec<(String, bool)> = if kept == 0 {
        Vec::new()
    } else if faults.fake_writes {
        (0..kept)
            .map(|_| {
                let n = c.fake_sequence.fetch_add(1, Ordering::Relaxed);
                let entry =
                    format!(r#"{{"SequenceNumber":"{n:056}","ShardId":"shardId-000000000000"}}"#);
                (entry, false)
            })
            .collect()
    } else {
        let forwarded = if kept == n_records {
            body.clone()
        } else {
            Bytes::from(request.without(&throttled))
        };
        let response = match send(&state, &headers, forwarded).await {
            Ok(r) => r,
            Err(e) => return aws_error(StatusCode::BAD_GATEWAY, "InternalFailure", &e),
        };
        if response.0 != StatusCode::OK {
            return (
                response.0,
                [("content-type", "application/x-amz-json-1.1")],
                response.1,
            )
                .into_response();
        }
        match serde_json::from_slice::<Value>(&response.1) {
            Ok(v) => v["Records"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| (e.to_string(), e.get("ErrorCode").is_some()))
                        .collect()
                })
                .unwrap_or_default(),
            Err(_) => {
                return aws_error(
                    StatusCode::BAD_GATEWAY,
                    "InternalFailure",
                    "unreadable upstream answer",
                )
            }
        }
    };
    let mut upstream = upstream_results.into_iter();
    let mut failed = 0u64;
    let mut answer = String::with_capacity(32 + n_records * 96);
    answer.push_str(r#"{"Records":["#);
    for (i, t) in throttled.iter().enumerate() {
        if i > 0 {
            answer.push(',');
        }
        let (entry, error) = if *t {
            c.records_throttled.fetch_add(1, Ordering::Relaxed);
            (THROTTLED_ENTRY.to_owned(), true)
        } else {
            upstream
                .next()
                .unwrap_or_else(|| (MISSING_ENTRY.to_owned(), true))
        };
        failed += u64::from(error);
        answer.push_str(&entry);
    }
    answer.push_str(&format!(r#"],"FailedRecordCount":{failed}}}"#));
    (
        StatusCode::OK,
        [("content-type", "application/x-amz-json-1.1")],
        answer,
    )
        .into_response()
}

const THROTTLED_ENTRY: &str = r#"{"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"Rate exceeded for shard (injected by the fault proxy)"}"#;
const MISSING_ENTRY: &str = r#"{"ErrorCode":"InternalFailure","ErrorMessage":"missing result"}"#;

/// A PutRecords request, borrowed from its body. Members other than these make it unreadable
/// here (it is then passed on as it is, without faults), so a rebuilt request leaves nothing
/// out.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PutRecordsRequest<'a> {
    #[serde(
        rename = "StreamName",
        borrow,
        default,
        skip_serializing_if = "Option::is_none"
    )]
    stream_name: Option<Cow<'a, str>>,
    #[serde(
        rename = "StreamARN",
        borrow,
        default,
        skip_serializing_if = "Option::is_none"
    )]
    stream_arn: Option<Cow<'a, str>>,
    #[serde(rename = "Records", borrow)]
    records: Vec<RequestRecord<'a>>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RequestRecord<'a> {
    #[serde(rename = "Data", borrow)]
    data: Cow<'a, str>,
    #[serde(rename = "PartitionKey", borrow)]
    partition_key: Cow<'a, str>,
    #[serde(
        rename = "ExplicitHashKey",
        borrow,
        default,
        skip_serializing_if = "Option::is_none"
    )]
    explicit_hash_key: Option<Cow<'a, str>>,
}

impl<'a> PutRecordsRequest<'a> {
    fn parse(body: &'a [u8]) -> Option<Self> {
        serde_json::from_slice(body).ok()
    }

    /// The request with the records marked in `skip` left out.
    fn without(self, skip: &[bool]) -> Vec<u8> {
        let records = self
            .records
            .into_iter()
            .zip(skip)
            .filter(|(_, s)| !**s)
            .map(|(r, _)| r)
            .collect();
        serde_json::to_vec(&Self { records, ..self }).unwrap_or_default()
    }
}

async fn pass(state: &ProxyState, headers: &HeaderMap, body: Bytes) -> Response {
    match send(state, headers, body).await {
        Ok((status, body)) => (
            status,
            [("content-type", "application/x-amz-json-1.1")],
            body,
        )
            .into_response(),
        Err(e) => aws_error(StatusCode::BAD_GATEWAY, "InternalFailure", &e),
    }
}

async fn send(
    state: &ProxyState,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Bytes), String> {
    let mut request = state.client.post(format!("{}/", state.upstream)).body(body);
    for (name, value) in headers {
        if !matches!(name.as_str(), "host" | "content-length") {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    Ok((status, bytes))
}

/// Length of the bytes a padded base64 text decodes to.
fn base64_decoded_len(text: &str) -> u64 {
    let padding = text.bytes().rev().take_while(|&b| b == b'=').count();
    ((text.len() / 4 * 3).saturating_sub(padding)) as u64
}
