//! Canary rollouts: which candidate version decides a share of a slot's
//! orders, under which thresholds, and how its calls went. Ending a canary
//! (promote, abort or automatic rollback) is conditional on the canary still
//! being the one the caller judged, so several hosts judging the same
//! canary end it once and audit it once.

use super::plugins::{ACTIVATION_OF_SLOT, audit};
use super::{ActivationRecord, Result, SqlStore, StoreError, on_pool};
use async_trait::async_trait;
use oms_domain::TenantId;
use serde::Serialize;

/// A canary as an operator starts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct CanaryRecord {
    pub tenant_id: String,
    pub slot: String,
    pub version: i64,
    /// Share of orders, 1 to 100, chosen by a hash of the order id.
    pub percent: i64,
    pub max_failure_permille: i64,
    pub max_p99_us: i64,
    pub max_divergence_permille: i64,
    /// Thresholds are judged only once this many calls are in.
    pub min_calls: i64,
    pub started_by: String,
    pub started_at: i64,
}

/// One call the canary version made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryCall {
    pub order_id: String,
    pub failed: bool,
    pub duration_us: i64,
    /// Whether the active version, run on the same input, agreed
    /// (deterministic slots only).
    pub agreed: Option<bool>,
    pub at: i64,
}

/// How a canary's latest calls went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CanaryWindow {
    pub calls: i64,
    pub failures: i64,
    /// Calls compared with the active version, and how many of those differed.
    pub compared: i64,
    pub divergences: i64,
    pub p99_us: i64,
}

const CANARY_COLUMNS: &str = "tenant_id, slot, version, percent, max_failure_permille, max_p99_us, max_divergence_permille, min_calls, started_by, started_at";

#[async_trait]
impl crate::contract::Canaries for SqlStore {
    async fn start_canary(&self, c: &CanaryRecord) -> Result<ActivationRecord> {
        on_pool!(self, write, |pool| {
            let mut tx = crate::counted::tx(pool.begin().await?);
            let exists: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM plugin_versions WHERE tenant_id = $1 AND slot = $2 AND version = $3",
            )
            .bind(&c.tenant_id)
            .bind(&c.slot)
            .bind(c.version)
            .fetch_one(crate::counted::stmt(&mut *tx))
            .await?;
            if exists == 0 {
                return Err(StoreError::NotFound);
            }
            sqlx::query(&format!(
                "INSERT INTO plugin_canaries ({CANARY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (tenant_id, slot) DO UPDATE SET
                    version = excluded.version, percent = excluded.percent,
                    max_failure_permille = excluded.max_failure_permille, max_p99_us = excluded.max_p99_us,
                    max_divergence_permille = excluded.max_divergence_permille, min_calls = excluded.min_calls,
                    started_by = excluded.started_by, started_at = excluded.started_at"
            ))
            .bind(&c.tenant_id)
            .bind(&c.slot)
            .bind(c.version)
            .bind(c.percent)
            .bind(c.max_failure_permille)
            .bind(c.max_p99_us)
            .bind(c.max_divergence_permille)
            .bind(c.min_calls)
            .bind(&c.started_by)
            .bind(c.started_at)
            .execute(crate::counted::stmt(&mut *tx))
            .await?;
            let detail = format!(
                "{}% of orders; rolls back above {}‰ failures, p99 {} µs or {}‰ divergence, after {} calls",
                c.percent,
                c.max_failure_permille,
                c.max_p99_us,
                c.max_divergence_permille,
                c.min_calls
            );
            audit!(
                tx,
                &c.tenant_id,
                &c.slot,
                "canary",
                c.version,
                &c.started_by,
                c.started_at,
                Some(detail)
            );
            let record: ActivationRecord = sqlx::query_as(ACTIVATION_OF_SLOT)
                .bind(&c.tenant_id)
                .bind(&c.slot)
                .fetch_optional(crate::counted::stmt(&mut *tx))
                .await?
                .ok_or(StoreError::NotFound)?;
            tx.commit().await?;
            Ok(record)
        })
    }

    async fn canary(&self, tenant: &TenantId, slot: &str) -> Result<Option<CanaryRecord>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as(&format!(
                "SELECT {CANARY_COLUMNS} FROM plugin_canaries WHERE tenant_id = $1 AND slot = $2"
            ))
            .bind(tenant.as_str())
            .bind(slot)
            .fetch_optional(crate::counted::stmt(pool))
            .await?)
        })
    }

    async fn canaries(&self) -> Result<Vec<CanaryRecord>> {
        on_pool!(self, read, |pool| {
            Ok(
                sqlx::query_as(&format!("SELECT {CANARY_COLUMNS} FROM plugin_canaries"))
                    .fetch_all(crate::counted::stmt(pool))
                    .await?,
            )
        })
    }

    async fn end_canary(
        &self,
        c: &CanaryRecord,
        action: &str,
        actor: &str,
        detail: Option<String>,
        now: i64,
    ) -> Result<bool> {
        on_pool!(self, write, |pool| {
            let mut tx = crate::counted::tx(pool.begin().await?);
            let ended = sqlx::query(
                "DELETE FROM plugin_canaries WHERE tenant_id = $1 AND slot = $2 AND version = $3 AND started_at = $4",
            )
            .bind(&c.tenant_id)
            .bind(&c.slot)
            .bind(c.version)
            .bind(c.started_at)
            .execute(crate::counted::stmt(&mut *tx))
            .await?
            .rows_affected()
                == 1;
            if ended {
                audit!(
                    tx,
                    &c.tenant_id,
                    &c.slot,
                    action,
                    c.version,
                    actor,
                    now,
                    detail
                );
            }
            tx.commit().await?;
            Ok(ended)
        })
    }

    async fn record_canary_call(&self, c: &CanaryRecord, call: &CanaryCall) -> Result<()> {
        on_pool!(self, write, |pool| {
            sqlx::query(
                "INSERT INTO plugin_canary_calls (id, tenant_id, slot, version, started_at, order_id, failed, duration_us, agreed, at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(format!("cny_{}", oms_clock::monotonic_ulid()))
            .bind(&c.tenant_id)
            .bind(&c.slot)
            .bind(c.version)
            .bind(c.started_at)
            .bind(&call.order_id)
            .bind(i64::from(call.failed))
            .bind(call.duration_us)
            .bind(call.agreed.map(i64::from))
            .bind(call.at)
            .execute(crate::counted::auto(pool))
            .await?;
        });
        Ok(())
    }

    async fn canary_window(&self, c: &CanaryRecord, window: i64) -> Result<CanaryWindow> {
        let rows: Vec<(i64, i64, Option<i64>)> = on_pool!(self, read, |pool| {
            sqlx::query_as(
                "SELECT failed, duration_us, agreed FROM plugin_canary_calls
                 WHERE tenant_id = $1 AND slot = $2 AND version = $3 AND started_at = $4
                 ORDER BY id DESC LIMIT $5",
            )
            .bind(&c.tenant_id)
            .bind(&c.slot)
            .bind(c.version)
            .bind(c.started_at)
            .bind(window)
            .fetch_all(crate::counted::stmt(pool))
            .await?
        });
        let mut durations: Vec<i64> = rows.iter().map(|r| r.1).collect();
        durations.sort_unstable();
        let p99_us = match durations.len() {
            0 => 0,
            n => durations[((n * 99).div_ceil(100)).saturating_sub(1).min(n - 1)],
        };
        Ok(CanaryWindow {
            calls: rows.len() as i64,
            failures: rows.iter().filter(|r| r.0 != 0).count() as i64,
            compared: rows.iter().filter(|r| r.2.is_some()).count() as i64,
            divergences: rows.iter().filter(|r| r.2 == Some(0)).count() as i64,
            p99_us,
        })
    }
}
