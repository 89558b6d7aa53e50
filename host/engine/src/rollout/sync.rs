//! Keeping this host's running components in step with the activations and
//! canaries in the database, every host on its own, within a second.

use super::PluginOpError;
use super::apply::{apply, apply_canary};
use super::canary::judge;
use crate::Platform;
use oms_plugin_host::Slot;
use std::sync::Arc;
use std::time::Duration;

/// How often each host reconciles its running components with the database,
/// so an activation made anywhere takes effect everywhere within a second.
const SYNC_EVERY: Duration = Duration::from_millis(250);

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

pub(crate) async fn run_sync(p: Arc<Platform>) {
    loop {
        tokio::time::sleep(SYNC_EVERY).await;
        if let Err(e) = sync(&p).await {
            tracing::warn!(error = %e, "syncing plugin activations failed");
        }
    }
}
