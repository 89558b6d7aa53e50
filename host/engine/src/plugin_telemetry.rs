//! Plugin call counts and log lines across hosts: each host writes its own
//! to the database in the background ([`flush`]); the API reads every
//! host's, this host's live ones in place of its last written ([`stats`],
//! [`logs`]), so a tenant or operator asking any host sees all of them.

use super::Platform;
use oms_plugin_host::Slot;
use oms_plugin_host::stats::{LogLine, VersionStats, decode, merge};
use oms_store::{PluginLogRecord, PluginStatsRecord, StoreError};

/// How long plugins' log lines are kept in the database.
pub const LOG_RETENTION_MS: i64 = 24 * 3600 * 1000;

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Writes this host's cumulative counts and its new log lines. Lines that
/// could not be written are kept for the next round.
pub async fn flush(p: &Platform) -> Result<(), StoreError> {
    let now = oms_clock::now_ms();
    let rows: Vec<PluginStatsRecord> = p
        .plugins
        .stats
        .snapshot()
        .into_iter()
        .map(|s| PluginStatsRecord {
            host: p.host_id.clone(),
            tenant_id: s.tenant,
            slot: s.slot.as_str().into(),
            version: s.stats.version.clone(),
            calls: signed(s.stats.calls),
            succeeded: signed(s.stats.succeeded),
            traps: signed(s.stats.traps),
            timeouts: signed(s.stats.timeouts),
            out_of_fuel: signed(s.stats.out_of_fuel),
            output_too_large: signed(s.stats.output_too_large),
            invalid_answers: signed(s.stats.invalid_answers),
            other_failures: signed(s.stats.other_failures),
            fuel_used_total: signed(s.stats.fuel_used_total),
            latency: s.latency,
            updated_at: now,
        })
        .collect();
    if !rows.is_empty() {
        p.store.save_plugin_stats(&rows).await?;
    }
    let lines = p.plugins.stats.take_new_logs();
    if lines.is_empty() {
        return Ok(());
    }
    let records: Vec<PluginLogRecord> = lines
        .iter()
        .map(|(tenant, slot, l)| PluginLogRecord {
            id: format!("log_{}", oms_clock::monotonic_ulid()),
            tenant_id: tenant.clone(),
            slot: slot.as_str().into(),
            host: p.host_id.clone(),
            version: l.version.clone(),
            at: l.at,
            line: l.line.clone(),
        })
        .collect();
    if let Err(e) = p.store.append_plugin_logs(&records).await {
        p.plugins.stats.put_back_logs(lines);
        return Err(e);
    }
    Ok(())
}

/// Every host's counts for a tenant's slot, merged per version.
pub async fn stats(
    p: &Platform,
    tenant: &str,
    slot: Slot,
) -> Result<Vec<VersionStats>, StoreError> {
    let stored = p.store.plugin_stats(tenant, slot.as_str()).await?;
    let others = stored.into_iter().filter(|r| r.host != p.host_id).map(|r| {
        let latency = r.latency.as_deref().and_then(decode);
        let stats = VersionStats {
            version: r.version,
            calls: unsigned(r.calls),
            succeeded: unsigned(r.succeeded),
            traps: unsigned(r.traps),
            timeouts: unsigned(r.timeouts),
            out_of_fuel: unsigned(r.out_of_fuel),
            output_too_large: unsigned(r.output_too_large),
            invalid_answers: unsigned(r.invalid_answers),
            other_failures: unsigned(r.other_failures),
            fuel_used_total: unsigned(r.fuel_used_total),
            latency_us: Default::default(),
        };
        (stats, latency)
    });
    let here = p.plugins.stats.stats(tenant, slot).into_iter().map(|s| {
        let h = p.plugins.stats.histogram(tenant, slot, &s.version);
        (s, h)
    });
    Ok(merge(others.chain(here).collect::<Vec<_>>()))
}

/// The newest `limit` log lines of a tenant's slot from every host, oldest
/// first: other hosts' from the database, this host's from memory.
pub async fn logs(
    p: &Platform,
    tenant: &str,
    slot: Slot,
    limit: usize,
) -> Result<Vec<LogLine>, StoreError> {
    let stored = p
        .store
        .plugin_logs(tenant, slot.as_str(), limit as i64)
        .await?;
    let mut all: Vec<LogLine> = stored
        .into_iter()
        .filter(|r| r.host != p.host_id)
        .map(|r| LogLine {
            at: r.at,
            version: r.version,
            line: r.line,
        })
        .chain(p.plugins.stats.logs(tenant, slot, limit))
        .collect();
    all.sort_by_key(|l| l.at);
    let skip = all.len().saturating_sub(limit);
    Ok(all.split_off(skip))
}
