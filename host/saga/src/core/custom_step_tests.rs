//! Tenant-defined steps: placed where the tenant says, their output kept
//! for their compensation, undone in reverse order among the built-in ones.

use super::tests::{compensate, permanent, run, through, transient};
use super::*;
use Compensation::*;
use Step::*;

fn points() -> Step {
    Step::parse("loyalty-points").expect("a step name")
}

/// Acme's steps with the loyalty points awarded after capture.
fn with_points() -> SagaDefinition {
    let mut steps = Step::ALL.to_vec();
    steps.insert(5, points());
    SagaDefinition::new(steps).expect("valid")
}

fn done(step: Step, output: &str) -> SagaEvent {
    SagaEvent::StepSucceeded {
        step,
        provider_reference: None,
        output: Some(output.into()),
    }
}

#[test]
fn a_tenants_step_runs_in_its_place_and_its_output_is_kept() {
    let def = with_points();
    let mut events = through(&def, CapturePayment);
    let (state, actions) = run(def.clone(), &events);
    assert_eq!(
        actions,
        vec![Action::RunStep {
            step: points(),
            attempt: 1,
            delay_ms: 0
        }]
    );
    assert_eq!(state.current_step(), Some(points()));
    events.push(done(points(), r#"{"awarded":19}"#));
    let (state, actions) = run(def, &events);
    assert_eq!(state.output_of(points()), Some(r#"{"awarded":19}"#));
    assert!(matches!(
        actions[..],
        [Action::RunStep {
            step: RequestFulfilment,
            ..
        }]
    ));
    // Kept through storage, name and all.
    let stored = serde_json::to_string(&state).expect("serialises");
    assert_eq!(
        serde_json::from_str::<SagaState>(&stored).expect("reads back"),
        state
    );
}

#[test]
fn a_later_failure_undoes_the_tenants_step_first_in_reverse_order() {
    let def = with_points();
    let mut events = through(&def, CapturePayment);
    events.push(done(points(), "19"));
    events.push(SagaEvent::StepFailed {
        step: RequestFulfilment,
        failure: permanent(),
        plan: compensate(vec![RefundPayment, ReleaseInventory]),
    });
    let (state, actions) = run(def.clone(), &events);
    let undo = Compensation::Custom(points().custom().expect("custom"));
    assert_eq!(state.pending, vec![undo, RefundPayment, ReleaseInventory]);
    assert_eq!(
        actions,
        vec![Action::RunCompensation {
            compensation: undo,
            attempt: 1,
            delay_ms: 0
        }]
    );
    // A policy may reorder the built-in ones; the tenant's keeps its place.
    let completed = [ReserveInventory, AuthorizePayment, CapturePayment, points()];
    assert_eq!(
        resolve_plan(&completed, &[ReleaseInventory, RefundPayment]),
        (vec![undo, ReleaseInventory, RefundPayment], false)
    );
    assert!(resolve_plan(&completed, &[RefundPayment]).1);
    // Its compensation retried like any, then the saga goes on undoing.
    events.push(SagaEvent::CompensationFailed {
        compensation: undo,
        failure: transient(),
    });
    events.push(SagaEvent::CompensationSucceeded { compensation: undo });
    let (state, actions) = run(def, &events);
    assert_eq!(state.compensated, vec![undo]);
    assert!(matches!(
        actions[..],
        [Action::RunCompensation {
            compensation: RefundPayment,
            ..
        }]
    ));
}

#[test]
fn a_tenants_step_that_fails_is_not_undone_itself() {
    let def = with_points();
    let mut events = through(&def, CapturePayment);
    events.push(SagaEvent::StepFailed {
        step: points(),
        failure: permanent(),
        plan: compensate(vec![RefundPayment, ReleaseInventory]),
    });
    let (state, _) = run(def, &events);
    assert_eq!(state.pending, vec![RefundPayment, ReleaseInventory]);
    assert!(matches!(
        state.ending,
        Some(Ending::Failed { step, .. }) if step == points()
    ));
}

#[test]
fn a_tenants_step_retries_by_its_own_policy_then_turns_back() {
    use crate::compensation::{StepRetry, step_plan};
    let def = with_points();
    let (mut state, _) = run(def.clone(), &through(&def, CapturePayment));
    let retry = StepRetry {
        max_attempts: 3,
        base_delay_ms: 100,
        max_delay_ms: 150,
    };
    assert_eq!(
        step_plan(&state, &transient(), &retry),
        Plan::Retry { delay_ms: 100 }
    );
    state.attempt = 2;
    assert_eq!(
        step_plan(&state, &transient(), &retry),
        Plan::Retry { delay_ms: 150 }
    );
    state.attempt = 3;
    assert_eq!(
        step_plan(&state, &transient(), &retry),
        compensate(vec![RefundPayment, ReleaseInventory])
    );
    state.attempt = 1;
    assert_eq!(
        step_plan(&state, &permanent(), &retry),
        compensate(vec![RefundPayment, ReleaseInventory])
    );
}
