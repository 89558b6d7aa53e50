//! Carries out one saga action and reports its outcome as a saga event.
//! Each slot's failure policy lives here: a guardrail that fails is a
//! rejection (fail closed), a fraud check that fails is a review, a payment
//! plugin that fails is a transient error, a compensation policy that fails
//! is replaced by the platform's default.

use super::Platform;
use super::effects::{Extras, message};
use crate::metrics::Metrics;
use crate::tenants::{Canary, ReviewAction, Tenant};
use crate::transport::topics::TOPIC_FULFILMENT;
use oms_domain::{OrderDraft, OrderId, TenantId};
use oms_plugin_host::bindings::{self, fraud, payment, policy};
use oms_plugin_host::calls::{
    CallInput, CallOutput, ContextInput, OrderInput, error_output, fraud_output, guardrail_output,
};
use oms_plugin_host::{CallStats, Called, PaymentOp, Plugin, PluginError, Slot};
use oms_saga::{Compensation, Failure, Plan, SagaEvent, SagaState, Step, resolve_plan};
use oms_store::{CanaryCall, InventoryOp, OrderRecord, PaymentRecord, RecordedCall};
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

mod custom;
mod guardrail;
mod on_failure;
mod pay;
mod risk;
mod rollout;

use guardrail::*;
pub(crate) use on_failure::failed_step;
use pay::*;
use risk::*;
use rollout::*;

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
                    output: None,
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
                    oms_clock::now_ms(),
                    data,
                )],
                ..Extras::default()
            };
            Outcome {
                event: SagaEvent::StepSucceeded {
                    step,
                    provider_reference: None,
                    output: None,
                },
                extras,
            }
        }
        Step::Custom(name) => custom::run(p, cx, name).await,
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
        // Partial refunds gave back everything there was.
        Compensation::RefundPayment if cx.order.total_minor - cx.state.refunds_committed() <= 0 => {
            Outcome {
                event: SagaEvent::CompensationSucceeded { compensation },
                extras: Extras::default(),
            }
        }
        Compensation::VoidPayment | Compensation::RefundPayment => {
            let op = if compensation == Compensation::VoidPayment {
                PaymentOp::Void
            } else {
                PaymentOp::Refund
            };
            // Not held by the breaker: undoing money keeps its own backoff
            // and budget, and what it cannot undo goes to an operator.
            let (result, extras) = pay(p, cx, op, None).await;
            let event = match result {
                Ok(_) => SagaEvent::CompensationSucceeded { compensation },
                Err(failure) => SagaEvent::CompensationFailed {
                    compensation,
                    failure,
                },
            };
            Outcome { event, extras }
        }
        Compensation::Custom(name) => custom::compensate(p, cx, name).await,
    }
}

/// Makes a partial refund (a return's, or cancelled lines'), with its own
/// idempotency key, so a retry never refunds twice. Like a compensation,
/// not held by the breaker.
pub(crate) async fn run_refund(p: &Platform, cx: &Context<'_>, refund_id: &str) -> Outcome {
    let Some(refund) = cx.state.refunds.iter().find(|r| r.id == refund_id) else {
        // The saga refuses the outcome too; recorded as illegal there.
        return Outcome {
            event: SagaEvent::RefundFailed {
                refund_id: refund_id.to_string(),
                failure: Failure {
                    code: "NO_SUCH_REFUND".into(),
                    message: format!("the order has no refund {refund_id}"),
                    transient: false,
                },
            },
            extras: Extras::default(),
        };
    };
    let key = format!("{}:refund:{}", cx.order_id, refund_id);
    let (result, mut extras) = pay_amount(p, cx, PaymentOp::Refund, None, refund.amount, key).await;
    extras.detail.insert("amount".into(), json!(refund.amount));
    let event = match result {
        Ok(reference) => SagaEvent::RefundSucceeded {
            refund_id: refund_id.to_string(),
            provider_reference: reference,
        },
        Err(failure) => SagaEvent::RefundFailed {
            refund_id: refund_id.to_string(),
            failure,
        },
    };
    Outcome { event, extras }
}
