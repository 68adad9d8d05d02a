SELECT body FROM events WHERE batch_id = ?1 ORDER BY seq
