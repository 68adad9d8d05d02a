//! `tern-loadgen`: drives a collector with simulated devices speaking the real wire format,
//! reads the stream back, and reports sent, delivered, lost, duplicates, events/s and latencies.

use std::time::Duration;

use clap::Parser;
use tern_tests::loadgen::{run, Options};

/// Load generator for tern-collector.
#[derive(Debug, Parser)]
#[command(name = "tern-loadgen")]
struct Args {
    /// Collector base URL.
    #[arg(long)]
    collector: String,
    /// Write key.
    #[arg(long, default_value = tern_tests::WRITE_KEY)]
    write_key: String,
    /// Simulated devices (each with one batch in flight).
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Total events (split across devices).
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Events per batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Target rate in events/s (default: as fast as acknowledgements allow).
    #[arg(long)]
    rate: Option<f64>,
    /// Kinesis endpoint to read the stream back from.
    #[arg(long, requires = "stream")]
    kinesis_endpoint: Option<String>,
    /// Stream to read back.
    #[arg(long, requires = "kinesis_endpoint")]
    stream: Option<String>,
    /// Give up sending after this many seconds.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
    /// Wait this long for the stream to hold every acknowledged event.
    #[arg(long, default_value_t = 120)]
    read_timeout_seconds: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let devices = a.devices.max(1);
    let report = run(Options {
        collector: a.collector,
        write_key: a.write_key,
        devices,
        events_per_device: a.events.div_ceil(devices as u64),
        batch_size: a.batch.max(1),
        rate: a.rate,
        read_back: a.kinesis_endpoint.zip(a.stream),
        read_timeout: Duration::from_secs(a.read_timeout_seconds),
        max_duration: Duration::from_secs(a.max_seconds),
    })
    .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report:#?}");
    }
    anyhow::ensure!(
        report.lost == 0,
        "{} acknowledged events are missing from the stream",
        report.lost
    );
    Ok(())
}
