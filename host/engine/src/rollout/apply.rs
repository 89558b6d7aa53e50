//! Making this host run what an activation or canary record says: each
//! version loaded from this host's cache, from native code another host
//! stored, or compiled from the uploaded bytes.

use super::PluginOpError;
use super::running;
use crate::Platform;
use crate::metrics::Metrics;
use crate::tenants::{Canary, Target, Tenant};
use oms_plugin_host::{Plugin, Slot};
use oms_store::{ActivationRecord, CanaryRecord, StoreError};
use std::sync::Arc;

pub(super) async fn apply(
    p: &Platform,
    tenant: &Tenant,
    target: Target,
    record: &ActivationRecord,
) -> Result<(), PluginOpError> {
    let tp = running(tenant, target)?;
    let slot = target.slot();
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
        tracing::info!(tenant = %tenant.id, %target, version = record.active_version, digest = %&record.digest[..12], "plugin activated");
    }
    Ok(())
}

pub(super) async fn apply_canary(
    p: &Platform,
    tenant: &Tenant,
    target: Target,
    record: &ActivationRecord,
    canary: Option<&CanaryRecord>,
) -> Result<(), PluginOpError> {
    let tp = running(tenant, target)?;
    let slot = target.slot();
    let (Some(c), Some(digest)) = (canary, record.canary_digest.as_ref()) else {
        if tp.canary().is_some() {
            tracing::info!(tenant = %tenant.id, %target, "canary ended");
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
    tracing::info!(tenant = %tenant.id, %target, version = c.version, percent = c.percent, "canary running");
    tp.set_canary(Some(Arc::new(Canary {
        plugin,
        record: c.clone(),
    })));
    Ok(())
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
pub(super) async fn store_artifact(p: &Platform, plugin: &Plugin) {
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
