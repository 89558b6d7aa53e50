//! After the saga completes, the goods move on: shipped in one or more
//! shipments (each with its lines), then delivered. These are transitions
//! of the saga state machine like any other, so "ship" and "cancel" are both
//! decided against the state they commit on, and neither can slip in while
//! the other is being applied.

use super::state::{Action, SagaState, SagaStatus};
pub use super::state::{Handover, Shipment};
use std::collections::BTreeSet;

/// Why a handover is refused, for the client's error message.
fn not_ready(state: &SagaState, wanted: &str) -> String {
    match (state.status, state.handover) {
        (SagaStatus::Completed, h) => {
            format!("an order that has {} cannot be {wanted}", h.past_tense())
        }
        (SagaStatus::Running, _) if state.awaiting_fulfilment_until.is_some() => {
            format!("the warehouse has not accepted the order yet, so it cannot be {wanted}")
        }
        (SagaStatus::Running, _) if state.cancel_requested.is_some() => {
            format!("the order is being cancelled and cannot be {wanted}")
        }
        (SagaStatus::Running, _) => {
            format!("the order is not confirmed yet and cannot be {wanted}")
        }
        (SagaStatus::Compensating, _) => {
            format!("the order is being cancelled and cannot be {wanted}")
        }
        (status, _) => format!(
            "an order whose saga is {} cannot be {wanted}",
            status.as_str()
        ),
    }
}

/// The SKUs that have shipped. A shipment recorded before shipments had
/// lines carried the whole order.
pub fn shipped_items(state: &SagaState, order_items: &[String]) -> BTreeSet<String> {
    let mut shipped = BTreeSet::new();
    for s in &state.shipments {
        if s.items.is_empty() {
            shipped.extend(order_items.iter().cloned());
        } else {
            shipped.extend(s.items.iter().cloned());
        }
    }
    if state.shipments.is_empty() && state.handover >= Handover::Shipped {
        shipped.extend(order_items.iter().cloned());
    }
    shipped
}

/// One shipment of some of the order's lines (`shipment.items`, SKUs;
/// empty: every line not shipped yet). `order_items` are the order's SKUs.
/// Each line ships once; the order is shipped once every line has.
pub(super) fn ship(
    state: &SagaState,
    mut next: SagaState,
    shipment: &Shipment,
    order_items: &[String],
) -> Result<(SagaState, Vec<Action>), String> {
    if state.status != SagaStatus::Completed
        || !matches!(
            state.handover,
            Handover::NotShipped | Handover::PartiallyShipped
        )
    {
        return Err(not_ready(state, "shipped"));
    }
    // Lines cancelled before they shipped never will.
    let order_items: Vec<String> = order_items
        .iter()
        .filter(|sku| !state.cancelled_items.contains(sku))
        .cloned()
        .collect();
    let order_items = order_items.as_slice();
    let shipped = shipped_items(state, order_items);
    let items: Vec<String> = if shipment.items.is_empty() {
        order_items
            .iter()
            .filter(|sku| !shipped.contains(*sku))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    } else {
        let mut seen = BTreeSet::new();
        for sku in &shipment.items {
            if state.cancelled_items.contains(sku) {
                return Err(format!("{sku} was cancelled"));
            }
            if !order_items.contains(sku) {
                return Err(format!("{sku} is not a line of this order"));
            }
            if shipped.contains(sku) {
                return Err(format!("{sku} has already shipped"));
            }
            if !seen.insert(sku) {
                return Err(format!("{sku} is listed twice"));
            }
        }
        shipment.items.clone()
    };
    let all = order_items
        .iter()
        .all(|sku| shipped.contains(sku) || items.contains(sku));
    next.handover = if all {
        Handover::Shipped
    } else {
        Handover::PartiallyShipped
    };
    let recorded = Shipment {
        items,
        ..shipment.clone()
    };
    next.shipments.push(recorded.clone());
    let action = Action::Handover {
        stage: next.handover,
        shipment: Some(recorded),
    };
    Ok((next, vec![action]))
}

pub(super) fn deliver(
    state: &SagaState,
    mut next: SagaState,
) -> Result<(SagaState, Vec<Action>), String> {
    if state.status != SagaStatus::Completed || state.handover != Handover::Shipped {
        return Err(not_ready(state, "delivered"));
    }
    next.handover = Handover::Delivered;
    let action = Action::Handover {
        stage: Handover::Delivered,
        shipment: None,
    };
    Ok((next, vec![action]))
}
