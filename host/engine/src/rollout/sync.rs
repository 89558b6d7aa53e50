//! Keeping this host's running components in step with the activations and
//! canaries in the database, every host on its own, within a second.

use super::PluginOpError;
use super::apply::{apply, apply_canary};
use super::canary::judge;
use crate::Platform;
use std::sync::Arc;
use std::time::Duration;

/// How often each host reconciles its running components with the database,
/// so an activation made anywhere takes effect everywhere within a second.
const SYNC_EVERY: Duration = Duration::from_millis(250);

/// Makes every tenant's running components match the activations and
/// canaries tables, and rolls back any canary past its thresholds.
pub async fn sync(p: &Platform) -> Result<(), PluginOpError> {
    // What is read and what is applied from it, with no change made here
    // in between (see `Platform::rollout`).
    let rollout = p.rollout.lock().await;
    let canaries = p.store.canaries().await?;
    for record in p.store.activations().await? {
        let Some(tenant) = p.tenants.get(&record.tenant_id) else {
            continue;
        };
        // A step the tenant no longer has keeps its rows, unused.
        let Some(target) = tenant.find_target(&record.slot) else {
            continue;
        };
        let canary = canaries
            .iter()
            .find(|c| c.tenant_id == record.tenant_id && c.slot == record.slot);
        apply_canary(p, &tenant, target, &record, canary).await?;
        apply(p, &tenant, target, &record).await?;
    }
    drop(rollout);
    for canary in &canaries {
        judge(p, canary).await?;
    }
    Ok(())
}

/// How often plugin call stats and log lines are written (every second).
const TELEMETRY_EVERY: u32 = 4;
/// How often log lines past their retention are dropped (every ten minutes).
const LOG_PRUNE_EVERY: u32 = 2_400;
/// How often API keys' last use is written (a request never waits on it).
const KEY_USE_EVERY: u32 = 8;

/// Keeps tenants (manifests, suspension, keys) and then their running
/// components in step with the database.
pub(crate) async fn run_sync(p: Arc<Platform>) {
    let mut round: u32 = 0;
    loop {
        tokio::time::sleep(SYNC_EVERY).await;
        round = round.wrapping_add(1);
        if let Err(e) = crate::tenants::sync::refresh(&p).await {
            tracing::warn!(error = %e, "syncing tenants failed");
        }
        if let Err(e) = sync(&p).await {
            tracing::warn!(error = %e, "syncing plugin activations failed");
        }
        if round.is_multiple_of(TELEMETRY_EVERY) {
            match crate::plugin_telemetry::flush(&p).await {
                Ok(()) => {}
                // A store that keeps no telemetry (the in-memory one): each
                // host's own is still served.
                Err(oms_store::StoreError::Unsupported(_)) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "writing plugin call stats and logs failed; kept for the next round")
                }
            }
        }
        if round.is_multiple_of(LOG_PRUNE_EVERY) {
            let before = oms_clock::now_ms() - crate::plugin_telemetry::LOG_RETENTION_MS;
            if let Err(e) = p.store.prune_plugin_logs(before).await {
                tracing::warn!(error = %e, "pruning old plugin log lines failed");
            }
            prune_idempotency_keys(&p).await;
        }
        if round.is_multiple_of(KEY_USE_EVERY)
            && let Err(e) = p.flush_key_use().await
        {
            crate::metrics::Metrics::inc(&p.metrics.key_use_write_failures_total);
            tracing::warn!(error = %e, "recording API keys' last use failed; kept for the next round");
        }
    }
}

/// Idempotency keys older than their 24 hours, deleted in bounded batches
/// (a backlog is worked off over several rounds, never in one long delete).
async fn prune_idempotency_keys(p: &Platform) {
    const BATCH: i64 = 10_000;
    let before = oms_clock::now_ms() - oms_store::IDEMPOTENCY_KEY_TTL_MS;
    for _ in 0..10 {
        match p.store.prune_idempotency_keys(before, BATCH).await {
            Ok(n) if n as i64 == BATCH => continue,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "pruning expired idempotency keys failed");
                return;
            }
        }
    }
}
