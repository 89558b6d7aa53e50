//! Calling a plugin: one fresh instance per call, inline or on a call thread,
//! under the tenant's share of the host, fuel, an epoch deadline, memory
//! and instance limits and a bounded log; the answer checked against the
//! slot's contract (`answers`) and the call recorded in the tenant's stats.

pub use super::bindings::reconciliation::exports::oms::plugin::payment_status::{
    PaymentState, ProviderPayment, RetrieveError,
};
use super::bindings::{self, fraud, guardrail, payment, policy, step};
use super::http::HttpGrant;
use super::step_state::{CallStepState, StateOp};
use super::{
    CallLimits, CallState, CallStats, Called, EPOCH_TICK, Plugin, PluginError, PluginHost, Pre,
    answers, log, shape,
};
use oms_domain::wire_enum;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, StoreLimitsBuilder, Trap};
use wasmtime_wasi::WasiCtx;

impl PluginHost {
    /// Runs `f` against a fresh instance (inline or on a call thread), under
    /// `limits`, refuses an answer `check` finds over the output limit or
    /// outside the contract, and records the call in the tenant's stats and log.
    async fn call<R, F>(
        &self,
        tenant: &str,
        plugin: &Arc<Plugin>,
        limits: CallLimits,
        grants: Grants,
        check: fn(&R, usize) -> Result<(), PluginError>,
        f: F,
    ) -> Result<Called<R>, PluginError>
    where
        R: Send + 'static,
        F: Fn(&mut Store<CallState>, &Plugin) -> wasmtime::Result<R> + Send + 'static,
    {
        // The tenant's share first, then the host's: a tenant at its limit
        // queues behind itself without holding a slot anyone else could use.
        let share = self.tenant_permits.of(tenant);
        let _share = share
            .acquire_owned()
            .await
            .map_err(|e| PluginError::Unavailable(e.to_string()))?;
        let _permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| PluginError::Unavailable(e.to_string()))?;
        let engine = self.engine.clone();
        let running = plugin.clone();
        // The call's span, a child of the step's; entered on the blocking
        // thread too, so the provider requests it makes are its children.
        let span = tracing::info_span!(
            "plugin.call",
            otel.name = %format!("plugin {}", plugin.slot.as_str()),
            tenant,
            slot = plugin.slot.as_str(),
            version = plugin.version(),
            fuel = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
            outcome = tracing::field::Empty,
            inline = tracing::field::Empty,
        );
        // A deterministic slot (no outbound HTTP: its answer depends on its
        // arguments alone) first runs right here, with at most INLINE_FUEL:
        // a call of a few thousand instructions then costs no hand-off to
        // another thread. One that needs more is run again from the start
        // on a call thread (`threads`) with its whole budget; what the first try did
        // is thrown away, and it held this thread for at most INLINE_FUEL.
        //
        // A guest that writes to its log cannot run here: WASI's synchronous
        // streams block on the Tokio runtime, which a runtime thread may not
        // do (Tokio panics). That panic is caught, the call run again on a
        // call thread, and the version marked to go there from now on.
        //
        // A custom step reads its state from the database while it runs,
        // so it always runs on a call thread.
        let inline = grants.http.is_none()
            && grants.step_state.is_none()
            && !plugin.threaded()
            && !needs_own_thread(&limits);
        let (result, stats) = if inline {
            let sliced = CallLimits {
                fuel: limits.fuel.min(INLINE_FUEL),
                ..limits
            };
            let _entered = span.enter();
            let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_call(&self.engine, plugin, sliced, Grants::default(), &f)
            }));
            match attempt {
                Ok((Err(PluginError::OutOfFuel), stats)) if limits.fuel > INLINE_FUEL => {
                    (None, stats)
                }
                Ok((result, stats)) => (Some(result), stats),
                Err(_) => {
                    plugin.needs_thread();
                    tracing::warn!(
                        tenant,
                        slot = plugin.slot.as_str(),
                        version = plugin.version(),
                        "plugin writes to its log: its calls run on a call thread from now on"
                    );
                    (None, CallStats::default())
                }
            }
        } else {
            (None, CallStats::default())
        };
        span.record("inline", result.is_some());
        let (result, stats) = match result {
            Some(result) => (result, stats),
            None => {
                let inside = span.clone();
                self.threads
                    .run(move || {
                        let _entered = inside.enter();
                        run_call(&engine, &running, limits, grants, &f)
                    })
                    .await
                    .map_err(|e| PluginError::Unavailable(e.to_string()))?
            }
        };
        // The host never carries an unbounded answer into the saga or the database.
        let result = result.and_then(|value| check(&value, limits.output_bytes).map(|()| value));
        // As a signed integer: OpenTelemetry has no unsigned one (a u64 would
        // be exported as a string).
        span.record("fuel", i64::try_from(stats.fuel_used).unwrap_or(i64::MAX));
        span.record("duration_ms", stats.duration.as_secs_f64() * 1000.0);
        span.record(
            "outcome",
            result.as_ref().map_or_else(PluginError::code, |_| "ok"),
        );
        self.stats.observe(
            tenant,
            plugin.slot,
            plugin.version(),
            result.as_ref().map(|_| ()),
            &stats,
        );
        result.map(|value| Called { value, stats })
    }

    pub async fn validate(
        &self,
        tenant: &str,
        plugin: &Arc<Plugin>,
        limits: CallLimits,
        order: bindings::Order,
        settings: Vec<(String, String)>,
    ) -> Result<
        Called<Result<(), Vec<guardrail::exports::oms::plugin::order_rules::Violation>>>,
        PluginError,
    > {
        self.call(
            tenant,
            plugin,
            limits,
            Grants::default(),
            answers::guardrail,
            move |store, plugin| match &plugin.pre {
                Pre::Guardrail(pre) => {
                    let instance = pre.instantiate(&mut *store)?;
                    ready(store);
                    instance
                        .oms_plugin_order_rules()
                        .call_validate(&mut *store, &order, &settings)
                }
                _ => Err(wasmtime::Error::msg("not a guardrail")),
            },
        )
        .await
    }

    pub async fn assess(
        &self,
        tenant: &str,
        plugin: &Arc<Plugin>,
        limits: CallLimits,
        order: bindings::Order,
        context: fraud::exports::oms::plugin::risk::CustomerContext,
        settings: Vec<(String, String)>,
    ) -> Result<Called<fraud::exports::oms::plugin::risk::Assessment>, PluginError> {
        self.call(
            tenant,
            plugin,
            limits,
            Grants::default(),
            answers::fraud,
            move |store, plugin| match &plugin.pre {
                Pre::Fraud(pre) => {
                    let instance = pre.instantiate(&mut *store)?;
                    ready(store);
                    instance
                        .oms_plugin_risk()
                        .call_assess(&mut *store, &order, context, &settings)
                }
                _ => Err(wasmtime::Error::msg("not a fraud check")),
            },
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn pay(
        &self,
        tenant: &str,
        plugin: &Arc<Plugin>,
        limits: CallLimits,
        grant: HttpGrant,
        op: PaymentOp,
        request: payment::exports::oms::plugin::provider::PaymentRequest,
        settings: Vec<(String, String)>,
    ) -> Result<
        Called<Result<String, payment::exports::oms::plugin::provider::PaymentError>>,
        PluginError,
    > {
        self.call(
            tenant,
            plugin,
            limits,
            Grants::http(grant),
            answers::payment,
            move |store, plugin| match &plugin.pre {
                Pre::Payment { operations, .. } => {
                    let instance = operations.instantiate(&mut *store)?;
                    ready(store);
                    let provider = instance.oms_plugin_provider();
                    match op {
                        PaymentOp::Authorize => {
                            provider.call_authorize(&mut *store, &request, &settings)
                        }
                        PaymentOp::Capture => {
                            provider.call_capture(&mut *store, &request, &settings)
                        }
                        PaymentOp::Void => provider.call_void(&mut *store, &request, &settings),
                        PaymentOp::Refund => provider.call_refund(&mut *store, &request, &settings),
                    }
                }
                _ => Err(wasmtime::Error::msg("not a payment provider")),
            },
        )
        .await
    }

    /// The payment as the provider holds it now, through the adapter's
    /// `payment-status`; `Ok(None)` when the adapter does not export it.
    pub async fn retrieve(
        &self,
        tenant: &str,
        plugin: &Arc<Plugin>,
        limits: CallLimits,
        grant: HttpGrant,
        provider_reference: String,
        settings: Vec<(String, String)>,
    ) -> Result<Option<Called<Result<ProviderPayment, RetrieveError>>>, PluginError> {
        if !matches!(
            &plugin.pre,
            Pre::Payment {
                status: Some(_),
                ..
            }
        ) {
            return Ok(None);
        }
        self.call(
            tenant,
            plugin,
            limits,
            Grants::http(grant),
            answers::payment_status,
            move |store, plugin| match &plugin.pre {
                Pre::Payment {
                    operations,
                    status: Some(status),
                } => {
                    let instance = operations.instance_pre().instantiate(&mut *store)?;
                    let exports = status.load(&mut *store, &instance)?;
                    ready(store);
                    exports.oms_plugin_payment_status().call_retrieve(
                        &mut *store,
                        &provider_reference,
                        &settings,
                    )
                }
                _ => Err(wasmtime::Error::msg("not a reconcilable payment provider")),
            },
        )
        .await
        .map(Some)
    }

    /// Runs a custom step's `run` (its output) or `compensate` (nothing),
    /// with `state` as its view of the step's state and `grant` its
    /// network. The state writes come back with the answer; a call that
    /// fails returns none.
    #[allow(clippy::too_many_arguments)]
    pub async fn step(
        &self,
        tenant: &str,
        plugin: &Arc<Plugin>,
        limits: CallLimits,
        grant: Option<HttpGrant>,
        state: CallStepState,
        which: StepCall,
        order: bindings::Order,
        context: step::exports::oms::plugin::custom_step::StepContext,
        settings: Vec<(String, String)>,
    ) -> Result<Called<StepAnswer<String>>, PluginError> {
        self.call(
            tenant,
            plugin,
            limits,
            Grants {
                http: grant,
                step_state: Some(state),
            },
            answers::step,
            move |store, plugin| match &plugin.pre {
                Pre::Step(pre) => {
                    let instance = pre.instantiate(&mut *store)?;
                    ready(store);
                    let exports = instance.oms_plugin_custom_step();
                    let result = match &which {
                        StepCall::Run => {
                            exports.call_run(&mut *store, &order, &context, &settings)?
                        }
                        StepCall::Compensate(output) => exports
                            .call_compensate(&mut *store, &order, &context, output, &settings)?
                            .map(|()| String::new()),
                    };
                    let writes = store
                        .data_mut()
                        .step_state
                        .take()
                        .map(CallStepState::into_writes)
                        .unwrap_or_default();
                    Ok(StepAnswer { result, writes })
                }
                _ => Err(wasmtime::Error::msg("not a saga step")),
            },
        )
        .await
    }

    pub async fn decide(
        &self,
        tenant: &str,
        plugin: &Arc<Plugin>,
        limits: CallLimits,
        failure: policy::exports::oms::plugin::policy::Failure,
        saga: policy::exports::oms::plugin::policy::SagaView,
        settings: Vec<(String, String)>,
    ) -> Result<Called<policy::exports::oms::plugin::policy::Plan>, PluginError> {
        self.call(
            tenant,
            plugin,
            limits,
            Grants::default(),
            answers::policy,
            move |store, plugin| match &plugin.pre {
                Pre::Policy(pre) => {
                    let instance = pre.instantiate(&mut *store)?;
                    ready(store);
                    instance.oms_plugin_policy().call_decide(
                        &mut *store,
                        &failure,
                        &saga,
                        &settings,
                    )
                }
                _ => Err(wasmtime::Error::msg("not a compensation policy")),
            },
        )
        .await
    }
}

/// What a call is given beyond its arguments.
#[derive(Default)]
pub(super) struct Grants {
    pub http: Option<HttpGrant>,
    pub step_state: Option<CallStepState>,
}

impl Grants {
    fn http(grant: HttpGrant) -> Self {
        Self {
            http: Some(grant),
            step_state: None,
        }
    }
}

/// A custom step's answer and the state writes its call made (to commit
/// with the saga transition that records the answer).
#[derive(Debug)]
pub struct StepAnswer<T> {
    pub result: Result<T, step::exports::oms::plugin::custom_step::StepError>,
    pub writes: BTreeMap<String, StateOp>,
}

/// Which of a custom step's exports to call.
pub enum StepCall {
    Run,
    /// With what `run` returned.
    Compensate(String),
}

wire_enum!(
    PaymentOp {
        Authorize = "authorize",
        Capture = "capture",
        Void = "void",
        Refund = "refund",
    }
);

/// Notes that the instance is ready: what came before was the call's set-up.
fn ready(store: &mut Store<CallState>) {
    store.data_mut().ready = Some(Instant::now());
}

/// Fuel a deterministic call may use on the caller's thread before it is
/// moved to a call thread: about a millisecond of guest work at most.
pub const INLINE_FUEL: u64 = 1_000_000;

/// Whether a call under `limits` goes straight to a call thread: a
/// deadline shorter than the inline slice could take is kept on a thread
/// of its own too (never the case with the platform's limits).
fn needs_own_thread(limits: &CallLimits) -> bool {
    limits.timeout < 2 * EPOCH_TICK
}

pub(super) fn run_call<R, F>(
    engine: &Engine,
    plugin: &Plugin,
    limits: CallLimits,
    grants: Grants,
    f: &F,
) -> (Result<R, PluginError>, CallStats)
where
    F: Fn(&mut Store<CallState>, &Plugin) -> wasmtime::Result<R>,
{
    // Set-up (store, WASI context, instance) counts from here.
    let started = Instant::now();
    let log = log::BoundedLog::new(limits.log_bytes);
    let wasi = WasiCtx::builder()
        .stdout(log.clone())
        .stderr(log.clone())
        .build();
    let state = CallState {
        wasi,
        table: ResourceTable::new(),
        limits: StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            // Enforced again per call, whatever was checked at upload.
            .instances(shape::LIMITS.core_instances as usize)
            .memories(shape::LIMITS.memories as usize)
            .tables(shape::LIMITS.tables as usize)
            .build(),
        http: grants.http,
        step_state: grants.step_state,
        ready: None,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    if let Err(e) = store.set_fuel(limits.fuel) {
        return (
            Err(PluginError::Unavailable(e.to_string())),
            CallStats::default(),
        );
    }
    let ticks = (limits.timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
    store.set_epoch_deadline(ticks);
    store.epoch_deadline_trap();

    let result = f(&mut store, plugin);
    let (kept_log, log_dropped) = log.contents();
    let stats = CallStats {
        fuel_used: limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0)),
        duration: started.elapsed(),
        setup: store
            .data()
            .ready
            .map(|at| at.saturating_duration_since(started)),
        log: kept_log,
        log_dropped,
    };
    let result = result.map_err(|e| match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => PluginError::OutOfFuel,
        Some(Trap::Interrupt) => PluginError::Timeout,
        Some(trap) => PluginError::Trap(trap.to_string()),
        None => PluginError::Trap(format!("{e:#}")),
    });
    (result, stats)
}
