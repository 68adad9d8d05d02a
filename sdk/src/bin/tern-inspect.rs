//! `tern-inspect`: looks into a Tern SDK buffer (read-only, safe while the app runs).
//!
//! ```text
//! tern-inspect DB stats [--json]
//! tern-inspect DB list [--limit N] [--name NAME] [--json]
//! tern-inspect DB export --jsonl [--quarantine]
//! ```

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tern_sdk::inspect::Inspector;

/// Inspect a Tern SDK buffer.
#[derive(Debug, Parser)]
#[command(name = "tern-inspect", version)]
struct Args {
    /// The SDK's SQLite file.
    db: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pending events and bytes, batches in flight, drops by reason, pending gap reports,
    /// quarantined batches.
    Stats {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Buffered events, oldest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// Only events with this name.
        #[arg(long)]
        name: Option<String>,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Every buffered event as JSON lines (wire format v1).
    Export {
        /// One JSON object per line (the only format).
        #[arg(long, required = true)]
        jsonl: bool,
        /// The quarantined events instead, each with its batch id and the reason:
        /// `{"batch_id", "reason", "event"}`.
        #[arg(long)]
        quarantine: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.db.is_file(), "{} is not a file", args.db.display());
    let inspector =
        Inspector::open(&args.db).with_context(|| format!("opening {}", args.db.display()))?;
    let mut out = std::io::stdout().lock();
    match args.command {
        Command::Stats { json: true } => {
            serde_json::to_writer_pretty(&mut out, &inspector.stats()?)?;
            writeln!(out)?;
        }
        Command::Stats { json: false } => {
            let s = inspector.stats()?;
            writeln!(
                out,
                "install          {}",
                s.install_id.as_deref().unwrap_or("-")
            )?;
            writeln!(out, "schema version   {}", s.schema_version)?;
            writeln!(
                out,
                "next seq         {}",
                s.next_seq.map_or("-".into(), |n| n.to_string())
            )?;
            writeln!(out, "opted out        {}", s.opted_out)?;
            writeln!(
                out,
                "pending events   {} ({} bytes, {} not yet batched)",
                s.pending_events, s.pending_bytes, s.unbatched_events
            )?;
            if let Some(from) = &s.recovered_from {
                writeln!(out, "recovered from   {from} (corrupt file kept there)")?;
            }
            writeln!(out, "\nbatches in flight: {}", s.batches.len())?;
            if !s.batches.is_empty() {
                writeln!(
                    out,
                    "  {:<36}  {:>6}  {:>8}  {:>8}  {:<24}  last error",
                    "batch_id", "events", "bytes", "attempts", "next attempt"
                )?;
                for b in &s.batches {
                    writeln!(
                        out,
                        "  {:<36}  {:>6}  {:>8}  {:>8}  {:<24}  {}",
                        b.batch_id,
                        b.events,
                        b.bytes,
                        b.attempts,
                        b.next_attempt.as_deref().unwrap_or("now"),
                        b.last_error.as_deref().unwrap_or("")
                    )?;
                }
            }
            writeln!(
                out,
                "\ndropped events by reason: {}",
                if s.drops.is_empty() { "none" } else { "" }
            )?;
            for (reason, d) in &s.drops {
                writeln!(
                    out,
                    "  {reason:<20} {:>8} ({} not yet reported)",
                    d.total, d.unreported
                )?;
            }
            writeln!(
                out,
                "\npending gap reports (seqs given up on, not yet acknowledged): {}",
                s.gaps.len()
            )?;
            for g in &s.gaps {
                writeln!(
                    out,
                    "  {}  {:<14} {:>8} seqs  {}  {}  {}",
                    g.gap_id,
                    g.reason,
                    g.count,
                    g.at.as_deref().unwrap_or("-"),
                    g.batch_id.as_deref().unwrap_or("(next batch)"),
                    g.ranges
                )?;
            }
            writeln!(out, "\nquarantined batches: {}", s.quarantine.len())?;
            for q in &s.quarantine {
                writeln!(
                    out,
                    "  {}  {:>6} events  {}  {}",
                    q.batch_id,
                    q.events,
                    q.quarantined_at.as_deref().unwrap_or("-"),
                    q.reason
                )?;
            }
        }
        Command::List { limit, name, json } => {
            let events = inspector.list(limit, name.as_deref())?;
            if json {
                serde_json::to_writer_pretty(&mut out, &events)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "{:>8}  {:<36}  {:<24}  {:<24}  {:>6}  batch",
                    "seq", "event_id", "name", "created_at", "bytes"
                )?;
                for e in &events {
                    writeln!(
                        out,
                        "{:>8}  {:<36}  {:<24}  {:<24}  {:>6}  {}",
                        e.seq,
                        e.event_id,
                        e.name,
                        e.created_at.as_deref().unwrap_or("-"),
                        e.bytes,
                        e.batch_id.as_deref().unwrap_or("-")
                    )?;
                }
            }
        }
        Command::Export {
            quarantine: true, ..
        } => {
            inspector.export_quarantine_jsonl(&mut out)?;
        }
        Command::Export { .. } => {
            inspector.export_jsonl(&mut out)?;
        }
    }
    Ok(())
}
