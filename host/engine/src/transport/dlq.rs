//! The dead-letter topic: command messages no host could read go there with
//! their origin and the error, so the consumer moves on and nothing is
//! lost. Operators list them and send them back to where they came from
//! (`oms dlq list|replay`) once a fix is deployed. Replaying twice is
//! harmless: a command applies once, by its id.

use super::TransportError;
use super::kafka::KafkaTransport;
use super::topics::TOPIC_SAGA_COMMANDS_DLQ;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Why a message cannot be carried out, with a stable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    pub code: &'static str,
    pub error: String,
}

impl Poison {
    pub fn new(code: &'static str, error: impl Into<String>) -> Self {
        Self {
            code,
            error: error.into(),
        }
    }
}

const ORIGIN_TOPIC: &str = "dlq-origin-topic";
const ORIGIN_PARTITION: &str = "dlq-origin-partition";
const ORIGIN_OFFSET: &str = "dlq-origin-offset";
const ERROR_CODE: &str = "dlq-error-code";
const ERROR: &str = "dlq-error";
const DEAD_AT: &str = "dlq-at";
/// Set on a replayed message: the dead letter it came from.
pub const REPLAYED_FROM: &str = "dlq-replayed-from";

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// `PARTITION:OFFSET` in the dead-letter topic; what `replay` takes.
    pub id: String,
    pub origin_topic: String,
    pub origin_partition: i32,
    pub origin_offset: i64,
    pub error_code: String,
    pub error: String,
    pub dead_at: i64,
    pub key: Option<String>,
    /// The original message's headers.
    pub headers: Vec<(String, String)>,
    /// The original payload, as text where it is UTF-8.
    pub payload: String,
    #[serde(skip)]
    raw: Vec<u8>,
}

fn headers_of(m: &OwnedMessage) -> Vec<(String, String)> {
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_string(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn build_headers<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> OwnedHeaders {
    pairs.fold(OwnedHeaders::new(), |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(value),
        })
    })
}

impl KafkaTransport {
    /// Sends `m` to the dead-letter topic with its origin and `poison`;
    /// `Ok` once the broker has it.
    pub async fn dead_letter(
        &self,
        m: &OwnedMessage,
        poison: &Poison,
    ) -> Result<(), TransportError> {
        let original = headers_of(m);
        let extra = [
            (ORIGIN_TOPIC, m.topic().to_string()),
            (ORIGIN_PARTITION, m.partition().to_string()),
            (ORIGIN_OFFSET, m.offset().to_string()),
            (ERROR_CODE, poison.code.to_string()),
            (ERROR, poison.error.clone()),
            (DEAD_AT, oms_clock::now_ms().to_string()),
        ];
        let headers = build_headers(
            original
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .chain(extra.iter().map(|(k, v)| (*k, v.as_str()))),
        );
        let mut record = FutureRecord::<[u8], [u8]>::to(TOPIC_SAGA_COMMANDS_DLQ).headers(headers);
        if let Some(key) = m.key() {
            record = record.key(key);
        }
        if let Some(payload) = m.payload() {
            record = record.payload(payload);
        }
        self.send_one(record).await
    }
}

fn client(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config
}

/// Every dead letter, oldest first per partition. Blocking.
pub fn read_all(brokers: &str) -> Result<Vec<DeadLetter>, TransportError> {
    let consumer: BaseConsumer = client(brokers)
        .set("group.id", format!("oms-dlq-reader-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(TOPIC_SAGA_COMMANDS_DLQ), timeout)?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0usize;
    let mut ends = std::collections::HashMap::new();
    for topic in metadata.topics() {
        for p in topic.partitions() {
            let (low, high) =
                consumer.fetch_watermarks(TOPIC_SAGA_COMMANDS_DLQ, p.id(), timeout)?;
            if high > low {
                tpl.add_partition_offset(TOPIC_SAGA_COMMANDS_DLQ, p.id(), Offset::Offset(low))?;
                ends.insert(p.id(), high);
                remaining += 1;
            }
        }
    }
    let mut letters = Vec::new();
    if remaining == 0 {
        return Ok(letters);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while remaining > 0 && Instant::now() < deadline {
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = result?.detach();
        let all = headers_of(&m);
        let get = |k: &str| {
            all.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        letters.push(DeadLetter {
            id: format!("{}:{}", m.partition(), m.offset()),
            origin_topic: get(ORIGIN_TOPIC),
            origin_partition: get(ORIGIN_PARTITION).parse().unwrap_or(-1),
            origin_offset: get(ORIGIN_OFFSET).parse().unwrap_or(-1),
            error_code: get(ERROR_CODE),
            error: get(ERROR),
            dead_at: get(DEAD_AT).parse().unwrap_or(0),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            headers: all
                .iter()
                .filter(|(k, _)| !k.starts_with("dlq-") || k == REPLAYED_FROM)
                .cloned()
                .collect(),
            payload: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            raw: m.payload().unwrap_or_default().to_vec(),
        });
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            remaining -= 1;
        }
    }
    letters.sort_by_key(|l| l.dead_at);
    Ok(letters)
}

/// Sends each dead letter back to its origin topic, as it first arrived
/// plus a `dlq-replayed-from` header. Returns how many went.
pub async fn replay(brokers: &str, letters: &[DeadLetter]) -> Result<usize, TransportError> {
    let producer: FutureProducer = client(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    for l in letters {
        let headers = build_headers(
            l.headers
                .iter()
                .filter(|(k, _)| k != REPLAYED_FROM)
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .chain(std::iter::once((REPLAYED_FROM, l.id.as_str()))),
        );
        let mut record = FutureRecord::<str, [u8]>::to(&l.origin_topic)
            .headers(headers)
            .payload(&l.raw);
        if let Some(key) = &l.key {
            record = record.key(key.as_str());
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(error, _)| TransportError::NotDelivered {
                id: l.id.clone(),
                error,
            })?;
    }
    Ok(letters.len())
}
