//! How orders are shown: the order, its history and its payments as
//! clients and operators read them. A stored column that does not parse is
//! an error naming it, never a field left out.

use oms_domain::OrderDraft;
use oms_saga::SagaState;
use oms_store::{OrderEventRecord, OrderRecord, StoreError};
use serde_json::{Value, json};

pub(crate) fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

/// The order as the API shows it. A stored column that does not parse is
/// an error naming it, not a field left out.
pub fn order_json(r: &OrderRecord) -> Result<Value, StoreError> {
    let draft: Option<OrderDraft> = Some(oms_store::json("order draft", &r.draft)?);
    let saga: Option<SagaState> = Some(oms_store::json("saga state", &r.saga_state)?);
    // The warehouse's answer, for tenants whose warehouse gives one.
    let fulfilment = saga.as_ref().and_then(|s| {
        let decision = s.fulfilment_decision.as_ref();
        (s.awaiting_fulfilment_until.is_some() || decision.is_some()).then(|| {
            json!({
                "answerBy": s.awaiting_fulfilment_until.map(iso),
                "decision": decision.map(|d| if d.accepted { "accepted" } else { "rejected" }),
                "reason": decision.and_then(|d| d.reason.clone()),
                "estimatedDelivery": decision.and_then(|d| d.estimated_delivery.clone()),
            })
        })
    });
    let mut v = json!({
        "id": r.id,
        "status": r.status,
        "paymentStatus": r.payment_status,
        "fulfillmentStatus": r.fulfillment_status,
        "totalAmount": r.total_minor,
        "currency": r.currency,
        "customerId": r.customer_id,
        "subtotalAmount": draft.as_ref().and_then(|d| d.subtotal()).map(|m| m.minor),
        "shippingAmount": draft.as_ref().map(|d| d.shipping_amount),
        "taxAmount": draft.as_ref().map(|d| d.tax_amount),
        "discountAmount": draft.as_ref().map(|d| d.discount_amount),
        "items": draft.as_ref().map(|d| json!(d.items)),
        "shippingAddress": draft.as_ref().map(|d| json!(d.shipping_address)),
        "billingAddress": draft.as_ref().map(|d| json!(d.billing_address.as_ref().unwrap_or(&d.shipping_address))),
        "metadata": draft.as_ref().map(|d| json!(d.metadata)),
        "sagaState": r.saga_status,
        "cancelledLines": saga.as_ref().map(|s| json!(s.cancelled_items)),
        "refunds": saga.as_ref().map(|s| s.refunds.iter().map(oms_engine::returns::refund_view).collect::<Vec<_>>()),
        "refundedAmount": saga.as_ref().map(|s| s.refunded_in_part()),
        "saga": saga.map(|s| json!({
            "steps": s.definition.steps(),
            "completed": s.completed,
            "compensated": s.compensated,
            "pendingCompensations": s.pending,
            "attempt": s.attempt,
        })),
        "createdAt": iso(r.created_at),
        "updatedAt": iso(r.updated_at),
    });
    if let Some(number) = r.order_number {
        v["orderNumber"] = json!(number);
    }
    if let Some(violations) = r.violations.as_deref() {
        v["violations"] = oms_store::json("order violations", violations)?;
    }
    if let Some(f) = fulfilment {
        v["fulfilment"] = f;
    }
    if let Some(reason) = &r.cancellation_reason {
        v["cancellationReason"] = json!(reason);
    }
    if let Some(shipment) = r.shipment.as_deref() {
        v["shipment"] = oms_store::json("order shipment", shipment)?;
    }
    Ok(v)
}

/// An order's history as the API shows it (clients' `/events` and the
/// operators' saga view); an entry whose data does not parse is an error.
pub(crate) fn history_json(events: &[OrderEventRecord]) -> Result<Vec<Value>, StoreError> {
    events
        .iter()
        .map(|e| {
            Ok(json!({
                "sequence": e.seq,
                "type": e.event_type,
                "at": iso(e.at),
                "data": oms_store::json::<Value>("order event", &e.data)?,
            }))
        })
        .collect()
}

/// An order's payment operations as clients and operators see them.
pub(crate) fn payments_json(payments: &[oms_store::PaymentRecord]) -> Vec<Value> {
    payments
        .iter()
        .map(|r| {
            json!({
                "type": r.op,
                "amount": r.amount,
                "currency": r.currency,
                "status": r.status,
                "providerReference": r.provider_reference,
                "errorCode": r.error_code,
                "idempotencyKey": r.idempotency_key,
                "pluginVersion": r.plugin_version,
                "at": iso(r.at),
                "reconciliation": r.reconciliation,
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ApiError;
    use axum::http::StatusCode;

    fn record(draft: &str, shipment: Option<&str>) -> OrderRecord {
        let definition = oms_saga::SagaDefinition::new(oms_saga::Step::ALL.to_vec()).unwrap();
        let saga = oms_saga::start(definition, oms_saga::state::Limits::default(), 0).0;
        OrderRecord {
            tenant_id: "acme".into(),
            id: "ord_01J0000000000000000000000".into(),
            customer_id: "c1".into(),
            currency: "USD".into(),
            total_minor: 100,
            status: "PENDING".into(),
            payment_status: "NONE".into(),
            fulfillment_status: "NONE".into(),
            draft: draft.into(),
            violations: None,
            cancellation_reason: None,
            shipment: shipment.map(str::to_owned),
            saga_state: serde_json::to_string(&saga).unwrap(),
            saga_status: "RUNNING".into(),
            version: 1,
            event_seq: 1,
            created_at: 0,
            updated_at: 0,
            trace_parent: None,
            order_number: None,
        }
    }

    const DRAFT: &str = r#"{"customerId":"c1","currency":"USD","items":[{"sku":"A","quantity":1,"unitPrice":100}],"shippingAddress":{"line1":"1 Main St","city":"X","postalCode":"1","country":"US"},"paymentToken":"tok_visa"}"#;

    #[test]
    fn an_order_reads_back_whole() {
        let v = order_json(&record(DRAFT, Some(r#"{"carrier":"ups"}"#))).unwrap();
        assert_eq!(v["items"][0]["sku"], "A");
        assert_eq!(v["shipment"]["carrier"], "ups");
    }

    #[test]
    fn a_history_entry_that_does_not_parse_is_an_error_not_null() {
        let entry = |data: &str| OrderEventRecord {
            seq: 1,
            event_type: "order.created".into(),
            data: data.into(),
            at: 0,
        };
        let ok = history_json(&[entry(r#"{"a":1}"#)]).unwrap();
        assert_eq!(ok[0]["data"]["a"], 1);
        let e = history_json(&[entry("{cut")]).unwrap_err();
        assert!(e.to_string().contains("order event"), "{e}");
    }

    #[test]
    fn an_unreadable_column_is_an_error_naming_it_not_a_field_left_out() {
        let e = order_json(&record("{not json", None)).unwrap_err();
        assert!(e.to_string().contains("order draft"), "{e}");
        let e = order_json(&record(DRAFT, Some("[truncated"))).unwrap_err();
        assert!(e.to_string().contains("order shipment"), "{e}");
        let api = ApiError::store(e);
        assert_eq!(
            (api.status, api.code),
            (StatusCode::INTERNAL_SERVER_ERROR, "CORRUPT_RECORD")
        );
    }
}
