//! The Kinesis sink: writes an upload's records and reports success only when every one has a
//! sequence number. Split like Vector's sink: [`config`] is its section of the configuration and
//! builds the client, [`limits`] holds the Kinesis API's limits and the sink's own,
//! [`request_builder`] packs records into requests, [`service`] makes one call, [`answer`] reads
//! its answer, [`retry`] decides what is sent again.

pub mod aggregate;
pub mod answer;
pub mod config;
pub mod dispatch;
pub mod limits;
pub mod record;
pub mod request_builder;
pub mod retry;
pub mod service;

use std::sync::Arc;

use aws_sdk_kinesis::Client;
use tokio::time::Instant;

use self::limits::PUT_RETRY_MIN_DELAY;
use crate::in_flight::Reservation;
use crate::metrics::Metrics;

pub use self::config::KinesisSinkConfig;
pub use self::dispatch::Linger;
pub use self::record::Entry;
use self::service::EntryResult;

/// The configuration of a client of the Kinesis endpoint at `endpoint` (a test server), without
/// the SDK's retries as in [`KinesisSinkConfig::client`].
#[cfg(test)]
pub(crate) fn test_sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    use aws_config::{BehaviorVersion, Region};
    use aws_sdk_kinesis::config::retry::RetryConfig;
    use aws_sdk_kinesis::config::{Credentials, SharedCredentialsProvider};
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "test", "test", None, None, "test",
        )))
        .retry_config(RetryConfig::disabled())
        .build()
}

/// A client of [`test_sdk_config`] whose answers the SDK parses.
#[cfg(test)]
pub(crate) fn test_client(endpoint: &str) -> Client {
    Client::new(&test_sdk_config(endpoint))
}

/// Serves `app` on a free local port (a test Kinesis endpoint); its URL.
#[cfg(test)]
pub(crate) async fn serve_test_endpoint(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A PutRecords answer that writes all of a call's `n` records.
#[cfg(test)]
pub(crate) fn all_written(n: usize) -> String {
    let result = serde_json::json!({ "SequenceNumber": "1", "ShardId": "shardId-000000000000" });
    serde_json::json!({ "FailedRecordCount": 0, "Records": vec![result; n] }).to_string()
}

/// Why records are not all in the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pending} of {total} records not written before the deadline; last error: {last_error}")]
pub struct SinkError {
    /// Records still unwritten.
    pub pending: usize,
    /// Records of the call.
    pub total: usize,
    /// The last failure seen.
    pub last_error: String,
}

/// Writes records to Kinesis, retrying only the ones that failed.
#[derive(Clone)]
pub struct KinesisSink {
    client: Client,
    metrics: Arc<Metrics>,
    dispatcher: dispatch::Dispatcher,
}

impl KinesisSink {
    /// A sink over `client`; starts the task that shares PutRecords calls between uploads
    /// (call it within the Tokio runtime).
    pub fn new(client: Client, metrics: Arc<Metrics>) -> Self {
        let dispatcher = dispatch::Dispatcher::spawn(client.clone(), Arc::clone(&metrics));
        Self {
            client,
            metrics,
            dispatcher,
        }
    }

    /// The Kinesis client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Writes every entry to `stream`, retrying failed records (and failed calls) with backoff
    /// until `deadline`; `linger` is how long their calls may wait to share (retries too).
    /// `Ok` means every record has a sequence number. Every submission and call
    /// carrying the entries holds `reservation` (the upload's), so their bytes stay counted
    /// until nothing references them, also when this future is dropped.
    pub async fn put_all(
        &self,
        stream: &str,
        entries: Vec<Entry>,
        linger: Linger,
        deadline: Instant,
        reservation: &Arc<Reservation>,
    ) -> Result<(), SinkError> {
        let total = entries.len();
        let mut pending: Vec<(usize, Entry)> = entries.into_iter().enumerate().collect();
        let mut backoff = retry::Backoff::default();
        let mut first = true;
        let mut last_error = String::new();
        while !pending.is_empty() {
            if !first {
                // Near the deadline a shorter wait still leaves one more attempt a chance; with
                // less than the shortest delay left, the upload is given up (503).
                let left = deadline.saturating_duration_since(Instant::now());
                if left <= PUT_RETRY_MIN_DELAY {
                    return Err(SinkError {
                        pending: pending.len(),
                        total,
                        last_error,
                    });
                }
                tokio::time::sleep(backoff.delay().min(left - PUT_RETRY_MIN_DELAY)).await;
                self.metrics.records_retried.inc_by(pending.len() as u64);
            }
            first = false;
            let before = pending.len();
            let mut throttled = false;
            let requests = request_builder::build_requests(std::mem::take(&mut pending));
            let calls = requests.into_iter().map(|request| async move {
                let entries: Vec<Entry> = request.iter().map(|(_, e)| e.clone()).collect();
                let result = self
                    .dispatcher
                    .put(stream, entries, linger, reservation)
                    .await;
                (request, result)
            });
            for (request, result) in futures_util::future::join_all(calls).await {
                match result {
                    Ok(results) => {
                        for ((index, entry), result) in request.into_iter().zip(results) {
                            if let EntryResult::Failed(code) = result {
                                if code == retry::THROTTLED {
                                    self.metrics.records_throttled.inc();
                                    throttled = true;
                                } else if retry::is_permanent(&code) {
                                    tracing::error!(%code, stream, "Kinesis refused a record");
                                }
                                last_error = code;
                                pending.push((index, entry));
                            }
                        }
                    }
                    Err(e) => {
                        throttled |= retry::is_throttling(&e.code);
                        if retry::is_permanent(&e.code) {
                            // Retrying will not fix it, but only a 200 lets the SDK delete the
                            // data: keep retrying until the deadline (503), and say it loudly.
                            tracing::error!(code = %e.code, error = %e, stream, records = request.len(), "PutRecords refused; an operator must act");
                        } else {
                            tracing::warn!(code = %e.code, error = %e, records = request.len(), "PutRecords call failed");
                        }
                        last_error = e.message;
                        pending.extend(request);
                    }
                }
            }
            // Keep the upload's order for the next attempt.
            pending.sort_unstable_by_key(|(index, _)| *index);
            backoff.after_attempt(pending.len() < before, throttled);
        }
        Ok(())
    }
}
