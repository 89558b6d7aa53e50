//! Storing an uploaded plugin version: content-addressed bytes, the next
//! version number for the tenant's slot, the audit entry, and the tenant's
//! quota, all in one transaction.

use super::plugins::{PluginVersionRecord, VERSION_COLUMNS, audit};
use super::{Result, SqlStore, StoreError, on_pool};
use async_trait::async_trait;
use oms_domain::TenantId;

/// How much plugin code one tenant may keep, over all its slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginQuota {
    pub versions: i64,
    pub bytes: i64,
}

impl PluginQuota {
    pub const UNLIMITED: Self = Self {
        versions: i64::MAX,
        bytes: i64::MAX,
    };
}

#[async_trait]
impl crate::contract::PluginUploads for SqlStore {
    async fn put_plugin_version_within(
        &self,
        tenant: &TenantId,
        slot: &str,
        digest: &str,
        bytes: &[u8],
        uploaded_by: &str,
        now: i64,
        quota: PluginQuota,
    ) -> Result<(PluginVersionRecord, bool)> {
        // Two hosts (or two uploads) may number a version at once; the loser
        // of the unique constraint tries again and finds the winner's row or
        // the next free number.
        let mut attempts = 0;
        loop {
            match self
                .try_put_plugin_version(tenant, slot, digest, bytes, uploaded_by, now, quota)
                .await
            {
                Err(StoreError::Db(e))
                    if attempts < 5
                        && e.as_database_error()
                            .is_some_and(|d| d.is_unique_violation()) =>
                {
                    attempts += 1;
                }
                other => return other,
            }
        }
    }
}

impl SqlStore {
    #[allow(clippy::too_many_arguments)]
    async fn try_put_plugin_version(
        &self,
        tenant: &TenantId,
        slot: &str,
        digest: &str,
        bytes: &[u8],
        uploaded_by: &str,
        now: i64,
        quota: PluginQuota,
    ) -> Result<(PluginVersionRecord, bool)> {
        on_pool!(self, write, |pool| {
            let mut tx = crate::counted::tx(pool.begin().await?);
            let existing: Option<PluginVersionRecord> = sqlx::query_as(&format!(
                "SELECT {VERSION_COLUMNS} FROM plugin_versions WHERE tenant_id = $1 AND slot = $2 AND digest = $3"
            ))
            .bind(tenant.as_str())
            .bind(slot)
            .bind(digest)
            .fetch_optional(crate::counted::stmt(&mut *tx))
            .await?;
            if let Some(record) = existing {
                // Ended here rather than by drop: a dropped transaction is
                // rolled back only when its connection is next used, and on
                // SQLite's single writer the next caller then meets
                // "database is locked".
                tx.rollback().await?;
                return Ok((record, false));
            }
            let (count, stored): (i64, i64) = sqlx::query_as(
                "SELECT COUNT(*), CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM plugin_versions WHERE tenant_id = $1",
            )
            .bind(tenant.as_str())
            .fetch_one(crate::counted::stmt(&mut *tx))
            .await?;
            let refused = if count >= quota.versions {
                Some(format!(
                    "the tenant keeps {count} plugin versions, at most {}",
                    quota.versions
                ))
            } else if stored.saturating_add(bytes.len() as i64) > quota.bytes {
                Some(format!(
                    "{stored} bytes of plugins stored and {} more would pass the tenant's {} bytes",
                    bytes.len(),
                    quota.bytes
                ))
            } else {
                None
            };
            if let Some(why) = refused {
                tx.rollback().await?;
                return Err(StoreError::QuotaExceeded(why));
            }
            sqlx::query(
                "INSERT INTO plugin_blobs (digest, bytes, size_bytes, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (digest) DO NOTHING",
            )
            .bind(digest)
            .bind(bytes)
            .bind(bytes.len() as i64)
            .bind(now)
            .execute(crate::counted::stmt(&mut *tx))
            .await?;
            let version: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(MAX(version), 0) + 1 AS BIGINT) FROM plugin_versions WHERE tenant_id = $1 AND slot = $2",
            )
            .bind(tenant.as_str())
            .bind(slot)
            .fetch_one(crate::counted::stmt(&mut *tx))
            .await?;
            let record = PluginVersionRecord {
                tenant_id: tenant.to_string(),
                slot: slot.to_string(),
                version,
                digest: digest.to_string(),
                size_bytes: bytes.len() as i64,
                uploaded_by: uploaded_by.to_string(),
                uploaded_at: now,
            };
            sqlx::query(&format!("INSERT INTO plugin_versions ({VERSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"))
                .bind(&record.tenant_id)
                .bind(&record.slot)
                .bind(record.version)
                .bind(&record.digest)
                .bind(record.size_bytes)
                .bind(&record.uploaded_by)
                .bind(record.uploaded_at)
                .execute(crate::counted::stmt(&mut *tx))
                .await?;
            audit!(
                tx,
                tenant.as_str(),
                slot,
                "upload",
                version,
                uploaded_by,
                now
            );
            tx.commit().await?;
            Ok((record, true))
        })
    }
}
