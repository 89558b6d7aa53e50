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
            _ => None,
        })
        .collect()
}

/// Checks a policy's proposed compensations: it may reorder them, but must undo
/// exactly what holds money or stock. Returns the plan to run and whether the
/// proposal was overridden.
pub fn resolve_plan(completed: &[Step], proposed: &[Compensation]) -> (Vec<Compensation>, bool) {
    let required = required_compensations(completed);
    let same_set = proposed.len() == required.len()
        && required
            .iter()
            .all(|c| proposed.iter().filter(|p| *p == c).count() == 1);
    if same_set {
        (proposed.to_vec(), false)
    } else {
        (required, true)
    }
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
