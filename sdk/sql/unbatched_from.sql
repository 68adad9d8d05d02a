-- Unbatched events from seq ?1 on, oldest first, at most ?2: the candidates a cap drops.
SELECT seq, bytes, created_at_ms FROM events
WHERE batch_id IS NULL AND seq >= ?1 ORDER BY seq LIMIT ?2
