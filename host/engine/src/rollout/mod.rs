//! Tenant plugin versions in operation: upload (checked before anything can
//! run it), activate, roll back, and keeping every host's running components
//! in step with the activations in the database. (Canaries, shadows and
//! recordings are decided in `steps/rollout.rs`, where the calls are made.)
//! Starting, judging and ending canaries: `canary`; loading what the
//! database says should run: `sync`.

mod apply;
mod canary;
mod sync;

use apply::{apply, store_artifact};
pub use canary::{end_canary, start_canary, verdict};
pub(crate) use sync::run_sync;
pub use sync::sync;

use super::Platform;
use crate::tenants::{Target, Tenant, TenantPlugin};
use oms_plugin_host::{LoadError, Slot};
use oms_store::{ActivationChange, ActivationRecord, PluginQuota, PluginVersionRecord, StoreError};

/// What one tenant may keep in plugin code, over all its slots and
/// versions (a componentize-py guest is about 18 MB). Operators change it
/// with `OMS_PLUGIN_QUOTA_VERSIONS` and `OMS_PLUGIN_QUOTA_MB`.
pub const PLUGIN_QUOTA: PluginQuota = PluginQuota {
    versions: 100,
    bytes: 256 << 20,
};

fn plugin_quota() -> PluginQuota {
    static QUOTA: std::sync::OnceLock<PluginQuota> = std::sync::OnceLock::new();
    *QUOTA.get_or_init(|| {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<i64>().ok());
        PluginQuota {
            versions: var("OMS_PLUGIN_QUOTA_VERSIONS").unwrap_or(PLUGIN_QUOTA.versions),
            bytes: var("OMS_PLUGIN_QUOTA_MB").map_or(PLUGIN_QUOTA.bytes, |mb| mb << 20),
        }
    })
}

#[derive(Debug, thiserror::Error)]
pub enum PluginOpError {
    #[error(transparent)]
    Refused(#[from] LoadError),
    #[error("no such version")]
    UnknownVersion,
    #[error("the tenant has no {0}")]
    UnknownTarget(String),
    #[error("there is no earlier version to roll back to")]
    NothingToRollBack,
    #[error("no canary is running for this slot")]
    NoCanary,
    #[error("{0}")]
    Quota(String),
    #[error("storage unavailable: {0}")]
    Store(StoreError),
}

impl From<StoreError> for PluginOpError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::UnknownVersion,
            StoreError::QuotaExceeded(why) => Self::Quota(why),
            other => Self::Store(other),
        }
    }
}

/// What runs `target` for `tenant`, if the tenant has it.
pub fn running(tenant: &Tenant, target: Target) -> Result<&TenantPlugin, PluginOpError> {
    tenant
        .target(target)
        .ok_or_else(|| PluginOpError::UnknownTarget(target.to_string()))
}

/// Checks and stores an uploaded component. `(record, false)` when these
/// bytes were uploaded before.
pub async fn upload(
    p: &Platform,
    tenant: &Tenant,
    target: Target,
    bytes: Vec<u8>,
    actor: &str,
) -> Result<(PluginVersionRecord, bool), PluginOpError> {
    // Compiling is CPU-heavy: keep it off the async workers (and, with a
    // compiler process configured, out of this process).
    let host = p.plugins.clone();
    let limits = running(tenant, target)?.limits;
    let slot = target.slot();
    let checked = tokio::task::spawn_blocking(move || {
        host.load_untrusted(slot, &bytes, &limits)
            .map(|plugin| (plugin, bytes))
    })
    .await
    .map_err(|e| PluginOpError::Store(StoreError::Corrupt(e.to_string())))?;
    let (plugin, bytes) = checked?;
    let stored = p
        .store
        .put_plugin_version_within(
            &tenant.id,
            &target.key(),
            &plugin.digest,
            &bytes,
            actor,
            oms_clock::now_ms(),
            plugin_quota(),
        )
        .await?;
    // Only what was kept has its native code kept.
    store_artifact(p, &plugin).await;
    Ok(stored)
}

pub async fn activate(
    p: &Platform,
    tenant: &Tenant,
    target: Target,
    version: i64,
    actor: &str,
) -> Result<ActivationRecord, PluginOpError> {
    switch(p, tenant, target, version, actor, "activate").await
}

/// Makes `version` the active one (recorded as `action`) and runs it here
/// at once; other hosts follow within a sync.
async fn switch(
    p: &Platform,
    tenant: &Tenant,
    target: Target,
    version: i64,
    actor: &str,
    action: &str,
) -> Result<ActivationRecord, PluginOpError> {
    running(tenant, target)?;
    let change = ActivationChange {
        version,
        actor,
        action,
        only_if_unset: false,
    };
    let _rollout = p.rollout.lock().await;
    let record = p
        .store
        .activate_plugin(&tenant.id, &target.key(), &change, oms_clock::now_ms())
        .await?;
    apply(p, tenant, target, &record).await?;
    Ok(record)
}

/// Slots whose calls have no side effects, and steps that reach nothing
/// outside, so a candidate can run beside them.
pub fn shadowable(tenant: &Tenant, target: Target) -> bool {
    match target {
        Target::Slot(slot) => matches!(slot, Slot::Guardrail | Slot::FraudCheck),
        Target::Step(name) => tenant.steps.get(&name).is_some_and(|s| s.shadowable()),
    }
}

/// Runs `version` (or with `None`, nothing) in the shadow of the active one.
pub async fn shadow(
    p: &Platform,
    tenant: &Tenant,
    target: Target,
    version: Option<i64>,
    actor: &str,
) -> Result<ActivationRecord, PluginOpError> {
    running(tenant, target)?;
    let _rollout = p.rollout.lock().await;
    let record = p
        .store
        .set_shadow(
            &tenant.id,
            &target.key(),
            version,
            actor,
            oms_clock::now_ms(),
        )
        .await?;
    apply(p, tenant, target, &record).await?;
    Ok(record)
}

pub async fn rollback(
    p: &Platform,
    tenant: &Tenant,
    target: Target,
    actor: &str,
) -> Result<ActivationRecord, PluginOpError> {
    let current = p.store.activation(&tenant.id, &target.key()).await?;
    let previous = current
        .and_then(|a| a.previous_version)
        .ok_or(PluginOpError::NothingToRollBack)?;
    switch(p, tenant, target, previous, actor, "rollback").await
}

/// Registers each tenant's manifest components as versions, active where
/// no operator has chosen one yet.
pub async fn register_manifest_plugins(p: &Platform) -> Result<(), PluginOpError> {
    for tenant in p.tenants.all() {
        register_components(p, &tenant, &[], "manifest").await?;
    }
    sync(p).await
}

/// Registers a tenant's manifest components as versions: active where no
/// version is chosen yet, and for the slots and steps in `changed` (the
/// manifest names a new component) active now, as an activation by `actor`.
pub async fn register_components(
    p: &Platform,
    tenant: &Tenant,
    changed: &[Target],
    actor: &str,
) -> Result<(), PluginOpError> {
    let now = oms_clock::now_ms();
    let _rollout = p.rollout.lock().await;
    for target in tenant.targets() {
        let tp = running(tenant, target)?;
        let (record, _) = p
            .store
            .put_plugin_version(
                &tenant.id,
                &target.key(),
                &tp.manifest_plugin.digest,
                &tp.manifest_bytes,
                actor,
                now,
            )
            .await?;
        let activation = p
            .store
            .activate_plugin(
                &tenant.id,
                &target.key(),
                &ActivationChange {
                    version: record.version,
                    actor,
                    action: "activate",
                    only_if_unset: !changed.contains(&target),
                },
                now,
            )
            .await?;
        apply(p, tenant, target, &activation).await?;
    }
    Ok(())
}
