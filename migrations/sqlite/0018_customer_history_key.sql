-- The fraud check's read of a customer's recent orders, keyed as on
-- PostgreSQL (see its migration 0018): one expression only this read uses.
DROP INDEX orders_by_customer;
CREATE INDEX orders_by_customer ON orders ((tenant_id || ':' || customer_id), created_at);
