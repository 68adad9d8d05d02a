//! The collector's at-least-once promise under Kinesis faults and its own death, with real
//! processes: kinesalite, the fault proxy in front of it, tern-collector, tern-loadgen.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tern_tests::process::{free_port, loadgen, CollectorOptions, FaultProxyProcess};
use tern_tests::{unique_stream, Collector, Kinesalite};

/// The accounting rule of docs/metrics.md: every event received leaves through one outcome.
fn assert_balanced(collector: &Collector) {
    let text = collector.metrics().unwrap();
    let sum = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    let received = sum("tern_collector_events_received_total");
    let outcomes = sum("tern_collector_events_delivered_total")
        + sum("tern_collector_events_dead_lettered_total")
        + sum("tern_collector_events_rejected_total")
        + sum("tern_collector_events_duplicate_total");
    assert_eq!(received, outcomes, "metrics do not balance:\n{text}");
}

fn loadgen_args<'a>(
    url: &'a str,
    kinesis: &'a str,
    stream: &'a str,
    events: &'a str,
) -> Vec<&'a str> {
    vec![
        "--collector",
        url,
        "--events",
        events,
        "--devices",
        "32",
        "--batch",
        "250",
        "--kinesis-endpoint",
        kinesis,
        "--stream",
        stream,
        "--max-seconds",
        "400",
    ]
}

#[test]
fn throttling_half_the_records_and_failing_5_percent_of_calls_loses_nothing() {
    let kinesis = Kinesalite::start().unwrap();
    let stream = unique_stream("faults");
    kinesis.create_stream(&stream, 4).unwrap();
    let proxy = FaultProxyProcess::start(
        &kinesis.endpoint,
        &["--throttle-share", "0.5", "--error-share", "0.05"],
    )
    .unwrap();
    let collector = Collector::start(&CollectorOptions::new(&proxy.url, &stream)).unwrap();

    let report = loadgen(&loadgen_args(
        &collector.url,
        &kinesis.endpoint,
        &stream,
        "200000",
    ))
    .unwrap();
    eprintln!("{report:#?}");
    let stats = proxy.stats().unwrap();
    eprintln!("{stats:#?}");
    assert_eq!(
        report.events_acked, 200_000,
        "every event acknowledged in the end"
    );
    assert_eq!(report.lost, 0);
    assert_eq!(report.delivered_unique, 200_000);
    assert!(
        stats.records_throttled > 50_000,
        "the proxy throttled for real: {stats:?}"
    );
    assert!(
        stats.requests_failed > 0,
        "the proxy failed calls for real: {stats:?}"
    );
    assert_balanced(&collector);
    assert!(
        collector
            .metric("tern_collector_records_throttled_total")
            .unwrap()
            > 0.0
    );
}

/// A collector on a fixed port (so it can be restarted there), with tern-loadgen sending it
/// 60 000 events at 15 000/s in a thread and reading the stream back at the end.
struct UnderLoad {
    _kinesis: Kinesalite,
    options: CollectorOptions,
    collector: Collector,
    load: std::thread::JoinHandle<anyhow::Result<tern_tests::loadgen::Report>>,
}

fn under_load(name: &str) -> UnderLoad {
    let kinesis = Kinesalite::start().unwrap();
    let stream = unique_stream(name);
    kinesis.create_stream(&stream, 2).unwrap();
    let mut options = CollectorOptions::new(&kinesis.endpoint, &stream);
    options.listen = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
    // The final event accounting is logged at info when the collector stops.
    options.env = vec![("TERN_LOG".into(), "error,tern_collector=info".into())];
    let collector = Collector::start(&options).unwrap();
    let (url, endpoint) = (collector.url.clone(), kinesis.endpoint.clone());
    let load = std::thread::spawn(move || {
        loadgen(&[
            "--collector",
            &url,
            "--events",
            "60000",
            "--devices",
            "16",
            "--batch",
            "100",
            "--rate",
            "15000",
            "--kinesis-endpoint",
            &endpoint,
            "--stream",
            &stream,
            "--max-seconds",
            "120",
        ])
    });
    std::thread::sleep(Duration::from_secs(2));
    UnderLoad {
        _kinesis: kinesis,
        options,
        collector,
        load,
    }
}

/// What SIGKILL leaves to check: the killed instance's counters die with it (it cannot report
/// them, and events of its unfinished uploads were counted as received without an outcome), so
/// its balance cannot be checked. What can be: nothing it acknowledged is missing from the
/// stream (the load generator reads it back), its unacknowledged uploads are resent and
/// acknowledged by the restarted instance, and that instance's own counters balance.
#[test]
fn sigkill_of_the_collector_under_load_loses_nothing_it_acknowledged() {
    let UnderLoad {
        _kinesis,
        options,
        mut collector,
        load,
    } = under_load("kill");
    collector.kill();
    std::thread::sleep(Duration::from_secs(1));
    let collector = Collector::start(&options).unwrap();
    let report = load.join().unwrap().unwrap();
    eprintln!("{report:#?}");
    assert_eq!(report.lost, 0, "an acknowledged event is missing");
    assert_eq!(report.events_acked, 60_000);
    assert!(
        report.responses.get(&0).copied().unwrap_or(0) > 0,
        "requests failed while it was down: {:?}",
        report.responses
    );
    assert_balanced(&collector);
}

#[test]
fn sigterm_under_load_drains_exits_in_time_and_loses_nothing() {
    let UnderLoad {
        _kinesis,
        options,
        mut collector,
        load,
    } = under_load("term");
    let before = collector
        .metric("tern_collector_events_received_total")
        .unwrap();
    assert!(before > 0.0, "load is flowing");
    let stopping = Instant::now();
    let code = collector.terminate(Duration::from_secs(20));
    let took = stopping.elapsed();
    assert_eq!(code, Some(0), "exited cleanly within the deadline");
    eprintln!("SIGTERM → exit in {took:?}");
    // The terminated instance's own counts, logged once its last handler ended: every event
    // it received left through one outcome, including uploads cut off by the drain.
    let last = collector
        .final_accounting(Duration::from_secs(5))
        .expect("the terminated collector logged its final event accounting");
    eprintln!("terminated instance: {last:?}");
    assert!(last.received >= before as u64, "{last:?}");
    assert!(
        last.balanced(),
        "the terminated instance balances: {last:?}"
    );
    let collector = Collector::start(&options).unwrap();
    let report = load.join().unwrap().unwrap();
    eprintln!("{report:#?}");
    assert_eq!(report.lost, 0);
    assert_eq!(report.events_acked, 60_000);
    assert_balanced(&collector);
}

fn readyz(url: &str) -> u16 {
    reqwest::blocking::get(format!("{url}/readyz")).map_or(0, |r| r.status().as_u16())
}

fn wait_for_readyz(url: &str, status: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if readyz(url) == status {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn readiness_follows_kinesis_and_turns_off_while_draining() {
    use tern_tests::fault_proxy::Faults;
    let kinesis = Kinesalite::start().unwrap();
    let stream = unique_stream("ready");
    kinesis.create_stream(&stream, 1).unwrap();
    let proxy = FaultProxyProcess::start(&kinesis.endpoint, &[]).unwrap();
    let mut options = CollectorOptions::new(&proxy.url, &stream);
    options.extra_args = vec!["--shutdown-delay-ms".into(), "1500".into()];
    let mut collector = Collector::start(&options).unwrap();
    assert_eq!(readyz(&collector.url), 200, "ready at start");
    assert_eq!(collector.metric("tern_collector_ready").unwrap(), 1.0);

    proxy
        .set(&Faults {
            outage: true,
            ..Faults::default()
        })
        .unwrap();
    assert!(
        wait_for_readyz(&collector.url, 503, Duration::from_secs(30)),
        "unready during the outage"
    );
    proxy.set(&Faults::default()).unwrap();
    assert!(
        wait_for_readyz(&collector.url, 200, Duration::from_secs(30)),
        "ready again after it"
    );

    // SIGTERM: unready at once, still serving during the delay, then gone.
    let pid = collector.pid().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(
        wait_for_readyz(&collector.url, 503, Duration::from_secs(1)),
        "unready while draining"
    );
    assert_eq!(
        reqwest::blocking::get(format!("{}/healthz", collector.url))
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(collector.terminate(Duration::from_secs(10)), Some(0));
}

/// A client that gives up while its upload waits for Kinesis (here: every PutRecords call
/// hangs) cancels the handler; its events are still accounted for, as `cancelled`.
#[test]
fn an_upload_abandoned_by_its_client_is_accounted_as_cancelled() {
    let kinesis = Kinesalite::start().unwrap();
    let stream = unique_stream("abandoned");
    kinesis.create_stream(&stream, 1).unwrap();
    let proxy = FaultProxyProcess::start(
        &kinesis.endpoint,
        &["--hang-share", "1", "--hang-ms", "30000"],
    )
    .unwrap();
    let collector = Collector::start(&CollectorOptions::new(&proxy.url, &stream)).unwrap();
    let batch = serde_json::json!({
        "batch_id": uuid::Uuid::now_v7(),
        "install_id": "abandoned",
        "sent_at": chrono::Utc::now(),
        "sdk": { "name": "test", "version": "0" },
        "context": {},
        "events": (1..=3).map(|seq| serde_json::json!({
            "event_id": uuid::Uuid::now_v7(), "seq": seq, "name": "ok",
            "created_at": chrono::Utc::now(), "properties": {}
        })).collect::<Vec<_>>()
    });
    let impatient = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let answer = impatient
        .post(format!("{}/v1/batch", collector.url))
        .bearer_auth(tern_tests::WRITE_KEY)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&batch).unwrap())
        .send();
    assert!(answer.is_err(), "no answer while Kinesis hangs: {answer:?}");
    let series = "tern_collector_events_rejected_total{reason=\"cancelled\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    while collector.metric(series).unwrap() < 3.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(collector.metric(series).unwrap(), 3.0);
    assert_balanced(&collector);
    assert!(
        proxy.stats().unwrap().requests_hung > 0,
        "the proxy held calls"
    );
}

fn one_event_batch(install: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "batch_id": uuid::Uuid::now_v7(),
        "install_id": install,
        "sent_at": chrono::Utc::now(),
        "sdk": { "name": "test", "version": "0" },
        "context": {},
        "events": [{
            "event_id": uuid::Uuid::now_v7(), "seq": 1, "name": "ok",
            "created_at": chrono::Utc::now(), "properties": {}
        }]
    }))
    .unwrap()
}

/// The ack deadline runs from the request's arrival: a body still trickling in when it passes is
/// answered 408, not read on (up to 15 s) and then given a whole deadline of its own.
#[test]
fn the_ack_deadline_runs_from_arrival_and_covers_the_body() {
    use std::io::{BufRead, BufReader, Write};
    let kinesis = Kinesalite::start().unwrap();
    let stream = unique_stream("deadline-body");
    kinesis.create_stream(&stream, 1).unwrap();
    let mut options = CollectorOptions::new(&kinesis.endpoint, &stream);
    options.extra_args = vec!["--ack-deadline-ms".into(), "1000".into()];
    let collector = Collector::start(&options).unwrap();
    let body = one_event_batch("slow-body");
    let mut connection =
        std::net::TcpStream::connect(collector.url.trim_start_matches("http://")).unwrap();
    connection
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        connection,
        "POST /v1/batch HTTP/1.1\r\nHost: tern\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        tern_tests::WRITE_KEY,
        body.len()
    )
    .unwrap();
    // The body over ~4 s, four times the deadline; the collector may answer and close midway.
    let pieces = body.chunks(body.len().div_ceil(8)).collect::<Vec<_>>();
    for piece in pieces {
        if connection.write_all(piece).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut status_line = String::new();
    BufReader::new(&connection)
        .read_line(&mut status_line)
        .unwrap();
    assert!(
        status_line.starts_with("HTTP/1.1 408"),
        "answered at the deadline: {status_line:?}"
    );
    assert!(kinesis.reader(&stream).unwrap().read().unwrap().is_empty());
}

/// An upload whose PutRecords calls all hang (fault proxy `hang_share`) is answered 503 with
/// Retry-After once the ack deadline passes, and its events are accounted as rejected.
#[test]
fn an_upload_stuck_in_kinesis_gets_503_with_retry_after_at_the_deadline() {
    let kinesis = Kinesalite::start().unwrap();
    let stream = unique_stream("deadline-hang");
    kinesis.create_stream(&stream, 1).unwrap();
    let proxy = FaultProxyProcess::start(
        &kinesis.endpoint,
        &["--hang-share", "1", "--hang-ms", "30000"],
    )
    .unwrap();
    let mut options = CollectorOptions::new(&proxy.url, &stream);
    options.extra_args = vec!["--ack-deadline-ms".into(), "2000".into()];
    let collector = Collector::start(&options).unwrap();
    let response = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .post(format!("{}/v1/batch", collector.url))
        .bearer_auth(tern_tests::WRITE_KEY)
        .header("content-type", "application/json")
        .body(one_event_batch("stuck"))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let reason: tern_protocol::ErrorBody = serde_json::from_str(&response.text().unwrap()).unwrap();
    assert_eq!(reason.error, "stream_unavailable");
    assert_eq!(
        collector
            .metric("tern_collector_events_rejected_total{reason=\"stream_unavailable\"}")
            .unwrap(),
        1.0
    );
    assert_balanced(&collector);
}

/// The fault proxy forwards PutRecords calls bigger than axum's default 2 MiB body limit (it
/// used to answer them 413 itself, a fault nobody asked for).
#[test]
fn put_records_calls_over_2_mib_pass_the_fault_proxy() {
    let kinesis = Kinesalite::start().unwrap();
    let stream = unique_stream("big-call");
    kinesis.create_stream(&stream, 1).unwrap();
    let proxy = FaultProxyProcess::start(&kinesis.endpoint, &[]).unwrap();
    let collector = Collector::start(&CollectorOptions::new(&proxy.url, &stream)).unwrap();
    let padding = "x".repeat(8_000);
    let batch = serde_json::json!({
        "batch_id": uuid::Uuid::now_v7(),
        "install_id": "big-call",
        "sent_at": chrono::Utc::now(),
        "sdk": { "name": "test", "version": "0" },
        "context": {},
        "events": (1..=500).map(|seq| serde_json::json!({
            "event_id": uuid::Uuid::now_v7(), "seq": seq, "name": "ok",
            "created_at": chrono::Utc::now(), "properties": { "padding": padding }
        })).collect::<Vec<_>>()
    });
    let json = serde_json::to_vec(&batch).unwrap();
    assert!(json.len() > 3 * 1024 * 1024, "{} bytes", json.len());
    let response = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .post(format!("{}/v1/batch", collector.url))
        .bearer_auth(tern_tests::WRITE_KEY)
        .header("content-type", "application/json")
        .header("content-encoding", "zstd")
        .body(zstd::bulk::compress(&json, 3).unwrap())
        .send()
        .unwrap();
    let status = response.status().as_u16();
    assert_eq!(status, 200, "{}", response.text().unwrap());
    let stats = proxy.stats().unwrap();
    assert_eq!(
        (stats.put_records_calls, stats.records),
        (1, 500),
        "{stats:?}"
    );
    let read = kinesis
        .reader(&stream)
        .unwrap()
        .read_until(Duration::from_secs(10), |r| r.len() >= 500)
        .unwrap();
    assert_eq!(read.len(), 500);
}
