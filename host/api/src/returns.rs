//! `/api/v1/orders/{id}/returns` and `/line-cancellations`: money going
//! back in parts. A client opens a return of shipped units; the warehouse
//! (`fulfilment:write`) receives it, which restocks the sellable units and
//! refunds exactly what came back, less what the tenant's policy withholds.
//! Lines not shipped yet can be cancelled alone, releasing their stock and
//! refunding their share. The order's saga decides each, so together they
//! never refund more than was captured.

use super::auth::{FulfilmentWrite, Key, OrdersRead, OrdersWrite};
use super::orders::{history_json, idempotency_key, order_error, order_json, tenant_order};
use super::{ApiError, AppState, no_control, stated_reason, typed_body};
use crate::openapi::return_schemas::{
    ItemCondition, LineCancellationRequest, ReceiveRequest, ReturnRequest,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use oms_engine::orders::OrderError;
use oms_engine::returns;
use oms_saga::{Condition, ReceivedLine, ReturnLine, SagaState};
use oms_store::OrderRecord;
use serde_json::{Value, json};

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED",
        format!("{field} {message}"),
    )
    .with_details(json!({ "errors": [{ "field": field, "code": "INVALID", "message": message }] }))
}

/// A SKU or warehouse id: 1 to 64 printable ASCII characters.
fn code(field: &str, value: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&value.len()) && value.bytes().all(|b| (b'!'..=b'~').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(field, "must be 1 to 64 printable ASCII characters"))
    }
}

fn lines<T>(items: &[T]) -> Result<(), ApiError> {
    if items.is_empty() || items.len() > 100 {
        return Err(invalid("/items", "must list 1 to 100 lines"));
    }
    Ok(())
}

fn quantity(field: &str, q: i64) -> Result<(), ApiError> {
    if (1..=1_000_000).contains(&q) {
        Ok(())
    } else {
        Err(invalid(field, "must be from 1 to 1000000"))
    }
}

fn saga(r: &OrderRecord) -> Result<SagaState, ApiError> {
    oms_store::json("saga state", &r.saga_state).map_err(ApiError::store)
}

/// The return `return_id` of the order, or `404`.
fn one(r: &OrderRecord, return_id: &str) -> Result<Value, ApiError> {
    let state = saga(r)?;
    let ret = state
        .returns
        .iter()
        .find(|x| x.id == return_id)
        .ok_or_else(|| ApiError::not_found("return"))?;
    Ok(returns::view(ret, &state))
}

fn refused(code: &'static str) -> impl Fn(OrderError) -> ApiError {
    move |e| match e {
        OrderError::WrongState(m) => ApiError::new(StatusCode::CONFLICT, code, m),
        other => order_error(other),
    }
}

const ORDER_ID: &str = "The order id, e.g. `ord_01JD5V7Q1M7G3Y8K5T0N6B2C4D`.";
const IDEMPOTENCY: &str = "1 to 255 visible ASCII characters. The same key on the same order with the same request answers what the first made (`Idempotent-Replayed: true`), made once; with another request `422 IDEMPOTENCY_KEY_REUSED`. Kept with the order, for as long as it exists.";

/// What a request with an `Idempotency-Key` finds of an earlier one with
/// the same key: nothing yet, the same request (answered again), or another
/// request under that key.
enum Earlier {
    None,
    Same,
    Other,
}

fn reused() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
        "this Idempotency-Key was used on this order with a different request",
    )
}

fn replayed(status: StatusCode, body: Value) -> Response {
    let mut r = (status, Json(body)).into_response();
    r.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    r
}

/// The return `rid` as an earlier request with the same key left it.
fn earlier_return(state: &SagaState, rid: &str, items: &[ReturnLine], reason: &str) -> Earlier {
    match state.returns.iter().find(|r| r.id == rid) {
        None => Earlier::None,
        Some(r) if r.items == items && r.reason == reason => Earlier::Same,
        Some(_) => Earlier::Other,
    }
}

/// The line cancellation `id` as an earlier request with the same key left it.
fn earlier_cancellation(state: &SagaState, id: &str, items: &[String]) -> Earlier {
    match state.refunds.iter().find(|r| r.id == id) {
        None => Earlier::None,
        Some(r) if r.items == items => Earlier::Same,
        Some(_) => Earlier::Other,
    }
}

#[utoipa::path(post, path = "/orders/{id}/returns", tag = "orders", operation_id = "openReturn",
    summary = "Open a return of shipped units",
    description = "Units of lines that have shipped, at most what was ordered less what other returns hold, within the tenant's return window (`returns.window_days`, from the last shipment). Nothing is refunded until the warehouse receives the goods (`POST /orders/{id}/returns/{returnId}/receive`).",
    security(("tenantId" = [], "tenantKey" = ["orders:write"])),
    params(("id" = String, Path, description = ORDER_ID), ("Idempotency-Key" = Option<String>, Header, description = IDEMPOTENCY)),
    request_body(content = ReturnRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Opened (or, with `Idempotent-Replayed: true`, opened before by a request with this key).", body = crate::openapi::return_schemas::Return,
            headers(("Location" = String, description = "The return's URL."))),
        (status = 409, description = "Not returnable: not shipped, more units than are left to return, a line not the order's, or the window has closed (`RETURN_NOT_ALLOWED`).", body = crate::openapi::schemas::Error),
    ))]
pub async fn open(
    State(p): State<AppState>,
    Key(tenant, _): Key<OrdersWrite>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let (id, record) = tenant_order(&p, &tenant.id, &id).await?;
    let request: ReturnRequest = typed_body(&body)?;
    lines(&request.items)?;
    let mut items = Vec::with_capacity(request.items.len());
    for (i, line) in request.items.into_iter().enumerate() {
        code(&format!("/items/{i}/sku"), &line.sku)?;
        quantity(&format!("/items/{i}/quantity"), line.quantity)?;
        items.push(ReturnLine {
            sku: line.sku,
            quantity: line.quantity,
        });
    }
    let reason = stated_reason(Some(&request.reason))?
        .ok_or_else(|| invalid("/reason", "must not be blank"))?;
    if reason.chars().count() > 500 {
        return Err(invalid("/reason", "must be at most 500 characters"));
    }
    let rid = returns::id_for("ret", &tenant.id, &id, key.as_deref());
    // The same key again: what the first request made, made once.
    let replay = |record: &OrderRecord| -> Result<Option<Response>, ApiError> {
        match earlier_return(&saga(record)?, &rid, &items, &reason) {
            Earlier::None => Ok(None),
            Earlier::Same => Ok(Some(replayed(StatusCode::CREATED, one(record, &rid)?))),
            Earlier::Other => Err(reused()),
        }
    };
    if key.is_some()
        && let Some(r) = replay(&record)?
    {
        return Ok(r);
    }
    let outcome =
        returns::request(&p, &tenant, &id, rid.clone(), items.clone(), reason.clone()).await;
    let (record, return_id) = match outcome {
        Ok(made) => made,
        // Another request with this key made it meanwhile.
        Err(OrderError::WrongState(m)) if key.is_some() => {
            let (_, now) = tenant_order(&p, &tenant.id, id.as_str()).await?;
            return match replay(&now)? {
                Some(r) => Ok(r),
                None => Err(ApiError::new(StatusCode::CONFLICT, "RETURN_NOT_ALLOWED", m)),
            };
        }
        Err(e) => return Err(refused("RETURN_NOT_ALLOWED")(e)),
    };
    let location = format!("/api/v1/orders/{id}/returns/{return_id}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(one(&record, &return_id)?),
    )
        .into_response())
}

#[utoipa::path(get, path = "/orders/{id}/returns", tag = "orders", operation_id = "listReturns",
    summary = "The order's returns, oldest first",
    security(("tenantId" = [], "tenantKey" = ["orders:read"])), params(("id" = String, Path, description = ORDER_ID)),
    responses((status = 200, description = "Every return of the order.", body = crate::openapi::return_schemas::ReturnList)))]
pub async fn list(
    State(p): State<AppState>,
    Key(tenant, _): Key<OrdersRead>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, record) = tenant_order(&p, &tenant.id, &id).await?;
    let state = saga(&record)?;
    let data: Vec<Value> = state
        .returns
        .iter()
        .map(|r| returns::view(r, &state))
        .collect();
    Ok(Json(json!({ "data": data })))
}

#[utoipa::path(get, path = "/orders/{id}/returns/{returnId}", tag = "orders", operation_id = "getReturn",
    summary = "One return, with its own history",
    security(("tenantId" = [], "tenantKey" = ["orders:read"])),
    params(("id" = String, Path, description = ORDER_ID), ("returnId" = String, Path, description = "The return id, e.g. `ret_01JD5V7Q1M7G3Y8K5T0N6B2C4D`.")),
    responses((status = 200, description = "The return and its entries in the order's history.", body = crate::openapi::return_schemas::Return)))]
pub async fn show(
    State(p): State<AppState>,
    Key(tenant, _): Key<OrdersRead>,
    Path((id, return_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (id, record) = tenant_order(&p, &tenant.id, &id).await?;
    let mut view = one(&record, &return_id)?;
    let events = p
        .store
        .order_events(&tenant.id, &id)
        .await
        .map_err(ApiError::unavailable)?;
    let history: Vec<Value> = history_json(&events)
        .map_err(ApiError::store)?
        .into_iter()
        .filter(|e| {
            let d = &e["data"];
            d["returnId"] == return_id.as_str() || d["refundId"] == return_id.as_str()
        })
        .collect();
    view["history"] = json!(history);
    Ok(Json(view))
}

#[utoipa::path(post, path = "/orders/{id}/returns/{returnId}/receive", tag = "orders", operation_id = "receiveReturn",
    summary = "The warehouse received a return's goods",
    description = "What arrived, each with its condition. Sellable units go back on hand in `warehouseId` at once; the refund of exactly what arrived (its share of tax and discount included, shipping not), less the tenant's restocking fee and what it keeps of damaged goods (`returns.restocking_fee_percent`, `returns.damaged_refund_percent`), is made through the tenant's payment plugin and appears in `/payments`. A warehouse's scope.",
    security(("tenantId" = [], "tenantKey" = ["fulfilment:write"])),
    params(("id" = String, Path, description = ORDER_ID), ("returnId" = String, Path, description = "The return id, e.g. `ret_01JD5V7Q1M7G3Y8K5T0N6B2C4D`.")),
    request_body(content = ReceiveRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Received and restocked; the refund is on its way.", body = crate::openapi::return_schemas::Return),
        (status = 409, description = "Received before, or more units than the return holds (`RETURN_STATE_CONFLICT`).", body = crate::openapi::schemas::Error),
    ))]
pub async fn receive(
    State(p): State<AppState>,
    Key(tenant, _): Key<FulfilmentWrite>,
    Path((id, return_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (id, record) = tenant_order(&p, &tenant.id, &id).await?;
    one(&record, &return_id)?;
    let request: ReceiveRequest = typed_body(&body)?;
    lines(&request.items)?;
    code("/warehouseId", &request.warehouse_id)?;
    let mut items = Vec::with_capacity(request.items.len());
    for (i, line) in request.items.into_iter().enumerate() {
        code(&format!("/items/{i}/sku"), &line.sku)?;
        quantity(&format!("/items/{i}/quantity"), line.quantity)?;
        items.push(ReceivedLine {
            sku: line.sku,
            quantity: line.quantity,
            condition: match line.condition {
                ItemCondition::Sellable => Condition::Sellable,
                ItemCondition::Damaged => Condition::Damaged,
            },
        });
    }
    let record = returns::receive(&p, &tenant, &id, &return_id, items, request.warehouse_id)
        .await
        .map_err(refused("RETURN_STATE_CONFLICT"))?;
    Ok(Json(one(&record, &return_id)?))
}

#[utoipa::path(post, path = "/orders/{id}/line-cancellations", tag = "orders", operation_id = "cancelLines",
    summary = "Cancel some lines of a confirmed order before they ship",
    description = "Whole lines by SKU. Their stock is released, the warehouse is told not to ship them (`fulfilment.lines_cancelled`), and their share of the total (tax and discount spread over the lines by value; shipping stays) is refunded through the tenant's payment plugin (`refunds` on the order, `/payments`). Cancelling every line left is cancelling the order: use `POST /orders/{id}/cancel`.",
    security(("tenantId" = [], "tenantKey" = ["orders:write"])),
    params(("id" = String, Path, description = ORDER_ID), ("Idempotency-Key" = Option<String>, Header, description = IDEMPOTENCY)),
    request_body(content = LineCancellationRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Cancelled; the order as it now stands, its refund on its way (with `Idempotent-Replayed: true`: cancelled before by a request with this key).", body = crate::openapi::schemas::Order),
        (status = 409, description = "Not confirmed yet, a line shipped or cancelled before or not the order's, or every line left (`LINES_NOT_CANCELLABLE`).", body = crate::openapi::schemas::Error),
    ))]
pub async fn cancel_lines(
    State(p): State<AppState>,
    Key(tenant, _): Key<OrdersWrite>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let (id, record) = tenant_order(&p, &tenant.id, &id).await?;
    let request: LineCancellationRequest = typed_body(&body)?;
    lines(&request.items)?;
    let mut items = Vec::with_capacity(request.items.len());
    for (i, line) in request.items.into_iter().enumerate() {
        code(&format!("/items/{i}/sku"), &line.sku)?;
        items.push(line.sku);
    }
    no_control("/reason", request.reason.as_deref())?;
    let reason: String = stated_reason(request.reason.as_deref())?
        .unwrap_or_else(|| "cancelled by the client".into())
        .chars()
        .take(500)
        .collect();
    let lcx = returns::id_for("lcx", &tenant.id, &id, key.as_deref());
    let replay = |record: &OrderRecord| -> Result<Option<Response>, ApiError> {
        match earlier_cancellation(&saga(record)?, &lcx, &items) {
            Earlier::None => Ok(None),
            Earlier::Same => Ok(Some(replayed(
                StatusCode::OK,
                order_json(record).map_err(ApiError::store)?,
            ))),
            Earlier::Other => Err(reused()),
        }
    };
    if key.is_some()
        && let Some(r) = replay(&record)?
    {
        return Ok(r);
    }
    match returns::cancel_lines(&p, &tenant, &id, lcx.clone(), items.clone(), reason).await {
        Ok(record) => Ok(Json(order_json(&record).map_err(ApiError::store)?).into_response()),
        Err(OrderError::WrongState(m)) if key.is_some() => {
            let (_, now) = tenant_order(&p, &tenant.id, id.as_str()).await?;
            match replay(&now)? {
                Some(r) => Ok(r),
                None => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "LINES_NOT_CANCELLABLE",
                    m,
                )),
            }
        }
        Err(e) => Err(refused("LINES_NOT_CANCELLABLE")(e)),
    }
}
