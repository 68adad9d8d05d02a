//! Collector configuration, in sections: `[server]`, `[kinesis]`, `[limits]`, `[keys]`.
//!
//! Defaults, a TOML file, environment variables and flags are merged by figment, in that order
//! of precedence (a flag beats the environment, which beats the file); the `cli` module reads
//! the environment and the flags and hands them to [`Config::load`]. Every field can be set from
//! all three.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::{Figment, Provider};
use serde::{Deserialize, Serialize};
use tern_protocol::limits::SDK_REQUEST_TIMEOUT;

use crate::error::{Error, Result};
use crate::limits::{
    DEFAULT_ACK_DEADLINE, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_IN_FLIGHT_BYTES,
    DEFAULT_SHUTDOWN_DEADLINE, DEFAULT_SHUTDOWN_DELAY, MAX_APP_ID_BYTES, MAX_INSTANCE_ID_BYTES,
    MAX_UPLOAD_RECORD_BYTES,
};
use crate::sink::kinesis::KinesisSinkConfig;

/// The collector's settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How the collector serves HTTP and shuts down.
    pub server: ServerConfig,
    /// Where records go (the sink's own section).
    pub kinesis: KinesisSinkConfig,
    /// Bounds on the load the collector takes.
    pub limits: LimitsConfig,
    /// Who may write.
    pub keys: KeysConfig,
}

/// The `[server]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (printed at start).
    pub listen: SocketAddr,
    /// Identifier of this collector instance, written in every record; defaults to a fresh id.
    pub instance_id: Option<String>,
    /// How long an upload may take from its arrival to its answer before it is answered 503,
    /// in milliseconds. Less than the SDK's request timeout (30 s).
    pub ack_deadline_ms: u64,
    /// How long a client may take to send its request line and headers (and how long a
    /// kept-alive connection may idle) before the connection is closed, in ms.
    pub header_read_timeout_ms: u64,
    /// After SIGTERM, how long in-flight uploads may take before the process exits, in ms. At
    /// least the ack deadline, so that uploads in progress can be answered.
    pub shutdown_deadline_ms: u64,
    /// After SIGTERM, how long to keep serving while reporting unready (so the load balancer
    /// stops sending) before refusing new connections, in ms. Default
    /// [`DEFAULT_SHUTDOWN_DELAY`] (15 s); raise it to the load balancer's health-check interval
    /// × unhealthy threshold where that is longer.
    pub shutdown_delay_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            instance_id: None,
            ack_deadline_ms: millis(DEFAULT_ACK_DEADLINE),
            header_read_timeout_ms: millis(DEFAULT_HEADER_READ_TIMEOUT),
            shutdown_deadline_ms: millis(DEFAULT_SHUTDOWN_DEADLINE),
            shutdown_delay_ms: millis(DEFAULT_SHUTDOWN_DELAY),
        }
    }
}

/// The `[limits]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Bound on the bytes of uploads in progress (bodies, decoded batches, records waiting for
    /// Kinesis); above it new uploads get 503 at once. At least one upload's worst case.
    pub max_in_flight_bytes: usize,
    /// Events per second each write key may send (0: no limit); above it uploads get 429.
    pub rate_limit_events_per_second: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_in_flight_bytes: DEFAULT_MAX_IN_FLIGHT_BYTES,
            rate_limit_events_per_second: 0,
        }
    }
}

/// The `[keys]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeysConfig {
    /// Write keys and the app id each one writes for (`[keys.write_keys]`, `KEY = "APP_ID"`).
    pub write_keys: BTreeMap<String, String>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The section each field had before the configuration had sections, to point an old file at
/// the new place.
const SECTION_OF_FLAT_FIELD: [(&str, &str); 14] = [
    ("listen", "[server] listen"),
    ("instance_id", "[server] instance_id"),
    ("ack_deadline_ms", "[server] ack_deadline_ms"),
    ("header_read_timeout_ms", "[server] header_read_timeout_ms"),
    ("shutdown_deadline_ms", "[server] shutdown_deadline_ms"),
    ("shutdown_delay_ms", "[server] shutdown_delay_ms"),
    ("stream", "[kinesis] stream"),
    ("dead_letter_stream", "[kinesis] dead_letter_stream"),
    ("kinesis_endpoint", "[kinesis] endpoint"),
    ("region", "[kinesis] region"),
    ("aggregate", "[kinesis] aggregate"),
    ("max_in_flight_bytes", "[limits] max_in_flight_bytes"),
    (
        "rate_limit_events_per_second",
        "[limits] rate_limit_events_per_second",
    ),
    ("write_keys", "[keys.write_keys]"),
];

impl Config {
    /// Parses a TOML configuration over the defaults, without checking it; errors name the
    /// field at fault.
    pub fn from_toml(text: &str) -> Result<Self> {
        extract(Self::figment(Some(text)))
    }

    /// The defaults, then the TOML `file` text (if any), then `overrides` (the environment and
    /// the flags), checked with [`Config::validate`].
    ///
    /// An empty value unsets an optional setting (`instance_id`, `dead_letter_stream`,
    /// `endpoint`), so that the environment or a flag can take back what the file sets
    /// (`TERN_DEAD_LETTER_STREAM=`, `--kinesis-endpoint ""`).
    pub fn load(file: Option<&str>, overrides: impl Provider) -> Result<Self> {
        let mut config = extract(Self::figment(file).merge(overrides))?;
        for optional in [
            &mut config.server.instance_id,
            &mut config.kinesis.dead_letter_stream,
            &mut config.kinesis.endpoint,
        ] {
            if optional.as_deref() == Some("") {
                *optional = None;
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// The defaults, then the TOML `file` text (if any).
    fn figment(file: Option<&str>) -> Figment {
        let defaults = Figment::from(Serialized::defaults(Self::default()));
        match file {
            Some(text) => defaults.merge(Toml::string(text)),
            None => defaults,
        }
    }

    /// Checks values that parse but make no sense, naming the field.
    pub fn validate(&self) -> Result<()> {
        let (server, limits) = (&self.server, &self.limits);
        if self.kinesis.stream.is_empty() {
            return Err(Error::Config("stream: no Kinesis stream is set".into()));
        }
        if !tern_protocol::RECORD_VERSIONS.contains(&self.kinesis.record_version) {
            return Err(Error::Config(format!(
                "record_version: {} is not a stream record version; write one of {:?}",
                self.kinesis.record_version,
                tern_protocol::RECORD_VERSIONS
            )));
        }
        let write_keys = &self.keys.write_keys;
        if write_keys.is_empty() {
            return Err(Error::Config("write_keys: no write key is set".into()));
        }
        if let Some((key, _)) = write_keys
            .iter()
            .find(|(k, a)| k.is_empty() || a.is_empty())
        {
            return Err(Error::Config(format!(
                "write_keys: an entry has an empty {}",
                if key.is_empty() { "key" } else { "app id" }
            )));
        }
        if let Some((_, app_id)) = write_keys.iter().find(|(_, a)| a.len() > MAX_APP_ID_BYTES) {
            return Err(Error::Config(format!(
                "write_keys: an app id is {} bytes, over the limit of {MAX_APP_ID_BYTES} (it is \
                 copied into every record)",
                app_id.len()
            )));
        }
        if let Some(id) = server
            .instance_id
            .as_ref()
            .filter(|id| id.len() > MAX_INSTANCE_ID_BYTES)
        {
            return Err(Error::Config(format!(
                "instance_id: {} bytes, over the limit of {MAX_INSTANCE_ID_BYTES} (it is copied \
                 into every record)",
                id.len()
            )));
        }
        if server.ack_deadline_ms == 0 {
            return Err(Error::Config("ack_deadline_ms: must be more than 0".into()));
        }
        if server.ack_deadline() >= SDK_REQUEST_TIMEOUT {
            return Err(Error::Config(format!(
                "ack_deadline_ms: must be less than the SDK's request timeout ({} ms), or the \
                 SDK gives up before it hears the answer",
                SDK_REQUEST_TIMEOUT.as_millis()
            )));
        }
        if server.shutdown_deadline() < server.ack_deadline() {
            return Err(Error::Config(format!(
                "shutdown_deadline_ms: must be at least ack_deadline_ms ({}), so that uploads in \
                 progress at shutdown can be answered",
                server.ack_deadline_ms
            )));
        }
        if limits.max_in_flight_bytes < MAX_UPLOAD_RECORD_BYTES {
            return Err(Error::Config(format!(
                "max_in_flight_bytes: must be at least the largest upload's records \
                 ({MAX_UPLOAD_RECORD_BYTES} bytes), or that upload could never be taken"
            )));
        }
        if server.header_read_timeout_ms == 0 {
            return Err(Error::Config(
                "header_read_timeout_ms: must be more than 0".into(),
            ));
        }
        Ok(())
    }
}

impl ServerConfig {
    /// The shutdown deadline as a duration.
    pub fn shutdown_deadline(&self) -> Duration {
        Duration::from_millis(self.shutdown_deadline_ms)
    }

    /// The unready period before refusing connections at shutdown, as a duration.
    pub fn shutdown_delay(&self) -> Duration {
        Duration::from_millis(self.shutdown_delay_ms)
    }

    /// The header read timeout as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// The ack deadline as a duration.
    pub fn ack_deadline(&self) -> Duration {
        Duration::from_millis(self.ack_deadline_ms)
    }
}

/// The merged configuration. Flags and environment are typed by clap before they are merged: a
/// value that does not fit its field can only come from the file.
fn extract(figment: Figment) -> Result<Config> {
    figment
        .extract()
        .map_err(|e| Error::Config(format!("config file: {}", with_migration_hint(e))))
}

/// Each error, led by the field at fault (`server.listen: ...`), and where a field of a file
/// written before the sections now goes.
fn with_migration_hint(errors: figment::Error) -> String {
    let described: Vec<String> = errors
        .into_iter()
        .map(|error| {
            let field = error.path.join(".");
            let hint = match &error.kind {
                figment::error::Kind::UnknownField(name, _) if error.path.len() <= 1 => {
                    SECTION_OF_FLAT_FIELD
                        .iter()
                        .find(|(flat, _)| flat == name)
                        .map(|(_, place)| {
                            format!(" (the configuration has sections: it is now {place})")
                        })
                }
                _ => None,
            };
            let hint = hint.unwrap_or_default();
            if field.is_empty() {
                format!("{}{hint}", error.kind)
            } else {
                format!("{field}: {}{hint}", error.kind)
            }
        })
        .collect();
    described.join("; ")
}

#[cfg(test)]
mod tests;
