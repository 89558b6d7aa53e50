//! Tenant plugin versions in operation: upload (checked before anything can
//! run it), activate, roll back, and keeping every host's running components
//! in step with the activations in the database.

use super::Platform;
use crate::plugins::{LoadError, Plugin, Slot};
use crate::store::{ActivationChange, ActivationRecord, PluginVersionRecord, StoreError};
use crate::tenants::Tenant;
use std::sync::Arc;
use std::time::Duration;

/// How often each host reconciles its running components with the database,
/// so an activation made anywhere takes effect everywhere within a second.
const SYNC_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum PluginOpError {
    #[error(transparent)]
    Refused(#[from] LoadError),
    #[error("no such version")]
    UnknownVersion,
    #[error("there is no earlier version to roll back to")]
    NothingToRollBack,
    #[error("storage unavailable: {0}")]
    Store(StoreError),
}

impl From<StoreError> for PluginOpError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::UnknownVersion,
            other => Self::Store(other),
        }
    }
}

/// Checks and stores an uploaded component. `(record, false)` when these
/// bytes were uploaded before.
pub async fn upload(
    p: &Platform,
    tenant: &Tenant,
    slot: Slot,
    bytes: Vec<u8>,
    actor: &str,
) -> Result<(PluginVersionRecord, bool), PluginOpError> {
    // Compiling is CPU-heavy: keep it off the async workers.
    let host = p.plugins.clone();
    let checked =
        tokio::task::spawn_blocking(move || host.load(slot, &bytes).map(|plugin| (plugin, bytes)))
            .await
            .map_err(|e| PluginOpError::Store(StoreError::Corrupt(e.to_string())))?;
    let (plugin, bytes) = checked?;
    let stored = p
        .store
        .put_plugin_version(
            &tenant.id,
            slot.as_str(),
            &plugin.digest,
            &bytes,
            actor,
            crate::now_ms(),
        )
        .await?;
    Ok(stored)
}

pub async fn activate(
    p: &Platform,
    tenant: &Tenant,
    slot: Slot,
    version: i64,
    actor: &str,
) -> Result<ActivationRecord, PluginOpError> {
    let record = p
        .store
        .activate_plugin(
            &tenant.id,
            slot.as_str(),
            &ActivationChange {
                version,
                actor,
                action: "activate",
                only_if_unset: false,
            },
            crate::now_ms(),
        )
        .await?;
    apply(p, tenant, slot, &record).await?;
    Ok(record)
}

/// Slots whose calls have no side effects, so a candidate can run beside them.
pub fn shadowable(slot: Slot) -> bool {
    matches!(slot, Slot::Guardrail | Slot::FraudCheck)
}

/// Runs `version` (or with `None`, nothing) in the shadow of the active one.
pub async fn shadow(
    p: &Platform,
    tenant: &Tenant,
    slot: Slot,
    version: Option<i64>,
    actor: &str,
) -> Result<ActivationRecord, PluginOpError> {
    let record = p
        .store
        .set_shadow(&tenant.id, slot.as_str(), version, actor, crate::now_ms())
        .await?;
    apply(p, tenant, slot, &record).await?;
    Ok(record)
}

pub async fn rollback(
    p: &Platform,
    tenant: &Tenant,
    slot: Slot,
    actor: &str,
) -> Result<ActivationRecord, PluginOpError> {
    let current = p.store.activation(&tenant.id, slot.as_str()).await?;
    let previous = current
        .and_then(|a| a.previous_version)
        .ok_or(PluginOpError::NothingToRollBack)?;
    let record = p
        .store
        .activate_plugin(
            &tenant.id,
            slot.as_str(),
            &ActivationChange {
                version: previous,
                actor,
                action: "rollback",
                only_if_unset: false,
            },
            crate::now_ms(),
        )
        .await?;
    apply(p, tenant, slot, &record).await?;
    Ok(record)
}

/// Registers each manifest component as a version, active where no operator
/// has chosen one yet.
pub async fn register_manifest_plugins(p: &Platform) -> Result<(), PluginOpError> {
    let now = crate::now_ms();
    for tenant in p.tenants.all() {
        for slot in Slot::ALL {
            let tp = tenant.plugin(slot);
            let (record, _) = p
                .store
                .put_plugin_version(
                    &tenant.id,
                    slot.as_str(),
                    &tp.manifest_plugin.digest,
                    &tp.manifest_bytes,
                    "manifest",
                    now,
                )
                .await?;
            p.store
                .activate_plugin(
                    &tenant.id,
                    slot.as_str(),
                    &ActivationChange {
                        version: record.version,
                        actor: "manifest",
                        action: "activate",
                        only_if_unset: true,
                    },
                    now,
                )
                .await?;
        }
    }
    sync(p).await
}

/// Makes every tenant's running components match the activations table.
pub async fn sync(p: &Platform) -> Result<(), PluginOpError> {
    for record in p.store.activations().await? {
        let (Some(tenant), Some(slot)) =
            (p.tenants.get(&record.tenant_id), Slot::parse(&record.slot))
        else {
            continue;
        };
        apply(p, tenant, slot, &record).await?;
    }
    Ok(())
}

async fn apply(
    p: &Platform,
    tenant: &Tenant,
    slot: Slot,
    record: &ActivationRecord,
) -> Result<(), PluginOpError> {
    let tp = tenant.plugin(slot);
    let shadow = match &record.shadow_digest {
        Some(digest) if tp.shadow().is_some_and(|s| &s.digest == digest) => tp.shadow(),
        Some(digest) => Some(load_version(p, slot, digest).await?),
        None => None,
    };
    tp.set_shadow(shadow);
    if tp.current().digest == record.digest {
        return Ok(());
    }
    let plugin = load_version(p, slot, &record.digest).await?;
    if tp.swap(plugin) {
        tracing::info!(tenant = %tenant.id, %slot, version = record.active_version, digest = %&record.digest[..12], "plugin activated");
    }
    Ok(())
}

async fn load_version(
    p: &Platform,
    slot: Slot,
    digest: &str,
) -> Result<Arc<Plugin>, PluginOpError> {
    let bytes = p.store.plugin_blob(digest).await?;
    let host = p.plugins.clone();
    // Already compiled when it was uploaded here; compiled once more on a host that has not seen it.
    tokio::task::spawn_blocking(move || host.load(slot, &bytes))
        .await
        .map_err(|e| PluginOpError::Store(StoreError::Corrupt(e.to_string())))?
        .map_err(PluginOpError::from)
}

pub(crate) async fn run_sync(p: Arc<Platform>) {
    loop {
        tokio::time::sleep(SYNC_EVERY).await;
        if let Err(e) = sync(&p).await {
            tracing::warn!(error = %e, "syncing plugin activations failed");
        }
    }
}
