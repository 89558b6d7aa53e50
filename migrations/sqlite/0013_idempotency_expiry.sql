-- Idempotency keys hold for 24 hours from their first use; older ones are
-- pruned in batches by first use.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
