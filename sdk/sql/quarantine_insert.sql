INSERT INTO quarantine (batch_id, quarantined_at_ms, reason, context, event_count, events)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)
