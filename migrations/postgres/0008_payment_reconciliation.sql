-- Reconciliation: each payment operation is compared, once its order's saga
-- is at rest, with what the provider holds. `reconciliation` is `matched`,
-- `mismatch`, `unsupported` (the adapter cannot read payments back) or
-- `no_reference` (no authorization to look up); `reconcile_after` defers an
-- order whose lookup failed transiently.
ALTER TABLE payments ADD COLUMN reconciled_at BIGINT;
ALTER TABLE payments ADD COLUMN reconciliation TEXT;
ALTER TABLE payments ADD COLUMN reconcile_after BIGINT NOT NULL DEFAULT 0;
CREATE INDEX payments_unreconciled ON payments (at) WHERE reconciled_at IS NULL;
