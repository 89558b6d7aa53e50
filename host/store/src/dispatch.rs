//! The dispatcher's read of due work: per tenant, only as many commands as
//! that tenant has room to run, each with its order.
//!
//! One read across all tenants, oldest first, lets a saturated tenant's
//! backlog fill the page: a light tenant's due retry could sit behind
//! hundreds of rows nobody can run yet, and every sweep paid for reading
//! them. Here each tenant gets an arm of its own (`UNION ALL`, an index
//! range on `(tenant_id, available_at)` each), limited to its free slots,
//! leaving out the commands this host is already running (those are the
//! oldest due rows while they run). The order comes with each command in
//! the same statement, so the runner needs no second read to start it.

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

/// The statement for `arms` tenants with `skips` commands left out. `$1`
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
        let skips = padded(skip.len());
        let mut work = Vec::new();
        for chunk in tenants.chunks(ARMS) {
            let arms = padded(chunk.len());
            let sql = sql(arms, skips);
            // `$1` now, the skipped ids (padding: an id no command has),
            // then each arm's tenant and limit (padding: an arm that reads
            // nothing).
            macro_rules! bound {
                ($q:ident) => {{
                    let mut q = $q.bind(now);
                    for i in 0..skips {
                        q = q.bind(skip.get(i).map_or("", String::as_str));
                    }
                    for a in 0..arms {
                        q = match chunk.get(a) {
                            Some((tenant, limit)) => q.bind(tenant.as_str()).bind(*limit),
                            None => q.bind("").bind(0i64),
                        };
                    }
                    q
                }};
            }
            match &self.backend {
                // Every sweep, and each time a backlogged tenant's saga
                // ends: on the store's own read connection, on this thread.
                Backend::Sqlite { readers, .. } => {
                    let q = crate::direct::query_as::<Due>(&sql);
                    let q = bound!(q);
                    let rows = readers.run(|db| {
                        crate::direct::run_ready(q.fetch_all(crate::counted::stmt(db)))?
                    })?;
                    work.extend(rows.into_iter().map(|Due(command, order)| (command, order)));
                }
                Backend::Postgres(pool) => {
                    use sqlx::{FromRow, Row};
                    let q = sqlx::query(&sql);
                    let q = bound!(q);
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
            }
        }
        Ok(work)
    }
}

/// A row of [`sql`] on SQLite: the command's three columns, then the order's.
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
