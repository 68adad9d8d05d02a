-- The quarantined batch that goes first when the quarantine is over its caps.
SELECT batch_id, event_count, length(events) FROM quarantine
ORDER BY quarantined_at_ms, batch_id LIMIT 1
