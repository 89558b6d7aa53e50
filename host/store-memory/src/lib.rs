//! The storage contract kept in memory, for unit tests of the engine that
//! need no database: orders and their history, payments, idempotency keys,
//! saga commands, stock and reservations, the outbox and recorded calls,
//! with the same atomicity as the SQL store (a transition is applied to a
//! copy and swapped in whole, or not at all). Plugin versions, rollouts and
//! reconciliation are not kept: their writes answer
//! [`StoreError::Unsupported`] and their reads find nothing stored.
//!
//! [`MemoryStore::fail`] makes a named operation fail as a database outage
//! would, so the engine's handling of a failed read or write can be tested.
//! One process owns the memory, so an outbox claim needs no lock.

mod outbox;
mod sagas;
mod unsupported;

use async_trait::async_trait;
use oms_domain::{OrderId, Sku, TenantId, WarehouseId};
use oms_store::{
    CommandRecord, CustomerHistory, Database, IdempotencyBegin, Inventory, NewOrder,
    OrderEventRecord, OrderFilter, OrderRecord, Orders, OutboxRecord, PaymentRecord, RecordedCall,
    Recordings, Result, StockLevel, StoreError,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

type Key = (String, String);

#[derive(Debug, Clone)]
struct Idempotency {
    hash: String,
    in_flight: bool,
    response: Option<(u16, String)>,
    created_at: i64,
}

#[derive(Debug, Clone)]
struct Reservation {
    tenant: String,
    order: String,
    sku: String,
    warehouse: String,
    quantity: i64,
    state: &'static str,
}

#[derive(Debug, Clone)]
struct Queued {
    record: OutboxRecord,
    available_at: i64,
}

/// Everything stored; a transaction works on a copy.
#[derive(Debug, Clone, Default)]
struct Tables {
    orders: BTreeMap<Key, OrderRecord>,
    /// When each saga entered its current state, once it left its first.
    saga_status_at: HashMap<Key, i64>,
    events: HashMap<Key, Vec<OrderEventRecord>>,
    payments: HashMap<Key, Vec<PaymentRecord>>,
    idempotency: HashMap<Key, Idempotency>,
    /// The last order number handed out, per tenant.
    order_numbers: HashMap<String, i64>,
    commands: BTreeMap<String, CommandRecord>,
    /// Oldest first.
    outbox: Vec<Queued>,
    /// (tenant, sku, warehouse) → (on hand, reserved)
    inventory: BTreeMap<(String, String, String), (i64, i64)>,
    reservations: Vec<Reservation>,
    recorded: Vec<RecordedCall>,
    /// (tenant, step, key) → (value, updated at)
    step_state: BTreeMap<(String, String, String), (String, i64)>,
}

#[derive(Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
    /// Operations made to fail, and how often each failed so far.
    failing: Mutex<(HashSet<&'static str>, HashMap<&'static str, u64>)>,
    commands_in_outbox: AtomicBool,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on, `operation` (a contract method's name) fails as if the
    /// database were unreachable.
    pub fn fail(&self, operation: &'static str) {
        self.lock_failing().0.insert(operation);
    }

    /// Undoes [`Self::fail`].
    pub fn heal(&self, operation: &'static str) {
        self.lock_failing().0.remove(operation);
    }

    /// How many calls of `operation` failed because of [`Self::fail`].
    pub fn failed(&self, operation: &'static str) -> u64 {
        self.lock_failing().1.get(operation).copied().unwrap_or(0)
    }

    fn lock_failing(&self) -> MutexGuard<'_, (HashSet<&'static str>, HashMap<&'static str, u64>)> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self, operation: &'static str) -> Result<()> {
        let mut failing = self.lock_failing();
        if failing.0.contains(operation) {
            *failing.1.entry(operation).or_default() += 1;
            return Err(StoreError::Db(sqlx::Error::PoolTimedOut));
        }
        Ok(())
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        // A panic elsewhere leaves the tables as the last whole transaction
        // left them: every write swaps in a finished copy.
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on a copy of the tables and keeps the copy only if `f`
    /// succeeds: a transaction.
    fn transaction<T>(&self, f: impl FnOnce(&mut Tables) -> Result<T>) -> Result<T> {
        let mut tables = self.tables();
        let mut copy = tables.clone();
        let out = f(&mut copy)?;
        *tables = copy;
        Ok(out)
    }
}

fn key(tenant: &str, id: &str) -> Key {
    (tenant.to_owned(), id.to_owned())
}

#[async_trait]
impl Database for MemoryStore {
    fn backend_name(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<()> {
        self.check("ping")
    }

    fn set_commands_in_outbox(&self, on: bool) {
        self.commands_in_outbox.store(on, Ordering::Relaxed);
    }
}

#[async_trait]
impl Orders for MemoryStore {
    async fn begin_idempotent(
        &self,
        tenant: &TenantId,
        key_: &str,
        hash: &str,
        now: i64,
        stale_after_ms: i64,
    ) -> Result<IdempotencyBegin> {
        self.check("begin_idempotent")?;
        self.transaction(|t| {
            let k = key(tenant.as_str(), key_);
            let Some(held) = t.idempotency.get_mut(&k) else {
                t.idempotency.insert(
                    k,
                    Idempotency {
                        hash: hash.to_owned(),
                        in_flight: true,
                        response: None,
                        created_at: now,
                    },
                );
                return Ok(IdempotencyBegin::Fresh);
            };
            Ok(
                if held.created_at <= now - oms_store::IDEMPOTENCY_KEY_TTL_MS {
                    *held = Idempotency {
                        hash: hash.to_owned(),
                        in_flight: true,
                        response: None,
                        created_at: now,
                    };
                    IdempotencyBegin::Fresh
                } else if held.hash != hash {
                    IdempotencyBegin::Mismatch
                } else if let Some((status, body)) = &held.response {
                    IdempotencyBegin::Replay {
                        status: *status,
                        body: body.clone(),
                    }
                } else if held.in_flight && held.created_at < now - stale_after_ms {
                    held.created_at = now;
                    IdempotencyBegin::Fresh
                } else {
                    IdempotencyBegin::InFlight
                },
            )
        })
    }

    async fn abandon_idempotent(&self, tenant: &TenantId, key_: &str) -> Result<()> {
        self.check("abandon_idempotent")?;
        let k = key(tenant.as_str(), key_);
        let mut t = self.tables();
        if t.idempotency.get(&k).is_some_and(|i| i.in_flight) {
            t.idempotency.remove(&k);
        }
        Ok(())
    }

    async fn prune_idempotency_keys(&self, before: i64, limit: i64) -> Result<u64> {
        self.check("prune_idempotency_keys")?;
        let mut t = self.tables();
        let old: Vec<Key> = t
            .idempotency
            .iter()
            .filter(|(_, i)| i.created_at < before)
            .map(|(k, _)| k.clone())
            .take(usize::try_from(limit).unwrap_or(0))
            .collect();
        for k in &old {
            t.idempotency.remove(k);
        }
        Ok(old.len() as u64)
    }

    async fn allocate_order_numbers(&self, tenant: &TenantId, count: i64) -> Result<i64> {
        self.check("allocate_order_numbers")?;
        let mut t = self.tables();
        let last = t.order_numbers.entry(tenant.to_string()).or_insert(0);
        *last += count;
        Ok(*last - count + 1)
    }

    async fn create_order(&self, new: &NewOrder) -> Result<()> {
        self.check("create_order")?;
        self.transaction(|t| {
            let r = &new.record;
            let k = key(&r.tenant_id, &r.id);
            if t.orders.contains_key(&k) {
                return Err(StoreError::Corrupt(format!("order {} exists", r.id)));
            }
            let mut record = r.clone();
            record.event_seq = new.effects.events.len() as i64;
            t.orders.insert(k, record);
            sagas::write_effects(t, &new.effects, 1);
            if let Some((key_, status, body)) = &new.idempotency
                && let Some(held) = t.idempotency.get_mut(&key(&r.tenant_id, key_))
            {
                held.in_flight = false;
                held.response = Some((*status, body.clone()));
            }
            Ok(())
        })
    }

    async fn order(&self, tenant: &TenantId, id: &OrderId) -> Result<OrderRecord> {
        self.check("order")?;
        self.tables()
            .orders
            .get(&key(tenant.as_str(), id.as_str()))
            .cloned()
            .ok_or(StoreError::NotFound)
    }

    async fn orders_in_saga_status(
        &self,
        saga_status: &str,
        tenant: Option<&TenantId>,
        placed_before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<OrderRecord>> {
        self.check("orders_in_saga_status")?;
        let tables = self.tables();
        // Since when: entering the state, or being placed.
        let since = |o: &OrderRecord| {
            tables
                .saga_status_at
                .get(&key(&o.tenant_id, &o.id))
                .copied()
                .unwrap_or(o.created_at)
        };
        let mut found: Vec<(i64, OrderRecord)> = tables
            .orders
            .values()
            .filter(|o| o.saga_status == saga_status)
            .filter(|o| tenant.is_none_or(|t| o.tenant_id == t.as_str()))
            .filter(|o| placed_before.is_none_or(|b| o.created_at < b))
            .map(|o| (since(o), o.clone()))
            .collect();
        found.sort_by(|(a_at, a), (b_at, b)| (a_at, &a.id).cmp(&(b_at, &b.id)));
        found.truncate(usize::try_from(limit).unwrap_or(0));
        Ok(found.into_iter().map(|(_, o)| o).collect())
    }

    async fn list_orders(
        &self,
        tenant: &TenantId,
        filter: &OrderFilter<'_>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OrderRecord>> {
        self.check("list_orders")?;
        let t = self.tables();
        Ok(t.orders
            .values()
            .rev()
            .filter(|o| o.tenant_id == tenant.as_str())
            .filter(|o| filter.matches(o))
            .filter(|o| after.is_none_or(|a| o.id.as_str() < a))
            .take(usize::try_from(limit).unwrap_or(0))
            .cloned()
            .collect())
    }

    async fn order_events(&self, tenant: &TenantId, id: &OrderId) -> Result<Vec<OrderEventRecord>> {
        self.check("order_events")?;
        let k = key(tenant.as_str(), id.as_str());
        Ok(self.tables().events.get(&k).cloned().unwrap_or_default())
    }

    async fn payments(&self, tenant: &TenantId, id: &OrderId) -> Result<Vec<PaymentRecord>> {
        self.check("payments")?;
        let k = key(tenant.as_str(), id.as_str());
        let mut rows = self.tables().payments.get(&k).cloned().unwrap_or_default();
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(rows)
    }

    async fn customer_history(
        &self,
        tenant: &TenantId,
        customer: &str,
        currency: &str,
        since: i64,
        exclude: &OrderId,
    ) -> Result<CustomerHistory> {
        self.check("customer_history")?;
        let t = self.tables();
        let mut history = CustomerHistory::default();
        for o in t.orders.values().filter(|o| {
            o.tenant_id == tenant.as_str()
                && o.customer_id == customer
                && o.currency == currency
                && o.created_at >= since
                && o.id != exclude.as_str()
        }) {
            history.orders += 1;
            history.spend += o.total_minor;
        }
        Ok(history)
    }

    async fn count_sagas_by_tenant(&self, saga_status: &str) -> Result<Vec<(String, i64)>> {
        self.check("count_sagas_by_tenant")?;
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for o in self.tables().orders.values() {
            if o.saga_status == saga_status {
                *counts.entry(o.tenant_id.clone()).or_default() += 1;
            }
        }
        Ok(counts.into_iter().collect())
    }
}

#[async_trait]
impl Inventory for MemoryStore {
    async fn set_stock(
        &self,
        tenant: &TenantId,
        sku: &Sku,
        warehouse: &WarehouseId,
        on_hand: i64,
        _now: i64,
    ) -> Result<StockLevel> {
        self.check("set_stock")?;
        self.transaction(|t| {
            let k = (tenant.to_string(), sku.to_string(), warehouse.to_string());
            let level = t.inventory.entry(k).or_insert((0, 0));
            if level.1 > on_hand {
                return Err(StoreError::InsufficientStock {
                    sku: sku.to_string(),
                });
            }
            level.0 = on_hand;
            Ok(StockLevel {
                warehouse_id: warehouse.to_string(),
                on_hand,
                reserved: level.1,
            })
        })
    }

    async fn seed_stock(
        &self,
        tenant: &TenantId,
        sku: &Sku,
        warehouse: &WarehouseId,
        on_hand: i64,
        _now: i64,
    ) -> Result<()> {
        self.check("seed_stock")?;
        let k = (tenant.to_string(), sku.to_string(), warehouse.to_string());
        self.tables().inventory.entry(k).or_insert((on_hand, 0));
        Ok(())
    }

    async fn stock(&self, tenant: &TenantId, sku: &Sku) -> Result<Vec<StockLevel>> {
        self.check("stock")?;
        Ok(self
            .tables()
            .inventory
            .iter()
            .filter(|((t, s, _), _)| t == tenant.as_str() && s == sku.as_str())
            .map(|((_, _, w), (on_hand, reserved))| StockLevel {
                warehouse_id: w.clone(),
                on_hand: *on_hand,
                reserved: *reserved,
            })
            .collect())
    }

    async fn reservations(
        &self,
        tenant: &TenantId,
        order: &OrderId,
    ) -> Result<Vec<(String, String, i64)>> {
        self.check("reservations")?;
        let mut rows: Vec<(String, String, i64)> = self
            .tables()
            .reservations
            .iter()
            .filter(|r| r.tenant == tenant.as_str() && r.order == order.as_str())
            .map(|r| (r.sku.clone(), r.state.to_owned(), r.quantity))
            .collect();
        rows.sort();
        Ok(rows)
    }
}

#[async_trait]
impl Recordings for MemoryStore {
    async fn record_calls(&self, calls: &[RecordedCall]) -> Result<()> {
        self.check("record_calls")?;
        self.tables().recorded.extend_from_slice(calls);
        Ok(())
    }

    async fn recorded_calls(
        &self,
        tenant: &TenantId,
        slot: &str,
        limit: i64,
    ) -> Result<Vec<RecordedCall>> {
        self.check("recorded_calls")?;
        let t = self.tables();
        let mine: Vec<&RecordedCall> = t
            .recorded
            .iter()
            .filter(|c| c.tenant_id == tenant.as_str() && c.slot == slot)
            .collect();
        let skip = mine
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        Ok(mine.into_iter().skip(skip).cloned().collect())
    }

    async fn prune_recorded_calls(&self, keep: i64) -> Result<u64> {
        self.check("prune_recorded_calls")?;
        let keep = usize::try_from(keep).unwrap_or(0);
        let mut t = self.tables();
        let mut per_slot: HashMap<Key, usize> = HashMap::new();
        for c in &t.recorded {
            *per_slot.entry(key(&c.tenant_id, &c.slot)).or_default() += 1;
        }
        let before = t.recorded.len();
        // Newest last: drop each slot's oldest beyond `keep`.
        let mut to_drop: HashMap<Key, usize> = per_slot
            .into_iter()
            .map(|(k, n)| (k, n.saturating_sub(keep)))
            .collect();
        t.recorded.retain(|c| {
            let left = to_drop.entry(key(&c.tenant_id, &c.slot)).or_default();
            if *left > 0 {
                *left -= 1;
                false
            } else {
                true
            }
        });
        Ok((before - t.recorded.len()) as u64)
    }
}
