//! The guardrail step: the tenant's order rules, failing closed (a
//! guardrail that cannot answer rejects the order).

use super::*;

pub(super) async fn validate(p: &Platform, cx: &Context<'_>) -> Outcome {
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

pub(super) async fn validate_with(
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
    record_result(
        p,
        cx,
        plugin,
        Slot::Guardrail.as_str(),
        input,
        &result,
        guardrail_output,
    );
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
                        output: None,
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

/// A guardrail verdict in a form two versions can be compared by.
pub(super) fn guardrail_verdict(event: &SagaEvent, extras: &Extras) -> String {
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
