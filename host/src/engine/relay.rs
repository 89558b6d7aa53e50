//! The outbox relay: hands committed messages to the transport in commit
//! order, marks them published, and prunes old ones so the table stays
//! small. At-least-once: a crash between publish and mark publishes again,
//! and every message carries its `eventId` for consumers to deduplicate.

use super::Platform;
use super::metrics::Metrics;
use rand::Rng;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const BATCH: i64 = 500;
const KEEP_PUBLISHED_MS: i64 = 60_000;
/// Backoff while the transport refuses: full jitter, doubling up to the cap,
/// so many hosts coming back from a broker outage do not publish in lockstep.
const BACKOFF_BASE_MS: u64 = 100;
const BACKOFF_CAP_MS: u64 = 5_000;

pub(crate) async fn run(p: Arc<Platform>) {
    let mut last_prune = 0i64;
    let mut failures = 0u32;
    loop {
        match p.store.unpublished(BATCH).await {
            Ok(batch) => {
                let ids: Vec<String> = batch.iter().map(|m| m.id.clone()).collect();
                let n = batch.len();
                if let Err(e) = p.transport.publish(&batch).await {
                    // Nothing is marked: the whole batch is offered again, and
                    // consumers drop what they already had by its event id.
                    Metrics::inc(&p.metrics.outbox_publish_failures_total);
                    failures = failures.saturating_add(1);
                    let cap = (BACKOFF_BASE_MS << failures.min(6)).min(BACKOFF_CAP_MS);
                    let wait = rand::rng().random_range(BACKOFF_BASE_MS..=cap.max(BACKOFF_BASE_MS));
                    tracing::warn!(transport = p.transport.name(), error = %e, pending = n, retry_in_ms = wait, "publishing the outbox failed");
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    continue;
                }
                if failures > 0 {
                    tracing::info!(
                        transport = p.transport.name(),
                        "publishing the outbox again"
                    );
                    failures = 0;
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
