//! Reading: what a shard gave, decoded (v2 events joined with their batch records), and
//! buffered unless already held.

use std::sync::Arc;
use std::time::Instant;

use tern_protocol::{BatchRecord, EventRecordV2};

use super::state::Ingest;
use crate::checkpoint::{compare_sequence, Position};
use crate::decode::{self, Decoded};
use crate::join::{self, Candidate, Known};
use crate::limits::{COMMIT_RETRY_MAX, COMMIT_RETRY_MIN};
use crate::source::ShardRead;
use crate::table::{Provenance, RawRow, RejectedRow};

impl Ingest {
    /// Decodes what a shard gave and buffers what is new.
    pub(super) async fn take(&mut self, read: ShardRead) {
        let shard_id: Arc<str> = Arc::from(read.shard_id.as_str());
        let rejected_to = self.rejected_to.get(&read.shard_id).cloned();
        let gaps_to = self.gaps_to.get(&read.shard_id).cloned();
        let batches_to = self.batches_to.get(&read.shard_id).cloned();
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
                let decoded = match decode::decode_with(document, &self.rules) {
                    Decoded::EventV2(event) => {
                        let batch = self.batch_of(&event, &from).await;
                        decode::join(*event, batch.as_deref(), &self.rules)
                    }
                    other => other,
                };
                match decoded {
                    Decoded::Event(event) => {
                        let id = event.event_id.as_u128();
                        if self.window.contains(&event.event_id) || !self.buffer.ids.insert(id) {
                            self.duplicate();
                            continue;
                        }
                        self.buffer.events.push((*event, from));
                    }
                    Decoded::Batch(batch) => {
                        // Held for the events that follow, also when `batches` has it already.
                        self.batch_cache.insert((*batch).clone());
                        // Committed to `batches` before a crash kept its position out of
                        // `events`: not twice.
                        if written(batches_to.as_ref(), &record.sequence_number) {
                            self.duplicate();
                            continue;
                        }
                        self.buffer.batches.push((*batch, from));
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
                    Decoded::EventV2(event) => {
                        // `join` never answers with an unjoined event; were it to, the event
                        // is kept in `rejected`, not lost.
                        if written(rejected_to.as_ref(), &record.sequence_number) {
                            self.metrics.rejected(decode::reason::NO_BATCH);
                            self.summary.rejected += 1;
                            continue;
                        }
                        self.buffer.rejects.push(RejectedRow {
                            from,
                            reason: decode::reason::NO_BATCH,
                            message: format!("batch_id {}: not joined", event.batch_id),
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

    /// The batch record the v2 `event` read at `at` joins, if any: the latest of its
    /// `batch_id` read; when the cache has none, the one it follows among those buffered and
    /// those in `batches`. A failed lookup in `batches` is tried again until it answers: the
    /// shard's position has moved past this event already, so it must not be skipped.
    async fn batch_of(
        &mut self,
        event: &EventRecordV2,
        at: &Provenance,
    ) -> Option<Arc<BatchRecord>> {
        match self.batch_cache.get(&event.batch_id) {
            Some(Known::Batch(batch)) => return Some(Arc::clone(batch)),
            Some(Known::Missing) => return None,
            None => {}
        }
        let buffered: Vec<&(BatchRecord, Provenance)> = self
            .buffer
            .batches
            .iter()
            .filter(|(b, _)| b.batch_id == event.batch_id)
            .collect();
        // Committed ones come before every buffered one of the same shard.
        let in_shard = buffered
            .iter()
            .any(|(_, from)| from.shard_id == at.shard_id);
        let stored = if in_shard {
            Vec::new()
        } else {
            let mut delay = COMMIT_RETRY_MIN;
            loop {
                match join::stored(&self.ctx, &self.batches, &event.batch_id).await {
                    Ok(stored) => break stored,
                    Err(error) => {
                        tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot look up a batch record in batches; trying again");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(COMMIT_RETRY_MAX);
                        if let Err(error) = self.batches.update_state().await {
                            tracing::warn!(%error, "cannot read batches");
                        }
                    }
                }
            }
        };
        let candidates: Vec<Candidate<'_>> = buffered
            .iter()
            .map(|b| Candidate::from(*b))
            .chain(stored.iter().map(Candidate::from))
            .collect();
        let found = join::pick(&candidates, at).cloned().map(Arc::new);
        let known = match &found {
            Some(batch) => Known::Batch(Arc::clone(batch)),
            None => Known::Missing,
        };
        self.batch_cache.put(event.batch_id, known);
        found
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
