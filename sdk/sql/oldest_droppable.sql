-- The oldest event a buffer cap may drop: any but those of the batch in flight (?1, or NULL).
SELECT seq, batch_id, created_at_ms FROM events
WHERE ?1 IS NULL OR batch_id IS NULL OR batch_id <> ?1
ORDER BY seq LIMIT 1
