//! The sink's section of the configuration (`[kinesis]`), and building the Kinesis client.

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kinesis::Client;
use serde::{Deserialize, Serialize};

/// Where the sink writes and how: the `[kinesis]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KinesisSinkConfig {
    /// Kinesis stream that receives valid events.
    pub stream: String,
    /// Kinesis stream that receives invalid events with the reason. Without it, invalid events
    /// are only listed as refused in the answer (the SDK quarantines them).
    pub dead_letter_stream: Option<String>,
    /// Kinesis endpoint URL (a local Kinesis server); unset means the AWS endpoint of `region`.
    pub endpoint: Option<String>,
    /// AWS region.
    pub region: String,
    /// Pack each upload's events into KPL aggregated records (consumers must de-aggregate:
    /// KCL and the AWS Lambda de-aggregation libraries do).
    pub aggregate: bool,
    /// Stream record version to write: 1 (one self-contained record per event, the default) or
    /// 2 (an upload's shared fields once, in a batch record written before its events; see
    /// `docs/stream-record.md`). Every reader of the stream must read the version written.
    pub record_version: u32,
}

impl Default for KinesisSinkConfig {
    fn default() -> Self {
        Self {
            stream: String::new(),
            dead_letter_stream: None,
            endpoint: None,
            region: "us-east-1".to_owned(),
            aggregate: false,
            record_version: tern_protocol::RECORD_VERSION,
        }
    }
}

impl KinesisSinkConfig {
    /// A client using the standard AWS credential chain. The SDK's own retries are off: the
    /// sink retries exactly the records that failed, within the upload's deadline, so that no
    /// record is retried by two layers at once.
    pub async fn client(&self) -> Client {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .retry_config(RetryConfig::disabled());
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        Client::new(&loader.load().await)
    }
}
