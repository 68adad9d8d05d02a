-- Tern SDK buffer, schema version 3 (see store/schema.rs: VERSION and upgrade_from).

-- Small facts about this install: install_id, next_seq, opt_out, session, super-properties.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Batches cut for upload. Their content is fixed once cut: the events pointing at them (whose
-- bodies never change), the context and the drop counts captured here. Retries resend exactly
-- this.
CREATE TABLE IF NOT EXISTS batches (
    batch_id        TEXT PRIMARY KEY,
    created_at_ms   INTEGER NOT NULL,
    context         TEXT NOT NULL,
    event_count     INTEGER NOT NULL,
    bytes           INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    dropped         TEXT
);

-- Tracked events. seq is the install's sequence number and the queue order.
CREATE TABLE IF NOT EXISTS events (
    seq           INTEGER PRIMARY KEY,
    event_id      TEXT NOT NULL,
    name          TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    body          TEXT NOT NULL,
    bytes         INTEGER NOT NULL,
    batch_id      TEXT REFERENCES batches(batch_id)
);

-- Events not yet in a batch, in order: what the next batch is cut from.
CREATE INDEX IF NOT EXISTS events_unbatched ON events(seq) WHERE batch_id IS NULL;
-- Events of a batch, to send it and delete it.
CREATE INDEX IF NOT EXISTS events_by_batch ON events(batch_id) WHERE batch_id IS NOT NULL;

-- Batches the collector refused as malformed (400): kept whole for QA, never sent again.
CREATE TABLE IF NOT EXISTS quarantine (
    batch_id         TEXT PRIMARY KEY,
    quarantined_at_ms INTEGER NOT NULL,
    reason           TEXT NOT NULL,
    context          TEXT NOT NULL,
    event_count      INTEGER NOT NULL,
    events           TEXT NOT NULL
);

-- Events dropped on the device before they had a seq (full queue, failed storage), by reason.
-- `unreported` is what the next batch will tell the collector; `total` is kept for QA.
CREATE TABLE IF NOT EXISTS drops (
    reason     TEXT PRIMARY KEY,
    total      INTEGER NOT NULL DEFAULT 0,
    unreported INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Gap reports: seq numbers given up on (caps, quarantine, opt-out, lost storage), each a UUID v7
-- with its reason, its ranges (JSON [{"first":..,"last":..}], ascending, disjoint), the count
-- and the time. batch_id NULL: pending, the next batch cut takes it (and keeps it, unchanged,
-- across retries); deleted with its batch on acknowledgement.
CREATE TABLE IF NOT EXISTS gaps (
    gap_id   TEXT PRIMARY KEY,
    reason   TEXT NOT NULL,
    ranges   TEXT NOT NULL,
    count    INTEGER NOT NULL,
    at_ms    INTEGER NOT NULL,
    batch_id TEXT REFERENCES batches(batch_id),
    -- 1 once a batch carried it: its content is then fixed (it may have reached the stream),
    -- so later gaps of the same reason are never merged into it.
    fixed    INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX IF NOT EXISTS gaps_by_batch ON gaps(batch_id);

-- seq numbers given up on since the install, by reason: for stats and QA.
CREATE TABLE IF NOT EXISTS gap_totals (
    reason TEXT PRIMARY KEY,
    seqs   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
