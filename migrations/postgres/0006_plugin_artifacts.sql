-- Plugin components compiled to native code, per engine (compiler version and
-- settings), so a host that has not seen a version loads it in milliseconds
-- instead of compiling it again (seconds for a Python guest). Same table in
-- ../sqlite/; only the blob column's type differs.
CREATE TABLE plugin_artifacts (
    digest     TEXT   NOT NULL,
    engine     TEXT   NOT NULL,
    bytes      BYTEA  NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (digest, engine)
);
