-- Shadow versions: a candidate that runs beside the active version, whose
-- verdicts are recorded and compared but never acted on.
ALTER TABLE plugin_activations ADD COLUMN shadow_version BIGINT;

CREATE TABLE plugin_shadow_results (
    id             TEXT   PRIMARY KEY,
    tenant_id      TEXT   NOT NULL,
    slot           TEXT   NOT NULL,
    order_id       TEXT   NOT NULL,
    active_version TEXT   NOT NULL,
    shadow_version TEXT   NOT NULL,
    agreed         BIGINT NOT NULL,
    active_verdict TEXT   NOT NULL,
    shadow_verdict TEXT   NOT NULL,
    at             BIGINT NOT NULL
);
CREATE INDEX plugin_shadow_by_slot ON plugin_shadow_results (tenant_id, slot, id);
