//! Every transition the machine does not list is refused, naming what
//! was wrong, and leaves the state as it was.

use super::tests::{DEADLINE, NOW, acme, compensate, ok, permanent, run, through};
use super::*;
use Compensation::*;
use Step::*;

#[test]
fn illegal_transitions_are_errors() {
    let (state, _) = start(acme(), Limits::default(), DEADLINE);
    // Out of order.
    assert!(apply(&state, &ok(CapturePayment), NOW).is_err());
    // Compensation while running forward.
    assert!(
        apply(
            &state,
            &SagaEvent::CompensationSucceeded {
                compensation: RefundPayment
            },
            NOW
        )
        .is_err()
    );
    // Anything after completion except a cancel.
    let (done, _) = run(acme(), &through(&acme(), RequestFulfilment));
    assert!(apply(&done, &ok(Validate), NOW).is_err());
    // The wrong compensation.
    let mut events = through(&acme(), AuthorizePayment);
    events.push(SagaEvent::StepFailed {
        step: CapturePayment,
        failure: permanent(),
        plan: compensate(vec![]),
    });
    let (comp, _) = run(acme(), &events);
    let err = apply(
        &comp,
        &SagaEvent::CompensationSucceeded {
            compensation: ReleaseInventory,
        },
        NOW,
    )
    .expect_err("void runs first");
    assert_eq!(err.status, SagaStatus::Compensating);
    // Cancelling what was rejected.
    let rejected = SagaEvent::StepRejected {
        step: Validate,
        code: "X".into(),
        reason: "y".into(),
    };
    let (rej, _) = run(acme(), &[rejected]);
    assert!(
        apply(
            &rej,
            &SagaEvent::CancelRequested { reason: "r".into() },
            NOW
        )
        .is_err()
    );
}
