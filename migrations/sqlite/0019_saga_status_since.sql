-- When each saga entered its current state (NULL: when the order was
-- placed), as on PostgreSQL (see its migration 0019): operators list sagas
-- in a state the longest in it first.
ALTER TABLE orders ADD COLUMN saga_status_at INTEGER;
UPDATE orders SET saga_status_at = updated_at;
DROP INDEX orders_by_saga_status;
CREATE INDEX orders_by_saga_status ON orders (saga_status, COALESCE(saga_status_at, created_at), id);
