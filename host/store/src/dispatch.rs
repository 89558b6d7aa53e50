//! The dispatcher's read of due work: per tenant, only as many commands as
//! that tenant has room to run, each with its order.
//!
//! One read across all tenants, oldest first, lets a saturated tenant's
//! backlog fill the page: a light tenant's due retry could sit behind
//! hundreds of rows nobody can run yet, and every sweep paid for reading
//! them. Here each tenant gets its own index range on `(tenant_id,
//! available_at)`, limited to its free slots, leaving out the commands this
//! host is already running (those are the oldest due rows while they run).
//! The order comes with each command in the same statement, so the runner
//! needs no second read to start it. PostgreSQL reads every tenant in one
//! round trip (an arm each, `UNION ALL`); SQLite, with no round trip to
//! save, steps through each tenant's range on its own.

use super::orders::ORDER_COLUMNS;
use super::{Backend, CommandRecord, OrderRecord, Result, SqlStore};
use oms_domain::TenantId;

/// Tenants per statement.
const ARMS: usize = 16;

/// `n` rounded up to a power of two (at least 1), so a few statement
/// texts serve every size and the connection's statement cache keeps them.
fn padded(n: usize) -> usize {
    n.max(1).next_power_of_two()
}

/// PostgreSQL's statement for `arms` tenants with `skips` commands left out. `$1`
/// is now, `$2 …` the skipped ids, then each arm's tenant and limit.
fn sql(arms: usize, skips: usize) -> String {
    let columns: Vec<String> = ORDER_COLUMNS
        .split(',')
        .map(|c| format!("o.{}", c.trim()))
        .collect();
    let columns = columns.join(", ");
    let skip: Vec<String> = (0..skips).map(|i| format!("${}", i + 2)).collect();
    let skip = skip.join(", ");
    let arm = |a: usize| {
        let (tenant, limit) = (skips + 2 + 2 * a, skips + 3 + 2 * a);
        format!(
            "SELECT * FROM (SELECT c.id AS command_id, c.action AS command_action,
                    c.available_at AS command_available_at, {columns}
                FROM saga_commands c JOIN orders o ON o.tenant_id = c.tenant_id AND o.id = c.order_id
                WHERE c.tenant_id = ${tenant} AND c.available_at <= $1 AND c.id NOT IN ({skip})
                ORDER BY c.available_at LIMIT ${limit}) AS arm{a}"
        )
    };
    (0..arms).map(arm).collect::<Vec<_>>().join(" UNION ALL ")
}

impl SqlStore {
    pub(crate) async fn read_due_work(
        &self,
        tenants: &[(TenantId, i64)],
        skip: &[String],
        now: i64,
    ) -> Result<Vec<(CommandRecord, OrderRecord)>> {
        let pool = match &self.backend {
            // Every sweep, and each time a backlogged tenant's saga ends:
            // on the store's own read connection, on this thread.
            Backend::Sqlite { readers, .. } => {
                return readers.run(|db| sqlite_due(db, tenants, skip, now));
            }
            Backend::Postgres(pool) => pool,
        };
        let skips = padded(skip.len());
        let mut work = Vec::new();
        for chunk in tenants.chunks(ARMS) {
            use sqlx::{FromRow, Row};
            let arms = padded(chunk.len());
            let sql = sql(arms, skips);
            // `$1` now, the skipped ids (padding: an id no command has),
            // then each arm's tenant and limit (padding: an arm that reads
            // nothing).
            let mut q = sqlx::query(&sql).bind(now);
            for i in 0..skips {
                q = q.bind(skip.get(i).map_or("", String::as_str));
            }
            for a in 0..arms {
                q = match chunk.get(a) {
                    Some((tenant, limit)) => q.bind(tenant.as_str()).bind(*limit),
                    None => q.bind("").bind(0i64),
                };
            }
            for row in q.fetch_all(crate::counted::stmt(pool)).await? {
                let order = OrderRecord::from_row(&row)?;
                let command = CommandRecord {
                    id: row.try_get("command_id")?,
                    tenant_id: order.tenant_id.clone(),
                    order_id: order.id.clone(),
                    action: row.try_get("command_action")?,
                    available_at: row.try_get("command_available_at")?,
                };
                work.push((command, order));
            }
        }
        Ok(work)
    }
}

/// SQLite's due work: per tenant, its due commands oldest first, stepped
/// one row at a time and the ones in `skip` passed over here until the
/// tenant's room is filled. The skipped commands are the ones this host
/// runs (the oldest due rows while they run); leaving them out in SQL
/// (`NOT IN` with every one bound) cost more than the rows themselves: a
/// temporary index of up to 64 bound texts built on every sweep.
fn sqlite_due(
    db: &rusqlite::Connection,
    tenants: &[(TenantId, i64)],
    skip: &[String],
    now: i64,
) -> Result<Vec<(CommandRecord, OrderRecord)>> {
    use crate::direct::failed;
    let skip: std::collections::HashSet<&str> = skip.iter().map(String::as_str).collect();
    let mut stmt = db.prepare_cached(&SQLITE_DUE).map_err(failed)?;
    let mut work = Vec::new();
    for (tenant, room) in tenants {
        if *room <= 0 {
            continue;
        }
        // Enough rows that `room` of them are not skipped, if there are.
        let most = room.saturating_add(skip.len() as i64);
        let mut rows = crate::counted::stmt(&mut stmt)
            .query(rusqlite::params![tenant.as_str(), now, most])
            .map_err(failed)?;
        let mut got = 0;
        while got < *room {
            let Some(row) = rows.next().map_err(failed)? else {
                break;
            };
            if skip.contains(
                row.get_ref(0)
                    .and_then(|v| Ok(v.as_str()?))
                    .map_err(failed)?,
            ) {
                continue;
            }
            let Due(command, order) = crate::direct::FromRow::from_row(row).map_err(failed)?;
            work.push((command, order));
            got += 1;
        }
    }
    Ok(work)
}

/// One tenant's due commands with their orders, oldest first: `?1` the
/// tenant, `?2` now, `?3` at most how many.
static SQLITE_DUE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let columns: Vec<String> = ORDER_COLUMNS
        .split(',')
        .map(|c| format!("o.{}", c.trim()))
        .collect();
    format!(
        "SELECT c.id, c.action, c.available_at, {}
            FROM saga_commands c JOIN orders o ON o.tenant_id = c.tenant_id AND o.id = c.order_id
            WHERE c.tenant_id = ?1 AND c.available_at <= ?2
            ORDER BY c.available_at LIMIT ?3",
        columns.join(", ")
    )
});

/// A row of [`SQLITE_DUE`]: the command's three columns, then the order's.
struct Due(CommandRecord, OrderRecord);

impl crate::direct::FromRow for Due {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        let order = crate::orders::order_from(row, 3)?;
        Ok(Self(
            CommandRecord {
                id: row.get(0)?,
                tenant_id: order.tenant_id.clone(),
                order_id: order.id.clone(),
                action: row.get(1)?,
                available_at: row.get(2)?,
            },
            order,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_arm_has_its_own_placeholders() {
        let text = sql(2, 2);
        assert!(text.contains("c.id NOT IN ($2, $3)"), "{text}");
        assert!(text.contains("c.tenant_id = $4 AND"), "{text}");
        assert!(text.contains("LIMIT $5) AS arm0"), "{text}");
        assert!(text.contains("c.tenant_id = $6 AND"), "{text}");
        assert!(text.contains("LIMIT $7) AS arm1"), "{text}");
        assert_eq!(padded(0), 1);
        assert_eq!(padded(5), 8);
    }
}
