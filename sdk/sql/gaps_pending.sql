-- Pending gap reports, oldest first (gap_id is a UUID v7): what the next batch cut carries.
SELECT gap_id, reason, ranges, count, at_ms, fixed FROM gaps
WHERE batch_id IS NULL ORDER BY gap_id
