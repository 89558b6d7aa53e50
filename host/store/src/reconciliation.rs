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

/// Reconciliation's read: unreconciled operations not deferred past `$1`,
/// recorded at or before `$2`, oldest first, at most `$3`. Public for the
/// plan test (`tests/storage_plans.rs`).
pub const UNRECONCILED: &str = "SELECT tenant_id, order_id FROM payments
    WHERE reconciled_at IS NULL AND reconcile_after <= $1 AND at <= $2
    ORDER BY at LIMIT $3";

/// Operation rows read per order asked for: an order has an authorization,
/// a capture, and sometimes a void or refunds. An order with more leaves
/// room for fewer orders this round, never none (its rows come first).
const ROWS_PER_ORDER: i64 = 8;

/// The first `limit` distinct orders of `rows`, in the order they appear.
fn first_orders(rows: Vec<Unreconciled>, limit: i64) -> Vec<Unreconciled> {
    let limit = usize::try_from(limit).unwrap_or(0);
    let mut seen = std::collections::HashSet::new();
    rows.into_iter()
        .filter(|r| seen.insert((r.tenant_id.clone(), r.order_id.clone())))
        .take(limit)
        .collect()
}

#[async_trait]
impl crate::contract::Reconciliation for SqlStore {
    async fn unreconciled_orders(
        &self,
        now: i64,
        before: i64,
        limit: i64,
    ) -> Result<Vec<Unreconciled>> {
        // The unreconciled operations oldest first, along the partial index
        // of them (a round reads a few hundred rows however many payments
        // there are), and the orders in the order they first appear: each
        // order's oldest operation first, as `GROUP BY … ORDER BY MIN(at)`,
        // which scanned and sorted every payment row ever recorded each
        // round (200,000 rows after 100,000 orders, and the largest single
        // allocation in a heap profile of the host).
        let rows: Vec<Unreconciled> = on_pool!(self, read, |pool| {
            sqlx::query_as::<_, Unreconciled>(UNRECONCILED)
                .bind(now)
                .bind(before)
                .bind(limit.saturating_mul(ROWS_PER_ORDER))
                .fetch_all(crate::counted::stmt(pool))
                .await
        })?;
        Ok(first_orders(rows, limit))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(order: &str) -> Unreconciled {
        Unreconciled {
            tenant_id: "acme".into(),
            order_id: order.into(),
        }
    }

    #[test]
    fn orders_come_once_each_in_the_order_of_their_oldest_operation() {
        let rows = ["b", "a", "b", "c", "a", "d"].map(row).to_vec();
        let ids = |v: Vec<Unreconciled>| v.into_iter().map(|r| r.order_id).collect::<Vec<_>>();
        assert_eq!(ids(first_orders(rows.clone(), 10)), ["b", "a", "c", "d"]);
        assert_eq!(ids(first_orders(rows.clone(), 2)), ["b", "a"]);
        assert!(first_orders(rows, 0).is_empty());
    }
}
