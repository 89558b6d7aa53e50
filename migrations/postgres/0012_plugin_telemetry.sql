-- How tenants' plugins run, from every host: each host's cumulative call
-- counts per version (its latency as a serialized HDR histogram, merged
-- when read), and the plugins' own log lines. Written by each host in the
-- background; read by the API, so a tenant sees every host's calls.
CREATE TABLE plugin_call_stats (
    host             TEXT   NOT NULL,
    tenant_id        TEXT   NOT NULL,
    slot             TEXT   NOT NULL,
    version          TEXT   NOT NULL,
    calls            BIGINT NOT NULL,
    succeeded        BIGINT NOT NULL,
    traps            BIGINT NOT NULL,
    timeouts         BIGINT NOT NULL,
    out_of_fuel      BIGINT NOT NULL,
    output_too_large BIGINT NOT NULL,
    invalid_answers  BIGINT NOT NULL,
    other_failures   BIGINT NOT NULL,
    fuel_used_total  BIGINT NOT NULL,
    latency          TEXT,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (host, tenant_id, slot, version)
);
CREATE INDEX plugin_call_stats_slot ON plugin_call_stats (tenant_id, slot);

CREATE TABLE plugin_log_lines (
    id        TEXT   PRIMARY KEY,
    tenant_id TEXT   NOT NULL,
    slot      TEXT   NOT NULL,
    host      TEXT   NOT NULL,
    version   TEXT   NOT NULL,
    at        BIGINT NOT NULL,
    line      TEXT   NOT NULL
);
CREATE INDEX plugin_log_lines_slot ON plugin_log_lines (tenant_id, slot, at);
