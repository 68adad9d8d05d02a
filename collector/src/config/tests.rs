use super::*;

/// A configuration that passes [`Config::validate`].
fn valid() -> Config {
    let mut config = Config::default();
    config.kinesis.stream = "s".into();
    config.keys.write_keys = [("k".to_owned(), "a".to_owned())].into_iter().collect();
    config
}

#[test]
fn unknown_keys_and_bad_values_name_the_field() {
    let err = Config::from_toml("[kinesis]\nstrem = \"x\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("strem"), "{err}");
    let err = Config::from_toml("[server]\nlisten = \"nope\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("listen"), "{err}");
    let err = Config::from_toml("[sever]\nlisten = \"127.0.0.1:1\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("sever"), "{err}");
}

/// A file written before the sections fails at start, naming the field and its new place.
#[test]
fn a_flat_file_of_before_the_sections_is_refused_with_the_new_place() {
    let err = Config::from_toml("stream = \"events\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("stream") && err.contains("[kinesis] stream"),
        "{err}"
    );
    let err = Config::from_toml("[write_keys]\nk = \"a\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("[keys.write_keys]"), "{err}");
    let err = Config::from_toml("kinesis_endpoint = \"http://127.0.0.1:1\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("[kinesis] endpoint"), "{err}");
}

/// Every section and field of the file, read back as written.
#[test]
fn every_section_is_read_from_the_file() {
    let config = Config::from_toml(
        r#"
        [server]
        listen = "0.0.0.0:9000"
        instance_id = "i-1"
        ack_deadline_ms = 5000
        header_read_timeout_ms = 3000
        shutdown_deadline_ms = 7000
        shutdown_delay_ms = 1000

        [kinesis]
        stream = "events"
        dead_letter_stream = "dead"
        endpoint = "http://127.0.0.1:4567"
        region = "eu-west-1"
        aggregate = true
        record_version = 2

        [limits]
        max_in_flight_bytes = 33554432
        rate_limit_events_per_second = 100

        [keys.write_keys]
        "key.with.dots" = "app1"
        k2 = "app2"
        "#,
    )
    .unwrap();
    let expected = Config {
        server: ServerConfig {
            listen: "0.0.0.0:9000".parse().unwrap(),
            instance_id: Some("i-1".into()),
            ack_deadline_ms: 5000,
            header_read_timeout_ms: 3000,
            shutdown_deadline_ms: 7000,
            shutdown_delay_ms: 1000,
        },
        kinesis: KinesisSinkConfig {
            stream: "events".into(),
            dead_letter_stream: Some("dead".into()),
            endpoint: Some("http://127.0.0.1:4567".into()),
            region: "eu-west-1".into(),
            aggregate: true,
            record_version: 2,
        },
        limits: LimitsConfig {
            max_in_flight_bytes: 32 * 1024 * 1024,
            rate_limit_events_per_second: 100,
        },
        keys: KeysConfig {
            write_keys: [("key.with.dots", "app1"), ("k2", "app2")]
                .into_iter()
                .map(|(k, a)| (k.to_owned(), a.to_owned()))
                .collect(),
        },
    };
    assert_eq!(config, expected);
    config.validate().unwrap();
    // A section left out, or partly written, keeps its defaults.
    let partial = Config::from_toml("[server]\nlisten = \"0.0.0.0:9000\"\n").unwrap();
    assert_eq!(partial.kinesis, KinesisSinkConfig::default());
    assert_eq!(partial.server.ack_deadline_ms, 10_000);
}

/// The documented example file parses and passes the checks, so that it cannot rot.
#[test]
fn the_example_file_is_valid() {
    let text = include_str!("../../collector.example.toml");
    Config::from_toml(text).unwrap().validate().unwrap();
}

#[test]
fn an_unknown_record_version_is_refused() {
    let mut config = valid();
    config.kinesis.record_version = 3;
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("record_version"), "{err}");
    config.kinesis.record_version = 2;
    config.validate().unwrap();
}

#[test]
fn missing_stream_is_an_error_naming_it() {
    let err = Config::default().validate().unwrap_err().to_string();
    assert!(err.contains("stream"), "{err}");
}

#[test]
fn an_in_flight_bound_below_one_upload_is_refused() {
    let mut config = valid();
    config.validate().unwrap();
    config.limits.max_in_flight_bytes = MAX_UPLOAD_RECORD_BYTES - 1;
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("max_in_flight_bytes"), "{err}");
}

/// The app id and the instance id are copied into every record and dead letter: bounded, so
/// that a dead letter's size stays bounded whatever the event holds.
#[test]
fn ids_copied_into_every_record_are_bounded() {
    let mut valid = valid();
    valid.keys.write_keys = [("k".to_owned(), "a".repeat(MAX_APP_ID_BYTES))]
        .into_iter()
        .collect();
    valid.server.instance_id = Some("i".repeat(MAX_INSTANCE_ID_BYTES));
    valid.validate().unwrap();
    let mut long_app = valid.clone();
    long_app.keys.write_keys = [("k".to_owned(), "a".repeat(MAX_APP_ID_BYTES + 1))]
        .into_iter()
        .collect();
    let err = long_app.validate().unwrap_err().to_string();
    assert!(err.contains("write_keys"), "{err}");
    let mut long_instance = valid;
    long_instance.server.instance_id = Some("i".repeat(MAX_INSTANCE_ID_BYTES + 1));
    let err = long_instance.validate().unwrap_err().to_string();
    assert!(err.contains("instance_id"), "{err}");
}

#[test]
fn deadlines_must_fit_the_sdk_timeout_and_the_shutdown() {
    let valid = valid();
    valid.validate().unwrap();
    let mut too_long = valid.clone();
    too_long.server.ack_deadline_ms = millis(SDK_REQUEST_TIMEOUT);
    too_long.server.shutdown_deadline_ms = 60_000;
    let err = too_long.validate().unwrap_err().to_string();
    assert!(err.contains("ack_deadline_ms"), "{err}");
    let mut short_shutdown = valid;
    short_shutdown.server.ack_deadline_ms = 10_000;
    short_shutdown.server.shutdown_deadline_ms = 9_999;
    let err = short_shutdown.validate().unwrap_err().to_string();
    assert!(err.contains("shutdown_deadline_ms"), "{err}");
}
