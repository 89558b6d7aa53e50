//! `/api/v1/webhooks`: a tenant's endpoints for its events, their delivery
//! log and manual redelivery. Deliveries are signed (`OMS-Signature`, with
//! the secret shown once, when the endpoint is created).

use super::auth::{Key, WebhooksRead, WebhooksWrite};
use super::order_views::iso;
use super::{ApiError, AppState, no_control, typed_body};
use crate::openapi::webhook_schemas::WebhookRequest;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use oms_engine::webhooks::{self, WebhookError};
use oms_store::{WebhookDelivery, WebhookEndpoint};
use serde::Deserialize;
use serde_json::{Value, json};

fn webhook_error(e: WebhookError) -> ApiError {
    match e {
        WebhookError::Invalid(field, m) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            format!("{field} {m}"),
        )
        .with_details(json!({ "errors": [{ "field": field, "code": "INVALID", "message": m }] })),
        WebhookError::Forbidden(m) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "WEBHOOK_URL_NOT_ALLOWED",
            m,
        )
        .with_details(json!({ "errors": [{ "field": "/url", "code": "WEBHOOK_URL_NOT_ALLOWED", "message": "not a public address" }] })),
        WebhookError::TooMany => {
            ApiError::new(StatusCode::CONFLICT, "TOO_MANY_WEBHOOKS", e.to_string())
        }
        WebhookError::NotFound => ApiError::not_found("webhook endpoint"),
        WebhookError::Store(e) => ApiError::store(e),
    }
}

fn store_error(e: oms_store::StoreError) -> ApiError {
    webhook_error(e.into())
}

fn endpoint_json(e: &WebhookEndpoint, secret: bool) -> Value {
    let mut v = json!({
        "id": e.id,
        "url": e.url,
        "eventTypes": e.event_types.split(',').collect::<Vec<_>>(),
        "description": e.description,
        "status": e.status,
        "disabledReason": e.disabled_reason,
        "failingSince": e.failing_since.map(iso),
        "createdAt": iso(e.created_at),
    });
    if secret {
        v["secret"] = json!(e.secret);
    }
    v
}

fn delivery_json(d: &WebhookDelivery) -> Value {
    json!({
        "id": d.id,
        "eventId": d.event_id,
        "eventType": d.event_type,
        "orderId": d.order_id,
        "status": d.status,
        "attempts": d.attempts,
        "lastStatus": d.last_status,
        "lastError": d.last_error,
        "nextAttemptAt": (d.status == "pending").then(|| iso(d.next_attempt_at)),
        "createdAt": iso(d.created_at),
        "deliveredAt": d.delivered_at.map(iso),
    })
}

const ENDPOINT_ID: &str = "The endpoint id, e.g. `we_01JD5V7Q1M7G3Y8K5T0N6B2C4D`.";

#[utoipa::path(post, path = "/webhooks", tag = "webhooks", operation_id = "createWebhook",
    summary = "Register an endpoint for the tenant's events",
    description = "Every order, payment, return and fulfilment event of the types asked for is delivered from the outbox as a CloudEvents 1.0 JSON body (`id`, `source`, `type`, `subject` (the order), `time`, `data`), signed: `OMS-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, \"<t>.<body>\")>`. At least once (deduplicate on the event id), in order per order, retried with backoff for three days; an endpoint whose deliveries all fail for three days is disabled. The secret is in this answer only.",
    security(("tenantId" = [], "tenantKey" = ["webhooks:write"])),
    request_body(content = WebhookRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered, with its secret.", body = crate::openapi::webhook_schemas::WebhookEndpoint),
        (status = 409, description = "The tenant has the most endpoints it may (`TOO_MANY_WEBHOOKS`).", body = crate::openapi::schemas::Error),
    ))]
pub async fn create(
    State(p): State<AppState>,
    Key(tenant, _): Key<WebhooksWrite>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: WebhookRequest = typed_body(&body)?;
    no_control("/url", Some(&request.url))?;
    no_control("/description", request.description.as_deref())?;
    let description = request
        .description
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty());
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 200)
    {
        return Err(webhook_error(WebhookError::Invalid(
            "/description",
            "must be at most 200 characters".into(),
        )));
    }
    let e = webhooks::register(
        &p,
        &tenant.id,
        &request.url,
        &request.event_types,
        description,
    )
    .await
    .map_err(webhook_error)?;
    Ok((StatusCode::CREATED, Json(endpoint_json(&e, true))).into_response())
}

#[utoipa::path(get, path = "/webhooks", tag = "webhooks", operation_id = "listWebhooks",
    summary = "The tenant's endpoints",
    security(("tenantId" = [], "tenantKey" = ["webhooks:read"])),
    responses((status = 200, description = "Oldest first; no secrets.", body = crate::openapi::webhook_schemas::WebhookEndpoints)))]
pub async fn list(
    State(p): State<AppState>,
    Key(tenant, _): Key<WebhooksRead>,
) -> Result<Json<Value>, ApiError> {
    let all = p.store.webhooks(&tenant.id).await.map_err(store_error)?;
    let data: Vec<Value> = all.iter().map(|e| endpoint_json(e, false)).collect();
    Ok(Json(json!({ "data": data })))
}

#[utoipa::path(get, path = "/webhooks/{webhookId}", tag = "webhooks", operation_id = "getWebhook",
    summary = "One endpoint",
    security(("tenantId" = [], "tenantKey" = ["webhooks:read"])),
    params(("webhookId" = String, Path, description = ENDPOINT_ID)),
    responses((status = 200, description = "The endpoint; no secret.", body = crate::openapi::webhook_schemas::WebhookEndpoint)))]
pub async fn show(
    State(p): State<AppState>,
    Key(tenant, _): Key<WebhooksRead>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let e = p
        .store
        .webhook(&tenant.id, &id)
        .await
        .map_err(store_error)?;
    Ok(Json(endpoint_json(&e, false)))
}

#[utoipa::path(delete, path = "/webhooks/{webhookId}", tag = "webhooks", operation_id = "deleteWebhook",
    summary = "Remove an endpoint and its deliveries",
    security(("tenantId" = [], "tenantKey" = ["webhooks:write"])),
    params(("webhookId" = String, Path, description = ENDPOINT_ID)),
    responses((status = 204, description = "Removed.")))]
pub async fn delete(
    State(p): State<AppState>,
    Key(tenant, _): Key<WebhooksWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    p.store
        .delete_webhook(&tenant.id, &id)
        .await
        .map_err(store_error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/webhooks/{webhookId}/enable", tag = "webhooks", operation_id = "enableWebhook",
    summary = "Enable an endpoint again (after it was disabled for failing)",
    description = "Its failures are forgotten and its pending deliveries go out again, in order.",
    security(("tenantId" = [], "tenantKey" = ["webhooks:write"])),
    params(("webhookId" = String, Path, description = ENDPOINT_ID)),
    responses((status = 200, description = "Enabled.", body = crate::openapi::webhook_schemas::WebhookEndpoint)))]
pub async fn enable(
    State(p): State<AppState>,
    Key(tenant, _): Key<WebhooksWrite>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let e = webhooks::enable(&p, &tenant.id, &id)
        .await
        .map_err(webhook_error)?;
    Ok(Json(endpoint_json(&e, false)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Limit {
    /// At most this many (100 unless told).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/webhooks/{webhookId}/deliveries", tag = "webhooks", operation_id = "listWebhookDeliveries",
    summary = "An endpoint's delivery log, newest first",
    security(("tenantId" = [], "tenantKey" = ["webhooks:read"])),
    params(("webhookId" = String, Path, description = ENDPOINT_ID), Limit),
    responses((status = 200, description = "Each event's delivery: attempts, the last answer, what comes next.", body = crate::openapi::webhook_schemas::WebhookDeliveries)))]
pub async fn deliveries(
    State(p): State<AppState>,
    Key(tenant, _): Key<WebhooksRead>,
    Path(id): Path<String>,
    Query(q): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(webhook_error(WebhookError::Invalid(
            "/limit",
            "must be from 1 to 1000".into(),
        )));
    }
    p.store
        .webhook(&tenant.id, &id)
        .await
        .map_err(store_error)?;
    let log = p
        .store
        .deliveries(&tenant.id, &id, limit)
        .await
        .map_err(store_error)?;
    let data: Vec<Value> = log.iter().map(delivery_json).collect();
    Ok(Json(json!({ "data": data })))
}

#[utoipa::path(post, path = "/webhooks/{webhookId}/deliveries/{deliveryId}/redeliver", tag = "webhooks", operation_id = "redeliverWebhook",
    summary = "Send a delivery again now",
    description = "Whatever became of it (delivered, failed, pending): it is sent again at once, with the same event id.",
    security(("tenantId" = [], "tenantKey" = ["webhooks:write"])),
    params(("webhookId" = String, Path, description = ENDPOINT_ID), ("deliveryId" = String, Path, description = "The delivery id from the log.")),
    responses((status = 202, description = "Queued to be sent now.")))]
pub async fn redeliver(
    State(p): State<AppState>,
    Key(tenant, _): Key<WebhooksWrite>,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    p.store
        .redeliver(&tenant.id, &id, &delivery, oms_clock::now_ms())
        .await
        .map_err(store_error)?;
    Ok(StatusCode::ACCEPTED)
}
