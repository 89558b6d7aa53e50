//! Payment reconciliation against the sandbox provider, through the real
//! payment adapter's `payment-status`, on SQLite and on PostgreSQL.
// Tests draw their own seeds and ids; the clock rule is for product code.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{ADMIN_TOKEN, Db, Kind, Server, admin, order};

fn reconciliations(payments: &Value) -> Vec<Option<String>> {
    payments["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["reconciliation"].as_str().map(str::to_string))
        .collect()
}

/// An operator refunds part of one payment in the provider's dashboard,
/// behind the platform's back. The next round finds exactly that payment
/// different, records it in its history and the outbox once, and counts
/// it; an untouched payment matches; a declined one has nothing to look up.
async fn a_payment_changed_at_the_provider_is_a_mismatch(kind: Kind) {
    let db = Db::new(kind).await;
    // No periodic round during the test: the operator's "run now" decides when.
    let srv = Server::start_with_env(&db, &[("OMS_RECONCILE_INTERVAL_MS", "86400000")]).await;
    let api = srv.api("acme");
    let kept = api.place(&order("cust-1", "WIDGET-1", 1, "tok_visa")).await;
    let tampered = api.place(&order("cust-2", "WIDGET-1", 2, "tok_visa")).await;
    let declined = api
        .place(&order("cust-3", "WIDGET-1", 1, "tok_chargeDeclined"))
        .await;
    assert_eq!(api.settle(&kept).await["sagaState"], "COMPLETED");
    assert_eq!(api.settle(&tampered).await["sagaState"], "COMPLETED");
    assert_eq!(api.settle(&declined).await["sagaState"], "CANCELLED");

    let payments = api.get(&format!("/orders/{tampered}/payments")).await.body;
    let reference = payments["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "authorize")
        .unwrap()["providerReference"]
        .as_str()
        .unwrap()
        .to_string();
    let refund = reqwest::Client::new()
        .post(format!("{}/v1/refunds", srv.psp_url))
        .bearer_auth("sk_test_acme")
        .header("idempotency-key", "dashboard-refund-1")
        .json(&json!({ "payment_intent": reference, "amount": 500 }))
        .send()
        .await
        .unwrap();
    assert_eq!(refund.status(), 200);

    let (status, round) = admin(&srv, "/payments/reconcile", Some(json!({})), ADMIN_TOKEN).await;
    assert_eq!(status, 200, "{round}");
    assert_eq!(round["matched"], 1, "{round}");
    assert_eq!(round["mismatched"], 1, "{round}");
    assert_eq!(round["unverifiable"], 1, "{round}");

    let of = |id: String| {
        let api = api.clone();
        async move { reconciliations(&api.get(&format!("/orders/{id}/payments")).await.body) }
    };
    let matched = of(kept.clone()).await;
    assert!(!matched.is_empty());
    assert!(
        matched.iter().all(|r| r.as_deref() == Some("matched")),
        "{matched:?}"
    );
    let mismatched = of(tampered.clone()).await;
    assert!(
        mismatched.iter().all(|r| r.as_deref() == Some("mismatch")),
        "{mismatched:?}"
    );
    let nothing = of(declined.clone()).await;
    assert!(
        nothing.iter().all(|r| r.as_deref() == Some("no_reference")),
        "{nothing:?}"
    );

    let events = api.get(&format!("/orders/{tampered}/events")).await.body;
    let mismatch: Vec<&Value> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "payment.mismatch")
        .collect();
    assert_eq!(mismatch.len(), 1, "{events}");
    let data = &mismatch[0]["data"];
    assert_eq!(data["recorded"]["refunded"], 0, "{data}");
    assert_eq!(data["provider"]["refunded"], 500, "{data}");
    assert_eq!(data["provider"]["state"], "captured", "{data}");
    assert_eq!(srv.metric("payment_mismatches_total").await, 1);
    assert_eq!(srv.metric("payments_reconciled_total").await, 1);
    // The order itself is untouched: still confirmed, and still cancellable.
    let shown = api.get(&format!("/orders/{tampered}")).await.body;
    assert_eq!(shown["sagaState"], "COMPLETED", "{shown}");

    // Settled once: another round finds nothing to do and adds no event.
    let (_, again) = admin(&srv, "/payments/reconcile", Some(json!({})), ADMIN_TOKEN).await;
    assert_eq!(
        again,
        json!({ "matched": 0, "mismatched": 0, "unverifiable": 0, "deferred": 0, "notAtRest": 0 })
    );
    let events_after = api.get(&format!("/orders/{tampered}/events")).await.body;
    assert_eq!(events_after, events);
    assert_eq!(srv.metric("payment_mismatches_total").await, 1);
}

/// The periodic round runs by itself: an order's payments are matched
/// without anyone asking, and the saga's own later operations (a cancel's
/// refund) are reconciled in a later round.
async fn payments_are_reconciled_periodically(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start_with_env(&db, &[("OMS_RECONCILE_INTERVAL_MS", "50")]).await;
    let api = srv.api("globex");
    let id = api
        .place(&order("cust-1", "SPROCKET-9", 1, "tok_visa"))
        .await;
    assert_eq!(api.settle(&id).await["sagaState"], "COMPLETED");
    let all_matched = |want: usize| {
        let api = api.clone();
        let id = id.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let r = reconciliations(&api.get(&format!("/orders/{id}/payments")).await.body);
                if r.len() == want && r.iter().all(|r| r.as_deref() == Some("matched")) {
                    return;
                }
                assert!(Instant::now() < deadline, "not reconciled: {r:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    all_matched(2).await;
    let cancelled = api.post(&format!("/orders/{id}/cancel"), &json!({})).await;
    assert_eq!(cancelled.status, 202, "{}", cancelled.body);
    assert_eq!(api.settle(&id).await["sagaState"], "CANCELLED");
    all_matched(3).await;
    assert_eq!(srv.metric("payment_mismatches_total").await, 0);
}

/// When each of `ids`' payments was settled by reconciliation, read from
/// the database itself (the API shows the outcome, not its time): the
/// earliest `reconciled_at` per order, in ms, ascending.
async fn settled_at(db: &Db, ids: &[String]) -> Vec<i64> {
    use sqlx::Connection;
    let sql = "SELECT MIN(reconciled_at) FROM payments WHERE order_id = $1";
    let mut at = Vec::new();
    for id in ids {
        let t: Option<i64> = match db.kind {
            Kind::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
                sqlx::query_scalar(sql)
                    .bind(id)
                    .fetch_one(&mut c)
                    .await
                    .unwrap()
            }
            Kind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
                sqlx::query_scalar(sql)
                    .bind(id)
                    .fetch_one(&mut c)
                    .await
                    .unwrap()
            }
        };
        at.push(t.unwrap_or_else(|| panic!("{id} was never reconciled")));
    }
    at.sort_unstable();
    at
}

/// A periodic round spreads its orders over the interval, one every
/// interval/64, instead of settling them back to back: each settlement is
/// a flushed write transaction of its own, and a round's 64 in a row kept
/// the group-commit writer (and new orders) waiting (README, the twentieth
/// session). With an interval of 3.2 s, settlements are at least 50 ms
/// apart, whichever rounds they fall in; back to back they were a few ms.
async fn a_rounds_orders_are_spread_over_the_interval(kind: Kind) {
    let db = Db::new(kind).await;
    let srv = Server::start_with_env(&db, &[("OMS_RECONCILE_INTERVAL_MS", "3200")]).await;
    let api = srv.api("globex");
    let mut ids = Vec::new();
    for n in 0..4 {
        let id = api
            .place(&order(&format!("cust-{n}"), "SPROCKET-9", 1, "tok_visa"))
            .await;
        assert_eq!(api.settle(&id).await["sagaState"], "COMPLETED");
        ids.push(id);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let r = reconciliations(&api.get(&format!("/orders/{id}/payments")).await.body);
            if !r.is_empty() && r.iter().all(|r| r.as_deref() == Some("matched")) {
                break;
            }
            assert!(Instant::now() < deadline, "{id} not reconciled: {r:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let at = settled_at(&db, &ids).await;
    // 50 ms a gap; 2 ms for the wall clock's whole milliseconds against the
    // timer's.
    for pair in at.windows(2) {
        assert!(
            pair[1] - pair[0] >= 48,
            "settled too close together: {at:?}"
        );
    }
}

on_both_backends!(
    a_payment_changed_at_the_provider_is_a_mismatch,
    payments_are_reconciled_periodically,
    a_rounds_orders_are_spread_over_the_interval,
);
