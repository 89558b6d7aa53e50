//! Stock per tenant, SKU and warehouse. Reservations are rows with a state
//! (`held` → `released` | `consumed`); every change is a conditional update,
//! so stock never goes negative and a repeated operation changes nothing.

use super::{Result, SqlStore, StoreError, on_pool};
use async_trait::async_trait;
use oms_domain::{Sku, TenantId, WarehouseId};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryOp {
    /// Hold `quantity` of each SKU for the order, each line from one warehouse.
    Reserve(Vec<(String, i64)>),
    /// Give back what the order holds.
    Release,
    /// Ship these SKUs: what the order holds of them leaves on-hand and
    /// reserved (the rest stays held).
    Consume(Vec<String>),
    /// Give back what the order holds of these SKUs only (lines cancelled
    /// before they shipped; the rest stays held).
    ReleaseLines(Vec<String>),
    /// Put returned goods back on hand in `warehouse` (made known there
    /// if it held none of a SKU before).
    Restock {
        warehouse: String,
        lines: Vec<(String, i64)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct StockLevel {
    pub warehouse_id: String,
    pub on_hand: i64,
    pub reserved: i64,
}

/// Applies an [`InventoryOp`] inside an open transaction `$tx`. With a
/// last argument `$held` (a `Vec<(String, String, i64)>`), the new
/// reservations' rows (SKU, warehouse, quantity) are pushed there for the
/// caller to insert, many to a statement (the group-commit batch), instead
/// of one statement each; that form takes first the module whose `query`
/// functions run the statements (`sqlx`, or the writer's `own`).
macro_rules! apply_inventory {
    ($tx:ident, $tenant:expr, $order:expr, $op:expr, $now:expr) => {{
        let (tenant, order, now): (&oms_domain::TenantId, &oms_domain::OrderId, i64) =
            ($tenant, $order, $now);
        let mut held: Vec<(String, String, i64)> = Vec::new();
        $crate::inventory::apply_inventory!(sqlx, $tx, tenant, order, $op, now, held);
        for (sku, warehouse, quantity) in held {
            sqlx::query(
                "INSERT INTO reservations (tenant_id, order_id, sku, warehouse_id, quantity, state, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 'held', $6, $6)",
            )
            .bind(tenant.as_str())
            .bind(order.as_str())
            .bind(&sku)
            .bind(&warehouse)
            .bind(quantity)
            .bind(now)
            .execute(crate::counted::stmt(&mut *$tx))
            .await?;
        }
    }};
    ($q:ident, $tx:ident, $tenant:expr, $order:expr, $op:expr, $now:expr, $held:ident) => {{
        let tenant: &oms_domain::TenantId = $tenant;
        let order: &oms_domain::OrderId = $order;
        let now: i64 = $now;
        match $op {
            $crate::InventoryOp::Reserve(lines) => {
                for (n, (sku, quantity)) in lines.iter().enumerate() {
                    // The warehouse with the most available, held in the
                    // same statement (one round trip, not two; the
                    // condition is checked again on the row it updates),
                    // unless the order holds stock already: reserved by an
                    // earlier delivery of the same step. (PostgreSQL's
                    // `oms_reserve_lines`, migration 0020, runs this same
                    // statement for a batch's lines: change both together.)
                    let warehouse: Option<String> = $q::query_scalar(
                        "UPDATE inventory SET reserved = reserved + $3, updated_at = $4
                         WHERE tenant_id = $1 AND sku = $2 AND on_hand - reserved >= $3
                           AND warehouse_id = (
                             SELECT warehouse_id FROM inventory
                             WHERE tenant_id = $1 AND sku = $2 AND on_hand - reserved >= $3
                             ORDER BY on_hand - reserved DESC, warehouse_id LIMIT 1)
                           AND NOT EXISTS (
                             SELECT 1 FROM reservations WHERE tenant_id = $1 AND order_id = $5)
                         RETURNING warehouse_id",
                    )
                    .bind(tenant.as_str())
                    .bind(sku)
                    .bind(*quantity)
                    .bind(now)
                    .bind(order.as_str())
                    .fetch_optional(crate::counted::stmt(&mut *$tx))
                    .await?;
                    let Some(warehouse) = warehouse else {
                        // Short of stock, or reserved before. Only the first
                        // line can find the latter: this reservation's own
                        // rows are inserted after its last line.
                        if n == 0 {
                            let held: i64 = $q::query_scalar(
                                "SELECT COUNT(*) FROM reservations WHERE tenant_id = $1 AND order_id = $2",
                            )
                            .bind(tenant.as_str())
                            .bind(order.as_str())
                            .fetch_one(crate::counted::stmt(&mut *$tx))
                            .await?;
                            if held > 0 {
                                break;
                            }
                        }
                        return Err($crate::StoreError::InsufficientStock { sku: sku.clone() });
                    };
                    $held.push((sku.clone(), warehouse, *quantity));
                }
            }
            $crate::InventoryOp::Restock { warehouse, lines } => {
                for (sku, quantity) in lines {
                    $q::query(
                        "INSERT INTO inventory (tenant_id, sku, warehouse_id, on_hand, reserved, updated_at)
                         VALUES ($1, $2, $3, $4, 0, $5)
                         ON CONFLICT (tenant_id, sku, warehouse_id)
                         DO UPDATE SET on_hand = inventory.on_hand + $4, updated_at = $5",
                    )
                    .bind(tenant.as_str())
                    .bind(sku)
                    .bind(warehouse)
                    .bind(*quantity)
                    .bind(now)
                    .execute(crate::counted::stmt(&mut *$tx))
                    .await?;
                }
            }
            op @ ($crate::InventoryOp::Release
            | $crate::InventoryOp::Consume(_)
            | $crate::InventoryOp::ReleaseLines(_)) => {
                let (only, consume) = match op {
                    $crate::InventoryOp::Consume(skus) => (Some(skus), true),
                    $crate::InventoryOp::ReleaseLines(skus) => (Some(skus), false),
                    _ => (None, false),
                };
                let held: Vec<(String, String, i64)> = $q::query_as(
                    "SELECT sku, warehouse_id, quantity FROM reservations
                     WHERE tenant_id = $1 AND order_id = $2 AND state = 'held'
                     ORDER BY sku, warehouse_id",
                )
                .bind(tenant.as_str())
                .bind(order.as_str())
                .fetch_all(crate::counted::stmt(&mut *$tx))
                .await?;
                for (sku, warehouse, quantity) in held {
                    if only.is_some_and(|skus| !skus.contains(&sku)) {
                        continue;
                    }
                    let sql = if consume {
                        "UPDATE inventory SET reserved = reserved - $4, on_hand = on_hand - $4, updated_at = $5
                         WHERE tenant_id = $1 AND sku = $2 AND warehouse_id = $3 AND reserved >= $4"
                    } else {
                        "UPDATE inventory SET reserved = reserved - $4, updated_at = $5
                         WHERE tenant_id = $1 AND sku = $2 AND warehouse_id = $3 AND reserved >= $4"
                    };
                    let updated = $q::query(sql)
                        .bind(tenant.as_str())
                        .bind(&sku)
                        .bind(&warehouse)
                        .bind(quantity)
                        .bind(now)
                        .execute(crate::counted::stmt(&mut *$tx))
                        .await?;
                    if updated.rows_affected() != 1 {
                        return Err($crate::StoreError::Corrupt(format!(
                            "reservation of {quantity} {sku} in {warehouse} exceeds what is reserved"
                        )));
                    }
                    $q::query(
                        "UPDATE reservations SET state = $5, updated_at = $6
                         WHERE tenant_id = $1 AND order_id = $2 AND sku = $3 AND warehouse_id = $4 AND state = 'held'",
                    )
                    .bind(tenant.as_str())
                    .bind(order.as_str())
                    .bind(&sku)
                    .bind(&warehouse)
                    .bind(if consume { "consumed" } else { "released" })
                    .bind(now)
                    .execute(crate::counted::stmt(&mut *$tx))
                    .await?;
                }
            }
        }
    }};
}
pub(crate) use apply_inventory;

#[async_trait]
impl crate::contract::Inventory for SqlStore {
    async fn set_stock(
        &self,
        tenant: &TenantId,
        sku: &Sku,
        warehouse: &WarehouseId,
        on_hand: i64,
        now: i64,
    ) -> Result<StockLevel> {
        on_pool!(self, write, |pool| {
            let mut tx = crate::counted::tx(pool.begin().await?);
            sqlx::query(
                "INSERT INTO inventory (tenant_id, sku, warehouse_id, on_hand, reserved, updated_at)
                 VALUES ($1, $2, $3, 0, 0, $4) ON CONFLICT (tenant_id, sku, warehouse_id) DO NOTHING",
            )
            .bind(tenant.as_str())
            .bind(sku.as_str())
            .bind(warehouse.as_str())
            .bind(now)
            .execute(crate::counted::stmt(&mut *tx))
            .await?;
            let level: Option<StockLevel> = sqlx::query_as(
                "UPDATE inventory SET on_hand = $4, updated_at = $5
                 WHERE tenant_id = $1 AND sku = $2 AND warehouse_id = $3 AND reserved <= $4
                 RETURNING warehouse_id, on_hand, reserved",
            )
            .bind(tenant.as_str())
            .bind(sku.as_str())
            .bind(warehouse.as_str())
            .bind(on_hand)
            .bind(now)
            .fetch_optional(crate::counted::stmt(&mut *tx))
            .await?;
            let Some(level) = level else {
                return Err(StoreError::InsufficientStock {
                    sku: sku.to_string(),
                });
            };
            tx.commit().await?;
            Ok(level)
        })
    }

    async fn seed_stock(
        &self,
        tenant: &TenantId,
        sku: &Sku,
        warehouse: &WarehouseId,
        on_hand: i64,
        now: i64,
    ) -> Result<()> {
        on_pool!(self, write, |pool| {
            sqlx::query(
                "INSERT INTO inventory (tenant_id, sku, warehouse_id, on_hand, reserved, updated_at)
                 VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT (tenant_id, sku, warehouse_id) DO NOTHING",
            )
            .bind(tenant.as_str())
            .bind(sku.as_str())
            .bind(warehouse.as_str())
            .bind(on_hand)
            .bind(now)
            .execute(crate::counted::auto(pool))
            .await?;
        });
        Ok(())
    }

    async fn stock(&self, tenant: &TenantId, sku: &Sku) -> Result<Vec<StockLevel>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as(
                "SELECT warehouse_id, on_hand, reserved FROM inventory
                 WHERE tenant_id = $1 AND sku = $2 ORDER BY warehouse_id",
            )
            .bind(tenant.as_str())
            .bind(sku.as_str())
            .fetch_all(crate::counted::stmt(pool))
            .await?)
        })
    }

    async fn reservations(
        &self,
        tenant: &TenantId,
        order: &oms_domain::OrderId,
    ) -> Result<Vec<(String, String, i64)>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as(
                "SELECT sku, state, quantity FROM reservations WHERE tenant_id = $1 AND order_id = $2 ORDER BY sku",
            )
            .bind(tenant.as_str())
            .bind(order.as_str())
            .fetch_all(crate::counted::stmt(pool))
            .await?)
        })
    }
}
