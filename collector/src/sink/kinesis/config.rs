//! The sink's section of the configuration (`[kinesis]`), and building the Kinesis client.

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kinesis::Client;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use serde::{Deserialize, Serialize};

use super::answer::AnswerReadingClient;

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
        client_reading_answers(&loader.load().await)
    }
}

/// A Kinesis client of `config` whose HTTP client reads PutRecords answers as they arrive
/// (`answer.rs`): the SDK's default client (or the one `config` names), wrapped.
pub fn client_reading_answers(config: &SdkConfig) -> Client {
    let http = config.http_client().unwrap_or_else(default_http_client);
    let config = aws_sdk_kinesis::config::Builder::from(config)
        .http_client(AnswerReadingClient::new(http))
        .build();
    Client::from_conf(config)
}

/// The HTTP client the SDK makes when none is given, made the same way (`default_https_client`
/// of `aws-smithy-runtime`, which does not export it): rustls with aws-lc, the connector
/// settings and sleep of the client that uses it, the proxy named by the environment.
fn default_http_client() -> SharedHttpClient {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
    use aws_smithy_http_client::{Builder, ConnectorBuilder};
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}
