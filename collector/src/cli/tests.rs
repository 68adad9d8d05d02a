use clap::Parser;

use super::*;

/// Writes `toml` as `name` in `dir`; its path, for `--config`.
fn config_file(dir: &tempfile::TempDir, name: &str, toml: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, toml).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn flags_override_the_file() {
    let _env = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(
        &dir,
        "c.toml",
        "[kinesis]\nstream = \"from-file\"\nregion = \"eu-west-1\"\n[keys.write_keys]\nk1 = \"app1\"\n",
    );
    let cli = Cli::parse_from([
        "tern-collector",
        "--config",
        &path,
        "--stream",
        "from-flag",
        "--write-key",
        "k2",
        "--app-id",
        "app2",
    ]);
    let config = cli.into_config().unwrap();
    assert_eq!(config.kinesis.stream, "from-flag");
    assert_eq!(config.kinesis.region, "eu-west-1");
    assert_eq!(
        config.keys.write_keys.get("k1").map(String::as_str),
        Some("app1")
    );
    assert_eq!(
        config.keys.write_keys.get("k2").map(String::as_str),
        Some("app2")
    );
}

/// Tests that parse a command line read the process's `TERN_*` variables: the one that sets
/// them holds this lock, and so do the others, so none sees another's environment.
static ENVIRONMENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Every field from the file, its `TERN_*` variable and its flag, in that order of precedence,
/// with the same names as before the sections.
#[test]
fn every_field_is_settable_from_file_environment_and_flag() {
    let _env = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // (section, field, file value, environment variable, environment value, flag, flag value)
    let fields: [(&str, &str, &str, &str, &str, &str, &str); 14] = [
        (
            "server",
            "listen",
            "\"127.0.0.1:1\"",
            "TERN_LISTEN",
            "127.0.0.1:2",
            "--listen",
            "127.0.0.1:3",
        ),
        (
            "server",
            "instance_id",
            "\"f\"",
            "TERN_INSTANCE_ID",
            "e",
            "--instance-id",
            "c",
        ),
        (
            "server",
            "ack_deadline_ms",
            "1001",
            "TERN_ACK_DEADLINE_MS",
            "1002",
            "--ack-deadline-ms",
            "1003",
        ),
        (
            "server",
            "header_read_timeout_ms",
            "1",
            "TERN_HEADER_READ_TIMEOUT_MS",
            "2",
            "--header-read-timeout-ms",
            "3",
        ),
        (
            "server",
            "shutdown_deadline_ms",
            "20001",
            "TERN_SHUTDOWN_DEADLINE_MS",
            "20002",
            "--shutdown-deadline-ms",
            "20003",
        ),
        (
            "server",
            "shutdown_delay_ms",
            "1",
            "TERN_SHUTDOWN_DELAY_MS",
            "2",
            "--shutdown-delay-ms",
            "3",
        ),
        (
            "kinesis",
            "stream",
            "\"f\"",
            "TERN_STREAM",
            "e",
            "--stream",
            "c",
        ),
        (
            "kinesis",
            "dead_letter_stream",
            "\"f\"",
            "TERN_DEAD_LETTER_STREAM",
            "e",
            "--dead-letter-stream",
            "c",
        ),
        (
            "kinesis",
            "endpoint",
            "\"http://f\"",
            "TERN_KINESIS_ENDPOINT",
            "http://e",
            "--kinesis-endpoint",
            "http://c",
        ),
        (
            "kinesis",
            "region",
            "\"f\"",
            "TERN_REGION",
            "e",
            "--region",
            "c",
        ),
        (
            "kinesis",
            "aggregate",
            "true",
            "TERN_AGGREGATE",
            "false",
            "--aggregate",
            "true",
        ),
        (
            "kinesis",
            "record_version",
            "2",
            "TERN_RECORD_VERSION",
            "1",
            "--record-version",
            "2",
        ),
        (
            "limits",
            "max_in_flight_bytes",
            "20000001",
            "TERN_MAX_IN_FLIGHT_BYTES",
            "20000002",
            "--max-in-flight-bytes",
            "20000003",
        ),
        (
            "limits",
            "rate_limit_events_per_second",
            "1",
            "TERN_RATE_LIMIT_EVENTS_PER_SECOND",
            "2",
            "--rate-limit-events-per-second",
            "3",
        ),
    ];
    let as_toml = |config: &Config, section: &str, field: &str| {
        let value = toml::Value::try_from(config).unwrap();
        value[section][field].to_string()
    };
    // The file sets every field, a section (a TOML table) once each.
    let mut sections: BTreeMap<&str, String> = BTreeMap::new();
    for (section, field, value, ..) in fields {
        sections
            .entry(section)
            .or_default()
            .push_str(&format!("{field} = {value}\n"));
    }
    let file: String = std::iter::once("[keys.write_keys]\nk = \"a\"\n".to_owned())
        .chain(sections.iter().map(|(s, lines)| format!("[{s}]\n{lines}")))
        .collect();
    let path = config_file(&dir, "c.toml", &file);
    let clear = || {
        for (_, _, _, env, ..) in fields {
            std::env::remove_var(env);
        }
    };
    clear();
    let from_file = Cli::parse_from(["tern-collector", "--config", &path])
        .into_config()
        .unwrap();
    for (section, field, value, env, env_value, flag, flag_value) in fields {
        assert_eq!(
            as_toml(&from_file, section, field),
            value,
            "{field} from the file"
        );
        std::env::set_var(env, env_value);
        let from_env = Cli::try_parse_from(["tern-collector", "--config", &path])
            .unwrap()
            .into_config()
            .unwrap();
        let got = as_toml(&from_env, section, field);
        assert!(
            got == env_value || got == format!("{env_value:?}"),
            "{field} from {env}: {got}"
        );
        let flagged = format!("{flag}={flag_value}");
        let from_flag = Cli::try_parse_from(["tern-collector", "--config", &path, &flagged])
            .unwrap()
            .into_config()
            .unwrap();
        let got = as_toml(&from_flag, section, field);
        assert!(
            got == flag_value || got == format!("{flag_value:?}"),
            "{field} from {flag}: {got}"
        );
        std::env::remove_var(env);
    }
    clear();
    // Write keys: the file's, plus one from `TERN_WRITE_KEY` (its app id from `TERN_APP_ID`),
    // which `--write-key` and `--app-id` replace.
    let write_keys = |args: &[&str]| {
        let mut argv = vec!["tern-collector", "--config", &path];
        argv.extend(args);
        let config = Cli::try_parse_from(argv).unwrap().into_config().unwrap();
        config.keys.write_keys.into_iter().collect::<Vec<_>>()
    };
    let pair = |k: &str, a: &str| (k.to_owned(), a.to_owned());
    std::env::set_var("TERN_WRITE_KEY", "k-env");
    std::env::set_var("TERN_APP_ID", "app-env");
    assert_eq!(write_keys(&[]), [pair("k", "a"), pair("k-env", "app-env")]);
    assert_eq!(
        write_keys(&["--write-key", "k-flag"]),
        [pair("k", "a"), pair("k-flag", "app-env")]
    );
    assert_eq!(
        write_keys(&["--write-key", "k-flag", "--app-id", "app-flag"]),
        [pair("k", "a"), pair("k-flag", "app-flag")]
    );
    std::env::remove_var("TERN_WRITE_KEY");
    std::env::remove_var("TERN_APP_ID");
}

/// `aggregate` from the file, `TERN_AGGREGATE` and `--aggregate` agree, a flag beating the
/// environment beating the file, in both directions: `aggregate = true` in the file used to be
/// impossible to turn off.
#[test]
fn aggregate_from_file_environment_and_flag_agree_with_flags_winning() {
    let _env = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let config_with = |aggregate: Option<bool>| {
        let line = aggregate.map_or(String::new(), |a| format!("aggregate = {a}\n"));
        config_file(
            &dir,
            &format!("{aggregate:?}.toml"),
            &format!("[kinesis]\n{line}stream = \"s\"\n[keys.write_keys]\nk = \"a\"\n"),
        )
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
            config.kinesis.aggregate, expected,
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
        (cli.kinesis.aggregate, cli.kinesis.stream.as_deref()),
        (Some(true), Some("s"))
    );
}

#[test]
fn an_empty_value_unsets_an_optional_setting_of_the_file() {
    let _env = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(
        &dir,
        "c.toml",
        "[server]\ninstance_id = \"file-instance\"\n[kinesis]\nstream = \"s\"\n\
         dead_letter_stream = \"file-dead-letters\"\nendpoint = \"http://127.0.0.1:1\"\n\
         [keys.write_keys]\nk = \"app\"\n",
    );
    let file = path.as_str();

    // The file's values stand when nothing overrides them.
    let config = Cli::parse_from(["tern-collector", "--config", file])
        .into_config()
        .unwrap();
    assert_eq!(config.server.instance_id.as_deref(), Some("file-instance"));
    assert_eq!(
        config.kinesis.dead_letter_stream.as_deref(),
        Some("file-dead-letters")
    );
    assert_eq!(
        config.kinesis.endpoint.as_deref(),
        Some("http://127.0.0.1:1")
    );

    // Empty flags take each of them back.
    let config = Cli::parse_from([
        "tern-collector",
        "--config",
        file,
        "--instance-id",
        "",
        "--dead-letter-stream",
        "",
        "--kinesis-endpoint",
        "",
    ])
    .into_config()
    .unwrap();
    assert_eq!(config.server.instance_id, None);
    assert_eq!(config.kinesis.dead_letter_stream, None);
    assert_eq!(config.kinesis.endpoint, None);

    // So does an empty environment variable.
    std::env::set_var("TERN_DEAD_LETTER_STREAM", "");
    let config = Cli::parse_from(["tern-collector", "--config", file]).into_config();
    std::env::remove_var("TERN_DEAD_LETTER_STREAM");
    assert_eq!(config.unwrap().kinesis.dead_letter_stream, None);
}
