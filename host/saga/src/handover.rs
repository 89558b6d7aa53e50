//! After the saga completes, the goods move on: shipped, then delivered.
//! These are transitions of the saga state machine like any other, so "ship"
//! and "cancel" are both decided against the state they commit on, and
//! neither can slip in while the other is being applied.

use super::state::{Action, SagaState, SagaStatus};
pub use super::state::{Handover, Shipment};

/// Why a handover is refused, for the client's error message.
fn not_ready(state: &SagaState, wanted: &str) -> String {
    match (state.status, state.handover) {
        (SagaStatus::Completed, h) => {
            format!("an order that has {} cannot be {wanted}", h.past_tense())
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

pub(super) fn ship(
    state: &SagaState,
    mut next: SagaState,
    shipment: &Shipment,
) -> Result<(SagaState, Vec<Action>), String> {
    if state.status != SagaStatus::Completed || state.handover != Handover::NotShipped {
        return Err(not_ready(state, "shipped"));
    }
    next.handover = Handover::Shipped;
    let action = Action::Handover {
        stage: Handover::Shipped,
        shipment: Some(shipment.clone()),
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
