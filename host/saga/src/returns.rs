//! After the order is confirmed, money can go back in parts: a return of
//! shipped goods (requested, then received by the warehouse, restocked and
//! refunded for exactly what came back, less what the tenant's policy
//! withholds) and a cancellation of lines that have not shipped (their stock
//! released, their share refunded). Both are events of the order's saga, so
//! every return, every line cancellation and a cancel of the whole order are
//! decided against one state under one version check: together they can
//! never refund more than was captured, however many clients ask at once.
//!
//! Pure, like the rest of the saga: the amounts come from the order's
//! [`OrderBook`] (built by the caller from the order, which never changes)
//! and the tenant's [`ReturnPolicy`] fixed when the saga started.

use super::compensation::compensation_delay;
use super::handover::shipped_items;
use super::state::{Action, Failure, Handover, SagaState, SagaStatus};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What a tenant's returns allow, fixed for an order when its saga starts
/// (the terms the customer bought under).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReturnPolicy {
    /// Days after the last shipment during which a return may be opened;
    /// `None`: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_days: Option<u32>,
    /// Percent of every received line's value kept as a restocking fee.
    #[serde(default)]
    pub restocking_fee_percent: u8,
    /// Percent of a damaged line's value refunded (100: as if sellable).
    #[serde(default = "full")]
    pub damaged_refund_percent: u8,
}

fn full() -> u8 {
    100
}

impl Default for ReturnPolicy {
    fn default() -> Self {
        Self {
            window_days: None,
            restocking_fee_percent: 0,
            damaged_refund_percent: 100,
        }
    }
}

/// The money of an order's lines, per SKU: how many units and what part of
/// the order's total they paid (their value with the order's tax and
/// discount spread over the lines by value; shipping is not a line's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderBook {
    pub lines: Vec<BookLine>,
    /// What was charged: the order's total, minor units.
    pub total: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BookLine {
    pub sku: String,
    pub quantity: i64,
    /// Minor units; never negative.
    pub share: i64,
}

impl OrderBook {
    /// From the order's lines `(sku, quantity, unit price)`, its tax,
    /// discount and total. Lines of one SKU are one line. Exact (128-bit,
    /// rounded down), so the shares never sum past `total - shipping`.
    pub fn new(lines: &[(String, i64, i64)], tax: i64, discount: i64, total: i64) -> Self {
        let mut per_sku: BTreeMap<&str, (i128, i128)> = BTreeMap::new();
        for (sku, quantity, unit_price) in lines {
            let e = per_sku.entry(sku).or_default();
            e.0 += i128::from(*quantity);
            e.1 += i128::from(*quantity) * i128::from(*unit_price);
        }
        let subtotal: i128 = per_sku.values().map(|(_, v)| v).sum();
        let adjust = i128::from(tax) - i128::from(discount);
        let lines = per_sku
            .into_iter()
            .map(|(sku, (quantity, value))| {
                let spread = if subtotal == 0 {
                    0
                } else {
                    (adjust * value).div_euclid(subtotal)
                };
                BookLine {
                    sku: sku.to_string(),
                    quantity: i64::try_from(quantity).unwrap_or(i64::MAX),
                    share: i64::try_from((value + spread).max(0)).unwrap_or(i64::MAX),
                }
            })
            .collect();
        Self { lines, total }
    }

    fn line(&self, sku: &str) -> Option<&BookLine> {
        self.lines.iter().find(|l| l.sku == sku)
    }

    /// What `quantity` units of `sku` paid, rounded down.
    fn value(&self, sku: &str, quantity: i64) -> i64 {
        match self.line(sku) {
            Some(l) if l.quantity > 0 => {
                i64::try_from(i128::from(l.share) * i128::from(quantity) / i128::from(l.quantity))
                    .unwrap_or(i64::MAX)
            }
            _ => 0,
        }
    }
}

/// A return's lines as asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReturnLine {
    pub sku: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// Back on the shelf.
    Sellable,
    /// Not resold; refunded per the tenant's policy.
    Damaged,
}

/// What the warehouse got back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedLine {
    pub sku: String,
    pub quantity: i64,
    pub condition: Condition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReturnStatus {
    /// Opened; the goods are on their way back.
    Requested,
    /// Received and restocked; the refund is being made.
    Refunding,
    /// Refunded (or nothing was due).
    Refunded,
    /// The provider would not refund; an operator must settle it.
    RefundFailed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Return {
    pub id: String,
    pub status: ReturnStatus,
    pub items: Vec<ReturnLine>,
    pub reason: String,
    pub requested_at: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub received: Vec<ReceivedLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouse_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<i64>,
    /// What the received lines paid.
    #[serde(default)]
    pub value: i64,
    /// What the policy kept of it.
    #[serde(default)]
    pub withheld: i64,
}

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

    /// Units of `sku` in returns (whatever their state): requested until
    /// received, then what was received.
    fn units_in_returns(&self, sku: &str) -> i64 {
        self.returns
            .iter()
            .map(|r| match r.status {
                ReturnStatus::Requested => r
                    .items
                    .iter()
                    .filter(|l| l.sku == sku)
                    .map(|l| l.quantity)
                    .sum::<i64>(),
                _ => r
                    .received
                    .iter()
                    .filter(|l| l.sku == sku)
                    .map(|l| l.quantity)
                    .sum(),
            })
            .sum()
    }
}

/// A client opens a return of shipped units.
pub(super) fn request(
    state: &SagaState,
    mut next: SagaState,
    id: &str,
    items: &[ReturnLine],
    reason: &str,
    book: &OrderBook,
    now: i64,
) -> Result<(SagaState, Vec<Action>), String> {
    if state.status != SagaStatus::Completed || state.handover == Handover::NotShipped {
        return Err("only goods that have shipped can be returned".into());
    }
    if state.returns.iter().any(|r| r.id == id) {
        return Err(format!("return {id} exists already"));
    }
    if let (Some(days), Some(last)) = (
        state.limits.returns.window_days,
        state.shipments.iter().map(|s| s.shipped_at).max(),
    ) && now > last.saturating_add(i64::from(days) * 86_400_000)
    {
        return Err(format!(
            "the return window of {days} days after shipment has closed"
        ));
    }
    let skus: Vec<String> = book.lines.iter().map(|l| l.sku.clone()).collect();
    let shipped = shipped_items(state, &skus);
    let mut asked: BTreeMap<&str, i64> = BTreeMap::new();
    for line in items {
        if line.quantity <= 0 {
            return Err(format!("{}: the quantity must be at least 1", line.sku));
        }
        *asked.entry(&line.sku).or_default() += line.quantity;
    }
    if asked.is_empty() {
        return Err("a return needs at least one line".into());
    }
    for (sku, quantity) in &asked {
        let Some(line) = book.line(sku) else {
            return Err(format!("{sku} is not a line of this order"));
        };
        if !shipped.contains(*sku) {
            return Err(format!("{sku} has not shipped"));
        }
        let open = line.quantity - state.units_in_returns(sku);
        if *quantity > open {
            return Err(format!(
                "{sku}: {quantity} asked, {open} of {} left to return",
                line.quantity
            ));
        }
    }
    let ret = Return {
        id: id.to_string(),
        status: ReturnStatus::Requested,
        items: items.to_vec(),
        reason: reason.to_string(),
        requested_at: now,
        received: vec![],
        warehouse_id: None,
        received_at: None,
        value: 0,
        withheld: 0,
    };
    next.returns.push(ret);
    Ok((
        next,
        vec![Action::ReturnChanged {
            return_id: id.to_string(),
        }],
    ))
}

/// The warehouse got a return's goods back: sellable ones go back on hand
/// at once, and the refund for exactly what came back starts.
pub(super) fn receive(
    state: &SagaState,
    mut next: SagaState,
    id: &str,
    items: &[ReceivedLine],
    warehouse: &str,
    book: &OrderBook,
    now: i64,
) -> Result<(SagaState, Vec<Action>), String> {
    let Some(at) = state.returns.iter().position(|r| r.id == id) else {
        return Err(format!("no return {id}"));
    };
    let ret = &state.returns[at];
    if ret.status != ReturnStatus::Requested {
        return Err(format!("return {id} was received already"));
    }
    let mut got: BTreeMap<&str, i64> = BTreeMap::new();
    for line in items {
        if line.quantity <= 0 {
            return Err(format!("{}: the quantity must be at least 1", line.sku));
        }
        *got.entry(&line.sku).or_default() += line.quantity;
    }
    if got.is_empty() {
        return Err("a receipt needs at least one line".into());
    }
    for (sku, quantity) in &got {
        let asked: i64 = ret
            .items
            .iter()
            .filter(|l| l.sku == *sku)
            .map(|l| l.quantity)
            .sum();
        if *quantity > asked {
            return Err(format!("{sku}: {quantity} received, {asked} in the return"));
        }
    }
    let policy = state.limits.returns;
    let mut value = 0i64;
    let mut kept = 0i64;
    for line in items {
        let v = book.value(&line.sku, line.quantity);
        value = value.saturating_add(v);
        let percent = match line.condition {
            Condition::Sellable => 100,
            Condition::Damaged => i64::from(policy.damaged_refund_percent.min(100)),
        };
        kept = kept.saturating_add(v - v * percent / 100);
    }
    let after_condition = value - kept;
    let fee = after_condition * i64::from(policy.restocking_fee_percent.min(100)) / 100;
    // Never more than what is left of the capture, whatever else is refunding.
    let left = (book.total - state.refunds_committed()).max(0);
    let amount = (after_condition - fee).min(left).max(0);
    let r = &mut next.returns[at];
    r.received = items.to_vec();
    r.warehouse_id = Some(warehouse.to_string());
    r.received_at = Some(now);
    r.value = value;
    r.withheld = value - amount;
    let restock: Vec<(String, i64)> = items
        .iter()
        .filter(|l| l.condition == Condition::Sellable)
        .map(|l| (l.sku.clone(), l.quantity))
        .collect();
    let mut actions = vec![];
    if !restock.is_empty() {
        actions.push(Action::Restock {
            return_id: id.to_string(),
            warehouse_id: warehouse.to_string(),
            lines: restock,
        });
    }
    if amount == 0 {
        r.status = ReturnStatus::Refunded;
    } else {
        r.status = ReturnStatus::Refunding;
        next.refunds.push(Refund {
            id: id.to_string(),
            kind: "return".into(),
            amount,
            order_total: book.total,
            status: RefundStatus::Pending,
            attempt: 1,
            provider_reference: None,
            error: None,
            items: vec![],
        });
        actions.push(Action::RunRefund {
            refund_id: id.to_string(),
            attempt: 1,
            delay_ms: 0,
        });
    }
    actions.push(Action::ReturnChanged {
        return_id: id.to_string(),
    });
    Ok((next, actions))
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
