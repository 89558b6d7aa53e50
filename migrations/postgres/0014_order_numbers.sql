-- Each tenant's orders are numbered 1, 2, 3, … in the order they are
-- accepted: a counter per tenant hands the numbers out, each order keeps its
-- own (orders placed before this have none).
CREATE TABLE order_numbers (
    tenant_id TEXT   PRIMARY KEY,
    last      BIGINT NOT NULL
);
ALTER TABLE orders ADD COLUMN order_number BIGINT;
CREATE UNIQUE INDEX orders_tenant_number ON orders (tenant_id, order_number);
