//! Reads stream record documents of either version in shard order: a v2 event is joined with
//! its upload's batch record, which the collector writes before it, so meeting an event before
//! its batch record is an error here, not a record to skip.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Deserialize;
use tern_protocol::{
    BatchRecord, EventRecordV2, GapRecord, StreamRecord, BATCH_KIND, GAP_KIND, RECORD_VERSION,
    RECORD_VERSION_2,
};
use uuid::Uuid;

/// One document of the stream.
#[derive(Debug, Clone)]
pub enum Document {
    /// An event: a v1 record, or a v2 record joined with its batch record (`v` = 2).
    Event(Box<StreamRecord>),
    /// A gap record (v1 or v2).
    Gap(Box<GapRecord>),
    /// A v2 batch record (kept for the events that follow).
    Batch(Box<BatchRecord>),
}

/// The fields every record version starts with.
#[derive(Deserialize)]
struct Head {
    v: u32,
    #[serde(default)]
    kind: Option<String>,
}

/// Joins the documents of one stream read in shard order.
#[derive(Debug, Default)]
pub struct Joiner {
    /// The latest batch record of each batch id.
    batches: HashMap<Uuid, BatchRecord>,
}

impl Joiner {
    /// Parses one document; an error for anything that is not a stream record, and for a v2
    /// event whose batch record has not been read before it.
    pub fn document(&mut self, data: &[u8]) -> Result<Document> {
        let text = || String::from_utf8_lossy(data).into_owned();
        let head: Head = serde_json::from_slice(data)
            .with_context(|| format!("not a stream record: {}", text()))?;
        Ok(match (head.v, head.kind.as_deref()) {
            (RECORD_VERSION | RECORD_VERSION_2, Some(GAP_KIND)) => {
                Document::Gap(Box::new(serde_json::from_slice(data).with_context(text)?))
            }
            (RECORD_VERSION_2, Some(BATCH_KIND)) => {
                let batch: BatchRecord = serde_json::from_slice(data).with_context(text)?;
                self.batches.insert(batch.batch_id, batch.clone());
                Document::Batch(Box::new(batch))
            }
            (RECORD_VERSION, None) => {
                Document::Event(Box::new(serde_json::from_slice(data).with_context(text)?))
            }
            (RECORD_VERSION_2, None) => {
                let event: EventRecordV2 = serde_json::from_slice(data).with_context(text)?;
                let batch = self.batches.get(&event.batch_id).ok_or_else(|| {
                    anyhow!(
                        "v2 event {} of batch {} read before its batch record",
                        event.event_id,
                        event.batch_id
                    )
                })?;
                Document::Event(Box::new(event.join(batch).map_err(|e| anyhow!(e))?))
            }
            (v, kind) => bail!("unknown record version {v} or kind {kind:?}: {}", text()),
        })
    }
}
