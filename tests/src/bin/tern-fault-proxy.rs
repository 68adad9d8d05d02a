//! `tern-fault-proxy --upstream URL [--throttle-share 0.5] [--error-share 0.05] ...`: a test
//! tool between the collector (or the lake) and kinesalite that injects throttling, failures,
//! hangs and outages (see `tern_tests::fault_proxy`). Prints `listening on ADDR`; `POST /_fault` changes
//! the faults at run time, `GET /_stats` tells what was injected.

use std::io::Write;

use clap::Parser;
use tern_tests::fault_proxy::{router, Faults};

/// Fault-injecting proxy in front of a Kinesis API server.
#[derive(Debug, Parser)]
#[command(name = "tern-fault-proxy")]
struct Args {
    /// The real Kinesis server, e.g. http://127.0.0.1:4567.
    #[arg(long, default_value = "http://127.0.0.1:4567")]
    upstream: String,
    /// Port on 127.0.0.1 (0: a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Share of records answered ProvisionedThroughputExceededException.
    #[arg(long, default_value_t = 0.0)]
    throttle_share: f64,
    /// Share of PutRecords requests answered 500.
    #[arg(long, default_value_t = 0.0)]
    error_share: f64,
    /// Share of PutRecords requests held for --hang-ms, then failed.
    #[arg(long, default_value_t = 0.0)]
    hang_share: f64,
    /// How long a held request is held.
    #[arg(long, default_value_t = 5_000)]
    hang_ms: u64,
    /// Share of GetRecords calls answered ProvisionedThroughputExceededException.
    #[arg(long, default_value_t = 0.0)]
    read_throttle_share: f64,
    /// Answer PutRecords without the upstream (benchmarks only).
    #[arg(long)]
    fake_writes: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let faults = Faults {
        throttle_share: args.throttle_share,
        error_share: args.error_share,
        hang_share: args.hang_share,
        hang_ms: args.hang_ms,
        read_throttle_share: args.read_throttle_share,
        outage: false,
        fake_writes: args.fake_writes,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    let mut out = std::io::stdout();
    writeln!(out, "listening on {}", listener.local_addr()?)?;
    out.flush()?;
    axum::serve(listener, router(&args.upstream, faults)).await?;
    Ok(())
}
