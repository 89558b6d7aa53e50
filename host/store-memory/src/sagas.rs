//! Saga transitions and their commands, as `SqlStore` commits them
//! (host/store/src/transition.rs): the consumed command, the version check,
//! the stock change, then history, commands, outbox and payment, all or
//! nothing.

use super::{Key, MemoryStore, Queued, Reservation, Tables, key};
use async_trait::async_trait;
use oms_domain::{OrderId, TenantId};
use oms_store::{
    CommandRecord, InventoryOp, OrderEventRecord, OrderRecord, OutboxRecord, PaymentRecord, Result,
    SagaLog, StepStateOp, StepStateRecord, StepStates, StoreError, Transition,
};
use std::sync::atomic::Ordering;

#[async_trait]
impl SagaLog for MemoryStore {
    async fn commit_transition(&self, t: &Transition) -> Result<i64> {
        self.check("commit_transition")?;
        let commands_in_outbox = self.commands_in_outbox.load(Ordering::Relaxed);
        self.transaction(|tables| {
            if let Some(command) = &t.consumes {
                if tables.commands.remove(command).is_none() {
                    return Err(StoreError::Duplicate);
                }
                if commands_in_outbox {
                    tables.outbox.retain(|q| &q.record.id != command);
                }
            }
            let k = key(t.tenant.as_str(), t.order_id.as_str());
            let order = tables
                .orders
                .get_mut(&k)
                .filter(|o| o.version == t.expected_version)
                .ok_or(StoreError::Conflict)?;
            let entered = t
                .patch
                .saga_status
                .as_ref()
                .is_some_and(|s| *s != order.saga_status);
            t.patch.apply_to(order);
            order.version += 1;
            order.event_seq += t.events.len() as i64;
            order.updated_at = t.now;
            let first_seq = order.event_seq - t.events.len() as i64 + 1;
            if entered {
                tables.saga_status_at.insert(k.clone(), t.now);
            }
            if let Some(op) = &t.inventory {
                apply_inventory(tables, &t.tenant, &t.order_id, op)?;
            }
            write_effects(tables, t, first_seq);
            Ok(t.expected_version + 1)
        })
    }

    async fn due_commands(&self, now: i64, limit: i64) -> Result<Vec<CommandRecord>> {
        self.check("due_commands")?;
        let mut due: Vec<CommandRecord> = self
            .tables()
            .commands
            .values()
            .filter(|c| c.available_at <= now)
            .cloned()
            .collect();
        due.sort_by_key(|c| c.available_at);
        due.truncate(usize::try_from(limit).unwrap_or(0));
        Ok(due)
    }

    async fn due_work(
        &self,
        tenants: &[(TenantId, i64)],
        skip: &[String],
        now: i64,
    ) -> Result<Vec<(CommandRecord, OrderRecord)>> {
        self.check("due_work")?;
        let t = self.tables();
        let mut work = Vec::new();
        for (tenant, limit) in tenants {
            let mut due: Vec<&CommandRecord> = t
                .commands
                .values()
                .filter(|c| {
                    c.tenant_id == tenant.as_str() && c.available_at <= now && !skip.contains(&c.id)
                })
                .collect();
            due.sort_by_key(|c| c.available_at);
            for c in due.into_iter().take(usize::try_from(*limit).unwrap_or(0)) {
                if let Some(order) = t.orders.get(&key(&c.tenant_id, &c.order_id)) {
                    work.push((c.clone(), order.clone()));
                }
            }
        }
        Ok(work)
    }

    async fn lease_command(&self, id: &str, seen_due: i64, until: i64) -> Result<bool> {
        self.check("lease_command")?;
        let mut t = self.tables();
        match t.commands.get_mut(id) {
            Some(c) if c.available_at == seen_due => {
                c.available_at = until;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn next_command_at(&self) -> Result<Option<i64>> {
        self.check("next_command_at")?;
        Ok(self
            .tables()
            .commands
            .values()
            .map(|c| c.available_at)
            .min())
    }

    async fn order_for_command(
        &self,
        tenant: &TenantId,
        order: &OrderId,
        command: &str,
    ) -> Result<Option<OrderRecord>> {
        self.check("order_for_command")?;
        let t = self.tables();
        let order = t
            .orders
            .get(&key(tenant.as_str(), order.as_str()))
            .cloned()
            .ok_or(StoreError::NotFound)?;
        Ok(t.commands.contains_key(command).then_some(order))
    }

    async fn pending_commands(&self) -> Result<i64> {
        self.check("pending_commands")?;
        Ok(self.tables().commands.len() as i64)
    }
}

/// History, commands, outbox messages and the payment record of `t`.
pub(crate) fn write_effects(tables: &mut Tables, t: &Transition, first_seq: i64) {
    let k: Key = key(t.tenant.as_str(), t.order_id.as_str());
    let history = tables.events.entry(k.clone()).or_default();
    for (i, (event_type, data)) in t.events.iter().enumerate() {
        history.push(OrderEventRecord {
            seq: first_seq + i as i64,
            event_type: event_type.clone(),
            data: data.to_string(),
            at: t.now,
        });
    }
    for c in &t.commands {
        tables.commands.insert(
            c.id.clone(),
            CommandRecord {
                id: c.id.clone(),
                tenant_id: t.tenant.to_string(),
                order_id: t.order_id.to_string(),
                action: c.action.clone(),
                available_at: c.available_at,
            },
        );
    }
    for m in &t.outbox {
        tables.outbox.push(Queued {
            record: OutboxRecord {
                id: m.id.clone(),
                tenant_id: t.tenant.to_string(),
                order_id: t.order_id.to_string(),
                topic: m.topic.clone(),
                event_type: m.event_type.clone(),
                payload: m.payload.to_string(),
                created_at: t.now,
                trace_parent: t.trace_parent.clone(),
            },
            available_at: m.available_at.unwrap_or(t.now),
        });
    }
    if let Some(p) = &t.payment {
        let mut row: PaymentRecord = p.clone();
        row.at = t.now;
        tables.payments.entry(k).or_default().push(row);
    }
    for w in &t.step_state {
        let k = (t.tenant.to_string(), w.step.clone(), w.key.clone());
        match &w.op {
            StepStateOp::Put(v) => {
                tables.step_state.insert(k, (v.clone(), t.now));
            }
            StepStateOp::Delete => {
                tables.step_state.remove(&k);
            }
            // As SQLite does: a value that is not an integer counts as 0.
            StepStateOp::Add(delta) => {
                let before = tables
                    .step_state
                    .get(&k)
                    .and_then(|(v, _)| v.parse::<i64>().ok())
                    .unwrap_or(0);
                let sum = before.saturating_add(*delta).to_string();
                tables.step_state.insert(k, (sum, t.now));
            }
        }
    }
}

#[async_trait]
impl StepStates for MemoryStore {
    async fn step_state(
        &self,
        tenant: &TenantId,
        step: &str,
        key: &str,
    ) -> Result<Option<StepStateRecord>> {
        self.check("step_state")?;
        let k = (tenant.to_string(), step.to_string(), key.to_string());
        Ok(self
            .tables()
            .step_state
            .get(&k)
            .map(|(value, at)| StepStateRecord {
                step: step.to_string(),
                key: key.to_string(),
                value: value.clone(),
                updated_at: *at,
            }))
    }
}

/// Reserve holds each line in the warehouse with the most available (ties
/// by warehouse id); a reservation already made is not made again. Release
/// and Consume act on what the order holds.
fn apply_inventory(
    tables: &mut Tables,
    tenant: &TenantId,
    order: &OrderId,
    op: &InventoryOp,
) -> Result<()> {
    let (tenant, order) = (tenant.as_str(), order.as_str());
    match op {
        InventoryOp::Reserve(lines) => {
            if tables
                .reservations
                .iter()
                .any(|r| r.tenant == tenant && r.order == order)
            {
                return Ok(());
            }
            for (sku, quantity) in lines {
                let best = tables
                    .inventory
                    .iter()
                    .filter(|((t, s, _), (on_hand, reserved))| {
                        t == tenant && s == sku && on_hand - reserved >= *quantity
                    })
                    .max_by(|(ka, (ha, ra)), (kb, (hb, rb))| {
                        (ha - ra).cmp(&(hb - rb)).then(kb.2.cmp(&ka.2))
                    })
                    .map(|(k, _)| k.clone());
                let Some(k) = best else {
                    return Err(StoreError::InsufficientStock { sku: sku.clone() });
                };
                if let Some(level) = tables.inventory.get_mut(&k) {
                    level.1 += quantity;
                }
                tables.reservations.push(Reservation {
                    tenant: tenant.to_owned(),
                    order: order.to_owned(),
                    sku: sku.clone(),
                    warehouse: k.2,
                    quantity: *quantity,
                    state: "held",
                });
            }
        }
        InventoryOp::Restock { warehouse, lines } => {
            for (sku, quantity) in lines {
                let k = (tenant.to_owned(), sku.clone(), warehouse.clone());
                tables.inventory.entry(k).or_insert((0, 0)).0 += quantity;
            }
        }
        InventoryOp::Release | InventoryOp::Consume(_) | InventoryOp::ReleaseLines(_) => {
            let (only, consume) = match op {
                InventoryOp::Consume(skus) => (Some(skus), true),
                InventoryOp::ReleaseLines(skus) => (Some(skus), false),
                _ => (None, false),
            };
            for r in tables.reservations.iter_mut().filter(|r| {
                r.tenant == tenant
                    && r.order == order
                    && r.state == "held"
                    && only.is_none_or(|skus| skus.contains(&r.sku))
            }) {
                let k = (r.tenant.clone(), r.sku.clone(), r.warehouse.clone());
                let level = tables
                    .inventory
                    .get_mut(&k)
                    .filter(|(_, reserved)| *reserved >= r.quantity)
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "reservation of {} {} in {} exceeds what is reserved",
                            r.quantity, r.sku, r.warehouse
                        ))
                    })?;
                level.1 -= r.quantity;
                if consume {
                    level.0 -= r.quantity;
                }
                r.state = if consume { "consumed" } else { "released" };
            }
        }
    }
    Ok(())
}
