//! A warehouse that answers, through the real binary on both databases: a
//! tenant whose manifest sets `fulfilment.decision_timeout_ms` has each
//! order wait, after the fulfilment request, for the warehouse's
//! `POST /orders/{id}/fulfilment`. Acceptance confirms; a rejection refunds
//! and releases exactly once (and the warehouse is not told to stop); no
//! answer in time does the same and tells the warehouse to stop; a cancel
//! while waiting undoes at once. Checked against the provider's ledger and
//! the stock.
// Tests draw their own seeds and ids; the clock rule is for product code.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::admin::{Admin, answering_tenant, manifest};
use support::{Api, Db, Kind, Server, order, stock_totals};

/// Waits until the order's saga waits for the warehouse.
async fn until_awaiting(api: &Api, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = api.get(&format!("/orders/{id}")).await;
        if r.body["fulfilment"]["answerBy"].is_string() {
            return r.body;
        }
        assert!(
            r.body["sagaState"] == "RUNNING" && Instant::now() < deadline,
            "order {id} never waited for the warehouse: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn answer(warehouse: &Api, id: &str, body: Value) -> (u16, Value) {
    let r = warehouse
        .post(&format!("/orders/{id}/fulfilment"), &body)
        .await;
    (r.status, r.body)
}

fn types(events: &Value) -> Vec<String> {
    events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| *k == kind).count()
}

/// The provider's operations on `order`, as (op, status).
async fn ledger_of(srv: &Server, order: &str) -> Vec<(String, String)> {
    srv.ledger()
        .await
        .iter()
        .filter(|e| e["order_id"] == order)
        .map(|e| {
            (
                e["op"].as_str().unwrap().to_string(),
                e["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn a_warehouse_accepts_rejects_or_stays_silent(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;
    let (api, warehouse) = answering_tenant(&srv, "initech", 600_000).await;
    let (on_hand, _) = stock_totals(&api, "WIDGET-1").await;

    // Accepted: confirmed, then shipped; the same answer again is fine.
    let a = api.place(&order("c-a", "WIDGET-1", 1, "tok_visa")).await;
    let waiting = until_awaiting(&api, &a).await;
    assert_eq!(waiting["status"], "PENDING", "{waiting}");
    assert_eq!(waiting["paymentStatus"], "CAPTURED");
    assert_eq!(waiting["fulfillmentStatus"], "REQUESTED");
    let early = api
        .post(
            &format!("/orders/{a}/shipments"),
            &json!({ "carrier": "UPS", "trackingNumber": "1Z" }),
        )
        .await;
    assert_eq!(early.status, 409, "{}", early.body);
    assert_eq!(early.body["error"]["code"], "ORDER_NOT_SHIPPABLE");
    // The client's key cannot answer for the warehouse.
    let (status, body) = answer(&api, &a, json!({ "decision": "accepted" })).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("INSUFFICIENT_SCOPE"))
    );
    let accept = json!({ "decision": "accepted", "estimatedDelivery": "2026-12-09" });
    let (status, body) = answer(&warehouse, &a, accept.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "CONFIRMED");
    assert_eq!(body["fulfillmentStatus"], "ACCEPTED");
    assert_eq!(body["fulfilment"]["decision"], "accepted");
    assert_eq!(body["fulfilment"]["estimatedDelivery"], "2026-12-09");
    assert!(body["fulfilment"]["answerBy"].is_null(), "{body}");
    assert_eq!(
        answer(&warehouse, &a, accept).await.0,
        200,
        "a repeat is fine"
    );
    let (status, body) = answer(&warehouse, &a, json!({ "decision": "rejected" })).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("FULFILMENT_NOT_AWAITED"))
    );
    let shipped = api
        .post(
            &format!("/orders/{a}/shipments"),
            &json!({ "carrier": "UPS", "trackingNumber": "1Z" }),
        )
        .await;
    assert_eq!(shipped.body["status"], "SHIPPED", "{}", shipped.body);

    // Rejected: refunded and released once; the warehouse is not told to stop.
    let b = api.place(&order("c-b", "WIDGET-1", 2, "tok_visa")).await;
    until_awaiting(&api, &b).await;
    let (status, body) = answer(
        &warehouse,
        &b,
        json!({ "decision": "rejected", "reason": "damaged in the warehouse" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let done = api.settle(&b).await;
    assert_eq!(done["status"], "CANCELLED", "{done}");
    assert_eq!(done["paymentStatus"], "REFUNDED");
    assert_eq!(done["fulfillmentStatus"], "REJECTED");
    assert!(
        done["cancellationReason"]
            .as_str()
            .unwrap()
            .contains("FULFILMENT_REJECTED: damaged in the warehouse"),
        "{done}"
    );
    let kinds = types(&api.get(&format!("/orders/{b}/events")).await.body);
    assert_eq!(
        count(&kinds, "fulfilment.awaiting_decision"),
        1,
        "{kinds:?}"
    );
    assert_eq!(count(&kinds, "fulfilment.rejected"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "fulfilment.cancel_requested"), 0, "{kinds:?}");
    assert_eq!(count(&kinds, "order.cancelled"), 1, "{kinds:?}");
    let (status, _) = answer(&warehouse, &b, json!({ "decision": "accepted" })).await;
    assert_eq!(status, 409);

    // Cancelled while waiting: undone at once, the warehouse told to stop.
    let d = api.place(&order("c-d", "WIDGET-1", 1, "tok_visa")).await;
    until_awaiting(&api, &d).await;
    let cancel = api
        .post(
            &format!("/orders/{d}/cancel"),
            &json!({ "reason": "changed my mind" }),
        )
        .await;
    assert_eq!(cancel.status, 202, "{}", cancel.body);
    let done = api.settle(&d).await;
    assert_eq!(done["status"], "CANCELLED", "{done}");
    assert_eq!(done["paymentStatus"], "REFUNDED");
    let kinds = types(&api.get(&format!("/orders/{d}/events")).await.body);
    assert_eq!(count(&kinds, "fulfilment.cancel_requested"), 1, "{kinds:?}");
    let (status, body) = answer(&warehouse, &d, json!({ "decision": "accepted" })).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("FULFILMENT_NOT_AWAITED"))
    );

    // Money and stock: one capture each, refunds only for b and d; only a's unit left.
    for (id, refunds) in [(&a, 0), (&b, 1), (&d, 1)] {
        let ops = ledger_of(&srv, id).await;
        let ok = |op: &str| {
            ops.iter()
                .filter(|(o, s)| o == op && s == "succeeded")
                .count()
        };
        assert_eq!((ok("capture"), ok("refund")), (1, refunds), "{id}: {ops:?}");
    }
    assert_eq!(stock_totals(&api, "WIDGET-1").await, (on_hand - 1, 0));

    // Silence: a tenant whose warehouse has a second; the order is undone.
    let (quick, quick_warehouse) = answering_tenant(&srv, "hooli", 1_000).await;
    let before = stock_totals(&quick, "WIDGET-1").await;
    let c = quick.place(&order("c-c", "WIDGET-1", 3, "tok_visa")).await;
    let done = quick.settle(&c).await;
    assert_eq!(done["status"], "CANCELLED", "{done}");
    assert_eq!(done["paymentStatus"], "REFUNDED");
    assert!(
        done["cancellationReason"]
            .as_str()
            .unwrap()
            .contains("FULFILMENT_DEADLINE_EXCEEDED"),
        "{done}"
    );
    let kinds = types(&quick.get(&format!("/orders/{c}/events")).await.body);
    assert_eq!(count(&kinds, "fulfilment.deadline_passed"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "fulfilment.cancel_requested"), 1, "{kinds:?}");
    let (status, _) = answer(&quick_warehouse, &c, json!({ "decision": "accepted" })).await;
    assert_eq!(status, 409, "too late");
    assert_eq!(stock_totals(&quick, "WIDGET-1").await, before);
}

async fn answers_are_checked_and_kept_to_their_tenant(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;
    let (api, warehouse) = answering_tenant(&srv, "initech", 600_000).await;
    let id = api.place(&order("c-1", "WIDGET-1", 1, "tok_visa")).await;
    until_awaiting(&api, &id).await;
    let bad = [
        (json!({ "decision": "maybe" }), 422, "/decision"),
        (json!({}), 422, ""),
        (
            json!({ "decision": "accepted", "estimatedDelivery": "soon" }),
            422,
            "/estimatedDelivery",
        ),
        (
            json!({ "decision": "rejected", "reason": "x".repeat(501) }),
            422,
            "/reason",
        ),
        (
            json!({ "decision": "rejected", "reason": "a\u{1b}[31m" }),
            422,
            "/reason",
        ),
        (
            json!({ "decision": "accepted", "eta": "2026-12-09" }),
            422,
            "",
        ),
    ];
    for (body, status, field) in bad {
        let (got, answer_body) = answer(&warehouse, &id, body.clone()).await;
        assert_eq!(got, status, "{body} → {answer_body}");
        assert!(answer_body["error"]["code"].is_string(), "{answer_body}");
        if !field.is_empty() {
            assert_eq!(
                answer_body["error"]["details"]["errors"][0]["field"], field,
                "{answer_body}"
            );
        }
    }
    // Nothing was recorded by any of them: the order still waits.
    until_awaiting(&api, &id).await;

    // Another tenant's order is not found; an order of a tenant whose
    // warehouse does not answer is confirmed without one.
    let acme = srv.api("acme");
    let theirs = acme.place(&order("c-2", "WIDGET-1", 1, "tok_visa")).await;
    let (status, _) = answer(&warehouse, &theirs, json!({ "decision": "accepted" })).await;
    assert_eq!(status, 404);
    acme.settle(&theirs).await;
    let (status, body) = answer(&acme, &theirs, json!({ "decision": "accepted" })).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("without waiting"),
        "{body}"
    );

    // The manifest's bounds.
    let mut m = manifest("tooquick");
    m["fulfilment"] = json!({ "decision_timeout_ms": 10 });
    let refused = Admin::new(&srv.url).post("/tenants", &m).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(
        refused
            .body
            .to_string()
            .contains("fulfilment.decision_timeout_ms"),
        "{}",
        refused.body
    );
}

async fn shipments_carry_lines_and_tracking_follows_them(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;
    let api = srv.api("acme");
    let (widgets, gadgets) = (
        stock_totals(&api, "WIDGET-1").await,
        stock_totals(&api, "GADGET-7").await,
    );
    let mut body = order("c-ship", "WIDGET-1", 2, "tok_visa");
    body["items"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "sku": "GADGET-7", "quantity": 1, "unitPrice": 500 }));
    let id = api.place(&body).await;
    assert_eq!(api.settle(&id).await["status"], "CONFIRMED");
    let tracking = api.get(&format!("/orders/{id}/tracking")).await;
    assert_eq!(tracking.status, 200, "{}", tracking.body);
    assert_eq!(tracking.body["shipments"], json!([]));
    assert_eq!(tracking.body["notShipped"].as_array().unwrap().len(), 2);

    let ship = |items: Option<Value>, number: &str| {
        let mut b = json!({ "carrier": "UPS", "trackingNumber": number });
        if let Some(items) = items {
            b["items"] = items;
        }
        b
    };
    let path = format!("/orders/{id}/shipments");
    let first = api
        .post(&path, &ship(Some(json!([{ "sku": "GADGET-7" }])), "1Z-1"))
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["status"], "PARTIALLY_SHIPPED");
    assert_eq!(first.body["fulfillmentStatus"], "PARTIALLY_SHIPPED");
    // Only the gadget left; the widgets stay held.
    assert_eq!(
        stock_totals(&api, "GADGET-7").await,
        (gadgets.0 - 1, gadgets.1)
    );
    assert_eq!(
        stock_totals(&api, "WIDGET-1").await,
        (widgets.0, widgets.1 + 2)
    );

    for (request, status, code) in [
        (
            ship(Some(json!([{ "sku": "GADGET-7" }])), "x"),
            409,
            "ORDER_NOT_SHIPPABLE",
        ),
        (
            ship(Some(json!([{ "sku": "NOPE-1" }])), "x"),
            409,
            "ORDER_NOT_SHIPPABLE",
        ),
        (ship(Some(json!([])), "x"), 422, "VALIDATION_FAILED"),
    ] {
        let r = api.post(&path, &request).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{request} → {}",
            r.body
        );
    }
    let cancel = api.post(&format!("/orders/{id}/cancel"), &json!({})).await;
    assert_eq!(
        cancel.body["error"]["code"], "ORDER_NOT_CANCELLABLE",
        "{}",
        cancel.body
    );
    let early = api
        .post(&format!("/orders/{id}/delivery"), &json!({}))
        .await;
    assert_eq!(
        early.body["error"]["code"], "ORDER_NOT_DELIVERABLE",
        "{}",
        early.body
    );

    // The rest, without naming it.
    let last = api.post(&path, &ship(None, "1Z-2")).await;
    assert_eq!(last.body["status"], "SHIPPED", "{}", last.body);
    assert_eq!(
        stock_totals(&api, "WIDGET-1").await,
        (widgets.0 - 2, widgets.1)
    );
    let t = api.get(&format!("/orders/{id}/tracking")).await.body;
    assert_eq!(t["shipments"][0]["number"], 1);
    assert_eq!(t["shipments"][0]["trackingNumber"], "1Z-1");
    assert_eq!(
        t["shipments"][0]["items"],
        json!([{ "sku": "GADGET-7", "quantity": 1 }])
    );
    assert_eq!(
        t["shipments"][1]["items"],
        json!([{ "sku": "WIDGET-1", "quantity": 2 }])
    );
    assert!(t["shipments"][1]["shippedAt"].is_string(), "{t}");
    assert_eq!(t["notShipped"], json!([]));
    assert_eq!(t["delivered"], false);
    let delivered = api
        .post(&format!("/orders/{id}/delivery"), &json!({}))
        .await;
    assert_eq!(delivered.body["status"], "DELIVERED", "{}", delivered.body);
    let t = api.get(&format!("/orders/{id}/tracking")).await.body;
    assert_eq!(
        (t["delivered"].as_bool(), t["status"].as_str()),
        (Some(true), Some("DELIVERED"))
    );

    let kinds = api.get(&format!("/orders/{id}/events")).await.body;
    let shipped: Vec<&Value> = kinds["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "order.shipped")
        .collect();
    assert_eq!(shipped.len(), 2);
    assert_eq!(shipped[0]["data"]["status"], "PARTIALLY_SHIPPED");
    assert_eq!(shipped[1]["data"]["status"], "SHIPPED");
    // Another tenant's order has no tracking here.
    let theirs = srv
        .api("globex")
        .get(&format!("/orders/{id}/tracking"))
        .await;
    assert_eq!(
        (theirs.status, theirs.body["error"]["code"].as_str()),
        (404, Some("NOT_FOUND"))
    );
}

on_both_backends!(
    a_warehouse_accepts_rejects_or_stays_silent,
    answers_are_checked_and_kept_to_their_tenant,
    shipments_carry_lines_and_tracking_follows_them
);
