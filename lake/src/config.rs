//! `tern-lake ingest` settings: a TOML file, `TERN_LAKE_*` environment variables and flags, in
//! that order of precedence (a flag beats the environment, which beats the file), merged by
//! figment; every error names the field at fault.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::limits::{DEFAULT_COMMIT_INTERVAL, DEFAULT_COMMIT_ROWS, DEFAULT_DEDUP_WINDOW};
use crate::source::Worker;

/// Prefix of the environment variables (`TERN_LAKE_STREAM`, `TERN_LAKE_COMMIT_INTERVAL_MS`...).
pub const ENV_PREFIX: &str = "TERN_LAKE_";

/// The ingest settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Kinesis stream to read.
    pub stream: String,
    /// The lake: a directory or a URI; the tables `events`, `gaps` and `rejected` live under it.
    pub lake: String,
    /// Kinesis endpoint URL; unset means the AWS endpoint of `region`.
    pub kinesis_endpoint: Option<String>,
    /// AWS region.
    pub region: String,
    /// Longest time a read row waits for its commit, in milliseconds.
    pub commit_interval_ms: u64,
    /// Rows that make a commit happen before the interval ends.
    pub commit_rows: usize,
    /// How far back (by `received_at`) duplicates are found in memory, in hours; older ones are
    /// found in their partition.
    pub dedup_window_hours: u64,
    /// Exit 0 once every shard is read to its tip and committed (batch runs, tests).
    pub stop_when_caught_up: bool,
    /// Address for `GET /metrics` (Prometheus) and `GET /healthz`; port 0 picks a free port,
    /// printed as `listening on ADDR` on the first line of stdout.
    pub metrics_listen: Option<SocketAddr>,
    /// `I/N`: this is worker I (from 0) of N splitting the shards.
    pub worker: String,
    /// Kinesis stream that every row committed to `events` is also published to (the
    /// cleansed stream); unset means none.
    pub clean_stream: Option<String>,
    /// TOML file of cleansing rules (`crate::rules`); unset means none.
    pub rules: Option<PathBuf>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            stream: String::new(),
            lake: String::new(),
            kinesis_endpoint: None,
            region: "us-east-1".to_owned(),
            commit_interval_ms: DEFAULT_COMMIT_INTERVAL.as_millis() as u64,
            commit_rows: DEFAULT_COMMIT_ROWS,
            dedup_window_hours: DEFAULT_DEDUP_WINDOW.as_secs() / 3600,
            stop_when_caught_up: false,
            metrics_listen: None,
            worker: "0/1".to_owned(),
            clean_stream: None,
            rules: None,
        }
    }
}

/// Flags of `tern-lake ingest`; each can also be set as `TERN_LAKE_<NAME>` or in the file.
#[derive(Debug, Default, Args, Serialize)]
pub struct IngestArgs {
    /// TOML configuration file (also `TERN_LAKE_CONFIG`).
    #[arg(long, env = "TERN_LAKE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Kinesis stream to read.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Directory or URI of the lake.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lake: Option<String>,
    /// Kinesis endpoint URL (a local Kinesis server).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kinesis_endpoint: Option<String>,
    /// AWS region.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Commit interval in milliseconds (default 10 000).
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_interval_ms: Option<u64>,
    /// Rows that trigger a commit before the interval (default 100 000).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_rows: Option<usize>,
    /// Dedup window in hours (default 48).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedup_window_hours: Option<u64>,
    /// Exit once every shard is read to its tip and committed. Bare flag means true.
    #[arg(
        long,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_when_caught_up: Option<bool>,
    /// Address for /metrics and /healthz.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// `I/N`: worker I (from 0) of N splitting the shards.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Also publish every committed row to this Kinesis stream (the cleansed stream).
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clean_stream: Option<String>,
    /// TOML file of cleansing rules applied to every event.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<PathBuf>,
}

impl IngestArgs {
    /// The settings: defaults, then the file, the environment and the flags; validated.
    pub fn into_config(self) -> Result<IngestConfig> {
        let mut figment = Figment::from(Serialized::defaults(IngestConfig::default()));
        if let Some(path) = &self.config {
            if !path.is_file() {
                return Err(Error::Config(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        let config: IngestConfig = figment
            .merge(Env::prefixed(ENV_PREFIX).ignore(&["config", "log"]))
            .merge(Serialized::defaults(&self))
            .extract()
            .map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }
}

impl IngestConfig {
    /// Checks what parses but makes no sense, naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.stream.is_empty() {
            return Err(Error::Config("stream: no Kinesis stream is set".into()));
        }
        if self.lake.is_empty() {
            return Err(Error::Config(
                "lake: no lake directory or URI is set".into(),
            ));
        }
        if self.commit_interval_ms == 0 {
            return Err(Error::Config(
                "commit_interval_ms: must be more than 0".into(),
            ));
        }
        if self.commit_rows == 0 {
            return Err(Error::Config("commit_rows: must be more than 0".into()));
        }
        if self.dedup_window_hours == 0 {
            return Err(Error::Config(
                "dedup_window_hours: must be more than 0".into(),
            ));
        }
        self.worker()?;
        if self.clean_stream.as_deref() == Some(self.stream.as_str()) {
            return Err(Error::Config(
                "clean_stream: must not be the stream ingest reads".into(),
            ));
        }
        if self.clean_stream.as_deref() == Some("") {
            return Err(Error::Config("clean_stream: empty".into()));
        }
        crate::rules::Rules::load(self.rules.as_deref())?;
        Ok(())
    }

    /// The commit interval.
    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.commit_interval_ms)
    }

    /// The dedup window.
    pub fn dedup_window(&self) -> Duration {
        Duration::from_secs(self.dedup_window_hours * 3600)
    }

    /// The worker split.
    pub fn worker(&self) -> Result<Worker> {
        let bad = || {
            Error::Config(format!(
                "worker: {:?} is not I/N with 0 <= I < N (e.g. 0/1)",
                self.worker
            ))
        };
        let (i, n) = self.worker.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Worker { index, count })
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    #[test]
    fn file_environment_and_flags_in_that_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "lake.toml",
                "stream = \"from-file\"\nlake = \"/tmp/l\"\ncommit_rows = 7\nregion = \"eu-west-1\"\n",
            )?;
            jail.set_env("TERN_LAKE_COMMIT_ROWS", "9");
            jail.set_env("TERN_LAKE_REGION", "eu-central-1");
            let args = IngestArgs {
                config: Some("lake.toml".into()),
                region: Some("us-west-2".into()),
                ..IngestArgs::default()
            };
            let config = args.into_config().map_err(|e| e.to_string())?;
            assert_eq!(config.stream, "from-file");
            assert_eq!(config.commit_rows, 9);
            assert_eq!(config.region, "us-west-2");
            assert_eq!(config.commit_interval_ms, 10_000);
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_field() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("lake.toml", "strem = \"x\"\n")?;
            let args = IngestArgs {
                config: Some("lake.toml".into()),
                ..IngestArgs::default()
            };
            let err = args.into_config().unwrap_err().to_string();
            assert!(err.contains("strem"), "{err}");
            jail.create_file(
                "lake.toml",
                "stream = \"s\"\nlake = \"l\"\nworker = \"3/2\"\n",
            )?;
            let args = IngestArgs {
                config: Some("lake.toml".into()),
                ..IngestArgs::default()
            };
            let err = args.into_config().unwrap_err().to_string();
            assert!(err.contains("worker"), "{err}");
            Ok(())
        });
    }
}
