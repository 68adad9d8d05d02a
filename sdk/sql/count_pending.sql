-- What waits in the buffer, counted from the tables: at open, and after a caught panic only.
SELECT
    (SELECT COUNT(*) FROM events),
    (SELECT COALESCE(SUM(bytes), 0) FROM events),
    (SELECT COALESCE(SUM(batch_id IS NULL), 0) FROM events),
    (SELECT COUNT(*) FROM quarantine),
    (SELECT COALESCE(SUM(event_count), 0) FROM quarantine),
    (SELECT COALESCE(SUM(length(events)), 0) FROM quarantine)
