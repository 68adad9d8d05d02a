//! Commits: the side tables (`raw`, `gaps`, `batches`, `rejected`), then `events` with every shard's
//! position in the same version, tried again until it lands; the bookkeeping after each.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use chrono::Utc;
use deltalake::arrow::array::RecordBatch;
use deltalake::DeltaTable;
use serde_json::json;

use super::state::{Buffer, Ingest};
use crate::checkpoint::{self, Position};
use crate::clean;
use crate::error::Result;
use crate::limits::{COMMIT_RETRY_MAX, COMMIT_RETRY_MIN};
use crate::query;
use crate::table::{self, EventColumns};

impl Ingest {
    /// Commits the buffered raw records, gap records, batch records and rejects to their
    /// tables, each with the positions of its shards; the four commits run at once (they are
    /// independent tables), and each one that lands is taken in even when another fails.
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
        let batches_batch = (!buffer.batches.is_empty())
            .then(|| table::batches_batch(&buffer.batches, now))
            .transpose()?;
        let rejected_batch = (!buffer.rejects.is_empty())
            .then(|| table::rejected_batch(&buffer.rejects, now))
            .transpose()?;
        let (raw, gaps, batches, rejected) = tokio::join!(
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
                &mut self.batches,
                batches_batch,
                buffer.batches.iter().map(|(_, f)| &*f.shard_id).collect(),
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
        match batches {
            Some(Ok(positions)) => {
                let n = self.buffer.batches.len() as u64;
                self.metrics.batch_records_written.inc_by(n);
                self.summary.batches += n;
                self.buffer.batches.clear();
                self.batches_to.extend(positions);
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

    /// Commits the buffer and every shard's position; tries again until it lands.
    pub(super) async fn commit(&mut self) {
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
    pub(super) async fn catch_up_with_table(&mut self) -> Result<()> {
        self.events.update_state().await?;
        // The side tables too: their commits carry the shards' positions as well, so another
        // writer's commit to them conflicts with this one's until it is taken in.
        self.rejected.update_state().await?;
        self.gaps.update_state().await?;
        self.batches.update_state().await?;
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
        // Raw records, gaps, batch records and rejects first: a crash before the `events`
        // commit re-reads them, and `raw_to`/`gaps_to`/`batches_to`/`rejected_to` keep them
        // from being written twice.
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

/// Commits `batch` (if any) to a side table (`raw`, `gaps`, `batches`, `rejected`) with the positions of
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
