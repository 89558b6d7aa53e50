//! Hands out each tenant's order numbers, 1, 2, 3, … in the order requests
//! ask for them. The counter is in the database (so hosts sharing it never
//! hand out a number twice), and requests that ask at the same moment share
//! one allocation: while one is being written, the next requests queue, and
//! the queue is served by the next single statement (group allocation, as
//! group commit does for writes), so numbering costs one statement per
//! burst, not per order. A number is lost only if its order then fails to
//! be written (a crash, a database error): numbers increase, with rare gaps.

use oms_domain::TenantId;
use oms_store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

type Waiter = oneshot::Sender<Result<i64, StoreError>>;

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiter>,
    /// An allocation is being written; whoever comes now waits for the next.
    busy: bool,
}

#[derive(Default)]
pub(crate) struct OrderNumbers {
    queues: Mutex<HashMap<TenantId, Queue>>,
}

impl OrderNumbers {
    /// The next number of `tenant`.
    pub(crate) async fn next(
        self: &Arc<Self>,
        store: &Arc<dyn Store>,
        tenant: &TenantId,
    ) -> Result<i64, StoreError> {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            let q = queues.entry(tenant.clone()).or_default();
            q.waiting.push(tx);
            !std::mem::replace(&mut q.busy, true)
        };
        if lead {
            // Its own task: the requests it serves do not wait on each other.
            tokio::spawn(drain(self.clone(), store.clone(), tenant.clone()));
        }
        rx.await.map_err(|_| {
            StoreError::Unavailable("the order number allocation was dropped".into())
        })?
    }
}

/// Serves `tenant`'s queue, one allocation per batch, until it is empty.
async fn drain(numbers: Arc<OrderNumbers>, store: Arc<dyn Store>, tenant: TenantId) {
    loop {
        let batch = {
            let mut queues = numbers.queues.lock().unwrap_or_else(|p| p.into_inner());
            let q = queues.entry(tenant.clone()).or_default();
            if q.waiting.is_empty() {
                q.busy = false;
                return;
            }
            std::mem::take(&mut q.waiting)
        };
        let count = batch.len() as i64;
        match store.allocate_order_numbers(&tenant, count).await {
            Ok(first) => {
                for (i, waiter) in batch.into_iter().enumerate() {
                    // A request that gave up meanwhile leaves a gap.
                    let _ = waiter.send(Ok(first + i as i64));
                }
            }
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "allocating order numbers failed");
                for waiter in batch {
                    let _ = waiter.send(Err(StoreError::Unavailable(e.to_string())));
                }
            }
        }
    }
}
