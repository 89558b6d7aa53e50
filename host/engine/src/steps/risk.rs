//! The fraud-check step: the tenant's risk assessment with the customer's
//! recent history; a check that cannot answer sends the order to review.

use super::*;

pub(super) async fn fraud_check(p: &Platform, cx: &Context<'_>) -> Outcome {
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

pub(super) async fn fraud_with(
    p: &Platform,
    cx: &Context<'_>,
    plugin: &Arc<Plugin>,
    record: bool,
) -> Outcome {
    let tp = cx.tenant.plugin(Slot::FraudCheck);
    let version = plugin.version().to_string();
    let step = Step::FraudCheck;
    let since = oms_clock::now_ms() - 24 * 3600 * 1000;
    let history = match p
        .store
        .customer_history(
            cx.tenant_id(),
            &cx.draft.customer_id,
            cx.draft.currency.code(),
            since,
            cx.order_id,
        )
        .await
    {
        Ok(history) => history,
        // Not an empty history (that would understate the risk): a failed
        // step the policy retries like any transient failure.
        Err(e) => {
            tracing::warn!(tenant = %cx.tenant.id, order = %cx.order_id, error = %e, "reading the customer's history for the fraud check failed");
            let failure = Failure {
                code: "STORE_UNAVAILABLE".into(),
                message: e.to_string(),
                transient: true,
            };
            return failed_step(p, cx, step, failure, Extras::default()).await;
        }
    };
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
    record_result(
        p,
        cx,
        plugin,
        Slot::FraudCheck.as_str(),
        input,
        &result,
        fraud_output,
    );
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
                output: None,
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

pub(super) fn fraud_verdict(extras: &Extras) -> String {
    extras
        .detail
        .get("fraud")
        .and_then(|f| f["decision"].as_str())
        .unwrap_or("unknown")
        .to_string()
}
