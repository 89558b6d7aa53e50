//! Payment steps and compensations through the tenant's payment adapter;
//! an adapter that cannot answer is a transient failure, retried.

use super::*;

/// Calls the payment plugin. The idempotency key is fixed per order and
/// operation, so a retry after a timeout can never charge twice.
pub(super) async fn pay(
    p: &Platform,
    cx: &Context<'_>,
    op: PaymentOp,
) -> (Result<String, Failure>, Extras) {
    let tp = cx.tenant.plugin(oms_plugin_host::Slot::PaymentProvider);
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
    let grant = tp.http_grant();
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
        id: format!("pay_{}", oms_clock::monotonic_ulid()),
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
