//! The storage contract for tenants' step state: written only with a saga
//! transition; additions from concurrent sagas all count (the group-commit
//! writer folds a batch's writes per key), a put replaces, a delete removes,
//! a failed transition writes none of it. On SQLite, PostgreSQL and the
//! in-memory store.
// Tests draw their own seeds and ids; the clock rule is for product code.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use oms_store::{StepStateOp, StepStateWrite, StoreError};
use std::sync::Arc;
use support::stores::*;

fn write(key: &str, op: StepStateOp) -> StepStateWrite {
    StepStateWrite {
        step: "loyalty-points".into(),
        key: key.into(),
        op,
    }
}

async fn value(store: &dyn oms_store::Store, key: &str) -> Option<String> {
    store
        .step_state(&tenant(), "loyalty-points", key)
        .await
        .unwrap()
        .map(|r| r.value)
}

async fn concurrent_sagas_step_state_writes_all_count(under: Under) {
    let (store, _db) = store(under).await;
    let store: Arc<dyn oms_store::Store> = store;
    // Many sagas at once (so the writer batches them): each adds to one
    // shared key and puts a key of its own; half also add to a key that
    // one of them put before.
    let first = new_order(&*store, "c0", 1_000, 500).await;
    let mut t = effects(&first, 0, None);
    t.step_state = vec![write("shared-put", StepStateOp::Put("100".into()))];
    store.commit_transition(&t).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..48i64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let id = new_order(&*store, "c1", 1_000, 500).await;
            let mut t = effects(&id, 0, None);
            t.step_state = vec![
                write("shared", StepStateOp::Add(i + 1)),
                write(&format!("own-{i}"), StepStateOp::Put(format!("v{i}"))),
            ];
            if i % 2 == 0 {
                t.step_state.push(write("shared-put", StepStateOp::Add(-1)));
            }
            store.commit_transition(&t).await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(value(&*store, "shared").await.as_deref(), Some("1176"));
    assert_eq!(value(&*store, "shared-put").await.as_deref(), Some("76"));
    for i in 0..48 {
        assert_eq!(
            value(&*store, &format!("own-{i}")).await,
            Some(format!("v{i}"))
        );
    }

    // In one transition: a delete then an addition counts from 0; a put
    // then a delete leaves nothing.
    let id = new_order(&*store, "c2", 1_000, 500).await;
    let mut t = effects(&id, 0, None);
    t.step_state = vec![
        write("shared", StepStateOp::Delete),
        write("shared", StepStateOp::Add(7)),
        write("gone", StepStateOp::Put("1".into())),
        write("gone", StepStateOp::Delete),
    ];
    let v = store.commit_transition(&t).await.unwrap();
    assert_eq!(value(&*store, "shared").await.as_deref(), Some("7"));
    assert_eq!(value(&*store, "gone").await, None);

    // A transition refused (stale version) writes none of its state.
    let mut stale = effects(&id, v - 1, None);
    stale.step_state = vec![write("shared", StepStateOp::Add(1000))];
    assert!(matches!(
        store.commit_transition(&stale).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(value(&*store, "shared").await.as_deref(), Some("7"));
}

on_every_store!(concurrent_sagas_step_state_writes_all_count);
