//! The dispatcher: sweeps the command table for due work nobody handed
//! over (retries whose delay ran out, work left by a crash, commands from
//! the API, sagas that found no room when they were placed), each tenant's
//! apart and only as much as it has room to run.

use super::{Platform, SWEEP, TOMBSTONE_MS, submit};
use crate::commit::load;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How often finished commands' tombstones are pruned.
const PRUNE: Duration = Duration::from_secs(1);
/// Free slots a backlogged tenant gathers before a refill reads its next
/// commands: at saturation a chain ends hundreds of times a second, and a
/// read per ended chain (one or two commands each) was most of the
/// dispatcher's database work, a sixth of PostgreSQL's statement time. A
/// tenant with fewer free slots still gets them filled by the next full
/// sweep (every `SWEEP`), so at most `REFILL_AT - 1` slots wait that long.
const REFILL_AT: i64 = 8;

/// The dispatcher: sweeps the command table for due work not yet running.
pub(crate) async fn run(p: Arc<Platform>) {
    // A refill reads only the backlogged tenants; every tenant with room is
    // read at least every SWEEP, however often refills come.
    let mut everyone = true;
    let mut last_full = tokio::time::Instant::now();
    let mut last_prune = tokio::time::Instant::now();
    loop {
        let stopped = p.stopped.notified();
        tokio::pin!(stopped);
        stopped.as_mut().enable();
        if p.stopping.load(std::sync::atomic::Ordering::Acquire) {
            wait_for_in_flight(&p).await;
            return;
        }
        // Before the read: a command finished before this instant was
        // committed before it, so this sweep cannot read it as due.
        let started = oms_clock::now_ms();
        if everyone || last_full.elapsed() >= SWEEP {
            last_full = tokio::time::Instant::now();
            sweep(&p, false).await;
        } else {
            sweep(&p, true).await;
        }
        {
            let mut f = p.runner.lock();
            // Sweeps run one after another, here alone, so a tombstone
            // older than the sweep just done protects no later one. At
            // most once a second: a backlogged tenant's refills come
            // hundreds of times a second.
            if f.finished.len() > 1_000 && last_prune.elapsed() >= PRUNE {
                last_prune = tokio::time::Instant::now();
                let cutoff = started - TOMBSTONE_MS;
                f.finished.retain(|_, at| *at > cutoff);
            }
        }
        everyone = tokio::select! {
            _ = p.wake.notified() => true,
            _ = p.runner.refill.notified() => false,
            _ = &mut stopped => true,
            _ = tokio::time::sleep(SWEEP) => true,
        };
    }
}

/// One sweep: each tenant with room (`backlogged_only`: each backlogged
/// one) gets as many of its due commands as it has free slots, with their
/// orders (so a saga starts without reading its order again); the commands
/// running here are left out of the read.
async fn sweep(p: &Arc<Platform>, backlogged_only: bool) {
    let now = oms_clock::now_ms();
    let free = p.runner.permits.available_permits() as i64;
    if free == 0 {
        return;
    }
    let rooms: Vec<(oms_domain::TenantId, i64)> = p
        .tenants
        .all()
        .iter()
        .filter_map(|t| {
            let room = p
                .runner
                .tenant_permits
                .of(t.id.as_str())
                .available_permits() as i64;
            (room > 0).then(|| (t.id.clone(), room.min(free)))
        })
        .collect();
    let rooms = if backlogged_only {
        let f = p.runner.lock();
        rooms
            .into_iter()
            .filter(|(t, room)| *room >= REFILL_AT && f.backlogged.contains(t.as_str()))
            .collect()
    } else {
        rooms
    };
    if rooms.is_empty() {
        return;
    }
    let skip: Vec<String> = {
        let f = p.runner.lock();
        f.commands
            .iter()
            .chain(
                f.not_before
                    .iter()
                    .filter(|(_, t)| **t > now)
                    .map(|(id, _)| id),
            )
            .cloned()
            .collect()
    };
    let work = match p.store.due_work(&rooms, &skip, now).await {
        Ok(work) => work,
        Err(e) => {
            tracing::warn!(error = %e, "reading due saga commands failed; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
            return;
        }
    };
    {
        // A tenant that got fewer than it had room for has no backlog left.
        let mut f = p.runner.lock();
        for (tenant, room) in &rooms {
            let got = work
                .iter()
                .filter(|(c, _)| c.tenant_id == tenant.as_str())
                .count();
            if (got as i64) < *room {
                f.backlogged.remove(tenant.as_str());
            }
        }
    }
    // Tenants take turns at the runner's free slots: each one's oldest
    // first, then each one's second, and so on.
    let mut work = work;
    let mut nth: HashMap<String, usize> = HashMap::new();
    work.sort_by_cached_key(|(c, _)| {
        let n = nth.entry(c.tenant_id.clone()).or_default();
        *n += 1;
        *n
    });
    for (cmd, order) in work {
        // An order that does not load is read again where it runs, which
        // reports the problem (and leaves the command for later).
        submit(p, cmd, load(order).ok());
    }
}

/// Waits until no order's command is being carried out in this process.
async fn wait_for_in_flight(p: &Platform) {
    while !p.runner.lock().orders.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
