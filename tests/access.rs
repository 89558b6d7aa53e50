//! Operating tenants at run time through the admin API of the real binary,
//! on both databases: tenants created, changed and suspended without a
//! restart; scoped API keys created, rotated and revoked. Operators and a
//! second host: `access_operators.rs`.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::admin::{Admin, DEADLINE, manifest, until};
use support::{Api, Db, Kind, Server, order};

fn field_of(r: &support::Response) -> &str {
    r.body["error"]["details"]["errors"][0]["field"]
        .as_str()
        .unwrap_or_default()
}

/// Waits for an order's saga to finish through the operators' view (which
/// a suspended tenant's key cannot read).
async fn settled(admin: &Admin, tenant: &str, id: &str) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let r = admin
            .get(&format!("/tenants/{tenant}/orders/{id}/saga"))
            .await;
        if matches!(
            r.body["sagaState"].as_str(),
            Some("COMPLETED" | "REJECTED" | "CANCELLED" | "STUCK")
        ) {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "order {id} did not settle: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A change that spoils a manifest.
type Change = Box<dyn Fn(&mut Value)>;

async fn tenants_are_created_changed_and_suspended_at_run_time(kind: Kind) {
    let db = Db::new(kind).await;
    let mut srv = Server::start(&db).await;
    let admin = Admin::new(&srv.url);

    let created = admin.post("/tenants", &manifest("initech")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["status"], "ACTIVE");
    // The payment provider's key is a secret: never shown back.
    assert_eq!(
        created.body["manifest"]["plugins"]["payment-provider"]["settings"]["api_key"],
        "********"
    );
    let again = admin.post("/tenants", &manifest("initech")).await;
    assert_eq!(
        (again.status, again.body["error"]["code"].as_str()),
        (409, Some("TENANT_EXISTS"))
    );

    // Each refusal is a 422 naming the field, and nothing is stored.
    let refusals: Vec<(&str, Change)> = vec![
        (
            "plugins.guardrail.component",
            Box::new(|m| m["plugins"]["guardrail"]["component"] = json!("builtin:nope")),
        ),
        (
            "plugins.guardrail.component",
            Box::new(|m| m["plugins"]["guardrail"]["component"] = json!("../plugins/x.wasm")),
        ),
        (
            "plugins.guardrail.component",
            Box::new(|m| {
                m["plugins"]["guardrail"]["component"] = json!(format!("sha256:{}", "0".repeat(64)))
            }),
        ),
        ("saga.stepz", Box::new(|m| m["saga"]["stepz"] = json!(1))),
        (
            "saga.steps",
            Box::new(|m| m["saga"]["steps"] = json!(["capture-payment", "validate"])),
        ),
        (
            "plugins.payment-provider",
            Box::new(|m| {
                m["plugins"]
                    .as_object_mut()
                    .unwrap()
                    .remove("payment-provider");
            }),
        ),
        (
            "plugins.guardrail.memory_mb",
            Box::new(|m| m["plugins"]["guardrail"]["memory_mb"] = json!(4096)),
        ),
        (
            "plugins.guardrail.allowed_origins",
            Box::new(|m| m["plugins"]["guardrail"]["allowed_origins"] = json!(["http://x"])),
        ),
        (
            "limits.burst",
            Box::new(|m| m["limits"] = json!({ "burst": 0 })),
        ),
        (
            "dev_api_keys",
            Box::new(|m| m["dev_api_keys"] = json!(["k"])),
        ),
        ("id", Box::new(|m| m["id"] = json!("Not An Id"))),
        ("name", Box::new(|m| m["name"] = json!(7))),
        (
            "name",
            Box::new(|m| m["name"] = json!("Evil\u{1b}[31m Corp")),
        ),
    ];
    for (field, change) in &refusals {
        let mut m = manifest("hooli");
        change(&mut m);
        let r = admin.post("/tenants", &m).await;
        assert_eq!(r.status, 422, "{field}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "INVALID_TENANT", "{}", r.body);
        assert_eq!(field_of(&r), *field, "{}", r.body);
    }
    assert_eq!(admin.get("/tenants/hooli").await.status, 404);
    let listed = admin.get("/tenants").await.body;
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme", "globex", "initech"]);

    // The new tenant's first order, with a key made for it, completes.
    let key = admin.key("initech", &["orders:read", "orders:write"]).await;
    let api = Api::new(&srv.url, "initech", &key);
    let first = api.place(&order("c-1", "WIDGET-1", 2, "tok_visa")).await;
    assert_eq!(api.settle(&first).await["status"], "CONFIRMED");

    // A changed manifest takes effect at once: a guardrail limit lowered.
    let shown = admin.get("/tenants/initech").await.body;
    let revision = shown["revision"].as_i64().unwrap();
    let mut changed = shown["manifest"].clone();
    changed["plugins"]["guardrail"]["settings"]["max_quantity"] = json!("1");
    let stale = admin
        .put(
            "/tenants/initech",
            &changed,
            &[("if-match", &(revision - 1).to_string())],
        )
        .await;
    assert_eq!(
        (stale.status, stale.body["error"]["code"].as_str()),
        (409, Some("STATE_CONFLICT"))
    );
    let put = admin
        .put(
            "/tenants/initech",
            &changed,
            &[("if-match", &revision.to_string())],
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    let wrong_id = admin
        .put("/tenants/initech", &manifest("globex"), &[])
        .await;
    assert_eq!(field_of(&wrong_id), "id", "{}", wrong_id.body);
    let too_many = api.place(&order("c-2", "WIDGET-1", 2, "tok_visa")).await;
    assert_eq!(api.settle(&too_many).await["status"], "REJECTED");
    // The redacted secret sent back kept its value: payments still work.
    let one = api.place(&order("c-3", "WIDGET-1", 1, "tok_visa")).await;
    assert_eq!(api.settle(&one).await["status"], "CONFIRMED");

    // Suspended: calls refused, the saga in flight finishes.
    let in_flight = api.place(&order("c-4", "WIDGET-1", 1, "tok_visa")).await;
    let s = admin.post("/tenants/initech/suspend", &json!({})).await;
    assert_eq!(
        (s.status, s.body["status"].as_str()),
        (200, Some("SUSPENDED"))
    );
    let refused = api.get("/orders").await;
    assert_eq!(
        (refused.status, refused.body["error"]["code"].as_str()),
        (403, Some("TENANT_SUSPENDED"))
    );
    assert_eq!(
        settled(&admin, "initech", &in_flight).await["status"],
        "CONFIRMED"
    );
    let twice = admin.post("/tenants/initech/suspend", &json!({})).await;
    assert_eq!(twice.status, 409);
    assert_eq!(
        admin
            .post("/tenants/initech/resume", &json!({}))
            .await
            .status,
        200
    );
    assert_eq!(api.get("/orders").await.status, 200);
    // Other tenants were never touched.
    assert_eq!(srv.api("acme").get("/orders").await.status, 200);

    // After a restart the tenant, its change and its key are still there,
    // and re-importing the unchanged demo files changed nothing.
    let acme_before = admin.get("/tenants/acme").await.body["revision"].clone();
    srv.kill();
    srv.spawn().await;
    assert_eq!(
        admin.get("/tenants/acme").await.body["revision"],
        acme_before
    );
    let after = api.place(&order("c-5", "WIDGET-1", 2, "tok_visa")).await;
    assert_eq!(api.settle(&after).await["status"], "REJECTED");
}

/// Every tenant endpoint, the scope it needs, and a request to it.
fn endpoints(order_id: &str) -> Vec<(reqwest::Method, String, &'static str, Option<Value>)> {
    use reqwest::Method as M;
    let o = |p: &str| format!("/orders/{order_id}{p}");
    vec![
        (
            M::POST,
            "/orders".into(),
            "orders:write",
            Some(order("s-1", "WIDGET-1", 1, "tok_visa")),
        ),
        (M::GET, "/orders".into(), "orders:read", None),
        (M::GET, o(""), "orders:read", None),
        (M::GET, o("/events"), "orders:read", None),
        (M::GET, o("/payments"), "orders:read", None),
        (
            M::POST,
            o("/cancel"),
            "orders:write",
            Some(json!({ "reason": "test" })),
        ),
        (
            M::POST,
            o("/shipments"),
            "orders:write",
            Some(json!({ "carrier": "ups", "trackingNumber": "1Z" })),
        ),
        (M::POST, o("/delivery"), "orders:write", Some(json!({}))),
        (
            M::POST,
            o("/fulfilment"),
            "fulfilment:write",
            Some(json!({ "decision": "accepted" })),
        ),
        (M::GET, o("/tracking"), "orders:read", None),
        (
            M::POST,
            o("/returns"),
            "orders:write",
            Some(json!({ "items": [{ "sku": "WIDGET-1", "quantity": 1 }], "reason": "test" })),
        ),
        (M::GET, o("/returns"), "orders:read", None),
        (
            M::GET,
            o("/returns/ret_01J0000000000000000000000"),
            "orders:read",
            None,
        ),
        (
            M::POST,
            o("/returns/ret_01J0000000000000000000000/receive"),
            "fulfilment:write",
            Some(
                json!({ "warehouseId": "east", "items": [{ "sku": "WIDGET-1", "quantity": 1, "condition": "sellable" }] }),
            ),
        ),
        (
            M::POST,
            o("/line-cancellations"),
            "orders:write",
            Some(json!({ "items": [{ "sku": "WIDGET-1" }] })),
        ),
        (
            M::POST,
            "/webhooks".into(),
            "webhooks:write",
            Some(json!({ "url": "https://hooks.example.com/oms", "eventTypes": ["*"] })),
        ),
        (M::GET, "/webhooks".into(), "webhooks:read", None),
        (M::GET, "/webhooks/we_x".into(), "webhooks:read", None),
        (M::DELETE, "/webhooks/we_x".into(), "webhooks:write", None),
        (
            M::POST,
            "/webhooks/we_x/enable".into(),
            "webhooks:write",
            Some(json!({})),
        ),
        (
            M::GET,
            "/webhooks/we_x/deliveries".into(),
            "webhooks:read",
            None,
        ),
        (
            M::POST,
            "/webhooks/we_x/deliveries/whd_x/redeliver".into(),
            "webhooks:write",
            Some(json!({})),
        ),
        (
            M::GET,
            "/steps/loyalty-points/state/customer:c-1".into(),
            "steps:read",
            None,
        ),
        (M::GET, "/inventory/WIDGET-1".into(), "inventory:read", None),
        (
            M::PUT,
            "/inventory/WIDGET-1".into(),
            "inventory:write",
            Some(json!({ "warehouse": "east", "onHand": 5 })),
        ),
        (
            M::POST,
            "/plugins/guardrail".into(),
            "plugins:write",
            Some(json!({})),
        ),
        (
            M::GET,
            "/plugins/guardrail/versions".into(),
            "plugins:read",
            None,
        ),
        (
            M::GET,
            "/plugins/guardrail/stats".into(),
            "plugins:read",
            None,
        ),
        (
            M::GET,
            "/plugins/guardrail/logs".into(),
            "plugins:read",
            None,
        ),
        (
            M::GET,
            "/plugins/guardrail/calls".into(),
            "plugins:read",
            None,
        ),
    ]
}

const SCOPES: [&str; 10] = [
    "orders:read",
    "orders:write",
    "inventory:read",
    "inventory:write",
    "plugins:read",
    "plugins:write",
    "fulfilment:write",
    "webhooks:read",
    "webhooks:write",
    "steps:read",
];

async fn every_endpoint_needs_its_scope_and_keys_rotate_and_revoke(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;
    let admin = Admin::new(&srv.url);
    let placed = srv
        .api("acme")
        .place(&order("c-1", "WIDGET-1", 1, "tok_visa"))
        .await;

    for (method, path, scope, body) in endpoints(&placed) {
        let others: Vec<&str> = SCOPES.iter().copied().filter(|s| *s != scope).collect();
        let lacking = Api::new(&srv.url, "acme", &admin.key("acme", &others).await);
        let r = lacking
            .send(method.clone(), &path, body.as_ref(), &[])
            .await;
        assert_eq!(r.status, 403, "{method} {path} without {scope}: {}", r.body);
        assert_eq!(
            r.body["error"]["code"], "INSUFFICIENT_SCOPE",
            "{method} {path}"
        );
        assert_eq!(
            r.body["error"]["details"]["requiredScope"], scope,
            "{method} {path}"
        );
        let holding = Api::new(&srv.url, "acme", &admin.key("acme", &[scope]).await);
        let r = holding
            .send(method.clone(), &path, body.as_ref(), &[])
            .await;
        assert!(
            r.status != 401 && r.status != 403,
            "{method} {path} with only {scope}: {} {}",
            r.status,
            r.body
        );
    }
    // A key of one tenant is nobody else's.
    let acme_key = admin.key("acme", &SCOPES).await;
    assert_eq!(
        Api::new(&srv.url, "globex", &acme_key)
            .get("/orders")
            .await
            .status,
        401
    );

    // Rotation: old and new both work during the grace period.
    let listed = admin.get("/tenants/acme/keys").await.body;
    let first = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| {
            k["scopes"].as_array().unwrap().len() == SCOPES.len()
                && k["createdBy"] == "bootstrap-admin"
        })
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        listed.to_string().find("secret").is_none(),
        "a listing shows no secret"
    );
    let rotated = admin
        .post(
            &format!("/tenants/acme/keys/{first}/rotate"),
            &json!({ "graceSeconds": 3600 }),
        )
        .await;
    assert_eq!(rotated.status, 201, "{}", rotated.body);
    let (second, second_secret) = (
        rotated.body["id"].as_str().unwrap().to_string(),
        rotated.body["secret"].as_str().unwrap().to_string(),
    );
    let old_api = Api::new(&srv.url, "acme", &acme_key);
    let new_api = Api::new(&srv.url, "acme", &second_secret);
    assert_eq!(old_api.get("/orders").await.status, 200);
    assert_eq!(new_api.get("/orders").await.status, 200);
    let twice = admin
        .post(&format!("/tenants/acme/keys/{first}/rotate"), &json!({}))
        .await;
    assert_eq!(twice.status, 409, "{}", twice.body);
    let bad_grace = admin
        .post(
            &format!("/tenants/acme/keys/{second}/rotate"),
            &json!({ "graceSeconds": -1 }),
        )
        .await;
    assert_eq!(field_of(&bad_grace), "graceSeconds", "{}", bad_grace.body);
    // No grace: the replaced key stops at once.
    let third = admin
        .post(
            &format!("/tenants/acme/keys/{second}/rotate"),
            &json!({ "graceSeconds": 0 }),
        )
        .await;
    let third_api = Api::new(&srv.url, "acme", third.body["secret"].as_str().unwrap());
    assert_eq!(new_api.get("/orders").await.status, 401);
    assert_eq!(third_api.get("/orders").await.status, 200);

    // Revoked: refused at once, and only once.
    let third_id = third.body["id"].as_str().unwrap();
    let revoked = admin
        .post(&format!("/tenants/acme/keys/{third_id}/revoke"), &json!({}))
        .await;
    assert_eq!(
        (revoked.status, revoked.body["status"].as_str()),
        (200, Some("REVOKED"))
    );
    assert_eq!(third_api.get("/orders").await.status, 401);
    assert_eq!(
        admin
            .post(&format!("/tenants/acme/keys/{third_id}/revoke"), &json!({}))
            .await
            .status,
        409
    );
    assert_eq!(
        admin
            .post("/tenants/acme/keys/key_nope/revoke", &json!({}))
            .await
            .status,
        404
    );
    let bad_name = admin
        .post(
            "/tenants/acme/keys",
            &json!({ "name": "nul\u{0}", "scopes": ["orders:read"] }),
        )
        .await;
    assert_eq!(field_of(&bad_name), "name", "{}", bad_name.body);
    let bad_scope = admin
        .post(
            "/tenants/acme/keys",
            &json!({ "name": "x", "scopes": ["orders:delete"] }),
        )
        .await;
    assert_eq!(field_of(&bad_scope), "scopes", "{}", bad_scope.body);

    // Last use is recorded (in batches: waited for).
    until("the old key's last use being recorded", || {
        let admin = admin.clone();
        let first = first.clone();
        async move {
            let keys = admin.get("/tenants/acme/keys").await.body;
            keys["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["id"] == first.as_str() && !k["lastUsedAt"].is_null())
        }
    })
    .await;
}
on_both_backends!(
    tenants_are_created_changed_and_suspended_at_run_time,
    every_endpoint_needs_its_scope_and_keys_rotate_and_revoke,
);
