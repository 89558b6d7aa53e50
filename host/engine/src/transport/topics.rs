//! The topics and message types the platform publishes and consumes: the
//! transport's vocabulary, used by whatever writes messages for it.

/// Public topics. Commands never share a topic with events.
pub const TOPIC_ORDER_EVENTS: &str = "oms.order-events.v1";
pub const TOPIC_NOTIFICATIONS: &str = "oms.notifications.v1";
pub const TOPIC_FULFILMENT: &str = "oms.fulfilment-requests.v1";
/// Saga work shared by the hosts' consumer group (Kafka only).
pub const TOPIC_SAGA_COMMANDS: &str = "oms.saga-commands.v1";
/// Saga command messages no host could read, with their origin and error.
pub const TOPIC_SAGA_COMMANDS_DLQ: &str = "oms.saga-commands.dlq.v1";
/// `type` of a saga command message.
pub const SAGA_COMMAND: &str = "saga.command";
