//! Recorded production plugin calls, for `oms plugin replay`: kept per
//! tenant and slot up to a bound, oldest pruned first.

use super::{Result, SqlStore, on_pool};
use async_trait::async_trait;
use oms_domain::TenantId;
use serde::{Deserialize, Serialize};

/// One call as the plugin saw it and as it answered. `input` and `output`
/// are JSON documents (see `plugins::calls`); `verdict` is the comparable
/// form of the output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct RecordedCall {
    pub tenant_id: String,
    pub slot: String,
    pub version: String,
    pub order_id: String,
    pub input: String,
    pub output: String,
    pub verdict: String,
    pub fuel_used: i64,
    pub duration_us: i64,
    pub at: i64,
}

const COLUMNS: &str =
    "tenant_id, slot, version, order_id, input, output, verdict, fuel_used, duration_us, at";

#[async_trait]
impl crate::contract::Recordings for SqlStore {
    async fn record_calls(&self, calls: &[RecordedCall]) -> Result<()> {
        on_pool!(self, write, |pool| {
            let mut tx = crate::counted::tx(pool.begin().await?);
            for c in calls {
                sqlx::query(&format!(
                    "INSERT INTO plugin_calls (id, {COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ))
                .bind(format!("call_{}", oms_clock::monotonic_ulid()))
                .bind(&c.tenant_id)
                .bind(&c.slot)
                .bind(&c.version)
                .bind(&c.order_id)
                .bind(&c.input)
                .bind(&c.output)
                .bind(&c.verdict)
                .bind(c.fuel_used)
                .bind(c.duration_us)
                .bind(c.at)
                .execute(crate::counted::stmt(&mut *tx))
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    async fn recorded_calls(
        &self,
        tenant: &TenantId,
        slot: &str,
        limit: i64,
    ) -> Result<Vec<RecordedCall>> {
        let mut calls: Vec<RecordedCall> = on_pool!(self, read, |pool| {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM plugin_calls WHERE tenant_id = $1 AND slot = $2 ORDER BY id DESC LIMIT $3"
            ))
            .bind(tenant.as_str())
            .bind(slot)
            .bind(limit)
            .fetch_all(crate::counted::stmt(pool))
            .await?
        });
        calls.reverse();
        Ok(calls)
    }

    async fn prune_recorded_calls(&self, keep: i64) -> Result<u64> {
        on_pool!(self, write, |pool| {
            Ok(sqlx::query(
                "DELETE FROM plugin_calls WHERE id IN (
                    SELECT id FROM (
                        SELECT id, ROW_NUMBER() OVER (PARTITION BY tenant_id, slot ORDER BY id DESC) AS n
                        FROM plugin_calls
                    ) ranked WHERE n > $1
                 )",
            )
            .bind(keep)
            .execute(crate::counted::auto(pool))
            .await?
            .rows_affected())
        })
    }
}
