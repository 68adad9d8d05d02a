//! One PutRecords call and its per-record results.

use std::time::Instant;

use aws_sdk_kinesis::Client;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;

use super::answer::{entry_result, AnswerSlot};
use super::limits::PUT_RECORDS_ATTEMPT_TIMEOUT;
use crate::metrics::{CodeLabel, Metrics};

use super::record::Entry;
use super::retry;

/// What happened to one record of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryResult {
    /// It has a sequence number: it is in the stream.
    Written,
    /// It failed with this Kinesis error code.
    Failed(String),
}

/// Why a PutRecords call failed as a whole: none of its records is known to be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    /// The Kinesis error code, `timeout`, `network` (no answer), or `internal`.
    pub code: String,
    /// What happened.
    pub message: String,
}

impl CallError {
    /// An error of the collector itself (the dispatcher went away), not of a call.
    pub fn internal(message: &str) -> Self {
        Self {
            code: "internal".to_owned(),
            message: message.to_owned(),
        }
    }
}

/// Sends one PutRecords call. `Err` means the call failed as a whole (network, timeout, 5xx,
/// throttled or invalid request); it is counted once in `put_records_failed`, by code.
pub async fn put_records(
    client: &Client,
    stream: &str,
    entries: &[Entry],
    metrics: &Metrics,
) -> Result<Vec<EntryResult>, CallError> {
    let result = call(client, stream, entries, metrics).await;
    if let Err(e) = &result {
        metrics
            .put_records_failed
            .get_or_create(&CodeLabel {
                code: retry::code_label(&e.code).to_owned(),
            })
            .inc();
    }
    result
}

async fn call(
    client: &Client,
    stream: &str,
    entries: &[Entry],
    metrics: &Metrics,
) -> Result<Vec<EntryResult>, CallError> {
    let body = Bytes::from(request_body(stream, entries));
    let content_length = body.len().to_string();
    let started = Instant::now();
    // The SDK serializes an empty request (checked as usual), then its own hook puts the body
    // written above in its place, before signing: the SDK still signs (SigV4 hashes this body),
    // sends and retries nothing (disabled in `config.rs`). The slot lets the client's HTTP
    // client read a 200 answer's results as it arrives (`answer.rs`); without it (or when that
    // reader cannot read the answer) the SDK parses them.
    let slot = AnswerSlot::default();
    let call_slot = slot.clone();
    let call = client
        .put_records()
        .stream_name(stream)
        .set_records(Some(Vec::new()))
        .customize()
        .mutate_request(move |request| {
            *request.body_mut() = SdkBody::from(body.clone());
            request
                .headers_mut()
                .insert("Content-Length", content_length.clone());
            request.add_extension(call_slot.clone());
        })
        .send();
    let result = tokio::time::timeout(PUT_RECORDS_ATTEMPT_TIMEOUT, call).await;
    metrics
        .put_records_latency
        .observe(started.elapsed().as_secs_f64());
    let output = match result {
        Err(_) => {
            return Err(CallError {
                code: "timeout".to_owned(),
                message: format!("PutRecords timed out after {PUT_RECORDS_ATTEMPT_TIMEOUT:?}"),
            })
        }
        Ok(Err(e)) => {
            use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
            return Err(match e.code() {
                Some(code) => CallError {
                    code: code.to_owned(),
                    message: format!("PutRecords failed: {code}: {}", e.message().unwrap_or("")),
                },
                None => CallError {
                    code: match &e {
                        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => "network",
                        _ => "other",
                    }
                    .to_owned(),
                    message: format!(
                        "PutRecords failed: {}",
                        aws_sdk_kinesis::error::DisplayErrorContext(e)
                    ),
                },
            });
        }
        Ok(Ok(output)) => output,
    };
    let results = slot.take().unwrap_or_else(|| {
        output
            .records()
            .iter()
            .map(|r| entry_result(r.sequence_number().is_some(), r.error_code()))
            .collect()
    });
    if results.len() != entries.len() {
        return Err(CallError {
            code: "other".to_owned(),
            message: format!(
                "PutRecords answered {} results for {} records",
                results.len(),
                entries.len()
            ),
        });
    }
    Ok(results)
}

/// The PutRecords request body (the `awsJson1.1` protocol: `{"StreamName": …, "Records": [{"Data":
/// base64, "PartitionKey": …}, …]}`), written straight from the entries' bytes into one buffer.
/// The SDK's serializer copies each record into a `Blob`, encodes it into a `String` of its own
/// and grows its output as it goes: 12 % of the collector's CPU at saturation (profile in
/// docs/BENCHMARKS.md). The JSON means the same as the SDK's (a test compares the two).
fn request_body(stream: &str, entries: &[Entry]) -> Vec<u8> {
    let size = entries
        .iter()
        .map(|e| e.data.len().div_ceil(3) * 4 + e.partition_key.len() + ENTRY_JSON_OVERHEAD)
        .sum::<usize>()
        + stream.len()
        + REQUEST_JSON_OVERHEAD;
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(b"{\"StreamName\":");
    write_json_str(&mut body, stream);
    body.extend_from_slice(b",\"Records\":[");
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"Data\":\"");
        base64_simd::STANDARD.encode_append(&entry.data, &mut body);
        body.extend_from_slice(b"\",\"PartitionKey\":");
        write_json_str(&mut body, &entry.partition_key);
        body.push(b'}');
    }
    body.extend_from_slice(b"]}");
    body
}

/// Bytes of JSON around one entry's base64 data and partition key (keys, quotes, braces, comma;
/// escapes in the key may add more: the buffer then grows).
const ENTRY_JSON_OVERHEAD: usize = 36;
/// Bytes of JSON around the stream name and the records.
const REQUEST_JSON_OVERHEAD: usize = 32;

fn write_json_str(out: &mut Vec<u8>, value: &str) {
    // Writing a `str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use aws_sdk_kinesis::primitives::Blob;
    use aws_sdk_kinesis::types::PutRecordsRequestEntry;
    use axum::body::Bytes as Body;
    use axum::http::{HeaderMap, StatusCode};
    use serde_json::{json, Value};

    use super::*;
    use crate::sink::kinesis::{all_written, serve_test_endpoint, test_client};

    /// A request as the endpoint received it.
    struct Seen {
        json: Value,
        headers: HeaderMap,
        body: Body,
    }

    /// A Kinesis endpoint that keeps every request and writes every record; a request whose
    /// `Content-Length` is not its body's length is refused.
    async fn recording_kinesis(seen: Arc<Mutex<Vec<Seen>>>) -> String {
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Body| {
            let seen = Arc::clone(&seen);
            async move {
                let length = headers.get("content-length").and_then(|v| v.to_str().ok());
                if length != Some(body.len().to_string().as_str()) {
                    let error = json!({ "__type": "ValidationException", "message": "length" });
                    return (StatusCode::BAD_REQUEST, error.to_string());
                }
                let json: Value = serde_json::from_slice(&body).unwrap_or_default();
                let n = json["Records"].as_array().map_or(0, Vec::len);
                seen.lock().unwrap().push(Seen {
                    json,
                    headers,
                    body,
                });
                (StatusCode::OK, all_written(n))
            }
        });
        serve_test_endpoint(app).await
    }

    /// The SigV4 signature of a request with these headers (those its `Authorization` header
    /// names as signed) and this body, made with the test client's credentials at its time.
    fn signature(url: &str, request: &Seen, body: &[u8]) -> String {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        let header = |name: &str| request.headers[name].to_str().unwrap();
        let authorization = header("authorization");
        let signed = authorization
            .split("SignedHeaders=")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap();
        let headers: Vec<(&str, &str)> = signed.split(';').map(|h| (h, header(h))).collect();
        let time = chrono::NaiveDateTime::parse_from_str(header("x-amz-date"), "%Y%m%dT%H%M%SZ")
            .unwrap()
            .and_utc();
        let identity =
            aws_sdk_kinesis::config::Credentials::new("test", "test", None, None, "test").into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("kinesis")
            .time(time.into())
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let signable = SignableRequest::new(
            "POST",
            format!("{url}/"),
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .unwrap();
        sign(signable, &params).unwrap().signature().to_owned()
    }

    #[tokio::test]
    async fn the_body_written_from_the_record_buffer_is_the_request_the_sdk_would_send() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let url = recording_kinesis(Arc::clone(&seen)).await;
        let client = test_client(&url);
        // Every base64 padding (lengths 1, 2, 3), bytes that are not UTF-8, and a key and a
        // stream name that need JSON escapes.
        let entries: Vec<Entry> = [
            &b"a"[..],
            b"ab",
            b"abc",
            &[0, 0xff, 0xfe, b'"', b'\\'],
            b"{\"v\":1}",
        ]
        .iter()
        .enumerate()
        .map(|(i, data)| Entry {
            data: Bytes::copy_from_slice(data),
            partition_key: format!("key-{i} \"quoted\" \\ \u{1} é").into(),
        })
        .collect();
        let stream = "stream \"name\"";

        let results = put_records(&client, stream, &entries, &Metrics::new()).await;
        assert_eq!(results.unwrap(), vec![EntryResult::Written; entries.len()]);
        let records = entries
            .iter()
            .map(|e| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(e.data.to_vec()))
                    .partition_key(&*e.partition_key)
                    .build()
                    .unwrap()
            })
            .collect();
        client
            .put_records()
            .stream_name(stream)
            .set_records(Some(records))
            .send()
            .await
            .unwrap();

        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        let (ours, sdk) = (&seen[0], &seen[1]);
        assert_eq!(ours.json, sdk.json, "ours, then the SDK's own");
        assert_eq!(ours.json["Records"][2]["Data"], "YWJj");

        // The SDK signed the body that was sent (and its length), not the empty request it
        // serialized first: Kinesis checks the signature (the test server does not).
        let sent = ours.headers["authorization"].to_str().unwrap();
        assert!(sent.ends_with(&format!("Signature={}", signature(&url, ours, &ours.body))));
        let empty = format!(r#"{{"StreamName":{},"Records":[]}}"#, json!(stream));
        assert!(!sent.ends_with(&signature(&url, ours, empty.as_bytes())));
        let sent = sdk.headers["authorization"].to_str().unwrap();
        assert!(sent.ends_with(&format!("Signature={}", signature(&url, sdk, &sdk.body))));
    }
}
