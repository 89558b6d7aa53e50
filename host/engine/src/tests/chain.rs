//! The runner's one chain loop: a command and the saga's next ones carried
//! out by one task; duplicates dropped; failed reads left for later or
//! retried in place; a lost race decided again on the state that won.

use super::{Harness, until};
use crate::runner::{self, deliver, process, run_ahead, submit};
use oms_domain::{Sku, WarehouseId};
use oms_store::{Inventory, Orders, SagaLog};
use std::sync::atomic::Ordering;

fn count(m: &std::sync::atomic::AtomicU64) -> u64 {
    m.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_submitted_command_carries_the_whole_saga() {
    let h = Harness::new().await;
    let id = h.place("c1", "WIDGET-1", 2, "tok_visa").await;
    let cmd = h.command(&id).await;
    // No dispatcher runs: only the chain can carry the saga past its first step.
    assert!(submit(&h.p, cmd.clone(), None));
    let order = h.settled(&id).await;
    assert_eq!(
        (order.saga_status.as_str(), order.status.as_str()),
        ("COMPLETED", "CONFIRMED")
    );
    assert_eq!(
        h.ledger(&id),
        [
            ("authorize".into(), "succeeded".into()),
            ("capture".into(), "succeeded".into())
        ]
    );
    let history = h.history(&id).await;
    assert_eq!(
        history.iter().filter(|e| *e == "step.succeeded").count(),
        h.tenant().definition.steps().len(),
        "{history:?}"
    );
    assert_eq!(h.store.pending_commands().await.unwrap(), 0);
    let stock = h
        .store
        .stock(&h.acme(), &Sku::parse("WIDGET-1").unwrap())
        .await
        .unwrap();
    assert_eq!(stock.iter().map(|s| s.reserved).sum::<i64>(), 2);
    until("the chain lets go of the order", || runner::idle(&h.p)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_applied_before_is_dropped_as_a_duplicate() {
    let h = Harness::new().await;
    let id = h.place("c1", "WIDGET-1", 1, "tok_visa").await;
    let cmd = h.command(&id).await;
    let (done, follow) = process(&h.p, &cmd, None).await;
    assert!(done && follow.is_some());
    let version = h.order(&id).await.version;
    let (done, follow) = process(&h.p, &cmd, None).await;
    assert!(done && follow.is_none());
    assert_eq!(count(&h.p.metrics.duplicate_deliveries_total), 1);
    assert_eq!(h.order(&id).await.version, version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_read_leaves_the_command_for_a_later_try() {
    let h = Harness::new().await;
    let id = h.place("c1", "WIDGET-1", 1, "tok_visa").await;
    let cmd = h.command(&id).await;
    let before = h.order(&id).await.version;
    for op in ["order_for_command", "commit_transition"] {
        h.store.fail(op);
        assert!(!process(&h.p, &cmd, None).await.0, "{op}");
        assert_eq!(h.store.failed(op), 1, "{op}");
        h.store.heal(op);
        assert_eq!(h.order(&id).await.version, before, "{op}");
    }
    assert!(process(&h.p, &cmd, None).await.0);
    assert_eq!(h.order(&id).await.version, before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_command_is_retried_in_place_until_the_store_answers() {
    let h = Harness::new().await;
    let id = h.place("c1", "WIDGET-1", 1, "tok_visa").await;
    let cmd = h.command(&id).await;
    h.store.fail("order_for_command");
    let p = h.p.clone();
    let task = tokio::spawn(async move { deliver(&p, cmd, false).await });
    until("the delivery is tried again", || {
        h.store.failed("order_for_command") >= 2
    })
    .await;
    // Its offset must not move on: the delivery has not returned.
    assert!(!task.is_finished());
    h.store.heal("order_for_command");
    tokio::time::timeout(super::DEADLINE, task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.settled(&id).await.saga_status, "COMPLETED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_chain_leaves_a_delayed_retry_to_its_message() {
    let h = Harness::new().await;
    // The provider answers 503 to a flaky card's first two attempts.
    let id = h.place("c1", "GADGET-7", 1, "tok_flaky").await;
    let cmd = h.command(&id).await;
    deliver(&h.p, cmd, false).await;
    let order = h.order(&id).await;
    assert_eq!(order.saga_status, "RUNNING");
    let retry = h.command(&id).await;
    assert!(retry.action.contains("authorize-payment"), "{retry:?}");
    assert!(runner::idle(&h.p), "nothing waits in this process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescued_saga_waits_out_its_own_retries() {
    // A rescued command's partition may have no live owner (a dead host's,
    // under a broker that does not hand it on): were each retry left to its
    // message, every one would wait for a rescue of its own, 15 s overdue.
    let h = Harness::new().await;
    let id = h.place("c1", "GADGET-7", 1, "tok_flaky").await;
    let cmd = h.command(&id).await;
    deliver(&h.p, cmd, true).await;
    let order = h.order(&id).await;
    assert_eq!(
        (order.saga_status.as_str(), order.status.as_str()),
        ("COMPLETED", "CONFIRMED"),
        "{:?}",
        h.history(&id).await
    );
    let history = h.history(&id).await;
    assert_eq!(
        history.iter().filter(|e| *e == "step.failed").count(),
        4,
        "two failed attempts each to authorize and to capture: {history:?}"
    );
    assert_eq!(h.store.pending_commands().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_lost_a_race_is_decided_again_on_the_winning_state() {
    let h = Harness::new().await;
    let id = h.place("c1", "WIDGET-1", 1, "tok_visa").await;
    let cmd = h.command(&id).await;
    let stale = h.loaded(&id).await;
    crate::orders::cancel(&h.p, &h.tenant(), &id, "changed my mind".into())
        .await
        .unwrap();
    // The validation's outcome was decided on the order before the cancel.
    let (done, _) = process(&h.p, &cmd, Some(stale)).await;
    assert!(done);
    assert_eq!(count(&h.p.metrics.commit_conflicts_total), 1);
    let order = h.settled(&id).await;
    assert_eq!(order.saga_status, "CANCELLED", "{:?}", h.history(&id).await);
    assert!(h.ledger(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_gone_at_commit_fails_the_reservation_and_nothing_is_charged() {
    let h = Harness::new().await;
    let id = h.place("c1", "GADGET-7", 3, "tok_visa").await;
    let sku = Sku::parse("GADGET-7").unwrap();
    let east = WarehouseId::parse("east").unwrap();
    h.store
        .set_stock(&h.acme(), &sku, &east, 2, 0)
        .await
        .unwrap();
    assert!(submit(&h.p, h.command(&id).await, None));
    let order = h.settled(&id).await;
    let history = h.history(&id).await;
    assert_eq!(order.saga_status, "CANCELLED", "{history:?}");
    assert!(h.ledger(&id).is_empty());
    let events = h.store.order_events(&h.acme(), &id).await.unwrap();
    assert!(
        events.iter().any(|e| e.data.contains("OUT_OF_STOCK")),
        "{history:?}"
    );
    let stock = h.store.stock(&h.acme(), &sku).await.unwrap();
    assert_eq!(stock[0].reserved, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_releases_the_stock_it_held() {
    let h = Harness::new().await;
    let id = h.place("c1", "GADGET-7", 3, "tok_chargeDeclined").await;
    assert!(submit(&h.p, h.command(&id).await, None));
    let order = h.settled(&id).await;
    let history = h.history(&id).await;
    assert_eq!(order.saga_status, "CANCELLED", "{history:?}");
    assert!(
        history.contains(&"compensation.succeeded".to_string()),
        "{history:?}"
    );
    assert_eq!(h.ledger(&id), [("authorize".into(), "failed".into())]);
    let sku = Sku::parse("GADGET-7").unwrap();
    let stock = h.store.stock(&h.acme(), &sku).await.unwrap();
    assert_eq!(stock[0].reserved, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_steps_commit_with_the_step_before_them() {
    let h = Harness::new().await;
    let id = h.place("c1", "WIDGET-1", 1, "tok_visa").await;
    assert!(submit(&h.p, h.command(&id).await, None));
    let order = h.settled(&id).await;
    assert_eq!(order.saga_status, "COMPLETED");
    // Acme's steps: validate, fraud-check and reserve-inventory commit
    // together; authorize-payment alone (it calls the provider); capture
    // with loyalty-points and request-fulfilment, which reach nothing
    // outside. Three commits after the order's own, not seven.
    assert_eq!(order.version, 3, "{:?}", h.history(&id).await);
    // Every step still has its own history entry, in the saga's order.
    let events = h.store.order_events(&h.acme(), &id).await.unwrap();
    let steps: Vec<String> = events
        .iter()
        .filter(|e| e.event_type == "step.succeeded")
        .map(|e| {
            let data: serde_json::Value = serde_json::from_str(&e.data).unwrap();
            data["step"].as_str().unwrap().to_string()
        })
        .collect();
    let definition: Vec<String> = h
        .tenant()
        .definition
        .steps()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(steps, definition);
    assert_eq!(count(&h.p.metrics.saga_steps_total), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_steps_that_lost_a_race_commits_only_its_first_step() {
    let h = Harness::new().await;
    let id = h.place("c1", "WIDGET-1", 1, "tok_visa").await;
    let cmd = h.command(&id).await;
    let tenant = h.tenant();
    let loaded = h.loaded(&id).await;
    let first = crate::steps::run_step(
        &h.p,
        &loaded.context(&tenant, &id),
        oms_saga::Step::Validate,
    )
    .await;
    let run = run_ahead::ahead(&h.p, &tenant, &id, &loaded, first).await;
    assert_eq!(
        run.ahead(),
        2,
        "the fraud check and the reservation ran ahead"
    );
    // A cancel commits while the run is on its way to the store.
    crate::orders::cancel(&h.p, &tenant, &id, "changed my mind".into())
        .await
        .unwrap();
    let committed = run_ahead::commit(&h.p, &tenant, &id, &cmd.id, loaded, run).await;
    assert!(matches!(committed, crate::commit::Committed::Applied(_)));
    let order = h.settled(&id).await;
    let history = h.history(&id).await;
    assert_eq!(order.saga_status, "CANCELLED", "{history:?}");
    // The validation was decided again on the cancelled order; what ran
    // after it was dropped: no fraud verdict or hold recorded, nothing held.
    assert_eq!(
        history.iter().filter(|e| *e == "step.succeeded").count(),
        1,
        "{history:?}"
    );
    let stock = h
        .store
        .stock(&h.acme(), &Sku::parse("WIDGET-1").unwrap())
        .await
        .unwrap();
    assert_eq!(stock.iter().map(|s| s.reserved).sum::<i64>(), 0);
    assert!(h.ledger(&id).is_empty());
}
