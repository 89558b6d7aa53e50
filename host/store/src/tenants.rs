//! Tenants as data: each tenant's manifest (as JSON), whether it is
//! suspended, and a revision raised by every change to it or its keys, so
//! every host reloads exactly the tenants that moved.

use super::{Result, SqlStore, StoreError, on_pool};
use crate::contract::TenantConfigs;
use async_trait::async_trait;
use oms_domain::TenantId;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct TenantRecord {
    pub id: String,
    /// The manifest as JSON; the engine checks it before it is stored.
    pub spec: String,
    /// 0 or 1 (both backends keep it as an integer).
    pub suspended: i64,
    pub revision: i64,
    pub created_by: String,
    pub created_at: i64,
    pub updated_by: String,
    pub updated_at: i64,
}

impl TenantRecord {
    pub fn is_suspended(&self) -> bool {
        self.suspended != 0
    }
}

/// How a tenant's manifest is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantWrite<'a> {
    /// A new tenant; [`StoreError::Conflict`] if the id is taken.
    Create,
    /// A new manifest for an existing tenant; [`StoreError::NotFound`] if
    /// there is none, [`StoreError::Conflict`] if `expected_revision` is
    /// given and the tenant has moved on since.
    Update { expected_revision: Option<i64> },
    /// A manifest file read at start (its sha256 given): creates the
    /// tenant, or replaces its manifest only if the file changed since the
    /// last import, so restarting with the same file keeps API changes.
    Import { file_digest: &'a str },
}

/// What [`TenantConfigs::put_tenant`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantWritten {
    pub record: TenantRecord,
    /// `false` for an import of an unchanged file.
    pub changed: bool,
}

const COLUMNS: &str =
    "id, spec, suspended, revision, created_by, created_at, updated_by, updated_at";

/// Raises a tenant's revision, so every host reloads it (its keys changed).
pub(crate) const BUMP_TENANT: &str =
    "UPDATE tenants SET revision = revision + 1, updated_at = $2 WHERE id = $1";

#[async_trait]
impl TenantConfigs for SqlStore {
    async fn tenant_revisions(&self) -> Result<Vec<(String, i64)>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as("SELECT id, revision FROM tenants")
                .fetch_all(crate::counted::stmt(pool))
                .await?)
        })
    }

    async fn tenant_records(&self) -> Result<Vec<TenantRecord>> {
        on_pool!(self, read, |pool| {
            Ok(
                sqlx::query_as(&format!("SELECT {COLUMNS} FROM tenants ORDER BY id"))
                    .fetch_all(crate::counted::stmt(pool))
                    .await?,
            )
        })
    }

    async fn tenant_record(&self, id: &TenantId) -> Result<TenantRecord> {
        on_pool!(self, read, |pool| {
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM tenants WHERE id = $1"))
                .bind(id.as_str())
                .fetch_optional(crate::counted::stmt(pool))
                .await?
                .ok_or(StoreError::NotFound)
        })
    }

    async fn put_tenant(
        &self,
        id: &TenantId,
        spec: &str,
        write: TenantWrite<'_>,
        actor: &str,
        now: i64,
    ) -> Result<TenantWritten> {
        on_pool!(self, write, |pool| {
            let mut tx = crate::counted::tx(pool.begin().await?);
            let current: Option<(i64, Option<String>)> =
                sqlx::query_as("SELECT revision, imported_digest FROM tenants WHERE id = $1")
                    .bind(id.as_str())
                    .fetch_optional(crate::counted::stmt(&mut *tx))
                    .await?;
            let digest = match write {
                TenantWrite::Import { file_digest } => Some(file_digest),
                _ => None,
            };
            let changed = match (write, &current) {
                (TenantWrite::Create, Some(_)) => return Err(StoreError::Conflict),
                (TenantWrite::Update { .. }, None) => return Err(StoreError::NotFound),
                (
                    TenantWrite::Update {
                        expected_revision: Some(expected),
                    },
                    Some((revision, _)),
                ) if *revision != expected => return Err(StoreError::Conflict),
                (TenantWrite::Import { file_digest }, Some((_, imported))) => {
                    imported.as_deref() != Some(file_digest)
                }
                _ => true,
            };
            if changed && current.is_none() {
                sqlx::query(
                    "INSERT INTO tenants (id, spec, suspended, revision, imported_digest, created_by, created_at, updated_by, updated_at)
                     VALUES ($1, $2, 0, 1, $3, $4, $5, $4, $5)",
                )
                .bind(id.as_str())
                .bind(spec)
                .bind(digest)
                .bind(actor)
                .bind(now)
                .execute(crate::counted::stmt(&mut *tx))
                .await?;
            } else if changed {
                sqlx::query(
                    "UPDATE tenants SET spec = $2, revision = revision + 1,
                        imported_digest = COALESCE($3, imported_digest), updated_by = $4, updated_at = $5
                     WHERE id = $1",
                )
                .bind(id.as_str())
                .bind(spec)
                .bind(digest)
                .bind(actor)
                .bind(now)
                .execute(crate::counted::stmt(&mut *tx))
                .await?;
            }
            let record: TenantRecord =
                sqlx::query_as(&format!("SELECT {COLUMNS} FROM tenants WHERE id = $1"))
                    .bind(id.as_str())
                    .fetch_one(crate::counted::stmt(&mut *tx))
                    .await?;
            tx.commit().await?;
            Ok(TenantWritten { record, changed })
        })
    }

    async fn set_tenant_suspended(
        &self,
        id: &TenantId,
        suspended: bool,
        actor: &str,
        now: i64,
    ) -> Result<TenantRecord> {
        on_pool!(self, write, |pool| {
            let mut tx = crate::counted::tx(pool.begin().await?);
            let done = sqlx::query(
                "UPDATE tenants SET suspended = $2, revision = revision + 1, updated_by = $3, updated_at = $4
                 WHERE id = $1 AND suspended <> $2",
            )
            .bind(id.as_str())
            .bind(i64::from(suspended))
            .bind(actor)
            .bind(now)
            .execute(crate::counted::stmt(&mut *tx))
            .await?;
            let record: Option<TenantRecord> =
                sqlx::query_as(&format!("SELECT {COLUMNS} FROM tenants WHERE id = $1"))
                    .bind(id.as_str())
                    .fetch_optional(crate::counted::stmt(&mut *tx))
                    .await?;
            tx.commit().await?;
            match record {
                None => Err(StoreError::NotFound),
                // Already so: a second click changes nothing.
                Some(_) if done.rows_affected() == 0 => Err(StoreError::Conflict),
                Some(r) => Ok(r),
            }
        })
    }
}
