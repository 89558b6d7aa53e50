//! The Kafka watcher of `oms bench --kafka-brokers`: when each order's
//! `order.confirmed` reaches the topic, as an outside consumer sees it.

use anyhow::bail;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) type Seen = Arc<std::sync::Mutex<HashMap<String, Instant>>>;

/// Watches `oms.order-events.v1` as an outside consumer would, noting when
/// each order's `order.confirmed` arrives. Returns once it is assigned
/// partitions, so no event of the run is missed.
pub(crate) fn watch_confirmations(
    brokers: &str,
    seen: Seen,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("oms-bench-{}", oms_clock::monotonic_ulid()),
        )
        // From the start: "latest" resolves lazily and can skip the first events.
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        // Ask the broker to answer a fetch within 20 ms rather than librdkafka's
        // 500 ms default, so the figure is the pipeline's, not the poll interval's.
        .set("fetch.wait.max.ms", "20")
        .create()?;
    consumer.subscribe(&[oms_engine::TOPIC_ORDER_EVENTS])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.assignment().map_or(0, |a| a.count()) == 0 {
        if Instant::now() > deadline {
            bail!("the bench's Kafka consumer got no partitions within 30 s");
        }
        let _ = consumer.poll(Duration::from_millis(100));
    }
    Ok(std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let Some(Ok(event)) = m.payload().map(serde_json::from_slice::<Value>) else {
                continue;
            };
            if event["type"] == "order.confirmed"
                && let Some(id) = event["orderId"].as_str()
            {
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.to_string(), Instant::now());
            }
        }
    }))
}
