//! An operator's retry, compensate and resolve, each legal only in the
//! states that allow it, so a second click is refused.

use super::*;
use Compensation::*;
use Step::*;

const NOW: i64 = 1_000;

fn stuck() -> SagaState {
    let def = SagaDefinition::new(Step::ALL.to_vec()).expect("valid");
    let (mut state, _) = start(def, Limits::default(), 100_000);
    for step in [Validate, FraudCheck, ReserveInventory] {
        let ok = SagaEvent::StepSucceeded {
            step,
            provider_reference: None,
            output: None,
        };
        (state, _) = apply(&state, &ok, NOW).expect("legal");
    }
    let declined = SagaEvent::StepFailed {
        step: AuthorizePayment,
        failure: Failure {
            code: "card_declined".into(),
            message: "declined".into(),
            transient: false,
        },
        plan: Plan::Compensate {
            actions: vec![ReleaseInventory],
            notify: vec![],
        },
    };
    (state, _) = apply(&state, &declined, NOW).expect("legal");
    let fail = SagaEvent::CompensationFailed {
        compensation: ReleaseInventory,
        failure: Failure {
            code: "HTTP_503".into(),
            message: "down".into(),
            transient: true,
        },
    };
    for _ in 0..Limits::default().max_compensation_attempts {
        (state, _) = apply(&state, &fail, NOW).expect("legal");
    }
    assert_eq!(state.status, SagaStatus::Stuck);
    state
}

fn retry() -> SagaEvent {
    SagaEvent::OperatorRetry {
        operator: "ops".into(),
    }
}

fn resolve(reason: &str) -> SagaEvent {
    SagaEvent::OperatorResolve {
        operator: "ops".into(),
        reason: reason.into(),
    }
}

fn compensate() -> SagaEvent {
    SagaEvent::OperatorCompensate {
        operator: "ops".into(),
        reason: "customer called".into(),
    }
}

#[test]
fn a_retry_runs_the_failed_compensation_again_now_with_fresh_attempts() {
    let (state, actions) = apply(&stuck(), &retry(), NOW).expect("legal");
    assert_eq!((state.status, state.attempt), (SagaStatus::Compensating, 1));
    assert_eq!(
        actions,
        [Action::RunCompensation {
            compensation: ReleaseInventory,
            attempt: 1,
            delay_ms: 0
        }]
    );
    // A second retry finds it compensating: refused.
    assert!(apply(&state, &retry(), NOW).is_err());
    // It finishes like any compensation.
    let done = SagaEvent::CompensationSucceeded {
        compensation: ReleaseInventory,
    };
    let (state, _) = apply(&state, &done, NOW).expect("legal");
    assert_eq!(state.status, SagaStatus::Cancelled);
}

#[test]
fn resolving_needs_a_reason_ends_the_saga_and_happens_once() {
    let stuck = stuck();
    assert!(apply(&stuck, &resolve("  "), NOW).is_err());
    let (state, actions) =
        apply(&stuck, &resolve("voided by hand in the dashboard"), NOW).expect("legal");
    assert_eq!(state.status, SagaStatus::Resolved);
    assert_eq!(
        state.resolution.as_deref(),
        Some("voided by hand in the dashboard")
    );
    assert_eq!(state.pending, [ReleaseInventory]);
    assert_eq!(
        actions,
        [Action::Finish {
            status: SagaStatus::Resolved
        }]
    );
    for again in [resolve("twice"), retry(), compensate()] {
        assert!(apply(&state, &again, NOW).is_err(), "{again:?}");
    }
    let cancel = SagaEvent::CancelRequested { reason: "x".into() };
    assert!(apply(&state, &cancel, NOW).is_err());
}

#[test]
fn compensating_stops_a_running_saga_once_after_its_step() {
    let def = SagaDefinition::new(Step::ALL.to_vec()).expect("valid");
    let (running, _) = start(def, Limits::default(), 100_000);
    let (state, actions) = apply(&running, &compensate(), NOW).expect("legal");
    assert!(actions.is_empty(), "the step in flight finishes first");
    assert!(apply(&state, &compensate(), NOW).is_err());
    let ok = SagaEvent::StepSucceeded {
        step: Validate,
        provider_reference: None,
        output: None,
    };
    let (state, _) = apply(&state, &ok, NOW).expect("legal");
    assert_eq!(state.status, SagaStatus::Cancelled);
    // Neither a stuck nor a finished saga is "stopped".
    assert!(apply(&stuck(), &compensate(), NOW).is_err());
    assert!(apply(&state, &compensate(), NOW).is_err());
}

#[test]
fn nothing_but_a_stuck_saga_is_retried_or_resolved() {
    let def = SagaDefinition::new(Step::ALL.to_vec()).expect("valid");
    let (running, _) = start(def, Limits::default(), 100_000);
    assert!(apply(&running, &retry(), NOW).is_err());
    assert!(apply(&running, &resolve("why"), NOW).is_err());
}
