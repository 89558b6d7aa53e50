-- The dispatcher's sweep leaves out the tenants with no room to run a
-- command: with the tenant in the index, a skipped tenant's backlog is
-- stepped over in the index itself instead of read row by row.
DROP INDEX saga_commands_due;
CREATE INDEX saga_commands_due ON saga_commands (available_at, tenant_id);
