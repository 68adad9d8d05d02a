//! The state of one ingest run: the tables, the source, the dedup window, the buffer of rows
//! read but not committed, and the cleansed stream's mark; opening it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use deltalake::DeltaTable;
use tern_protocol::{BatchRecord, GapRecord, StreamRecord};

use crate::checkpoint::{self, Position};
use crate::clean::{self, CleanStream};
use crate::config::IngestConfig;
use crate::dedup::DedupWindow;
use crate::error::Result;
use crate::join::BatchCache;
use crate::limits::BATCH_CACHE_RECORDS;
use crate::metrics::Metrics;
use crate::query;
use crate::rules::Rules;
use crate::source::Source;
use crate::table::{self, Provenance, RawRow, RejectedRow};

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
    /// Batch records (stream record v2) committed to `batches`.
    pub batches: u64,
    /// Commits to `events`.
    pub commits: u64,
    /// Rows published to the cleansed stream, republished ones included.
    pub clean_published: u64,
    /// Rows published again at start (committed before a crash, publish not recorded).
    pub clean_republished: u64,
}

/// Rows read but not committed yet.
#[derive(Default)]
pub(super) struct Buffer {
    pub(super) events: Vec<(StreamRecord, Provenance)>,
    pub(super) ids: HashSet<u128>,
    pub(super) rejects: Vec<RejectedRow>,
    pub(super) gaps: Vec<(GapRecord, Provenance)>,
    pub(super) batches: Vec<(BatchRecord, Provenance)>,
    pub(super) raw: Vec<RawRow>,
    pub(super) since: Option<Instant>,
}

impl Buffer {
    pub(super) fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.rejects.is_empty()
            && self.gaps.is_empty()
            && self.batches.is_empty()
            && self.raw.is_empty()
    }

    pub(super) fn rows(&self) -> usize {
        self.events.len() + self.rejects.len() + self.gaps.len() + self.batches.len()
    }
}

pub(super) struct Ingest {
    pub(super) config: IngestConfig,
    pub(super) metrics: Arc<Metrics>,
    pub(super) events: DeltaTable,
    pub(super) rejected: DeltaTable,
    /// How far `rejected` holds each shard's rejects (ahead of `events` after a crash between
    /// the two commits: those rejects are not written twice).
    pub(super) rejected_to: HashMap<String, Position>,
    pub(super) gaps: DeltaTable,
    /// How far `gaps` holds each shard's gap records (as `rejected_to`).
    pub(super) gaps_to: HashMap<String, Position>,
    /// Every `gap_id` in `gaps` (few: one per SDK give-up, not per event) and in the buffer.
    pub(super) gap_ids: HashSet<u128>,
    pub(super) batches: DeltaTable,
    /// How far `batches` holds each shard's batch records (as `rejected_to`).
    pub(super) batches_to: HashMap<String, Position>,
    /// The latest batch record of each `batch_id` read (bounded), for the v2 events that follow.
    pub(super) batch_cache: BatchCache,
    pub(super) raw: DeltaTable,
    /// How far `raw` holds each shard's records (as `rejected_to`).
    pub(super) raw_to: HashMap<String, Position>,
    pub(super) source: Source,
    pub(super) window: DedupWindow,
    /// Files of `events` whose ids the window has taken in.
    pub(super) known_files: HashSet<String>,
    pub(super) ctx: deltalake::datafusion::prelude::SessionContext,
    pub(super) buffer: Buffer,
    pub(super) summary: Summary,
    pub(super) rules: Rules,
    pub(super) clean: Option<Clean>,
    pub(super) stopping: Arc<AtomicBool>,
}

/// The cleansed stream and how far it has been published.
pub(super) struct Clean {
    pub(super) stream: CleanStream,
    /// The `txn` app id of this worker's mark.
    pub(super) app_id: String,
    /// `ingested_at` (microseconds) of the last commit whose rows were all accepted.
    pub(super) mark: i64,
    /// The mark the table holds.
    pub(super) saved: i64,
}

impl Ingest {
    pub(super) async fn open(
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
        let batches = table::open_batches(&config.lake).await?;
        let raw = table::open_raw(&config.lake).await?;
        let (mut rejected_to, mut gaps_to, mut batches_to, mut raw_to) = (
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
        );
        for shard in source.shard_ids() {
            for (table, to) in [
                (&rejected, &mut rejected_to),
                (&gaps, &mut gaps_to),
                (&batches, &mut batches_to),
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
            batches,
            batches_to,
            batch_cache: BatchCache::new(BATCH_CACHE_RECORDS),
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

    /// Whether anything read or published is not recorded in the table yet.
    pub(super) fn unsaved(&self) -> bool {
        !self.buffer.is_empty()
            || !self.source.progress().is_empty()
            || self.clean.as_ref().is_some_and(|c| c.mark != c.saved)
    }
}
