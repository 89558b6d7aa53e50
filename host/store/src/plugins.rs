//! Tenant plugin versions: content-addressed component bytes, a version
//! number per tenant and slot, which version is active (and which was
//! before, for rollback), and an audit log of every change.

use super::{Result, SqlStore, StoreError, on_pool};
use async_trait::async_trait;
use oms_domain::TenantId;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct PluginVersionRecord {
    pub tenant_id: String,
    pub slot: String,
    pub version: i64,
    pub digest: String,
    pub size_bytes: i64,
    pub uploaded_by: String,
    pub uploaded_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ActivationRecord {
    pub tenant_id: String,
    pub slot: String,
    pub active_version: i64,
    pub previous_version: Option<i64>,
    pub changed_by: String,
    pub changed_at: i64,
    /// The active version's digest.
    pub digest: String,
    pub shadow_version: Option<i64>,
    pub shadow_digest: Option<String>,
    /// A version deciding `canary_percent` % of orders, if a canary runs.
    pub canary_version: Option<i64>,
    pub canary_digest: Option<String>,
    pub canary_percent: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ShadowResult {
    pub order_id: String,
    pub active_version: String,
    pub shadow_version: String,
    pub agreed: i64,
    pub active_verdict: String,
    pub shadow_verdict: String,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub tenant_id: String,
    pub slot: String,
    pub action: String,
    pub version: i64,
    pub actor: String,
    pub at: i64,
    /// Why, where the change says (an automatic rollback names its threshold).
    pub detail: Option<String>,
}

/// An activation to record.
#[derive(Debug, Clone, Copy)]
pub struct ActivationChange<'a> {
    pub version: i64,
    /// Who: `operator`, `manifest`, ….
    pub actor: &'a str,
    /// For the audit log: `activate` or `rollback`.
    pub action: &'a str,
    /// Only where nothing is active yet (start-up defaults).
    pub only_if_unset: bool,
}

pub(super) const VERSION_COLUMNS: &str =
    "tenant_id, slot, version, digest, size_bytes, uploaded_by, uploaded_at";
/// Activations with their versions' digests, as a literal so the
/// one-slot form below can be built from it at compile time.
macro_rules! activation_select {
    () => {
        "SELECT a.tenant_id, a.slot, a.active_version, a.previous_version, a.changed_by, a.changed_at, v.digest,
            a.shadow_version, s.digest AS shadow_digest,
            c.version AS canary_version, cv.digest AS canary_digest, c.percent AS canary_percent
     FROM plugin_activations a
     JOIN plugin_versions v ON v.tenant_id = a.tenant_id AND v.slot = a.slot AND v.version = a.active_version
     LEFT JOIN plugin_versions s ON s.tenant_id = a.tenant_id AND s.slot = a.slot AND s.version = a.shadow_version
     LEFT JOIN plugin_canaries c ON c.tenant_id = a.tenant_id AND c.slot = a.slot
     LEFT JOIN plugin_versions cv ON cv.tenant_id = c.tenant_id AND cv.slot = c.slot AND cv.version = c.version"
    };
}
const ACTIVATION_SELECT: &str = activation_select!();
/// The activation of one tenant's slot: `$1` tenant, `$2` slot.
pub(super) const ACTIVATION_OF_SLOT: &str = concat!(
    activation_select!(),
    " WHERE a.tenant_id = $1 AND a.slot = $2"
);

macro_rules! audit {
    ($tx:ident, $tenant:expr, $slot:expr, $action:expr, $version:expr, $actor:expr, $now:expr) => {
        audit!($tx, $tenant, $slot, $action, $version, $actor, $now, None::<String>)
    };
    ($tx:ident, $tenant:expr, $slot:expr, $action:expr, $version:expr, $actor:expr, $now:expr, $detail:expr) => {
        sqlx::query("INSERT INTO plugin_audit (id, tenant_id, slot, action, version, actor, at, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(format!("aud_{}", oms_clock::monotonic_ulid()))
            .bind($tenant)
            .bind($slot)
            .bind($action)
            .bind($version)
            .bind($actor)
            .bind($now)
            .bind($detail)
            .execute(crate::counted::stmt(&mut *$tx))
            .await?;
    };
}
pub(super) use audit;

#[async_trait]
impl crate::contract::PluginVersions for SqlStore {
    async fn plugin_versions(
        &self,
        tenant: &TenantId,
        slot: &str,
    ) -> Result<Vec<PluginVersionRecord>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as(&format!(
                "SELECT {VERSION_COLUMNS} FROM plugin_versions WHERE tenant_id = $1 AND slot = $2 ORDER BY version"
            ))
            .bind(tenant.as_str())
            .bind(slot)
            .fetch_all(crate::counted::stmt(pool))
            .await?)
        })
    }

    async fn plugin_blob_size(&self, digest: &str) -> Result<usize> {
        on_pool!(self, read, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT size_bytes FROM plugin_blobs WHERE digest = $1")
                .bind(digest)
                .fetch_optional(crate::counted::stmt(pool))
                .await?
                .map(|n| n as usize)
                .ok_or(StoreError::NotFound)
        })
    }

    async fn plugin_blob(&self, digest: &str) -> Result<Vec<u8>> {
        on_pool!(self, read, |pool| {
            sqlx::query_scalar::<_, Vec<u8>>("SELECT bytes FROM plugin_blobs WHERE digest = $1")
                .bind(digest)
                .fetch_optional(crate::counted::stmt(pool))
                .await?
                .ok_or(StoreError::NotFound)
        })
    }

    async fn put_plugin_artifact(
        &self,
        digest: &str,
        engine: &str,
        bytes: &[u8],
        now: i64,
    ) -> Result<()> {
        on_pool!(self, write, |pool| {
            sqlx::query(
                "INSERT INTO plugin_artifacts (digest, engine, bytes, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (digest, engine) DO NOTHING",
            )
            .bind(digest)
            .bind(engine)
            .bind(bytes)
            .bind(now)
            .execute(crate::counted::auto(pool))
            .await?;
        });
        Ok(())
    }

    async fn plugin_artifact(&self, digest: &str, engine: &str) -> Result<Option<Vec<u8>>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_scalar::<_, Vec<u8>>(
                "SELECT bytes FROM plugin_artifacts WHERE digest = $1 AND engine = $2",
            )
            .bind(digest)
            .bind(engine)
            .fetch_optional(crate::counted::stmt(pool))
            .await?)
        })
    }

    async fn activations(&self) -> Result<Vec<ActivationRecord>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as(ACTIVATION_SELECT)
                .fetch_all(crate::counted::stmt(pool))
                .await?)
        })
    }

    async fn activation(&self, tenant: &TenantId, slot: &str) -> Result<Option<ActivationRecord>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as(ACTIVATION_OF_SLOT)
                .bind(tenant.as_str())
                .bind(slot)
                .fetch_optional(crate::counted::stmt(pool))
                .await?)
        })
    }

    async fn activate_plugin(
        &self,
        tenant: &TenantId,
        slot: &str,
        change: &ActivationChange<'_>,
        now: i64,
    ) -> Result<ActivationRecord> {
        on_pool!(self, write, |pool| {
            let mut tx = crate::counted::tx(pool.begin().await?);
            let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM plugin_versions WHERE tenant_id = $1 AND slot = $2 AND version = $3")
                .bind(tenant.as_str())
                .bind(slot)
                .bind(change.version)
                .fetch_one(crate::counted::stmt(&mut *tx))
                .await?;
            if exists == 0 {
                return Err(StoreError::NotFound);
            }
            let current: Option<i64> = sqlx::query_scalar(
                "SELECT active_version FROM plugin_activations WHERE tenant_id = $1 AND slot = $2",
            )
            .bind(tenant.as_str())
            .bind(slot)
            .fetch_optional(crate::counted::stmt(&mut *tx))
            .await?;
            if current.is_none() || (!change.only_if_unset && current != Some(change.version)) {
                sqlx::query(
                    "INSERT INTO plugin_activations (tenant_id, slot, active_version, previous_version, changed_by, changed_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (tenant_id, slot) DO UPDATE SET
                        active_version = excluded.active_version,
                        previous_version = excluded.previous_version,
                        changed_by = excluded.changed_by,
                        changed_at = excluded.changed_at",
                )
                .bind(tenant.as_str())
                .bind(slot)
                .bind(change.version)
                .bind(current)
                .bind(change.actor)
                .bind(now)
                .execute(crate::counted::stmt(&mut *tx))
                .await?;
                audit!(
                    tx,
                    tenant.as_str(),
                    slot,
                    change.action,
                    change.version,
                    change.actor,
                    now
                );
                // A canary of the version now active has nothing left to prove.
                sqlx::query(
                    "DELETE FROM plugin_canaries WHERE tenant_id = $1 AND slot = $2 AND version = $3",
                )
                .bind(tenant.as_str())
                .bind(slot)
                .bind(change.version)
                .execute(crate::counted::stmt(&mut *tx))
                .await?;
            }
            let record: ActivationRecord = sqlx::query_as(ACTIVATION_OF_SLOT)
                .bind(tenant.as_str())
                .bind(slot)
                .fetch_one(crate::counted::stmt(&mut *tx))
                .await?;
            tx.commit().await?;
            Ok(record)
        })
    }

    async fn set_shadow(
        &self,
        tenant: &TenantId,
        slot: &str,
        version: Option<i64>,
        actor: &str,
        now: i64,
    ) -> Result<ActivationRecord> {
        on_pool!(self, write, |pool| {
            let mut tx = crate::counted::tx(pool.begin().await?);
            if let Some(v) = version {
                let exists: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM plugin_versions WHERE tenant_id = $1 AND slot = $2 AND version = $3")
                        .bind(tenant.as_str())
                        .bind(slot)
                        .bind(v)
                        .fetch_one(crate::counted::stmt(&mut *tx))
                        .await?;
                if exists == 0 {
                    return Err(StoreError::NotFound);
                }
            }
            let updated = sqlx::query("UPDATE plugin_activations SET shadow_version = $3 WHERE tenant_id = $1 AND slot = $2")
                .bind(tenant.as_str())
                .bind(slot)
                .bind(version)
                .execute(crate::counted::stmt(&mut *tx))
                .await?;
            if updated.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            let action = if version.is_some() {
                "shadow"
            } else {
                "unshadow"
            };
            audit!(
                tx,
                tenant.as_str(),
                slot,
                action,
                version.unwrap_or(0),
                actor,
                now
            );
            let record: ActivationRecord = sqlx::query_as(ACTIVATION_OF_SLOT)
                .bind(tenant.as_str())
                .bind(slot)
                .fetch_one(crate::counted::stmt(&mut *tx))
                .await?;
            tx.commit().await?;
            Ok(record)
        })
    }

    async fn record_shadow(&self, tenant: &TenantId, slot: &str, r: &ShadowResult) -> Result<()> {
        on_pool!(self, write, |pool| {
            sqlx::query(
                "INSERT INTO plugin_shadow_results (id, tenant_id, slot, order_id, active_version, shadow_version, agreed, active_verdict, shadow_verdict, at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(format!("shd_{}", oms_clock::monotonic_ulid()))
            .bind(tenant.as_str())
            .bind(slot)
            .bind(&r.order_id)
            .bind(&r.active_version)
            .bind(&r.shadow_version)
            .bind(r.agreed)
            .bind(&r.active_verdict)
            .bind(&r.shadow_verdict)
            .bind(r.at)
            .execute(crate::counted::auto(pool))
            .await?;
        });
        Ok(())
    }

    async fn shadow_summary(
        &self,
        tenant: &TenantId,
        slot: &str,
        shadow_version: &str,
    ) -> Result<(i64, i64, Vec<ShadowResult>)> {
        on_pool!(self, read, |pool| {
            let (calls, agreed): (i64, i64) = sqlx::query_as(
                "SELECT COUNT(*), CAST(COALESCE(SUM(agreed), 0) AS BIGINT) FROM plugin_shadow_results
                 WHERE tenant_id = $1 AND slot = $2 AND shadow_version = $3",
            )
            .bind(tenant.as_str())
            .bind(slot)
            .bind(shadow_version)
            .fetch_one(crate::counted::stmt(pool))
            .await?;
            let divergences: Vec<ShadowResult> = sqlx::query_as(
                "SELECT order_id, active_version, shadow_version, agreed, active_verdict, shadow_verdict, at
                 FROM plugin_shadow_results WHERE tenant_id = $1 AND slot = $2 AND shadow_version = $3 AND agreed = 0
                 ORDER BY id DESC LIMIT 50",
            )
            .bind(tenant.as_str())
            .bind(slot)
            .bind(shadow_version)
            .fetch_all(crate::counted::stmt(pool))
            .await?;
            Ok((calls, agreed, divergences))
        })
    }

    async fn plugin_audit(&self, tenant: &TenantId) -> Result<Vec<AuditRecord>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as("SELECT tenant_id, slot, action, version, actor, at, detail FROM plugin_audit WHERE tenant_id = $1 ORDER BY id")
                .bind(tenant.as_str())
                .fetch_all(crate::counted::stmt(pool))
                .await?)
        })
    }
}
