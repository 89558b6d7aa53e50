//! `/api/v1/steps`: reading the state a tenant's own saga steps keep (the
//! loyalty points a customer holds, say). Written only by the steps, in the
//! transactions that record their outcomes; read here.

use super::auth::{Key, StepsRead};
use super::order_views::iso;
use super::{ApiError, AppState};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({ "step": "loyalty-points", "key": "customer:c-1", "value": "19", "updatedAt": "2026-12-03T10:00:00+00:00" }))]
pub struct StepStateEntry {
    pub step: String,
    pub key: String,
    /// As the step stored it (a step's counters are decimal integers).
    pub value: String,
    pub updated_at: String,
}

#[utoipa::path(get, path = "/steps/{step}/state/{key}", tag = "steps", operation_id = "getStepState",
    summary = "One key of a step's state",
    description = "What the tenant's step `step` keeps under `key`, as committed by the sagas that ran it.",
    security(("tenantId" = [], "tenantKey" = ["steps:read"])),
    params(
        ("step" = String, Path, description = "A step of the tenant's own, as named in its saga."),
        ("key" = String, Path, description = "The key, at most 256 bytes (URL-encoded)."),
    ),
    responses(
        (status = 200, description = "The value.", body = StepStateEntry),
        (status = 404, description = "`STEP_NOT_FOUND`: the tenant has no such step; `NOT_FOUND`: nothing under the key.", body = crate::openapi::schemas::Error),
    ))]
pub async fn state(
    State(p): State<AppState>,
    Key(tenant, _): Key<StepsRead>,
    Path((step, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    if !tenant.steps.keys().any(|s| s.as_str() == step) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "STEP_NOT_FOUND",
            format!(
                "the tenant has no step `{}`",
                step.chars().take(64).collect::<String>()
            ),
        ));
    }
    let record = p
        .store
        .step_state(&tenant.id, &step, &key)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::not_found("state key"))?;
    Ok(Json(json!({
        "step": record.step,
        "key": record.key,
        "value": record.value,
        "updatedAt": iso(record.updated_at),
    })))
}
