//! The saga state machine: `apply(state, event, now) -> (state, actions)`.
//!
//! Pure: no clock (the caller passes `now`), no randomness (retry delays are
//! upper bounds; the executor draws the full jitter), no I/O. Every transition
//! not listed here is an [`IllegalTransition`], which the caller logs and
//! counts; nothing is silently skipped.

use super::compensation::{begin_compensation, compensation_delay, finish_compensation};
pub use super::compensation::{required_compensations, resolve_plan};
use super::fulfilment;
use super::handover;
use super::operator;
use super::refunds;
use super::returns;
pub use super::state::{
    Action, Ending, Failure, FulfilmentDecision, Handover, IllegalTransition, Limits, Plan,
    SagaEvent, SagaState, SagaStatus, Shipment,
};
use super::step::{Compensation, SagaDefinition, Step};

/// A new saga and its first action.
pub fn start(
    definition: SagaDefinition,
    limits: Limits,
    deadline_at: i64,
) -> (SagaState, Vec<Action>) {
    let first = definition.steps()[0];
    let state = SagaState {
        definition,
        limits,
        status: SagaStatus::Running,
        position: 0,
        attempt: 1,
        completed: Vec::new(),
        pending: Vec::new(),
        compensated: Vec::new(),
        ending: None,
        cancel_requested: None,
        notify: Vec::new(),
        payment_reference: None,
        deadline_at,
        handover: Handover::NotShipped,
        shipments: Vec::new(),
        awaiting_fulfilment_until: None,
        fulfilment_decision: None,
        returns: Vec::new(),
        refunds: Vec::new(),
        cancelled_items: Vec::new(),
        outputs: Vec::new(),
        resolution: None,
    };
    (
        state,
        vec![Action::RunStep {
            step: first,
            attempt: 1,
            delay_ms: 0,
        }],
    )
}

fn illegal(state: &SagaState, event: &SagaEvent, detail: impl Into<String>) -> IllegalTransition {
    IllegalTransition {
        status: state.status,
        event: event.name(),
        detail: detail.into(),
    }
}

/// Applies one event. `now` is epoch milliseconds, used for the saga deadline.
pub fn apply(
    state: &SagaState,
    event: &SagaEvent,
    now: i64,
) -> Result<(SagaState, Vec<Action>), IllegalTransition> {
    let mut next = state.clone();
    match event {
        SagaEvent::StepSucceeded {
            step,
            provider_reference,
            output,
        } => {
            expect_step(state, event, *step)?;
            next.completed.push(*step);
            if *step == Step::AuthorizePayment {
                next.payment_reference.clone_from(provider_reference);
            }
            if let (Some(_), Some(output)) = (step.custom(), output) {
                next.outputs.push((*step, output.clone()));
            }
            if let Some(reason) = next.cancel_requested.clone() {
                return Ok(begin_compensation(
                    next,
                    Ending::CancelledByClient { reason },
                    None,
                    vec![],
                ));
            }
            if *step == Step::RequestFulfilment
                && let Some(ms) = next.limits.fulfilment_decision_ms
            {
                return Ok(fulfilment::await_answer(next, now, ms));
            }
            next.position += 1;
            next.attempt = 1;
            match next.definition.steps().get(next.position).copied() {
                None => {
                    next.status = SagaStatus::Completed;
                    Ok((
                        next,
                        vec![Action::Finish {
                            status: SagaStatus::Completed,
                        }],
                    ))
                }
                Some(_) if now > next.deadline_at => Ok(begin_compensation(
                    next,
                    Ending::DeadlineExceeded,
                    None,
                    vec![],
                )),
                Some(step) => Ok((
                    next,
                    vec![Action::RunStep {
                        step,
                        attempt: 1,
                        delay_ms: 0,
                    }],
                )),
            }
        }
        SagaEvent::StepRejected { step, code, reason } => {
            expect_step(state, event, *step)?;
            let ending = Ending::Rejected {
                step: *step,
                code: code.clone(),
                reason: reason.clone(),
            };
            Ok(begin_compensation(next, ending, None, vec![]))
        }
        SagaEvent::StepFailed {
            step,
            failure,
            plan,
        } => {
            expect_step(state, event, *step)?;
            let may_retry = failure.transient
                && state.attempt < state.limits.max_step_attempts
                && state.cancel_requested.is_none();
            match plan {
                Plan::Retry { delay_ms }
                    if may_retry && now.saturating_add(*delay_ms as i64) <= state.deadline_at =>
                {
                    next.attempt += 1;
                    let action = Action::RunStep {
                        step: *step,
                        attempt: next.attempt,
                        delay_ms: *delay_ms,
                    };
                    Ok((next, vec![action]))
                }
                Plan::Retry { .. } if may_retry => Ok(begin_compensation(
                    next,
                    Ending::DeadlineExceeded,
                    None,
                    vec![],
                )),
                Plan::Retry { .. } => {
                    let ending = failed(*step, failure);
                    Ok(begin_compensation(next, ending, None, vec![]))
                }
                Plan::Compensate { actions, notify } => {
                    let ending = match &state.cancel_requested {
                        Some(reason) => Ending::CancelledByClient {
                            reason: reason.clone(),
                        },
                        None => failed(*step, failure),
                    };
                    Ok(begin_compensation(
                        next,
                        ending,
                        Some(actions),
                        notify.clone(),
                    ))
                }
            }
        }
        SagaEvent::CompensationSucceeded { compensation } => {
            expect_compensation(state, event, *compensation)?;
            next.pending.remove(0);
            next.compensated.push(*compensation);
            next.attempt = 1;
            match next.pending.first() {
                Some(&compensation) => Ok((
                    next,
                    vec![Action::RunCompensation {
                        compensation,
                        attempt: 1,
                        delay_ms: 0,
                    }],
                )),
                None => Ok(finish_compensation(next)),
            }
        }
        SagaEvent::CompensationFailed {
            compensation,
            failure,
        } => {
            expect_compensation(state, event, *compensation)?;
            if state.attempt < state.limits.max_compensation_attempts {
                next.attempt += 1;
                let delay_ms = compensation_delay(&state.limits, state.attempt);
                let action = Action::RunCompensation {
                    compensation: *compensation,
                    attempt: next.attempt,
                    delay_ms,
                };
                return Ok((next, vec![action]));
            }
            next.status = SagaStatus::Stuck;
            let reason = format!(
                "{compensation} failed {} times, last: {}: {}; needs an operator",
                state.attempt, failure.code, failure.message
            );
            Ok((
                next,
                vec![
                    Action::Notify {
                        recipients: vec!["ops".into()],
                        reason,
                    },
                    Action::Finish {
                        status: SagaStatus::Stuck,
                    },
                ],
            ))
        }
        SagaEvent::CancelRequested { reason } => match state.status {
            SagaStatus::Running if state.awaiting_fulfilment_until.is_some() => {
                let ending = Ending::CancelledByClient {
                    reason: reason.clone(),
                };
                Ok(fulfilment::stop_waiting(next, ending))
            }
            SagaStatus::Running if state.cancel_requested.is_none() => {
                // The running step finishes first; its outcome then turns the saga around.
                next.cancel_requested = Some(reason.clone());
                Ok((next, vec![]))
            }
            // Already on its way out: a repeated cancel changes nothing.
            SagaStatus::Running | SagaStatus::Compensating | SagaStatus::Cancelled => {
                Ok((next, vec![]))
            }
            // Goods that left are not undone by refunding: that is a return.
            SagaStatus::Completed if state.handover != Handover::NotShipped => Err(illegal(
                state,
                event,
                format!("the order has {}", state.handover.past_tense()),
            )),
            SagaStatus::Completed => {
                let ending = Ending::CancelledByClient {
                    reason: reason.clone(),
                };
                Ok(begin_compensation(next, ending, None, vec![]))
            }
            SagaStatus::Rejected => Err(illegal(state, event, "the order was rejected")),
            SagaStatus::Stuck => Err(illegal(
                state,
                event,
                "the order's saga is stuck and needs an operator",
            )),
            SagaStatus::Resolved => Err(illegal(
                state,
                event,
                "an operator resolved the order's saga",
            )),
        },
        SagaEvent::Shipped {
            shipment,
            order_items,
        } => handover::ship(state, next, shipment, order_items)
            .map_err(|detail| illegal(state, event, detail)),
        SagaEvent::Delivered => {
            handover::deliver(state, next).map_err(|detail| illegal(state, event, detail))
        }
        SagaEvent::FulfilmentDecided { decision } => fulfilment::decide(state, next, decision)
            .map_err(|detail| illegal(state, event, detail)),
        SagaEvent::FulfilmentDeadlinePassed => Ok(fulfilment::deadline_passed(state, next, now)),
        SagaEvent::OperatorRetry { .. } => {
            operator::retry(state, next).map_err(|detail| illegal(state, event, detail))
        }
        SagaEvent::OperatorCompensate { reason, .. } => operator::compensate(state, next, reason)
            .map_err(|detail| illegal(state, event, detail)),
        SagaEvent::OperatorResolve { reason, .. } => {
            operator::resolve(state, next, reason).map_err(|detail| illegal(state, event, detail))
        }
        SagaEvent::Postponed { delay_ms, .. } => postpone(state, event, next, *delay_ms, now),
        SagaEvent::ReturnRequested {
            return_id,
            items,
            reason,
            book,
        } => returns::request(state, next, return_id, items, reason, book, now)
            .map_err(|detail| illegal(state, event, detail)),
        SagaEvent::ReturnReceived {
            return_id,
            items,
            warehouse_id,
            book,
        } => returns::receive(state, next, return_id, items, warehouse_id, book, now)
            .map_err(|detail| illegal(state, event, detail)),
        SagaEvent::LinesCancelled {
            refund_id,
            items,
            reason,
            book,
        } => refunds::cancel_lines(state, next, refund_id, items, reason, book)
            .map_err(|detail| illegal(state, event, detail)),
        SagaEvent::RefundSucceeded {
            refund_id,
            provider_reference,
        } => refunds::refund_outcome(state, next, refund_id, Ok(provider_reference))
            .map_err(|detail| illegal(state, event, detail)),
        SagaEvent::RefundFailed { refund_id, failure } => {
            refunds::refund_outcome(state, next, refund_id, Err(failure))
                .map_err(|detail| illegal(state, event, detail))
        }
    }
}

/// The running step or compensation again after `delay_ms`, at the same
/// attempt. A forward step is not postponed past the saga's deadline (the
/// saga turns back then, as after a retry would); a compensation is, since
/// it must run in the end.
fn postpone(
    state: &SagaState,
    event: &SagaEvent,
    next: SagaState,
    delay_ms: u64,
    now: i64,
) -> Result<(SagaState, Vec<Action>), IllegalTransition> {
    let attempt = state.attempt;
    match (state.status, state.current_step(), state.pending.first()) {
        (SagaStatus::Running, Some(_), _) if state.cancel_requested.is_some() => {
            let reason = state.cancel_requested.clone().unwrap_or_default();
            Ok(begin_compensation(
                next,
                Ending::CancelledByClient { reason },
                None,
                vec![],
            ))
        }
        (SagaStatus::Running, Some(_), _)
            if now.saturating_add(delay_ms as i64) > state.deadline_at =>
        {
            Ok(begin_compensation(
                next,
                Ending::DeadlineExceeded,
                None,
                vec![],
            ))
        }
        (SagaStatus::Running, Some(step), _) => Ok((
            next,
            vec![Action::RunStep {
                step,
                attempt,
                delay_ms,
            }],
        )),
        (SagaStatus::Compensating, _, Some(&compensation)) => Ok((
            next,
            vec![Action::RunCompensation {
                compensation,
                attempt,
                delay_ms,
            }],
        )),
        _ => Err(illegal(state, event, "nothing is running to postpone")),
    }
}

fn failed(step: Step, failure: &Failure) -> Ending {
    Ending::Failed {
        step,
        code: failure.code.clone(),
        message: failure.message.clone(),
    }
}

fn expect_step(state: &SagaState, event: &SagaEvent, step: Step) -> Result<(), IllegalTransition> {
    match state.current_step() {
        Some(current) if current == step => Ok(()),
        Some(current) => Err(illegal(
            state,
            event,
            format!("{step} reported while {current} is running"),
        )),
        None => Err(illegal(
            state,
            event,
            format!("{step} reported while no step is running"),
        )),
    }
}

fn expect_compensation(
    state: &SagaState,
    event: &SagaEvent,
    c: Compensation,
) -> Result<(), IllegalTransition> {
    match (state.status, state.pending.first()) {
        (SagaStatus::Compensating, Some(head)) if *head == c => Ok(()),
        (_, head) => Err(illegal(
            state,
            event,
            format!("{c} reported while {head:?} is running"),
        )),
    }
}

#[cfg(test)]
mod custom_step_tests;
#[cfg(test)]
mod fulfilment_tests;
#[cfg(test)]
mod handover_tests;
#[cfg(test)]
mod operator_tests;
#[cfg(test)]
mod postpone_tests;
#[cfg(test)]
mod refusal_tests;
#[cfg(test)]
mod returns_tests;
#[cfg(test)]
mod shipment_tests;
#[cfg(test)]
mod tests;
