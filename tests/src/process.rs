//! Child processes the harness starts: they are killed when their handle is dropped.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};

use crate::{workspace_root, APP_ID, WRITE_KEY};

/// How long a child may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Most stderr lines of a child kept for [`Listening::stderr_lines`] (the latest ones).
const STDERR_LINES_KEPT: usize = 10_000;

/// A child process that prints `listening on ADDR` on its first stdout line.
pub struct Listening {
    child: Child,
    /// Kept open: some children exit when their stdin closes.
    _stdin: Option<ChildStdin>,
    /// The latest lines it wrote to stderr (also passed through to the harness's stderr).
    stderr: Arc<Mutex<VecDeque<String>>>,
    /// The address it listens on.
    pub addr: SocketAddr,
}

impl Listening {
    /// Spawns `command` and waits for its `listening on ADDR` line.
    pub fn spawn(mut command: Command, what: &str) -> Result<Self> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let stdin = child.stdin.take();
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(pipe) = child.stderr.take() {
            let kept = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    // As if inherited: straight to the real stderr, not the test's capture.
                    let _ = writeln!(std::io::stderr().lock(), "{line}");
                    let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                    if kept.len() == STDERR_LINES_KEPT {
                        kept.pop_front();
                    }
                    kept.push_back(line);
                }
            });
        }
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                bail!("{what} did not start within {START_TIMEOUT:?} (exit: {status:?})");
            }
        };
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.trim().parse().ok())
            .ok_or_else(|| anyhow!("{what} printed {line:?}, not `listening on ADDR`"))?;
        Ok(Self {
            child,
            _stdin: stdin,
            stderr,
            addr,
        })
    }

    /// The latest lines the process wrote to stderr (up to 10 000), oldest first. After the
    /// process exited they are complete once its pipe is drained (a moment later).
    pub fn stderr_lines(&self) -> Vec<String> {
        let kept = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().cloned().collect()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit; returns the exit code if it exited.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A path to one of the workspace's binaries in the same target directory as the running
/// test or tool (`make test` builds them first).
pub fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/test-binary or target/<profile>/tool
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} is not built next to {}; run `cargo build --workspace --bins` first",
        exe.display()
    )
}

/// A running `tern-collector`.
pub struct Collector {
    process: Listening,
    /// Its base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
}

/// How to start a collector.
#[derive(Debug, Clone)]
pub struct CollectorOptions {
    /// Kinesis endpoint URL.
    pub kinesis_endpoint: String,
    /// Stream name.
    pub stream: String,
    /// Dead-letter stream, if any.
    pub dead_letter_stream: Option<String>,
    /// Listen address (port 0 for a free one).
    pub listen: SocketAddr,
    /// Extra flags.
    pub extra_args: Vec<String>,
    /// Extra environment variables (e.g. `TERN_LOG`).
    pub env: Vec<(String, String)>,
}

impl CollectorOptions {
    /// Options for a collector on a free port writing to `stream` at `kinesis_endpoint`.
    pub fn new(kinesis_endpoint: &str, stream: &str) -> Self {
        Self {
            kinesis_endpoint: kinesis_endpoint.to_owned(),
            stream: stream.to_owned(),
            dead_letter_stream: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }
}

impl Collector {
    /// Starts the collector binary and waits until it listens.
    pub fn start(options: &CollectorOptions) -> Result<Self> {
        let mut command = Command::new(binary("tern-collector")?);
        command
            .current_dir(workspace_root())
            .arg("--listen")
            .arg(options.listen.to_string())
            .args(["--stream", &options.stream])
            .args(["--kinesis-endpoint", &options.kinesis_endpoint])
            .args(["--region", "us-east-1"])
            .args(["--write-key", WRITE_KEY, "--app-id", APP_ID])
            .args(&options.extra_args)
            // Any static credentials work with a local Kinesis server.
            .env("AWS_ACCESS_KEY_ID", "tern-test")
            .env("AWS_SECRET_ACCESS_KEY", "tern-test")
            .env_remove("AWS_PROFILE")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            // Tests stop collectors often and no load balancer watches them: no unready period
            // at SIGTERM unless a test asks for one (`--shutdown-delay-ms` wins over this).
            .env("TERN_SHUTDOWN_DELAY_MS", "0")
            .env(
                "TERN_LOG",
                std::env::var("TERN_LOG").unwrap_or_else(|_| "error".into()),
            );
        if let Some(dlq) = &options.dead_letter_stream {
            command.args(["--dead-letter-stream", dlq]);
        }
        command.envs(options.env.iter().map(|(k, v)| (k, v)));
        let process = Listening::spawn(command, "tern-collector")?;
        let url = format!("http://{}", process.addr);
        Ok(Self { process, url })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Kills it with SIGKILL.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Sends SIGTERM and waits for the exit (see [`Listening::terminate`]).
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        self.process.terminate(timeout)
    }

    /// The latest lines it wrote to stderr (see [`Listening::stderr_lines`]).
    pub fn stderr_lines(&self) -> Vec<String> {
        self.process.stderr_lines()
    }

    /// The event counts it logged when it stopped (`final event accounting`; needs `TERN_LOG`
    /// at `info` for `tern_collector`), waiting up to `timeout` for the line to be read.
    pub fn final_accounting(&self, timeout: Duration) -> Option<FinalAccounting> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let found = self
                .stderr_lines()
                .iter()
                .rev()
                .find(|l| l.contains("final event accounting"))
                .map(|l| FinalAccounting::parse(l));
            if found.is_some() || std::time::Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The collector's `/metrics` text.
    pub fn metrics(&self) -> Result<String> {
        Ok(reqwest::blocking::get(format!("{}/metrics", self.url))?.text()?)
    }

    /// The value of one metric series (exact name with labels, e.g.
    /// `tern_collector_requests_total{status="200"}`), 0 if absent.
    pub fn metric(&self, series: &str) -> Result<f64> {
        let text = self.metrics()?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                (name == series).then(|| value.parse().ok()).flatten()
            })
            .unwrap_or(0.0))
    }
}

/// The event counts a collector logs at exit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FinalAccounting {
    /// `events_received`.
    pub received: u64,
    /// `events_delivered`.
    pub delivered: u64,
    /// `events_dead_lettered`.
    pub dead_lettered: u64,
    /// Sum of `events_refused` (invalid events listed in the answer, no dead-letter stream).
    pub refused: u64,
    /// `events_duplicate`.
    pub duplicate: u64,
    /// Sum of `events_rejected`.
    pub rejected: u64,
}

impl FinalAccounting {
    /// Reads the `key=value` fields of a `final event accounting` log line (absent ones are 0).
    pub fn parse(line: &str) -> Self {
        let line = strip_ansi(line);
        let mut a = Self::default();
        for (key, value) in line
            .split_whitespace()
            .filter_map(|field| field.split_once('='))
        {
            let value = value.trim_matches(|c: char| !c.is_ascii_digit());
            let Ok(value) = value.parse() else { continue };
            match key {
                "received" => a.received = value,
                "delivered" => a.delivered = value,
                "dead_lettered" => a.dead_lettered = value,
                "refused" => a.refused = value,
                "duplicate" => a.duplicate = value,
                "rejected" => a.rejected = value,
                _ => {}
            }
        }
        a
    }

    /// Whether every received event left through one outcome.
    pub fn balanced(&self) -> bool {
        self.received
            == self.delivered + self.dead_lettered + self.refused + self.duplicate + self.rejected
    }
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`), as colored logs have them.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A free TCP port on 127.0.0.1 (bound and released: a tiny race, fine for tests).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A running `tern-fault-proxy` in front of a Kinesis server.
pub struct FaultProxyProcess {
    _process: Listening,
    /// Its URL: give it to the collector as `--kinesis-endpoint`.
    pub url: String,
}

impl FaultProxyProcess {
    /// Starts the proxy in front of `upstream` with extra flags (e.g. `--throttle-share 0.5`).
    pub fn start(upstream: &str, args: &[&str]) -> Result<Self> {
        let mut command = Command::new(binary("tern-fault-proxy")?);
        command.args(["--upstream", upstream]).args(args);
        let process = Listening::spawn(command, "tern-fault-proxy")?;
        let url = format!("http://{}", process.addr);
        Ok(Self {
            _process: process,
            url,
        })
    }

    /// What it injected so far.
    pub fn stats(&self) -> Result<crate::fault_proxy::Stats> {
        let text = reqwest::blocking::get(format!("{}/_stats", self.url))?.text()?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Replaces the faults it injects.
    pub fn set(&self, faults: &crate::fault_proxy::Faults) -> Result<()> {
        let response = reqwest::blocking::Client::new()
            .post(format!("{}/_fault", self.url))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(faults)?)
            .send()?;
        anyhow::ensure!(
            response.status().is_success(),
            "POST /_fault: {}",
            response.status()
        );
        Ok(())
    }
}

/// Runs `tern-loadgen` to completion with `args` and returns its JSON report.
pub fn loadgen(args: &[&str]) -> Result<crate::loadgen::Report> {
    let output = Command::new(binary("tern-loadgen")?)
        .args(args)
        .arg("--json")
        .stderr(Stdio::inherit())
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "tern-loadgen printed {text:?} (exit {:?})",
            output.status.code()
        )
    })?;
    Ok(serde_json::from_value(report)?)
}
