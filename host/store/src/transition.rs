//! One saga transition, committed atomically: the consumed command (inbox),
//! the stock change, the order row (optimistic version check), its history
//! events, the next commands, the outbox messages and the payment record.

use super::inventory::InventoryOp;
use super::{OutboxMessage, PaymentRecord, Result, SqlStore, on_pool};
use async_trait::async_trait;
use oms_domain::{OrderId, TenantId};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct NewCommand {
    pub id: String,
    /// JSON of the saga action to carry out.
    pub action: String,
    pub available_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CommandRecord {
    pub id: String,
    pub tenant_id: String,
    pub order_id: String,
    pub action: String,
    pub available_at: i64,
}

/// Columns of the order row a transition may change; `None` leaves one as is.
#[derive(Debug, Clone, Default)]
pub struct OrderPatch {
    pub status: Option<String>,
    pub payment_status: Option<String>,
    pub fulfillment_status: Option<String>,
    pub violations: Option<String>,
    pub cancellation_reason: Option<String>,
    pub shipment: Option<String>,
    pub saga_state: Option<String>,
    pub saga_status: Option<String>,
}

impl OrderPatch {
    /// The row as the patch leaves it (the columns only; version, history
    /// sequence and times are the transition's).
    pub fn apply_to(&self, order: &mut crate::OrderRecord) {
        for (field, value) in [
            (&mut order.status, &self.status),
            (&mut order.payment_status, &self.payment_status),
            (&mut order.fulfillment_status, &self.fulfillment_status),
            (&mut order.saga_state, &self.saga_state),
            (&mut order.saga_status, &self.saga_status),
        ] {
            if let Some(v) = value {
                field.clone_from(v);
            }
        }
        for (field, value) in [
            (&mut order.violations, &self.violations),
            (&mut order.cancellation_reason, &self.cancellation_reason),
            (&mut order.shipment, &self.shipment),
        ] {
            if value.is_some() {
                field.clone_from(value);
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Transition {
    pub tenant: TenantId,
    pub order_id: OrderId,
    pub expected_version: i64,
    /// The command whose outcome this is. It must still exist: if another
    /// delivery consumed it first, the whole transition is refused.
    pub consumes: Option<String>,
    pub inventory: Option<InventoryOp>,
    pub patch: OrderPatch,
    /// History entries: (type, data).
    pub events: Vec<(String, Value)>,
    pub commands: Vec<NewCommand>,
    pub outbox: Vec<OutboxMessage>,
    pub payment: Option<PaymentRecord>,
    /// A tenant-defined step's state writes (its call's, when it succeeded).
    pub step_state: Vec<crate::StepStateWrite>,
    pub now: i64,
    /// The W3C traceparent the transition was decided in: its outbox
    /// messages carry it to the transport.
    pub trace_parent: Option<String>,
}

/// Writes a transition's history events, commands, outbox rows and payment
/// record inside an open transaction. A macro, not a function, so the same
/// text compiles for both backends' transaction types.
macro_rules! write_effects {
    ($tx:ident, $t:expr, $first_seq:expr) => {{
        let t = $t;
        for (i, (event_type, data)) in t.events.iter().enumerate() {
            sqlx::query("INSERT INTO order_events (tenant_id, order_id, seq, event_type, data, at) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(t.tenant.as_str())
                .bind(t.order_id.as_str())
                .bind($first_seq + i as i64)
                .bind(event_type)
                .bind(data.to_string())
                .bind(t.now)
                .execute(crate::counted::stmt(&mut *$tx))
                .await?;
        }
        for c in &t.commands {
            sqlx::query("INSERT INTO saga_commands (id, tenant_id, order_id, action, available_at, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(&c.id)
                .bind(t.tenant.as_str())
                .bind(t.order_id.as_str())
                .bind(&c.action)
                .bind(c.available_at)
                .bind(t.now)
                .execute(crate::counted::stmt(&mut *$tx))
                .await?;
        }
        for m in &t.outbox {
            sqlx::query("INSERT INTO outbox (id, tenant_id, order_id, topic, event_type, payload, created_at, available_at, trace_parent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
                .bind(&m.id)
                .bind(t.tenant.as_str())
                .bind(t.order_id.as_str())
                .bind(&m.topic)
                .bind(&m.event_type)
                .bind(m.payload.to_string())
                .bind(t.now)
                .bind(m.available_at.unwrap_or(t.now))
                .bind(&t.trace_parent)
                .execute(crate::counted::stmt(&mut *$tx))
                .await?;
        }
        if let Some(p) = &t.payment {
            sqlx::query("INSERT INTO payments (id, tenant_id, order_id, op, amount, currency, status, provider_reference, error_code, idempotency_key, plugin_version, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)")
                .bind(&p.id)
                .bind(t.tenant.as_str())
                .bind(t.order_id.as_str())
                .bind(&p.op)
                .bind(p.amount)
                .bind(&p.currency)
                .bind(&p.status)
                .bind(&p.provider_reference)
                .bind(&p.error_code)
                .bind(&p.idempotency_key)
                .bind(&p.plugin_version)
                .bind(t.now)
                .execute(crate::counted::stmt(&mut *$tx))
                .await?;
        }
        crate::step_state::write_step_state!($tx, t);
    }};
}
pub(crate) use write_effects;

/// Consumes a transition's command inside `$tx`: [`StoreError::Duplicate`]
/// when another delivery consumed it first. With Kafka, its outbox message
/// goes too (applied before it went out: no need to publish it any more,
/// unless a relay is publishing it right now).
macro_rules! consume_command {
    ($tx:ident, $unpublish:expr, $command:expr) => {{
        let gone = sqlx::query("DELETE FROM saga_commands WHERE id = $1")
            .bind($command)
            .execute(crate::counted::stmt(&mut *$tx))
            .await?;
        if gone.rows_affected() == 0 {
            return Err($crate::StoreError::Duplicate);
        }
        if let Some(unpublish) = $unpublish {
            sqlx::query(unpublish)
                .bind($command)
                .execute(crate::counted::stmt(&mut *$tx))
                .await?;
        }
    }};
}
pub(crate) use consume_command;

/// Updates the order row under its version check inside `$tx` and applies
/// the stock change; the first history sequence number of the transition's
/// events. [`StoreError::Conflict`] on a stale version.
///
/// The order row first: its version check takes the row's lock, so every
/// later read in this transaction (the order's reservations) sees the state
/// this transition was decided on, never one a concurrent transition of the
/// same order is still changing.
macro_rules! update_order {
    ($tx:ident, $t:expr) => {{
        let t: &$crate::Transition = $t;
        let p = &t.patch;
        let seq: Option<i64> = sqlx::query_scalar(
            "UPDATE orders SET
                status = COALESCE($4, status),
                payment_status = COALESCE($5, payment_status),
                fulfillment_status = COALESCE($6, fulfillment_status),
                violations = COALESCE($7, violations),
                cancellation_reason = COALESCE($8, cancellation_reason),
                shipment = COALESCE($9, shipment),
                saga_state = COALESCE($10, saga_state),
                saga_status = COALESCE($11, saga_status),
                saga_status_at = CASE WHEN $11 <> saga_status THEN $13 ELSE saga_status_at END,
                version = version + 1,
                event_seq = event_seq + $12,
                updated_at = $13
             WHERE tenant_id = $1 AND id = $2 AND version = $3
             RETURNING event_seq",
        )
        .bind(t.tenant.as_str())
        .bind(t.order_id.as_str())
        .bind(t.expected_version)
        .bind(&p.status)
        .bind(&p.payment_status)
        .bind(&p.fulfillment_status)
        .bind(&p.violations)
        .bind(&p.cancellation_reason)
        .bind(&p.shipment)
        .bind(&p.saga_state)
        .bind(&p.saga_status)
        .bind(t.events.len() as i64)
        .bind(t.now)
        .fetch_optional(crate::counted::stmt(&mut *$tx))
        .await?;
        let Some(last_seq) = seq else {
            return Err($crate::StoreError::Conflict);
        };
        if let Some(op) = &t.inventory {
            $crate::inventory::apply_inventory!($tx, &t.tenant, &t.order_id, op, t.now);
        }
        last_seq - t.events.len() as i64 + 1
    }};
}
pub(crate) use update_order;

#[async_trait]
impl crate::contract::SagaLog for SqlStore {
    async fn commit_transition(&self, t: &Transition) -> Result<i64> {
        self.write_transition(std::sync::Arc::new(t.clone())).await
    }

    async fn commit_shared(&self, t: std::sync::Arc<Transition>) -> Result<i64> {
        self.write_transition(t).await
    }

    async fn due_commands(&self, now: i64, limit: i64) -> Result<Vec<CommandRecord>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as::<_, CommandRecord>(
                "SELECT id, tenant_id, order_id, action, available_at FROM saga_commands
                 WHERE available_at <= $1 ORDER BY available_at LIMIT $2",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(crate::counted::stmt(pool))
            .await?)
        })
    }

    async fn due_work(
        &self,
        tenants: &[(TenantId, i64)],
        skip: &[String],
        now: i64,
    ) -> Result<Vec<(CommandRecord, crate::OrderRecord)>> {
        self.read_due_work(tenants, skip, now).await
    }

    async fn lease_command(&self, id: &str, seen_due: i64, until: i64) -> Result<bool> {
        on_pool!(self, write, |pool| {
            let moved = sqlx::query(
                "UPDATE saga_commands SET available_at = $1 WHERE id = $2 AND available_at = $3",
            )
            .bind(until)
            .bind(id)
            .bind(seen_due)
            .execute(crate::counted::auto(pool))
            .await?;
            Ok(moved.rows_affected() == 1)
        })
    }

    async fn next_command_at(&self) -> Result<Option<i64>> {
        on_pool!(self, read, |pool| {
            Ok(
                sqlx::query_scalar("SELECT MIN(available_at) FROM saga_commands")
                    .fetch_one(crate::counted::stmt(pool))
                    .await?,
            )
        })
    }

    async fn order_for_command(
        &self,
        tenant: &TenantId,
        order: &OrderId,
        command: &str,
    ) -> Result<Option<crate::OrderRecord>> {
        use sqlx::{FromRow, Row};
        // One statement, so one snapshot on either database.
        let sql = format!(
            "SELECT {}, EXISTS (SELECT 1 FROM saga_commands WHERE id = $3) AS command_waiting
             FROM orders WHERE tenant_id = $1 AND id = $2",
            crate::orders::ORDER_COLUMNS
        );
        on_pool!(self, read, |pool| {
            let row = sqlx::query(&sql)
                .bind(tenant.as_str())
                .bind(order.as_str())
                .bind(command)
                .fetch_optional(crate::counted::stmt(pool))
                .await?
                .ok_or(crate::StoreError::NotFound)?;
            if !row.try_get::<bool, _>("command_waiting")? {
                return Ok(None);
            }
            Ok(Some(crate::OrderRecord::from_row(&row)?))
        })
    }

    async fn pending_commands(&self) -> Result<i64> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_scalar("SELECT COUNT(*) FROM saga_commands")
                .fetch_one(crate::counted::stmt(pool))
                .await?)
        })
    }
}
