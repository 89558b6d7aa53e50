-- Orders, their saga state and history. Kept in step with ../sqlite/0001_orders.sql:
-- the same tables and columns, so every query runs on both.
CREATE TABLE orders (
    tenant_id           TEXT    NOT NULL,
    id                  TEXT    NOT NULL,
    customer_id         TEXT    NOT NULL,
    currency            TEXT    NOT NULL,
    total_minor         BIGINT  NOT NULL,
    status              TEXT    NOT NULL,
    payment_status      TEXT    NOT NULL,
    fulfillment_status  TEXT    NOT NULL,
    draft               TEXT    NOT NULL,
    violations          TEXT,
    cancellation_reason TEXT,
    shipment            TEXT,
    saga_state          TEXT    NOT NULL,
    saga_status         TEXT    NOT NULL,
    version             BIGINT  NOT NULL,
    event_seq           BIGINT  NOT NULL,
    created_at          BIGINT  NOT NULL,
    updated_at          BIGINT  NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX orders_by_status ON orders (tenant_id, status, id);
CREATE INDEX orders_by_customer ON orders (tenant_id, customer_id, created_at);

CREATE TABLE order_events (
    tenant_id  TEXT   NOT NULL,
    order_id   TEXT   NOT NULL,
    seq        BIGINT NOT NULL,
    event_type TEXT   NOT NULL,
    data       TEXT   NOT NULL,
    at         BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, order_id, seq)
);

-- Durable saga work. A row is deleted in the same transaction that applies
-- its outcome, which makes a redelivered command a no-op.
CREATE TABLE saga_commands (
    id           TEXT   PRIMARY KEY,
    tenant_id    TEXT   NOT NULL,
    order_id     TEXT   NOT NULL,
    action       TEXT   NOT NULL,
    available_at BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX saga_commands_due ON saga_commands (available_at);

-- Transactional outbox of public events, relayed to the transport.
CREATE TABLE outbox (
    id           TEXT   PRIMARY KEY,
    tenant_id    TEXT   NOT NULL,
    order_id     TEXT   NOT NULL,
    topic        TEXT   NOT NULL,
    event_type   TEXT   NOT NULL,
    payload      TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    published_at BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL;

CREATE TABLE payments (
    id                 TEXT   PRIMARY KEY,
    tenant_id          TEXT   NOT NULL,
    order_id           TEXT   NOT NULL,
    op                 TEXT   NOT NULL,
    amount             BIGINT NOT NULL,
    currency           TEXT   NOT NULL,
    status             TEXT   NOT NULL,
    provider_reference TEXT,
    error_code         TEXT,
    idempotency_key    TEXT   NOT NULL,
    plugin_version     TEXT,
    at                 BIGINT NOT NULL
);
CREATE INDEX payments_by_order ON payments (tenant_id, order_id, at);

CREATE TABLE inventory (
    tenant_id    TEXT   NOT NULL,
    sku          TEXT   NOT NULL,
    warehouse_id TEXT   NOT NULL,
    on_hand      BIGINT NOT NULL CHECK (on_hand >= 0),
    reserved     BIGINT NOT NULL CHECK (reserved >= 0),
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, sku, warehouse_id),
    CHECK (reserved <= on_hand)
);

CREATE TABLE reservations (
    tenant_id    TEXT   NOT NULL,
    order_id     TEXT   NOT NULL,
    sku          TEXT   NOT NULL,
    warehouse_id TEXT   NOT NULL,
    quantity     BIGINT NOT NULL CHECK (quantity > 0),
    state        TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, order_id, sku, warehouse_id)
);

CREATE TABLE idempotency_keys (
    tenant_id       TEXT   NOT NULL,
    idem_key        TEXT   NOT NULL,
    request_hash    TEXT   NOT NULL,
    state           TEXT   NOT NULL,
    response_status BIGINT,
    response_body   TEXT,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, idem_key)
);
