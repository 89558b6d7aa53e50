//! Tenant plugin versions in operation: upload (checked before anything can
//! run it), activate, roll back, and keeping every host's running components
//! in step with the activations in the database. (Canaries, shadows and
//! recordings are decided in `steps/rollout.rs`, where the calls are made.)

use super::Platform;
use crate::metrics::Metrics;
use crate::tenants::{Canary, Tenant};
use oms_plugin_host::{LoadError, Plugin, Slot};
use oms_store::{
    ActivationChange, ActivationRecord, CanaryRecord, CanaryWindow, PluginQuota,
    PluginVersionRecord, StoreError,
};
use std::sync::Arc;
use std::time::Duration;

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

/// Checks and stores an uploaded component. `(record, false)` when these
/// bytes were uploaded before.
pub async fn upload(
    p: &Platform,
    tenant: &Tenant,
    slot: Slot,
    bytes: Vec<u8>,
    actor: &str,
) -> Result<(PluginVersionRecord, bool), PluginOpError> {
    // Compiling is CPU-heavy: keep it off the async workers (and, with a
    // compiler process configured, out of this process).
    let host = p.plugins.clone();
    let limits = tenant.plugin(slot).limits;
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
            slot.as_str(),
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
            oms_clock::now_ms(),
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
        .set_shadow(
            &tenant.id,
            slot.as_str(),
            version,
            actor,
            oms_clock::now_ms(),
        )
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
            oms_clock::now_ms(),
        )
        .await?;
    apply(p, tenant, slot, &record).await?;
    Ok(record)
}

/// Registers each manifest component as a version, active where no operator
/// has chosen one yet.
pub async fn register_manifest_plugins(p: &Platform) -> Result<(), PluginOpError> {
    let now = oms_clock::now_ms();
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

/// Makes every tenant's running components match the activations and
/// canaries tables, and rolls back any canary past its thresholds.
pub async fn sync(p: &Platform) -> Result<(), PluginOpError> {
    let canaries = p.store.canaries().await?;
    for record in p.store.activations().await? {
        let (Some(tenant), Some(slot)) =
            (p.tenants.get(&record.tenant_id), Slot::parse(&record.slot))
        else {
            continue;
        };
        let canary = canaries
            .iter()
            .find(|c| c.tenant_id == record.tenant_id && c.slot == record.slot);
        apply_canary(p, tenant, slot, &record, canary).await?;
        apply(p, tenant, slot, &record).await?;
    }
    for canary in &canaries {
        judge(p, canary).await?;
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
    if record.canary_digest.is_none() {
        tp.set_canary(None);
    }
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

async fn apply_canary(
    p: &Platform,
    tenant: &Tenant,
    slot: Slot,
    record: &ActivationRecord,
    canary: Option<&CanaryRecord>,
) -> Result<(), PluginOpError> {
    let tp = tenant.plugin(slot);
    let (Some(c), Some(digest)) = (canary, record.canary_digest.as_ref()) else {
        if tp.canary().is_some() {
            tracing::info!(tenant = %tenant.id, %slot, "canary ended");
        }
        tp.set_canary(None);
        return Ok(());
    };
    if tp
        .canary()
        .is_some_and(|running| running.record == *c && &running.plugin.digest == digest)
    {
        return Ok(());
    }
    let plugin = load_version(p, slot, digest).await?;
    tracing::info!(tenant = %tenant.id, %slot, version = c.version, percent = c.percent, "canary running");
    tp.set_canary(Some(Arc::new(Canary {
        plugin,
        record: c.clone(),
    })));
    Ok(())
}

/// Calls a canary is judged over: its latest ones, so an early bad patch
/// is not diluted by a long good run (nor the reverse).
const CANARY_WINDOW: i64 = 1_000;

/// Why a canary must be rolled back, if it must.
pub fn verdict(c: &CanaryRecord, w: &CanaryWindow) -> Option<String> {
    if w.calls < c.min_calls.max(1) {
        return None;
    }
    let failure_permille = w.failures * 1000 / w.calls;
    if failure_permille > c.max_failure_permille {
        return Some(format!(
            "failure rate {failure_permille}‰ ({} of {} calls) is above {}‰",
            w.failures, w.calls, c.max_failure_permille
        ));
    }
    if w.p99_us > c.max_p99_us {
        return Some(format!(
            "p99 latency {} µs is above {} µs",
            w.p99_us, c.max_p99_us
        ));
    }
    if w.compared > 0 {
        let divergence_permille = w.divergences * 1000 / w.compared;
        if divergence_permille > c.max_divergence_permille {
            return Some(format!(
                "divergence {divergence_permille}‰ ({} of {} verdicts differ from the active version) is above {}‰",
                w.divergences, w.compared, c.max_divergence_permille
            ));
        }
    }
    None
}

async fn judge(p: &Platform, c: &CanaryRecord) -> Result<(), PluginOpError> {
    let window = p.store.canary_window(c, CANARY_WINDOW).await?;
    let Some(reason) = verdict(c, &window) else {
        return Ok(());
    };
    if p.store
        .end_canary(
            c,
            "canary_rollback",
            "canary-guard",
            Some(reason.clone()),
            oms_clock::now_ms(),
        )
        .await?
    {
        Metrics::inc(&p.metrics.canary_rollbacks_total);
        tracing::warn!(tenant = %c.tenant_id, slot = %c.slot, version = c.version, %reason, "canary rolled back");
        if let (Some(tenant), Some(slot)) = (p.tenants.get(&c.tenant_id), Slot::parse(&c.slot)) {
            tenant.plugin(slot).set_canary(None);
        }
    }
    Ok(())
}

/// Starts a canary of `c.version` for the slot, replacing any running one.
pub async fn start_canary(p: &Platform, c: &CanaryRecord) -> Result<(), PluginOpError> {
    let record = p.store.start_canary(c).await?;
    if let (Some(tenant), Some(slot)) = (p.tenants.get(&c.tenant_id), Slot::parse(&c.slot)) {
        apply_canary(p, tenant, slot, &record, Some(c)).await?;
    }
    Ok(())
}

/// Ends the slot's canary: `promote` makes its version the active one,
/// otherwise it is aborted and the active version decides every order.
pub async fn end_canary(
    p: &Platform,
    tenant: &Tenant,
    slot: Slot,
    promote: bool,
    actor: &str,
) -> Result<ActivationRecord, PluginOpError> {
    let c = p
        .store
        .canary(&tenant.id, slot.as_str())
        .await?
        .ok_or(PluginOpError::NoCanary)?;
    let record = if promote {
        // Activating the canary's version ends the canary in the same transaction.
        p.store
            .activate_plugin(
                &tenant.id,
                slot.as_str(),
                &ActivationChange {
                    version: c.version,
                    actor,
                    action: "canary_promote",
                    only_if_unset: false,
                },
                oms_clock::now_ms(),
            )
            .await?
    } else {
        p.store
            .end_canary(&c, "canary_abort", actor, None, oms_clock::now_ms())
            .await?;
        p.store
            .activation(&tenant.id, slot.as_str())
            .await?
            .ok_or(PluginOpError::UnknownVersion)?
    };
    apply_canary(p, tenant, slot, &record, None).await?;
    apply(p, tenant, slot, &record).await?;
    Ok(record)
}

/// The running component for a version: from this host's cache, else from
/// the native code another host stored, else compiled from the bytes (and
/// its native code stored for the next host).
async fn load_version(
    p: &Platform,
    slot: Slot,
    digest: &str,
) -> Result<Arc<Plugin>, PluginOpError> {
    if let Some(plugin) = p.plugins.cached(slot, digest) {
        return Ok(plugin);
    }
    let engine = p.plugins.engine_key();
    if let Some(artifact) = p.store.plugin_artifact(digest, &engine).await? {
        let host = p.plugins.clone();
        let key = digest.to_string();
        let size = p.store.plugin_blob_size(digest).await?;
        let loaded =
            tokio::task::spawn_blocking(move || host.load_precompiled(slot, &key, size, &artifact))
                .await
                .map_err(|e| PluginOpError::Store(StoreError::Corrupt(e.to_string())))?;
        match loaded {
            Ok(plugin) => {
                Metrics::inc(&p.metrics.plugins_loaded_precompiled_total);
                return Ok(plugin);
            }
            // Not fatal: the bytes are still there to compile.
            Err(e) => {
                tracing::warn!(digest = %&digest[..12], error = %e, "precompiled plugin unusable; compiling")
            }
        }
    }
    let bytes = p.store.plugin_blob(digest).await?;
    let host = p.plugins.clone();
    let plugin =
        tokio::task::spawn_blocking(move || host.load_untrusted(slot, &bytes, &slot.max_limits()))
            .await
            .map_err(|e| PluginOpError::Store(StoreError::Corrupt(e.to_string())))?
            .map_err(PluginOpError::from)?;
    Metrics::inc(&p.metrics.plugins_compiled_total);
    store_artifact(p, &plugin).await;
    Ok(plugin)
}

/// Keeps a compiled version's native code for other hosts; failing to is
/// only slower, never wrong.
async fn store_artifact(p: &Platform, plugin: &Plugin) {
    let stored = match p.plugins.precompiled(plugin) {
        Ok(artifact) => {
            p.store
                .put_plugin_artifact(
                    &plugin.digest,
                    &p.plugins.engine_key(),
                    &artifact,
                    oms_clock::now_ms(),
                )
                .await
        }
        Err(e) => {
            tracing::warn!(error = %e, "serializing a plugin failed");
            return;
        }
    };
    if let Err(e) = stored {
        tracing::warn!(error = %e, "storing a precompiled plugin failed");
    }
}

pub(crate) async fn run_sync(p: Arc<Platform>) {
    loop {
        tokio::time::sleep(SYNC_EVERY).await;
        if let Err(e) = sync(&p).await {
            tracing::warn!(error = %e, "syncing plugin activations failed");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::verdict;
    use oms_store::{CanaryRecord, CanaryWindow};

    fn canary() -> CanaryRecord {
        CanaryRecord {
            tenant_id: "acme".into(),
            slot: "guardrail".into(),
            version: 2,
            percent: 10,
            max_failure_permille: 10,
            max_p99_us: 50_000,
            max_divergence_permille: 100,
            min_calls: 20,
            started_by: "operator".into(),
            started_at: 0,
        }
    }

    fn window(
        calls: i64,
        failures: i64,
        p99_us: i64,
        compared: i64,
        divergences: i64,
    ) -> CanaryWindow {
        CanaryWindow {
            calls,
            failures,
            compared,
            divergences,
            p99_us,
        }
    }

    #[test]
    fn nothing_is_judged_before_min_calls() {
        assert_eq!(verdict(&canary(), &window(19, 19, 900_000, 19, 19)), None);
    }

    #[test]
    fn within_every_threshold_the_canary_stays() {
        // 10‰ failures and 100‰ divergence are allowed; only above rolls back.
        assert_eq!(verdict(&canary(), &window(100, 1, 50_000, 100, 10)), None);
    }

    #[test]
    fn each_threshold_rolls_back_on_its_own() {
        let failures = verdict(&canary(), &window(100, 2, 1_000, 100, 0)).unwrap();
        assert!(failures.starts_with("failure rate 20‰"), "{failures}");
        let slow = verdict(&canary(), &window(100, 0, 50_001, 100, 0)).unwrap();
        assert!(slow.starts_with("p99 latency"), "{slow}");
        let diverging = verdict(&canary(), &window(100, 0, 1_000, 100, 11)).unwrap();
        assert!(diverging.starts_with("divergence 110‰"), "{diverging}");
    }

    #[test]
    fn slots_without_comparison_are_not_judged_on_divergence() {
        assert_eq!(verdict(&canary(), &window(100, 0, 1_000, 0, 0)), None);
    }
}
