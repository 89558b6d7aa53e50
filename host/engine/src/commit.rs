//! Committing a saga event: applied to the order's saga state, turned into
//! one transition and written under the order's version check; after a
//! concurrent change, applied again to the state re-read, so every decision
//! holds for the state it is written on. Used by the runner for its
//! commands' outcomes and by the API for clients' events (cancel, ship,
//! deliver).

use super::Platform;
use super::effects::{self, Extras};
use super::metrics::Metrics;
use super::steps::{self, Context, Outcome};
use crate::tenants::Tenant;
use oms_domain::{OrderDraft, OrderId};
use oms_saga::{self as saga, Action, Failure, SagaState, SagaStatus, Step};
use oms_store::{CommandRecord, OrderRecord, StoreError, Transition, json};
use serde_json::{Value, json};
use std::sync::atomic::AtomicU64;

/// How many version conflicts a commit goes through before it gives up.
/// Only a bug makes it that far (see `commit`). Counted, not timed: each
/// conflict is another transition of the order committed, which is
/// progress, however slowly a loaded database makes it (a time limit turned
/// a burst of requests on a busy database into `503`s).
const MAX_CONFLICTS: u32 = 200;

pub(crate) struct Loaded {
    pub(crate) order: OrderRecord,
    pub(crate) draft: OrderDraft,
    pub(crate) state: SagaState,
}

impl Loaded {
    /// What a step of `tenant` sees of this order.
    pub(crate) fn context<'a>(&'a self, tenant: &'a Tenant, order_id: &'a OrderId) -> Context<'a> {
        Context {
            tenant,
            order: &self.order,
            order_id,
            draft: &self.draft,
            state: &self.state,
        }
    }

    pub(crate) fn new(order: OrderRecord, draft: OrderDraft, state: SagaState) -> Self {
        Self {
            order,
            draft,
            state,
        }
    }
}

pub(crate) fn load(order: OrderRecord) -> Result<Loaded, StoreError> {
    let draft = json("order draft", &order.draft)?;
    let state = json("saga state", &order.saga_state)?;
    Ok(Loaded {
        order,
        draft,
        state,
    })
}

/// The next command of a saga, which the task that just committed it may
/// carry out itself (at once if it is due now): the row is already durable,
/// and the task knows the order's new state (a stale copy is caught by the
/// version check).
pub(crate) struct Followup {
    pub(crate) command: CommandRecord,
    pub(crate) loaded: Loaded,
}

/// How committing an outcome ended.
pub(crate) enum Committed {
    /// Recorded; with the saga's next command when it is due now.
    Applied(Option<Box<Followup>>),
    /// The command was already applied by another delivery.
    Superseded,
    /// The event changed nothing (only for events from the API): not written.
    Unchanged,
    /// The saga refused the event (only for events from the API; a command's
    /// refusal is recorded in the order's history instead).
    Refused(saga::IllegalTransition),
    /// Not recorded; try again later.
    Failed,
}

/// Applies `outcome` to the saga and commits it, re-reading the order after
/// a concurrent change.
pub(crate) async fn commit(
    p: &Platform,
    tenant: &Tenant,
    order_id: &OrderId,
    consumes: Option<&str>,
    mut loaded: Loaded,
    mut outcome: Outcome,
) -> Committed {
    // Every conflict means another transition of this order committed, and
    // an order has only so many (its steps, their bounded retries, one
    // cancel, one shipment, one delivery; repeats that change nothing write
    // nothing), so this ends; the bound only guards against a bug.
    let mut conflicts = 0u32;
    loop {
        let now = oms_clock::now_ms();
        // What this decision counts, once it is committed (a decision lost
        // to a concurrent change is decided again and counted then).
        let mut counted = Vec::new();
        let mut finished = None;
        let state = &loaded.state;
        let (t, next_state) = match saga::apply(state, &outcome.event, now) {
            // A request that changes nothing (a repeated cancel) writes
            // nothing, so it cannot collide with the transitions that matter.
            Ok((next, actions)) if consumes.is_none() && actions.is_empty() && next == *state => {
                return Committed::Unchanged;
            }
            Ok((next, actions)) => {
                // A command that finds nothing to do (a fulfilment timer after
                // the warehouse answered) is only consumed: no history entry.
                let idle = actions.is_empty() && next == *state;
                let data = entry(&outcome.event, state.attempt);
                let t = effects::transition(
                    &tenant.id,
                    order_id,
                    loaded.order.version,
                    consumes.map(str::to_owned),
                    &next,
                    (outcome.event.name(), data),
                    &actions,
                    outcome.extras.clone(),
                    now,
                );
                let t = if idle {
                    Transition {
                        events: vec![],
                        patch: Default::default(),
                        ..t
                    }
                } else {
                    t
                };
                counted = counters(p, state, &next, &actions);
                finished = actions.iter().find_map(|a| match a {
                    Action::Finish { status } => Some(*status),
                    _ => None,
                });
                (t, Some(next))
            }
            Err(illegal) if consumes.is_none() => return Committed::Refused(illegal),
            Err(illegal) => {
                let data = json!({ "event": outcome.event, "error": illegal.to_string() });
                let t = Transition {
                    tenant: tenant.id.clone(),
                    order_id: order_id.clone(),
                    expected_version: loaded.order.version,
                    consumes: consumes.map(str::to_owned),
                    inventory: None,
                    patch: Default::default(),
                    events: vec![("saga.illegal_transition".into(), data)],
                    commands: vec![],
                    outbox: vec![],
                    payment: None,
                    step_state: vec![],
                    now,
                    trace_parent: oms_trace::current(),
                };
                (t, None)
            }
        };
        let mut t = t;
        if let saga::SagaEvent::Postponed { delay_ms, .. } = &outcome.event {
            // The engine already spread the delay out and it must not come
            // back early (the breaker would only postpone it again): no jitter.
            for c in &mut t.commands {
                c.available_at = now.saturating_add(*delay_ms as i64);
            }
        }
        if p.transport.carries_commands() {
            // Only the runner chains; a command from the API goes out at once.
            let grace = if consumes.is_some() && p.transport.owns(order_id.as_str()) {
                effects::LOCAL_GRACE_MS
            } else {
                0
            };
            effects::carry_commands(&mut t, grace);
        }
        // Shared with the store's writer, read again here once committed.
        let t = std::sync::Arc::new(t);
        match p.store.commit_shared(t.clone()).await {
            Ok(_)
                if t.events
                    .first()
                    .is_some_and(|(kind, _)| kind == "saga.illegal_transition") =>
            {
                // Counted only now: a refusal of a command that was already
                // applied elsewhere is a duplicate delivery, not an illegal transition.
                Metrics::inc(&p.metrics.illegal_transitions_total);
                tracing::error!(tenant = %tenant.id, order = %order_id, event = %t.events[0].1, "illegal saga transition");
                return Committed::Applied(None);
            }
            Ok(version) => {
                let done = Done {
                    counted,
                    finished,
                    now,
                };
                return applied(
                    p, tenant, order_id, consumes, loaded, &t, next_state, version, done,
                );
            }
            Err(StoreError::Duplicate) => {
                Metrics::inc(&p.metrics.duplicate_deliveries_total);
                return Committed::Superseded;
            }
            Err(StoreError::Conflict) => {
                Metrics::inc(&p.metrics.commit_conflicts_total);
                conflicts += 1;
                if conflicts > MAX_CONFLICTS {
                    tracing::error!(tenant = %tenant.id, order = %order_id, conflicts, "the order kept changing concurrently; giving up");
                    return Committed::Failed;
                }
                // Past the first few, spread the contenders out (full jitter).
                if conflicts > 2 {
                    tokio::time::sleep(oms_clock::backoff(conflicts, 1, 64)).await;
                }
                match p.store.order(&tenant.id, order_id).await.and_then(load) {
                    Ok(l) => loaded = l,
                    Err(e) => {
                        tracing::warn!(order = %order_id, error = %e, "re-reading the order failed");
                        return Committed::Failed;
                    }
                }
            }
            Err(StoreError::InsufficientStock { sku }) => {
                let cx = loaded.context(tenant, order_id);
                let failure = Failure {
                    code: "OUT_OF_STOCK".into(),
                    message: format!("not enough stock of {sku}"),
                    transient: false,
                };
                outcome =
                    steps::failed_step(p, &cx, Step::ReserveInventory, failure, Extras::default())
                        .await;
            }
            Err(e) => {
                tracing::warn!(tenant = %tenant.id, order = %order_id, error = %e, "committing a saga transition failed; will retry");
                return Committed::Failed;
            }
        }
    }
}

/// A saga event's history entry: the event, at the attempt it was decided
/// in, without the order's own lines and amounts (in the order already).
pub(crate) fn entry(event: &saga::SagaEvent, attempt: u32) -> Value {
    let mut data =
        serde_json::to_value(event).expect("a saga event serialises: plain data with string keys");
    if let Value::Object(m) = &mut data {
        m.insert("attempt".into(), json!(attempt));
        m.remove("book");
    }
    data
}

/// What a committed decision counts once it is durable.
pub(crate) struct Done<'p> {
    pub(crate) counted: Vec<&'p AtomicU64>,
    pub(crate) finished: Option<SagaStatus>,
    pub(crate) now: i64,
}

/// After `t` committed at `version`: its counters, the saga's duration when
/// it finished, the relay's and dispatcher's wake-ups, and the saga's next
/// command for the runner to go on with.
#[allow(clippy::too_many_arguments)]
pub(crate) fn applied(
    p: &Platform,
    tenant: &Tenant,
    order_id: &OrderId,
    consumes: Option<&str>,
    loaded: Loaded,
    t: &Transition,
    next_state: Option<SagaState>,
    version: i64,
    done: Done<'_>,
) -> Committed {
    for counter in done.counted {
        Metrics::inc(counter);
    }
    if let Some(status) = done.finished {
        // Placed to finished (or stuck), on whichever host got there.
        metrics::histogram!(
            "oms_saga_duration_seconds",
            "tenant" => tenant.id.to_string(),
            "outcome" => status.as_str(),
        )
        .record((done.now - loaded.order.created_at).max(0) as f64 / 1000.0);
    }
    if !t.outbox.is_empty() {
        p.outbox_wake.notify_one();
    }
    let follow = match (next_state, t.commands.as_slice()) {
        // Only the runner chains; the API leaves new work to the
        // dispatcher. A delayed command too: the chain decides
        // whether to wait for it (see `runner::chain`).
        (Some(state), [c]) if consumes.is_some() => {
            let mut order = loaded.order;
            patched(&mut order, t, version);
            let command = CommandRecord {
                id: c.id.clone(),
                tenant_id: tenant.id.to_string(),
                order_id: order_id.to_string(),
                action: c.action.clone(),
                available_at: c.available_at,
            };
            Some(Box::new(Followup {
                command,
                loaded: Loaded {
                    order,
                    draft: loaded.draft,
                    state,
                },
            }))
        }
        (_, commands) => {
            if !commands.is_empty() {
                p.wake.notify_one();
            }
            None
        }
    };
    Committed::Applied(follow)
}

/// The order row as `t` left it, without reading it back.
pub(crate) fn patched(order: &mut OrderRecord, t: &Transition, version: i64) {
    t.patch.apply_to(order);
    order.version = version;
    order.event_seq += t.events.len() as i64;
    order.updated_at = t.now;
}

/// The counters a transition from `before` to `after` moves.
pub(crate) fn counters<'p>(
    p: &'p Platform,
    before: &SagaState,
    after: &SagaState,
    actions: &[Action],
) -> Vec<&'p AtomicU64> {
    let mut counted = Vec::new();
    if after.status == before.status && after.attempt > before.attempt {
        counted.push(&p.metrics.step_retries_total);
    }
    for a in actions {
        if let Action::Finish { status } = a {
            let counter = match status {
                SagaStatus::Completed => &p.metrics.sagas_completed_total,
                SagaStatus::Rejected => &p.metrics.sagas_rejected_total,
                SagaStatus::Cancelled => &p.metrics.sagas_cancelled_total,
                SagaStatus::Resolved => &p.metrics.sagas_resolved_total,
                _ => &p.metrics.sagas_stuck_total,
            };
            counted.push(counter);
        }
    }
    counted
}

pub(crate) use Loaded as LoadedOrder;
pub(crate) fn load_order(order: OrderRecord) -> Result<LoadedOrder, StoreError> {
    load(order)
}
