//! The cleansed stream: each commit's rows published after it, and at start the rows a crash
//! left committed but not recorded as published.

use std::time::Instant;

use deltalake::arrow::array::RecordBatch;

use super::state::Ingest;
use crate::clean;
use crate::error::Result;
use crate::query;
use crate::table;

impl Ingest {
    /// Publishes again the rows of this worker's shards committed after the mark: a crash
    /// came between their commit and the record of their publish.
    pub(super) async fn republish(&mut self) -> Result<()> {
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
    pub(super) async fn publish(&mut self, batch: &RecordBatch, ingested_at: i64) {
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
}
