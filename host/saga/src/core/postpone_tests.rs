//! A postponed step or compensation (an open circuit breaker) keeps its
//! attempt, and is not postponed past the deadline or a cancel.

use super::tests::{DEADLINE, NOW, acme, ok, run, through, transient};
use super::*;
use Compensation::*;
use Step::*;

fn postponed(delay_ms: u64) -> SagaEvent {
    SagaEvent::Postponed {
        delay_ms,
        reason: "circuit open".into(),
    }
}

#[test]
fn a_postponed_step_runs_again_at_the_same_attempt_however_often() {
    let mut events = through(&acme(), ReserveInventory);
    events.push(SagaEvent::StepFailed {
        step: AuthorizePayment,
        failure: transient(),
        plan: Plan::Retry { delay_ms: 10 },
    });
    let (mut state, _) = run(acme(), &events);
    let mut actions = Vec::new();
    // Far more postponements than the retry budget: none of them spends it.
    for _ in 0..3 * Limits::default().max_step_attempts {
        (state, actions) = apply(&state, &postponed(500), NOW).expect("legal");
    }
    assert_eq!(state.status, SagaStatus::Running);
    assert_eq!(
        actions,
        vec![Action::RunStep {
            step: AuthorizePayment,
            attempt: 2,
            delay_ms: 500
        }]
    );
}

#[test]
fn a_postponed_compensation_keeps_its_attempt() {
    let mut events = through(&acme(), CapturePayment);
    events.push(SagaEvent::CancelRequested {
        reason: "changed my mind".into(),
    });
    events.push(ok(RequestFulfilment));
    let (state, _) = run(acme(), &events);
    let (state, actions) = apply(&state, &postponed(700), NOW).expect("legal");
    assert_eq!(state.status, SagaStatus::Compensating);
    assert_eq!(
        actions,
        vec![Action::RunCompensation {
            compensation: RefundPayment,
            attempt: 1,
            delay_ms: 700
        }]
    );
    // Even past the deadline: what was done must be undone.
    let (_, actions) = apply(&state, &postponed(700), DEADLINE + 1).expect("legal");
    assert!(matches!(
        actions.as_slice(),
        [Action::RunCompensation { .. }]
    ));
}

#[test]
fn a_forward_step_is_not_postponed_past_the_deadline_or_a_cancel() {
    let (state, _) = run(acme(), &through(&acme(), ReserveInventory));
    let (late, actions) = apply(&state, &postponed(DEADLINE as u64), NOW).expect("legal");
    assert_eq!(late.ending, Some(Ending::DeadlineExceeded));
    assert_eq!(
        actions,
        vec![Action::RunCompensation {
            compensation: ReleaseInventory,
            attempt: 1,
            delay_ms: 0
        }]
    );
    let (cancelled, _) = apply(
        &state,
        &SagaEvent::CancelRequested {
            reason: "no".into(),
        },
        NOW,
    )
    .expect("legal");
    let (cancelled, _) = apply(&cancelled, &postponed(10), NOW).expect("legal");
    assert!(matches!(
        cancelled.ending,
        Some(Ending::CancelledByClient { .. })
    ));
}

#[test]
fn nothing_running_cannot_be_postponed() {
    let (done, _) = run(acme(), &through(&acme(), RequestFulfilment));
    assert_eq!(done.status, SagaStatus::Completed);
    assert!(apply(&done, &postponed(10), NOW).is_err());
}
