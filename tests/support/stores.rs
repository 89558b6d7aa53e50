//! The storage contract's fixtures: which store a test runs against
//! (`on_every_store!`: SQLite, PostgreSQL and the in-memory store) and the
//! rows tests build. Shared by the `storage*` suites.
#![allow(dead_code, clippy::unwrap_used)]

use super::Db;
use oms_domain::{OrderId, Sku, TenantId, WarehouseId};
use oms_store::{
    NewCommand, NewOrder, OrderPatch, OrderRecord, SqlStore, Store, StoreError, Transition,
};
use serde_json::json;
use std::sync::Arc;

/// Which implementation of the contract a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Under {
    Sql(super::Kind),
    Memory,
}

/// The implementation under test, seen only through the contract.
pub async fn store(under: Under) -> (Arc<dyn Store>, Option<Db>) {
    match under {
        Under::Sql(kind) => {
            let db = Db::new(kind).await;
            let store = Arc::new(SqlStore::connect(&db.url).await.unwrap());
            (store, Some(db))
        }
        Under::Memory => (Arc::new(oms_store_memory::MemoryStore::new()), None),
    }
}

/// Runs each test against SQLite, PostgreSQL and the in-memory store.
#[macro_export]
macro_rules! on_every_store {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                use $crate::support::Kind;
                use $crate::support::stores::Under;
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(Under::Sql(Kind::Sqlite)).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(Under::Sql(Kind::Postgres)).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    super::$name(Under::Memory).await
                }
            }
        )+
    };
}

pub fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

pub fn effects(order: &OrderId, version: i64, consumes: Option<String>) -> Transition {
    Transition {
        tenant: tenant(),
        order_id: order.clone(),
        expected_version: version,
        consumes,
        inventory: None,
        patch: OrderPatch::default(),
        events: vec![],
        commands: vec![],
        outbox: vec![],
        payment: None,
        step_state: vec![],
        now: 1_000,
        trace_parent: None,
    }
}

pub fn command(id: &str, at: i64) -> NewCommand {
    NewCommand {
        id: id.into(),
        action: "{}".into(),
        available_at: at,
    }
}

/// An order row as a new order's is written (acme, USD, `PENDING`, one
/// history event).
pub fn order_record(id: &OrderId, customer: &str, created_at: i64, total: i64) -> OrderRecord {
    OrderRecord {
        tenant_id: "acme".into(),
        id: id.to_string(),
        customer_id: customer.into(),
        currency: "USD".into(),
        total_minor: total,
        status: "PENDING".into(),
        payment_status: "NONE".into(),
        fulfillment_status: "NONE".into(),
        draft: "{}".into(),
        violations: None,
        cancellation_reason: None,
        shipment: None,
        saga_state: "{}".into(),
        saga_status: "RUNNING".into(),
        version: 0,
        event_seq: 1,
        created_at,
        updated_at: created_at,
        trace_parent: None,
        order_number: None,
    }
}

/// A new order with one history event and one command `cmd-<n>`.
pub async fn new_order(store: &dyn Store, customer: &str, created_at: i64, total: i64) -> OrderId {
    new_order_numbered(store, customer, created_at, total, None).await
}

/// [`new_order`] with its order number.
pub async fn new_order_numbered(
    store: &dyn Store,
    customer: &str,
    created_at: i64,
    total: i64,
    number: Option<i64>,
) -> OrderId {
    let id = oms_clock::new_order_id();
    let mut record = order_record(&id, customer, created_at, total);
    record.order_number = number;
    let mut t = effects(&id, 0, None);
    t.events = vec![("order.created".into(), json!({ "n": 1 }))];
    t.commands = vec![command(&format!("cmd-{id}"), created_at)];
    store
        .create_order(&NewOrder {
            record,
            effects: t,
            idempotency: None,
        })
        .await
        .unwrap();
    id
}

pub async fn stock(store: &dyn Store, sku: &str) -> Vec<(String, i64, i64)> {
    store
        .stock(&tenant(), &Sku::parse(sku).unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.warehouse_id, l.on_hand, l.reserved))
        .collect()
}

pub async fn set(store: &dyn Store, sku: &str, wh: &str, on_hand: i64) -> Result<(), StoreError> {
    store
        .set_stock(
            &tenant(),
            &Sku::parse(sku).unwrap(),
            &WarehouseId::parse(wh).unwrap(),
            on_hand,
            1,
        )
        .await
        .map(|_| ())
}
