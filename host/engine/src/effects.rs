//! Turns a saga decision (new state and actions) into the rows one
//! transition writes: order patch, history, commands, outbox messages.

use oms_domain::{FulfillmentStatus, OrderId, OrderStatus, PaymentStatus, TenantId};
use oms_saga::{
    Action, Compensation, Ending, Handover, RefundStatus, ReturnStatus, SagaState, SagaStatus, Step,
};
use oms_store::{InventoryOp, NewCommand, OrderPatch, OutboxMessage, PaymentRecord, Transition};
use serde_json::{Value, json};

use crate::transport::topics::*;

/// What carrying out an action produced besides the saga event.
#[derive(Debug, Clone, Default)]
pub(crate) struct Extras {
    /// Merged into the history entry of the saga event.
    pub detail: serde_json::Map<String, Value>,
    pub inventory: Option<InventoryOp>,
    pub payment: Option<PaymentRecord>,
    pub violations: Option<String>,
    pub outbox: Vec<OutboxMessage>,
    /// A tenant-defined step's state writes, committed with the outcome.
    pub step_state: Vec<oms_store::StepStateWrite>,
}

/// The versioned envelope of every public message.
pub(crate) fn message(
    topic: &str,
    event_type: &str,
    tenant: &TenantId,
    order: &OrderId,
    now: i64,
    data: Value,
) -> OutboxMessage {
    let id = format!("evt_{}", oms_clock::monotonic_ulid());
    let occurred_at = rfc3339(now);
    let payload = json!({
        "eventId": id,
        "type": event_type,
        "schemaVersion": 1,
        "tenantId": tenant.as_str(),
        "orderId": order.as_str(),
        "occurredAt": occurred_at,
        "data": data,
    });
    OutboxMessage {
        id,
        topic: topic.into(),
        event_type: event_type.into(),
        payload,
        available_at: None,
    }
}

/// Epoch ms as RFC 3339 (UTC), as every timestamp in messages and views.
pub(crate) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

/// How long a command this host is about to run itself (it owns the order)
/// waits before its message is published. Run in time, it takes its message
/// with it and nothing goes through the broker; if the host dies first, the
/// message goes out this much later.
pub(crate) const LOCAL_GRACE_MS: i64 = 200;

/// Adds to `t`'s outbox a message for each saga command it writes, so the
/// commands reach the hosts' consumer group; a delayed command is published
/// only once it is due (one due now, `grace_ms` later). The command row stays the record
/// of truth: consuming it deletes it, which makes a redelivered message a
/// no-op.
pub(crate) fn carry_commands(t: &mut Transition, grace_ms: i64) {
    for c in &t.commands {
        let action: Value = match serde_json::from_str(&c.action) {
            Ok(action) => action,
            // Sent as the text it is: the consumer finds it undecodable and
            // dead-letters it (counted), where an operator can see it.
            Err(e) => {
                tracing::error!(command = %c.id, error = %e, "a saga command's action is not JSON");
                Value::String(c.action.clone())
            }
        };
        let mut m = message(
            TOPIC_SAGA_COMMANDS,
            SAGA_COMMAND,
            &t.tenant,
            &t.order_id,
            t.now,
            json!({ "action": action, "availableAt": c.available_at }),
        );
        // The message's id is the command's: one id from table to topic.
        m.id.clone_from(&c.id);
        if let Value::Object(p) = &mut m.payload {
            p.insert("eventId".into(), Value::String(c.id.clone()));
        }
        // Only a command due now is run at once by the committing host.
        let grace = if c.available_at <= t.now { grace_ms } else { 0 };
        m.available_at = Some(c.available_at + grace);
        t.outbox.push(m);
    }
}

pub(crate) fn command(action: &Action, now: i64) -> NewCommand {
    let delay = match action {
        Action::RunStep { delay_ms, .. }
        | Action::RunCompensation { delay_ms, .. }
        | Action::RunRefund { delay_ms, .. } => *delay_ms,
        // A deadline is a moment, not a retry: no jitter.
        Action::AwaitFulfilment { until } => {
            return NewCommand {
                id: format!("cmd_{}", oms_clock::monotonic_ulid()),
                action: serde_json::to_string(action).expect("a saga action serialises"),
                available_at: *until,
            };
        }
        _ => 0,
    };
    // Full jitter: anywhere between now and the policy's delay, so retries of
    // many sagas failing together spread out instead of storming back.
    let jitter = if delay == 0 {
        0
    } else {
        oms_clock::jitter_ms(delay)
    };
    NewCommand {
        id: format!("cmd_{}", oms_clock::monotonic_ulid()),
        // Plain data with string keys: serialising it cannot fail.
        action: serde_json::to_string(action).expect("a saga action serialises"),
        available_at: now + jitter as i64,
    }
}

pub fn payment_status(state: &SagaState) -> PaymentStatus {
    let in_part = state.refunded_in_part();
    // Refunded whole by a cancel, or in parts that add up to the total.
    let whole = in_part > 0 && state.refunds.iter().any(|r| in_part >= r.order_total);
    if state.compensated.contains(&Compensation::RefundPayment) || whole {
        PaymentStatus::Refunded
    } else if in_part > 0 {
        PaymentStatus::PartiallyRefunded
    } else if state.compensated.contains(&Compensation::VoidPayment) {
        PaymentStatus::Voided
    } else if state.completed.contains(&Step::CapturePayment) {
        PaymentStatus::Captured
    } else if state.completed.contains(&Step::AuthorizePayment) {
        PaymentStatus::Authorized
    } else if matches!(
        state.ending,
        Some(Ending::Failed {
            step: Step::AuthorizePayment,
            ..
        })
    ) {
        PaymentStatus::Failed
    } else {
        PaymentStatus::None
    }
}

pub fn fulfillment_status(state: &SagaState) -> FulfillmentStatus {
    match state.handover {
        Handover::Delivered => return FulfillmentStatus::Delivered,
        Handover::Shipped => return FulfillmentStatus::Shipped,
        Handover::PartiallyShipped => return FulfillmentStatus::PartiallyShipped,
        Handover::NotShipped => {}
    }
    let rejected = state
        .fulfilment_decision
        .as_ref()
        .is_some_and(|d| !d.accepted);
    if !state.completed.contains(&Step::RequestFulfilment) {
        FulfillmentStatus::None
    } else if rejected {
        FulfillmentStatus::Rejected
    } else if matches!(
        state.status,
        SagaStatus::Compensating | SagaStatus::Cancelled
    ) {
        FulfillmentStatus::Cancelled
    } else if state.fulfilment_decision.is_some() {
        FulfillmentStatus::Accepted
    } else {
        FulfillmentStatus::Requested
    }
}

/// Builds the transition for `history` (the saga event's entry) leading to
/// `state` with `actions`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn transition(
    tenant: &TenantId,
    order: &OrderId,
    expected_version: i64,
    consumes: Option<String>,
    state: &SagaState,
    history: (&str, Value),
    actions: &[Action],
    extras: Extras,
    now: i64,
) -> Transition {
    let mut data = history.1;
    if let Value::Object(map) = &mut data {
        map.extend(extras.detail);
    }
    let mut events = vec![(history.0.to_string(), data)];
    let mut commands = Vec::new();
    let mut outbox = extras.outbox;
    let mut inventory = extras.inventory;
    let mut patch = OrderPatch {
        saga_state: serde_json::to_string(state).ok(),
        saga_status: Some(state.status.as_str().into()),
        payment_status: Some(payment_status(state).as_str().into()),
        fulfillment_status: Some(fulfillment_status(state).as_str().into()),
        violations: extras.violations,
        ..OrderPatch::default()
    };
    for action in actions {
        match action {
            Action::RunStep { .. } | Action::RunCompensation { .. } | Action::RunRefund { .. } => {
                commands.push(command(action, now))
            }
            Action::Restock {
                return_id,
                warehouse_id,
                lines,
            } => {
                inventory = Some(InventoryOp::Restock {
                    warehouse: warehouse_id.clone(),
                    lines: lines.clone(),
                });
                events.push((
                    "return.restocked".into(),
                    json!({ "returnId": return_id, "warehouseId": warehouse_id, "items": lines.iter().map(|(sku, q)| json!({"sku": sku, "quantity": q})).collect::<Vec<_>>() }),
                ));
            }
            Action::CancelLines { items, reason } => {
                inventory = Some(InventoryOp::ReleaseLines(items.clone()));
                if state.handover == Handover::Shipped {
                    // What is left of the order has all shipped.
                    patch.status = Some(OrderStatus::Shipped.as_str().into());
                }
                let data = json!({ "items": items, "reason": reason });
                outbox.push(message(
                    TOPIC_ORDER_EVENTS,
                    "order.lines_cancelled",
                    tenant,
                    order,
                    now,
                    data.clone(),
                ));
                // The warehouse must not ship them.
                outbox.push(message(
                    TOPIC_FULFILMENT,
                    "fulfilment.lines_cancelled",
                    tenant,
                    order,
                    now,
                    data,
                ));
            }
            Action::ReturnChanged { return_id } => {
                if let Some(r) = state.returns.iter().find(|r| &r.id == return_id) {
                    let event_type = match r.status {
                        ReturnStatus::Requested => "return.requested",
                        ReturnStatus::Refunding => "return.received",
                        ReturnStatus::Refunded => "return.refunded",
                        ReturnStatus::RefundFailed => "return.refund_failed",
                    };
                    outbox.push(message(
                        TOPIC_ORDER_EVENTS,
                        event_type,
                        tenant,
                        order,
                        now,
                        crate::returns::view(r, state),
                    ));
                }
            }
            Action::RefundChanged { refund_id } => {
                if let Some(r) = state.refunds.iter().find(|r| &r.id == refund_id) {
                    let event_type = match r.status {
                        RefundStatus::Succeeded => "payment.refunded",
                        RefundStatus::Failed => "payment.refund_failed",
                        RefundStatus::Pending => "payment.refund_pending",
                    };
                    outbox.push(message(
                        TOPIC_ORDER_EVENTS,
                        event_type,
                        tenant,
                        order,
                        now,
                        json!({
                            "amount": r.amount,
                            "refund": r,
                            "paymentStatus": payment_status(state).as_str(),
                        }),
                    ));
                }
            }
            Action::AwaitFulfilment { until } => {
                commands.push(command(action, now));
                events.push((
                    "fulfilment.awaiting_decision".into(),
                    json!({ "answerBy": rfc3339(*until) }),
                ));
            }
            Action::Notify { recipients, reason } => {
                let data = json!({ "recipients": recipients, "reason": reason });
                events.push(("notification.sent".into(), data.clone()));
                outbox.push(message(
                    TOPIC_NOTIFICATIONS,
                    "order.notification",
                    tenant,
                    order,
                    now,
                    data,
                ));
            }
            Action::Finish { status } => {
                let reason = match status {
                    SagaStatus::Resolved => state.resolution.clone(),
                    _ => state.ending.as_ref().map(Ending::reason),
                };
                let (order_status, event_type) = match status {
                    SagaStatus::Completed => (Some(OrderStatus::Confirmed), "order.confirmed"),
                    SagaStatus::Rejected => (Some(OrderStatus::Rejected), "order.rejected"),
                    SagaStatus::Cancelled => (Some(OrderStatus::Cancelled), "order.cancelled"),
                    // Until an operator retries it (and it finishes) or resolves it.
                    SagaStatus::Stuck => (Some(OrderStatus::RequiresAttention), "order.saga_stuck"),
                    SagaStatus::Resolved => (Some(OrderStatus::Resolved), "order.resolved"),
                    // The core never finishes in these; nothing to change.
                    SagaStatus::Running | SagaStatus::Compensating => {
                        (None, "order.saga_unfinished")
                    }
                };
                if let Some(s) = order_status {
                    patch.status = Some(s.as_str().into());
                }
                if order_status != Some(OrderStatus::Confirmed) {
                    patch.cancellation_reason.clone_from(&reason);
                }
                let data = json!({
                    "status": order_status.map(|s| s.as_str()),
                    "sagaState": status.as_str(),
                    "reason": reason,
                    "paymentStatus": payment_status(state).as_str(),
                });
                events.push((event_type.into(), data.clone()));
                outbox.push(message(
                    TOPIC_ORDER_EVENTS,
                    event_type,
                    tenant,
                    order,
                    now,
                    data,
                ));
            }
            Action::CancelFulfilment { reason } => {
                let data = json!({ "reason": reason });
                events.push(("fulfilment.cancel_requested".into(), data.clone()));
                outbox.push(message(
                    TOPIC_FULFILMENT,
                    "fulfilment.cancel_requested",
                    tenant,
                    order,
                    now,
                    data,
                ));
            }
            Action::Handover { stage, shipment } => {
                let (status, event_type) = match stage {
                    Handover::Delivered => (OrderStatus::Delivered, "order.delivered"),
                    // Each shipment is an `order.shipped`; its status says
                    // whether lines remain.
                    Handover::PartiallyShipped => (OrderStatus::PartiallyShipped, "order.shipped"),
                    _ => (OrderStatus::Shipped, "order.shipped"),
                };
                patch.status = Some(status.as_str().into());
                if let Some(s) = shipment {
                    patch.shipment = Some(
                        serde_json::to_string(s)
                            .expect("a shipment serialises: plain strings and numbers"),
                    );
                    // The shipment's lines leave on-hand and reserved stock.
                    inventory = Some(InventoryOp::Consume(s.items.clone()));
                }
                let data = json!({ "status": status.as_str(), "shipment": shipment });
                // The history entry (the saga event's) reads like the message.
                if let Some((_, Value::Object(entry))) = events.first_mut()
                    && let Value::Object(fields) = &data
                {
                    entry.extend(fields.clone());
                }
                outbox.push(message(
                    TOPIC_ORDER_EVENTS,
                    event_type,
                    tenant,
                    order,
                    now,
                    data,
                ));
            }
        }
    }
    // A payment the provider made is an event of its own; a partial refund
    // announces itself when it finishes (`RefundChanged`).
    if let Some(pay) = extras.payment.as_ref().filter(|p| p.status == "succeeded")
        && events
            .first()
            .is_some_and(|(kind, _)| kind != "refund.succeeded")
    {
        let event_type = match pay.op.as_str() {
            "authorize" => "payment.authorized",
            "capture" => "payment.captured",
            "void" => "payment.voided",
            _ => "payment.refunded",
        };
        outbox.push(message(
            TOPIC_ORDER_EVENTS,
            event_type,
            tenant,
            order,
            now,
            json!({
                "amount": pay.amount,
                "currency": pay.currency,
                "providerReference": pay.provider_reference,
                "paymentStatus": payment_status(state).as_str(),
            }),
        ));
    }
    Transition {
        tenant: tenant.clone(),
        order_id: order.clone(),
        expected_version,
        consumes,
        inventory,
        patch,
        events,
        commands,
        outbox,
        payment: extras.payment,
        step_state: extras.step_state,
        now,
        // Decided within a step's span (or the API request's): its messages
        // continue that trace.
        trace_parent: oms_trace::current(),
    }
}
