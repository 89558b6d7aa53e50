//! Kafka through rdkafka: an idempotent producer (acks=all, retries without
//! duplicates or reordering within a partition), each message keyed by its
//! order id so one order's events stay in order on one partition, with the
//! envelope's identity in headers for consumers that route without parsing.

use super::{TOPICS, TransportError};
use crate::store::OutboxRecord;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, PurgeConfig};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::RwLock;
use std::time::Duration;

/// How long librdkafka keeps retrying one message before the relay hears
/// it failed and tries the batch again later (the outbox keeps it meanwhile).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct KafkaTransport {
    config: ClientConfig,
    producer: RwLock<FutureProducer>,
    admin: AdminClient<DefaultClientContext>,
    partitions: i32,
}

/// Schema version of the envelope (`schemaVersion` in every payload).
pub const SCHEMA_VERSION: &str = "1";

impl KafkaTransport {
    /// Sets up the producer. Nothing is contacted yet: a broker that is down
    /// at start only delays publishing, never the host.
    pub fn new(brokers: &str, partitions: i32) -> Result<Self, TransportError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            );
        Ok(Self {
            producer: RwLock::new(config.create()?),
            admin: config.create()?,
            config,
            partitions,
        })
    }

    /// Creates the topics that are missing.
    pub async fn ensure_topics(&self) -> Result<(), TransportError> {
        let topics: Vec<NewTopic<'_>> = TOPICS
            .iter()
            .map(|t| NewTopic::new(t, self.partitions, TopicReplication::Fixed(-1)))
            .collect();
        let results = self
            .admin
            .create_topics(
                &topics,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await?;
        for result in results {
            match result {
                Ok(topic) => {
                    tracing::info!(%topic, partitions = self.partitions, "kafka topic created")
                }
                Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    tracing::debug!(%topic, "kafka topic exists")
                }
                Err((topic, code)) => {
                    tracing::warn!(%topic, ?code, "creating a kafka topic failed");
                    return Err(TransportError::Kafka(rdkafka::error::KafkaError::AdminOp(
                        code,
                    )));
                }
            }
        }
        Ok(())
    }

    fn producer(&self) -> FutureProducer {
        self.producer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Starts over with a new producer (a new producer id, sequences from
    /// zero). After messages time out during an outage, an idempotent
    /// producer's sequence numbers have gaps that some brokers refuse for
    /// good; the relay offers the batch again through the new producer.
    fn renew(&self) {
        let fresh: FutureProducer = match self.config.create() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "creating a kafka producer failed");
                return;
            }
        };
        let old = std::mem::replace(
            &mut *self.producer.write().unwrap_or_else(|p| p.into_inner()),
            fresh,
        );
        old.purge(PurgeConfig::default().queue().inflight());
        // Destroying a client waits for its threads; not on an async worker.
        tokio::task::spawn_blocking(move || drop(old));
    }

    /// Sends every message of the batch, then waits for all acknowledgements.
    pub async fn publish(&self, batch: &[OutboxRecord]) -> Result<(), TransportError> {
        let result = self.send_all(batch).await;
        if result.is_err() {
            self.renew();
        }
        result
    }

    async fn send_all(&self, batch: &[OutboxRecord]) -> Result<(), TransportError> {
        let producer = self.producer();
        let mut pending = Vec::with_capacity(batch.len());
        for m in batch {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "event-id",
                    value: Some(m.id.as_str()),
                })
                .insert(Header {
                    key: "event-type",
                    value: Some(m.event_type.as_str()),
                })
                .insert(Header {
                    key: "schema-version",
                    value: Some(SCHEMA_VERSION),
                })
                .insert(Header {
                    key: "tenant-id",
                    value: Some(m.tenant_id.as_str()),
                })
                .insert(Header {
                    key: "content-type",
                    value: Some("application/json"),
                });
            let record = FutureRecord::to(&m.topic)
                .key(m.order_id.as_str())
                .payload(m.payload.as_str())
                .headers(headers);
            match producer.send_result(record) {
                Ok(delivery) => pending.push((m.id.clone(), delivery)),
                Err((error, _)) => {
                    return Err(TransportError::NotDelivered {
                        id: m.id.clone(),
                        error,
                    });
                }
            }
        }
        for (id, delivery) in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(TransportError::NotDelivered { id, error }),
                Err(_) => {
                    return Err(TransportError::NotDelivered {
                        id,
                        error: rdkafka::error::KafkaError::Canceled,
                    });
                }
            }
        }
        Ok(())
    }
}
