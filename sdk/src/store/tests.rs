use std::path::PathBuf;
use std::time::Duration;

use rusqlite::ErrorCode;
use tern_protocol::{RefusedEvent, SeqRange};

use super::identity::{reservation, SEQ_RESERVATION};
use super::recovery::{MAX_CORRUPT_COPIES, MAX_CORRUPT_COPY_AGE};
use super::schema::create_or_upgrade;
use super::*;

/// A buffer file in a directory of its own, deleted with it.
struct TempBuffer {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl TempBuffer {
    fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.db");
        Ok(Self { dir, path })
    }

    /// Opens (creating) the store on the buffer file.
    fn open(&self) -> Result<Store> {
        Store::open(&self.path)
    }

    /// A file beside the buffer (`-wal`, `.identity`, ...).
    fn file(&self, suffix: &str) -> PathBuf {
        sibling(&self.path, suffix)
    }

    /// Overwrites the buffer file with [`not_a_database`].
    fn corrupt(&self) -> Result<()> {
        std::fs::write(&self.path, not_a_database())?;
        Ok(())
    }

    /// Names of the files in the buffer's directory that `keep` accepts, sorted.
    fn files(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| keep(n))
            .collect();
        names.sort();
        Ok(names)
    }
}

/// A fresh store in a temporary directory.
fn temp_store() -> Result<(TempBuffer, Store)> {
    let buffer = TempBuffer::new()?;
    let store = buffer.open()?;
    Ok((buffer, store))
}

/// Bytes that are not a SQLite database.
fn not_a_database() -> Vec<u8> {
    vec![0x5a; 8192]
}

fn event(seq: u64) -> StoredEvent {
    StoredEvent {
        seq,
        event_id: Uuid::now_v7(),
        name: "e".into(),
        created_at_ms: seq as i64,
        body: format!("{{\"seq\":{seq}}}"),
    }
}

fn events(range: std::ops::RangeInclusive<u64>) -> Vec<StoredEvent> {
    range.map(event).collect()
}

/// Events whose bodies are `len` bytes each.
fn events_of_size(range: std::ops::RangeInclusive<u64>, len: usize) -> Vec<StoredEvent> {
    let body = "x".repeat(len);
    range
        .map(|seq| StoredEvent {
            body: body.clone(),
            ..event(seq)
        })
        .collect()
}

/// Cuts a batch of at most `max_events` (no byte limit) that must not be empty.
fn cut(store: &mut Store, max_events: usize, now_ms: i64) -> Result<BatchRow> {
    Ok(store
        .cut_batch(max_events, usize::MAX, "{}", now_ms)?
        .expect("a batch"))
}

/// Caps that drop nothing; a test sets the one it checks.
const UNCAPPED_BUFFER: Caps = Caps {
    max_events: u64::MAX,
    max_bytes: u64::MAX,
    max_age_ms: i64::MAX,
};

const UNCAPPED_QUARANTINE: QuarantineCaps = QuarantineCaps {
    max_batches: u64::MAX,
    max_bytes: u64::MAX,
};

fn r(first: u64, last: u64) -> SeqRange {
    SeqRange { first, last }
}

/// A batch's gap reports as (reason, ranges), in the order it sends them.
fn reports(batch: &BatchRow) -> Vec<(&str, Vec<SeqRange>)> {
    batch
        .gaps
        .iter()
        .map(|g| {
            assert_eq!(g.count, g.seqs_in_ranges(), "{g:?}");
            (g.reason.as_str(), g.ranges.clone())
        })
        .collect()
}

fn gap_total(store: &Store, reason: &str) -> u64 {
    store
        .gap_totals()
        .expect("totals")
        .get(reason)
        .copied()
        .unwrap_or(0)
}

#[test]
fn counts_survive_reopen_and_batches_are_stable() -> Result<()> {
    let buffer = TempBuffer::new()?;
    let install_id;
    {
        let mut store = buffer.open()?;
        install_id = store.install_id().to_owned();
        store.insert_events(&events(1..=10), &[], &[])?;
        let batch = cut(&mut store, 4, 1)?;
        assert_eq!(batch.event_count, 4);
        assert_eq!(store.pending().unbatched_events, 6);
    }
    let mut store = buffer.open()?;
    assert_eq!(store.install_id(), install_id);
    assert_eq!(store.next_seq(), 11);
    assert_eq!(store.pending().events, 10);
    assert_eq!(store.pending().unbatched_events, 6);
    let batch = store.oldest_batch()?.expect("the batch cut before");
    let bodies = store.batch_bodies(batch.batch_id)?;
    assert_eq!(bodies, (1..=4).map(|s| event(s).body).collect::<Vec<_>>());
    store.delete_batch(&batch)?;
    assert_eq!(store.pending().events, 6);
    assert!(store.oldest_batch()?.is_none());
    Ok(())
}

#[test]
fn batches_respect_the_byte_limit_but_take_at_least_one_event() -> Result<()> {
    let (_buffer, mut store) = temp_store()?;
    store.insert_events(&events(1..=3), &[], &[])?;
    let one = store.cut_batch(10, 1, "{}", 1)?.expect("a batch");
    assert_eq!(one.event_count, 1);
    store.delete_batch(&one)?;
    let rest = store.cut_batch(10, 1 << 20, "{}", 1)?.expect("a batch");
    assert_eq!(rest.event_count, 2);
    assert!(store.cut_batch(10, 1 << 20, "{}", 1)?.is_none());
    Ok(())
}

#[test]
fn next_seq_does_not_reuse_numbers_of_delivered_events() -> Result<()> {
    let buffer = TempBuffer::new()?;
    {
        let mut store = buffer.open()?;
        store.insert_events(&events(1..=3), &[], &[])?;
        let batch = cut(&mut store, 10, 1)?;
        store.delete_batch(&batch)?;
    }
    assert_eq!(buffer.open()?.next_seq(), 4);
    Ok(())
}

#[test]
fn a_second_store_on_the_same_file_gets_a_clear_error() -> Result<()> {
    let buffer = TempBuffer::new()?;
    let _first = buffer.open()?;
    match buffer.open() {
        Err(Error::AlreadyOpen(p)) => assert!(p.ends_with("t.db")),
        other => panic!("expected AlreadyOpen, got {:?}", other.err()),
    }
    Ok(())
}

#[test]
fn caps_drop_the_oldest_events_and_count_them() -> Result<()> {
    let (_buffer, mut store) = temp_store()?;
    store.insert_events(&events(1..=10), &[], &[])?;
    // A batch of the 3 oldest is in flight: it goes whole, never in part.
    let batch = cut(&mut store, 3, 1)?;
    let caps = Caps {
        max_events: 5,
        ..UNCAPPED_BUFFER
    };
    assert_eq!(store.enforce_caps(&caps, 100)?, 5);
    assert_eq!(store.pending().events, 5);
    assert!(
        store.oldest_batch()?.is_none(),
        "the in-flight batch went whole"
    );
    assert_eq!(store.batch_bodies(batch.batch_id)?.len(), 0);
    assert_eq!(gap_total(&store, gap_reason::CAP_COUNT), 5);
    assert!(
        store.drops()?.is_empty(),
        "seqs are reported as gaps, not counts"
    );

    // Age: events created before now - max_age go.
    let caps = Caps {
        max_age_ms: 3,
        ..UNCAPPED_BUFFER
    };
    // Remaining events have created_at_ms 6..=10; now=11 → cutoff 8 → 6 and 7 go.
    assert_eq!(store.enforce_caps(&caps, 11)?, 2);
    assert_eq!(store.pending().events, 3);

    // Bytes: 8, 9 and 10 are left, 9 + 9 + 10 bytes; a cap of 20 drops the oldest only.
    assert_eq!(store.pending().bytes, 28);
    let caps = Caps {
        max_bytes: 20,
        ..UNCAPPED_BUFFER
    };
    assert_eq!(store.enforce_caps(&caps, 11)?, 1);
    assert_eq!(store.pending().bytes, 19);

    // The next batch reports the exact seqs dropped, once; retries repeat the same reports;
    // the batch after reports nothing.
    let reported = cut(&mut store, 1, 12)?;
    assert_eq!(
        reports(&reported),
        vec![
            (gap_reason::CAP_COUNT, vec![r(1, 5)]),
            (gap_reason::CAP_AGE, vec![r(6, 7)]),
            (gap_reason::CAP_BYTES, vec![r(8, 8)]),
        ]
    );
    assert_eq!(
        store.oldest_batch()?.expect("it is stored").gaps,
        reported.gaps
    );
    assert_eq!(store.pending_gaps()?, (3, 8));
    store.delete_batch(&reported)?;
    assert_eq!(store.pending_gaps()?, (0, 0), "deleted with their batch");
    let next = cut(&mut store, 1, 13)?;
    assert!(next.gaps.is_empty());
    assert_eq!(gap_total(&store, gap_reason::CAP_COUNT), 5);
    Ok(())
}

#[test]
fn quarantine_keeps_the_batch_whole_and_split_halves_it() -> Result<()> {
    let (_buffer, mut store) = temp_store()?;
    store.insert_events(&events(1..=5), &[], &[])?;
    let batch = store
        .cut_batch(5, usize::MAX, "{\"locale\":\"en\"}", 1)?
        .expect("a batch");
    assert_eq!(store.split_batch(&batch, 2)?, Split::Halves);
    let first = store.oldest_batch()?.expect("first half");
    assert_eq!(first.event_count, 2);
    assert_eq!(
        store.batch_bodies(first.batch_id)?,
        (1..=2).map(|s| event(s).body).collect::<Vec<_>>()
    );
    assert!(store.quarantine_batch(&first, "HTTP 400: malformed", 3, &UNCAPPED_QUARANTINE)?);
    let pending = store.pending();
    assert_eq!(
        (
            pending.events,
            pending.quarantined_batches,
            pending.quarantined_events
        ),
        (3, 1, 2)
    );
    let (events_json, reason): (String, String) = store.conn.query_row(
        "SELECT events, reason FROM quarantine WHERE batch_id = ?1",
        [first.batch_id.to_string()],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    assert_eq!(reason, "HTTP 400: malformed");
    let kept: Vec<serde_json::Value> = serde_json::from_str(&events_json)?;
    assert_eq!(kept.len(), 2);
    let second = store.oldest_batch()?.expect("second half");
    assert_eq!(second.event_count, 3);
    Ok(())
}

#[test]
fn a_corrupt_file_is_moved_aside_and_a_fresh_buffer_created() -> Result<()> {
    let buffer = TempBuffer::new()?;
    buffer.corrupt()?;
    let store = buffer.open()?;
    assert_eq!(store.pending().events, 0);
    let moved = store
        .meta(meta_key::RECOVERED_FROM)?
        .expect("the path is recorded");
    assert_eq!(
        std::fs::read(&moved)?,
        not_a_database(),
        "the corrupt file is kept for QA"
    );
    Ok(())
}

#[test]
fn a_corrupt_buffer_keeps_the_identity_and_reports_the_lost_seqs() -> Result<()> {
    let buffer = TempBuffer::new()?;
    let install_id = {
        let mut store = buffer.open()?;
        store.insert_events(
            &events(1..=10),
            &[(meta_key::USER_ID, "u-1"), (meta_key::OPT_OUT, "1")],
            &[],
        )?;
        let batch = cut(&mut store, 4, 1)?;
        store.delete_batch(&batch)?;
        store.install_id().to_owned()
    };
    assert!(buffer.path.exists());
    std::fs::remove_file(buffer.file("-wal")).ok();
    buffer.corrupt()?;
    let mut store = buffer.open()?;
    assert_eq!(store.install_id(), install_id);
    assert_eq!(store.meta(meta_key::USER_ID)?.as_deref(), Some("u-1"));
    assert_eq!(store.meta(meta_key::OPT_OUT)?.as_deref(), Some("1"));
    let reserved = 10 + SEQ_RESERVATION;
    assert_eq!(
        store.next_seq(),
        reserved + 1,
        "seq continues after the block"
    );
    let batch = store
        .cut_batch(10, usize::MAX, "{}", 2)?
        .expect("a gap-only batch");
    assert_eq!(
        reports(&batch),
        vec![(gap_reason::STORAGE_LOST, vec![r(5, reserved)])]
    );
    Ok(())
}

#[test]
fn identity_values_live_in_the_identity_file() -> Result<()> {
    let buffer = TempBuffer::new()?;
    let mut store = buffer.open()?;
    store.insert_events(&[], &[(meta_key::SUPER_PROPERTIES, "{\"a\":1}")], &[])?;
    store.set_meta(meta_key::USER_ID, "u-2")?;
    assert_eq!(meta_get(&store.conn, meta_key::USER_ID)?, None);
    assert_eq!(meta_get(&store.conn, meta_key::SUPER_PROPERTIES)?, None);
    drop(store);
    let identity = Connection::open(buffer.file(IDENTITY_SUFFIX))?;
    let value = |key: &str| -> Result<String> {
        Ok(
            identity.query_row("SELECT value FROM identity WHERE key = ?1", [key], |r| {
                r.get(0)
            })?,
        )
    };
    assert_eq!(value(meta_key::USER_ID)?, "u-2");
    assert_eq!(value(meta_key::SUPER_PROPERTIES)?, "{\"a\":1}");
    Ok(())
}

#[test]
fn the_uploader_writes_the_seq_marks_without_the_store() -> Result<()> {
    let buffer = TempBuffer::new()?;
    {
        let mut store = buffer.open()?;
        store.insert_events(&events(1..=10), &[], &[])?;
        let batch = store
            .cut_batch_unmarked(4, usize::MAX, "{}", 1)?
            .expect("a batch");
        assert_eq!(
            store.identity().batched_through(),
            0,
            "not marked by the cut"
        );
        let highest = store.batch_highest_seq(&batch)?;
        assert_eq!(highest, 4);
        let marks = store.seq_marks();
        marks.mark_batched(highest)?;
        assert_eq!(store.identity().batched_through(), 4);
        store.delete_batch_unmarked(&batch)?;
        assert_eq!(
            store.identity().acked_through(),
            0,
            "not marked by the delete"
        );
        assert_eq!(store.pending().events, 6);
        marks.mark_acked(highest);
        assert_eq!(store.identity().acked_through(), 4);
    }
    // Both marks are in the identity file.
    let store = buffer.open()?;
    assert_eq!(store.identity().batched_through(), 4);
    assert_eq!(store.identity().acked_through(), 4);
    Ok(())
}

#[test]
fn seqs_are_reserved_in_blocks_not_per_event() -> Result<()> {
    let (_buffer, mut store) = temp_store()?;
    let block = SEQ_RESERVATION;
    store.insert_events(&events(1..=1), &[], &[])?;
    assert_eq!(store.identity().reserved_through(), 1 + block);
    store.insert_events(&events(2..=block), &[], &[])?;
    assert_eq!(
        store.identity().reserved_through(),
        1 + block,
        "within the block"
    );
    store.insert_events(&events(block + 1..=block + 2), &[], &[])?;
    assert_eq!(store.identity().reserved_through(), block + 2 + block);
    Ok(())
}

/// Stores the events `seqs` in commits of 100, as the writer makes them when the app tracks
/// steadily.
fn insert_in_commits_of_100(store: &mut Store, seqs: std::ops::RangeInclusive<u64>) -> Result<()> {
    let seqs: Vec<u64> = seqs.collect();
    for chunk in seqs.chunks(100) {
        store.insert_events(&events(chunk[0]..=chunk[chunk.len() - 1]), &[], &[])?;
    }
    Ok(())
}

#[test]
fn the_next_reservation_is_asked_for_at_half_the_block_and_written_off_the_writer() -> Result<()> {
    let buffer = TempBuffer::new()?;
    let block = SEQ_RESERVATION;
    let half = block / 2;
    let ahead = half + 2 + block;
    let last = ahead + 1 + block;
    {
        let mut store = buffer.open()?;
        let marks = store.seq_marks();
        insert_in_commits_of_100(&mut store, 1..=1)?;
        assert!(
            marks.reserve_requests().try_recv().is_err(),
            "a whole block left"
        );
        // Less than half the block left beyond seq `half + 2`: the writer asks ahead.
        insert_in_commits_of_100(&mut store, 2..=half + 2)?;
        assert!(marks.reserve_requests().try_recv().is_ok());
        assert_eq!(
            store.identity().reserved_through(),
            1 + block,
            "the writer did not write it"
        );
        // The checkpoint thread's work, as `run_checkpoints` does it.
        marks.reserve_ahead();
        assert_eq!(store.identity().reserved_through(), ahead);
        // The writer goes past its old block without a reservation of its own.
        insert_in_commits_of_100(&mut store, half + 3..=block + 10)?;
        assert_eq!(store.identity().reserved_through(), ahead);
        // A request nobody served leaves the writer to reserve when its block runs out.
        insert_in_commits_of_100(&mut store, block + 11..=ahead)?;
        assert!(marks.reserve_requests().try_recv().is_ok());
        insert_in_commits_of_100(&mut store, ahead + 1..=ahead + 1)?;
        assert_eq!(store.identity().reserved_through(), last);
        // A request served late writes nothing below the mark.
        marks.reserve_ahead();
        assert_eq!(store.identity().reserved_through(), last);
    }
    // What the checkpoint thread and the writer wrote is in the file.
    let store = buffer.open()?;
    assert_eq!(store.identity().reserved_through(), last);
    Ok(())
}

#[test]
fn the_checkpoint_thread_writes_the_reservation_asked_for_and_stops_at_shutdown() -> Result<()> {
    let (_buffer, mut store) = temp_store()?;
    let marks = store.seq_marks();
    let (stop, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let thread = {
        let (checkpointer, marks) = (store.checkpointer()?, marks.clone());
        std::thread::spawn(move || {
            crate::supervise::run_checkpoints(checkpointer, &marks, &stop_rx)
        })
    };
    let half = SEQ_RESERVATION / 2;
    // One event reserves through `1 + SEQ_RESERVATION`; past `half + 1`, less than half is left.
    store.insert_events(&events(1..=1), &[], &[])?;
    insert_in_commits_of_100(&mut store, 2..=half + 2)?;
    let wanted = half + 2 + SEQ_RESERVATION;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.identity().reserved_through() != wanted && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(store.identity().reserved_through(), wanted);
    // As the tracker's shutdown does it: close the stop channel, then wake the thread, which
    // then stops (without the wake, at its next look at the WAL).
    drop(stop);
    marks.wake_checkpoint_thread();
    assert!(thread.join().is_ok());
    Ok(())
}

#[test]
fn a_power_loss_never_reuses_a_seq_and_reports_the_lost_range() -> Result<()> {
    let buffer = TempBuffer::new()?;
    let copy = buffer.dir.path().join("copy");
    std::fs::create_dir(&copy)?;
    let files = ["", "-wal"];
    let install_id;
    {
        let mut store = buffer.open()?;
        store.insert_events(&events(1..=5), &[], &[])?;
        // The disk as a power loss would leave it: the buffer as it is now.
        for suffix in files {
            let from = buffer.file(suffix);
            if from.exists() {
                std::fs::copy(&from, copy.join(format!("t.db{suffix}")))?;
            }
        }
        store.insert_events(&events(6..=12), &[], &[])?;
        let first = cut(&mut store, 8, 1)?;
        store.delete_batch(&first)?;
        // Sent, not acknowledged.
        cut(&mut store, 8, 2)?;
        install_id = store.install_id().to_owned();
    }
    for suffix in ["", "-wal", "-shm"] {
        std::fs::remove_file(buffer.file(suffix)).ok();
    }
    for suffix in files {
        let from = copy.join(format!("t.db{suffix}"));
        if from.exists() {
            std::fs::copy(&from, buffer.file(suffix))?;
        }
    }
    let mut store = buffer.open()?;
    assert_eq!(store.install_id(), install_id);
    let reserved = 5 + SEQ_RESERVATION;
    assert_eq!(
        store.next_seq(),
        reserved + 1,
        "no seq of the lost events is reused"
    );
    // The old buffer's events 1..=5 were acknowledged; they go again (the collector dedups).
    let batch = cut(&mut store, 10, 3)?;
    assert_eq!(batch.event_count, 5);
    assert_eq!(
        reports(&batch),
        vec![(gap_reason::STORAGE_LOST, vec![r(9, reserved)])]
    );
    Ok(())
}

#[test]
fn a_version_3_buffer_gets_an_identity_file_with_its_install_id_and_seq() -> Result<()> {
    let buffer = TempBuffer::new()?;
    {
        // A buffer as schema 3 left it, with its values in `meta` and no identity file.
        let mut conn = Connection::open(&buffer.path)?;
        create_or_upgrade(&mut conn)?;
        conn.execute_batch(
            "INSERT INTO meta (key, value) VALUES ('install_id', 'old-install'), \
             ('next_seq', '42'), ('user_id', 'u-3'), ('opt_out', '1'), \
             ('super_properties', '{\"p\":true}');",
        )?;
    }
    assert!(!buffer.file(IDENTITY_SUFFIX).exists());
    {
        let mut store = buffer.open()?;
        assert_eq!(store.install_id(), "old-install");
        assert_eq!(store.next_seq(), 42);
        store.insert_events(&events(42..=42), &[], &[])?;
    }
    // The identity file is the truth from now on, even if the buffer is lost.
    std::fs::remove_file(&buffer.path)?;
    std::fs::remove_file(buffer.file("-wal")).ok();
    let store = buffer.open()?;
    assert_eq!(store.install_id(), "old-install");
    assert_eq!(store.meta(meta_key::USER_ID)?.as_deref(), Some("u-3"));
    assert_eq!(store.meta(meta_key::OPT_OUT)?.as_deref(), Some("1"));
    assert_eq!(
        store.meta(meta_key::SUPER_PROPERTIES)?.as_deref(),
        Some("{\"p\":true}")
    );
    assert!(store.next_seq() > 42, "seq continues");
    Ok(())
}

#[test]
fn a_file_whose_event_pages_are_damaged_is_moved_aside_at_open() -> Result<()> {
    let buffer = TempBuffer::new()?;
    {
        let mut store = buffer.open()?;
        store.insert_events(&events(1..=3_000), &[], &[])?;
    }
    // The header and the first pages (schema, meta) stay whole: the file opens as a database,
    // and only reading the events finds the damage.
    let mut bytes = std::fs::read(&buffer.path)?;
    let half = bytes.len() / 2;
    for b in &mut bytes[half..] {
        *b = 0x5a;
    }
    std::fs::write(&buffer.path, &bytes)?;
    let store = buffer.open()?;
    assert_eq!(store.pending().events, 0, "a fresh buffer");
    // One commit of 3 000 events reserved ten commits of its size beyond them.
    assert_eq!(reservation(3_000), 20_000);
    assert_eq!(store.next_seq(), 3_001 + reservation(3_000));
    assert_eq!(
        gap_total(&store, gap_reason::STORAGE_LOST),
        3_000 + reservation(3_000)
    );
    assert!(store.meta(meta_key::RECOVERED_FROM)?.is_some());
    Ok(())
}

/// A table's or index's columns: (name, type, not null).
type Shape = Vec<(String, Vec<(String, String, bool)>)>;

/// Columns of every table, for comparing schemas regardless of how they were created.
fn shape(conn: &Connection) -> Result<Shape> {
    let mut tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'index') ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    tables.retain(|t| !t.starts_with("sqlite_"));
    tables
        .into_iter()
        .map(|t| {
            let cols = conn
                .prepare(&format!("PRAGMA table_xinfo('{t}')"))?
                .query_map([], |r| Ok((r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? != 0)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok((t, cols))
        })
        .collect()
}

/// Opens a buffer written by `old_schema` (a fixture of schema `version`), which upgrades it,
/// after checking that its tables then have the shape of a fresh buffer's.
fn upgraded_like_fresh(old_schema: &str, version: i64) -> Result<(tempfile::TempDir, Store)> {
    let dir = tempfile::tempdir()?;
    let old = dir.path().join("old.db");
    {
        let conn = Connection::open(&old)?;
        conn.execute_batch(old_schema)?;
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        assert_eq!(v, version);
    }
    let upgraded = Store::open(&old)?;
    let fresh = Store::open(&dir.path().join("fresh.db"))?;
    assert_eq!(shape(&upgraded.conn)?, shape(&fresh.conn)?);
    Ok((dir, upgraded))
}

#[test]
fn a_version_1_buffer_upgrades_to_the_current_schema_and_keeps_its_events() -> Result<()> {
    let (_dir, mut upgraded) =
        upgraded_like_fresh(include_str!("../../tests/fixtures/schema_v1.sql"), 1)?;
    let v: i64 = upgraded
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))?;
    assert_eq!(v, VERSION);

    assert_eq!(
        upgraded.install_id(),
        "019ab7a0-0000-7000-8000-000000000001"
    );
    assert_eq!(upgraded.next_seq(), 5);
    assert_eq!(upgraded.pending().events, 4);
    assert_eq!(upgraded.pending().unbatched_events, 2);
    let in_flight = upgraded.oldest_batch()?.expect("the v1 batch survives");
    assert_eq!(in_flight.attempts, 3);
    assert!(in_flight.dropped.is_empty());
    assert_eq!(upgraded.batch_bodies(in_flight.batch_id)?.len(), 2);
    upgraded.delete_batch(&in_flight)?;
    let next = upgraded
        .cut_batch(10, usize::MAX, "{}", 1)?
        .expect("the unbatched events");
    assert_eq!(next.event_count, 2);
    Ok(())
}

#[test]
fn a_size_limited_file_fails_writes_like_a_full_disk() -> Result<()> {
    let (_buffer, mut store) = temp_store()?;
    store.set_max_file_bytes(64 * 1024)?;
    let big = events_of_size(1..=200, 2000);
    let err = store.insert_events(&big, &[], &[]).unwrap_err();
    assert!(
        matches!(&err, Error::Storage(rusqlite::Error::SqliteFailure(f, _)) if f.code == ErrorCode::DiskFull),
        "{err}"
    );
    assert_eq!(store.pending().events, 0, "the failed group left no trace");
    store.insert_events(&events(1..=3), &[], &[])?;
    assert_eq!(store.pending().events, 3, "small writes work again");
    Ok(())
}

#[test]
fn operations_on_a_batch_that_a_cap_removed_change_nothing() -> Result<()> {
    let (_buffer, mut store) = temp_store()?;
    store.insert_events(&events(1..=10), &[], &[])?;
    let batch = cut(&mut store, 4, 1)?;
    let caps = Caps {
        max_events: 5,
        ..UNCAPPED_BUFFER
    };
    // Not in flight: the cap takes the batch whole (4) and one unbatched event.
    assert_eq!(store.enforce_caps(&caps, 100)?, 5);
    let before = store.pending();
    assert_eq!(before.events, 5);

    // The uploader comes back with the collector's answer for the batch that is gone.
    assert_eq!(
        store.split_batch(&batch, 2)?,
        Split::Gone,
        "no panic, no-op"
    );
    assert!(!store.quarantine_batch(&batch, "HTTP 400", 3, &UNCAPPED_QUARANTINE)?);
    assert_eq!(store.delete_batch(&batch)?, 0);
    store.record_failure(batch.batch_id, 1, 10, "HTTP 503")?;
    assert_eq!(
        store.pending(),
        before,
        "counts change only by what was stored"
    );
    let quarantined: i64 = store
        .conn
        .query_row("SELECT COUNT(*) FROM quarantine", [], |r| r.get(0))?;
    assert_eq!(quarantined, 0, "no empty quarantine row");
    assert!(store.oldest_batch()?.is_none());
    store.recount()?;
    assert_eq!(store.pending(), before, "the counts match the tables");
    Ok(())
}

#[test]
fn the_caps_never_drop_the_batch_in_flight() -> Result<()> {
    let (_buffer, mut store) = temp_store()?;
    store.insert_events(&events(1..=10), &[], &[])?;
    let batch = cut(&mut store, 4, 1)?;
    store.set_in_flight(Some(batch.batch_id));
    let caps = |max_events| Caps {
        max_events,
        max_bytes: u64::MAX,
        max_age_ms: i64::MAX,
    };
    // 10 events, cap 5: the 5 oldest events outside the batch in flight go (5..=9).
    assert_eq!(store.enforce_caps(&caps(5), 100)?, 5);
    assert_eq!(store.batch_bodies(batch.batch_id)?.len(), 4);
    assert_eq!(store.pending().events, 5);
    // Cap 2: only event 10 may go; then nothing droppable is left and the call returns.
    assert_eq!(store.enforce_caps(&caps(2), 100)?, 1);
    assert_eq!(store.pending().events, 4);
    // Its answer is in (say, a failure): from now on the caps may take it like any other.
    store.set_in_flight(None);
    assert_eq!(store.enforce_caps(&caps(2), 100)?, 4);
    assert_eq!(store.pending().events, 0);
    assert_eq!(gap_total(&store, gap_reason::CAP_COUNT), 10);
    let reported = store
        .cut_batch(10, usize::MAX, "{}", 2)?
        .expect("a gap-only batch");
    assert_eq!(reported.event_count, 0);
    assert_eq!(
        reports(&reported),
        vec![(gap_reason::CAP_COUNT, vec![r(1, 10)])]
    );
    Ok(())
}

#[test]
fn a_drop_report_on_a_batch_that_is_never_sent_goes_to_the_next_batch() -> Result<()> {
    let (_buffer, mut store) = temp_store()?;
    store.insert_events(&events(1..=10), &[], &[(drop_reason::QUEUE_FULL, 3)])?;
    let first = cut(&mut store, 4, 1)?;
    assert_eq!(first.dropped.get(drop_reason::QUEUE_FULL), Some(&3));
    assert_eq!(store.drops()?.get(drop_reason::QUEUE_FULL), Some(&(3, 0)));

    // A cap drops the batch that carried the report: the report is owed again.
    let caps = Caps {
        max_events: 6,
        ..UNCAPPED_BUFFER
    };
    assert_eq!(store.enforce_caps(&caps, 100)?, 4);
    assert_eq!(store.drops()?.get(drop_reason::QUEUE_FULL), Some(&(3, 3)));
    let second = cut(&mut store, 2, 2)?;
    assert_eq!(second.dropped.get(drop_reason::QUEUE_FULL), Some(&3));
    assert_eq!(
        reports(&second),
        vec![(gap_reason::CAP_COUNT, vec![r(1, 4)])]
    );

    // The collector refuses that batch as malformed: quarantined, never sent; report owed again.
    assert!(store.quarantine_batch(&second, "HTTP 400", 3, &UNCAPPED_QUARANTINE)?);
    let third = cut(&mut store, 10, 4)?;
    assert_eq!(
        third.dropped, second.dropped,
        "the same counts, reported once"
    );
    // The gap report goes on, unchanged (same gap_id), joined by the quarantined seqs.
    assert_eq!(third.gaps[0], second.gaps[0]);
    assert_eq!(
        reports(&third),
        vec![
            (gap_reason::CAP_COUNT, vec![r(1, 4)]),
            (gap_reason::QUARANTINE, vec![r(5, 6)]),
        ]
    );
    store.delete_batch(&third)?;
    assert!(store
        .drops()?
        .values()
        .all(|(_, unreported)| *unreported == 0));
    assert_eq!(store.drops()?.get(drop_reason::QUEUE_FULL), Some(&(3, 0)));
    Ok(())
}

#[test]
fn drop_counts_commit_with_the_events_or_not_at_all() -> Result<()> {
    let (_buffer, mut store) = temp_store()?;
    store.set_max_file_bytes(64 * 1024)?;
    let big = events_of_size(1..=200, 2000);
    let drops = [(drop_reason::QUEUE_FULL, 2)];
    assert!(store.insert_events(&big, &[], &drops).is_err());
    assert!(
        store.drops()?.is_empty(),
        "a failed commit stores no counts"
    );
    store.insert_events(&events(1..=3), &[], &drops)?;
    assert_eq!(store.drops()?.get(drop_reason::QUEUE_FULL), Some(&(2, 2)));
    Ok(())
}

#[test]
fn the_quarantine_keeps_within_its_caps_by_dropping_its_oldest_batches() -> Result<()> {
    let (_buffer, mut store) = temp_store()?;
    store.insert_events(&events(1..=10), &[], &[])?;
    let caps = QuarantineCaps {
        max_batches: 2,
        max_bytes: u64::MAX,
    };
    let mut ids = Vec::new();
    for (n, now) in [(1, 1), (2, 2), (3, 3)] {
        let batch = store.cut_batch(n, usize::MAX, "{}", now)?.expect("a batch");
        assert!(store.quarantine_batch(&batch, "HTTP 400", now, &caps)?);
        ids.push(batch.batch_id.to_string());
    }
    // Three batches of 1, 2 and 3 events; the cap keeps the two newest.
    let kept: Vec<String> = store
        .conn
        .prepare("SELECT batch_id FROM quarantine ORDER BY quarantined_at_ms")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    assert_eq!(kept, ids[1..]);
    let pending = store.pending();
    assert_eq!(
        (pending.quarantined_batches, pending.quarantined_events),
        (2, 5)
    );
    // Each quarantined seq is reported once, as `quarantine`; evicting an already reported
    // batch reports nothing new.
    assert_eq!(gap_total(&store, gap_reason::QUARANTINE), 6);
    assert_eq!(gap_total(&store, gap_reason::QUARANTINE_CAP), 0);
    let next = cut(&mut store, 10, 4)?;
    let seqs: Vec<SeqRange> = next.gaps.iter().flat_map(|g| g.ranges.clone()).collect();
    assert_eq!(merge_ranges(&seqs, &[]), vec![r(1, 6)]);
    assert!(next.gaps.iter().all(|g| g.reason == gap_reason::QUARANTINE));

    // A byte cap smaller than the next batch's events: everything before it goes too.
    let bytes_cap = QuarantineCaps {
        max_batches: u64::MAX,
        max_bytes: pending.quarantined_bytes,
    };
    assert!(store.quarantine_batch(&next, "HTTP 400", 5, &bytes_cap)?);
    let pending = store.pending();
    assert!(
        pending.quarantined_bytes <= bytes_cap.max_bytes,
        "{pending:?}"
    );
    assert_eq!(pending.quarantined_batches, 1, "{pending:?}");
    assert_eq!(gap_total(&store, gap_reason::QUARANTINE), 10);

    let recounted = {
        store.recount()?;
        store.pending()
    };
    assert_eq!(recounted, pending, "the counts match the tables");

    // A batch that alone is over the caps cannot be kept: deleted at once, `quarantine_cap`.
    store.insert_events(&events(11..=12), &[], &[])?;
    let big = cut(&mut store, 10, 6)?;
    let tiny = QuarantineCaps {
        max_batches: u64::MAX,
        max_bytes: 1,
    };
    assert!(store.quarantine_batch(&big, "HTTP 400", 6, &tiny)?);
    assert_eq!(gap_total(&store, gap_reason::QUARANTINE_CAP), 2);
    assert_eq!(gap_total(&store, gap_reason::QUARANTINE), 10);
    assert_eq!(store.pending().quarantined_batches, 0);
    let last = store
        .cut_batch(10, usize::MAX, "{}", 7)?
        .expect("a gap-only batch");
    assert!(reports(&last).contains(&(gap_reason::QUARANTINE_CAP, vec![r(11, 12)])));
    Ok(())
}

#[test]
fn next_attempt_times_beyond_reach_are_brought_back() -> Result<()> {
    let (_buffer, mut store) = temp_store()?;
    store.insert_events(&events(1..=4), &[], &[])?;
    let near = cut(&mut store, 2, 1)?;
    let far = cut(&mut store, 2, 2)?;
    store.record_failure(near.batch_id, 1, 1_000, "HTTP 503")?;
    store.record_failure(far.batch_id, 1, 9_000_000, "HTTP 503")?;
    assert_eq!(store.clamp_next_attempts(5_000)?, 1);
    let times: Vec<i64> = store
        .conn
        .prepare("SELECT next_attempt_ms FROM batches ORDER BY created_at_ms")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    assert_eq!(times, [1_000, 5_000]);
    Ok(())
}

#[test]
fn caps_can_be_enforced_in_bounded_slices() -> Result<()> {
    let (_buffer, mut store) = temp_store()?;
    store.insert_events(&events(1..=2_500), &[], &[])?;
    let batch = cut(&mut store, 300, 1)?;
    let caps = Caps {
        max_events: 100,
        ..UNCAPPED_BUFFER
    };
    let mut slices = Vec::new();
    loop {
        let progress = store.enforce_caps_bounded(&caps, 10, 1_000)?;
        slices.push(progress.dropped);
        if progress.done {
            break;
        }
    }
    // 2 400 to drop, at most 1 000 per call: the batch of 300 whole and 700 unbatched events,
    // then 1 000, then the last 400.
    assert_eq!(slices, [1_000, 1_000, 400]);
    assert_eq!(store.pending().events, 100);
    assert_eq!(store.batch_bodies(batch.batch_id)?.len(), 0);
    assert_eq!(gap_total(&store, gap_reason::CAP_COUNT), 2_400);
    let reported = cut(&mut store, 1, 11)?;
    assert_eq!(
        reports(&reported),
        vec![(gap_reason::CAP_COUNT, vec![r(1, 2_400)])]
    );
    Ok(())
}

#[test]
fn commits_leave_checkpoints_to_the_checkpointer() -> Result<()> {
    let buffer = TempBuffer::new()?;
    let wal = buffer.file("-wal");
    let mut store = buffer.open()?;
    let mut checkpointer = store.checkpointer()?;
    checkpointer.checkpoint()?;
    let db_before = std::fs::metadata(&buffer.path)?.len();
    // Far more than SQLite's automatic checkpoint threshold (1 000 pages of 4 KiB).
    for chunk in 0..10u64 {
        let rows = events_of_size(chunk * 500 + 1..=chunk * 500 + 500, 2_000);
        store.insert_events(&rows, &[], &[])?;
    }
    // No commit checkpointed: everything is still only in the WAL.
    assert_eq!(std::fs::metadata(&buffer.path)?.len(), db_before);
    assert!(std::fs::metadata(&wal)?.len() > 10 * 1024 * 1024);
    // One passive checkpoint copies it all into the database file.
    let copied = checkpointer.checkpoint()?;
    assert_eq!(copied.left, 0);
    assert!(copied.frames > 2_500, "{copied:?}");
    assert!(std::fs::metadata(&buffer.path)?.len() > 10 * 1024 * 1024);
    // Nothing committed since: the WAL looks the same (the checkpoint thread's idle pace).
    assert_eq!(checkpointer.checkpoint()?, copied);
    // The next commit finds every frame copied and writes the WAL from its beginning again.
    store.insert_events(&events_of_size(5_001..=5_001, 100), &[], &[])?;
    let restarted = checkpointer.checkpoint()?;
    assert!(restarted.frames < 10, "{restarted:?}");
    Ok(())
}

#[test]
fn a_version_2_buffer_upgrades_to_the_current_schema_and_keeps_its_batches() -> Result<()> {
    let (_dir, mut upgraded) =
        upgraded_like_fresh(include_str!("../../tests/fixtures/schema_v2.sql"), 2)?;
    assert_eq!(upgraded.next_seq(), 6);
    assert_eq!(upgraded.pending().events, 3);
    assert_eq!(upgraded.pending().quarantined_batches, 1);
    let in_flight = upgraded.oldest_batch()?.expect("the v2 batch survives");
    assert_eq!(in_flight.dropped.get(drop_reason::QUEUE_FULL), Some(&2));
    assert!(in_flight.gaps.is_empty());
    upgraded.delete_batch(&in_flight)?;
    // Gap reports work on the upgraded file.
    let caps = Caps {
        max_events: 1,
        ..UNCAPPED_BUFFER
    };
    assert_eq!(upgraded.enforce_caps(&caps, 1)?, 1);
    let next = cut(&mut upgraded, 10, 2)?;
    assert_eq!(reports(&next), vec![(gap_reason::CAP_COUNT, vec![r(4, 4)])]);
    Ok(())
}

#[test]
fn long_gaps_are_split_and_at_most_the_limit_rides_in_one_batch() -> Result<()> {
    use tern_protocol::limits::{MAX_GAPS_PER_BATCH, MAX_RANGES_PER_GAP};
    let (_buffer, mut store) = temp_store()?;
    // Every other seq of a long run dropped: one gap of many single-seq ranges per reason.
    let per_gap = MAX_RANGES_PER_GAP * (MAX_GAPS_PER_BATCH + 2);
    let seqs: Vec<u64> = (0..per_gap as u64).map(|i| 2 * i + 1).collect();
    {
        let tx = store.conn.transaction()?;
        gaps::record(&tx, gap_reason::CAP_COUNT, &ranges_of(&seqs), 1)?;
        tx.commit()?;
    }
    let mut sent = Vec::new();
    let mut batches = 0;
    while let Some(batch) = store.cut_batch(10, usize::MAX, "{}", 2)? {
        assert!(batch.gaps.len() <= MAX_GAPS_PER_BATCH);
        assert!(batch
            .gaps
            .iter()
            .all(|g| g.ranges.len() <= MAX_RANGES_PER_GAP));
        // A retry repeats the batch's reports exactly.
        assert_eq!(store.oldest_batch()?.expect("stored").gaps, batch.gaps);
        sent.extend(batch.gaps.iter().flat_map(|g| g.ranges.clone()));
        store.delete_batch(&batch)?;
        batches += 1;
    }
    assert_eq!(batches, 2);
    assert_eq!(sent, ranges_of(&seqs), "every seq reported, once");
    Ok(())
}

#[test]
fn a_partly_refused_batch_quarantines_only_the_refused_events() -> Result<()> {
    let (_buffer, mut store) = temp_store()?;
    let stored = events(1..=10);
    store.insert_events(&stored, &[], &[])?;
    let batch = cut(&mut store, 10, 1)?;
    let refused = vec![RefusedEvent {
        event_id: stored[6].event_id,
        seq: 7,
        reason: "invalid_name".into(),
        message: "event name is empty".into(),
    }];
    assert_eq!(
        store.settle_partly_refused(&batch, &refused, 2, &UNCAPPED_QUARANTINE)?,
        1
    );
    let pending = store.pending();
    assert_eq!(
        (
            pending.events,
            pending.quarantined_batches,
            pending.quarantined_events
        ),
        (0, 1, 1)
    );
    let (events_json, reason): (String, String) =
        store
            .conn
            .query_row("SELECT events, reason FROM quarantine", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
    assert_eq!(events_json, format!("[{}]", stored[6].body));
    assert!(reason.contains("invalid_name"), "{reason}");
    let next = store
        .cut_batch(10, usize::MAX, "{}", 3)?
        .expect("a gap-only batch");
    assert_eq!(
        reports(&next),
        vec![(gap_reason::QUARANTINE, vec![r(7, 7)])]
    );
    store.recount()?;
    assert_eq!(store.pending().quarantined_events, 1);
    Ok(())
}

#[test]
fn a_renewed_batch_id_keeps_the_events_and_reports() -> Result<()> {
    let (_buffer, mut store) = temp_store()?;
    store.insert_events(&events(1..=6), &[], &[])?;
    let caps = Caps {
        max_events: 4,
        ..UNCAPPED_BUFFER
    };
    store.enforce_caps(&caps, 1)?;
    let batch = cut(&mut store, 10, 1)?;
    store.record_failure(batch.batch_id, 3, 99, "HTTP 503")?;
    let renewed = store.renew_batch_id(&batch, 2)?.expect("still stored");
    assert_ne!(renewed.batch_id, batch.batch_id);
    let stored = store.oldest_batch()?.expect("the renewed batch");
    assert_eq!(stored.batch_id, renewed.batch_id);
    assert_eq!((stored.attempts, stored.next_attempt_ms), (0, 0));
    assert_eq!(stored.gaps, batch.gaps);
    assert_eq!(
        store.batch_bodies(renewed.batch_id)?,
        (3..=6).map(|s| event(s).body).collect::<Vec<_>>()
    );
    assert!(store.batch_bodies(batch.batch_id)?.is_empty());
    assert!(
        store.renew_batch_id(&batch, 3)?.is_none(),
        "the old id is gone"
    );
    Ok(())
}

#[test]
fn opting_out_reports_the_purged_seqs_as_one_gap() -> Result<()> {
    let (_buffer, mut store) = temp_store()?;
    store.insert_events(&events(1..=5), &[], &[])?;
    cut(&mut store, 2, 1)?;
    store.purge(2)?;
    assert_eq!(store.pending(), Pending::default());
    let next = store
        .cut_batch(10, usize::MAX, "{}", 3)?
        .expect("a gap-only batch");
    assert_eq!(reports(&next), vec![(gap_reason::OPT_OUT, vec![r(1, 5)])]);
    Ok(())
}

#[test]
fn corrupt_copies_are_bounded_in_count_and_age() -> Result<()> {
    let buffer = TempBuffer::new()?;
    // One copy too old to keep, whatever the count.
    let now = chrono::Utc::now().timestamp_millis();
    let old_ms = now - i64::try_from(MAX_CORRUPT_COPY_AGE.as_millis()).unwrap() - 1_000;
    std::fs::write(buffer.file(&format!(".corrupt-{old_ms}")), b"old")?;
    for _ in 0..MAX_CORRUPT_COPIES + 2 {
        buffer.corrupt()?;
        drop(buffer.open()?);
        std::thread::sleep(Duration::from_millis(2));
    }
    let kept = buffer.files(|n| {
        n.starts_with("t.db.corrupt-") && !n.ends_with("-wal") && !n.ends_with("-shm")
    })?;
    assert_eq!(kept.len(), MAX_CORRUPT_COPIES, "{kept:?}");
    assert!(!kept.contains(&format!("t.db.corrupt-{old_ms}")));
    Ok(())
}

#[test]
fn opting_out_leaves_no_copy_of_the_events() -> Result<()> {
    let buffer = TempBuffer::new()?;
    buffer.corrupt()?;
    drop(buffer.open()?);
    let mut store = buffer.open()?;
    let secret = "a-secret-property-value-0123456789";
    let stored: Vec<StoredEvent> = (1..=50)
        .map(|seq| StoredEvent {
            body: format!("{{\"seq\":{seq},\"p\":\"{secret}\"}}"),
            ..event(seq)
        })
        .collect();
    store.insert_events(&stored, &[], &[])?;
    store.checkpointer()?.checkpoint()?;
    store.purge(1)?;
    let contains = |file: &Path| -> bool {
        std::fs::read(file)
            .is_ok_and(|bytes| bytes.windows(secret.len()).any(|w| w == secret.as_bytes()))
    };
    assert!(
        !contains(&buffer.path),
        "the deleted rows' bytes are overwritten"
    );
    assert!(
        !contains(&buffer.file("-wal")),
        "the WAL no longer holds them"
    );
    assert_eq!(
        std::fs::metadata(buffer.file("-wal")).map_or(0, |m| m.len()),
        0
    );
    let left = buffer.files(|n| n.contains(".corrupt-"))?;
    assert!(left.is_empty(), "corrupt copies deleted: {left:?}");
    Ok(())
}

#[test]
fn corruption_found_while_running_is_handled_as_at_open() -> Result<()> {
    let buffer = TempBuffer::new()?;
    let mut store = buffer.open()?;
    let mut checkpointer = store.checkpointer()?;
    store.insert_events(&events(1..=10), &[(meta_key::USER_ID, "u-1")], &[])?;
    let batch = cut(&mut store, 4, 1)?;
    store.delete_batch(&batch)?;
    let install_id = store.install_id().to_owned();
    // The file goes bad under the open connection: everything in the database file, its WAL
    // emptied first and the connection's page cache released, so the next statement reads it.
    store
        .conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    buffer.corrupt()?;
    store.conn.execute_batch("PRAGMA shrink_memory")?;
    let failed = store
        .insert_events(&events(11..=12), &[], &[])
        .expect_err("a corrupt file fails the next statement");
    assert!(is_corruption(&failed), "{failed}");

    let moved = store.recover_from_corruption()?;
    assert!(moved.exists(), "the corrupt copy is kept for QA");
    assert_eq!(store.install_id(), install_id);
    assert_eq!(store.meta(meta_key::USER_ID)?.as_deref(), Some("u-1"));
    let reserved = 10 + SEQ_RESERVATION;
    assert_eq!(
        store.next_seq(),
        reserved + 1,
        "seq continues after the block"
    );
    // The fresh buffer takes events, and the checkpointer follows it to the new file.
    store.insert_events(&events(reserved + 1..=reserved + 2), &[], &[])?;
    checkpointer.checkpoint()?;
    let batch = store
        .cut_batch(10, usize::MAX, "{}", 2)?
        .expect("events and the gap");
    assert_eq!(
        reports(&batch),
        vec![(gap_reason::STORAGE_LOST, vec![r(5, reserved)])]
    );
    Ok(())
}
