//! Operators and sagas that need them: `GET /admin/v1/sagas` lists sagas
//! by state (stuck, compensating, running) across tenants or for one, with
//! what each holds; `POST /admin/v1/tenants/{tenant}/orders/{id}/saga/{action}`
//! retries, compensates or resolves one. The saga decides each action on the
//! state it commits on, so a second operator's click is a 409.

use super::auth::{Admin, Operator};
use super::orders::{order_error, order_id, order_json, saga_state};
use super::plugins::tenant;
use super::{ApiError, AppState, optional_body, stated_reason};
use crate::openapi::admin_schemas::ReasonRequest;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use oms_domain::{OrderId, TenantId};
use oms_engine::orders;
use oms_saga::{SagaEvent, SagaState};
use oms_store::{OrderRecord, StoreError, json};
use serde_json::{Value, json};
use std::collections::HashMap;

/// `GET /admin/v1/sagas?state=STUCK[&tenant=acme][&olderThanMinutes=N][&limit=100]`.
#[utoipa::path(get, path = "/sagas", tag = "sagas", operation_id = "listSagas",
    summary = "Sagas in a state (STUCK unless told): where each stopped and why",
    params(("state" = Option<String>, Query, description = "A saga state, STUCK unless told."), ("tenant" = Option<String>, Query), ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "At most this many (100 unless told)."), ("olderThanMinutes" = Option<i64>, Query, minimum = 0, maximum = 525600, description = "Only sagas placed more than this many minutes ago.")),
    responses((status = 200, description = "Sagas, oldest first.", body = serde_json::Value)))]
pub async fn list(
    State(p): State<AppState>,
    _: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let state = saga_state(q.get("state").map_or("STUCK", String::as_str))?;
    let tenant = match q.get("tenant") {
        Some(t) => Some(tenant(&p, t)?.id.clone()),
        None => None,
    };
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=500).contains(l))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_LIMIT",
                    "limit must be 1 to 500",
                )
            })?,
        None => 100,
    };
    // "Running for longer than N minutes": placed before now − N.
    let placed_before = match q.get("olderThanMinutes") {
        Some(m) => Some(
            m.parse::<i64>()
                .ok()
                .filter(|m| (0..=525_600).contains(m))
                .map(|m| oms_clock::now_ms() - m * 60_000)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "INVALID_QUERY",
                        "olderThanMinutes is a whole number of minutes, 0 to 525600",
                    )
                })?,
        ),
        None => None,
    };
    let records = p
        .store
        .orders_in_saga_status(state.as_str(), tenant.as_ref(), placed_before, limit)
        .await
        .map_err(ApiError::store)?;
    let mut data = Vec::with_capacity(records.len());
    for r in &records {
        data.push(summary(&p, r).await.map_err(ApiError::store)?);
    }
    Ok(Json(json!({ "data": data })))
}

/// One saga as an operator needs it: where it stopped, why, and the money
/// and stock it holds.
async fn summary(p: &AppState, r: &OrderRecord) -> Result<Value, StoreError> {
    let saga: SagaState = json("saga state", &r.saga_state)?;
    let (tenant, id) = match (TenantId::parse(&r.tenant_id), OrderId::parse(&r.id)) {
        (Some(t), Some(i)) => (t, i),
        _ => {
            return Err(StoreError::Corrupt(format!(
                "order key {}/{}",
                r.tenant_id, r.id
            )));
        }
    };
    let held: Vec<Value> = p
        .store
        .reservations(&tenant, &id)
        .await?
        .into_iter()
        .filter(|(_, state, _)| state == "held")
        .map(|(sku, _, quantity)| json!({ "sku": sku, "quantity": quantity }))
        .collect();
    Ok(json!({
        "tenantId": r.tenant_id,
        "orderId": r.id,
        "status": r.status,
        "sagaState": r.saga_status,
        "stoppedAt": saga.pending.first().map(|c| c.to_string())
            .or_else(|| saga.current_step().map(|s| s.to_string())),
        "attempt": saga.attempt,
        "ending": saga.ending.as_ref().map(|e| e.reason()),
        "pendingCompensations": saga.pending,
        "paymentStatus": r.payment_status,
        "totalAmount": r.total_minor,
        "currency": r.currency,
        "stockHeld": held,
        "updatedAt": super::orders::iso(r.updated_at),
    }))
}

/// `GET /admin/v1/tenants/{tenant}/orders/{id}/saga`: the saga as `list`
/// shows it, with the order's whole history.
#[utoipa::path(get, path = "/tenants/{tenant}/orders/{id}/saga", tag = "sagas", operation_id = "getSaga",
    summary = "An order's saga with its whole history",
    params(("tenant" = String, Path, description = "The tenant id."), ("id" = String, Path, description = "The order id.")),
    responses((status = 200, description = "The saga.", body = serde_json::Value)))]
pub async fn show(
    State(p): State<AppState>,
    _: Operator,
    Path((t, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant(&p, &t)?;
    let id = order_id(&id)?;
    let record = match p.store.order(&tenant.id, &id).await {
        Ok(r) => r,
        Err(StoreError::NotFound) => return Err(ApiError::not_found("order")),
        Err(e) => return Err(ApiError::store(e)),
    };
    let mut v = summary(&p, &record).await.map_err(ApiError::store)?;
    let events = p
        .store
        .order_events(&tenant.id, &id)
        .await
        .map_err(ApiError::store)?;
    let history = super::orders::history_json(&events).map_err(ApiError::store)?;
    v["history"] = Value::Array(history);
    // What the saga moved: money and stock, for the timeline.
    let payments = p
        .store
        .payments(&tenant.id, &id)
        .await
        .map_err(ApiError::store)?;
    v["payments"] = Value::Array(super::orders::payments_json(&payments));
    let stock: Vec<Value> = p
        .store
        .reservations(&tenant.id, &id)
        .await
        .map_err(ApiError::store)?
        .into_iter()
        .map(|(sku, state, quantity)| json!({ "sku": sku, "state": state, "quantity": quantity }))
        .collect();
    v["stock"] = Value::Array(stock);
    Ok(Json(v))
}

/// `POST /admin/v1/tenants/{tenant}/orders/{id}/saga/{retry|compensate|resolve}`
/// with `{"reason": "…"}` (required to compensate or resolve).
#[utoipa::path(post, path = "/tenants/{tenant}/orders/{id}/saga/{action}", tag = "sagas", operation_id = "actOnSaga",
    summary = "Retry a stuck saga, compensate it, or resolve it out of band (the last two need a reason)",
    params(("tenant" = String, Path, description = "The tenant id."), ("id" = String, Path, description = "The order id."), ("action" = crate::openapi::admin_schemas::SagaAction, Path)),
    request_body(content = Option<crate::openapi::admin_schemas::ReasonRequest>, content_type = "application/json"),
    responses((status = 200, description = "Done; the saga as it now is.", body = serde_json::Value), (status = 409, description = "The saga is not stuck (or another operator acted first).", body = crate::openapi::schemas::Error)))]
pub async fn act(
    State(p): State<AppState>,
    Admin(op): Admin,
    Path((t, id, action)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant(&p, &t)?;
    let id = order_id(&id)?;
    let request: ReasonRequest = optional_body(&body)?;
    let reason = stated_reason(request.reason.as_deref())?;
    let needs_reason = || {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "REASON_REQUIRED",
            format!("{action} needs {{\"reason\": \"…\"}}: it is kept in the order's history"),
        )
    };
    // The operator's name goes into the saga's own history with the event.
    let operator = op.name.clone();
    let event = match action.as_str() {
        "retry" => SagaEvent::OperatorRetry { operator },
        "compensate" => SagaEvent::OperatorCompensate {
            operator,
            reason: reason.clone().ok_or_else(needs_reason)?,
        },
        "resolve" => SagaEvent::OperatorResolve {
            operator,
            reason: reason.clone().ok_or_else(needs_reason)?,
        },
        _ => return Err(ApiError::not_found("saga action")),
    };
    orders::operate(&p, &tenant, &id, event)
        .await
        .map_err(order_error)?;
    op.audit(
        &p,
        &format!("saga.{action}"),
        Some(tenant.id.as_str()),
        id.as_str(),
        reason,
    )
    .await;
    let record = p
        .store
        .order(&tenant.id, &id)
        .await
        .map_err(ApiError::store)?;
    Ok(Json(order_json(&record).map_err(ApiError::store)?))
}
