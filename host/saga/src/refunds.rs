//! Partial refunds: money going back for part of a confirmed order (a
//! return's received goods, lines cancelled before they shipped), each made
//! through the tenant's payment plugin as a command of the order's saga,
//! retried like a compensation, and given to an operator when it cannot be
//! made. Lines are cancelled here too: that is what starts their refund.

use super::book::OrderBook;
use super::compensation::compensation_delay;
use super::handover::shipped_items;
use super::returns::ReturnStatus;
use super::state::{Action, Failure, Handover, SagaState, SagaStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundStatus {
    Pending,
    Succeeded,
    /// Declined, or failed past its retries: an operator's.
    Failed,
}

/// Money going back for part of the order, made through the tenant's
/// payment plugin with its own idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refund {
    /// The return's id, or the line cancellation's.
    pub id: String,
    /// `return` or `cancelled-lines`.
    pub kind: String,
    pub amount: i64,
    /// The order's total, for whether all of it has gone back.
    pub order_total: i64,
    pub status: RefundStatus,
    /// Attempts made so far (the running one included).
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For a line cancellation, its SKUs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<String>,
}

impl SagaState {
    /// Refunds made or on their way (not those that failed): what a full
    /// refund must leave out.
    pub fn refunds_committed(&self) -> i64 {
        self.refunds
            .iter()
            .filter(|r| r.status != RefundStatus::Failed)
            .map(|r| r.amount)
            .sum()
    }

    /// Refunded so far by partial refunds.
    pub fn refunded_in_part(&self) -> i64 {
        self.refunds
            .iter()
            .filter(|r| r.status == RefundStatus::Succeeded)
            .map(|r| r.amount)
            .sum()
    }
}

/// Some lines of a confirmed order will not ship: their stock is released
/// and their share of the total refunded. Whole lines, before they ship;
/// cancelling every line that is left is cancelling the order.
pub(super) fn cancel_lines(
    state: &SagaState,
    mut next: SagaState,
    refund_id: &str,
    items: &[String],
    reason: &str,
    book: &OrderBook,
) -> Result<(SagaState, Vec<Action>), String> {
    if state.status != SagaStatus::Completed
        || !matches!(
            state.handover,
            Handover::NotShipped | Handover::PartiallyShipped
        )
    {
        return Err(match state.status {
            SagaStatus::Completed => "every line has shipped".into(),
            SagaStatus::Running | SagaStatus::Compensating => {
                "lines can be cancelled once the order is confirmed; cancel the whole order instead"
                    .into()
            }
            s => format!(
                "an order whose saga is {} has nothing to cancel",
                s.as_str()
            ),
        });
    }
    let skus: Vec<String> = book.lines.iter().map(|l| l.sku.clone()).collect();
    let shipped = shipped_items(state, &skus);
    let mut seen = BTreeSet::new();
    for sku in items {
        if book.line(sku).is_none() {
            return Err(format!("{sku} is not a line of this order"));
        }
        if shipped.contains(sku) {
            return Err(format!("{sku} has already shipped"));
        }
        if state.cancelled_items.contains(sku) {
            return Err(format!("{sku} was cancelled already"));
        }
        if !seen.insert(sku) {
            return Err(format!("{sku} is listed twice"));
        }
    }
    if items.is_empty() {
        return Err("name at least one line to cancel".into());
    }
    if state.refunds.iter().any(|r| r.id == refund_id) {
        return Err(format!("line cancellation {refund_id} exists already"));
    }
    let open: Vec<&String> = skus
        .iter()
        .filter(|s| !shipped.contains(*s) && !state.cancelled_items.contains(*s))
        .filter(|s| !items.contains(s))
        .collect();
    if open.is_empty() && shipped.is_empty() {
        return Err("cancelling every line is cancelling the order: use its cancel".into());
    }
    next.cancelled_items.extend(items.iter().cloned());
    let value: i64 = items
        .iter()
        .map(|sku| book.line(sku).map_or(0, |l| l.share))
        .sum();
    let left = (book.total - state.refunds_committed()).max(0);
    let amount = value.min(left);
    let mut actions = vec![Action::CancelLines {
        items: items.to_vec(),
        reason: reason.to_string(),
    }];
    if open.is_empty() {
        // What is left has all shipped.
        next.handover = Handover::Shipped;
    }
    if amount > 0 {
        next.refunds.push(Refund {
            id: refund_id.to_string(),
            kind: "cancelled-lines".into(),
            amount,
            order_total: book.total,
            status: RefundStatus::Pending,
            attempt: 1,
            provider_reference: None,
            error: None,
            items: items.to_vec(),
        });
        actions.push(Action::RunRefund {
            refund_id: refund_id.to_string(),
            attempt: 1,
            delay_ms: 0,
        });
    }
    Ok((next, actions))
}

/// The outcome of a partial refund's attempt: done, tried again with the
/// compensations' backoff while attempts remain and the failure is
/// transient, else failed for an operator (the ops team is told).
pub(super) fn refund_outcome(
    state: &SagaState,
    mut next: SagaState,
    id: &str,
    result: Result<&str, &Failure>,
) -> Result<(SagaState, Vec<Action>), String> {
    let Some(at) = state.refunds.iter().position(|r| r.id == id) else {
        return Err(format!("no refund {id}"));
    };
    let refund = &state.refunds[at];
    if refund.status != RefundStatus::Pending {
        return Err(format!("refund {id} is not pending"));
    }
    let mut actions = vec![];
    let r = &mut next.refunds[at];
    let finished = match result {
        Ok(reference) => {
            r.status = RefundStatus::Succeeded;
            r.provider_reference = Some(reference.to_string());
            r.error = None;
            Some(ReturnStatus::Refunded)
        }
        Err(f) if f.transient && refund.attempt < state.limits.max_compensation_attempts => {
            r.attempt += 1;
            r.error = Some(format!("{}: {}", f.code, f.message));
            actions.push(Action::RunRefund {
                refund_id: id.to_string(),
                attempt: r.attempt,
                delay_ms: compensation_delay(&state.limits, refund.attempt),
            });
            None
        }
        Err(f) => {
            r.status = RefundStatus::Failed;
            r.error = Some(format!("{}: {}", f.code, f.message));
            actions.push(Action::Notify {
                recipients: vec!["ops".into()],
                reason: format!(
                    "refund {id} of {} failed after {} attempts, last: {}: {}; needs an operator",
                    refund.amount, refund.attempt, f.code, f.message
                ),
            });
            Some(ReturnStatus::RefundFailed)
        }
    };
    actions.push(Action::RefundChanged {
        refund_id: id.to_string(),
    });
    if let Some(status) = finished
        && let Some(ret) = next.returns.iter_mut().find(|r| r.id == id)
    {
        ret.status = status;
        actions.push(Action::ReturnChanged {
            return_id: id.to_string(),
        });
    }
    Ok((next, actions))
}
