//! Order commands from the API: place, cancel, ship, deliver.

use super::Platform;
use super::effects::{self, Extras, TOPIC_ORDER_EVENTS, message};
use super::metrics::Metrics;
use super::runner::{Committed, LoadedOrder, commit, load_order, submit};
use super::steps::Outcome;
use crate::domain::{FulfillmentStatus, OrderDraft, OrderId, OrderStatus, PaymentStatus};
use crate::saga::{self, SagaEvent, SagaStatus};
use crate::store::CommandRecord;
use crate::store::{IdempotencyBegin, NewOrder, OrderPatch, OrderRecord, StoreError, Transition};
use crate::tenants::Tenant;
use serde_json::json;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("order not found")]
    NotFound,
    #[error("{0}")]
    NotCancellable(String),
    #[error("{0}")]
    WrongState(String),
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyMismatch,
    #[error("a request with this Idempotency-Key is still being processed")]
    IdempotencyInFlight,
    #[error("the order total overflows")]
    TotalOverflow,
    #[error("storage unavailable: {0}")]
    Store(StoreError),
}

impl From<StoreError> for OrderError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound,
            other => Self::Store(other),
        }
    }
}

pub enum Placed {
    Created {
        record: Box<OrderRecord>,
        body: String,
    },
    Replayed {
        status: u16,
        body: String,
    },
}

/// Idempotency keys stuck `in_flight` this long belonged to a crashed request.
const STALE_KEY_MS: i64 = 30_000;

/// Accepts an order and starts its saga, all in one transaction.
/// `render` builds the 201 body, which is stored with the idempotency key.
pub async fn place(
    p: &Arc<Platform>,
    tenant: &Tenant,
    draft: OrderDraft,
    idempotency: Option<(String, String)>,
    render: impl Fn(&OrderRecord) -> String,
) -> Result<Placed, OrderError> {
    let now = crate::now_ms();
    if let Some((key, hash)) = &idempotency {
        match p
            .store
            .begin_idempotent(&tenant.id, key, hash, now, STALE_KEY_MS)
            .await?
        {
            IdempotencyBegin::Fresh => {}
            IdempotencyBegin::Replay { status, body } => {
                return Ok(Placed::Replayed { status, body });
            }
            IdempotencyBegin::InFlight => return Err(OrderError::IdempotencyInFlight),
            IdempotencyBegin::Mismatch => return Err(OrderError::IdempotencyMismatch),
        }
    }
    let result = create(
        p,
        tenant,
        draft,
        idempotency.as_ref().map(|(k, _)| k.as_str()),
        render,
        now,
    )
    .await;
    if result.is_err()
        && let Some((key, _)) = &idempotency
        && let Err(e) = p.store.abandon_idempotent(&tenant.id, key).await
    {
        tracing::warn!(error = %e, "freeing an idempotency key failed; it frees itself when stale");
    }
    result
}

async fn create(
    p: &Arc<Platform>,
    tenant: &Tenant,
    draft: OrderDraft,
    key: Option<&str>,
    render: impl Fn(&OrderRecord) -> String,
    now: i64,
) -> Result<Placed, OrderError> {
    let id = OrderId::generate();
    let total = draft.total().ok_or(OrderError::TotalOverflow)?;
    let deadline = now + i64::try_from(tenant.deadline.as_millis()).unwrap_or(i64::MAX / 2);
    let (state, actions) = saga::start(tenant.definition.clone(), tenant.limits, deadline);
    let draft_json =
        serde_json::to_string(&draft).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let record = OrderRecord {
        tenant_id: tenant.id.to_string(),
        id: id.to_string(),
        customer_id: draft.customer_id.clone(),
        currency: draft.currency.code().into(),
        total_minor: total.minor,
        status: OrderStatus::Pending.as_str().into(),
        payment_status: PaymentStatus::None.as_str().into(),
        fulfillment_status: FulfillmentStatus::None.as_str().into(),
        draft: draft_json,
        violations: None,
        cancellation_reason: None,
        shipment: None,
        saga_state: serde_json::to_string(&state)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        saga_status: state.status.as_str().into(),
        version: 0,
        event_seq: 1,
        created_at: now,
        updated_at: now,
    };
    let summary = json!({
        "customerId": draft.customer_id,
        "totalAmount": total.minor,
        "currency": draft.currency.code(),
        "items": draft.items,
        "steps": tenant.definition.steps(),
    });
    let extras = Extras {
        outbox: vec![message(
            TOPIC_ORDER_EVENTS,
            "order.created",
            &tenant.id,
            &id,
            now,
            summary.clone(),
        )],
        ..Extras::default()
    };
    let mut effects = effects::transition(
        &tenant.id,
        &id,
        0,
        None,
        &state,
        ("order.created", summary),
        &actions,
        extras,
        now,
    );
    if p.transport.carries_commands() {
        let grace = if p.transport.owns(id.as_str()) {
            effects::LOCAL_GRACE_MS
        } else {
            0
        };
        effects::carry_commands(&mut effects, grace);
    }
    let body = render(&record);
    let new = NewOrder {
        record,
        effects,
        idempotency: key.map(|k| (k.to_string(), 201, body.clone())),
    };
    p.store.create_order(&new).await?;
    Metrics::inc(&p.metrics.orders_accepted_total);
    p.outbox_wake.notify_one();
    // Hand the first step straight to the runner with the state just written;
    // if this process dies first, the dispatcher (or, with Kafka, the
    // command's message) finds the command on restart.
    if let Some(first) = new.effects.commands.first()
        && p.transport.owns(id.as_str())
    {
        let command = CommandRecord {
            id: first.id.clone(),
            tenant_id: tenant.id.to_string(),
            order_id: id.to_string(),
            action: first.action.clone(),
            available_at: first.available_at,
        };
        submit(
            p,
            command,
            Some(LoadedOrder::new(new.record.clone(), draft, state)),
        );
    }
    Ok(Placed::Created {
        record: Box::new(new.record),
        body,
    })
}

/// Asks the saga to stop and undo. Accepted while the order is pending or
/// confirmed; refused once it has shipped.
pub async fn cancel(
    p: &Platform,
    tenant: &Tenant,
    id: &OrderId,
    reason: String,
) -> Result<(), OrderError> {
    let order = p.store.order(&tenant.id, id).await?;
    match OrderStatus::parse(&order.status) {
        Some(OrderStatus::Cancelled) => return Ok(()),
        Some(OrderStatus::Pending | OrderStatus::Confirmed) => {}
        _ => {
            return Err(OrderError::NotCancellable(format!(
                "an order that is {} cannot be cancelled",
                order.status
            )));
        }
    }
    if order.saga_status == SagaStatus::Stuck.as_str() {
        return Err(OrderError::NotCancellable(
            "the order's saga is stuck and needs an operator".into(),
        ));
    }
    let loaded = load_order(order)?;
    let outcome = Outcome {
        event: SagaEvent::CancelRequested { reason },
        extras: Extras::default(),
    };
    match commit(p, tenant, id, None, loaded, outcome).await {
        Committed::Applied(_) | Committed::Superseded => Ok(()),
        // The saga finished (rejected, or stuck) between our read and our write.
        Committed::Refused(why) => {
            tracing::info!(order = %id, %why, "cancel arrived after the saga finished");
            Err(OrderError::NotCancellable(
                "the order's saga has already finished".into(),
            ))
        }
        Committed::Failed => Err(OrderError::Store(StoreError::Conflict)),
    }
}

/// Moves an order along after the saga: CONFIRMED → SHIPPED → DELIVERED.
pub async fn ship(
    p: &Platform,
    tenant: &Tenant,
    id: &OrderId,
    carrier: String,
    tracking: String,
) -> Result<OrderRecord, OrderError> {
    let shipment = json!({ "carrier": carrier, "trackingNumber": tracking });
    advance(
        p,
        tenant,
        id,
        OrderStatus::Confirmed,
        OrderStatus::Shipped,
        Some(shipment),
    )
    .await
}

pub async fn deliver(
    p: &Platform,
    tenant: &Tenant,
    id: &OrderId,
) -> Result<OrderRecord, OrderError> {
    advance(
        p,
        tenant,
        id,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        None,
    )
    .await
}

async fn advance(
    p: &Platform,
    tenant: &Tenant,
    id: &OrderId,
    from: OrderStatus,
    to: OrderStatus,
    shipment: Option<serde_json::Value>,
) -> Result<OrderRecord, OrderError> {
    for _ in 0..16 {
        let order = p.store.order(&tenant.id, id).await?;
        let ready = order.status == from.as_str()
            && (from != OrderStatus::Confirmed
                || order.saga_status == SagaStatus::Completed.as_str());
        if !ready {
            return Err(OrderError::WrongState(format!(
                "an order that is {} ({}) cannot become {to}",
                order.status, order.saga_status
            )));
        }
        let now = crate::now_ms();
        let event_type = if to == OrderStatus::Shipped {
            "order.shipped"
        } else {
            "order.delivered"
        };
        let fulfillment = if to == OrderStatus::Shipped {
            FulfillmentStatus::Shipped
        } else {
            FulfillmentStatus::Delivered
        };
        let data = json!({ "status": to.as_str(), "shipment": shipment });
        let t = Transition {
            tenant: tenant.id.clone(),
            order_id: id.clone(),
            expected_version: order.version,
            consumes: None,
            // Shipping takes the goods out of on-hand and reserved stock.
            inventory: (to == OrderStatus::Shipped).then_some(crate::store::InventoryOp::Consume),
            patch: OrderPatch {
                status: Some(to.as_str().into()),
                fulfillment_status: Some(fulfillment.as_str().into()),
                shipment: shipment.as_ref().map(|s| s.to_string()),
                ..OrderPatch::default()
            },
            events: vec![(event_type.into(), data.clone())],
            commands: vec![],
            outbox: vec![message(
                TOPIC_ORDER_EVENTS,
                event_type,
                &tenant.id,
                id,
                now,
                data,
            )],
            payment: None,
            now,
        };
        match p.store.commit_transition(&t).await {
            Ok(_) => {
                p.outbox_wake.notify_one();
                return Ok(p.store.order(&tenant.id, id).await?);
            }
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(OrderError::Store(StoreError::Conflict))
}
