//! What an operator may do to a saga that needs one: run a stuck saga's
//! failed compensation again now, stop a running saga and undo what it did,
//! or close a stuck saga they settled out of band. Each is refused where the
//! saga's state does not allow it, so of two operators acting on one order
//! at once, the second is refused rather than acting twice.

use super::refunds::RefundStatus;
use super::returns::ReturnStatus;
use super::state::{Action, Ending, SagaState, SagaStatus};

/// A partial refund that failed (declined, or out of attempts) is made
/// again now with a fresh budget; its return is refunding again.
fn retry_refund(mut next: SagaState, at: usize) -> (SagaState, Vec<Action>) {
    let r = &mut next.refunds[at];
    r.status = RefundStatus::Pending;
    r.attempt = 1;
    let id = r.id.clone();
    let mut actions = vec![
        Action::RunRefund {
            refund_id: id.clone(),
            attempt: 1,
            delay_ms: 0,
        },
        Action::RefundChanged {
            refund_id: id.clone(),
        },
    ];
    if let Some(ret) = next.returns.iter_mut().find(|x| x.id == id) {
        ret.status = ReturnStatus::Refunding;
        actions.push(Action::ReturnChanged { return_id: id });
    }
    (next, actions)
}

fn status_of(state: &SagaState) -> &'static str {
    state.status.as_str()
}

/// STUCK → COMPENSATING, its failed compensation run again at once with a
/// fresh budget of attempts.
pub(super) fn retry(
    state: &SagaState,
    mut next: SagaState,
) -> Result<(SagaState, Vec<Action>), String> {
    if state.status != SagaStatus::Stuck
        && let Some(at) = state
            .refunds
            .iter()
            .position(|r| r.status == RefundStatus::Failed)
    {
        return Ok(retry_refund(next, at));
    }
    let (SagaStatus::Stuck, Some(&compensation)) = (state.status, state.pending.first()) else {
        return Err(format!(
            "only a stuck saga or a failed refund is retried; this one is {} with none failed",
            status_of(state)
        ));
    };
    next.status = SagaStatus::Compensating;
    next.attempt = 1;
    let action = Action::RunCompensation {
        compensation,
        attempt: 1,
        delay_ms: 0,
    };
    Ok((next, vec![action]))
}

/// A running saga goes no further: the step in flight finishes (its
/// command is already out), and its outcome turns the saga around, exactly
/// as a client's cancel does.
pub(super) fn compensate(
    state: &SagaState,
    mut next: SagaState,
    reason: &str,
) -> Result<(SagaState, Vec<Action>), String> {
    match state.status {
        SagaStatus::Running if state.awaiting_fulfilment_until.is_some() => {
            let ending = Ending::CancelledByClient {
                reason: format!("stopped by an operator: {reason}"),
            };
            Ok(super::fulfilment::stop_waiting(next, ending))
        }
        SagaStatus::Running if state.cancel_requested.is_none() => {
            next.cancel_requested = Some(format!("stopped by an operator: {reason}"));
            Ok((next, vec![]))
        }
        SagaStatus::Running => Err("the saga is already stopping".into()),
        SagaStatus::Stuck => {
            Err("a stuck saga is already compensating: retry or resolve it".into())
        }
        _ => Err(format!(
            "only a running saga is stopped; this one is {}",
            status_of(state)
        )),
    }
}

/// STUCK → RESOLVED: final. What was still to undo stays recorded in
/// `pending`, beside the operator's reason.
pub(super) fn resolve(
    state: &SagaState,
    mut next: SagaState,
    reason: &str,
) -> Result<(SagaState, Vec<Action>), String> {
    if state.status != SagaStatus::Stuck {
        return Err(format!(
            "only a stuck saga is resolved; this one is {}",
            status_of(state)
        ));
    }
    if reason.trim().is_empty() {
        return Err("resolving needs a reason".into());
    }
    next.status = SagaStatus::Resolved;
    next.resolution = Some(reason.to_owned());
    Ok((
        next,
        vec![Action::Finish {
            status: SagaStatus::Resolved,
        }],
    ))
}
