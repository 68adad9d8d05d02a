SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM events WHERE batch_id = ?1
