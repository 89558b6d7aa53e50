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

use super::book::OrderBook;
use super::handover::shipped_items;
use super::refunds::{Refund, RefundStatus};
use super::state::{Action, Handover, SagaState, SagaStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

impl SagaState {
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

/// Units per SKU of `lines`, each at least 1; no line at all is `empty`.
fn per_sku<'a>(
    lines: impl Iterator<Item = (&'a str, i64)>,
    empty: &str,
) -> Result<BTreeMap<&'a str, i64>, String> {
    let mut units: BTreeMap<&str, i64> = BTreeMap::new();
    for (sku, quantity) in lines {
        if quantity <= 0 {
            return Err(format!("{sku}: the quantity must be at least 1"));
        }
        *units.entry(sku).or_default() += quantity;
    }
    if units.is_empty() {
        return Err(empty.into());
    }
    Ok(units)
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
    let asked = per_sku(
        items.iter().map(|l| (l.sku.as_str(), l.quantity)),
        "a return needs at least one line",
    )?;
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
    let got = per_sku(
        items.iter().map(|l| (l.sku.as_str(), l.quantity)),
        "a receipt needs at least one line",
    )?;
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
