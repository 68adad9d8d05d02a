//! Reading: what a shard gave, decoded, and buffered unless already held.

use std::sync::Arc;
use std::time::Instant;

use super::state::Ingest;
use crate::checkpoint::{compare_sequence, Position};
use crate::decode::{self, Decoded};
use crate::source::ShardRead;
use crate::table::{Provenance, RawRow, RejectedRow};

impl Ingest {
    /// Decodes what a shard gave and buffers what is new.
    pub(super) fn take(&mut self, read: ShardRead) {
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
}

/// Whether a side table's position `to` already covers the record `sequence_number`.
fn written(to: Option<&Position>, sequence_number: &str) -> bool {
    match to {
        Some(Position::End) => true,
        Some(Position::After(seq)) => compare_sequence(sequence_number, seq).is_le(),
        None => false,
    }
}
