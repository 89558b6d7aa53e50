//! The outbox relay: claims committed messages in batches, hands them to the
//! transport, and deletes them once the transport has them. Woken by commits
//! (in this process, and on PostgreSQL by `LISTEN oms_outbox` for every
//! host's commits) rather than by tight polling. At-least-once: a crash
//! between publish and delete publishes again, and every message carries its
//! id for consumers to deduplicate.

use super::Platform;
use super::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const BATCH: i64 = 500;
/// Longest sleep without a wake-up: the safety net if a notification is lost.
const IDLE_MS: i64 = 1_000;
/// Backoff while the transport or database refuses: full jitter, doubling up
/// to the cap, so many hosts coming back from an outage do not retry in
/// lockstep.
const BACKOFF_BASE_MS: u64 = 100;
const BACKOFF_CAP_MS: u64 = 5_000;

/// The engine's retry pause while a dependency refuses (also the runner's
/// and the consumer's): the platform's one backoff with these bounds.
pub(crate) fn backoff(failures: u32) -> Duration {
    oms_clock::backoff(failures, BACKOFF_BASE_MS, BACKOFF_CAP_MS)
}

/// Publishes every message due now, batch by batch, until none is left:
/// the relay's last act when the host stops. The number published.
pub(crate) async fn flush(p: &Platform) -> Result<usize, FlushError> {
    let mut published = 0;
    loop {
        let claim = p.store.claim_outbox(oms_clock::now_ms(), BATCH).await?;
        let n = claim.records.len();
        if n == 0 {
            return Ok(published);
        }
        if let Err(e) = p.transport.publish(&claim.records).await {
            if let Err(e) = p.store.release(claim).await {
                tracing::warn!(error = %e, "releasing outbox messages failed");
            }
            return Err(FlushError::Transport(e.to_string()));
        }
        p.store.complete(claim, oms_clock::now_ms()).await?;
        p.metrics
            .outbox_published_total
            .fetch_add(n as u64, Ordering::Relaxed);
        published += n;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error("the store: {0}")]
    Store(#[from] oms_store::StoreError),
    #[error("the transport: {0}")]
    Transport(String),
}

pub(crate) async fn run(p: Arc<Platform>) {
    tokio::spawn(listen(p.clone()));
    let mut failures = 0u32;
    loop {
        let now = oms_clock::now_ms();
        match p.store.claim_outbox(now, BATCH).await {
            Ok(claim) => {
                let n = claim.records.len();
                if n > 0 {
                    if let Err(e) = p.transport.publish(&claim.records).await {
                        // Released unpublished: the batch is offered again, and
                        // consumers drop what they already had by its id.
                        if let Err(e) = p.store.release(claim).await {
                            tracing::warn!(error = %e, "releasing outbox messages failed");
                        }
                        Metrics::inc(&p.metrics.outbox_publish_failures_total);
                        failures = failures.saturating_add(1);
                        let wait = backoff(failures);
                        tracing::warn!(transport = p.transport.name(), error = %e, pending = n, retry_in_ms = wait.as_millis() as u64, "publishing the outbox failed");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    if failures > 0 {
                        tracing::info!(
                            transport = p.transport.name(),
                            "publishing the outbox again"
                        );
                        failures = 0;
                    }
                    match p.store.complete(claim, oms_clock::now_ms()).await {
                        Ok(()) => {
                            p.metrics
                                .outbox_published_total
                                .fetch_add(n as u64, Ordering::Relaxed);
                            // Their webhook deliveries, if any, are due now.
                            p.webhook_wake.notify_one();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "removing published outbox messages failed; they will be published again")
                        }
                    }
                    if n as i64 == BATCH {
                        continue;
                    }
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = backoff(failures);
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "claiming outbox messages failed");
                tokio::time::sleep(wait).await;
                continue;
            }
        }
        // Sleep until a commit wakes us or the next delayed message is due.
        let wait = match p.store.next_outbox_due(now).await {
            Ok(Some(at)) => (at - oms_clock::now_ms()).clamp(1, IDLE_MS),
            _ => IDLE_MS,
        };
        tokio::select! {
            _ = p.outbox_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
        }
        // Gather what commits in the next moment into one batch: one claim
        // and one delete per batch instead of per message.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Turns PostgreSQL notifications of outbox inserts (any host's) into
/// wake-ups. The listener reconnects by itself after a database restart.
async fn listen(p: Arc<Platform>) {
    let mut listener = loop {
        match p.store.outbox_listener().await {
            Ok(Some(l)) => break l,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "listening for outbox commits failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        match listener.recv().await {
            Ok(_) => p.outbox_wake.notify_one(),
            Err(e) => {
                tracing::warn!(error = %e, "outbox notifications interrupted; reconnecting");
                // Whatever was committed meanwhile is found by this sweep.
                p.outbox_wake.notify_one();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
