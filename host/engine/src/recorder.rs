//! Records production plugin calls for replay without slowing the saga:
//! calls go into a bounded queue and a background task writes them in
//! batches. When the queue is full a call is counted and not recorded; the
//! order it belongs to is never held up for it.

use super::Platform;
use super::metrics::Metrics;
use oms_store::RecordedCall;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;

const QUEUE: usize = 8_192;
/// Calls recorded per tenant and slot in one second, at most: a sample
/// under load. At 1,000 orders/s every call recorded was 3,000 rows a
/// second written and, the newest 10,000 per slot kept, as many deleted,
/// which cost more than the calls were worth to replay (the kept ones
/// spanned seconds); with this they span minutes.
pub const RECORDED_PER_SLOT_PER_SECOND: u32 = 50;
const BATCH: usize = 256;
/// Calls kept per tenant and slot; older ones are pruned.
pub const KEEP_PER_SLOT: i64 = 10_000;
/// Often, so each pruning has little to delete: at most 250 calls per
/// tenant and slot every 5 s (`RECORDED_PER_SLOT_PER_SECOND`), in short
/// statements the saga writes go between.
const PRUNE_EVERY: Duration = Duration::from_secs(5);

pub struct Recorder {
    tx: mpsc::Sender<RecordedCall>,
    rx: Mutex<Option<mpsc::Receiver<RecordedCall>>>,
    /// Per tenant, per slot: the second (since the epoch) calls were last
    /// recorded in, and how many were.
    seconds: Mutex<HashMap<String, HashMap<String, Second>>>,
}

/// A second (since the epoch) and the calls of a slot recorded in it.
type Second = (i64, u32);

impl Default for Recorder {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            seconds: Mutex::default(),
        }
    }
}

impl Recorder {
    /// Whether a call of `tenant`'s `slot` made at `now_ms` is recorded:
    /// the first [`RECORDED_PER_SLOT_PER_SECOND`] of each second are. One
    /// that is not is counted in `oms_plugin_calls_unsampled_total`.
    pub fn admit(&self, metrics: &Metrics, tenant: &str, slot: &str, now_ms: i64) -> bool {
        let second = now_ms.div_euclid(1000);
        let mut seconds = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        let slots = match seconds.get_mut(tenant) {
            Some(slots) => slots,
            None => seconds.entry(tenant.to_string()).or_default(),
        };
        let seen = match slots.get_mut(slot) {
            Some(seen) => seen,
            None => slots.entry(slot.to_string()).or_insert((second, 0)),
        };
        if seen.0 != second {
            *seen = (second, 0);
        }
        if seen.1 >= RECORDED_PER_SLOT_PER_SECOND {
            Metrics::inc(&metrics.plugin_calls_unsampled_total);
            return false;
        }
        seen.1 += 1;
        true
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// Each tenant's slot records its first calls of each second; the
    /// rest are counted, not recorded.
    #[test]
    fn a_slot_records_its_first_calls_of_each_second() {
        let recorder = Recorder::default();
        let metrics = Metrics::default();
        let admitted = (0..80)
            .filter(|_| recorder.admit(&metrics, "acme", "guardrail", 5_000))
            .count();
        assert_eq!(admitted, RECORDED_PER_SLOT_PER_SECOND as usize);
        assert_eq!(
            metrics.plugin_calls_unsampled_total.load(Ordering::Relaxed),
            80 - u64::from(RECORDED_PER_SLOT_PER_SECOND)
        );
        assert!(!recorder.admit(&metrics, "acme", "guardrail", 5_999));
        assert!(recorder.admit(&metrics, "acme", "fraud-check", 5_999));
        assert!(recorder.admit(&metrics, "globex", "guardrail", 5_999));
        assert!(recorder.admit(&metrics, "acme", "guardrail", 6_000));
    }
}
