//! A tenant-defined step and its compensation: the step's component runs
//! with a view of its state (committed values, read through the store, and
//! its own writes); what it writes is committed with the transition that
//! records how the call came out, and only if it succeeded. A component
//! that runs out of budget, traps or answers outside its contract fails the
//! step for good (it would again; see `retryable`); a deadline or a host
//! that could not run it is transient, retried under the step's own policy.
//!
//! A step is rolled out as a slot is: the order's canary bucket picks the
//! canary's version (for its run and its compensation alike) while one
//! runs; a shadow version of a step that reaches nothing outside runs on
//! the same order and committed state, its writes dropped and its answer
//! compared with the active one's.

use super::*;
use crate::tenants::{CustomStep, Target};
use oms_plugin_host::StepCall;
use oms_plugin_host::bindings::step::exports::oms::plugin::custom_step::StepContext;
use oms_plugin_host::calls::{StepExport, step_output};
use oms_plugin_host::step_state::{CallStepState, StateOp, StateReader};
use oms_saga::{StepName, step_plan};
use oms_store::{StepStateOp, StepStateWrite};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Reads the committed state of one tenant's step, from the call's thread
/// (a plugin call thread, where waiting on the runtime is allowed). It notes
/// whether a read failed (then a failed call may be the store's fault, not
/// the component's) and, for a step whose calls are recorded, the value
/// each key had when first read (what a replay is given).
struct Committed {
    store: Arc<dyn oms_store::Store>,
    tenant: TenantId,
    step: StepName,
    runtime: tokio::runtime::Handle,
    unavailable: AtomicBool,
    reads: Option<Mutex<BTreeMap<String, Option<String>>>>,
}

impl StateReader for Committed {
    fn get(&self, key: &str) -> Result<Option<String>, String> {
        let read = self
            .runtime
            .block_on(self.store.step_state(&self.tenant, self.step.as_str(), key))
            .map(|r| r.map(|r| r.value))
            .map_err(|e| e.to_string());
        match (&read, &self.reads) {
            (Ok(value), Some(reads)) => {
                reads
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(key.to_owned())
                    .or_insert_with(|| value.clone());
            }
            (Ok(_), None) => {}
            (Err(_), _) => self.unavailable.store(true, Ordering::Relaxed),
        }
        read
    }
}

/// How a call of the step's component came out, and its verdict: what a
/// shadow's answer is compared on (output and writes, or the failure).
struct Answer {
    result: Result<(String, Vec<StepStateWrite>), Failure>,
    verdict: String,
}

impl Answer {
    fn failed(failure: Failure) -> Self {
        Self {
            verdict: format!("failed {}", failure.code),
            result: Err(failure),
        }
    }
}

/// Whether a step that failed this way may do better if tried again. A
/// component that ran out of fuel, trapped or answered outside its contract
/// would do the same again on the same order and state, and each retry
/// would burn the CPU other tenants need — unless a state read failed
/// during the call, which may be what made it fail. A deadline, an instance
/// the pool could not give and a host that could not run the call are the
/// moment's, and are retried.
fn retryable(e: &PluginError, state_read_failed: bool) -> bool {
    match e {
        PluginError::OutOfFuel
        | PluginError::Trap(_)
        | PluginError::OutputTooLarge(_)
        | PluginError::InvalidAnswer(_) => state_read_failed,
        PluginError::Timeout | PluginError::Instantiate(_) | PluginError::Unavailable(_) => true,
    }
}

/// Calls `plugin` for the step; `record` records a production call for
/// replay (a shadow's calls are not).
async fn call(
    p: &Platform,
    cx: &Context<'_>,
    step: &CustomStep,
    plugin: &Arc<Plugin>,
    which: StepCall,
    extras: &mut Extras,
    record: bool,
) -> Answer {
    let record = record && step.plugin.record_calls;
    let committed = Arc::new(Committed {
        store: p.store.clone(),
        tenant: cx.tenant.id.clone(),
        step: step.name,
        runtime: tokio::runtime::Handle::current(),
        unavailable: AtomicBool::new(false),
        reads: record.then(Mutex::default),
    });
    let state = CallStepState::new(committed.clone(), step.state_limits);
    let context = StepContext {
        step: step.name.to_string(),
        attempt: cx.state.attempt,
        idempotency_key: format!("{}:{}", cx.order_id, step.name),
    };
    let input = record.then(|| CallInput::SagaStep {
        order: OrderInput::from(&cx.wit_order()),
        context: (&context).into(),
        export: match &which {
            StepCall::Run => StepExport::Run,
            StepCall::Compensate(output) => StepExport::Compensate {
                output: output.clone(),
            },
        },
        settings: step.plugin.settings.clone(),
        reads: BTreeMap::new(),
    });
    let version = plugin.version().to_string();
    let called = p
        .plugins
        .step(
            cx.tenant.id.as_str(),
            plugin,
            step.plugin.limits,
            Some(step.plugin.http_grant()),
            state,
            which,
            cx.wit_order(),
            context,
            step.plugin.settings.clone(),
        )
        .await;
    if let Some(mut input) = input {
        if let (CallInput::SagaStep { reads, .. }, Some(seen)) = (&mut input, &committed.reads) {
            *reads = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
        }
        let key = Target::Step(step.name).key();
        record_result(p, cx, plugin, &key, Some(input), &called, step_output);
    }
    match called {
        Ok(called) => {
            extras.detail = detail(&called, &version);
            let verdict = step_output(&called.value).verdict;
            let answer = called.value;
            let result = match answer.result {
                Ok(output) => {
                    extras
                        .detail
                        .insert("stateWrites".into(), json!(answer.writes.len()));
                    let writes = answer
                        .writes
                        .into_iter()
                        .map(|(key, op)| StepStateWrite {
                            step: step.name.to_string(),
                            key,
                            op: match op {
                                StateOp::Put(v) => StepStateOp::Put(v),
                                StateOp::Delete => StepStateOp::Delete,
                                StateOp::Add(d) => StepStateOp::Add(d),
                            },
                        })
                        .collect();
                    Ok((output, writes))
                }
                // The step said no: its writes are dropped with it.
                Err(e) => Err(Failure {
                    code: e.code,
                    message: e.message,
                    transient: e.transient,
                }),
            };
            Answer { result, verdict }
        }
        Err(e) => {
            Metrics::inc(&p.metrics.plugin_failures_total);
            extras.detail = failed_detail(&e, &version);
            Answer::failed(Failure {
                code: e.code().into(),
                message: e.to_string(),
                transient: retryable(&e, committed.unavailable.load(Ordering::Relaxed)),
            })
        }
    }
}

/// The tenant's step `name` as its own configuration says, if it has one.
fn configured<'a>(cx: &'a Context<'_>, name: StepName) -> Result<&'a CustomStep, Failure> {
    cx.tenant.steps.get(&name).ok_or_else(|| Failure {
        code: "STEP_NOT_CONFIGURED".into(),
        message: format!("the tenant has no step {name} any more"),
        transient: false,
    })
}

/// Calls the version that decides this order (the canary's, if the order
/// falls in its share) and notes a canary's call for its thresholds.
async fn call_for_order(
    p: &Platform,
    cx: &Context<'_>,
    custom: &CustomStep,
    which: StepCall,
    extras: &mut Extras,
) -> Answer {
    let (plugin, canary) = custom.plugin.for_order(cx.order_id.as_str());
    let answer = call(p, cx, custom, &plugin, which, extras, true).await;
    if let Some(canary) = canary {
        // A step's calls have effects: no second version runs beside it to
        // compare, so a canary is judged on failures and latency.
        record_canary(p, cx, &canary, extras, None).await;
    }
    answer
}

/// Runs the shadow version, if one is set and the step reaches nothing
/// outside, on the same order and committed state; its writes are dropped
/// and only whether it answered as the active version did is recorded.
async fn shadow(p: &Platform, cx: &Context<'_>, custom: &CustomStep, active: &Answer) {
    let Some(shadow) = custom.plugin.shadow() else {
        return;
    };
    if !custom.shadowable() {
        return;
    }
    let mut ignored = Extras::default();
    let answer = call(p, cx, custom, &shadow, StepCall::Run, &mut ignored, false).await;
    let (active_verdict, shadow_verdict) = (active.verdict.clone(), answer.verdict);
    let result = oms_store::ShadowResult {
        order_id: cx.order_id.to_string(),
        active_version: custom.plugin.current().version().to_string(),
        shadow_version: shadow.version().to_string(),
        agreed: i64::from(active_verdict == shadow_verdict),
        active_verdict,
        shadow_verdict,
        at: oms_clock::now_ms(),
    };
    let key = Target::Step(custom.name).key();
    if let Err(e) = p.store.record_shadow(&cx.tenant.id, &key, &result).await {
        tracing::warn!(error = %e, "recording a step's shadow verdict failed");
    }
}

pub(super) async fn run(p: &Platform, cx: &Context<'_>, name: StepName) -> Outcome {
    let step = Step::Custom(name);
    let mut extras = Extras::default();
    let (answer, retry) = match configured(cx, name) {
        Ok(custom) => {
            let answer = call_for_order(p, cx, custom, StepCall::Run, &mut extras).await;
            if !extras.detail.contains_key("canary") {
                shadow(p, cx, custom, &answer).await;
            }
            (answer, custom.retry)
        }
        Err(failure) => (Answer::failed(failure), Default::default()),
    };
    match answer.result {
        Ok((output, writes)) => Outcome {
            event: SagaEvent::StepSucceeded {
                step,
                provider_reference: None,
                output: Some(output),
            },
            extras: Extras {
                step_state: writes,
                ..extras
            },
        },
        Err(failure) => {
            tracing::info!(tenant = %cx.tenant.id, order = %cx.order_id, %step, code = %failure.code, "tenant step failed");
            let plan = step_plan(cx.state, &failure, &retry);
            Outcome {
                event: SagaEvent::StepFailed {
                    step,
                    failure,
                    plan,
                },
                extras,
            }
        }
    }
}

pub(super) async fn compensate(p: &Platform, cx: &Context<'_>, name: StepName) -> Outcome {
    let compensation = Compensation::Custom(name);
    let mut extras = Extras::default();
    let output = cx.state.output_of(Step::Custom(name)).unwrap_or_default();
    let answer = match configured(cx, name) {
        Ok(custom) => {
            call_for_order(
                p,
                cx,
                custom,
                StepCall::Compensate(output.to_string()),
                &mut extras,
            )
            .await
        }
        Err(failure) => Answer::failed(failure),
    };
    match answer.result {
        Ok((_, writes)) => Outcome {
            event: SagaEvent::CompensationSucceeded { compensation },
            extras: Extras {
                step_state: writes,
                ..extras
            },
        },
        Err(failure) => Outcome {
            event: SagaEvent::CompensationFailed {
                compensation,
                failure,
            },
            extras,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_that_would_fail_again_is_not_retried_unless_its_state_failed_it() {
        for e in [
            PluginError::OutOfFuel,
            PluginError::Trap("out of memory".into()),
            PluginError::OutputTooLarge(8 << 20),
            PluginError::InvalidAnswer("not utf-8".into()),
        ] {
            assert!(!retryable(&e, false), "{e}");
            assert!(retryable(&e, true), "{e}");
        }
        for e in [
            PluginError::Timeout,
            PluginError::Instantiate("pool exhausted".into()),
            PluginError::Unavailable("shutting down".into()),
        ] {
            assert!(retryable(&e, false), "{e}");
        }
    }
}
