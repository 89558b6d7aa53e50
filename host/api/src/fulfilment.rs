//! `/api/v1/orders/{id}/fulfilment`: the warehouse's answer to a
//! fulfilment request, for tenants whose warehouse answers
//! (`fulfilment.decision_timeout_ms` in the manifest).

use super::auth::{FulfilmentWrite, Key};
use super::orders::{order_error, order_id, order_json};
use super::{ApiError, AppState, no_control, stated_reason, typed_body};
use crate::openapi::schemas::{FulfilmentAnswer, FulfilmentDecisionRequest};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use oms_engine::orders::{self, OrderError};
use oms_saga::FulfilmentDecision;
use serde_json::{Value, json};

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED",
        format!("{field} {message}"),
    )
    .with_details(json!({ "errors": [{ "field": field, "code": "INVALID", "message": message }] }))
}

/// `estimatedDelivery`: an RFC 3339 date (`2026-12-09`) or date-time.
fn estimated_delivery(raw: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    no_control("/estimatedDelivery", Some(&raw))?;
    let parses = chrono::NaiveDate::parse_from_str(&raw, "%Y-%m-%d").is_ok()
        || chrono::DateTime::parse_from_rfc3339(&raw).is_ok();
    if !parses {
        return Err(invalid(
            "/estimatedDelivery",
            "must be an RFC 3339 date (2026-12-09) or date-time",
        ));
    }
    Ok(Some(raw))
}

#[utoipa::path(post, path = "/orders/{id}/fulfilment", tag = "orders", operation_id = "decideFulfilment",
    summary = "The warehouse accepts or rejects the order's fulfilment request",
    description = "For tenants whose warehouse answers (`fulfilment.decision_timeout_ms`): the order's saga waits, after the request, for this answer. `accepted` confirms the order; `rejected` refunds the payment, releases the stock and notifies the customer, and the order ends `CANCELLED` with fulfillmentStatus `REJECTED`. No answer within the tenant's time does the same, and tells the warehouse to stop (`fulfilment.cancel_requested`). The same answer sent again is answered as the first time.",
    security(("tenantId" = [], "tenantKey" = ["fulfilment:write"])), params(("id" = String, Path, description = "The order id, e.g. `ord_01JD5V7Q1M7G3Y8K5T0N6B2C4D`.")),
    request_body(content = FulfilmentDecisionRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Recorded; the order as it now stands.", body = crate::openapi::schemas::Order),
        (status = 409, description = "No answer is awaited: not requested yet, already answered otherwise, timed out, cancelled, or the tenant's warehouse does not answer (`FULFILMENT_NOT_AWAITED`).", body = crate::openapi::schemas::Error),
    ))]
pub async fn decide(
    State(p): State<AppState>,
    Key(tenant, _): Key<FulfilmentWrite>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = order_id(&id)?;
    let request: FulfilmentDecisionRequest = typed_body(&body)?;
    let reason = stated_reason(request.reason.as_deref())?;
    if reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err(invalid("/reason", "must be at most 500 characters"));
    }
    let decision = FulfilmentDecision {
        accepted: request.decision == FulfilmentAnswer::Accepted,
        reason,
        estimated_delivery: estimated_delivery(request.estimated_delivery)?,
    };
    let record = orders::decide_fulfilment(&p, &tenant, &id, decision)
        .await
        .map_err(|e| match e {
            OrderError::WrongState(m) => {
                ApiError::new(StatusCode::CONFLICT, "FULFILMENT_NOT_AWAITED", m)
            }
            other => order_error(other),
        })?;
    Ok(Json(order_json(&record).map_err(ApiError::store)?))
}
