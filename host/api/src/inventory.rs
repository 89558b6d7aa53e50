//! `/api/v1/inventory/{sku}`.

use super::auth::{InventoryRead, InventoryWrite, Key};
use super::{ApiError, AppState, json_body};
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

pub async fn put(
    State(p): State<AppState>,
    Key(tenant, _): Key<InventoryWrite>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let sku = sku(&raw)?;
    let value = json_body(&body)?;
    let invalid = |field: &str, code: &str, message: &str| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            format!("{field} {message}"),
        )
        .with_details(json!({ "errors": [{ "field": field, "code": code, "message": message }] }))
    };
    let warehouse = value
        .get("warehouseId")
        .and_then(Value::as_str)
        .and_then(WarehouseId::parse)
        .ok_or_else(|| invalid("/warehouseId", "REQUIRED", "must be a warehouse id"))?;
    let on_hand = value
        .get("onHand")
        .and_then(Value::as_i64)
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
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
