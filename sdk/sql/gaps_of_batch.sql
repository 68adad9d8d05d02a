-- The gap reports fixed into a batch, in the order it sends them.
SELECT gap_id, reason, ranges, count, at_ms FROM gaps
WHERE batch_id = ?1 ORDER BY gap_id
