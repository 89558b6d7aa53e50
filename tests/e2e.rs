//! End to end over HTTP: the real `oms` binary, the real Wasm components
//! built from plugins/, the sandbox payment provider, on SQLite and on
//! PostgreSQL. Every demo trigger in README, on both tenants' step orders.
// Tests draw their own seeds and ids; the clock rule is for product code.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use serde_json::{Value, json};
use support::{Db, Kind, Server, admin, order};

async fn server(kind: Kind) -> (Server, Db) {
    let db = Db::new(kind).await;
    (Server::start(&db).await, db)
}

fn types(events: &Value) -> Vec<String> {
    events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

fn ops(payments: &Value) -> Vec<(String, String)> {
    payments["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["type"].as_str().unwrap().to_string(),
                p["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn op(t: &str, s: &str) -> (String, String) {
    (t.into(), s.into())
}

async fn reserved(api: &support::Api, sku: &str) -> i64 {
    let inv = api.get(&format!("/inventory/{sku}")).await.body;
    inv["warehouses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["reserved"].as_i64().unwrap())
        .sum()
}

async fn happy_path_runs_each_tenants_step_order(kind: Kind) {
    let (srv, _db) = server(kind).await;
    for (tenant, sku, steps) in [
        (
            "acme",
            "WIDGET-1",
            vec![
                "validate",
                "fraud-check",
                "reserve-inventory",
                "authorize-payment",
                "capture-payment",
                // Acme's own step (tenants/acme.toml).
                "loyalty-points",
                "request-fulfilment",
            ],
        ),
        (
            "globex",
            "SPROCKET-9",
            vec![
                "validate",
                "fraud-check",
                "authorize-payment",
                "reserve-inventory",
                "capture-payment",
                "request-fulfilment",
            ],
        ),
    ] {
        let api = srv.api(tenant);
        let created = api
            .post("/orders", &order("cust-1", sku, 3, "tok_visa"))
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        assert_eq!(created.body["status"], "PENDING");
        assert_eq!(created.body["totalAmount"], 3 * 1999);
        let id = created.body["id"].as_str().unwrap();
        assert_eq!(
            created.headers["location"],
            format!("/api/v1/orders/{id}").as_str()
        );

        let done = api.settle(id).await;
        assert_eq!(done["status"], "CONFIRMED", "{done}");
        assert_eq!(done["paymentStatus"], "CAPTURED");
        assert_eq!(done["fulfillmentStatus"], "REQUESTED");
        assert_eq!(done["saga"]["completed"], json!(steps));

        let events = api.get(&format!("/orders/{id}/events")).await.body;
        let seqs: Vec<i64> = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["sequence"].as_i64().unwrap())
            .collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as i64).collect::<Vec<_>>(),
            "gapless from 1"
        );
        let t = types(&events);
        assert_eq!(t.first().map(String::as_str), Some("order.created"));
        assert_eq!(t.last().map(String::as_str), Some("order.confirmed"));
        assert_eq!(
            t.iter().filter(|x| *x == "step.succeeded").count(),
            steps.len()
        );
        // Each plugin step records the component version it ran.
        let validate = &events["data"].as_array().unwrap()[1]["data"];
        assert_eq!(validate["step"], "validate");
        assert_eq!(validate["pluginVersion"].as_str().unwrap().len(), 12);

        let payments = api.get(&format!("/orders/{id}/payments")).await.body;
        assert_eq!(
            ops(&payments),
            vec![op("authorize", "succeeded"), op("capture", "succeeded")]
        );
        assert_eq!(payments["data"][0]["amount"], 3 * 1999);
        assert!(
            payments["data"][0]["providerReference"]
                .as_str()
                .unwrap()
                .starts_with("pi_")
        );
        assert_eq!(reserved(&api, sku).await, 3);
    }
    // jemalloc is the process's allocator with its options built in: its
    // background thread (what hands freed pages back while the host is
    // quiet) runs, and the host says which options it started with.
    let log = std::fs::read_to_string(&srv.log).unwrap();
    assert!(
        log.contains("jemalloc allocates for the whole process")
            && log.contains("background_thread:true"),
        "the allocator's options were not logged:\n{log}"
    );
    let threads = srv.thread_names();
    assert!(
        threads.iter().any(|t| t.starts_with("jemalloc_bg_thd")),
        "no background thread of jemalloc's among {threads:?}"
    );
    // No transparent huge pages for the heap (a fault on one could stop
    // to compact memory and zeroed 2 MiB: the first second of load had an
    // accept p99 near 200 ms).
    assert_eq!(
        srv.proc_status("THP_enabled"),
        "0",
        "transparent huge pages are on for the host:\n{log}"
    );
}

async fn guardrail_rejects_large_quantities_with_a_violation(kind: Kind) {
    let (srv, _db) = server(kind).await;
    for tenant in ["acme", "globex"] {
        let api = srv.api(tenant);
        let id = api
            .place(&order("cust-1", "WIDGET-1", 101, "tok_visa"))
            .await;
        let done = api.settle(&id).await;
        assert_eq!(done["status"], "REJECTED", "{done}");
        assert_eq!(done["violations"][0]["code"], "MAX_QUANTITY_EXCEEDED");
        assert_eq!(done["violations"][0]["field"], "/items/0/quantity");
        assert!(
            done["cancellationReason"]
                .as_str()
                .unwrap()
                .starts_with("MAX_QUANTITY_EXCEEDED")
        );
        assert!(ops(&api.get(&format!("/orders/{id}/payments")).await.body).is_empty());
    }
    assert!(
        srv.ledger().await.is_empty(),
        "nothing reached the payment provider"
    );
}

async fn fraud_check_declines_fraud_customers(kind: Kind) {
    let (srv, _db) = server(kind).await;
    for tenant in ["acme", "globex"] {
        let api = srv.api(tenant);
        let id = api
            .place(&order("fraud-ring-7", "WIDGET-1", 1, "tok_visa"))
            .await;
        let done = api.settle(&id).await;
        assert_eq!(done["status"], "REJECTED", "{done}");
        assert!(
            done["cancellationReason"]
                .as_str()
                .unwrap()
                .starts_with("FRAUD_DECLINED")
        );
        let events = api.get(&format!("/orders/{id}/events")).await.body;
        let fraud = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "step.rejected")
            .unwrap();
        assert_eq!(fraud["data"]["fraud"]["decision"], "decline");
    }
}

async fn declined_payment_cancels_and_releases_stock(kind: Kind) {
    let (srv, _db) = server(kind).await;
    let api = srv.api("acme");
    let id = api
        .place(&order("cust-1", "GADGET-7", 2, "tok_chargeDeclined"))
        .await;
    let done = api.settle(&id).await;
    assert_eq!(done["status"], "CANCELLED", "{done}");
    assert_eq!(done["paymentStatus"], "FAILED");
    assert!(
        done["cancellationReason"]
            .as_str()
            .unwrap()
            .contains("card_declined")
    );
    assert_eq!(done["saga"]["compensated"], json!(["release-inventory"]));
    assert_eq!(reserved(&api, "GADGET-7").await, 0);
    let t = types(&api.get(&format!("/orders/{id}/events")).await.body);
    assert!(t.contains(&"compensation.succeeded".to_string()));
    assert!(t.contains(&"notification.sent".to_string()));
    assert_eq!(t.last().map(String::as_str), Some("order.cancelled"));
}

async fn out_of_stock_cancels_and_pay_first_tenants_void(kind: Kind) {
    let (srv, _db) = server(kind).await;
    // acme reserves first: nothing to undo.
    let acme = srv.api("acme");
    let id = acme
        .place(&order("cust-1", "NO-SUCH-SKU", 1, "tok_visa"))
        .await;
    let done = acme.settle(&id).await;
    assert_eq!(done["status"], "CANCELLED", "{done}");
    assert!(
        done["cancellationReason"]
            .as_str()
            .unwrap()
            .contains("OUT_OF_STOCK")
    );
    assert_eq!(done["paymentStatus"], "NONE");

    // globex pays first: its authorization is voided.
    let globex = srv.api("globex");
    let id = globex
        .place(&order("cust-1", "NO-SUCH-SKU", 1, "tok_visa"))
        .await;
    let done = globex.settle(&id).await;
    assert_eq!(done["status"], "CANCELLED", "{done}");
    assert_eq!(done["paymentStatus"], "VOIDED");
    assert_eq!(done["saga"]["compensated"], json!(["void-payment"]));
    let payments = globex.get(&format!("/orders/{id}/payments")).await.body;
    assert_eq!(
        ops(&payments),
        vec![op("authorize", "succeeded"), op("void", "succeeded")]
    );
    let ledger = srv.ledger().await;
    let mine: Vec<&Value> = ledger
        .iter()
        .filter(|e| e["order_id"] == id.as_str())
        .collect();
    assert_eq!(
        mine.iter()
            .map(|e| e["op"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["authorize", "void"]
    );
}

async fn flaky_provider_is_retried_to_success(kind: Kind) {
    let (srv, _db) = server(kind).await;
    for tenant in ["acme", "globex"] {
        let api = srv.api(tenant);
        let sku = if tenant == "acme" {
            "WIDGET-1"
        } else {
            "SPROCKET-9"
        };
        let id = api.place(&order("cust-1", sku, 1, "tok_flaky")).await;
        let done = api.settle(&id).await;
        assert_eq!(done["status"], "CONFIRMED", "{done}");
        let payments = api.get(&format!("/orders/{id}/payments")).await.body;
        assert_eq!(
            ops(&payments),
            vec![
                op("authorize", "failed"),
                op("authorize", "failed"),
                op("authorize", "succeeded"),
                op("capture", "failed"),
                op("capture", "failed"),
                op("capture", "succeeded"),
            ]
        );
        // Every attempt used the same idempotency key, and the provider charged once.
        let keys: Vec<&str> = payments["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["idempotencyKey"].as_str().unwrap())
            .collect();
        assert_eq!(keys[0], keys[2]);
        let ledger = srv.ledger().await;
        let captures = ledger
            .iter()
            .filter(|e| e["order_id"] == id.as_str() && e["op"] == "capture")
            .count();
        assert_eq!(captures, 1);
    }
}

async fn cancel_refunds_and_releases_shipping_is_final(kind: Kind) {
    let (srv, _db) = server(kind).await;
    let api = srv.api("acme");
    let id = api.place(&order("cust-1", "GADGET-7", 2, "tok_visa")).await;
    assert_eq!(api.settle(&id).await["status"], "CONFIRMED");
    assert_eq!(reserved(&api, "GADGET-7").await, 2);
    let r = api
        .post(
            &format!("/orders/{id}/cancel"),
            &json!({ "reason": "changed my mind" }),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let done = api.settle(&id).await;
    assert_eq!(done["status"], "CANCELLED", "{done}");
    assert_eq!(done["paymentStatus"], "REFUNDED");
    assert_eq!(done["fulfillmentStatus"], "CANCELLED");
    // Acme's own step (its loyalty points) first: undone in reverse order.
    assert_eq!(
        done["saga"]["compensated"],
        json!(["loyalty-points", "refund-payment", "release-inventory"])
    );
    assert_eq!(reserved(&api, "GADGET-7").await, 0);
    // The warehouse, asked to fulfil, was told to stop, once, before the refund.
    let events = api.get(&format!("/orders/{id}/events")).await.body;
    let kinds: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    let stop = kinds
        .iter()
        .position(|k| *k == "fulfilment.cancel_requested");
    let refund = kinds.iter().position(|k| *k == "compensation.succeeded");
    assert!(stop.is_some() && stop < refund, "{kinds:?}");
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "fulfilment.cancel_requested")
            .count(),
        1
    );
    let stop = &events["data"][stop.unwrap()];
    assert_eq!(
        stop["data"]["reason"], "CANCELLED_BY_CLIENT: changed my mind",
        "{stop}"
    );
    // Cancelling again is harmless.
    assert_eq!(
        api.post(&format!("/orders/{id}/cancel"), &json!({}))
            .await
            .status,
        202
    );

    // Ship and deliver another; then it cannot be cancelled.
    let id = api.place(&order("cust-1", "GADGET-7", 1, "tok_visa")).await;
    api.settle(&id).await;
    let before = api.get("/inventory/GADGET-7").await.body["warehouses"][0]["onHand"]
        .as_i64()
        .unwrap();
    let shipped = api
        .post(
            &format!("/orders/{id}/shipments"),
            &json!({ "carrier": "UPS", "trackingNumber": "1Z999" }),
        )
        .await;
    assert_eq!(shipped.status, 200, "{}", shipped.body);
    assert_eq!(shipped.body["status"], "SHIPPED");
    assert_eq!(shipped.body["shipment"]["trackingNumber"], "1Z999");
    let inv = api.get("/inventory/GADGET-7").await.body;
    assert_eq!(inv["warehouses"][0]["onHand"].as_i64().unwrap(), before - 1);
    assert_eq!(inv["warehouses"][0]["reserved"], 0);
    let refused = api.post(&format!("/orders/{id}/cancel"), &json!({})).await;
    assert_eq!(refused.status, 409);
    assert_eq!(refused.body["error"]["code"], "ORDER_NOT_CANCELLABLE");
    let delivered = api
        .post(&format!("/orders/{id}/delivery"), &json!({}))
        .await;
    assert_eq!(delivered.body["status"], "DELIVERED");
    assert_eq!(delivered.body["fulfillmentStatus"], "DELIVERED");
    let again = api
        .post(
            &format!("/orders/{id}/shipments"),
            &json!({ "carrier": "UPS", "trackingNumber": "x" }),
        )
        .await;
    assert_eq!(again.status, 409);
    let t = types(&api.get(&format!("/orders/{id}/events")).await.body);
    assert_eq!(
        &t[t.len() - 2..],
        &["order.shipped".to_string(), "order.delivered".to_string()]
    );
}

async fn idempotency_key_replays_and_refuses_reuse(kind: Kind) {
    let (srv, _db) = server(kind).await;
    let api = srv.api("acme");
    let body = order("cust-1", "WIDGET-1", 1, "tok_visa");
    let key = [("idempotency-key", "order-123")];
    let first = api
        .send(reqwest::Method::POST, "/orders", Some(&body), &key)
        .await;
    assert_eq!(first.status, 201);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let second = api
        .send(reqwest::Method::POST, "/orders", Some(&body), &key)
        .await;
    assert_eq!(second.status, 201);
    assert_eq!(second.headers["idempotent-replayed"], "true");
    assert_eq!(second.body["id"], first.body["id"]);
    let other = order("cust-1", "WIDGET-1", 2, "tok_visa");
    let reused = api
        .send(reqwest::Method::POST, "/orders", Some(&other), &key)
        .await;
    assert_eq!(reused.status, 422);
    assert_eq!(reused.body["error"]["code"], "IDEMPOTENCY_KEY_REUSED");
    let list = api.get("/orders").await.body;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "one order, not two"
    );
}

async fn tenants_are_isolated_and_authenticated(kind: Kind) {
    let (srv, _db) = server(kind).await;
    let acme = srv.api("acme");
    let id = acme
        .place(&order("cust-1", "WIDGET-1", 1, "tok_visa"))
        .await;
    let globex = srv.api("globex");
    let r = globex.get(&format!("/orders/{id}")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "NOT_FOUND");
    assert!(!r.body.to_string().contains("cust-1"));
    assert_eq!(
        globex.get(&format!("/orders/{id}/events")).await.status,
        404
    );
    assert_eq!(
        globex
            .post(&format!("/orders/{id}/cancel"), &json!({}))
            .await
            .status,
        404
    );

    // globex's key is not acme's.
    let wrong = support::Api::new(&srv.url, "acme", "globex-dev-key");
    let r = wrong.get(&format!("/orders/{id}")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "UNAUTHORIZED");
    assert!(
        r.body["error"]["requestId"]
            .as_str()
            .unwrap()
            .starts_with("req_")
    );
    assert!(r.body["error"]["timestamp"].is_string());
    let none = reqwest::get(format!("{}/api/v1/orders", srv.url))
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    let unknown = support::Api::new(&srv.url, "initech", "initech-dev-key");
    assert_eq!(unknown.get("/orders").await.status, 401);
}

async fn bad_input_is_refused_with_pointers_and_loses_nothing(kind: Kind) {
    let (srv, _db) = server(kind).await;
    let api = srv.api("acme");
    let mut float = order("cust-1", "WIDGET-1", 1, "tok_visa");
    float["items"][0]["unitPrice"] = json!(19.99);
    let r = api.post("/orders", &float).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "INVALID_REQUEST");
    assert_eq!(
        r.body["error"]["details"]["errors"][0]["field"],
        "/items/0/unitPrice"
    );
    assert_eq!(
        r.body["error"]["details"]["errors"][0]["code"],
        "MONEY_NOT_INTEGER"
    );

    for (field, value, code) in [
        ("/currency", json!("XYZ"), "UNKNOWN_CURRENCY"),
        ("/items", json!([]), "EMPTY_ITEMS"),
        ("/items/0/quantity", json!(0), "INVALID_QUANTITY"),
    ] {
        let mut body = order("cust-1", "WIDGET-1", 1, "tok_visa");
        let target = body.pointer_mut(field).unwrap();
        *target = value;
        let r = api.post("/orders", &body).await;
        assert_eq!(r.status, 422, "{field}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "VALIDATION_FAILED");
        assert_eq!(r.body["error"]["details"]["errors"][0]["field"], field);
        assert_eq!(r.body["error"]["details"]["errors"][0]["code"], code);
    }
    let raw = reqwest::Client::new()
        .post(format!("{}/api/v1/orders", srv.url))
        .header("x-tenant-id", "acme")
        .bearer_auth("acme-dev-key")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["error"]["code"], "MALFORMED_JSON");
    assert_eq!(api.get("/orders?limit=0").await.status, 400);
    assert_eq!(api.get("/orders/not-an-id").await.status, 404);
    // NUL, which PostgreSQL cannot store or compare, is refused at the edge
    // in a path or query, and in a body's text where a handler reads it.
    let nul = api.get("/orders?customer=a%00b").await;
    assert_eq!(
        (nul.status, nul.body["error"]["code"].as_str()),
        (400, Some("INVALID_REQUEST")),
        "{}",
        nul.body
    );
    assert_eq!(api.get("/orders/ord%00").await.status, 400);
    let nowhere = "ord_01JD5V7Q1M7G3Y8K5T0N6B2C4D";
    let r = api
        .post(
            &format!("/orders/{nowhere}/cancel"),
            &json!({ "reason": "a\u{0}b" }),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (422, Some("CONTROL_CHARACTER")),
        "{}",
        r.body
    );
    // A body that is not an object, though serde could read the struct's
    // fields from an array (Schemathesis found `[null]` accepted).
    for body in [json!([null]), json!(["why"]), json!("why"), json!(7)] {
        let r = api.post(&format!("/orders/{nowhere}/cancel"), &body).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (422, Some("VALIDATION_FAILED")),
            "{body}: {}",
            r.body
        );
    }
    assert!(
        api.get("/orders").await.body["data"]
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing was stored"
    );
}

async fn orders_list_by_status_with_cursor(kind: Kind) {
    let (srv, _db) = server(kind).await;
    let api = srv.api("acme");
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            api.place(&order(&format!("c{i}"), "WIDGET-1", 1, "tok_visa"))
                .await,
        );
    }
    let rejected = api.place(&order("c9", "WIDGET-1", 500, "tok_visa")).await;
    for id in ids.iter().chain([&rejected]) {
        api.settle(id).await;
    }
    let page = api.get("/orders?status=CONFIRMED&limit=3").await.body;
    assert_eq!(page["data"].as_array().unwrap().len(), 3);
    let cursor = page["nextCursor"].as_str().unwrap();
    let rest = api
        .get(&format!("/orders?status=CONFIRMED&limit=3&cursor={cursor}"))
        .await
        .body;
    assert_eq!(rest["data"].as_array().unwrap().len(), 2);
    assert!(rest["nextCursor"].is_null());
    let mut seen: Vec<String> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["data"].as_array().unwrap())
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect();
    seen.reverse();
    assert_eq!(seen, ids);
    let rej = api.get("/orders?status=REJECTED").await.body;
    assert_eq!(rej["data"][0]["id"], rejected.as_str());
}

async fn a_compensation_that_keeps_failing_leaves_the_saga_stuck(kind: Kind) {
    let (srv, _db) = server(kind).await;
    // globex authorizes first; the SKU has no stock; voids keep failing.
    let api = srv.api("globex");
    let id = api
        .place(&order("cust-1", "NO-SUCH-SKU", 1, "tok_voidFails"))
        .await;
    let done = api.settle(&id).await;
    assert_eq!(done["sagaState"], "STUCK", "{done}");
    // Not PENDING forever: the client sees it needs someone.
    assert_eq!(done["status"], "REQUIRES_ATTENTION");
    assert_eq!(done["paymentStatus"], "AUTHORIZED");
    let payments = ops(&api.get(&format!("/orders/{id}/payments")).await.body);
    assert_eq!(
        payments
            .iter()
            .filter(|p| **p == op("void", "failed"))
            .count(),
        4,
        "max_compensation_attempts in globex.toml"
    );
    let t = types(&api.get(&format!("/orders/{id}/events")).await.body);
    assert_eq!(t.last().map(String::as_str), Some("order.saga_stuck"));
    srv.wait_metric("sagas_stuck_total", 1).await;
    assert_eq!(srv.metric("sagas_stuck_total").await, 1);
    assert_eq!(srv.metric(r#"sagas_stuck{tenant="globex"}"#).await, 1);
    assert_eq!(srv.metric(r#"sagas_stuck{tenant="acme"}"#).await, 0);
    assert_eq!(
        api.post(&format!("/orders/{id}/cancel"), &json!({}))
            .await
            .status,
        409
    );
    let attention = api.get("/orders?status=REQUIRES_ATTENTION").await.body;
    assert_eq!(attention["data"][0]["id"], id.as_str());
    operators_settle_a_stuck_saga(&srv, &id).await;
}

/// Runs `oms saga …` against the server: whether it succeeded, and its JSON.
fn oms_saga(srv: &Server, args: &[&str]) -> (bool, Value) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oms"))
        .arg("saga")
        .args(["--url", &srv.url, "--token", support::ADMIN_TOKEN])
        .args(args)
        .output()
        .unwrap();
    let body = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), body)
}

/// An operator finds the stuck saga with what it holds, retries it (the
/// provider still fails its voids: stuck again), and resolves it once,
/// however many click at once.
async fn operators_settle_a_stuck_saga(srv: &Server, id: &str) {
    let tok = support::ADMIN_TOKEN;
    let (status, list) = admin(srv, "/sagas?state=STUCK&tenant=globex", None, tok).await;
    assert_eq!(status, 200, "{list}");
    let row = &list["data"][0];
    assert_eq!(row["orderId"], id, "{list}");
    assert_eq!(
        (&row["stoppedAt"], &row["paymentStatus"]),
        (&json!("void-payment"), &json!("AUTHORIZED")),
        "{row}"
    );
    let (status, _) = admin(srv, "/sagas?state=SIDEWAYS", None, tok).await;
    assert_eq!(status, 400);
    // Placed more than an hour ago: not this one; more than 0 minutes: it.
    let (_, old) = admin(srv, "/sagas?state=STUCK&olderThanMinutes=60", None, tok).await;
    assert_eq!(old["data"], json!([]), "{old}");
    let (_, any) = admin(srv, "/sagas?state=STUCK&olderThanMinutes=0", None, tok).await;
    assert_eq!(any["data"][0]["orderId"], id, "{any}");
    let (status, _) = admin(srv, "/sagas?olderThanMinutes=soon", None, tok).await;
    assert_eq!(status, 400);
    let act = |action: &str| format!("/tenants/globex/orders/{id}/saga/{action}");
    let (status, body) = admin(srv, &act("resolve"), Some(json!({})), tok).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("REASON_REQUIRED"))
    );
    let (status, body) = admin(srv, &act("retry"), Some(json!({})), tok).await;
    assert_eq!(status, 200, "{body}");
    let api = srv.api("globex");
    let again = api.settle(id).await;
    assert_eq!(again["sagaState"], "STUCK", "{again}");
    let voids = ops(&api.get(&format!("/orders/{id}/payments")).await.body)
        .iter()
        .filter(|p| **p == op("void", "failed"))
        .count();
    assert_eq!(voids, 8, "four more attempts after the retry");
    // Eight operators resolve at once: one wins, the rest are told it is done.
    let mut clicks = Vec::new();
    for i in 0..8 {
        let (srv_url, path) = (srv.url.clone(), act("resolve"));
        clicks.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{srv_url}/admin/v1{path}"))
                .bearer_auth(support::ADMIN_TOKEN)
                .json(&json!({ "reason": format!("voided by hand in the dashboard ({i})") }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut codes = Vec::new();
    for c in clicks {
        codes.push(c.await.unwrap());
    }
    codes.sort_unstable();
    assert_eq!(codes, [200, 409, 409, 409, 409, 409, 409, 409]);
    let resolved = api.get(&format!("/orders/{id}")).await.body;
    assert_eq!(
        (&resolved["status"], &resolved["sagaState"]),
        (&json!("RESOLVED"), &json!("RESOLVED")),
        "{resolved}"
    );
    let t = types(&api.get(&format!("/orders/{id}/events")).await.body);
    assert_eq!(
        t.iter().filter(|e| *e == "order.resolved").count(),
        1,
        "{t:?}"
    );
    assert_eq!(
        t.iter().filter(|e| *e == "operator.resolve").count(),
        1,
        "{t:?}"
    );
    assert_eq!(srv.metric("sagas_resolved_total").await, 1);
    assert_eq!(srv.metric(r#"sagas_stuck{tenant="globex"}"#).await, 0);
    let (status, body) = admin(srv, &act("retry"), Some(json!({})), tok).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("ORDER_STATE_CONFLICT"))
    );
    // The same through `oms saga`.
    let (ok, listed) = oms_saga(srv, &["list", "--state", "RESOLVED", "--tenant", "globex"]);
    assert!(ok, "{listed}");
    assert_eq!(listed["data"][0]["orderId"], id);
    let (ok, shown) = oms_saga(srv, &["show", "globex", id]);
    assert!(ok, "{shown}");
    let history = shown["history"].as_array().unwrap();
    assert_eq!(history.last().unwrap()["type"], "order.resolved", "{shown}");
    let (ok, refused) = oms_saga(srv, &["resolve", "globex", id, "--reason", "again"]);
    assert!(!ok);
    assert_eq!(refused["error"]["code"], "ORDER_STATE_CONFLICT");
    let (status, _) = admin(srv, &act("sideways"), Some(json!({})), tok).await;
    assert_eq!(status, 404);
}

async fn health_readiness_and_metrics(kind: Kind) {
    let (srv, _db) = server(kind).await;
    let ready: Value = reqwest::get(format!("{}/readyz", srv.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready["database"],
        if kind == Kind::Sqlite {
            "sqlite"
        } else {
            "postgres"
        }
    );
    assert_eq!(
        reqwest::get(format!("{}/healthz", srv.url))
            .await
            .unwrap()
            .status(),
        200
    );
    let api = srv.api("acme");
    let id = api.place(&order("cust-1", "WIDGET-1", 1, "tok_visa")).await;
    api.settle(&id).await;
    assert_eq!(srv.metric("orders_accepted_total").await, 1);
    srv.wait_metric("sagas_completed_total", 1).await;
    assert_eq!(srv.metric("sagas_completed_total").await, 1);
    assert_eq!(srv.metric("illegal_transitions_total").await, 0);
}

on_both_backends!(
    happy_path_runs_each_tenants_step_order,
    guardrail_rejects_large_quantities_with_a_violation,
    fraud_check_declines_fraud_customers,
    declined_payment_cancels_and_releases_stock,
    out_of_stock_cancels_and_pay_first_tenants_void,
    flaky_provider_is_retried_to_success,
    cancel_refunds_and_releases_shipping_is_final,
    idempotency_key_replays_and_refuses_reuse,
    tenants_are_isolated_and_authenticated,
    bad_input_is_refused_with_pointers_and_loses_nothing,
    orders_list_by_status_with_cursor,
    a_compensation_that_keeps_failing_leaves_the_saga_stuck,
    health_readiness_and_metrics,
);

/// The sandbox provider keeps accounts apart as a real one would: a payment
/// belongs to the key that made it (another key gets 404 and cannot capture
/// or refund it), idempotency keys are per key, and the ledger shows a key
/// its own operations, every account's only to the operator key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_provider_keeps_accounts_apart() {
    let psp = support::load::Psp::start().await;
    let http = reqwest::Client::new();
    let call = |key: &str, path: &str, idem: &str, body: serde_json::Value| {
        http.post(format!("{}{path}", psp.url))
            .bearer_auth(key)
            .header("idempotency-key", idem)
            .json(&body)
            .send()
    };
    let pay = json!({ "amount": 1999, "currency": "usd", "payment_method": "tok_visa" });
    let globex = call(
        "sk_test_globex",
        "/v1/payment_intents",
        "same-key",
        pay.clone(),
    )
    .await
    .unwrap();
    assert_eq!(globex.status(), 200);
    let globex_pi = globex.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The same idempotency key under another account is another payment.
    let acme = call("sk_test_acme", "/v1/payment_intents", "same-key", pay)
        .await
        .unwrap();
    assert_eq!(acme.status(), 200);
    assert!(acme.headers().get("idempotent-replayed").is_none());
    let acme_pi = acme.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(acme_pi, globex_pi);

    // Acme cannot see, capture or refund globex's payment.
    let seen = http
        .get(format!("{}/v1/payment_intents/{globex_pi}", psp.url))
        .bearer_auth("sk_test_acme")
        .send()
        .await
        .unwrap();
    assert_eq!(seen.status(), 404);
    let path = format!("/v1/payment_intents/{globex_pi}/capture");
    let captured = call("sk_test_acme", &path, "c1", json!({})).await.unwrap();
    assert_eq!(captured.status(), 404);
    let refund = json!({ "payment_intent": globex_pi });
    let refunded = call("sk_test_acme", "/v1/refunds", "r1", refund)
        .await
        .unwrap();
    assert_eq!(refunded.status(), 404);
    // Its owner can.
    let captured = call("sk_test_globex", &path, "c1", json!({}))
        .await
        .unwrap();
    assert_eq!(captured.status(), 200);

    // Ledgers: none without a key, a key's own, all for the operator.
    let ledger = |key: Option<&str>| {
        let mut r = http.get(format!("{}/v1/ledger", psp.url));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    assert_eq!(ledger(None).await.unwrap().status(), 401);
    let own: serde_json::Value = ledger(Some("sk_test_acme"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let own = own["data"].as_array().unwrap();
    assert_eq!(own.len(), 1, "{own:?}");
    assert_eq!(own[0]["payment_intent"], acme_pi.as_str());
    let all = support::ledger_request(&psp.url).send().await.unwrap();
    let all: serde_json::Value = all.json().await.unwrap();
    assert_eq!(all["data"].as_array().unwrap().len(), 3);
}
