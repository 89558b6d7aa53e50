//! Each extension point's failure policy, with the real demo components made
//! to trap by a fuel budget far too small to run them: a guardrail that
//! fails rejects (fail closed), a fraud check that fails sends the order to
//! review, a payment plugin that fails is a transient error (retried, then
//! compensated), a compensation policy that fails is replaced by the default.
// Tests draw their own seeds and ids; the clock rule is for product code.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use serde_json::Value;
use support::{Db, Kind, Server, order};

const STEPS: &str = r#"steps = ["validate", "fraud-check", "reserve-inventory", "authorize-payment", "capture-payment", "request-fulfilment"]"#;

/// A manifest whose `starved` slot gets 1,000 units of fuel.
fn manifest(id: &str, starved: &str) -> String {
    let slot = |name: &str, component: &str, extra: &str| {
        let fuel = if name == starved { "fuel = 1000\n" } else { "" };
        format!("[plugins.{name}]\ncomponent = \"builtin:{component}\"\n{fuel}{extra}\n")
    };
    format!(
        "id = \"{id}\"\nname = \"{id}\"\ndev_api_keys = [\"{id}-dev-key\"]\n\n[saga]\n{STEPS}\n\n{}{}{}{}\n[[demo_stock]]\nsku = \"WIDGET-1\"\nwarehouse = \"main\"\non_hand = 100\n",
        slot("guardrail", "guardrail-limits", ""),
        slot("fraud-check", "fraud-rules", ""),
        slot(
            "payment-provider",
            "payment-sandbox",
            "allowed_origins = [\"{{sandbox_psp}}\"]\nsettings = { base_url = \"{{sandbox_psp}}\" }\n"
        ),
        slot(
            "compensation-policy",
            "compensation-default",
            "settings = { max_attempts = \"2\", base_delay_ms = \"10\" }\n"
        ),
    )
}

fn events_of_type<'a>(events: &'a Value, kind: &str) -> Vec<&'a Value> {
    events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind)
        .collect()
}

async fn each_slot_fails_by_its_policy(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    for (id, starved) in [
        ("closed", "guardrail"),
        ("review", "fraud-check"),
        ("nopay", "payment-provider"),
        ("nopolicy", "compensation-policy"),
    ] {
        std::fs::write(dir.path().join(format!("{id}.toml")), manifest(id, starved)).unwrap();
    }
    let db = Db::new(kind).await;
    let srv = Server::start_with_tenants(&db, dir.path()).await;

    // Guardrail: fail closed.
    let api = srv.api("closed");
    let id = api.place(&order("c", "WIDGET-1", 1, "tok_visa")).await;
    let done = api.settle(&id).await;
    assert_eq!(done["status"], "REJECTED", "{done}");
    assert_eq!(done["violations"][0]["code"], "GUARDRAIL_UNAVAILABLE");
    let events = api.get(&format!("/orders/{id}/events")).await.body;
    assert_eq!(
        events_of_type(&events, "step.rejected")[0]["data"]["pluginError"]["code"],
        "PLUGIN_OUT_OF_FUEL"
    );

    // Fraud check: review, which this tenant accepts.
    let api = srv.api("review");
    let id = api.place(&order("c", "WIDGET-1", 1, "tok_visa")).await;
    let done = api.settle(&id).await;
    assert_eq!(done["status"], "CONFIRMED", "{done}");
    let events = api.get(&format!("/orders/{id}/events")).await.body;
    let fraud = events_of_type(&events, "step.succeeded")
        .into_iter()
        .find(|e| e["data"]["step"] == "fraud-check")
        .unwrap();
    assert_eq!(fraud["data"]["fraud"]["decision"], "review");

    // Payment: a transient error, retried, then compensated.
    let api = srv.api("nopay");
    let id = api.place(&order("c", "WIDGET-1", 3, "tok_visa")).await;
    let done = api.settle(&id).await;
    assert_eq!(done["status"], "CANCELLED", "{done}");
    assert!(
        done["cancellationReason"]
            .as_str()
            .unwrap()
            .contains("PLUGIN_OUT_OF_FUEL"),
        "{done}"
    );
    assert_eq!(
        done["saga"]["compensated"],
        serde_json::json!(["release-inventory"])
    );
    let inv = api.get("/inventory/WIDGET-1").await.body;
    assert_eq!(inv["warehouses"][0]["reserved"], 0);
    let events = api.get(&format!("/orders/{id}/events")).await.body;
    assert_eq!(
        events_of_type(&events, "step.failed").len(),
        2,
        "policy allows 2 attempts"
    );

    // Compensation policy: the platform's default plan undoes what was done.
    let api = srv.api("nopolicy");
    let id = api
        .place(&order("c", "WIDGET-1", 2, "tok_chargeDeclined"))
        .await;
    let done = api.settle(&id).await;
    assert_eq!(done["status"], "CANCELLED", "{done}");
    assert_eq!(
        done["saga"]["compensated"],
        serde_json::json!(["release-inventory"])
    );
    let events = api.get(&format!("/orders/{id}/events")).await.body;
    assert!(events_of_type(&events, "step.failed")[0]["data"]["policyError"].is_string());

    assert!(srv.metric("plugin_failures_total").await >= 4);
    assert_eq!(srv.metric("illegal_transitions_total").await, 0);
}

on_both_backends!(each_slot_fails_by_its_policy);

async fn a_tenant_over_its_rate_limit_gets_429(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let mut m = manifest("tiny", "none");
    m = m.replacen(
        "[saga]",
        "[limits]\nrequests_per_second = 1\nburst = 3\n\n[saga]",
        1,
    );
    std::fs::write(dir.path().join("tiny.toml"), m).unwrap();
    let db = Db::new(kind).await;
    let srv = Server::start_with_tenants(&db, dir.path()).await;
    let api = srv.api("tiny");
    let statuses: Vec<u16> = futures_statuses(&api).await;
    assert_eq!(&statuses[..3], &[200, 200, 200]);
    assert_eq!(statuses[3], 429);
    let r = api.get("/orders").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body["error"]["code"], "RATE_LIMITED");
    assert_eq!(r.headers["retry-after"], "1");

    // Retry-After is the limiter's own wait: on a plan of six a minute the
    // next request is admitted some 10 s after the burst is spent.
    let dir = tempfile::tempdir().unwrap();
    let m = manifest("slow", "none").replacen(
        "[saga]",
        "[limits]\nrequests_per_minute = 6\nburst = 1\n\n[saga]",
        1,
    );
    std::fs::write(dir.path().join("slow.toml"), m).unwrap();
    let db = Db::new(kind).await;
    let srv = Server::start_with_tenants(&db, dir.path()).await;
    let api = srv.api("slow");
    assert_eq!(api.get("/orders").await.status, 200);
    let r = api.get("/orders").await;
    assert_eq!(r.status, 429);
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((2..=10).contains(&wait), "Retry-After {wait}");
}

async fn futures_statuses(api: &support::Api) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..4 {
        out.push(api.get("/orders").await.status);
    }
    out
}

on_both_backends!(a_tenant_over_its_rate_limit_gets_429);

/// The `oms_circuit_breaker_*` sample for acme's provider, if reported.
async fn breaker_metric(srv: &Server, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", srv.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| {
            l.starts_with(&format!("oms_circuit_breaker_{name}{{")) && l.contains("tenant=\"acme\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A provider outage of captures alone: after the captures of several
/// orders fail, acme's capture breaker opens and the other captures are
/// postponed, not tried (each postponement in the order's events, no retry
/// spent), while the authorizations of the orders placed meanwhile still
/// go through (with one breaker for both operations, each answered
/// authorization reset the captures' run of failing orders, and the first
/// order's captures could use up their attempts before it opened); once
/// the outage is over a probe closes it and every order is confirmed, none
/// having used up its retries.
async fn a_provider_outage_opens_the_circuit_and_postpones_payments(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;
    let http = reqwest::Client::new();
    let outage = |ops: Value| {
        http.post(format!("{}/v1/outage", srv.psp_url))
            .bearer_auth(oms_sandbox_psp::DEFAULT_OPERATOR_KEY)
            .json(&serde_json::json!({ "operations": ops }))
            .send()
    };
    assert_eq!(
        outage(serde_json::json!(["capture"]))
            .await
            .unwrap()
            .status(),
        200
    );
    let api = srv.api("acme");
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(
            api.place(&order(&format!("c-breaker-{n}"), "WIDGET-1", 1, "tok_visa"))
                .await,
        );
    }
    // Wait for the condition: the breaker open and most orders postponed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut postponed = 0;
        for id in &ids {
            let events = api.get(&format!("/orders/{id}/events")).await.body;
            postponed += usize::from(!events_of_type(&events, "step.postponed").is_empty());
        }
        if postponed >= 3 && breaker_metric(&srv, "opened_total").await >= Some(1.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the breaker never opened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(outage(serde_json::json!([])).await.unwrap().status(), 200);

    for id in &ids {
        let done = api.settle(id).await;
        assert_eq!(done["status"], "CONFIRMED", "{done}");
        let events = api.get(&format!("/orders/{id}/events")).await.body;
        // acme's policy allows 5 attempts: the outage did not use them up.
        let failed = events_of_type(&events, "step.failed").len();
        assert!(failed < 5, "{failed} failed attempts: {events}");
        for e in events_of_type(&events, "step.postponed") {
            assert!(
                e["data"]["reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("PAYMENT_CIRCUIT_OPEN"),
                "{e}"
            );
            assert!(e["data"]["delayMs"].as_u64().unwrap() > 0, "{e}");
        }
    }
    assert_eq!(
        breaker_metric(&srv, "state").await,
        Some(0.0),
        "closed again"
    );
}

on_both_backends!(a_provider_outage_opens_the_circuit_and_postpones_payments);
