INSERT INTO events (seq, event_id, name, created_at_ms, body, bytes)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)
