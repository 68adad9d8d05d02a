-- Tern SDK identity file, schema version 1 (see store/identity.rs: VERSION).
-- Kept beside the buffer, so that a corrupt buffer cannot take who the install is and what the
-- user chose: install_id, user_id, super_properties, opt_out, and the seq marks
-- (seq_reserved_through, batched_through, acked_through).
CREATE TABLE IF NOT EXISTS identity (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
