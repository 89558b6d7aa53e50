//! The saga command consumer's Kafka side: one consumer group across all
//! hosts, decoding of command messages, and offsets that are committed only
//! up to the oldest message still being worked on, so a message is never
//! committed before the database commit that applied it.

use crate::transport::dlq::Poison;
use crate::transport::kafka::KafkaTransport;
use crate::transport::topics::{SAGA_COMMAND, TOPIC_SAGA_COMMANDS};
use oms_store::CommandRecord;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// Consumer group of all hosts running sagas.
pub const GROUP: &str = "oms-saga";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    event_id: String,
    tenant_id: String,
    order_id: String,
    data: Data,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    action: serde_json::Value,
    available_at: i64,
}

pub fn header<'a>(m: &'a OwnedMessage, key: &str) -> Option<&'a str> {
    m.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| std::str::from_utf8(h.value?).ok())
}

/// Reads a command message; what cannot be read is poison.
pub fn decode(m: &OwnedMessage) -> Result<CommandRecord, Poison> {
    match header(m, "event-type") {
        Some(SAGA_COMMAND) => {}
        other => {
            return Err(Poison::new(
                "UNKNOWN_TYPE",
                format!("event-type {other:?} is not {SAGA_COMMAND}"),
            ));
        }
    }
    match header(m, "schema-version") {
        Some(crate::transport::kafka::SCHEMA_VERSION) => {}
        other => {
            return Err(Poison::new(
                "UNKNOWN_SCHEMA_VERSION",
                format!(
                    "schema-version {other:?}; this host reads {}",
                    crate::transport::kafka::SCHEMA_VERSION
                ),
            ));
        }
    }
    let payload = m.payload().unwrap_or_default();
    let e: Envelope = serde_json::from_slice(payload)
        .map_err(|err| Poison::new("UNDECODABLE", format!("payload: {err}")))?;
    let action = serde_json::from_value::<oms_saga::Action>(e.data.action.clone())
        .map_err(|err| Poison::new("UNDECODABLE", format!("action: {err}")))?;
    if !matches!(
        action,
        oms_saga::Action::RunStep { .. }
            | oms_saga::Action::RunCompensation { .. }
            | oms_saga::Action::AwaitFulfilment { .. }
            | oms_saga::Action::RunRefund { .. }
    ) {
        return Err(Poison::new(
            "UNKNOWN_TYPE",
            "the action is not a step, a compensation or a timer",
        ));
    }
    Ok(CommandRecord {
        id: e.event_id,
        tenant_id: e.tenant_id,
        order_id: e.order_id,
        action: e.data.action.to_string(),
        available_at: e.data.available_at,
    })
}

/// Per partition: offsets being worked on, and the next offset after the
/// highest seen. The committable offset is the oldest unfinished one, or the
/// next one when none is unfinished.
#[derive(Default)]
pub struct Offsets {
    parts: HashMap<i32, Part>,
}

#[derive(Default)]
struct Part {
    generation: u64,
    pending: BTreeSet<i64>,
    next: i64,
}

/// Which assignment of its partition a message was taken under.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    pub partition: i32,
    pub offset: i64,
    generation: u64,
}

impl Offsets {
    pub fn begin(&mut self, partition: i32, offset: i64) -> Ticket {
        let part = self.parts.entry(partition).or_default();
        part.pending.insert(offset);
        part.next = part.next.max(offset + 1);
        Ticket {
            partition,
            offset,
            generation: part.generation,
        }
    }

    /// The offset to commit now, if finishing `t` moved it.
    pub fn finish(&mut self, t: Ticket) -> Option<i64> {
        let part = self.parts.get_mut(&t.partition)?;
        if part.generation != t.generation {
            // Taken under an earlier assignment: whoever holds the partition
            // now commits it, after redelivery finds the command applied.
            return None;
        }
        let oldest = part.pending.first().copied();
        part.pending.remove(&t.offset);
        (oldest == Some(t.offset)).then(|| part.pending.first().copied().unwrap_or(part.next))
    }

    /// The partition was revoked or assigned afresh: forget its messages.
    pub fn reset(&mut self, partition: i32) {
        let part = self.parts.entry(partition).or_default();
        part.generation += 1;
        part.pending.clear();
        part.next = 0;
    }
}

/// Hears rebalances: tells the transport which orders this host now owns,
/// and starts offset tracking afresh for moved partitions.
pub struct Context {
    pub kafka: Arc<KafkaTransport>,
    pub offsets: Arc<Mutex<Offsets>>,
    pub on_rebalance: Box<dyn Fn() + Send + Sync>,
}

impl Context {
    pub fn offsets(&self) -> MutexGuard<'_, Offsets> {
        self.offsets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClientContext for Context {
    /// librdkafka's statistics (every `statistics.interval.ms`): the
    /// messages this host's partitions hold beyond what it has consumed.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let lag: i64 = statistics
            .topics
            .get(TOPIC_SAGA_COMMANDS)
            .map(|t| {
                t.partitions
                    .values()
                    // -1: a partition this host does not consume.
                    .map(|p| p.consumer_lag.max(0))
                    .sum()
            })
            .unwrap_or(0);
        metrics::gauge!("oms_consumer_lag").set(lag as f64);
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = |tpl: &TopicPartitionList| -> Vec<i32> {
            tpl.elements_for_topic(TOPIC_SAGA_COMMANDS)
                .iter()
                .map(|e| e.partition())
                .collect()
        };
        let (assigned, revoked) = match rebalance {
            Rebalance::Assign(tpl) => (partitions(tpl), vec![]),
            Rebalance::Revoke(tpl) => (vec![], partitions(tpl)),
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "consumer group rebalance failed");
                return;
            }
        };
        {
            let mut offsets = self.offsets();
            for p in assigned.iter().chain(&revoked) {
                offsets.reset(*p);
            }
        }
        self.kafka.set_owned(&assigned, &revoked);
        (self.on_rebalance)();
        tracing::info!(?assigned, ?revoked, "saga command partitions moved");
    }
}

pub type CommandConsumer = StreamConsumer<Context>;

/// Joins the hosts' consumer group on the command topic.
pub fn consumer(
    kafka: &KafkaTransport,
    context: Context,
) -> Result<CommandConsumer, crate::transport::TransportError> {
    let consumer: CommandConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.brokers())
        .set("group.id", GROUP)
        .set("client.id", format!("oms-{}", std::process::id()))
        // Offsets are stored by hand once a command is committed to the
        // database, and committed from there in the background.
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "200")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // A host that dies loses its partitions within seconds.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        // Most steps run on the host that committed the one before (it owns
        // the order's partition); the topic carries first steps and recovery.
        .set("fetch.wait.max.ms", "25")
        // For the consumer lag gauge (`stats`).
        .set("statistics.interval.ms", "5000")
        .create_with_context(context)?;
    consumer.subscribe(&[TOPIC_SAGA_COMMANDS])?;
    Ok(consumer)
}

/// Commits the stored offsets now, waiting for the broker's answer.
pub fn commit_now(consumer: &CommandConsumer) -> rdkafka::error::KafkaResult<()> {
    consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
}

/// Stores `next` as the partition's offset to commit.
pub fn store(consumer: &CommandConsumer, partition: i32, next: i64) {
    let mut tpl = TopicPartitionList::new();
    if tpl
        .add_partition_offset(TOPIC_SAGA_COMMANDS, partition, Offset::Offset(next))
        .is_ok()
        && let Err(e) = consumer.store_offsets(&tpl)
    {
        // The partition moved meanwhile; its new owner commits it.
        tracing::info!(partition, error = %e, "storing a consumer offset failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_offset_never_passes_an_unfinished_message() {
        let mut o = Offsets::default();
        let a = o.begin(0, 10);
        let b = o.begin(0, 11);
        let c = o.begin(0, 12);
        assert_eq!(o.finish(b), None, "10 is still running");
        assert_eq!(o.finish(a), Some(12), "10 and 11 are done");
        assert_eq!(o.finish(c), Some(13));
    }

    #[test]
    fn messages_from_before_a_rebalance_commit_nothing() {
        let mut o = Offsets::default();
        let old = o.begin(3, 5);
        o.reset(3);
        let new = o.begin(3, 5);
        assert_eq!(o.finish(old), None);
        assert_eq!(o.finish(new), Some(6));
    }
}
