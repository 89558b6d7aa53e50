//! Payment steps and compensations through the tenant's payment adapter;
//! an adapter that cannot answer is a transient failure, retried.

use super::*;
use oms_saga::breaker::{Admission, CallResult};

/// The provider a tenant's payment plugin calls, as its breaker knows it.
fn provider(grant: &oms_plugin_host::http::HttpGrant) -> String {
    grant.allowed_origins.join(" ")
}

/// Asks the tenant's payment circuit breaker whether to call now: `Ok` with
/// whether this call is the probe, or the postponement to record instead.
pub(super) fn admit(p: &Platform, cx: &Context<'_>, op: PaymentOp) -> Result<bool, Box<Outcome>> {
    let tp = cx.tenant.plugin(oms_plugin_host::Slot::PaymentProvider);
    let provider = provider(&tp.http_grant());
    let now = oms_clock::now_ms();
    let route = crate::breakers::Route {
        tenant: cx.tenant.id.as_str(),
        provider: &provider,
        operation: op.as_str(),
    };
    match p.breakers.admit(route, now) {
        Admission::Call => Ok(false),
        Admission::Probe => Ok(true),
        Admission::WaitUntil(until) => {
            metrics::counter!("oms_saga_steps_postponed_total", "tenant" => cx.tenant.id.to_string())
                .increment(1);
            // Back a little after the breaker may let a probe through, spread
            // out so the waiting sagas do not all come back at once.
            let wait = (until - now).max(1) as u64;
            let delay_ms = wait + oms_clock::jitter_ms(wait.clamp(100, 1_000));
            Err(Box::new(Outcome {
                event: SagaEvent::Postponed {
                    delay_ms,
                    reason: format!("PAYMENT_CIRCUIT_OPEN: {provider} is failing; not called"),
                },
                extras: Extras::default(),
            }))
        }
    }
}

/// Calls the payment plugin. The idempotency key is fixed per order and
/// operation, so a retry after a timeout can never charge twice. `breaker`:
/// for a forward step, which the breaker admitted, whether as its probe;
/// `None` for a compensation, which the breaker neither holds nor hears of.
pub(super) async fn pay(
    p: &Platform,
    cx: &Context<'_>,
    op: PaymentOp,
    breaker: Option<bool>,
) -> (Result<String, Failure>, Extras) {
    let amount = match op {
        // What partial refunds (returns, cancelled lines) have not already
        // given back or are giving back.
        PaymentOp::Refund => cx.order.total_minor - cx.state.refunds_committed(),
        _ => cx.order.total_minor,
    };
    let key = format!("{}:{}", cx.order_id, op.as_str());
    pay_amount(p, cx, op, breaker, amount, key).await
}

/// [`pay`] for `amount` under the idempotency key `key`.
pub(super) async fn pay_amount(
    p: &Platform,
    cx: &Context<'_>,
    op: PaymentOp,
    breaker: Option<bool>,
    amount: i64,
    key: String,
) -> (Result<String, Failure>, Extras) {
    let tp = cx.tenant.plugin(oms_plugin_host::Slot::PaymentProvider);
    let (plugin, canary) = tp.for_order(cx.order_id.as_str());
    let version = plugin.version().to_string();
    let request = payment::exports::oms::plugin::provider::PaymentRequest {
        order_id: cx.order_id.to_string(),
        idempotency_key: key.clone(),
        amount,
        currency: cx.draft.currency.code().to_string(),
        token: cx.draft.payment_token.clone(),
        provider_reference: cx.state.payment_reference.clone(),
    };
    let grant = tp.http_grant();
    let provider = provider(&grant);
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
    // An answer, approving or declining, says the provider is up; only what
    // a retry might cure says it is down.
    let health = match &called {
        Ok(c) => match &c.value {
            Ok(_) | Err(PaymentError::Declined(_)) => Some(CallResult::Answered),
            Err(PaymentError::Transient(_)) => Some(CallResult::Transient),
        },
        Err(PluginError::Timeout) => Some(CallResult::Transient),
        // The plugin's own fault, not the provider's.
        Err(_) => None,
    };
    if let (Some(health), Some(probe)) = (health, breaker) {
        let now = oms_clock::now_ms();
        let route = crate::breakers::Route {
            tenant: cx.tenant.id.as_str(),
            provider: &provider,
            operation: op.as_str(),
        };
        p.breakers
            .record(route, health, cx.order_id.as_str(), probe, now);
    }
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
        id: format!("pay_{}", oms_clock::monotonic_ulid()),
        op: op.as_str().into(),
        amount,
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
        at: oms_clock::now_ms(),
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

pub(super) async fn pay_step(p: &Platform, cx: &Context<'_>, step: Step, op: PaymentOp) -> Outcome {
    let probe = match admit(p, cx, op) {
        Ok(probe) => probe,
        Err(postponed) => return *postponed,
    };
    let (result, extras) = pay(p, cx, op, Some(probe)).await;
    match result {
        Ok(reference) => {
            let provider_reference = (step == Step::AuthorizePayment).then_some(reference);
            Outcome {
                event: SagaEvent::StepSucceeded {
                    step,
                    provider_reference,
                    output: None,
                },
                extras,
            }
        }
        Err(failure) => failed_step(p, cx, step, failure, extras).await,
    }
}
