//! A batch's fast path: every member's writes in one transaction, many to a
//! statement. One text of it serves both paths: sqlx's transaction
//! (PostgreSQL) and the writer's own SQLite connection ([`own`]).

use super::own;
use super::reserve::{self, Reserved};
use super::rows::{
    self, CHUNKS, Rows, Texts, Value, bind_rows, chunk_len, in_list_sql, insert_rows, order_values,
    padded, update_sql, update_values,
};
use super::{Job, Task, Write, arrays as pg, step_state};
use crate::inventory::apply_inventory;
use crate::orders::{ORDER_COLUMNS, advance_numbers, allocate_numbers, complete_idempotency};
use crate::outbox::complete_published;
use crate::recorded::{delete_recorded, insert_recorded};
use crate::{Result, StoreError, Transition, counted};
use std::collections::{HashMap, HashSet};

pub(super) enum Fast {
    /// Each member's new version; `None` for a redelivered command.
    Committed(Vec<Option<i64>>),
    Failed,
}

/// Deletes the commands `$ids` inside `$tx` (and, with `$unpublish`, the
/// text around an `IN` list, their outbox messages no relay holds);
/// evaluates to the ids deleted. `pg`: one statement each, the ids one
/// array; otherwise an `IN` list per chunk.
macro_rules! consume_commands {
    (pg, $tx:ident, $ids:expr, $unpublish:expr) => {{
        let ids: &[&str] = $ids;
        let mut gone: HashSet<String> = HashSet::with_capacity(ids.len());
        if !ids.is_empty() {
            let deleted: Vec<String> =
                sqlx::query_scalar("DELETE FROM saga_commands WHERE id = ANY($1) RETURNING id")
                    .bind(ids)
                    .fetch_all(counted::stmt(&mut *$tx))
                    .await?;
            gone.extend(deleted);
        }
        if $unpublish.is_some() && !gone.is_empty() {
            let gone: Vec<&str> = gone.iter().map(String::as_str).collect();
            sqlx::query(
                "DELETE FROM outbox WHERE id IN
                 (SELECT id FROM outbox WHERE id = ANY($1) FOR UPDATE SKIP LOCKED)",
            )
            .bind(&gone)
            .execute(counted::stmt(&mut *$tx))
            .await?;
        }
        gone
    }};
    ($q:ident, $tx:ident, $ids:expr, $unpublish:expr) => {{
        let ids: &[&str] = $ids;
        let mut gone: HashSet<String> = HashSet::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNKS[0]) {
            let n = padded(chunk.len());
            let sql = in_list_sql(
                "DELETE FROM saga_commands WHERE id IN ",
                n,
                " RETURNING id",
                rows::anonymous(&$tx),
            );
            let mut q = $q::query_scalar(&sql);
            for i in 0..n {
                q = q.bind(chunk[i.min(chunk.len() - 1)]);
            }
            let deleted: Vec<String> = q.fetch_all(counted::stmt(&mut *$tx)).await?;
            gone.extend(deleted);
        }
        if let Some((prefix, suffix)) = $unpublish {
            let gone: Vec<&str> = gone.iter().map(String::as_str).collect();
            for chunk in gone.chunks(CHUNKS[0]) {
                let n = padded(chunk.len());
                let sql = in_list_sql(prefix, n, suffix, rows::anonymous(&$tx));
                let mut q = $q::query(&sql);
                for i in 0..n {
                    q = q.bind(chunk[i.min(chunk.len() - 1)]);
                }
                q.execute(counted::stmt(&mut *$tx)).await?;
            }
        }
        gone
    }};
}

/// Updates the order rows `$rows` ([`update_values`]) inside `$tx`, calling
/// `$each(tenant, order, last_seq)` for each row updated. `pg`: one
/// statement of arrays; otherwise a `VALUES` list per chunk.
macro_rules! update_orders {
    (pg, $tx:ident, $rows:expr, $each:expr) => {{
        let rows: &[Vec<Value<'_>>] = $rows;
        if !rows.is_empty() {
            let mut q = sqlx::query_as(super::arrays::UPDATE_ORDERS);
            super::arrays::bind_columns!(q, rows);
            let updated: Vec<(String, String, i64)> = q.fetch_all(counted::stmt(&mut *$tx)).await?;
            for (tenant, order, seq) in updated {
                $each(tenant, order, seq);
            }
        }
    }};
    ($q:ident, $tx:ident, $rows:expr, $each:expr) => {{
        let mut rest: &[Vec<Value<'_>>] = $rows;
        while !rest.is_empty() {
            let n = chunk_len(rest.len());
            let (chunk, tail) = rest.split_at(n);
            let sql = update_sql(n, rows::anonymous(&$tx));
            let mut q = $q::query_as(&sql);
            bind_rows!(q, chunk);
            let updated: Vec<(String, String, i64)> = q.fetch_all(counted::stmt(&mut *$tx)).await?;
            for (tenant, order, seq) in updated {
                $each(tenant, order, seq);
            }
            rest = tail;
        }
    }};
}

/// The batch's reservations in one call inside `$tx` ([`reserve`]): `pg`
/// only; elsewhere each member reserves its own.
macro_rules! reserve_all {
    (pg, $tx:ident, $jobs:expr, $live:expr) => {
        reserve::all(&mut *$tx, $jobs, $live).await?
    };
    ($q:ident, $tx:ident, $jobs:expr, $live:expr) => {
        Reserved::OneByOne
    };
}

/// The fast path's statements inside `$tx` through module `$q`'s queries;
/// evaluates to `Result<Fast>` (an early `return` leaves the enclosing
/// `async` block).
macro_rules! fast_in {
    ($q:ident, $tx:ident, $jobs:expr, $texts:expr, $unpublish:expr, $dialect:expr, $fan_out:expr) => {{
        let (jobs, texts): (&[Job], &[Texts]) = ($jobs, &$texts);
        // 1. Consume every command; a command not found was consumed by
        // another delivery first.
        let consumed: Vec<&str> = jobs.iter().filter_map(|j| j.write.consumes()).collect();
        let gone = consume_commands!($q, $tx, &consumed, $unpublish.map(|_| $dialect.unpublish_commands));
        // 2. Every transition's order row under its version check, many
        // to a statement; then each member's stock, in batch order.
        let live: Vec<usize> = (0..jobs.len())
            .filter(|i| jobs[*i].write.consumes().is_none_or(|c| gone.contains(c)))
            .collect();
        let transitions: Vec<&Transition> = live
            .iter()
            .filter_map(|i| match &jobs[*i].write {
                Write::Transition(t) => Some(&**t),
                Write::Order(_)
                | Write::Published { .. }
                | Write::Recorded(_)
                | Write::Numbers { .. }
                | Write::Prune(_) => None,
            })
            .collect();
        let mut last_seq: HashMap<(String, String), i64> = HashMap::new();
        {
            // Two writes of one order cannot be told apart in one
            // statement's answer: such a batch is written carefully.
            let mut orders = HashSet::new();
            if !transitions
                .iter()
                .all(|t| orders.insert((t.tenant.as_str(), t.order_id.as_str())))
            {
                return Ok(Fast::Failed);
            }
            let rows: Vec<Vec<Value<'_>>> = transitions.iter().map(|t| update_values(t)).collect();
            update_orders!($q, $tx, &rows, |tenant, order, seq| {
                last_seq.insert((tenant, order), seq);
            });
        }
        let mut versions = vec![None; jobs.len()];
        // PostgreSQL: the batch's reservations in one call, if it can.
        let mut batched = reserve_all!($q, $tx, jobs, &live);
        if let Reserved::Short = batched {
            return Ok(Fast::Failed);
        }
        // New reservations: (member, SKU, warehouse, quantity).
        let mut reserved: Vec<(usize, String, String, i64)> = Vec::new();
        let mut rows = Rows::default();
        // Each tenant's highest number among the batch's new orders.
        let mut numbered: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
        for i in live {
            let (job, texts) = (&jobs[i], &texts[i]);
            let member: Result<(i64, i64)> = async {
                match &job.write {
                    Write::Transition(t) => {
                        // Not updated: another write of the order came first.
                        let key = (t.tenant.to_string(), t.order_id.to_string());
                        let Some(last) = last_seq.get(&key) else {
                            return Err(StoreError::Conflict);
                        };
                        if let Some(op) = &t.inventory {
                            let mut held = Vec::new();
                            if let Reserved::All(all) = &mut batched {
                                held = all.remove(&i).unwrap_or_default();
                            } else {
                                apply_inventory!($q, $tx, &t.tenant, &t.order_id, op, t.now, held);
                            }
                            reserved.extend(held.into_iter().map(|(s, w, q)| (i, s, w, q)));
                        }
                        Ok((t.expected_version + 1, last - t.events.len() as i64 + 1))
                    }
                    Write::Order(new) => {
                        complete_idempotency!($q, $tx, new);
                        Ok((0, 1))
                    }
                    Write::Published { ids, now } => {
                        complete_published!($q, $tx, ids, *now, $fan_out);
                        Ok((0, 0))
                    }
                    Write::Recorded(calls) => {
                        insert_recorded!($q, $tx, calls);
                        Ok((0, 0))
                    }
                    Write::Numbers { tenant, count } => {
                        Ok((allocate_numbers!($q, $tx, tenant, *count), 0))
                    }
                    Write::Prune(prune) => Ok((delete_recorded!($q, $tx, prune), 0)),
                }
            }
            .await;
            let Ok((version, first_seq)) = member else {
                return Ok(Fast::Failed);
            };
            if let Write::Order(new) = &job.write {
                rows.orders.push(order_values(new));
                if let Some(number) = new.record.order_number {
                    let highest = numbered.entry(new.record.tenant_id.as_str()).or_insert(number);
                    *highest = (*highest).max(number);
                }
            }
            if let Some(effects) = job.write.effects() {
                rows.add(effects, first_seq, texts);
            }
            versions[i] = Some(version);
        }
        // 3. Every member's rows, many to a statement.
        if let Some(sql) = $dialect.advance_numbers {
            for (tenant, number) in numbered {
                advance_numbers!($q, $tx, sql, tenant, number);
            }
        }
        write_step_states!($q, $tx, &transitions);
        let reservations: Vec<Vec<Value<'_>>> = reserved
            .iter()
            .map(|(i, sku, warehouse, quantity)| {
                let t = jobs[*i].write.effects().ok_or_else(|| {
                    StoreError::Corrupt("stock reserved by a write without effects".into())
                })?;
                Ok(rows::reservation_values(t, sku, warehouse, *quantity))
            })
            .collect::<Result<_>>()?;
        insert_tables!(
            $q,
            $tx,
            ("orders", ORDER_COLUMNS, &rows.orders),
            (
                "reservations",
                "tenant_id, order_id, sku, warehouse_id, quantity, state, created_at, updated_at",
                &reservations
            ),
            (
                "order_events",
                "tenant_id, order_id, seq, event_type, data, at",
                &rows.events
            ),
            (
                "saga_commands",
                "id, tenant_id, order_id, action, available_at, created_at",
                &rows.commands
            ),
            (
                "outbox",
                "id, tenant_id, order_id, topic, event_type, payload, created_at, available_at, trace_parent",
                &rows.outbox
            ),
            (
                "payments",
                "id, tenant_id, order_id, op, amount, currency, status, provider_reference, error_code, idempotency_key, plugin_version, at",
                &rows.payments
            ),
        );
        Ok(Fast::Committed(versions))
    }};
}

/// Inserts each `(table, columns, rows)` inside `$tx`. `pg`: all of them
/// in one statement ([`pg::inserts_sql`]); otherwise a statement (or
/// more) per table.
macro_rules! insert_tables {
    (pg, $tx:ident, $(($table:expr, $columns:expr, $rows:expr)),+ $(,)?) => {{
        let parts: Vec<pg::Part<'_, '_>> = vec![$(($table, $columns, $rows)),+];
        if let Some(sql) = pg::inserts_sql(&parts) {
            let mut q = sqlx::query(&sql);
            for (_, _, rows) in &parts {
                if !rows.is_empty() {
                    pg::bind_columns!(q, rows);
                }
            }
            q.execute(counted::stmt(&mut *$tx)).await?;
        }
    }};
    ($q:ident, $tx:ident, $(($table:expr, $columns:expr, $rows:expr)),+ $(,)?) => {{
        $(insert_rows!($q, $tx, $table, $columns, $rows);)+
    }};
}

/// The step-state writes of a batch's `$transitions` inside `$tx`: folded
/// per key (see [`step_state`]), puts and additions many to a statement.
macro_rules! write_step_states {
    ($q:ident, $tx:ident, $transitions:expr) => {{
        use step_state::Folded;
        let plan = step_state::plan($transitions.iter().copied());
        let texts: Vec<String> = plan
            .folded
            .iter()
            .map(|(_, f, _)| match f {
                Folded::Put(v) => v.clone(),
                Folded::Add(d) => d.to_string(),
                Folded::Delete => String::new(),
            })
            .collect();
        let (mut puts, mut adds) = (Vec::new(), Vec::new());
        for (((tenant, step, key), f, at), text) in plan.folded.iter().zip(&texts) {
            let row = vec![
                Value::Text(tenant),
                Value::Text(step),
                Value::Text(key),
                Value::Text(text),
                Value::Int(*at),
            ];
            match f {
                Folded::Put(_) => puts.push(row),
                Folded::Add(_) => adds.push(row),
                Folded::Delete => {
                    crate::step_state::write_step_op!(
                        $q,
                        $tx,
                        tenant,
                        step,
                        key,
                        &crate::StepStateOp::Delete,
                        *at
                    )
                }
            }
        }
        const COLUMNS: &str = "tenant_id, step, state_key, value, updated_at";
        insert_rows!(
            $q,
            $tx,
            "step_state",
            COLUMNS,
            &puts,
            crate::step_state::PUT_ON_CONFLICT
        );
        insert_rows!(
            $q,
            $tx,
            "step_state",
            COLUMNS,
            &adds,
            crate::step_state::ADD_ON_CONFLICT
        );
        for ((tenant, step, key), op, at) in &plan.one_by_one {
            crate::step_state::write_step_op!($q, $tx, tenant, step, key, *op, *at);
        }
    }};
}

impl Task {
    /// The SQLite fast path on the writer's connection `db` (the caller
    /// holds the write turn).
    pub(super) fn fast_sqlite(&self, db: &rusqlite::Connection, jobs: &[Job]) -> Result<Fast> {
        let texts: Vec<Texts> = jobs.iter().map(|j| Texts::of(j.write.effects())).collect();
        let fan_out = crate::webhooks::fan_out_sql(&self.backend);
        let (unpublish, dialect) = (self.unpublish(), self.dialect());
        fast_on_connection(db, jobs, &texts, unpublish, dialect, &fan_out)
    }

    /// The PostgreSQL fast path on `conn`: `Ok(Committed)` with each
    /// member's new version (`None` for a redelivered command, nothing of
    /// which was written), or `Ok(Failed)`/`Err` with nothing committed.
    pub(super) async fn fast_pg(
        &self,
        conn: &mut sqlx::PgConnection,
        jobs: &[Job],
    ) -> Result<Fast> {
        use sqlx::Connection;
        let (unpublish, dialect) = (self.unpublish(), self.dialect());
        // The JSON texts, made before the transaction begins.
        let texts: Vec<Texts> = jobs.iter().map(|j| Texts::of(j.write.effects())).collect();
        let fan_out = crate::webhooks::fan_out_sql(&self.backend);
        let mut tx = counted::tx(conn.begin().await?);
        let fast = async { fast_in!(pg, tx, jobs, texts, unpublish, dialect, &fan_out) }.await;
        if let Ok(Fast::Committed(_)) = &fast {
            tx.commit().await?;
        }
        fast
    }
}

/// The fast path on the writer's SQLite connection, start to end on this
/// thread: its statements never wait (their futures are ready when first
/// polled).
fn fast_on_connection(
    db: &rusqlite::Connection,
    jobs: &[Job],
    texts: &[Texts],
    unpublish: Option<&'static str>,
    dialect: &'static crate::Dialect,
    fan_out: &str,
) -> Result<Fast> {
    let mut owned = counted::tx(own::Tx::begin(db)?);
    let tx = &mut owned;
    let fast =
        own::run_ready(async { fast_in!(own, tx, jobs, texts, unpublish, dialect, fan_out) })?;
    if let Ok(Fast::Committed(_)) = &fast {
        owned.commit()?;
    }
    // Not committed: rolled back as `owned` drops.
    fast
}
