//! The lake on S3: a local S3 API server that supports conditional writes (moto server from
//! PyPI, pinned in tools/requirements-dev.txt; it refuses a second `If-None-Match: *` put with
//! 412, as S3 does), so delta-rs commits there the way it does on AWS. Its own test binary: it
//! points the AWS environment of the processes it starts at that server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use tern_tests::lake::{batch, ingest_until_caught_up, post, sql, sql_number, start_ingest};
use tern_tests::process::{free_port, CollectorOptions};
use tern_tests::{unique_stream, workspace_root, Collector, Kinesalite};
use uuid::Uuid;

/// moto's S3 server on a free 127.0.0.1 port; killed when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Self {
        let bin = workspace_root().join(".venv/bin/moto_server");
        assert!(
            bin.exists(),
            "{} is missing: run `make test` (it creates .venv)",
            bin.display()
        );
        let port = free_port().unwrap();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    fn create_bucket(&self, bucket: &str) {
        let status = Command::new(workspace_root().join(".venv/bin/python"))
            .args([
                "-c",
                "import boto3, sys; boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', \
                 aws_access_key_id='tern-test', aws_secret_access_key='tern-test').create_bucket(Bucket=sys.argv[2])",
                &self.endpoint,
                bucket,
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_lake_on_s3_holds_every_event_once_with_two_workers_committing_concurrently() {
    let moto = Moto::start();
    moto.create_bucket("tern-lake");
    // For every process started below: the object store (tern-lake) reads these; the Kinesis
    // clients get their endpoint by flag, which wins.
    std::env::set_var("AWS_ENDPOINT_URL", &moto.endpoint);
    std::env::set_var("AWS_ALLOW_HTTP", "true");
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_ACCESS_KEY_ID", "tern-test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "tern-test");

    let kinesis = Kinesalite::start().unwrap();
    let stream = unique_stream("lake-s3");
    kinesis.create_stream(&stream, 2).unwrap();
    let collector = Collector::start(&CollectorOptions::new(&kinesis.endpoint, &stream)).unwrap();
    let client = reqwest::blocking::Client::new();
    let lake = "s3://tern-lake/lake";
    let mut expected = HashSet::new();
    let mut send = |n: u64| {
        let (body, ids) = batch(&format!("install-{}", n % 5), n * 10 + 1, 10, Utc::now());
        assert_eq!(post(&client, &collector.url, &body).unwrap(), 200);
        expected.extend(ids.iter().map(Uuid::to_string));
    };
    for n in 0..20 {
        send(n);
    }
    let summary = ingest_until_caught_up(&kinesis.endpoint, &stream, lake, &[]).unwrap();
    assert_eq!(summary["rows_written"], 200, "{summary}");

    // Two workers reading the same shards commit to the same S3 table at once: the conditional
    // put lets exactly one commit take each version.
    let args = ["--commit-interval-ms", "150"];
    let mut workers = [
        start_ingest(&kinesis.endpoint, &stream, lake, &args).unwrap(),
        start_ingest(&kinesis.endpoint, &stream, lake, &args).unwrap(),
    ];
    for n in 20..80 {
        send(n);
        std::thread::sleep(Duration::from_millis(30));
    }
    std::thread::sleep(Duration::from_secs(2));
    for worker in &mut workers {
        assert_eq!(worker.terminate(Duration::from_secs(30)), Some(0));
    }
    ingest_until_caught_up(&kinesis.endpoint, &stream, lake, &[]).unwrap();
    let rows = sql_number(lake, "SELECT count(*) FROM events", None).unwrap();
    let found: HashSet<String> = sql(lake, "SELECT event_id FROM events", None)
        .unwrap()
        .into_iter()
        .map(|r| r["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(found, expected);
    assert_eq!(rows as usize, expected.len());
}
