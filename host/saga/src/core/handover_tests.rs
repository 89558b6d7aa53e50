//! Shipping and delivery after the saga completes, against cancels in any
//! interleaving: goods that left are never refunded.

use super::tests::{
    DEADLINE, NOW, acme, compensate, globex, ok, permanent, run, through, transient,
};
use super::*;

use Step::*;

fn ship() -> SagaEvent {
    SagaEvent::Shipped {
        shipment: Shipment {
            carrier: "UPS".into(),
            tracking_number: "1Z".into(),
            items: vec![],
            shipped_at: NOW,
        },
        order_items: vec!["WIDGET-1".into()],
    }
}

fn cancel() -> SagaEvent {
    SagaEvent::CancelRequested { reason: "r".into() }
}

#[test]
fn a_completed_order_ships_then_delivers() {
    let (done, _) = run(acme(), &through(&acme(), RequestFulfilment));
    assert!(
        apply(&done, &SagaEvent::Delivered, NOW).is_err(),
        "not shipped yet"
    );
    let (shipped, actions) = apply(&done, &ship(), NOW).expect("legal");
    assert_eq!(shipped.handover, Handover::Shipped);
    assert_eq!(shipped.status, SagaStatus::Completed);
    assert!(matches!(
        actions.as_slice(),
        [Action::Handover {
            stage: Handover::Shipped,
            shipment: Some(_)
        }]
    ));
    assert!(apply(&shipped, &ship(), NOW).is_err(), "shipped twice");
    let (delivered, actions) = apply(&shipped, &SagaEvent::Delivered, NOW).expect("legal");
    assert_eq!(delivered.handover, Handover::Delivered);
    assert!(matches!(
        actions.as_slice(),
        [Action::Handover {
            stage: Handover::Delivered,
            shipment: None
        }]
    ));
    assert!(apply(&delivered, &SagaEvent::Delivered, NOW).is_err());
}

#[test]
fn goods_that_left_cannot_be_cancelled() {
    let (done, _) = run(acme(), &through(&acme(), RequestFulfilment));
    let (shipped, _) = apply(&done, &ship(), NOW).expect("legal");
    let err = apply(&shipped, &cancel(), NOW).expect_err("shipped");
    assert!(err.detail.contains("shipped"), "{err}");
    let (delivered, _) = apply(&shipped, &SagaEvent::Delivered, NOW).expect("legal");
    assert!(apply(&delivered, &cancel(), NOW).is_err());
}

#[test]
fn nothing_ships_while_the_saga_runs_or_undoes() {
    // Still running.
    let (running, _) = run(acme(), &through(&acme(), CapturePayment));
    assert!(apply(&running, &ship(), NOW).is_err());
    // A cancel waits for the running step: shipping is refused meanwhile.
    let (cancelling, _) = apply(&running, &cancel(), NOW).expect("legal");
    assert!(apply(&cancelling, &ship(), NOW).is_err());
    // Cancelled after completion: compensating, then cancelled.
    let (done, _) = run(acme(), &through(&acme(), RequestFulfilment));
    let (undoing, _) = apply(&done, &cancel(), NOW).expect("legal");
    assert_eq!(undoing.status, SagaStatus::Compensating);
    assert!(apply(&undoing, &ship(), NOW).is_err());
    assert!(apply(&undoing, &SagaEvent::Delivered, NOW).is_err());
}

#[test]
fn a_state_stored_before_handover_existed_reads_as_not_shipped() {
    let (done, _) = run(acme(), &through(&acme(), RequestFulfilment));
    let mut json = serde_json::to_value(&done).expect("serialise");
    json.as_object_mut().expect("object").remove("handover");
    let back: SagaState = serde_json::from_value(json).expect("deserialise");
    assert_eq!(back.handover, Handover::NotShipped);
    assert_eq!(back, done);
}

/// Every event that can reach a saga in `state`: the client's (cancel, ship,
/// deliver, at any time) and each outcome of whatever is running.
fn possible_events(state: &SagaState) -> Vec<SagaEvent> {
    let mut events = vec![cancel(), ship(), SagaEvent::Delivered];
    if let Some(step) = state.current_step() {
        events.push(ok(step));
        events.push(SagaEvent::StepFailed {
            step,
            failure: transient(),
            plan: Plan::Retry { delay_ms: 1 },
        });
        events.push(SagaEvent::StepFailed {
            step,
            failure: permanent(),
            plan: compensate(required_compensations(&state.completed)),
        });
        events.push(SagaEvent::StepRejected {
            step,
            code: "X".into(),
            reason: "y".into(),
        });
    }
    if let (SagaStatus::Compensating, Some(&compensation)) = (state.status, state.pending.first()) {
        events.push(SagaEvent::CompensationSucceeded { compensation });
        events.push(SagaEvent::CompensationFailed {
            compensation,
            failure: transient(),
        });
    }
    events
}

/// Exhaustive over every interleaving of client requests with the saga's own
/// progress (small retry limits keep the state space small): goods leave only
/// a completed saga, never come back, and an order whose goods left is never
/// compensated; money taken is given back only for goods that never left.
#[test]
fn no_interleaving_refunds_goods_that_left() {
    let limits = Limits {
        max_step_attempts: 2,
        max_compensation_attempts: 2,
        ..Limits::default()
    };
    for def in [acme(), globex()] {
        let (first, _) = start(def, limits, DEADLINE);
        let mut seen = std::collections::HashSet::new();
        let mut todo = vec![first];
        while let Some(state) = todo.pop() {
            if !seen.insert(serde_json::to_string(&state).expect("serialise")) {
                continue;
            }
            for event in possible_events(&state) {
                let Ok((next, actions)) = apply(&state, &event, NOW) else {
                    continue;
                };
                assert!(
                    next.handover == Handover::NotShipped || next.status == SagaStatus::Completed,
                    "goods left a saga that is {:?} after {event:?}",
                    next.status
                );
                assert!(
                    next.handover >= state.handover,
                    "goods came back after {event:?}"
                );
                if state.handover != Handover::NotShipped {
                    assert!(
                        actions.iter().all(|a| matches!(a, Action::Handover { .. })),
                        "{event:?} on goods that left led to {actions:?}"
                    );
                }
                todo.push(next);
            }
        }
        assert!(seen.len() > 50, "explored only {} states", seen.len());
    }
}
