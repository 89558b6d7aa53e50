//! The saga runner: picks up due commands, carries each out, and commits its
//! outcome. Commands live in the database, so a crash loses none: on restart
//! every command not yet consumed is simply picked up again. One command per
//! order runs at a time.

use super::Platform;
use super::commit::{Committed, Followup, Loaded, commit, load};
use super::effects::Extras;
use super::metrics::Metrics;
use super::steps::{self, Outcome};
use crate::tenants::Tenant;
use oms_domain::OrderId;
use oms_plugin_host::shares::TenantShares;
use oms_saga::{Action, Failure, SagaEvent};
use oms_store::CommandRecord;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

mod dispatch;
pub(crate) mod run_ahead;
mod step_metrics;
pub(crate) use dispatch::run;

/// Commands carried out at once. A running saga spends most of its time
/// waiting (for its group commit, for the provider), not on a CPU: at 64
/// slots a tenant, one busy tenant left this 2-core host about a fifth
/// idle. What bounds CPU is the plugin host's calls (128 at once, 32 a
/// tenant); a slot costs a task and an order in memory.
const CONCURRENCY: usize = 512;
/// Commands of one tenant carried out at once: a quarter of the runner.
const TENANT_CONCURRENCY: usize = CONCURRENCY / 4;
/// How often the dispatcher sweeps for due commands nobody handed over:
/// retries whose delay ran out, work left by a crash, commands from the API.
const SWEEP: Duration = Duration::from_millis(50);
/// How long a command that could not be committed waits before another try.
const RETRY_AFTER_MS: i64 = 1_000;
/// How long a rescued saga's chain waits for its next command (a retry's
/// backoff): well under the 15 s after which an overdue command is rescued,
/// so no other host takes it meanwhile.
const RESCUE_WAITS_MS: i64 = 10_000;
/// How long before the last sweep's start a finished command's id is still
/// remembered, so a sweep that read it before it finished does not hand it
/// out again (which would only run it to find it applied). Sweeps read
/// after they start, so none needs an older one; the margin is for the
/// wall clock stepping back. At saturation the host finishes thousands of
/// commands a second: ten seconds of them were a map of 60,000 ids.
const TOMBSTONE_MS: i64 = 1_000;

#[derive(Default)]
struct InFlight {
    commands: HashSet<String>,
    orders: HashSet<String>,
    not_before: HashMap<String, i64>,
    finished: HashMap<String, i64>,
    /// Tenants with due commands left in the database for want of room:
    /// a chain of theirs that ends wakes the dispatcher to start the next.
    backlogged: HashSet<String>,
}

/// Which commands are being carried out, and how many may be at once.
pub struct Runner {
    inflight: Mutex<InFlight>,
    permits: Arc<Semaphore>,
    /// Each tenant's share of `permits`.
    tenant_permits: TenantShares,
    /// A backlogged tenant's chain ended: its slot is free.
    refill: tokio::sync::Notify,
    steps: step_metrics::StepMetrics,
}

impl Default for Runner {
    fn default() -> Self {
        Self {
            inflight: Mutex::default(),
            permits: Arc::new(Semaphore::new(CONCURRENCY)),
            tenant_permits: TenantShares::new(TENANT_CONCURRENCY),
            refill: tokio::sync::Notify::new(),
            steps: step_metrics::StepMetrics::default(),
        }
    }
}

impl Runner {
    fn lock(&self) -> MutexGuard<'_, InFlight> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether no command or order is in flight here.
#[cfg(test)]
pub(crate) fn idle(p: &Platform) -> bool {
    let f = p.runner.lock();
    f.commands.is_empty() && f.orders.is_empty()
}

/// The tenant's share of the runner's slots.
#[cfg(test)]
pub(crate) fn tenant_share(p: &Platform, tenant: &str) -> Arc<Semaphore> {
    p.runner.tenant_permits.of(tenant)
}

/// Slots of one tenant's share.
#[cfg(test)]
pub(crate) const TENANT_SLOTS: u32 = TENANT_CONCURRENCY as u32;

/// Starts carrying out `cmd`, and then each next command of its saga that is
/// due at once, unless a command of the same order is already running.
/// `preloaded` is the order as the caller just committed it, which saves
/// reading it back. `false` when it was not started (already running, or
/// no room: the dispatcher's next sweep finds it).
pub(crate) fn submit(p: &Arc<Platform>, cmd: CommandRecord, preloaded: Option<Loaded>) -> bool {
    let now = oms_clock::now_ms();
    // Only with a slot free now, the tenant's and the runner's: a saga
    // that would have to wait stays in the database, where the dispatcher
    // finds it when there is room. Orders accepted faster than their sagas
    // run so wait on disk, not as tasks in memory (the host's memory stays
    // flat however far behind it is).
    let no_room = || {
        let mut f = p.runner.lock();
        if !f.backlogged.contains(&cmd.tenant_id) {
            f.backlogged.insert(cmd.tenant_id.clone());
        }
        false
    };
    let Ok(share) = p
        .runner
        .tenant_permits
        .of(&cmd.tenant_id)
        .try_acquire_owned()
    else {
        return no_room();
    };
    let Ok(permit) = p.runner.permits.clone().try_acquire_owned() else {
        return no_room();
    };
    {
        let mut f = p.runner.lock();
        if f.commands.contains(&cmd.id)
            || f.orders.contains(&cmd.order_id)
            || f.finished.contains_key(&cmd.id)
            || f.not_before.get(&cmd.id).is_some_and(|t| *t > now)
        {
            return false;
        }
        f.commands.insert(cmd.id.clone());
        f.orders.insert(cmd.order_id.clone());
    }
    let platform = p.clone();
    p.spawn_work(async move {
        chain(
            &platform,
            cmd,
            preloaded,
            Mode::Dispatched,
            Some((share, permit)),
        )
        .await
    });
    true
}

/// How a chain was started, which decides what it does with a command it
/// cannot finish now and which commands of the saga it goes on to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// From the dispatcher or a commit (in-process): an unfinished command
    /// is left to a later sweep; the chain goes on while this host owns the
    /// order.
    Dispatched,
    /// A message from the consumer group: retried here with backoff, since
    /// its offset must not move on before it is applied.
    Delivered,
    /// Rescued from the database because its message never came: retried
    /// here, and the whole saga run (its partition may have no live owner).
    Rescued,
}

/// The one chain loop, for both transports: under the tenant's share of the
/// runner and then a runner slot (so a tenant whose steps are slow waits on
/// its own share and holds no slot another tenant could use), carries out
/// `first`, then each next command of its saga that is due at once. The
/// caller has marked the order and `first` in flight; the order stays
/// marked for the whole chain, so nobody else is handed its commands.
async fn chain(
    p: &Arc<Platform>,
    first: CommandRecord,
    preloaded: Option<Loaded>,
    mode: Mode,
    held: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
) {
    let mut slots = match held {
        Some((share, permit)) => (Ok(share), Ok(permit)),
        None => slots(p, &first.tenant_id).await,
    };
    let order = first.order_id.clone();
    let (mut current, mut preloaded) = (first, preloaded);
    let mut failures = 0u32;
    loop {
        let (done, follow) = process(p, &current, preloaded.take()).await;
        if !done && mode != Mode::Dispatched {
            failures = failures.saturating_add(1);
            tokio::time::sleep(super::relay::backoff(failures)).await;
            continue;
        }
        failures = 0;
        let next = {
            let mut f = p.runner.lock();
            f.commands.remove(&current.id);
            if mode == Mode::Dispatched {
                // The dispatcher's bookkeeping (it prunes these as it sweeps).
                let now = oms_clock::now_ms();
                if done {
                    f.not_before.remove(&current.id);
                    f.finished.insert(current.id.clone(), now);
                } else {
                    f.not_before
                        .insert(current.id.clone(), now + RETRY_AFTER_MS);
                }
            }
            match follow {
                Some(next) if goes_on(p, mode, &order, next.command.available_at) => {
                    f.commands.insert(next.command.id.clone());
                    Some(*next)
                }
                _ => None,
            }
        };
        let Some(next) = next else { break };
        let wait = next.command.available_at - oms_clock::now_ms();
        if wait > 0 {
            // Waiting holds no slot another saga could use.
            drop(slots);
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            slots = self::slots(p, &next.command.tenant_id).await;
            // Read afresh: the order may have changed meanwhile (a cancel).
            preloaded = None;
        } else {
            preloaded = Some(next.loaded);
        }
        current = next.command;
    }
    let backlogged = {
        let mut f = p.runner.lock();
        f.orders.remove(&order);
        f.backlogged.contains(&current.tenant_id)
    };
    drop(slots);
    if backlogged {
        // Its slot is free: the dispatcher starts the tenant's next saga now,
        // not at its next sweep.
        p.runner.refill.notify_one();
    }
}

type Slot = Result<OwnedSemaphorePermit, tokio::sync::AcquireError>;

/// The tenant's share of the runner, then a runner slot (in that order, so
/// a tenant whose steps are slow waits on its own share holding no slot).
async fn slots(p: &Platform, tenant: &str) -> (Slot, Slot) {
    let share = p.runner.tenant_permits.of(tenant).acquire_owned().await;
    (share, p.runner.permits.clone().acquire_owned().await)
}

/// Whether a chain goes on to its saga's next command, due at `due`.
/// Delivered or dispatched: only one due now, and with Kafka only while this
/// host holds the order's partition (otherwise the command's message reaches
/// its owner; a delayed one is published when due). Rescued: its partition
/// may have no live owner, so nobody else runs the command before it is
/// overdue too; the chain waits for it (a retry's backoff) rather than leave
/// each retry to another rescue, unless it is further off than the rescue
/// looks back (a fulfilment deadline), where a later rescue finds it.
fn goes_on(p: &Platform, mode: Mode, order: &str, due: i64) -> bool {
    let wait = due - oms_clock::now_ms();
    match mode {
        Mode::Rescued => wait <= RESCUE_WAITS_MS,
        Mode::Dispatched | Mode::Delivered => wait <= 0 && p.transport.owns(order),
    }
}

/// Kafka mode: carries out a command delivered by the consumer group, and
/// the saga's next commands while this host owns the order (or all of them,
/// with `whole_saga`, for a command rescued because its message never came:
/// its partition may have no live owner); returns once the delivered command
/// is applied (or found applied before). A failure to commit (database down)
/// is retried here with capped, jittered backoff, so the message's offset is
/// not committed meanwhile.
pub(crate) async fn deliver(p: &Arc<Platform>, cmd: CommandRecord, whole_saga: bool) {
    let order = cmd.order_id.clone();
    // One command per order at a time in this process.
    loop {
        {
            let mut f = p.runner.lock();
            if f.orders.insert(order.clone()) {
                f.commands.insert(cmd.id.clone());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mode = if whole_saga {
        Mode::Rescued
    } else {
        Mode::Delivered
    };
    chain(p, cmd, None, mode, None).await;
}

/// Carries out one command. `true` when it is finished with (applied, or
/// found already applied); `false` to try again later.
pub(crate) async fn process(
    p: &Platform,
    cmd: &CommandRecord,
    preloaded: Option<Loaded>,
) -> (bool, Option<Box<Followup>>) {
    let (Some(tenant), Some(order_id)) =
        (p.tenants.get(&cmd.tenant_id), OrderId::parse(&cmd.order_id))
    else {
        tracing::error!(command = %cmd.id, tenant = %cmd.tenant_id, order = %cmd.order_id, "command for an unknown tenant or malformed order id");
        return (false, None);
    };
    let action: Action = match serde_json::from_str(&cmd.action) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(command = %cmd.id, error = %e, "undecodable saga command");
            return (false, None);
        }
    };
    let loaded = match preloaded {
        Some(loaded) => loaded,
        None => {
            // The command and its order in one read: while the command
            // exists, the order is in the state it was issued for.
            match p
                .store
                .order_for_command(&tenant.id, &order_id, &cmd.id)
                .await
            {
                Ok(None) => {
                    Metrics::inc(&p.metrics.duplicate_deliveries_total);
                    return (true, None);
                }
                Ok(Some(order)) => match load(order) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(order = %order_id, error = %e, "loading the order for a saga command failed");
                        return (false, None);
                    }
                },
                Err(e) => {
                    tracing::warn!(command = %cmd.id, order = %order_id, error = %e, "reading a saga command's order failed");
                    return (false, None);
                }
            }
        }
    };
    Metrics::inc(&p.metrics.saga_steps_total);
    let step_label = match &action {
        Action::RunStep { step, .. } => step.to_string(),
        Action::RunCompensation { compensation, .. } => compensation.to_string(),
        Action::AwaitFulfilment { .. } => "fulfilment-deadline".into(),
        Action::RunRefund { .. } => "partial-refund".into(),
        _ => String::new(),
    };
    // A span per attempt of a step, in the order's trace: continued from
    // the trace it was placed in, wherever and whenever it runs (or from
    // the consumed message's span, which is in that trace too).
    let span = step_span(&tenant, &order_id, &step_label, loaded.state.attempt, false);
    if oms_trace::current().is_none() {
        oms_trace::continue_from(&span, loaded.order.trace_parent.as_deref());
    }
    // The trace id on every line logged in the step: the exported trace's,
    // else the one stored with the order, else the one derived from the
    // order id that its Kafka messages carry when nothing is exported.
    let trace = oms_trace::of(&span)
        .or_else(|| loaded.order.trace_parent.clone())
        .unwrap_or_else(|| crate::transport::kafka::traceparent(order_id.as_str(), ""));
    if let Some(id) = oms_trace::trace_id(&trace) {
        span.record("trace_id", id);
    }
    run_command(p, &tenant, &order_id, cmd, action, loaded, step_label)
        .instrument(span)
        .await
}

/// Runs one step or compensation of a loaded order and commits what came of it.
/// The span of one attempt of a step or compensation, in the order's
/// trace; `ahead` when it ran ahead of its own command, with the step
/// before it (see [`run_ahead`]).
pub(crate) fn step_span(
    tenant: &Tenant,
    order_id: &OrderId,
    label: &str,
    attempt: u32,
    ahead: bool,
) -> tracing::Span {
    tracing::info_span!(
        "saga.step",
        otel.name = %format!("step {label}"),
        tenant = %tenant.id,
        order_id = %order_id,
        step = %label,
        attempt,
        ahead,
        outcome = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    )
}

async fn run_command(
    p: &Platform,
    tenant: &Arc<Tenant>,
    order_id: &OrderId,
    cmd: &CommandRecord,
    action: Action,
    loaded: Loaded,
    step_label: String,
) -> (bool, Option<Box<Followup>>) {
    let cx = loaded.context(tenant, order_id);
    let started = std::time::Instant::now();
    let ran_step = matches!(action, Action::RunStep { .. });
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
        Action::RunRefund { refund_id, .. } => {
            match tokio::time::timeout(tenant.step_timeout, steps::run_refund(p, &cx, &refund_id))
                .await
            {
                Ok(outcome) => outcome,
                Err(_) => Outcome {
                    event: SagaEvent::RefundFailed {
                        refund_id,
                        failure: Failure {
                            code: "STEP_TIMEOUT".into(),
                            message: "the refund timed out".into(),
                            transient: true,
                        },
                    },
                    extras: Extras::default(),
                },
            }
        }
        // The warehouse's time to answer is up (unless it answered already).
        Action::AwaitFulfilment { .. } => Outcome {
            event: SagaEvent::FulfilmentDeadlinePassed,
            extras: Extras::default(),
        },
        other => {
            tracing::error!(command = %cmd.id, action = ?other, "action is not a command");
            return (false, None);
        }
    };
    // Every attempt of a step or compensation, by how it came out
    // (`step.succeeded`, `step.failed`, `compensation.failed`, …).
    p.runner.steps.record(
        tenant.id.as_str(),
        &step_label,
        outcome.event.name(),
        started.elapsed().as_secs_f64(),
    );
    tracing::Span::current().record("outcome", outcome.event.name());
    // A failed attempt is worth a line: operators search the log by order or trace.
    match &outcome.event {
        SagaEvent::StepFailed { failure, .. } | SagaEvent::CompensationFailed { failure, .. } => {
            tracing::info!(code = %failure.code, transient = failure.transient, reason = %failure.message, "saga step failed");
        }
        _ => {}
    }
    let committed = if ran_step {
        // The saga's next steps, if they reach nothing outside, commit with this one.
        let run = run_ahead::ahead(p, tenant, order_id, &loaded, outcome).await;
        run_ahead::commit(p, tenant, order_id, &cmd.id, loaded, run).await
    } else {
        commit(p, tenant, order_id, Some(&cmd.id), loaded, outcome).await
    };
    match committed {
        Committed::Applied(follow) => (true, follow),
        Committed::Superseded | Committed::Unchanged | Committed::Refused(_) => (true, None),
        Committed::Failed => (false, None),
    }
}
