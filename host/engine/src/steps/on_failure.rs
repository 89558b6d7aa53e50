//! A failed step: the tenant's compensation policy decides (retry or undo);
//! a policy that cannot answer is replaced by the platform's default plan.

use super::*;

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

pub(super) async fn plan(
    p: &Platform,
    cx: &Context<'_>,
    step: Step,
    failure: &Failure,
    extras: &mut Extras,
) -> Plan {
    use policy::exports::oms::plugin::policy as wit;
    let tp = cx.tenant.plugin(oms_plugin_host::Slot::CompensationPolicy);
    let (plugin, canary) = tp.for_order(cx.order_id.as_str());
    // The policy's interface names the built-in steps only: a tenant's own
    // step is retried under its own policy (`custom::run`), and left out of
    // what the policy sees completed.
    let to_wit = |s: Step| match s {
        Step::Validate => Some(wit::Step::Validate),
        Step::FraudCheck => Some(wit::Step::FraudCheck),
        Step::ReserveInventory => Some(wit::Step::ReserveInventory),
        Step::AuthorizePayment => Some(wit::Step::AuthorizePayment),
        Step::CapturePayment => Some(wit::Step::CapturePayment),
        Step::RequestFulfilment => Some(wit::Step::RequestFulfilment),
        Step::Custom(_) => None,
    };
    let Some(failed) = to_wit(step) else {
        return oms_saga::default_plan(cx.state, failure);
    };
    let wit_failure = wit::Failure {
        step: failed,
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
        completed: cx
            .state
            .completed
            .iter()
            .filter_map(|s| to_wit(*s))
            .collect(),
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
            oms_saga::default_plan(cx.state, failure)
        }
    };
    extras
        .detail
        .insert("policyVersion".into(), json!(plugin.version()));
    plan
}
