INSERT INTO gaps (gap_id, reason, ranges, count, at_ms, batch_id, fixed)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
