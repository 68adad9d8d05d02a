-- Schema 2 → 3: gap reports (seq numbers given up on) replace the drop counts of stored events.
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

CREATE TABLE IF NOT EXISTS gap_totals (
    reason TEXT PRIMARY KEY,
    seqs   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
