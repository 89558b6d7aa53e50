//! The saga runner: picks up due commands, carries each out, and commits its
//! outcome. Commands live in the database, so a crash loses none: on restart
//! every command not yet consumed is simply picked up again. One command per
//! order runs at a time.

use super::Platform;
use super::effects::{self, Extras};
use super::metrics::Metrics;
use super::steps::{self, Context, Outcome};
use crate::domain::{OrderDraft, OrderId};
use crate::saga::{self, Action, Failure, SagaEvent, SagaState, SagaStatus, Step};
use crate::store::{CommandRecord, OrderRecord, StoreError, Transition, json};
use crate::tenants::Tenant;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Commands carried out at once.
const CONCURRENCY: usize = 256;
const POLL: Duration = Duration::from_millis(50);
/// How long a command that could not be committed waits before another try.
const RETRY_AFTER_MS: i64 = 1_000;

/// How long a finished command's id is remembered, so a batch read before
/// it finished does not hand it out again.
const TOMBSTONE_MS: i64 = 10_000;

#[derive(Default)]
struct InFlight {
    commands: HashSet<String>,
    orders: HashSet<String>,
    not_before: HashMap<String, i64>,
    finished: HashMap<String, i64>,
}

fn lock(m: &Mutex<InFlight>) -> MutexGuard<'_, InFlight> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) async fn run(p: Arc<Platform>) {
    let inflight = Arc::new(Mutex::new(InFlight::default()));
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    loop {
        let now = crate::now_ms();
        match p.store.due_commands(now, 2 * CONCURRENCY as i64).await {
            Ok(commands) => {
                for cmd in commands {
                    {
                        let mut f = lock(&inflight);
                        if f.commands.contains(&cmd.id)
                            || f.orders.contains(&cmd.order_id)
                            || f.finished.contains_key(&cmd.id)
                            || f.not_before.get(&cmd.id).is_some_and(|t| *t > now)
                        {
                            continue;
                        }
                        f.commands.insert(cmd.id.clone());
                        f.orders.insert(cmd.order_id.clone());
                    }
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        return;
                    };
                    let (p, inflight) = (p.clone(), inflight.clone());
                    tokio::spawn(async move {
                        let done = process(&p, &cmd).await;
                        {
                            let mut f = lock(&inflight);
                            f.commands.remove(&cmd.id);
                            f.orders.remove(&cmd.order_id);
                            if done {
                                f.not_before.remove(&cmd.id);
                                f.finished.insert(cmd.id.clone(), crate::now_ms());
                            } else {
                                f.not_before
                                    .insert(cmd.id.clone(), crate::now_ms() + RETRY_AFTER_MS);
                            }
                        }
                        drop(permit);
                        p.wake.notify_one();
                    });
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading due saga commands failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        {
            let mut f = lock(&inflight);
            if f.finished.len() > 1_000 {
                let cutoff = crate::now_ms() - TOMBSTONE_MS;
                f.finished.retain(|_, at| *at > cutoff);
            }
        }
        tokio::select! {
            _ = p.wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

pub(crate) struct Loaded {
    order: OrderRecord,
    draft: OrderDraft,
    state: SagaState,
}

fn load(order: OrderRecord) -> Result<Loaded, StoreError> {
    let draft = json("order draft", &order.draft)?;
    let state = json("saga state", &order.saga_state)?;
    Ok(Loaded {
        order,
        draft,
        state,
    })
}

/// Carries out one command. `true` when it is finished with (applied, or
/// found already applied); `false` to try again later.
async fn process(p: &Platform, cmd: &CommandRecord) -> bool {
    let (Some(tenant), Some(order_id)) =
        (p.tenants.get(&cmd.tenant_id), OrderId::parse(&cmd.order_id))
    else {
        tracing::error!(command = %cmd.id, tenant = %cmd.tenant_id, order = %cmd.order_id, "command for an unknown tenant or malformed order id");
        return false;
    };
    let action: Action = match serde_json::from_str(&cmd.action) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(command = %cmd.id, error = %e, "undecodable saga command");
            return false;
        }
    };
    // Read the command before the order: while it exists, the order is still
    // in the state it was issued for (both change in one transaction).
    match p.store.command_exists(&cmd.id).await {
        Ok(true) => {}
        Ok(false) => {
            Metrics::inc(&p.metrics.duplicate_deliveries_total);
            return true;
        }
        Err(e) => {
            tracing::warn!(command = %cmd.id, error = %e, "checking a saga command failed");
            return false;
        }
    }
    let loaded = match p.store.order(&tenant.id, &order_id).await.and_then(load) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(order = %order_id, error = %e, "loading the order for a saga command failed");
            return false;
        }
    };
    Metrics::inc(&p.metrics.saga_steps_total);
    let cx = Context {
        tenant,
        order: &loaded.order,
        order_id: &order_id,
        draft: &loaded.draft,
        state: &loaded.state,
    };
    let outcome = match action {
        Action::RunStep { step, .. } => {
            match tokio::time::timeout(tenant.step_timeout, steps::run_step(p, &cx, step)).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    let failure = Failure {
                        code: "STEP_TIMEOUT".into(),
                        message: format!("{step} took longer than {:?}", tenant.step_timeout),
                        transient: true,
                    };
                    steps::failed_step(p, &cx, step, failure, Extras::default()).await
                }
            }
        }
        Action::RunCompensation { compensation, .. } => {
            match tokio::time::timeout(
                tenant.step_timeout,
                steps::run_compensation(p, &cx, compensation),
            )
            .await
            {
                Ok(outcome) => outcome,
                Err(_) => {
                    let failure = Failure {
                        code: "STEP_TIMEOUT".into(),
                        message: format!("{compensation} timed out"),
                        transient: true,
                    };
                    Outcome {
                        event: SagaEvent::CompensationFailed {
                            compensation,
                            failure,
                        },
                        extras: Extras::default(),
                    }
                }
            }
        }
        other => {
            tracing::error!(command = %cmd.id, action = ?other, "action is not a command");
            return false;
        }
    };
    !matches!(
        commit(p, tenant, &order_id, Some(&cmd.id), loaded, outcome).await,
        Committed::Failed
    )
}

/// How committing an outcome ended.
#[derive(Debug)]
pub(crate) enum Committed {
    Applied,
    /// The command was already applied by another delivery.
    Superseded,
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
    for _ in 0..16 {
        let now = crate::now_ms();
        let state = &loaded.state;
        let t = match saga::apply(state, &outcome.event, now) {
            Ok((next, actions)) => {
                let mut data = serde_json::to_value(&outcome.event).unwrap_or(Value::Null);
                if let Value::Object(m) = &mut data {
                    m.insert("attempt".into(), json!(state.attempt));
                }
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
                count(p, state, &next, &actions);
                t
            }
            Err(illegal) if consumes.is_none() => return Committed::Refused(illegal),
            Err(illegal) => {
                let data = json!({ "event": outcome.event, "error": illegal.to_string() });
                Transition {
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
                    now,
                }
            }
        };
        match p.store.commit_transition(&t).await {
            Ok(_)
                if t.events
                    .first()
                    .is_some_and(|(kind, _)| kind == "saga.illegal_transition") =>
            {
                // Counted only now: a refusal of a command that was already
                // applied elsewhere is a duplicate delivery, not an illegal transition.
                Metrics::inc(&p.metrics.illegal_transitions_total);
                tracing::error!(tenant = %tenant.id, order = %order_id, event = %t.events[0].1, "illegal saga transition");
                return Committed::Applied;
            }
            Ok(_) => {
                if !t.commands.is_empty() {
                    p.wake.notify_one();
                }
                if !t.outbox.is_empty() {
                    p.outbox_wake.notify_one();
                }
                return Committed::Applied;
            }
            Err(StoreError::Duplicate) => {
                Metrics::inc(&p.metrics.duplicate_deliveries_total);
                return Committed::Superseded;
            }
            Err(StoreError::Conflict) => {
                Metrics::inc(&p.metrics.commit_conflicts_total);
                match p.store.order(&tenant.id, order_id).await.and_then(load) {
                    Ok(l) => loaded = l,
                    Err(e) => {
                        tracing::warn!(order = %order_id, error = %e, "re-reading the order failed");
                        return Committed::Failed;
                    }
                }
            }
            Err(StoreError::InsufficientStock { sku }) => {
                let cx = Context {
                    tenant,
                    order: &loaded.order,
                    order_id,
                    draft: &loaded.draft,
                    state: &loaded.state,
                };
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
    Committed::Failed
}

fn count(p: &Platform, before: &SagaState, after: &SagaState, actions: &[Action]) {
    if after.status == before.status && after.attempt > before.attempt {
        Metrics::inc(&p.metrics.step_retries_total);
    }
    for a in actions {
        if let Action::Finish { status } = a {
            let counter = match status {
                SagaStatus::Completed => &p.metrics.sagas_completed_total,
                SagaStatus::Rejected => &p.metrics.sagas_rejected_total,
                SagaStatus::Cancelled => &p.metrics.sagas_cancelled_total,
                _ => &p.metrics.sagas_stuck_total,
            };
            Metrics::inc(counter);
        }
    }
}

pub(crate) use Loaded as LoadedOrder;
pub(crate) fn load_order(order: OrderRecord) -> Result<LoadedOrder, StoreError> {
    load(order)
}
