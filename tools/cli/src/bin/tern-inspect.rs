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
use comfy_table::CellAlignment::{self, Left, Right};
use comfy_table::{Cell, Table};
use tern_sdk::inspect::{BufferStats, EventInfo, Inspector};

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
        Command::Stats { json: false } => write_stats(&mut out, &inspector.stats()?)?,
        Command::List { limit, name, json } => {
            let events = inspector.list(limit, name.as_deref())?;
            if json {
                serde_json::to_writer_pretty(&mut out, &events)?;
                writeln!(out)?;
            } else {
                write_events(&mut out, &events)?;
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

/// `stats` for people: the buffer's counts, then one table per list (batches in flight, drops,
/// gap reports, quarantine).
fn write_stats(out: &mut impl Write, s: &BufferStats) -> std::io::Result<()> {
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
        let mut t = table(&[
            ("batch_id", Left),
            ("events", Right),
            ("bytes", Right),
            ("attempts", Right),
            ("next attempt", Left),
            ("last error", Left),
        ]);
        for b in &s.batches {
            t.add_row([
                b.batch_id.clone(),
                b.events.to_string(),
                b.bytes.to_string(),
                b.attempts.to_string(),
                b.next_attempt.as_deref().unwrap_or("now").to_owned(),
                b.last_error.as_deref().unwrap_or("").to_owned(),
            ]);
        }
        writeln!(out, "{t}")?;
    }
    writeln!(
        out,
        "\ndropped events by reason: {}",
        if s.drops.is_empty() { "none" } else { "" }
    )?;
    if !s.drops.is_empty() {
        let mut t = table(&[
            ("reason", Left),
            ("total", Right),
            ("not yet reported", Right),
        ]);
        for (reason, d) in &s.drops {
            t.add_row([
                reason.clone(),
                d.total.to_string(),
                d.unreported.to_string(),
            ]);
        }
        writeln!(out, "{t}")?;
    }
    writeln!(
        out,
        "\npending gap reports (seqs given up on, not yet acknowledged): {}",
        s.gaps.len()
    )?;
    if !s.gaps.is_empty() {
        let mut t = table(&[
            ("gap_id", Left),
            ("reason", Left),
            ("seqs", Right),
            ("at", Left),
            ("batch", Left),
            ("ranges", Left),
        ]);
        for g in &s.gaps {
            t.add_row([
                g.gap_id.clone(),
                g.reason.clone(),
                g.count.to_string(),
                g.at.as_deref().unwrap_or("-").to_owned(),
                g.batch_id.as_deref().unwrap_or("(next batch)").to_owned(),
                g.ranges.clone(),
            ]);
        }
        writeln!(out, "{t}")?;
    }
    writeln!(out, "\nquarantined batches: {}", s.quarantine.len())?;
    if !s.quarantine.is_empty() {
        let mut t = table(&[
            ("batch_id", Left),
            ("events", Right),
            ("quarantined at", Left),
            ("reason", Left),
        ]);
        for q in &s.quarantine {
            t.add_row([
                q.batch_id.clone(),
                q.events.to_string(),
                q.quarantined_at.as_deref().unwrap_or("-").to_owned(),
                q.reason.clone(),
            ]);
        }
        writeln!(out, "{t}")?;
    }
    Ok(())
}

/// `list` for people: one row per event.
fn write_events(out: &mut impl Write, events: &[EventInfo]) -> std::io::Result<()> {
    let mut t = table(&[
        ("seq", Right),
        ("event_id", Left),
        ("name", Left),
        ("created_at", Left),
        ("bytes", Right),
        ("batch", Left),
    ]);
    for e in events {
        t.add_row([
            e.seq.to_string(),
            e.event_id.clone(),
            e.name.clone(),
            e.created_at.as_deref().unwrap_or("-").to_owned(),
            e.bytes.to_string(),
            e.batch_id.as_deref().unwrap_or("-").to_owned(),
        ]);
    }
    writeln!(out, "{t}")?;
    Ok(())
}

/// The borders of `tern-lake sql`'s results (arrow's pretty printer), so Tern's tools look alike.
const TABLE_STYLE: &str = "||--+-++|    ++++++";

/// A table with these column headers and alignments (numbers right), never wrapped: rows stay
/// one line each, for `grep`, however narrow the terminal.
fn table(columns: &[(&str, CellAlignment)]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(TABLE_STYLE)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(columns.iter().map(|(name, _)| Cell::new(name)));
    for (column, (_, alignment)) in table.column_iter_mut().zip(columns) {
        column.set_cell_alignment(*alignment);
    }
    table
}
