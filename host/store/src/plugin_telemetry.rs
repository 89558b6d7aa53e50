//! How tenants' plugins run, from every host: cumulative call counts per
//! host and version, and the plugins' log lines (see migration 0012).

use super::{Result, SqlStore, on_pool};
use async_trait::async_trait;

/// One host's cumulative counts for a version of a tenant's slot.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PluginStatsRecord {
    pub host: String,
    pub tenant_id: String,
    pub slot: String,
    pub version: String,
    pub calls: i64,
    pub succeeded: i64,
    pub traps: i64,
    pub timeouts: i64,
    pub out_of_fuel: i64,
    pub output_too_large: i64,
    pub invalid_answers: i64,
    pub other_failures: i64,
    pub fuel_used_total: i64,
    /// The call latencies (µs) as an HDR histogram, serialized (V2, hex).
    pub latency: Option<String>,
    pub updated_at: i64,
}

/// A line a plugin logged, on some host.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PluginLogRecord {
    pub id: String,
    pub tenant_id: String,
    pub slot: String,
    pub host: String,
    pub version: String,
    pub at: i64,
    pub line: String,
}

const STATS: &str = "host, tenant_id, slot, version, calls, succeeded, traps, timeouts, out_of_fuel, \
    output_too_large, invalid_answers, other_failures, fuel_used_total, latency, updated_at";
const LOGS: &str = "id, tenant_id, slot, host, version, at, line";

#[async_trait]
impl crate::contract::PluginTelemetry for SqlStore {
    async fn save_plugin_stats(&self, rows: &[PluginStatsRecord]) -> Result<()> {
        on_pool!(self, write, |pool| {
            let mut tx = crate::counted::tx(pool.begin().await?);
            for r in rows {
                sqlx::query(&format!(
                    "INSERT INTO plugin_call_stats ({STATS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                     ON CONFLICT (host, tenant_id, slot, version) DO UPDATE SET
                       calls = excluded.calls, succeeded = excluded.succeeded, traps = excluded.traps,
                       timeouts = excluded.timeouts, out_of_fuel = excluded.out_of_fuel,
                       output_too_large = excluded.output_too_large, invalid_answers = excluded.invalid_answers,
                       other_failures = excluded.other_failures, fuel_used_total = excluded.fuel_used_total,
                       latency = excluded.latency, updated_at = excluded.updated_at"
                ))
                .bind(&r.host)
                .bind(&r.tenant_id)
                .bind(&r.slot)
                .bind(&r.version)
                .bind(r.calls)
                .bind(r.succeeded)
                .bind(r.traps)
                .bind(r.timeouts)
                .bind(r.out_of_fuel)
                .bind(r.output_too_large)
                .bind(r.invalid_answers)
                .bind(r.other_failures)
                .bind(r.fuel_used_total)
                .bind(&r.latency)
                .bind(r.updated_at)
                .execute(crate::counted::stmt(&mut *tx))
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    async fn plugin_stats(&self, tenant: &str, slot: &str) -> Result<Vec<PluginStatsRecord>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as::<_, PluginStatsRecord>(&format!(
                "SELECT {STATS} FROM plugin_call_stats WHERE tenant_id = $1 AND slot = $2 ORDER BY version, host"
            ))
            .bind(tenant)
            .bind(slot)
            .fetch_all(crate::counted::stmt(pool))
            .await?)
        })
    }

    async fn append_plugin_logs(&self, lines: &[PluginLogRecord]) -> Result<()> {
        on_pool!(self, write, |pool| {
            let mut tx = crate::counted::tx(pool.begin().await?);
            for l in lines {
                sqlx::query(&format!(
                    "INSERT INTO plugin_log_lines ({LOGS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ))
                .bind(&l.id)
                .bind(&l.tenant_id)
                .bind(&l.slot)
                .bind(&l.host)
                .bind(&l.version)
                .bind(l.at)
                .bind(&l.line)
                .execute(crate::counted::stmt(&mut *tx))
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    async fn plugin_logs(
        &self,
        tenant: &str,
        slot: &str,
        limit: i64,
    ) -> Result<Vec<PluginLogRecord>> {
        on_pool!(self, read, |pool| {
            let mut newest = sqlx::query_as::<_, PluginLogRecord>(&format!(
                "SELECT {LOGS} FROM plugin_log_lines WHERE tenant_id = $1 AND slot = $2
                 ORDER BY at DESC, id DESC LIMIT $3"
            ))
            .bind(tenant)
            .bind(slot)
            .bind(limit)
            .fetch_all(crate::counted::stmt(pool))
            .await?;
            newest.reverse();
            Ok(newest)
        })
    }

    async fn prune_plugin_logs(&self, before: i64) -> Result<u64> {
        on_pool!(self, write, |pool| {
            Ok(sqlx::query("DELETE FROM plugin_log_lines WHERE at < $1")
                .bind(before)
                .execute(crate::counted::auto(pool))
                .await?
                .rows_affected())
        })
    }
}
