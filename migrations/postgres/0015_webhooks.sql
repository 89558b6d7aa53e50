-- Tenants' webhook endpoints, and each event's delivery to each endpoint:
-- written when the outbox relay publishes the event (in the transaction
-- that deletes it from the outbox), sent by the delivery worker.
CREATE TABLE webhook_endpoints (
    tenant_id       TEXT   NOT NULL,
    id              TEXT   NOT NULL,
    url             TEXT   NOT NULL,
    -- Comma-separated event types, or `*` for every one.
    event_types     TEXT   NOT NULL,
    secret          TEXT   NOT NULL,
    description     TEXT,
    status          TEXT   NOT NULL,
    disabled_reason TEXT,
    -- When the current run of failed attempts began (NULL: the last one succeeded).
    failing_since   BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE webhook_deliveries (
    id              TEXT   PRIMARY KEY,
    tenant_id       TEXT   NOT NULL,
    endpoint_id     TEXT   NOT NULL,
    event_id        TEXT   NOT NULL,
    order_id        TEXT   NOT NULL,
    event_type      TEXT   NOT NULL,
    payload         TEXT   NOT NULL,
    -- The event's place in the outbox: an order's events go out in this order.
    outbox_seq      BIGINT NOT NULL,
    status          TEXT   NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (tenant_id, endpoint_id, order_id, outbox_seq);
