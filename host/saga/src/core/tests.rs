use super::*;
use Compensation::*;
use Step::*;

pub(super) const NOW: i64 = 1_000;
pub(super) const DEADLINE: i64 = 100_000;

pub(super) fn acme() -> SagaDefinition {
    SagaDefinition::new(Step::ALL.to_vec()).expect("valid")
}

pub(super) fn globex() -> SagaDefinition {
    SagaDefinition::new(vec![
        Validate,
        FraudCheck,
        AuthorizePayment,
        ReserveInventory,
        CapturePayment,
        RequestFulfilment,
    ])
    .expect("valid")
}

pub(super) fn ok(step: Step) -> SagaEvent {
    let provider_reference = (step == AuthorizePayment).then(|| "pi_1".to_string());
    SagaEvent::StepSucceeded {
        step,
        provider_reference,
        output: None,
    }
}

pub(super) fn transient() -> Failure {
    Failure {
        code: "HTTP_503".into(),
        message: "unavailable".into(),
        transient: true,
    }
}

pub(super) fn permanent() -> Failure {
    Failure {
        code: "card_declined".into(),
        message: "declined".into(),
        transient: false,
    }
}

pub(super) fn compensate(actions: Vec<Compensation>) -> Plan {
    Plan::Compensate {
        actions,
        notify: vec!["customer".into()],
    }
}

/// Applies events in order, failing the test on an illegal transition.
pub(super) fn run(def: SagaDefinition, events: &[SagaEvent]) -> (SagaState, Vec<Action>) {
    let (mut state, mut actions) = start(def, Limits::default(), DEADLINE);
    for e in events {
        (state, actions) = apply(&state, e, NOW).expect("legal transition");
    }
    (state, actions)
}

pub(super) fn through(def: &SagaDefinition, last: Step) -> Vec<SagaEvent> {
    let steps = def.steps();
    let end = steps
        .iter()
        .position(|s| *s == last)
        .expect("step in definition");
    steps[..=end].iter().map(|s| ok(*s)).collect()
}

#[test]
fn happy_path_runs_every_step_in_tenant_order() {
    for def in [acme(), globex()] {
        let (mut state, mut actions) = start(def.clone(), Limits::default(), DEADLINE);
        for &step in def.steps() {
            assert_eq!(
                actions,
                vec![Action::RunStep {
                    step,
                    attempt: 1,
                    delay_ms: 0
                }]
            );
            (state, actions) = apply(&state, &ok(step), NOW).expect("legal");
        }
        assert_eq!(state.status, SagaStatus::Completed);
        assert_eq!(
            actions,
            vec![Action::Finish {
                status: SagaStatus::Completed
            }]
        );
        assert_eq!(state.completed, def.steps());
        assert_eq!(state.payment_reference.as_deref(), Some("pi_1"));
    }
}

#[test]
fn rejection_at_validation_finishes_rejected_with_nothing_to_undo() {
    let rejected = SagaEvent::StepRejected {
        step: Validate,
        code: "MAX_QUANTITY_EXCEEDED".into(),
        reason: "too many".into(),
    };
    let (state, actions) = run(acme(), &[rejected]);
    assert_eq!(state.status, SagaStatus::Rejected);
    assert!(matches!(
        actions.as_slice(),
        [
            Action::Notify { .. },
            Action::Finish {
                status: SagaStatus::Rejected
            }
        ]
    ));
    assert!(
        state
            .ending
            .as_ref()
            .is_some_and(|e| e.reason().starts_with("MAX_QUANTITY_EXCEEDED"))
    );
}

#[test]
fn fraud_decline_is_a_rejection() {
    let mut events = through(&acme(), Validate);
    events.push(SagaEvent::StepRejected {
        step: FraudCheck,
        code: "FRAUD_DECLINED".into(),
        reason: "blocked".into(),
    });
    let (state, _) = run(acme(), &events);
    assert_eq!(state.status, SagaStatus::Rejected);
}

#[test]
fn stock_failure_in_acme_has_nothing_to_undo() {
    let mut events = through(&acme(), FraudCheck);
    events.push(SagaEvent::StepFailed {
        step: ReserveInventory,
        failure: permanent(),
        plan: compensate(vec![]),
    });
    let (state, actions) = run(acme(), &events);
    assert_eq!(state.status, SagaStatus::Cancelled);
    assert!(matches!(
        actions.last(),
        Some(Action::Finish {
            status: SagaStatus::Cancelled
        })
    ));
}

#[test]
fn stock_failure_in_globex_voids_the_authorization() {
    let mut events = through(&globex(), AuthorizePayment);
    events.push(SagaEvent::StepFailed {
        step: ReserveInventory,
        failure: permanent(),
        plan: compensate(vec![VoidPayment]),
    });
    let (state, actions) = run(globex(), &events);
    assert_eq!(state.status, SagaStatus::Compensating);
    assert_eq!(
        actions,
        vec![Action::RunCompensation {
            compensation: VoidPayment,
            attempt: 1,
            delay_ms: 0
        }]
    );
    let (state, actions) = apply(
        &state,
        &SagaEvent::CompensationSucceeded {
            compensation: VoidPayment,
        },
        NOW,
    )
    .expect("legal");
    assert_eq!(state.status, SagaStatus::Cancelled);
    assert_eq!(state.compensated, vec![VoidPayment]);
    assert!(matches!(
        actions.as_slice(),
        [
            Action::Notify { .. },
            Action::Finish {
                status: SagaStatus::Cancelled
            }
        ]
    ));
}

#[test]
fn payment_decline_in_acme_releases_stock() {
    let mut events = through(&acme(), ReserveInventory);
    events.push(SagaEvent::StepFailed {
        step: AuthorizePayment,
        failure: permanent(),
        plan: compensate(vec![ReleaseInventory]),
    });
    let (state, actions) = run(acme(), &events);
    assert_eq!(
        actions,
        vec![Action::RunCompensation {
            compensation: ReleaseInventory,
            attempt: 1,
            delay_ms: 0
        }]
    );
    assert!(matches!(
        state.ending,
        Some(Ending::Failed {
            step: AuthorizePayment,
            ..
        })
    ));
}

#[test]
fn capture_failure_voids_then_releases_in_reverse_order() {
    let mut events = through(&acme(), AuthorizePayment);
    events.push(SagaEvent::StepFailed {
        step: CapturePayment,
        failure: permanent(),
        plan: compensate(vec![VoidPayment, ReleaseInventory]),
    });
    let (state, _) = run(acme(), &events);
    assert_eq!(state.pending, vec![VoidPayment, ReleaseInventory]);
}

#[test]
fn transient_failure_retries_with_the_policy_delay() {
    let mut events = through(&acme(), ReserveInventory);
    events.push(SagaEvent::StepFailed {
        step: AuthorizePayment,
        failure: transient(),
        plan: Plan::Retry { delay_ms: 100 },
    });
    let (state, actions) = run(acme(), &events);
    assert_eq!(state.status, SagaStatus::Running);
    assert_eq!(state.attempt, 2);
    assert_eq!(
        actions,
        vec![Action::RunStep {
            step: AuthorizePayment,
            attempt: 2,
            delay_ms: 100
        }]
    );
    let (state, actions) = apply(&state, &ok(AuthorizePayment), NOW).expect("legal");
    assert_eq!(state.attempt, 1);
    assert_eq!(
        actions,
        vec![Action::RunStep {
            step: CapturePayment,
            attempt: 1,
            delay_ms: 0
        }]
    );
}

#[test]
fn retries_stop_at_the_hard_ceiling_whatever_the_policy_says() {
    let mut events = through(&acme(), ReserveInventory);
    let fail = SagaEvent::StepFailed {
        step: AuthorizePayment,
        failure: transient(),
        plan: Plan::Retry { delay_ms: 1 },
    };
    events.extend(std::iter::repeat_n(
        fail,
        Limits::default().max_step_attempts as usize,
    ));
    let (state, actions) = run(acme(), &events);
    assert_eq!(state.status, SagaStatus::Compensating);
    assert_eq!(
        actions,
        vec![Action::RunCompensation {
            compensation: ReleaseInventory,
            attempt: 1,
            delay_ms: 0
        }]
    );
}

#[test]
fn a_retry_is_never_granted_for_a_permanent_failure() {
    let mut events = through(&acme(), ReserveInventory);
    events.push(SagaEvent::StepFailed {
        step: AuthorizePayment,
        failure: permanent(),
        plan: Plan::Retry { delay_ms: 1 },
    });
    let (state, _) = run(acme(), &events);
    assert_eq!(state.status, SagaStatus::Compensating);
}

#[test]
fn a_retry_past_the_deadline_compensates_instead() {
    let mut events = through(&acme(), ReserveInventory);
    events.push(SagaEvent::StepFailed {
        step: AuthorizePayment,
        failure: transient(),
        plan: Plan::Retry {
            delay_ms: DEADLINE as u64,
        },
    });
    let (state, _) = run(acme(), &events);
    assert_eq!(state.ending, Some(Ending::DeadlineExceeded));
}

#[test]
fn no_forward_step_starts_after_the_deadline() {
    let (state, _) = run(acme(), &through(&acme(), ReserveInventory));
    let (state, actions) = apply(&state, &ok(AuthorizePayment), DEADLINE + 1).expect("legal");
    assert_eq!(state.ending, Some(Ending::DeadlineExceeded));
    assert_eq!(
        actions,
        vec![Action::RunCompensation {
            compensation: VoidPayment,
            attempt: 1,
            delay_ms: 0
        }]
    );
}

#[test]
fn a_plan_that_leaves_stock_held_is_overridden() {
    let mut events = through(&acme(), AuthorizePayment);
    events.push(SagaEvent::StepFailed {
        step: CapturePayment,
        failure: permanent(),
        plan: compensate(vec![VoidPayment]),
    });
    let (state, _) = run(acme(), &events);
    assert_eq!(state.pending, vec![VoidPayment, ReleaseInventory]);
    assert!(resolve_plan(&[ReserveInventory, AuthorizePayment], &[VoidPayment]).1);
    assert_eq!(
        resolve_plan(
            &[ReserveInventory, AuthorizePayment],
            &[ReleaseInventory, VoidPayment]
        ),
        (vec![ReleaseInventory, VoidPayment], false)
    );
    assert!(resolve_plan(&[ReserveInventory], &[ReleaseInventory, ReleaseInventory]).1);
}

#[test]
fn cancel_of_a_confirmed_order_refunds_and_releases() {
    let (state, _) = run(acme(), &through(&acme(), RequestFulfilment));
    let (state, actions) = apply(
        &state,
        &SagaEvent::CancelRequested {
            reason: "changed mind".into(),
        },
        NOW,
    )
    .expect("legal");
    assert_eq!(state.pending, vec![RefundPayment, ReleaseInventory]);
    // The warehouse, asked to fulfil, is told to stop before anything is undone.
    assert_eq!(
        actions,
        vec![
            Action::CancelFulfilment {
                reason: "CANCELLED_BY_CLIENT: changed mind".into()
            },
            Action::RunCompensation {
                compensation: RefundPayment,
                attempt: 1,
                delay_ms: 0
            }
        ]
    );
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
    assert!(matches!(
        actions.last(),
        Some(Action::Finish {
            status: SagaStatus::Cancelled
        })
    ));
}

#[test]
fn cancel_while_a_step_runs_takes_effect_when_it_finishes() {
    let (state, _) = run(acme(), &through(&acme(), ReserveInventory));
    let (state, actions) = apply(
        &state,
        &SagaEvent::CancelRequested { reason: "r".into() },
        NOW,
    )
    .expect("legal");
    assert!(actions.is_empty());
    let (again, actions) = apply(
        &state,
        &SagaEvent::CancelRequested { reason: "r".into() },
        NOW,
    )
    .expect("legal");
    assert!(actions.is_empty());
    assert_eq!(again, state);
    let (state, actions) = apply(&state, &ok(AuthorizePayment), NOW).expect("legal");
    assert_eq!(
        state.ending,
        Some(Ending::CancelledByClient { reason: "r".into() })
    );
    assert_eq!(
        actions,
        vec![Action::RunCompensation {
            compensation: VoidPayment,
            attempt: 1,
            delay_ms: 0
        }]
    );
}

#[test]
fn a_cancelled_step_is_not_retried() {
    let (state, _) = run(acme(), &through(&acme(), ReserveInventory));
    let (state, _) = apply(
        &state,
        &SagaEvent::CancelRequested { reason: "r".into() },
        NOW,
    )
    .expect("legal");
    let fail = SagaEvent::StepFailed {
        step: AuthorizePayment,
        failure: transient(),
        plan: Plan::Retry { delay_ms: 1 },
    };
    let (state, _) = apply(&state, &fail, NOW).expect("legal");
    assert_eq!(state.status, SagaStatus::Compensating);
}

#[test]
fn failed_compensation_backs_off_then_goes_stuck() {
    let mut events = through(&acme(), ReserveInventory);
    events.push(SagaEvent::StepFailed {
        step: AuthorizePayment,
        failure: permanent(),
        plan: compensate(vec![ReleaseInventory]),
    });
    let (mut state, _) = run(acme(), &events);
    let fail = SagaEvent::CompensationFailed {
        compensation: ReleaseInventory,
        failure: transient(),
    };
    let mut delays = Vec::new();
    let mut actions = Vec::new();
    for _ in 0..Limits::default().max_compensation_attempts {
        (state, actions) = apply(&state, &fail, NOW).expect("legal");
        if let [Action::RunCompensation { delay_ms, .. }] = actions.as_slice() {
            delays.push(*delay_ms);
        }
    }
    assert_eq!(state.status, SagaStatus::Stuck);
    assert!(matches!(
        actions.as_slice(),
        [
            Action::Notify { .. },
            Action::Finish {
                status: SagaStatus::Stuck
            }
        ]
    ));
    assert_eq!(&delays[..3], &[200, 400, 800]);
    assert!(delays.windows(2).all(|w| w[0] <= w[1]));
    assert!(
        delays
            .iter()
            .all(|d| *d <= Limits::default().compensation_max_delay_ms)
    );
}

#[test]
fn state_round_trips_through_json() {
    let (state, _) = run(globex(), &through(&globex(), AuthorizePayment));
    let json = serde_json::to_string(&state).expect("serialise");
    let back: SagaState = serde_json::from_str(&json).expect("deserialise");
    assert_eq!(back, state);
}

#[test]
fn the_default_plan_backs_off_then_undoes_in_reverse() {
    let (mut state, _) = run(
        globex(),
        &[ok(Validate), ok(FraudCheck), ok(AuthorizePayment)],
    );
    state.attempt = 1;
    assert_eq!(
        crate::default_plan(&state, &transient()),
        Plan::Retry { delay_ms: 100 }
    );
    state.attempt = 4;
    assert_eq!(
        crate::default_plan(&state, &transient()),
        Plan::Retry { delay_ms: 800 }
    );
    // Out of attempts, or a permanent failure: undo what holds money or stock.
    state.attempt = state.limits.max_step_attempts;
    assert_eq!(
        crate::default_plan(&state, &transient()),
        compensate(vec![VoidPayment])
    );
    state.attempt = 1;
    assert_eq!(
        crate::default_plan(&state, &permanent()),
        compensate(vec![VoidPayment])
    );
}

#[test]
fn only_a_saga_that_requested_fulfilment_tells_the_warehouse_to_stop() {
    let mut events = through(&acme(), CapturePayment);
    events.push(SagaEvent::StepFailed {
        step: RequestFulfilment,
        failure: permanent(),
        plan: compensate(vec![RefundPayment, ReleaseInventory]),
    });
    let (_, actions) = run(acme(), &events);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::CancelFulfilment { .. })),
        "{actions:?}"
    );
}
