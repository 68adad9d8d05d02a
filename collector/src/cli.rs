//! The command line of `tern-collector`: every setting as a flag and a `TERN_*` environment
//! variable (clap reads both, a flag beating the environment), grouped like the configuration's
//! sections so that they merge over the file's section by section.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser};
use figment::providers::Serialized;
use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};

/// Command line of `tern-collector`; every flag can also be set from the environment.
#[derive(Debug, Parser, Serialize)]
#[command(
    name = "tern-collector",
    version,
    about = "Tern event collector: SDK batches in, Kinesis records out"
)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "TERN_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// `[server]` settings.
    #[command(flatten)]
    pub server: ServerArgs,
    /// `[kinesis]` settings.
    #[command(flatten)]
    pub kinesis: KinesisArgs,
    /// `[keys]` settings.
    #[command(flatten)]
    pub keys: KeysArgs,
    /// `[limits]` settings.
    #[command(flatten)]
    pub limits: LimitsArgs,
}

/// Flags of the `[server]` section; only those given are merged.
#[derive(Debug, Args, Serialize)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, env = "TERN_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Ack deadline in milliseconds.
    #[arg(long, env = "TERN_ACK_DEADLINE_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_deadline_ms: Option<u64>,
    /// Instance id written in every record.
    #[arg(long, env = "TERN_INSTANCE_ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// Time allowed for a request's line and headers, in milliseconds.
    #[arg(long, env = "TERN_HEADER_READ_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_read_timeout_ms: Option<u64>,
    /// Shutdown deadline in milliseconds.
    #[arg(long, env = "TERN_SHUTDOWN_DEADLINE_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_deadline_ms: Option<u64>,
    /// Unready period before refusing connections at shutdown, in milliseconds.
    #[arg(long, env = "TERN_SHUTDOWN_DELAY_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_delay_ms: Option<u64>,
}

/// Flags of the `[kinesis]` section; only those given are merged.
#[derive(Debug, Args, Serialize)]
pub struct KinesisArgs {
    /// Kinesis stream for events.
    #[arg(long, env = "TERN_STREAM")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Kinesis stream for invalid events.
    #[arg(long, env = "TERN_DEAD_LETTER_STREAM")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_stream: Option<String>,
    /// Kinesis endpoint URL (for a local Kinesis server).
    #[arg(
        long = "kinesis-endpoint",
        env = "TERN_KINESIS_ENDPOINT",
        value_name = "KINESIS_ENDPOINT"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// AWS region.
    #[arg(long, env = "TERN_REGION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Write KPL aggregated records. Bare `--aggregate` means true; `--aggregate=false` (or
    /// `TERN_AGGREGATE=false`) turns off `aggregate = true` of the config file. Also accepts
    /// yes/no, on/off, 1/0.
    #[arg(
        long,
        env = "TERN_AGGREGATE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<bool>,
    /// Stream record version to write: 1 (default) or 2 (shared fields once per upload, in a
    /// batch record; every reader of the stream must read v2).
    #[arg(long, env = "TERN_RECORD_VERSION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_version: Option<u32>,
}

/// Flags of the `[keys]` section: one more write key, added to those of the file.
#[derive(Debug, Clone, Args, Serialize)]
#[serde(into = "KeysOverride")]
pub struct KeysArgs {
    /// A write key, added to those of the config file.
    #[arg(long, env = "TERN_WRITE_KEY")]
    pub write_key: Option<String>,
    /// App id of `--write-key`.
    #[arg(long, env = "TERN_APP_ID", default_value = "default")]
    pub app_id: String,
}

/// What [`KeysArgs`] adds to `[keys]`: figment merges it into the file's `write_keys`.
#[derive(Serialize)]
struct KeysOverride {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    write_keys: BTreeMap<String, String>,
}

impl From<KeysArgs> for KeysOverride {
    fn from(args: KeysArgs) -> Self {
        Self {
            write_keys: args
                .write_key
                .into_iter()
                .map(|k| (k, args.app_id.clone()))
                .collect(),
        }
    }
}

/// Flags of the `[limits]` section; only those given are merged.
#[derive(Debug, Args, Serialize)]
pub struct LimitsArgs {
    /// Bound on the bytes of uploads in progress.
    #[arg(long, env = "TERN_MAX_IN_FLIGHT_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight_bytes: Option<usize>,
    /// Events per second per write key (0: no limit).
    #[arg(long, env = "TERN_RATE_LIMIT_EVENTS_PER_SECOND")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_events_per_second: Option<u32>,
}

impl Cli {
    /// The configuration: the file (if any), overridden by environment and flags, validated.
    pub fn into_config(self) -> Result<Config> {
        let file = match &self.config {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                Error::Config(format!("cannot read config file {}: {e}", path.display()))
            })?),
            None => None,
        };
        Config::load(file.as_deref(), Serialized::defaults(&self))
    }
}

#[cfg(test)]
mod tests;
