//! `/api/v1/inventory/{sku}`.

use super::auth::{InventoryRead, InventoryWrite, Key};
use super::{ApiError, AppState, typed_body};
use crate::openapi::schemas::StockRequest;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use oms_domain::{Sku, WarehouseId};
use oms_store::{StockLevel, StoreError};
use serde_json::{Value, json};

fn levels(sku: &Sku, levels: &[StockLevel]) -> Value {
    let warehouses: Vec<Value> = levels
        .iter()
        .map(|l| json!({ "warehouseId": l.warehouse_id, "onHand": l.on_hand, "reserved": l.reserved, "available": l.on_hand - l.reserved }))
        .collect();
    json!({ "sku": sku, "warehouses": warehouses })
}

fn sku(raw: &str) -> Result<Sku, ApiError> {
    Sku::parse(raw).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_SKU",
            "a SKU is 1 to 64 printable characters without spaces",
        )
    })
}

#[utoipa::path(get, path = "/inventory/{sku}", tag = "inventory", operation_id = "getStock",
    security(("tenantId" = [], "tenantKey" = ["inventory:read"])), params(("sku" = String, Path, pattern = r"^[!-~]{1,64}$", description = "1 to 64 printable ASCII characters without spaces.")),
    responses((status = 200, description = "Stock per warehouse.", body = crate::openapi::schemas::Stock)))]
pub async fn show(
    State(p): State<AppState>,
    Key(tenant, _): Key<InventoryRead>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let sku = sku(&raw)?;
    let stock = p
        .store
        .stock(&tenant.id, &sku)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(levels(&sku, &stock)))
}

#[utoipa::path(put, path = "/inventory/{sku}", tag = "inventory", operation_id = "setStock",
    summary = "Set a warehouse's on-hand stock of a SKU",
    security(("tenantId" = [], "tenantKey" = ["inventory:write"])), params(("sku" = String, Path, pattern = r"^[!-~]{1,64}$", description = "1 to 64 printable ASCII characters without spaces.")),
    request_body(content = crate::openapi::schemas::StockRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Stock per warehouse, after the change.", body = crate::openapi::schemas::Stock),
        (status = 409, description = "On-hand stock cannot fall below what orders have reserved.", body = crate::openapi::schemas::Error),
    ))]
pub async fn put(
    State(p): State<AppState>,
    Key(tenant, _): Key<InventoryWrite>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let sku = sku(&raw)?;
    let request: StockRequest = typed_body(&body)?;
    let invalid = |field: &str, code: &str, message: &str| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            format!("{field} {message}"),
        )
        .with_details(json!({ "errors": [{ "field": field, "code": code, "message": message }] }))
    };
    let warehouse = WarehouseId::parse(&request.warehouse_id)
        .ok_or_else(|| invalid("/warehouseId", "INVALID", "must be a warehouse id"))?;
    let on_hand = Some(request.on_hand).filter(|n| *n >= 0).ok_or_else(|| {
        invalid(
            "/onHand",
            "INVALID_QUANTITY",
            "must be a whole number of at least 0",
        )
    })?;
    match p
        .store
        .set_stock(&tenant.id, &sku, &warehouse, on_hand, oms_clock::now_ms())
        .await
    {
        Ok(_) => {}
        Err(StoreError::InsufficientStock { .. }) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "STOCK_BELOW_RESERVED",
                "on-hand stock cannot fall below what orders have reserved",
            ));
        }
        Err(e) => return Err(ApiError::unavailable(e)),
    }
    let stock = p
        .store
        .stock(&tenant.id, &sku)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(levels(&sku, &stock)))
}
