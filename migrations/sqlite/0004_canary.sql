-- Canary rollouts: a candidate version decides a share of orders (chosen by
-- a hash of the order id) and is rolled back automatically when its failure
-- rate, latency or divergence from the active version crosses its thresholds.
CREATE TABLE plugin_canaries (
    tenant_id             TEXT   NOT NULL,
    slot                  TEXT   NOT NULL,
    version               BIGINT NOT NULL,
    percent               BIGINT NOT NULL,
    -- Thresholds, judged over the canary's latest calls once min_calls are in.
    max_failure_permille  BIGINT NOT NULL,
    max_p99_us            BIGINT NOT NULL,
    max_divergence_permille BIGINT NOT NULL,
    min_calls             BIGINT NOT NULL,
    started_by            TEXT   NOT NULL,
    started_at            BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, slot)
);

-- One row per call the canary version made: did it fail, how long it took,
-- and (deterministic slots) whether the active version, run beside it on
-- the same input, agreed.
CREATE TABLE plugin_canary_calls (
    id          TEXT   PRIMARY KEY,
    tenant_id   TEXT   NOT NULL,
    slot        TEXT   NOT NULL,
    version     BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    order_id    TEXT   NOT NULL,
    failed      BIGINT NOT NULL,
    duration_us BIGINT NOT NULL,
    agreed      BIGINT,
    at          BIGINT NOT NULL
);
CREATE INDEX plugin_canary_calls_by_canary ON plugin_canary_calls (tenant_id, slot, version, started_at, id);

-- Why a change was made (an automatic rollback names the threshold crossed).
ALTER TABLE plugin_audit ADD COLUMN detail TEXT;
