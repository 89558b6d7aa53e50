//! Named operators with roles, audited, and operators' changes reaching a
//! second host, through the real binary.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use serde_json::json;
use std::time::Instant;
use support::admin::{Admin, manifest, until};
use support::{Api, Db, Kind, Server, order};

async fn operators_have_roles_and_every_change_is_audited(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;
    let boot = Admin::new(&srv.url);
    let made = boot
        .post("/operators", &json!({ "name": "vera", "role": "viewer" }))
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let vera = Admin::with_token(&srv.url, made.body["token"].as_str().unwrap());
    let made = boot
        .post("/operators", &json!({ "name": "ada", "role": "admin" }))
        .await;
    let ada = Admin::with_token(&srv.url, made.body["token"].as_str().unwrap());
    let dup = boot
        .post("/operators", &json!({ "name": "ada", "role": "viewer" }))
        .await;
    assert_eq!(dup.status, 409);
    let bad = boot
        .post(
            "/operators",
            &json!({ "name": "Ada Lovelace", "role": "root" }),
        )
        .await;
    assert_eq!(bad.status, 422);

    assert_eq!(vera.get("/whoami").await.body["role"], "viewer");
    let dlq = vera.get("/dlq").await;
    assert_eq!(
        (dlq.status, dlq.body["transport"].as_str()),
        (200, Some("in-process"))
    );
    assert_eq!(vera.get("/sagas").await.status, 200);
    assert_eq!(vera.get("/tenants").await.status, 200);
    for (path, body) in [
        ("/tenants/acme/suspend", json!({})),
        (
            "/tenants/acme/plugins/guardrail/activate",
            json!({ "version": 1 }),
        ),
        (
            "/tenants/acme/keys",
            json!({ "name": "x", "scopes": ["orders:read"] }),
        ),
        ("/operators", json!({ "name": "eve", "role": "admin" })),
        ("/payments/reconcile", json!({})),
    ] {
        let r = vera.post(path, &body).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (403, Some("ROLE_REQUIRED")),
            "{path}"
        );
    }
    assert_eq!(vera.get("/operators").await.status, 403);

    // Who did what, from where, when.
    assert_eq!(
        ada.post("/tenants/globex/suspend", &json!({})).await.status,
        200
    );
    let forwarded = ada
        .send(
            reqwest::Method::POST,
            "/tenants/globex/resume",
            Some(&json!({})),
            &[("x-forwarded-for", "203.0.113.9")],
        )
        .await;
    assert_eq!(forwarded.status, 200);
    let log = vera.get("/audit?tenant=globex").await.body;
    let entries = log["data"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{log}");
    assert_eq!(entries[0]["action"], "tenant.resume");
    assert_eq!(entries[0]["operator"], "ada");
    assert_eq!(entries[0]["source"], "203.0.113.9 via 127.0.0.1");
    assert_eq!(entries[1]["action"], "tenant.suspend");
    assert_eq!(entries[1]["source"], "127.0.0.1");
    let all = boot.get("/audit").await.body;
    let actions: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "tenant.resume",
            "tenant.suspend",
            "operator.create",
            "operator.create"
        ]
    );

    // Revoked: the token stops at once.
    assert_eq!(
        ada.post("/operators/vera/revoke", &json!({})).await.status,
        200
    );
    assert_eq!(vera.get("/sagas").await.status, 401);
    assert_eq!(
        ada.post("/operators/vera/revoke", &json!({})).await.status,
        409
    );
    assert_eq!(
        Admin::with_token(&srv.url, "nope")
            .get("/sagas")
            .await
            .status,
        401
    );
}

on_both_backends!(operators_have_roles_and_every_change_is_audited);

/// Two hosts on one PostgreSQL database: what an operator changes on one
/// is in force on the other without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_host_reaches_the_other() {
    let db = Db::new(Kind::Postgres).await;
    let a = Server::start(&db).await;
    let b = Server::start_with_psp(&db, &a.psp_url).await;
    let on_a = Admin::new(&a.url);
    assert_eq!(
        on_a.post("/tenants", &manifest("initech")).await.status,
        201
    );
    let key = on_a.key("initech", &["orders:read", "orders:write"]).await;
    let api_b = Api::new(&b.url, "initech", &key);
    let made = Instant::now();
    until("host b serving the new tenant's key", || {
        let api_b = api_b.clone();
        async move { api_b.get("/orders").await.status == 200 }
    })
    .await;
    // A figure for the README, not an assertion: the machine may be busy.
    eprintln!("host b took the new key after {:?}", made.elapsed());
    let placed = api_b.place(&order("c-1", "WIDGET-1", 1, "tok_visa")).await;
    assert_eq!(api_b.settle(&placed).await["status"], "CONFIRMED");
    assert_eq!(
        on_a.post("/tenants/initech/suspend", &json!({}))
            .await
            .status,
        200
    );
    let suspended = Instant::now();
    until("host b refusing the suspended tenant", || {
        let api_b = api_b.clone();
        async move { api_b.get("/orders").await.status == 403 }
    })
    .await;
    eprintln!(
        "host b refused the suspended tenant after {:?}",
        suspended.elapsed()
    );
}
