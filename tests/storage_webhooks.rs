//! The storage contract for webhooks, each test written once and run on
//! SQLite and PostgreSQL: deliveries written when the relay completes the
//! outbox (only for enabled endpoints of the event's tenant that want its
//! type), once; only the oldest pending delivery of an endpoint and order is
//! due; a lease taken once; attempts recorded with the endpoint's run of
//! failures; the log, redelivery, and deletion.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use oms_domain::{OrderId, TenantId};
use oms_store::{Attempt, OutboxMessage, Store, StoreError, WebhookEndpoint, Webhooks};
use serde_json::json;
use support::stores::*;
use support::{Db, Kind};

fn endpoint(tenant: &str, id: &str, types: &str) -> WebhookEndpoint {
    WebhookEndpoint {
        tenant_id: tenant.into(),
        id: id.into(),
        url: "https://hooks.example.com/oms".into(),
        event_types: types.into(),
        secret: "whsec_x".into(),
        description: None,
        status: "enabled".into(),
        disabled_reason: None,
        failing_since: None,
        created_at: 1,
        updated_at: 1,
    }
}

/// Commits events `types` of a new order of acme, and relays them.
async fn publish(store: &dyn Store, types: &[&str]) -> OrderId {
    let id = new_order(store, "c1", 1_000, 500).await;
    let mut t = effects(&id, 0, None);
    t.outbox = types
        .iter()
        .enumerate()
        .map(|(i, ty)| OutboxMessage {
            id: format!("evt_{id}_{i}"),
            topic: "oms.order-events.v1".into(),
            event_type: ty.to_string(),
            payload: json!({ "eventId": format!("evt_{id}_{i}"), "type": ty, "data": { "i": i } }),
            available_at: None,
        })
        .collect();
    // Commands are never delivered to webhooks.
    t.outbox.push(OutboxMessage {
        id: format!("cmd_{id}"),
        topic: "oms.saga-commands.v1".into(),
        event_type: "saga.command".into(),
        payload: json!({}),
        available_at: None,
    });
    store.commit_transition(&t).await.unwrap();
    loop {
        let claim = store.claim_outbox(2_000, 100).await.unwrap();
        if claim.records.is_empty() {
            break;
        }
        store.complete(claim, 2_000).await.unwrap();
    }
    id
}

async fn deliveries_follow_the_outbox_once_and_in_order(kind: Kind) {
    let db = Db::new(kind).await;
    let store = oms_store::SqlStore::connect(&db.url).await.unwrap();
    let acme = tenant();
    store
        .create_webhook(&endpoint("acme", "we_all", "*"), 16)
        .await
        .unwrap();
    store
        .create_webhook(
            &endpoint("acme", "we_some", "order.confirmed,order.cancelled"),
            16,
        )
        .await
        .unwrap();
    let mut off = endpoint("acme", "we_off", "*");
    off.status = "disabled".into();
    store.create_webhook(&off, 16).await.unwrap();
    store
        .create_webhook(&endpoint("globex", "we_theirs", "*"), 16)
        .await
        .unwrap();
    assert_eq!(store.webhooks(&acme).await.unwrap().len(), 3);
    let globex = TenantId::parse("globex").unwrap();
    assert!(matches!(
        store.webhook(&globex, "we_all").await,
        Err(StoreError::NotFound)
    ));

    let order = publish(
        &store,
        &["order.created", "order.confirmed", "order.shipped"],
    )
    .await;
    let all = store.deliveries(&acme, "we_all", 100).await.unwrap();
    assert_eq!(all.len(), 3, "every event, no command: {all:?}");
    assert!(
        all.iter()
            .all(|d| d.status == "pending" && d.order_id == order.as_str())
    );
    let some = store.deliveries(&acme, "we_some", 100).await.unwrap();
    let types: Vec<&str> = some.iter().map(|d| d.event_type.as_str()).collect();
    assert_eq!(
        types,
        vec!["order.confirmed"],
        "only the types it asked for"
    );
    assert!(
        store
            .deliveries(&acme, "we_off", 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .deliveries(&globex, "we_theirs", 100)
            .await
            .unwrap()
            .is_empty()
    );

    // Due: per endpoint and order, the oldest pending one only.
    let due = store.due_deliveries(2_000, 100).await.unwrap();
    let heads: Vec<(&str, &str)> = due
        .iter()
        .map(|d| (d.endpoint_id.as_str(), d.event_type.as_str()))
        .collect();
    assert_eq!(due.len(), 2, "{heads:?}");
    assert!(heads.contains(&("we_all", "order.created")));
    assert!(heads.contains(&("we_some", "order.confirmed")));
    let head = due
        .iter()
        .find(|d| d.endpoint_id == "we_all")
        .unwrap()
        .clone();

    // A lease is taken once.
    assert!(
        store
            .lease_delivery(&head.id, head.next_attempt_at, 9_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .lease_delivery(&head.id, head.next_attempt_at, 9_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .due_deliveries(2_000, 100)
            .await
            .unwrap()
            .iter()
            .all(|d| d.id != head.id)
    );

    // A failure to retry at 5,000 keeps the order's later events waiting.
    let failed = Attempt::Failed {
        status: Some(503),
        error: "down".into(),
        retry_at: Some(5_000),
    };
    store.record_attempt(&head, &failed, 3_000).await.unwrap();
    let ep = store.webhook(&acme, "we_all").await.unwrap();
    assert_eq!(ep.failing_since, Some(3_000));
    assert!(
        store
            .due_deliveries(4_000, 100)
            .await
            .unwrap()
            .iter()
            .all(|d| d.endpoint_id != "we_all")
    );
    let again = store.due_deliveries(5_000, 100).await.unwrap();
    let retried = again.iter().find(|d| d.endpoint_id == "we_all").unwrap();
    assert_eq!(
        (retried.id.as_str(), retried.attempts),
        (head.id.as_str(), 1)
    );
    assert_eq!(retried.last_status, Some(503));

    // Delivered: the next event of the order is due; the run of failures ends.
    store
        .record_attempt(retried, &Attempt::Delivered { status: 200 }, 5_100)
        .await
        .unwrap();
    assert_eq!(
        store.webhook(&acme, "we_all").await.unwrap().failing_since,
        None
    );
    let next = store.due_deliveries(5_100, 100).await.unwrap();
    assert!(
        next.iter()
            .any(|d| d.endpoint_id == "we_all" && d.event_type == "order.confirmed")
    );

    let log = store.deliveries(&acme, "we_all", 100).await.unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(log[2].status, "delivered", "newest first: {log:?}");
    assert_eq!(log[2].delivered_at, Some(5_100));

    // Given up: no retry time.
    let given_up = Attempt::Failed {
        status: None,
        error: "refused".into(),
        retry_at: None,
    };
    let second = next.iter().find(|d| d.endpoint_id == "we_all").unwrap();
    store
        .record_attempt(second, &given_up, 6_000)
        .await
        .unwrap();
    let log = store.deliveries(&acme, "we_all", 100).await.unwrap();
    assert_eq!(log[1].status, "failed");
    // Redelivered by hand: pending and due at once.
    store
        .redeliver(&acme, "we_all", &log[1].id, 7_000)
        .await
        .unwrap();
    let due = store.due_deliveries(7_000, 100).await.unwrap();
    assert!(due.iter().any(|d| d.id == log[1].id));
    assert!(matches!(
        store.redeliver(&globex, "we_all", &log[1].id, 7_000).await,
        Err(StoreError::NotFound)
    ));

    // Pruning takes finished deliveries of old events only.
    assert_eq!(store.prune_deliveries(1_000, 100).await.unwrap(), 0);
    let before = store.deliveries(&acme, "we_some", 100).await.unwrap();
    assert_eq!(
        store.prune_deliveries(10_000, 100).await.unwrap(),
        1,
        "the one delivered"
    );
    assert_eq!(
        store.deliveries(&acme, "we_all", 100).await.unwrap().len(),
        2
    );
    assert_eq!(
        store.deliveries(&acme, "we_some", 100).await.unwrap(),
        before,
        "pending stays"
    );

    // Disabled, none is due; enabled again, they are.
    store
        .set_webhook_status(&acme, "we_all", "disabled", Some("failing"), 8_000)
        .await
        .unwrap();
    assert!(
        store
            .due_deliveries(9_000, 100)
            .await
            .unwrap()
            .iter()
            .all(|d| d.endpoint_id != "we_all")
    );
    let ep = store
        .set_webhook_status(&acme, "we_all", "enabled", None, 8_000)
        .await
        .unwrap();
    assert_eq!((ep.status.as_str(), ep.failing_since), ("enabled", None));
    assert!(
        store
            .due_deliveries(9_000, 100)
            .await
            .unwrap()
            .iter()
            .any(|d| d.endpoint_id == "we_all")
    );

    // Deleted with its deliveries; another tenant's is not found.
    assert!(matches!(
        store.delete_webhook(&globex, "we_all").await,
        Err(StoreError::NotFound)
    ));
    store.delete_webhook(&acme, "we_all").await.unwrap();
    assert!(
        store
            .deliveries(&acme, "we_all", 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.webhook(&acme, "we_all").await,
        Err(StoreError::NotFound)
    ));
}

/// Deliveries keep their order's publication order across relay rounds
/// (SQLite reuses an emptied outbox's row ids); and on PostgreSQL, where
/// relays publish an order's topics independently, a delivery waits while
/// an earlier event of its order is still in the outbox.
async fn deliveries_keep_publication_order(kind: Kind) {
    let db = Db::new(kind).await;
    let sql = oms_store::SqlStore::connect(&db.url).await.unwrap();
    let store: &dyn Store = &sql;
    store
        .create_webhook(&endpoint("acme", "we_all", "*"), 16)
        .await
        .unwrap();
    let id = publish(
        store,
        &["order.created", "payment.authorized", "payment.captured"],
    )
    .await;
    let message = |n: usize, topic: &str, ty: &str| OutboxMessage {
        id: format!("evt_{id}_{n}"),
        topic: topic.into(),
        event_type: ty.into(),
        payload: json!({ "n": n }),
        available_at: None,
    };
    let mut t = effects(&id, 1, None);
    t.outbox = vec![message(10, "oms.order-events.v1", "order.confirmed")];
    store.commit_transition(&t).await.unwrap();
    let claim = store.claim_outbox(3_000, 100).await.unwrap();
    store.complete(claim, 3_000).await.unwrap();
    let mut log = store.deliveries(&tenant(), "we_all", 100).await.unwrap();
    log.reverse();
    let types: Vec<&str> = log.iter().map(|d| d.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "order.created",
            "payment.authorized",
            "payment.captured",
            "order.confirmed"
        ]
    );
    if kind != Kind::Postgres {
        return;
    }
    for d in &log {
        store
            .record_attempt(d, &Attempt::Delivered { status: 200 }, 3_500)
            .await
            .unwrap();
    }
    // Two relays: one holds the fulfilment request, the other publishes the
    // later confirmation (another topic) first.
    let mut t = effects(&id, 2, None);
    t.outbox = vec![
        message(20, "oms.fulfilment-requests.v1", "fulfilment.requested"),
        message(21, "oms.order-events.v1", "order.shipped"),
    ];
    store.commit_transition(&t).await.unwrap();
    let first = store.claim_outbox(4_000, 1).await.unwrap();
    assert_eq!(first.records[0].event_type, "fulfilment.requested");
    let second = store.claim_outbox(4_000, 10).await.unwrap();
    let ids: Vec<&str> = second
        .records
        .iter()
        .map(|r| r.event_type.as_str())
        .collect();
    assert_eq!(ids, ["order.shipped"]);
    store.complete(second, 4_000).await.unwrap();
    // What came before was delivered, yet the shipment must wait.
    for d in store.due_deliveries(5_000, 100).await.unwrap() {
        assert_ne!(
            d.event_type, "order.shipped",
            "sent before the fulfilment request"
        );
    }
    store.complete(first, 4_000).await.unwrap();
    let waiting: Vec<String> = store
        .deliveries(&tenant(), "we_all", 100)
        .await
        .unwrap()
        .iter()
        .map(|d| d.event_type.clone())
        .collect();
    assert_eq!(waiting[0], "order.shipped");
    assert_eq!(waiting[1], "fulfilment.requested");
}

/// A tenant's endpoints are bounded, also when many are created at once.
async fn endpoints_stay_within_their_bound_under_concurrent_creation(kind: Kind) {
    let db = Db::new(kind).await;
    let store = std::sync::Arc::new(oms_store::SqlStore::connect(&db.url).await.unwrap());
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_webhook(&endpoint("acme", &format!("we_{i}"), "*"), 16)
                    .await
            })
        })
        .collect();
    let (mut made, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => made += 1,
            Err(StoreError::QuotaExceeded(_)) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((made, refused), (16, 8));
    assert_eq!(store.webhooks(&tenant()).await.unwrap().len(), 16);
    // Another tenant has its own bound.
    store
        .create_webhook(&endpoint("globex", "we_g", "*"), 16)
        .await
        .unwrap();
}

on_both_backends!(
    deliveries_follow_the_outbox_once_and_in_order,
    deliveries_keep_publication_order,
    endpoints_stay_within_their_bound_under_concurrent_creation
);
