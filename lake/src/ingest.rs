//! `tern-lake ingest`: the stream into `events` (and `gaps`, `rejected`), exactly once by
//! `event_id` (and `gap_id`).
//!
//! One loop: read every due shard, decode, drop what the table (or this commit) already holds,
//! buffer; every commit interval (or N rows) commit the rows and every shard's position in one
//! Delta version. A failed commit is taken in and tried again, never dropped.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use deltalake::arrow::array::RecordBatch;
use deltalake::DeltaTable;
use serde_json::json;
use tern_protocol::{GapRecord, StreamRecord};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::checkpoint::{self, compare_sequence, Position};
use crate::clean::{self, CleanStream};
use crate::config::IngestConfig;
use crate::decode::{self, Decoded};
use crate::dedup::DedupWindow;
use crate::error::Result;
use crate::limits::{
    COMMIT_RETRY_MAX, COMMIT_RETRY_MIN, PARTITION_CHECK_DAYS, PARTITION_CHECK_SLACK,
};
use crate::metrics::Metrics;
use crate::query;
use crate::rules::Rules;
use crate::source::{ShardRead, Source};
use crate::table::{self, EventColumns, Provenance, RawRow, RejectedRow};

/// What a run did, for the log line at its end (and the demo).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Stream record documents read.
    pub documents_read: u64,
    /// Rows committed to `events`.
    pub rows_written: u64,
    /// Duplicates removed.
    pub duplicates_removed: u64,
    /// Documents committed to `rejected`.
    pub rejected: u64,
    /// Gap records committed to `gaps`.
    pub gaps: u64,
    /// Commits to `events`.
    pub commits: u64,
    /// Rows published to the cleansed stream, republished ones included.
    pub clean_published: u64,
    /// Rows published again at start (committed before a crash, publish not recorded).
    pub clean_republished: u64,
}

/// Rows read but not committed yet.
#[derive(Default)]
struct Buffer {
    events: Vec<(StreamRecord, Provenance)>,
    ids: HashSet<u128>,
    rejects: Vec<RejectedRow>,
    gaps: Vec<(GapRecord, Provenance)>,
    raw: Vec<RawRow>,
    since: Option<Instant>,
}

impl Buffer {
    fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.rejects.is_empty()
            && self.gaps.is_empty()
            && self.raw.is_empty()
    }

    fn rows(&self) -> usize {
        self.events.len() + self.rejects.len() + self.gaps.len()
    }
}

struct Ingest {
    config: IngestConfig,
    metrics: Arc<Metrics>,
    events: DeltaTable,
    rejected: DeltaTable,
    /// How far `rejected` holds each shard's rejects (ahead of `events` after a crash between
    /// the two commits: those rejects are not written twice).
    rejected_to: HashMap<String, Position>,
    gaps: DeltaTable,
    /// How far `gaps` holds each shard's gap records (as `rejected_to`).
    gaps_to: HashMap<String, Position>,
    /// Every `gap_id` in `gaps` (few: one per SDK give-up, not per event) and in the buffer.
    gap_ids: HashSet<u128>,
    raw: DeltaTable,
    /// How far `raw` holds each shard's records (as `rejected_to`).
    raw_to: HashMap<String, Position>,
    source: Source,
    window: DedupWindow,
    /// Files of `events` whose ids the window has taken in.
    known_files: HashSet<String>,
    ctx: deltalake::datafusion::prelude::SessionContext,
    buffer: Buffer,
    summary: Summary,
    rules: Rules,
    clean: Option<Clean>,
    stopping: Arc<AtomicBool>,
}

/// The cleansed stream and how far it has been published.
struct Clean {
    stream: CleanStream,
    /// The `txn` app id of this worker's mark.
    app_id: String,
    /// `ingested_at` (microseconds) of the last commit whose rows were all accepted.
    mark: i64,
    /// The mark the table holds.
    saved: i64,
}

/// Runs ingest until `shutdown` resolves (then commits what it read and returns) or, with
/// `stop_when_caught_up`, until every shard is read to its tip and committed.
pub async fn run(
    config: IngestConfig,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Summary> {
    let stopping = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(Notify::new());
    {
        let (stopping, wake) = (Arc::clone(&stopping), Arc::clone(&wake));
        tokio::spawn(async move {
            shutdown.await;
            stopping.store(true, AtomicOrdering::SeqCst);
            wake.notify_one();
        });
    }
    let mut ingest = Ingest::open(config, metrics, Arc::clone(&stopping)).await?;
    ingest.republish().await?;
    tracing::info!(
        stream = ingest.source.stream(),
        lake = %ingest.config.lake,
        window_ids = ingest.window.len(),
        version = ingest.events.version(),
        "ingest started"
    );
    let mut last_evict = Instant::now();
    loop {
        if stopping.load(AtomicOrdering::SeqCst) {
            break;
        }
        if ingest.source.refresh_due() {
            // With other workers, their commits hold the positions of the parents this worker
            // waits for: take the table in first (with the ids they wrote).
            let shared = ingest.config.worker().is_ok_and(|w| w.count > 1);
            if shared {
                if let Err(error) = ingest.catch_up_with_table().await {
                    tracing::warn!(%error, "cannot read the table; trying again later");
                }
            }
            if let Err(error) = ingest.source.refresh(&ingest.events).await {
                tracing::warn!(%error, "cannot list shards; trying again later");
            }
        }
        let reads = ingest.source.poll(&ingest.metrics).await;
        for read in reads {
            ingest.take(read);
        }
        let interval = ingest.config.commit_interval();
        let unsaved = ingest.unsaved();
        let due = ingest.buffer.rows() >= ingest.config.commit_rows
            || ingest.buffer.since.is_some_and(|s| s.elapsed() >= interval)
            // A batch run commits as soon as it has read everything.
            || (ingest.config.stop_when_caught_up && unsaved && ingest.source.caught_up());
        if due {
            ingest.commit().await;
        }
        if last_evict.elapsed() >= Duration::from_secs(60) {
            ingest.window.evict(Utc::now());
            ingest
                .metrics
                .dedup_window_ids
                .set(ingest.window.len() as i64);
            last_evict = Instant::now();
        }
        if ingest.config.stop_when_caught_up
            // A shard that just ended may have children not listed yet.
            && !ingest.source.refresh_due()
            && ingest.source.caught_up()
            && !ingest.unsaved()
        {
            tracing::info!("every shard is read to its tip and committed");
            break;
        }
        // Sleep until a shard or the commit is due, or shutdown.
        let now = Instant::now();
        let mut until = ingest
            .source
            .next_due()
            .unwrap_or(now + Duration::from_secs(1));
        if let Some(since) = ingest.buffer.since {
            until = until.min(since + interval);
        }
        if until > now {
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = wake.notified() => {}
            }
        }
    }
    if ingest.unsaved() {
        ingest.commit().await;
    }
    tracing::info!(summary = ?ingest.summary, "ingest stopped");
    Ok(ingest.summary)
}

impl Ingest {
    async fn open(
        config: IngestConfig,
        metrics: Arc<Metrics>,
        stopping: Arc<AtomicBool>,
    ) -> Result<Self> {
        let rules = Rules::load(config.rules.as_deref())?;
        let events = table::open_events(&config.lake).await?;
        let rejected = table::open_rejected(&config.lake).await?;
        let client =
            crate::source::client(&config.region, config.kinesis_endpoint.as_deref()).await;
        let clean = match &config.clean_stream {
            None => None,
            Some(name) => {
                let app_id = clean::mark_app_id(&config.stream, name, &config.worker);
                let stored = events
                    .snapshot()?
                    .transaction_version(events.log_store().as_ref(), app_id.clone())
                    .await?;
                // A first start publishes what this run commits, not the table's history.
                let mark = stored.unwrap_or_else(|| Utc::now().timestamp_micros() - 1);
                Some(Clean {
                    stream: CleanStream::new(client.clone(), name.clone()),
                    app_id,
                    mark,
                    saved: stored.unwrap_or(i64::MIN),
                })
            }
        };
        let source = Source::open(client, &config.stream, config.worker()?, &events).await?;
        let gaps = table::open_gaps(&config.lake).await?;
        let raw = table::open_raw(&config.lake).await?;
        let (mut rejected_to, mut gaps_to, mut raw_to) =
            (HashMap::new(), HashMap::new(), HashMap::new());
        for shard in source.shard_ids() {
            for (table, to) in [
                (&rejected, &mut rejected_to),
                (&gaps, &mut gaps_to),
                (&raw, &mut raw_to),
            ] {
                if let Some(position) = checkpoint::read(table, &config.stream, &shard).await? {
                    to.insert(shard.clone(), position);
                }
            }
        }
        let ctx = query::new_session()?;
        let gap_ids = query::gap_ids(&ctx, &gaps).await?;
        let mut ingest = Self {
            window: DedupWindow::new(config.dedup_window()),
            config,
            metrics,
            events,
            rejected,
            rejected_to,
            gaps,
            gaps_to,
            gap_ids,
            raw,
            raw_to,
            source,
            known_files: HashSet::new(),
            ctx,
            buffer: Buffer::default(),
            summary: Summary::default(),
            rules,
            clean,
            stopping,
        };
        ingest.load_window().await?;
        Ok(ingest)
    }

    /// Fills the dedup window from the table: every `event_id` received within it.
    async fn load_window(&mut self) -> Result<()> {
        self.known_files = self.events.get_file_uris()?.collect();
        query::load_window(&self.ctx, &self.events, &mut self.window).await?;
        self.metrics.dedup_window_ids.set(self.window.len() as i64);
        Ok(())
    }

    /// Decodes what a shard gave and buffers what is new.
    fn take(&mut self, read: ShardRead) {
        let shard_id: Arc<str> = Arc::from(read.shard_id.as_str());
        let rejected_to = self.rejected_to.get(&read.shard_id).cloned();
        let gaps_to = self.gaps_to.get(&read.shard_id).cloned();
        let raw_to = self.raw_to.get(&read.shard_id).cloned();
        for record in read.records {
            self.metrics.records_read.inc();
            let sequence_number: Arc<str> = Arc::from(record.sequence_number.as_str());
            for (sub_sequence, document) in decode::user_records(&record.data) {
                self.metrics.documents_read.inc();
                self.summary.documents_read += 1;
                let from = Provenance {
                    shard_id: Arc::clone(&shard_id),
                    sequence_number: Arc::clone(&sequence_number),
                    sub_sequence,
                    arrived_at: record.arrived_at,
                };
                match decode::decode_with(document, &self.rules) {
                    Decoded::Event(event) => {
                        let id = event.event_id.as_u128();
                        if self.window.contains(&event.event_id) || !self.buffer.ids.insert(id) {
                            self.duplicate();
                            continue;
                        }
                        self.buffer.events.push((*event, from));
                    }
                    Decoded::Gap(gap) => {
                        // Committed to `gaps` before a crash kept its position out of `events`,
                        // or a copy (the same gap resent).
                        if written(gaps_to.as_ref(), &record.sequence_number)
                            || !self.gap_ids.insert(gap.gap_id.as_u128())
                        {
                            self.duplicate();
                            continue;
                        }
                        self.buffer.gaps.push((*gap, from));
                    }
                    Decoded::Rejected { reason, message } => {
                        if written(rejected_to.as_ref(), &record.sequence_number) {
                            // Committed to `rejected` before a crash kept it out of `events`.
                            self.metrics.rejected(reason);
                            self.summary.rejected += 1;
                            continue;
                        }
                        self.buffer.rejects.push(RejectedRow {
                            from,
                            reason,
                            message,
                            data: document.to_vec(),
                            ingested_at: None,
                        });
                    }
                }
            }
            // Archived before a crash kept its position out of `events`: not twice.
            if !written(raw_to.as_ref(), &record.sequence_number) {
                self.buffer.raw.push(RawRow {
                    shard_id: Arc::clone(&shard_id),
                    record,
                });
            }
        }
        if self.buffer.since.is_none() {
            // Positions to save even when every document was a duplicate.
            self.buffer.since = Some(Instant::now());
        }
    }

    /// Commits the buffered raw records, gap records and rejects to their tables, each with
    /// the positions of its shards; the three commits run at once (they are independent
    /// tables), and each one that lands is taken in even when another fails.
    async fn commit_sides(
        &mut self,
        progress: &[(String, Position)],
        now: chrono::DateTime<Utc>,
    ) -> Result<()> {
        let stream = self.source.stream().to_owned();
        let buffer = &self.buffer;
        let raw_batch = (!buffer.raw.is_empty())
            .then(|| table::raw_batch(&buffer.raw, now))
            .transpose()?;
        let gaps_batch = (!buffer.gaps.is_empty())
            .then(|| table::gaps_batch(&buffer.gaps, now))
            .transpose()?;
        let rejected_batch = (!buffer.rejects.is_empty())
            .then(|| table::rejected_batch(&buffer.rejects, now))
            .transpose()?;
        let (raw, gaps, rejected) = tokio::join!(
            commit_side(
                &mut self.raw,
                raw_batch,
                buffer.raw.iter().map(|r| &*r.shard_id).collect(),
                progress,
                &stream,
                now
            ),
            commit_side(
                &mut self.gaps,
                gaps_batch,
                buffer.gaps.iter().map(|(_, f)| &*f.shard_id).collect(),
                progress,
                &stream,
                now
            ),
            commit_side(
                &mut self.rejected,
                rejected_batch,
                buffer.rejects.iter().map(|r| &*r.from.shard_id).collect(),
                progress,
                &stream,
                now
            ),
        );
        let mut failed = None;
        match raw {
            Some(Ok(positions)) => {
                self.metrics
                    .raw_records_written
                    .inc_by(self.buffer.raw.len() as u64);
                self.buffer.raw.clear();
                self.raw_to.extend(positions);
            }
            Some(Err(error)) => failed = Some(error),
            None => {}
        }
        match gaps {
            Some(Ok(positions)) => {
                let n = self.buffer.gaps.len() as u64;
                self.metrics.gap_records_written.inc_by(n);
                self.summary.gaps += n;
                self.buffer.gaps.clear();
                self.gaps_to.extend(positions);
            }
            Some(Err(error)) => failed = failed.or(Some(error)),
            None => {}
        }
        match rejected {
            Some(Ok(positions)) => {
                for row in &self.buffer.rejects {
                    self.metrics.rejected(row.reason);
                }
                self.summary.rejected += self.buffer.rejects.len() as u64;
                self.buffer.rejects.clear();
                self.rejected_to.extend(positions);
            }
            Some(Err(error)) => failed = failed.or(Some(error)),
            None => {}
        }
        failed.map_or(Ok(()), Err)
    }

    /// Whether anything read or published is not recorded in the table yet.
    fn unsaved(&self) -> bool {
        !self.buffer.is_empty()
            || !self.source.progress().is_empty()
            || self.clean.as_ref().is_some_and(|c| c.mark != c.saved)
    }

    /// Publishes again the rows of this worker's shards committed after the mark: a crash
    /// came between their commit and the record of their publish.
    async fn republish(&mut self) -> Result<()> {
        let Some(clean) = &self.clean else {
            return Ok(());
        };
        if self.events.get_file_uris()?.next().is_none() {
            return Ok(());
        }
        query::register(&self.ctx, table::EVENTS, &self.events).await?;
        let sql = format!(
            "SELECT * FROM events WHERE ingested_at > to_timestamp_micros({})",
            clean.mark
        );
        let worker = self.config.worker()?;
        let mut records = Vec::new();
        let mut latest = clean.mark;
        for batch in query::collect(&self.ctx, &sql).await? {
            let batch = query::owned_rows(&batch, &worker)?;
            latest = latest.max(query::max_micros(&batch, "ingested_at")?.unwrap_or(latest));
            records.extend(clean::records(&batch)?);
        }
        if records.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            rows = records.len(),
            stream = clean.stream.name(),
            "publishing again the rows committed after the last recorded publish"
        );
        let n = records.len() as u64;
        if clean
            .stream
            .publish(&records, &self.metrics, &self.stopping)
            .await
        {
            self.metrics.clean_republished.inc_by(n);
            self.summary.clean_republished += n;
            self.summary.clean_published += n;
            if let Some(clean) = &mut self.clean {
                clean.mark = latest;
            }
            // Recorded by the next commit.
            self.buffer.since.get_or_insert_with(Instant::now);
        }
        Ok(())
    }

    /// Publishes the rows of the commit made at `ingested_at` (microseconds); on success the
    /// mark moves to it, recorded by the next commit.
    async fn publish(&mut self, batch: &RecordBatch, ingested_at: i64) {
        let Some(clean) = &mut self.clean else {
            return;
        };
        let records = match clean::records(batch) {
            Ok(records) => records,
            Err(error) => {
                // The rows stay after the mark: the next start publishes them.
                tracing::error!(%error, "cannot build clean records");
                return;
            }
        };
        if clean
            .stream
            .publish(&records, &self.metrics, &self.stopping)
            .await
        {
            clean.mark = ingested_at;
            self.summary.clean_published += records.len() as u64;
            self.buffer.since.get_or_insert_with(Instant::now);
        }
    }

    fn duplicate(&mut self) {
        self.metrics.duplicates_removed.inc();
        self.summary.duplicates_removed += 1;
    }

    /// Drops buffered events whose id the window now holds (another writer committed them).
    fn refilter(&mut self) {
        let window = &self.window;
        let copies: HashSet<u128> = self
            .buffer
            .events
            .iter()
            .map(|(e, _)| &e.event_id)
            .filter(|id| window.contains(id))
            .map(Uuid::as_u128)
            .collect();
        self.drop_buffered(&copies);
    }

    /// Drops the buffered events with these ids, counting each as a duplicate.
    fn drop_buffered(&mut self, copies: &HashSet<u128>) {
        if copies.is_empty() {
            return;
        }
        let before = self.buffer.events.len();
        self.buffer
            .events
            .retain(|(e, _)| !copies.contains(&e.event_id.as_u128()));
        self.buffer.ids.retain(|id| !copies.contains(id));
        let removed = (before - self.buffer.events.len()) as u64;
        self.metrics.duplicates_removed.inc_by(removed);
        self.summary.duplicates_removed += removed;
    }

    /// Buffered events that may have a copy older than the window: looked up in their
    /// `event_date` partitions (and the days beside), and dropped if found.
    async fn check_old_partitions(&mut self) -> Result<()> {
        if self.events.get_file_uris()?.next().is_none() {
            return Ok(());
        }
        let slack = chrono::Duration::from_std(PARTITION_CHECK_SLACK).unwrap_or_default();
        let limit = self.window.start(Utc::now()) + slack;
        let old: Vec<&StreamRecord> = self
            .buffer
            .events
            .iter()
            .map(|(e, _)| e)
            .filter(|e| e.event_time.min(e.created_at) < limit)
            .collect();
        if old.is_empty() {
            return Ok(());
        }
        let mut dates = HashSet::new();
        for e in &old {
            for d in -PARTITION_CHECK_DAYS..=PARTITION_CHECK_DAYS {
                dates.insert((e.event_time + chrono::Duration::days(d)).date_naive());
            }
        }
        let ids: Vec<String> = old.iter().map(|e| e.event_id.to_string()).collect();
        query::register(&self.ctx, table::EVENTS, &self.events).await?;
        let dates = dates
            .iter()
            .map(|d| format!("DATE '{d}'"))
            .collect::<Vec<_>>()
            .join(",");
        let mut found = Vec::new();
        for chunk in ids.chunks(1000) {
            let list = chunk
                .iter()
                .map(|id| format!("'{id}'"))
                .collect::<Vec<_>>()
                .join(",");
            let sql = format!(
                "SELECT event_id, received_at FROM events WHERE event_date IN ({dates}) AND event_id IN ({list})"
            );
            found.extend(query::id_pairs(query::collect(&self.ctx, &sql).await?)?);
        }
        let copies: HashSet<u128> = found
            .iter()
            .filter_map(|(id, _)| Uuid::parse_str(id).ok())
            .map(|id| id.as_u128())
            .collect();
        self.drop_buffered(&copies);
        Ok(())
    }

    /// Commits the buffer and every shard's position; tries again until it lands.
    async fn commit(&mut self) {
        let mut delay = COMMIT_RETRY_MIN;
        loop {
            match self.try_commit().await {
                Ok(None) => return,
                Ok(Some((batch, ingested_at))) => {
                    self.publish(&batch, ingested_at).await;
                    return;
                }
                Err(error) => {
                    self.metrics.commit_retries.inc();
                    let conflict = table::is_conflict(&error);
                    tracing::warn!(%error, conflict, retry_in_ms = delay.as_millis() as u64, "commit failed; taking in the table and trying again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(COMMIT_RETRY_MAX);
                    if let Err(error) = self.catch_up_with_table().await {
                        tracing::warn!(%error, "cannot read the table");
                    }
                }
            }
        }
    }

    /// After a failed commit: the latest table state, and the ids another writer committed.
    async fn catch_up_with_table(&mut self) -> Result<()> {
        self.events.update_state().await?;
        // The side tables too: their commits carry the shards' positions as well, so another
        // writer's commit to them conflicts with this one's until it is taken in.
        self.rejected.update_state().await?;
        self.gaps.update_state().await?;
        self.raw.update_state().await?;
        let files: HashSet<String> = self.events.get_file_uris()?.collect();
        let new: Vec<String> = files.difference(&self.known_files).cloned().collect();
        self.window
            .absorb(query::ids_in_files(&self.ctx, &self.events, new).await?);
        self.metrics.dedup_window_ids.set(self.window.len() as i64);
        self.known_files = files;
        self.refilter();
        Ok(())
    }

    /// Commits; returns the rows committed and their `ingested_at` (microseconds) when they
    /// are to be published.
    async fn try_commit(&mut self) -> Result<Option<(RecordBatch, i64)>> {
        let started = Instant::now();
        self.check_old_partitions().await?;
        let progress = self.source.progress();
        let stream = self.source.stream().to_owned();
        let now = Utc::now();
        let now_ms = now.timestamp_millis();
        let worker = self.config.worker()?;
        // Raw records, gaps and rejects first: a crash before the `events` commit re-reads
        // them, and `raw_to`/`gaps_to`/`rejected_to` keep them from being written twice.
        self.commit_sides(&progress, now).await?;
        let mut columns = EventColumns::default();
        for (event, from) in &self.buffer.events {
            columns.push(event, from);
        }
        let rows = columns.len();
        let batch = columns.finish(now)?;
        let mut txns = vec![deltalake::kernel::Transaction {
            app_id: checkpoint::lock_app_id(&stream),
            version: now_ms,
            last_updated: Some(now_ms),
        }];
        txns.extend(
            progress
                .iter()
                .flat_map(|(s, p)| checkpoint::encode(&stream, s, p, now_ms)),
        );
        let mark = self.clean.as_ref().map(|c| c.mark);
        if let Some(clean) = &self.clean {
            txns.push(clean::mark_txn(&clean.app_id, clean.mark, now_ms));
        }
        let positions: serde_json::Map<String, serde_json::Value> = progress
            .iter()
            .map(|(s, p)| {
                let p = match p {
                    Position::After(seq) => json!(seq),
                    Position::End => json!("end"),
                };
                (s.clone(), p)
            })
            .collect();
        let metadata = HashMap::from([(
            "tern-lake".to_owned(),
            json!({
                "stream": stream,
                "worker": format!("{}/{}", worker.index, worker.count),
                "rows": rows,
                "positions": positions,
            }),
        )]);
        let publish = (self.clean.is_some() && rows > 0).then(|| batch.clone());
        let version = table::commit(&mut self.events, Some(batch), txns, metadata).await?;
        if let (Some(clean), Some(mark)) = (&mut self.clean, mark) {
            clean.saved = mark;
        }
        let visible = Utc::now();
        for (event, from) in &self.buffer.events {
            self.window.insert(&event.event_id, event.received_at);
            let freshness = (visible - from.arrived_at).num_milliseconds().max(0) as f64 / 1000.0;
            self.metrics.freshness.observe(freshness);
        }
        self.known_files = self.events.get_file_uris()?.collect();
        self.source.committed(&progress);
        self.metrics.rows_written.inc_by(rows as u64);
        self.metrics.commits.inc();
        self.metrics.commit_rows.observe(rows as f64);
        self.metrics
            .commit_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics.dedup_window_ids.set(self.window.len() as i64);
        self.summary.rows_written += rows as u64;
        self.summary.commits += 1;
        self.buffer = Buffer::default();
        tracing::info!(
            version,
            rows,
            shards = progress.len(),
            ms = started.elapsed().as_millis() as u64,
            "committed"
        );
        Ok(publish.map(|b| (b, now.timestamp_micros())))
    }
}

/// Whether a side table's position `to` already covers the record `sequence_number`.
fn written(to: Option<&Position>, sequence_number: &str) -> bool {
    match to {
        Some(Position::End) => true,
        Some(Position::After(seq)) => compare_sequence(sequence_number, seq).is_le(),
        None => false,
    }
}

/// The positions in `progress` of the shards in `shards`.
fn positions_of(
    progress: &[(String, Position)],
    shards: &HashSet<&str>,
) -> Vec<(String, Position)> {
    progress
        .iter()
        .filter(|(s, _)| shards.contains(s.as_str()))
        .cloned()
        .collect()
}

/// Commits `batch` (if any) to a side table (`raw`, `gaps`, `rejected`) with the positions of
/// the shards its rows came from; returns those positions, now held by that table.
async fn commit_side(
    table: &mut DeltaTable,
    batch: Option<RecordBatch>,
    shards: HashSet<&str>,
    progress: &[(String, Position)],
    stream: &str,
    now: chrono::DateTime<Utc>,
) -> Option<Result<Vec<(String, Position)>>> {
    let batch = batch?;
    let positions = positions_of(progress, &shards);
    let txns = positions
        .iter()
        .flat_map(|(s, p)| checkpoint::encode(stream, s, p, now.timestamp_millis()))
        .collect();
    Some(
        table::commit(table, Some(batch), txns, HashMap::new())
            .await
            .map(|_| positions),
    )
}
