//! `tern-lake sql`: one query, or an interactive prompt with history, over the lake's tables.

use std::io::Write;

use clap::ValueEnum;
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::util::pretty::pretty_format_batches;
use deltalake::datafusion::prelude::SessionContext;
use rustyline::error::ReadlineError;

use crate::error::{Error, Result};
use crate::query;

/// How results are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// An aligned table.
    #[default]
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per row (JSON lines).
    Json,
}

/// Writes `batches` to `out` in `format`.
pub fn write_batches(
    out: &mut impl Write,
    batches: &[RecordBatch],
    format: OutputFormat,
) -> Result<()> {
    match format {
        OutputFormat::Table => {
            writeln!(out, "{}", pretty_format_batches(batches)?)?;
        }
        OutputFormat::Csv => {
            let mut writer = deltalake::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
        }
        OutputFormat::Json => {
            let mut writer = deltalake::arrow::json::LineDelimitedWriter::new(&mut *out);
            writer.write_batches(&batches.iter().collect::<Vec<_>>())?;
            writer.finish()?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Runs one query and prints its result to stdout.
pub async fn run_one(ctx: &SessionContext, sql: &str, format: OutputFormat) -> Result<()> {
    let batches = query::collect(ctx, sql).await?;
    write_batches(&mut std::io::stdout().lock(), &batches, format)
}

/// The interactive prompt: statements end with `;`, `\q` quits, `\d` lists the tables; the
/// history is kept in `~/.tern_lake_history`.
pub async fn repl(ctx: &SessionContext, format: OutputFormat) -> Result<()> {
    let mut editor = rustyline::DefaultEditor::new()
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
    let history = std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .map(|h| h.join(".tern_lake_history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    println!("tern-lake sql: tables events, gaps, batches, rejected, raw. End a statement with ';'. \\d lists tables, \\q quits.");
    let mut statement = String::new();
    loop {
        let prompt = if statement.is_empty() {
            "tern> "
        } else {
            "  ... "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                let trimmed = line.trim();
                if statement.is_empty() && matches!(trimmed, "\\q" | "quit" | "exit") {
                    break;
                }
                if statement.is_empty() && trimmed == "\\d" {
                    let _ = editor.add_history_entry(trimmed);
                    if let Err(e) = run_one(ctx, "SHOW TABLES", format).await {
                        eprintln!("error: {e}");
                    }
                    continue;
                }
                statement.push_str(&line);
                statement.push('\n');
                if trimmed.ends_with(';') {
                    let sql = statement.trim().trim_end_matches(';').to_owned();
                    let _ = editor.add_history_entry(statement.trim());
                    statement.clear();
                    let started = std::time::Instant::now();
                    match query::collect(ctx, &sql).await {
                        Ok(batches) => {
                            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                            write_batches(&mut std::io::stdout().lock(), &batches, format)?;
                            println!("{rows} row(s) in {:.3} s", started.elapsed().as_secs_f64());
                        }
                        Err(e) => eprintln!("error: {e}"),
                    }
                }
            }
            Err(ReadlineError::Interrupted) => statement.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(Error::Io(std::io::Error::other(e.to_string()))),
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}
