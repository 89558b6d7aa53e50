//! `oms plugin test FILE --slot saga-step`: a tenant's own step run on the
//! author's machine, with its state kept in memory (from `--state`, a JSON
//! object of keys and values): what `run` returns, what it would write,
//! and the state once that is committed; with `--compensate`, then what
//! its compensation writes and the state after that.

use anyhow::{Context, bail};
use oms_plugin_host::bindings::step::exports::oms::plugin::custom_step::StepContext;
use oms_plugin_host::calls::OrderInput;
use oms_plugin_host::step_state::{CallStepState, StateLimits, StateOp, StateReader};
use oms_plugin_host::{CallLimits, Plugin, PluginHost, StepAnswer, StepCall};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The step's committed state, in memory.
#[derive(Default)]
struct Local(Mutex<BTreeMap<String, String>>);

impl Local {
    fn values(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Commits a call's writes as the host would with its transition.
    fn commit(&self, writes: &BTreeMap<String, StateOp>) {
        let mut values = self.values();
        for (key, op) in writes {
            match op {
                StateOp::Put(v) => {
                    values.insert(key.clone(), v.clone());
                }
                StateOp::Delete => {
                    values.remove(key);
                }
                StateOp::Add(d) => {
                    let before = values.get(key).and_then(|v| v.parse::<i64>().ok());
                    let sum = before.unwrap_or(0).saturating_add(*d);
                    values.insert(key.clone(), sum.to_string());
                }
            }
        }
    }
}

impl StateReader for Local {
    fn get(&self, key: &str) -> Result<Option<String>, String> {
        Ok(self.values().get(key).cloned())
    }
}

fn answer_json(answer: &StepAnswer<String>) -> Value {
    oms_plugin_host::calls::step_output(answer).output
}

pub struct StepRun<'a> {
    pub order: OrderInput,
    pub settings: Vec<(String, String)>,
    pub state: Option<&'a Path>,
    pub compensate: bool,
    pub limits: CallLimits,
}

pub async fn test(
    host: &PluginHost,
    plugin: &Arc<Plugin>,
    run: StepRun<'_>,
) -> anyhow::Result<Value> {
    let local = Arc::new(Local::default());
    if let Some(path) = run.state {
        let given: BTreeMap<String, String> = serde_json::from_slice(
            &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )
        .context("--state is a JSON object of string keys and string values")?;
        *local.values() = given;
    }
    let call = |which: StepCall, attempt: u32| {
        host.step(
            "local",
            plugin,
            run.limits,
            None,
            CallStepState::new(local.clone(), StateLimits::DEFAULT),
            which,
            (&run.order).into(),
            StepContext {
                step: "local-step".into(),
                attempt,
                idempotency_key: format!("{}:local-step", run.order.id),
            },
            run.settings.clone(),
        )
    };
    let ran = match call(StepCall::Run, 1).await {
        Ok(c) => c,
        Err(e) => {
            return Ok(
                json!({ "run": { "ok": false, "error": { "code": e.code(), "message": e.to_string() } } }),
            );
        }
    };
    let mut out = json!({ "run": answer_json(&ran.value), "fuelUsed": ran.stats.fuel_used });
    let Ok(output) = &ran.value.result else {
        return Ok(out);
    };
    local.commit(&ran.value.writes);
    out["stateAfterRun"] = json!(*local.values());
    if run.compensate {
        let undone = call(StepCall::Compensate(output.clone()), 1)
            .await
            .map_err(|e| anyhow::anyhow!("compensate: {e}"))?;
        out["compensate"] = answer_json(&undone.value);
        if undone.value.result.is_ok() {
            local.commit(&undone.value.writes);
            out["stateAfterCompensate"] = json!(*local.values());
        } else {
            bail!("the compensation failed: {}", out["compensate"]);
        }
    }
    Ok(out)
}
