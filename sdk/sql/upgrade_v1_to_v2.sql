-- Schema 1 → 2: quarantine and drop accounting.
ALTER TABLE batches ADD COLUMN dropped TEXT;

CREATE TABLE IF NOT EXISTS quarantine (
    batch_id         TEXT PRIMARY KEY,
    quarantined_at_ms INTEGER NOT NULL,
    reason           TEXT NOT NULL,
    context          TEXT NOT NULL,
    event_count      INTEGER NOT NULL,
    events           TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS drops (
    reason     TEXT PRIMARY KEY,
    total      INTEGER NOT NULL DEFAULT 0,
    unreported INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
