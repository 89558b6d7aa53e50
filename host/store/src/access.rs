//! Who may call: tenant API keys (hashed, scoped, rotated with a grace
//! period, revoked), named operators with a role, and the operators' audit
//! log. A key change raises its tenant's revision, so every host reloads
//! the tenant's keys with it.

use super::tenants::BUMP_TENANT;
use super::{Result, SqlStore, StoreError, on_pool};
use crate::contract::{ApiKeys, Operators};
use async_trait::async_trait;
use oms_domain::TenantId;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRecord {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    #[serde(skip)]
    pub secret_hash: String,
    /// Space-separated, e.g. `orders:read orders:write`.
    pub scopes: String,
    pub created_by: String,
    pub created_at: i64,
    /// Set when the key was rotated: it stops working then.
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    /// The key that took this one's place in a rotation.
    pub replaced_by: Option<String>,
}

impl ApiKeyRecord {
    /// Accepted at `now`: not revoked and not past its rotation's grace.
    pub fn valid_at(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// A key to store: its secret already hashed by the caller.
#[derive(Debug, Clone)]
pub struct NewApiKey<'a> {
    pub id: &'a str,
    pub tenant: &'a TenantId,
    pub name: &'a str,
    pub secret_hash: &'a str,
    pub scopes: &'a str,
    pub actor: &'a str,
    pub now: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct OperatorRecord {
    pub name: String,
    pub role: String,
    #[serde(skip)]
    pub token_hash: String,
    pub created_by: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct OperatorAuditRecord {
    pub at: i64,
    pub operator: String,
    /// The client address the call came from.
    pub source: String,
    pub action: String,
    pub tenant_id: Option<String>,
    pub target: String,
    pub detail: Option<String>,
}

const KEY_COLUMNS: &str = "id, tenant_id, name, secret_hash, scopes, created_by, created_at, expires_at, revoked_at, last_used_at, replaced_by";
const OPERATOR_COLUMNS: &str =
    "name, role, token_hash, created_by, created_at, revoked_at, last_used_at";

macro_rules! insert_key {
    ($tx:expr, $k:expr) => {
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, secret_hash, scopes, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind($k.id)
        .bind($k.tenant.as_str())
        .bind($k.name)
        .bind($k.secret_hash)
        .bind($k.scopes)
        .bind($k.actor)
        .bind($k.now)
        .execute(crate::counted::stmt(&mut *$tx))
        .await?
    };
}

macro_rules! bump {
    ($tx:expr, $tenant:expr, $now:expr) => {
        sqlx::query(BUMP_TENANT)
            .bind($tenant.as_str())
            .bind($now)
            .execute(crate::counted::stmt(&mut *$tx))
            .await?
    };
}

#[async_trait]
impl ApiKeys for SqlStore {
    async fn create_api_key(&self, key: &NewApiKey<'_>) -> Result<ApiKeyRecord> {
        on_pool!(self, write, |pool| {
            let mut tx = crate::counted::tx(pool.begin().await?);
            if bump!(tx, key.tenant, key.now).rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            insert_key!(tx, key);
            let record =
                sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
                    .bind(key.id)
                    .fetch_one(crate::counted::stmt(&mut *tx))
                    .await?;
            tx.commit().await?;
            Ok(record)
        })
    }

    async fn api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id"
            ))
            .bind(tenant.as_str())
            .fetch_all(crate::counted::stmt(pool))
            .await?)
        })
    }

    async fn rotate_api_key(
        &self,
        old_id: &str,
        new: &NewApiKey<'_>,
        grace_until: i64,
    ) -> Result<ApiKeyRecord> {
        on_pool!(self, write, |pool| {
            let mut tx = crate::counted::tx(pool.begin().await?);
            // Only a live key, not already rotated, can be rotated: a second
            // rotation of the same key (two clicks) is a conflict, not a
            // second live successor.
            let old: Option<ApiKeyRecord> = sqlx::query_as(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND tenant_id = $2"
            ))
            .bind(old_id)
            .bind(new.tenant.as_str())
            .fetch_optional(crate::counted::stmt(&mut *tx))
            .await?;
            let old = old.ok_or(StoreError::NotFound)?;
            let marked = sqlx::query(
                "UPDATE api_keys SET expires_at = $2, replaced_by = $3
                 WHERE id = $1 AND revoked_at IS NULL AND replaced_by IS NULL",
            )
            .bind(old_id)
            .bind(grace_until)
            .bind(new.id)
            .execute(crate::counted::stmt(&mut *tx))
            .await?;
            if marked.rows_affected() == 0 {
                return Err(StoreError::Conflict);
            }
            let with_old_scopes = NewApiKey {
                scopes: &old.scopes,
                name: &old.name,
                ..new.clone()
            };
            insert_key!(tx, with_old_scopes);
            bump!(tx, new.tenant, new.now);
            let record =
                sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
                    .bind(new.id)
                    .fetch_one(crate::counted::stmt(&mut *tx))
                    .await?;
            tx.commit().await?;
            Ok(record)
        })
    }

    async fn revoke_api_key(&self, tenant: &TenantId, id: &str, now: i64) -> Result<ApiKeyRecord> {
        on_pool!(self, write, |pool| {
            let mut tx = crate::counted::tx(pool.begin().await?);
            let done = sqlx::query(
                "UPDATE api_keys SET revoked_at = $3 WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(tenant.as_str())
            .bind(now)
            .execute(crate::counted::stmt(&mut *tx))
            .await?;
            let record: Option<ApiKeyRecord> = sqlx::query_as(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND tenant_id = $2"
            ))
            .bind(id)
            .bind(tenant.as_str())
            .fetch_optional(crate::counted::stmt(&mut *tx))
            .await?;
            let record = record.ok_or(StoreError::NotFound)?;
            if done.rows_affected() == 0 {
                return Err(StoreError::Conflict);
            }
            bump!(tx, tenant, now);
            tx.commit().await?;
            Ok(record)
        })
    }

    async fn touch_api_keys(&self, used: &[(String, i64)]) -> Result<()> {
        if used.is_empty() {
            return Ok(());
        }
        on_pool!(self, write, |pool| {
            let mut tx = crate::counted::tx(pool.begin().await?);
            for (id, at) in used {
                sqlx::query(
                    "UPDATE api_keys SET last_used_at = $2
                     WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
                )
                .bind(id)
                .bind(at)
                .execute(crate::counted::stmt(&mut *tx))
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }
}

#[async_trait]
impl Operators for SqlStore {
    async fn create_operator(&self, op: &OperatorRecord) -> Result<OperatorRecord> {
        on_pool!(self, write, |pool| {
            let mut tx = crate::counted::tx(pool.begin().await?);
            // A revoked operator's name may be given again, to a new token.
            sqlx::query("DELETE FROM operators WHERE name = $1 AND revoked_at IS NOT NULL")
                .bind(&op.name)
                .execute(crate::counted::stmt(&mut *tx))
                .await?;
            let inserted = sqlx::query(
                "INSERT INTO operators (name, role, token_hash, created_by, created_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
            )
            .bind(&op.name)
            .bind(&op.role)
            .bind(&op.token_hash)
            .bind(&op.created_by)
            .bind(op.created_at)
            .execute(crate::counted::stmt(&mut *tx))
            .await?;
            if inserted.rows_affected() == 0 {
                return Err(StoreError::Conflict);
            }
            tx.commit().await?;
            Ok(op.clone())
        })
    }

    async fn operators(&self) -> Result<Vec<OperatorRecord>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as(&format!(
                "SELECT {OPERATOR_COLUMNS} FROM operators ORDER BY name"
            ))
            .fetch_all(crate::counted::stmt(pool))
            .await?)
        })
    }

    async fn operator_by_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<OperatorRecord>> {
        on_pool!(self, write, |pool| {
            let found: Option<OperatorRecord> = sqlx::query_as(&format!(
                "SELECT {OPERATOR_COLUMNS} FROM operators WHERE token_hash = $1 AND revoked_at IS NULL"
            ))
            .bind(token_hash)
            .fetch_optional(crate::counted::stmt(pool))
            .await?;
            if let Some(op) = &found {
                sqlx::query("UPDATE operators SET last_used_at = $2 WHERE name = $1")
                    .bind(&op.name)
                    .bind(now)
                    .execute(crate::counted::auto(pool))
                    .await?;
            }
            Ok(found)
        })
    }

    async fn revoke_operator(&self, name: &str, now: i64) -> Result<OperatorRecord> {
        on_pool!(self, write, |pool| {
            let done = sqlx::query(
                "UPDATE operators SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
            )
            .bind(name)
            .bind(now)
            .execute(crate::counted::auto(pool))
            .await?;
            let record: Option<OperatorRecord> = sqlx::query_as(&format!(
                "SELECT {OPERATOR_COLUMNS} FROM operators WHERE name = $1"
            ))
            .bind(name)
            .fetch_optional(crate::counted::stmt(pool))
            .await?;
            match record {
                None => Err(StoreError::NotFound),
                Some(_) if done.rows_affected() == 0 => Err(StoreError::Conflict),
                Some(r) => Ok(r),
            }
        })
    }

    async fn audit(&self, entry: &OperatorAuditRecord) -> Result<()> {
        on_pool!(self, write, |pool| {
            sqlx::query(
                "INSERT INTO operator_audit (id, at, operator, source, action, tenant_id, target, detail)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(oms_clock::monotonic_ulid().to_string())
            .bind(entry.at)
            .bind(&entry.operator)
            .bind(&entry.source)
            .bind(&entry.action)
            .bind(&entry.tenant_id)
            .bind(&entry.target)
            .bind(&entry.detail)
            .execute(crate::counted::auto(pool))
            .await?;
            Ok(())
        })
    }

    async fn audit_log(
        &self,
        tenant: Option<&TenantId>,
        limit: i64,
    ) -> Result<Vec<OperatorAuditRecord>> {
        on_pool!(self, read, |pool| {
            Ok(sqlx::query_as(
                "SELECT at, operator, source, action, tenant_id, target, detail FROM operator_audit
                 WHERE ($1 IS NULL OR tenant_id = $1) ORDER BY at DESC, id DESC LIMIT $2",
            )
            .bind(tenant.map(TenantId::as_str))
            .bind(limit)
            .fetch_all(crate::counted::stmt(pool))
            .await?)
        })
    }
}
