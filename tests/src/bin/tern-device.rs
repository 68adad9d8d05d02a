//! `tern-device`: one simulated device as its own process, running the real SDK on its own
//! SQLite file. Tests kill it at random points and start it again on the same file.
//!
//! Prints `install <install_id>` first, then `tracked <event_id>` as soon as each `track()`
//! has returned, and with `--drain`, `drained <true|false> <pending events>` at the end.
//!
//! The `realtime` preset is a test policy: `Policy::realtime()` with retries backing off from
//! 100 ms to at most 2 s (the shipped policy backs off to 5 minutes), so that scenarios with a
//! collector that goes away recover within the test's time. `default` is the shipped default.
//!
//! With `--network-signal FILE`, the device watches for FILE to appear, deletes it and calls
//! `network_available()`: what the mobile library does on NWPathMonitor's or
//! ConnectivityManager's "network is back".

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tern_sdk::{Policy, Tracker};
use tern_tests::{device_config, sample_event};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Preset {
    /// The shipped `Policy::default()`.
    Default,
    /// TEST POLICY: `Policy::realtime()` with retry backoff 100 ms to 2 s instead of the
    /// shipped 1 s to 5 min, so that the scenarios recover quickly.
    Realtime,
}

/// A simulated device.
#[derive(Debug, Parser)]
#[command(name = "tern-device")]
struct Args {
    /// The SDK's SQLite buffer.
    #[arg(long)]
    db: PathBuf,
    /// Collector base URL.
    #[arg(long)]
    endpoint: String,
    /// Events to track (0: until killed).
    #[arg(long, default_value_t = 0)]
    events: u64,
    /// Pause between events, in microseconds.
    #[arg(long, default_value_t = 1000)]
    interval_us: u64,
    /// Upload policy. `realtime` (the default here) is a test policy: retries back off to 2 s
    /// at most, not the shipped 5 minutes.
    #[arg(long, value_enum, default_value_t = Preset::Realtime)]
    preset: Preset,
    /// After tracking, wait up to this many seconds for the collector to acknowledge everything.
    #[arg(long)]
    drain: Option<u64>,
    /// Device number (varies the simulated context).
    #[arg(long, default_value_t = 0)]
    device: usize,
    /// Call `flush()` (durable + upload now) after every this many events (0: never).
    #[arg(long, default_value_t = 0)]
    flush_every: u64,
    /// A file whose appearance means "the network is back": it is deleted and
    /// `network_available()` called.
    #[arg(long)]
    network_signal: Option<PathBuf>,
    /// Drain without `flush()`: leave the delivery to the SDK's own timer and backoff.
    #[arg(long)]
    passive_drain: bool,
}

/// How often the network signal file is looked for.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// Calls `network_available()` each time `signal` appears, until `done`.
fn watch_network(tracker: &Tracker, signal: &Path, done: &AtomicBool) {
    while !done.load(Ordering::Relaxed) {
        if std::fs::remove_file(signal).is_ok() {
            tracker.network_available();
        }
        std::thread::sleep(SIGNAL_POLL);
    }
}

/// Waits up to `timeout` for the buffer to be empty without asking for an upload.
fn drain_passively(tracker: &Tracker, timeout: Duration) -> bool {
    // Events still in the hand-off queue are not counted as pending: let the writer take them
    // (it commits within milliseconds; the durability promise is 100 ms).
    std::thread::sleep(Duration::from_secs(1));
    let deadline = std::time::Instant::now() + timeout;
    while tracker.stats().pending.events > 0 {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let policy = match args.preset {
        Preset::Default => Policy::default(),
        // Test policy (see the module documentation): fast retries keep scenarios short.
        Preset::Realtime => Policy {
            retry_min_delay: Duration::from_millis(100),
            retry_max_delay: Duration::from_secs(2),
            ..Policy::realtime()
        },
    };
    let tracker = Tracker::new(device_config(
        args.db.clone(),
        &args.endpoint,
        policy,
        args.device,
    ))?;
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        if let Some(signal) = &args.network_signal {
            scope.spawn(|| watch_network(&tracker, signal, &done));
        }
        let result = run(&args, &tracker);
        done.store(true, Ordering::Relaxed);
        result
    })?;
    tracker.shutdown();
    Ok(())
}

fn run(args: &Args, tracker: &Tracker) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "install {}", tracker.install_id())?;
    out.flush()?;
    let mut i = 0u64;
    while args.events == 0 || i < args.events {
        let (name, properties) = sample_event(i as usize);
        if let Ok(Some(event_id)) = tracker.track(name, properties) {
            writeln!(out, "tracked {event_id}")?;
            out.flush()?;
        }
        i += 1;
        if args.flush_every > 0 && i.is_multiple_of(args.flush_every) {
            tracker.flush(Duration::from_secs(5))?;
        }
        if args.interval_us > 0 {
            std::thread::sleep(Duration::from_micros(args.interval_us));
        }
    }
    if let Some(secs) = args.drain {
        let drained = if args.passive_drain {
            drain_passively(tracker, Duration::from_secs(secs))
        } else {
            tracker.flush_and_wait(Duration::from_secs(secs))?
        };
        writeln!(out, "drained {drained} {}", tracker.stats().pending.events)?;
        out.flush()?;
        anyhow::ensure!(drained, "the buffer did not drain in {secs} s");
    }
    Ok(())
}
