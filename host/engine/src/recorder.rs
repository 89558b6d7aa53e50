//! Records production plugin calls for replay without slowing the saga:
//! calls go into a bounded queue and a background task writes them in
//! batches. When the queue is full a call is counted and not recorded; the
//! order it belongs to is never held up for it.

use super::Platform;
use super::metrics::Metrics;
use oms_store::RecordedCall;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;

const QUEUE: usize = 8_192;
const BATCH: usize = 256;
/// Calls kept per tenant and slot; older ones are pruned.
pub const KEEP_PER_SLOT: i64 = 10_000;
const PRUNE_EVERY: Duration = Duration::from_secs(30);

pub struct Recorder {
    tx: mpsc::Sender<RecordedCall>,
    rx: Mutex<Option<mpsc::Receiver<RecordedCall>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl Recorder {
    pub fn record(&self, metrics: &Metrics, call: RecordedCall) {
        match self.tx.try_send(call) {
            Ok(()) => Metrics::inc(&metrics.plugin_calls_recorded_total),
            Err(_) => Metrics::inc(&metrics.plugin_calls_unrecorded_total),
        }
    }
}

pub(crate) async fn run(p: Arc<Platform>) {
    let Some(mut rx) = p
        .recorder
        .rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    else {
        return;
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    return;
                }
                if let Err(e) = p.store.record_calls(&batch).await {
                    tracing::warn!(error = %e, calls = batch.len(), "recording plugin calls failed");
                }
                batch.clear();
            }
            _ = prune.tick() => {
                if let Err(e) = p.store.prune_recorded_calls(KEEP_PER_SLOT).await {
                    tracing::warn!(error = %e, "pruning recorded plugin calls failed");
                }
            }
        }
    }
}
