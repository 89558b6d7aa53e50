//! What operators read of a tenant besides its sagas: its orders searched
//! by status, saga state and customer; its plugins' stats and logs; and,
//! in Kafka mode, the dead-letter topic. Read-only: any operator role.

use super::auth::Operator;
use super::plugins::{iso, logs_json, stats_json, target, tenant};
use super::{ApiError, AppState};
use axum::Json;
use axum::extract::{Path, Query, State};
use oms_engine::transport::Transport;
use serde_json::{Value, json};
use std::collections::HashMap;

/// `GET /admin/v1/tenants/{tenant}/orders?status=&sagaState=&customer=&limit=&cursor=`.
#[utoipa::path(get, path = "/tenants/{tenant}/orders", tag = "sagas", operation_id = "adminListOrders",
    summary = "A tenant's orders, as its clients see them",
    params(("tenant" = String, Path, description = "The tenant id."), ("status" = Option<String>, Query), ("sagaState" = Option<String>, Query), ("customer" = Option<String>, Query), ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "At most this many (50 unless told)."), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "A page of orders.", body = crate::openapi::schemas::OrderPage)))]
pub async fn orders(
    State(p): State<AppState>,
    _: Operator,
    Path(t): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant(&p, &t)?;
    super::orders::list_json(&p, &tenant.id, &q).await.map(Json)
}

/// `GET /admin/v1/tenants/{tenant}/plugins/{slot}/stats`.
#[utoipa::path(get, path = "/tenants/{tenant}/plugins/{slot}/stats", tag = "rollouts", operation_id = "adminGetComponentStats",
    params(("tenant" = String, Path, description = "The tenant id."), ("slot" = crate::openapi::admin_schemas::Slot, Path, description = "The plugin slot.")),
    responses((status = 200, description = "Calls, failures and latency per version.", body = crate::openapi::views::PluginStats)))]
pub async fn plugin_stats(
    State(p): State<AppState>,
    _: Operator,
    Path((t, s)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant(&p, &t)?;
    let slot = target(&tenant, &s)?;
    Ok(Json(stats_json(&p, &tenant, slot).await?))
}

/// `GET /admin/v1/tenants/{tenant}/plugins/{slot}/logs?limit=`: newest last.
#[utoipa::path(get, path = "/tenants/{tenant}/plugins/{slot}/logs", tag = "rollouts", operation_id = "adminGetComponentLogs",
    params(("tenant" = String, Path, description = "The tenant id."), ("slot" = crate::openapi::admin_schemas::Slot, Path, description = "The plugin slot."), ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "At most this many (100 unless told).")),
    responses((status = 200, description = "The slot's latest log lines.", body = crate::openapi::views::PluginLogs)))]
pub async fn plugin_logs(
    State(p): State<AppState>,
    _: Operator,
    Path((t, s)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant(&p, &t)?;
    let slot = target(&tenant, &s)?;
    logs_json(&p, &tenant, slot, &q).await.map(Json)
}

/// `GET /admin/v1/dlq`: the dead-letter topic (Kafka mode); in-process
/// mode has none, and says so.
#[utoipa::path(get, path = "/dlq", tag = "sagas", operation_id = "listDeadLetters",
    summary = "Commands the transport could not deliver",
    responses((status = 200, description = "Dead letters.", body = serde_json::Value)))]
pub async fn dead_letters(State(p): State<AppState>, _: Operator) -> Result<Json<Value>, ApiError> {
    let Transport::Kafka(k) = &p.transport else {
        return Ok(Json(json!({ "transport": "in-process", "data": [] })));
    };
    let brokers = k.brokers().to_string();
    let letters =
        tokio::task::spawn_blocking(move || oms_engine::transport::dlq::read_all(&brokers))
            .await
            .map_err(ApiError::unavailable)?
            .map_err(ApiError::unavailable)?;
    let data: Vec<Value> = letters
        .iter()
        .map(|d| {
            json!({
                "id": d.id,
                "originTopic": d.origin_topic,
                "errorCode": d.error_code,
                "error": d.error,
                "deadAt": iso(d.dead_at),
                "key": d.key,
            })
        })
        .collect();
    Ok(Json(json!({ "transport": "kafka", "data": data })))
}
