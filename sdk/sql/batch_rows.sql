SELECT seq, event_id, body FROM events WHERE batch_id = ?1 ORDER BY seq
