//! Returns and line cancellations from the API: each is an event of the
//! order's saga (`oms_saga::returns` decides it), built here from the order
//! as read, and committed under the order's version check like a cancel.

use super::Platform;
use super::orders::{OrderError, apply_to_saga};
use crate::effects::rfc3339;
use crate::tenants::Tenant;
use oms_domain::{OrderDraft, OrderId, TenantId};
use oms_saga::{OrderBook, ReceivedLine, Refund, Return, ReturnLine, SagaEvent, SagaState};
use oms_store::OrderRecord;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The order's money per line, from the order (which never changes).
pub fn book(order: &OrderRecord, draft: &OrderDraft) -> OrderBook {
    let lines: Vec<(String, i64, i64)> = draft
        .items
        .iter()
        .map(|l| (l.sku.to_string(), i64::from(l.quantity), l.unit_price))
        .collect();
    OrderBook::new(
        &lines,
        draft.tax_amount,
        draft.discount_amount,
        order.total_minor,
    )
}

/// The id of a new return (`ret`) or line cancellation (`lcx`). With the
/// client's `Idempotency-Key` it is the key's (a digest of tenant, order and
/// key, shaped like the others), so a retried request names what the first
/// one made, and the saga, which refuses an id twice, makes it once: the
/// idempotency lives in the order's own transaction.
pub fn id_for(prefix: &str, tenant: &TenantId, order: &OrderId, key: Option<&str>) -> String {
    match key {
        None => format!("{prefix}_{}", oms_clock::monotonic_ulid()),
        Some(key) => {
            let digest = Sha256::digest(format!("{tenant}\n{order}\n{prefix}\n{key}"));
            let mut bits = [0u8; 16];
            bits.copy_from_slice(&digest[..16]);
            format!("{prefix}_{}", ulid::Ulid::from(u128::from_be_bytes(bits)))
        }
    }
}

/// A return as clients and messages see it.
pub fn view(r: &Return, state: &SagaState) -> Value {
    let refund = state.refunds.iter().find(|f| f.id == r.id);
    json!({
        "id": r.id,
        "status": r.status,
        "items": r.items,
        "reason": r.reason,
        "requestedAt": rfc3339(r.requested_at),
        "received": r.received,
        "warehouseId": r.warehouse_id,
        "receivedAt": r.received_at.map(rfc3339),
        "receivedValue": r.value,
        "withheld": r.withheld,
        "refund": refund.map(refund_view),
    })
}

/// A partial refund as clients see it.
pub fn refund_view(f: &Refund) -> Value {
    json!({
        "id": f.id,
        "kind": f.kind,
        "amount": f.amount,
        "status": f.status,
        "attempts": f.attempt,
        "providerReference": f.provider_reference,
        "error": f.error,
        "items": f.items,
    })
}

/// Opens a return of shipped units; answers the return's id.
pub async fn request(
    p: &Platform,
    tenant: &Tenant,
    id: &OrderId,
    return_id: String,
    items: Vec<ReturnLine>,
    reason: String,
) -> Result<(OrderRecord, String), OrderError> {
    let rid = return_id.clone();
    let record = apply_to_saga(p, tenant, id, move |order| SagaEvent::ReturnRequested {
        return_id: rid,
        items,
        reason,
        book: book(&order.order, &order.draft),
    })
    .await?;
    Ok((record, return_id))
}

/// The warehouse received a return's goods: sellable ones go back on hand
/// in `warehouse`, and the refund of what came back starts.
pub async fn receive(
    p: &Platform,
    tenant: &Tenant,
    id: &OrderId,
    return_id: &str,
    items: Vec<ReceivedLine>,
    warehouse: String,
) -> Result<OrderRecord, OrderError> {
    let rid = return_id.to_string();
    apply_to_saga(p, tenant, id, move |order| SagaEvent::ReturnReceived {
        return_id: rid,
        items,
        warehouse_id: warehouse,
        book: book(&order.order, &order.draft),
    })
    .await
}

/// Cancels whole lines of a confirmed order before they ship.
pub async fn cancel_lines(
    p: &Platform,
    tenant: &Tenant,
    id: &OrderId,
    refund_id: String,
    items: Vec<String>,
    reason: String,
) -> Result<OrderRecord, OrderError> {
    apply_to_saga(p, tenant, id, move |order| SagaEvent::LinesCancelled {
        refund_id,
        items,
        reason,
        book: book(&order.order, &order.draft),
    })
    .await
}
