//! A deterministic plugin call as data: the input exactly as the plugin
//! sees it, and its answer in a form two versions can be compared by. This
//! is what production records and what `oms plugin replay` and
//! `oms plugin test` feed back to a component.

use super::bindings::step::exports::oms::plugin::custom_step::StepContext;
use super::bindings::{self, fraud, guardrail};
use super::step_state::{CallStepState, StateLimits, StateOp, StateReader};
use super::{CallLimits, Called, Plugin, PluginError, PluginHost, Slot, StepAnswer, StepCall};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineInput {
    pub sku: String,
    pub quantity: u32,
    pub unit_price: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressInput {
    pub line1: String,
    pub city: String,
    pub postal_code: String,
    pub country: String,
}

/// The WIT `order` record, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderInput {
    pub id: String,
    pub tenant: String,
    pub customer_id: String,
    pub currency: String,
    pub items: Vec<LineInput>,
    pub total_amount: i64,
    pub shipping_address: AddressInput,
}

impl From<&bindings::Order> for OrderInput {
    fn from(o: &bindings::Order) -> Self {
        Self {
            id: o.id.clone(),
            tenant: o.tenant.clone(),
            customer_id: o.customer_id.clone(),
            currency: o.currency.clone(),
            items: o
                .items
                .iter()
                .map(|i| LineInput {
                    sku: i.sku.clone(),
                    quantity: i.quantity,
                    unit_price: i.unit_price,
                })
                .collect(),
            total_amount: o.total_amount,
            shipping_address: AddressInput {
                line1: o.shipping_address.line1.clone(),
                city: o.shipping_address.city.clone(),
                postal_code: o.shipping_address.postal_code.clone(),
                country: o.shipping_address.country.clone(),
            },
        }
    }
}

impl From<&OrderInput> for bindings::Order {
    fn from(o: &OrderInput) -> Self {
        Self {
            id: o.id.clone(),
            tenant: o.tenant.clone(),
            customer_id: o.customer_id.clone(),
            currency: o.currency.clone(),
            items: o
                .items
                .iter()
                .map(|i| bindings::LineItem {
                    sku: i.sku.clone(),
                    quantity: i.quantity,
                    unit_price: i.unit_price,
                })
                .collect(),
            total_amount: o.total_amount,
            shipping_address: bindings::Address {
                line1: o.shipping_address.line1.clone(),
                city: o.shipping_address.city.clone(),
                postal_code: o.shipping_address.postal_code.clone(),
                country: o.shipping_address.country.clone(),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextInput {
    pub recent_order_count: u32,
    pub recent_spend: i64,
}

/// The WIT `step-context` record, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepContextInput {
    pub step: String,
    pub attempt: u32,
    pub idempotency_key: String,
}

impl From<&StepContext> for StepContextInput {
    fn from(c: &StepContext) -> Self {
        Self {
            step: c.step.clone(),
            attempt: c.attempt,
            idempotency_key: c.idempotency_key.clone(),
        }
    }
}

impl From<&StepContextInput> for StepContext {
    fn from(c: &StepContextInput) -> Self {
        Self {
            step: c.step.clone(),
            attempt: c.attempt,
            idempotency_key: c.idempotency_key.clone(),
        }
    }
}

/// Which export of a step was called: `run`, or `compensate` with what
/// `run` had returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StepExport {
    Run,
    Compensate { output: String },
}

impl From<&StepExport> for StepCall {
    fn from(e: &StepExport) -> Self {
        match e {
            StepExport::Run => StepCall::Run,
            StepExport::Compensate { output } => StepCall::Compensate(output.clone()),
        }
    }
}

/// Everything a deterministic call takes. A saga step's call takes its
/// state too: `reads` holds each committed value it read (the first time,
/// `None` for a key not set), which is all a replay may read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "slot", rename_all = "kebab-case")]
pub enum CallInput {
    Guardrail {
        order: OrderInput,
        settings: Vec<(String, String)>,
    },
    #[serde(rename_all = "camelCase")]
    FraudCheck {
        order: OrderInput,
        context: ContextInput,
        settings: Vec<(String, String)>,
    },
    #[serde(rename_all = "camelCase")]
    SagaStep {
        order: OrderInput,
        context: StepContextInput,
        export: StepExport,
        settings: Vec<(String, String)>,
        reads: BTreeMap<String, Option<String>>,
    },
}

impl CallInput {
    pub fn slot(&self) -> Slot {
        match self {
            Self::Guardrail { .. } => Slot::Guardrail,
            Self::FraudCheck { .. } => Slot::FraudCheck,
            Self::SagaStep { .. } => Slot::SagaStep,
        }
    }

    pub fn order_id(&self) -> &str {
        match self {
            Self::Guardrail { order, .. }
            | Self::FraudCheck { order, .. }
            | Self::SagaStep { order, .. } => &order.id,
        }
    }
}

/// A call's answer: the full output and its comparable verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutput {
    pub output: Value,
    /// `ok` or the sorted violation codes (guardrail); the decision (fraud);
    /// the error code when the call failed.
    pub verdict: String,
}

pub fn guardrail_output(
    answer: &Result<(), Vec<guardrail::exports::oms::plugin::order_rules::Violation>>,
) -> CallOutput {
    match answer {
        Ok(()) => CallOutput {
            output: json!({ "ok": true }),
            verdict: "ok".into(),
        },
        Err(vs) => {
            let mut codes: Vec<&str> = vs.iter().map(|v| v.code.as_str()).collect();
            codes.sort_unstable();
            CallOutput {
                output: json!({
                    "ok": false,
                    "violations": vs.iter().map(|v| json!({ "code": v.code, "message": v.message, "field": v.field })).collect::<Vec<_>>(),
                }),
                verdict: codes.join(","),
            }
        }
    }
}

pub fn decision_name(d: fraud::exports::oms::plugin::risk::Decision) -> &'static str {
    use fraud::exports::oms::plugin::risk::Decision;
    match d {
        Decision::Approve => "approve",
        Decision::Review => "review",
        Decision::Decline => "decline",
    }
}

pub fn fraud_output(a: &fraud::exports::oms::plugin::risk::Assessment) -> CallOutput {
    CallOutput {
        output: json!({ "decision": decision_name(a.decision), "score": a.score, "reasons": a.reasons }),
        verdict: decision_name(a.decision).into(),
    }
}

fn writes_json(writes: &BTreeMap<String, StateOp>) -> Value {
    writes
        .iter()
        .map(|(k, op)| {
            let v = match op {
                StateOp::Put(v) => json!({ "put": v }),
                StateOp::Delete => json!("delete"),
                StateOp::Add(d) => json!({ "add": d }),
            };
            (k.clone(), v)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A step's answer: its output (empty for a compensation) and the writes it
/// would commit, or its error. The verdict holds both, so two versions agree
/// only if they answer and write alike.
pub fn step_output(answer: &StepAnswer<String>) -> CallOutput {
    match &answer.result {
        Ok(output) => {
            let writes: Vec<String> = answer
                .writes
                .iter()
                .map(|(key, op)| format!("{key}={op:?}"))
                .collect();
            CallOutput {
                output: json!({ "ok": true, "output": output, "writes": writes_json(&answer.writes) }),
                verdict: format!("ok {output} [{}]", writes.join(", ")),
            }
        }
        Err(e) => CallOutput {
            output: json!({
                "ok": false,
                "error": { "code": e.code, "message": e.message, "transient": e.transient },
            }),
            verdict: format!("failed {}", e.code),
        },
    }
}

/// A replay's view of a step's committed state: what the recorded call
/// read. A key it did not read cannot be known, so reading it is
/// `unavailable` to the candidate (and shows as a difference).
struct RecordedReads(BTreeMap<String, Option<String>>);

impl StateReader for RecordedReads {
    fn get(&self, key: &str) -> Result<Option<String>, String> {
        self.0
            .get(key)
            .cloned()
            .ok_or_else(|| format!("the recorded call did not read {key:?}"))
    }
}

pub fn error_output(e: &PluginError) -> CallOutput {
    CallOutput {
        output: json!({ "error": { "code": e.code(), "message": e.to_string() } }),
        verdict: e.code().into(),
    }
}

/// Runs `input` through `plugin` under `limits`, as production would.
pub async fn invoke(
    host: &PluginHost,
    tenant: &str,
    plugin: &Arc<Plugin>,
    limits: CallLimits,
    input: &CallInput,
) -> Result<Called<CallOutput>, PluginError> {
    match input {
        CallInput::Guardrail { order, settings } => {
            let c = host
                .validate(tenant, plugin, limits, order.into(), settings.clone())
                .await?;
            Ok(Called {
                value: guardrail_output(&c.value),
                stats: c.stats,
            })
        }
        CallInput::FraudCheck {
            order,
            context,
            settings,
        } => {
            let context = fraud::exports::oms::plugin::risk::CustomerContext {
                recent_order_count: context.recent_order_count,
                recent_spend: context.recent_spend,
            };
            let c = host
                .assess(
                    tenant,
                    plugin,
                    limits,
                    order.into(),
                    context,
                    settings.clone(),
                )
                .await?;
            Ok(Called {
                value: fraud_output(&c.value),
                stats: c.stats,
            })
        }
        CallInput::SagaStep {
            order,
            context,
            export,
            settings,
            reads,
        } => {
            // No network: a replay must not reach anything (only steps
            // without allowed origins are recorded).
            let state =
                CallStepState::new(Arc::new(RecordedReads(reads.clone())), StateLimits::MAX);
            let c = host
                .step(
                    tenant,
                    plugin,
                    limits,
                    None,
                    state,
                    export.into(),
                    order.into(),
                    context.into(),
                    settings.clone(),
                )
                .await?;
            Ok(Called {
                value: step_output(&c.value),
                stats: c.stats,
            })
        }
    }
}
