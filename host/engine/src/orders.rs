//! Order commands from the API: place, cancel, the warehouse's answer,
//! ship, deliver.

use super::Platform;
use super::commit::{Committed, LoadedOrder, commit, load_order};
use super::effects::{self, Extras, message};
use super::metrics::Metrics;
use super::runner::submit;
use super::steps::Outcome;
use crate::tenants::Tenant;
use crate::transport::topics::TOPIC_ORDER_EVENTS;
use oms_domain::{FulfillmentStatus, OrderDraft, OrderId, OrderStatus, PaymentStatus};
use oms_saga::{self as saga, FulfilmentDecision, SagaEvent, Shipment};
use oms_store::CommandRecord;
use oms_store::{IdempotencyBegin, NewOrder, OrderRecord, StoreError};
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
    render: impl Fn(&OrderRecord) -> Result<String, StoreError>,
) -> Result<Placed, OrderError> {
    let now = oms_clock::now_ms();
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
    match result {
        Ok(Accepted { placed, first }) => {
            // Hand the first step straight to the runner with the state just
            // written; if this process dies first, the dispatcher (or, with
            // Kafka, the command's message) finds the command on restart.
            if let Some((command, loaded)) = first {
                submit(p, command, Some(loaded));
            }
            Ok(placed)
        }
        Err(e) => {
            if let Some((key, _)) = &idempotency
                && let Err(e) = p.store.abandon_idempotent(&tenant.id, key).await
            {
                tracing::warn!(error = %e, "freeing an idempotency key failed; it frees itself when stale");
            }
            Err(e)
        }
    }
}

/// A stored order, and its saga's first command when this host is to run it.
pub(crate) struct Accepted {
    pub(crate) placed: Placed,
    pub(crate) first: Option<(CommandRecord, LoadedOrder)>,
}

/// Stores the order and its saga's first command, in one transaction;
/// nothing runs it yet.
pub(crate) async fn create(
    p: &Arc<Platform>,
    tenant: &Tenant,
    draft: OrderDraft,
    key: Option<&str>,
    render: impl Fn(&OrderRecord) -> Result<String, StoreError>,
    now: i64,
) -> Result<Accepted, OrderError> {
    let id = oms_clock::new_order_id();
    let total = draft.total().ok_or(OrderError::TotalOverflow)?;
    let number = p.order_numbers.next(&p.store, &tenant.id).await?;
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
        // The API request's trace (the client's, if it sent one): every step
        // of this order's saga continues it.
        trace_parent: oms_trace::current(),
        order_number: Some(number),
    };
    let summary = json!({
        "orderNumber": number,
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
    let body = render(&record)?;
    let new = NewOrder {
        record,
        effects,
        idempotency: key.map(|k| (k.to_string(), 201, body.clone())),
    };
    p.store.create_order(&new).await?;
    Metrics::inc(&p.metrics.orders_accepted_total);
    p.outbox_wake.notify_one();
    let first = new
        .effects
        .commands
        .first()
        .filter(|_| p.transport.owns(id.as_str()))
        .map(|first| {
            let command = CommandRecord {
                id: first.id.clone(),
                tenant_id: tenant.id.to_string(),
                order_id: id.to_string(),
                action: first.action.clone(),
                available_at: first.available_at,
            };
            (command, LoadedOrder::new(new.record.clone(), draft, state))
        });
    Ok(Accepted {
        placed: Placed::Created {
            record: Box::new(new.record),
            body,
        },
        first,
    })
}

/// Asks the saga to stop and undo. Accepted while the order is pending or
/// confirmed (and harmless once it is cancelled); refused once its goods
/// have left, it was rejected, or its saga is stuck. The saga decides, on the
/// state the cancel commits on.
pub async fn cancel(
    p: &Platform,
    tenant: &Tenant,
    id: &OrderId,
    reason: String,
) -> Result<(), OrderError> {
    let event = |_: &LoadedOrder| SagaEvent::CancelRequested { reason };
    apply_from_api(p, tenant, id, event)
        .await
        .map_err(|refused| match refused {
            Refusal::Illegal(why) => OrderError::NotCancellable(why.detail),
            Refusal::Error(e) => e,
        })
}

/// Records that some lines left (`items`, SKUs; empty: all not shipped
/// yet): CONFIRMED → PARTIALLY_SHIPPED → SHIPPED.
pub async fn ship(
    p: &Platform,
    tenant: &Tenant,
    id: &OrderId,
    carrier: String,
    tracking: String,
    items: Vec<String>,
) -> Result<OrderRecord, OrderError> {
    let shipment = Shipment {
        carrier,
        tracking_number: tracking,
        items,
        shipped_at: oms_clock::now_ms(),
    };
    apply_to_saga(p, tenant, id, |order: &LoadedOrder| SagaEvent::Shipped {
        shipment: shipment.clone(),
        order_items: order
            .draft
            .items
            .iter()
            .map(|l| l.sku.to_string())
            .collect(),
    })
    .await
}

/// The warehouse's answer to the fulfilment request: acceptance confirms
/// the order, a rejection undoes it. Refused ([`OrderError::WrongState`])
/// unless the saga waits for it; the same answer again changes nothing.
pub async fn decide_fulfilment(
    p: &Platform,
    tenant: &Tenant,
    id: &OrderId,
    decision: FulfilmentDecision,
) -> Result<OrderRecord, OrderError> {
    apply_to_saga(p, tenant, id, |_: &LoadedOrder| {
        SagaEvent::FulfilmentDecided {
            decision: decision.clone(),
        }
    })
    .await
}

/// Records that the goods arrived: SHIPPED → DELIVERED.
pub async fn deliver(
    p: &Platform,
    tenant: &Tenant,
    id: &OrderId,
) -> Result<OrderRecord, OrderError> {
    apply_to_saga(p, tenant, id, |_: &LoadedOrder| SagaEvent::Delivered).await
}

/// Applies a client's event, built from the order as read, to its saga;
/// the order as it then stands. A refusal is [`OrderError::WrongState`].
pub(crate) async fn apply_to_saga(
    p: &Platform,
    tenant: &Tenant,
    id: &OrderId,
    event: impl FnOnce(&LoadedOrder) -> SagaEvent,
) -> Result<OrderRecord, OrderError> {
    apply_from_api(p, tenant, id, event)
        .await
        .map_err(|refused| match refused {
            Refusal::Illegal(why) => OrderError::WrongState(why.detail),
            Refusal::Error(e) => e,
        })?;
    Ok(p.store.order(&tenant.id, id).await?)
}

enum Refusal {
    /// The saga refused the event in the state it would have committed on.
    Illegal(saga::IllegalTransition),
    Error(OrderError),
}

/// Applies a client's event to the order's saga and commits it; after a
/// concurrent change, the event is applied again to the new state, so the
/// decision always holds for the state it is written on.
async fn apply_from_api(
    p: &Platform,
    tenant: &Tenant,
    id: &OrderId,
    event: impl FnOnce(&LoadedOrder) -> SagaEvent,
) -> Result<(), Refusal> {
    let order = p
        .store
        .order(&tenant.id, id)
        .await
        .map_err(|e| Refusal::Error(e.into()))?;
    let loaded = load_order(order).map_err(|e| Refusal::Error(e.into()))?;
    // Built from the order as read: only from what never changes (its lines).
    let event = event(&loaded);
    let outcome = Outcome {
        event,
        extras: Extras::default(),
    };
    match commit(p, tenant, id, None, loaded, outcome).await {
        Committed::Applied(_) | Committed::Superseded | Committed::Unchanged => Ok(()),
        Committed::Refused(why) => {
            tracing::info!(order = %id, %why, "refused by the order's saga");
            Err(Refusal::Illegal(why))
        }
        Committed::Failed => Err(Refusal::Error(OrderError::Store(StoreError::Conflict))),
    }
}

/// An operator's action on an order's saga: `OperatorRetry`,
/// `OperatorCompensate` or `OperatorResolve`. Decided by the saga against
/// the state it commits on, so of concurrent actions on one order the saga
/// refuses all but the first ([`OrderError::WrongState`]).
pub async fn operate(
    p: &Platform,
    tenant: &Tenant,
    id: &OrderId,
    event: SagaEvent,
) -> Result<(), OrderError> {
    apply_from_api(p, tenant, id, |_: &LoadedOrder| event)
        .await
        .map_err(|refused| match refused {
            Refusal::Illegal(why) => OrderError::WrongState(why.detail),
            Refusal::Error(e) => e,
        })
}
