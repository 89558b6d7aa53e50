//! The dispatcher: each tenant's due work is read apart, as much as the
//! tenant has room for, so one tenant's backlog hides nobody else's; a
//! tenant's ended chain starts its next waiting saga.

use super::Harness;
use crate::runner;
use oms_store::SagaLog;
use serde_json::json;

/// More acme commands wait than a single oldest-first page of the sweep
/// held (512) and acme has no room to run any; globex's order, placed after
/// them all, still runs. Then acme's room comes back and its backlog drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_backlog_does_not_hide_anothers_work() {
    let h = Harness::new().await;
    let mut acme = Vec::new();
    for i in 0..520 {
        acme.push(h.place(&format!("c{i}"), "WIDGET-1", 1, "tok_visa").await);
    }
    // Every slot of acme's share is taken, as by its own running sagas.
    let held = runner::tenant_share(&h.p, "acme")
        .acquire_many_owned(runner::TENANT_SLOTS)
        .await
        .unwrap();
    let items = json!([{ "sku": "WIDGET-1", "quantity": 1, "unitPrice": 1999 }]);
    let globex = h.place_as("globex", "g1", items, "tok_visa").await;
    let dispatcher = tokio::spawn(runner::run(h.p.clone()));

    let order = h.settled_as("globex", &globex).await;
    assert_eq!(order.saga_status, "COMPLETED");
    assert_eq!(
        h.store.pending_commands().await.unwrap(),
        520,
        "acme had no room: none of its sagas started"
    );

    drop(held);
    for id in &acme {
        h.settled(id).await;
    }
    assert_eq!(h.store.pending_commands().await.unwrap(), 0);
    dispatcher.abort();
}
