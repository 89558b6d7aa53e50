//! Where committed outbox messages go: subscribers in this process (the
//! embedded default) or Kafka (`--kafka-brokers`). The relay hands a batch
//! to the transport and marks it published only once the transport has it,
//! so a transport that is down leaves the outbox growing and loses nothing.

pub mod kafka;

use oms_store::OutboxRecord;
use std::sync::Arc;
use tokio::sync::broadcast;

pub mod dlq;
pub mod topics;

use topics::*;

/// Topics, one per stream: public order lifecycle events, notifications to
/// send, fulfilment requests for the warehouse, saga commands for the hosts'
/// consumer group, and the dead letters of that group. Commands and events
/// are never mixed on one topic.
pub const TOPICS: [&str; 5] = [
    TOPIC_ORDER_EVENTS,
    TOPIC_NOTIFICATIONS,
    TOPIC_FULFILMENT,
    TOPIC_SAGA_COMMANDS,
    TOPIC_SAGA_COMMANDS_DLQ,
];

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("kafka topics are not set up yet")]
    NotReady,
    #[error("kafka did not take message {id}: {error}")]
    NotDelivered {
        id: String,
        error: rdkafka::error::KafkaError,
    },
}

pub enum Transport {
    InProcess(InProcess),
    Kafka(Arc<kafka::KafkaTransport>),
}

impl Transport {
    /// Publishes a batch in order; `Ok` once every message is acknowledged.
    pub async fn publish(&self, batch: &[OutboxRecord]) -> Result<(), TransportError> {
        match self {
            Self::InProcess(t) => {
                for message in batch {
                    t.publish(message.clone());
                }
                Ok(())
            }
            Self::Kafka(k) => k.publish(batch).await,
        }
    }

    /// Subscribes to what this process publishes (in-process transport only).
    pub fn subscribe(&self) -> Option<broadcast::Receiver<Arc<OutboxRecord>>> {
        match self {
            Self::InProcess(t) => Some(t.subscribe()),
            Self::Kafka(_) => None,
        }
    }

    /// Whether saga commands travel as messages to a consumer group (Kafka)
    /// rather than being swept from the database by this process.
    pub fn carries_commands(&self) -> bool {
        matches!(self, Self::Kafka(_))
    }

    /// Whether this host is the one to run `order`'s saga now: always
    /// in-process; with Kafka, while it holds the order's partition.
    pub fn owns(&self, order: &str) -> bool {
        match self {
            Self::InProcess(_) => true,
            Self::Kafka(k) => k.owns(order),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::InProcess(_) => "in-process",
            Self::Kafka(_) => "kafka",
        }
    }
}

/// The embedded transport: subscribers in this process.
pub struct InProcess {
    sender: broadcast::Sender<Arc<OutboxRecord>>,
}

impl InProcess {
    pub fn new() -> Self {
        Self {
            sender: broadcast::channel(4096).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<OutboxRecord>> {
        self.sender.subscribe()
    }

    fn publish(&self, message: OutboxRecord) {
        // No subscriber is not an error: the message is still published.
        let _ = self.sender.send(Arc::new(message));
    }
}

impl Default for InProcess {
    fn default() -> Self {
        Self::new()
    }
}
