//! The order lifecycle as a model, for the concurrency suites: which
//! histories are legal, which answers each request may get in them, and
//! what the payment provider's ledger and the stock must then say.
//!
//! Legal runs, in history events:
//! `order.created`, then the saga (`step.*`, at most one `cancel.requested`,
//! `compensation.*`, `notification.sent`), ending `order.rejected`,
//! `order.cancelled` or `order.confirmed`; a confirmed order may take one
//! `cancel.requested` (then compensations and `order.cancelled`) **or**
//! shipments (`order.shipped`, each of lines not shipped before; the order
//! `PARTIALLY_SHIPPED` until all have), then one `order.delivered`. Nothing follows
//! `order.cancelled`, `order.rejected` or `order.delivered`. Where the
//! tenant's warehouse answers, the saga waits after the fulfilment request
//! (`fulfilment.awaiting_decision`) and nothing runs until one of: the
//! warehouse's `fulfilment.accepted` (then `order.confirmed`), its
//! `fulfilment.rejected`, `fulfilment.deadline_passed` or a
//! `cancel.requested` (each then undoing to `order.cancelled`).
#![allow(dead_code, clippy::unwrap_used)]

use super::{Api, Server};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A client request on an existing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    Cancel,
    /// Every line not shipped yet.
    Ship,
    /// Only this line (its SKU).
    ShipLine(&'static str),
    Deliver,
    /// The warehouse accepts (or rejects) the fulfilment request.
    Accept,
    Reject,
}

/// What a request was answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub ask: Ask,
    pub status: u16,
    pub code: Option<String>,
}

pub async fn send(api: &Api, id: &str, ask: Ask) -> Answer {
    let (path, body) = match ask {
        Ask::Cancel => ("cancel", json!({ "reason": "model" })),
        Ask::Ship => (
            "shipments",
            json!({ "carrier": "UPS", "trackingNumber": "1Z999" }),
        ),
        Ask::ShipLine(sku) => (
            "shipments",
            json!({ "carrier": "DHL", "trackingNumber": "JD01", "items": [{ "sku": sku }] }),
        ),
        Ask::Deliver => ("delivery", json!({})),
        Ask::Accept => ("fulfilment", json!({ "decision": "accepted" })),
        Ask::Reject => (
            "fulfilment",
            json!({ "decision": "rejected", "reason": "model" }),
        ),
    };
    let r = api.post(&format!("/orders/{id}/{path}"), &body).await;
    Answer {
        ask,
        status: r.status,
        code: r.body["error"]["code"].as_str().map(str::to_owned),
    }
}

/// Waits until the order's saga has finished one way or another.
pub async fn until_settled(api: &Api, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = api.get(&format!("/orders/{id}")).await;
        if matches!(
            r.body["sagaState"].as_str(),
            Some("COMPLETED" | "REJECTED" | "CANCELLED" | "STUCK")
        ) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "order {id} never settled: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An accepted order and every answer its clients got.
#[derive(Debug, Clone)]
pub struct Placed {
    pub tenant: String,
    pub id: String,
    /// Its lines: SKU and quantity.
    pub lines: Vec<(String, i64)>,
    pub answers: Vec<Answer>,
}

/// The orders of one run and the stock they started from.
pub struct Books {
    seed: u64,
    pub placed: Vec<Placed>,
    stock: Vec<(Api, String, i64)>,
    /// Each tenant's API, from [`Books::stock`].
    apis: BTreeMap<String, Api>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Undoing,
    Confirmed,
    PartlyShipped,
    Shipped,
    Delivered,
    Cancelled,
    Rejected,
}

impl Phase {
    fn status(self) -> &'static str {
        match self {
            Self::Running | Self::Undoing => "PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::PartlyShipped => "PARTIALLY_SHIPPED",
            Self::Shipped => "SHIPPED",
            Self::Delivered => "DELIVERED",
            Self::Cancelled => "CANCELLED",
            Self::Rejected => "REJECTED",
        }
    }
}

/// Walks a history through the lifecycle; the phase it ends in, or why it is
/// not a legal run.
fn replay(events: &[Value]) -> Result<Phase, String> {
    let mut phase = None;
    let mut cancel_pending = false;
    // The warehouse was asked to fulfil, and (once) told to stop.
    let (mut fulfilment_requested, mut stop_sent) = (false, false);
    // Its answer, where the tenant waits for one: waiting now, answered
    // yes, answered no or not in time.
    let (mut waits, mut waiting, mut accepted, mut refused, mut timed_out) =
        (false, false, false, false, false);
    for (i, e) in events.iter().enumerate() {
        let kind = e["type"].as_str().unwrap_or_default();
        if e["sequence"].as_i64() != Some(i as i64 + 1) {
            return Err(format!("history has a gap at {i}: {e}"));
        }
        if kind == "step.succeeded" && e["data"]["step"] == "request-fulfilment" {
            fulfilment_requested = true;
        }
        let next = match (phase, kind) {
            (None, "order.created") => Phase::Running,
            (Some(Phase::Running), "step.succeeded" | "step.failed" | "step.rejected")
                if !waiting =>
            {
                Phase::Running
            }
            (Some(Phase::Running), "fulfilment.awaiting_decision")
                if fulfilment_requested && !waits =>
            {
                (waits, waiting) = (true, true);
                Phase::Running
            }
            (Some(Phase::Running), "fulfilment.accepted") if waiting => {
                (waiting, accepted) = (false, true);
                Phase::Running
            }
            (Some(Phase::Running), "fulfilment.rejected") if waiting => {
                (waiting, refused) = (false, true);
                Phase::Undoing
            }
            (Some(Phase::Running), "fulfilment.deadline_passed") if waiting => {
                (waiting, timed_out) = (false, true);
                Phase::Undoing
            }
            // A payment call not made while the provider's breaker is open.
            (Some(p @ (Phase::Running | Phase::Undoing)), "step.postponed") => p,
            (Some(Phase::Running | Phase::Undoing), "fulfilment.cancel_requested")
                if fulfilment_requested
                    && (cancel_pending || timed_out)
                    && !stop_sent
                    && !refused =>
            {
                stop_sent = true;
                Phase::Undoing
            }
            (Some(Phase::Running | Phase::Undoing), "order.cancelled")
                if fulfilment_requested && !stop_sent && !refused =>
            {
                return Err(format!(
                    "cancelled after fulfilment was requested, the warehouse never told (event {})",
                    i + 1
                ));
            }
            (Some(Phase::Running), "cancel.requested") if !cancel_pending => {
                cancel_pending = true;
                // A cancel while waiting undoes at once.
                waiting = false;
                Phase::Running
            }
            (Some(Phase::Confirmed), "cancel.requested") if !cancel_pending => {
                cancel_pending = true;
                Phase::Undoing
            }
            (
                Some(Phase::Running | Phase::Undoing),
                "compensation.succeeded" | "compensation.failed" | "notification.sent",
            ) => Phase::Undoing,
            (Some(Phase::Running), "order.confirmed")
                if !cancel_pending && !waiting && (accepted || !waits) =>
            {
                Phase::Confirmed
            }
            (Some(Phase::Confirmed | Phase::PartlyShipped), "order.shipped") => {
                if e["data"]["status"] == "PARTIALLY_SHIPPED" {
                    Phase::PartlyShipped
                } else {
                    Phase::Shipped
                }
            }
            (Some(Phase::Shipped), "order.delivered") => Phase::Delivered,
            (Some(Phase::Running | Phase::Undoing), "order.cancelled") => Phase::Cancelled,
            (Some(Phase::Running | Phase::Undoing), "order.rejected") => Phase::Rejected,
            (at, _) => return Err(format!("{kind} is illegal in {at:?} (event {})", i + 1)),
        };
        phase = Some(next);
    }
    phase.ok_or_else(|| "empty history".to_string())
}

impl Books {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            placed: Vec::new(),
            stock: Vec::new(),
            apis: BTreeMap::new(),
        }
    }

    /// Puts `on_hand` of `sku` in one warehouse of the tenant behind `api`.
    pub async fn stock(&mut self, api: &Api, sku: &str, on_hand: i64) {
        let r = api
            .send(
                reqwest::Method::PUT,
                &format!("/inventory/{sku}"),
                Some(&json!({ "warehouseId": "model", "onHand": on_hand })),
                &[],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        self.stock.push((api.clone(), sku.to_string(), on_hand));
        self.apis.insert(api.tenant.clone(), api.clone());
    }

    /// Waits for every saga to finish, then checks each order against the
    /// model, the provider's ledger and the stock. Panics listing every
    /// order that no legal run explains, with the seed.
    pub async fn check(&self, srv: &Server) {
        let apis = &self.apis;
        for p in &self.placed {
            until_settled(&apis[p.tenant.as_str()], &p.id).await;
        }
        let mut ledger: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for e in srv.ledger().await {
            if let Some(id) = e["order_id"].as_str() {
                ledger.entry(id.to_string()).or_default().push((
                    e["op"].as_str().unwrap_or_default().into(),
                    e["status"].as_str().unwrap_or_default().into(),
                ));
            }
        }
        let mut problems = Vec::new();
        let mut shipped: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut held: BTreeMap<(String, String), i64> = BTreeMap::new();
        for p in &self.placed {
            let api = &apis[p.tenant.as_str()];
            let order = api.get(&format!("/orders/{}", p.id)).await.body;
            let events = api.get(&format!("/orders/{}/events", p.id)).await.body;
            let events = events["data"].as_array().cloned().unwrap_or_default();
            let ops = ledger.get(&p.id).cloned().unwrap_or_default();
            match check_order(p, &order, &events, &ops) {
                Ok(Phase::Confirmed | Phase::PartlyShipped | Phase::Shipped | Phase::Delivered) => {
                    // Each line left with the shipment that named it, or is still held.
                    let left = shipped_lines(&events);
                    for (sku, quantity) in &p.lines {
                        let key = (p.tenant.clone(), sku.clone());
                        let book = if left.contains(sku) {
                            &mut shipped
                        } else {
                            &mut held
                        };
                        *book.entry(key).or_default() += quantity;
                    }
                }
                Ok(_) => {}
                Err(why) => problems.push(format!(
                    "{} {}: {why}\n    answers: {:?}\n    history: {:?}\n    ledger: {ops:?}",
                    p.tenant,
                    p.id,
                    p.answers,
                    events
                        .iter()
                        .map(|e| e["type"].as_str().unwrap_or_default())
                        .collect::<Vec<_>>()
                )),
            }
        }
        // Stock: what left is what shipped; what is held is what is confirmed.
        for (api, sku, initial) in &self.stock {
            let (on_hand, reserved) = super::stock_totals(api, sku).await;
            let key = (api.tenant.clone(), sku.clone());
            let left = shipped.get(&key).copied().unwrap_or(0);
            let holding = held.get(&key).copied().unwrap_or(0);
            if on_hand != initial - left || reserved != holding {
                problems.push(format!(
                    "{}/{sku}: on hand {on_hand}, reserved {reserved}; the orders say {} on hand ({initial} less {left} shipped) and {holding} reserved",
                    api.tenant,
                    initial - left
                ));
            }
        }
        if problems.is_empty() {
            return;
        }
        // The host's own account of what went wrong, next to the orders.
        let log = std::fs::read_to_string(&srv.log).unwrap_or_default();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        panic!(
            "seed {} (OMS_MODEL_SEED={0}): {} of {} orders or stock lines break the lifecycle:\n{}\nhost warnings and errors (last 20 of {}):\n{}",
            self.seed,
            problems.len(),
            self.placed.len(),
            problems.join("\n"),
            warnings.len(),
            warnings[warnings.len().saturating_sub(20)..].join("\n")
        );
    }
}

/// The SKUs the order's shipments carried, from its history.
fn shipped_lines(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "order.shipped")
        .flat_map(|e| {
            e["data"]["shipment"]["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|sku| sku.as_str().map(str::to_owned))
        .collect()
}

/// One order: its history is a legal run, its fields, answers and payments
/// agree with where that run ended.
fn check_order(
    p: &Placed,
    order: &Value,
    events: &[Value],
    ops: &[(String, String)],
) -> Result<Phase, String> {
    let phase = replay(events)?;
    let status = order["status"].as_str().unwrap_or_default();
    if status != phase.status() {
        return Err(format!("status {status}, history ends {phase:?}"));
    }
    let count = |kind: &str| events.iter().filter(|e| e["type"] == kind).count();

    // Every answer fits the run: nothing 5xx, and what was acknowledged happened.
    for a in &p.answers {
        let code = a.code.as_deref();
        let fits = match (a.ask, a.status, code) {
            (_, s, _) if s >= 500 => false,
            (Ask::Cancel, 202, _) => matches!(phase, Phase::Cancelled | Phase::Rejected),
            (Ask::Cancel, 409, Some("ORDER_NOT_CANCELLABLE")) => matches!(
                phase,
                Phase::PartlyShipped | Phase::Shipped | Phase::Delivered | Phase::Rejected
            ),
            (Ask::Ship, 200, _) => matches!(phase, Phase::Shipped | Phase::Delivered),
            (Ask::ShipLine(_), 200, _) => {
                matches!(
                    phase,
                    Phase::PartlyShipped | Phase::Shipped | Phase::Delivered
                )
            }
            (Ask::Ship | Ask::ShipLine(_), 409, Some("ORDER_NOT_SHIPPABLE")) => true,
            (Ask::Deliver, 200, _) => phase == Phase::Delivered,
            (Ask::Deliver, 409, Some("ORDER_NOT_DELIVERABLE")) => true,
            (Ask::Accept, 200, _) => count("fulfilment.accepted") == 1,
            (Ask::Reject, 200, _) => count("fulfilment.rejected") == 1 && phase == Phase::Cancelled,
            (Ask::Accept | Ask::Reject, 409, Some("FULFILMENT_NOT_AWAITED")) => true,
            _ => false,
        };
        if !fits {
            return Err(format!("answer {a:?} does not fit a run ending {phase:?}"));
        }
    }
    let ok = |ask: Ask, status: u16| {
        p.answers
            .iter()
            .filter(|a| a.ask == ask && a.status == status)
            .count()
    };
    let shipments_told: usize = p
        .answers
        .iter()
        .filter(|a| matches!(a.ask, Ask::Ship | Ask::ShipLine(_)) && a.status == 200)
        .count();
    if shipments_told != count("order.shipped") {
        return Err("shipments acknowledged differ from shipments recorded".into());
    }
    for (ask, kind) in [
        (Ask::Accept, "fulfilment.accepted"),
        (Ask::Reject, "fulfilment.rejected"),
    ] {
        if count(kind) > 0 && ok(ask, 200) == 0 {
            return Err(format!("{kind} recorded, no warehouse was told"));
        }
    }
    if ok(Ask::Deliver, 200) != count("order.delivered") {
        return Err("deliveries acknowledged differ from deliveries recorded".into());
    }
    if count("cancel.requested") > 0 && ok(Ask::Cancel, 202) == 0 {
        return Err("a cancel was recorded that no client was told of".into());
    }

    // Fulfilment fields.
    let fulfilment = order["fulfillmentStatus"].as_str().unwrap_or_default();
    let has_shipment = order.get("shipment").is_some_and(|s| !s.is_null());
    match phase {
        Phase::PartlyShipped | Phase::Shipped | Phase::Delivered
            if fulfilment != phase.status() || !has_shipment =>
        {
            return Err(format!("fulfillment {fulfilment}, shipment {has_shipment}"));
        }
        Phase::Confirmed | Phase::Cancelled | Phase::Rejected if has_shipment => {
            return Err("a shipment on an order whose goods never left".into());
        }
        _ => {}
    }

    // Lines: each shipped once; all of them once the order is shipped.
    let left = shipped_lines(events);
    let mut once = left.clone();
    once.sort();
    once.dedup();
    if once.len() != left.len() {
        return Err(format!("a line shipped twice: {left:?}"));
    }
    let (all, some) = (
        p.lines.iter().all(|(sku, _)| left.contains(sku)),
        p.lines.iter().any(|(sku, _)| left.contains(sku)),
    );
    let lines_fit = match phase {
        Phase::Shipped | Phase::Delivered => all,
        Phase::PartlyShipped => some && !all,
        _ => !some,
    };
    if !lines_fit {
        return Err(format!("shipped lines {left:?} do not fit {phase:?}"));
    }

    // Money, against the provider's own ledger.
    let done = |op: &str| {
        ops.iter()
            .filter(|(o, s)| o == op && s == "succeeded")
            .count()
    };
    let (auth, capture, void, refund) = (
        done("authorize"),
        done("capture"),
        done("void"),
        done("refund"),
    );
    if auth > 1 || capture > 1 || void > 1 || refund > 1 {
        return Err("a payment operation ran twice".into());
    }
    let payment = order["paymentStatus"].as_str().unwrap_or_default();
    let money_ok = match phase {
        Phase::Confirmed | Phase::PartlyShipped | Phase::Shipped | Phase::Delivered => {
            (auth, capture, void, refund) == (1, 1, 0, 0) && payment == "CAPTURED"
        }
        Phase::Rejected => ops.is_empty() && payment == "NONE",
        Phase::Cancelled => {
            capture == refund
                && (auth == 0 || capture == 1 || void == 1)
                && match (refund, void) {
                    (1, _) => payment == "REFUNDED",
                    (_, 1) => payment == "VOIDED",
                    _ => !matches!(payment, "CAPTURED" | "AUTHORIZED" | "REFUNDED" | "VOIDED"),
                }
        }
        Phase::Running | Phase::Undoing => false,
    };
    if !money_ok {
        return Err(format!(
            "payments (authorize {auth}, capture {capture}, void {void}, refund {refund}; paymentStatus {payment}) do not fit {phase:?}"
        ));
    }
    Ok(phase)
}
