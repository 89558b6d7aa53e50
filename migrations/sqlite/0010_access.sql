-- Tenants, their API keys and the operators, kept in the database so they
-- change at run time on every host. Same tables as ../postgres/0010_access.sql.

-- A tenant's manifest (the tenants/*.toml format, as JSON). Every change
-- raises `revision`; each host reloads the tenants whose revision moved.
CREATE TABLE tenants (
    id              TEXT   PRIMARY KEY,
    spec            TEXT   NOT NULL,
    suspended       BIGINT NOT NULL DEFAULT 0,
    revision        BIGINT NOT NULL,
    -- sha256 of the manifest file last imported at start, so an unchanged
    -- file does not undo changes made through the API.
    imported_digest TEXT,
    created_by      TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_by      TEXT   NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- Tenant API keys: only the sha256 of the secret is kept. A rotated key
-- stays valid until `expires_at` (the grace period); a revoked one is not.
CREATE TABLE api_keys (
    id           TEXT   PRIMARY KEY,
    tenant_id    TEXT   NOT NULL,
    name         TEXT   NOT NULL,
    secret_hash  TEXT   NOT NULL UNIQUE,
    scopes       TEXT   NOT NULL,
    created_by   TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT,
    replaced_by  TEXT
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at);

-- Named operator tokens (sha256 kept) with a role: viewer or admin.
CREATE TABLE operators (
    name         TEXT   PRIMARY KEY,
    role         TEXT   NOT NULL,
    token_hash   TEXT   NOT NULL UNIQUE,
    created_by   TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    last_used_at BIGINT
);

-- Who did what, from where, when: every operator change through the admin API.
CREATE TABLE operator_audit (
    id        TEXT   PRIMARY KEY,
    at        BIGINT NOT NULL,
    operator  TEXT   NOT NULL,
    source    TEXT   NOT NULL,
    action    TEXT   NOT NULL,
    tenant_id TEXT,
    target    TEXT   NOT NULL,
    detail    TEXT
);
CREATE INDEX operator_audit_by_time ON operator_audit (at);
CREATE INDEX operator_audit_by_tenant ON operator_audit (tenant_id, at);
