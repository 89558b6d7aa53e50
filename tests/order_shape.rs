//! The whole order as a merchant sends it, through the real binary: billing
//! address, product names, metadata on the order and its lines, shipping,
//! tax and discount in minor units; the total the provider is asked for is
//! exactly lines + shipping + tax − discount; every refusal names its field
//! and code; on both databases.
// Tests draw their own seeds and ids; the clock rule is for product code.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use serde_json::{Value, json};
use support::{Db, Kind, Server};

fn full_order(customer: &str) -> Value {
    json!({
        "customerId": customer,
        "currency": "USD",
        "items": [
            { "sku": "WIDGET-1", "quantity": 2, "unitPrice": 1999, "name": "Widget, blue",
              "metadata": { "colour": "blue" } },
            { "sku": "GADGET-7", "quantity": 1, "unitPrice": 4500, "name": "Gadget" }
        ],
        "shippingAddress": { "line1": "1 Main St", "city": "Springfield", "postalCode": "12345", "country": "US" },
        "billingAddress": { "line1": "2 Side St", "city": "Shelbyville", "postalCode": "54321", "country": "US" },
        "paymentMethod": { "token": "tok_visa" },
        "metadata": { "po_number": "PO-7", "channel": "web" },
        "shippingAmount": 599,
        "taxAmount": 700,
        "discountAmount": 1000,
        "totalAmount": 8797
    })
}

async fn a_full_order_is_kept_shown_and_charged_exactly(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;
    let api = srv.api("acme");

    let id = api.place(&full_order("c-full")).await;
    let done = api.settle(&id).await;
    assert_eq!(done["status"], "CONFIRMED", "{done}");
    assert_eq!(done["subtotalAmount"], 8498);
    assert_eq!(done["shippingAmount"], 599);
    assert_eq!(done["taxAmount"], 700);
    assert_eq!(done["discountAmount"], 1000);
    assert_eq!(done["totalAmount"], 8797);
    assert_eq!(done["billingAddress"]["city"], "Shelbyville");
    assert_eq!(done["shippingAddress"]["city"], "Springfield");
    assert_eq!(
        done["metadata"],
        json!({ "po_number": "PO-7", "channel": "web" })
    );
    assert_eq!(done["items"][0]["name"], "Widget, blue");
    assert_eq!(done["items"][0]["metadata"], json!({ "colour": "blue" }));

    // The provider was asked for exactly the total, authorize and capture.
    let ledger = srv.ledger().await;
    let mine: Vec<&Value> = ledger
        .iter()
        .filter(|e| e["order_id"] == id.as_str())
        .collect();
    assert_eq!(mine.len(), 2, "{mine:?}");
    assert!(mine.iter().all(|e| e["amount"] == 8797), "{mine:?}");

    // Without the new fields: billing is the shipping address, the rest 0.
    let plain = api
        .place(&support::order("c-plain", "WIDGET-1", 1, "tok_visa"))
        .await;
    let plain = api.settle(&plain).await;
    assert_eq!(plain["billingAddress"], plain["shippingAddress"]);
    assert_eq!(plain["metadata"], json!({}));
    assert_eq!(plain["totalAmount"], plain["subtotalAmount"]);
    assert_eq!(plain["shippingAmount"], 0);

    // Refusals: 422 with the field and a stable code; nothing stored.
    let before = support::load::all_orders(&api).await.len();
    for (change, field, code) in [
        (
            json!({ "totalAmount": 1 }),
            "/totalAmount",
            "TOTAL_MISMATCH",
        ),
        (
            json!({ "discountAmount": 99999, "totalAmount": null }),
            "/discountAmount",
            "DISCOUNT_EXCEEDS_TOTAL",
        ),
        (
            json!({ "taxAmount": -5, "totalAmount": null }),
            "/taxAmount",
            "NEGATIVE_AMOUNT",
        ),
        (
            json!({ "metadata": { "bad key": "x" } }),
            "/metadata/bad key",
            "INVALID_METADATA_KEY",
        ),
    ] {
        let mut body = full_order("c-bad");
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = api.post("/orders", &body).await;
        assert_eq!(r.status, 422, "{change}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "VALIDATION_FAILED", "{}", r.body);
        let errors = r.body["error"]["details"]["errors"].as_array().unwrap();
        assert!(
            errors
                .iter()
                .any(|e| e["field"] == field && e["code"] == code),
            "{change}: {}",
            r.body
        );
    }
    let mut float = full_order("c-float");
    float["shippingAmount"] = json!(5.99);
    let r = api.post("/orders", &float).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(support::load::all_orders(&api).await.len(), before);
}

/// Order numbers as clients see them: each tenant's orders numbered 1, 2,
/// 3, … in the order they were accepted; many placed at once get distinct
/// consecutive numbers; an idempotent replay is the same order with the
/// same number; another tenant counts on its own.
async fn orders_are_numbered_per_tenant(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;
    let (acme, globex) = (srv.api("acme"), srv.api("globex"));
    let first = acme
        .place(&support::order("c-n", "WIDGET-1", 1, "tok_visa"))
        .await;
    let first = acme.get(&format!("/orders/{first}")).await.body;
    assert_eq!(first["orderNumber"], 1, "{first}");
    let other = globex
        .place(&support::order("c-n", "SPROCKET-9", 1, "tok_visa"))
        .await;
    assert_eq!(
        globex.get(&format!("/orders/{other}")).await.body["orderNumber"],
        1
    );

    let mut placing = Vec::new();
    for n in 0..24 {
        let api = acme.clone();
        placing.push(tokio::spawn(async move {
            let body = support::order(&format!("c-n{n}"), "WIDGET-1", 1, "tok_visa");
            let r = api
                .send(
                    reqwest::Method::POST,
                    "/orders",
                    Some(&body),
                    &[("Idempotency-Key", &format!("num-{n}"))],
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
            (
                r.body["id"].as_str().unwrap().to_string(),
                r.body["orderNumber"].as_i64().unwrap(),
            )
        }));
    }
    let mut numbers = Vec::new();
    for p in placing {
        numbers.push(p.await.unwrap());
    }
    let mut sorted: Vec<i64> = numbers.iter().map(|(_, n)| *n).collect();
    sorted.sort_unstable();
    assert_eq!(sorted, (2..26).collect::<Vec<i64>>());
    // A replay answers the same order with its number.
    let body = support::order("c-n0", "WIDGET-1", 1, "tok_visa");
    let again = acme
        .send(
            reqwest::Method::POST,
            "/orders",
            Some(&body),
            &[("Idempotency-Key", "num-0")],
        )
        .await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body["id"], numbers[0].0.as_str());
    assert_eq!(again.body["orderNumber"], numbers[0].1);
}

on_both_backends!(
    a_full_order_is_kept_shown_and_charged_exactly,
    orders_are_numbered_per_tenant
);
