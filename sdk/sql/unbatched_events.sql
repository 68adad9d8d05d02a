SELECT seq, bytes FROM events WHERE batch_id IS NULL ORDER BY seq LIMIT ?1
