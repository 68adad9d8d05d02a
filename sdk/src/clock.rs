//! Clocks stamped on events: the device wall clock, which users and NTP move, and a monotonic
//! clock that only moves forward and keeps counting while the device sleeps, identified by
//! `clock_id`.
//!
//! The collector uses the monotonic pair (event `uptime_ms`, batch `sent_uptime_ms`) to place an
//! event relative to its own clock when both carry the same `clock_id`; see `docs/protocol.md`,
//! clocks. For that, the clock must count the time the device sleeps (an event tracked before a
//! night in a drawer happened a night before the upload), and one `clock_id` must mean one
//! clock:
//!
//! | platform | monotonic clock | `clock_id` |
//! |---|---|---|
//! | Linux, Android | `CLOCK_BOOTTIME` (counts suspend) | `boot-<boot_id>` from `/proc/sys/kernel/random/boot_id`, the same for every process of a boot; a per-process id when unreadable |
//! | iOS, macOS | `CLOCK_MONOTONIC` (counts sleep on Apple systems, unlike `Instant`'s `CLOCK_UPTIME_RAW`) | per process |
//! | others | `Instant` since the tracker started (may stop during sleep) | per process |
//!
//! A per-boot id lets the collector use the monotonic clock for events stored before an app
//! restart and sent after it; a per-process id is always safe, since the collector then falls
//! back to the wall-clock formula for such events.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A monotonic clock with an identity.
#[derive(Debug, Clone)]
pub struct Clock {
    source: Source,
    id: String,
}

#[derive(Debug, Clone, Copy)]
enum Source {
    /// The system clock since boot that counts suspend ([`since_boot`]).
    SinceBoot,
    /// Time since this instant: where no such system clock is known.
    Since(Instant),
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// The best monotonic clock of this platform, with the id of the boot when the platform
    /// tells it, else a fresh id.
    pub fn new() -> Self {
        let source = match since_boot() {
            Some(_) => Source::SinceBoot,
            None => Source::Since(Instant::now()),
        };
        let id = match (source, boot_id()) {
            (Source::SinceBoot, Some(boot)) => format!("boot-{boot}"),
            _ => Uuid::now_v7().simple().to_string(),
        };
        Self { source, id }
    }

    /// Identifier of this clock; `uptime_ms` values compare only within one id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Milliseconds of this clock: since boot, or since the tracker started (see the module
    /// documentation).
    pub fn uptime_ms(&self) -> u64 {
        let elapsed = match self.source {
            Source::SinceBoot => since_boot().unwrap_or_default(),
            Source::Since(origin) => origin.elapsed(),
        };
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }

    /// The device wall clock.
    pub fn wall(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Time since boot, counting suspend: `CLOCK_BOOTTIME` on Linux and Android.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn since_boot() -> Option<Duration> {
    timespec(rustix::time::clock_gettime(rustix::time::ClockId::Boottime))
}

/// Time since boot, counting sleep: `CLOCK_MONOTONIC` on Apple systems.
#[cfg(target_vendor = "apple")]
fn since_boot() -> Option<Duration> {
    timespec(rustix::time::clock_gettime(
        rustix::time::ClockId::Monotonic,
    ))
}

/// No clock known to count suspend here.
#[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
fn since_boot() -> Option<Duration> {
    None
}

#[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
fn timespec(t: rustix::time::Timespec) -> Option<Duration> {
    let secs = u64::try_from(t.tv_sec).ok()?;
    let nanos = u32::try_from(t.tv_nsec).ok()?;
    Some(Duration::new(secs, nanos))
}

/// The id of this boot, as 32 hex digits, where the system tells it.
fn boot_id() -> Option<String> {
    if !cfg!(any(target_os = "linux", target_os = "android")) {
        return None;
    }
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = Uuid::parse_str(text.trim()).ok()?;
    Some(id.simple().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_monotonic() {
        let clock = Clock::new();
        let a = clock.uptime_ms();
        std::thread::sleep(Duration::from_millis(5));
        let b = clock.uptime_ms();
        assert!(b > a, "{a} then {b}");
    }

    /// On Linux the clock is the boot's: every tracker of the boot shares its id and its
    /// readings, and it agrees with the kernel's own uptime (`/proc/uptime`, which counts
    /// suspend), not with the time since the process started.
    #[cfg(target_os = "linux")]
    #[test]
    fn on_linux_the_clock_counts_since_boot_and_is_named_after_the_boot() {
        let first = Clock::new();
        let second = Clock::new();
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .expect("boot_id is readable on Linux");
        assert_eq!(
            first.id(),
            format!("boot-{}", boot.trim().replace('-', "")),
            "the id names the boot"
        );
        assert_eq!(first.id(), second.id(), "one id for the whole boot");
        assert!(first.id().len() <= 64, "within the wire format's limit");

        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .expect("/proc/uptime")
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .expect("seconds since boot");
        let ours = first.uptime_ms() as f64 / 1000.0;
        assert!(
            (ours - uptime).abs() < 5.0,
            "uptime_ms is time since boot: {ours} s against /proc/uptime {uptime} s"
        );
        assert!(second.uptime_ms() >= first.uptime_ms().saturating_sub(1));
    }
}
