//! Building the Kinesis client.

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kinesis::Client;

/// Where the sink writes.
#[derive(Debug, Clone)]
pub struct KinesisSinkConfig {
    /// Stream for events.
    pub stream: String,
    /// Stream for dead letters, if any.
    pub dead_letter_stream: Option<String>,
    /// Endpoint override (a local Kinesis server).
    pub endpoint: Option<String>,
    /// AWS region.
    pub region: String,
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
