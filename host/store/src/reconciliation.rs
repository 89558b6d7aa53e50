//! Payment reconciliation's reads and writes: which orders have payment
//! operations not yet compared with the provider, and settling them. Several
//! hosts may reconcile at once; settling is a conditional update, so only
//! the host that marks the rows records the outcome's event.

use super::{OutboxMessage, Result, SqlStore, on_pool};
use async_trait::async_trait;
use oms_domain::{OrderId, TenantId};

/// An order with payment operations still to compare with the provider.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Unreconciled {
    pub tenant_id: String,
    pub order_id: String,
}

#[async_trait]
impl crate::contract::Reconciliation for SqlStore {
    async fn unreconciled_orders(
        &self,
        now: i64,
        before: i64,
        limit: i64,
    ) -> Result<Vec<Unreconciled>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as::<_, Unreconciled>(
                "SELECT tenant_id, order_id FROM payments
                 WHERE reconciled_at IS NULL AND reconcile_after <= $1 AND at <= $2
                 GROUP BY tenant_id, order_id ORDER BY MIN(at) LIMIT $3",
            )
            .bind(now)
            .bind(before)
            .bind(limit)
            .fetch_all(crate::counted::stmt(pool))
            .await?)
        })
    }

    async fn defer_reconciliation(
        &self,
        tenant: &TenantId,
        order: &OrderId,
        until: i64,
    ) -> Result<()> {
        on_pool!(self, write, |pool| {
            sqlx::query(
                "UPDATE payments SET reconcile_after = $3
                 WHERE tenant_id = $1 AND order_id = $2 AND reconciled_at IS NULL",
            )
            .bind(tenant.as_str())
            .bind(order.as_str())
            .bind(until)
            .execute(crate::counted::auto(pool))
            .await?;
            Ok(())
        })
    }

    /// Marks the order's operations up to and including `through` (a
    /// payment id) as reconciled with `outcome`, provided the order is still
    /// at `version` (the state the provider's answer was compared with). A
    /// mismatch also goes into the order's history and the outbox, bumping
    /// the version, in the same transaction. Returns whether this call
    /// marked anything: `false` when the order moved or another host was first.
    #[allow(clippy::too_many_arguments)]
    async fn settle_reconciliation(
        &self,
        tenant: &TenantId,
        order: &OrderId,
        version: i64,
        through: &str,
        outcome: &str,
        now: i64,
        mismatch: Option<&Mismatch>,
    ) -> Result<bool> {
        on_pool!(self, write, |pool| {
            let mut tx = crate::counted::tx(pool.begin().await?);
            let seq: Option<i64> = if mismatch.is_some() {
                sqlx::query_scalar(
                    "UPDATE orders SET version = version + 1, event_seq = event_seq + 1, updated_at = $4
                     WHERE tenant_id = $1 AND id = $2 AND version = $3 RETURNING event_seq",
                )
                .bind(tenant.as_str())
                .bind(order.as_str())
                .bind(version)
                .bind(now)
                .fetch_optional(crate::counted::stmt(&mut *tx))
                .await?
            } else {
                sqlx::query_scalar(
                    "SELECT event_seq FROM orders WHERE tenant_id = $1 AND id = $2 AND version = $3",
                )
                .bind(tenant.as_str())
                .bind(order.as_str())
                .bind(version)
                .fetch_optional(crate::counted::stmt(&mut *tx))
                .await?
            };
            let Some(seq) = seq else {
                return Ok(false);
            };
            let marked = sqlx::query(
                "UPDATE payments SET reconciled_at = $4, reconciliation = $5
                 WHERE tenant_id = $1 AND order_id = $2 AND id <= $3 AND reconciled_at IS NULL",
            )
            .bind(tenant.as_str())
            .bind(order.as_str())
            .bind(through)
            .bind(now)
            .bind(outcome)
            .execute(crate::counted::stmt(&mut *tx))
            .await?
            .rows_affected();
            if marked == 0 {
                return Ok(false);
            }
            if let Some(m) = mismatch {
                sqlx::query("INSERT INTO order_events (tenant_id, order_id, seq, event_type, data, at) VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(tenant.as_str())
                    .bind(order.as_str())
                    .bind(seq)
                    .bind(&m.message.event_type)
                    .bind(m.history.to_string())
                    .bind(now)
                    .execute(crate::counted::stmt(&mut *tx))
                    .await?;
                sqlx::query("INSERT INTO outbox (id, tenant_id, order_id, topic, event_type, payload, created_at, available_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)")
                    .bind(&m.message.id)
                    .bind(tenant.as_str())
                    .bind(order.as_str())
                    .bind(&m.message.topic)
                    .bind(&m.message.event_type)
                    .bind(m.message.payload.to_string())
                    .bind(now)
                    .execute(crate::counted::stmt(&mut *tx))
                    .await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }
}

/// A payment that differs from the provider's: its history entry and its
/// public message.
#[derive(Debug, Clone)]
pub struct Mismatch {
    pub history: serde_json::Value,
    pub message: OutboxMessage,
}
