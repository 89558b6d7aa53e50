-- Saga commands travel through the outbox too when hosts share work over
-- Kafka, and a retry's command is published only once it is due. SQLite
-- serves one host, which relays in rowid order; see ../postgres/ for the
-- multi-host claims.
ALTER TABLE outbox ADD COLUMN available_at BIGINT NOT NULL DEFAULT 0;
