//! The set of `event_id`s committed within the dedup window, by `received_at`: a duplicate of a
//! recent event is found with a set lookup. It is rebuilt from the table at start, so a restart
//! forgets nothing.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// `event_id`s committed with their `received_at` (seconds), for those received within the
/// window.
#[derive(Debug)]
pub struct DedupWindow {
    ids: HashMap<u128, i64>,
    window: Duration,
}

impl DedupWindow {
    /// An empty window reaching `window` back.
    pub fn new(window: Duration) -> Self {
        Self {
            ids: HashMap::new(),
            window,
        }
    }

    /// The oldest `received_at` the window holds at `now`.
    pub fn start(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - chrono::Duration::from_std(self.window).unwrap_or(chrono::TimeDelta::MAX)
    }

    /// Whether `id` was committed within the window.
    pub fn contains(&self, id: &Uuid) -> bool {
        self.ids.contains_key(&id.as_u128())
    }

    /// Records a committed `id`.
    pub fn insert(&mut self, id: &Uuid, received_at: DateTime<Utc>) {
        let at = received_at.timestamp();
        let entry = self.ids.entry(id.as_u128()).or_insert(at);
        *entry = (*entry).max(at);
    }

    /// Records committed `(event_id, received_at µs)` pairs read from the table; text that is
    /// not a UUID cannot be a copy of a valid event and is skipped.
    pub fn absorb(&mut self, pairs: Vec<(String, i64)>) {
        for (id, micros) in pairs {
            if let (Ok(id), Some(at)) = (
                Uuid::parse_str(&id),
                DateTime::<Utc>::from_timestamp_micros(micros),
            ) {
                self.insert(&id, at);
            }
        }
    }

    /// Forgets what was received before the window's start at `now`.
    pub fn evict(&mut self, now: DateTime<Utc>) {
        let start = self.start(now).timestamp();
        self.ids.retain(|_, at| *at >= start);
    }

    /// `event_id`s held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no `event_id` is held.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_was_received_within_the_window() {
        let now = Utc::now();
        let mut window = DedupWindow::new(Duration::from_secs(3600));
        let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
        window.insert(&old, now - chrono::Duration::seconds(7200));
        window.insert(&new, now - chrono::Duration::seconds(60));
        assert!(window.contains(&old) && window.contains(&new));
        window.evict(now);
        assert!(!window.contains(&old));
        assert!(window.contains(&new));
        assert_eq!(window.len(), 1);
    }
}
