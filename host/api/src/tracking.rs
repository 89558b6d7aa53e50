//! `GET /api/v1/orders/{id}/tracking`: where the order's goods are, shipment
//! by shipment, as a customer-facing page or a carrier integration reads it.

use super::auth::{Key, OrdersRead};
use super::order_views::iso;
use super::orders::tenant_order;
use super::{ApiError, AppState};
use axum::Json;
use axum::extract::{Path, State};
use oms_domain::OrderDraft;
use oms_saga::{Handover, SagaState};
use oms_store::OrderRecord;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Each SKU of the order with its quantity (lines of one SKU added up).
fn quantities(draft: &OrderDraft) -> BTreeMap<String, u64> {
    let mut by_sku = BTreeMap::new();
    for line in &draft.items {
        *by_sku.entry(line.sku.to_string()).or_default() += u64::from(line.quantity);
    }
    by_sku
}

pub(crate) fn tracking_json(r: &OrderRecord) -> Result<Value, oms_store::StoreError> {
    let draft: OrderDraft = oms_store::json("order draft", &r.draft)?;
    let saga: SagaState = oms_store::json("saga state", &r.saga_state)?;
    let by_sku = quantities(&draft);
    let mut remaining = by_sku.clone();
    let shipments: Vec<Value> = saga
        .shipments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let items: Vec<Value> = s
                .items
                .iter()
                .map(|sku| {
                    remaining.remove(sku);
                    json!({ "sku": sku, "quantity": by_sku.get(sku).copied().unwrap_or(0) })
                })
                .collect();
            json!({
                "number": i + 1,
                "carrier": s.carrier,
                "trackingNumber": s.tracking_number,
                "items": items,
                "shippedAt": iso(s.shipped_at),
            })
        })
        .collect();
    let remaining: Vec<Value> = remaining
        .into_iter()
        .map(|(sku, quantity)| json!({ "sku": sku, "quantity": quantity }))
        .collect();
    Ok(json!({
        "orderId": r.id,
        "status": r.status,
        "fulfillmentStatus": r.fulfillment_status,
        "estimatedDelivery": saga.fulfilment_decision.as_ref().and_then(|d| d.estimated_delivery.clone()),
        "shipments": shipments,
        "notShipped": remaining,
        "delivered": saga.handover == Handover::Delivered,
    }))
}

#[utoipa::path(get, path = "/orders/{id}/tracking", tag = "orders", operation_id = "getOrderTracking",
    summary = "The order's shipments: carrier, tracking number and lines of each, and what has not shipped",
    security(("tenantId" = [], "tenantKey" = ["orders:read"])), params(("id" = String, Path, description = "The order id, e.g. `ord_01JD5V7Q1M7G3Y8K5T0N6B2C4D`.")),
    responses((status = 200, description = "Shipments in the order they left.", body = crate::openapi::schemas::Tracking)))]
pub async fn tracking(
    State(p): State<AppState>,
    Key(tenant, _): Key<OrdersRead>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, record) = tenant_order(&p, &tenant.id, &id).await?;
    Ok(Json(tracking_json(&record).map_err(ApiError::store)?))
}
