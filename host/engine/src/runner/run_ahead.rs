//! Running a saga's next steps ahead of their commit: when a step succeeds
//! and the saga's next step reaches nothing outside the host (the
//! guardrail, the fraud check, the stock reservation, the fulfilment
//! request, a tenant's step without outbound HTTP), the runner carries it
//! out at once, on the state the first outcome leads to, and commits every
//! outcome of the run together: one transaction, one order row write, one
//! command consumed, every step's history entry. A saga of seven steps so
//! commits three or four times instead of seven.
//!
//! Why this keeps the saga's guarantees: only the first step of a run may
//! have an effect outside (a payment call), and its command is durable
//! before it runs; the steps run ahead only produce rows that go into the
//! run's one transaction (a hold, state writes, outbox messages). If the
//! host dies before that commits, nothing of the run is written, and the
//! first command runs again from the start, as it would without running
//! ahead. If the commit cannot be made as a whole (a concurrent cancel moved
//! the order on, the stock a hold needed is gone), only the first outcome
//! is committed, the usual way (re-read and decided again); what ran ahead
//! is dropped and runs again as its own command if the saga still wants it.

use super::Platform;
use crate::commit::{self, Committed, Done, Loaded, applied, counters, entry};
use crate::effects::{self, Extras};
use crate::metrics::Metrics;
use crate::steps::{self, Context, Outcome};
use crate::tenants::Tenant;
use oms_domain::OrderId;
use oms_saga::{self as saga, Action, SagaEvent, SagaState, Step};
use oms_store::{OrderPatch, StoreError, Transition};
use std::sync::Arc;
use tracing::Instrument;

/// Steps committed together at most, the first one included.
const MAX_RUN: usize = 8;

/// What the saga decided on one outcome of a run.
struct Decision {
    before: SagaState,
    after: SagaState,
    actions: Vec<Action>,
}

/// A command's outcome and the outcomes of the steps run ahead after it;
/// `decisions[i]` is the saga's decision on the i-th outcome (the last
/// one's is made when the run commits).
pub(crate) struct Run {
    first: Outcome,
    ahead: Vec<Outcome>,
    decisions: Vec<Decision>,
}

impl Run {
    /// How many steps ran ahead of the first.
    #[cfg(test)]
    pub(crate) fn ahead(&self) -> usize {
        self.ahead.len()
    }
}

/// Whether `step` may run ahead of the commit of the steps before it in a
/// run: it reaches nothing outside the host, and (a tenant's step) reads no
/// state an earlier step of the run wrote and has not committed yet.
fn local(tenant: &Tenant, step: Step, state_written: bool) -> bool {
    match step {
        Step::Validate | Step::FraudCheck | Step::ReserveInventory | Step::RequestFulfilment => {
            true
        }
        Step::AuthorizePayment | Step::CapturePayment => false,
        Step::Custom(name) => {
            !state_written && tenant.steps.get(&name).is_some_and(|s| s.shadowable())
        }
    }
}

/// Carries out the saga's next steps after `first` while each is local and
/// due at once. Every step run here is timed and counted like one run from
/// its own command.
pub(crate) async fn ahead(
    p: &Platform,
    tenant: &Tenant,
    order_id: &OrderId,
    loaded: &Loaded,
    first: Outcome,
) -> Run {
    let mut run = Run {
        first,
        ahead: Vec::new(),
        decisions: Vec::new(),
    };
    let now = oms_clock::now_ms();
    let mut state = loaded.state.clone();
    let mut order = loaded.order.clone();
    let mut state_written = !run.first.extras.step_state.is_empty();
    let mut holds = run.first.extras.inventory.is_some();
    while run.decisions.len() + 1 < MAX_RUN {
        let last = run.ahead.last().unwrap_or(&run.first);
        if !matches!(last.event, SagaEvent::StepSucceeded { .. }) {
            break;
        }
        let Ok((after, actions)) = saga::apply(&state, &last.event, now) else {
            break;
        };
        let next = match actions.as_slice() {
            [
                Action::RunStep {
                    step, delay_ms: 0, ..
                },
            ] => *step,
            _ => break,
        };
        if !local(tenant, next, state_written) {
            break;
        }
        // What the next step reads of the order besides the saga state.
        order.saga_status = after.status.as_str().into();
        order.payment_status = effects::payment_status(&after).as_str().into();
        order.fulfillment_status = effects::fulfillment_status(&after).as_str().into();
        let cx = Context {
            tenant,
            order: &order,
            order_id,
            draft: &loaded.draft,
            state: &after,
        };
        let label = next.to_string();
        let span = super::step_span(tenant, order_id, &label, after.attempt, true);
        let started = std::time::Instant::now();
        let ran = tokio::time::timeout(tenant.step_timeout, steps::run_step(p, &cx, next))
            .instrument(span.clone())
            .await;
        // Out of time, it runs again from its own command: nothing it did
        // is kept.
        let Ok(outcome) = ran else { break };
        Metrics::inc(&p.metrics.saga_steps_total);
        p.runner.steps.record(
            tenant.id.as_str(),
            &label,
            outcome.event.name(),
            started.elapsed().as_secs_f64(),
        );
        span.record("outcome", outcome.event.name());
        let Extras {
            inventory,
            payment,
            step_state,
            ..
        } = &outcome.extras;
        // One transition holds one inventory change and one payment.
        if (inventory.is_some() && holds) || payment.is_some() {
            break;
        }
        holds |= inventory.is_some();
        state_written |= !step_state.is_empty();
        let before = std::mem::replace(&mut state, after);
        run.decisions.push(Decision {
            before,
            after: state.clone(),
            actions,
        });
        run.ahead.push(outcome);
    }
    run
}

/// Commits `run` as one transition consuming `consumes`; when that cannot
/// be done as a whole, commits its first outcome alone (see the module).
pub(crate) async fn commit(
    p: &Platform,
    tenant: &Tenant,
    order_id: &OrderId,
    consumes: &str,
    loaded: Loaded,
    run: Run,
) -> Committed {
    if run.ahead.is_empty() {
        return commit::commit(p, tenant, order_id, Some(consumes), loaded, run.first).await;
    }
    let now = oms_clock::now_ms();
    let last = run.ahead.last().unwrap_or(&run.first);
    let before = run.decisions.last().map_or(&loaded.state, |d| &d.after);
    let Ok((after, actions)) = saga::apply(before, &last.event, now) else {
        return commit::commit(p, tenant, order_id, Some(consumes), loaded, run.first).await;
    };
    let finished = actions.iter().find_map(|a| match a {
        Action::Finish { status } => Some(*status),
        _ => None,
    });
    let last_decision = Decision {
        before: before.clone(),
        after: after.clone(),
        actions,
    };
    let mut counted = Vec::new();
    let mut merged: Option<Transition> = None;
    let outcomes = std::iter::once(&run.first).chain(run.ahead.iter());
    let decisions = run.decisions.iter().chain(std::iter::once(&last_decision));
    for (outcome, d) in outcomes.zip(decisions) {
        let t = effects::transition(
            &tenant.id,
            order_id,
            loaded.order.version,
            Some(consumes.to_owned()),
            &d.after,
            (
                outcome.event.name(),
                entry(&outcome.event, d.before.attempt),
            ),
            &d.actions,
            outcome.extras.clone(),
            now,
        );
        counted.extend(counters(p, &d.before, &d.after, &d.actions));
        merged = Some(match merged {
            None => t,
            Some(earlier) => then(earlier, t),
        });
    }
    let Some(mut t) = merged else {
        return commit::commit(p, tenant, order_id, Some(consumes), loaded, run.first).await;
    };
    if p.transport.carries_commands() {
        let grace = if p.transport.owns(order_id.as_str()) {
            effects::LOCAL_GRACE_MS
        } else {
            0
        };
        effects::carry_commands(&mut t, grace);
    }
    let t = Arc::new(t);
    match p.store.commit_shared(t.clone()).await {
        Ok(version) => {
            let done = Done {
                counted,
                finished,
                now,
            };
            applied(
                p,
                tenant,
                order_id,
                Some(consumes),
                loaded,
                &t,
                Some(after),
                version,
                done,
            )
        }
        Err(StoreError::Duplicate) => {
            Metrics::inc(&p.metrics.duplicate_deliveries_total);
            Committed::Superseded
        }
        // The order moved on, or a hold found its stock gone: the first
        // step alone may still commit, decided again as `commit` does.
        Err(e @ (StoreError::Conflict | StoreError::InsufficientStock { .. })) => {
            tracing::debug!(order = %order_id, error = %e, steps = run.ahead.len() + 1, "a run of steps did not commit as a whole; committing its first step alone");
            commit::commit(p, tenant, order_id, Some(consumes), loaded, run.first).await
        }
        // The store is not answering: the command is left for a later try,
        // and the run with it.
        Err(e) => {
            tracing::warn!(tenant = %tenant.id, order = %order_id, error = %e, "committing a run of saga steps failed; will retry");
            Committed::Failed
        }
    }
}

/// `earlier` and then `later`, as one transition: every history entry and
/// message of both, the later one's commands (the earlier one's next step
/// has run already), and each order column as the later one leaves it.
fn then(mut earlier: Transition, later: Transition) -> Transition {
    earlier.events.extend(later.events);
    earlier.commands = later.commands;
    earlier.outbox.extend(later.outbox);
    earlier.step_state.extend(later.step_state);
    earlier.inventory = later.inventory.or(earlier.inventory);
    earlier.payment = later.payment.or(earlier.payment);
    let OrderPatch {
        status,
        payment_status,
        fulfillment_status,
        violations,
        cancellation_reason,
        shipment,
        saga_state,
        saga_status,
    } = later.patch;
    let patch = &mut earlier.patch;
    for (column, value) in [
        (&mut patch.status, status),
        (&mut patch.payment_status, payment_status),
        (&mut patch.fulfillment_status, fulfillment_status),
        (&mut patch.violations, violations),
        (&mut patch.cancellation_reason, cancellation_reason),
        (&mut patch.shipment, shipment),
        (&mut patch.saga_state, saga_state),
        (&mut patch.saga_status, saga_status),
    ] {
        if value.is_some() {
            *column = value;
        }
    }
    earlier.now = later.now;
    earlier
}
