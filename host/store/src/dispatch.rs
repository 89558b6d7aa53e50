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
//! round trip (a lateral subquery each); SQLite, with no round trip to
//! save, steps through each tenant's range on its own.

use super::orders::ORDER_COLUMNS;
use super::{Backend, CommandRecord, OrderRecord, Result, SqlStore};
use oms_domain::TenantId;

impl SqlStore {
    pub(crate) async fn read_due_work(
        &self,
        tenants: &[(TenantId, i64)],
        skip: &[String],
        now: i64,
    ) -> Result<Vec<(CommandRecord, OrderRecord)>> {
        use sqlx::{FromRow, Row};
        let pool = match &self.backend {
            // Every sweep, and each time a backlogged tenant's saga ends:
            // on the store's own read connection, on this thread.
            Backend::Sqlite { readers, .. } => {
                return readers.run(|db| sqlite_due(db, tenants, skip, now));
            }
            Backend::Postgres(pool) => pool,
        };
        // `$1` now, `$2`/`$3` each tenant and its room, `$4` the skipped
        // ids: one text, however many tenants and skips.
        let (names, rooms): (Vec<&str>, Vec<i64>) =
            tenants.iter().map(|(t, room)| (t.as_str(), *room)).unzip();
        let skip: Vec<&str> = skip.iter().map(String::as_str).collect();
        let mut work = Vec::new();
        for row in sqlx::query(&POSTGRES_DUE)
            .bind(now)
            .bind(names)
            .bind(rooms)
            .bind(skip)
            .fetch_all(crate::counted::stmt(pool))
            .await?
        {
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
        Ok(work)
    }
}

/// PostgreSQL's due work: each tenant's range read in one statement (a
/// lateral subquery per tenant of the `$2`/`$3` arrays, limited to its
/// room), the skipped ids (`$4`) one array. A `UNION ALL` arm per tenant
/// with every skipped id bound on its own was planned anew on each run
/// (a fifth of the database's statement time at saturation).
static POSTGRES_DUE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT w.* FROM unnest($2::text[], $3::bigint[]) WITH ORDINALITY AS r(tenant, room, nth)
            CROSS JOIN LATERAL (
                SELECT c.id AS command_id, c.action AS command_action,
                    c.available_at AS command_available_at, {}
                FROM saga_commands c JOIN orders o ON o.tenant_id = c.tenant_id AND o.id = c.order_id
                WHERE c.tenant_id = r.tenant AND c.available_at <= $1 AND c.id <> ALL($4::text[])
                ORDER BY c.available_at LIMIT r.room) AS w
            ORDER BY r.nth, w.command_available_at",
        order_columns("o")
    )
});

/// The order's columns, each prefixed with `alias.`.
fn order_columns(alias: &str) -> String {
    let columns: Vec<String> = ORDER_COLUMNS
        .split(',')
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect();
    columns.join(", ")
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
    format!(
        "SELECT c.id, c.action, c.available_at, {}
            FROM saga_commands c JOIN orders o ON o.tenant_id = c.tenant_id AND o.id = c.order_id
            WHERE c.tenant_id = ?1 AND c.available_at <= ?2
            ORDER BY c.available_at LIMIT ?3",
        order_columns("o")
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
