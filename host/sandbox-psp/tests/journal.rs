//! The provider remembers across restarts: what it answered before a restart
//! it answers the same after, and its ledger is whole.
#![allow(clippy::unwrap_used)]

use oms_sandbox_psp::{Sandbox, journal};
use serde_json::{Value, json};

const KEY: &str = "sk_test_journal";

async fn serve(sandbox: Sandbox) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, sandbox.router()).await });
    url
}

async fn post(url: &str, path: &str, key: &str, body: Value) -> (u16, Value, bool) {
    let r = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .bearer_auth(KEY)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let replayed = r.headers().contains_key("idempotent-replayed");
    (r.status().as_u16(), r.json().await.unwrap(), replayed)
}

async fn get(url: &str, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{url}{path}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn intents_answers_and_ledger_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = serve(Sandbox::open(dir.path()).unwrap()).await;
    let auth = json!({"amount": 1250, "currency": "EUR", "payment_method": "tok_visa",
                      "metadata": {"order_id": "ord_1"}});
    let (status, intent, _) = post(&url, "/v1/payment_intents", "o1:authorize", auth.clone()).await;
    assert_eq!(status, 200);
    let id = intent["id"].as_str().unwrap().to_string();
    let capture = format!("/v1/payment_intents/{id}/capture");
    let (status, charge, _) = post(&url, &capture, "o1:capture", json!({})).await;
    assert_eq!(status, 200);
    let (status, _, _) = post(
        &url,
        "/v1/refunds",
        "o1:refund",
        json!({"payment_intent": id, "amount": 250}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, ledger_before) = get(&url, "/v1/ledger").await;

    // A second provider on the same directory: the process after a restart.
    let url = serve(Sandbox::open(dir.path()).unwrap()).await;
    let (status, shown) = get(&url, &format!("/v1/payment_intents/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(shown["status"], "succeeded");
    assert_eq!(shown["amount_refunded"], 250);
    // The same key answers the same, performing nothing.
    let (status, again, replayed) = post(&url, &capture, "o1:capture", json!({})).await;
    assert_eq!((status, replayed), (200, true));
    assert_eq!(again, charge);
    let (_, ledger_after) = get(&url, "/v1/ledger").await;
    assert_eq!(ledger_after, ledger_before);
    assert_eq!(ledger_after["data"].as_array().unwrap().len(), 3);
    // What was refunded is remembered: only the rest can still be refunded.
    let (status, body, _) = post(
        &url,
        "/v1/refunds",
        "o1:refund-2",
        json!({"payment_intent": id, "amount": 1001}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("amount_invalid"))
    );
}

#[tokio::test]
async fn a_torn_last_line_is_dropped_and_a_torn_middle_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = serve(Sandbox::open(dir.path()).unwrap()).await;
    let auth = json!({"amount": 500, "currency": "EUR", "payment_method": "tok_visa"});
    let (status, intent, _) = post(&url, "/v1/payment_intents", "a", auth).await;
    assert_eq!(status, 200);
    let path = dir.path().join(journal::FILE);
    // A crash in the middle of writing the next operation's line.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"kind\":\"ledger\",\"seq\":");
    std::fs::write(&path, &text).unwrap();
    let url = serve(Sandbox::open(dir.path()).unwrap()).await;
    let (status, _) = get(
        &url,
        &format!("/v1/payment_intents/{}", intent["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(status, 200);
    // Damage before the end is not a crash's doing: refuse to start.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("garbage\n{text}")).unwrap();
    let err = Sandbox::open(dir.path())
        .err()
        .expect("a damaged journal is refused");
    assert!(err.to_string().contains("line 1"), "{err}");
}

/// `tok_flaky` fails the first two attempts of each operation, counted
/// across restarts: a saga whose provider restarted between its attempts
/// must not see two more failures than the card promises (a budget of four
/// attempts at a void would otherwise run out and leave the saga STUCK).
#[tokio::test]
async fn a_flaky_cards_attempts_are_counted_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = serve(Sandbox::open(dir.path()).unwrap()).await;
    let auth = json!({"amount": 900, "currency": "USD", "payment_method": "tok_flaky",
                      "metadata": {"order_id": "ord_f"}});
    let (status, _, _) = post(&url, "/v1/payment_intents", "f:authorize", auth.clone()).await;
    assert_eq!(status, 503, "first attempt");
    let url = serve(Sandbox::open(dir.path()).unwrap()).await;
    let (status, _, _) = post(&url, "/v1/payment_intents", "f:authorize", auth.clone()).await;
    assert_eq!(status, 503, "second attempt, after a restart");
    let url = serve(Sandbox::open(dir.path()).unwrap()).await;
    let (status, intent, _) = post(&url, "/v1/payment_intents", "f:authorize", auth).await;
    assert_eq!(status, 200, "third attempt succeeds: {intent}");
}
