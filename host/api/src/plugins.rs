//! Tenant plugin uploads (`/api/v1/plugins`) and the operator API for
//! versions (`/admin/v1`).

use super::auth::{Admin, Key, Operator, PluginsRead, PluginsWrite};
use super::{ApiError, AppState, json_body};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use oms_engine::rollout::{self as ops, PluginOpError};
use oms_engine::tenants::{Target, Tenant};
use oms_plugin_host::LoadError;
use oms_store::{PluginVersionRecord, StoreError};
use serde_json::{Value, json};
use std::sync::Arc;

pub(super) fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

/// The slot, or the tenant's own step (`step:<name>`), a path names.
pub(super) fn target(tenant: &Tenant, raw: &str) -> Result<Target, ApiError> {
    tenant.find_target(raw).ok_or_else(|| {
        let steps: Vec<String> = tenant
            .targets()
            .into_iter()
            .filter(|t| matches!(t, Target::Step(_)))
            .map(|t| t.to_string())
            .collect();
        let steps = if steps.is_empty() {
            "it has no steps of its own".to_string()
        } else {
            format!("its own steps are {}", steps.join(", "))
        };
        ApiError::new(
            StatusCode::NOT_FOUND,
            "UNKNOWN_SLOT",
            format!("no slot `{raw}` for this tenant; slots are guardrail, fraud-check, payment-provider, compensation-policy; {steps}"),
        )
    })
}

pub(super) fn op_error(e: PluginOpError) -> ApiError {
    match e {
        PluginOpError::Refused(load) => refused(&load),
        PluginOpError::UnknownVersion => ApiError::not_found("plugin version"),
        PluginOpError::UnknownTarget(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "UNKNOWN_SLOT", e.to_string())
        }
        PluginOpError::NothingToRollBack => {
            ApiError::new(StatusCode::CONFLICT, "NOTHING_TO_ROLL_BACK", e.to_string())
        }
        PluginOpError::NoCanary => ApiError::new(StatusCode::NOT_FOUND, "NO_CANARY", e.to_string()),
        PluginOpError::Quota(why) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "PLUGIN_QUOTA_EXCEEDED",
            why,
        ),
        PluginOpError::Store(e) => ApiError::unavailable(e),
    }
}

fn refused(e: &LoadError) -> ApiError {
    let message = e.to_string();
    let message = message
        .split_once(": ")
        .map_or(message.as_str(), |(_, m)| m)
        .to_string();
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.code(), message)
}

fn version_json(r: &PluginVersionRecord, active: Option<i64>) -> Value {
    json!({
        "version": r.version,
        "slot": r.slot,
        "digest": r.digest,
        "status": if active == Some(r.version) { "active" } else { "staged" },
        "sizeBytes": r.size_bytes,
        "uploadedBy": r.uploaded_by,
        "uploadedAt": iso(r.uploaded_at),
    })
}

pub(super) async fn versions_json(
    p: &AppState,
    tenant: &Tenant,
    slot: Target,
) -> Result<Value, ApiError> {
    let versions = p
        .store
        .plugin_versions(&tenant.id, &slot.key())
        .await
        .map_err(ApiError::unavailable)?;
    let active = p
        .store
        .activation(&tenant.id, &slot.key())
        .await
        .map_err(ApiError::unavailable)?;
    let active_version = active.as_ref().map(|a| a.active_version);
    Ok(json!({
        "tenant": tenant.id,
        "slot": slot,
        "activeVersion": active_version,
        "previousVersion": active.as_ref().and_then(|a| a.previous_version),
        "shadowVersion": active.as_ref().and_then(|a| a.shadow_version),
        "canary": active.as_ref().and_then(|a| Some(json!({ "version": a.canary_version?, "percent": a.canary_percent? }))),
        "data": versions.iter().map(|v| version_json(v, active_version)).collect::<Vec<_>>(),
    }))
}

/// `POST /api/v1/plugins/{slot}`, body `application/wasm`.
#[utoipa::path(post, path = "/plugins/{slot}", tag = "plugins", operation_id = "uploadComponent",
    summary = "Upload a component for a slot as a new version (not yet active)",
    security(("tenantId" = [], "tenantKey" = ["plugins:write"])), params(("slot" = crate::openapi::admin_schemas::Slot, Path, description = "The plugin slot.")),
    request_body(content = String, content_type = "application/wasm", description = "The component's bytes."),
    responses(
        (status = 201, description = "A new version.", body = serde_json::Value),
        (status = 200, description = "These bytes are already a version of this slot.", body = serde_json::Value),
    ))]
pub async fn upload(
    State(p): State<AppState>,
    Key(tenant, _): Key<PluginsWrite>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let slot = target(&tenant, &raw)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/wasm") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the component's bytes with Content-Type: application/wasm",
        ));
    }
    let actor = format!("tenant:{}", tenant.id);
    let (record, created) = ops::upload(&p, &tenant, slot, body.to_vec(), &actor)
        .await
        .map_err(op_error)?;
    let active = p
        .store
        .activation(&tenant.id, &slot.key())
        .await
        .map_err(ApiError::unavailable)?
        .map(|a| a.active_version);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(version_json(&record, active))).into_response())
}

/// `GET /api/v1/plugins/{slot}/versions`.
#[utoipa::path(get, path = "/plugins/{slot}/versions", tag = "plugins", operation_id = "listComponentVersions",
    security(("tenantId" = [], "tenantKey" = ["plugins:read"])), params(("slot" = crate::openapi::admin_schemas::Slot, Path, description = "The plugin slot.")),
    responses((status = 200, description = "The slot's versions and which is active.", body = crate::openapi::views::ComponentVersions)))]
pub async fn tenant_versions(
    State(p): State<AppState>,
    Key(tenant, _): Key<PluginsRead>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let slot = target(&tenant, &raw)?;
    Ok(Json(versions_json(&p, &tenant, slot).await?))
}

/// `GET /api/v1/plugins/{slot}/stats`: calls per version on this host,
/// by outcome, with fuel and latency.
#[utoipa::path(get, path = "/plugins/{slot}/stats", tag = "plugins", operation_id = "getComponentStats",
    security(("tenantId" = [], "tenantKey" = ["plugins:read"])), params(("slot" = crate::openapi::admin_schemas::Slot, Path, description = "The plugin slot.")),
    responses((status = 200, description = "Calls, failures and latency per version.", body = crate::openapi::views::PluginStats)))]
pub async fn stats(
    State(p): State<AppState>,
    Key(tenant, _): Key<PluginsRead>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(stats_json(&p, &tenant, target(&tenant, &raw)?).await?))
}

/// A slot's call stats per version; clients' and operators' view.
/// Every host's calls, merged per version. A step's are those of its
/// versions among the tenant's saga-step calls.
pub(crate) async fn stats_json(
    p: &AppState,
    tenant: &Tenant,
    slot: Target,
) -> Result<Value, ApiError> {
    let keep = versions_of(p, tenant, slot).await?;
    let data: Vec<_> = oms_engine::plugin_telemetry::stats(p, tenant.id.as_str(), slot.slot())
        .await
        .map_err(ApiError::store)?
        .into_iter()
        .filter(|s| keep.as_ref().is_none_or(|k| k.contains(&s.version)))
        .collect();
    Ok(json!({ "slot": slot, "data": data }))
}

/// For a step, the versions (digest prefixes) its calls are told by; for a
/// slot, `None` (all its calls are its own).
async fn versions_of(
    p: &AppState,
    tenant: &Tenant,
    target: Target,
) -> Result<Option<Vec<String>>, ApiError> {
    if matches!(target, Target::Slot(_)) {
        return Ok(None);
    }
    let versions = p
        .store
        .plugin_versions(&tenant.id, &target.key())
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Some(
        versions
            .iter()
            .map(|v| v.digest.chars().take(12).collect())
            .collect(),
    ))
}

/// `GET /api/v1/plugins/{slot}/logs?limit=`: the plugin's own output, newest last.
#[utoipa::path(get, path = "/plugins/{slot}/logs", tag = "plugins", operation_id = "getComponentLogs",
    security(("tenantId" = [], "tenantKey" = ["plugins:read"])), params(("slot" = crate::openapi::admin_schemas::Slot, Path, description = "The plugin slot."), ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "At most this many (100 unless told).")),
    responses((status = 200, description = "The slot's latest log lines, newest last.", body = crate::openapi::views::PluginLogs)))]
pub async fn logs(
    State(p): State<AppState>,
    Key(tenant, _): Key<PluginsRead>,
    Path(raw): Path<String>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    logs_json(&p, &tenant, target(&tenant, &raw)?, &q)
        .await
        .map(Json)
}

/// A slot's latest log lines (`?limit=`), newest last; clients' and
/// operators' view.
pub(crate) async fn logs_json(
    p: &AppState,
    tenant: &Tenant,
    slot: Target,
    q: &std::collections::HashMap<String, String>,
) -> Result<Value, ApiError> {
    let limit = limit(q, 100, 500)?;
    let keep = versions_of(p, tenant, slot).await?;
    let lines: Vec<Value> =
        oms_engine::plugin_telemetry::logs(p, tenant.id.as_str(), slot.slot(), limit)
            .await
            .map_err(ApiError::store)?
            .into_iter()
            .filter(|l| keep.as_ref().is_none_or(|k| k.contains(&l.version)))
            .map(|l| json!({ "at": iso(l.at), "version": l.version, "line": l.line }))
            .collect();
    Ok(json!({ "slot": slot, "data": lines }))
}

/// `?limit=` within `1..=max`, `default` when absent.
pub(crate) fn limit(
    q: &std::collections::HashMap<String, String>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match q.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_QUERY",
                    format!("limit must be 1 to {max}"),
                )
            }),
        None => Ok(default),
    }
}

/// `GET /api/v1/plugins/{slot}/calls?limit=`: the tenant's recorded
/// production calls, oldest first, in the form `oms plugin replay` reads.
#[utoipa::path(get, path = "/plugins/{slot}/calls", tag = "plugins", operation_id = "getRecordedCalls",
    summary = "Recorded production calls, for `oms plugin replay`",
    security(("tenantId" = [], "tenantKey" = ["plugins:read"])), params(("slot" = crate::openapi::admin_schemas::Slot, Path, description = "The plugin slot."), ("limit" = Option<i64>, Query, minimum = 1, maximum = 10000, description = "At most this many (100 unless told).")),
    responses((status = 200, description = "Calls, oldest first.", body = serde_json::Value)))]
pub async fn calls(
    State(p): State<AppState>,
    Key(tenant, _): Key<PluginsRead>,
    Path(raw): Path<String>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let slot = target(&tenant, &raw)?;
    let limit = limit(&q, 100, 10_000)?;
    let calls = p
        .store
        .recorded_calls(&tenant.id, &slot.key(), limit as i64)
        .await
        .map_err(ApiError::unavailable)?;
    let data: Vec<Value> = calls
        .iter()
        .map(|c| {
            json!({
                "slot": c.slot,
                "version": c.version,
                "orderId": c.order_id,
                "input": serde_json::from_str::<Value>(&c.input).unwrap_or(Value::Null),
                "output": serde_json::from_str::<Value>(&c.output).unwrap_or(Value::Null),
                "verdict": c.verdict,
                "fuelUsed": c.fuel_used,
                "durationUs": c.duration_us,
                "at": iso(c.at),
            })
        })
        .collect();
    Ok(Json(json!({
        "slot": slot,
        "recording": tenant.target(slot).is_some_and(|t| t.record_calls),
        "data": data,
    })))
}

pub(super) fn tenant(p: &AppState, raw: &str) -> Result<Arc<Tenant>, ApiError> {
    p.tenants
        .get(raw)
        .ok_or_else(|| ApiError::not_found("tenant"))
}

/// `GET /admin/v1/tenants/{tenant}/plugins/{slot}/versions`.
#[utoipa::path(get, path = "/tenants/{tenant}/plugins/{slot}/versions", tag = "rollouts", operation_id = "adminListComponentVersions",
    params(("tenant" = String, Path, description = "The tenant id."), ("slot" = crate::openapi::admin_schemas::Slot, Path, description = "The plugin slot.")),
    responses((status = 200, description = "The slot's versions and which is active.", body = crate::openapi::views::ComponentVersions)))]
pub async fn admin_versions(
    State(p): State<AppState>,
    _: Operator,
    Path((t, s)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant(&p, &t)?;
    let slot = target(&tenant, &s)?;
    Ok(Json(versions_json(&p, &tenant, slot).await?))
}

/// `POST /admin/v1/tenants/{tenant}/plugins/{slot}/activate {"version": n}`.
#[utoipa::path(post, path = "/tenants/{tenant}/plugins/{slot}/activate", tag = "rollouts", operation_id = "activateComponent",
    summary = "Make a version the active one",
    params(("tenant" = String, Path, description = "The tenant id."), ("slot" = crate::openapi::admin_schemas::Slot, Path, description = "The plugin slot.")),
    request_body(content = crate::openapi::admin_schemas::VersionRequest, content_type = "application/json"),
    responses((status = 200, description = "Activated.", body = serde_json::Value), (status = 409, description = "The version cannot be activated now.", body = crate::openapi::schemas::Error)))]
pub async fn activate(
    State(p): State<AppState>,
    Admin(op): Admin,
    Path((t, s)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant(&p, &t)?;
    let slot = target(&tenant, &s)?;
    let version = json_body(&body)?.get("version").and_then(Value::as_i64).ok_or_else(|| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED", "version is required")
            .with_details(json!({ "errors": [{ "field": "/version", "code": "REQUIRED", "message": "is required" }] }))
    })?;
    ops::activate(&p, &tenant, slot, version, &op.name)
        .await
        .map_err(op_error)?;
    op.audit(
        &p,
        "plugin.activate",
        Some(tenant.id.as_str()),
        &slot.key(),
        Some(format!("version {version}")),
    )
    .await;
    Ok(Json(versions_json(&p, &tenant, slot).await?))
}

/// `POST /admin/v1/tenants/{tenant}/plugins/{slot}/rollback`.
#[utoipa::path(post, path = "/tenants/{tenant}/plugins/{slot}/rollback", tag = "rollouts", operation_id = "rollbackComponent",
    summary = "Go back to the version active before",
    params(("tenant" = String, Path, description = "The tenant id."), ("slot" = crate::openapi::admin_schemas::Slot, Path, description = "The plugin slot.")),
    responses((status = 200, description = "Rolled back.", body = serde_json::Value), (status = 409, description = "There is nothing to roll back to.", body = crate::openapi::schemas::Error)))]
pub async fn rollback(
    State(p): State<AppState>,
    Admin(op): Admin,
    Path((t, s)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant(&p, &t)?;
    let slot = target(&tenant, &s)?;
    let record = ops::rollback(&p, &tenant, slot, &op.name)
        .await
        .map_err(op_error)?;
    op.audit(
        &p,
        "plugin.rollback",
        Some(tenant.id.as_str()),
        &slot.key(),
        Some(format!("to version {}", record.active_version)),
    )
    .await;
    Ok(Json(versions_json(&p, &tenant, slot).await?))
}

/// `POST /admin/v1/tenants/{tenant}/plugins/{slot}/shadow {"version": n | null}`:
/// run a candidate beside the active version (guardrail and fraud-check only).
#[utoipa::path(post, path = "/tenants/{tenant}/plugins/{slot}/shadow", tag = "rollouts", operation_id = "setShadow",
    summary = "Run a version beside the active one, its answers compared and discarded",
    params(("tenant" = String, Path, description = "The tenant id."), ("slot" = crate::openapi::admin_schemas::Slot, Path, description = "The plugin slot.")),
    request_body(content = crate::openapi::admin_schemas::ShadowRequest, content_type = "application/json"),
    responses((status = 200, description = "The shadow is set (or stopped).", body = serde_json::Value), (status = 409, description = "The version cannot shadow.", body = crate::openapi::schemas::Error)))]
pub async fn set_shadow(
    State(p): State<AppState>,
    Admin(op): Admin,
    Path((t, s)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant(&p, &t)?;
    let slot = target(&tenant, &s)?;
    if !ops::shadowable(&tenant, slot) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "SHADOW_NOT_SUPPORTED",
            format!(
                "{slot} calls have side effects; only guardrail, fraud-check and steps without allowed_origins can run in shadow"
            ),
        ));
    }
    let version = match json_body(&body)?.get("version") {
        Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "VALIDATION_FAILED",
                "version must be a number or null",
            )
        })?),
        None => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "VALIDATION_FAILED",
                "version is required (null clears the shadow)",
            ));
        }
    };
    ops::shadow(&p, &tenant, slot, version, &op.name)
        .await
        .map_err(op_error)?;
    op.audit(
        &p,
        "plugin.shadow",
        Some(tenant.id.as_str()),
        &slot.key(),
        Some(version.map_or("cleared".into(), |v| format!("version {v}"))),
    )
    .await;
    Ok(Json(versions_json(&p, &tenant, slot).await?))
}

/// `GET /admin/v1/tenants/{tenant}/plugins/{slot}/shadow`: how the shadow
/// version's verdicts compare with the active one's.
#[utoipa::path(get, path = "/tenants/{tenant}/plugins/{slot}/shadow", tag = "rollouts", operation_id = "getShadowReport",
    params(("tenant" = String, Path, description = "The tenant id."), ("slot" = crate::openapi::admin_schemas::Slot, Path, description = "The plugin slot.")),
    responses((status = 200, description = "How the shadow's answers compared with the active version's.", body = serde_json::Value)))]
pub async fn shadow_report(
    State(p): State<AppState>,
    _: Operator,
    Path((t, s)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant(&p, &t)?;
    let slot = target(&tenant, &s)?;
    let activation = p
        .store
        .activation(&tenant.id, &slot.key())
        .await
        .map_err(ApiError::unavailable)?;
    let Some((version, digest)) =
        activation.and_then(|a| Some((a.shadow_version?, a.shadow_digest?)))
    else {
        return Ok(Json(json!({ "shadowVersion": null, "calls": 0 })));
    };
    let (calls, agreed, divergences) = p
        .store
        .shadow_summary(&tenant.id, &slot.key(), &digest[..12])
        .await
        .map_err(ApiError::unavailable)?;
    let recent: Vec<Value> = divergences
        .iter()
        .map(|d| json!({ "orderId": d.order_id, "active": d.active_verdict, "shadow": d.shadow_verdict, "at": iso(d.at) }))
        .collect();
    Ok(Json(json!({
        "shadowVersion": version,
        "calls": calls,
        "agreements": agreed,
        "divergences": calls - agreed,
        "recentDivergences": recent,
    })))
}

/// `GET /admin/v1/tenants/{tenant}/audit`.
#[utoipa::path(get, path = "/tenants/{tenant}/audit", tag = "rollouts", operation_id = "getPluginAudit",
    summary = "Uploads, activations and rollbacks of a tenant's components",
    params(("tenant" = String, Path, description = "The tenant id.")),
    responses((status = 200, description = "Newest first.", body = serde_json::Value)))]
pub async fn audit(
    State(p): State<AppState>,
    _: Operator,
    Path(t): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant(&p, &t)?;
    let log = p
        .store
        .plugin_audit(&tenant.id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("tenant"),
            other => ApiError::unavailable(other),
        })?;
    let data: Vec<Value> = log
        .iter()
        .map(|a| json!({ "slot": a.slot, "action": a.action, "version": a.version, "actor": a.actor, "at": iso(a.at), "detail": a.detail }))
        .collect();
    Ok(Json(json!({ "data": data })))
}
