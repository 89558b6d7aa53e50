//! The step adapters, one call each, against the demo tenant's real
//! components: what each slot's answer (or failure) becomes.

use super::Harness;
use crate::steps::{Context, Outcome, run_step};
use oms_saga::{SagaEvent, Step};
use oms_store::InventoryOp;

async fn run(h: &Harness, id: &oms_domain::OrderId, step: Step) -> Outcome {
    let loaded = h.loaded(id).await;
    let tenant = h.tenant();
    let cx = Context {
        tenant: &tenant,
        order: &loaded.order,
        order_id: id,
        draft: &loaded.draft,
        state: &loaded.state,
    };
    run_step(&h.p, &cx, step).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guardrail_violation_rejects_the_order_with_its_reasons() {
    let h = Harness::new().await;
    // acme's guardrail allows at most 100 of a line.
    let id = h.place("c1", "WIDGET-1", 101, "tok_visa").await;
    let outcome = run(&h, &id, Step::Validate).await;
    assert!(
        matches!(
            outcome.event,
            SagaEvent::StepRejected {
                step: Step::Validate,
                ..
            }
        ),
        "{:?}",
        outcome.event
    );
    let violations = outcome.extras.violations.unwrap();
    assert!(violations.contains("quantity"), "{violations}");
    let ok = h.place("c1", "WIDGET-1", 100, "tok_visa").await;
    let outcome = run(&h, &ok, Step::Validate).await;
    assert!(
        matches!(outcome.event, SagaEvent::StepSucceeded { .. }),
        "{:?}",
        outcome.event
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_customer_history_is_a_transient_failure_not_an_empty_history() {
    let h = Harness::new().await;
    let id = h.place("c1", "WIDGET-1", 1, "tok_visa").await;
    h.store.fail("customer_history");
    let outcome = run(&h, &id, Step::FraudCheck).await;
    match &outcome.event {
        SagaEvent::StepFailed {
            step: Step::FraudCheck,
            failure,
            ..
        } => {
            assert_eq!(failure.code, "STORE_UNAVAILABLE");
            assert!(failure.transient);
        }
        other => panic!("{other:?}"),
    }
    h.store.heal("customer_history");
    let outcome = run(&h, &id, Step::FraudCheck).await;
    assert!(
        matches!(outcome.event, SagaEvent::StepSucceeded { .. }),
        "{:?}",
        outcome.event
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_customer_is_rejected_by_the_fraud_check() {
    let h = Harness::new().await;
    let id = h.place("fraud-mallory", "WIDGET-1", 1, "tok_visa").await;
    let outcome = run(&h, &id, Step::FraudCheck).await;
    assert!(
        matches!(
            outcome.event,
            SagaEvent::StepRejected {
                step: Step::FraudCheck,
                ..
            }
        ),
        "{:?}",
        outcome.event
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_asks_for_each_sku_once_with_its_lines_summed() {
    let h = Harness::new().await;
    let items = serde_json::json!([
        { "sku": "WIDGET-1", "quantity": 2, "unitPrice": 1999 },
        { "sku": "GADGET-7", "quantity": 1, "unitPrice": 500 },
        { "sku": "WIDGET-1", "quantity": 3, "unitPrice": 1999 },
    ]);
    let id = h.place_items("c1", items, "tok_visa").await;
    let outcome = run(&h, &id, Step::ReserveInventory).await;
    assert_eq!(
        outcome.extras.inventory,
        Some(InventoryOp::Reserve(vec![
            ("GADGET-7".into(), 1),
            ("WIDGET-1".into(), 5)
        ]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_is_recorded_with_the_providers_reference() {
    let h = Harness::new().await;
    let id = h.place("c1", "WIDGET-1", 2, "tok_visa").await;
    let outcome = run(&h, &id, Step::AuthorizePayment).await;
    let SagaEvent::StepSucceeded {
        provider_reference: Some(reference),
        ..
    } = &outcome.event
    else {
        panic!("{:?}", outcome.event)
    };
    let payment = outcome.extras.payment.unwrap();
    assert_eq!(
        (payment.op.as_str(), payment.status.as_str(), payment.amount),
        ("authorize", "succeeded", 2 * 1999)
    );
    assert_eq!(payment.provider_reference.as_ref(), Some(reference));
    assert_eq!(h.ledger(&id), [("authorize".into(), "succeeded".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_fails_for_good_and_a_flaky_provider_for_now() {
    let h = Harness::new().await;
    let declined = h.place("c1", "WIDGET-1", 1, "tok_chargeDeclined").await;
    let outcome = run(&h, &declined, Step::AuthorizePayment).await;
    match &outcome.event {
        SagaEvent::StepFailed { failure, .. } => {
            assert_eq!(failure.code, "card_declined");
            assert!(!failure.transient);
        }
        other => panic!("{other:?}"),
    }
    let flaky = h.place("c2", "WIDGET-1", 1, "tok_flaky").await;
    let outcome = run(&h, &flaky, Step::AuthorizePayment).await;
    match &outcome.event {
        SagaEvent::StepFailed { failure, .. } => assert!(failure.transient, "{failure:?}"),
        other => panic!("{other:?}"),
    }
}
