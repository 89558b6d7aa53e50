//! What a step's plugin call feeds the rollout: the shadow version run on
//! the same input, the canary's recorded calls, and recordings for replay.

use super::*;

/// Runs the shadow version, if any, on the same input and records whether it
/// agreed. Its verdict is never acted on; its failure is only recorded.
pub(super) async fn shadow_compare(
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
    let result = oms_store::ShadowResult {
        order_id: cx.order_id.to_string(),
        active_version: active.version().to_string(),
        shadow_version: shadow.version().to_string(),
        agreed: i64::from(verdict == active_verdict),
        active_verdict: active_verdict.to_string(),
        shadow_verdict: verdict,
        at: oms_clock::now_ms(),
    };
    if let Err(e) = p
        .store
        .record_shadow(&cx.tenant.id, slot.as_str(), &result)
        .await
    {
        tracing::warn!(error = %e, "recording a shadow verdict failed");
    }
}

/// Notes a call the canary version made (failed or not, how long, whether
/// the active version agreed) for the canary's thresholds, and marks the
/// step as decided by the canary.
pub(super) async fn record_canary(
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
        at: oms_clock::now_ms(),
    };
    if let Err(e) = p.store.record_canary_call(&canary.record, &call).await {
        tracing::warn!(error = %e, "recording a canary call failed");
    }
}

/// Queues a production call for replay, if its slot records calls
/// (`input` is then `Some`): its answer through `output`, or its failure.
/// `key` is what the calls are kept under: the slot's name, or a tenant's
/// step's `step:<name>`.
pub(super) fn record_result<R>(
    p: &Platform,
    cx: &Context<'_>,
    plugin: &Plugin,
    key: &str,
    input: Option<CallInput>,
    result: &Result<Called<R>, PluginError>,
    output: fn(&R) -> CallOutput,
) {
    let Some(input) = input else { return };
    match result {
        Ok(c) => record_call(p, cx, plugin, key, input, &output(&c.value), Some(&c.stats)),
        Err(e) => record_call(p, cx, plugin, key, input, &error_output(e), None),
    }
}

fn record_call(
    p: &Platform,
    cx: &Context<'_>,
    plugin: &Plugin,
    key: &str,
    input: CallInput,
    answer: &CallOutput,
    stats: Option<&CallStats>,
) {
    let now = oms_clock::now_ms();
    if !p
        .recorder
        .admit(&p.metrics, cx.tenant.id.as_str(), key, now)
    {
        return;
    }
    let call = RecordedCall {
        tenant_id: cx.tenant.id.to_string(),
        slot: key.to_string(),
        version: plugin.version().to_string(),
        order_id: cx.order_id.to_string(),
        input: serde_json::to_string(&input).expect("a call input serialises: plain data"),
        output: answer.output.to_string(),
        verdict: answer.verdict.clone(),
        fuel_used: stats.map_or(0, |s| s.fuel_used as i64),
        duration_us: stats.map_or(0, |s| s.duration.as_micros() as i64),
        at: now,
    };
    p.recorder.record(&p.metrics, call);
}
