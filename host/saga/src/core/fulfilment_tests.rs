//! A warehouse that answers: acceptance confirms, rejection and silence
//! undo (exactly once), and an answer races a cancel on one state.

use super::*;
use Compensation::*;
use Step::*;

const NOW: i64 = 1_000;
const WAIT_MS: u64 = 60_000;

fn ok(step: Step) -> SagaEvent {
    SagaEvent::StepSucceeded {
        step,
        provider_reference: (step == AuthorizePayment).then(|| "pi_1".to_string()),
        output: None,
    }
}

fn decided(accepted: bool) -> SagaEvent {
    SagaEvent::FulfilmentDecided {
        decision: FulfilmentDecision {
            accepted,
            reason: (!accepted).then(|| "out of stock at east".to_string()),
            estimated_delivery: accepted.then(|| "2026-12-09".to_string()),
        },
    }
}

/// A saga of a tenant whose warehouse answers, with fulfilment requested.
fn waiting() -> SagaState {
    let def = SagaDefinition::new(Step::ALL.to_vec()).expect("valid");
    let limits = Limits {
        fulfilment_decision_ms: Some(WAIT_MS),
        ..Limits::default()
    };
    let (mut state, mut actions) = start(def.clone(), limits, 100_000);
    for &step in def.steps() {
        (state, actions) = apply(&state, &ok(step), NOW).expect("legal");
    }
    let until = NOW + WAIT_MS as i64;
    assert_eq!(actions, vec![Action::AwaitFulfilment { until }]);
    assert_eq!(state.status, SagaStatus::Running);
    assert_eq!(state.awaiting_fulfilment_until, Some(until));
    assert_eq!(state.current_step(), None, "nothing runs while waiting");
    state
}

fn finished(actions: &[Action]) -> Option<SagaStatus> {
    actions.iter().find_map(|a| match a {
        Action::Finish { status } => Some(*status),
        _ => None,
    })
}

#[test]
fn acceptance_confirms_and_a_repeat_changes_nothing() {
    let state = waiting();
    let (state, actions) = apply(&state, &decided(true), NOW).expect("legal");
    assert_eq!(state.status, SagaStatus::Completed);
    assert_eq!(finished(&actions), Some(SagaStatus::Completed));
    assert_eq!(state.awaiting_fulfilment_until, None);
    let (again, actions) = apply(&state, &decided(true), NOW).expect("a repeat is fine");
    assert_eq!((again, actions), (state.clone(), vec![]));
    let err = apply(&state, &decided(false), NOW).expect_err("accepted stays accepted");
    assert!(err.detail.contains("already accepted"), "{err}");
    // The timer that fires afterwards finds nothing to do.
    let (after, actions) = apply(
        &state,
        &SagaEvent::FulfilmentDeadlinePassed,
        NOW + 10 * WAIT_MS as i64,
    )
    .expect("harmless");
    assert_eq!((after, actions), (state, vec![]));
}

#[test]
fn rejection_refunds_and_releases_without_telling_the_warehouse_to_stop() {
    let state = waiting();
    let (state, actions) = apply(&state, &decided(false), NOW).expect("legal");
    assert_eq!(state.status, SagaStatus::Compensating);
    assert_eq!(state.pending, vec![RefundPayment, ReleaseInventory]);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::CancelFulfilment { .. })),
        "a warehouse that refused is not told to stop: {actions:?}"
    );
    assert!(matches!(
        &state.ending,
        Some(Ending::Failed { step: RequestFulfilment, code, message })
            if code == "FULFILMENT_REJECTED" && message == "out of stock at east"
    ));
    // Repeated, the rejection changes nothing; acceptance now is refused.
    let (again, actions) = apply(&state, &decided(false), NOW).expect("a repeat is fine");
    assert_eq!((again, actions), (state.clone(), vec![]));
    assert!(apply(&state, &decided(true), NOW).is_err());
    // The undoing runs once and ends CANCELLED.
    let (state, _) = apply(
        &state,
        &SagaEvent::CompensationSucceeded {
            compensation: RefundPayment,
        },
        NOW,
    )
    .expect("legal");
    let (state, actions) = apply(
        &state,
        &SagaEvent::CompensationSucceeded {
            compensation: ReleaseInventory,
        },
        NOW,
    )
    .expect("legal");
    assert_eq!(state.status, SagaStatus::Cancelled);
    assert_eq!(finished(&actions), Some(SagaStatus::Cancelled));
}

#[test]
fn silence_past_the_deadline_undoes_and_tells_the_warehouse() {
    let state = waiting();
    let until = state.awaiting_fulfilment_until.expect("waiting");
    // Early (another host's clock): the timer is set again, nothing else.
    let (early, actions) =
        apply(&state, &SagaEvent::FulfilmentDeadlinePassed, until - 1).expect("legal");
    assert_eq!(actions, vec![Action::AwaitFulfilment { until }]);
    assert_eq!(early, state);
    let (state, actions) =
        apply(&state, &SagaEvent::FulfilmentDeadlinePassed, until).expect("legal");
    assert_eq!(state.status, SagaStatus::Compensating);
    assert!(matches!(
        actions.first(),
        Some(Action::CancelFulfilment { .. })
    ));
    assert!(matches!(
        &state.ending,
        Some(Ending::Failed { code, .. }) if code == "FULFILMENT_DEADLINE_EXCEEDED"
    ));
    // An answer that comes too late is refused.
    assert!(apply(&state, &decided(true), until + 1).is_err());
}

#[test]
fn a_cancel_while_waiting_undoes_at_once_and_the_answer_after_it_is_refused() {
    let state = waiting();
    let cancel = SagaEvent::CancelRequested {
        reason: "changed my mind".into(),
    };
    let (state, actions) = apply(&state, &cancel, NOW).expect("legal");
    assert_eq!(state.status, SagaStatus::Compensating);
    assert!(matches!(
        actions.first(),
        Some(Action::CancelFulfilment { .. })
    ));
    assert!(matches!(
        actions.get(1),
        Some(Action::RunCompensation {
            compensation: RefundPayment,
            ..
        })
    ));
    let err = apply(&state, &decided(true), NOW).expect_err("too late");
    assert!(err.detail.contains("cancel"), "{err}");
    // And the other way round: accepted first, the cancel undoes a confirmed order.
    let (accepted, _) = apply(&waiting(), &decided(true), NOW).expect("legal");
    let (state, _) = apply(&accepted, &cancel, NOW).expect("a confirmed order may be cancelled");
    assert_eq!(state.status, SagaStatus::Compensating);
}

#[test]
fn an_operator_stops_a_waiting_saga_at_once() {
    let stop = SagaEvent::OperatorCompensate {
        operator: "ops".into(),
        reason: "warehouse closed".into(),
    };
    let (state, actions) = apply(&waiting(), &stop, NOW).expect("legal");
    assert_eq!(state.status, SagaStatus::Compensating);
    assert!(matches!(
        actions.first(),
        Some(Action::CancelFulfilment { .. })
    ));
}

#[test]
fn nothing_ships_before_the_warehouse_accepts_and_no_step_report_is_taken() {
    let state = waiting();
    let ship = SagaEvent::Shipped {
        shipment: Shipment {
            carrier: "UPS".into(),
            tracking_number: "1Z".into(),
            items: vec![],
            shipped_at: NOW,
        },
        order_items: vec!["WIDGET-1".into()],
    };
    let err = apply(&state, &ship, NOW).expect_err("not accepted");
    assert!(err.detail.contains("not accepted"), "{err}");
    assert!(apply(&state, &ok(RequestFulfilment), NOW).is_err());
}

#[test]
fn an_answer_is_refused_where_none_is_awaited() {
    // A tenant whose warehouse does not answer: confirmed at the request.
    let def = SagaDefinition::new(Step::ALL.to_vec()).expect("valid");
    let (mut state, _) = start(def.clone(), Limits::default(), 100_000);
    let err = apply(&state, &decided(true), NOW).expect_err("not requested yet");
    assert!(err.detail.contains("not been requested"), "{err}");
    for &step in def.steps() {
        (state, _) = apply(&state, &ok(step), NOW).expect("legal");
    }
    assert_eq!(state.status, SagaStatus::Completed);
    let err = apply(&state, &decided(true), NOW).expect_err("none awaited");
    assert!(err.detail.contains("without waiting"), "{err}");
}

#[test]
fn states_stored_before_the_answer_existed_still_read() {
    let mut json = serde_json::to_value(waiting()).expect("serialises");
    let map = json.as_object_mut().expect("object");
    map.remove("awaitingFulfilmentUntil");
    map["limits"]
        .as_object_mut()
        .expect("limits")
        .remove("fulfilmentDecisionMs");
    let old: SagaState = serde_json::from_value(json).expect("reads");
    assert_eq!(old.awaiting_fulfilment_until, None);
    assert_eq!(old.limits.fulfilment_decision_ms, None);
}
