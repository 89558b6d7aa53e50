-- Tenant plugin versions, content-addressed. Same tables as ../sqlite/0002_plugins.sql;
-- only the blob column's type differs (BYTEA here, BLOB there).
CREATE TABLE plugin_blobs (
    digest     TEXT   PRIMARY KEY,
    bytes      BYTEA  NOT NULL,
    size_bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE plugin_versions (
    tenant_id   TEXT   NOT NULL,
    slot        TEXT   NOT NULL,
    version     BIGINT NOT NULL,
    digest      TEXT   NOT NULL,
    size_bytes  BIGINT NOT NULL,
    uploaded_by TEXT   NOT NULL,
    uploaded_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, slot, version),
    UNIQUE (tenant_id, slot, digest)
);

-- Which version runs, and the one before it for a one-call rollback.
CREATE TABLE plugin_activations (
    tenant_id        TEXT   NOT NULL,
    slot             TEXT   NOT NULL,
    active_version   BIGINT NOT NULL,
    previous_version BIGINT,
    changed_by       TEXT   NOT NULL,
    changed_at       BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, slot)
);

CREATE TABLE plugin_audit (
    id        TEXT   PRIMARY KEY,
    tenant_id TEXT   NOT NULL,
    slot      TEXT   NOT NULL,
    action    TEXT   NOT NULL,
    version   BIGINT NOT NULL,
    actor     TEXT   NOT NULL,
    at        BIGINT NOT NULL
);
CREATE INDEX plugin_audit_by_tenant ON plugin_audit (tenant_id, at);
