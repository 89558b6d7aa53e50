-- When each saga entered its current state (NULL: when the order was
-- placed). Operators list sagas in a state the longest in it first; that
-- list was ordered by updated_at, which every transition changes, and with
-- updated_at in an index no update of an order could be HOT (written beside
-- the old row on its page, no new index entries): each transition added an
-- entry to every index of orders. saga_status_at changes only with
-- saga_status.
ALTER TABLE orders ADD COLUMN saga_status_at BIGINT;
UPDATE orders SET saga_status_at = updated_at;
DROP INDEX orders_by_saga_status;
CREATE INDEX orders_by_saga_status ON orders (saga_status, (COALESCE(saga_status_at, created_at)), id);
-- Room on each page for an updated row's new version beside the old one.
ALTER TABLE orders SET (fillfactor = 80);
