//! Undoing: which compensations completed steps require, how a policy's
//! proposal is checked against them, and how a saga turns from going
//! forward to undoing and finishes. Pure, like the rest of the saga.

use super::state::{Action, Ending, Failure, Limits, Plan, SagaState, SagaStatus};
use super::step::{Compensation, Step};

/// The platform's own policy, used when a tenant's compensation policy
/// cannot answer: exponential backoff for transient failures (100 ms
/// doubling to 5 s) while attempts remain, then undo in reverse.
pub fn default_plan(state: &SagaState, failure: &Failure) -> Plan {
    if failure.transient && state.attempt < state.limits.max_step_attempts {
        let shift = state.attempt.saturating_sub(1).min(10);
        Plan::Retry {
            delay_ms: (100u64 << shift).min(5_000),
        }
    } else {
        Plan::Compensate {
            actions: required_compensations(&state.completed),
            notify: vec!["customer".into()],
        }
    }
}

/// A tenant-defined step's own retry policy, from its manifest section: the
/// tenant's compensation policy speaks only of built-in steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepRetry {
    /// Attempts at the step in all (the saga's `max_step_attempts` is still
    /// the ceiling).
    pub max_attempts: u32,
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
}

impl Default for StepRetry {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay_ms: 200,
            max_delay_ms: 10_000,
        }
    }
}

/// The plan for a failed tenant-defined step: retried with doubling
/// backoff while it is transient and attempts remain, else undo in reverse.
pub fn step_plan(state: &SagaState, failure: &Failure, retry: &StepRetry) -> Plan {
    if failure.transient && state.attempt < retry.max_attempts {
        let shift = state.attempt.saturating_sub(1).min(30);
        Plan::Retry {
            delay_ms: retry
                .base_delay_ms
                .saturating_mul(1u64 << shift)
                .min(retry.max_delay_ms),
        }
    } else {
        Plan::Compensate {
            actions: required_compensations(&state.completed),
            notify: vec!["customer".into()],
        }
    }
}

/// Compensations that completed steps require, in reverse order of completion.
pub fn required_compensations(completed: &[Step]) -> Vec<Compensation> {
    let captured = completed.contains(&Step::CapturePayment);
    completed
        .iter()
        .rev()
        .filter_map(|step| match step {
            Step::CapturePayment => Some(Compensation::RefundPayment),
            Step::AuthorizePayment if !captured => Some(Compensation::VoidPayment),
            Step::ReserveInventory => Some(Compensation::ReleaseInventory),
            Step::Custom(name) => Some(Compensation::Custom(*name)),
            _ => None,
        })
        .collect()
}

/// Checks a policy's proposed compensations: it may reorder the built-in
/// ones, but must undo exactly what holds money or stock. A tenant-defined
/// step's compensation keeps its place in the reverse order (the policy's
/// interface names only built-in ones), and the built-in ones fill the
/// other places in the order the policy gave. Returns the plan to run and
/// whether the proposal was overridden.
pub fn resolve_plan(completed: &[Step], proposed: &[Compensation]) -> (Vec<Compensation>, bool) {
    let required = required_compensations(completed);
    let builtin: Vec<Compensation> = required
        .iter()
        .copied()
        .filter(|c| !matches!(c, Compensation::Custom(_)))
        .collect();
    let same_set = proposed.len() == builtin.len()
        && builtin
            .iter()
            .all(|c| proposed.iter().filter(|p| *p == c).count() == 1);
    if !same_set {
        return (required, true);
    }
    let mut proposed = proposed.iter().copied();
    let plan = required
        .iter()
        .map(|c| match c {
            Compensation::Custom(_) => *c,
            _ => proposed.next().unwrap_or(*c),
        })
        .collect();
    (plan, false)
}

pub(super) fn compensation_delay(limits: &Limits, attempt: u32) -> u64 {
    let shift = attempt.saturating_sub(1).min(30);
    limits
        .compensation_base_delay_ms
        .saturating_mul(1u64 << shift)
        .min(limits.compensation_max_delay_ms)
}

/// Stops forward progress and starts undoing, or finishes at once when there
/// is nothing to undo.
pub(super) fn begin_compensation(
    mut state: SagaState,
    ending: Ending,
    proposed: Option<&[Compensation]>,
    notify: Vec<String>,
) -> (SagaState, Vec<Action>) {
    let plan = match proposed {
        Some(p) => resolve_plan(&state.completed, p).0,
        None => required_compensations(&state.completed),
    };
    state.ending = Some(ending);
    state.notify = if notify.is_empty() {
        vec!["customer".into()]
    } else {
        notify
    };
    // The warehouse was asked to fulfil (and did not refuse); it hears
    // first that it must not.
    let asked = state.completed.contains(&Step::RequestFulfilment)
        && !super::fulfilment::is_rejection(&state);
    let stop = asked.then(|| Action::CancelFulfilment {
        reason: state
            .ending
            .as_ref()
            .map(Ending::reason)
            .unwrap_or_default(),
    });
    state.pending = plan;
    state.attempt = 1;
    state.status = SagaStatus::Compensating;
    let (state, actions) = match state.pending.first() {
        Some(&compensation) => (
            state,
            vec![Action::RunCompensation {
                compensation,
                attempt: 1,
                delay_ms: 0,
            }],
        ),
        None => finish_compensation(state),
    };
    (state, stop.into_iter().chain(actions).collect())
}

pub(super) fn finish_compensation(mut state: SagaState) -> (SagaState, Vec<Action>) {
    state.status = match state.ending {
        Some(Ending::Rejected { .. }) => SagaStatus::Rejected,
        _ => SagaStatus::Cancelled,
    };
    let reason = state
        .ending
        .as_ref()
        .map(Ending::reason)
        .unwrap_or_default();
    let actions = vec![
        Action::Notify {
            recipients: state.notify.clone(),
            reason,
        },
        Action::Finish {
            status: state.status,
        },
    ];
    (state, actions)
}
