//! End-to-end harness: real processes for kinesalite and the collector, real SDK trackers with
//! their own SQLite files, and a reader that takes the stream back with GetRecords.
//!
//! Everything listens on 127.0.0.1 and is stopped when its handle is dropped.

pub mod capture;
pub mod fault_proxy;
pub mod kinesis;
pub mod lake;
pub mod lb;
pub mod loadgen;
pub mod process;
pub mod records;
pub mod scenario;
pub mod scenarios;

use std::path::PathBuf;

pub use kinesis::{Kinesalite, RawRecord, ReadRecord, StreamReader};
pub use process::Collector;
/// A realistic event, the `i`th (the one sample-event generator, shared with the SDK's
/// benchmarks).
pub use tern_sample::event as sample_event;

/// The workspace root (where `Cargo.toml`, `node_modules` and `target` are).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The write key the harness configures its collectors with.
pub const WRITE_KEY: &str = "test-write-key";
/// The app id of [`WRITE_KEY`].
pub const APP_ID: &str = "test-app";

/// A fresh stream name, so tests sharing a Kinesis server never read each other's records.
pub fn unique_stream(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// Percentile `p` (0..=100) of `values`, which it sorts; `None` when empty.
pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values.get(rank.min(values.len() - 1)).copied()
}

/// An SDK configuration for a simulated device with its own SQLite file.
pub fn device_config(
    db_path: PathBuf,
    endpoint: &str,
    policy: tern_sdk::Policy,
    n: usize,
) -> tern_sdk::Config {
    tern_sdk::Config {
        db_path,
        endpoint: endpoint.to_owned(),
        write_key: WRITE_KEY.to_owned(),
        policy,
        context: tern_sdk::Context {
            app: tern_sdk::AppInfo {
                id: Some("dev.tern.demo".into()),
                version: Some("1.4.0".into()),
                build: Some("140".into()),
            },
            device: tern_sdk::DeviceInfo {
                manufacturer: Some("Tern".into()),
                model: Some(format!("Simulated {}", n % 3 + 1)),
            },
            os: tern_sdk::OsInfo {
                name: Some(
                    if n.is_multiple_of(2) {
                        "Android"
                    } else {
                        "iOS"
                    }
                    .into(),
                ),
                version: Some("15".into()),
            },
            locale: Some("en-GB".into()),
            timezone: Some("Europe/London".into()),
        },
        // reqwest (tern-sdk's default feature).
        transport: None,
    }
}
