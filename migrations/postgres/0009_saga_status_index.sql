-- Operators list sagas by state (stuck, compensating) across tenants,
-- the longest unchanged first.
CREATE INDEX orders_by_saga_status ON orders (saga_status, updated_at);
