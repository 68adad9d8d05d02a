//! Copies: buffered events dropped because the table already holds them (by the dedup window,
//! another writer's commit, or an old partition).

use std::collections::HashSet;

use chrono::Utc;
use tern_protocol::StreamRecord;
use uuid::Uuid;

use super::state::Ingest;
use crate::error::Result;
use crate::limits::{PARTITION_CHECK_DAYS, PARTITION_CHECK_SLACK};
use crate::query;
use crate::table;

impl Ingest {
    pub(super) fn duplicate(&mut self) {
        self.metrics.duplicates_removed.inc();
        self.summary.duplicates_removed += 1;
    }

    /// Drops buffered events whose id the window now holds (another writer committed them).
    pub(super) fn refilter(&mut self) {
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
    pub(super) async fn check_old_partitions(&mut self) -> Result<()> {
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
}
