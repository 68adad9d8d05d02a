//! The PutRecords answer read where it arrives, without the SDK's copy of it.
//!
//! The SDK parses each answer into two `String`s per record (its sequence number and shard id)
//! that the collector only tests for presence: 6–7 % of its CPU at saturation (profile in
//! `docs/BENCHMARKS.md`, *Fifth round*). The Kinesis client's HTTP client is wrapped
//! ([`AnswerReadingClient`]): for a request that carries an [`AnswerSlot`] (the PutRecords
//! calls of `service.rs`), a 200 answer is read borrowed into the slot and the SDK is handed an
//! answer with no records to parse. Everything else is the SDK's as before: the request, its
//! signature, the connection, every other status (errors keep their code and message), and any
//! answer this reader cannot read, which the SDK gets untouched. A 200 answer whose body breaks
//! off is counted as a `network` failure (the SDK's own read counted it as `other`): either way
//! the call failed as a whole and its records are sent again.

use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::shared::IntoShared;
use aws_smithy_types::body::SdkBody;
use http_body_util::BodyExt;
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::service::EntryResult;

/// What the SDK parses in place of an answer read here: valid, and no records.
const READ_ANSWER: &str = r#"{"FailedRecordCount":0,"Records":[]}"#;

/// Where a call's per-record results land when its answer was read here (a request extension).
#[derive(Debug, Clone, Default)]
pub struct AnswerSlot(Arc<Mutex<Option<Vec<EntryResult>>>>);

impl AnswerSlot {
    /// The results read here, if the answer was (`None`: the SDK parsed it).
    pub fn take(&self) -> Option<Vec<EntryResult>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn put(&self, results: Vec<EntryResult>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(results);
    }
}

/// One record's result, as Kinesis answers it and the SDK would read it: written when it has a
/// sequence number and no error code.
pub fn entry_result(sequence_number: bool, error_code: Option<&str>) -> EntryResult {
    match (sequence_number, error_code) {
        (true, None) => EntryResult::Written,
        (_, code) => EntryResult::Failed(code.unwrap_or("MissingSequenceNumber").to_owned()),
    }
}

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<AnswerEntry<'a>>,
}

#[derive(Deserialize)]
struct AnswerEntry<'a> {
    #[serde(rename = "SequenceNumber", default)]
    sequence_number: Option<IgnoredAny>,
    #[serde(rename = "ErrorCode", borrow, default)]
    error_code: Option<std::borrow::Cow<'a, str>>,
}

/// The per-record results of a 200 PutRecords answer; `None` if it is not one this reader knows
/// (the SDK then reads it).
pub fn read_results(body: &[u8]) -> Option<Vec<EntryResult>> {
    let answer: Answer = serde_json::from_slice(body).ok()?;
    Some(
        answer
            .records
            .iter()
            .map(|r| entry_result(r.sequence_number.is_some(), r.error_code.as_deref()))
            .collect(),
    )
}

/// The Kinesis client's HTTP client, reading PutRecords answers as they arrive (see the module).
#[derive(Debug)]
pub struct AnswerReadingClient {
    inner: SharedHttpClient,
}

impl AnswerReadingClient {
    /// `inner` (the SDK's default HTTP client), wrapped.
    pub fn new(inner: SharedHttpClient) -> Self {
        Self { inner }
    }
}

impl HttpClient for AnswerReadingClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        AnswerReadingConnector {
            inner: self.inner.http_connector(settings, components),
        }
        .into_shared()
    }

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

#[derive(Debug)]
struct AnswerReadingConnector {
    inner: SharedHttpConnector,
}

impl HttpConnector for AnswerReadingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let Some(slot) = request.extension::<AnswerSlot>().cloned() else {
            return self.inner.call(request);
        };
        let answer = self.inner.call(request);
        HttpConnectorFuture::new(async move {
            let mut response = answer.await?;
            if response.status().as_u16() != 200 {
                return Ok(response);
            }
            let body = response
                .take_body()
                .collect()
                .await
                .map_err(ConnectorError::io)?
                .to_bytes();
            match read_results(&body) {
                Some(results) => {
                    slot.put(results);
                    response
                        .headers_mut()
                        .insert("content-length", READ_ANSWER.len().to_string());
                    *response.body_mut() = SdkBody::from(READ_ANSWER);
                }
                None => *response.body_mut() = SdkBody::from(body),
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_kinesis::Client;
    use axum::http::StatusCode;
    use bytes::Bytes;
    use serde_json::{json, Value};

    use super::*;
    use crate::metrics::Metrics;
    use crate::sink::kinesis::config::client_reading_answers;
    use crate::sink::kinesis::service::put_records;
    use crate::sink::kinesis::{serve_test_endpoint, test_client, test_sdk_config, Entry};

    /// A Kinesis endpoint that gives every request this status and answer.
    async fn answering(status: StatusCode, answer: Value) -> String {
        let app = axum::Router::new().fallback(move || async move { (status, answer.to_string()) });
        serve_test_endpoint(app).await
    }

    /// The client the collector makes (`KinesisSinkConfig::client`), of the same configuration
    /// as [`test_client`]: only the reader of the answers differs.
    fn reading_client(url: &str) -> Client {
        client_reading_answers(&test_sdk_config(url))
    }

    fn entries(n: usize) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                data: Bytes::from(format!("{{\"i\":{i}}}")),
                partition_key: format!("key-{i}").into(),
            })
            .collect()
    }

    /// Every shape a record's result takes: written; failed with a code and message; a code
    /// that needs a JSON escape; nulls; no sequence number and no code; both (a code wins);
    /// fields this reader does not know.
    fn mixed_answer() -> Value {
        json!({
            "FailedRecordCount": 5,
            "EncryptionType": "NONE",
            "Records": [
                { "SequenceNumber": "4960", "ShardId": "shardId-000000000000" },
                { "ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded" },
                { "ErrorCode": "Internal\"Failure\u{e9}", "ErrorMessage": null },
                { "SequenceNumber": null, "ErrorCode": null, "ShardId": null },
                {},
                { "SequenceNumber": "4961", "ErrorCode": "InternalFailure", "Unknown": [1, {"a": 2}] },
                { "SequenceNumber": "4962", "ShardId": "shardId-000000000001", "ErrorCode": null },
            ]
        })
    }

    #[tokio::test]
    async fn results_read_here_are_the_results_the_sdk_reads() {
        let url = answering(StatusCode::OK, mixed_answer()).await;
        let entries = entries(7);
        let metrics = Metrics::new();
        let ours = put_records(&reading_client(&url), "s", &entries, &metrics).await;
        let sdk = put_records(&test_client(&url), "s", &entries, &metrics).await;
        assert_eq!(ours, sdk);
        let failed = |code: &str| EntryResult::Failed(code.to_owned());
        assert_eq!(
            ours.unwrap(),
            vec![
                EntryResult::Written,
                failed("ProvisionedThroughputExceededException"),
                failed("Internal\"Failure\u{e9}"),
                failed("MissingSequenceNumber"),
                failed("MissingSequenceNumber"),
                failed("InternalFailure"),
                EntryResult::Written,
            ]
        );
        // Too few results for the records sent: refused the same way by both.
        let (ours, sdk) = (
            put_records(&reading_client(&url), "s", &self::entries(8), &metrics).await,
            put_records(&test_client(&url), "s", &self::entries(8), &metrics).await,
        );
        assert_eq!(ours, sdk);
        assert_eq!(ours.unwrap_err().code, "other");
    }

    #[tokio::test]
    async fn the_answer_is_read_into_the_slot_and_the_sdk_parses_none() {
        let url = answering(StatusCode::OK, mixed_answer()).await;
        let client = reading_client(&url);
        let call = || {
            client
                .put_records()
                .stream_name("s")
                .set_records(Some(Vec::new()))
        };
        let slot = AnswerSlot::default();
        let request_slot = slot.clone();
        let output = call()
            .customize()
            .mutate_request(move |request| request.add_extension(request_slot.clone()))
            .send()
            .await
            .unwrap();
        assert!(
            output.records().is_empty(),
            "the SDK was given no records to parse"
        );
        assert_eq!(slot.take().map(|r| r.len()), Some(7));

        // A request without a slot (every other call of the client) is left to the SDK.
        let output = call().send().await.unwrap();
        assert_eq!(output.records().len(), 7);
    }

    #[tokio::test]
    async fn errors_and_answers_this_reader_cannot_read_are_the_sdks() {
        let entries = entries(2);
        let metrics = Metrics::new();
        for (status, answer) in [
            (
                StatusCode::BAD_REQUEST,
                json!({ "__type": "ProvisionedThroughputExceededException", "message": "Rate exceeded" }),
            ),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "__type": "InternalFailure", "message": "boom" }),
            ),
            (StatusCode::OK, json!({ "FailedRecordCount": 0 })),
            (StatusCode::OK, json!({ "Records": "not a list" })),
            (StatusCode::OK, json!([])),
        ] {
            let url = answering(status, answer.clone()).await;
            let ours = put_records(&reading_client(&url), "s", &entries, &metrics).await;
            let sdk = put_records(&test_client(&url), "s", &entries, &metrics).await;
            assert_eq!(ours, sdk, "{status} {answer}");
            assert!(ours.is_err(), "{status} {answer}");
        }
    }

    #[test]
    fn an_answer_that_is_not_json_is_left_to_the_sdk() {
        assert_eq!(read_results(b"{\"Records\":[{}"), None);
        assert_eq!(read_results(b""), None);
        assert_eq!(read_results(br#"{"Records":[]}"#), Some(Vec::new()));
    }
}
