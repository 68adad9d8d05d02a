//! End-to-end scenarios: many device processes (each running the real SDK on its own SQLite
//! file), two or more collector processes behind a round-robin load balancer, kinesalite; each
//! run ends by reading the whole stream back and checking every `event_id` and every install's
//! `seq` range (a gap is a loss).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::Serialize;
use uuid::Uuid;

use crate::lb::LoadBalancer;
use crate::process::{binary, CollectorOptions, FaultProxyProcess};
use crate::{percentile, unique_stream, Collector, Kinesalite, ReadRecord};

/// The SDK's durability promise: an event is durable within 100 ms of `track()` returning.
pub const DURABILITY_WINDOW: Duration = Duration::from_millis(100);

/// What a scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Device processes.
    pub devices: usize,
    /// Collector instances.
    pub collectors: usize,
    /// Events whose `track()` returned.
    pub tracked: usize,
    /// Events that had to arrive (tracked, minus those within the durability window of a kill).
    pub expected: usize,
    /// Distinct expected events found in the stream.
    pub delivered: usize,
    /// Expected events missing from the stream (must be 0).
    pub lost: usize,
    /// Missing numbers in the installs' `seq` ranges that no gap record reports (must be 0).
    pub seq_gaps: u64,
    /// `seq` numbers the devices reported lost in gap records (caps, quarantine, ...): with
    /// the events received they make up every install's `seq` range.
    pub reported_lost: u64,
    /// Records beyond the first copy of each event.
    pub duplicates: usize,
    /// Duplicates as a share of distinct events, in percent.
    pub duplicate_pct: f64,
    /// Creation → readable latency, seconds.
    pub latency_p50_s: Option<f64>,
    /// p99 of the same.
    pub latency_p99_s: Option<f64>,
    /// Max of the same.
    pub latency_max_s: Option<f64>,
    /// Scenario-specific finding (e.g. the clock-correction error).
    pub note: String,
    /// A check of the scenario that failed, beyond lost and gaps (e.g. a device did not drain).
    pub problem: Option<String>,
    /// Wall time of the run, seconds.
    pub duration_s: f64,
}

/// Kinesalite, a stream, `n` collectors and a load balancer in front of them.
pub struct Cluster {
    /// The Kinesis server.
    pub kinesis: Kinesalite,
    /// The stream.
    pub stream: String,
    /// The collectors (index = instance).
    pub collectors: Vec<Collector>,
    options: Vec<CollectorOptions>,
    /// The load balancer.
    pub lb: LoadBalancer,
    /// The fault proxy between the collectors and kinesalite.
    pub proxy: FaultProxyProcess,
}

impl Cluster {
    /// Starts everything; the collectors reach kinesalite through the fault proxy (which
    /// injects nothing until told to).
    pub fn start(collectors: usize, shards: i32) -> Result<Self> {
        let kinesis = Kinesalite::start()?;
        let stream = unique_stream("scenario");
        kinesis.create_stream(&stream, shards)?;
        let proxy = FaultProxyProcess::start(&kinesis.endpoint, &[])?;
        let mut options = Vec::new();
        let mut running = Vec::new();
        for _ in 0..collectors {
            let mut o = CollectorOptions::new(&proxy.url, &stream);
            o.listen = std::net::SocketAddr::from(([127, 0, 0, 1], crate::process::free_port()?));
            running.push(Collector::start(&o)?);
            options.push(o);
        }
        let lb = LoadBalancer::start(options.iter().map(|o| o.listen).collect())?;
        Ok(Self {
            kinesis,
            stream,
            collectors: running,
            options,
            lb,
            proxy,
        })
    }

    /// Another load balancer in front of the same collectors: the network of devices that
    /// go offline ([`LoadBalancer::set_link`]) while the others stay online.
    pub fn network(&self) -> Result<LoadBalancer> {
        LoadBalancer::start(self.options.iter().map(|o| o.listen).collect())
    }

    /// Kills collector `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        self.collectors[i].kill();
    }

    /// Stops collector `i` with SIGTERM; returns its exit code if it exited within `timeout`.
    pub fn terminate(&mut self, i: usize, timeout: Duration) -> Option<i32> {
        self.collectors[i].terminate(timeout)
    }

    /// Starts collector `i` again on its port.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.collectors[i] = Collector::start(&self.options[i])?;
        Ok(())
    }
}

/// How to run one device process.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// SQLite file.
    pub db: PathBuf,
    /// Collector URL (the load balancer).
    pub endpoint: String,
    /// Events to track (0: until killed).
    pub events: u64,
    /// Pause between events.
    pub interval: Duration,
    /// `default` or `realtime`.
    pub preset: &'static str,
    /// Wait this long for everything to be acknowledged before exiting.
    pub drain: Option<Duration>,
    /// `flush()` every this many events (0: never).
    pub flush_every: u64,
    /// Device number.
    pub device: usize,
    /// Extra environment (e.g. `LD_PRELOAD` of libfaketime).
    pub env: Vec<(String, String)>,
    /// A file whose appearance tells the device the network is back (it then calls
    /// `network_available()`, as on NWPathMonitor's or ConnectivityManager's callback).
    pub network_signal: Option<PathBuf>,
    /// Drain without `flush()`: wait for the SDK's own timer and backoff to deliver.
    pub passive_drain: bool,
}

/// What a device's stdout said: its install id and the events it tracked, with when.
type Heard = (Option<String>, Vec<(Uuid, Instant)>);

/// A running device process and what it has reported.
pub struct Device {
    child: Child,
    reader: Option<JoinHandle<Heard>>,
}

/// What a device process reported.
#[derive(Debug, Clone, Default)]
pub struct DeviceLog {
    /// Its install id.
    pub install_id: Option<String>,
    /// Events whose `track()` returned, with when the test heard of it.
    pub tracked: Vec<(Uuid, Instant)>,
    /// When it was killed, if it was.
    pub killed_at: Option<Instant>,
    /// Whether it exited successfully (drained, when asked to).
    pub success: bool,
}

impl Device {
    /// Starts a device process.
    pub fn spawn(spec: &DeviceSpec) -> Result<Self> {
        let mut command = Command::new(binary("tern-device")?);
        command
            .arg("--db")
            .arg(&spec.db)
            .args(["--endpoint", &spec.endpoint])
            .args(["--events", &spec.events.to_string()])
            .args(["--interval-us", &spec.interval.as_micros().to_string()])
            .args(["--preset", spec.preset])
            .args(["--flush-every", &spec.flush_every.to_string()])
            .args(["--device", &spec.device.to_string()])
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(drain) = spec.drain {
            command.args(["--drain", &drain.as_secs().max(1).to_string()]);
        }
        if let Some(signal) = &spec.network_signal {
            command.arg("--network-signal").arg(signal);
        }
        if spec.passive_drain {
            command.arg("--passive-drain");
        }
        let mut child = command.spawn().context("start tern-device")?;
        let stdout = child.stdout.take().context("stdout")?;
        let reader = std::thread::spawn(move || {
            let mut install = None;
            let mut tracked = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(id) = line.strip_prefix("tracked ") {
                    if let Ok(id) = id.parse() {
                        tracked.push((id, Instant::now()));
                    }
                } else if let Some(id) = line.strip_prefix("install ") {
                    install = Some(id.to_owned());
                }
            }
            (install, tracked)
        });
        Ok(Self {
            child,
            reader: Some(reader),
        })
    }

    /// Waits for the process to exit.
    pub fn wait(mut self) -> DeviceLog {
        let success = self.child.wait().map(|s| s.success()).unwrap_or(false);
        self.log(None, success)
    }

    /// Kills the process (SIGKILL).
    pub fn kill(mut self) -> DeviceLog {
        let at = Instant::now();
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log(Some(at), false)
    }

    fn log(&mut self, killed_at: Option<Instant>, success: bool) -> DeviceLog {
        let (install_id, tracked) = self
            .reader
            .take()
            .and_then(|r| r.join().ok())
            .unwrap_or_default();
        DeviceLog {
            install_id,
            tracked,
            killed_at,
            success,
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The events that must arrive: all that were tracked, except those within the durability
/// window before a kill.
pub fn expected_events(logs: &[DeviceLog]) -> HashSet<Uuid> {
    logs.iter()
        .flat_map(|log| {
            log.tracked
                .iter()
                .filter(move |(_, at)| log.killed_at.is_none_or(|k| *at + DURABILITY_WINDOW < k))
                .map(|(id, _)| *id)
        })
        .collect()
}

/// Reads the stream until every expected event is there or `timeout` passes, and measures.
pub fn verify(
    scenario: &str,
    cluster: &Cluster,
    devices: usize,
    logs: &[DeviceLog],
    timeout: Duration,
    started: Instant,
) -> Result<(Report, Vec<ReadRecord>)> {
    let expected = expected_events(logs);
    let tracked: usize = logs.iter().map(|l| l.tracked.len()).sum();
    let mut reader = cluster.kinesis.reader(&cluster.stream)?;
    let records = reader.read_until(timeout, |r| {
        let seen: HashSet<Uuid> = r.iter().map(|r| r.record.event_id).collect();
        expected.iter().all(|id| seen.contains(id))
    })?;
    let mut first_copy: HashMap<Uuid, &ReadRecord> = HashMap::new();
    for r in &records {
        first_copy.entry(r.record.event_id).or_insert(r);
    }
    let lost = expected
        .iter()
        .filter(|id| !first_copy.contains_key(id))
        .count();
    // Received + reported lost = issued, per install: every seq up to the last is accounted.
    let mut seqs: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for r in &records {
        seqs.entry(&r.record.install_id)
            .or_default()
            .insert(r.record.seq);
    }
    let mut reported = BTreeMap::<Uuid, &tern_protocol::GapRecord>::new();
    for gap in reader.gaps() {
        reported.insert(gap.gap_id, gap);
    }
    let mut reported_lost = 0;
    for gap in reported.values() {
        let covered = seqs.entry(&gap.install_id).or_default();
        for range in &gap.ranges {
            reported_lost += range.len();
            covered.extend(range.first..=range.last);
        }
    }
    let seq_gaps = seqs
        .values()
        .map(|s| s.last().copied().unwrap_or(0) - s.len() as u64)
        .sum();
    let mut latencies: Vec<f64> = first_copy
        .values()
        .map(|r| (r.arrived_at - r.record.created_at).num_milliseconds() as f64 / 1000.0)
        .collect();
    let duplicates = records.len() - first_copy.len();
    let report = Report {
        scenario: scenario.to_owned(),
        devices,
        collectors: cluster.collectors.len(),
        tracked,
        expected: expected.len(),
        delivered: expected.len() - lost,
        lost,
        seq_gaps,
        reported_lost,
        duplicates,
        duplicate_pct: 100.0 * duplicates as f64 / first_copy.len().max(1) as f64,
        latency_p50_s: percentile(&mut latencies, 50.0),
        latency_p99_s: percentile(&mut latencies, 99.0),
        latency_max_s: percentile(&mut latencies, 100.0),
        note: String::new(),
        problem: None,
        duration_s: started.elapsed().as_secs_f64(),
    };
    Ok((report, records))
}

impl Report {
    /// Whether the scenario passed: nothing lost, no gap, no failed check.
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.seq_gaps == 0 && self.problem.is_none()
    }
}

/// A fresh directory for the devices' SQLite files.
pub fn device_db(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("device-{n}.db"))
}
