//! Carries out one saga action and reports its outcome as a saga event.
//! Each slot's failure policy lives here: a guardrail that fails is a
//! rejection (fail closed), a fraud check that fails is a review, a payment
//! plugin that fails is a transient error, a compensation policy that fails
//! is replaced by the platform's default.

use super::Platform;
use super::effects::{Extras, TOPIC_FULFILMENT, message};
use crate::domain::{OrderDraft, OrderId, TenantId};
use crate::engine::metrics::Metrics;
use crate::plugins::bindings::{self, fraud, payment, policy};
use crate::plugins::calls::{
    CallInput, CallOutput, ContextInput, OrderInput, error_output, fraud_output, guardrail_output,
};
use crate::plugins::{CallStats, Called, PaymentOp, Plugin, PluginError, Slot};
use crate::saga::{Compensation, Failure, Plan, SagaEvent, SagaState, Step, resolve_plan};
use crate::store::{CanaryCall, InventoryOp, OrderRecord, PaymentRecord, RecordedCall};
use crate::tenants::{Canary, ReviewAction, Tenant};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) struct Outcome {
    pub event: SagaEvent,
    pub extras: Extras,
}

/// What a step needs to know about its order.
pub(crate) struct Context<'a> {
    pub tenant: &'a Tenant,
    pub order: &'a OrderRecord,
    pub order_id: &'a OrderId,
    pub draft: &'a OrderDraft,
    pub state: &'a SagaState,
}

impl Context<'_> {
    fn tenant_id(&self) -> &TenantId {
        &self.tenant.id
    }

    fn wit_order(&self) -> bindings::Order {
        bindings::Order {
            id: self.order.id.clone(),
            tenant: self.order.tenant_id.clone(),
            customer_id: self.draft.customer_id.clone(),
            currency: self.draft.currency.code().to_string(),
            items: self
                .draft
                .items
                .iter()
                .map(|i| bindings::LineItem {
                    sku: i.sku.to_string(),
                    quantity: i.quantity,
                    unit_price: i.unit_price,
                })
                .collect(),
            total_amount: self.order.total_minor,
            shipping_address: bindings::Address {
                line1: self.draft.shipping_address.line1.clone(),
                city: self.draft.shipping_address.city.clone(),
                postal_code: self.draft.shipping_address.postal_code.clone(),
                country: self.draft.shipping_address.country.clone(),
            },
        }
    }
}

fn detail<R>(called: &Called<R>, version: &str) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("pluginVersion".into(), json!(version));
    m.insert("fuelUsed".into(), json!(called.stats.fuel_used));
    m.insert(
        "durationUs".into(),
        json!(called.stats.duration.as_micros() as u64),
    );
    m
}

fn failed_detail(error: &PluginError, version: &str) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("pluginVersion".into(), json!(version));
    m.insert(
        "pluginError".into(),
        json!({ "code": error.code(), "message": error.to_string() }),
    );
    m
}

pub(crate) async fn run_step(p: &Platform, cx: &Context<'_>, step: Step) -> Outcome {
    match step {
        Step::Validate => validate(p, cx).await,
        Step::FraudCheck => fraud_check(p, cx).await,
        Step::ReserveInventory => {
            let mut lines: BTreeMap<String, i64> = BTreeMap::new();
            for item in &cx.draft.items {
                *lines.entry(item.sku.to_string()).or_default() += i64::from(item.quantity);
            }
            let extras = Extras {
                inventory: Some(InventoryOp::Reserve(lines.into_iter().collect())),
                ..Extras::default()
            };
            Outcome {
                event: SagaEvent::StepSucceeded {
                    step,
                    provider_reference: None,
                },
                extras,
            }
        }
        Step::AuthorizePayment => pay_step(p, cx, step, PaymentOp::Authorize).await,
        Step::CapturePayment => pay_step(p, cx, step, PaymentOp::Capture).await,
        Step::RequestFulfilment => {
            let data = json!({
                "items": cx.draft.items,
                "shippingAddress": cx.draft.shipping_address,
                "customerId": cx.draft.customer_id,
            });
            let extras = Extras {
                outbox: vec![message(
                    TOPIC_FULFILMENT,
                    "fulfilment.requested",
                    cx.tenant_id(),
                    cx.order_id,
                    crate::now_ms(),
                    data,
                )],
                ..Extras::default()
            };
            Outcome {
                event: SagaEvent::StepSucceeded {
                    step,
                    provider_reference: None,
                },
                extras,
            }
        }
    }
}

/// A guardrail verdict in a form two versions can be compared by.
fn guardrail_verdict(event: &SagaEvent, extras: &Extras) -> String {
    match event {
        SagaEvent::StepRejected { code, .. } if code == "GUARDRAIL_UNAVAILABLE" => code.clone(),
        SagaEvent::StepRejected { .. } => {
            let violations: Vec<Value> = extras
                .violations
                .as_deref()
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default();
            let mut codes: Vec<&str> = violations
                .iter()
                .filter_map(|v| v["code"].as_str())
                .collect();
            codes.sort_unstable();
            codes.join(",")
        }
        _ => "ok".into(),
    }
}

fn fraud_verdict(extras: &Extras) -> String {
    extras
        .detail
        .get("fraud")
        .and_then(|f| f["decision"].as_str())
        .unwrap_or("unknown")
        .to_string()
}

/// Runs the shadow version, if any, on the same input and records whether it
/// agreed. Its verdict is never acted on; its failure is only recorded.
async fn shadow_compare(
    p: &Platform,
    cx: &Context<'_>,
    slot: Slot,
    active: &Plugin,
    active_verdict: &str,
) {
    let Some(shadow) = cx.tenant.plugin(slot).shadow() else {
        return;
    };
    let verdict = if slot == Slot::Guardrail {
        let outcome = validate_with(p, cx, &shadow, false).await;
        guardrail_verdict(&outcome.event, &outcome.extras)
    } else {
        fraud_verdict(&fraud_with(p, cx, &shadow, false).await.extras)
    };
    let result = crate::store::ShadowResult {
        order_id: cx.order_id.to_string(),
        active_version: active.version().to_string(),
        shadow_version: shadow.version().to_string(),
        agreed: i64::from(verdict == active_verdict),
        active_verdict: active_verdict.to_string(),
        shadow_verdict: verdict,
        at: crate::now_ms(),
    };
    if let Err(e) = p
        .store
        .record_shadow(&cx.tenant.id, slot.as_str(), &result)
        .await
    {
        tracing::warn!(error = %e, "recording a shadow verdict failed");
    }
}

async fn validate(p: &Platform, cx: &Context<'_>) -> Outcome {
    let tp = cx.tenant.plugin(Slot::Guardrail);
    let (plugin, canary) = tp.for_order(cx.order_id.as_str());
    let mut outcome = validate_with(p, cx, &plugin, tp.record_calls).await;
    let verdict = guardrail_verdict(&outcome.event, &outcome.extras);
    match canary {
        Some(canary) => {
            // The active version runs beside the canary, never acted on, to
            // measure how often the two disagree.
            let beside = validate_with(p, cx, &tp.current(), false).await;
            let agreed = guardrail_verdict(&beside.event, &beside.extras) == verdict;
            record_canary(p, cx, &canary, &mut outcome.extras, Some(agreed)).await;
        }
        None => shadow_compare(p, cx, Slot::Guardrail, &plugin, &verdict).await,
    }
    outcome
}

async fn fraud_check(p: &Platform, cx: &Context<'_>) -> Outcome {
    let tp = cx.tenant.plugin(Slot::FraudCheck);
    let (plugin, canary) = tp.for_order(cx.order_id.as_str());
    let mut outcome = fraud_with(p, cx, &plugin, tp.record_calls).await;
    let verdict = fraud_verdict(&outcome.extras);
    match canary {
        Some(canary) => {
            let beside = fraud_with(p, cx, &tp.current(), false).await;
            let agreed = fraud_verdict(&beside.extras) == verdict;
            record_canary(p, cx, &canary, &mut outcome.extras, Some(agreed)).await;
        }
        None => shadow_compare(p, cx, Slot::FraudCheck, &plugin, &verdict).await,
    }
    outcome
}

/// Notes a call the canary version made (failed or not, how long, whether
/// the active version agreed) for the canary's thresholds, and marks the
/// step as decided by the canary.
async fn record_canary(
    p: &Platform,
    cx: &Context<'_>,
    canary: &Canary,
    extras: &mut Extras,
    agreed: Option<bool>,
) {
    extras.detail.insert("canary".into(), json!(true));
    let call = CanaryCall {
        order_id: cx.order_id.to_string(),
        failed: extras.detail.contains_key("pluginError"),
        duration_us: extras
            .detail
            .get("durationUs")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        agreed,
        at: crate::now_ms(),
    };
    if let Err(e) = p.store.record_canary_call(&canary.record, &call).await {
        tracing::warn!(error = %e, "recording a canary call failed");
    }
}

/// Queues a production call for replay, if its slot records calls
/// (`input` is then `Some`): its answer through `output`, or its failure.
fn record_result<R>(
    p: &Platform,
    cx: &Context<'_>,
    plugin: &Plugin,
    input: Option<CallInput>,
    result: &Result<Called<R>, PluginError>,
    output: fn(&R) -> CallOutput,
) {
    let Some(input) = input else { return };
    match result {
        Ok(c) => record_call(p, cx, plugin, input, &output(&c.value), Some(&c.stats)),
        Err(e) => record_call(p, cx, plugin, input, &error_output(e), None),
    }
}

fn record_call(
    p: &Platform,
    cx: &Context<'_>,
    plugin: &Plugin,
    input: CallInput,
    answer: &CallOutput,
    stats: Option<&CallStats>,
) {
    let call = RecordedCall {
        tenant_id: cx.tenant.id.to_string(),
        slot: input.slot().to_string(),
        version: plugin.version().to_string(),
        order_id: cx.order_id.to_string(),
        input: serde_json::to_string(&input).unwrap_or_default(),
        output: answer.output.to_string(),
        verdict: answer.verdict.clone(),
        fuel_used: stats.map_or(0, |s| s.fuel_used as i64),
        duration_us: stats.map_or(0, |s| s.duration.as_micros() as i64),
        at: crate::now_ms(),
    };
    p.recorder.record(&p.metrics, call);
}

async fn validate_with(
    p: &Platform,
    cx: &Context<'_>,
    plugin: &Arc<Plugin>,
    record: bool,
) -> Outcome {
    let tp = cx.tenant.plugin(Slot::Guardrail);
    let version = plugin.version().to_string();
    let step = Step::Validate;
    let order = cx.wit_order();
    let input = record.then(|| CallInput::Guardrail {
        order: OrderInput::from(&order),
        settings: tp.settings.clone(),
    });
    let result = p
        .plugins
        .validate(
            cx.tenant.id.as_str(),
            plugin,
            tp.limits,
            order,
            tp.settings.clone(),
        )
        .await;
    record_result(p, cx, plugin, input, &result, guardrail_output);
    match result {
        Ok(called) => {
            let extras = Extras {
                detail: detail(&called, &version),
                ..Extras::default()
            };
            match called.value {
                Ok(()) => Outcome {
                    event: SagaEvent::StepSucceeded {
                        step,
                        provider_reference: None,
                    },
                    extras,
                },
                Err(violations) => {
                    let list: Vec<Value> = violations
                        .iter()
                        .map(|v| json!({ "code": v.code, "message": v.message, "field": v.field }))
                        .collect();
                    let code = violations
                        .first()
                        .map_or_else(|| "GUARDRAIL_REJECTED".to_string(), |v| v.code.clone());
                    let reason = violations
                        .iter()
                        .map(|v| v.message.as_str())
                        .collect::<Vec<_>>()
                        .join("; ");
                    let extras = Extras {
                        violations: Some(Value::Array(list).to_string()),
                        ..extras
                    };
                    Outcome {
                        event: SagaEvent::StepRejected { step, code, reason },
                        extras,
                    }
                }
            }
        }
        Err(e) => {
            // Fail closed: an order no guardrail could check does not go ahead.
            Metrics::inc(&p.metrics.plugin_failures_total);
            tracing::warn!(tenant = %cx.tenant.id, order = %cx.order_id, error = %e, "guardrail failed; rejecting");
            let violation =
                json!([{ "code": "GUARDRAIL_UNAVAILABLE", "message": e.to_string(), "field": "" }]);
            let extras = Extras {
                detail: failed_detail(&e, &version),
                violations: Some(violation.to_string()),
                ..Extras::default()
            };
            Outcome {
                event: SagaEvent::StepRejected {
                    step,
                    code: "GUARDRAIL_UNAVAILABLE".into(),
                    reason: e.to_string(),
                },
                extras,
            }
        }
    }
}

async fn fraud_with(p: &Platform, cx: &Context<'_>, plugin: &Arc<Plugin>, record: bool) -> Outcome {
    let tp = cx.tenant.plugin(Slot::FraudCheck);
    let version = plugin.version().to_string();
    let step = Step::FraudCheck;
    let since = crate::now_ms() - 24 * 3600 * 1000;
    let history = p
        .store
        .customer_history(
            cx.tenant_id(),
            &cx.draft.customer_id,
            cx.draft.currency.code(),
            since,
            cx.order_id,
        )
        .await
        .unwrap_or_default();
    let context = fraud::exports::oms::plugin::risk::CustomerContext {
        recent_order_count: u32::try_from(history.orders).unwrap_or(u32::MAX),
        recent_spend: history.spend,
    };
    use fraud::exports::oms::plugin::risk::Decision;
    let order = cx.wit_order();
    let input = record.then(|| CallInput::FraudCheck {
        order: OrderInput::from(&order),
        context: ContextInput {
            recent_order_count: context.recent_order_count,
            recent_spend: context.recent_spend,
        },
        settings: tp.settings.clone(),
    });
    let result = p
        .plugins
        .assess(
            cx.tenant.id.as_str(),
            plugin,
            tp.limits,
            order,
            context,
            tp.settings.clone(),
        )
        .await;
    record_result(p, cx, plugin, input, &result, fraud_output);
    let (decision, score, reasons, mut extras) = match result {
        Ok(called) => {
            let extras = Extras {
                detail: detail(&called, &version),
                ..Extras::default()
            };
            let a = called.value;
            (a.decision, a.score, a.reasons, extras)
        }
        Err(e) => {
            // A fraud check that cannot answer sends the order to review.
            Metrics::inc(&p.metrics.plugin_failures_total);
            tracing::warn!(tenant = %cx.tenant.id, order = %cx.order_id, error = %e, "fraud check failed; treating as review");
            let extras = Extras {
                detail: failed_detail(&e, &version),
                ..Extras::default()
            };
            (
                Decision::Review,
                500,
                vec![format!("fraud check unavailable: {e}")],
                extras,
            )
        }
    };
    let name = match decision {
        Decision::Approve => "approve",
        Decision::Review => "review",
        Decision::Decline => "decline",
    };
    extras.detail.insert(
        "fraud".into(),
        json!({ "decision": name, "score": score, "reasons": reasons }),
    );
    let reason = reasons.join("; ");
    let event = match (decision, cx.tenant.fraud_review) {
        (Decision::Approve, _) | (Decision::Review, ReviewAction::Accept) => {
            SagaEvent::StepSucceeded {
                step,
                provider_reference: None,
            }
        }
        (Decision::Review, ReviewAction::Reject) => SagaEvent::StepRejected {
            step,
            code: "FRAUD_REVIEW".into(),
            reason,
        },
        (Decision::Decline, _) => SagaEvent::StepRejected {
            step,
            code: "FRAUD_DECLINED".into(),
            reason,
        },
    };
    Outcome { event, extras }
}

/// Calls the payment plugin. The idempotency key is fixed per order and
/// operation, so a retry after a timeout can never charge twice.
async fn pay(p: &Platform, cx: &Context<'_>, op: PaymentOp) -> (Result<String, Failure>, Extras) {
    let tp = cx.tenant.plugin(crate::plugins::Slot::PaymentProvider);
    let (plugin, canary) = tp.for_order(cx.order_id.as_str());
    let version = plugin.version().to_string();
    let key = format!("{}:{}", cx.order_id, op.as_str());
    let request = payment::exports::oms::plugin::provider::PaymentRequest {
        order_id: cx.order_id.to_string(),
        idempotency_key: key.clone(),
        amount: cx.order.total_minor,
        currency: cx.draft.currency.code().to_string(),
        token: cx.draft.payment_token.clone(),
        provider_reference: cx.state.payment_reference.clone(),
    };
    let grant = tp
        .grant
        .clone()
        .unwrap_or_else(|| crate::plugins::http::HttpGrant::new(&[], tp.limits.http_timeout));
    let called = p
        .plugins
        .pay(
            cx.tenant.id.as_str(),
            &plugin,
            tp.limits,
            grant,
            op,
            request,
            tp.settings.clone(),
        )
        .await;
    use payment::exports::oms::plugin::provider::PaymentError;
    let (result, detail) = match called {
        Ok(c) => {
            let d = detail(&c, &version);
            let r = match c.value {
                Ok(reference) => Ok(reference),
                Err(PaymentError::Declined(d)) => Err(Failure {
                    code: d.code,
                    message: d.message,
                    transient: false,
                }),
                Err(PaymentError::Transient(m)) => Err(Failure {
                    code: "PAYMENT_PROVIDER_UNAVAILABLE".into(),
                    message: m,
                    transient: true,
                }),
            };
            (r, d)
        }
        Err(e) => {
            Metrics::inc(&p.metrics.plugin_failures_total);
            let d = failed_detail(&e, &version);
            (
                Err(Failure {
                    code: e.code().into(),
                    message: e.to_string(),
                    transient: true,
                }),
                d,
            )
        }
    };
    let mut detail = detail;
    if let Some(canary) = &canary {
        let mut extras = Extras {
            detail,
            ..Extras::default()
        };
        record_canary(p, cx, canary, &mut extras, None).await;
        detail = extras.detail;
    }
    let record = PaymentRecord {
        id: format!("pay_{}", crate::domain::monotonic_ulid()),
        op: op.as_str().into(),
        amount: cx.order.total_minor,
        currency: cx.draft.currency.code().into(),
        status: if result.is_ok() {
            "succeeded"
        } else {
            "failed"
        }
        .into(),
        provider_reference: result.as_ref().ok().cloned(),
        error_code: result.as_ref().err().map(|f| f.code.clone()),
        idempotency_key: key,
        plugin_version: Some(version),
        at: crate::now_ms(),
        reconciliation: None,
    };
    (
        result,
        Extras {
            detail,
            payment: Some(record),
            ..Extras::default()
        },
    )
}

async fn pay_step(p: &Platform, cx: &Context<'_>, step: Step, op: PaymentOp) -> Outcome {
    let (result, extras) = pay(p, cx, op).await;
    match result {
        Ok(reference) => {
            let provider_reference = (step == Step::AuthorizePayment).then_some(reference);
            Outcome {
                event: SagaEvent::StepSucceeded {
                    step,
                    provider_reference,
                },
                extras,
            }
        }
        Err(failure) => failed_step(p, cx, step, failure, extras).await,
    }
}

/// A failed step: the compensation policy decides whether to retry.
pub(crate) async fn failed_step(
    p: &Platform,
    cx: &Context<'_>,
    step: Step,
    failure: Failure,
    mut extras: Extras,
) -> Outcome {
    let plan = plan(p, cx, step, &failure, &mut extras).await;
    Outcome {
        event: SagaEvent::StepFailed {
            step,
            failure,
            plan,
        },
        extras,
    }
}

async fn plan(
    p: &Platform,
    cx: &Context<'_>,
    step: Step,
    failure: &Failure,
    extras: &mut Extras,
) -> Plan {
    use policy::exports::oms::plugin::policy as wit;
    let tp = cx.tenant.plugin(crate::plugins::Slot::CompensationPolicy);
    let (plugin, canary) = tp.for_order(cx.order_id.as_str());
    let to_wit = |s: Step| match s {
        Step::Validate => wit::Step::Validate,
        Step::FraudCheck => wit::Step::FraudCheck,
        Step::ReserveInventory => wit::Step::ReserveInventory,
        Step::AuthorizePayment => wit::Step::AuthorizePayment,
        Step::CapturePayment => wit::Step::CapturePayment,
        Step::RequestFulfilment => wit::Step::RequestFulfilment,
    };
    let wit_failure = wit::Failure {
        step: to_wit(step),
        code: failure.code.clone(),
        message: failure.message.clone(),
        transient: failure.transient,
        attempt: cx.state.attempt,
    };
    let view = wit::SagaView {
        order_id: cx.order_id.to_string(),
        customer_id: cx.draft.customer_id.clone(),
        total_amount: cx.order.total_minor,
        currency: cx.draft.currency.code().into(),
        completed: cx.state.completed.iter().map(|s| to_wit(*s)).collect(),
    };
    let called = p
        .plugins
        .decide(
            cx.tenant.id.as_str(),
            &plugin,
            tp.limits,
            wit_failure,
            view,
            tp.settings.clone(),
        )
        .await;
    if let Some(canary) = &canary {
        let mut noted = Extras::default();
        match &called {
            Ok(c) => {
                noted.detail.insert(
                    "durationUs".into(),
                    json!(c.stats.duration.as_micros() as u64),
                );
            }
            Err(e) => {
                noted.detail.insert("pluginError".into(), json!(e.code()));
            }
        }
        record_canary(p, cx, canary, &mut noted, None).await;
        extras.detail.insert("policyCanary".into(), json!(true));
    }
    let plan = match called {
        Ok(called) => match called.value.decision {
            wit::Decision::Retry(ms) => Plan::Retry {
                delay_ms: u64::from(ms),
            },
            wit::Decision::Compensate => {
                let proposed: Vec<Compensation> = called
                    .value
                    .actions
                    .iter()
                    .map(|a| match a {
                        wit::Compensation::ReleaseInventory => Compensation::ReleaseInventory,
                        wit::Compensation::VoidPayment => Compensation::VoidPayment,
                        wit::Compensation::RefundPayment => Compensation::RefundPayment,
                    })
                    .collect();
                let (actions, overridden) = resolve_plan(&cx.state.completed, &proposed);
                if overridden {
                    Metrics::inc(&p.metrics.policy_overrides_total);
                    tracing::warn!(tenant = %cx.tenant.id, order = %cx.order_id, ?proposed, ?actions, "compensation plan left money or stock held; using the default");
                }
                Plan::Compensate {
                    actions,
                    notify: called.value.notify,
                }
            }
        },
        Err(e) => {
            Metrics::inc(&p.metrics.plugin_failures_total);
            tracing::warn!(tenant = %cx.tenant.id, order = %cx.order_id, error = %e, "compensation policy failed; using the default");
            extras
                .detail
                .insert("policyError".into(), json!(e.to_string()));
            default_plan(cx.state, failure)
        }
    };
    extras
        .detail
        .insert("policyVersion".into(), json!(plugin.version()));
    plan
}

/// The platform's own policy: exponential backoff for transient failures,
/// then undo in reverse.
fn default_plan(state: &SagaState, failure: &Failure) -> Plan {
    if failure.transient && state.attempt < state.limits.max_step_attempts {
        let shift = state.attempt.saturating_sub(1).min(10);
        Plan::Retry {
            delay_ms: (100u64 << shift).min(5_000),
        }
    } else {
        Plan::Compensate {
            actions: crate::saga::core::required_compensations(&state.completed),
            notify: vec!["customer".into()],
        }
    }
}

pub(crate) async fn run_compensation(
    p: &Platform,
    cx: &Context<'_>,
    compensation: Compensation,
) -> Outcome {
    match compensation {
        Compensation::ReleaseInventory => Outcome {
            event: SagaEvent::CompensationSucceeded { compensation },
            extras: Extras {
                inventory: Some(InventoryOp::Release),
                ..Extras::default()
            },
        },
        Compensation::VoidPayment | Compensation::RefundPayment => {
            let op = if compensation == Compensation::VoidPayment {
                PaymentOp::Void
            } else {
                PaymentOp::Refund
            };
            let (result, extras) = pay(p, cx, op).await;
            let event = match result {
                Ok(_) => SagaEvent::CompensationSucceeded { compensation },
                Err(failure) => SagaEvent::CompensationFailed {
                    compensation,
                    failure,
                },
            };
            Outcome { event, extras }
        }
    }
}
