//! The warehouse's answer to a fulfilment request. A tenant whose warehouse
//! answers (`Limits::fulfilment_decision_ms`) has the request-fulfilment
//! step wait once the request is out: acceptance confirms the order; a
//! rejection, or no answer in time, undoes what the saga did (refund,
//! release, notify). Like shipping, the answer is an event of this machine,
//! so an answer and a cancel are decided against one state: whichever
//! commits first wins, and the other is refused.

use super::compensation::begin_compensation;
use super::state::{Action, Ending, FulfilmentDecision, SagaState, SagaStatus};
use super::step::Step;

/// The request is out: wait for the answer until `now + decision_ms`.
pub(super) fn await_answer(
    mut next: SagaState,
    now: i64,
    decision_ms: u64,
) -> (SagaState, Vec<Action>) {
    let until = now.saturating_add(i64::try_from(decision_ms).unwrap_or(i64::MAX));
    next.awaiting_fulfilment_until = Some(until);
    next.attempt = 1;
    (next, vec![Action::AwaitFulfilment { until }])
}

pub(super) fn is_rejection(state: &SagaState) -> bool {
    matches!(
        state.fulfilment_decision,
        Some(FulfilmentDecision {
            accepted: false,
            ..
        })
    )
}

/// The warehouse's answer. Refused (with the client's reason) unless the
/// saga waits for it; the same answer given again changes nothing.
pub(super) fn decide(
    state: &SagaState,
    mut next: SagaState,
    decision: &FulfilmentDecision,
) -> Result<(SagaState, Vec<Action>), String> {
    if state.awaiting_fulfilment_until.is_none() {
        return match (&state.fulfilment_decision, state.status) {
            // A warehouse repeating itself (a retried request) is answered as the first time.
            (Some(given), _) if given.accepted == decision.accepted => Ok((next, vec![])),
            (Some(given), SagaStatus::Completed) if given.accepted => {
                Err("the warehouse already accepted the order; cancel it instead".into())
            }
            (Some(_), _) => Err("the warehouse already rejected the order".into()),
            (None, SagaStatus::Completed) => {
                Err("the order was confirmed without waiting for the warehouse's answer".into())
            }
            (None, SagaStatus::Running) if state.cancel_requested.is_some() => {
                Err("the order is being cancelled".into())
            }
            (None, SagaStatus::Running) => Err("fulfilment has not been requested yet".into()),
            (None, SagaStatus::Compensating | SagaStatus::Cancelled) => {
                Err("the order is being cancelled or was cancelled".into())
            }
            (None, status) => Err(format!(
                "an order whose saga is {} takes no fulfilment answer",
                status.as_str()
            )),
        };
    }
    next.awaiting_fulfilment_until = None;
    next.fulfilment_decision = Some(decision.clone());
    if decision.accepted {
        next.position += 1;
        next.attempt = 1;
        next.status = SagaStatus::Completed;
        return Ok((
            next,
            vec![Action::Finish {
                status: SagaStatus::Completed,
            }],
        ));
    }
    // The warehouse will not fulfil, so it is not told to stop.
    let ending = Ending::Failed {
        step: Step::RequestFulfilment,
        code: "FULFILMENT_REJECTED".into(),
        message: decision
            .reason
            .clone()
            .unwrap_or_else(|| "the warehouse rejected the order".into()),
    };
    Ok(begin_compensation(next, ending, None, vec![]))
}

/// The timer set by [`await_answer`]: past `until` with no answer, the saga
/// turns back and the warehouse is told to stop. An answer that came first
/// leaves nothing to do; a timer that fires early is set again.
pub(super) fn deadline_passed(
    state: &SagaState,
    mut next: SagaState,
    now: i64,
) -> (SagaState, Vec<Action>) {
    match (state.status, state.awaiting_fulfilment_until) {
        (SagaStatus::Running, Some(until)) if now >= until => {
            next.awaiting_fulfilment_until = None;
            let ending = Ending::Failed {
                step: Step::RequestFulfilment,
                code: "FULFILMENT_DEADLINE_EXCEEDED".into(),
                message: "the warehouse did not answer in time".into(),
            };
            begin_compensation(next, ending, None, vec![])
        }
        (SagaStatus::Running, Some(until)) => (next, vec![Action::AwaitFulfilment { until }]),
        _ => (next, vec![]),
    }
}

/// A cancel (client or operator) while the saga waits for the warehouse:
/// nothing is running to finish first, so undoing starts now.
pub(super) fn stop_waiting(mut next: SagaState, ending: Ending) -> (SagaState, Vec<Action>) {
    next.awaiting_fulfilment_until = None;
    begin_compensation(next, ending, None, vec![])
}
