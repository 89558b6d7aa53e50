-- Production plugin calls recorded for replay (`oms plugin replay`): the
-- input exactly as the plugin saw it, the version, the verdict and the cost.
CREATE TABLE plugin_calls (
    id          TEXT   PRIMARY KEY,
    tenant_id   TEXT   NOT NULL,
    slot        TEXT   NOT NULL,
    version     TEXT   NOT NULL,
    order_id    TEXT   NOT NULL,
    input       TEXT   NOT NULL,
    output      TEXT   NOT NULL,
    verdict     TEXT   NOT NULL,
    fuel_used   BIGINT NOT NULL,
    duration_us BIGINT NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX plugin_calls_by_slot ON plugin_calls (tenant_id, slot, id);
