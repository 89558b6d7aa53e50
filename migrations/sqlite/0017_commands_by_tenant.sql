-- The dispatcher reads each tenant's due commands apart (oldest first, as
-- many as the tenant has room to run), so one tenant's backlog is never
-- stepped over to reach another's.
CREATE INDEX saga_commands_tenant_due ON saga_commands (tenant_id, available_at);
