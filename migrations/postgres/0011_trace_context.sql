-- The W3C trace context an order was placed in, so every step of its saga,
-- on any host and after any restart, continues the same trace; and the one
-- each outbox message was written in, for the transport's headers.
ALTER TABLE orders ADD COLUMN trace_parent TEXT;
ALTER TABLE outbox ADD COLUMN trace_parent TEXT;
