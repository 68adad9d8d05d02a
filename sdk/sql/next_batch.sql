SELECT batch_id, context, event_count, bytes, attempts, next_attempt_ms, dropped
FROM batches ORDER BY created_at_ms, batch_id LIMIT 1
