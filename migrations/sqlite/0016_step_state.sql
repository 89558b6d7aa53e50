-- The state of tenants' own saga steps: keys and values in a namespace of
-- the tenant's and the step's. Written only in the transaction that records
-- a step's (or its compensation's) outcome in the saga.
CREATE TABLE step_state (
    tenant_id  TEXT   NOT NULL,
    step       TEXT   NOT NULL,
    state_key  TEXT   NOT NULL,
    value      TEXT   NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, step, state_key)
);
