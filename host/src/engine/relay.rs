//! The outbox relay: hands committed messages to the transport in commit
//! order, marks them published, and prunes old ones so the table stays
//! small. At-least-once: a crash between publish and mark publishes again,
//! and every message carries its `eventId` for consumers to deduplicate.

use super::Platform;
use crate::store::OutboxRecord;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::broadcast;

const BATCH: i64 = 500;
const KEEP_PUBLISHED_MS: i64 = 60_000;

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

pub(crate) async fn run(p: Arc<Platform>) {
    let mut last_prune = 0i64;
    loop {
        match p.store.unpublished(BATCH).await {
            Ok(batch) => {
                let ids: Vec<String> = batch.iter().map(|m| m.id.clone()).collect();
                let n = batch.len();
                for message in batch {
                    tracing::debug!(topic = %message.topic, event = %message.event_type, order = %message.order_id, "publish");
                    p.transport.publish(message);
                }
                if !ids.is_empty() {
                    match p.store.mark_published(&ids, crate::now_ms()).await {
                        Ok(()) => {
                            p.metrics
                                .outbox_published_total
                                .fetch_add(ids.len() as u64, Ordering::Relaxed);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "marking outbox messages published failed")
                        }
                    }
                }
                if n as i64 == BATCH {
                    continue;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the outbox failed"),
        }
        let now = crate::now_ms();
        if now - last_prune > 10_000 {
            last_prune = now;
            if let Err(e) = p.store.prune_published(now - KEEP_PUBLISHED_MS).await {
                tracing::warn!(error = %e, "pruning the outbox failed");
            }
        }
        tokio::select! {
            _ = p.outbox_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        // Gather what commits in the next moment into one batch: one read and
        // one write per batch instead of per message.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
