//! Tenant webhooks through the real binary on both databases, with a real
//! HTTP receiver that checks every signature as a tenant would (its own
//! HMAC, not the host's): endpoints registered (and refused where they
//! point at the platform's own network), every event delivered signed as a
//! CloudEvents body, in order per order, through an outage of the receiver
//! (retried, then delivered, nothing lost), the delivery log, a manual
//! redelivery, an endpoint that only fails disabled, tenant isolation.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Api, Db, Kind, Server, order};

/// What the receiver got: each request's body, in arrival order, once its
/// signature checked out.
#[derive(Default)]
struct Receiver {
    secret: Mutex<String>,
    down: AtomicBool,
    got: Mutex<Vec<Value>>,
    bad: Mutex<Vec<String>>,
}

impl Receiver {
    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
        let header = headers
            .get("oms-signature")
            .and_then(|v| v.to_str().ok())
            .ok_or("no OMS-Signature")?;
        let (t, v1) = header
            .split_once(',')
            .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
            .ok_or(format!("malformed signature {header}"))?;
        let secret = self.secret.lock().unwrap().clone();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(t.as_bytes());
        mac.update(b".");
        mac.update(body);
        let want = hex::encode(mac.finalize().into_bytes());
        if want != v1 {
            return Err(format!("signature {v1} is not {want}"));
        }
        let age = chrono::Utc::now().timestamp() - t.parse::<i64>().map_err(|e| e.to_string())?;
        if !(-300..=300).contains(&age) {
            return Err(format!("timestamp {t} is {age} s off"));
        }
        Ok(())
    }

    fn events(&self) -> Vec<Value> {
        self.got.lock().unwrap().clone()
    }
}

/// Starts the receiver on loopback; its URL.
async fn receiver() -> (Arc<Receiver>, String) {
    let r = Arc::new(Receiver::default());
    let state = r.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let r = state.clone();
            async move {
                if r.down.load(Ordering::SeqCst) {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                match r.verify(&headers, &body) {
                    Ok(()) => {
                        r.got
                            .lock()
                            .unwrap()
                            .push(serde_json::from_slice(&body).unwrap());
                        StatusCode::NO_CONTENT
                    }
                    Err(why) => {
                        r.bad.lock().unwrap().push(why);
                        StatusCode::BAD_REQUEST
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (r, url)
}

/// Waits for `done`, polling (never a fixed sleep as the check).
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Per order, the types received, in arrival order.
fn per_order(events: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events {
        by.entry(e["subject"].as_str().unwrap().into())
            .or_default()
            .push(e["type"].as_str().unwrap().into());
    }
    by
}

fn code(r: &support::Response) -> (u16, Option<&str>) {
    (r.status, r.body["error"]["code"].as_str())
}

async fn events_arrive_signed_in_order_through_an_outage(kind: Kind) {
    let db = Db::new(kind).await;
    let env = [
        ("OMS_WEBHOOKS_ALLOW", "loopback"),
        ("OMS_WEBHOOK_RETRY_BASE_MS", "200"),
        ("OMS_WEBHOOK_DISABLE_AFTER_MS", "2000"),
    ];
    let srv = Server::start_with_env(&db, &env).await;
    let api = srv.api("acme");
    let (rx, url) = receiver().await;

    // Refused: where the operator did not allow, and malformed.
    for (body, want) in [
        (
            json!({ "url": "http://10.0.0.1/hook", "eventTypes": ["*"] }),
            "WEBHOOK_URL_NOT_ALLOWED",
        ),
        (
            json!({ "url": "http://169.254.169.254/latest", "eventTypes": ["*"] }),
            "WEBHOOK_URL_NOT_ALLOWED",
        ),
        (
            json!({ "url": "http://[fd00::1]/", "eventTypes": ["*"] }),
            "WEBHOOK_URL_NOT_ALLOWED",
        ),
        (
            json!({ "url": "ftp://example.com/", "eventTypes": ["*"] }),
            "VALIDATION_FAILED",
        ),
        (
            json!({ "url": "http://u:p@example.com/", "eventTypes": ["*"] }),
            "VALIDATION_FAILED",
        ),
        (
            json!({ "url": url, "eventTypes": ["order.nope"] }),
            "VALIDATION_FAILED",
        ),
        (json!({ "url": url, "eventTypes": [] }), "VALIDATION_FAILED"),
    ] {
        let r = api.post("/webhooks", &body).await;
        assert_eq!(code(&r), (422, Some(want)), "{body}: {}", r.body);
    }

    let r = api
        .post(
            "/webhooks",
            &json!({ "url": url, "eventTypes": ["*"], "description": "erp" }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let hook = r.body["id"].as_str().unwrap().to_string();
    let secret = r.body["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    *rx.secret.lock().unwrap() = secret;
    let listed = api.get("/webhooks").await.body;
    assert_eq!(listed["data"][0]["id"], hook.as_str());
    assert!(
        listed["data"][0].get("secret").is_none(),
        "the secret is shown once: {listed}"
    );

    // Orders: each one's events arrive, signed, created before confirmed.
    let mut orders = Vec::new();
    for i in 0..3 {
        let id = api
            .place(&order(&format!("c-wh-{i}"), "WIDGET-1", 1, "tok_visa"))
            .await;
        orders.push(id);
    }
    let confirmed = |rx: &Receiver, ids: &[String]| {
        let by = per_order(&rx.events());
        ids.iter().all(|id| {
            by.get(id)
                .is_some_and(|t| t.iter().any(|x| x == "order.confirmed"))
        })
    };
    until("the first orders' events", || confirmed(&rx, &orders)).await;
    let first = rx.events();
    let e = first
        .iter()
        .find(|e| e["type"] == "order.confirmed")
        .unwrap();
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["source"], "/tenants/acme");
    assert!(e["id"].as_str().unwrap().starts_with("evt_"), "{e}");
    assert!(
        e["time"].is_string() && e["data"]["status"] == "CONFIRMED",
        "{e}"
    );
    let paid = first
        .iter()
        .find(|e| e["type"] == "payment.captured")
        .unwrap();
    assert_eq!(paid["data"]["amount"], 1999, "{paid}");

    // The receiver is down: deliveries fail and are tried again, in order.
    rx.down.store(true, Ordering::SeqCst);
    for i in 3..6 {
        let id = api
            .place(&order(&format!("c-wh-{i}"), "WIDGET-1", 1, "tok_visa"))
            .await;
        orders.push(id);
    }
    let log_path = format!("/webhooks/{hook}/deliveries");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = api.get(&log_path).await.body;
        let retried = log["data"].as_array().unwrap().iter().any(|d| {
            d["status"] == "pending"
                && d["attempts"].as_i64().unwrap() >= 2
                && d["lastStatus"] == 503
        });
        if retried {
            break;
        }
        assert!(Instant::now() < deadline, "no delivery was retried: {log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rx.down.store(false, Ordering::SeqCst);
    // If the outage outlasted the endpoint's patience it was disabled: the
    // tenant enables it again, and what waited goes out.
    let r = api
        .post(&format!("/webhooks/{hook}/enable"), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    until("every order's events after the outage", || {
        confirmed(&rx, &orders)
    })
    .await;
    assert!(
        rx.bad.lock().unwrap().is_empty(),
        "{:?}",
        rx.bad.lock().unwrap()
    );

    // In order per order (placed, paid, sent to the warehouse, confirmed);
    // every event of every order at least once.
    for (id, types) in per_order(&rx.events()) {
        let at = |kind: &str| types.iter().position(|t| t == kind);
        let (created, authorized, captured, requested, confirmed) = (
            at("order.created"),
            at("payment.authorized"),
            at("payment.captured"),
            at("fulfilment.requested"),
            at("order.confirmed"),
        );
        assert!(
            created.is_some()
                && created < authorized
                && authorized < captured
                && captured < requested
                && requested < confirmed,
            "{id}: {types:?}"
        );
        let history = api.get(&format!("/orders/{id}/events")).await.body;
        for kind in ["order.created", "order.confirmed"] {
            assert!(history.to_string().contains(kind));
        }
    }
    let log = api.get(&log_path).await.body;
    let data = log["data"].as_array().unwrap();
    assert!(
        data.iter()
            .any(|d| d["status"] == "delivered" && d["attempts"].as_i64().unwrap() >= 2),
        "{log}"
    );

    // Sent again by hand: the same event id arrives once more.
    let one = data
        .iter()
        .find(|d| d["eventType"] == "order.confirmed")
        .unwrap();
    let event = one["eventId"].as_str().unwrap().to_string();
    let seen = |rx: &Receiver| {
        rx.events()
            .iter()
            .filter(|e| e["id"] == event.as_str())
            .count()
    };
    let before = seen(&rx);
    let r = api
        .post(
            &format!("{log_path}/{}/redeliver", one["id"].as_str().unwrap()),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    until("the redelivery", || seen(&rx) > before).await;

    // An endpoint that only fails is disabled after its failures last.
    let r = api
        .post(
            "/webhooks",
            &json!({ "url": "http://127.0.0.1:9/dead", "eventTypes": ["order.created"] }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let dead = r.body["id"].as_str().unwrap().to_string();
    api.place(&order("c-wh-dead", "WIDGET-1", 1, "tok_visa"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = api.get(&format!("/webhooks/{dead}")).await.body;
        if d["status"] == "disabled" {
            assert!(
                d["disabledReason"].as_str().unwrap().contains("failed"),
                "{d}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never disabled: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Another tenant sees none of it; the right scope is needed.
    let globex = srv.api("globex");
    assert_eq!(
        code(&globex.get(&format!("/webhooks/{hook}")).await),
        (404, Some("NOT_FOUND"))
    );
    assert_eq!(globex.get("/webhooks").await.body["data"], json!([]));
    let r = globex
        .send(
            reqwest::Method::DELETE,
            &format!("/webhooks/{hook}"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 404);
    let r = api
        .send(
            reqwest::Method::DELETE,
            &format!("/webhooks/{dead}"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(api.get(&format!("/webhooks/{dead}")).await.status, 404);
}

/// Without the operator's leave, a name that resolves to loopback is refused too.
async fn names_that_resolve_to_loopback_are_refused(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start(&db).await;
    let api: Api = srv.api("acme");
    for url in [
        "http://localhost:8080/hook",
        "http://127.0.0.1/hook",
        "http://[::1]/hook",
    ] {
        let r = api
            .post("/webhooks", &json!({ "url": url, "eventTypes": ["*"] }))
            .await;
        assert_eq!(
            code(&r),
            (422, Some("WEBHOOK_URL_NOT_ALLOWED")),
            "{url}: {}",
            r.body
        );
    }
}

on_both_backends!(
    events_arrive_signed_in_order_through_an_outage,
    names_that_resolve_to_loopback_are_refused
);
