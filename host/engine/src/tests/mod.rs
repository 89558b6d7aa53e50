//! The engine's own tests, without a database: a platform on the storage
//! contract kept in memory (`oms-store-memory`), the demo tenants with their
//! real built-in components, and the sandbox provider on loopback. The
//! contract suite (tests/storage.rs) keeps the SQL stores honest; these keep
//! the runner and the step adapters honest.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod chain;
mod dispatch;
mod steps;

use crate::Platform;
use crate::commit::{Loaded, load};
use crate::tenants::{LoadOptions, Tenant, Tenants};
use crate::transport::{InProcess, Transport};
use oms_domain::{OrderId, TenantId};
use oms_plugin_host::PluginHost;
use oms_sandbox_psp::{LedgerEntry, Sandbox};
use oms_store::{CommandRecord, OrderEventRecord, OrderRecord, Orders, SagaLog};
use oms_store_memory::MemoryStore;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Generous: only a hung saga takes this long.
const DEADLINE: Duration = Duration::from_secs(60);

pub(crate) struct Harness {
    pub p: Arc<Platform>,
    pub store: Arc<MemoryStore>,
    pub psp: Sandbox,
}

impl Harness {
    pub async fn new() -> Self {
        let psp = Sandbox::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(axum::serve(listener, psp.clone().router()).into_future());
        let plugins = PluginHost::new().unwrap();
        let options = LoadOptions {
            demo: true,
            sandbox_psp_url: Some(url),
        };
        let tenants = Tenants::load(None, &plugins, &options).unwrap();
        let store = Arc::new(MemoryStore::new());
        let p = Platform::new(
            store.clone(),
            plugins,
            tenants,
            options,
            None,
            Transport::InProcess(InProcess::new()),
        );
        p.seed_demo_stock().await.unwrap();
        Self { p, store, psp }
    }

    pub fn tenant(&self) -> Arc<Tenant> {
        self.p.tenants.get("acme").unwrap()
    }

    /// Stores an order for `quantity` of `sku`, paid with `token`, as
    /// placing it does; its saga's first command waits, and nothing runs it
    /// yet (placing would hand it to the runner at once).
    pub async fn place(&self, customer: &str, sku: &str, quantity: u32, token: &str) -> OrderId {
        let items = json!([{ "sku": sku, "quantity": quantity, "unitPrice": 1999 }]);
        self.place_items(customer, items, token).await
    }

    pub async fn place_items(&self, customer: &str, items: Value, token: &str) -> OrderId {
        self.place_as("acme", customer, items, token).await
    }

    /// [`Harness::place_items`] for the demo tenant `tenant`.
    pub async fn place_as(
        &self,
        tenant: &str,
        customer: &str,
        items: Value,
        token: &str,
    ) -> OrderId {
        let body = json!({
            "customerId": customer,
            "currency": "USD",
            "items": items,
            "shippingAddress": { "line1": "1 Main St", "city": "Springfield", "postalCode": "12345", "country": "US" },
            "paymentMethod": { "token": token },
        });
        let draft = match oms_domain::validate::order(&body) {
            Ok(draft) => draft,
            Err(problems) => {
                let why: Vec<String> = problems
                    .errors
                    .iter()
                    .map(|e| format!("{} {}", e.field, e.message))
                    .collect();
                panic!("the test order is invalid: {why:?}")
            }
        };
        let now = oms_clock::now_ms();
        let accepted = crate::orders::create(
            &self.p,
            &self.p.tenants.get(tenant).unwrap(),
            draft,
            None,
            |_| Ok(String::new()),
            now,
        )
        .await
        .unwrap();
        match accepted.placed {
            crate::orders::Placed::Created { record, .. } => OrderId::parse(&record.id).unwrap(),
            crate::orders::Placed::Replayed { .. } => unreachable!("no idempotency key given"),
        }
    }

    pub fn acme(&self) -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    pub async fn order(&self, id: &OrderId) -> OrderRecord {
        self.store.order(&self.acme(), id).await.unwrap()
    }

    /// Waits until the order of `tenant` has its saga at rest (see
    /// [`Harness::settled`]), and returns it.
    pub async fn settled_as(&self, tenant: &str, id: &OrderId) -> OrderRecord {
        let tenant = TenantId::parse(tenant).unwrap();
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            let order = self.store.order(&tenant, id).await.unwrap();
            if !matches!(order.saga_status.as_str(), "RUNNING" | "COMPENSATING") {
                return order;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "saga of {id} still {} after {DEADLINE:?}",
                order.saga_status
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn loaded(&self, id: &OrderId) -> Loaded {
        load(self.order(id).await).unwrap()
    }

    pub async fn history(&self, id: &OrderId) -> Vec<String> {
        let events: Vec<OrderEventRecord> =
            self.store.order_events(&self.acme(), id).await.unwrap();
        events.into_iter().map(|e| e.event_type).collect()
    }

    /// The order's one waiting command.
    pub async fn command(&self, id: &OrderId) -> CommandRecord {
        let mut mine: Vec<CommandRecord> = self
            .store
            .due_commands(i64::MAX, 1_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.order_id == id.as_str())
            .collect();
        assert_eq!(mine.len(), 1, "{mine:?}");
        mine.remove(0)
    }

    /// Waits until the order's saga is at rest (not RUNNING or
    /// COMPENSATING), and returns the order.
    pub async fn settled(&self, id: &OrderId) -> OrderRecord {
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            let order = self.order(id).await;
            if !matches!(order.saga_status.as_str(), "RUNNING" | "COMPENSATING") {
                return order;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "saga of {id} still {} after {DEADLINE:?}: {:?}",
                order.saga_status,
                self.history(id).await
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The provider's operations for this order, as its ledger shows them.
    pub fn ledger(&self, id: &OrderId) -> Vec<(String, String)> {
        self.psp
            .ledger()
            .into_iter()
            .filter(|e: &LedgerEntry| e.order_id.as_deref() == Some(id.as_str()))
            .map(|e| (e.op, e.status))
            .collect()
    }
}

/// Waits for `cond`, with the generous deadline.
pub(crate) async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
