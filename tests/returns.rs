//! Money going back in parts, through the real binary on both databases:
//! returns of shipped units (opened by the client, received by the
//! warehouse, restocked, refunded for exactly what came back less the
//! tenant's policy) and lines cancelled before they ship (released and
//! refunded). Checked against the provider's ledger and the stock.
// Tests draw their own seeds and ids; the clock rule is for product code.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::admin::{Admin, manifest, tenant_with};
use support::{Api, Db, Kind, Server, stock_totals};

/// WIDGET-1 × 2 at 1000 and GADGET-7 × 1 at 3000; shipping 700, tax 500,
/// discount 1000: total 5200. Tax and discount spread by value: WIDGET-1's
/// two units paid 1800, GADGET-7 2700; shipping is no line's.
pub fn two_lines(customer: &str) -> Value {
    json!({
        "customerId": customer,
        "currency": "USD",
        "items": [
            { "sku": "WIDGET-1", "quantity": 2, "unitPrice": 1000 },
            { "sku": "GADGET-7", "quantity": 1, "unitPrice": 3000 },
        ],
        "shippingAddress": { "line1": "1 Main St", "city": "Springfield", "postalCode": "12345", "country": "US" },
        "paymentMethod": { "token": "tok_visa" },
        "shippingAmount": 700,
        "taxAmount": 500,
        "discountAmount": 1000,
    })
}

/// A tenant whose returns keep a 10 % restocking fee and refund half of
/// damaged goods; its client and warehouse.
async fn strict_returns(srv: &Server, id: &str) -> (Api, Api) {
    let policy =
        json!({ "window_days": 30, "restocking_fee_percent": 10, "damaged_refund_percent": 50 });
    tenant_with(srv, id, &[("returns", policy)]).await
}

/// The provider's refunds of `order`: (amount, idempotency key).
async fn refunds_at_provider(srv: &Server, order: &str) -> Vec<(i64, String)> {
    srv.ledger()
        .await
        .iter()
        .filter(|e| e["order_id"] == order && e["op"] == "refund" && e["status"] == "succeeded")
        .map(|e| {
            (
                e["amount"].as_i64().unwrap(),
                e["idempotency_key"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Polls `path` until `done` holds of its body.
async fn until(api: &Api, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = api.get(path).await;
        assert_eq!(r.status, 200, "{}", r.body);
        if done(&r.body) {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never got there: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn ship_all(api: &Api, id: &str) {
    let r = api
        .post(
            &format!("/orders/{id}/shipments"),
            &json!({ "carrier": "UPS", "trackingNumber": "1Z" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

fn code(r: &support::Response) -> (u16, Option<&str>) {
    (r.status, r.body["error"]["code"].as_str())
}

async fn a_return_is_received_restocked_and_refunded(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;
    let (api, warehouse) = strict_returns(&srv, "returner").await;
    let id = api.place(&two_lines("c-ret")).await;
    let placed = api.settle(&id).await;
    assert_eq!(placed["status"], "CONFIRMED", "{placed}");
    assert_eq!(placed["totalAmount"], 5200);
    let returns = format!("/orders/{id}/returns");
    let ask = |sku: &str, q: i64| json!({ "items": [{ "sku": sku, "quantity": q }], "reason": "too small" });

    // Nothing that has not shipped goes back.
    let early = api.post(&returns, &ask("WIDGET-1", 1)).await;
    assert_eq!(
        code(&early),
        (409, Some("RETURN_NOT_ALLOWED")),
        "{}",
        early.body
    );
    ship_all(&api, &id).await;
    let (west_before, _) = stock_west(&api).await;

    let opened = api.post(&returns, &ask("WIDGET-1", 2)).await;
    assert_eq!(opened.status, 201, "{}", opened.body);
    let rid = opened.body["id"].as_str().unwrap().to_string();
    assert_eq!(opened.body["status"], "REQUESTED");
    assert!(opened.body["refund"].is_null());
    // Both units are in that return: no more to return.
    let more = api.post(&returns, &ask("WIDGET-1", 1)).await;
    assert_eq!(
        code(&more),
        (409, Some("RETURN_NOT_ALLOWED")),
        "{}",
        more.body
    );
    assert!(
        more.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("0 of 2 left"),
        "{}",
        more.body
    );

    // Bad bodies name their field; nothing is recorded.
    for (body, field) in [
        (
            json!({ "items": [{ "sku": "GADGET-7", "quantity": 0 }], "reason": "r" }),
            "/items/0/quantity",
        ),
        (json!({ "items": [], "reason": "r" }), "/items"),
        (
            json!({ "items": [{ "sku": "GADGET-7", "quantity": 1 }], "reason": "  " }),
            "/reason",
        ),
        (
            json!({ "items": [{ "sku": "GADGET-7", "quantity": 1 }] }),
            "reason",
        ),
        (
            json!({ "items": [{ "sku": "GADGET-7", "quantity": 1 }], "reason": "r", "extra": 1 }),
            "",
        ),
    ] {
        let r = api.post(&returns, &body).await;
        assert!(matches!(r.status, 400 | 422), "{body}: {}", r.body);
        let fields = r.body["error"]["details"]["errors"].to_string();
        assert!(fields.contains(field), "{body}: {}", r.body);
    }

    // The warehouse receives; the client cannot.
    let receive = format!("/orders/{id}/returns/{rid}/receive");
    let got = json!({
        "warehouseId": "west",
        "items": [
            { "sku": "WIDGET-1", "quantity": 1, "condition": "sellable" },
            { "sku": "WIDGET-1", "quantity": 1, "condition": "damaged" },
        ],
    });
    assert_eq!(
        code(&api.post(&receive, &got).await),
        (403, Some("INSUFFICIENT_SCOPE"))
    );
    let too_many = json!({ "warehouseId": "west", "items": [{ "sku": "WIDGET-1", "quantity": 3, "condition": "sellable" }] });
    let r = warehouse.post(&receive, &too_many).await;
    assert_eq!(code(&r), (409, Some("RETURN_STATE_CONFLICT")), "{}", r.body);
    let r = warehouse.post(&receive, &got).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["receivedValue"], 1800);
    // 900 + half of 900, less 10 %: 1215 back, 585 kept.
    assert_eq!(r.body["withheld"], 585);
    assert_eq!(r.body["refund"]["amount"], 1215);
    let again = warehouse.post(&receive, &got).await;
    assert_eq!(code(&again), (409, Some("RETURN_STATE_CONFLICT")));

    let done = until(&api, &format!("{returns}/{rid}"), |b| {
        b["status"] == "REFUNDED"
    })
    .await;
    assert_eq!(done["refund"]["status"], "SUCCEEDED");
    let kinds: Vec<&str> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "return.requested",
            "return.received",
            "return.restocked",
            "refund.succeeded"
        ],
        "{done}"
    );
    // Exactly that, once, at the provider and in /payments.
    assert_eq!(
        refunds_at_provider(&srv, &id).await,
        vec![(1215, format!("{id}:refund:{rid}"))]
    );
    let payments = api.get(&format!("/orders/{id}/payments")).await.body;
    let refunds: Vec<&Value> = payments["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "refund")
        .collect();
    assert_eq!(refunds.len(), 1, "{payments}");
    assert_eq!(refunds[0]["amount"], 1215);
    let order = api.get(&format!("/orders/{id}")).await.body;
    assert_eq!(order["paymentStatus"], "PARTIALLY_REFUNDED", "{order}");
    assert_eq!(order["refundedAmount"], 1215);
    assert_eq!(
        order["status"], "SHIPPED",
        "a return leaves the order shipped"
    );
    // The sellable unit is back on hand in west; the damaged one is not.
    assert_eq!(stock_west(&api).await.0, west_before + 1);

    // The list, another tenant, an unknown return.
    let list = api.get(&returns).await.body;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let theirs = srv.api("globex").get(&format!("{returns}/{rid}")).await;
    assert_eq!(code(&theirs), (404, Some("NOT_FOUND")));
    let unknown = api
        .get(&format!("{returns}/ret_01J0000000000000000000000"))
        .await;
    assert_eq!(code(&unknown), (404, Some("NOT_FOUND")));
    let r = warehouse
        .post(
            &format!("{returns}/ret_01J0000000000000000000000/receive"),
            &got,
        )
        .await;
    assert_eq!(code(&r), (404, Some("NOT_FOUND")));

    // The manifest's bounds, each named.
    for (section, field) in [
        (json!({ "window_days": 0 }), "returns.window_days"),
        (
            json!({ "restocking_fee_percent": 101 }),
            "returns.restocking_fee_percent",
        ),
        (
            json!({ "damaged_refund_percent": 200 }),
            "returns.damaged_refund_percent",
        ),
        (json!({ "window": 3 }), "window"),
    ] {
        let mut m = manifest("badreturns");
        m["returns"] = section.clone();
        let refused = Admin::new(&srv.url).post("/tenants", &m).await;
        assert_eq!(refused.status, 422, "{section}: {}", refused.body);
        assert!(
            refused.body.to_string().contains(field),
            "{section}: {}",
            refused.body
        );
    }
}

/// On-hand and reserved WIDGET-1 in `west`.
async fn stock_west(api: &Api) -> (i64, i64) {
    let inv = api.get("/inventory/WIDGET-1").await.body;
    inv["warehouses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["warehouseId"] == "west")
        .map(|w| {
            (
                w["onHand"].as_i64().unwrap(),
                w["reserved"].as_i64().unwrap(),
            )
        })
        .unwrap_or((0, 0))
}

async fn lines_cancelled_before_shipment_are_released_and_refunded(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;
    let api = srv.api("acme");
    let (gadgets, held) = stock_totals(&api, "GADGET-7").await;
    let id = api.place(&two_lines("c-lines")).await;
    assert_eq!(api.settle(&id).await["status"], "CONFIRMED");
    assert_eq!(stock_totals(&api, "GADGET-7").await, (gadgets, held + 1));
    let path = format!("/orders/{id}/line-cancellations");
    let one = |sku: &str| json!({ "items": [{ "sku": sku }], "reason": "out of season" });

    let r = api.post(&path, &one("GADGET-7")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["cancelledLines"], json!(["GADGET-7"]));
    assert_eq!(r.body["refunds"][0]["amount"], 2700);
    assert_eq!(r.body["refunds"][0]["kind"], "cancelled-lines");
    // Its stock is free again at once; the refund follows.
    assert_eq!(stock_totals(&api, "GADGET-7").await, (gadgets, held));
    let order = until(&api, &format!("/orders/{id}"), |b| {
        b["refunds"][0]["status"] == "SUCCEEDED"
    })
    .await;
    assert_eq!(order["paymentStatus"], "PARTIALLY_REFUNDED");
    assert_eq!(order["refundedAmount"], 2700);
    for (body, why) in [
        (one("GADGET-7"), "cancelled already"),
        (one("NOPE-1"), "not a line of this order"),
        (one("WIDGET-1"), "cancelling the order"),
    ] {
        let r = api.post(&path, &body).await;
        assert_eq!(code(&r), (409, Some("LINES_NOT_CANCELLABLE")), "{}", r.body);
        assert!(
            r.body["error"]["message"].as_str().unwrap().contains(why),
            "{}",
            r.body
        );
    }
    // Shipping everything ships what is left, and the order is shipped.
    ship_all(&api, &id).await;
    let shipped = api.get(&format!("/orders/{id}/tracking")).await.body;
    assert_eq!(shipped["status"], "SHIPPED", "{shipped}");
    assert_eq!(shipped["shipments"][0]["items"][0]["sku"], "WIDGET-1");
    let r = api.post(&path, &one("WIDGET-1")).await;
    assert_eq!(code(&r), (409, Some("LINES_NOT_CANCELLABLE")));

    // A line cancelled, then the whole order: the provider refunds exactly
    // what was captured, in two parts, and no stock stays held.
    let (widgets, widgets_held) = stock_totals(&api, "WIDGET-1").await;
    let other = api.place(&two_lines("c-lines-2")).await;
    assert_eq!(api.settle(&other).await["status"], "CONFIRMED");
    let r = api
        .post(
            &format!("/orders/{other}/line-cancellations"),
            &one("WIDGET-1"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let cancel = api
        .post(
            &format!("/orders/{other}/cancel"),
            &json!({ "reason": "changed mind" }),
        )
        .await;
    assert_eq!(cancel.status, 202, "{}", cancel.body);
    let done = api.settle(&other).await;
    assert_eq!(done["status"], "CANCELLED", "{done}");
    let order = until(&api, &format!("/orders/{other}"), |b| {
        b["refunds"][0]["status"] == "SUCCEEDED"
    })
    .await;
    assert_eq!(order["paymentStatus"], "REFUNDED", "{order}");
    let mut amounts: Vec<i64> = refunds_at_provider(&srv, &other)
        .await
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    amounts.sort();
    assert_eq!(amounts, vec![1800, 5200 - 1800]);
    assert_eq!(
        stock_totals(&api, "WIDGET-1").await,
        (widgets, widgets_held)
    );
    assert_eq!(stock_totals(&api, "GADGET-7").await, (gadgets, held));
    // A line of a pending or cancelled order is not cancelled alone.
    let r = api
        .post(
            &format!("/orders/{other}/line-cancellations"),
            &one("GADGET-7"),
        )
        .await;
    assert_eq!(code(&r), (409, Some("LINES_NOT_CANCELLABLE")));
}

/// A refund the provider will not make fails after the tenant's attempts
/// and waits for an operator, whose retry makes it once; a client retrying
/// with its `Idempotency-Key` gets what its first request made.
async fn failed_refunds_wait_for_an_operator_and_keys_make_one_return(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;
    let quick = json!({ "max_compensation_attempts": 2, "compensation_base_delay_ms": 10, "compensation_max_delay_ms": 20 });
    let (api, warehouse) = tenant_with(&srv, "refundfail", &[("saga", quick)]).await;
    let id = api.place(&two_lines("c-key")).await;
    assert_eq!(api.settle(&id).await["status"], "CONFIRMED");
    ship_all(&api, &id).await;
    let returns = format!("/orders/{id}/returns");

    // Eight clients send one return with one key at once: one return, one answer.
    let body = json!({ "items": [{ "sku": "GADGET-7", "quantity": 1 }], "reason": "broken" });
    let sends: Vec<_> = (0..8)
        .map(|_| {
            let (api, returns, body) = (api.clone(), returns.clone(), body.clone());
            tokio::spawn(async move {
                api.send(
                    reqwest::Method::POST,
                    &returns,
                    Some(&body),
                    &[("idempotency-key", "k-1")],
                )
                .await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for send in sends {
        answers.push(send.await.unwrap());
    }
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|r| {
            assert_eq!(r.status, 201, "{}", r.body);
            r.body["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one return for one key");
    let replays = answers
        .iter()
        .filter(|r| r.headers.get("idempotent-replayed").is_some())
        .count();
    assert_eq!(replays, 7, "all but the first are replays");
    assert_eq!(
        api.get(&returns).await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let other = json!({ "items": [{ "sku": "WIDGET-1", "quantity": 1 }], "reason": "broken" });
    let r = api
        .send(
            reqwest::Method::POST,
            &returns,
            Some(&other),
            &[("idempotency-key", "k-1")],
        )
        .await;
    assert_eq!(
        code(&r),
        (422, Some("IDEMPOTENCY_KEY_REUSED")),
        "{}",
        r.body
    );
    let rid = ids.into_iter().next().unwrap();

    // The provider refuses refunds for now.
    let outage = |ops: Value| {
        let url = format!("{}/v1/outage", srv.psp_url);
        async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(oms_sandbox_psp::DEFAULT_OPERATOR_KEY)
                .json(&json!({ "operations": ops }))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(outage(json!(["refund"])).await, 200);
    let got = json!({ "warehouseId": "east", "items": [{ "sku": "GADGET-7", "quantity": 1, "condition": "sellable" }] });
    let r = warehouse
        .post(&format!("{returns}/{rid}/receive"), &got)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let failed = until(&api, &format!("{returns}/{rid}"), |b| {
        b["status"] == "REFUND_FAILED"
    })
    .await;
    assert_eq!(failed["refund"]["status"], "FAILED");
    assert_eq!(failed["refund"]["attempts"], 2);
    assert!(refunds_at_provider(&srv, &id).await.is_empty());
    assert_eq!(
        api.get(&format!("/orders/{id}")).await.body["paymentStatus"],
        "CAPTURED"
    );

    // The outage is over; an operator retries, once; a second retry has nothing to do.
    assert_eq!(outage(json!([])).await, 200);
    let admin = Admin::new(&srv.url);
    let retry = format!("/tenants/refundfail/orders/{id}/saga/retry");
    let r = admin.post(&retry, &json!({})).await;
    assert!(r.status < 300, "{}", r.body);
    let done = until(&api, &format!("{returns}/{rid}"), |b| {
        b["status"] == "REFUNDED"
    })
    .await;
    assert_eq!(done["refund"]["status"], "SUCCEEDED");
    let again = admin.post(&retry, &json!({})).await;
    assert_eq!(again.status, 409, "{}", again.body);
    // 2700 back, exactly once.
    assert_eq!(
        refunds_at_provider(&srv, &id).await,
        vec![(2700, format!("{id}:refund:{rid}"))]
    );
}

on_both_backends!(
    a_return_is_received_restocked_and_refunded,
    lines_cancelled_before_shipment_are_released_and_refunded,
    failed_refunds_wait_for_an_operator_and_keys_make_one_return
);
