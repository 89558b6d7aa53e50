//! Kafka through rdkafka: an idempotent producer (acks=all, retries without
//! duplicates or reordering within a partition), each message keyed by its
//! order id so one order's events stay in order on one partition, with the
//! envelope's identity in headers for consumers that route without parsing.

use super::topics::TOPIC_SAGA_COMMANDS;
use super::{TOPICS, TransportError};
use oms_store::OutboxRecord;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, PurgeConfig};
use rdkafka::types::RDKafkaErrorCode;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// How long librdkafka keeps retrying one message before the relay hears
/// it failed and tries the batch again later (the outbox keeps it meanwhile).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct KafkaTransport {
    config: ClientConfig,
    producer: RwLock<FutureProducer>,
    admin: AdminClient<DefaultClientContext>,
    partitions: i32,
    /// Partitions of the command topic as the broker has it; 0 until known.
    command_partitions: AtomicI32,
    /// Command-topic partitions this host's consumer holds.
    owned: RwLock<HashSet<i32>>,
    brokers: String,
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
            command_partitions: AtomicI32::new(0),
            owned: RwLock::default(),
            brokers: brokers.into(),
        })
    }

    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// The command-topic partition of `order`. Chosen by the host, not by
    /// librdkafka, so a host can tell which orders its partitions hold.
    pub fn partition_for(&self, order: &str) -> Option<i32> {
        let n = self.command_partitions.load(Ordering::Acquire);
        (n > 0).then(|| {
            let h = Sha256::digest(order.as_bytes());
            (u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % n as u32) as i32
        })
    }

    pub fn owns(&self, order: &str) -> bool {
        self.partition_for(order).is_some_and(|p| {
            self.owned
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&p)
        })
    }

    pub fn owned_count(&self) -> usize {
        self.owned.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Called by the consumer on each rebalance.
    pub fn set_owned(&self, assigned: &[i32], revoked: &[i32]) {
        let mut owned = self.owned.write().unwrap_or_else(|e| e.into_inner());
        for p in revoked {
            owned.remove(p);
        }
        owned.extend(assigned.iter().copied());
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
        // The command topic may have been created by an operator with
        // another partition count: ask the broker.
        let producer = self.producer();
        let metadata = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(TOPIC_SAGA_COMMANDS), Duration::from_secs(10))
        })
        .await
        .map_err(|_| TransportError::NotReady)??;
        let n = metadata
            .topics()
            .iter()
            .find(|t| t.name() == TOPIC_SAGA_COMMANDS)
            .map_or(0, |t| t.partitions().len() as i32);
        if n == 0 {
            return Err(TransportError::NotReady);
        }
        self.command_partitions.store(n, Ordering::Release);
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
        if matches!(result, Err(TransportError::NotDelivered { .. })) {
            self.renew();
        }
        result
    }

    /// Sends one record and waits for the broker to take it.
    pub(crate) async fn send_one<K, P>(
        &self,
        record: FutureRecord<'_, K, P>,
    ) -> Result<(), TransportError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        self.producer()
            .send(record, DELIVERY_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(error, _)| TransportError::NotDelivered {
                id: "dead letter".into(),
                error,
            })
    }

    async fn send_all(&self, batch: &[OutboxRecord]) -> Result<(), TransportError> {
        let producer = self.producer();
        if self.command_partitions.load(Ordering::Acquire) == 0 {
            return Err(TransportError::NotReady);
        }
        let mut pending = Vec::with_capacity(batch.len());
        for m in batch {
            // A span per message, in the trace of the transition that wrote
            // it; its context is the message's `traceparent`, so a consumer
            // on any host continues the trace.
            let span = tracing::info_span!(
                "outbox.publish",
                otel.name = %format!("publish {}", m.topic),
                otel.kind = "producer",
                messaging.system = "kafka",
                messaging.destination.name = %m.topic,
                messaging.message.id = %m.id,
                order_id = %m.order_id,
            );
            oms_trace::continue_from(&span, m.trace_parent.as_deref());
            let traceparent = oms_trace::of(&span)
                .or_else(|| m.trace_parent.clone())
                .unwrap_or_else(|| traceparent(&m.order_id, &m.id));
            let _entered = span.enter();
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
                })
                .insert(Header {
                    key: "traceparent",
                    value: Some(traceparent.as_str()),
                });
            let mut record = FutureRecord::to(&m.topic)
                .key(m.order_id.as_str())
                .payload(m.payload.as_str())
                .headers(headers);
            if m.topic == TOPIC_SAGA_COMMANDS {
                record = record.partition(self.partition_for(&m.order_id).unwrap_or(0));
            }
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

/// W3C trace context for a message written where no trace is exported: one
/// trace per order (its id derived from the order id, so consumers can still
/// group an order's messages), one span per message.
pub fn traceparent(order: &str, message: &str) -> String {
    let trace = Sha256::digest(order.as_bytes());
    let span = Sha256::digest(message.as_bytes());
    format!(
        "00-{}-{}-01",
        hex::encode(&trace[..16]),
        hex::encode(&span[..8])
    )
}
