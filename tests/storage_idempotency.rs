//! The storage contract for idempotency keys: a finished request replays,
//! another body is refused, a crashed one is taken over, an expired key is
//! new again. On SQLite, PostgreSQL and the in-memory store.
// Tests draw their own seeds and ids; the clock rule is for product code.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use oms_domain::TenantId;
use oms_store::{IdempotencyBegin, NewOrder, OrderRecord};
use support::stores::*;

async fn idempotency_keys_replay_refuse_and_recover(under: Under) {
    let (store, _db) = store(under).await;
    let t = tenant();
    assert_eq!(
        store
            .begin_idempotent(&t, "k1", "h1", 1_000, 30_000)
            .await
            .unwrap(),
        IdempotencyBegin::Fresh
    );
    assert_eq!(
        store
            .begin_idempotent(&t, "k1", "h1", 1_001, 30_000)
            .await
            .unwrap(),
        IdempotencyBegin::InFlight
    );
    assert_eq!(
        store
            .begin_idempotent(&t, "k1", "h2", 1_001, 30_000)
            .await
            .unwrap(),
        IdempotencyBegin::Mismatch
    );
    // The same key is a different key for another tenant.
    let globex = TenantId::parse("globex").unwrap();
    assert_eq!(
        store
            .begin_idempotent(&globex, "k1", "h9", 1_001, 30_000)
            .await
            .unwrap(),
        IdempotencyBegin::Fresh
    );

    // A key left in flight by a crashed request is taken over once stale.
    assert_eq!(
        store
            .begin_idempotent(&t, "k1", "h1", 40_000, 30_000)
            .await
            .unwrap(),
        IdempotencyBegin::Fresh
    );

    // Completed with the order, in the same transaction.
    let id = oms_clock::new_order_id();
    let record = OrderRecord {
        event_seq: 0,
        ..order_record(&id, "c", 1, 1)
    };
    let new = NewOrder {
        record,
        effects: effects(&id, 0, None),
        idempotency: Some(("k1".into(), 201, "{\"id\":1}".into())),
    };
    store.create_order(&new).await.unwrap();
    assert_eq!(
        store
            .begin_idempotent(&t, "k1", "h1", 40_001, 30_000)
            .await
            .unwrap(),
        IdempotencyBegin::Replay {
            status: 201,
            body: "{\"id\":1}".into()
        }
    );
    // Abandoning frees an in-flight key only.
    store.abandon_idempotent(&t, "k1").await.unwrap();
    assert!(matches!(
        store
            .begin_idempotent(&t, "k1", "h1", 40_002, 30_000)
            .await
            .unwrap(),
        IdempotencyBegin::Replay { .. }
    ));

    // 24 hours after its first use the key has expired: another request
    // may use it, and the old answer is gone.
    let day = oms_store::IDEMPOTENCY_KEY_TTL_MS;
    assert!(matches!(
        store
            .begin_idempotent(&t, "k1", "h1", 40_000 + day - 1, 30_000)
            .await
            .unwrap(),
        IdempotencyBegin::Replay { .. }
    ));
    assert_eq!(
        store
            .begin_idempotent(&t, "k1", "h-new", 40_000 + day, 30_000)
            .await
            .unwrap(),
        IdempotencyBegin::Fresh
    );
    assert_eq!(
        store
            .begin_idempotent(&t, "k1", "h-new", 40_001 + day, 30_000)
            .await
            .unwrap(),
        IdempotencyBegin::InFlight
    );

    // Pruning deletes only keys first used before the cut, a batch at a time.
    for n in 0..5 {
        store
            .begin_idempotent(&t, &format!("old-{n}"), "h", 2_000 + n, 30_000)
            .await
            .unwrap();
    }
    assert_eq!(store.prune_idempotency_keys(10_000, 3).await.unwrap(), 3);
    // globex's k1 (1_001) and the two old keys left.
    assert_eq!(store.prune_idempotency_keys(10_000, 100).await.unwrap(), 3);
    assert_eq!(store.prune_idempotency_keys(10_000, 100).await.unwrap(), 0);
    // Acme's renewed k1 is kept: it is still in flight under its new use.
    assert_eq!(
        store
            .begin_idempotent(&t, "k1", "h-new", 40_002 + day, 30_000)
            .await
            .unwrap(),
        IdempotencyBegin::InFlight
    );
}

on_every_store!(idempotency_keys_replay_refuse_and_recover);
