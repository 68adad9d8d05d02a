//! The writer thread: takes what `track()` and the tracker's other calls queued, and commits it
//! to the store in groups (one transaction per group); what a failed commit (a full disk) could
//! not store waits in memory for the next.

use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::policy::QUEUE_CAPACITY;
use crate::shared::{
    enforce_caps, lock, persist_drops, recover_if_corrupt, report_queue_drops, restore_drops,
    Shared,
};
use crate::store::{drop_reason, meta_key, StoredEvent};

/// Most events the writer commits in one transaction; bounds a transaction's duration.
pub const MAX_GROUP_COMMIT: usize = 2_000;
/// Most events the writer keeps in memory while their commit fails (a full disk), to write them
/// once it succeeds: as many as the hand-off queue holds, so at most ~10 MiB more. `track()`
/// returned `Ok` for them; only beyond this bound are the newest dropped (`storage_error`).
pub const MAX_UNSTORED_EVENTS: usize = QUEUE_CAPACITY;

/// An event between `track()` and the writer: stamped, not yet numbered.
pub(crate) struct Tracked {
    pub(crate) event_id: Uuid,
    pub(crate) name: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) uptime_ms: u64,
    pub(crate) properties: Properties,
    pub(crate) user_id: Option<String>,
    pub(crate) session_id: String,
}

/// An event's properties, checked against the limits at `track()`.
pub(crate) enum Properties {
    /// Built in Rust; serialized by the writer.
    Map(Map<String, Value>),
    /// The JSON text of an object from the bindings' layers, stored as it came (see
    /// `Tracker::track_captured_json`).
    Json(Box<RawValue>),
}

impl Serialize for Properties {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::Map(map) => map.serialize(s),
            Self::Json(raw) => raw.serialize(s),
        }
    }
}

/// A stored event's body: a `tern_protocol::Event`, field for field and in its order (a test
/// holds the bytes to serializing one), borrowing what the writer holds instead of moving it
/// into an `Event`, and writing text properties as they are.
#[derive(Serialize)]
struct Body<'a> {
    event_id: Uuid,
    seq: u64,
    name: &'a str,
    #[serde(with = "tern_protocol::wire::rfc3339")]
    created_at: DateTime<Utc>,
    uptime_ms: u64,
    clock_id: &'a str,
    properties: &'a Properties,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    session_id: &'a str,
}

impl Tracked {
    /// The stored body of this event under `seq`.
    fn body(&self, seq: u64, clock_id: &str) -> serde_json::Result<String> {
        serde_json::to_string(&Body {
            event_id: self.event_id,
            seq,
            name: &self.name,
            created_at: self.created_at,
            uptime_ms: self.uptime_ms,
            clock_id,
            properties: &self.properties,
            user_id: self.user_id.as_deref(),
            session_id: &self.session_id,
        })
    }
}

/// What the tracker asks of the writer, in the order it asked.
pub(crate) enum Command {
    /// Store an event.
    Track(Tracked),
    /// Answer once everything sent before is committed.
    Sync(Sender<bool>),
    /// Wake the uploader once everything sent before is committed.
    Upload,
    /// Persist a `meta` value with the next commit.
    Meta(&'static str, String),
    /// Delete everything buffered (opt-out).
    Purge,
    /// Commit what came before, then end the thread.
    Stop,
}

/// What the writer gathered from the queue for one commit.
#[derive(Default)]
struct Group {
    events: Vec<Tracked>,
    meta: Vec<(&'static str, String)>,
    syncs: Vec<Sender<bool>>,
    upload: bool,
    purge: bool,
    stop: bool,
}

/// What a failed commit (a full disk) left in the writer's memory, written first by the next
/// commit: events already numbered from the store's next `seq` (nothing else can commit events
/// before them), and meta changes in the order they were made.
#[derive(Default)]
struct Unstored {
    rows: Vec<StoredEvent>,
    meta: Vec<(&'static str, String)>,
}

impl Unstored {
    fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.meta.is_empty()
    }
}

/// The writer thread: one group commit per turn, of everything queued meanwhile (at most
/// [`MAX_GROUP_COMMIT`] events); returns after `Stop`, or when every sender is gone.
pub(crate) fn run_writer(shared: &Shared, commands: &Receiver<Command>, wake: &Sender<()>) {
    let mut unstored = Unstored::default();
    loop {
        // While a commit failed, wake up on the storage back-off to try again even if the app
        // tracks nothing more.
        let first = if unstored.is_empty() {
            match commands.recv() {
                Ok(command) => Some(command),
                Err(_) => break,
            }
        } else {
            match commands.recv_timeout(shared.policy.storage_retry_after) {
                Ok(command) => Some(command),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        };
        let mut group = Group::default();
        let mut next = first;
        while let Some(command) = next.take() {
            match command {
                Command::Track(t) => group.events.push(t),
                Command::Sync(ack) => group.syncs.push(ack),
                Command::Upload => group.upload = true,
                Command::Meta(key, value) => group.meta.push((key, value)),
                Command::Purge => {
                    // Everything tracked before the opt-out goes too. The choice is written
                    // in its place among the meta changes, so a later opt-in in the same group
                    // wins and an earlier one does not.
                    group.events.clear();
                    unstored.rows.clear();
                    group.meta.push((meta_key::OPT_OUT, "1".into()));
                    group.purge = true;
                }
                Command::Stop => group.stop = true,
            }
            if !group.stop && group.events.len() < MAX_GROUP_COMMIT {
                next = commands.try_recv().ok();
            }
        }
        if group.purge {
            let mut store = shared.store();
            lock(&shared.unpersisted_drops).clear();
            if let Err(e) = store.purge(Utc::now().timestamp_millis()) {
                tracing::error!(error = %e, "could not purge the buffer after opt-out");
            }
        }
        commit_group(shared, &mut group, &mut unstored);
        let durable = unstored.rows.is_empty();
        for ack in group.syncs.drain(..) {
            let _ = ack.send(durable);
        }
        let unbatched = shared.store().pending().unbatched_events;
        if group.upload || unbatched >= shared.policy.flush_at_count as u64 {
            let _ = wake.try_send(());
        }
        if group.stop {
            break;
        }
    }
    if !unstored.rows.is_empty() {
        tracing::error!(
            events = unstored.rows.len(),
            "the tracker stopped while storage failed; events not stored are dropped"
        );
        shared.record_drop(drop_reason::STORAGE_ERROR, unstored.rows.len() as u64);
    }
}

/// Numbers the group's events after those waiting in `unstored` and commits them, with the meta
/// changes and the drop counts, in one transaction; then enforces the caps. What a failed
/// commit could not store goes back to `unstored`.
fn commit_group(shared: &Shared, group: &mut Group, unstored: &mut Unstored) {
    let mut store = shared.store();
    let next_seq = store.next_seq();
    let count = group.events.len() as u64;
    let clock_id = shared.clock.id();
    let mut rows = std::mem::take(&mut unstored.rows);
    rows.reserve(group.events.len());
    let mut unserializable = 0;
    // After the rows that wait in memory, and never below the store's next seq (which jumps
    // past the reserved block when a corrupt buffer was replaced).
    let mut seq_next = rows.last().map_or(next_seq, |r| r.seq + 1).max(next_seq);
    for t in group.events.drain(..) {
        let seq = seq_next;
        // Its size and shape were checked at track().
        let Ok(body) = t.body(seq, clock_id) else {
            unserializable += 1;
            continue;
        };
        seq_next += 1;
        rows.push(StoredEvent {
            seq,
            event_id: t.event_id,
            created_at_ms: t.created_at.timestamp_millis(),
            body,
            name: t.name,
        });
    }
    if unserializable > 0 {
        // Cannot happen for JSON values; counted rather than lost should that ever change.
        tracing::error!(
            events = unserializable,
            "events that do not serialize dropped"
        );
        shared.record_drop(drop_reason::STORAGE_ERROR, unserializable);
    }
    let mut meta_changes = std::mem::take(&mut unstored.meta);
    meta_changes.append(&mut group.meta);
    if rows.is_empty() && meta_changes.is_empty() {
        persist_drops(shared, &mut store);
        report_queue_drops(shared, &mut store);
        return;
    }
    // Drops counted in memory (full queue, failed storage) are committed with the events, in
    // the same transaction; if it fails, they go back to memory for the next commit.
    let drops = std::mem::take(&mut *lock(&shared.unpersisted_drops));
    let drop_list: Vec<(&str, u64)> = drops.iter().map(|(r, n)| (*r, *n)).collect();
    let mut meta: Vec<(&str, &str)> = meta_changes.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let session = {
        let s = lock(&shared.session);
        (s.id.clone(), s.last_activity_ms.to_string())
    };
    if !rows.is_empty() {
        meta.push((meta_key::SESSION_ID, &session.0));
        meta.push((meta_key::SESSION_LAST_ACTIVITY_MS, &session.1));
    }
    match store.insert_events(&rows, &meta, &drop_list) {
        Ok(()) => {
            shared.storage_failed_at_ms.store(0, Ordering::Relaxed);
            report_queue_drops(shared, &mut store);
        }
        Err(e) => {
            shared
                .storage_failed_at_ms
                .store(Utc::now().timestamp_millis(), Ordering::Relaxed);
            recover_if_corrupt(&mut store, &e);
            // The group is one transaction: nothing of it was committed. Its events and meta
            // changes wait in memory for the next commit; past the bound the newest go.
            restore_drops(shared, drops);
            let over = rows.len().saturating_sub(MAX_UNSTORED_EVENTS);
            rows.truncate(MAX_UNSTORED_EVENTS);
            if over > 0 {
                shared.record_drop(drop_reason::STORAGE_ERROR, over as u64);
            }
            tracing::error!(
                error = %e,
                count,
                waiting = rows.len(),
                dropped = over,
                "could not store tracked events; kept in memory to retry"
            );
            drop(meta);
            unstored.rows = rows;
            unstored.meta = meta_changes;
            return;
        }
    }
    drop(store);
    if let Err(e) = enforce_caps(shared) {
        tracing::error!(error = %e, "could not enforce the buffer caps");
        recover_if_corrupt(&mut shared.store(), &e);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use super::*;
    use serde_json::json;

    #[test]
    fn a_body_is_the_protocols_event_to_the_byte() {
        let properties = json!({"a": 1, "b": [true, null, 2.5], "c": {"é": "\"q\"\n"}});
        let map = properties.as_object().cloned().unwrap();
        for user_id in [None, Some("user \"1\"".to_owned())] {
            let tracked = |properties| Tracked {
                event_id: Uuid::now_v7(),
                name: "checkout\u{1}".into(),
                created_at: DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
                uptime_ms: 42,
                properties,
                user_id: user_id.clone(),
                session_id: "s-1".into(),
            };
            let event = |t: &Tracked| tern_protocol::Event {
                event_id: t.event_id,
                seq: 7,
                name: t.name.clone(),
                created_at: t.created_at,
                uptime_ms: Some(42),
                clock_id: Some("clock".into()),
                properties: map.clone(),
                user_id: user_id.clone(),
                session_id: Some("s-1".into()),
            };
            let from_map = tracked(Properties::Map(map.clone()));
            let expected = serde_json::to_string(&event(&from_map)).unwrap();
            assert_eq!(from_map.body(7, "clock").unwrap(), expected);
            // Text properties are written as they came: serde_json's own text of the map
            // gives the same bytes; other spacing stays, and parses to the same event.
            let text = serde_json::to_string(&map).unwrap();
            let from_text = tracked(Properties::Json(RawValue::from_string(text).unwrap()));
            let expected = serde_json::to_string(&event(&from_text)).unwrap();
            assert_eq!(from_text.body(7, "clock").unwrap(), expected);
            let spaced = RawValue::from_string(serde_json::to_string_pretty(&map).unwrap());
            let from_spaced = tracked(Properties::Json(spaced.unwrap()));
            let body = from_spaced.body(7, "clock").unwrap();
            let parsed: tern_protocol::Event = serde_json::from_str(&body).unwrap();
            assert_eq!(parsed, event(&from_spaced));
        }
    }
}
