//! `make demo`: kinesalite, the collector and a few simulated devices running the real SDK, each
//! with its own SQLite file, and `tern-lake ingest` reading the stream into the lake as they go;
//! then reads the stream back, lets the lake catch up, queries it, and reports what arrived and
//! how fast. The lake stays in `target/demo-lake` for `make analyze`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use tern_sdk::{Policy, Tracker};
use tern_tests::process::CollectorOptions;
use tern_tests::{device_config, percentile, sample_event, unique_stream, Collector, Kinesalite};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Preset {
    /// The SDK's default policy (upload every 10 s or at 100 events).
    Default,
    /// The realtime preset (upload every 500 ms and at every event).
    Realtime,
}

/// Runs Tern end to end on this machine and reports delivery and latency.
#[derive(Debug, Parser)]
#[command(name = "tern-demo")]
struct Args {
    /// Simulated devices, each with its own SDK tracker and SQLite file.
    #[arg(long, default_value_t = 5)]
    devices: usize,
    /// Events each device tracks.
    #[arg(long, default_value_t = 300)]
    events: usize,
    /// Seconds over which each device spreads its events.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// SDK upload policy.
    #[arg(long, value_enum, default_value_t = Preset::Default)]
    preset: Preset,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "tern demo: {} devices x {} events over {} s, {:?} upload policy",
        args.devices, args.events, args.seconds, args.preset
    );
    let kinesis = Kinesalite::start().context("starting kinesalite")?;
    let stream = unique_stream("tern-demo");
    kinesis.create_stream(&stream, 2)?;
    println!(
        "kinesalite on {} with stream {stream} (2 shards)",
        kinesis.endpoint
    );
    let collector = Collector::start(&CollectorOptions::new(&kinesis.endpoint, &stream))
        .context("starting tern-collector")?;
    println!("tern-collector on {}", collector.url);
    let lake = tern_tests::workspace_root().join("target/demo-lake");
    if lake.exists() {
        std::fs::remove_dir_all(&lake).context("removing the previous demo lake")?;
    }
    let mut ingest = tern_tests::lake::start_ingest(&kinesis.endpoint, &stream, &lake, &[])
        .context("starting tern-lake ingest")?;
    println!(
        "tern-lake ingest into {} (commit every 10 s)",
        lake.display()
    );
    let dir = tempfile::tempdir()?;
    let policy = match args.preset {
        Preset::Default => Policy::default(),
        Preset::Realtime => Policy::realtime(),
    };

    let started = Instant::now();
    let pause = Duration::from_secs(args.seconds)
        .checked_div(args.events as u32)
        .unwrap_or_default();
    let devices: Vec<_> = (0..args.devices)
        .map(|n| {
            let config = device_config(
                dir.path().join(format!("device-{n}.db")),
                &collector.url,
                policy.clone(),
                n,
            );
            let events = args.events;
            std::thread::spawn(move || -> anyhow::Result<(usize, tern_sdk::Stats)> {
                let tracker = Tracker::new(config)?;
                let mut tracked = 0;
                for i in 0..events {
                    let (name, properties) = sample_event(i);
                    if tracker.track(name, properties).is_ok() {
                        tracked += 1;
                    }
                    std::thread::sleep(pause);
                }
                // The app goes to the background: flush, and wait for the acknowledgement.
                tracker.flush_and_wait(Duration::from_secs(60))?;
                Ok((tracked, tracker.stats()))
            })
        })
        .collect();
    let mut tracked = 0;
    let mut pending = 0;
    for d in devices {
        let (n, stats) = d
            .join()
            .map_err(|_| anyhow::anyhow!("a device thread panicked"))??;
        tracked += n;
        pending += stats.pending.events;
    }
    println!(
        "devices done after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let records = kinesis
        .reader(&stream)?
        .read_until(Duration::from_secs(30), |r| r.len() >= tracked)?;
    let unique: HashSet<_> = records.iter().map(|r| r.record.event_id).collect();
    // Each event's first copy: a duplicate arrives later and would inflate the latency.
    let mut seen = HashSet::new();
    let mut latencies: Vec<f64> = records
        .iter()
        .filter(|r| seen.insert(r.record.event_id))
        .map(|r| (r.arrived_at - r.record.created_at).num_milliseconds() as f64 / 1000.0)
        .collect();
    let p =
        |q: f64, l: &mut Vec<f64>| percentile(l, q).map_or("-".to_owned(), |v| format!("{v:.2} s"));
    println!();
    println!("events tracked            {tracked}");
    println!(
        "readable from the stream  {} ({} records, {} duplicates)",
        unique.len(),
        records.len(),
        records.len() - unique.len()
    );
    println!("still buffered on devices {pending}");
    println!(
        "missing                   {}",
        tracked.saturating_sub(unique.len())
    );
    println!(
        "creation -> readable      p50 {}  p99 {}  max {}",
        p(50.0, &mut latencies),
        p(99.0, &mut latencies),
        p(100.0, &mut latencies)
    );
    let delivered = collector.metric("tern_collector_events_delivered_total")?;
    println!("collector delivered       {delivered}");
    anyhow::ensure!(
        unique.len() == tracked,
        "{} events are missing from the stream",
        tracked - unique.len()
    );

    // The lake: stop the running ingest (it commits what it read), then a batch run that exits
    // once every shard is read to its tip and committed.
    anyhow::ensure!(
        ingest.terminate(Duration::from_secs(60)) == Some(0),
        "tern-lake ingest did not stop cleanly on SIGTERM"
    );
    tern_tests::lake::ingest_until_caught_up(&kinesis.endpoint, &stream, &lake, &[])?;
    let rows = tern_tests::lake::sql_number(&lake, "SELECT count(*) FROM events", None)?;
    let distinct =
        tern_tests::lake::sql_number(&lake, "SELECT count(DISTINCT event_id) FROM events", None)?;
    let latency = tern_tests::lake::sql(
        &lake,
        "SELECT approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50, \
                approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99 \
         FROM (SELECT (date_part('epoch', ingested_at) - date_part('epoch', created_at)) * 1000 AS ms FROM events)",
        None,
    )?;
    let ms = |k: &str| {
        latency
            .first()
            .and_then(|r| r.get(k))
            .and_then(serde_json::Value::as_f64)
            .map_or("-".to_owned(), |v| format!("{:.2} s", v / 1000.0))
    };
    println!();
    println!("rows in the lake's events {rows}");
    println!("distinct event_ids        {distinct}");
    println!(
        "creation -> table         p50 {}  p99 {}",
        ms("p50"),
        ms("p99")
    );
    anyhow::ensure!(
        rows == tracked as i64 && distinct == rows,
        "the lake holds {rows} rows ({distinct} distinct) for {tracked} events"
    );
    println!("\nevents per name (tern-lake sql):");
    let status = std::process::Command::new(tern_tests::process::binary("tern-lake")?)
        .args(["sql", "--lake"])
        .arg(&lake)
        .arg("SELECT name, count(*) AS events, count(DISTINCT install_id) AS installs FROM events GROUP BY name ORDER BY events DESC")
        .status()?;
    anyhow::ensure!(status.success(), "tern-lake sql failed");
    println!(
        "\nall {tracked} events are in the stream and once each in the lake; `make analyze` opens \
         SQL on it. Stopping the collector and kinesalite."
    );
    Ok(())
}
