//! The end-to-end scenario matrix (issue: end-to-end proof). Each function runs one real
//! multi-process scenario and returns its [`Report`]; `Size::Fast` is what `make test` runs,
//! `Size::Full` what `make e2e` runs.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::fault_proxy::Faults;
use crate::process::free_port;
use crate::scenario::{device_db, verify, Cluster, Device, DeviceLog, DeviceSpec, Report};

/// How big a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// Seconds, for `make test`.
    Fast,
    /// Minutes, for `make e2e`.
    Full,
}

impl Size {
    fn pick<T>(self, fast: T, full: T) -> T {
        match self {
            Size::Fast => fast,
            Size::Full => full,
        }
    }
}

/// How long to wait for the stream to hold every expected event.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a device may take to drain its buffer at the end.
const DRAIN: Duration = Duration::from_secs(120);

fn spec(
    dir: &Path,
    n: usize,
    endpoint: &str,
    events: u64,
    interval: Duration,
    preset: &'static str,
) -> DeviceSpec {
    DeviceSpec {
        db: device_db(dir, n),
        endpoint: endpoint.to_owned(),
        events,
        interval,
        preset,
        drain: Some(DRAIN),
        flush_every: 0,
        device: n,
        env: Vec::new(),
        network_signal: None,
        passive_drain: false,
    }
}

fn run_devices(specs: &[DeviceSpec]) -> Result<Vec<DeviceLog>> {
    let devices = specs
        .iter()
        .map(Device::spawn)
        .collect::<Result<Vec<_>>>()?;
    Ok(devices.into_iter().map(Device::wait).collect())
}

fn check_drained(logs: &[DeviceLog], report: &mut Report) {
    let failed = logs.iter().filter(|l| !l.success).count();
    if failed > 0 {
        report.problem = Some(format!("{failed} device runs did not drain their buffer"));
    }
}

/// N devices online with the default flush policy.
pub fn steady(size: Size) -> Result<Report> {
    let started = Instant::now();
    let cluster = Cluster::start(2, 2)?;
    let dir = tempfile::tempdir()?;
    let devices = size.pick(4, 8);
    let events = size.pick(150, 600);
    let specs: Vec<_> = (0..devices)
        .map(|n| {
            spec(
                dir.path(),
                n,
                &cluster.lb.url(),
                events,
                Duration::from_millis(100),
                "default",
            )
        })
        .collect();
    let logs = run_devices(&specs)?;
    let (mut report, _) = verify(
        "steady state, default policy",
        &cluster,
        devices,
        &logs,
        READ_TIMEOUT,
        started,
    )?;
    report.note = format!("{events} events per device at 10/s, uploads every 10 s or 100 events");
    check_drained(&logs, &mut report);
    Ok(report)
}

/// With a right device clock, the collector's corrected `event_time` must stay this close to
/// `created_at` however late the backlog arrives: the correction only moves events whose clock
/// is wrong. Generous against scheduling noise, tight against a correction that drifts with the
/// time an event waited (hours after a day offline).
const OFFLINE_TIME_BOUND_MS: i64 = 1_000;

/// A device offline for a day's worth of events comes back.
pub fn offline(size: Size) -> Result<Report> {
    let started = Instant::now();
    let cluster = Cluster::start(2, 2)?;
    let dir = tempfile::tempdir()?;
    let events = size.pick(3_000, 20_000);
    // Offline: the endpoint is a port nothing listens on.
    let dead = format!("http://127.0.0.1:{}", free_port()?);
    // 20 µs apart: a day's events in seconds, but within what the writer absorbs, so none
    // is refused with queue_full (which would be counted, not lost).
    let mut offline = spec(
        dir.path(),
        0,
        &dead,
        events,
        Duration::from_micros(20),
        "default",
    );
    offline.drain = None;
    let mut logs = run_devices(&[offline])?;
    // Online again: a new process (the app relaunched) uploads the backlog.
    let online = spec(
        dir.path(),
        0,
        &cluster.lb.url(),
        1,
        Duration::ZERO,
        "default",
    );
    logs.extend(run_devices(&[online])?);
    let (mut report, records) = verify(
        "offline device comes back",
        &cluster,
        1,
        &logs,
        READ_TIMEOUT,
        started,
    )?;
    let worst = records
        .iter()
        .map(|r| {
            (r.record.event_time - r.record.created_at)
                .num_milliseconds()
                .abs()
        })
        .max()
        .unwrap_or(0);
    report.note = format!(
        "{events} events tracked offline, then uploaded by the relaunched app (latency: the time offline and the upload of the backlog); max |event_time - created_at| = {worst} ms (device clock right; bound {OFFLINE_TIME_BOUND_MS} ms)"
    );
    if worst > OFFLINE_TIME_BOUND_MS {
        report.problem = Some(format!(
            "corrected event_time off the right device clock by {worst} ms, over the {OFFLINE_TIME_BOUND_MS} ms bound"
        ));
    }
    check_drained(&logs, &mut report);
    Ok(report)
}

/// Continuous load from devices while `disrupt` acts on the cluster.
fn under_load(
    name: &str,
    size: Size,
    disrupt: impl FnOnce(&mut Cluster) -> Result<String>,
) -> Result<Report> {
    under_load_for(name, size, Duration::ZERO, disrupt)
}

/// Like [`under_load`], with the devices' load lasting about `window` longer.
fn under_load_for(
    name: &str,
    size: Size,
    window: Duration,
    disrupt: impl FnOnce(&mut Cluster) -> Result<String>,
) -> Result<Report> {
    let started = Instant::now();
    let mut cluster = Cluster::start(2, 2)?;
    let dir = tempfile::tempdir()?;
    let devices = size.pick(4, 8);
    let interval = Duration::from_millis(10);
    let events = size.pick(400, 3_000) + (window.as_millis() / interval.as_millis()) as u64;
    let specs: Vec<_> = (0..devices)
        .map(|n| {
            spec(
                dir.path(),
                n,
                &cluster.lb.url(),
                events,
                interval,
                "realtime",
            )
        })
        .collect();
    let running = specs
        .iter()
        .map(Device::spawn)
        .collect::<Result<Vec<_>>>()?;
    let note = disrupt(&mut cluster)?;
    let logs: Vec<_> = running.into_iter().map(Device::wait).collect();
    let (mut report, _) = verify(name, &cluster, devices, &logs, READ_TIMEOUT, started)?;
    report.note = note;
    check_drained(&logs, &mut report);
    Ok(report)
}

/// A collector instance killed with SIGKILL under load, restarted 2 s later.
pub fn collector_kill(size: Size) -> Result<Report> {
    under_load("collector SIGKILL under load", size, |cluster| {
        std::thread::sleep(Duration::from_secs(1));
        cluster.kill(0);
        std::thread::sleep(Duration::from_secs(2));
        cluster.restart(0)?;
        Ok("instance 0 killed 1 s into the run, restarted 2 s later".into())
    })
}

/// A rolling restart: each instance in turn gets SIGTERM, drains, exits and is restarted.
pub fn rolling_restart(size: Size) -> Result<Report> {
    under_load("rolling restart (SIGTERM)", size, |cluster| {
        let mut exits = Vec::new();
        for i in 0..cluster.collectors.len() {
            std::thread::sleep(Duration::from_millis(700));
            let stopped = Instant::now();
            let code = cluster.terminate(i, Duration::from_secs(30));
            exits.push(format!(
                "{code:?} after {:.1} s",
                stopped.elapsed().as_secs_f64()
            ));
            cluster.restart(i)?;
        }
        Ok(format!("exits: {}", exits.join(", ")))
    })
}

/// Kinesis throttles half of all records for a while, under load.
pub fn throttling(size: Size) -> Result<Report> {
    let window = size.pick(Duration::from_secs(10), Duration::from_secs(60));
    under_load_for(
        "Kinesis throttles 50 % of records",
        size,
        window,
        |cluster| {
            cluster.proxy.set(&Faults {
                throttle_share: 0.5,
                ..Faults::default()
            })?;
            std::thread::sleep(window);
            cluster.proxy.set(&Faults::default())?;
            let stats = cluster.proxy.stats()?;
            Ok(format!(
                "{} s of 50 % throttling: {} records refused by the proxy and retried",
                window.as_secs(),
                stats.records_throttled
            ))
        },
    )
}

/// Kinesis refuses everything for a while, under load.
pub fn outage(size: Size) -> Result<Report> {
    let window = size.pick(Duration::from_secs(15), Duration::from_secs(120));
    under_load_for("Kinesis outage", size, window, |cluster| {
        cluster.proxy.set(&Faults {
            outage: true,
            ..Faults::default()
        })?;
        std::thread::sleep(window);
        cluster.proxy.set(&Faults::default())?;
        let stats = cluster.proxy.stats()?;
        Ok(format!(
            "{} s outage: {} Kinesis calls refused; devices kept events and resent",
            window.as_secs(),
            stats.outage_refusals
        ))
    })
}

/// Device processes killed with SIGKILL again and again while tracking and flushing.
pub fn sdk_kill(size: Size) -> Result<Report> {
    let started = Instant::now();
    let cluster = Cluster::start(2, 2)?;
    let dir = tempfile::tempdir()?;
    let devices = size.pick(3, 6);
    let kills = size.pick(6, 20);
    let mut logs = Vec::new();
    for round in 0..kills {
        let specs: Vec<_> = (0..devices)
            .map(|n| DeviceSpec {
                flush_every: if round % 2 == 0 { 40 } else { 0 },
                drain: None,
                ..spec(
                    dir.path(),
                    n,
                    &cluster.lb.url(),
                    0,
                    Duration::from_micros(500),
                    "realtime",
                )
            })
            .collect();
        let running = specs
            .iter()
            .map(Device::spawn)
            .collect::<Result<Vec<_>>>()?;
        std::thread::sleep(Duration::from_millis(200 + 97 * (round as u64 % 5)));
        logs.extend(running.into_iter().map(Device::kill));
    }
    let specs: Vec<_> = (0..devices)
        .map(|n| {
            spec(
                dir.path(),
                n,
                &cluster.lb.url(),
                1,
                Duration::ZERO,
                "realtime",
            )
        })
        .collect();
    let finals = run_devices(&specs)?;
    let (mut report, _) = verify(
        "SDK killed during flush",
        &cluster,
        devices,
        &logs,
        READ_TIMEOUT,
        started,
    )?;
    check_drained(&finals, &mut report);
    report.note = format!(
        "{kills} SIGKILLs per device while tracking and flushing, then a final drain; latency includes the restarts"
    );
    Ok(report)
}

/// Where libfaketime is, if installed (Debian package `faketime`).
pub fn libfaketime() -> Option<String> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .map(str::to_owned)
}

/// A device whose wall clock is hours off (libfaketime on the real device process): the
/// collector's corrected `event_time` must land within a stated bound of the true time.
/// Returns `None` when libfaketime is not installed.
pub fn clock_skew(size: Size) -> Result<Option<Report>> {
    let Some(lib) = libfaketime() else {
        return Ok(None);
    };
    let started = Instant::now();
    let cluster = Cluster::start(2, 1)?;
    let dir = tempfile::tempdir()?;
    let events = size.pick(200, 1_000);
    let skews = ["-3h", "+5h"];
    let specs: Vec<_> = skews
        .iter()
        .enumerate()
        .map(|(n, skew)| DeviceSpec {
            env: vec![
                ("LD_PRELOAD".into(), lib.clone()),
                ("FAKETIME".into(), (*skew).into()),
                ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
                ("DONT_FAKE_MONOTONIC".into(), "1".into()),
            ],
            ..spec(
                dir.path(),
                n,
                &cluster.lb.url(),
                events,
                Duration::from_millis(5),
                "realtime",
            )
        })
        .collect();
    let logs = run_devices(&specs)?;
    let (mut report, records) = verify(
        "device clock hours off",
        &cluster,
        skews.len(),
        &logs,
        READ_TIMEOUT,
        started,
    )?;
    // arrived_at is the true clock (this machine); event_time must be just before it.
    let errors: Vec<i64> = records
        .iter()
        .map(|r| (r.arrived_at - r.record.event_time).num_milliseconds())
        .collect();
    let raw_off: i64 = records
        .iter()
        .map(|r| {
            (r.arrived_at - r.record.created_at)
                .num_milliseconds()
                .abs()
        })
        .max()
        .unwrap_or(0);
    let worst = errors.iter().map(|e| e.abs()).max().unwrap_or(0);
    report.note = format!(
        "device clocks {}: raw created_at off by up to {:.1} h; corrected event_time within {worst} ms of arrival (bound: 5000 ms)",
        skews.join(" and "),
        raw_off as f64 / 3_600_000.0
    );
    if worst > 5_000 {
        report.problem = Some(format!(
            "event_time off by {worst} ms, over the 5000 ms bound"
        ));
    }
    // created_at is hours off here: the latency is measured from the corrected event time.
    let mut latencies: Vec<f64> = errors.iter().map(|ms| *ms as f64 / 1000.0).collect();
    report.latency_p50_s = crate::percentile(&mut latencies, 50.0);
    report.latency_p99_s = crate::percentile(&mut latencies, 99.0);
    report.latency_max_s = crate::percentile(&mut latencies, 100.0);
    check_drained(&logs, &mut report);
    Ok(Some(report))
}

/// The promise the shipped policy is held to: every event readable within this long of its
/// creation, and a backlog within this long of the network's return.
pub const LATENCY_PROMISE: Duration = Duration::from_secs(120);

/// Seconds, for the notes.
fn secs(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.1}"))
}

/// The shipped `Policy::default()` (retries 1 s to 5 min) held to the 120 s promise, on one
/// cluster at once (so the two rows cost the time of one): online devices, every event readable
/// within 120 s of its creation; and devices whose network goes down for minutes (a load
/// balancer of their own, whose link is cut), the backlog readable within 120 s of the
/// network's return. All but one of those are told the network is back, as NWPathMonitor or
/// ConnectivityManager would; the last relies on the SDK's capped connectivity backoff. Every
/// device drains without `flush()`, so only the SDK's own scheduling delivers.
pub fn shipped_policy(size: Size) -> Result<Vec<Report>> {
    let started = Instant::now();
    let cluster = Cluster::start(2, 2)?;
    let network = cluster.network()?;
    let dir = tempfile::tempdir()?;
    let online = size.pick(3, 6);
    let told = size.pick(2, 4);
    let offline = told + 1;
    let before = Duration::from_secs(5);
    let outage = size.pick(Duration::from_secs(180), Duration::from_secs(600));
    let after = Duration::from_secs(20);
    let interval = Duration::from_millis(200);
    let events = ((before + outage + after).as_millis() / interval.as_millis()) as u64;
    let device = |n: usize, endpoint: &str, signal: bool| DeviceSpec {
        passive_drain: true,
        network_signal: signal.then(|| dir.path().join(format!("network-{n}"))),
        ..spec(dir.path(), n, endpoint, events, interval, "default")
    };
    let online_specs: Vec<_> = (0..online)
        .map(|n| device(n, &cluster.lb.url(), false))
        .collect();
    let offline_specs: Vec<_> = (online..online + offline)
        .map(|n| device(n, &network.url(), n < online + told))
        .collect();
    let online_running = online_specs
        .iter()
        .map(Device::spawn)
        .collect::<Result<Vec<_>>>()?;
    let offline_running = offline_specs
        .iter()
        .map(Device::spawn)
        .collect::<Result<Vec<_>>>()?;
    std::thread::sleep(before);
    network.set_link(false);
    std::thread::sleep(outage);
    network.set_link(true);
    let returned_at = chrono::Utc::now();
    for signal in offline_specs
        .iter()
        .filter_map(|s| s.network_signal.as_ref())
    {
        std::fs::write(signal, b"")?;
    }
    let online_logs: Vec<_> = online_running.into_iter().map(Device::wait).collect();
    let offline_logs: Vec<_> = offline_running.into_iter().map(Device::wait).collect();

    let (mut online_report, records) = verify(
        "shipped policy, online",
        &cluster,
        online,
        &online_logs,
        READ_TIMEOUT,
        started,
    )?;
    online_report.note = format!(
        "Policy::default() (uploads every 10 s or 100 events, retries 1 s to 5 min); {events} events per device at 5/s; promise: every event readable within {} s of its creation",
        LATENCY_PROMISE.as_secs()
    );
    check_drained(&online_logs, &mut online_report);
    // verify() measures every event of the stream: the row's own devices only.
    let online_installs: Vec<String> = online_logs
        .iter()
        .filter_map(|l| l.install_id.clone())
        .collect();
    let mut online_latency: Vec<f64> = first_copies(&records)
        .values()
        .filter(|r| online_installs.contains(&r.record.install_id))
        .map(|r| (r.arrived_at - r.record.created_at).num_milliseconds() as f64 / 1000.0)
        .collect();
    online_report.latency_p50_s = crate::percentile(&mut online_latency, 50.0);
    online_report.latency_p99_s = crate::percentile(&mut online_latency, 99.0);
    online_report.latency_max_s = crate::percentile(&mut online_latency, 100.0);
    if online_report
        .latency_max_s
        .is_none_or(|max| max > LATENCY_PROMISE.as_secs_f64())
    {
        online_report.problem = Some(format!(
            "an event took {} s, over the {} s promise",
            secs(online_report.latency_max_s),
            LATENCY_PROMISE.as_secs()
        ));
    }

    let (mut report, records) = verify(
        "shipped policy, network outage",
        &cluster,
        offline,
        &offline_logs,
        READ_TIMEOUT,
        started,
    )?;
    // Latency counted from when delivery became possible: an event that waited out the outage
    // from the network's return, any other from its creation.
    let installs = |logs: &[DeviceLog]| -> Vec<String> {
        logs.iter().filter_map(|l| l.install_id.clone()).collect()
    };
    let told_installs = installs(&offline_logs[..told]);
    let untold_installs = installs(&offline_logs[told..]);
    let first_copy = first_copies(&records);
    let latency = |install_ids: &[String]| -> Vec<f64> {
        first_copy
            .values()
            .filter(|r| install_ids.contains(&r.record.install_id))
            .map(|r| {
                let from = if r.record.created_at < returned_at && r.arrived_at >= returned_at {
                    returned_at
                } else {
                    r.record.created_at
                };
                (r.arrived_at - from).num_milliseconds() as f64 / 1000.0
            })
            .collect()
    };
    let mut told_latency = latency(&told_installs);
    let mut untold_latency = latency(&untold_installs);
    let mut all: Vec<f64> = told_latency
        .iter()
        .chain(&untold_latency)
        .copied()
        .collect();
    report.latency_p50_s = crate::percentile(&mut all, 50.0);
    report.latency_p99_s = crate::percentile(&mut all, 99.0);
    report.latency_max_s = crate::percentile(&mut all, 100.0);
    let told_max = crate::percentile(&mut told_latency, 100.0);
    let untold_max = crate::percentile(&mut untold_latency, 100.0);
    report.note = format!(
        "Policy::default(); network down {} s (connections closed before any answer), {events} events per device at 5/s; backlog readable at most {} s after the network's return on the {told} devices told of it (network_available()), {} s on the one not told (capped connectivity backoff, 60 s); latency counted from the return for events that waited it out; promise {} s",
        outage.as_secs(),
        secs(told_max),
        secs(untold_max),
        LATENCY_PROMISE.as_secs()
    );
    check_drained(&offline_logs, &mut report);
    if report
        .latency_max_s
        .is_none_or(|max| max > LATENCY_PROMISE.as_secs_f64())
    {
        report.problem = Some(format!(
            "the backlog took {} s after the network's return, over the {} s promise",
            secs(report.latency_max_s),
            LATENCY_PROMISE.as_secs()
        ));
    }
    Ok(vec![online_report, report])
}

/// The first copy of each event read from the stream.
fn first_copies(
    records: &[crate::ReadRecord],
) -> std::collections::HashMap<uuid::Uuid, &crate::ReadRecord> {
    let mut first = std::collections::HashMap::new();
    for r in records {
        first.entry(r.record.event_id).or_insert(r);
    }
    first
}
