-- Saga commands travel through the outbox too when hosts share work over
-- Kafka, and a retry's command is published only once it is due.
-- `seq` orders one order's messages for relays on several hosts (claimed
-- with FOR UPDATE SKIP LOCKED); it is never used as a high-water mark.
-- Inserting a message notifies listening relays, so they wake at once
-- instead of polling.
ALTER TABLE outbox ADD COLUMN available_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN seq BIGSERIAL;
DROP INDEX outbox_unpublished;
CREATE INDEX outbox_due ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX outbox_order_queue ON outbox (order_id, seq) WHERE published_at IS NULL;

CREATE FUNCTION oms_outbox_notify() RETURNS trigger AS $$
BEGIN
    -- One notification per transaction: equal ones are folded at commit.
    PERFORM pg_notify('oms_outbox', '');
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION oms_outbox_notify();
