//! `make e2e`: runs the end-to-end scenario matrix (full size) and writes the summary table to
//! docs/RELIABILITY.md. `--fast` runs the sizes `make test` uses.

use std::fmt::Write as _;

use clap::Parser;
use tern_tests::scenario::Report;
use tern_tests::scenarios::{self, Size};

/// Runs the scenario matrix.
#[derive(Debug, Parser)]
#[command(name = "tern-e2e")]
struct Args {
    /// The small sizes of `make test`.
    #[arg(long)]
    fast: bool,
    /// Write the table into this Markdown file (between its RESULTS markers).
    #[arg(long)]
    write: Option<std::path::PathBuf>,
    /// Only the scenarios whose name contains this.
    #[arg(long)]
    only: Option<String>,
}

/// A scenario's rows: none when it could not run (libfaketime missing).
type Scenario = fn(Size) -> anyhow::Result<Vec<Report>>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let size = if args.fast { Size::Fast } else { Size::Full };
    let all: Vec<(&'static str, Scenario)> = vec![
        ("steady", |s| scenarios::steady(s).map(|r| vec![r])),
        ("offline", |s| scenarios::offline(s).map(|r| vec![r])),
        ("collector_kill", |s| {
            scenarios::collector_kill(s).map(|r| vec![r])
        }),
        ("rolling_restart", |s| {
            scenarios::rolling_restart(s).map(|r| vec![r])
        }),
        ("throttling", |s| scenarios::throttling(s).map(|r| vec![r])),
        ("outage", |s| scenarios::outage(s).map(|r| vec![r])),
        ("sdk_kill", |s| scenarios::sdk_kill(s).map(|r| vec![r])),
        ("clock_skew", |s| {
            scenarios::clock_skew(s).map(|r| r.into_iter().collect())
        }),
        ("shipped_policy", scenarios::shipped_policy),
    ];
    let started = std::time::Instant::now();
    let mut rows = Vec::new();
    for (name, run) in all {
        if args.only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        eprintln!("running {name} ...");
        // A scenario that errors (a process that would not start, a stream that could not be
        // read) is a failed row, not the end of the run: the other scenarios still run and the
        // table still shows what happened.
        match run(size) {
            Ok(reports) if !reports.is_empty() => {
                for report in reports {
                    eprintln!(
                        "  {}: {} lost, {} duplicates, {:.0} s",
                        report.scenario, report.lost, report.duplicates, report.duration_s
                    );
                    rows.push(Row::Ran(report));
                }
            }
            Ok(_) => {
                // The matrix is the proof only if every scenario ran: one that could not is a
                // failed row too.
                let error = "not run: libfaketime is missing (apt-get install faketime)";
                eprintln!("  {error}");
                rows.push(Row::Errored {
                    name,
                    error: error.into(),
                });
            }
            Err(error) => {
                eprintln!("  error: {error:#}");
                rows.push(Row::Errored {
                    name,
                    error: format!("{error:#}"),
                });
            }
        }
    }
    let table = table(&rows, size, started.elapsed().as_secs_f64());
    println!("{table}");
    if let Some(path) = args.write {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let (begin, end) = ("<!-- RESULTS BEGIN -->", "<!-- RESULTS END -->");
        let updated = match (text.find(begin), text.find(end)) {
            (Some(b), Some(e)) if b < e => {
                format!("{}{begin}\n{table}\n{}", &text[..b], &text[e..])
            }
            _ => format!("{text}\n{begin}\n{table}\n{end}\n"),
        };
        std::fs::write(&path, updated)?;
        eprintln!("wrote {}", path.display());
    }
    let failed: Vec<_> = rows.iter().filter(|r| !r.passed()).map(Row::name).collect();
    anyhow::ensure!(failed.is_empty(), "scenarios failed: {failed:?}");
    Ok(())
}

/// One line of the table: a scenario that ran to its report, or one that stopped on an error.
enum Row {
    Ran(Report),
    Errored { name: &'static str, error: String },
}

impl Row {
    fn passed(&self) -> bool {
        match self {
            Row::Ran(report) => report.passed(),
            Row::Errored { .. } => false,
        }
    }

    fn name(&self) -> String {
        match self {
            Row::Ran(report) => report.scenario.clone(),
            Row::Errored { name, .. } => (*name).to_owned(),
        }
    }
}

/// Text safe inside one Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn secs(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.2}"))
}

fn table(rows: &[Row], size: Size, total: f64) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Run: `make e2e` ({}), {} scenarios in {:.0} s, {}.\n",
        if size == Size::Full {
            "full size"
        } else {
            "fast size"
        },
        rows.len(),
        total,
        chrono::Utc::now().format("%Y-%m-%d")
    );
    let _ = writeln!(
        t,
        "| scenario | devices | collectors | expected events | lost | seq gaps (reported lost) | duplicates | latency p50 / p99 / max (s) | result | notes |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let r = match row {
            Row::Ran(r) => r,
            Row::Errored { name, error } => {
                let _ = writeln!(
                    t,
                    "| {name} | – | – | – | – | – | – | – / – / – | FAIL | error: {} |",
                    cell(error)
                );
                continue;
            }
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | **{}** | {} ({}) | {} ({:.2} %) | {} / {} / {} | {} | {} |",
            r.scenario,
            r.devices,
            r.collectors,
            r.expected,
            r.lost,
            r.seq_gaps,
            r.reported_lost,
            r.duplicates,
            r.duplicate_pct,
            secs(r.latency_p50_s),
            secs(r.latency_p99_s),
            secs(r.latency_max_s),
            if r.passed() { "pass" } else { "FAIL" },
            cell(&match &r.problem {
                Some(p) => format!("{}; {p}", r.note),
                None => r.note.clone(),
            })
        );
    }
    t
}
