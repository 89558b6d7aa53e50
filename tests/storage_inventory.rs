//! The storage contract for stock: reservations are conditional and all or
//! nothing, never oversold under concurrency, and shipping consumes what a
//! shipment's lines hold. On SQLite, PostgreSQL and the in-memory store.
// Tests draw their own seeds and ids; the clock rule is for product code.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use oms_store::{InventoryOp, StoreError};
use support::stores::*;

async fn reservations_are_conditional_and_all_or_nothing(under: Under) {
    let (store, _db) = store(under).await;
    set(&*store, "A", "east", 5).await.unwrap();
    set(&*store, "A", "west", 3).await.unwrap();
    set(&*store, "B", "east", 1).await.unwrap();
    let id = new_order(&*store, "c1", 1_000, 500).await;

    // B is short: nothing at all is reserved, A included.
    let mut t = effects(&id, 0, None);
    t.inventory = Some(InventoryOp::Reserve(vec![("A".into(), 4), ("B".into(), 2)]));
    assert!(
        matches!(store.commit_transition(&t).await, Err(StoreError::InsufficientStock { sku }) if sku == "B")
    );
    assert_eq!(
        stock(&*store, "A").await,
        vec![("east".into(), 5, 0), ("west".into(), 3, 0)]
    );

    // A line is served from one warehouse with enough stock.
    t.inventory = Some(InventoryOp::Reserve(vec![("A".into(), 4), ("B".into(), 1)]));
    let v = store.commit_transition(&t).await.unwrap();
    assert_eq!(
        stock(&*store, "A").await,
        vec![("east".into(), 5, 4), ("west".into(), 3, 0)]
    );
    // Reserving again for the same order is a no-op.
    let mut again = effects(&id, v, None);
    again.inventory = t.inventory.clone();
    let v = store.commit_transition(&again).await.unwrap();
    assert_eq!(stock(&*store, "B").await, vec![("east".into(), 1, 1)]);
    // On-hand may not drop below what is reserved.
    assert!(matches!(
        set(&*store, "A", "east", 3).await,
        Err(StoreError::InsufficientStock { .. })
    ));

    let mut release = effects(&id, v, None);
    release.inventory = Some(InventoryOp::Release);
    let v = store.commit_transition(&release).await.unwrap();
    let mut twice = effects(&id, v, None);
    twice.inventory = Some(InventoryOp::Release);
    store.commit_transition(&twice).await.unwrap();
    assert_eq!(
        stock(&*store, "A").await,
        vec![("east".into(), 5, 0), ("west".into(), 3, 0)]
    );
    assert_eq!(stock(&*store, "B").await, vec![("east".into(), 1, 0)]);
}

async fn shipping_consumes_reserved_stock(under: Under) {
    let (store, _db) = store(under).await;
    set(&*store, "A", "main", 10).await.unwrap();
    set(&*store, "B", "main", 4).await.unwrap();
    let id = new_order(&*store, "c1", 1_000, 500).await;
    let mut t = effects(&id, 0, None);
    t.inventory = Some(InventoryOp::Reserve(vec![("A".into(), 3), ("B".into(), 2)]));
    let v = store.commit_transition(&t).await.unwrap();
    // A first shipment takes line A; B stays held.
    let mut ship = effects(&id, v, None);
    ship.inventory = Some(InventoryOp::Consume(vec!["A".into()]));
    let v = store.commit_transition(&ship).await.unwrap();
    assert_eq!(stock(&*store, "A").await, vec![("main".into(), 7, 0)]);
    assert_eq!(stock(&*store, "B").await, vec![("main".into(), 4, 2)]);
    let mut ship = effects(&id, v, None);
    ship.inventory = Some(InventoryOp::Consume(vec!["B".into()]));
    let v = store.commit_transition(&ship).await.unwrap();
    assert_eq!(stock(&*store, "B").await, vec![("main".into(), 2, 0)]);
    // Nothing is held any more, so a late release gives nothing back.
    let mut release = effects(&id, v, None);
    release.inventory = Some(InventoryOp::Release);
    store.commit_transition(&release).await.unwrap();
    assert_eq!(stock(&*store, "A").await, vec![("main".into(), 7, 0)]);
    assert_eq!(stock(&*store, "B").await, vec![("main".into(), 2, 0)]);
    let held = store.reservations(&tenant(), &id).await.unwrap();
    assert_eq!(
        held,
        vec![
            ("A".into(), "consumed".into(), 3),
            ("B".into(), "consumed".into(), 2)
        ]
    );
}

async fn concurrent_reservations_never_oversell(under: Under) {
    let (store, _db) = store(under).await;
    set(&*store, "HOT", "main", 10).await.unwrap();
    let mut orders = Vec::new();
    for i in 0..40 {
        orders.push(new_order(&*store, &format!("c{i}"), 1_000, 100).await);
    }
    let tasks: Vec<_> = orders
        .into_iter()
        .map(|id| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut t = effects(&id, 0, None);
                t.inventory = Some(InventoryOp::Reserve(vec![("HOT".into(), 1)]));
                store.commit_transition(&t).await
            })
        })
        .collect();
    let mut reserved = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => reserved += 1,
            Err(StoreError::InsufficientStock { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(reserved, 10);
    assert_eq!(stock(&*store, "HOT").await, vec![("main".into(), 10, 10)]);
}

/// Lines cancelled before shipment give back only what the order holds of
/// them; returned goods go back on hand, in a warehouse new to the SKU too.
async fn cancelled_lines_release_and_returns_restock(under: Under) {
    let (store, _db) = store(under).await;
    set(&*store, "A", "main", 10).await.unwrap();
    set(&*store, "B", "main", 4).await.unwrap();
    let id = new_order(&*store, "c1", 1_000, 500).await;
    let mut t = effects(&id, 0, None);
    t.inventory = Some(InventoryOp::Reserve(vec![("A".into(), 3), ("B".into(), 2)]));
    let v = store.commit_transition(&t).await.unwrap();
    let mut cancel = effects(&id, v, None);
    cancel.inventory = Some(InventoryOp::ReleaseLines(vec!["B".into()]));
    let v = store.commit_transition(&cancel).await.unwrap();
    assert_eq!(stock(&*store, "A").await, vec![("main".into(), 10, 3)]);
    assert_eq!(stock(&*store, "B").await, vec![("main".into(), 4, 0)]);
    // Again (a redelivered command would not get here, but it must hold):
    // nothing more is released.
    let mut again = effects(&id, v, None);
    again.inventory = Some(InventoryOp::ReleaseLines(vec!["B".into()]));
    let v = store.commit_transition(&again).await.unwrap();
    assert_eq!(stock(&*store, "B").await, vec![("main".into(), 4, 0)]);
    // A ships; two come back, one to a warehouse that never held A.
    let mut ship = effects(&id, v, None);
    ship.inventory = Some(InventoryOp::Consume(vec!["A".into()]));
    let v = store.commit_transition(&ship).await.unwrap();
    assert_eq!(stock(&*store, "A").await, vec![("main".into(), 7, 0)]);
    for (warehouse, v) in [("main", v), ("returns", v + 1)] {
        let mut back = effects(&id, v, None);
        back.inventory = Some(InventoryOp::Restock {
            warehouse: warehouse.into(),
            lines: vec![("A".into(), 1)],
        });
        store.commit_transition(&back).await.unwrap();
    }
    assert_eq!(
        stock(&*store, "A").await,
        vec![("main".into(), 8, 0), ("returns".into(), 1, 0)]
    );
}

/// Reservations written together (one group-commit batch on the SQL
/// stores, one call on PostgreSQL) hold each line as one at a time would:
/// the warehouse with the most available, every line of every order, and
/// what each order holds is what its release gives back.
async fn concurrent_reservations_hold_each_line_where_most_is_available(under: Under) {
    let (store, _db) = store(under).await;
    set(&*store, "W", "east", 6).await.unwrap();
    set(&*store, "W", "west", 6).await.unwrap();
    set(&*store, "V", "east", 8).await.unwrap();
    let mut orders = Vec::new();
    for i in 0..8 {
        orders.push(new_order(&*store, &format!("c{i}"), 1_000, 100).await);
    }
    let tasks: Vec<_> = orders
        .iter()
        .map(|id| {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move {
                let mut t = effects(&id, 0, None);
                t.inventory = Some(InventoryOp::Reserve(vec![("W".into(), 1), ("V".into(), 1)]));
                store.commit_transition(&t).await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 1);
    }
    // Each W went where more was left: the eight split evenly.
    assert_eq!(
        stock(&*store, "W").await,
        vec![("east".into(), 6, 4), ("west".into(), 6, 4)]
    );
    assert_eq!(stock(&*store, "V").await, vec![("east".into(), 8, 8)]);
    for id in &orders {
        let mut release = effects(id, 1, None);
        release.inventory = Some(InventoryOp::Release);
        store.commit_transition(&release).await.unwrap();
    }
    assert_eq!(
        stock(&*store, "W").await,
        vec![("east".into(), 6, 0), ("west".into(), 6, 0)]
    );
    assert_eq!(stock(&*store, "V").await, vec![("east".into(), 8, 0)]);
}

on_every_store!(
    concurrent_reservations_hold_each_line_where_most_is_available,
    reservations_are_conditional_and_all_or_nothing,
    shipping_consumes_reserved_stock,
    cancelled_lines_release_and_returns_restock,
    concurrent_reservations_never_oversell,
);
