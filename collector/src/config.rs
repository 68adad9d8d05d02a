//! Collector configuration: a TOML file, environment variables and flags, in that order of
//! precedence (a flag beats the environment, which beats the file).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::limits::{
    DEFAULT_ACK_DEADLINE, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_IN_FLIGHT_BYTES,
    DEFAULT_SHUTDOWN_DEADLINE, DEFAULT_SHUTDOWN_DELAY, MAX_APP_ID_BYTES, MAX_INSTANCE_ID_BYTES,
    MAX_UPLOAD_RECORD_BYTES, SDK_REQUEST_TIMEOUT,
};

/// The collector's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (printed at start).
    pub listen: SocketAddr,
    /// Kinesis stream that receives valid events.
    pub stream: String,
    /// Kinesis stream that receives invalid events with the reason. Without it, a batch with an
    /// invalid event is refused whole (400), so that nothing is dropped.
    pub dead_letter_stream: Option<String>,
    /// Kinesis endpoint URL; unset means the AWS endpoint of `region`.
    pub kinesis_endpoint: Option<String>,
    /// AWS region.
    pub region: String,
    /// Write keys and the app id each one writes for.
    pub write_keys: BTreeMap<String, String>,
    /// How long an upload may take from its arrival to its answer before it is answered 503,
    /// in milliseconds. Less than the SDK's request timeout (30 s).
    pub ack_deadline_ms: u64,
    /// Identifier of this collector instance, written in every record; defaults to a fresh id.
    pub instance_id: Option<String>,
    /// Bound on the bytes of uploads in progress (bodies, decoded batches, records waiting for
    /// Kinesis); above it new uploads get 503 at once. At least one upload's worst case.
    pub max_in_flight_bytes: usize,
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
    /// Events per second each write key may send (0: no limit); above it uploads get 429.
    pub rate_limit_events_per_second: u32,
    /// Pack each upload's events into KPL aggregated records (consumers must de-aggregate:
    /// KCL and the AWS Lambda de-aggregation libraries do).
    pub aggregate: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            stream: String::new(),
            dead_letter_stream: None,
            kinesis_endpoint: None,
            region: "us-east-1".to_owned(),
            write_keys: BTreeMap::new(),
            ack_deadline_ms: millis(DEFAULT_ACK_DEADLINE),
            instance_id: None,
            max_in_flight_bytes: DEFAULT_MAX_IN_FLIGHT_BYTES,
            header_read_timeout_ms: millis(DEFAULT_HEADER_READ_TIMEOUT),
            shutdown_deadline_ms: millis(DEFAULT_SHUTDOWN_DEADLINE),
            shutdown_delay_ms: millis(DEFAULT_SHUTDOWN_DELAY),
            rate_limit_events_per_second: 0,
            aggregate: false,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Command line of `tern-collector`; every flag can also be set from the environment.
#[derive(Debug, Parser)]
#[command(
    name = "tern-collector",
    version,
    about = "Tern event collector: SDK batches in, Kinesis records out"
)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "TERN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "TERN_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Kinesis stream for events.
    #[arg(long, env = "TERN_STREAM")]
    pub stream: Option<String>,
    /// Kinesis stream for invalid events.
    #[arg(long, env = "TERN_DEAD_LETTER_STREAM")]
    pub dead_letter_stream: Option<String>,
    /// Kinesis endpoint URL (for a local Kinesis server).
    #[arg(long, env = "TERN_KINESIS_ENDPOINT")]
    pub kinesis_endpoint: Option<String>,
    /// AWS region.
    #[arg(long, env = "TERN_REGION")]
    pub region: Option<String>,
    /// A write key, added to those of the config file.
    #[arg(long, env = "TERN_WRITE_KEY")]
    pub write_key: Option<String>,
    /// App id of `--write-key`.
    #[arg(long, env = "TERN_APP_ID", default_value = "default")]
    pub app_id: String,
    /// Ack deadline in milliseconds.
    #[arg(long, env = "TERN_ACK_DEADLINE_MS")]
    pub ack_deadline_ms: Option<u64>,
    /// Instance id written in every record.
    #[arg(long, env = "TERN_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Bound on the bytes of uploads in progress.
    #[arg(long, env = "TERN_MAX_IN_FLIGHT_BYTES")]
    pub max_in_flight_bytes: Option<usize>,
    /// Time allowed for a request's line and headers, in milliseconds.
    #[arg(long, env = "TERN_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// Shutdown deadline in milliseconds.
    #[arg(long, env = "TERN_SHUTDOWN_DEADLINE_MS")]
    pub shutdown_deadline_ms: Option<u64>,
    /// Unready period before refusing connections at shutdown, in milliseconds.
    #[arg(long, env = "TERN_SHUTDOWN_DELAY_MS")]
    pub shutdown_delay_ms: Option<u64>,
    /// Events per second per write key (0: no limit).
    #[arg(long, env = "TERN_RATE_LIMIT_EVENTS_PER_SECOND")]
    pub rate_limit_events_per_second: Option<u32>,
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
    pub aggregate: Option<bool>,
}

impl Cli {
    /// The configuration: the file (if any), overridden by environment and flags, validated.
    pub fn into_config(self) -> Result<Config> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::Config(format!("cannot read config file {}: {e}", path.display()))
                })?;
                Config::from_toml(&text)?
            }
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.stream {
            config.stream = v;
        }
        if let Some(v) = self.dead_letter_stream {
            config.dead_letter_stream = Some(v);
        }
        if let Some(v) = self.kinesis_endpoint {
            config.kinesis_endpoint = Some(v);
        }
        if let Some(v) = self.region {
            config.region = v;
        }
        if let Some(key) = self.write_key {
            config.write_keys.insert(key, self.app_id);
        }
        if let Some(v) = self.ack_deadline_ms {
            config.ack_deadline_ms = v;
        }
        if let Some(v) = self.instance_id {
            config.instance_id = Some(v);
        }
        if let Some(v) = self.max_in_flight_bytes {
            config.max_in_flight_bytes = v;
        }
        if let Some(v) = self.header_read_timeout_ms {
            config.header_read_timeout_ms = v;
        }
        if let Some(v) = self.shutdown_deadline_ms {
            config.shutdown_deadline_ms = v;
        }
        if let Some(v) = self.shutdown_delay_ms {
            config.shutdown_delay_ms = v;
        }
        if let Some(v) = self.rate_limit_events_per_second {
            config.rate_limit_events_per_second = v;
        }
        if let Some(v) = self.aggregate {
            config.aggregate = v;
        }
        config.validate()?;
        Ok(config)
    }
}

impl Config {
    /// Parses a TOML configuration; errors name the field at fault.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Config(format!("config file: {e}")))
    }

    /// Checks values that parse but make no sense, naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.stream.is_empty() {
            return Err(Error::Config("stream: no Kinesis stream is set".into()));
        }
        if self.write_keys.is_empty() {
            return Err(Error::Config("write_keys: no write key is set".into()));
        }
        if let Some((key, _)) = self
            .write_keys
            .iter()
            .find(|(k, a)| k.is_empty() || a.is_empty())
        {
            return Err(Error::Config(format!(
                "write_keys: an entry has an empty {}",
                if key.is_empty() { "key" } else { "app id" }
            )));
        }
        if let Some((_, app_id)) = self
            .write_keys
            .iter()
            .find(|(_, a)| a.len() > MAX_APP_ID_BYTES)
        {
            return Err(Error::Config(format!(
                "write_keys: an app id is {} bytes, over the limit of {MAX_APP_ID_BYTES} (it is \
                 copied into every record)",
                app_id.len()
            )));
        }
        if let Some(id) = self
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
        if self.ack_deadline_ms == 0 {
            return Err(Error::Config("ack_deadline_ms: must be more than 0".into()));
        }
        if self.ack_deadline() >= SDK_REQUEST_TIMEOUT {
            return Err(Error::Config(format!(
                "ack_deadline_ms: must be less than the SDK's request timeout ({} ms), or the \
                 SDK gives up before it hears the answer",
                SDK_REQUEST_TIMEOUT.as_millis()
            )));
        }
        if self.shutdown_deadline() < self.ack_deadline() {
            return Err(Error::Config(format!(
                "shutdown_deadline_ms: must be at least ack_deadline_ms ({}), so that uploads in \
                 progress at shutdown can be answered",
                self.ack_deadline_ms
            )));
        }
        if self.max_in_flight_bytes < MAX_UPLOAD_RECORD_BYTES {
            return Err(Error::Config(format!(
                "max_in_flight_bytes: must be at least the largest upload's records \
                 ({MAX_UPLOAD_RECORD_BYTES} bytes), or that upload could never be taken"
            )));
        }
        if self.header_read_timeout_ms == 0 {
            return Err(Error::Config(
                "header_read_timeout_ms: must be more than 0".into(),
            ));
        }
        Ok(())
    }

    /// The shutdown deadline as a duration.
    pub fn shutdown_deadline(&self) -> Duration {
        Duration::from_millis(self.shutdown_deadline_ms)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_name_the_field() {
        let err = Config::from_toml("strem = \"x\"").unwrap_err().to_string();
        assert!(err.contains("strem"), "{err}");
        let err = Config::from_toml("listen = \"nope\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let _env = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "stream = \"from-file\"\nregion = \"eu-west-1\"\n[write_keys]\nk1 = \"app1\"\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "tern-collector",
            "--config",
            path.to_str().unwrap(),
            "--stream",
            "from-flag",
            "--write-key",
            "k2",
            "--app-id",
            "app2",
        ]);
        let config = cli.into_config().unwrap();
        assert_eq!(config.stream, "from-flag");
        assert_eq!(config.region, "eu-west-1");
        assert_eq!(
            config.write_keys.get("k1").map(String::as_str),
            Some("app1")
        );
        assert_eq!(
            config.write_keys.get("k2").map(String::as_str),
            Some("app2")
        );
    }

    /// Tests that parse a command line read the process's `TERN_*` variables: the one that sets
    /// them holds this lock, and so do the others, so none sees another's environment.
    static ENVIRONMENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// `aggregate` from the file, `TERN_AGGREGATE` and `--aggregate` agree, a flag beating the
    /// environment beating the file, in both directions: `aggregate = true` in the file used to be
    /// impossible to turn off.
    #[test]
    fn aggregate_from_file_environment_and_flag_agree_with_flags_winning() {
        let _env = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let config_with = |aggregate: Option<bool>| {
            let path = dir.path().join(format!("{aggregate:?}.toml"));
            let line = aggregate.map_or(String::new(), |a| format!("aggregate = {a}\n"));
            std::fs::write(
                &path,
                format!("{line}stream = \"s\"\n[write_keys]\nk = \"a\"\n"),
            )
            .unwrap();
            path.to_str().unwrap().to_owned()
        };
        /// File, `TERN_AGGREGATE`, flag, and the expected setting.
        type Case = (
            Option<bool>,
            Option<&'static str>,
            Option<&'static str>,
            bool,
        );
        let cases: [Case; 11] = [
            (None, None, None, false),
            (Some(true), None, None, true),
            (Some(false), None, None, false),
            (Some(true), Some("false"), None, false),
            (Some(false), Some("true"), None, true),
            (Some(true), Some("0"), None, false),
            (Some(true), Some("false"), Some("--aggregate"), true),
            (Some(true), None, Some("--aggregate=false"), false),
            (Some(false), Some("true"), Some("--aggregate=false"), false),
            (None, Some("off"), Some("--aggregate=yes"), true),
            (None, None, Some("--aggregate"), true),
        ];
        for (file, env, flag, expected) in cases {
            match env {
                Some(v) => std::env::set_var("TERN_AGGREGATE", v),
                None => std::env::remove_var("TERN_AGGREGATE"),
            }
            let path = config_with(file);
            let mut args = vec!["tern-collector", "--config", &path];
            args.extend(flag);
            let config = Cli::try_parse_from(&args).unwrap().into_config().unwrap();
            assert_eq!(
                config.aggregate, expected,
                "file {file:?}, env {env:?}, flag {flag:?}"
            );
        }
        std::env::set_var("TERN_AGGREGATE", "perhaps");
        let err = Cli::try_parse_from(["tern-collector"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("aggregate"), "{err}");
        std::env::remove_var("TERN_AGGREGATE");
        // A bare flag takes no value from the next argument.
        let cli = Cli::try_parse_from(["tern-collector", "--aggregate", "--stream", "s"]).unwrap();
        assert_eq!(
            (cli.aggregate, cli.stream.as_deref()),
            (Some(true), Some("s"))
        );
    }

    #[test]
    fn missing_stream_is_an_error_naming_it() {
        let err = Config::default().validate().unwrap_err().to_string();
        assert!(err.contains("stream"), "{err}");
    }

    #[test]
    fn an_in_flight_bound_below_one_upload_is_refused() {
        let mut config = Config {
            stream: "s".into(),
            write_keys: [("k".to_owned(), "a".to_owned())].into_iter().collect(),
            ..Config::default()
        };
        config.validate().unwrap();
        config.max_in_flight_bytes = MAX_UPLOAD_RECORD_BYTES - 1;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("max_in_flight_bytes"), "{err}");
    }

    /// The app id and the instance id are copied into every record and dead letter: bounded, so
    /// that a dead letter's size stays bounded whatever the event holds.
    #[test]
    fn ids_copied_into_every_record_are_bounded() {
        let valid = Config {
            stream: "s".into(),
            write_keys: [("k".to_owned(), "a".repeat(MAX_APP_ID_BYTES))]
                .into_iter()
                .collect(),
            instance_id: Some("i".repeat(MAX_INSTANCE_ID_BYTES)),
            ..Config::default()
        };
        valid.validate().unwrap();
        let long_app = Config {
            write_keys: [("k".to_owned(), "a".repeat(MAX_APP_ID_BYTES + 1))]
                .into_iter()
                .collect(),
            ..valid.clone()
        };
        let err = long_app.validate().unwrap_err().to_string();
        assert!(err.contains("write_keys"), "{err}");
        let long_instance = Config {
            instance_id: Some("i".repeat(MAX_INSTANCE_ID_BYTES + 1)),
            ..valid
        };
        let err = long_instance.validate().unwrap_err().to_string();
        assert!(err.contains("instance_id"), "{err}");
    }

    #[test]
    fn deadlines_must_fit_the_sdk_timeout_and_the_shutdown() {
        let valid = Config {
            stream: "s".into(),
            write_keys: [("k".to_owned(), "a".to_owned())].into_iter().collect(),
            ..Config::default()
        };
        valid.validate().unwrap();
        let too_long = Config {
            ack_deadline_ms: millis(SDK_REQUEST_TIMEOUT),
            shutdown_deadline_ms: 60_000,
            ..valid.clone()
        };
        let err = too_long.validate().unwrap_err().to_string();
        assert!(err.contains("ack_deadline_ms"), "{err}");
        let short_shutdown = Config {
            ack_deadline_ms: 10_000,
            shutdown_deadline_ms: 9_999,
            ..valid
        };
        let err = short_shutdown.validate().unwrap_err().to_string();
        assert!(err.contains("shutdown_deadline_ms"), "{err}");
    }
}
