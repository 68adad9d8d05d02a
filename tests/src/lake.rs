//! `tern-lake` as the tests run it: ingest as a real process (killed, restarted, stopped), and
//! queries through `tern-lake sql --format json`, as an analyst's script would.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use tern_protocol::StreamRecord;

use crate::process::{binary, Listening};
use crate::{workspace_root, WRITE_KEY};

/// A `tern-lake ingest` command reading `stream` at `kinesis_endpoint` into `lake`.
pub fn ingest_command(
    kinesis_endpoint: &str,
    stream: &str,
    lake: impl AsRef<OsStr>,
    extra: &[&str],
) -> Result<Command> {
    let mut command = Command::new(binary("tern-lake")?);
    command
        .current_dir(workspace_root())
        .arg("ingest")
        .args(["--stream", stream])
        .arg("--lake")
        .arg(lake)
        .args(["--kinesis-endpoint", kinesis_endpoint])
        .args(["--region", "us-east-1"])
        .args(extra)
        // Any static credentials work with a local Kinesis server.
        .env("AWS_ACCESS_KEY_ID", "tern-test")
        .env("AWS_SECRET_ACCESS_KEY", "tern-test")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env(
            "TERN_LAKE_LOG",
            std::env::var("TERN_LAKE_LOG").unwrap_or_else(|_| "warn,deltalake_core=off".into()),
        );
    Ok(command)
}

/// Runs ingest with `--stop-when-caught-up` to its end; returns the summary it prints.
pub fn ingest_until_caught_up(
    kinesis_endpoint: &str,
    stream: &str,
    lake: impl AsRef<OsStr>,
    extra: &[&str],
) -> Result<Value> {
    let output = ingest_command(kinesis_endpoint, stream, lake, extra)?
        .arg("--stop-when-caught-up")
        .stderr(Stdio::inherit())
        .output()
        .context("tern-lake ingest")?;
    if !output.status.success() {
        bail!("tern-lake ingest exited with {}", output.status);
    }
    let stdout = String::from_utf8(output.stdout)?;
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("ingest summary: {stdout:?}"))
}

/// Starts a long-running ingest with its metrics on a free port.
pub fn start_ingest(
    kinesis_endpoint: &str,
    stream: &str,
    lake: impl AsRef<OsStr>,
    extra: &[&str],
) -> Result<Listening> {
    let mut command = ingest_command(kinesis_endpoint, stream, lake, extra)?;
    command.args(["--metrics-listen", "127.0.0.1:0"]);
    Listening::spawn(command, "tern-lake ingest")
}

/// Runs `query` with `tern-lake sql --format json` (at table version `as_of`, if given); the
/// rows as JSON objects.
pub fn sql(
    lake: impl AsRef<OsStr>,
    query: &str,
    as_of: Option<i64>,
) -> Result<Vec<Map<String, Value>>> {
    match as_of {
        Some(version) => sql_with(lake, query, &["--as-of", &version.to_string()]),
        None => sql_with(lake, query, &[]),
    }
}

/// Runs `query` with `tern-lake sql --format json` and `extra` flags (`--snapshot NAME`, ...);
/// the rows as JSON objects.
pub fn sql_with(
    lake: impl AsRef<OsStr>,
    query: &str,
    extra: &[&str],
) -> Result<Vec<Map<String, Value>>> {
    let mut command = Command::new(binary("tern-lake")?);
    command
        .arg("sql")
        .arg("--lake")
        .arg(lake)
        .args(["--format", "json"])
        .args(extra);
    let output = command.arg(query).output().context("tern-lake sql")?;
    if !output.status.success() {
        bail!(
            "tern-lake sql {query:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8(output.stdout)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

/// The one number a query like `SELECT count(*) AS n ...` answers.
pub fn sql_number(lake: impl AsRef<OsStr>, query: &str, as_of: Option<i64>) -> Result<i64> {
    let rows = sql(lake, query, as_of)?;
    rows.first()
        .and_then(|r| r.values().next())
        .and_then(Value::as_i64)
        .with_context(|| format!("{query:?} answered {rows:?}"))
}

/// The latest version of `lake`'s `events` table (the largest number in its `_delta_log`).
pub fn latest_version(lake: &Path) -> Result<i64> {
    let mut latest = -1;
    for entry in std::fs::read_dir(lake.join("events/_delta_log"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(v) = name
            .strip_suffix(".json")
            .and_then(|n| n.parse::<i64>().ok())
        {
            latest = latest.max(v);
        }
    }
    Ok(latest)
}

/// A wire-format batch of `count` events of `install`, created at `created_at`, `seq` from
/// `first_seq`; returns the body and the event ids.
pub fn batch(
    install: &str,
    first_seq: u64,
    count: usize,
    created_at: DateTime<Utc>,
) -> (Value, Vec<Uuid>) {
    let ids: Vec<Uuid> = (0..count).map(|_| Uuid::now_v7()).collect();
    let stamp = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let events: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (name, properties) = crate::sample_event(i);
            json!({
                "event_id": id,
                "seq": first_seq + i as u64,
                "name": name,
                "created_at": stamp(created_at),
                "properties": properties,
            })
        })
        .collect();
    let body = json!({
        "batch_id": Uuid::now_v7(),
        "install_id": install,
        "sent_at": stamp(Utc::now()),
        "sdk": { "name": "tern-tests", "version": "0" },
        "context": { "app": { "id": "dev.tern.test", "version": "2.0.0" }, "os": { "name": "Android", "version": "15" } },
        "events": events,
    });
    (body, ids)
}

/// Posts a batch to a collector; the HTTP status.
pub fn post(client: &reqwest::blocking::Client, collector_url: &str, body: &Value) -> Result<u16> {
    let response = client
        .post(format!("{collector_url}/v1/batch"))
        .bearer_auth(WRITE_KEY)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body)?)
        .send()?;
    Ok(response.status().as_u16())
}

/// The completeness query of `docs/analysis.md`, as the docs print it (so the docs' query is
/// the one tested).
pub fn completeness_query() -> Result<String> {
    let docs = std::fs::read_to_string(workspace_root().join("docs/analysis.md"))?;
    let section = docs
        .find("### Completeness per install")
        .map(|at| &docs[at..])
        .context("docs/analysis.md has no completeness section")?;
    let start = section.find("```sql\n").context("no SQL block")? + "```sql\n".len();
    let end = start
        + section[start..]
            .find("```")
            .context("unterminated SQL block")?;
    Ok(section[start..end].trim().trim_end_matches(';').to_owned())
}

/// Runs `tern-lake ARGS...` to its end: its stdout if it exits 0, an error holding its stderr
/// otherwise.
pub fn tern_lake(args: &[&OsStr]) -> Result<String> {
    tern_lake_in(None, args)
}

/// [`tern_lake`], run from `dir` if given.
fn tern_lake_in(dir: Option<&Path>, args: &[&OsStr]) -> Result<String> {
    let mut command = Command::new(binary("tern-lake")?);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let output = command
        .args(args)
        .env(
            "TERN_LAKE_LOG",
            std::env::var("TERN_LAKE_LOG").unwrap_or_else(|_| "warn,deltalake_core=off".into()),
        )
        .output()
        .context("tern-lake")?;
    if !output.status.success() {
        bail!(
            "tern-lake {args:?} exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// `tern-lake backfill --lake LAKE --stream STREAM --from FROM --to TO EXTRA...`, run from the
/// workspace root (rule files are named relative to it); the JSON report it prints last.
pub fn backfill(
    lake: &Path,
    stream: &str,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
    extra: &[&str],
) -> Result<Value> {
    let (from, to) = (from.to_string(), to.to_string());
    let mut args: Vec<&OsStr> = vec!["backfill".as_ref(), "--lake".as_ref(), lake.as_os_str()];
    args.extend(
        ["--stream", stream, "--from", &from, "--to", &to]
            .into_iter()
            .chain(extra.iter().copied())
            .map(OsStr::new),
    );
    let stdout = tern_lake_in(Some(&workspace_root()), &args)?;
    let last = stdout.lines().last().context("backfill printed nothing")?;
    serde_json::from_str(last).with_context(|| format!("backfill report: {stdout:?}"))
}

/// `tern-lake compact --lake LAKE EXTRA...`; the JSON summary it prints.
pub fn compact(lake: &Path, extra: &[&str]) -> Result<Value> {
    let mut args: Vec<&OsStr> = vec!["compact".as_ref(), "--lake".as_ref(), lake.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    let stdout = tern_lake(&args)?;
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("compact summary: {stdout:?}"))
}

/// The entry of `table` in a compact summary.
pub fn compact_table<'a>(summary: &'a Value, table: &str) -> Result<&'a Value> {
    summary["tables"]
        .as_array()
        .and_then(|tables| tables.iter().find(|t| t["table"] == table))
        .with_context(|| format!("no {table} in {summary}"))
}

/// `tern-lake snapshot ACTION [NAME] --lake LAKE`; its stdout.
pub fn snapshot(lake: &Path, action: &str, name: Option<&str>, extra: &[&str]) -> Result<String> {
    let mut args: Vec<&OsStr> = vec!["snapshot".as_ref(), action.as_ref()];
    args.extend(name.map(OsStr::new));
    args.extend(["--lake".as_ref(), lake.as_os_str()]);
    args.extend(extra.iter().map(OsStr::new));
    tern_lake(&args)
}

/// Runs one of the Python tools in `tools/lake/` (Python `deltalake`, an independent reader) on
/// `lake`; the JSON object it prints.
pub fn python_tool(script: &str, lake: &Path, extra: &[&str]) -> Result<Value> {
    let python = workspace_root().join(".venv/bin/python");
    if !python.exists() {
        bail!(
            "{} is missing: run `make test` (it creates .venv)",
            python.display()
        );
    }
    let output = Command::new(&python)
        .arg(workspace_root().join("tools/lake").join(script))
        .arg(lake)
        .args(extra)
        .output()
        .with_context(|| format!("python {script}"))?;
    if !output.status.success() {
        bail!("{script}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// A stream record as a collector writes it, of `install` with `seq`, that happened at
/// `event_time` (days ago for a phone that was offline) and was received now.
pub fn stream_record(install: &str, seq: u64, event_time: DateTime<Utc>) -> StreamRecord {
    let now = Utc::now();
    let (name, properties) = crate::sample_event(seq as usize);
    StreamRecord {
        v: tern_protocol::RECORD_VERSION,
        event_id: Uuid::now_v7(),
        app_id: crate::APP_ID.into(),
        install_id: install.into(),
        seq,
        name: name.into(),
        created_at: event_time,
        event_time,
        sent_at: now,
        received_at: now,
        properties,
        context: tern_protocol::Context::default(),
        user_id: seq.is_multiple_of(3).then(|| format!("user-{install}")),
        session_id: None,
        batch_id: Uuid::now_v7(),
        sdk: tern_protocol::SdkInfo {
            name: "tern-tests".into(),
            version: "0".into(),
        },
        collector_id: "test".into(),
    }
}

/// Writes `records` to `stream` as a collector would (partition key `install_id`).
pub async fn put_records(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    records: &[tern_protocol::StreamRecord],
) -> Result<()> {
    for chunk in records.chunks(500) {
        let entries = chunk
            .iter()
            .map(|r| {
                Ok(aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                    .data(aws_sdk_kinesis::primitives::Blob::new(serde_json::to_vec(
                        r,
                    )?))
                    .partition_key(&r.install_id)
                    .build()?)
            })
            .collect::<Result<Vec<_>>>()?;
        let out = client
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries))
            .send()
            .await?;
        if out.failed_record_count().unwrap_or(0) > 0 {
            bail!("{:?} records refused", out.failed_record_count());
        }
    }
    Ok(())
}
