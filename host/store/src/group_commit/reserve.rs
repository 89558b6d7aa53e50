//! PostgreSQL: a batch's stock reservations in one round trip, through the
//! `oms_reserve_lines` function (migration 0020), which holds each line as
//! the per-line statement of [`crate::inventory`] does, in the batch's
//! order. Each line was a round trip of its own: one a saga, a fifth of the
//! round trips its writes cost the server.
//!
//! Only for a batch whose stock changes are all reservations: releases go
//! before reservations in a batch (the order every host's writer locks
//! stock rows in), which a call ahead of the members would reverse.

use super::{Job, Write};
use crate::{InventoryOp, Result, counted};
use std::collections::HashMap;

/// Each member's new holds: (SKU, warehouse, quantity).
pub(super) type Held = HashMap<usize, Vec<(String, String, i64)>>;

/// What the call answered.
pub(super) enum Reserved {
    /// Not for this batch: each member reserves its own lines.
    OneByOne,
    /// Every line held.
    All(Held),
    /// A line could not be held (short of stock, or the order holds stock
    /// already): the batch is written member by member.
    Short,
}

/// The lines of `live` members' reservations, if the batch is one for a
/// single call: (member, tenant, order, SKU, quantity, time).
type Line<'a> = (usize, &'a str, &'a str, &'a str, i64, i64);

fn lines<'a>(jobs: &'a [Job], live: &[usize]) -> Option<Vec<Line<'a>>> {
    let mut lines = Vec::new();
    for &i in live {
        let Write::Transition(t) = &jobs[i].write else {
            continue;
        };
        match &t.inventory {
            None => {}
            Some(InventoryOp::Reserve(reserve)) => {
                for (sku, quantity) in reserve {
                    lines.push((
                        i,
                        t.tenant.as_str(),
                        t.order_id.as_str(),
                        sku.as_str(),
                        *quantity,
                        t.now,
                    ));
                }
            }
            Some(_) => return None,
        }
    }
    // One line: the per-line statement is as many round trips.
    (lines.len() > 1).then_some(lines)
}

/// Reserves every line of the batch's reservations in one call on `conn`.
pub(super) async fn all(
    conn: &mut sqlx::PgConnection,
    jobs: &[Job],
    live: &[usize],
) -> Result<Reserved> {
    let Some(lines) = lines(jobs, live) else {
        return Ok(Reserved::OneByOne);
    };
    let tenants: Vec<&str> = lines.iter().map(|l| l.1).collect();
    let orders: Vec<&str> = lines.iter().map(|l| l.2).collect();
    let skus: Vec<&str> = lines.iter().map(|l| l.3).collect();
    let quantities: Vec<i64> = lines.iter().map(|l| l.4).collect();
    let at: Vec<i64> = lines.iter().map(|l| l.5).collect();
    let answered: Vec<(i32, Option<String>)> = sqlx::query_as(
        "SELECT line, warehouse FROM oms_reserve_lines($1, $2, $3, $4, $5) ORDER BY line",
    )
    .bind(&tenants)
    .bind(&orders)
    .bind(&skus)
    .bind(&quantities)
    .bind(&at)
    .fetch_all(counted::stmt(conn))
    .await?;
    let mut held = Held::new();
    for (n, warehouse) in answered {
        let line = usize::try_from(n - 1)
            .ok()
            .and_then(|n| lines.get(n))
            .ok_or_else(|| crate::StoreError::Corrupt(format!("reserved line {n} of none")))?;
        let Some(warehouse) = warehouse else {
            return Ok(Reserved::Short);
        };
        held.entry(line.0)
            .or_default()
            .push((line.3.to_owned(), warehouse, line.4));
    }
    Ok(Reserved::All(held))
}
