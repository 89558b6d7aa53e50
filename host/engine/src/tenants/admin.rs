//! What operators do to tenants: create, update, suspend and resume them,
//! and make, rotate and revoke their API keys. Each change is checked
//! first, committed with the tenant's revision raised, then put in place on
//! this host at once; the others follow within a sync.

use super::keys::{Scope, new_secret, secret_hash};
use super::sync::{SyncError, check, reload};
use super::{Target, Tenant, TenantError, TenantSpec};
use crate::Platform;
use crate::rollout::{self, PluginOpError};
use oms_domain::TenantId;
use oms_store::{ApiKeyRecord, NewApiKey, StoreError, TenantRecord, TenantWrite};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TenantOpError {
    /// The manifest or request is refused; `field` names where.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("tenant `{0}` already exists")]
    Exists(String),
    #[error("not found")]
    NotFound,
    /// The state does not allow it (already so, or changed meanwhile).
    #[error("{0}")]
    Conflict(&'static str),
    #[error("storage unavailable: {0}")]
    Store(StoreError),
    #[error("registering the tenant's components failed: {0}")]
    Plugins(PluginOpError),
}

impl From<SyncError> for TenantOpError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Tenant(TenantError::Manifest { field, message, .. }) => {
                Self::Invalid { field, message }
            }
            SyncError::Tenant(TenantError::Plugin { slot, error, .. }) => Self::Invalid {
                field: format!("plugins.{slot}.component"),
                message: error.to_string(),
            },
            SyncError::Tenant(TenantError::Io(path, e)) => Self::Invalid {
                field: String::new(),
                message: format!("{}: {e}", path.display()),
            },
            SyncError::Store(e) => Self::Store(e),
        }
    }
}

impl From<StoreError> for TenantOpError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound,
            other => Self::Store(other),
        }
    }
}

/// Creates a tenant from its manifest; its components become version 1
/// of each slot, active.
pub async fn create(
    p: &Platform,
    spec: &TenantSpec,
    actor: &str,
) -> Result<Arc<Tenant>, TenantOpError> {
    let built = check(p, "request", spec).await?;
    let id = built.id.clone();
    p.store
        .put_tenant(
            &id,
            &spec.to_stored(),
            TenantWrite::Create,
            actor,
            oms_clock::now_ms(),
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict => TenantOpError::Exists(id.to_string()),
            other => other.into(),
        })?;
    let tenant = reload(p, &id).await?;
    register(p, &tenant, &[], actor).await?;
    if p.tenant_options.demo {
        // As at start for the manifests' tenants: demo stock in demo mode.
        let now = oms_clock::now_ms();
        for (sku, warehouse, on_hand) in &tenant.demo_stock {
            p.store
                .seed_stock(&tenant.id, sku, warehouse, *on_hand, now)
                .await?;
        }
    }
    Ok(tenant)
}

/// Replaces a tenant's manifest. A slot whose component changed runs the
/// new one (recorded as an activation, so it can be rolled back).
pub async fn update(
    p: &Platform,
    id: &TenantId,
    spec: &TenantSpec,
    expected_revision: Option<i64>,
    actor: &str,
) -> Result<Arc<Tenant>, TenantOpError> {
    if spec.id != id.as_str() {
        return Err(TenantOpError::Invalid {
            field: "id".into(),
            message: format!("the manifest is for `{}`, not `{id}`", spec.id),
        });
    }
    let before = p.store.tenant_record(id).await?;
    let old: TenantSpec = TenantSpec::parse("stored", &before.spec, super::SpecFormat::Json)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    check(p, "request", spec).await?;
    p.store
        .put_tenant(
            id,
            &spec.to_stored(),
            TenantWrite::Update { expected_revision },
            actor,
            oms_clock::now_ms(),
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict => {
                TenantOpError::Conflict("the tenant changed since that revision; read it again")
            }
            other => other.into(),
        })?;
    let before: Vec<(Target, &str)> = old.components();
    let changed: Vec<Target> = spec
        .components()
        .into_iter()
        .filter(|now| !before.contains(now))
        .map(|(target, _)| target)
        .collect();
    let tenant = reload(p, id).await?;
    register(p, &tenant, &changed, actor).await?;
    Ok(tenant)
}

async fn register(
    p: &Platform,
    tenant: &Tenant,
    changed: &[Target],
    actor: &str,
) -> Result<(), TenantOpError> {
    rollout::register_components(p, tenant, changed, actor)
        .await
        .map_err(TenantOpError::Plugins)
}

pub async fn set_suspended(
    p: &Platform,
    id: &TenantId,
    suspended: bool,
    actor: &str,
) -> Result<TenantRecord, TenantOpError> {
    let record = p
        .store
        .set_tenant_suspended(id, suspended, actor, oms_clock::now_ms())
        .await
        .map_err(|e| match e {
            StoreError::Conflict if suspended => {
                TenantOpError::Conflict("the tenant is already suspended")
            }
            StoreError::Conflict => TenantOpError::Conflict("the tenant is not suspended"),
            other => other.into(),
        })?;
    reload(p, id).await?;
    Ok(record)
}

/// A key and its secret, which is shown this once and kept only hashed.
pub struct IssuedKey {
    pub record: ApiKeyRecord,
    pub secret: String,
}

fn key_id() -> String {
    format!(
        "key_{}",
        oms_clock::monotonic_ulid().to_string().to_ascii_lowercase()
    )
}

pub async fn create_key(
    p: &Platform,
    tenant: &TenantId,
    name: &str,
    scopes: &[Scope],
    actor: &str,
) -> Result<IssuedKey, TenantOpError> {
    if name.trim().is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(TenantOpError::Invalid {
            field: "name".into(),
            message: "a key needs a name of 1 to 100 characters, without control characters".into(),
        });
    }
    if scopes.is_empty() {
        return Err(TenantOpError::Invalid {
            field: "scopes".into(),
            message: format!("give at least one scope of {}", Scope::WIRE.join(", ")),
        });
    }
    let (id, secret) = (key_id(), new_secret());
    let record = p
        .store
        .create_api_key(&NewApiKey {
            id: &id,
            tenant,
            name,
            secret_hash: &secret_hash(&secret),
            scopes: &Scope::join(scopes),
            actor,
            now: oms_clock::now_ms(),
        })
        .await?;
    reload(p, tenant).await?;
    Ok(IssuedKey { record, secret })
}

/// The longest an old key may stay valid after a rotation.
pub const MAX_GRACE_SECONDS: i64 = 7 * 24 * 3600;

/// A new secret in place of key `id`: the old one keeps working for
/// `grace_seconds`, so clients can change over without a failed call.
pub async fn rotate_key(
    p: &Platform,
    tenant: &TenantId,
    id: &str,
    grace_seconds: i64,
    actor: &str,
) -> Result<IssuedKey, TenantOpError> {
    if !(0..=MAX_GRACE_SECONDS).contains(&grace_seconds) {
        return Err(TenantOpError::Invalid {
            field: "graceSeconds".into(),
            message: format!("the grace period is 0 to {MAX_GRACE_SECONDS} seconds"),
        });
    }
    let now = oms_clock::now_ms();
    let (new_id, secret) = (key_id(), new_secret());
    let record = p
        .store
        .rotate_api_key(
            id,
            &NewApiKey {
                id: &new_id,
                tenant,
                name: "",
                secret_hash: &secret_hash(&secret),
                scopes: "",
                actor,
                now,
            },
            now + grace_seconds * 1000,
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict => {
                TenantOpError::Conflict("the key was already rotated or revoked")
            }
            other => other.into(),
        })?;
    reload(p, tenant).await?;
    Ok(IssuedKey { record, secret })
}

pub async fn revoke_key(
    p: &Platform,
    tenant: &TenantId,
    id: &str,
) -> Result<ApiKeyRecord, TenantOpError> {
    let record = p
        .store
        .revoke_api_key(tenant, id, oms_clock::now_ms())
        .await
        .map_err(|e| match e {
            StoreError::Conflict => TenantOpError::Conflict("the key is already revoked"),
            other => other.into(),
        })?;
    reload(p, tenant).await?;
    Ok(record)
}
