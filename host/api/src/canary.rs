//! The operator API for canary rollouts:
//! `/admin/v1/tenants/{tenant}/plugins/{slot}/canary[/promote|/abort]`.

use super::auth::{Admin, Operator};
use super::plugins::{iso, op_error, target, tenant, versions_json};
use super::{ApiError, AppState, json_body};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use oms_engine::rollout as ops;
use oms_store::CanaryRecord;
use serde_json::{Value, json};

/// Reads an integer field within `range`, `default` when absent; errors are
/// collected so the operator sees every bad field at once.
fn field(
    body: &Value,
    name: &str,
    range: std::ops::RangeInclusive<i64>,
    default: Option<i64>,
    errors: &mut Vec<Value>,
) -> i64 {
    match (body.get(name), default) {
        (None | Some(Value::Null), Some(d)) => d,
        (None | Some(Value::Null), None) => {
            errors.push(json!({ "field": format!("/{name}"), "code": "REQUIRED", "message": "is required" }));
            0
        }
        (Some(v), _) => match v.as_i64().filter(|n| range.contains(n)) {
            Some(n) => n,
            None => {
                errors.push(json!({
                    "field": format!("/{name}"),
                    "code": "OUT_OF_RANGE",
                    "message": format!("must be a whole number from {} to {}", range.start(), range.end()),
                }));
                0
            }
        },
    }
}

/// `POST …/canary {"version", "percent", "maxFailurePermille"?, "maxP99Ms"?,
/// "maxDivergencePermille"?, "minCalls"?}`: the version decides `percent` %
/// of orders (by order-id hash) until promoted, aborted, or rolled back
/// automatically when a threshold is crossed.
#[utoipa::path(post, path = "/tenants/{tenant}/plugins/{slot}/canary", tag = "rollouts", operation_id = "startCanary",
    summary = "Send a share of calls to a version, promoted or aborted by its thresholds",
    params(("tenant" = String, Path, description = "The tenant id."), ("slot" = crate::openapi::admin_schemas::Slot, Path, description = "The plugin slot.")),
    request_body(content = crate::openapi::admin_schemas::CanaryRequest, content_type = "application/json"),
    responses((status = 200, description = "The canary and how it is doing.", body = serde_json::Value), (status = 409, description = "A canary is already running, or the version cannot be one.", body = crate::openapi::schemas::Error)))]
pub async fn start(
    State(p): State<AppState>,
    Admin(op): Admin,
    Path((t, s)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant(&p, &t)?;
    let slot = target(&tenant, &s)?;
    let body = json_body(&body)?;
    let mut errors = Vec::new();
    let default_p99_ms = ops::running(&tenant, slot)
        .map_err(op_error)?
        .limits
        .timeout
        .as_millis() as i64;
    let c = CanaryRecord {
        tenant_id: tenant.id.to_string(),
        slot: slot.key(),
        version: field(&body, "version", 1..=i64::MAX, None, &mut errors),
        percent: field(&body, "percent", 1..=100, None, &mut errors),
        max_failure_permille: field(&body, "maxFailurePermille", 0..=1000, Some(10), &mut errors),
        max_p99_us: field(
            &body,
            "maxP99Ms",
            1..=600_000,
            Some(default_p99_ms),
            &mut errors,
        ) * 1000,
        max_divergence_permille: field(
            &body,
            "maxDivergencePermille",
            0..=1000,
            Some(1000),
            &mut errors,
        ),
        min_calls: field(&body, "minCalls", 1..=1_000, Some(20), &mut errors),
        started_by: op.name.clone(),
        started_at: oms_clock::now_ms(),
    };
    if !errors.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            "the canary settings are not valid",
        )
        .with_details(json!({ "errors": errors })));
    }
    ops::start_canary(&p, &c).await.map_err(op_error)?;
    op.audit(
        &p,
        "plugin.canary.start",
        Some(tenant.id.as_str()),
        &slot.key(),
        Some(format!("version {} at {} %", c.version, c.percent)),
    )
    .await;
    report_json(&p, &tenant, slot).await.map(Json)
}

/// `GET …/canary`: the running canary, its thresholds and how its latest
/// calls went.
#[utoipa::path(get, path = "/tenants/{tenant}/plugins/{slot}/canary", tag = "rollouts", operation_id = "getCanary",
    params(("tenant" = String, Path, description = "The tenant id."), ("slot" = crate::openapi::admin_schemas::Slot, Path, description = "The plugin slot.")),
    responses((status = 200, description = "The canary and how its calls went.", body = serde_json::Value)))]
pub async fn report(
    State(p): State<AppState>,
    _: Operator,
    Path((t, s)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant(&p, &t)?;
    let slot = target(&tenant, &s)?;
    report_json(&p, &tenant, slot).await.map(Json)
}

async fn report_json(
    p: &AppState,
    tenant: &oms_engine::tenants::Tenant,
    slot: oms_engine::tenants::Target,
) -> Result<Value, ApiError> {
    let canary = p
        .store
        .canary(&tenant.id, &slot.key())
        .await
        .map_err(ApiError::unavailable)?;
    let Some(c) = canary else {
        return Ok(json!({ "slot": slot, "canary": null }));
    };
    let window = p
        .store
        .canary_window(&c, 1_000)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(json!({
        "slot": slot,
        "canary": {
            "version": c.version,
            "percent": c.percent,
            "maxFailurePermille": c.max_failure_permille,
            "maxP99Ms": c.max_p99_us / 1000,
            "maxDivergencePermille": c.max_divergence_permille,
            "minCalls": c.min_calls,
            "startedBy": c.started_by,
            "startedAt": iso(c.started_at),
        },
        "latest": window,
        "rollbackReason": ops::verdict(&c, &window),
    }))
}

/// `POST …/canary/promote`: the canary's version becomes the active one.
#[utoipa::path(post, path = "/tenants/{tenant}/plugins/{slot}/canary/promote", tag = "rollouts", operation_id = "promoteCanary",
    params(("tenant" = String, Path, description = "The tenant id."), ("slot" = crate::openapi::admin_schemas::Slot, Path, description = "The plugin slot.")),
    responses((status = 200, description = "The canary's version is active.", body = serde_json::Value), (status = 409, description = "No canary is running.", body = crate::openapi::schemas::Error)))]
pub async fn promote(
    State(p): State<AppState>,
    Admin(op): Admin,
    Path((t, s)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant(&p, &t)?;
    let slot = target(&tenant, &s)?;
    ops::end_canary(&p, &tenant, slot, true, &op.name)
        .await
        .map_err(op_error)?;
    op.audit(
        &p,
        "plugin.canary.promote",
        Some(tenant.id.as_str()),
        &slot.key(),
        None,
    )
    .await;
    Ok(Json(versions_json(&p, &tenant, slot).await?))
}

/// `POST …/canary/abort`: the active version decides every order again.
#[utoipa::path(post, path = "/tenants/{tenant}/plugins/{slot}/canary/abort", tag = "rollouts", operation_id = "abortCanary",
    params(("tenant" = String, Path, description = "The tenant id."), ("slot" = crate::openapi::admin_schemas::Slot, Path, description = "The plugin slot.")),
    responses((status = 200, description = "The canary is stopped.", body = serde_json::Value), (status = 409, description = "No canary is running.", body = crate::openapi::schemas::Error)))]
pub async fn abort(
    State(p): State<AppState>,
    Admin(op): Admin,
    Path((t, s)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant(&p, &t)?;
    let slot = target(&tenant, &s)?;
    ops::end_canary(&p, &tenant, slot, false, &op.name)
        .await
        .map_err(op_error)?;
    op.audit(
        &p,
        "plugin.canary.abort",
        Some(tenant.id.as_str()),
        &slot.key(),
        None,
    )
    .await;
    Ok(Json(versions_json(&p, &tenant, slot).await?))
}
