//! `/api/v1/orders`.

use super::auth::{Key, OrdersRead, OrdersWrite};
pub(crate) use super::order_views::{history_json, iso, order_json, payments_json};
use super::{ApiError, AppState, json_body, optional_body, stated_reason, typed_body};
use crate::openapi::schemas::{CancelRequest, ShipmentRequest};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use oms_domain::TenantId;
use oms_domain::validate;
use oms_domain::{OrderId, OrderStatus};
use oms_engine::orders::{self, OrderError, Placed};
use oms_saga::SagaStatus;
use oms_store::{OrderFilter, OrderRecord};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

pub(crate) fn order_error(e: OrderError) -> ApiError {
    match e {
        OrderError::NotFound => ApiError::not_found("order"),
        OrderError::NotCancellable(m) => {
            ApiError::new(StatusCode::CONFLICT, "ORDER_NOT_CANCELLABLE", m)
        }
        OrderError::WrongState(m) => ApiError::new(StatusCode::CONFLICT, "ORDER_STATE_CONFLICT", m),
        OrderError::IdempotencyMismatch => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "IDEMPOTENCY_KEY_REUSED",
            e.to_string(),
        ),
        OrderError::IdempotencyInFlight => ApiError::new(
            StatusCode::CONFLICT,
            "IDEMPOTENCY_KEY_IN_FLIGHT",
            e.to_string(),
        ),
        OrderError::TotalOverflow => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "TOTAL_OVERFLOW",
            e.to_string(),
        ),
        OrderError::Store(e) => ApiError::store(e),
    }
}

/// The request's `Idempotency-Key`, if it sent one: 1 to 255 visible ASCII
/// characters, else `400 INVALID_IDEMPOTENCY_KEY`.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .map(|k| Some(k.to_string()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_IDEMPOTENCY_KEY",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
        })
}

/// The order a request is about; named on every line logged within it.
pub(crate) fn order_id(raw: &str) -> Result<OrderId, ApiError> {
    let id = OrderId::parse(raw).ok_or_else(|| ApiError::not_found("order"))?;
    tracing::Span::current().record("order_id", id.as_str());
    Ok(id)
}

/// The tenant's order `raw` names; another tenant's, or none, is `404`.
pub(crate) async fn tenant_order(
    p: &AppState,
    tenant: &TenantId,
    raw: &str,
) -> Result<(OrderId, OrderRecord), ApiError> {
    let id = order_id(raw)?;
    let record = p
        .store
        .order(tenant, &id)
        .await
        .map_err(|e| order_error(e.into()))?;
    Ok((id, record))
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

#[utoipa::path(post, path = "/orders", tag = "orders", operation_id = "placeOrder",
    summary = "Place an order; its saga runs from here",
    security(("tenantId" = [], "tenantKey" = ["orders:write"])),
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters; the same key with the same body answers the first answer again, with another body 422. A key holds for 24 hours from its first use; after that it is free again.")),
    request_body(content = crate::openapi::schemas::OrderRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Placed; the saga is running.", body = crate::openapi::schemas::Order,
            headers(("Location" = String, description = "The order's URL."))),
        (status = 200, description = "A replay of an earlier request with this Idempotency-Key.", body = crate::openapi::schemas::Order,
            headers(("Idempotent-Replayed" = String))),
        (status = 409, description = "The first request with this Idempotency-Key is still being served.", body = crate::openapi::schemas::Error),
    ))]
pub async fn create(
    State(p): State<AppState>,
    Key(tenant, _): Key<OrdersWrite>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let value = json_body(&body)?;
    let draft = validate::order(&value).map_err(|problems| {
        let (status, code) = if problems.type_errors {
            (StatusCode::BAD_REQUEST, "INVALID_REQUEST")
        } else {
            (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED")
        };
        let first = problems
            .errors
            .first()
            .map(|e| format!("{} {}", e.field, e.message))
            .unwrap_or_default();
        ApiError::new(status, code, format!("the order was not accepted: {first}"))
            .with_details(json!({ "errors": problems.errors }))
    })?;
    let idempotency = idempotency_key(&headers)?.map(|key| {
        // serde_json sorts object keys, so equal bodies hash equal however they were laid out.
        let hash = hex::encode(Sha256::digest(value.to_string().as_bytes()));
        (key, hash)
    });
    let placed = orders::place(&p, &tenant, draft, idempotency, |r| {
        order_json(r).map(|v| v.to_string())
    })
    .await
    .map_err(order_error)?;
    Ok(match placed {
        Placed::Created { record, body } => {
            tracing::Span::current().record("order_id", record.id.as_str());
            let mut r = json_response(StatusCode::CREATED, body);
            if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/orders/{}", record.id)) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Placed::Replayed { status, body } => {
            let mut r = json_response(StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body);
            r.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            r
        }
    })
}

#[utoipa::path(get, path = "/orders/{id}", tag = "orders", operation_id = "getOrder",
    security(("tenantId" = [], "tenantKey" = ["orders:read"])), params(("id" = String, Path, description = "The order id, e.g. `ord_01JD5V7Q1M7G3Y8K5T0N6B2C4D`.")),
    responses((status = 200, description = "The order.", body = crate::openapi::schemas::Order)))]
pub async fn show(
    State(p): State<AppState>,
    Key(tenant, _): Key<OrdersRead>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, record) = tenant_order(&p, &tenant.id, &id).await?;
    Ok(Json(order_json(&record).map_err(ApiError::store)?))
}

#[utoipa::path(get, path = "/orders", tag = "orders", operation_id = "listOrders",
    summary = "The tenant's orders, newest first, a page at a time",
    security(("tenantId" = [], "tenantKey" = ["orders:read"])),
    params(
        ("status" = Option<String>, Query, description = "Only orders in this status, e.g. CONFIRMED."),
        ("sagaState" = Option<String>, Query, description = "Only orders whose saga is in this state, e.g. STUCK."),
        ("customer" = Option<String>, Query, description = "Only this customer's orders."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "At most this many (50 unless told)."),
        ("cursor" = Option<String>, Query, description = "The `nextCursor` of the page before."),
    ),
    responses((status = 200, description = "A page of orders.", body = crate::openapi::schemas::OrderPage)))]
pub async fn list(
    State(p): State<AppState>,
    Key(tenant, _): Key<OrdersRead>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    list_json(&p, &tenant.id, &q).await.map(Json)
}

/// A saga state from a query, or 400 listing every one.
pub(crate) fn saga_state(raw: &str) -> Result<SagaStatus, ApiError> {
    SagaStatus::parse(raw).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_SAGA_STATE",
            format!(
                "state must be one of {}",
                SagaStatus::ALL.map(|s| s.as_str()).join(", ")
            ),
        )
    })
}

/// A page of a tenant's orders, newest first: `?status=&sagaState=&customer=&limit=&cursor=`.
/// Shared by clients' `/api/v1/orders` and operators' view of a tenant.
pub(crate) async fn list_json(
    p: &AppState,
    tenant: &TenantId,
    q: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let bad = |m: &str| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_QUERY", m);
    let status = match q.get("status") {
        Some(s) => Some(OrderStatus::parse(s).ok_or_else(|| {
            bad(&format!(
                "status must be one of {}",
                OrderStatus::WIRE.join(", ")
            ))
        })?),
        None => None,
    };
    let saga_status = match q.get("sagaState") {
        Some(s) => Some(saga_state(s)?),
        None => None,
    };
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=200).contains(l))
            .ok_or_else(|| bad("limit must be 1 to 200"))?,
        None => 50,
    };
    let cursor = match q.get("cursor") {
        Some(c) => {
            Some(OrderId::parse(c).ok_or_else(|| bad("cursor is not one this API gave out"))?)
        }
        None => None,
    };
    let filter = OrderFilter {
        status: status.map(|s| s.as_str()),
        saga_status: saga_status.map(|s| s.as_str()),
        customer: q
            .get("customer")
            .map(String::as_str)
            .filter(|c| !c.is_empty()),
    };
    let records = p
        .store
        .list_orders(
            tenant,
            &filter,
            cursor.as_ref().map(OrderId::as_str),
            limit + 1,
        )
        .await
        .map_err(ApiError::unavailable)?;
    let more = records.len() as i64 > limit;
    let page: Vec<&OrderRecord> = records.iter().take(limit as usize).collect();
    let next = if more {
        page.last().map(|r| r.id.clone())
    } else {
        None
    };
    let data = page
        .iter()
        .map(|r| order_json(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::store)?;
    Ok(json!({ "data": data, "nextCursor": next }))
}

#[utoipa::path(get, path = "/orders/{id}/events", tag = "orders", operation_id = "getOrderEvents",
    summary = "The order's history, oldest first",
    security(("tenantId" = [], "tenantKey" = ["orders:read"])), params(("id" = String, Path, description = "The order id, e.g. `ord_01JD5V7Q1M7G3Y8K5T0N6B2C4D`.")),
    responses((status = 200, description = "Every event of the order.", body = crate::openapi::schemas::OrderEvents)))]
pub async fn events(
    State(p): State<AppState>,
    Key(tenant, _): Key<OrdersRead>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (id, _) = tenant_order(&p, &tenant.id, &id).await?;
    let events = p
        .store
        .order_events(&tenant.id, &id)
        .await
        .map_err(ApiError::unavailable)?;
    let data = history_json(&events).map_err(ApiError::store)?;
    Ok(Json(json!({ "data": data })))
}

#[utoipa::path(get, path = "/orders/{id}/payments", tag = "orders", operation_id = "getOrderPayments",
    summary = "The order's payment operations with the provider",
    security(("tenantId" = [], "tenantKey" = ["orders:read"])), params(("id" = String, Path, description = "The order id, e.g. `ord_01JD5V7Q1M7G3Y8K5T0N6B2C4D`.")),
    responses((status = 200, description = "Authorizations, captures, voids and refunds.", body = crate::openapi::schemas::Payments)))]
pub async fn payments(
    State(p): State<AppState>,
    Key(tenant, _): Key<OrdersRead>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (id, _) = tenant_order(&p, &tenant.id, &id).await?;
    let payments = p
        .store
        .payments(&tenant.id, &id)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(json!({ "data": payments_json(&payments) })))
}

#[utoipa::path(post, path = "/orders/{id}/cancel", tag = "orders", operation_id = "cancelOrder",
    summary = "Cancel an order not yet shipped; what its saga did is undone",
    security(("tenantId" = [], "tenantKey" = ["orders:write"])), params(("id" = String, Path, description = "The order id, e.g. `ord_01JD5V7Q1M7G3Y8K5T0N6B2C4D`.")),
    request_body(content = Option<crate::openapi::schemas::CancelRequest>, content_type = "application/json"),
    responses(
        (status = 202, description = "Cancelling: compensation runs.", body = crate::openapi::schemas::Order),
        (status = 409, description = "The order can no longer be cancelled.", body = crate::openapi::schemas::Error),
    ))]
pub async fn cancel(
    State(p): State<AppState>,
    Key(tenant, _): Key<OrdersWrite>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = order_id(&id)?;
    let request: CancelRequest = optional_body(&body)?;
    let reason = stated_reason(request.reason.as_deref())?
        .as_deref()
        .unwrap_or("requested by client")
        .chars()
        .take(500)
        .collect();
    orders::cancel(&p, &tenant, &id, reason)
        .await
        .map_err(order_error)?;
    let record = p
        .store
        .order(&tenant.id, &id)
        .await
        .map_err(|e| order_error(e.into()))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(order_json(&record).map_err(ApiError::store)?),
    )
        .into_response())
}

#[utoipa::path(post, path = "/orders/{id}/shipments", tag = "orders", operation_id = "shipOrder",
    summary = "Record a shipment of some or all of a confirmed order's lines",
    description = "Whole lines by SKU (`items`; absent: every line not shipped yet). Each line ships once; its held stock leaves on-hand and reserved. The order is `PARTIALLY_SHIPPED` until every line has, then `SHIPPED`. `GET /orders/{id}/tracking` lists the shipments.",
    security(("tenantId" = [], "tenantKey" = ["orders:write"])), params(("id" = String, Path, description = "The order id, e.g. `ord_01JD5V7Q1M7G3Y8K5T0N6B2C4D`.")),
    request_body(content = crate::openapi::schemas::ShipmentRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Recorded: the order as it now stands.", body = crate::openapi::schemas::Order),
        (status = 409, description = "The order is not ready to ship (not confirmed, being cancelled, shipped) or a line is not the order's or has shipped (`ORDER_NOT_SHIPPABLE`).", body = crate::openapi::schemas::Error),
    ))]
pub async fn ship(
    State(p): State<AppState>,
    Key(tenant, _): Key<OrdersWrite>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = order_id(&id)?;
    let request: ShipmentRequest = typed_body(&body)?;
    let field = |name: &str, value: String| {
        if !value.trim().is_empty()
            && value.chars().count() <= 200
            && !value.chars().any(char::is_control)
        {
            return Ok(value);
        }
        Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED", format!("{name} must be 1 to 200 characters, none of them control characters"))
            .with_details(json!({ "errors": [{ "field": format!("/{name}"), "code": "INVALID", "message": "must be 1 to 200 characters, none of them control characters" }] })))
    };
    let (carrier, tracking) = (
        field("carrier", request.carrier)?,
        field("trackingNumber", request.tracking_number)?,
    );
    let items = match request.items {
        None => Vec::new(),
        Some(lines) if lines.is_empty() || lines.len() > 100 => {
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED", "items must list 1 to 100 lines (or be left out: every line not shipped yet)")
                .with_details(json!({ "errors": [{ "field": "/items", "code": "INVALID", "message": "must list 1 to 100 lines" }] })));
        }
        Some(lines) => lines.into_iter().map(|l| l.sku).collect(),
    };
    let record = orders::ship(&p, &tenant, &id, carrier, tracking, items)
        .await
        .map_err(|e| match e {
            OrderError::WrongState(m) => {
                ApiError::new(StatusCode::CONFLICT, "ORDER_NOT_SHIPPABLE", m)
            }
            other => order_error(other),
        })?;
    Ok(Json(order_json(&record).map_err(ApiError::store)?))
}

#[utoipa::path(post, path = "/orders/{id}/delivery", tag = "orders", operation_id = "deliverOrder",
    summary = "Record that a shipped order was delivered",
    security(("tenantId" = [], "tenantKey" = ["orders:write"])), params(("id" = String, Path, description = "The order id, e.g. `ord_01JD5V7Q1M7G3Y8K5T0N6B2C4D`.")),
    responses(
        (status = 200, description = "Delivered.", body = crate::openapi::schemas::Order),
        (status = 409, description = "The order has not shipped.", body = crate::openapi::schemas::Error),
    ))]
pub async fn deliver(
    State(p): State<AppState>,
    Key(tenant, _): Key<OrdersWrite>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = order_id(&id)?;
    let record = orders::deliver(&p, &tenant, &id)
        .await
        .map_err(|e| match e {
            OrderError::WrongState(m) => {
                ApiError::new(StatusCode::CONFLICT, "ORDER_NOT_DELIVERABLE", m)
            }
            other => order_error(other),
        })?;
    Ok(Json(order_json(&record).map_err(ApiError::store)?))
}
