//! Stream record v2: event records joined with the batch record of their upload.
//!
//! A reader in shard order meets an upload's batch record before its events ([`BatchCache`]
//! holds the latest of each `batch_id`, bounded). When the cache has none — after a restart
//! whose checkpoint fell between a batch record and its events, or after the cache forgot it —
//! the batch record is looked up among those read but not committed yet and in the `batches`
//! table ([`pick`] chooses the one the event follows).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use deltalake::datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use tern_protocol::BatchRecord;
use uuid::Uuid;

use crate::checkpoint::compare_sequence;
use crate::error::Result;
use crate::query;
use crate::table::{self, Provenance, StoredBatch, BATCHES};

/// What the cache knows of one `batch_id`.
#[derive(Debug, Clone)]
pub enum Known {
    /// The latest batch record of it read.
    Batch(Arc<BatchRecord>),
    /// Looked up and not found anywhere.
    Missing,
}

/// The batch records read, by `batch_id`, the latest of each; at most a given number, the
/// oldest inserted forgotten first.
#[derive(Debug)]
pub struct BatchCache {
    entries: HashMap<u128, (u64, Known)>,
    /// Insertion order: `(batch_id, stamp)`; a stamp that no longer matches its entry's is
    /// stale (the id was inserted again since).
    order: VecDeque<(u128, u64)>,
    next: u64,
    capacity: usize,
}

impl BatchCache {
    /// An empty cache of at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            capacity: capacity.max(1),
        }
    }

    /// What is known of `batch_id`, if anything.
    pub fn get(&self, batch_id: &Uuid) -> Option<&Known> {
        self.entries
            .get(&batch_id.as_u128())
            .map(|(_, known)| known)
    }

    /// Keeps `batch` as the latest batch record of its `batch_id`.
    pub fn insert(&mut self, batch: BatchRecord) {
        self.put(batch.batch_id, Known::Batch(Arc::new(batch)));
    }

    /// Records what a lookup of `batch_id` found.
    pub fn put(&mut self, batch_id: Uuid, known: Known) {
        let id = batch_id.as_u128();
        self.next += 1;
        self.entries.insert(id, (self.next, known));
        self.order.push_back((id, self.next));
        while self.entries.len() > self.capacity {
            let Some((old, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&old).is_some_and(|(s, _)| *s == stamp) {
                self.entries.remove(&old);
            }
        }
        // Stale stamps of ids inserted again: dropped once they outnumber the live ones.
        if self.order.len() > 2 * self.capacity {
            let entries = &self.entries;
            self.order
                .retain(|(id, stamp)| entries.get(id).is_some_and(|(s, _)| s == stamp));
        }
    }

    /// Ids held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A batch record and where it was read, as [`pick`] compares them.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// The record.
    pub batch: &'a BatchRecord,
    /// Its shard.
    pub shard_id: &'a str,
    /// Its Kinesis record's sequence number.
    pub sequence_number: &'a str,
    /// Its index in an aggregate.
    pub sub_sequence: Option<i32>,
}

impl<'a> From<&'a StoredBatch> for Candidate<'a> {
    fn from(s: &'a StoredBatch) -> Self {
        Self {
            batch: &s.batch,
            shard_id: &s.shard_id,
            sequence_number: &s.sequence_number,
            sub_sequence: s.sub_sequence,
        }
    }
}

impl<'a> From<&'a (BatchRecord, Provenance)> for Candidate<'a> {
    fn from((batch, from): &'a (BatchRecord, Provenance)) -> Self {
        Self {
            batch,
            shard_id: &from.shard_id,
            sequence_number: &from.sequence_number,
            sub_sequence: from.sub_sequence,
        }
    }
}

/// The batch record an event read at `at` joins among `candidates` (batch records of its
/// `batch_id`): the last one before it in its shard, as a reader in shard order would have
/// held it; else (its upload's batch record went to a parent shard before a reshard) the one
/// received last on another shard. One after it in its shard never counts: it is a resend's.
pub fn pick<'a>(candidates: &[Candidate<'a>], at: &Provenance) -> Option<&'a BatchRecord> {
    let position = |c: &Candidate<'a>| (c.sequence_number.len(), c.sequence_number, c.sub_sequence);
    let before = |c: &&Candidate<'a>| {
        compare_sequence(c.sequence_number, &at.sequence_number)
            .then(c.sub_sequence.cmp(&at.sub_sequence))
            .is_lt()
    };
    let same_shard = candidates
        .iter()
        .filter(|c| c.shard_id == &*at.shard_id)
        .filter(before)
        .max_by(|a, b| position(a).cmp(&position(b)));
    if let Some(c) = same_shard {
        return Some(c.batch);
    }
    candidates
        .iter()
        .filter(|c| c.shard_id != &*at.shard_id)
        .max_by_key(|c| c.batch.received_at)
        .map(|c| c.batch)
}

/// The batch records of `batch_id` that `batches` holds.
pub async fn stored(
    ctx: &SessionContext,
    batches: &DeltaTable,
    batch_id: &Uuid,
) -> Result<Vec<StoredBatch>> {
    if batches.get_file_uris()?.next().is_none() {
        return Ok(Vec::new());
    }
    query::register(ctx, BATCHES, batches).await?;
    // A UUID's text is hex digits and hyphens: nothing to escape.
    let sql = format!("SELECT * FROM {BATCHES} WHERE batch_id = '{batch_id}'");
    table::batch_records(&query::collect(ctx, &sql).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{good_record, v2_parts};
    use chrono::Utc;

    fn at(shard: &str, sequence: &str) -> Provenance {
        Provenance {
            shard_id: Arc::from(shard),
            sequence_number: Arc::from(sequence),
            sub_sequence: None,
            arrived_at: Utc::now(),
        }
    }

    #[test]
    fn the_cache_keeps_the_latest_of_each_id_and_forgets_the_oldest_first() {
        let (_, batch) = v2_parts(&good_record());
        let mut cache = BatchCache::new(2);
        cache.insert(batch.clone());
        let resent = BatchRecord {
            collector_id: "c-2".into(),
            ..batch.clone()
        };
        cache.insert(resent);
        assert_eq!(cache.len(), 1);
        match cache.get(&batch.batch_id) {
            Some(Known::Batch(b)) => assert_eq!(b.collector_id, "c-2"),
            other => panic!("{other:?}"),
        }
        let (second, third) = (Uuid::now_v7(), Uuid::now_v7());
        cache.put(second, Known::Missing);
        // The oldest id goes first.
        cache.put(third, Known::Missing);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&batch.batch_id).is_none());
        assert!(matches!(cache.get(&second), Some(Known::Missing)));
        assert!(matches!(cache.get(&third), Some(Known::Missing)));
        // Inserting again renews: `second` now outlives `third`.
        cache.put(second, Known::Missing);
        cache.put(Uuid::now_v7(), Known::Missing);
        assert!(cache.get(&second).is_some());
        assert!(cache.get(&third).is_none());
        for _ in 0..10 {
            cache.put(second, Known::Missing);
        }
        assert!(cache.order.len() <= 4, "{}", cache.order.len());
    }

    #[test]
    fn an_event_joins_the_last_batch_record_before_it_in_its_shard() {
        let (_, first) = v2_parts(&good_record());
        let resent = BatchRecord {
            received_at: first.received_at + chrono::Duration::seconds(60),
            collector_id: "c-2".into(),
            ..first.clone()
        };
        let later = BatchRecord {
            received_at: first.received_at + chrono::Duration::seconds(120),
            collector_id: "c-3".into(),
            ..first.clone()
        };
        let rows = [
            (first.clone(), at("s-1", "100")),
            (resent.clone(), at("s-1", "300")),
            (later.clone(), at("s-1", "1000")),
        ];
        let candidates: Vec<Candidate<'_>> = rows.iter().map(Candidate::from).collect();
        // Sequence numbers compare as numbers, not as text ("1000" > "300" > "200").
        assert_eq!(pick(&candidates, &at("s-1", "200")), Some(&first));
        assert_eq!(pick(&candidates, &at("s-1", "400")), Some(&resent));
        assert_eq!(pick(&candidates, &at("s-1", "1001")), Some(&later));
        // Before every batch record of its id: none is its own.
        assert_eq!(pick(&candidates, &at("s-1", "99")), None);
        // In a child shard after a reshard: the one received last in the parent.
        assert_eq!(pick(&candidates, &at("s-2", "5")), Some(&later));
        assert_eq!(pick(&[], &at("s-1", "5")), None);
    }

    #[tokio::test]
    async fn batch_records_are_found_again_in_the_batches_table() {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().to_str().unwrap().to_owned();
        let mut batches = table::open_batches(&lake).await.unwrap();
        let ctx = query::new_session().unwrap();
        let (_, first) = v2_parts(&good_record());
        assert!(stored(&ctx, &batches, &first.batch_id)
            .await
            .unwrap()
            .is_empty());
        let resent = BatchRecord {
            received_at: first.received_at + chrono::Duration::seconds(60),
            collector_id: "c-2".into(),
            ..first.clone()
        };
        let mut record = good_record();
        record.batch_id = Uuid::now_v7();
        record.install_id = "i-2".into();
        let (_, other) = v2_parts(&record);
        let rows = [
            (first.clone(), at("s-1", "100")),
            (other.clone(), at("s-1", "200")),
            (resent.clone(), at("s-1", "300")),
        ];
        for row in rows {
            let batch = table::batches_batch(&[row], Utc::now()).unwrap();
            table::commit(&mut batches, Some(batch), Vec::new(), HashMap::new())
                .await
                .unwrap();
        }
        let found = stored(&ctx, &batches, &first.batch_id).await.unwrap();
        assert_eq!(found.len(), 2);
        let candidates: Vec<Candidate<'_>> = found.iter().map(Candidate::from).collect();
        assert_eq!(pick(&candidates, &at("s-1", "250")), Some(&first));
        assert_eq!(pick(&candidates, &at("s-1", "301")), Some(&resent));
        let found = stored(&ctx, &batches, &other.batch_id).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].batch, other);
        assert!(stored(&ctx, &batches, &Uuid::now_v7())
            .await
            .unwrap()
            .is_empty());
    }
}
