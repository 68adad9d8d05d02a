//! `tern-lake`: see `tern-lake --help`.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tern_lake::query::{self, AsOf};
use tern_lake::sql::{self, OutputFormat};
use tern_lake::IngestArgs;
use tracing_subscriber::EnvFilter;

/// Tern lake: the event stream as a Delta table, exactly once, with SQL.
#[derive(Debug, Parser)]
#[command(name = "tern-lake", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read the stream into the `events` table (and `rejected`) until SIGTERM.
    Ingest(IngestArgs),
    /// Query the lake: one query, or an interactive prompt without one.
    Sql(SqlArgs),
    /// Bin-pack small files, VACUUM old ones, drop expired log entries; safe beside ingest.
    /// Prints a JSON summary.
    Compact(tern_lake::compact::CompactArgs),
    /// Named versions of `events` (training sets): create, list, verify.
    Snapshot(tern_lake::snapshot::SnapshotArgs),
    /// Rebuild days of `events` (and `rejected`) from `raw` with today's cleansing rules.
    Backfill(BackfillArgs),
}

#[derive(Debug, Args)]
struct BackfillArgs {
    /// Directory or URI of the lake.
    #[arg(long, env = "TERN_LAKE_LAKE")]
    lake: String,
    /// The Kinesis stream ingest reads into this lake (its commit lock is taken).
    #[arg(long, env = "TERN_LAKE_STREAM")]
    stream: String,
    /// First `event_date` (UTC) to rebuild, YYYY-MM-DD.
    #[arg(long)]
    from: chrono::NaiveDate,
    /// Last `event_date` to rebuild, included.
    #[arg(long)]
    to: chrono::NaiveDate,
    /// TOML file of cleansing rules (the same file ingest uses).
    #[arg(long, env = "TERN_LAKE_RULES")]
    rules: Option<std::path::PathBuf>,
    /// Print the rows that would be added, removed and changed per day; write nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
struct SqlArgs {
    /// Directory or URI of the lake.
    #[arg(long, env = "TERN_LAKE_LAKE")]
    lake: String,
    /// Output: an aligned table, CSV or JSON lines.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// Read `events` as of a table version (a number) or a time (RFC 3339).
    #[arg(long, value_name = "VERSION|TIMESTAMP")]
    as_of: Option<String>,
    /// Read `events` as of a named snapshot's version (`tern-lake snapshot list`).
    #[arg(long, value_name = "NAME", conflicts_with = "as_of")]
    snapshot: Option<String>,
    /// The query; without it, an interactive prompt.
    query: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // delta-rs logs every commit at info and an expected commit conflict at error; ingest logs
    // both itself, with row counts and what it does next. Its kernel logs every scan at info,
    // and a query's answer should stand alone on the terminal.
    let default_filter = match cli.command {
        Command::Ingest(_) => "info,deltalake_core=off,buoyant_kernel=warn",
        Command::Sql(_) | Command::Snapshot(_) => "warn",
        Command::Backfill(_) => "info,deltalake_core=warn,buoyant_kernel=warn",
        Command::Compact(_) => "info,deltalake_core=off,buoyant_kernel=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("TERN_LAKE_LOG")
                .unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Ingest(args) => ingest(args).await,
            Command::Sql(args) => sql_command(args).await,
            Command::Backfill(args) => backfill(args).await,
            Command::Compact(args) => {
                let summary = tern_lake::compact::run(&args).await?;
                println!("{}", serde_json::to_string(&summary)?);
                Ok(())
            }
            Command::Snapshot(args) => Ok(tern_lake::snapshot::run(args).await?),
        }
    })
}

async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let config = args.into_config().context("configuration")?;
    let metrics = Arc::new(tern_lake::metrics::Metrics::default());
    if let Some(addr) = config.metrics_listen {
        let listener = tern_lake::metrics::bind(addr)
            .await
            .with_context(|| format!("metrics_listen: cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        tern_lake::metrics::serve(listener, Arc::clone(&metrics));
        // The first line on stdout: scripts and tests read the bound address from it.
        let mut out = std::io::stdout();
        writeln!(out, "listening on {bound}")?;
        out.flush()?;
    }
    let summary = tern_lake::ingest::run(config, metrics, shutdown_signal()).await?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

async fn backfill(args: BackfillArgs) -> anyhow::Result<()> {
    let options = tern_lake::backfill::Options {
        lake: args.lake,
        stream: args.stream,
        from: args.from,
        to: args.to,
        rules: tern_lake::rules::Rules::load(args.rules.as_deref())?,
        dry_run: args.dry_run,
    };
    let report = tern_lake::backfill::run(&options).await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn sql_command(args: SqlArgs) -> anyhow::Result<()> {
    let as_of = match (args.as_of, args.snapshot) {
        (_, Some(name)) => {
            AsOf::Version(tern_lake::snapshot::get(&args.lake, &name).await?.version)
        }
        (None, None) => AsOf::Latest,
        (Some(v), None) => match v.parse::<u64>() {
            Ok(version) => AsOf::Version(version),
            Err(_) => AsOf::Timestamp(v),
        },
    };
    let ctx = query::lake_session(&args.lake, &as_of).await?;
    match args.query {
        Some(q) => sql::run_one(&ctx, &q, args.format).await?,
        None => sql::repl(&ctx, args.format).await?,
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = ctrl_c.await;
        return;
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down: committing what was read");
}
